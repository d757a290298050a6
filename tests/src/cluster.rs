//! A fenced cluster in guests: node guests sharing iSCSI LUNs (LIO in a storage guest, or tgt)
//! and/or NVMe/TCP namespaces (nvmet in a storage guest on the newest kernel), and three voting
//! disks, each with an i6300esb, each running `fenced run`.

use crate::Narrator;
use kmod_testing::iscsi::{Target, TargetKind};
use kmod_testing::nvmet::{HostIdentity, NvmeTarget};
use kmod_testing::{project_binary, Error, Guest, GuestSpec, KernelLine, Lab, Pending, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The cluster UUID the scenarios format their voting disks with.
pub const CLUSTER_UUID: &str = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10";

/// The timing model the scenarios use (ms): P, D, L, W.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Poll period P.
    pub poll: u32,
    /// I/O deadline D.
    pub io_deadline: u32,
    /// Lease L.
    pub lease: u32,
    /// Watchdog timeout W (whole seconds).
    pub watchdog: u32,
}

impl Timing {
    /// L + W + P: the longest a node that stopped being healthy (or was marked dead) may take
    /// to reset — its lease runs out, then its watchdog, plus one round of its loop.
    pub fn reset_bound(&self) -> Duration {
        Duration::from_millis(u64::from(self.lease + self.watchdog + self.poll))
    }

    /// The key check's period in seconds: (L - D) / 2, as fenced derives it.
    pub fn key_check_period(&self) -> f64 {
        f64::from(self.lease.saturating_sub(self.io_deadline)) / 2000.0
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll: 1000,
            io_deadline: 500,
            lease: 3000,
            watchdog: 5000,
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Run-directory name.
    pub name: String,
    /// Target implementation.
    pub target: TargetKind,
    /// Node guests (at most 3).
    pub nodes: usize,
    /// Shared LUNs.
    pub luns: usize,
    /// Paths per LUN (default 1). More than one needs [`TargetKind::Lio`]: the target serves
    /// every LUN through that many target ports and every node attaches every LUN through each
    /// ([`Target::start_with_paths`]), so a node has `luns * paths` SCSI disks, each its own
    /// I_T nexus. The nodes' fenced.toml then lists the LUNs as the glob `/dev/sd*` (the voting
    /// disks are virtio-blk `/dev/vdX`), so paths attached at runtime
    /// ([`kmod_testing::Guest::attach_path`]) match the configuration too.
    pub paths: usize,
    /// Timing.
    pub timing: Timing,
    /// Start `fenced run` on every node (else only `fenced unfence`: keys registered, no
    /// daemon, so `fenced fence` works on the disks itself).
    pub daemons: bool,
    /// Put every voting disk behind a device-mapper linear device (`/dev/mapper/voteN`) in each
    /// guest, so a test can fail it there (`faults::dm_reload` to `error`).
    pub voting_via_dm: bool,
    /// Boot the nodes with systemd as PID 1 ([`kmod_testing::GuestSpec::systemd`]); with
    /// `daemons: false` a test then starts `fenced run` as a service ([`crate::systemd`]).
    pub systemd: bool,
    /// A shell script run on every node (on all at once) after boot and before fenced is
    /// configured, unfenced or started, e.g. to start multipathd ([`crate::multipath`]). It sees
    /// `FENCED_NODE` (the node's name), `FENCED_NODE_ID` (0-based) and `FENCED_KEY` (the node's
    /// reservation key as fenced derives it, [`node_key`], as `0x` and lowercase hex). A
    /// failure fails [`Cluster::start`].
    pub node_setup: Option<String>,
    /// The `storage.luns` patterns written into every node's fenced.toml instead of the LUN
    /// devices found at boot (or `/dev/sd*` with several paths), e.g. a dm-multipath map
    /// (`/dev/mapper/mpatha`). [`Cluster::lun_devices`] still lists the SCSI devices.
    pub configured_luns: Option<Vec<String>>,
    /// LUNs served by a separate LIO target ([`Target::start_extra`], its own storage guest,
    /// one path each) beside the `luns` of the main target, for faults that must hang a few LUNs
    /// while the others answer: pause it with [`Cluster::extra_target`]'s [`Target::pause`].
    /// Each node attaches them on a virtio-scsi controller of their own, so the guest's SCSI
    /// error handling on them (a whole SCSI host stops while it runs) does not stall the main
    /// LUNs. They are shared LUNs like the others: in [`Cluster::lun_devices`] after the main
    /// ones, in fenced.toml, registered at unfence; their NAA ids sort after the main LUNs', so
    /// fenced meets them last (its fence race is on the first LUN that answers).
    pub extra_luns: usize,
    /// Put the nodes on a guest LAN of their own ([`kmod_testing::GuestSpec::lan`]), node `i`
    /// at [`lan_address`]`(i)`/24, for clusterware (corosync) traffic apart from the storage.
    pub lan: bool,
    /// `storage.key_check_luns` in every node's fenced.toml (default: the product's).
    pub key_check_luns: Option<usize>,
    /// Shared NVMe/TCP namespaces (an nvmet subsystem in a storage guest of its own, on the
    /// newest kernel) beside the `luns` iSCSI LUNs; with `luns: 0` the cluster has no iSCSI
    /// target at all. Node `i` connects as host [`HostIdentity::of_node`]`(i + 1)` with
    /// [`NVME_CTRL_LOSS_TMO`] and [`NVME_FAST_IO_FAIL_TMO`]; the namespaces come after the
    /// iSCSI LUNs in [`Cluster::lun_devices`] ([`Cluster::nvme_devices`]).
    pub nvme_namespaces: usize,
    /// The kernel of every guest but the NVMe-oF storage guest (always the newest): default
    /// the stable one; `FENCED_KERNEL` overrides it for a whole run.
    pub kernel: KernelLine,
}

/// `ctrl_loss_tmo` (s) the nodes connect to NVMe-oF namespaces with: a controller that stays
/// lost this long is removed (its I/O failed); the kernel's default is 600.
pub const NVME_CTRL_LOSS_TMO: u32 = 30;

/// `fast_io_fail_tmo` (s) the nodes connect with: I/O queued on a lost controller fails after
/// this long instead of waiting for `ctrl_loss_tmo` (the kernel's default is off).
pub const NVME_FAST_IO_FAIL_TMO: u32 = 2;

/// Brings node `i`'s guest-LAN NIC up at [`lan_address`]`(i)`.
fn lan_up(g: &Guest, i: usize) -> Result<()> {
    g.run_ok(&format!(
        "for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && dev=${{d##*/}}; done\n\
         [ -n \"$dev\" ] || {{ echo no NIC with MAC {mac} >&2; exit 1; }}\n\
         ip link set lo up && ip addr add {addr}/24 dev $dev && ip link set $dev up",
        mac = kmod_testing::lan_mac(lan_index(i)),
        addr = lan_address(i),
    ))?;
    Ok(())
}

/// Node `i`'s index on the guest LAN (its NIC's MAC, [`kmod_testing::lan_mac`]).
fn lan_index(i: usize) -> u8 {
    u8::try_from(i + 1).unwrap_or(u8::MAX)
}

/// Node `i`'s address on the guest LAN ([`ClusterSpec::lan`]): the addresses the corosync.conf
/// of fenced/docs/pacemaker.md lists.
pub fn lan_address(i: usize) -> String {
    format!("192.168.100.{}", 11 + i)
}

impl ClusterSpec {
    /// Three nodes, one LUN, default timing, daemons running, plain voting disks.
    pub fn new(name: &str, target: TargetKind) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            target,
            nodes: 3,
            luns: 1,
            paths: 1,
            timing: Timing::default(),
            daemons: true,
            voting_via_dm: false,
            systemd: false,
            node_setup: None,
            configured_luns: None,
            extra_luns: 0,
            lan: false,
            key_check_luns: None,
            nvme_namespaces: 0,
            kernel: KernelLine::Stable,
        }
    }
}

