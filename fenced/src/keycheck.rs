//! The key check: a thread that, once per period, reads the keys of LUNs through every path,
//! keeps the paths' states, registers new and returned paths, recovers from a lost PR state,
//! and preempts the keys of nodes the authority marks dead. A period reads every LUN that needs
//! attention and, of those in good standing, the first and a budget of the others in turn
//! ([`KeyChecker::due`]).
//!
//! What it may and may not conclude (the principle: only the cluster's authority resets a
//! healthy node):
//!
//! - **Our key is listed**: the LUN is confirmed.
//! - **A path fails**: the path is down (retried with back-off); the LUN is degraded while
//!   another path answers, unreachable when none does. Neither withholds the watchdog: the
//!   target enforces the reservation whether or not this node can read it.
//! - **Our key is gone and a path received UNIT ATTENTION 2A/05 (registrations preempted)**:
//!   another node preempted us. The loop fences this node ([`KeyLoss::Preempted`]).
//! - **Our key is gone without that notice**: it may be a preemption whose notice went to
//!   other I/O on the nexus (the sd driver's), or a PR-state loss (an array reset without APTPL,
//!   an operator's PR OUT CLEAR; 2A/03 and 2A/04 prove nothing either). The first node to see a
//!   state loss registers again, so the others then see its key and not theirs: "other keys
//!   remain" proves nothing. The checker registers again under the guard of
//!   [`crate::luns::register_guarded`]: a fresh authority read that does not mark this node
//!   dead, completed within B — which is safe against a concurrent fence because the fencer
//!   re-verifies after t0 + B. With `storage.key_loss = "self-fence"` (for clusters where a
//!   tool other than fenced may preempt), it fences instead.
//! - **The key of a node the authority marks dead is listed**: a LUN or path that was
//!   unreachable during its fence came back, or its registration raced the fence: preempt it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sg_pr::sense::asc;
use sg_pr::{Completed, PrOperation, RegisteredKeys, ReservationKey};

use crate::luns::{
    identify, register_guarded, AuthoritySource, GuardedOutcome, Lun, Registration, ReserveLun,
    FENCING_TYPE,
};
use crate::storage::{Answer, Job, PathIo, Reply, Request, Runner, Step, Storage};
use crate::vdisk::{DeadSet, Marker};

const UNREGISTERING: &str = "leaving: unregistering our key (no node that stays took it over)";

/// Why this node's key loss ends in a self-fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum KeyLoss {
    /// UNIT ATTENTION 2A/05: another node preempted our registrations.
    Preempted,
    /// Our key vanished and `storage.key_loss = "self-fence"`.
    Unexplained,
    /// A registration after a key loss completed after the bound B (see [`crate::luns`]).
    RegistrationLate,
}

impl KeyLoss {
    fn code(self) -> u64 {
        match self {
            KeyLoss::Preempted => 1,
            KeyLoss::Unexplained => 2,
            KeyLoss::RegistrationLate => 3,
        }
    }

    fn from_code(c: u64) -> Option<KeyLoss> {
        match c {
            1 => Some(KeyLoss::Preempted),
            2 => Some(KeyLoss::Unexplained),
            3 => Some(KeyLoss::RegistrationLate),
            _ => None,
        }
    }
}

/// What to do when our key vanishes without a preemption notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyLossPolicy {
    /// Take it for a PR-state loss and register again under the guard (default).
    #[default]
    Recover,
    /// Fence this node (the behaviour before multipath support; for clusters where another
    /// tool, e.g. fence_scsi, may preempt without a marker on the voting disks).
    SelfFence,
}

/// What the loop reads from the checker, without locks or allocation.
#[derive(Debug, Default)]
pub struct KeyWatch {
    /// (LUN index + 1) << 8 | KeyLoss code; 0 while our key is not lost.
    lost: AtomicU64,
    /// LUNs not confirmed through every path this period.
    degraded: AtomicUsize,
    /// This node leaves the cluster (a clean stop): [`LEAVING`] once announced (a peer removing
    /// our key is then expected, not a fence), [`LEFT`] once no reachable LUN holds our key.
    leave: AtomicU8,
}

const LEAVING: u8 = 1;
const LEFT: u8 = 2;

impl KeyWatch {
    /// Nothing lost, nothing degraded.
    pub fn new() -> Arc<KeyWatch> {
        Arc::new(KeyWatch::default())
    }

    /// The LUN (index in the checker's list) and cause when our key is lost for good.
    pub fn lost(&self) -> Option<(usize, KeyLoss)> {
        let v = self.lost.load(Ordering::Acquire);
        let cause = KeyLoss::from_code(v & 0xff)?;
        Some((
            usize::try_from(v >> 8)
                .unwrap_or(usize::MAX)
                .saturating_sub(1),
            cause,
        ))
    }

    /// LUNs degraded or unreachable.
    pub fn degraded(&self) -> usize {
        self.degraded.load(Ordering::Acquire)
    }

