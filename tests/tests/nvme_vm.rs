//! NVMe over Fabrics reservations against a Linux nvmet subsystem (NVMe/TCP, reservations
//! enabled) in a storage guest on the newest kernel, every node its own host (host NQN and host
//! identifier): `sg-pr`'s every action from 7.2 and from 6.1 nodes, a fenced cluster on
//! namespaces and iSCSI LUNs (eviction through `fence_fenced`), the split-brain race on
//! namespaces alone, dm-multipath over two NVMe paths, and (ignored) the fence's benchmark beside
//! iSCSI.
//!
//! Run: `cargo build --workspace --bins && cargo test -p tests --test nvme_vm -- --nocapture`

use kmod_testing::iscsi::TargetKind;
use kmod_testing::nvmet::{HostIdentity, NvmeTarget};
use kmod_testing::{project_binary, Guest, KernelLine, Lab};
use std::time::{Duration, Instant};
use tests::blocks;
use tests::cluster::{Cluster, ClusterSpec};
use tests::sg_pr::SgPr;

const VICTIM: u64 = 0xa1;
const SURVIVOR: u64 = 0xb2;

fn say(s: &str) {
    println!("    {s}");
}

/// `nvme resv-report` (nvme-cli) of `dev` as JSON: the reference reading.
fn nvme_cli_report(g: &Guest, dev: &str) -> serde_json::Value {
    let out = g
        .run_ok(&format!(
            "nvme resv-report {dev} --eds -o json || nvme resv-report {dev} -o json"
        ))
        .unwrap();
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("nvme resv-report is not JSON ({e}): {out}"))
}

