//! `/etc/fenced/fenced.toml`: parsing, the checks an operator needs before a daemon starts, and
//! the reservation-key derivation.
//!
//! ```toml
//! [cluster]
//! name = "prod"
//! uuid = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10"
//! nodes = [ { id = 0, name = "node1" }, { id = 1, name = "node2" }, { id = 2, name = "node3" } ]
//!
//! [node]
//! id = 0                       # this node; its voting-disk slot
//!
//! [storage]
//! luns = ["/dev/disk/by-id/wwn-0x6001405*"]   # every path of every shared LUN; `*` globs
//! key_loss = "recover"         # our key gone without a preemption notice: register again
//!                              # under the voting-disk guard ("recover", default) or fence
//!                              # this node ("self-fence": when another tool may preempt)
//! aptpl = true                 # registrations persist through the array's power loss; one
//!                              # cluster-wide value (the latest PR OUT's bit governs the LUN)
//! key_check_luns = 32          # LUNs in good standing the key check reads per period (every
//!                              # LUN that needs attention is read every period); 0: all
//! voting_disks = ["/dev/disk/by-id/virtio-vote0", "/dev/disk/by-id/virtio-vote1", "/dev/disk/by-id/virtio-vote2"]
//!
//! [timeouts]                   # milliseconds; see `Timing` for the rules
//! poll = 1000
//! io_deadline = 500
//! lease = 3000
//! watchdog = 5000
//!
//! [watchdog]
//! policy = "require-hardware"  # or "allow-softdog"
//!
//! [self_fence]
//! action = "reboot"            # reboot | off | crashdump | panic
//! ```

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sg_pr::ReservationKey;

use crate::vdisk::{ClusterId, NodeName, Timeouts};

/// Where the daemon and the CLI read the configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/fenced/fenced.toml";

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}; pass another file with --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is writable by someone other than root: anyone who can edit it can make the
    /// daemon fence any node.
    #[error("{path} is writable by uid {uid} or by group/others (mode {mode:o}): make it owned by root and not group/world-writable (chown root: {path}; chmod 600 {path})")]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Owner.
        uid: u32,
        /// Mode bits.
        mode: u32,
    },
    /// TOML syntax or an unknown/missing key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (it names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and which value to change.
        message: String,
    },
}

/// What to do when this node must fence itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelfFenceAction {
    /// Reset at once, without syncing or shutting devices down (sysrq `b`; reboot(2) where
    /// sysrq is missing).
    Reboot,
    /// Power off at once (sysrq `o`; reboot(2) where sysrq is missing).
    Off,
    /// Crash the kernel (sysrq 'c'): a kdump kernel, if loaded, saves a dump.
    Crashdump,
    /// Panic the kernel (sysrq 'c' as well; with panic=N the kernel reboots after N s).
    Panic,
}

/// Which watchdogs the daemon may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchdogPolicy {
    /// A hardware watchdog is required.
    RequireHardware,
    /// softdog is loaded when there is no hardware watchdog.
    AllowSoftdog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: RawCluster,
    node: RawNode,
    storage: RawStorage,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    watchdog: RawWatchdog,
    #[serde(default)]
    self_fence: RawSelfFence,
    #[serde(default)]
    control: RawControl,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    uuid: String,
    nodes: Vec<RawMember>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: u8,
    name: String,
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default)]
    luns: Vec<String>,
    voting_disks: Vec<PathBuf>,
    #[serde(default)]
    key_loss: crate::keycheck::KeyLossPolicy,
    #[serde(default = "default_aptpl")]
    aptpl: bool,
    #[serde(default = "default_key_check_luns")]
    key_check_luns: usize,
}

fn default_aptpl() -> bool {
    true
}

/// 32 READ KEYS per period (1.25 s with the default timeouts) is what one node asks of the
/// array at rest, however many LUNs: PR commands run on an array's control path, not its data
/// path. A LUN in good standing is then read every ceil(LUNs / 32) periods.
fn default_key_check_luns() -> usize {
    32
}

