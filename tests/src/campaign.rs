//! The fault campaign's model (issue 15): a seeded plan of faults drawn from a catalogue, what
//! the fault model says each must and must not cause, and the auditor's verdicts on what was
//! observed. The VM side (injecting, observing, healing) is `src/bin/campaign.rs`; everything
//! here is pure, so the plan's replay and the verdicts are unit-tested.

use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// A small deterministic generator (SplitMix64): the same seed gives the same campaign on any
/// machine, with no dependency whose stream could change between versions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Bias below 2^-40 for the small n used here.
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// One of `0..n` other than `not`.
    fn other(&mut self, n: usize, not: usize) -> usize {
        let k = usize::try_from(self.below(n as u64 - 1)).unwrap_or(0);
        if k >= not {
            k + 1
        } else {
            k
        }
    }

    fn node(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }
}

/// One fault of the catalogue, with where and how hard it hits. Nodes are 0-based.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // each variant's doc says what its fields are
pub enum Fault {
    /// The node's fenced killed with SIGKILL (a crash); nothing restarts it.
    KillDaemon { node: usize },
    /// The node's fenced stopped with SIGSTOP (a hung daemon, a healthy kernel), never resumed.
    StopDaemon { node: usize },
    /// The node's kernel frozen (the freeze module, stop_machine) for 30 s.
    FreezeKernel { node: usize },
    /// `fenced fence victim` on `from`: the clusterware evicting a healthy node.
    Fence { from: usize, victim: usize },
    /// `a` and `b` fence each other at the same moment (a split brain).
    MutualFence { a: usize, b: usize },
    /// The storage target paused: every data LUN unreachable on every node for `ms`.
    TargetPaused { ms: u64 },
    /// The target restarted without its PR state (every registration and the reservation
    /// lost), as an array's reboot or failover can.
    PrStateLost,
    /// One voting disk failing every I/O on one node for `ms`.
    VotingDiskErrors { node: usize, disk: usize, ms: u64 },
    /// One voting disk slow (dm-delay, `delay_ms` per I/O) on one node for `ms`.
    VotingDiskSlow {
        node: usize,
        disk: usize,
        delay_ms: u64,
        ms: u64,
    },
    /// CPU starvation on a node: stress-ng CPU hogs for `secs`.
    CpuHogs { node: usize, secs: u64 },
    /// Memory pressure on a node: a bounded malloc storm (stress-ng --vm) for `secs`.
    MemoryPressure { node: usize, secs: u64 },
    /// An I/O flood on a node: dd with 64 MiB blocks to a scratch file for `secs`.
    IoFlood { node: usize, secs: u64 },
    /// The node's wall clock stepped by `secs` (forward or back); CLOCK_MONOTONIC must not
    /// care.
    ClockStep { node: usize, secs: i64 },
    /// One path of data LUN `lun` offline on `node` (the SCSI device's state) for `ms`; with
    /// `flap_ms` > 0 it goes offline and back every `flap_ms` instead (a flapping link).
    PathDown {
        node: usize,
        lun: usize,
        path: usize,
        ms: u64,
        flap_ms: u64,
    },
    /// Voting disk `disk` returning bad blocks: its block `block` (0 the header, 1 + s slot s)
    /// overwritten on the disk every 200 ms for `ms`, torn (the block as read, its second half
    /// zeroed: a write that reached the disk only in part) or with garbage; the header is
    /// restored afterwards, a slot is rewritten by its owner.
    VotingDiskCorrupt {
        disk: usize,
        block: u64,
        torn: bool,
        ms: u64,
    },
    /// Real-time CPU hogs on a node: one SCHED_FIFO hog per vCPU at `priority` for `secs`.
    RtHogs {
        node: usize,
        priority: u8,
        secs: u64,
    },
    /// A fork bomb on a node for `secs`, run by an unprivileged user in a cgroup whose
    /// `pids.max` is [`FORK_BOMB_PIDS`] (the process table full for that user, the CPUs busy
    /// forking), killed at once (`cgroup.kill`) at its end.
    ForkBomb { node: usize, secs: u64 },
    /// The node's cluster-network link cut (corosync's; its storage stays reachable), for
    /// [`PARTITION_HOLD`] or until it resets: the other two keep quorum and Pacemaker fences
    /// it. Only with Pacemaker ([`PACEMAKER_KINDS`]).
    Partition { node: usize },
    /// `a` and `b` cannot reach each other on the cluster network, and both still reach the
    /// third node (a partial partition), for [`PARTITION_HOLD`] or until one resets. Only with
    /// Pacemaker ([`PACEMAKER_KINDS`]).
    PartialPartition { a: usize, b: usize },
}

