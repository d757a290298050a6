//! `fence_fenced` (Pacemaker's fence-agent protocol) and `fenced doctor` on a 3-node guest
//! cluster: LIO over iSCSI in a storage guest, three shared voting disks, an i6300esb per node,
//! `fenced run` on every node.

use kmod_testing::iscsi::TargetKind;
use kmod_testing::project_binary;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::blocks;
use tests::cluster::{Cluster, ClusterSpec};

/// fence-agents' RelaxNG schema for `-o metadata` (Debian package fence-agents, on the host).
const METADATA_RNG: &str = "/usr/share/cluster/relaxng/metadata.rng";

/// Runs `fence_fenced` on `node` with `options` as its stdin lines (Pacemaker's way).
fn agent(c: &Cluster, node: usize, options: &str) -> kmod_testing::Output {
    let t = Instant::now();
    let out = c.nodes[node]
        .run(&format!("printf '{options}' | /tmp/fence_fenced"))
        .expect("run fence_fenced in the guest");
    let stdout = if out.stdout.len() > 200 {
        format!("<{} bytes>", out.stdout.len())
    } else {
        format!("{:?}", out.stdout)
    };
    println!(
        "    fence_fenced {:?}: exit {} in {:.2} s; stdout {stdout}; stderr {:?}",
        options,
        out.code,
        t.elapsed().as_secs_f64(),
        out.stderr
    );
    out
}

/// Fault: the clusterware on node1 evicts node2 the way Pacemaker does, through `fence_fenced`:
/// metadata (valid against the fence-agents schema), monitor, list, status of node2 (ON, exit 0),
/// off for node2 (exit 0), status again (OFF, exit 2). Before that, `fenced doctor` on node1
/// passes.
/// Must: node2's key is gone and its writes fail at once (or it is already resetting); node2
/// resets within lease + watchdog timeout, its slot saying why (self-fenced: marked dead or key
/// gone); node1's and node3's writes go on; fencing node2 again
/// succeeds without change; a node refuses to fence itself.
/// Must not: anything node2 writes after the fence reach the LUN.
#[test]
fn eviction_through_the_fence_agent_cuts_the_victim_off_and_it_resets() {
    let spec = ClusterSpec::new("agent-lio", TargetKind::Lio);
    let c = Cluster::start(&mut |s: &str| println!("    {s}"), &spec).expect("cluster up");
    let fenced = project_binary("fenced");
    c.nodes[0]
        .run_ok(&format!("ln -sf {} /tmp/fence_fenced", fenced.display()))
        .unwrap();

    let doctor = c.nodes[0]
        .run(&format!("{} doctor", fenced.display()))
        .unwrap();
    println!(
        "fenced doctor on node1 (exit {}):\n{}{}",
        doctor.code, doctor.stdout, doctor.stderr
    );
    assert_eq!(doctor.code, 0, "doctor must find no FAIL on a healthy node");
    assert!(doctor.stdout.contains("PASS voting-disk majority"));
    assert!(doctor.stdout.contains("READ KEYS lists this node's key"));
    assert!(
        doctor.stdout.contains("PASS lun")
            && doctor
                .stdout
                .contains("PREEMPT AND ABORT supported (probed"),
        "LIO does not declare PREEMPT AND ABORT; doctor's probe finds it"
    );

    let meta = agent(&c, 0, "action=metadata\\n");
    assert_eq!(meta.code, 0);
    let dir = tempfile_dir();
    let file = dir.join("metadata.xml");
    std::fs::write(&file, &meta.stdout).unwrap();
    let lint = Command::new("xmllint")
        .args(["--noout", "--relaxng", METADATA_RNG])
        .arg(&file)
        .output()
        .expect("xmllint (libxml2-utils) on the host");
    assert!(
        lint.status.success(),
        "metadata must validate against {METADATA_RNG}: {}",
        String::from_utf8_lossy(&lint.stderr)
    );

    assert_eq!(agent(&c, 0, "action=monitor\\n").code, 0);
    let list = agent(&c, 0, "action=list\\n");
    assert_eq!(
        (list.code, list.stdout.as_str()),
        (0, "node1,\nnode2,\nnode3,\n")
    );

    let st = agent(&c, 0, "action=status\\nplug=node2\\n");
    assert_eq!(
        (st.code, st.stdout.trim()),
        (0, "Status: ON"),
        "node2 starts ON"
    );

    let t = Instant::now();
    let off = agent(&c, 0, "action=off\\nport=node2\\nnodename=node2\\n");
    println!(
        "MEASURED: fence_fenced off took {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!((off.code, off.stdout.trim()), (0, "Success: Powered OFF"));
    let status = c.status(0).unwrap();
    let keys = &status["luns"][0]["keys"];
    let holders: Vec<&str> = keys
        .as_array()
        .expect("keys of the LUN")
        .iter()
        .filter_map(|k| k["node"].as_str())
        .collect();
    assert!(
        !holders.contains(&"node2"),
        "node2's key must be gone: {keys}"
    );
    assert!(
        holders.contains(&"node1") && holders.contains(&"node3"),
        "{keys}"
    );

    let st = agent(&c, 0, "action=status\\nplug=node2\\n");
    assert_eq!(
        (st.code, st.stdout.trim()),
        (2, "Status: OFF"),
        "node2 is OFF"
    );
    let fenced_at = Instant::now();
    let dev = |i: usize| c.lun_devices[i][0].clone();
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
    let bound = t.reset_bound() + Duration::from_secs(3);
    let reset = c.nodes[1]
        .wait_exit(bound)
        .expect("node2 must reset within lease + watchdog");
    println!(
        "MEASURED: node2 reset {:.2} s after the fence agent returned",
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
    let status = c.status(0).unwrap();
    assert_eq!(status["authority"]["dead"], serde_json::json!([1]));
    // node2 left the reason of its reset in its slot.
    let node2 = &status["nodes"][1];
    println!("node2 as node1 sees it: {node2}");
    assert_eq!(node2["state"], "SelfFenced", "{node2}");
    assert!(
        [
            "marked dead by the voting-disk authority",
            "its reservation key was gone from a LUN"
        ]
        .contains(&node2["self_fence_cause"].as_str().unwrap_or_default()),
        "{node2}"
    );
    assert_eq!(c.registered(0).unwrap(), vec!["node1", "node3"]);
    let again = c.fenced(0, "fence node2").unwrap();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("already"), "{}", again.stdout);
    let own = c.fenced(0, "fence node1").unwrap();
    assert_ne!(own.code, 0);
    assert!(
        own.stderr.contains("refusing to fence this node"),
        "{}",
        own.stderr
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agent-vm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
