//! Real clusterware: corosync 3 and Pacemaker 2.1 (Debian 12's) on three node guests with
//! systemd as PID 1, a guest LAN of their own for corosync (apart from the storage transport),
//! fenced.service on every node, one shared LIO iSCSI LUN and three voting disks. Set up from
//! the configuration and commands of fenced/docs/pacemaker.md ([`tests::pacemaker`]).

use kmod_testing::iscsi::TargetKind;
use kmod_testing::Guest;
use std::time::{Duration, Instant};
use tests::cluster::{node_name, Cluster, ClusterSpec};
use tests::pacemaker::{
    self, crm_mon, doc_block, resources, wait_fence_recorded, wait_online, wait_started,
};
use tests::systemd::{journal_timeline_all, show, uptime_secs_to_us};

fn narrate() -> impl FnMut(&str) {
    |s: &str| println!("    {s}")
}

/// `systemctl show` of the unit's state, result and main process status on `g`.
fn unit_state(g: &Guest, unit: &str) -> String {
    let p = show(
        g,
        unit,
        &["ActiveState", "Result", "ExecMainStatus", "NRestarts"],
    )
    .unwrap();
    format!(
        "{} {} status={} restarts={}",
        p["ActiveState"], p["Result"], p["ExecMainStatus"], p["NRestarts"]
    )
}

/// The guest's CLOCK_MONOTONIC now, in µs.
fn uptime_us(g: &Guest) -> u64 {
    uptime_secs_to_us(g.run_ok("cut -d' ' -f1 /proc/uptime").unwrap().trim())
}