/// How long a partition is held at most: Pacemaker's fence of a node cut off comes 15-20 s
/// after the cut under TCG (corosync's token of 5 s, its consensus, the election and the
/// transition; BENCHMARKS.md), so the victim has reset well before.
pub const PARTITION_HOLD: Duration = Duration::from_secs(45);

/// The kinds that need corosync and Pacemaker on the nodes (the campaign's `--pacemaker`).
pub const PACEMAKER_KINDS: &[&str] = &["partition", "partial-partition"];

/// The processes a `fork-bomb` round's cgroup may hold: enough to fill a 512 MiB guest's
/// process table and run queue, few enough that root's commands (the harness's) still fork.
pub const FORK_BOMB_PIDS: u32 = 1000;

/// The real-time priority of fenced's loop (SCHED_FIFO; fenced/src/daemon.rs): real-time hogs
/// below it must not delay the loop, hogs at or above it starve it.
pub const LOOP_PRIORITY: u8 = 10;

/// The catalogue's kinds, in the order of the table.
pub const KINDS: &[&str] = &[
    "kill-daemon",
    "stop-daemon",
    "freeze-kernel",
    "fence",
    "mutual-fence",
    "target-paused",
    "pr-state-lost",
    "voting-disk-errors",
    "voting-disk-slow",
    "cpu-hogs",
    "memory-pressure",
    "io-flood",
    "clock-step",
    "path-down",
    "path-flapping",
    "voting-disk-corrupt",
    "rt-hogs",
    "fork-bomb",
];

/// What the fault model says a fault must cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No node resets; the cluster stays (or becomes again) healthy.
    NoReset,
    /// These nodes reset (and no other).
    Reset(Vec<usize>),
    /// Exactly one of the two resets (and no other node).
    OneOf(usize, usize),
    /// The clusterware may fence one of these, or none: the one it fences must reset, and no
    /// other node may (a partial partition: whether corosync settles on a quorate membership
    /// that excludes one of the two, or keeps re-forming it, is corosync's choice).
    FencedOf(Vec<usize>),
}

impl Fault {
    /// Draws a fault of the kinds `kinds` (of [`KINDS`]) for a cluster of `nodes` nodes (at
    /// least 2) with `luns` data LUNs of `paths` paths each.
    pub fn draw(rng: &mut Rng, kinds: &[&str], nodes: usize, luns: usize, paths: usize) -> Fault {
        let kind = kinds[usize::try_from(rng.below(kinds.len() as u64)).unwrap_or(0)];
        let node = rng.node(nodes);
        match kind {
            "kill-daemon" => Fault::KillDaemon { node },
            "stop-daemon" => Fault::StopDaemon { node },
            "freeze-kernel" => Fault::FreezeKernel { node },
            "fence" => Fault::Fence {
                from: node,
                victim: rng.other(nodes, node),
            },
            "mutual-fence" => Fault::MutualFence {
                a: node,
                b: rng.other(nodes, node),
            },
            "target-paused" => Fault::TargetPaused {
                ms: rng.between(2_000, 9_000),
            },
            "pr-state-lost" => Fault::PrStateLost,
            "voting-disk-errors" => Fault::VotingDiskErrors {
                node,
                disk: rng.node(3),
                ms: rng.between(2_000, 15_000),
            },
            "voting-disk-slow" => Fault::VotingDiskSlow {
                node,
                disk: rng.node(3),
                delay_ms: rng.between(100, 2_000),
                ms: rng.between(3_000, 15_000),
            },
            "cpu-hogs" => Fault::CpuHogs {
                node,
                secs: rng.between(5, 20),
            },
            "memory-pressure" => Fault::MemoryPressure {
                node,
                secs: rng.between(5, 20),
            },
            "io-flood" => Fault::IoFlood {
                node,
                secs: rng.between(5, 20),
            },
            "path-down" | "path-flapping" => Fault::PathDown {
                node,
                lun: rng.node(luns),
                path: rng.node(paths),
                ms: rng.between(2_000, 15_000),
                flap_ms: if kind == "path-flapping" {
                    rng.between(300, 2_000)
                } else {
                    0
                },
            },
            "voting-disk-corrupt" => Fault::VotingDiskCorrupt {
                disk: rng.node(3),
                block: rng.below(nodes as u64 + 1),
                torn: rng.below(2) == 0,
                ms: rng.between(2_000, 15_000),
            },
            "rt-hogs" => Fault::RtHogs {
                node,
                // Mostly below the loop's priority (the case a deployment meets: an RT
                // application beside fenced), sometimes at or above it.
                priority: u8::try_from(rng.between(1, u64::from(LOOP_PRIORITY) + 5)).unwrap_or(1),
                secs: rng.between(3, 15),
            },
            "partition" => Fault::Partition { node },
            "partial-partition" => Fault::PartialPartition {
                a: node,
                b: rng.other(nodes, node),
            },
            "fork-bomb" => Fault::ForkBomb {
                node,
                secs: rng.between(5, 20),
            },
            _ => Fault::ClockStep {
                node,
                secs: if rng.below(2) == 0 { 3_600 } else { -3_600 },
            },
        }
    }