/// Every service action of `sg-pr` on one namespace, node guests on kernel `nodes`: register,
/// reserve, read keys and reservation, status with host identifiers (checked against
/// nvme-cli's report), the fence (preempt and abort: the victim's write refused, its read
/// served), release, clear.
fn every_service_action_on_nvmet_tcp(nodes: KernelLine) {
    let lab = Lab::on(&format!("nvme-sgpr-{}", nodes.name()), nodes).unwrap();
    let target = NvmeTarget::start(&lab, 1, 64, 1).unwrap();
    let guests = lab
        .boot_all(vec![target.node_spec("node1"), target.node_spec("node2")])
        .unwrap();
    let (g1, g2) = (&guests[0], &guests[1]);
    let (h1, h2) = (HostIdentity::of_node(1), HostIdentity::of_node(2));
    let d1 = target.connect(g1, &h1, 600, None).unwrap().remove(0);
    let d2 = target.connect(g2, &h2, 600, None).unwrap().remove(0);
    say(&format!(
        "nodes on {}: node1 {d1}, node2 {d2}",
        g1.run_ok("uname -r").unwrap().trim()
    ));
    let (v, s) = (SgPr::new(g1), SgPr::new(g2));

    // Both nodes see one namespace identity, the UUID the target gave it; Identify declares
    // reservations and the fencing type.
    let want = format!("uuid.{}", kmod_testing::nvmet::namespace_uuid(1));
    for (sg, dev) in [(&v, &d1), (&s, &d2)] {
        let id = sg.json(&format!("inquiry {dev}")).unwrap();
        id.ok();
        assert_eq!(
            id.json["lun_id"].as_str(),
            Some(want.as_str()),
            "{}",
            id.stdout
        );
        assert_eq!(id.json["nvme_namespace"], 1);
    }
    let caps = v.json(&format!("caps {d1}")).unwrap();
    caps.ok();
    assert_eq!(caps.json["reservations"], true, "{}", caps.stdout);
    assert!(
        caps.json["supported_types"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "wero")),
        "{}",
        caps.stdout
    );

    v.run(&format!("register --key {VICTIM:x} {d1}"))
        .unwrap()
        .ok();
    s.run(&format!("register --key {SURVIVOR:x} {d2}"))
        .unwrap()
        .ok();
    let mut keys = s.keys(&d2).unwrap();
    keys.sort();
    assert_eq!(keys, vec![VICTIM, SURVIVOR]);

    v.run(&format!("reserve --key {VICTIM:x} --type wero {d1}"))
        .unwrap()
        .ok();
    let r = s.json(&format!("reservation {d2}")).unwrap();
    r.ok();
    say(&format!("reservation: {}", r.stdout.trim()));

    let status = s.json(&format!("status {d2}")).unwrap();
    status.ok();
    say(&format!("status: {}", status.stdout.trim()));
    let cli = nvme_cli_report(g2, &d2);
    say(&format!("nvme resv-report: {cli}"));
    // The same registrants, keys, host identifiers and holder as nvme-cli reads.
    let ours: Vec<(String, u64, bool)> = status.json["controllers"]
        .as_array()
        .expect("controllers in sg-pr status")
        .iter()
        .map(|c| {
            (
                c["host_id"].as_str().unwrap_or_default().to_string(),
                c["key"].as_str().and_then(tests::sg_pr::hex).unwrap_or(0),
                c["holds_reservation"] == true,
            )
        })
        .collect();
    let theirs: Vec<(String, u64, bool)> = cli["regctlext"]
        .as_array()
        .expect("regctlext in nvme resv-report")
        .iter()
        .map(|c| {
            (
                c["hostid"].as_str().unwrap_or_default().to_string(),
                c["rkey"].as_u64().unwrap_or(0),
                c["rcsts"] == 1,
            )
        })
        .collect();
    assert_eq!(ours, theirs, "sg-pr status against nvme resv-report");
    assert_eq!(
        ours.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        [&h1, &h2].map(|h| h.id.replace('-', "")),
        "each node registered as its own host"
    );
    assert_eq!(status.json["type_code"], cli["rtype"]);

    // The victim writes while it holds the reservation.
    let w = blocks::write(g1, &d1, 8, 0x11).unwrap();
    assert!(w.success(), "victim's write before the fence: {w:?}");

    // The fence.
    s.run(&format!(
        "preempt --key {SURVIVOR:x} --victim {VICTIM:x} --type wero --abort {d2}"
    ))
    .unwrap()
    .ok();
    assert_eq!(s.keys(&d2).unwrap(), vec![SURVIVOR]);
    let w = blocks::write(g1, &d1, 8, 0x22).unwrap();
    assert!(
        !w.success(),
        "the preempted host's write went through: {w:?}"
    );
    say(&format!(
        "victim's write after the fence: {}",
        w.stderr.trim()
    ));
    assert_eq!(
        blocks::distinct_bytes(g1, &d1, 8).unwrap(),
        vec![0x11],
        "the victim still reads (Write Exclusive), and its refused write changed nothing"
    );
    let w = blocks::write(g2, &d2, 9, 0x33).unwrap();
    assert!(w.success(), "the survivor's write: {w:?}");

    // The victim's commands now conflict (exit 24).
    v.run(&format!("reserve --key {VICTIM:x} --type wero {d1}"))
        .unwrap()
        .expect_code(24);

    // The holder preempts a registrant that holds nothing (a node registering again after its
    // fence, fenced once more): the key goes. (nvmet, when the preempting host holds the
    // reservation, only changes the reservation's type and leaves the key: sg-pr releases and
    // preempts again, then takes the reservation back.)
    v.run(&format!("register --key {VICTIM:x} {d1}"))
        .unwrap()
        .ok();
    let mut keys = s.keys(&d2).unwrap();
    keys.sort();
    assert_eq!(keys, vec![VICTIM, SURVIVOR], "the victim registered again");
    s.run(&format!(
        "preempt --key {SURVIVOR:x} --victim {VICTIM:x} --type wero --abort {d2}"
    ))
    .unwrap()
    .ok();
    assert_eq!(
        s.keys(&d2).unwrap(),
        vec![SURVIVOR],
        "the holder's preempt removed the key"
    );
    let r = s.json(&format!("reservation {d2}")).unwrap();
    assert_eq!(
        r.json["reservation"]["key"].as_str(),
        Some(format!("0x{SURVIVOR:x}").as_str()),
        "the survivor holds the reservation after the preempt: {}",
        r.stdout
    );

    s.run(&format!("release --key {SURVIVOR:x} --type wero {d2}"))
        .unwrap()
        .ok();
    s.run(&format!("clear --key {SURVIVOR:x} {d2}"))
        .unwrap()
        .ok();
    assert!(s.keys(&d2).unwrap().is_empty());
}

