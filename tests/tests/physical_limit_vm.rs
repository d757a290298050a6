//! Fences at the physical limit (issue 14): every LUN's PR commands in flight at once, so a LUN
//! that does not answer delays no other. The 256-LUN fence with the fencer's loop on time is a
//! benchmark (minutes of boot under TCG): `fence_latency_256_luns` in fenced_bench.rs, run by
//! tests/bench/fenced.sh and recorded in BENCHMARKS.md.

use kmod_testing::iscsi::TargetKind;
use serde_json::Value;
use std::time::{Duration, Instant};
use tests::cluster::{Cluster, ClusterSpec};
use tests::kernel_time;

fn narrate() -> impl FnMut(&str) {
    |s: &str| println!("    {s}")
}

const MAIN_LUNS: usize = 16;

/// What node `i`'s daemon reports of its key check: (seconds since its last period, the oldest
/// confirmation among the main LUNs in seconds, the hung LUN's state, and `fenced status`'s
/// health).
fn key_check(c: &Cluster, i: usize, hung: &str) -> (f64, f64, String, String) {
    let st = c.daemon_status(i).expect("fenced status");
    let d = &st["daemon"];
    let luns = d["luns"].as_array().expect("the daemon's LUNs");
    assert_eq!(luns.len(), MAIN_LUNS + 1, "{d}");
    let mut oldest: f64 = 0.0;
    let mut hung_state = String::new();
    for l in luns {
        if l["lun"] == hung {
            hung_state = l["state"].as_str().unwrap_or("?").to_string();
            continue;
        }
        assert_eq!(l["state"], "confirmed", "{}: {l}", c.nodes[i].name());
        oldest = oldest.max(l["confirmed_ms_ago"].as_f64().expect("confirmed") / 1e3);
    }
    let checked = d["key_check_ms_ago"].as_f64().expect("key_check_ms_ago") / 1e3;
    let health = st["health"].as_str().unwrap_or("?").to_string();
    (checked, oldest, hung_state, health)
}