    /// The catalogue kind ([`KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillDaemon { .. } => "kill-daemon",
            Fault::StopDaemon { .. } => "stop-daemon",
            Fault::FreezeKernel { .. } => "freeze-kernel",
            Fault::Fence { .. } => "fence",
            Fault::MutualFence { .. } => "mutual-fence",
            Fault::TargetPaused { .. } => "target-paused",
            Fault::PrStateLost => "pr-state-lost",
            Fault::VotingDiskErrors { .. } => "voting-disk-errors",
            Fault::VotingDiskSlow { .. } => "voting-disk-slow",
            Fault::CpuHogs { .. } => "cpu-hogs",
            Fault::MemoryPressure { .. } => "memory-pressure",
            Fault::IoFlood { .. } => "io-flood",
            Fault::ClockStep { .. } => "clock-step",
            Fault::PathDown { flap_ms: 0, .. } => "path-down",
            Fault::PathDown { .. } => "path-flapping",
            Fault::VotingDiskCorrupt { .. } => "voting-disk-corrupt",
            Fault::RtHogs { .. } => "rt-hogs",
            Fault::ForkBomb { .. } => "fork-bomb",
            Fault::Partition { .. } => "partition",
            Fault::PartialPartition { .. } => "partial-partition",
        }
    }

    /// What the model says must happen. Only the cluster's authority resets a healthy node:
    /// a fence (the victim, or exactly one of two fencers; Pacemaker's fence of the node a
    /// partition cut off, or of the one of the two a partial partition separates that
    /// Pacemaker fenced, if it fenced one), a daemon that no longer feeds its
    /// watchdog, a frozen kernel, a loop starved by real-time hogs at or above its priority
    /// (its own loop late). Everything storage, load or clock does degrades and recovers —
    /// real-time hogs below the loop's priority included.
    pub fn expect(&self) -> Expect {
        match *self {
            Fault::KillDaemon { node }
            | Fault::StopDaemon { node }
            | Fault::FreezeKernel { node } => Expect::Reset(vec![node]),
            Fault::RtHogs { node, priority, .. } if priority >= LOOP_PRIORITY => {
                Expect::Reset(vec![node])
            }
            Fault::Fence { victim, .. } | Fault::Partition { node: victim } => {
                Expect::Reset(vec![victim])
            }
            Fault::MutualFence { a, b } => Expect::OneOf(a, b),
            Fault::PartialPartition { a, b } => Expect::FencedOf(vec![a, b]),
            _ => Expect::NoReset,
        }
    }

    /// How long after the injection a reset the model requires may come, for a cluster with
    /// poll period `p`, lease `l` and watchdog timeout `w`: a daemon that stopped feeding (killed,
    /// stopped, frozen) resets within W of its last feed, at most P before the fault; a fenced
    /// node within L + W + P of its mark on the voting disks (its lease, then its watchdog,
    /// plus a round; its daemon usually sees the mark in its next round), which the caller
    /// counts from the fence's return by adding the fence's own time (for a partition, the time
    /// until Pacemaker recorded its fence done). One second of slack for
    /// the harness's own observation.
    pub fn reset_bound(&self, p: Duration, l: Duration, w: Duration) -> Duration {
        let slack = Duration::from_secs(1);
        match self {
            Fault::Fence { .. }
            | Fault::MutualFence { .. }
            | Fault::Partition { .. }
            | Fault::PartialPartition { .. } => l + w + p + slack,
            _ => w + p + slack,
        }
    }

    /// How long the fault lasts once injected (0 for an instant fault).
    pub fn duration(&self) -> Duration {
        match *self {
            Fault::FreezeKernel { .. } => Duration::from_secs(30),
            Fault::Partition { .. } | Fault::PartialPartition { .. } => PARTITION_HOLD,
            Fault::TargetPaused { ms }
            | Fault::VotingDiskErrors { ms, .. }
            | Fault::VotingDiskSlow { ms, .. }
            | Fault::PathDown { ms, .. }
            | Fault::VotingDiskCorrupt { ms, .. } => Duration::from_millis(ms),
            Fault::CpuHogs { secs, .. }
            | Fault::MemoryPressure { secs, .. }
            | Fault::IoFlood { secs, .. }
            | Fault::RtHogs { secs, .. }
            | Fault::ForkBomb { secs, .. } => Duration::from_secs(secs),
            _ => Duration::ZERO,
        }
    }

    /// The fault as data (the machine-readable round line).
    pub fn to_json(&self) -> Value {
        json!({ "kind": self.kind(), "what": self.to_string() })
    }
}