#[test]
fn sg_pr_every_service_action_on_nvmet_tcp_from_newest_kernel_nodes() {
    every_service_action_on_nvmet_tcp(KernelLine::Newest);
}

#[test]
fn sg_pr_every_service_action_on_nvmet_tcp_from_stable_kernel_nodes() {
    every_service_action_on_nvmet_tcp(KernelLine::Stable);
}

/// Runs `fence_fenced` on node `i` with `options` as its stdin lines (Pacemaker's way).
fn agent(c: &Cluster, i: usize, options: &str) -> kmod_testing::Output {
    c.nodes[i]
        .run(&format!(
            "ln -sf {} /tmp/fence_fenced && printf '{options}' | /tmp/fence_fenced",
            project_binary("fenced").display()
        ))
        .expect("run fence_fenced in the guest")
}

/// The nodes holding a key on every LUN of `status` (`fenced status --json`), per LUN.
fn holders(status: &serde_json::Value) -> Vec<Vec<String>> {
    status["luns"]
        .as_array()
        .expect("luns in the status")
        .iter()
        .map(|l| {
            l["keys"]
                .as_array()
                .map(|k| {
                    k.iter()
                        .filter_map(|k| k["node"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Fault: a 3-node fenced cluster (newest kernel) whose shared storage mixes one iSCSI LUN (LIO)
/// and two NVMe/TCP namespaces; the clusterware on node1 evicts node2 through `fence_fenced`.
/// Must: `fenced doctor` passes on node1 and checks the namespaces' reservation support and
/// their controllers' timeouts; every
/// node registers on every LUN and namespace; after `off`, node2's key is gone from all three,
/// its writes to a namespace are refused, node1 and node3 write on, and node2 resets within lease
/// + watchdog. Must not: node1 or node3 reset.
#[test]
fn fenced_on_nvme_and_iscsi_evicts_through_the_agent_and_the_victim_resets() {
    let mut spec = ClusterSpec::new("nvme-mixed", TargetKind::Lio);
    spec.nvme_namespaces = 2;
    spec.kernel = KernelLine::Newest;
    let c = Cluster::start(&mut |s: &str| say(s), &spec).expect("cluster up");
    let doctor = c.fenced(0, "doctor").unwrap();
    println!("{}{}", doctor.stdout, doctor.stderr);
    assert_eq!(doctor.code, 0, "doctor must find no FAIL on a healthy node");
    for ns in c.nvme_devices(0) {
        assert!(
            doctor
                .stdout
                .lines()
                .any(|l| l.starts_with("PASS transport nvme") && l.contains(ns.as_str())),
            "doctor judges {ns}'s controller timeouts: {}",
            doctor.stdout
        );
    }
    assert_eq!(
        doctor
            .stdout
            .matches("Identify: reservations supported (ONCS bit 5); Write Exclusive – Registrants Only supported")
            .count(),
        2,
        "doctor reads each namespace's reservation capabilities"
    );

    let st = c.status(0).unwrap();
    for (lun, h) in holders(&st).iter().enumerate() {
        assert_eq!(h.len(), 3, "LUN {lun}: every node registered: {st}");
    }
    let t = Instant::now();
    let off = agent(&c, 0, "action=off\\nport=node2\\nnodename=node2\\n");
    say(&format!(
        "fence_fenced off node2: exit {} in {:.2} s: {}{}",
        off.code,
        t.elapsed().as_secs_f64(),
        off.stdout,
        off.stderr
    ));
    assert_eq!((off.code, off.stdout.trim()), (0, "Success: Powered OFF"));
    let st = c.status(0).unwrap();
    for (lun, h) in holders(&st).iter().enumerate() {
        assert!(
            !h.contains(&"node2".to_string()) && h.len() == 2,
            "LUN {lun}: node2's key gone, node1's and node3's kept: {h:?}"
        );
    }
    let ns = |i: usize| c.nvme_devices(i)[0].clone();
    match blocks::write(&c.nodes[1], &ns(1), 40, b'X') {
        Ok(w) => assert_ne!(w.code, 0, "node2's write to a namespace after the fence"),
        Err(e) => say(&format!("node2 already gone: {e}")),
    }
    for (i, byte) in [(0, b'A'), (2, b'C')] {
        let w = blocks::write(&c.nodes[i], &ns(i), 41 + i as u64, byte).unwrap();
        assert!(w.success(), "node{} writes on: {w:?}", i + 1);
    }
    assert!(
        c.nodes[1]
            .wait_exit(c.timing.reset_bound() + Duration::from_secs(5))
            .is_some(),
        "node2 resets"
    );
    assert_eq!(
        blocks::distinct_bytes(&c.nodes[0], &ns(0), 40).unwrap(),
        vec![0],
        "nothing node2 wrote after the fence reached the namespace"
    );
    assert!(c.nodes[0].is_running() && c.nodes[2].is_running());
}

/// Fault: node1 and node2 of a 3-node cluster (newest kernel) on two NVMe/TCP namespaces alone
/// fence each other at the same instant, 3 rounds with no daemons, then once more with daemons.
/// Must: every round exactly one survivor: one command succeeds, one key of the two is left on
/// each namespace, the loser is marked dead; with daemons the loser resets, the winner stays up.
/// (nvmet leaves the key a reservation holder preempts: the first round, node1 holding the
/// reservation, proves sg-pr's release-and-preempt-again.)
#[test]
fn split_brain_on_nvme_namespaces_has_exactly_one_survivor_each_round() {
    let mut spec = ClusterSpec::new("nvme-split-brain", TargetKind::Lio);
    spec.luns = 0;
    spec.nvme_namespaces = 2;
    spec.daemons = false;
    spec.kernel = KernelLine::Newest;
    let c = Cluster::start(&mut |s: &str| say(s), &spec).expect("cluster up");
    // NVMe has no unit attention: the loser reads its key gone without being told it was
    // preempted, and says so (its daemon would reset it by the dead mark).
    let tally = c.split_brain(
        3,
        &[
            "lost the fence race",
            "marked dead",
            "this node's key is not registered",
        ],
    );
    say(&format!("tally: node1 {}, node2 {}", tally[0], tally[1]));
}

/// A dm-multipath map over a node's two NVMe/TCP paths to one namespace (kernel multipath off,
/// `nvme_core.multipath=N`: one namespace device per controller), built with dmsetup.
fn multipath_map(g: &Guest, paths: &[String]) -> String {
    let table: String = paths.iter().map(|p| format!(" {p} 1")).collect();
    g.run_ok(&format!(
        "modprobe -a dm_multipath dm_round_robin && \
         dmsetup --noudevsync create mp --table \"0 $(blockdev --getsz {first}) multipath 0 0 1 1 round-robin 0 {n} 1{table}\" && \
         dmsetup --noudevsync mknodes mp",
        first = paths[0],
        n = paths.len(),
    ))
    .unwrap();
    "/dev/mapper/mp".to_string()
}

/// Fault: two nodes on the newest kernel reach one namespace through two NVMe/TCP paths each
/// (two controllers per host, the kernel's NVMe multipath off) under dm-multipath maps; node2
/// fences node1 through its map.
/// Must: every PR action works through the maps with the block-layer ioctls (register on every
/// path, reserve, read keys and reservation with IOC_PR_READ_*, preempt); one registration per
/// host whatever the paths (NVMe registers hosts, not paths); after the preempt node1's writes
/// through either path and through its map are refused, node2's go through.
#[test]
fn dm_multipath_over_two_nvme_paths_through_the_block_ioctls() {
    let lab = Lab::on("nvme-dm-multipath", KernelLine::Newest).unwrap();
    let target = NvmeTarget::start(&lab, 1, 64, 2).unwrap();
    let specs = ["node1", "node2"].map(|n| target.node_spec(n).append("nvme_core.multipath=N"));
    let guests = lab.boot_all(specs.to_vec()).unwrap();
    let (g1, g2) = (&guests[0], &guests[1]);
    let p1 = target
        .connect(g1, &HostIdentity::of_node(1), 30, Some(2))
        .unwrap();
    let p2 = target
        .connect(g2, &HostIdentity::of_node(2), 30, Some(2))
        .unwrap();
    assert_eq!(
        (p1.len(), p2.len()),
        (2, 2),
        "two namespace devices (paths) per node: {p1:?} {p2:?}"
    );
    let (m1, m2) = (multipath_map(g1, &p1), multipath_map(g2, &p2));
    let (v, s) = (SgPr::new(g1), SgPr::new(g2));
    v.run(&format!("register --key {VICTIM:x} {m1}"))
        .unwrap()
        .ok();
    s.run(&format!("register --key {SURVIVOR:x} {m2}"))
        .unwrap()
        .ok();
    v.run(&format!("reserve --key {VICTIM:x} --type wero {m1}"))
        .unwrap()
        .ok();
    let mut keys = s.keys(&m2).unwrap();
    keys.sort();
    keys.dedup();
    assert_eq!(keys, vec![VICTIM, SURVIVOR], "read through the map");
    let status = s.json(&format!("status {}", p2[0])).unwrap();
    status.ok();
    assert_eq!(
        status.json["registered"], 2,
        "one registration per host, not per path: {}",
        status.stdout
    );
    let r = s.json(&format!("reservation {m2}")).unwrap();
    r.ok();
    assert_eq!(
        r.json["reservation"]["key"].as_str(),
        Some(format!("0x{VICTIM:x}").as_str()),
        "{}",
        r.stdout
    );
    assert!(blocks::write(g1, &m1, 8, 0x11).unwrap().success());

    s.run(&format!(
        "preempt --key {SURVIVOR:x} --victim {VICTIM:x} --type wero {m2}"
    ))
    .unwrap()
    .ok();
    assert_eq!(s.keys(&p2[1]).unwrap(), vec![SURVIVOR]);
    for dev in p1.iter().chain([&m1]) {
        let w = blocks::write(g1, dev, 9, 0x22).unwrap();
        assert!(
            !w.success(),
            "node1's write through {dev} after the fence: {w:?}"
        );
    }
    assert!(
        blocks::write(g2, &m2, 10, 0x33).unwrap().success(),
        "node2 writes on"
    );
    say(&format!(
        "dm-multipath over {p2:?}: fenced through the block ioctls"
    ));
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `/etc/fenced/bench.toml` on every node: the cluster's configuration with `luns` (per
/// node) as its LUNs, for `fenced --config` to fence on a subset.
fn bench_config(c: &Cluster, luns: &dyn Fn(usize) -> Vec<String>) {
    for (i, g) in c.nodes.iter().enumerate() {
        let votes: Vec<String> = (0..3)
            .map(|v| g.disk_by_serial(&format!("vote{v}")).unwrap())
            .collect();
        let text = tests::cluster::config_text(c.nodes.len(), i, &luns(i), &votes, c.timing);
        g.run_ok(&format!(
            "cat > /etc/fenced/bench.toml <<'EOF'\n{text}EOF\nchmod 600 /etc/fenced/bench.toml"
        ))
        .unwrap();
    }
}

/// `runs` fences of node2 from node1 with `/etc/fenced/bench.toml` (no daemons: the command
/// works on the disks), node2 let back in and registered again between runs; then `runs` of
/// the floor (pr-floor: the same chain per LUN, nothing else). Returns (pr_confirmed_ms, floor
/// ms) per run.
fn bench_runs(c: &Cluster, devices: &[String], runs: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut fence, mut floor) = (Vec::new(), Vec::new());
    let again = |c: &Cluster| {
        let cleared = c.fenced(0, "clear --force node2").unwrap();
        assert!(cleared.success(), "{}", cleared.stderr);
        let un = c
            .fenced(1, "unfence --config /etc/fenced/bench.toml")
            .unwrap();
        assert!(un.success(), "{}", un.stderr);
    };
    for _ in 0..runs {
        let out = c
            .fenced(0, "fence --config /etc/fenced/bench.toml --json node2")
            .unwrap();
        assert!(out.success(), "{}{}", out.stdout, out.stderr);
        let json = out
            .stdout
            .lines()
            .find(|l| l.starts_with('{'))
            .expect("the JSON report");
        let v: serde_json::Value = serde_json::from_str(json).expect("fence JSON");
        fence.push(
            v["report"]["pr_confirmed_ms"]
                .as_f64()
                .expect("pr_confirmed_ms"),
        );
        again(c);
    }
    let (own, victim) = (tests::cluster::node_key(0), tests::cluster::node_key(1));
    for _ in 0..runs {
        let o = c.nodes[0]
            .run_ok(&format!(
                "{} 0x{own:x} 0x{victim:x} {}",
                project_binary("pr-floor").display(),
                devices.join(" ")
            ))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(o.trim()).expect("pr-floor JSON");
        floor.push(v["ms"].as_f64().expect("ms"));
        let un = c
            .fenced(1, "unfence --config /etc/fenced/bench.toml")
            .unwrap();
        assert!(un.success(), "{}", un.stderr);
    }
    (fence, floor)
}

/// The fence on 1 and on N NVMe/TCP namespaces beside the same on N iSCSI LUNs (LIO), one
/// cluster of three nodes on the newest kernel, and each one's floor (pr-floor: PREEMPT AND
/// ABORT, READ KEYS, READ RESERVATION per LUN; on NVMe one namespace after another, as fenced
/// sends them). `FENCED_BENCH_NVME_LUNS` (default 32), `FENCED_BENCH_RUNS` (default 5).
#[test]
#[ignore = "benchmark: minutes of VM time; figures in BENCHMARKS.md"]
fn bench_fence_on_nvme_namespaces_beside_iscsi_luns() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, runs) = (
        env("FENCED_BENCH_NVME_LUNS", 32),
        env("FENCED_BENCH_RUNS", 5),
    );
    let mut spec = ClusterSpec::new("bench-nvme", TargetKind::Lio);
    spec.luns = n;
    spec.nvme_namespaces = n;
    spec.daemons = false;
    spec.kernel = KernelLine::Newest;
    let c = Cluster::start(&mut |s: &str| say(s), &spec).expect("cluster up");
    let mut table = vec![
        format!("| LUNs | transport | fenced pr_confirmed_ms (median of {runs}) | floor (median) | runs: fence / floor |"),
        "|---|---|---|---|---|".to_string(),
    ];
    for count in [1, n] {
        for (name, nvme) in [("iSCSI (LIO)", false), ("NVMe/TCP (nvmet)", true)] {
            let pick = |i: usize| {
                let all = if nvme {
                    c.nvme_devices(i)
                } else {
                    c.main_lun_devices(i)
                };
                all[..count].to_vec()
            };
            bench_config(&c, &pick);
            let (fence, floor) = bench_runs(&c, &pick(0), runs);
            let row = format!(
                "| {count} | {name} | {:.1} | {:.1} | {:?} / {:?} |",
                median(&fence),
                median(&floor),
                fence.iter().map(|v| v.round()).collect::<Vec<_>>(),
                floor.iter().map(|v| v.round()).collect::<Vec<_>>()
            );
            println!("BENCH {row}");
            table.push(row);
        }
    }
    println!("BENCH TABLE nvme\n{}\nBENCH END", table.join("\n"));
}