/// A running cluster. Fields drop in order: guests first, then the target, then the lab.
pub struct Cluster {
    /// Node guests, `node1`..`nodeN` (node ids 0..N-1).
    pub nodes: Vec<Guest>,
    /// Each node's LUN devices, in LUN order; with several paths per LUN, every path of every
    /// LUN (LUN by LUN, path by path; grouped: [`Cluster::lun_paths`]), as they were at start;
    /// then the [`ClusterSpec::extra_luns`] ([`Cluster::extra_lun_devices`]).
    pub lun_devices: Vec<Vec<String>>,
    /// Each node's running `fenced run`.
    pub daemons: Vec<Option<Pending>>,
    /// The iSCSI target (none with `luns: 0`: [`Cluster::target`]).
    target: Option<Target>,
    /// The NVMe-oF target of the [`ClusterSpec::nvme_namespaces`], if any.
    pub nvme_target: Option<NvmeTarget>,
    /// The separate target of the [`ClusterSpec::extra_luns`], if any.
    pub extra_target: Option<Target>,
    /// The lab.
    pub lab: Lab,
    /// What the cluster was built from ([`Cluster::reboot`] boots a node again from it).
    spec: ClusterSpec,
    /// Each node guest's spec.
    guest_specs: Vec<GuestSpec>,
    /// Boots of each node so far.
    boots: Vec<usize>,
    /// The timing.
    pub timing: Timing,
    /// Number of [`ClusterSpec::extra_luns`].
    pub extra_luns: usize,
}