fn name(node: usize) -> String {
    crate::cluster::node_name(node)
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::KillDaemon { node } => write!(f, "fenced SIGKILLed on {}", name(node)),
            Fault::StopDaemon { node } => write!(f, "fenced SIGSTOPped on {}", name(node)),
            Fault::FreezeKernel { node } => write!(f, "{}'s kernel frozen 30 s", name(node)),
            Fault::Fence { from, victim } => {
                write!(f, "{} fences {}", name(from), name(victim))
            }
            Fault::MutualFence { a, b } => {
                write!(f, "{} and {} fence each other", name(a), name(b))
            }
            Fault::TargetPaused { ms } => write!(f, "storage target paused {ms} ms"),
            Fault::PrStateLost => write!(f, "target restarted without its PR state"),
            Fault::VotingDiskErrors { node, disk, ms } => {
                write!(
                    f,
                    "voting disk {disk} failing on {} for {ms} ms",
                    name(node)
                )
            }
            Fault::VotingDiskSlow {
                node,
                disk,
                delay_ms,
                ms,
            } => write!(
                f,
                "voting disk {disk} slow ({delay_ms} ms per I/O) on {} for {ms} ms",
                name(node)
            ),
            Fault::CpuHogs { node, secs } => write!(f, "CPU hogs on {} for {secs} s", name(node)),
            Fault::MemoryPressure { node, secs } => {
                write!(f, "malloc storm on {} for {secs} s", name(node))
            }
            Fault::IoFlood { node, secs } => write!(f, "I/O flood on {} for {secs} s", name(node)),
            Fault::ClockStep { node, secs } => {
                write!(f, "{}'s wall clock stepped {secs:+} s", name(node))
            }
            Fault::PathDown {
                node,
                lun,
                path,
                ms,
                flap_ms: 0,
            } => write!(
                f,
                "LUN {lun} path {path} down on {} for {ms} ms",
                name(node)
            ),
            Fault::PathDown {
                node,
                lun,
                path,
                ms,
                flap_ms,
            } => write!(
                f,
                "LUN {lun} path {path} flapping every {flap_ms} ms on {} for {ms} ms",
                name(node)
            ),
            Fault::VotingDiskCorrupt {
                disk,
                block,
                torn,
                ms,
            } => write!(
                f,
                "voting disk {disk}'s {} {} for {ms} ms",
                match block {
                    0 => "header".to_string(),
                    b => format!("slot {}", b - 1),
                },
                if torn { "torn" } else { "garbage" }
            ),
            Fault::RtHogs {
                node,
                priority,
                secs,
            } => write!(
                f,
                "SCHED_FIFO {priority} hogs on {} for {secs} s",
                name(node)
            ),
            Fault::ForkBomb { node, secs } => {
                write!(f, "fork bomb on {} for {secs} s", name(node))
            }
            Fault::Partition { node } => write!(f, "{} cut off the cluster network", name(node)),
            Fault::PartialPartition { a, b } => write!(
                f,
                "{} and {} cut off from each other (both reach the third)",
                name(a),
                name(b)
            ),
        }
    }
}

/// One round of a campaign: its fault and when it is injected after the round starts (the
/// writers and daemons running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// 1-based.
    pub number: usize,
    /// The fault.
    pub fault: Fault,
    /// Milliseconds between the round's start and the injection.
    pub inject_after_ms: u64,
}