/// Runs `cmd` on `g` and returns its stdout; panics with both streams when it fails.
fn ok(g: &Guest, cmd: &str) -> String {
    let out = g.run(cmd).unwrap();
    assert!(
        out.success(),
        "{}: `{cmd}` exited {}:\n{}{}",
        g.name(),
        out.code,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Starts: the clusterware starts only where fenced runs healthy, and a node the voting disks
/// mark dead gets neither fenced nor corosync nor Pacemaker until a live node clears it.
/// Then the partition: node2's cluster-network link is cut from the host (its corosync loses the
/// token, its storage stays reachable).
/// Must: Pacemaker on node1 and node3 (quorate) fences node2 through the stonith device the
/// document configures (`fence_fenced`), the fence is recorded successful, node2's key is gone
/// from the LUN and the voting disks mark it dead, node2 resets within L + W + P of the fence,
/// and the resources on node1 and node3 keep running where they ran; `stonith_admin` lists,
/// queries and describes the device. Must not: node1 or node3 reset, a resource stop on them.
#[test]
fn pacemaker_fences_a_partitioned_node_through_fence_fenced() {
    let c = boot("pacemaker-partition");
    let say = |s: String| println!("    {s}");

    // node3 is marked dead before anything starts (no daemon runs yet: `fenced fence` works on
    // the disks itself), then every node runs the document's start commands.
    let f = c.fenced(0, "fence node3").unwrap();
    assert!(f.success(), "{}", f.stderr);
    let t = Instant::now();
    let outs = pacemaker::start(&c, &[0, 1, 2]).unwrap();
    say(format!(
        "start commands run on every node ({:.1} s): node1 {}, node2 {}, node3 {}",
        t.elapsed().as_secs_f64(),
        outs[0].code,
        outs[1].code,
        outs[2].code
    ));
    assert!(outs[0].success() && outs[1].success(), "{outs:?}");
    assert!(!outs[2].success(), "node3 is marked dead: {:?}", outs[2]);
    let node3 = &c.nodes[2];
    let fenced3 = unit_state(node3, "fenced.service");
    let corosync3 = unit_state(node3, "corosync.service");
    let pacemaker3 = unit_state(node3, "pacemaker.service");
    say(format!(
        "node3: fenced {fenced3}; corosync {corosync3}; pacemaker {pacemaker3}"
    ));
    assert!(
        fenced3.starts_with("failed exit-code status=7 restarts=0"),
        "{fenced3}"
    );
    assert!(!corosync3.starts_with("active"), "{corosync3}");
    assert!(!pacemaker3.starts_with("active"), "{pacemaker3}");
    wait_online(&c, 0, &["node1", "node2"], Duration::from_secs(180)).unwrap();
    assert!(!c.registered(0).unwrap().contains(&node_name(2)));

    // Let node3 back: cleared from node1 (through node1's daemon), then the start commands.
    let cleared = c.fenced(0, "clear node3").unwrap();
    assert!(cleared.success(), "{}", cleared.stderr);
    let again = pacemaker::start(&c, &[2]).unwrap();
    assert!(again[0].success(), "{:?}", again[0]);
    let t = Instant::now();
    wait_online(
        &c,
        0,
        &["node1", "node2", "node3"],
        Duration::from_secs(180),
    )
    .unwrap();
    say(format!(
        "node3 cleared and started: fenced {}, all three online ({:.1} s)",
        unit_state(node3, "fenced.service"),
        t.elapsed().as_secs_f64()
    ));
    let keys = c.registered(0).unwrap();
    assert!((0..3).all(|i| keys.contains(&node_name(i))), "{keys:?}");

    let before = configure(&c);
    node2_is_evicted(&c, &before, "node2's cluster link cut", || {
        c.nodes[1].set_lan_link(false).unwrap()
    });
}

/// Three systemd node guests on a LAN, fenced unfenced on each (keys registered, no daemon),
/// corosync and Pacemaker installed as the document says, nothing started.
fn boot(name: &str) -> Cluster {
    let mut spec = ClusterSpec::new(name, TargetKind::Lio);
    spec.systemd = true;
    spec.daemons = false;
    spec.lan = true;
    let c = Cluster::start(&mut narrate(), &spec).unwrap();
    pacemaker::install(&c).unwrap();
    c
}

/// Configures the stonith device as the document does and three resources, checks what
/// Pacemaker's tools say about the agent and the device, and returns the resources' placement.
fn configure(c: &Cluster) -> Vec<(String, String, Option<String>)> {
    let say = |s: String| println!("    {s}");
    let node1 = &c.nodes[0];
    let t = Instant::now();
    ok(node1, &doc_block("stonith").unwrap());
    // The resources are the test's, not the document's: cibadmin (pcs costs ~20 s a command
    // under TCG).
    for r in 1..=3 {
        ok(
            node1,
            &format!(
                "cibadmin --create -o resources --xml-text '<primitive id=\"dummy{r}\" class=\"ocf\" provider=\"pacemaker\" type=\"Dummy\"><operations><op id=\"dummy{r}-monitor\" name=\"monitor\" interval=\"10s\"/></operations></primitive>'"
            ),
        );
    }
    let before = wait_started(c, 0, 4, Duration::from_secs(120)).unwrap();
    say(format!(
        "stonith device and 3 resources configured ({:.1} s): {before:?}",
        t.elapsed().as_secs_f64()
    ));

    // What Pacemaker's tools say about the agent and the device.
    let registered = ok(node1, "stonith_admin --list-registered");
    assert!(registered.contains("fenced-fence"), "{registered}");
    let can = ok(node1, "stonith_admin --list node2");
    assert!(can.contains("fenced-fence"), "{can}");
    let query = node1.run("stonith_admin --query fenced-fence").unwrap();
    assert!(query.success(), "{query:?}");
    let meta = ok(node1, "stonith_admin --metadata --agent fence_fenced");
    assert!(
        meta.contains("<resource-agent name=\"fence_fenced\""),
        "{meta}"
    );
    let describe = node1.run("pcs stonith describe fence_fenced").unwrap();
    assert!(
        describe.success() && !describe.stderr.to_lowercase().contains("warning"),
        "{describe:?}"
    );
    say(format!(
        "stonith_admin: registered {:?}, can fence node2: {:?}, query exit {}",
        registered.trim(),
        can.trim(),
        query.code
    ));

    before
}

/// Fault `fault` (cutting node2 off, or hanging it) applied to node2 of a cluster configured
/// by [`configure`] (resources placed as `before`). Must: Pacemaker on the others fences
/// node2 through fence_fenced, the fence is recorded successful, node2's key is gone from the
/// LUN and the voting disks mark it dead, node2 resets within L + W + P of the confirmation, and
/// the resources on the others keep running where they ran. Must not: another node reset, a
/// resource fail.
fn node2_is_evicted(
    c: &Cluster,
    before: &[(String, String, Option<String>)],
    what: &str,
    fault: impl FnOnce(),
) {
    let node1 = &c.nodes[0];
    let say = |s: String| println!("    {s}");
    // The fault's time on node1's clock (CLOCK_MONOTONIC, as the journal stamps
    // Pacemaker's messages) is taken just before it: the times below are late by at most the
    // agent's round trip (~0.1 s).
    let cut_mono = uptime_us(node1);
    let cut = Instant::now();
    fault();
    let reset_at = c.nodes[1]
        .wait_exit(Duration::from_secs(150))
        .map(|at| at - cut)
        .expect("node2 was not reset within 150 s of the cut");
    // node2 sees its dead mark and resets before the agent returns (it confirms the marker
    // with one more round), so Pacemaker records the fence a moment after the reset.
    wait_fence_recorded(node1, "node2", Duration::from_secs(60)).unwrap();
    let fence_lines: Vec<(u64, String)> = journal_timeline_all(node1)
        .unwrap()
        .into_iter()
        .filter(|(at, m)| *at >= cut_mono && m.contains("targeting node2"))
        .collect();
    let requested = fence_lines.first().map(|(at, _)| at - cut_mono);
    let confirmed = fence_lines
        .iter()
        .find(|(_, m)| m.contains(": OK"))
        .map(|(at, _)| at - cut_mono)
        .unwrap_or_else(|| {
            panic!("no confirmation of node2's fence in node1's journal: {fence_lines:?}")
        });
    let reset_bound = c.timing.reset_bound();
    println!(
        "MEASURED: pacemaker, {what}: fence requested {:.1} s after the cut, confirmed by Pacemaker {:.1} s after the cut, node2 reset {:.1} s after the cut (L+W+P = {:.1} s)",
        requested.unwrap_or(0) as f64 / 1e6,
        confirmed as f64 / 1e6,
        reset_at.as_secs_f64(),
        reset_bound.as_secs_f64(),
    );
    for (at, m) in &fence_lines {
        println!("      node1 +{:.2} s: {m}", (at - cut_mono) as f64 / 1e6);
    }
    assert!(
        reset_at <= Duration::from_micros(confirmed) + reset_bound,
        "node2 reset {reset_at:?} after the cut, the fence confirmed {confirmed} µs after it"
    );
    let survivors: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != 1).collect();
    let keys = c.registered(0).unwrap();
    let names: Vec<String> = survivors.iter().map(|&i| node_name(i)).collect();
    assert_eq!(keys, names, "only the survivors' keys are left");
    let st = c.daemon_status(0).unwrap();
    assert_eq!(st["authority"]["dead"], serde_json::json!([1]), "{st}");

    // The survivors: still up, their resources where they were, node2's moved to them.
    assert!(survivors.iter().all(|&i| c.nodes[i].is_running()));
    let after = wait_started(c, 0, 4, Duration::from_secs(60)).unwrap();
    for (id, _, node) in before {
        if node.as_deref() != Some("node2") {
            let now = after.iter().find(|(i, _, _)| i == id).unwrap();
            assert_eq!(&now.2, node, "{id} moved: {before:?} -> {after:?}");
        }
    }
    assert!(
        after.iter().all(|(_, _, n)| n.as_deref() != Some("node2")),
        "{after:?}"
    );
    let xml = crm_mon(node1).unwrap();
    assert!(!xml.contains("<failure "), "a resource failed:\n{xml}");
    say(format!("resources after: {:?}", resources(&xml)));
}

/// Two nodes (`two_node: 1`, no fence delay). First node2's clusterware hangs (SIGSTOP of
/// corosync and Pacemaker; its fenced runs on): as for the partition ([`node2_is_evicted`]),
/// then node2 rejoins. Then the race: the cluster loses its cluster network;
/// both nodes keep quorum and fence each other through fence_fenced. Per round, must: exactly
/// one node resets, the other keeps running with its key on the LUN, the loser's key gone, and
/// Pacemaker on the survivor records the fence; then the loser boots again, is cleared and
/// started as the document says, and both are online for the next round. Must not: both reset,
/// or neither. Rounds: `FENCED_TWO_NODE_ROUNDS` (default 1; BENCHMARKS.md records 5). Last,
/// `stonith_admin --fence node2`: exit 0 with node2's key gone and node2 marked dead, then its
/// reset.
#[test]
fn two_node_partition_leaves_exactly_one_survivor_each_round() {
    let rounds: usize = std::env::var("FENCED_TWO_NODE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut spec = ClusterSpec::new("pacemaker-two-node", TargetKind::Lio);
    spec.nodes = 2;
    spec.systemd = true;
    spec.daemons = false;
    spec.lan = true;
    let mut c = Cluster::start(&mut narrate(), &spec).unwrap();
    pacemaker::install(&c).unwrap();
    let outs = pacemaker::start(&c, &[0, 1]).unwrap();
    assert!(outs.iter().all(|o| o.success()), "{outs:?}");
    wait_online(&c, 0, &["node1", "node2"], Duration::from_secs(180)).unwrap();
    let before = configure(&c);

    // Hung clusterware first: node2's corosync and every Pacemaker daemon stopped (SIGSTOP)
    // while its fenced runs on, healthy; node1 keeps quorum (two_node) and fences it.
    node2_is_evicted(
        &c,
        &before,
        "two nodes, node2's corosync and Pacemaker stopped",
        || {
            // Process names, not command lines: the agent's own shell must not stop.
            c.nodes[1]
                .run_ok("pkill -STOP '^(corosync|pacemaker)' && pgrep -l '^(corosync|pacemaker)'")
                .unwrap();
        },
    );
    rejoin(&mut c, 1, 0);

    let mut tally = [0usize; 2];
    for round in 1..=rounds {
        let cut = Instant::now();
        c.nodes[0].set_lan_link(false).unwrap();
        // The first reset, then a quiet period in which the other must stay up.
        let end = cut + Duration::from_secs(150);
        let loser = loop {
            if let Some(l) = (0..2).find(|&i| !c.nodes[i].is_running()) {
                break l;
            }
            if Instant::now() >= end {
                let why: Vec<String> = c
                    .nodes
                    .iter()
                    .map(|g| {
                        let out = g
                            .run("stonith_admin --history '*' --verbose; crm_mon -1; journalctl --no-pager -q -o short-monotonic -t pacemaker-fenced -t fenced -t fence_fenced -u fenced | tail -60")
                            .map(|o| format!("{}{}", o.stdout, o.stderr))
                            .unwrap_or_default();
                        format!("---- {} ----\n{out}", g.name())
                    })
                    .collect();
                panic!(
                    "round {round}: nobody reset within 150 s\n{}",
                    why.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let reset_at = c.nodes[loser].wait_exit(Duration::from_secs(5)).unwrap() - cut;
        let winner = 1 - loser;
        std::thread::sleep(c.timing.reset_bound() + Duration::from_secs(5));
        assert!(
            c.nodes[winner].is_running(),
            "round {round}: both nodes reset"
        );
        let keys = c.registered(winner).unwrap();
        assert_eq!(keys, vec![node_name(winner)], "round {round}");
        wait_fence_recorded(&c.nodes[winner], &node_name(loser), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        println!(
            "MEASURED: two-node partition round {round}: {} won, {} reset {:.1} s after the cut",
            node_name(winner),
            node_name(loser),
            reset_at.as_secs_f64()
        );
        tally[winner] += 1;
        // Back to two: the cut mended, the loser booted again, cleared and started.
        if winner == 0 {
            c.nodes[0].set_lan_link(true).unwrap();
        }
        rejoin(&mut c, loser, winner);
    }
    println!(
        "MEASURED: two-node partition over {rounds} round(s): node1 won {}, node2 won {}; 0 rounds with two or zero survivors",
        tally[0], tally[1]
    );

    // A fence asked of Pacemaker by hand: `stonith_admin --fence` returns 0 only once node2's
    // key is gone from the LUN and the voting disks mark it dead; node2 resets.
    let t = Instant::now();
    let fence = c.nodes[0].run("stonith_admin --fence node2").unwrap();
    let took = t.elapsed();
    assert!(fence.success(), "{fence:?}");
    assert_eq!(c.registered(0).unwrap(), vec![node_name(0)]);
    let st = c.daemon_status(0).unwrap();
    assert_eq!(st["authority"]["dead"], serde_json::json!([1]), "{st}");
    assert!(
        c.nodes[1]
            .wait_exit(c.timing.reset_bound() + Duration::from_secs(5))
            .is_some(),
        "node2 did not reset after stonith_admin --fence"
    );
    assert!(c.nodes[0].is_running());
    println!(
        "MEASURED: stonith_admin --fence node2 returned 0 after {:.1} s (host clock, the command's round trip included); node2 reset",
        took.as_secs_f64()
    );
}

/// Brings node `loser`, reset by a fence, back into the two-node cluster as the document says:
/// booted again, cleared from node `winner`, Pacemaker started (fenced first); both online with
/// both keys registered.
fn rejoin(c: &mut Cluster, loser: usize, winner: usize) {
    let t = Instant::now();
    c.reboot(loser).unwrap();
    pacemaker::install_node(c, loser).unwrap();
    let cleared = c
        .fenced(winner, &format!("clear {}", node_name(loser)))
        .unwrap();
    assert!(cleared.success(), "{}", cleared.stderr);
    let started = pacemaker::start(c, &[loser]).unwrap();
    assert!(started[0].success(), "{:?}", started[0]);
    wait_online(c, winner, &["node1", "node2"], Duration::from_secs(180)).unwrap();
    // Joined in full: the rejoined node has the cluster's configuration (the stonith device
    // among it) and sees both nodes too.
    wait_online(c, loser, &["node1", "node2"], Duration::from_secs(60)).unwrap();
    wait_started(c, loser, 4, Duration::from_secs(60)).unwrap();
    let keys = c.registered(winner).unwrap();
    assert_eq!(keys, vec![node_name(0), node_name(1)]);
    println!(
        "    {} booted again, cleared and started: both online ({:.1} s)",
        node_name(loser),
        t.elapsed().as_secs_f64()
    );
}
