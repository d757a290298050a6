//! dm-multipath maps under multipathd as fenced's LUNs, on the harness kernel: unfence, I/O, a
//! path failure and a fence, all through the map.
//!
//! A 2-node cluster on one LIO LUN reached through two target ports (two paths, two I_T nexuses
//! per node). In both node guests udevd and the real multipathd (Debian's multipath-tools) run
//! ([`tests::multipath`]) and build the map `/dev/mapper/mpatha` over the two paths; each node's
//! fenced.toml names only the map (`storage.luns = ["/dev/mapper/mpatha"]`), which fenced
//! replaces by the map's slaves and reaches over SG_IO. node1 sets `reservation_key` to its
//! fenced key in multipath.conf; node2 does not.

use std::time::{Duration, Instant};

use kmod_testing::iscsi::TargetKind;
use kmod_testing::{faults, Guest, KernelLine};
use serde_json::Value;
use tests::cluster::{node_key, node_name, Cluster, ClusterSpec};
use tests::multipath::{self, MAP};
use tests::{blocks, sg_persist};

fn say(s: &str) {
    println!("    {s}");
}

/// Polls `check` every 200 ms until it holds or `timeout` passes; returns how long it took.
fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !check() {
        assert!(t.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    t.elapsed()
}

/// The daemon's view of the (only) LUN on node `i` (`fenced status` → `daemon.luns[0]`).
fn daemon_lun(c: &Cluster, i: usize) -> Value {
    c.status(i)
        .map(|s| s["daemon"]["luns"][0].clone())
        .unwrap_or(Value::Null)
}

/// Path `dev` in a LUN's daemon view: `(state, registered)`.
fn path_view(lun: &Value, dev: &str) -> Option<(String, bool)> {
    lun["paths"].as_array().and_then(|p| {
        p.iter().find(|p| p["path"] == dev).map(|p| {
            (
                p["state"].as_str().unwrap_or("?").to_string(),
                p["registered"] == true,
            )
        })
    })
}

/// How many registrations (I_T nexuses) hold each of `keys`, read with sg_persist (not with
/// fenced) through `dev` on `g`.
fn registrations(g: &Guest, dev: &str, keys: &[u64]) -> Vec<usize> {
    let st = sg_persist::read_full_status(g, dev).unwrap_or_default();
    keys.iter()
        .map(|k| st.iter().filter(|r| r.key == *k).count())
        .collect()
}

/// The map's dm uuid and its slaves in sysfs (sorted), on `g`.
fn map_slaves(g: &Guest) -> (String, Vec<String>) {
    let out = g
        .run_ok(&format!(
            "dm=$(basename $(readlink -f /dev/mapper/{MAP})); cat /sys/block/$dm/dm/uuid; ls /sys/block/$dm/slaves"
        ))
        .unwrap();
    let mut lines = out.lines();
    let uuid = lines.next().unwrap_or_default().to_string();
    let mut slaves: Vec<String> = lines.map(|s| format!("/dev/{s}")).collect();
    slaves.sort();
    (uuid, slaves)
}

/// Faults injected, in order, on one cluster:
/// 1. none: fenced starts with only the map configured. Must: it takes the map for its two
///    slaves; each node's key is registered through both of its nexuses (READ FULL STATUS) and
///    fenced confirms the LUN through both; `fenced doctor` PASSes the multipath check on node1
///    and WARNs on node2 (no `reservation_key`).
/// 2. none: O_DIRECT writes through the map on both nodes. Must: all succeed, down both paths.
/// 3. node1's path 2 offline (SCSI device state) for L + W + P; while it is down an
///    administrator's PR OUT CLEAR (from node1's path 1) drops every registration, so the path
///    returns as a nexus without node1's key; then the path comes back. Must: multipathd fails
///    the path, then reinstates it; fenced shows it down, then up and registered; node1's
///    writes through the map succeed while the path is down and right after multipathd
///    reinstated it, the returning path serving some of them (multipathd registered its
///    `reservation_key` on the path before reinstating it). Must not: a write fail (RESERVATION
///    CONFLICT), a node reset.
/// 4. node1 fences node2 (`fenced fence node2`). Must: node2's key on no nexus; node2 resets;
///    node1 keeps running, its LUN confirmed, and writes through its map.
///
/// multipathd's PR flag for node1's map is set by fenced (`multipathd setprstatus` after it
/// registered the paths, see [`tests::multipath`]); without it multipathd does not register a
/// reinstated path, and step 3's writes down the returning path meet RESERVATION CONFLICT (seen
/// by hand: dd fails with EBADE, "critical nexus error" in dmesg) until fenced registers it.
#[test]
fn multipath_maps_under_multipathd_unfence_fence_and_ride_out_a_path_failure() {
    multipath_maps_under_multipathd_unfence_fence_and_ride_out_a_path_failure_with(
        KernelLine::Stable,
    );
}

/// The same on the newest kernel (the kernel matrix: dm-multipath).
#[test]
fn multipath_maps_under_multipathd_unfence_fence_and_ride_out_a_path_failure_on_the_newest_kernel()
{
    multipath_maps_under_multipathd_unfence_fence_and_ride_out_a_path_failure_with(
        KernelLine::Newest,
    );
}

fn multipath_maps_under_multipathd_unfence_fence_and_ride_out_a_path_failure_with(
    line: KernelLine,
) {
    let started = Instant::now();
    let mut spec = ClusterSpec::new(&format!("multipath-{}", line.name()), TargetKind::Lio);
    spec.nodes = 2;
    spec.kernel = line;
    spec.paths = 2;
    spec.node_setup = Some(multipath::node_setup(2, &[1]));
    spec.configured_luns = Some(vec![multipath::map_device()]);
    let c = Cluster::start(&mut say, &spec).expect("cluster up");
    let t = c.timing;
    let keys: Vec<u64> = (0..2).map(node_key).collect();
    // [node][path] of the one LUN.
    let slaves: Vec<Vec<String>> = c.lun_paths().into_iter().map(|l| l[0].clone()).collect();
    let (g1, g2) = (&c.nodes[0], &c.nodes[1]);

    // 1. Unfence through the map: the map is multipathd's (dm uuid mpath-<wwid>) over exactly
    //    the node's two paths; fenced took the map for those slaves and registered both.
    let mut luns = Vec::new();
    wait_for(
        "both nodes confirm the LUN through both slaves",
        Duration::from_secs(30),
        || {
            luns = (0..2).map(|n| daemon_lun(&c, n)).collect();
            luns.iter().all(|l| l["state"] == "confirmed")
        },
    );
    for ((g, lun), paths) in c.nodes.iter().zip(&luns).zip(&slaves) {
        let mut want = paths.clone();
        want.sort();
        let (uuid, got) = map_slaves(g);
        assert!(uuid.starts_with("mpath-"), "{}: dm uuid {uuid}", g.name());
        assert_eq!(
            got,
            want,
            "{}: the map's slaves are the LUN's paths",
            g.name()
        );
        let mut seen: Vec<String> = lun["paths"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|p| p["path"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        seen.sort();
        assert_eq!(
            seen,
            want,
            "{}: fenced's paths are the map's slaves",
            g.name()
        );
        for dev in &want {
            assert_eq!(
                path_view(lun, dev),
                Some(("up".to_string(), true)),
                "{}: {lun}",
                g.name()
            );
        }
    }
    let st = sg_persist::read_full_status(g1, &slaves[0][0]).unwrap();
    for (n, key) in keys.iter().enumerate() {
        let mut ports: Vec<u16> = st
            .iter()
            .filter(|r| r.key == *key)
            .inspect(|r| {
                assert!(
                    r.transport_id.contains(&format!(":{},", node_name(n))),
                    "{r:?}"
                )
            })
            .map(|r| r.relative_port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(
            ports.len(),
            2,
            "{}'s key 0x{key:x} is registered through both target ports: {st:#?}",
            node_name(n)
        );
    }
    say("both nodes' keys registered through both paths of their maps (READ FULL STATUS)");
    let multipath_check = |i: usize| {
        let out = c.fenced(i, "doctor").unwrap().stdout;
        out.lines()
            .find(|l| l.contains(&format!("multipath {}", multipath::map_device())))
            .map_or_else(|| format!("no multipath check in:\n{out}"), String::from)
    };
    let (d1, d2) = (multipath_check(0), multipath_check(1));
    println!("node1 doctor: {d1}\nnode2 doctor: {d2}");
    assert!(d1.starts_with("PASS "), "node1: {d1}");
    assert!(d2.starts_with("WARN "), "node2: {d2}");
    // multipathd registers a reinstated path only while its PR flag for the map is set: at
    // (re)configure time when it finds its key registered, after mpathpersist registered through
    // the map, or with `setprstatus`. multipathd built the map before fenced registered over
    // SG_IO, so fenced tells it (setprstatus) once the paths are registered.
    assert!(
        multipath::prflag(g1).unwrap(),
        "fenced set multipathd's PR flag for node1's map"
    );
    say("multipathd's PR flag on node1 after fenced registered: set (by fenced)");

    // 2. I/O through the map on both nodes, down both paths.
    for ((g, paths), (block, byte)) in c.nodes.iter().zip(&slaves).zip([(0, b'A'), (10, b'B')]) {
        let w = multipath::write_blocks(g, paths, block, 4, byte).unwrap();
        assert!(w.failed.is_empty(), "{}: {w:?}", g.name());
        assert!(
            w.per_path.len() == 2 && w.per_path.iter().all(|&k| k > 0),
            "{}: writes down both paths: {w:?}",
            g.name()
        );
    }
    assert_eq!(
        blocks::distinct_bytes(g1, &multipath::map_device(), 13).unwrap(),
        [b'B'],
        "node2's write read back on node1"
    );
    say("O_DIRECT writes through the map succeed on both nodes, down both paths");

    // 3. node1's path 2 fails; the PR state is lost meanwhile; the path returns.
    let (p1, p2) = (slaves[0][0].clone(), slaves[0][1].clone());
    faults::path_offline(g1, &p2).unwrap();
    let down_at = Instant::now();
    let mp_failed = multipath::wait_path(g1, &p2, "failed", Duration::from_secs(30))
        .expect("multipathd fails the offline path");
    let mut lun = Value::Null;
    let fenced_down = wait_for(
        "fenced shows the path down",
        Duration::from_secs(30),
        || {
            lun = daemon_lun(&c, 0);
            path_view(&lun, &p2).is_some_and(|(s, _)| s == "down")
        },
    );
    assert_eq!(lun["state"], "degraded", "{lun}");
    say(&format!(
        "MEASURED: {p2} offline on node1: multipathd failed it after {:.2} s, fenced showed it down after {:.2} s",
        mp_failed.as_secs_f64(),
        fenced_down.as_secs_f64()
    ));
    let w = multipath::write_blocks(g1, &slaves[0], 100, 4, b'D').unwrap();
    assert!(w.failed.is_empty(), "writes with a path down: {w:?}");
    while down_at.elapsed() < t.reset_bound() {
        assert!(
            g1.is_running() && g2.is_running(),
            "a path failure reset a node"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let clear = g1
        .run(&format!(
            "sg_persist -n --out --clear --param-rk=0x{:x} {p1}",
            keys[0]
        ))
        .unwrap();
    assert!(clear.success(), "{clear:?}");
    let took = wait_for(
        "both nodes registered again through their reachable paths",
        Duration::from_secs(30),
        || {
            registrations(g1, &p1, &keys) == [1, 2]
                && sg_persist::read_reservation(g1, &p1)
                    .ok()
                    .flatten()
                    .is_some()
        },
    );
    say(&format!(
        "MEASURED: after a PR OUT CLEAR both nodes registered again in {:.2} s; node1's key through one nexus only ({p2} is down)",
        took.as_secs_f64()
    ));
    faults::path_online(g1, &p2).unwrap();
    let mp_back = multipath::wait_path(g1, &p2, "active", Duration::from_secs(30))
        .expect("multipathd reinstates the path");
    let w = multipath::write_blocks(g1, &slaves[0], 200, 4, b'E').unwrap();
    let fenced_view = path_view(&daemon_lun(&c, 0), &p2);
    say(&format!(
        "MEASURED: {p2} back: multipathd reinstated it after {:.2} s; of 4 writes right after, {} went down {p2}; fenced's view of {p2} after them: {fenced_view:?}",
        mp_back.as_secs_f64(),
        w.per_path.get(1).copied().unwrap_or(0)
    ));
    assert!(
        w.failed.is_empty(),
        "writes through the map right after the path returned: {w:?}\n{}",
        g1.run("dmesg | tail -n 20")
            .map(|o| o.stdout)
            .unwrap_or_default()
    );
    assert!(
        w.per_path.get(1).is_some_and(|&k| k > 0),
        "no write went down the returning path: {w:?}"
    );
    let name = p2.trim_start_matches("/dev/");
    assert!(
        !multipath::log_lines(g1, &format!("{name}: checking persistent reservation"))
            .unwrap()
            .is_empty(),
        "multipathd checked (and registered) its key on the path it reinstated"
    );
    let fenced_up = wait_for(
        "fenced shows the path up and registered",
        Duration::from_secs(60),
        || {
            let lun = daemon_lun(&c, 0);
            path_view(&lun, &p2) == Some(("up".to_string(), true)) && lun["state"] == "confirmed"
        },
    );
    say(&format!(
        "MEASURED: fenced shows {p2} up and registered {:.2} s after multipathd reinstated it",
        (mp_back + fenced_up).as_secs_f64()
    ));
    assert_eq!(registrations(g1, &p1, &keys[..1]), [2]);
    assert!(
        g1.is_running() && g2.is_running(),
        "a path failure reset a node"
    );

    // 4. node1 fences node2 through its map's paths.
    let fence_started = Instant::now();
    let (out, took) = c.fence(0, 1).unwrap();
    assert_eq!(out.code, 0, "fence: {out:?}");
    say(&format!(
        "MEASURED: `fenced fence node2` on node1 returned 0 in {:.2} s",
        took.as_secs_f64()
    ));
    for dev in &slaves[0] {
        assert_eq!(
            registrations(g1, dev, &keys),
            [2, 0],
            "node2's key gone, node1's kept (read through {dev})"
        );
    }
    let reset = g2
        .wait_exit(t.reset_bound() + Duration::from_secs(10))
        .expect("node2 resets");
    say(&format!(
        "MEASURED: node2 reset {:.2} s after the fence started (the fence took {:.2} s)",
        reset.saturating_duration_since(fence_started).as_secs_f64(),
        took.as_secs_f64()
    ));
    std::thread::sleep(Duration::from_millis(u64::from(t.lease + t.poll)));
    assert!(g1.is_running(), "only the victim resets");
    let w = multipath::write_blocks(g1, &slaves[0], 300, 4, b'F').unwrap();
    assert!(w.failed.is_empty(), "node1 after the fence: {w:?}");
    assert_eq!(daemon_lun(&c, 0)["state"], "confirmed");
    say(&format!(
        "node1 keeps writing through its map, down both paths {:?}; MEASURED: test {:.1} s",
        w.per_path,
        started.elapsed().as_secs_f64()
    ));
}