/// `[timeouts]`: P, D, L and W may be left out (all of them, or the whole section): the voting
/// disks' header holds them ([`Config::load`] reads it), so they live in one place. Stated, they
/// must equal the header's (the daemon refuses to start otherwise).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    poll: Option<u32>,
    io_deadline: Option<u32>,
    lease: Option<u32>,
    watchdog: Option<u32>,
    #[serde(default)]
    startup_delay: u32,
    #[serde(default = "default_fence_deadline")]
    fence_deadline: u32,
}

fn default_fence_deadline() -> u32 {
    20_000
}

/// The section left out.
impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            poll: None,
            io_deadline: None,
            lease: None,
            watchdog: None,
            startup_delay: 0,
            fence_deadline: default_fence_deadline(),
        }
    }
}

impl RawTimeouts {
    /// The four header timeouts when the file states every one, `None` when it states none;
    /// an error for a partial statement.
    fn stated(&self) -> Result<Option<Timeouts>, String> {
        match (self.poll, self.io_deadline, self.lease, self.watchdog) {
            (Some(poll_ms), Some(io_deadline_ms), Some(lease_ms), Some(watchdog_ms)) => {
                Ok(Some(Timeouts {
                    poll_ms,
                    io_deadline_ms,
                    lease_ms,
                    watchdog_ms,
                }))
            }
            (None, None, None, None) => Ok(None),
            _ => Err("timeouts.poll, io_deadline, lease and watchdog go together: state all four (equal to the voting disks' header) or none (then they are read from the header)".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    #[serde(default = "default_policy")]
    policy: WatchdogPolicy,
    device: Option<PathBuf>,
}

fn default_policy() -> WatchdogPolicy {
    WatchdogPolicy::RequireHardware
}

impl Default for RawWatchdog {
    fn default() -> Self {
        RawWatchdog {
            policy: default_policy(),
            device: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelfFence {
    #[serde(default = "default_action")]
    action: SelfFenceAction,
}

fn default_action() -> SelfFenceAction {
    SelfFenceAction::Reboot
}

impl Default for RawSelfFence {
    fn default() -> Self {
        RawSelfFence {
            action: default_action(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    #[serde(default = "default_socket")]
    socket: PathBuf,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/fenced/control.sock")
}

impl Default for RawControl {
    fn default() -> Self {
        RawControl {
            socket: default_socket(),
        }
    }
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// Node id = voting-disk slot.
    pub id: u8,
    /// Node name (as the clusterware names it).
    pub name: String,
    /// Its reservation key.
    #[serde(serialize_with = "ser_key")]
    pub key: ReservationKey,
}

fn ser_key<S: serde::Serializer>(k: &ReservationKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{:016x}", k.0))
}

/// Reads the timeouts of the voting disks `disks` of `cluster` for a configuration that leaves
/// them out.
pub type HeaderTimeouts<'a> = &'a dyn Fn(&[PathBuf], ClusterId) -> Result<Timeouts, String>;

/// The timeouts a majority of the voting disks' headers agree on.
pub fn header_timeouts(disks: &[PathBuf], cluster: ClusterId) -> Result<Timeouts, String> {
    crate::vdisk::admin::majority_header(disks, Some(cluster)).map(|h| h.timeouts)
}

/// The timing model (see the GUIDE): P poll period, D one round's I/O deadline, L lease,
/// W watchdog timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Timing {
    /// P.
    pub poll: Duration,
    /// D.
    pub io_deadline: Duration,
    /// L.
    pub lease: Duration,
    /// W.
    pub watchdog: Duration,
    /// Wait before joining, after boot.
    pub startup_delay: Duration,
    /// Bound on one `fenced fence` (all LUNs).
    pub fence_deadline: Duration,
}

impl Timing {
    /// The rules, each with the value to change when it is broken:
    /// D < P; L >= 2P + D (one lost round tolerated); W >= 2P; W is whole seconds (watchdog
    /// drivers take seconds).
    pub fn check(&self) -> Result<(), String> {
        let ms = |d: Duration| d.as_millis();
        let (p, d, l, w) = (
            ms(self.poll),
            ms(self.io_deadline),
            ms(self.lease),
            ms(self.watchdog),
        );
        if p == 0 || d == 0 {
            return Err("timeouts.poll and timeouts.io_deadline must be above 0".into());
        }
        if d >= p {
            return Err(format!(
                "timeouts.io_deadline ({d} ms) must be below timeouts.poll ({p} ms): lower io_deadline or raise poll"
            ));
        }
        if l < 2 * p + d {
            return Err(format!(
                "timeouts.lease ({l} ms) must be at least 2 x poll + io_deadline ({} ms), so one lost round does not reset the node: raise lease",
                2 * p + d
            ));
        }
        if w < 2 * p {
            return Err(format!(
                "timeouts.watchdog ({w} ms) must be at least 2 x poll ({} ms): raise watchdog",
                2 * p
            ));
        }
        if w % 1000 != 0 {
            return Err(format!(
                "timeouts.watchdog ({w} ms) must be whole seconds (watchdog drivers count seconds): use {} ms",
                w.div_ceil(1000) * 1000
            ));
        }
        Ok(())
    }

    /// After a fence marker reached a majority at t0, storage without persistent reservations is
    /// safe from the victim at t0 + this: the victim stops feeding its watchdog at most L after
    /// its last good read, and the watchdog resets it at most W later; M = one poll period of
    /// margin for the victim's own loop.
    pub fn non_pr_safe_after(&self) -> Duration {
        self.lease + self.watchdog + self.poll
    }

    /// B: a registration made at run time (a new or returned path, recovery from a PR-state
    /// loss) must complete within B of the start of the voting-disk round that allowed it, and a
    /// fencer re-verifies every LUN B after its marker reached a majority (see [`crate::luns`]).
    /// One poll period: a round reads in at most D, leaving P - D for the registration.
    pub fn registration_bound(&self) -> Duration {
        self.poll
    }

    /// Leaving: how long a node that stays has to take a leaving node's key over before the
    /// leaving node unregisters it itself. The node that stays reads the leave in its next
    /// round (P), checks in its next key-check period (K), confirms on a fresh round (2P + D)
    /// and preempts (one command, L at most): 3P + D + K + L.
    pub fn handover(&self) -> Duration {
        self.poll * 3 + self.io_deadline + self.key_check_period() + self.lease
    }

    /// Leaving: the most a clean stop takes: the hand-over, then one period to unregister and
    /// one to see the keys gone (K + L each), and a round.
    pub fn leave_limit(&self) -> Duration {
        self.handover() + (self.key_check_period() + self.lease) * 2 + self.poll
    }

    /// Rejoining after a clean leave: the time between writing Joining and registering again,
    /// so that a node that stays and decided to take over our key on a round read before the
    /// Joining (that round ends within D, the takeover is sent within B = P of its start and
    /// completes within L) has finished before our new registration.
    pub fn leave_quiet(&self) -> Duration {
        self.io_deadline + self.registration_bound() + self.lease + self.poll
    }

    /// The key check's period K: (L - D) / 2, never below P since L >= 2P + D. Each period
    /// reads the LUNs that need attention and a share of the others (`storage.key_check_luns`,
    /// see [`crate::keycheck`]).
    pub fn key_check_period(&self) -> Duration {
        self.lease.saturating_sub(self.io_deadline) / 2
    }

    /// The voting-disk header form.
    pub fn as_header_timeouts(&self) -> Timeouts {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Timeouts {
            poll_ms: ms(self.poll),
            io_deadline_ms: ms(self.io_deadline),
            lease_ms: ms(self.lease),
            watchdog_ms: ms(self.watchdog),
        }
    }
}

/// A checked configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Cluster name.
    pub cluster_name: String,
    /// Cluster UUID (also on every voting disk).
    #[serde(serialize_with = "ser_display")]
    pub cluster: ClusterId,
    /// Every member, by id.
    pub members: Vec<Member>,
    /// This node.
    pub me: Member,
    /// LUN paths and patterns as configured.
    pub luns: Vec<String>,
    /// What a key that vanished without a preemption notice means (`storage.key_loss`).
    pub key_loss: crate::keycheck::KeyLossPolicy,
    /// Register with APTPL (`storage.aptpl`, default on). The APTPL bit of the latest PR OUT
    /// governs the whole LUN, so every node must use the same value.
    pub aptpl: bool,
    /// The most LUNs in good standing the key check reads per period
    /// (`storage.key_check_luns`, default 32; 0: every LUN every period). A LUN that needs
    /// attention (degraded, unreachable, recovering, a dead node's key on it), the first LUN
    /// in good standing, and every LUN after a change of the dead or leaving nodes, a PR-state
    /// loss or a path going down are read every period regardless.
    pub key_check_luns: usize,
    /// Voting disks.
    pub voting_disks: Vec<PathBuf>,
    /// Timing.
    pub timing: Timing,
    /// Watchdog policy.
    pub watchdog_policy: WatchdogPolicy,
    /// Explicit watchdog device.
    pub watchdog_device: Option<PathBuf>,
    /// Self-fence action.
    pub self_fence: SelfFenceAction,
    /// Control socket path.
    pub control_socket: PathBuf,
}

fn ser_display<S: serde::Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The default reservation key of node `id` in cluster `cluster`:
/// `(CRC-32/IEEE of the 16 UUID bytes) << 32 | (id + 1)`. Deterministic, different for every
/// node of a cluster and for the same node id in different clusters (with high probability), and
/// never 0 (the low half is 1..=256). `fenced status` and `sg-pr keys` show the key; the node id
/// is the low half minus one.
pub fn derive_key(cluster: &ClusterId, id: u8) -> ReservationKey {
    let high = u64::from(crc32fast::hash(&cluster.0));
    ReservationKey((high << 32) | (u64::from(id) + 1))
}

impl Config {
    /// Reads and checks `path`. `check_owner` refuses files writable by non-root (the daemon
    /// and fencing commands always check; tests of parsing may not).
    pub fn load(path: &Path, check_owner: bool) -> Result<Config, ConfigError> {
        let text = Config::read_checked(path, check_owner)?;
        Config::parse_with(path, &text, &header_timeouts)
    }

    /// The file's text, once it is root's and not writable by others (with `check_owner`).
    fn read_checked(path: &Path, check_owner: bool) -> Result<String, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if check_owner && (meta.uid() != 0 || meta.mode() & 0o022 != 0) {
            return Err(ConfigError::Insecure {
                path: path.to_path_buf(),
                uid: meta.uid(),
                mode: meta.mode() & 0o7777,
            });
        }
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// As [`Config::load`], but when the file leaves the timeouts to the voting disks and no
    /// majority of them answers, the default timeouts stand in and the reason comes back: for
    /// the commands that report (`status`, `doctor`, the agent's `list`), which must not fail
    /// because the voting disks do not answer. Never for a command that acts on the timing.
    pub fn load_reporting(path: &Path) -> Result<(Config, Option<String>), ConfigError> {
        let unread = std::cell::RefCell::new(None);
        let fallback = |disks: &[PathBuf], cluster: ClusterId| {
            header_timeouts(disks, cluster).or_else(|e| {
                *unread.borrow_mut() = Some(e);
                Ok(Timeouts::default())
            })
        };
        let text = Config::read_checked(path, true)?;
        let config = Config::parse_with(path, &text, &fallback)?;
        Ok((config, unread.into_inner()))
    }

    /// As [`Config::load`], with the voting disks' timeouts already known: a reload checks the
    /// new file from the daemon's loop, which must not block on the disks to read them again.
    pub fn load_known_header(path: &Path, header: Timeouts) -> Result<Config, ConfigError> {
        let text = Config::read_checked(path, true)?;
        Config::parse_with(path, &text, &|_, _| Ok(header))
    }

    /// Parses and checks configuration text that states its `[timeouts]`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(path, text, &|_, _| {
            Err("the configuration states no [timeouts] and no voting-disk header was read".into())
        })
    }

    /// Parses and checks configuration text; `header` gives the voting disks' timeouts when
    /// the text leaves them out (from the disks and cluster the text names).
    pub fn parse_with(
        path: &Path,
        text: &str,
        header: HeaderTimeouts,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let cluster: ClusterId = raw.cluster.uuid.parse().map_err(|_| {
            invalid(format!(
                "cluster.uuid {:?} is not a UUID (8-4-4-4-12 hex digits)",
                raw.cluster.uuid
            ))
        })?;
        if cluster.is_nil() {
            return Err(invalid(
                "cluster.uuid must not be the nil UUID: generate one with `uuidgen`".into(),
            ));
        }
        if raw.cluster.name.is_empty() {
            return Err(invalid("cluster.name is empty".into()));
        }
        let mut members: Vec<Member> = Vec::new();
        for m in &raw.cluster.nodes {
            if m.id == 255 {
                return Err(invalid(format!(
                    "cluster.nodes: node {} has id 255; ids are 0..=254",
                    m.name
                )));
            }
            if NodeName::new(&m.name).is_none() {
                return Err(invalid(format!(
                    "cluster.nodes: name {:?} is empty or too long for a voting-disk slot",
                    m.name
                )));
            }
            if let Some(dup) = members.iter().find(|x| x.id == m.id || x.name == m.name) {
                return Err(invalid(format!(
                    "cluster.nodes: {} (id {}) and {} (id {}) share an id or a name; each node needs its own",
                    dup.name, dup.id, m.name, m.id
                )));
            }
            let key = match &m.key {
                Some(k) => ReservationKey::parse_nonzero(k)
                    .map_err(|e| invalid(format!("cluster.nodes: key of {}: {e}", m.name)))?,
                None => derive_key(&cluster, m.id),
            };
            if let Some(dup) = members.iter().find(|x| x.key == key) {
                return Err(invalid(format!(
                    "cluster.nodes: {} and {} have the same key",
                    dup.name, m.name
                )));
            }
            members.push(Member {
                id: m.id,
                name: m.name.clone(),
                key,
            });
        }
        members.sort_by_key(|m| m.id);
        let me = members
            .iter()
            .find(|m| m.id == raw.node.id)
            .cloned()
            .ok_or_else(|| invalid(format!("node.id {} is not in cluster.nodes", raw.node.id)))?;
        if raw.storage.voting_disks.is_empty() {
            return Err(invalid("storage.voting_disks is empty: at least one (better three) voting disks are needed".into()));
        }
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let header_timeouts = match raw.timeouts.stated().map_err(invalid)? {
            Some(t) => t,
            None => header(&raw.storage.voting_disks, cluster).map_err(|e| {
                invalid(format!(
                    "[timeouts] is left out, so they come from the voting disks' header, which could not be read: {e}; fix the voting disks or state the timeouts"
                ))
            })?,
        };
        let timing = Timing {
            poll: ms(header_timeouts.poll_ms),
            io_deadline: ms(header_timeouts.io_deadline_ms),
            lease: ms(header_timeouts.lease_ms),
            watchdog: ms(header_timeouts.watchdog_ms),
            startup_delay: ms(raw.timeouts.startup_delay),
            fence_deadline: ms(raw.timeouts.fence_deadline),
        };
        timing.check().map_err(invalid)?;
        Ok(Config {
            path: path.to_path_buf(),
            cluster_name: raw.cluster.name,
            cluster,
            members,
            me,
            luns: raw.storage.luns,
            key_loss: raw.storage.key_loss,
            aptpl: raw.storage.aptpl,
            key_check_luns: raw.storage.key_check_luns,
            voting_disks: raw.storage.voting_disks,
            timing,
            watchdog_policy: raw.watchdog.policy,
            watchdog_device: raw.watchdog.device,
            self_fence: raw.self_fence.action,
            control_socket: raw.control.socket,
        })
    }

    /// The member named `name_or_id` (a name, or a decimal id).
    pub fn member(&self, name_or_id: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.name == name_or_id)
            .or_else(|| {
                let id: u8 = name_or_id.parse().ok()?;
                self.members.iter().find(|m| m.id == id)
            })
    }

    /// How this node registers its key.
    pub fn registration(&self) -> crate::luns::Registration {
        crate::luns::Registration {
            key: self.me.key,
            aptpl: self.aptpl,
        }
    }

    /// The member whose reservation key is `key`.
    pub fn member_by_key(&self, key: ReservationKey) -> Option<&Member> {
        self.members.iter().find(|m| m.key == key)
    }
}

/// Expands the configured LUN paths: a `*` in the last component matches any run of characters
/// in that directory (e.g. `/dev/disk/by-id/wwn-0x6001405*`). Sorted, without duplicates.
pub fn expand_paths(patterns: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in patterns {
        let Some((dir, name)) = glob(p) else {
            out.push(PathBuf::from(p));
            continue;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(f) = e.file_name().to_str() {
                if wildcard_match(name, f) {
                    out.push(dir.join(f));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The paths of `found` that none of `patterns` names itself (equal, or a glob in its
/// directory that its name matches, as [`expand_paths`] would list it): a dm-multipath map's
/// paths. Linear in the paths: literal patterns are looked up by their bytes.
pub fn unnamed_paths<'a>(patterns: &[String], found: &'a [PathBuf]) -> Vec<&'a Path> {
    use std::os::unix::ffi::OsStrExt;
    let globs: Vec<(&Path, &str)> = patterns.iter().filter_map(|p| glob(p)).collect();
    let literals: std::collections::HashSet<&[u8]> = patterns
        .iter()
        .filter(|p| glob(p).is_none())
        .map(|p| p.as_bytes())
        .collect();
    found
        .iter()
        .map(PathBuf::as_path)
        .filter(|path| {
            if literals.contains(path.as_os_str().as_bytes()) {
                return false;
            }
            !globs.iter().any(|&(dir, name)| {
                path.parent() == Some(dir)
                    && path
                        .file_name()
                        .and_then(|f| f.to_str())
                        .is_some_and(|f| wildcard_match(name, f))
            })
        })
        .collect()
}

/// A pattern whose last component has a `*`: its directory and that component.
fn glob(pattern: &str) -> Option<(&Path, &str)> {
    let path = Path::new(pattern);
    let name = path.file_name().and_then(|n| n.to_str())?;
    name.contains('*')
        .then(|| (path.parent().unwrap_or(Path::new("/")), name))
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some((first, rest)) = parts.split_first() else {
        return text.is_empty();
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_often_enough_to_survive_one_slow_check_within_the_lease() {
        let t = |p, d, l| Timing {
            poll: Duration::from_millis(p),
            io_deadline: Duration::from_millis(d),
            lease: Duration::from_millis(l),
            watchdog: Duration::from_secs(60),
            startup_delay: Duration::ZERO,
            fence_deadline: Duration::from_secs(20),
        };
        assert_eq!(
            t(1000, 500, 3000).key_check_period(),
            Duration::from_millis(1250)
        );
        for p in (100..=5000).step_by(700) {
            for d in (10..p).step_by(300) {
                for l in (2 * p + d..8 * p).step_by(900) {
                    let timing = t(p, d, l);
                    assert!(timing.check().is_ok());
                    let k = timing.key_check_period();
                    assert!(k >= timing.poll, "{timing:?}");
                    assert!(2 * k + timing.io_deadline <= timing.lease, "{timing:?}");
                }
            }
        }
    }

    const GOOD: &str = r#"
[cluster]
name = "prod"
uuid = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10"
nodes = [ { id = 0, name = "node1" }, { id = 1, name = "node2" }, { id = 2, name = "node3", key = "0xabc" } ]
[node]
id = 1
[storage]
luns = ["/dev/sda"]
voting_disks = ["/dev/vda", "/dev/vdb", "/dev/vdc"]
"#;

    /// Parses `text` as if the voting disks' header held the default timeouts.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(
            Path::new("/etc/fenced/fenced.toml"),
            text,
            &|disks, cluster| {
                assert_eq!(disks.len(), 3);
                assert_eq!(cluster.to_string(), "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10");
                Ok(Timeouts::default())
            },
        )
    }

    #[test]
    fn paths_no_pattern_names_are_a_maps_paths() {
        let patterns = vec!["/dev/fenced/*".to_string(), "/dev/sdq".to_string()];
        let found: Vec<PathBuf> = [
            "/dev/fenced/lun0",
            "/dev/sdq",
            "/dev/sdr",
            "/dev/fenced/sub/x",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            unnamed_paths(&patterns, &found),
            vec![Path::new("/dev/sdr"), Path::new("/dev/fenced/sub/x")]
        );
    }

    #[test]
    fn a_minimal_file_gets_documented_defaults_and_the_headers_timeouts() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.me.name, "node2");
        assert_eq!(c.timing.poll, Duration::from_millis(1000));
        assert_eq!(c.timing.as_header_timeouts(), Timeouts::default());
        assert_eq!(c.timing.fence_deadline, Duration::from_secs(20));
        assert_eq!(c.watchdog_policy, WatchdogPolicy::RequireHardware);
        assert_eq!(c.self_fence, SelfFenceAction::Reboot);
        assert_eq!(c.member("node3").unwrap().key, ReservationKey(0xabc));
        assert_eq!(c.member("0").unwrap().name, "node1");
        assert_eq!(c.member_by_key(c.me.key).unwrap().id, 1);
        assert_eq!(c.key_check_luns, 32);
        let every = GOOD.replace("luns = [", "key_check_luns = 0\nluns = [");
        assert_eq!(parse(&every).unwrap().key_check_luns, 0);
    }

    #[test]
    fn derived_keys_are_distinct_nonzero_and_carry_the_node_id() {
        let cluster: ClusterId = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10".parse().unwrap();
        let keys: Vec<u64> = (0..=254).map(|id| derive_key(&cluster, id).0).collect();
        for (id, k) in keys.iter().enumerate() {
            assert_ne!(*k, 0);
            assert_eq!(k & 0xffff_ffff, id as u64 + 1);
            assert_eq!(k >> 32, u64::from(crc32fast::hash(&cluster.0)));
        }
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len());
        let other: ClusterId = "6f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10".parse().unwrap();
        assert_ne!(derive_key(&other, 0), derive_key(&cluster, 0));
    }

    /// The timeouts live in the voting disks' header: a file may leave them out (then the
    /// header's are used, and a header that cannot be read is a clear error) or state all four;
    /// a partial statement is refused.
    #[test]
    fn timeouts_come_from_the_header_unless_all_four_are_stated() {
        let path = Path::new("/etc/fenced/fenced.toml");
        let header = Timeouts {
            poll_ms: 500,
            io_deadline_ms: 200,
            lease_ms: 2000,
            watchdog_ms: 4000,
        };
        let c = Config::parse_with(path, GOOD, &|_, _| Ok(header)).unwrap();
        assert_eq!(c.timing.as_header_timeouts(), header);
        let e = Config::parse_with(path, GOOD, &|_, _| Err("no disk answered".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no disk answered") && e.contains("state the timeouts"),
            "{e}"
        );
        let stated = format!(
            "{GOOD}\n[timeouts]\npoll = 1000\nio_deadline = 500\nlease = 3000\nwatchdog = 5000\n"
        );
        let c = Config::parse_with(path, &stated, &|_, _| panic!("not read when stated")).unwrap();
        assert_eq!(c.timing.as_header_timeouts(), Timeouts::default());
        let partial = format!("{GOOD}\n[timeouts]\npoll = 1000\nfence_deadline = 9000\n");
        let e = parse(&partial).unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        // Only the config's own timeouts left: the header's four, the file's fence deadline.
        let own = format!("{GOOD}\n[timeouts]\nfence_deadline = 9000\n");
        let c = parse(&own).unwrap();
        assert_eq!(c.timing.fence_deadline, Duration::from_secs(9));
        assert_eq!(c.timing.as_header_timeouts(), Timeouts::default());
    }

    #[test]
    fn broken_timing_names_the_value_to_change() {
        let text = format!(
            "{GOOD}\n[timeouts]\npoll = 1000\nio_deadline = 1000\nlease = 3000\nwatchdog = 5000\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("io_deadline (1000 ms) must be below timeouts.poll"),
            "{e}"
        );
        let text = format!(
            "{GOOD}\n[timeouts]\npoll = 1000\nio_deadline = 500\nlease = 2000\nwatchdog = 5000\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("raise lease"), "{e}");
        let text = format!(
            "{GOOD}\n[timeouts]\npoll = 1000\nio_deadline = 500\nlease = 3000\nwatchdog = 1500\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("raise watchdog"), "{e}");
        let text = format!(
            "{GOOD}\n[timeouts]\npoll = 1000\nio_deadline = 500\nlease = 3000\nwatchdog = 5500\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("use 6000 ms"), "{e}");
    }

    #[test]
    fn unknown_keys_duplicates_and_bad_values_are_refused() {
        let e = parse(&GOOD.replace("[node]\nid = 1", "[node]\nid = 1\nkey_typo = 3"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("key_typo"), "{e}");
        let e = parse(&GOOD.replace("id = 1, name = \"node2\"", "id = 0, name = \"node2\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("share an id"), "{e}");
        let e = parse(&GOOD.replace("[node]\nid = 1", "[node]\nid = 7"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.id 7 is not in cluster.nodes"), "{e}");
        let e = parse(&GOOD.replace("5f0c5a3e-2b1d", "zzzz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a UUID"), "{e}");
        let e = parse(&GOOD.replace("key = \"0xabc\"", "key = \"0\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("key of node3"), "{e}");
        let e = parse(&GOOD.replace("\"/dev/vda\", \"/dev/vdb\", \"/dev/vdc\"", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("voting_disks is empty"), "{e}");
    }

    #[test]
    fn config_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fenced.toml");
        let stated = format!(
            "{GOOD}\n[timeouts]\npoll = 1000\nio_deadline = 500\nlease = 3000\nwatchdog = 5000\n"
        );
        std::fs::write(&p, stated).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load(&p, true).unwrap_err();
        assert!(matches!(e, ConfigError::Insecure { .. }), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::load(&p, nix::unistd::geteuid().is_root()).is_ok());
    }

    /// Voting disks as image files: the header a majority holds gives the timeouts.
    #[test]
    fn the_header_timeouts_are_those_a_majority_of_disks_hold() {
        use crate::vdisk::{admin, Header};
        let dir = tempfile::tempdir().unwrap();
        let cluster: ClusterId = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10".parse().unwrap();
        let t = Timeouts {
            poll_ms: 500,
            io_deadline_ms: 200,
            lease_ms: 2000,
            watchdog_ms: 4000,
        };
        let disks: Vec<PathBuf> = (0..3)
            .map(|i| dir.path().join(format!("vote{i}")))
            .collect();
        for (i, d) in disks.iter().enumerate() {
            std::fs::File::create(d).unwrap().set_len(1 << 20).unwrap();
            let timeouts = if i == 2 { Timeouts::default() } else { t };
            admin::format_disk(d, &Header::new(cluster, 3, timeouts), false).unwrap();
        }
        assert_eq!(
            header_timeouts(&disks, cluster),
            Ok(t),
            "two of three agree"
        );
        std::fs::write(&disks[1], vec![0u8; 4096]).unwrap();
        let e = header_timeouts(&disks, cluster).unwrap_err();
        assert!(e.contains("no majority"), "{e}");
        let other: ClusterId = "6f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10".parse().unwrap();
        assert!(
            header_timeouts(&disks, other).is_err(),
            "another cluster's disks"
        );
    }

    #[test]
    fn wildcards_match_like_a_shell_glob_in_one_directory() {
        assert!(wildcard_match("wwn-0x6001405*", "wwn-0x6001405abc"));
        assert!(!wildcard_match("wwn-0x6001405*", "wwn-0x5001405abc"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("sd*", "sd"));
        let dir = tempfile::tempdir().unwrap();
        for f in ["scsi-1", "scsi-2", "other"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let found = expand_paths(&[format!("{}/scsi-*", dir.path().display())]);
        assert_eq!(found.len(), 2);
    }
}
