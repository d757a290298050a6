//! fenced on a 3-node guest cluster: node guests on shared iSCSI LUNs (LIO in a storage guest
//! unless a test says tgt), three shared voting disks, an i6300esb in each.

use kmod_testing::iscsi::TargetKind;
use std::time::Duration;
use tests::blocks;
use tests::cluster::{Cluster, ClusterSpec, Timing};

fn narrate() -> impl FnMut(&str) {
    |s: &str| println!("    {s}")
}

fn spec(name: &str, target: TargetKind) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        target,
        nodes: 3,
        luns: 1,
        timing: Timing::default(),
    }
}

/// Fault: clusterware on node1 evicts node2 (`fenced fence node2`).
/// Must: the command exits 0 with the victim confirmed gone; node2's writes fail at once (or it
/// is already resetting); node2 resets within lease + watchdog timeout; node1's and node3's writes
/// go on. Must not: node2's data reach the LUN.
#[test]
fn fence_cuts_the_victim_off_and_it_resets_while_others_write_on() {
    let c =
        Cluster::start(&mut narrate(), &spec("fence-lio", TargetKind::Lio)).expect("cluster up");
    let dev = |i: usize| c.lun_devices[i][0].clone();
    assert!(
        blocks::write(&c.nodes[1], &dev(1), 50, b'B')
            .unwrap()
            .success(),
        "node2 writes before"
    );
    let (out, took) = c.fence(0, 1).unwrap();
    println!(
        "fenced fence node2: exit {} in {:.2} s\n{}{}",
        out.code,
        took.as_secs_f64(),
        out.stdout,
        out.stderr
    );
    assert_eq!(out.code, 0, "fence must succeed: {}", out.stderr);
    let fenced_at = std::time::Instant::now();
    match blocks::write(&c.nodes[1], &dev(1), 51, b'X') {
        Ok(w) => assert_ne!(w.code, 0, "node2's write after the fence must fail"),
        Err(e) => println!("node2 already gone: {e}"),
    }
    assert_eq!(
        blocks::distinct_bytes(&c.nodes[0], &dev(0), 51).unwrap(),
        vec![0],
        "node2's data must not be on the LUN"
    );
    let t = c.timing;
    let bound =
        Duration::from_millis(u64::from(t.lease + t.watchdog + t.poll)) + Duration::from_secs(3);
    let reset = c.nodes[1]
        .wait_exit(bound)
        .expect("node2 must reset within lease + watchdog");
    println!(
        "MEASURED: node2 reset {:.2} s after the fence returned",
        reset.saturating_duration_since(fenced_at).as_secs_f64()
    );
    for i in [0, 2] {
        assert!(
            blocks::write(&c.nodes[i], &dev(i), 60 + i as u64, b'A')
                .unwrap()
                .success(),
            "node{} writes on",
            i + 1
        );
    }
    std::thread::sleep(Duration::from_millis(u64::from(t.lease + t.poll)));
    assert!(
        c.nodes[0].is_running() && c.nodes[2].is_running(),
        "survivors stay up"
    );
    let st = c.status(0).unwrap();
    println!("status after: {st}");
    assert_eq!(st["authority"]["dead"], serde_json::json!([1]));
}
