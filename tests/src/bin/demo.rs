//! The README's demo: the scenarios the test suite proves, narrated for a person.
//!
//! 1. A 3-node cluster (guests under QEMU) on a shared iSCSI LUN served by Linux's LIO target,
//!    with three shared voting disks and a hardware watchdog in each node, `fenced` running on
//!    every node. The clusterware evicts node2 the way Pacemaker does: it runs the fence agent
//!    (`fence_fenced`, action=off on stdin). We show the keys before and after, node2's write
//!    refused by the target, node2 resetting itself, and the survivors writing on.
//! 2. Why the watchdog must be hardware: a whole-kernel freeze (stop_machine) with an i6300esb
//!    armed resets the node; the same freeze with softdog does not.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use kmod_testing::iscsi::TargetKind;
use kmod_testing::project_binary;
use tests::blocks;
use tests::cluster::{Cluster, ClusterSpec};
use tests::scenarios::{self, WatchdogKind};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!(
                "\nThe demo saw something it should not have: see the lines marked UNEXPECTED."
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(ok: bool, what: &str) -> bool {
    println!("  {} {what}", if ok { "OK        " } else { "UNEXPECTED" });
    ok
}

fn keys(c: &Cluster, from: usize) -> kmod_testing::Result<String> {
    let st = c.status(from)?;
    let lun = &st["luns"][0];
    let keys: Vec<String> = lun["keys"]
        .as_array()
        .map(|k| {
            k.iter()
                .map(|k| {
                    format!(
                        "{} ({})",
                        k["key"].as_str().unwrap_or("?"),
                        k["node"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(format!(
        "keys on {}: {}; reservation held by {}",
        lun["lun"].as_str().unwrap_or("?"),
        keys.join(", "),
        lun["reservation"]["holder_node"]
            .as_str()
            .unwrap_or("nobody")
    ))
}

fn run() -> kmod_testing::Result<bool> {
    let mut say = |s: &str| println!("  | {s}");
    let mut all = true;

    println!("\n== 1. A 3-node cluster evicts node2 ==\n");
    let c = Cluster::start(&mut say, &ClusterSpec::new("demo-cluster", TargetKind::Lio))?;
    say(&keys(&c, 0)?);
    let lun = |i: usize| c.lun_devices[i][0].clone();
    all &= check(
        blocks::write(&c.nodes[1], &lun(1), 70, b'2')?.success(),
        "node2 writes to the shared LUN",
    );

    say("clusterware on node1 runs the fence agent: `fence_fenced` with action=off, plug=node2 on stdin");
    c.nodes[0].run_ok(&format!(
        "ln -sf {} /tmp/fence_fenced",
        project_binary("fenced").display()
    ))?;
    let t = Instant::now();
    let off = c.nodes[0].run("printf 'action=off\\nplug=node2\\n' | /tmp/fence_fenced")?;
    let took = t.elapsed();
    for line in off.stdout.lines().chain(off.stderr.lines()) {
        say(&format!("  {line}"));
    }
    all &= check(
        off.code == 0,
        &format!(
            "the fence agent reported success ({:.2} s, whole command in the guest)",
            took.as_secs_f64()
        ),
    );
    let fenced_at = Instant::now();
    match blocks::write(&c.nodes[1], &lun(1), 71, b'X') {
        Ok(w) => {
            all &= check(
                w.code != 0,
                &format!(
                    "node2's next write is refused by the target: {}",
                    w.stderr.trim()
                ),
            )
        }
        Err(_) => all &= check(true, "node2 is already resetting; it cannot write"),
    }
    all &= check(
        blocks::distinct_bytes(&c.nodes[0], &lun(0), 71)? == vec![0],
        "nothing node2 wrote after the fence is on the LUN",
    );
    let tm = c.timing;
    let reset = c.nodes[1].wait_exit(
        Duration::from_millis(u64::from(tm.lease + tm.watchdog + tm.poll)) + Duration::from_secs(3),
    );
    all &= check(
        reset.is_some(),
        &match reset {
            Some(r) => format!(
                "node2 reset itself {:.2} s after the fence (bound: lease + watchdog = {} ms)",
                r.saturating_duration_since(fenced_at).as_secs_f64(),
                tm.lease + tm.watchdog
            ),
            None => "node2 did not reset".into(),
        },
    );
    say(&keys(&c, 0)?);
    for i in [0, 2] {
        all &= check(
            blocks::write(&c.nodes[i], &lun(i), 80 + i as u64, b'S')?.success(),
            &format!("node{} writes on", i + 1),
        );
    }
    drop(c);

    println!("\n== 2. A frozen kernel and its watchdog ==\n");
    let wdprobe = project_binary("wdprobe");
    println!("  -- hardware watchdog (i6300esb, a timer outside the guest's kernel) --");
    let hw = scenarios::watchdog_under_freeze(&mut say, WatchdogKind::I6300esb, &wdprobe, 8, 30)?;
    all &= check(
        hw.reset_after.is_some_and(|d| d.as_secs() < 14),
        &format!(
            "the hardware watchdog armed at {} s reset the frozen node after {}",
            hw.timeout_secs,
            hw.reset_after
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-- never".into())
        ),
    );
    println!("\n  -- softdog (a timer inside the frozen kernel) --");
    let soft = scenarios::watchdog_under_freeze(&mut say, WatchdogKind::Softdog, &wdprobe, 8, 30)?;
    all &= check(
        soft.reset_after.is_none_or(|d| d.as_secs() >= 29),
        "softdog armed at 8 s did not fire while the kernel was frozen: it cannot bound a hung node",
    );
    println!(
        "\nThat is why fenced cuts storage off at the target itself and requires a hardware watchdog\n\
         by default (softdog only by explicit policy)."
    );
    Ok(all)
}