/// Where [`Cluster::start`] writes each node's configuration without LUNs, for
/// [`Cluster::daemon_status`].
pub const DAEMON_STATUS_CONFIG: &str = "/etc/fenced/status-only.toml";

/// `base`, plus 250 ms per LUN path beyond 32: the harness's waits on commands that read every
/// LUN in turn (a few SCSI commands each, tens of ms apiece under TCG) grow with the LUNs.
fn scaled(base: Duration, paths: usize) -> Duration {
    base + Duration::from_millis(250) * u32::try_from(paths.saturating_sub(32)).unwrap_or(u32::MAX)
}

/// Node `g`'s LUN devices (by SCSI address: LUN by LUN, path by path, extra LUNs last; then the
/// NVMe namespaces `nvme`) and its voting-disk devices (through device-mapper with
/// [`ClusterSpec::voting_via_dm`]).
fn node_devices(
    g: &Guest,
    spec: &ClusterSpec,
    nvme: Vec<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let paths = g.lun_paths()?;
    if paths.len() != spec.luns + spec.extra_luns
        || paths[..spec.luns].iter().any(|l| l.len() != spec.paths)
    {
        return Err(Error::Setup(format!(
            "{}: expected {} LUNs of {} paths and {} extra LUN(s), found {paths:?}",
            g.name(),
            spec.luns,
            spec.paths,
            spec.extra_luns
        )));
    }
    let mut vote_devs: Vec<String> = (0..3)
        .map(|v| g.disk_by_serial(&format!("vote{v}")))
        .collect::<Result<_>>()?;
    if spec.voting_via_dm {
        for (v, dev) in vote_devs.iter_mut().enumerate() {
            g.run_ok(&format!(
                "dmsetup --noudevsync create vote{v} --table \"0 $(blockdev --getsz {dev}) linear {dev} 0\" && dmsetup --noudevsync mknodes vote{v}"
            ))?;
            *dev = format!("/dev/mapper/vote{v}");
        }
    }
    let mut luns = paths.concat();
    luns.extend(nvme);
    Ok((luns, vote_devs))
}

/// Connects node `i` (guest `g`) to the NVMe-oF target, if the cluster has one, and returns its
/// namespace devices.
fn connect_nvme(g: &Guest, i: usize, target: Option<&NvmeTarget>) -> Result<Vec<String>> {
    let Some(t) = target else {
        return Ok(Vec::new());
    };
    let host = HostIdentity::of_node(u8::try_from(i + 1).unwrap_or(u8::MAX));
    t.connect(g, &host, NVME_CTRL_LOSS_TMO, Some(NVME_FAST_IO_FAIL_TMO))
}

/// Starts `fenced run` in `g`, its stderr (info level) to the run directory's fenced.log.
fn spawn_daemon(g: &Guest) -> Result<Pending> {
    g.spawn(&format!(
        "FENCED_LOG=info exec {} run 2>/xchg/fenced.log",
        project_binary("fenced").display()
    ))
}

/// Writes node `i`'s fenced.toml with `fenced setup` (and, with `format`, formats the voting
/// disks), plus the LUN-less copy for [`Cluster::daemon_status`].
fn write_config(
    g: &Guest,
    i: usize,
    spec: &ClusterSpec,
    luns: &[String],
    vote_devs: &[String],
    format: bool,
) -> Result<()> {
    let fenced = project_binary("fenced");
    let names: String = (0..spec.nodes)
        .map(|i| format!(" --node {}", node_name(i)))
        .collect();
    let t = spec.timing;
    let configured = if let Some(luns) = &spec.configured_luns {
        luns.clone()
    } else if spec.paths > 1 {
        // The extra LUNs are `/dev/sd*` too.
        vec!["/dev/sd*".to_string()]
    } else {
        luns.to_vec()
    };
    let setup = |luns: &[String], out: &str, format: bool| {
        let mut cmd = format!(
            "{} setup --name lab{names} --uuid {CLUSTER_UUID} --this-node {} --config {out}",
            fenced.display(),
            node_name(i)
        );
        for d in vote_devs {
            cmd.push_str(&format!(" --voting-disk {d}"));
        }
        for l in luns {
            cmd.push_str(&format!(" --lun '{l}'"));
        }
        if format {
            cmd.push_str(&format!(
                " --format --poll-ms {} --io-deadline-ms {} --lease-ms {} --watchdog-ms {}",
                t.poll, t.io_deadline, t.lease, t.watchdog
            ));
        }
        cmd
    };
    // The same configuration without LUNs, for `fenced status` to report the voting disks and
    // the running daemon's own view without reading every LUN (which takes seconds per dozen
    // LUNs under TCG): [`Cluster::daemon_status`].
    let budget = spec.key_check_luns.map_or(String::new(), |n| {
        format!(" && sed -i 's/^\\[storage\\]$/[storage]\\nkey_check_luns = {n}/' /etc/fenced/fenced.toml && grep -q '^key_check_luns = {n}$' /etc/fenced/fenced.toml")
    });
    g.run_ok(&format!(
        "{} && {}{budget}",
        setup(&configured, "/etc/fenced/fenced.toml", format),
        setup(&[], DAEMON_STATUS_CONFIG, false)
    ))?;
    Ok(())
}

