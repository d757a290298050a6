//! The fault campaign (issue 15): a seeded series of rounds on a 3-node guest cluster, each
//! injecting a fault drawn from the catalogue ([`tests::campaign::Fault`]) at a random moment on
//! random nodes, then healing and auditing from evidence outside fenced's own claims:
//!
//! - every node writes tagged 4 KiB blocks (node, boot, sequence) with O_DIRECT|O_DSYNC to its
//!   own blocks of every shared LUN throughout; when a fence returns 0, the fencer reads the
//!   victim's blocks, and any change to them before the victim is let back in is a violation;
//! - which nodes reset (their QEMU ended) and when, against what the fault model says must
//!   happen ([`tests::campaign::Fault::expect`]) and its bound; each reset's cause from the
//!   node's daemon log (its "fencing this node" reason) or else the hardware watchdog;
//! - after the heal, every node healthy again (a node that reset is booted again and let back in
//!   as the GUIDE tells an operator: its fenced started, `fenced clear NODE` on a live node).
//!
//! ```text
//! cargo run -p tests --release --bin campaign -- --seed N --rounds R
//! cargo run -p tests --release --bin campaign -- --seed N --rounds R --pacemaker
//! ```
//!
//! With `--pacemaker` the nodes run corosync and Pacemaker (systemd guests on a guest LAN, as
//! fenced/docs/pacemaker.md sets them up) and the rounds are cluster-network partitions: one node
//! cut off, or two nodes cut off from each other while both reach the third. Pacemaker must
//! fence the node cut off, through fence_fenced; of two cut off from each other it may fence
//! one or none (corosync's choice), and only a node it fenced may reset. The fence's moment is
//! when Pacemaker records it done, and a node that reset rejoins through Pacemaker's unfencing.
//!
//! One line per round, a table per fault kind, the same as JSON lines in
//! `target/campaign/seed-N.jsonl` (or `--json PATH`), and last `campaign: R rounds, V violations`;
//! the exit status is 1 when V > 0 (2 when the harness itself failed). It builds the fenced
//! binary the guests run first, with the same profile and features as itself: built with the
//! `broken-fence` feature (`--features broken-fence`, a separate `--target-dir`), the cluster runs
//! a fenced whose fence claims success and does nothing, and the auditor must catch it.

use clap::Parser;
use kmod_testing::iscsi::TargetKind;
use kmod_testing::{faults, project_binary, Guest, Pending, Result};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tests::campaign::{self, Fault, Observed, Reset, Round};
use tests::cluster::{lan_address, node_name, Cluster, ClusterSpec};
use tests::pacemaker;

#[derive(Parser)]
#[command(about = "A seeded, randomized fault campaign on a guest cluster, with an auditor")]
struct Args {
    /// The seed: the same seed replays the same faults at the same moments.
    #[arg(long)]
    seed: u64,
    /// Rounds to play.
    #[arg(long)]
    rounds: usize,
    /// Where to write the machine-readable record (JSON lines; default
    /// target/campaign/seed-N.jsonl).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the rounds the seed plays and exit, without booting anything.
    #[arg(long)]
    dry_run: bool,
    /// Draw only these kinds (comma-separated; default: the whole catalogue). Another set of
    /// kinds is another campaign: the same seed then plays other rounds.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(campaign::KINDS.iter().chain(campaign::PACEMAKER_KINDS).copied()))]
    kinds: Vec<String>,
    /// Run corosync and Pacemaker on the nodes (systemd guests on a guest LAN, fenced under its
    /// unit, the stonith device fence_fenced, as fenced/docs/pacemaker.md sets them up) and
    /// draw the cluster-network partitions (default kinds: partition, partial-partition). A
    /// node that reset rejoins the way that document says: the start commands, then
    /// Pacemaker's unfencing.
    #[arg(long)]
    pacemaker: bool,
}

/// Nodes in the campaign's cluster.
const NODES: usize = 3;
/// Shared LUNs.
const LUNS: usize = 2;
/// Paths per shared LUN (target ports; every node attaches each LUN through each).
const PATHS: usize = 2;
/// Each node's tagged blocks on every LUN: 8 blocks from `WRITER_BASE + 16 * node`.
const WRITER_BASE: u64 = 256;
const WRITER_BLOCKS: u64 = 8;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("campaign: the harness failed: {e}");
            ExitCode::from(2)
        }
    }
}