/// Fault: the separate LIO target serving the 17th LUN (16 on the main target) is paused: that
/// LUN hangs on every node (virtio-scsi never times a command out, so nothing but our own
/// deadlines ends them), on a virtio-scsi controller of its own. Then node1 fences node2.
/// Must:
/// - node1's and node3's key checks keep finishing periods and keep every main LUN confirmed
///   (a hung LUN costs a period at most its one command timeout, retried every 8th period), and
///   report the hung LUN `unreachable`;
/// - the fence confirms node2 cut off every main LUN within 3 s of its start (all commands in
///   flight at once), reports the hung LUN not confirmed once its own command deadline passes,
///   and fails closed (exit 4, "not confirmed on every LUN") — while `fenced status` on node1 is
///   answered during the fence;
/// - node2, marked dead, resets at once by sysrq with a command outstanding on the hung LUN
///   (reboot(2) first shuts the disks down and waited 17 s there);
/// - after the resume the LUN is confirmed again and a second fence completes (exit 0).
///
/// Must not: node1 or node3 reset, run late, or fence themselves.
#[test]
fn a_hung_lun_delays_neither_the_fence_nor_the_key_check_of_the_others() {
    let began = Instant::now();
    let mut spec = ClusterSpec::new("hung-lun", TargetKind::Lio);
    spec.luns = MAIN_LUNS;
    spec.extra_luns = 1;
    let c = Cluster::start(&mut narrate(), &spec).expect("cluster up");
    let t = c.timing;
    let st = c.daemon_status(0).unwrap();
    assert_eq!(st["health"], "ok", "{st}");
    let luns = st["daemon"]["luns"].as_array().unwrap().clone();
    assert_eq!(luns.len(), MAIN_LUNS + 1);
    // The extra LUN's NAA id sorts last (ClusterSpec::extra_luns).
    let hung = luns[MAIN_LUNS]["lun"].as_str().unwrap().to_string();
    let period = f64::from(t.lease - t.io_deadline) / 2e3;
    let command_timeout = f64::from(t.lease) / 1e3;

    c.extra_target.as_ref().unwrap().pause().unwrap();
    let paused = Instant::now();
    // Key check: long enough for the hung LUN to fail once and be retried.
    let (mut worst_checked, mut worst_confirmed) = (0.0f64, 0.0f64);
    let mut hung_states = Vec::new();
    let mut health = String::new();
    while paused.elapsed() < Duration::from_secs(15) {
        for i in [0, 2] {
            let (checked, oldest, state, h) = key_check(&c, i, &hung);
            worst_checked = worst_checked.max(checked);
            worst_confirmed = worst_confirmed.max(oldest);
            hung_states.push(state);
            health = h;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    println!(
        "MEASURED: 15 s into the pause, node1 and node3: the last key-check period ended at most {worst_checked:.2} s before a status, the oldest main-LUN confirmation was {worst_confirmed:.2} s old (period {period:.2} s, command timeout {command_timeout:.1} s); the hung LUN was {:?}",
        hung_states.last()
    );
    assert!(
        worst_checked < period + command_timeout + 1.0,
        "a hung LUN costs a period at most one command timeout: {worst_checked:.2} s"
    );
    assert!(
        worst_confirmed < period * 2.0 + command_timeout + 1.0,
        "main LUNs confirmed through the pause: oldest {worst_confirmed:.2} s"
    );
    assert_eq!(
        hung_states.last().map(String::as_str),
        Some("unreachable"),
        "{hung_states:?}"
    );
    assert_eq!(
        health, "degraded",
        "`fenced status` exits 5 with a LUN unreachable"
    );

    // The fence, with a status asked of node1's daemon while it runs.
    let fence_started = Instant::now();
    let fence = c.spawn_fenced(0, "fence --json node2").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    let during = c.daemon_status(0).unwrap();
    let answered = asked.elapsed();
    let out = c.nodes[0].wait(fence, Duration::from_secs(120)).unwrap();
    assert!(
        out.finished_at > asked + answered,
        "the status was answered while the fence ran (it ended {:?} after the ask)",
        out.finished_at.saturating_duration_since(asked)
    );
    assert_eq!(during["daemon"]["verdict"], "Healthy", "{during}");
    println!(
        "MEASURED: `fenced status` on node1 answered in {:.2} s during the fence",
        answered.as_secs_f64()
    );
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "fence --json ({e}): exit {}\n{}{}",
            out.code, out.stdout, out.stderr
        )
    });
    assert_eq!(out.code, 4, "fails closed: {v}");
    assert_eq!(v["ok"], false);
    let report = &v["report"];
    let per_lun = report["luns"].as_array().unwrap();
    assert_eq!(per_lun.len(), MAIN_LUNS + 1, "{report}");
    let mut slowest = 0u64;
    for l in per_lun {
        let ms = l["ms"].as_u64().unwrap();
        if l["lun"] == hung.as_str() {
            assert_eq!(l["confirmed"], false, "{l}");
            println!("MEASURED: the hung LUN in the fence: {}", l["outcome"]);
        } else {
            assert_eq!(l["confirmed"], true, "{l}");
            slowest = slowest.max(ms);
        }
    }
    let marker_ms = report["marker_ms"]
        .as_u64()
        .expect("the marker was written");
    println!(
        "MEASURED: fence with one hung LUN: arbiter {} ms, marker +{marker_ms} ms, slowest main LUN {slowest} ms after the phase began, command ended +{} ms (exit {})",
        per_lun[0]["ms"], report["reverified_ms"], out.code
    );
    assert!(
        marker_ms + slowest < 3000,
        "every main LUN confirmed within 3 s of the start: marker +{marker_ms} ms, then {slowest} ms"
    );

    // node2 reads itself dead and resets, a command still outstanding on the hung LUN.
    let reset = c.nodes[1]
        .wait_exit(t.reset_bound() + Duration::from_secs(5))
        .expect("node2 resets");
    let console = c.nodes[1].console();
    let decided = kernel_time(&console, "fenced: fencing this node").expect("node2's decision");
    let rebooted = kernel_time(&console, "sysrq: Resetting").expect("reset by sysrq");
    println!(
        "MEASURED: node2 decided to fence itself, then reset {:.3} s later (a READ KEYS outstanding on the hung LUN), {:.1} s after the fence command started",
        rebooted - decided,
        reset.saturating_duration_since(fence_started).as_secs_f64()
    );
    assert!(rebooted - decided < 1.0, "{decided} → {rebooted}");

    // Resume: the LUN returns, and a second fence completes there.
    c.extra_target.as_ref().unwrap().resume().unwrap();
    let resumed = Instant::now();
    let back = loop {
        let states: Vec<String> = [0, 2].iter().map(|&i| key_check(&c, i, &hung).2).collect();
        if states.iter().all(|s| s == "confirmed") {
            break resumed.elapsed();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(60),
            "the resumed LUN is confirmed again: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "MEASURED: the resumed LUN confirmed again on node1 and node3 {:.1} s after the resume",
        back.as_secs_f64()
    );
    let again = c.fenced(0, "fence --json node2").unwrap();
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);

    for i in [0, 2] {
        assert!(c.nodes[i].is_running(), "{} stays up", c.nodes[i].name());
        let log = c.daemon_log(&c.nodes[i]);
        assert!(
            !log.contains("fencing this node") && !log.contains("ran late"),
            "{}'s loop kept its deadline:\n{log}",
            c.nodes[i].name()
        );
    }
    c.wait_daemons_healthy(&[0, 2], Duration::from_secs(10))
        .unwrap();
    println!("MEASURED: scenario {:.1} s", began.elapsed().as_secs_f64());
}