/// The name of node `i` (0-based).
pub fn node_name(i: usize) -> String {
    format!("node{}", i + 1)
}

/// The reservation key fenced derives for node id `id` (0-based) in the scenarios' cluster
/// ([`CLUSTER_UUID`]; no `key` set in the configuration).
pub fn node_key(id: usize) -> u64 {
    let cluster: fenced::vdisk::ClusterId = CLUSTER_UUID.parse().expect("a valid cluster UUID");
    let id = u8::try_from(id).expect("a node id below 256");
    fenced::config::derive_key(&cluster, id).0
}

/// The /etc/fenced/fenced.toml of node `me` (0-based) in a cluster of `nodes` nodes named by
/// [`node_name`], with these LUN and voting-disk paths and timing.
pub fn config_text(
    nodes: usize,
    me: usize,
    luns: &[String],
    votes: &[String],
    t: Timing,
) -> String {
    let members: Vec<String> = (0..nodes)
        .map(|i| format!("{{ id = {i}, name = \"{}\" }}", node_name(i)))
        .collect();
    let quote = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"[cluster]
name = "lab"
uuid = "{CLUSTER_UUID}"
nodes = [ {} ]

[node]
id = {me}

[storage]
luns = [ {} ]
voting_disks = [ {} ]

[timeouts]
poll = {}
io_deadline = {}
lease = {}
watchdog = {}

[watchdog]
policy = "require-hardware"

[self_fence]
action = "reboot"
"#,
        members.join(", "),
        quote(luns),
        quote(votes),
        t.poll,
        t.io_deadline,
        t.lease,
        t.watchdog
    )
}

