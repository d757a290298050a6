//! Benchmark (ignored by default; not part of the suite): `sg-pr` against the peers fencing
//! agents use today, in one run, on one LIO iSCSI target with 64 small LUNs and two node guests.
//!
//! - READ KEYS latency: `sg-pr keys DEV` vs `sg_persist -n -i -k DEV`, whole process, interleaved.
//! - Fencing one key on 1, 16 and 64 LUNs (PREEMPT AND ABORT; LIO performs it): one
//!   `sg-pr preempt --abort ... DEV...` process (parallel, then READ KEYS per LUN) vs a loop of
//!   `sg_persist --preempt-abort` per LUN, bare and as fence_scsi does it (`sg_turs`, PREEMPT AND
//!   ABORT, READ KEYS per LUN).
//!
//! Before every timed fence node1 re-registers the victim key on the LUNs (untimed). Times are
//! taken inside node2 with bash's `$EPOCHREALTIME` around the command; medians are reported.
//!
//! Run (prints a Markdown table; BENCHMARKS.md holds one run):
//! `cargo build --workspace --bins && cargo test -p tests --release --test sg_pr_bench -- --ignored --nocapture`
//! (`--release` builds the harness and the measured `sg-pr` optimised; the harness finds the
//! binary of its own profile.)

use kmod_testing::iscsi::{Target, TargetKind};
use kmod_testing::{Guest, Lab};
use std::time::Duration;