    /// Loop side: this node leaves; from now on our key's removal is expected. Called before
    /// the slot announces it, so that the checker knows before any peer acts on it.
    pub fn start_leaving(&self) {
        let _ = self
            .leave
            .compare_exchange(0, LEAVING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether this node is leaving (or has left).
    pub fn leaving(&self) -> bool {
        self.leave.load(Ordering::Acquire) != 0
    }

    /// Whether no reachable LUN holds our key any more (the leave is complete).
    pub fn has_left(&self) -> bool {
        self.leave.load(Ordering::Acquire) == LEFT
    }

    fn set_lost(&self, lun: usize, cause: KeyLoss) {
        let v = ((lun as u64 + 1) << 8) | cause.code();
        let _ = self
            .lost
            .compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// A path's state, as `fenced status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathHealth {
    /// Device node.
    pub path: String,
    /// `up`, `down` or `gone` (the device node vanished).
    pub state: String,
    /// Whether this node's registration through the path is verified.
    pub registered: bool,
    /// The last error, while down.
    pub error: Option<String>,
}

/// A LUN's state, as `fenced status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LunHealth {
    /// LUN id.
    pub lun: String,
    /// `confirmed` (our key listed, every path up and registered), `degraded` (confirmed
    /// through fewer paths), `unreachable` (no path answered), `recovering` (our key is gone
    /// without a preemption notice; registering again), `lost` (this node is fenced).
    pub state: String,
    /// Milliseconds since our key was last seen on it, as of the moment the health was read
    /// (a checker stuck on a hung command shows its confirmations ageing).
    pub confirmed_ms_ago: Option<u64>,
    /// Its paths.
    pub paths: Vec<PathHealth>,
    /// What the checker last did or saw, for the operator.
    pub note: Option<String>,
}

/// The checker's view for the control socket and fences: LUN health and the current paths.
#[derive(Debug, Default)]
pub struct LunBoard {
    /// The health as of the last period, and when that period published it.
    health: Mutex<(Vec<LunHealth>, Option<Instant>)>,
    luns: Mutex<Vec<Lun>>,
}

impl LunBoard {
    /// A board listing `luns` before the first check.
    pub fn new(luns: &[Lun]) -> Arc<LunBoard> {
        Arc::new(LunBoard {
            health: Mutex::new((Vec::new(), None)),
            luns: Mutex::new(luns.to_vec()),
        })
    }

    /// Every LUN's health as of the last period, its ages counted to now.
    pub fn health(&self) -> Vec<LunHealth> {
        let (mut health, published) = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let since = published.map_or(0, |t| {
            u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
        });
        for l in &mut health {
            l.confirmed_ms_ago = l.confirmed_ms_ago.map(|ms| ms.saturating_add(since));
        }
        health
    }

    /// Milliseconds since the checker last finished a period; `None` before its first.
    pub fn checked_ms_ago(&self) -> Option<u64> {
        let published = self.health.lock().unwrap_or_else(|e| e.into_inner()).1;
        published.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The LUNs and their present paths (up ones first), sorted by id.
    pub fn luns(&self) -> Vec<Lun> {
        self.luns.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the checker works with.
#[derive(Debug, Clone)]
pub struct CheckerConfig {
    /// The configured path patterns (rescanned every period).
    pub patterns: Vec<String>,
    /// This node's registration.
    pub reg: Registration,
    /// This node's slot id.
    pub me: u8,
    /// Every member's (slot id, key), to recognise the keys of nodes marked dead.
    pub members: Vec<(u8, ReservationKey)>,
    /// Per-command timeout.
    pub timeout: Duration,
    /// The check period.
    pub period: Duration,
    /// The registration bound B.
    pub bound: Duration,
    /// What a key loss without a preemption notice means.
    pub key_loss: KeyLossPolicy,
    /// Leaving: how long a node that stays has to take our key over.
    pub handover: Duration,
    /// The most LUNs in good standing read per period (`storage.key_check_luns`; 0: all).
    /// See [`KeyChecker::due`].
    pub luns_per_period: usize,
}

/// Gives the checker the authority: a fresh read (for registrations) and the latest one (for
/// the sweep of dead nodes' keys).
pub trait AuthorityView: AuthoritySource + Send {
    /// The authority the loop last read (no waiting).
    fn latest(&self) -> Marker;
    /// The other nodes as the loop last read their slots (no waiting).
    fn peers(&self) -> Peers;
}

/// The other nodes as the loop last read their slots.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Peers {
    /// Slots whose block says the node leaves or has left (a clean stop): their keys are
    /// removed by the nodes that stay.
    pub leaving: DeadSet,
    /// Whether another node is joined with a fresh heartbeat (one that can take over this
    /// node's reservations when it leaves).
    pub live: bool,
    /// Slots whose block shows the node rebooted since its fence (the rejoin evidence).
    pub rebooted: DeadSet,
}

struct PathState {
    path: PathBuf,
    dev: Option<Box<dyn PathIo>>,
    /// Answered its last command.
    up: bool,
    /// The device node exists.
    present: bool,
    /// Our registration through it is verified.
    registered: bool,
    fails: u32,
    retry_at: Option<Instant>,
    error: Option<String>,
}

impl PathState {
    fn new(path: PathBuf, dev: Option<Box<dyn PathIo>>, registered: bool) -> PathState {
        PathState {
            path,
            up: dev.is_some(),
            dev,
            present: true,
            registered,
            fails: 0,
            retry_at: None,
            error: None,
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.present && (self.up || self.retry_at.is_none_or(|t| now >= t))
    }

    fn fail(&mut self, now: Instant, period: Duration, error: String) {
        if self.up {
            tracing::warn!(path = %self.path.display(), error = %error, "path down");
        }
        self.up = false;
        self.registered = false;
        self.dev = None;
        self.fails = self.fails.saturating_add(1);
        // Back-off: one period, doubling to 8: a returning path is taken back within 8 periods
        // (10 s with the defaults), and a hung one costs the checker a timeout at most that
        // often.
        let periods = 1u32 << self.fails.min(4).saturating_sub(1);
        self.retry_at = Some(now + period * periods);
        self.error = Some(error);
    }
}

struct LunState {
    id: String,
    paths: Vec<PathState>,
    confirmed_at: Option<Instant>,
    reachable: bool,
    recovering: bool,
    lost: bool,
    /// Leaving: our key is off this LUN.
    left: bool,
    generation: Option<u32>,
    /// Its last read listed the key of a node dead or leaving (to take over until it is gone).
    takeover_pending: bool,
    note: Option<String>,
}

impl LunState {
    fn new(id: String, paths: Vec<PathState>) -> LunState {
        LunState {
            id,
            paths,
            confirmed_at: None,
            reachable: true,
            recovering: false,
            lost: false,
            left: false,
            generation: None,
            takeover_pending: false,
            note: None,
        }
    }

    /// Whether anything about this LUN is unsettled: never confirmed, unreachable, recovering,
    /// a present path not up and registered, a takeover to finish. Such a LUN is read every
    /// period, whatever the budget.
    fn needs_attention(&self) -> bool {
        self.confirmed_at.is_none()
            || !self.reachable
            || self.recovering
            || self.takeover_pending
            || self
                .paths
                .iter()
                .any(|p| p.present && !(p.up && p.registered))
    }
}

/// One command on one path (READ KEYS every period; an unregistration on a leave).
struct Single {
    device: usize,
    request: Request,
    answer: Option<Answer>,
}

impl Single {
    fn new(device: usize, request: Request) -> Single {
        Single {
            device,
            request,
            answer: None,
        }
    }
}

impl Job for Single {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        match last {
            None => Some(Step {
                device: self.device,
                request: self.request,
            }),
            Some(a) => {
                self.answer = Some(a);
                None
            }
        }
    }
}

/// The key checker. [`KeyChecker::step`] is one period's work; [`spawn`] runs it on a thread.
pub struct KeyChecker {
    storage: Arc<dyn Storage>,
    runner: Box<dyn Runner>,
    cfg: CheckerConfig,
    luns: Vec<LunState>,
    authority: Box<dyn AuthorityView>,
    watch: Arc<KeyWatch>,
    board: Arc<LunBoard>,
    /// Paths whose identity could not be read (reported once, retried every period).
    unidentified: Vec<PathBuf>,
    /// A LUN was registered again this period: tell multipathd once, at the end of it.
    tell_multipathd: bool,
    /// Registrations asked for this period: LUN, paths.
    to_register: Vec<(usize, Vec<usize>)>,
    /// What follows them, per LUN.
    after: Vec<(usize, After)>,
    /// Leaving: when the checker first saw it, and the LUNs to unregister from this period.
    leave: Option<Instant>,
    to_unregister: Vec<usize>,
    /// LUNs to settle at the end of the period (takeovers, reservation).
    to_settle: Vec<Settle>,
    /// Slots dead or leaving per the loop's latest read (candidates for a takeover).
    gone: DeadSet,
    /// `gone` as of the previous period: a change makes the period read every LUN.
    gone_before: Option<DeadSet>,
    /// Where the next period's share of the LUNs in good standing starts.
    cursor: usize,
    /// A LUN lost its PR state or a path went down this period: likely an array- or port-wide
    /// event, so the next period reads every LUN.
    read_everything: bool,
    /// The paths' fingerprint before the last scan ([`Storage::paths_stamp`]), the periods
    /// since that scan, and whether it found paths no pattern names itself (a dm-multipath
    /// map's): see [`KeyChecker::rescan`].
    scanned: Option<u64>,
    scan_age: u32,
    expanded: bool,
}

/// A LUN to settle at the end of a period, through its registered path `via`.
struct Settle {
    lun: usize,
    via: usize,
    /// The keys to take over (nodes dead or leaving, to be confirmed by a fresh read).
    victims: Vec<(u8, ReservationKey)>,
    /// Take the reservation if it is free.
    reserve: bool,
}

/// The slots `marker` declares dead (none when it is no marker at all).
fn dead_set(marker: &Marker) -> DeadSet {
    if marker.is_present() {
        marker.dead
    } else {
        DeadSet::default()
    }
}

/// The slots dead or leaving, never `me`.
fn gone(me: u8, dead: DeadSet, leaving: DeadSet) -> DeadSet {
    let mut set = DeadSet::default();
    for s in dead.iter().chain(leaving.iter()).filter(|&s| s != me) {
        set.insert(s);
    }
    set
}

/// What follows a LUN's registration in the period's batch.
enum After {
    /// Our key was listed: sweep dead nodes' keys, take the reservation when free.
    Confirmed(RegisteredKeys),
    /// Our key was gone (a PR-state loss): take the reservation when free.
    Recovered,
}

impl KeyChecker {
    /// A checker over `luns` as unfenced at start: `registered` lists the paths whose
    /// registration succeeded.
    pub fn new(
        storage: Arc<dyn Storage>,
        cfg: CheckerConfig,
        luns: &[Lun],
        registered: &[PathBuf],
        authority: Box<dyn AuthorityView>,
        watch: Arc<KeyWatch>,
        board: Arc<LunBoard>,
    ) -> KeyChecker {
        let luns = luns
            .iter()
            .map(|l| {
                let paths = l
                    .paths
                    .iter()
                    .map(|p| {
                        let ok = registered.contains(p);
                        let mut s = PathState::new(p.clone(), None, ok);
                        s.up = ok;
                        s
                    })
                    .collect();
                LunState::new(l.id.clone(), paths)
            })
            .collect();
        KeyChecker {
            runner: storage.runner(),
            storage,
            cfg,
            luns,
            authority,
            watch,
            board,
            unidentified: Vec::new(),
            tell_multipathd: false,
            to_register: Vec::new(),
            after: Vec::new(),
            leave: None,
            to_unregister: Vec::new(),
            to_settle: Vec::new(),
            gone: DeadSet::default(),
            gone_before: None,
            cursor: 0,
            read_everything: false,
            scanned: None,
            scan_age: 0,
            expanded: false,
        }
    }

    /// One period: rescan the paths, check every LUN, publish the health.
    pub fn step(&mut self) {
        // Read before the keys: a peer removes our key only after our slot said we leave, which
        // the loop writes after telling us.
        if self.leave.is_none() && self.watch.leaving() {
            tracing::info!("leaving: our key is to come off every LUN (taken over by a node that stays, else unregistered)");
            self.leave = Some(Instant::now());
        }
        let latest = self.authority.latest();
        let dead = if latest.dead.contains(self.cfg.me) {
            DeadSet::default()
        } else {
            dead_set(&latest)
        };
        self.gone = gone(self.cfg.me, dead, self.authority.peers().leaving);
        let gone_changed = self.gone_before.replace(self.gone) != Some(self.gone);
        let everything = std::mem::take(&mut self.read_everything) || gone_changed;
        self.rescan();
        let due = self.due(everything);
        let answers = self.read_keys(&due);
        for (i, answer) in answers.into_iter().enumerate() {
            if due[i] {
                self.check(i, answer);
            }
        }
        if self.leave.is_some() {
            self.unregister_batch();
            self.check_left();
        }
        self.register_batch();
        for (i, after) in std::mem::take(&mut self.after) {
            self.after_registration(i, after);
        }
        self.settle_batch();
        if std::mem::take(&mut self.tell_multipathd) {
            crate::storage::tell_multipathd_all(&self.cfg.patterns);
        }
        self.publish();
    }

    /// Adds paths that appeared (to their LUN by identity, or as a new LUN) and marks vanished
    /// ones gone. Skipped while the paths' fingerprint is what it was before the last scan, for
    /// up to 7 periods in a row: not when the last scan found a dm-multipath map's paths (their
    /// changes leave no fingerprint) or paths that did not answer INQUIRY (retried every
    /// period). With hundreds of paths, the scan was most of the idle key check's own CPU.
    fn rescan(&mut self) {
        let stamp = self.storage.paths_stamp(&self.cfg.patterns);
        if stamp.is_some()
            && stamp == self.scanned
            && self.scan_age < 7
            && !self.expanded
            && self.unidentified.is_empty()
        {
            self.scan_age += 1;
            return;
        }
        self.scanned = stamp;
        self.scan_age = 0;
        let found = self.storage.paths(&self.cfg.patterns);
        self.expanded = !crate::config::unnamed_paths(&self.cfg.patterns, &found).is_empty();
        // Sets of the paths' bytes, not scans (with hundreds of paths, comparing every known
        // path with every found one was most of the idle key check's CPU), and not of `Path`s,
        // which hash and compare component by component.
        let found_set: HashSet<&OsStr> = found.iter().map(|p| p.as_os_str()).collect();
        for lun in &mut self.luns {
            for p in &mut lun.paths {
                let present = found_set.contains(p.path.as_os_str());
                if p.present && !present {
                    tracing::warn!(lun = %lun.id, path = %p.path.display(), "path gone (device node removed)");
                    p.up = false;
                    p.dev = None;
                    p.registered = false;
                    p.error = Some("device node removed".into());
                } else if !p.present && present {
                    tracing::info!(lun = %lun.id, path = %p.path.display(), "path back");
                    p.retry_at = None;
                    p.fails = 0;
                }
                p.present = present;
            }
        }
        let known: HashSet<std::ffi::OsString> = self
            .luns
            .iter()
            .flat_map(|l| l.paths.iter().map(|p| p.path.as_os_str().to_owned()))
            .collect();
        let mut still_unidentified = Vec::new();
        for path in found {
            if known.contains(path.as_os_str()) {
                continue;
            }
            let opened = self
                .storage
                .open(&path, self.cfg.timeout)
                .and_then(|d| identify(&*d).map(|id| (id, d)));
            match opened {
                Ok((id, dev)) => {
                    let state = PathState::new(path.clone(), Some(dev), false);
                    match self.luns.iter_mut().find(|l| l.id == id) {
                        Some(l) => {
                            tracing::info!(lun = %id, path = %path.display(), "new path: registering it");
                            l.paths.push(state);
                        }
                        None => {
                            tracing::info!(lun = %id, path = %path.display(), "new LUN: registering this node's key on it");
                            self.luns.push(LunState::new(id, vec![state]));
                            self.luns.sort_by(|a, b| a.id.cmp(&b.id));
                        }
                    }
                }
                Err(e) => {
                    if !self.unidentified.contains(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "a configured path does not answer INQUIRY: it is not used until it does (retried every period)");
                    }
                    still_unidentified.push(path);
                }
            }
        }
        self.unidentified = still_unidentified;
    }

    /// The LUNs this period reads. Every LUN when `everything` (the dead or leaving nodes
    /// changed: their keys are to come off every LUN now; or the last period saw a LUN lose
    /// its PR state or a path go down, which an array or a port does to many LUNs at once),
    /// while leaving, or without a budget.
    /// Otherwise every LUN that [needs attention](LunState::needs_attention), the first LUN in
    /// good standing in the cluster-wide order (the one a fence races on first: its preemption
    /// notice reaches this node within a period), and the next `luns_per_period` others in
    /// turn. So the idle cost is bounded by the budget, not by the LUN count, and every LUN is
    /// read at least every ceil(LUNs / budget) periods.
    fn due(&mut self, everything: bool) -> Vec<bool> {
        let budget = self.cfg.luns_per_period;
        let n = self.luns.len();
        if everything || budget == 0 || budget >= n || self.leave.is_some() {
            return self.luns.iter().map(|l| !l.lost).collect();
        }
        let mut due: Vec<bool> = self
            .luns
            .iter()
            .map(|l| !l.lost && l.needs_attention())
            .collect();
        if let Some(first) = self.luns.iter().position(|l| !l.lost && l.reachable) {
            due[first] = true;
        }
        let mut taken = 0;
        let mut k = 0;
        while taken < budget && k < n {
            let i = (self.cursor + k) % n;
            k += 1;
            if !due[i] && !self.luns[i].lost {
                due[i] = true;
                taken += 1;
            }
        }
        self.cursor = (self.cursor + k) % n;
        due
    }

    /// Reads the keys through every due path of every `due` LUN in one batch (every READ KEYS
    /// in flight at once, each with its own deadline, so a hung path delays no other); per LUN,
    /// the first answer and whether any path received a registrations-preempted notice.
    fn read_keys(&mut self, due: &[bool]) -> Vec<(Option<Completed<RegisteredKeys>>, bool)> {
        let now = Instant::now();
        let (timeout, period) = (self.cfg.timeout, self.cfg.period);
        let mut paths = Vec::new();
        let mut who = Vec::new();
        for (i, lun) in self.luns.iter_mut().enumerate() {
            if !due[i] {
                continue;
            }
            for (j, p) in lun.paths.iter_mut().enumerate() {
                if !p.due(now) {
                    continue;
                }
                if p.dev.is_none() {
                    match self.storage.open(&p.path, timeout) {
                        Ok(d) => p.dev = Some(d),
                        Err(e) => {
                            p.fail(now, period, e.to_string());
                            continue;
                        }
                    }
                }
                paths.push(p.path.clone());
                who.push((i, j));
            }
        }
        let mut jobs: Vec<Single> = (0..paths.len())
            .map(|d| Single::new(d, Request::ReadKeys))
            .collect();
        self.run_batch(&paths, &mut jobs, now + timeout + period);
        let mut out: Vec<(Option<Completed<RegisteredKeys>>, bool)> =
            self.luns.iter().map(|_| (None, false)).collect();
        let now = Instant::now();
        for ((i, j), job) in who.into_iter().zip(jobs) {
            let lun = &mut self.luns[i];
            let p = &mut lun.paths[j];
            match job.answer {
                Some(Ok(Reply::Keys(k))) => {
                    if !p.up {
                        tracing::info!(lun = %lun.id, path = %p.path.display(), "path up again: verifying its registration");
                        p.registered = false;
                    }
                    p.up = true;
                    p.fails = 0;
                    p.retry_at = None;
                    p.error = None;
                    out[i].1 |= k
                        .report
                        .unit_attentions
                        .iter()
                        .any(|s| s.is(asc::REGISTRATIONS_PREEMPTED));
                    if out[i].0.is_none() {
                        out[i].0 = Some(k);
                    }
                }
                Some(Err(f)) => p.fail(now, period, f.error.to_string()),
                Some(Ok(other)) => p.fail(now, period, format!("unexpected reply {other:?}")),
                None => p.fail(now, period, "no answer".into()),
            }
            // A path that just went down: its port or array may have taken others with it.
            self.read_everything |= p.fails == 1;
        }
        out
    }

    fn check(&mut self, i: usize, (answer, preempted): (Option<Completed<RegisteredKeys>>, bool)) {
        if self.luns[i].lost {
            return;
        }
        let Some(keys) = answer else {
            let lun = &mut self.luns[i];
            if lun.reachable {
                tracing::warn!(lun = %lun.id, "LUN unreachable: no path answers; degraded, not unhealthy (the target still enforces the reservation)");
            }
            lun.reachable = false;
            return;
        };
        if !self.luns[i].reachable {
            tracing::info!(lun = %self.luns[i].id, "LUN reachable again");
            self.luns[i].reachable = true;
        }
        if self.leave.is_some() {
            self.leave_lun(i, &keys.value);
            return;
        }
        let me = self.cfg.reg.key;
        if keys.value.contains(me) {
            self.confirmed(i, &keys.value, preempted);
        } else if preempted {
            self.lose(i, KeyLoss::Preempted, "READ KEYS no longer lists our key and the target said our registrations were preempted (UNIT ATTENTION 2A/05)");
        } else if self.cfg.key_loss == KeyLossPolicy::SelfFence {
            self.lose(
                i,
                KeyLoss::Unexplained,
                "READ KEYS no longer lists our key (storage.key_loss = \"self-fence\")",
            );
        } else {
            self.recover(i);
        }
    }

    /// Leaving: our key off LUN `i` is the goal, not a fence. While a node that stays is live,
    /// it takes our key over (a PREEMPT makes it the reservation holder, so the LUN is never
    /// left unreserved); without one, or when it has not within the hand-over time, we
    /// unregister ourselves (as holder, that releases the reservation).
    fn leave_lun(&mut self, i: usize, keys: &RegisteredKeys) {
        let waited = self.leave.map_or(Duration::ZERO, |t| t.elapsed());
        let live = self.authority.peers().live;
        let handover = live && waited < self.cfg.handover;
        let lun = &mut self.luns[i];
        if !keys.contains(self.cfg.reg.key) {
            if !lun.left {
                tracing::info!(lun = %lun.id, "left: our key is off the LUN");
                lun.left = true;
                lun.note = Some("left: our key is off the LUN".into());
                for p in &mut lun.paths {
                    p.registered = false;
                }
            }
            return;
        }
        lun.left = false;
        if handover {
            lun.note = Some("leaving: waiting for a node that stays to take our key over".into());
        } else {
            if lun.note.as_deref() != Some(UNREGISTERING) {
                tracing::warn!(lun = %lun.id, live_peer = live, "leaving: no node that stays took our key over; unregistering it ourselves (a reservation we hold is released; a node that stays takes it again)");
            }
            lun.note = Some(UNREGISTERING.into());
            self.to_unregister.push(i);
        }
    }

    /// Leaving: unregisters our key through every answering path of the LUNs listed this
    /// period, all in one batch (REGISTER AND IGNORE EXISTING KEY with key 0: a no-op on a path
    /// that holds no registration).
    fn unregister_batch(&mut self) {
        let mut paths = Vec::new();
        for i in std::mem::take(&mut self.to_unregister) {
            for p in &self.luns[i].paths {
                if p.up && p.dev.is_some() {
                    paths.push(p.path.clone());
                }
            }
        }
        if paths.is_empty() {
            return;
        }
        let op = PrOperation::Register {
            current: ReservationKey(0),
            new: ReservationKey(0),
            // No APTPL: nothing is left to persist, and a target without APTPL support (tgt)
            // refuses the whole command when it is set.
            options: sg_pr::RegisterOptions {
                ignore_existing: true,
                aptpl: false,
                all_target_ports: false,
            },
        };
        let mut jobs: Vec<Single> = (0..paths.len())
            .map(|d| Single::new(d, Request::Out(op)))
            .collect();
        self.run_batch(&paths, &mut jobs, Instant::now() + self.cfg.timeout);
        for (path, job) in paths.iter().zip(jobs) {
            if let Some(Err(f)) = job.answer {
                tracing::warn!(path = %path.display(), error = %f.error, "leaving: unregistering failed; retried next period");
            }
        }
    }

    /// Leaving: done once every LUN is off our key, or once the hand-over time is past for the
    /// LUNs no path reaches (the nodes that stay remove our key when they reach them: our slot
    /// says we left).
    fn check_left(&mut self) {
        let waited = self.leave.map_or(Duration::ZERO, |t| t.elapsed());
        let done = self
            .luns
            .iter()
            .all(|l| l.left || (!l.reachable && waited >= self.cfg.handover));
        if done && !self.watch.has_left() {
            for l in self.luns.iter().filter(|l| !l.left) {
                tracing::warn!(lun = %l.id, "left with our key possibly still on this unreachable LUN: the nodes that stay remove it when they reach it");
            }
            self.watch.leave.store(LEFT, Ordering::Release);
        }
    }

    fn lose(&mut self, i: usize, cause: KeyLoss, why: &str) {
        let lun = &mut self.luns[i];
        tracing::error!(lun = %lun.id, key = format_args!("0x{:x}", self.cfg.reg.key.0), "{why}: this node was fenced");
        lun.lost = true;
        lun.note = Some(why.to_string());
        self.watch.set_lost(i, cause);
    }

    fn confirmed(&mut self, i: usize, keys: &RegisteredKeys, preempted: bool) {
        let now = Instant::now();
        if preempted {
            tracing::warn!(lun = %self.luns[i].id, "a registrations-preempted notice arrived while our key is listed: a preemption was undone by our own guarded registration, which the fencer re-verifies");
        }
        {
            let lun = &mut self.luns[i];
            lun.confirmed_at = Some(now);
            if lun.recovering {
                tracing::info!(lun = %lun.id, "our key is registered again");
                lun.recovering = false;
                lun.note = None;
            }
        }
        // Paths up but not verified: new, returned, or registered by nobody yet.
        let pending: Vec<usize> = self.luns[i]
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.up && !p.registered)
            .map(|(j, _)| j)
            .collect();
        if pending.is_empty() {
            self.sweep_and_reserve(i, keys, false);
        } else {
            // Registered with every other LUN's in one batch; the sweep and the reservation
            // follow it.
            self.to_register.push((i, pending));
            self.after.push((i, After::Confirmed(keys.clone())));
        }
    }

    /// Queues LUN `i` for this period's settling (through a registered path: PREEMPT and
    /// RESERVE need one; LIO answers an unregistered nexus NOT READY): the keys of nodes dead or
    /// leaving per the loop's latest read, and the reservation when the registrations changed.
    fn sweep_and_reserve(&mut self, i: usize, keys: &RegisteredKeys, registered_now: bool) {
        let Some(via) = self.luns[i].paths.iter().position(|p| p.up && p.registered) else {
            return;
        };
        let victims: Vec<(u8, ReservationKey)> = self
            .cfg
            .members
            .iter()
            .filter(|&&(id, key)| self.gone.contains(id) && keys.contains(key))
            .copied()
            .collect();
        self.luns[i].takeover_pending = !victims.is_empty();
        let changed = self.luns[i].generation != Some(keys.generation);
        self.luns[i].generation = Some(keys.generation);
        if !victims.is_empty() || changed || registered_now {
            self.to_settle.push(Settle {
                lun: i,
                via,
                victims,
                reserve: changed || registered_now,
            });
        }
    }

    /// Our key is gone without a preemption notice: register again under the guard.
    fn recover(&mut self, i: usize) {
        {
            let lun = &mut self.luns[i];
            if !lun.recovering {
                tracing::warn!(lun = %lun.id, "our key is gone without a preemption notice: taking it for a PR-state loss (array reset, PR OUT CLEAR) and registering again on a fresh voting-disk read");
                lun.recovering = true;
                // An array reset loses every LUN's state: find the others next period.
                self.read_everything = true;
            }
            for p in &mut lun.paths {
                p.registered = false;
            }
        }
        let up: Vec<usize> = self.luns[i]
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.up)
            .map(|(j, _)| j)
            .collect();
        self.to_register.push((i, up));
        self.after.push((i, After::Recovered));
    }

    /// What follows the registrations of this period.
    fn after_registration(&mut self, i: usize, after: After) {
        if self.luns[i].lost {
            return;
        }
        match after {
            After::Confirmed(keys) => self.sweep_and_reserve(i, &keys, true),
            After::Recovered => {
                if let Some(via) = self.luns[i].paths.iter().position(|p| p.up && p.registered) {
                    self.to_settle.push(Settle {
                        lun: i,
                        via,
                        victims: Vec::new(),
                        reserve: true,
                    });
                    self.tell_multipathd = true;
                }
            }
        }
    }

    /// The registrations this period asked for, every LUN's in one guarded batch.
    fn register_batch(&mut self) {
        let mut wanted: Vec<(usize, Vec<usize>)> = std::mem::take(&mut self.to_register)
            .into_iter()
            .map(|(i, which)| {
                let open: Vec<usize> = which
                    .into_iter()
                    .filter(|&j| self.luns[i].paths.get(j).is_some_and(|p| p.dev.is_some()))
                    .collect();
                (i, open)
            })
            .filter(|(_, which)| !which.is_empty())
            .collect();
        self.verify_kept(&mut wanted);
        if wanted.is_empty() {
            return;
        }
        let luns: Vec<(String, Vec<PathBuf>)> = wanted
            .iter()
            .map(|(i, which)| {
                let lun = &self.luns[*i];
                let paths = which.iter().map(|&j| lun.paths[j].path.clone()).collect();
                (lun.id.clone(), paths)
            })
            .collect();
        let (reg, bound, timeout) = (self.cfg.reg, self.cfg.bound, self.cfg.timeout);
        let results = register_guarded(
            &*self.storage,
            &mut *self.runner,
            &luns,
            reg,
            &mut *self.authority,
            bound,
            timeout,
        );
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                for (i, _) in &wanted {
                    let lun = &mut self.luns[*i];
                    if lun.note.as_deref() != Some(&e.to_string()) {
                        tracing::warn!(lun = %lun.id, error = %e, "registration deferred to the next period");
                    }
                    lun.note = Some(e.to_string());
                }
                return;
            }
        };
        let now = Instant::now();
        let period = self.cfg.period;
        for ((i, which), (outcome, failed)) in wanted.into_iter().zip(results) {
            let lun = &mut self.luns[i];
            if outcome == GuardedOutcome::Late {
                let why = "a registration after our key vanished completed after the bound B, so a fence may have been re-verified before it";
                lun.lost = true;
                lun.note = Some(why.into());
                tracing::error!(lun = %lun.id, "{why}: fencing this node");
                self.watch.set_lost(i, KeyLoss::RegistrationLate);
                continue;
            }
            for j in which {
                let p = &mut lun.paths[j];
                match failed.iter().find(|(path, _)| *path == p.path) {
                    Some((_, e)) => p.fail(now, period, e.to_string()),
                    None => {
                        tracing::info!(lun = %lun.id, path = %p.path.display(), "registered");
                        p.registered = true;
                    }
                }
            }
            lun.note = None;
        }
    }

    /// Paths of LUNs that still list our key (a path back after timeouts, the common case) may
    /// still hold their registration: a REGISTER of our key in place of our key (no
    /// IGNORE EXISTING KEY) succeeds only on a nexus registered with it, so it can never undo a
    /// fence, and needs no guard. Those that pass are verified; the rest (new nexuses, a target
    /// that forgot them) are left in `wanted` for the guarded registration, whose bound a
    /// large batch under load need not risk for paths that never lost anything.
    fn verify_kept(&mut self, wanted: &mut Vec<(usize, Vec<usize>)>) {
        let listed: HashSet<usize> = self
            .after
            .iter()
            .filter(|(_, a)| matches!(a, After::Confirmed(_)))
            .map(|(i, _)| *i)
            .collect();
        let mut paths = Vec::new();
        let mut who = Vec::new();
        for (i, which) in wanted.iter() {
            if listed.contains(i) {
                for &j in which {
                    paths.push(self.luns[*i].paths[j].path.clone());
                    who.push((*i, j));
                }
            }
        }
        if paths.is_empty() {
            return;
        }
        let own = self.cfg.reg.key;
        let op = PrOperation::Register {
            current: own,
            new: own,
            options: sg_pr::RegisterOptions {
                ignore_existing: false,
                aptpl: self.cfg.reg.aptpl,
                all_target_ports: false,
            },
        };
        let mut jobs: Vec<Single> = (0..paths.len())
            .map(|d| Single::new(d, Request::Out(op)))
            .collect();
        self.run_batch(&paths, &mut jobs, Instant::now() + self.cfg.timeout);
        for ((i, j), job) in who.into_iter().zip(jobs) {
            if let Some(Ok(Reply::Out(_))) = job.answer {
                let lun = &mut self.luns[i];
                let p = &mut lun.paths[j];
                tracing::info!(lun = %lun.id, path = %p.path.display(), "registration still in place");
                p.registered = true;
                if let Some((_, which)) = wanted.iter_mut().find(|(w, _)| *w == i) {
                    which.retain(|&k| k != j);
                }
            }
        }
        wanted.retain(|(_, which)| !which.is_empty());
    }

    /// Settles the LUNs queued this period, all in flight at once: preempts the keys of nodes
    /// the authority marks dead, and of nodes whose slot says they leave or left (taking over
    /// the reservation of a leaving holder), then takes the reservation where it is free. The
    /// loop's latest read named the candidates; one fresh read for all LUNs confirms them (a
    /// node let back in by `fenced clear` registers only after reading the new marker, and a
    /// node that left writes Joining and waits `leave_quiet` before registering again, so a
    /// round that starts after its key was seen reads the change: a stale read must not
    /// preempt it).
    fn settle_batch(&mut self) {
        let wanted = std::mem::take(&mut self.to_settle);
        if wanted.is_empty() {
            return;
        }
        let mut swept = vec![false; wanted.len()];
        if wanted.iter().any(|s| !s.victims.is_empty()) {
            if let Some((dead, confirmed)) = self.fresh_gone() {
                let own = self.cfg.reg.key;
                let mut paths = Vec::new();
                let mut jobs = Vec::new();
                let mut who = Vec::new();
                for (k, s) in wanted.iter().enumerate() {
                    for &(id, key) in s.victims.iter().filter(|(id, _)| confirmed.contains(*id)) {
                        let op = PrOperation::Preempt {
                            own,
                            victim: key,
                            pr_type: FENCING_TYPE,
                            abort: true,
                        };
                        jobs.push(Single::new(paths.len(), Request::Out(op)));
                        paths.push(self.luns[s.lun].paths[s.via].path.clone());
                        who.push((k, id, key));
                    }
                }
                self.run_batch(&paths, &mut jobs, Instant::now() + self.cfg.timeout);
                for ((k, id, key), job) in who.into_iter().zip(jobs) {
                    let lun = &self.luns[wanted[k].lun];
                    let why = if dead.contains(id) {
                        "a node the authority marks dead (a LUN or path back after its fence, or a registration that raced it)"
                    } else {
                        "a node that leaves or left the cluster (its slot says so): taking over its registrations and any reservation it held"
                    };
                    match job.answer {
                        Some(Ok(_)) => {
                            tracing::warn!(lun = %lun.id, node = id, key = format_args!("0x{:x}", key.0), "preempted the key of {why}");
                            swept[k] = true;
                        }
                        Some(Err(f)) => {
                            tracing::warn!(lun = %lun.id, node = id, error = %f.error, "could not preempt the key of {why}; retried next period")
                        }
                        None => {}
                    }
                }
            }
        }
        let key = self.cfg.reg.key;
        let mut paths = Vec::new();
        let mut jobs = Vec::new();
        let mut which = Vec::new();
        for (k, s) in wanted.iter().enumerate() {
            if s.reserve || swept[k] {
                jobs.push(ReserveLun::new(paths.len(), key, false));
                paths.push(self.luns[s.lun].paths[s.via].path.clone());
                which.push(s.lun);
            }
        }
        self.run_batch(&paths, &mut jobs, Instant::now() + self.cfg.timeout);
        for (i, job) in which.into_iter().zip(jobs) {
            let lun = &self.luns[i];
            match job.outcome(&lun.id) {
                Ok((true, _)) => {
                    tracing::info!(lun = %lun.id, "the LUN had no reservation: took it (type 5)")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or take the reservation"),
            }
        }
    }

    /// One fresh read of the authority for this period's takeovers: the slots it marks dead,
    /// and those confirmed dead or leaving (never this node); `None` when the read cannot decide (no majority, this
    /// node marked dead, or a round that started more than B ago).
    fn fresh_gone(&mut self) -> Option<(DeadSet, DeadSet)> {
        let fresh = match self.authority.fresh() {
            Ok(f) if f.majority && !f.self_dead => f,
            _ => return None,
        };
        // A leaving node's key is taken only on a read this recent (the quiet time of a node
        // rejoining after its leave covers it).
        if fresh.round_started.elapsed() > self.cfg.bound {
            return None;
        }
        let dead = dead_set(&fresh.marker);
        Some((dead, gone(self.cfg.me, dead, fresh.leaving)))
    }

    /// Runs `jobs` on `paths`, all at once, each command within the command timeout and the
    /// whole batch by `until`.
    fn run_batch<J: Job>(&mut self, paths: &[PathBuf], jobs: &mut [J], until: Instant) {
        if paths.is_empty() {
            return;
        }
        crate::luns::run_jobs(&mut *self.runner, paths, jobs, self.cfg.timeout, until);
    }

    fn publish(&self) {
        let now = Instant::now();
        let mut degraded = 0;
        let health: Vec<LunHealth> = self
            .luns
            .iter()
            .map(|l| {
                let all_paths = l
                    .paths
                    .iter()
                    .filter(|p| p.present || p.registered)
                    .all(|p| p.up && p.registered);
                let state = if l.lost {
                    "lost"
                } else if l.left {
                    "left"
                } else if self.leave.is_some() {
                    "leaving"
                } else if !l.reachable {
                    "unreachable"
                } else if l.recovering {
                    "recovering"
                } else if all_paths && l.confirmed_at.is_some() {
                    "confirmed"
                } else {
                    "degraded"
                };
                if state != "confirmed" {
                    degraded += 1;
                }
                LunHealth {
                    lun: l.id.clone(),
                    state: state.into(),
                    confirmed_ms_ago: l.confirmed_at.map(|t| {
                        u64::try_from(now.duration_since(t).as_millis()).unwrap_or(u64::MAX)
                    }),
                    paths: l
                        .paths
                        .iter()
                        .map(|p| PathHealth {
                            path: p.path.display().to_string(),
                            state: if !p.present {
                                "gone"
                            } else if p.up {
                                "up"
                            } else {
                                "down"
                            }
                            .into(),
                            registered: p.registered,
                            error: p.error.clone(),
                        })
                        .collect(),
                    note: l.note.clone(),
                }
            })
            .collect();
        self.watch.degraded.store(degraded, Ordering::Release);
        let luns: Vec<Lun> = self
            .luns
            .iter()
            .map(|l| {
                let mut paths: Vec<&PathState> = l.paths.iter().filter(|p| p.present).collect();
                paths.sort_by_key(|p| !p.up);
                Lun {
                    id: l.id.clone(),
                    paths: paths.into_iter().map(|p| p.path.clone()).collect(),
                }
            })
            .collect();
        *self.board.health.lock().unwrap_or_else(|e| e.into_inner()) = (health, Some(now));
        *self.board.luns.lock().unwrap_or_else(|e| e.into_inner()) = luns;
    }
}