/// Where a campaign plays: its nodes, data LUNs and paths per LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Nodes (at least 2).
    pub nodes: usize,
    /// Data LUNs.
    pub luns: usize,
    /// Paths per data LUN.
    pub paths: usize,
}

/// The campaign `seed` plays over `rounds` rounds on a cluster of `shape`, drawing from `kinds`
/// (every kind: [`KINDS`]): the same arguments give the same rounds.
pub fn plan(seed: u64, rounds: usize, shape: Shape, kinds: &[&str]) -> Vec<Round> {
    let mut rng = Rng::new(seed);
    (1..=rounds)
        .map(|number| Round {
            number,
            fault: Fault::draw(&mut rng, kinds, shape.nodes, shape.luns, shape.paths),
            inject_after_ms: rng.between(0, 3_000),
        })
        .collect()
}

/// A node's reset as the harness saw it (its QEMU ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The node.
    pub node: usize,
    /// After the injection (for a fence: after the fence returned, when it did).
    pub after: Duration,
    /// What caused it, from the node's own evidence: its daemon's last "fencing this node"
    /// line (the reason), else the hardware watchdog (the daemon stopped feeding it).
    pub cause: String,
}

/// What a round observed, from evidence outside fenced's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every node that reset during the round's window.
    pub resets: Vec<Reset>,
    /// For a fence: the exit code of each fence command (by fencing node).
    pub fences: Vec<(usize, i32)>,
    /// Nodes whose tagged blocks changed after a fence of them returned 0 (the survivor's
    /// snapshot against its read at the end of the round).
    pub written_after_fence: Vec<(usize, String)>,
    /// The nodes that were not healthy again (or rejoined) after the heal, and why.
    pub not_recovered: Vec<String>,
    /// The nodes the clusterware (Pacemaker) recorded a successful fence of during the round.
    pub clusterware_fenced: Vec<usize>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The auditor's rule: `write-after-fence`, `one-survivor`, `false-self-fence`, `bounded`,
    /// `recovery`.
    pub rule: &'static str,
    /// What was seen.
    pub detail: String,
}

/// The auditor's verdict on a round: the violations (none when the round kept every rule).
pub fn audit(fault: &Fault, bound: Duration, seen: &Observed) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut push = |rule: &'static str, detail: String| v.push(Violation { rule, detail });
    for (node, detail) in &seen.written_after_fence {
        push(
            "write-after-fence",
            format!(
                "{}'s blocks changed after its fence returned 0: {detail}",
                name(*node)
            ),
        );
    }
    let reset = |n: usize| seen.resets.iter().find(|r| r.node == n);
    let must: Vec<usize> = match fault.expect() {
        Expect::NoReset => Vec::new(),
        Expect::Reset(nodes) => nodes,
        Expect::OneOf(a, b) => {
            let survivors: Vec<usize> =
                [a, b].into_iter().filter(|&n| reset(n).is_none()).collect();
            if survivors.len() != 1 {
                push(
                    "one-survivor",
                    format!(
                        "{} of {} and {} survived their mutual fence (fence exits {:?})",
                        survivors.len(),
                        name(a),
                        name(b),
                        seen.fences
                    ),
                );
            }
            [a, b].into_iter().filter(|&n| reset(n).is_some()).collect()
        }
        Expect::FencedOf(nodes) => {
            let fenced: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|n| seen.clusterware_fenced.contains(n))
                .collect();
            if fenced.len() > 1 {
                push(
                    "one-survivor",
                    format!(
                        "the clusterware fenced {} of {}",
                        fenced.len(),
                        nodes
                            .iter()
                            .map(|&n| name(n))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
            }
            fenced
        }
    };
    if let Fault::Fence { from, .. } = fault {
        if let Some((_, code)) = seen.fences.iter().find(|(n, code)| n == from && *code != 0) {
            push(
                "bounded",
                format!(
                    "the fence from {} failed (exit {code}): the victim was not cut off",
                    name(*from)
                ),
            );
        }
    }
    for &n in &seen.clusterware_fenced {
        if !must.contains(&n) {
            push(
                "false-self-fence",
                format!("the clusterware fenced {}, which the fault spares", name(n)),
            );
        }
    }
    for r in &seen.resets {
        if !must.contains(&r.node)
            && !matches!(fault.expect(), Expect::OneOf(a, b) if r.node == a || r.node == b)
        {
            push(
                "false-self-fence",
                format!(
                    "{} reset {:.1} s after the fault ({})",
                    name(r.node),
                    r.after.as_secs_f64(),
                    r.cause
                ),
            );
        }
    }
    for &n in &must {
        match reset(n) {
            None => push("bounded", format!("{} did not reset", name(n))),
            Some(r) if r.after > bound => push(
                "bounded",
                format!(
                    "{} reset {:.1} s after the fault, past the bound of {:.1} s ({})",
                    name(n),
                    r.after.as_secs_f64(),
                    bound.as_secs_f64(),
                    r.cause
                ),
            ),
            Some(_) => {}
        }
    }
    for what in &seen.not_recovered {
        push("recovery", what.clone());
    }
    v
}