impl Cluster {
    /// Boots the target and the nodes, formats the voting disks, writes each node's
    /// /etc/fenced/fenced.toml, starts `fenced run` everywhere, and waits until every node is
    /// registered on every LUN and heartbeating.
    pub fn start(say: Narrator<'_>, spec: &ClusterSpec) -> Result<Cluster> {
        let started = Instant::now();
        let lab = Lab::on(&spec.name, spec.kernel)?;
        let nvme_target = (spec.nvme_namespaces > 0)
            .then(|| NvmeTarget::start(&lab, spec.nvme_namespaces, 16, 1))
            .transpose()?;
        let (target, extra_target) = if spec.luns == 0 {
            (None, None)
        } else if spec.extra_luns > 0 {
            let (main, extra) = Target::start_with_extra(
                &lab,
                spec.target,
                spec.luns,
                16,
                spec.paths,
                spec.extra_luns,
            )?;
            (Some(main), Some(extra))
        } else {
            (
                Some(Target::start_with_paths(
                    &lab,
                    spec.target,
                    spec.luns,
                    16,
                    spec.paths,
                )?),
                None,
            )
        };
        let target_up = started.elapsed();
        let votes: Vec<_> = (0..3)
            .map(|i| lab.shared_disk(&format!("vote{i}"), 4))
            .collect::<Result<_>>()?;
        let lan_port = if spec.lan {
            Some(Lab::lan_port()?)
        } else {
            None
        };
        let specs: Vec<GuestSpec> = (0..spec.nodes)
            .map(|i| {
                let mut s = match &target {
                    Some(t) => t.node_spec(&node_name(i)),
                    None => GuestSpec::new(&node_name(i)),
                }
                .systemd(spec.systemd);
                if nvme_target.is_some() {
                    s = s.user_net();
                }
                if let Some(port) = lan_port {
                    s = s.lan(port, lan_index(i));
                }
                if let Some(extra) = &extra_target {
                    s = s.separate_scsi_controller();
                    for k in 0..extra.luns() {
                        s = s.iscsi_lun(&extra.lun_url(k));
                    }
                }
                for (v, img) in votes.iter().enumerate() {
                    s = s.shared_disk(img, &format!("vote{v}"));
                }
                s
            })
            .collect();
        let nodes = lab.boot_all(specs.clone())?;
        say(&format!(
            "{} node guests on {} up{}, {} shared {:?} iSCSI LUN(s){}{}{}, 3 shared voting disks, an i6300esb in each (targets {:.1} s, nodes {:.1} s)",
            spec.nodes,
            lab.kernel().version,
            if spec.systemd { " (systemd as PID 1)" } else { "" },
            spec.luns,
            spec.target,
            if spec.nvme_namespaces > 0 {
                format!(" + {} NVMe/TCP namespace(s)", spec.nvme_namespaces)
            } else {
                String::new()
            },
            if spec.paths > 1 {
                format!(" through {} paths each", spec.paths)
            } else {
                String::new()
            },
            if spec.extra_luns > 0 {
                format!(
                    " + {} LUN(s) of a separate LIO target on their own controller",
                    spec.extra_luns
                )
            } else {
                String::new()
            },
            target_up.as_secs_f64(),
            (started.elapsed() - target_up).as_secs_f64(),
        ));
        if spec.lan {
            for (i, g) in nodes.iter().enumerate() {
                lan_up(g, i)?;
            }
        }
        if let Some(script) = &spec.node_setup {
            let t = Instant::now();
            let pending: Vec<Pending> = nodes
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    g.spawn(&format!(
                        "export FENCED_NODE={} FENCED_NODE_ID={i} FENCED_KEY=0x{:x}\n{script}",
                        node_name(i),
                        node_key(i)
                    ))
                })
                .collect::<Result<_>>()?;
            for (g, p) in nodes.iter().zip(pending) {
                let out = g.wait(p, Duration::from_secs(180))?;
                if !out.success() {
                    return Err(Error::Setup(format!(
                        "{}: the node set-up script exited {}:\n{}{}",
                        g.name(),
                        out.code,
                        out.stdout,
                        out.stderr
                    )));
                }
            }
            say(&format!(
                "node set-up script done on every node ({:.1} s)",
                t.elapsed().as_secs_f64()
            ));
        }
        let fenced = project_binary("fenced");
        let mut lun_devices = Vec::new();
        let disks_from = Instant::now();
        // Every node at once (reading sysfs and creating dm devices in one guest does not touch
        // the others); then the voting disks are formatted once, from node1.
        let nvme = nvme_target.as_ref();
        let found: Vec<Result<(Vec<String>, Vec<String>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    s.spawn(move || {
                        let devs = connect_nvme(g, i, nvme)?;
                        node_devices(g, spec, devs)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let found: Vec<(Vec<String>, Vec<String>)> = found.into_iter().collect::<Result<_>>()?;
        // `fenced setup` writes each node's configuration as an operator would: on node1 with
        // --format (the voting disks get the cluster UUID and the timing), then on every other
        // node from the disks' header. The files state no [timeouts].
        for (i, (g, (luns, vote_devs))) in nodes.iter().zip(found).enumerate() {
            write_config(g, i, spec, &luns, &vote_devs, i == 0)?;
            lun_devices.push(luns);
        }
        say(&format!(
            "LUN devices found, voting disks formatted, fenced.toml written on every node ({:.1} s)",
            disks_from.elapsed().as_secs_f64()
        ));
        let mut daemons = Vec::new();
        for g in &nodes {
            if spec.daemons {
                daemons.push(Some(spawn_daemon(g)?));
            } else {
                g.run_ok(&format!("{} unfence", fenced.display()))?;
                daemons.push(None);
            }
        }
        let cluster = Cluster {
            nodes,
            lun_devices,
            daemons,
            target,
            nvme_target,
            extra_target,
            lab,
            timing: spec.timing,
            extra_luns: spec.extra_luns,
            spec: spec.clone(),
            boots: vec![1; specs.len()],
            guest_specs: specs,
        };
        let t = Instant::now();
        let all_luns = spec.luns * spec.paths + spec.extra_luns + spec.nvme_namespaces;
        if spec.daemons {
            // The daemons' own reports first (cheap), then one read of every LUN's keys.
            let all: Vec<usize> = (0..spec.nodes).collect();
            cluster.wait_daemons_healthy(&all, scaled(Duration::from_secs(60), all_luns))?;
        }
        cluster.wait_until(scaled(Duration::from_secs(60), all_luns), |st| {
            let all_keys = st["luns"].as_array().is_some_and(|l| {
                l.iter()
                    .all(|l| l["keys"].as_array().is_some_and(|k| k.len() >= spec.nodes))
            });
            let all_beating = !spec.daemons
                || st["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().all(|n| n["heartbeat_advancing"] == true));
            all_keys && all_beating
        })?;
        say(&format!(
            "{}: all keys registered{} ({:.1} s after start; the whole cluster {:.1} s)",
            if spec.daemons {
                "fenced runs on every node"
            } else {
                "every node unfenced, no daemons"
            },
            if spec.daemons {
                ", all heartbeats advancing"
            } else {
                ""
            },
            t.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        ));
        Ok(cluster)
    }

    /// A cluster of guests a test built itself (one path per LUN, no LAN, no extra LUNs):
    /// everything but [`Cluster::reboot`] works on it.
    pub fn assemble(
        lab: Lab,
        target: Target,
        nodes: Vec<Guest>,
        lun_devices: Vec<Vec<String>>,
        timing: Timing,
    ) -> Cluster {
        let mut spec = ClusterSpec::new("assembled", TargetKind::Lio);
        spec.timing = timing;
        Cluster {
            daemons: nodes.iter().map(|_| None).collect(),
            boots: vec![1; nodes.len()],
            nodes,
            lun_devices,
            target: Some(target),
            nvme_target: None,
            extra_target: None,
            lab,
            timing,
            extra_luns: 0,
            spec,
            guest_specs: Vec::new(),
        }
    }

    /// Boots node `i` again after it reset (a reset ends its QEMU): the same guest spec (the
    /// same iSCSI initiator, LUNs, voting disks and LAN), then what [`Cluster::start`] did on
    /// it before any daemon: its LAN address, the node set-up script, its fenced.toml (a guest's
    /// root is a fresh overlay at each boot). Nothing is registered or started: the caller
    /// brings the node back the way the scenario says. The previous boot's run directory is
    /// kept as `nodeN.boot1`, `nodeN.boot2`, ...
    pub fn reboot(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].is_running() {
            return Err(Error::Setup(format!(
                "{} still runs: only a node that reset can be booted again",
                self.nodes[i].name()
            )));
        }
        let spec = self.guest_specs.get(i).cloned().ok_or_else(|| {
            Error::Setup("a cluster not built by Cluster::start cannot boot a node again".into())
        })?;
        let name = node_name(i);
        let dir = self.lab.dir().join(&name);
        let kept = self.lab.dir().join(format!("{name}.boot{}", self.boots[i]));
        std::fs::rename(&dir, &kept)
            .map_err(|e| Error::Setup(format!("keeping {}: {e}", dir.display())))?;
        self.nodes[i] = self.lab.boot(spec)?;
        self.boots[i] += 1;
        let g = &self.nodes[i];
        if self.spec.lan {
            lan_up(g, i)?;
        }
        if let Some(script) = &self.spec.node_setup {
            let out = g.run_with_timeout(
                &format!(
                    "export FENCED_NODE={name} FENCED_NODE_ID={i} FENCED_KEY=0x{:x}\n{script}",
                    node_key(i)
                ),
                Duration::from_secs(180),
            )?;
            if !out.success() {
                return Err(Error::Setup(format!(
                    "{name}: the node set-up script exited {}:\n{}{}",
                    out.code, out.stdout, out.stderr
                )));
            }
        }
        let nvme = connect_nvme(g, i, self.nvme_target.as_ref())?;
        let (luns, vote_devs) = node_devices(g, &self.spec, nvme)?;
        write_config(g, i, &self.spec, &luns, &vote_devs, false)?;
        self.lun_devices[i] = luns;
        self.daemons[i] = None;
        Ok(())
    }

    /// The split-brain race (a test's assertions: panics on a violation). Node1 and node2
    /// fence each other at the same instant, `rounds` times, with no daemons (the race is
    /// between the two `fenced fence` commands alone; the loser is let back in by `clear
    /// --force` and `unfence` between rounds); then once more with daemons started on both.
    /// Must: every round exactly one command succeeds and exactly one key of the two is left;
    /// the loser is the one marked dead. With daemons: the loser resets, the winner stays up.
    /// Needs a cluster started with `daemons: false`. The loser's error must contain one of
    /// `loser_says`. Returns the tally of wins (node1, node2).
    pub fn split_brain(&self, rounds: usize, loser_says: &[&str]) -> [usize; 2] {
        let mut tally = [0usize; 2];
        for round in 0..rounds {
            let a = self.spawn_fenced(0, "fence node2").unwrap();
            let b = self.spawn_fenced(1, "fence node1").unwrap();
            let a = self.nodes[0].wait(a, Duration::from_secs(60)).unwrap();
            let b = self.nodes[1].wait(b, Duration::from_secs(60)).unwrap();
            let winners: Vec<usize> = [(0, &a), (1, &b)]
                .iter()
                .filter(|(_, o)| o.success())
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(
                winners.len(),
                1,
                "round {round}: exactly one winner: {a:?} {b:?}"
            );
            let (w, l) = (winners[0], 1 - winners[0]);
            let loser_out = if l == 0 { &a } else { &b };
            assert!(
                loser_says.iter().any(|m| loser_out.stderr.contains(m)),
                "round {round}: the loser says one of {loser_says:?}: {}",
                loser_out.stderr
            );
            let keys = self.registered(2).unwrap();
            assert!(
                keys.contains(&node_name(w)) && !keys.contains(&node_name(l)),
                "round {round}: keys {keys:?}"
            );
            let st = self.status(2).unwrap();
            assert_eq!(
                st["authority"]["dead"],
                serde_json::json!([l]),
                "round {round}: the loser is marked dead"
            );
            tally[w] += 1;
            // Let the loser back in for the next round. No daemon runs and nothing on the loser was
            // evicted (the rounds only race the fence commands), so the operator's override stands
            // in for its reboot.
            let cleared = self
                .fenced(w, &format!("clear --force {}", node_name(l)))
                .unwrap();
            assert!(cleared.success(), "round {round}: {}", cleared.stderr);
            let un = self.fenced(l, "unfence").unwrap();
            assert!(un.success(), "{}", un.stderr);
        }
        println!("MEASURED: split-brain tally over {rounds} rounds: node1 won {}, node2 won {}; 0 rounds with two or zero survivors", tally[0], tally[1]);

        // Once more with daemons: the loser's daemon sees its key gone and resets the node.
        for g in &self.nodes[..2] {
            let _ = spawn_daemon(g).unwrap();
        }
        self.wait_daemons_healthy(&[0, 1], Duration::from_secs(60))
            .unwrap();
        let a = self.spawn_fenced(0, "fence node2").unwrap();
        let b = self.spawn_fenced(1, "fence node1").unwrap();
        let a = self.nodes[0].wait(a, Duration::from_secs(60));
        let b = self.nodes[1].wait(b, Duration::from_secs(60));
        println!("with daemons: node1 {a:?}\nnode2 {b:?}");
        let t = self.timing;
        let bound = t.reset_bound() + Duration::from_secs(5);
        let deadline = Instant::now() + bound;
        while self.nodes[0].is_running() && self.nodes[1].is_running() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let survivors = self.nodes[..2].iter().filter(|g| g.is_running()).count();
        assert_eq!(
            survivors, 1,
            "exactly one of node1/node2 survives with daemons running"
        );
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            self.nodes[..2].iter().filter(|g| g.is_running()).count(),
            1,
            "and it stays up"
        );
        tally
    }

    /// Starts `fenced run` on node `i` as [`Cluster::start`] does (e.g. after
    /// [`Cluster::reboot`]): its log in the node's `xchg/fenced.log` ([`Cluster::daemon_log`]).
    pub fn start_daemon(&mut self, i: usize) -> Result<()> {
        self.daemons[i] = Some(spawn_daemon(&self.nodes[i])?);
        Ok(())
    }

    /// Each node's devices per LUN and path (`[node][lun][path]`) as they were at start:
    /// [`Cluster::lun_devices`] in groups of the target's paths per LUN (the extra LUNs, one
    /// path each, last). Paths attached or detached since: [`kmod_testing::Guest::lun_paths`].
    pub fn lun_paths(&self) -> Vec<Vec<Vec<String>>> {
        let paths = self.spec.paths.max(1);
        (0..self.lun_devices.len())
            .map(|i| {
                let singles = self.extra_lun_devices(i).iter().chain(self.nvme_devices(i));
                self.main_lun_devices(i)
                    .chunks(paths)
                    .map(<[String]>::to_vec)
                    .chain(singles.map(|d| vec![d.clone()]))
                    .collect()
            })
            .collect()
    }

    /// Node `i`'s devices of the main target's LUNs (every path), as at start.
    pub fn main_lun_devices(&self, i: usize) -> &[String] {
        &self.lun_devices[i][..self.spec.luns * self.spec.paths]
    }

    /// Node `i`'s devices of the [`ClusterSpec::extra_luns`], as at start.
    pub fn extra_lun_devices(&self, i: usize) -> &[String] {
        let main = self.spec.luns * self.spec.paths;
        &self.lun_devices[i][main..main + self.extra_luns]
    }

    /// Node `i`'s NVMe namespace devices (`/dev/nvmeXnY`, by namespace id), as at its boot.
    pub fn nvme_devices(&self, i: usize) -> &[String] {
        let scsi = self.spec.luns * self.spec.paths + self.extra_luns;
        &self.lun_devices[i][scsi..]
    }

    /// The iSCSI target. Panics in a cluster without one (`luns: 0`).
    pub fn target(&self) -> &Target {
        self.target
            .as_ref()
            .expect("this cluster has no iSCSI target (ClusterSpec::luns is 0)")
    }

    /// `fenced status --json` as node `i` sees it.
    pub fn status(&self, i: usize) -> Result<Value> {
        self.status_with(i, "")
    }

    /// `fenced status --json` on node `i` without reading the LUNs (a configuration that lists
    /// none, [`DAEMON_STATUS_CONFIG`]): the voting disks, the nodes' heartbeats, the authority,
    /// the watchdogs, and the running daemon's own report (`daemon`: its verdict and its key
    /// check's `luns[]`, each with `state` and `confirmed_ms_ago`). Takes a few seconds
    /// whatever the number of LUNs; the full [`Cluster::status`] reads every LUN.
    pub fn daemon_status(&self, i: usize) -> Result<Value> {
        self.status_with(i, &format!("--config {DAEMON_STATUS_CONFIG}"))
    }

    fn status_with(&self, i: usize, args: &str) -> Result<Value> {
        let cmd = format!(
            "{} status --json {args}",
            project_binary("fenced").display()
        );
        let out = self.nodes[i].run_with_timeout(&cmd, self.status_timeout())?;
        // 5, 6, 7: degraded, unhealthy, fenced; the document says which (`health`).
        if ![0, 5, 6, 7].contains(&out.code) {
            return Err(Error::CommandFailed {
                guest: self.nodes[i].name().to_string(),
                command: cmd,
                code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        serde_json::from_str(out.stdout.trim())
            .map_err(|e| Error::Setup(format!("status is not JSON ({e}): {}", out.stdout)))
    }

    /// How long a full `fenced status` may take: it reads every LUN one after another.
    fn status_timeout(&self) -> Duration {
        let paths = self.lun_devices.iter().map(Vec::len).max().unwrap_or(0);
        scaled(Duration::from_secs(120), paths)
    }

    /// Waits until `pred` holds for node 1's status.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = match self.status(0) {
                Ok(st) if pred(&st) => return Ok(st),
                Ok(st) => st,
                Err(e) => serde_json::json!({ "status_error": e.to_string() }),
            };
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|g| format!("{}: {}", g.name(), self.daemon_log(g)))
                    .collect();
                return Err(Error::Setup(format!(
                    "cluster did not reach the expected state within {timeout:?}; last status: {st}\ndaemon logs:\n{}",
                    logs.join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the daemons of `nodes` report themselves healthy (`fenced status`, daemon
    /// verdict, read through [`Cluster::daemon_status`]), i.e. it feeds its watchdog.
    pub fn wait_daemons_healthy(&self, nodes: &[usize], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for &i in nodes {
            loop {
                // A status command can fail while a daemon starts (voting disks busy, LUN
                // discovery racing the unfence): that is not the verdict, look again.
                let st = self.daemon_status(i);
                if st
                    .as_ref()
                    .is_ok_and(|st| st["daemon"]["verdict"] == "Healthy")
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Setup(format!(
                        "{}'s daemon is not healthy within {timeout:?}: {:?}\n{}",
                        self.nodes[i].name(),
                        st.map(|st| st["daemon"].clone()),
                        self.daemon_log(&self.nodes[i])
                    )));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        Ok(())
    }

    /// The stderr of a node's daemon so far.
    pub fn daemon_log(&self, g: &Guest) -> String {
        std::fs::read_to_string(self.lab.dir().join(g.name()).join("xchg/fenced.log"))
            .unwrap_or_default()
    }

    /// Runs `fenced <args>` on node `i`.
    pub fn fenced(&self, i: usize, args: &str) -> Result<kmod_testing::Output> {
        self.nodes[i].run(&format!("{} {args}", project_binary("fenced").display()))
    }

    /// Starts `fenced <args>` on node `i` without waiting.
    pub fn spawn_fenced(&self, i: usize, args: &str) -> Result<Pending> {
        self.nodes[i].spawn(&format!("{} {args}", project_binary("fenced").display()))
    }

    /// The nodes whose keys are registered on LUN 0, as node `i` reads them, sorted.
    pub fn registered(&self, i: usize) -> Result<Vec<String>> {
        let st = self.status(i)?;
        let mut names: Vec<String> = st["luns"][0]["keys"]
            .as_array()
            .map(|k| {
                k.iter()
                    .filter_map(|k| k["node"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        // The target lists keys in registration order; callers compare sets.
        names.sort();
        Ok(names)
    }

    /// Runs `fenced fence <victim>` on node `from` (0-based) and returns its output and how
    /// long it took (host clock).
    pub fn fence(&self, from: usize, victim: usize) -> Result<(kmod_testing::Output, Duration)> {
        let t = Instant::now();
        let out = self.nodes[from].run(&format!(
            "{} fence {}",
            project_binary("fenced").display(),
            node_name(victim)
        ))?;
        Ok((out, t.elapsed()))
    }
}