/// Runs `checker` once per period on its own thread. It never blocks the daemon loop: a hung
/// path delays only this thread.
pub fn spawn(mut checker: KeyChecker) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("key-check".into())
        .spawn(move || loop {
            let started = Instant::now();
            checker.step();
            let spent = started.elapsed();
            if spent < checker.cfg.period {
                std::thread::sleep(checker.cfg.period - spent);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::luns::FreshAuthority;
    use crate::storage::sim::{PathMode, San};
    use std::path::Path;

    const KEYS: [ReservationKey; 3] = [
        ReservationKey(0xa1),
        ReservationKey(0xa2),
        ReservationKey(0xa3),
    ];

    /// The voting-disk authority as every node's loop would read it.
    #[derive(Clone, Default)]
    struct Votes {
        marker: Arc<Mutex<Marker>>,
        /// How old the fresh round is when a registration starts (a slow round).
        round_age: Arc<Mutex<Duration>>,
        /// What the loop last read, when it lags behind the disks.
        stale: Arc<Mutex<Option<Marker>>>,
        /// Fresh reads asked for, by every node.
        fresh_reads: Arc<Mutex<usize>>,
        /// Slots whose block says leaving.
        leaving: Arc<Mutex<DeadSet>>,
        /// No node is live but the one asking (the others' heartbeats stopped).
        alone: Arc<Mutex<bool>>,
    }

    impl Votes {
        fn mark_dead(&self, slot: u8) {
            let mut m = self.marker.lock().unwrap();
            let mut dead = m.dead;
            dead.insert(slot);
            *m = Marker {
                epoch: m.epoch + 1,
                generation: 1,
                dead,
                issuer: 0,
            };
        }
    }

    struct NodeView {
        votes: Votes,
        me: u8,
    }

    impl AuthoritySource for NodeView {
        fn fresh(&mut self) -> Result<FreshAuthority, String> {
            *self.votes.fresh_reads.lock().unwrap() += 1;
            let m = *self.votes.marker.lock().unwrap();
            Ok(FreshAuthority {
                round_started: Instant::now() - *self.votes.round_age.lock().unwrap(),
                majority: true,
                self_dead: m.is_present() && m.dead.contains(self.me),
                marker: m,
                leaving: self.peers().leaving,
            })
        }
    }

    impl AuthorityView for NodeView {
        fn latest(&self) -> Marker {
            self.votes
                .stale
                .lock()
                .unwrap()
                .unwrap_or(*self.votes.marker.lock().unwrap())
        }

        fn peers(&self) -> Peers {
            let all = *self.votes.leaving.lock().unwrap();
            let mut leaving = DeadSet::default();
            for s in all.iter().filter(|&s| s != self.me) {
                leaving.insert(s);
            }
            Peers {
                leaving,
                live: !*self.votes.alone.lock().unwrap(),
                rebooted: DeadSet::default(),
            }
        }
    }

    struct Node {
        checker: KeyChecker,
        watch: Arc<KeyWatch>,
        board: Arc<LunBoard>,
    }

    impl Node {
        fn lun(&self, id: &str) -> LunHealth {
            self.board
                .health()
                .into_iter()
                .find(|l| l.lun == id)
                .unwrap_or_else(|| panic!("LUN {id} in {:?}", self.board.health()))
        }
    }

    /// Node `me` (0-based) of a 3-node cluster, its paths named `/dev/n<me>-<x>`, unfenced as
    /// the daemon does at start.
    fn node(san: &San, votes: &Votes, me: u8, policy: KeyLossPolicy) -> Node {
        node_with_budget(san, votes, me, policy, 0)
    }

    /// The same, reading at most `budget` LUNs in good standing per period.
    fn node_with_budget(
        san: &San,
        votes: &Votes,
        me: u8,
        policy: KeyLossPolicy,
        budget: usize,
    ) -> Node {
        let storage: Arc<dyn Storage> = Arc::new(san.clone());
        let pattern = vec![format!("/dev/n{me}-*")];
        let paths = storage.paths(&pattern);
        let found = crate::luns::discover(&*storage, &paths, Duration::from_secs(1));
        let reg = Registration {
            key: KEYS[usize::from(me)],
            aptpl: false,
        };
        let mut registered = Vec::new();
        for (_, r) in crate::luns::unfence(
            storage.clone(),
            &found.luns,
            reg,
            Duration::from_secs(1),
            Duration::from_secs(10),
        ) {
            if let Ok(r) = r {
                registered.extend(r.registered);
            }
        }
        let watch = KeyWatch::new();
        let board = LunBoard::new(&found.luns);
        let checker = KeyChecker::new(
            storage,
            CheckerConfig {
                patterns: pattern,
                reg,
                me,
                members: (0..3).map(|i| (i, KEYS[usize::from(i)])).collect(),
                timeout: Duration::from_secs(1),
                period: Duration::from_millis(10),
                bound: Duration::from_secs(1),
                key_loss: policy,
                handover: Duration::from_millis(200),
                luns_per_period: budget,
            },
            &found.luns,
            &registered,
            Box::new(NodeView {
                votes: votes.clone(),
                me,
            }),
            watch.clone(),
            board.clone(),
        );
        Node {
            checker,
            watch,
            board,
        }
    }

    /// One LUN `naa.1` with two paths per node for 3 nodes.
    fn two_path_san() -> (San, usize) {
        let san = San::new();
        let lun = san.add_lun("naa.1");
        for n in 0..3 {
            san.add_path(lun, &format!("/dev/n{n}-a"));
            san.add_path(lun, &format!("/dev/n{n}-b"));
        }
        (san, lun)
    }

    /// Nodes 0..n unfenced and through their first check.
    fn started_nodes(san: &San, votes: &Votes, n: u8) -> Vec<Node> {
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| node(san, votes, i, KeyLossPolicy::Recover))
            .collect();
        step_all(&mut nodes);
        nodes
    }

    fn step_all(nodes: &mut [Node]) {
        for n in nodes.iter_mut() {
            n.checker.step();
        }
    }

    /// A clean stop with a node that stays: the leaving node (0, the reservation holder)
    /// announces it; node 1's next check preempts its key and so holds the reservation; node
    /// 0 sees its key gone, takes it for the leave it is (never a fence), and is done. The LUN
    /// is never without a reservation. Must not: node 0 unregister itself (it would release
    /// the reservation) while a node that stays is live.
    #[test]
    fn a_leaving_holder_is_taken_over_by_a_node_that_stays_and_its_key_loss_is_no_fence() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 3);
        assert_eq!(san.holder(lun), Some(KEYS[0].0));
        nodes[0].watch.start_leaving();
        votes.leaving.lock().unwrap().insert(0);
        nodes[0].checker.step();
        assert_eq!(nodes[0].lun("naa.1").state, "leaving");
        assert!(san.keys(lun).contains(&KEYS[0].0), "kept for the takeover");
        assert!(!nodes[0].watch.has_left());
        nodes[1].checker.step();
        assert!(!san.keys(lun).contains(&KEYS[0].0), "node 1 took it over");
        assert_eq!(san.holder(lun), Some(KEYS[1].0));
        nodes[0].checker.step();
        assert_eq!(nodes[0].lun("naa.1").state, "left");
        assert!(nodes[0].watch.has_left());
        assert_eq!(nodes[0].watch.lost(), None, "a leave is not a fence");
        // Node 2 finds nothing left to take over, and stays confirmed.
        nodes[2].checker.step();
        assert_eq!(nodes[2].lun("naa.1").state, "confirmed");
        assert!(san.keys(lun).contains(&KEYS[2].0));
    }

    /// The last node leaves: nobody can take its key over, so it unregisters it through every
    /// path (the reservation goes with it) and is done.
    #[test]
    fn the_last_node_leaving_unregisters_its_key_itself() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::Recover);
        n.checker.step();
        assert_eq!(san.holder(lun), Some(KEYS[0].0));
        *votes.alone.lock().unwrap() = true;
        n.watch.start_leaving();
        n.checker.step();
        assert!(!san.registered("/dev/n0-a", KEYS[0].0));
        assert!(!san.registered("/dev/n0-b", KEYS[0].0));
        assert_eq!(san.holder(lun), None);
        n.checker.step();
        assert!(n.watch.has_left());
        assert_eq!(n.watch.lost(), None);
    }

    /// Nodes that stay are live but none takes the key over (an older fenced that does not know
    /// leaves, a node too busy): after the hand-over time the leaving node unregisters itself,
    /// and a node that stays reserves the LUN again.
    #[test]
    fn a_leave_nobody_takes_over_unregisters_after_the_handover_time() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 2);
        nodes[0].watch.start_leaving();
        nodes[0].checker.step();
        assert!(san.keys(lun).contains(&KEYS[0].0), "waits for a takeover");
        std::thread::sleep(Duration::from_millis(250));
        nodes[0].checker.step();
        nodes[0].checker.step();
        assert!(nodes[0].watch.has_left());
        assert!(!san.keys(lun).contains(&KEYS[0].0));
        nodes[1].checker.step();
        assert_eq!(san.holder(lun), Some(KEYS[1].0), "reserved again");
        assert_eq!(nodes[1].watch.lost(), None);
    }

    /// A node whose slot no longer says leaving (it rejoined) keeps its new registration: the
    /// nodes that stay take over only keys of slots read as leaving.
    #[test]
    fn a_node_that_rejoined_after_its_leave_is_not_taken_over() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 2);
        votes.leaving.lock().unwrap().insert(0);
        nodes[1].checker.step();
        assert!(!san.keys(lun).contains(&KEYS[0].0));
        // Node 0 rejoins: Joining first, then registers.
        *votes.leaving.lock().unwrap() = DeadSet::default();
        nodes[0] = node(&san, &votes, 0, KeyLossPolicy::Recover);
        for _ in 0..3 {
            step_all(&mut nodes);
        }
        assert!(san.keys(lun).contains(&KEYS[0].0));
        assert_eq!(nodes[0].watch.lost(), None);
        assert_eq!(nodes[0].lun("naa.1").state, "confirmed");
    }

    /// A checker that stops finishing periods (stuck on a hung command) must not look fresh:
    /// the ages are counted when the health is read, not when it was published.
    #[test]
    fn the_health_ages_between_periods() {
        let (san, _) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::Recover);
        assert_eq!(n.board.checked_ms_ago(), None, "no period yet");
        n.checker.step();
        let pause = Duration::from_millis(30);
        std::thread::sleep(pause);
        let ms = u64::try_from(pause.as_millis()).unwrap();
        assert!(n.lun("naa.1").confirmed_ms_ago.unwrap() >= ms);
        assert!(n.board.checked_ms_ago().unwrap() >= ms);
    }

    #[test]
    fn a_path_down_degrades_the_lun_through_the_other_path_and_is_registered_again_when_back() {
        let (san, _) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::Recover);
        n.checker.step();
        assert_eq!(n.lun("naa.1").state, "confirmed");
        san.set_mode("/dev/n0-b", PathMode::Down);
        n.checker.step();
        let h = n.lun("naa.1");
        assert_eq!(h.state, "degraded");
        assert_eq!(h.paths[1].state, "down");
        assert!(h.paths[1].error.is_some());
        assert_eq!(
            h.confirmed_ms_ago.map(|ms| ms < 1000),
            Some(true),
            "confirmed through n0-a"
        );
        assert_eq!(n.watch.lost(), None);
        assert_eq!(n.watch.degraded(), 1);
        // The path returns through a new nexus (the target forgot it): registered again.
        san.set_mode("/dev/n0-b", PathMode::Removed);
        n.checker.step();
        assert_eq!(n.lun("naa.1").paths[1].state, "gone");
        san.add_path(0, "/dev/n0-b");
        assert!(!san.registered("/dev/n0-b", KEYS[0].0));
        n.checker.step();
        assert!(san.registered("/dev/n0-b", KEYS[0].0));
        assert_eq!(n.lun("naa.1").state, "confirmed");
        assert_eq!(n.watch.degraded(), 0);
    }

    /// Paths that time out and come back (every path of the LUN, as under heavy load) kept
    /// their registrations: they are verified in place, without the guarded registration and
    /// its bound (on hundreds of LUNs under load, a late guarded registration fences the node).
    /// A path whose nexus lost its registration still gets the guarded one.
    #[test]
    fn paths_back_after_timeouts_are_verified_in_place_without_a_guarded_registration() {
        let (san, _) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::Recover);
        n.checker.step();
        san.set_mode("/dev/n0-a", PathMode::Down);
        n.checker.step();
        assert_eq!(n.lun("naa.1").state, "degraded");
        san.set_mode("/dev/n0-a", PathMode::Up);
        let reads = *votes.fresh_reads.lock().unwrap();
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(10));
            n.checker.step();
            if n.lun("naa.1").state == "confirmed" {
                break;
            }
        }
        assert_eq!(n.lun("naa.1").state, "confirmed");
        assert_eq!(
            *votes.fresh_reads.lock().unwrap(),
            reads,
            "no guarded registration"
        );
        // The nexus behind n0-b forgot its registration while the path was down.
        san.set_mode("/dev/n0-b", PathMode::Removed);
        n.checker.step();
        san.add_path(0, "/dev/n0-b");
        n.checker.step();
        assert!(san.registered("/dev/n0-b", KEYS[0].0));
        assert_eq!(*votes.fresh_reads.lock().unwrap(), reads + 1, "guarded");
        assert_eq!(n.lun("naa.1").state, "confirmed");
        assert_eq!(n.watch.lost(), None);
    }

    #[test]
    fn a_lun_unreachable_on_every_path_is_reported_and_never_a_key_loss() {
        let (san, _) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::Recover);
        san.set_mode("/dev/n0-a", PathMode::Down);
        san.set_mode("/dev/n0-b", PathMode::Down);
        for _ in 0..5 {
            n.checker.step();
        }
        assert_eq!(n.lun("naa.1").state, "unreachable");
        assert_eq!(n.watch.lost(), None);
        san.set_mode("/dev/n0-a", PathMode::Up);
        san.set_mode("/dev/n0-b", PathMode::Up);
        // Back-off: retried within a few periods.
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(10));
            n.checker.step();
        }
        assert_eq!(n.lun("naa.1").state, "confirmed");
    }

    #[test]
    fn a_pr_state_loss_makes_every_node_register_again_and_nobody_fence_itself() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 3);
        assert_eq!(san.keys(lun).len(), 6);
        san.lose_pr_state(lun);
        step_all(&mut nodes);
        step_all(&mut nodes);
        for n in &nodes {
            assert_eq!(n.watch.lost(), None);
            assert_eq!(n.lun("naa.1").state, "confirmed");
        }
        let mut keys = san.keys(lun);
        keys.sort_unstable();
        assert_eq!(keys, vec![0xa1, 0xa1, 0xa2, 0xa2, 0xa3, 0xa3]);
        assert!(san.holder(lun).is_some(), "a reservation is held again");
    }

    #[test]
    fn a_pr_state_loss_on_many_luns_is_recovered_in_one_period_on_one_fresh_read() {
        let san = San::new();
        let luns: Vec<usize> = (0..16)
            .map(|i| {
                let lun = san.add_lun(&format!("naa.{i:02}"));
                san.add_path(lun, &format!("/dev/n0-{i:02}a"));
                san.add_path(lun, &format!("/dev/n0-{i:02}b"));
                lun
            })
            .collect();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 1);
        for &lun in &luns {
            san.lose_pr_state(lun);
        }
        let before = *votes.fresh_reads.lock().unwrap();
        nodes[0].checker.step();
        assert_eq!(
            *votes.fresh_reads.lock().unwrap() - before,
            1,
            "every LUN registered under one fresh authority read"
        );
        assert_eq!(nodes[0].watch.lost(), None);
        for &lun in &luns {
            assert_eq!(
                san.keys(lun),
                vec![0xa1, 0xa1],
                "both paths registered again"
            );
            assert_eq!(san.holder(lun), Some(0xa1), "the reservation taken again");
        }
    }

    /// `n` LUNs `naa.NN` with one path per node for nodes 0 and 1: `/dev/n<node>-NN`.
    fn many_lun_san(n: usize) -> (San, Vec<usize>) {
        let san = San::new();
        let luns = (0..n)
            .map(|i| {
                let lun = san.add_lun(&format!("naa.{i:02}"));
                san.add_path(lun, &format!("/dev/n0-{i:02}"));
                san.add_path(lun, &format!("/dev/n1-{i:02}"));
                lun
            })
            .collect();
        (san, luns)
    }

    /// Commands sent through node 0's path of each of `n` LUNs.
    fn reads_per_lun(san: &San, n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| san.commands_on(&format!("/dev/n0-{i:02}")))
            .collect()
    }

    /// At rest, a period reads the first LUN (the one a fence races on first) and the budget's
    /// share of the others in turn: the idle cost follows the budget, not the LUN count, and
    /// every LUN is read within ceil((LUNs - 1) / budget) periods. Must not: read more, or
    /// leave a LUN unread for longer.
    #[test]
    fn at_rest_a_period_reads_the_first_lun_and_the_budgets_share_of_the_others_in_turn() {
        let (san, _) = many_lun_san(40);
        let votes = Votes::default();
        let mut n = node_with_budget(&san, &votes, 0, KeyLossPolicy::Recover, 8);
        n.checker.step();
        let mut before = reads_per_lun(&san, 40);
        let mut unread_for = [0usize; 40];
        for _ in 0..20 {
            let commands = san.commands();
            n.checker.step();
            assert_eq!(
                san.commands() - commands,
                9,
                "READ KEYS on 1 + 8 LUNs, nothing else"
            );
            let now = reads_per_lun(&san, 40);
            assert_eq!(now[0], before[0] + 1, "the first LUN every period");
            for i in 1..40 {
                unread_for[i] = if now[i] > before[i] {
                    0
                } else {
                    unread_for[i] + 1
                };
                assert!(
                    unread_for[i] < 5,
                    "naa.{i:02} unread for {} periods",
                    unread_for[i]
                );
            }
            before = now;
        }
        assert!(n.board.health().iter().all(|l| l.state == "confirmed"));
    }

    /// While the paths' fingerprint stays the same, the scan for new and vanished paths runs
    /// every 8th period; a change (a path added) is scanned for, and registered, in the next.
    #[test]
    fn an_unchanged_set_of_paths_is_scanned_every_8th_period_and_a_change_at_once() {
        let (san, luns) = many_lun_san(4);
        let votes = Votes::default();
        let mut n = node_with_budget(&san, &votes, 0, KeyLossPolicy::Recover, 0);
        n.checker.step();
        let scans = san.scans();
        for _ in 0..7 {
            n.checker.step();
        }
        assert_eq!(san.scans(), scans, "no change, no scan");
        n.checker.step();
        assert_eq!(san.scans(), scans + 1, "the 8th period scans anyway");
        san.add_path(luns[2], "/dev/n0-02b");
        n.checker.step();
        assert_eq!(san.scans(), scans + 2);
        assert!(
            san.registered("/dev/n0-02b", KEYS[0].0),
            "registered in that period"
        );
    }

    /// An array reset that loses every LUN's PR state: the period that finds it on some LUNs
    /// makes the next one read every LUN, so all are registered again within two periods, not
    /// one share at a time.
    #[test]
    fn a_pr_state_loss_seen_on_one_lun_makes_the_next_period_read_every_lun() {
        let (san, luns) = many_lun_san(40);
        let votes = Votes::default();
        let mut n = node_with_budget(&san, &votes, 0, KeyLossPolicy::Recover, 4);
        n.checker.step();
        n.checker.step();
        for &l in &luns {
            san.lose_pr_state(l);
        }
        n.checker.step();
        n.checker.step();
        for &l in &luns {
            assert_eq!(san.keys(l), vec![KEYS[0].0], "naa.{l:02}");
            assert_eq!(san.holder(l), Some(KEYS[0].0), "naa.{l:02}");
        }
        assert_eq!(n.watch.lost(), None);
    }

    /// A preemption of every LUN (a fence by a peer) is seen in the next period through the
    /// first LUN, whatever the budget.
    #[test]
    fn a_preemption_is_seen_within_a_period_on_the_first_lun_whatever_the_budget() {
        let (san, _) = many_lun_san(40);
        let votes = Votes::default();
        let mut n = node_with_budget(&san, &votes, 0, KeyLossPolicy::Recover, 4);
        n.checker.step();
        n.checker.step();
        for i in 0..40 {
            san.open(
                Path::new(&format!("/dev/n1-{i:02}")),
                Duration::from_secs(1),
            )
            .unwrap()
            .apply(PrOperation::Register {
                current: ReservationKey(0),
                new: KEYS[1],
                options: sg_pr::RegisterOptions {
                    ignore_existing: true,
                    aptpl: false,
                    all_target_ports: false,
                },
            })
            .unwrap();
            san.open(
                Path::new(&format!("/dev/n1-{i:02}")),
                Duration::from_secs(1),
            )
            .unwrap()
            .apply(PrOperation::Preempt {
                own: KEYS[1],
                victim: KEYS[0],
                pr_type: FENCING_TYPE,
                abort: true,
            })
            .unwrap();
        }
        n.checker.step();
        assert_eq!(n.watch.lost(), Some((0, KeyLoss::Preempted)));
    }

    /// When the authority marks a node dead, the next period reads every LUN (its key comes off
    /// every LUN it is still on, not one share at a time); a LUN that needs attention (here,
    /// our key lost with its PR state) is read every period until settled.
    #[test]
    fn a_node_marked_dead_or_a_lun_needing_attention_is_handled_in_the_next_period() {
        let (san, luns) = many_lun_san(40);
        let votes = Votes::default();
        let mut n0 = node_with_budget(&san, &votes, 0, KeyLossPolicy::Recover, 4);
        let mut n1 = node_with_budget(&san, &votes, 1, KeyLossPolicy::Recover, 4);
        n0.checker.step();
        n1.checker.step();
        assert!(luns.iter().all(|&l| san.keys(l).contains(&KEYS[1].0)));
        votes.mark_dead(1);
        n0.checker.step();
        for &l in &luns {
            assert!(
                !san.keys(l).contains(&KEYS[1].0),
                "naa.{l:02}: {:?}",
                san.keys(l)
            );
        }
        // Settled: back to the budget.
        n0.checker.step();
        let commands = san.commands();
        n0.checker.step();
        assert_eq!(san.commands() - commands, 5);

        // LUN 30 loses its PR state: recovered when the rotation reaches it. Then its only path
        // goes down: an unreachable LUN needs attention.
        san.lose_pr_state(luns[30]);
        for _ in 0..10 {
            n0.checker.step();
        }
        assert_eq!(san.holder(luns[30]), Some(KEYS[0].0), "recovered");
        assert_eq!(n0.watch.lost(), None);
        san.set_mode("/dev/n0-30", PathMode::Down);
        for _ in 0..10 {
            n0.checker.step();
        }
        assert_eq!(
            n0.lun("naa.30").state,
            "unreachable",
            "found by the rotation"
        );
        for _ in 0..5 {
            // Past the path's back-off (8 periods at most): tried every period, where the
            // rotation alone would reach it once in 10.
            std::thread::sleep(Duration::from_millis(100));
            let reads = san.commands_on("/dev/n0-30");
            n0.checker.step();
            assert_eq!(san.commands_on("/dev/n0-30"), reads + 1);
        }
        san.set_mode("/dev/n0-30", PathMode::Up);
        std::thread::sleep(Duration::from_millis(100));
        n0.checker.step();
        assert_eq!(n0.lun("naa.30").state, "confirmed");
    }

    #[test]
    fn a_preemption_notice_fences_and_its_absence_with_the_authority_refuses_to_register() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 3);
        // node1 preempts node2's key: node2's nexuses get 2A/05.
        let fencer = san
            .open(Path::new("/dev/n0-a"), Duration::from_secs(1))
            .unwrap();
        fencer
            .apply(PrOperation::Preempt {
                own: KEYS[0],
                victim: KEYS[1],
                pr_type: FENCING_TYPE,
                abort: true,
            })
            .unwrap();
        votes.mark_dead(1);
        step_all(&mut nodes);
        assert_eq!(nodes[1].watch.lost(), Some((0, KeyLoss::Preempted)));
        assert_eq!(nodes[0].watch.lost(), None);
        assert_eq!(nodes[2].watch.lost(), None);

        // The same with the notice taken by other I/O (sd's): node3 is preempted, the authority
        // marks it dead: it must not register again (its loop fences it on MarkedDead).
        fencer
            .apply(PrOperation::Preempt {
                own: KEYS[0],
                victim: KEYS[2],
                pr_type: FENCING_TYPE,
                abort: true,
            })
            .unwrap();
        san.consume_unit_attentions("/dev/n2-a");
        san.consume_unit_attentions("/dev/n2-b");
        votes.mark_dead(2);
        step_all(&mut nodes);
        step_all(&mut nodes);
        assert!(!san.keys(lun).contains(&KEYS[2].0), "{:?}", san.keys(lun));
        assert_eq!(nodes[2].lun("naa.1").state, "recovering");
        assert!(nodes[2]
            .lun("naa.1")
            .note
            .unwrap()
            .contains("marks this node dead"));
    }

    #[test]
    fn the_self_fence_policy_treats_an_unexplained_key_loss_as_a_fence() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::SelfFence);
        n.checker.step();
        san.lose_pr_state(lun);
        san.consume_unit_attentions("/dev/n0-a");
        san.consume_unit_attentions("/dev/n0-b");
        n.checker.step();
        assert_eq!(n.watch.lost(), Some((0, KeyLoss::Unexplained)));
    }

    #[test]
    fn a_registration_after_a_key_loss_that_ends_after_the_bound_fences_the_node() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::Recover);
        n.checker.step();
        san.lose_pr_state(lun);
        *votes.round_age.lock().unwrap() = Duration::from_secs(5);
        n.checker.step();
        assert_eq!(n.watch.lost(), Some((0, KeyLoss::RegistrationLate)));
    }

    #[test]
    fn survivors_preempt_the_key_of_a_node_marked_dead_when_its_lun_comes_back() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 2);
        // node2 was fenced while this LUN was unreachable: its key is still there.
        votes.mark_dead(1);
        nodes[0].checker.step();
        assert!(!san.keys(lun).contains(&KEYS[1].0), "{:?}", san.keys(lun));
        assert!(san.keys(lun).contains(&KEYS[0].0));
    }

    #[test]
    fn a_node_let_back_in_is_not_preempted_on_a_stale_read_of_the_authority() {
        let (san, lun) = two_path_san();
        let votes = Votes::default();
        let mut nodes = started_nodes(&san, &votes, 2);
        // node2 was fenced, then cleared; node1's loop has not read the clear yet.
        votes.mark_dead(1);
        *votes.stale.lock().unwrap() = Some(*votes.marker.lock().unwrap());
        *votes.marker.lock().unwrap() = Marker {
            epoch: 2,
            generation: 1,
            dead: crate::vdisk::DeadSet::default(),
            issuer: 0,
        };
        nodes[0].checker.step();
        assert!(san.keys(lun).contains(&KEYS[1].0), "{:?}", san.keys(lun));
    }

    #[test]
    fn a_new_path_is_registered_in_one_period_and_an_unidentifiable_one_is_never_a_lun() {
        let (san, _) = two_path_san();
        let votes = Votes::default();
        let mut n = node(&san, &votes, 0, KeyLossPolicy::Recover);
        n.checker.step();
        san.add_path(0, "/dev/n0-c");
        san.add_path(0, "/dev/n0-d");
        san.set_mode("/dev/n0-d", PathMode::NoInquiry);
        n.checker.step();
        assert!(san.registered("/dev/n0-c", KEYS[0].0));
        assert!(!san.registered("/dev/n0-d", KEYS[0].0));
        assert_eq!(n.board.luns().len(), 1, "{:?}", n.board.luns());
        assert_eq!(n.lun("naa.1").paths.len(), 3);
        assert_eq!(n.lun("naa.1").state, "confirmed");
    }
}