/// Builds the fenced binary the guests run (next to this one, same profile and features).
fn build_fenced() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let exe = std::env::current_exe().map_err(|e| kmod_testing::Error::Setup(e.to_string()))?;
    let target_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| kmod_testing::Error::Setup("no target directory".into()))?;
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", "fenced", "--bins", "--target-dir"])
        .arg(target_dir);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    if cfg!(feature = "broken-fence") {
        cmd.args(["--features", "fenced/broken-fence"]);
    }
    let st = cmd
        .status()
        .map_err(|e| kmod_testing::Error::Setup(format!("running cargo: {e}")))?;
    if !st.success() {
        return Err(kmod_testing::Error::Setup(format!(
            "building fenced failed ({st})"
        )));
    }
    Ok(())
}

fn run(args: &Args) -> Result<usize> {
    let catalogue = if args.pacemaker {
        campaign::PACEMAKER_KINDS
    } else {
        campaign::KINDS
    };
    let kinds: Vec<&str> = if args.kinds.is_empty() {
        catalogue.to_vec()
    } else {
        args.kinds.iter().map(String::as_str).collect()
    };
    if let Some(k) = kinds.iter().find(|k| !catalogue.contains(k)) {
        return Err(kmod_testing::Error::Setup(format!(
            "--kinds {k}: {}",
            if args.pacemaker {
                "with --pacemaker the campaign draws only partition, partial-partition"
            } else {
                "a cluster-network partition needs Pacemaker on the nodes: add --pacemaker"
            }
        )));
    }
    let shape = campaign::Shape {
        nodes: NODES,
        luns: LUNS,
        paths: PATHS,
    };
    let plan = campaign::plan(args.seed, args.rounds, shape, &kinds);
    if args.dry_run {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for r in &plan {
            // A reader that has seen enough (`| head`) closes the pipe: stop, do not panic.
            if writeln!(
                out,
                "round {:>3} seed {}: {}: {} at +{} ms",
                r.number,
                args.seed,
                r.fault.kind(),
                r.fault,
                r.inject_after_ms
            )
            .is_err()
            {
                break;
            }
        }
        return Ok(0);
    }
    build_fenced()?;
    let json_path = args.json.clone().unwrap_or_else(|| {
        kmod_testing::repo_root()
            .join("target/campaign")
            .join(format!("seed-{}.jsonl", args.seed))
    });
    if let Some(dir) = json_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut record = std::fs::File::create(&json_path)
        .map_err(|e| kmod_testing::Error::Setup(format!("{}: {e}", json_path.display())))?;
    println!(
        "campaign: seed {}, {} rounds{}, fenced {}{}",
        args.seed,
        args.rounds,
        if args.kinds.is_empty() {
            String::new()
        } else {
            format!(" of {}", kinds.join(", "))
        },
        project_binary("fenced").display(),
        if cfg!(feature = "broken-fence") {
            " (built with the broken-fence feature: its fences do nothing)"
        } else {
            ""
        }
    );
    let began = Instant::now();
    let mut spec = ClusterSpec::new(&format!("campaign-{}", args.seed), TargetKind::Lio);
    spec.luns = LUNS;
    spec.paths = PATHS;
    spec.voting_via_dm = true;
    if args.pacemaker {
        spec.systemd = true;
        spec.daemons = false;
        spec.lan = true;
    }
    let mut say = |s: &str| println!("  {s}");
    let mut c = Cluster::start(&mut say, &spec)?;
    if args.pacemaker {
        start_pacemaker(&c)?;
    }
    let mut writers: Vec<Option<Pending>> = Vec::new();
    for i in 0..NODES {
        writers.push(Some(start_writer(&c, i)?));
    }
    let mut results: Vec<(Fault, Duration, Observed, usize)> = Vec::new();
    let mut violations = 0;
    for round in &plan {
        let t = Instant::now();
        let (seen, bound) = play(&mut c, round)?;
        let mut seen = seen;
        recover(&mut c, &mut writers, &mut seen, args.pacemaker)?;
        let found = campaign::audit(&round.fault, bound, &seen);
        violations += found.len();
        let resets: Vec<String> = seen
            .resets
            .iter()
            .map(|r| {
                format!(
                    "{} +{:.1} s ({})",
                    node_name(r.node),
                    r.after.as_secs_f64(),
                    r.cause
                )
            })
            .collect();
        println!(
            "round {:>3} seed {}: {:<55} resets [{}] -> {} ({:.0} s)",
            round.number,
            args.seed,
            round.fault.to_string(),
            resets.join(", "),
            if found.is_empty() {
                "ok".to_string()
            } else {
                found
                    .iter()
                    .map(|v| format!("VIOLATION {}: {}", v.rule, v.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
            t.elapsed().as_secs_f64()
        );
        let line = json!({
            "seed": args.seed,
            "round": round.number,
            "fault": round.fault.to_json(),
            "inject_after_ms": round.inject_after_ms,
            "bound_s": bound.as_secs_f64(),
            "resets": seen.resets.iter().map(|r| json!({
                "node": node_name(r.node), "after_s": r.after.as_secs_f64(), "cause": r.cause
            })).collect::<Vec<_>>(),
            "fences": seen.fences.iter().map(|(n, code)| json!({"from": node_name(*n), "exit": code})).collect::<Vec<_>>(),
            "clusterware_fenced": seen.clusterware_fenced.iter().map(|&n| node_name(n)).collect::<Vec<_>>(),
            "violations": found.iter().map(|v| json!({"rule": v.rule, "detail": v.detail})).collect::<Vec<_>>(),
            "seconds": t.elapsed().as_secs_f64(),
        });
        let _ = writeln!(record, "{line}");
        results.push((round.fault.clone(), bound, seen, found.len()));
    }
    let table = campaign::tally(results.iter().map(|(f, b, s, v)| (f, *b, s, *v)));
    println!("\n| fault | rounds | violations | worst reset / bound |\n|---|---|---|---|");
    let mut rows = Vec::new();
    for (kind, t) in table
        .iter()
        .filter(|(k, t)| t.rounds > 0 || kinds.contains(k))
    {
        println!(
            "| {kind} | {} | {} | {} |",
            t.rounds,
            t.violations,
            t.worst_of_bound
                .map_or("-".to_string(), |w| format!("{:.0} %", w * 100.0))
        );
        rows.push(json!({"kind": kind, "rounds": t.rounds, "violations": t.violations, "worst_reset_of_bound": t.worst_of_bound}));
    }
    let summary = json!({"seed": args.seed, "rounds": args.rounds, "violations": violations, "table": rows, "seconds": began.elapsed().as_secs_f64()});
    let _ = writeln!(record, "{summary}");
    println!(
        "\n(record: {}; {:.0} s in all)",
        json_path.display(),
        began.elapsed().as_secs_f64()
    );
    println!("campaign: {} rounds, {violations} violations", args.rounds);
    Ok(violations)
}

/// Corosync and Pacemaker on every node as fenced/docs/pacemaker.md sets them up: the start
/// commands (which start fenced's unit first), all three online, then the stonith device.
fn start_pacemaker(c: &Cluster) -> Result<()> {
    let t = Instant::now();
    pacemaker::install(c)?;
    let all: Vec<usize> = (0..NODES).collect();
    for (i, out) in pacemaker::start(c, &all)?.iter().enumerate() {
        if !out.success() {
            return Err(kmod_testing::Error::Setup(format!(
                "{}: the start commands exited {}: {}{}",
                node_name(i),
                out.code,
                out.stdout,
                out.stderr
            )));
        }
    }
    wait_all_online(c, 0)?;
    c.nodes[0].run_ok(&pacemaker::doc_block("stonith")?)?;
    pacemaker::wait_started(c, 0, 1, Duration::from_secs(120))?;
    c.wait_daemons_healthy(&all, Duration::from_secs(60))?;
    println!(
        "  corosync and Pacemaker on every node, all online, the stonith device fence_fenced started ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits (at most 180 s) until `crm_mon` on node `from` shows every node online.
fn wait_all_online(c: &Cluster, from: usize) -> Result<String> {
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    pacemaker::wait_online(c, from, &names, Duration::from_secs(180))
}

/// Starts node `i`'s writer: its tagged blocks on every LUN through every path, one block per
/// path every 250 ms, O_DIRECT|O_DSYNC; refused writes are ignored (a fenced node keeps trying,
/// as an application would, and a fence must cut every path).
fn start_writer(c: &Cluster, i: usize) -> Result<Pending> {
    let devs = c.lun_devices[i].join(" ");
    c.nodes[i].spawn(&format!(
        "boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id); seq=0\n\
         while :; do\n\
           seq=$((seq+1))\n\
           for dev in {devs}; do\n\
             printf 'FCAMP node={node} boot=%s seq=%010d\\n' $boot $seq | \
               dd of=$dev bs=4096 count=1 seek=$(({base} + seq % {n})) conv=sync,notrunc oflag=direct,dsync status=none 2>/dev/null\n\
           done\n\
           sleep 0.25\n\
         done",
        node = node_name(i),
        base = WRITER_BASE + 16 * i as u64,
        n = WRITER_BLOCKS,
    ))
}

/// The tags in `victim`'s blocks on every LUN, as node `reader` reads them (O_DIRECT, through
/// each LUN's first path).
fn read_tags(c: &Cluster, reader: usize, victim: usize) -> Result<Vec<String>> {
    let mut tags = Vec::new();
    for (k, paths) in c.lun_paths()[reader].iter().enumerate() {
        let dev = &paths[0];
        let out = c.nodes[reader].run_ok(&format!(
            "dd if={dev} bs=4096 skip={} count={WRITER_BLOCKS} iflag=direct status=none | tr -d '\\000' | grep -a FCAMP || true",
            WRITER_BASE + 16 * victim as u64
        ))?;
        tags.extend(out.lines().map(|l| format!("LUN {k}: {}", l.trim())));
    }
    tags.sort();
    Ok(tags)
}

/// What to undo when a timed fault ends.
enum Heal {
    Nothing,
    Target,
    VotingDisk {
        node: usize,
        disk: usize,
    },
    Clock {
        node: usize,
        secs: i64,
    },
    /// A path back online (after its flapping loop, if any, ended).
    Path {
        node: usize,
        dev: String,
    },
    /// A corrupted voting-disk block: wait for the corrupting loop on node 0, then write back
    /// the header saved before (a slot block is rewritten by its owner every round).
    Corrupt {
        raw: String,
        header: bool,
    },
    /// A node's cluster-network link back up.
    Lan {
        node: usize,
    },
    /// The blackhole routes between `a` and `b` removed.
    Blackhole {
        a: usize,
        b: usize,
    },
}

/// Whom Pacemaker must fence in a partition round, and which node watches its fence history:
/// the victims the model allows and a node that keeps quorum whichever of them goes.
fn pacemaker_watch(fault: &Fault) -> Option<(Vec<usize>, usize)> {
    let other = |not: &[usize]| (0..NODES).find(|i| !not.contains(i)).unwrap_or(0);
    match *fault {
        Fault::Partition { node } => Some((vec![node], other(&[node]))),
        Fault::PartialPartition { a, b } => Some((vec![a, b], other(&[a, b]))),
        _ => None,
    }
}

/// Where node 0 keeps a voting disk's header during a `voting-disk-corrupt` round.
const SAVED_HEADER: &str = "/tmp/campaign-vote-header";

/// `ms` as seconds for timeout(1) and sleep(1).
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Plays one round: waits its moment, injects its fault, watches every node until the fault's
/// end plus the bound and a settling time, heals timed faults at their end, and returns what it
/// saw with the bound that applied.
fn play(c: &mut Cluster, round: &Round) -> Result<(Observed, Duration)> {
    let t = c.timing;
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    let bound = round
        .fault
        .reset_bound(ms(t.poll), ms(t.lease), ms(t.watchdog));
    std::thread::sleep(Duration::from_millis(round.inject_after_ms));
    let mut seen = Observed::default();
    let mut snapshots: Vec<(usize, usize, Vec<String>)> = Vec::new();
    let mut heal = Heal::Nothing;
    let mut pending: Vec<Pending> = Vec::new();
    // A loop on a node that must have ended before the heal (it would undo it).
    let mut ends_before_heal: Option<(usize, Pending)> = None;
    let mut injected = Instant::now();
    // When a fence returned: the victim's blocks are read then, and the bound of its reset
    // counts the fence's own time too.
    let mut fence_returned = None;
    let sh = |g: &Guest, cmd: &str| -> Result<()> { g.run_ok(cmd).map(|_| ()) };
    match round.fault {
        Fault::KillDaemon { node } => sh(&c.nodes[node], "pkill -KILL -x fenced")?,
        Fault::StopDaemon { node } => sh(&c.nodes[node], "pkill -STOP -x fenced")?,
        Fault::FreezeKernel { node } => {
            // Timed from the freeze itself, as the console shows it: loading the module takes
            // a second or so under TCG, and the watchdog's bound starts at the freeze.
            let ko = c.lab.kernel().build_module("freeze")?;
            let g = &c.nodes[node];
            let mark = "campaign: freezing now";
            let before = g.console().matches(mark).count();
            pending.push(g.spawn(&format!(
                "echo '{mark}' > /dev/kmsg; rmmod freeze 2>/dev/null; insmod {} seconds=30",
                ko.display()
            ))?);
            injected = console_mark(g, mark, before);
        }
        Fault::Fence { from: f, victim } => {
            let out = c.fence(f, victim)?.0;
            fence_returned = Some(Instant::now());
            seen.fences.push((f, out.code));
            if out.code == 0 {
                snapshots.push((f, victim, read_tags(c, f, victim)?));
            }
        }
        Fault::MutualFence { a, b } => {
            let pa = c.spawn_fenced(a, &format!("fence {}", node_name(b)))?;
            let pb = c.spawn_fenced(b, &format!("fence {}", node_name(a)))?;
            for (me, other, p) in [(a, b, pa), (b, a, pb)] {
                // The loser may reset before its command returns.
                let code = c.nodes[me]
                    .wait(p, Duration::from_secs(60))
                    .map_or(-1, |o| o.code);
                seen.fences.push((me, code));
                if code == 0 && c.nodes[me].is_running() {
                    fence_returned = Some(Instant::now());
                    if let Ok(tags) = read_tags(c, me, other) {
                        snapshots.push((me, other, tags));
                    }
                }
            }
        }
        Fault::TargetPaused { .. } => {
            c.target().pause()?;
            heal = Heal::Target;
        }
        Fault::PrStateLost => {
            c.target().restart_dropping_pr_state()?;
        }
        Fault::VotingDiskErrors { node, disk, .. } => {
            vote_table(c, node, disk, "error", "")?;
            heal = Heal::VotingDisk { node, disk };
        }
        Fault::VotingDiskSlow {
            node,
            disk,
            delay_ms,
            ..
        } => {
            vote_table(c, node, disk, "delay", &format!("0 {delay_ms}"))?;
            heal = Heal::VotingDisk { node, disk };
        }
        Fault::CpuHogs { node, secs } => pending.push(c.nodes[node].spawn(&format!(
            "cd /tmp && stress-ng --cpu 4 --timeout {secs}s --quiet"
        ))?),
        Fault::MemoryPressure { node, secs } => pending.push(c.nodes[node].spawn(&format!(
            "cd /tmp && stress-ng --vm 2 --vm-bytes 40% --timeout {secs}s --quiet"
        ))?),
        Fault::IoFlood { node, secs } => pending.push(c.nodes[node].spawn(&format!(
            "end=$((SECONDS + {secs})); while [ $SECONDS -lt $end ]; do \
             dd if=/dev/zero of={dev} bs=4M count=1 seek={seek} oflag=direct status=none; done",
            dev = c.lun_devices[node][0],
            seek = node + 1
        ))?),
        Fault::ClockStep { node, secs } => {
            sh(
                &c.nodes[node],
                &format!("date -s @$(( $(date +%s) + ({secs}) )) >/dev/null"),
            )?;
            heal = Heal::Clock { node, secs };
        }
        Fault::PathDown {
            node,
            lun,
            path,
            ms,
            flap_ms,
        } => {
            let dev = c.lun_paths()[node][lun][path].clone();
            if flap_ms == 0 {
                faults::path_offline(&c.nodes[node], &dev)?;
            } else {
                let state = format!(
                    "/sys/block/{}/device/state",
                    dev.trim_start_matches("/dev/")
                );
                ends_before_heal = Some((
                    node,
                    c.nodes[node].spawn(&format!(
                        "timeout {} sh -c 'while :; do echo offline > {state}; sleep {f}; \
                         echo running > {state}; sleep {f}; done'; echo running > {state}",
                        secs(ms),
                        f = secs(flap_ms)
                    ))?,
                ));
            }
            heal = Heal::Path { node, dev };
        }
        Fault::VotingDiskCorrupt {
            disk,
            block,
            torn,
            ms,
        } => {
            let g = &c.nodes[0];
            let raw = g.disk_by_serial(&format!("vote{disk}"))?;
            if block == 0 {
                sh(
                    g,
                    &format!(
                        "dd if={raw} of={SAVED_HEADER} bs=4096 count=1 iflag=direct status=none"
                    ),
                )?;
            }
            let write = if torn {
                format!(
                    "dd if={raw} bs=4096 skip={block} count=1 iflag=direct status=none | head -c 2048 > /tmp/campaign-torn; \
                     head -c 2048 /dev/zero >> /tmp/campaign-torn; \
                     dd if=/tmp/campaign-torn of={raw} bs=4096 seek={block} count=1 oflag=direct conv=notrunc status=none"
                )
            } else {
                format!(
                    "dd if=/dev/urandom of={raw} bs=4096 seek={block} count=1 oflag=direct conv=notrunc status=none"
                )
            };
            ends_before_heal = Some((
                0,
                g.spawn(&format!(
                    "timeout {} sh -c 'while :; do {write}; sleep 0.2; done'; true",
                    secs(ms)
                ))?,
            ));
            heal = Heal::Corrupt {
                raw,
                header: block == 0,
            };
        }
        Fault::RtHogs {
            node,
            priority,
            secs,
        } => {
            // One busy loop per vCPU, each SCHED_FIFO from its first instruction (chrt execs
            // it so), timed from the first one's mark on the console: starting a program
            // under TCG takes a second or more, and the bound starts when the CPUs are taken.
            let g = &c.nodes[node];
            let mark = "campaign: real-time hog running";
            let before = g.console().matches(mark).count();
            pending.push(g.spawn(&format!(
                "for i in $(seq $(nproc)); do \
                   timeout {secs} chrt -f {priority} sh -c 'echo \"{mark}\" > /dev/kmsg; while :; do :; done' & \
                 done; wait"
            ))?);
            injected = console_mark(g, mark, before);
        }
        Fault::ForkBomb { node, secs } => {
            // As `nobody`, in a cgroup of its own (pids.max bounds it; cgroup.kill ends it at
            // once, however fast it forks), timed from its first process's console mark.
            let g = &c.nodes[node];
            let mark = "campaign: fork bomb running";
            let before = g.console().matches(mark).count();
            let cg = "/sys/fs/cgroup/campaign-fork-bomb";
            pending.push(g.spawn(&format!(
                "mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
                 echo +pids > /sys/fs/cgroup/cgroup.subtree_control\n\
                 mkdir -p {cg} && echo {max} > {cg}/pids.max\n\
                 sh -c 'echo $$ > {cg}/cgroup.procs; echo \"{mark}\" > /dev/kmsg; \
                   exec setpriv --reuid=nobody --regid=nogroup --clear-groups \
                   sh -c \"b() {{ b | b & }}; b\"' 2>/dev/null\n\
                 sleep {secs}\n\
                 echo \"campaign: fork bomb ending: $(cat {cg}/pids.current) processes, \
                   forks refused at pids.max: $(cut -d' ' -f2 {cg}/pids.events)\" > /dev/kmsg\n\
                 echo 1 > {cg}/cgroup.kill\n\
                 while [ -s {cg}/cgroup.procs ]; do sleep 0.1; done; rmdir {cg}",
                max = campaign::FORK_BOMB_PIDS,
            ))?);
            injected = console_mark(g, mark, before);
        }
        Fault::Partition { node } => {
            c.nodes[node].set_lan_link(false)?;
            heal = Heal::Lan { node };
        }
        Fault::PartialPartition { a, b } => {
            for (me, other) in [(a, b), (b, a)] {
                sh(
                    &c.nodes[me],
                    &format!("ip route add blackhole {}/32", lan_address(other)),
                )?;
            }
            heal = Heal::Blackhole { a, b };
        }
    }
    // Pacemaker's fences in a partition round: the count of each possible victim's fences
    // done before, on the watching node.
    let watch = pacemaker_watch(&round.fault);
    let mut fences_before = Vec::new();
    if let Some((victims, watcher)) = &watch {
        for &v in victims {
            let h = pacemaker::fence_history(&c.nodes[*watcher], &node_name(v))?;
            fences_before.push(pacemaker::fences_done(&h));
        }
    }
    let mut next_history = Instant::now();
    // A fence's own time counts towards the bound of its victim's reset (see
    // `Fault::reset_bound`); a partition's fence is only known during the watch below.
    let with_fence = |at: Option<Instant>| bound + at.map_or(Duration::ZERO, |at| at - injected);
    let heal_at = injected + round.fault.duration();
    let settle = ms(t.lease + t.watchdog + t.poll) + Duration::from_secs(3);
    let end = heal_at + with_fence(fence_returned).max(settle);
    let mut healed = false;
    loop {
        for (i, g) in c.nodes.iter().enumerate() {
            if seen.resets.iter().any(|r| r.node == i) || g.is_running() {
                continue;
            }
            if let Some(at) = g.wait_exit(Duration::ZERO) {
                seen.resets.push(Reset {
                    node: i,
                    after: at.saturating_duration_since(injected),
                    cause: cause(c, g),
                });
            }
        }
        if let Some((victims, watcher)) = &watch {
            if Instant::now() >= next_history
                && c.nodes[*watcher].is_running()
                && seen.clusterware_fenced.len() < victims.len()
            {
                next_history = Instant::now() + Duration::from_secs(1);
                for (k, &v) in victims.iter().enumerate() {
                    if seen.clusterware_fenced.contains(&v) {
                        continue;
                    }
                    let h = pacemaker::fence_history(&c.nodes[*watcher], &node_name(v))?;
                    if pacemaker::fences_done(&h) > fences_before[k] {
                        // Recorded done: the victim's blocks are read now, and its reset is
                        // bounded from the first such record (it usually came before: it
                        // sees its dead mark while the agent confirms it).
                        fence_returned.get_or_insert_with(Instant::now);
                        seen.fences.push((*watcher, 0));
                        seen.clusterware_fenced.push(v);
                        snapshots.push((*watcher, v, read_tags(c, *watcher, v)?));
                    }
                }
            }
        }
        let now = Instant::now();
        if !healed && now >= heal_at {
            healed = true;
            if watch.is_some() {
                save_quorum(c, round.number);
            }
            if let Some((node, p)) = ends_before_heal.take() {
                if c.nodes[node].is_running() {
                    c.nodes[node].wait(p, Duration::from_secs(30))?;
                }
            }
            match std::mem::replace(&mut heal, Heal::Nothing) {
                Heal::Nothing => {}
                Heal::Target => c.target().resume()?,
                Heal::VotingDisk { node, disk } => {
                    if c.nodes[node].is_running() {
                        vote_table(c, node, disk, "linear", "0")?;
                    }
                }
                Heal::Clock { node, secs } => {
                    if c.nodes[node].is_running() {
                        sh(
                            &c.nodes[node],
                            &format!("date -s @$(( $(date +%s) - ({secs}) )) >/dev/null"),
                        )?;
                    }
                }
                Heal::Path { node, dev } => {
                    if c.nodes[node].is_running() {
                        faults::path_online(&c.nodes[node], &dev)?;
                    }
                }
                Heal::Lan { node } => {
                    if c.nodes[node].is_running() {
                        c.nodes[node].set_lan_link(true)?;
                    }
                }
                Heal::Blackhole { a, b } => {
                    for (me, other) in [(a, b), (b, a)] {
                        if c.nodes[me].is_running() {
                            sh(
                                &c.nodes[me],
                                &format!("ip route del blackhole {}/32", lan_address(other)),
                            )?;
                        }
                    }
                }
                Heal::Corrupt { raw, header } => {
                    if header && c.nodes[0].is_running() {
                        sh(
                            &c.nodes[0],
                            &format!(
                                "dd if={SAVED_HEADER} of={raw} bs=4096 count=1 oflag=direct conv=notrunc status=none"
                            ),
                        )?;
                    }
                }
            }
        }
        if healed && now >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(pending);
    let bound = with_fence(fence_returned);
    // No write of a fenced node after its fence returned: read its blocks again before it is
    // let back in.
    for (reader, victim, before) in snapshots {
        if !c.nodes[reader].is_running() {
            continue;
        }
        let after = read_tags(c, reader, victim)?;
        let new: Vec<&String> = after.iter().filter(|t| !before.contains(t)).collect();
        if !new.is_empty() {
            seen.written_after_fence.push((
                victim,
                format!(
                    "{} new tag(s), e.g. {}",
                    new.len(),
                    new.iter()
                        .take(3)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" | ")
                ),
            ));
        }
    }
    Ok((seen, bound))
}

/// Each running node's view of the cluster at the end of a partition (`corosync-quorumtool
/// -s`), in `round-N-quorum.txt` of the run directory: the evidence of what corosync made of it.
fn save_quorum(c: &Cluster, round: usize) {
    let mut text = String::new();
    for (i, g) in c.nodes.iter().enumerate().filter(|(_, g)| g.is_running()) {
        let out = g
            .run("corosync-quorumtool -s 2>&1; crm_mon -1 2>&1 | head -20")
            .map_or_else(|e| e.to_string(), |o| o.stdout);
        text.push_str(&format!("== {}\n{out}\n", node_name(i)));
    }
    let _ = std::fs::write(c.lab.dir().join(format!("round-{round}-quorum.txt")), text);
}

/// When `mark` appeared on `g`'s console once more than the `before` times it had (waiting at
/// most 20 s, or until the guest is gone): the moment a fault took effect in the guest.
fn console_mark(g: &Guest, mark: &str, before: usize) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    while g.console().matches(mark).count() == before && g.is_running() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    Instant::now()
}

/// Reloads node `node`'s device-mapper device over voting disk `disk` (`voteN`) with the
/// table `target args` on its raw disk: `error`, `delay`, or `linear` to heal.
fn vote_table(c: &Cluster, node: usize, disk: usize, target: &str, args: &str) -> Result<()> {
    let name = format!("vote{disk}");
    let raw = c.nodes[node].disk_by_serial(&name)?;
    faults::dm_reload(&c.nodes[node], &name, &raw, target, args)
}

/// Why node `g` reset, from its daemon's log: the reason of its last "fencing this node"
/// line; else the hardware watchdog, with the reason the daemon last gave for not feeding it
/// when its last verdict was "unhealthy" (none: the daemon stopped, hung or was starved).
fn cause(c: &Cluster, g: &Guest) -> String {
    let log = c.daemon_log(g);
    // `... fencing this node reason=<text> action=Reboot`, `... unhealthy: not feeding the
    // watchdog node=<n> reason=<text>` (tracing's plain format).
    let reason = |l: &str| {
        let r = l.split("reason=").nth(1).unwrap_or(l);
        r.split(" action=")
            .next()
            .unwrap_or(r)
            .trim()
            .trim_matches('"')
            .to_string()
    };
    if let Some(l) = log.lines().rev().find(|l| l.contains("fencing this node")) {
        return format!("self-fence: {}", reason(l));
    }
    // Under systemd the daemon logs to the journal, gone with the guest; its kernel-log line
    // `fenced: fencing this node (<action>): <reason>` is on the console.
    if let Some(l) = g
        .console()
        .lines()
        .rev()
        .find(|l| l.contains("fenced: fencing this node"))
    {
        let r = l.split("): ").nth(1).unwrap_or(l).trim();
        return format!("self-fence: {r}");
    }
    match log
        .lines()
        .rev()
        .find(|l| l.contains("unhealthy: not feeding") || l.contains("healthy: feeding"))
    {
        Some(l) if l.contains("unhealthy: not feeding") => {
            format!("hardware watchdog, the daemon unhealthy: {}", reason(l))
        }
        _ => "hardware watchdog".into(),
    }
}

/// Brings the cluster back to every node healthy: stopped daemons resumed; a node that reset
/// (or must be reset: its daemon hung or gone) booted again, its fenced and writer started, and
/// let back in with `fenced clear` from a live node when marked dead (with `pacemaker`: the
/// start commands, then Pacemaker's unfencing lets it back in, and every node must be online
/// again); then every daemon healthy and every node's key on every LUN. What does not come
/// back is a `recovery` finding.
fn recover(
    c: &mut Cluster,
    writers: &mut [Option<Pending>],
    seen: &mut Observed,
    pacemaker: bool,
) -> Result<()> {
    for g in c.nodes.iter().filter(|g| g.is_running()) {
        let _ = g.run("pkill -CONT -x fenced");
    }
    // A running node whose daemon is gone or not healthy cannot be trusted with the next
    // round: reset it (the finding, if any, is the audit's).
    for i in 0..NODES {
        if c.nodes[i].is_running()
            && c.wait_daemons_healthy(&[i], Duration::from_secs(20))
                .is_err()
        {
            seen.not_recovered.push(format!(
                "{}: its daemon was not healthy 20 s after the heal (reset by the campaign to go on)",
                node_name(i)
            ));
            let _ = c.nodes[i].spawn("echo b > /proc/sysrq-trigger");
            c.nodes[i].wait_exit(Duration::from_secs(20));
        }
    }
    let down: Vec<usize> = (0..NODES).filter(|&i| !c.nodes[i].is_running()).collect();
    for &i in &down {
        writers[i] = None;
        c.reboot(i)?;
        if pacemaker {
            pacemaker::install_node(c, i)?;
        } else {
            c.start_daemon(i)?;
        }
    }
    let live = (0..NODES).find(|i| !down.contains(i));
    if pacemaker && !down.is_empty() {
        for (&i, out) in down.iter().zip(pacemaker::start(c, &down)?) {
            if !out.success() {
                seen.not_recovered.push(format!(
                    "{}: the start commands exited {}: {}",
                    node_name(i),
                    out.code,
                    out.stderr.trim()
                ));
            }
        }
        if let Err(e) = wait_all_online(c, live.unwrap_or(0)) {
            seen.not_recovered.push(format!(
                "not every node online in Pacemaker 180 s after the rejoin: {}",
                short(&e)
            ));
        }
    }
    for &i in down.iter().filter(|_| !pacemaker) {
        let Some(l) = live else { break };
        // The rebooted daemon first writes its reboot evidence; `clear` refuses before that.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = c.fenced(l, &format!("clear {}", node_name(i)))?;
            if out.success() {
                break;
            }
            if Instant::now() > deadline {
                seen.not_recovered.push(format!(
                    "{}: `fenced clear` on {} still refused after 60 s: {}",
                    node_name(i),
                    node_name(l),
                    out.stderr.trim()
                ));
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let all: Vec<usize> = (0..NODES).collect();
    if let Err(e) = c.wait_daemons_healthy(&all, Duration::from_secs(90)) {
        seen.not_recovered.push(format!(
            "daemons not healthy 90 s after the heal: {}",
            short(&e)
        ));
    }
    // Every node's key on every LUN. A node booted again may be listed twice: its new QEMU
    // process logs in with a new ISID (a new I_T nexus) and the old boot's registration stays
    // beside it, with the same key (a preempt of the key removes both).
    if let Err(e) = c.wait_until(Duration::from_secs(60), |st| {
        st["luns"].as_array().is_some_and(|l| {
            l.len() == LUNS
                && l.iter().all(|l| {
                    (0..NODES).all(|i| {
                        l["keys"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k["node"] == node_name(i).as_str()))
                    })
                })
        })
    }) {
        seen.not_recovered.push(format!(
            "not every node's key on every LUN 60 s after the heal: {}",
            short(&e)
        ));
    }
    for &i in &down {
        writers[i] = Some(start_writer(c, i)?);
    }
    Ok(())
}

/// The first 300 characters of an error (a status document can be long); the round's
/// directory under target/vm-runs has the rest.
fn short(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}