const LUNS: usize = 64;
const VICTIM: u64 = 0xa1;
const SURVIVOR: u64 = 0xb2;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `cmd` in `g` under bash and returns its wall time in ms, measured in the guest; panics
/// when it fails.
fn timed(g: &Guest, cmd: &str) -> f64 {
    let script = format!(
        "exec bash -c 's=$EPOCHREALTIME; {{ {cmd} ; }} >/tmp/bench.out 2>&1; rc=$?; e=$EPOCHREALTIME; echo \"$rc $s $e\"'"
    );
    let out = g
        .run_with_timeout(&script, Duration::from_secs(600))
        .unwrap();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{}: {}", out.stdout, out.stderr);
    if words[0] != "0" {
        let log = g.run_ok("cat /tmp/bench.out").unwrap_or_default();
        panic!("`{cmd}` failed (exit {}):\n{log}", words[0]);
    }
    let s: f64 = words[1].parse().unwrap();
    let e: f64 = words[2].parse().unwrap();
    (e - s) * 1000.0
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored"]
fn sg_pr_vs_sg_persist_read_keys_and_fencing_64_luns() {
    let sgpr = kmod_testing::project_binary("sg-pr").display().to_string();
    let lab = Lab::new("sgpr-bench").unwrap();
    let target = Target::start(&lab, TargetKind::Lio, LUNS, 4).unwrap();
    let nodes = lab
        .boot_all(vec![target.node_spec("node1"), target.node_spec("node2")])
        .unwrap();
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let d1 = n1.scsi_disks(LUNS).unwrap();
    let d2 = n2.scsi_disks(LUNS).unwrap();
    // Absorb the login unit attentions and register both keys everywhere.
    n1.run_ok(&format!(
        "{sgpr} register --ignore-existing --key {VICTIM:x} --threads 64 {}",
        d1.join(" ")
    ))
    .unwrap();
    n2.run_ok(&format!(
        "{sgpr} register --ignore-existing --key {SURVIVOR:x} --threads 64 {}",
        d2.join(" ")
    ))
    .unwrap();
    n2.run_ok(&format!(
        "{sgpr} reserve --key {SURVIVOR:x} --type wero {}",
        d2[0]
    ))
    .unwrap();
    let version = n2
        .run_ok("sg_persist -V 2>&1 | head -n1; uname -r; nproc")
        .unwrap();

    // READ KEYS, interleaved.
    let runs = 30;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(timed(n2, &format!("{sgpr} keys {}", d2[0])));
        theirs.push(timed(n2, &format!("sg_persist -n -i -k {}", d2[0])));
    }
    let keys_row = (median(ours), median(theirs));

    // Fencing.
    let mut rows = Vec::new();
    for (n, reps) in [(1usize, 11usize), (16, 7), (64, 5)] {
        let victims = d1[..n].join(" ");
        let devs = d2[..n].join(" ");
        let variants = [
            (
                "sg-pr preempt --abort (1 process, default --threads 8)".to_string(),
                format!("{sgpr} preempt --abort --key {SURVIVOR:x} --victim {VICTIM:x} --type wero {devs}"),
            ),
            (
                format!("sg-pr preempt --abort --threads {n}"),
                format!("{sgpr} preempt --abort --threads {n} --key {SURVIVOR:x} --victim {VICTIM:x} --type wero {devs}"),
            ),
            (
                "loop: sg_persist --preempt-abort per LUN".to_string(),
                format!("for d in {devs}; do sg_persist -n --out --preempt-abort --param-rk=0x{SURVIVOR:x} --param-sark=0x{VICTIM:x} --prout-type=5 $d || exit 1; done"),
            ),
            (
                "loop as fence_scsi: sg_turs + sg_persist PA + READ KEYS per LUN".to_string(),
                format!("for d in {devs}; do sg_turs $d >/dev/null 2>&1; sg_persist -n --out --preempt-abort --param-rk=0x{SURVIVOR:x} --param-sark=0x{VICTIM:x} --prout-type=5 $d || exit 1; sg_persist -n -i -k $d >/dev/null || exit 1; done"),
            ),
        ];
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for _ in 0..reps {
            for (i, (_, cmd)) in variants.iter().enumerate() {
                n1.run_ok(&format!(
                    "{sgpr} register --ignore-existing --key {VICTIM:x} --threads 64 {victims}"
                ))
                .unwrap();
                times[i].push(timed(n2, cmd));
                // The fence really happened.
                let left = n2.run_ok(&format!("{sgpr} keys {}", d2[n - 1])).unwrap();
                assert!(
                    !left.contains("0xa1"),
                    "victim key survived `{cmd}`: {left}"
                );
            }
        }
        for (i, (name, _)) in variants.iter().enumerate() {
            rows.push((n, name.clone(), median(times[i].clone()), reps));
        }
    }

    println!("\nsetup: LIO iSCSI target in a storage guest, {LUNS} fileio LUNs of 4 MiB; two node guests (TCG, 2 vCPUs each) attach every LUN through QEMU's iSCSI initiator (scsi-block); times measured in node2 with bash $EPOCHREALTIME around the whole command; medians.");
    println!("node2: {}", version.replace('\n', "; "));
    println!("\n| READ KEYS, 1 LUN ({runs} runs, interleaved) | median ms |");
    println!("|---|---:|");
    println!("| `sg-pr keys` | {:.1} |", keys_row.0);
    println!("| `sg_persist -n -i -k` | {:.1} |", keys_row.1);
    println!("\n| fence one key (PREEMPT AND ABORT) | LUNs | runs | median ms |");
    println!("|---|---:|---:|---:|");
    for (n, name, ms, reps) in &rows {
        println!("| {name} | {n} | {reps} | {ms:.0} |");
    }
    let at = |n: usize, prefix: &str| {
        rows.iter()
            .find(|r| r.0 == n && r.1.starts_with(prefix))
            .map(|r| r.2)
            .unwrap_or(f64::NAN)
    };
    let ours64 = at(64, "sg-pr preempt --abort (1");
    let ours64t = at(64, "sg-pr preempt --abort --threads");
    let ours1 = at(1, "sg-pr preempt --abort (1");
    let loop64 = at(64, "loop: ");
    let fs64 = at(64, "loop as fence_scsi");
    println!(
        "\n64 LUNs: bare sg_persist loop / sg-pr (default threads) = {:.1}x, fence_scsi-style loop / sg-pr = {:.1}x; with --threads 64: {:.1}x and {:.1}x",
        loop64 / ours64,
        fs64 / ours64,
        loop64 / ours64t,
        fs64 / ours64t
    );
    println!(
        "sg-pr 64 LUNs / 1 LUN = {:.1}x (default threads), {:.1}x (--threads 64)",
        ours64 / ours1,
        ours64t / ours1
    );
}