/// Per fault kind: rounds, violations, and the longest reset against its bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindTally {
    /// Rounds of this kind.
    pub rounds: usize,
    /// Violations found in them.
    pub violations: usize,
    /// The worst required reset's time over its bound (e.g. 0.8 = 80 % of the bound used).
    pub worst_of_bound: Option<f64>,
}

/// The table per fault kind, from each round's fault, bound, observation and verdict.
pub fn tally<'a>(
    rounds: impl IntoIterator<Item = (&'a Fault, Duration, &'a Observed, usize)>,
) -> Vec<(&'static str, KindTally)> {
    let mut table: Vec<(&'static str, KindTally)> = KINDS
        .iter()
        .chain(PACEMAKER_KINDS)
        .map(|k| (*k, KindTally::default()))
        .collect();
    for (fault, bound, seen, violations) in rounds {
        let Some((_, t)) = table.iter_mut().find(|(k, _)| *k == fault.kind()) else {
            continue;
        };
        t.rounds += 1;
        t.violations += violations;
        for r in &seen.resets {
            let share = r.after.as_secs_f64() / bound.as_secs_f64().max(1e-9);
            if t.worst_of_bound.is_none_or(|w| share > w) {
                t.worst_of_bound = Some(share);
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        nodes: 3,
        luns: 2,
        paths: 2,
    };

    #[test]
    fn the_same_seed_replays_the_same_campaign_and_another_seed_does_not() {
        assert_eq!(plan(42, 50, SHAPE, KINDS), plan(42, 50, SHAPE, KINDS));
        assert_ne!(plan(42, 50, SHAPE, KINDS), plan(43, 50, SHAPE, KINDS));
        // A longer campaign starts with the shorter one's rounds.
        assert_eq!(
            plan(7, 100, SHAPE, KINDS)[..20],
            plan(7, 20, SHAPE, KINDS)[..]
        );
    }

    #[test]
    fn a_plan_restricted_to_some_kinds_draws_only_those() {
        let kinds = ["rt-hogs", "path-flapping"];
        let rounds = plan(5, 60, SHAPE, &kinds);
        for kind in kinds {
            assert!(rounds.iter().any(|r| r.fault.kind() == kind), "{kind}");
        }
        assert!(rounds.iter().all(|r| kinds.contains(&r.fault.kind())));
    }

    #[test]
    fn real_time_hogs_reset_the_node_only_at_or_above_the_loop_priority() {
        let hogs = |priority| Fault::RtHogs {
            node: 1,
            priority,
            secs: 5,
        };
        assert_eq!(hogs(LOOP_PRIORITY - 1).expect(), Expect::NoReset);
        assert_eq!(hogs(LOOP_PRIORITY).expect(), Expect::Reset(vec![1]));
        assert_eq!(hogs(LOOP_PRIORITY + 5).expect(), Expect::Reset(vec![1]));
        let below = plan(3, 400, SHAPE, &["rt-hogs"])
            .iter()
            .filter(|r| r.fault.expect() == Expect::NoReset)
            .count();
        assert!(below > 200 && below < 400, "{below} of 400 below the loop");
    }

    #[test]
    fn partitions_are_drawn_only_from_the_pacemaker_catalogue_and_need_pacemakers_fence() {
        assert!(plan(5, 400, SHAPE, KINDS)
            .iter()
            .all(|r| !PACEMAKER_KINDS.contains(&r.fault.kind())));
        let rounds = plan(5, 400, SHAPE, PACEMAKER_KINDS);
        for kind in PACEMAKER_KINDS {
            assert!(rounds.iter().any(|r| r.fault.kind() == *kind), "{kind}");
        }
        for r in &rounds {
            match r.fault {
                Fault::Partition { node } => {
                    assert!(node < 3);
                    assert_eq!(r.fault.expect(), Expect::Reset(vec![node]));
                }
                Fault::PartialPartition { a, b } => {
                    assert!(a != b && a < 3 && b < 3);
                    assert_eq!(r.fault.expect(), Expect::FencedOf(vec![a, b]));
                }
                ref f => panic!("{f} drawn from the Pacemaker catalogue"),
            }
            assert_eq!(r.fault.duration(), PARTITION_HOLD);
        }
        // A partial partition: no fence and no reset is within the model; the node fenced
        // must reset, and only it; never both, never the third.
        let fault = Fault::PartialPartition { a: 0, b: 2 };
        assert!(audit(&fault, BOUND, &Observed::default()).is_empty());
        let fenced = |nodes: Vec<usize>, resets: Vec<Reset>| Observed {
            resets,
            clusterware_fenced: nodes,
            ..Observed::default()
        };
        let one = fenced(vec![2], vec![reset(2, 2.0, "marked dead")]);
        assert!(audit(&fault, BOUND, &one).is_empty());
        let not_reset = fenced(vec![2], vec![]);
        assert_eq!(rules(&audit(&fault, BOUND, &not_reset)), ["bounded"]);
        let unfenced_reset = fenced(vec![], vec![reset(0, 2.0, "watchdog")]);
        assert_eq!(
            rules(&audit(&fault, BOUND, &unfenced_reset)),
            ["false-self-fence"]
        );
        let third = fenced(vec![1], vec![reset(1, 2.0, "marked dead")]);
        assert_eq!(
            rules(&audit(&fault, BOUND, &third)),
            ["false-self-fence", "false-self-fence"]
        );
        let both = fenced(
            vec![0, 2],
            vec![reset(0, 2.0, "marked dead"), reset(2, 2.0, "marked dead")],
        );
        assert_eq!(rules(&audit(&fault, BOUND, &both)), ["one-survivor"]);
        // A partition: the node cut off must be fenced and reset.
        let cut = Fault::Partition { node: 1 };
        assert_eq!(
            rules(&audit(&cut, BOUND, &Observed::default())),
            ["bounded"]
        );
    }

    #[test]
    fn a_fork_bomb_must_reset_nothing() {
        let fault = Fault::ForkBomb { node: 1, secs: 9 };
        assert_eq!(fault.expect(), Expect::NoReset);
        assert_eq!(fault.duration(), Duration::from_secs(9));
        let reset = Observed {
            resets: vec![reset(1, 4.0, "hardware watchdog")],
            ..Observed::default()
        };
        assert_eq!(rules(&audit(&fault, BOUND, &reset)), ["false-self-fence"]);
    }

    #[test]
    fn a_long_plan_draws_every_kind_and_only_valid_nodes() {
        let rounds = plan(1, 400, SHAPE, KINDS);
        for kind in KINDS {
            assert!(
                rounds.iter().any(|r| r.fault.kind() == *kind),
                "{kind} never drawn"
            );
        }
        for r in &rounds {
            match r.fault {
                Fault::Fence { from, victim } => assert!(from != victim && from < 3 && victim < 3),
                Fault::MutualFence { a, b } => assert!(a != b && a < 3 && b < 3),
                Fault::VotingDiskErrors { node, disk, .. } => assert!(node < 3 && disk < 3),
                Fault::PathDown {
                    node, lun, path, ..
                } => assert!(node < 3 && lun < 2 && path < 2),
                Fault::VotingDiskCorrupt { disk, block, .. } => assert!(disk < 3 && block <= 3),
                Fault::RtHogs { priority, .. } => assert!((1..=99).contains(&priority)),
                _ => {}
            }
            assert!(r.inject_after_ms <= 3_000);
        }
    }

    fn reset(node: usize, secs: f64, cause: &str) -> Reset {
        Reset {
            node,
            after: Duration::from_secs_f64(secs),
            cause: cause.into(),
        }
    }

    fn rules(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.rule).collect()
    }

    const BOUND: Duration = Duration::from_secs(7);

    #[test]
    fn a_storage_fault_that_resets_a_node_is_a_false_self_fence() {
        let fault = Fault::TargetPaused { ms: 8_000 };
        assert!(audit(&fault, BOUND, &Observed::default()).is_empty());
        let seen = Observed {
            resets: vec![reset(1, 9.0, "watchdog")],
            ..Observed::default()
        };
        assert_eq!(rules(&audit(&fault, BOUND, &seen)), ["false-self-fence"]);
    }

    #[test]
    fn a_required_reset_must_come_and_come_within_the_bound() {
        let fault = Fault::KillDaemon { node: 2 };
        let on_time = Observed {
            resets: vec![reset(2, 5.5, "watchdog")],
            ..Observed::default()
        };
        assert!(audit(&fault, BOUND, &on_time).is_empty());
        let late = Observed {
            resets: vec![reset(2, 7.5, "watchdog")],
            ..Observed::default()
        };
        assert_eq!(rules(&audit(&fault, BOUND, &late)), ["bounded"]);
        assert_eq!(
            rules(&audit(&fault, BOUND, &Observed::default())),
            ["bounded"]
        );
        let and_another = Observed {
            resets: vec![reset(2, 5.5, "watchdog"), reset(0, 6.0, "loop late")],
            ..Observed::default()
        };
        assert_eq!(
            rules(&audit(&fault, BOUND, &and_another)),
            ["false-self-fence"]
        );
    }

    #[test]
    fn a_mutual_fence_must_leave_exactly_one_of_the_two() {
        let fault = Fault::MutualFence { a: 0, b: 1 };
        let one = Observed {
            resets: vec![reset(1, 2.0, "marked dead")],
            fences: vec![(0, 0), (1, 1)],
            ..Observed::default()
        };
        assert!(audit(&fault, BOUND, &one).is_empty());
        let both = Observed {
            resets: vec![reset(0, 2.0, "marked dead"), reset(1, 2.0, "marked dead")],
            ..Observed::default()
        };
        assert_eq!(rules(&audit(&fault, BOUND, &both)), ["one-survivor"]);
        assert_eq!(
            rules(&audit(&fault, BOUND, &Observed::default())),
            ["one-survivor"]
        );
        let third = Observed {
            resets: vec![reset(1, 2.0, "marked dead"), reset(2, 3.0, "watchdog")],
            ..Observed::default()
        };
        assert_eq!(rules(&audit(&fault, BOUND, &third)), ["false-self-fence"]);
    }

    #[test]
    fn a_victim_write_after_its_fence_and_a_failed_fence_are_violations() {
        let fault = Fault::Fence { from: 0, victim: 2 };
        let written = Observed {
            resets: vec![reset(2, 1.5, "marked dead")],
            fences: vec![(0, 0)],
            written_after_fence: vec![(2, "block 3 of LUN 0: seq 41 -> 44".into())],
            ..Observed::default()
        };
        assert_eq!(
            rules(&audit(&fault, BOUND, &written)),
            ["write-after-fence"]
        );
        let failed = Observed {
            resets: vec![],
            fences: vec![(0, 4)],
            ..Observed::default()
        };
        assert_eq!(
            rules(&audit(&fault, BOUND, &failed)),
            ["bounded", "bounded"]
        );
    }

    #[test]
    fn a_cluster_not_healthy_after_the_heal_is_a_recovery_violation() {
        let seen = Observed {
            not_recovered: vec!["node2: daemon not healthy within 60 s".into()],
            ..Observed::default()
        };
        assert_eq!(
            rules(&audit(&Fault::PrStateLost, BOUND, &seen)),
            ["recovery"]
        );
    }

    #[test]
    fn the_table_counts_rounds_violations_and_the_worst_share_of_the_bound() {
        let kill = Fault::KillDaemon { node: 0 };
        let pause = Fault::TargetPaused { ms: 3_000 };
        let fast = Observed {
            resets: vec![reset(0, 3.5, "watchdog")],
            ..Observed::default()
        };
        let slow = Observed {
            resets: vec![reset(0, 5.6, "watchdog")],
            ..Observed::default()
        };
        let none = Observed::default();
        let t = tally([
            (&kill, BOUND, &fast, 0),
            (&kill, BOUND, &slow, 0),
            (&pause, BOUND, &none, 1),
        ]);
        let row = |k: &str| t.iter().find(|(kind, _)| *kind == k).unwrap().1.clone();
        assert_eq!(row("kill-daemon").rounds, 2);
        assert!((row("kill-daemon").worst_of_bound.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(
            (row("target-paused").rounds, row("target-paused").violations),
            (1, 1)
        );
        assert_eq!(row("fence").rounds, 0);
    }
}
