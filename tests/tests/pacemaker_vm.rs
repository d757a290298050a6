//! Real clusterware: corosync 3 and Pacemaker 2.1 (Debian 12's) on three node guests with
//! systemd as PID 1, a guest LAN of their own for corosync (apart from the storage transport),
//! fenced.service on every node, one shared LIO iSCSI LUN and three voting disks. Set up from
//! the configuration and commands of fenced/docs/pacemaker.md ([`tests::pacemaker`]).

use kmod_testing::iscsi::TargetKind;
use kmod_testing::Guest;
use std::time::{Duration, Instant};
use tests::blocks;
use tests::cluster::{node_name, Cluster, ClusterSpec};
use tests::pacemaker::{
    self, crm_mon, doc_block, fence_history, fences_done, resources, unfencings_done,
    wait_fences_recorded, wait_online, wait_started,
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

/// One 3-node cluster, in turn:
/// - Start order. Fault: node3 marked dead before anything starts (in this boot). Must: fenced
///   refuses there (exit 7, not restarted), so corosync and Pacemaker do not start on node3;
///   node1 and node2 form the cluster. Then the operator's override (`fenced clear --force`:
///   node3 never ran anything) and the start commands: all three online.
/// - Eviction by partition (proof 1). Fault: node2's cluster-network link cut from the host
///   (its corosync loses the token, its storage stays reachable). Must: see
///   [`node2_is_evicted`].
/// - Rejoin (proof 3). node2 boots again and runs the document's start commands, nothing else:
///   must: its fenced waits without a key, Pacemaker unfences it through fence_fenced `on`, and
///   only then is its key back; all three online, no resource failed.
/// - Hung node (proofs 2 and 3's negative). Fault: node2's guest paused (its kernel frozen).
///   Must: Pacemaker fences it; `stonith_admin --unfence node2` and `fenced clear node2` are
///   refused while it is still frozen; when it resumes its write does not reach the LUN and it
///   resets. Must not: node2's key back, a survivor reset.
/// - `stonith_admin --fence node3` (proof 5): exit 0 with node3's key gone and node3 marked
///   dead; node3 resets; node1 stays.
#[test]
fn pacemaker_fences_node2_and_lets_it_back_only_after_a_reboot() {
    let mut c = boot("pacemaker");
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

    // node3 has not rebooted, so only the override lets it back (nothing ran on it).
    clear_is_refused(&c, "node3");
    let cleared = c.fenced(0, "clear --force node3").unwrap();
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
        "node3 cleared (--force) and started: fenced {}, all three online ({:.1} s)",
        unit_state(&c.nodes[2], "fenced.service"),
        t.elapsed().as_secs_f64()
    ));
    let keys = c.registered(0).unwrap();
    assert!((0..3).all(|i| keys.contains(&node_name(i))), "{keys:?}");

    let before = configure(&c);
    node2_is_evicted(&c, &before, "node2's cluster link cut", || {
        c.nodes[1].set_lan_link(false).unwrap()
    });
    rejoin(&mut c, 1, 0);
    frozen_node2_stays_out(&c);

    // A fence asked of Pacemaker by hand: `stonith_admin --fence` returns 0 only once node3's
    // key is gone from the LUN and the voting disks mark it dead; node3 resets.
    let t = Instant::now();
    let fence = c.nodes[0].run("stonith_admin --fence node3").unwrap();
    let took = t.elapsed();
    assert!(fence.success(), "{fence:?}");
    assert!(!c.registered(0).unwrap().contains(&node_name(2)));
    let st = c.daemon_status(0).unwrap();
    let dead = &st["authority"]["dead"];
    assert!(
        dead.as_array()
            .is_some_and(|d| d.contains(&serde_json::json!(2))),
        "{st}"
    );
    assert!(
        c.nodes[2]
            .wait_exit(c.timing.reset_bound() + Duration::from_secs(5))
            .is_some(),
        "node3 did not reset after stonith_admin --fence"
    );
    assert!(c.nodes[0].is_running());
    println!(
        "MEASURED: stonith_admin --fence node3 returned 0 after {:.1} s (host clock, the command's round trip included); node3 reset",
        took.as_secs_f64()
    );
}

/// `fenced clear NODE` on node1 for a node whose slot does not show a reboot since its fence:
/// exit 1, saying so. Returns the command's output.
fn clear_is_refused(c: &Cluster, node: &str) -> kmod_testing::Output {
    let out = c.fenced(0, &format!("clear {node}")).unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("does not show it rebooted since"),
        "{}",
        out.stderr
    );
    out
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
    let fences = fences_done(&fence_history(node1, "node2").unwrap());
    let cut = Instant::now();
    fault();
    let reset_at = c.nodes[1]
        .wait_exit(Duration::from_secs(150))
        .map(|at| at - cut)
        .expect("node2 was not reset within 150 s of the cut");
    // node2 sees its dead mark and resets before the agent returns (it confirms the marker
    // with one more round), so Pacemaker records the fence a moment after the reset.
    wait_fences_recorded(node1, "node2", fences + 1, Duration::from_secs(60)).unwrap();
    let fence_lines: Vec<(u64, String)> = journal_timeline_all(node1)
        .unwrap()
        .into_iter()
        .filter(|(at, m)| {
            *at >= cut_mono
                && m.contains("targeting node2")
                && !m.contains("'on'")
                && !m.contains("(on)")
        })
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
/// then node2 rejoins ([`rejoin`]). Then the race: the cluster loses its cluster network;
/// both nodes keep quorum and fence each other through fence_fenced. Per round, must: exactly
/// one node resets, the other keeps running with its key on the LUN, the loser's key gone, and
/// Pacemaker on the survivor records the fence; then the loser boots again and is let back in
/// by Pacemaker's unfencing, both online for the next round. Must not: both reset, or neither.
/// Long (about 6 min for one round), so not in the default suite: `FENCED_TWO_NODE_ROUNDS=5
/// cargo nextest run --profile long -p tests --test pacemaker_vm --run-ignored only
/// --no-capture` (BENCHMARKS.md records 5 rounds).
#[test]
#[ignore = "long: the two-node race rounds; see the doc comment for the command"]
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
        // Fences of each node recorded so far, as the other node's fencer tells.
        let fences: Vec<usize> = (0..2)
            .map(|i| fences_done(&fence_history(&c.nodes[1 - i], &node_name(i)).unwrap()))
            .collect();
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
        wait_fences_recorded(
            &c.nodes[winner],
            &node_name(loser),
            fences[loser] + 1,
            Duration::from_secs(60),
        )
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
}

/// Brings `node`, reset by a fence, back with no command typed but the document's start
/// commands: it boots again (same guest, LUNs and fenced.toml), runs `systemctl start
/// pacemaker`; its fenced finds it marked dead after a reboot and waits without a key, corosync
/// and Pacemaker start, and Pacemaker unfences it from `observer`'s side (fence_fenced `on`: the
/// rejoin evidence in its slot, the dead mark cleared, its own fenced registers). Must: its key
/// is back only after that, the authority marks nobody dead, all online with the resources
/// started. Must not: a `fenced clear` or `stonith_admin --unfence` by the test.
fn rejoin(c: &mut Cluster, node: usize, observer: usize) {
    let name = node_name(node);
    let t = Instant::now();
    c.reboot(node).unwrap();
    pacemaker::install_node(c, node).unwrap();
    let booted = t.elapsed();
    let unfenced_before = unfencings_done(&fence_history(&c.nodes[observer], &name).unwrap());
    let started = pacemaker::start(c, &[node]).unwrap();
    assert!(started[0].success(), "{:?}", started[0]);
    let start_returned = t.elapsed();
    let end = Instant::now() + Duration::from_secs(180);
    let registered_at = loop {
        if c.registered(observer).unwrap().contains(&name) {
            break t.elapsed();
        }
        assert!(
            Instant::now() < end,
            "{name}'s key not back within 180 s: fenced {}; its journal:\n{}",
            unit_state(&c.nodes[node], "fenced.service"),
            c.nodes[node]
                .run("journalctl -u fenced --no-pager -o cat | tail -30")
                .map(|o| o.stdout)
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let names: Vec<String> = (0..c.nodes.len()).map(node_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_online(c, observer, &names, Duration::from_secs(180)).unwrap();
    wait_online(c, node, &names, Duration::from_secs(60)).unwrap();
    wait_started(c, node, 4, Duration::from_secs(60)).unwrap();
    // The order on the node: waited without a key, then let back in, then registered.
    let log = ok(&c.nodes[node], "journalctl -u fenced --no-pager -o cat");
    let waited = log.find("waiting to be let back in");
    let let_in = log.find("let back in by the voting-disk authority");
    let registered = log.find("daemon: registered lun=");
    assert!(
        waited.is_some() && waited < let_in && let_in < registered,
        "{name}'s fenced journal:\n{log}"
    );
    let unfenced = unfencings_done(&fence_history(&c.nodes[observer], &name).unwrap());
    assert!(
        unfenced > unfenced_before,
        "Pacemaker did not record {name}'s unfencing"
    );
    let st = c.daemon_status(observer).unwrap();
    assert_eq!(st["authority"]["dead"], serde_json::json!([]), "{st}");
    let keys = c.registered(observer).unwrap();
    assert_eq!(keys.len(), c.nodes.len(), "{keys:?}");
    let xml = crm_mon(&c.nodes[observer]).unwrap();
    assert!(!xml.contains("<failure "), "a resource failed:\n{xml}");
    println!(
        "MEASURED: rejoin of {name} with no command typed: booted again in {:.1} s, `systemctl start pacemaker` returned at {:.1} s, its key registered (unfenced by Pacemaker) at {:.1} s, all online and started at {:.1} s",
        booted.as_secs_f64(),
        start_returned.as_secs_f64(),
        registered_at.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}

/// node2's kernel frozen (its guest paused) in a running 3-node cluster. Must: Pacemaker on
/// node1 and node3 fences it; while it is still frozen, `stonith_admin --unfence node2` (the
/// agent's `on`) and `fenced clear node2` are refused (its slot shows no reboot since the
/// fence) and its key stays off the LUN; when it resumes, its write does not reach the LUN and
/// it resets within L + W + P. Must not: node1 or node3 reset.
fn frozen_node2_stays_out(c: &Cluster) {
    let node1 = &c.nodes[0];
    let fences = fences_done(&fence_history(node1, "node2").unwrap());
    let t = Instant::now();
    c.nodes[1].pause().unwrap();
    wait_fences_recorded(node1, "node2", fences + 1, Duration::from_secs(120)).unwrap();
    let fenced_after = t.elapsed();
    assert!(!c.registered(0).unwrap().contains(&node_name(1)));
    let st = c.daemon_status(0).unwrap();
    assert_eq!(st["authority"]["dead"], serde_json::json!([1]), "{st}");

    let unfence = node1.run("stonith_admin --unfence node2").unwrap();
    assert!(!unfence.success(), "unfencing a frozen node2: {unfence:?}");
    let clear = clear_is_refused(c, "node2");
    assert!(!c.registered(0).unwrap().contains(&node_name(1)));
    assert_eq!(
        c.daemon_status(0).unwrap()["authority"]["dead"],
        serde_json::json!([1])
    );
    println!(
        "    node2 frozen: fenced by Pacemaker {:.1} s after the pause; stonith_admin --unfence exit {}, fenced clear exit {}: {}",
        fenced_after.as_secs_f64(),
        unfence.code,
        clear.code,
        clear.stderr.trim()
    );

    let dev = |i: usize| c.lun_devices[i][0].clone();
    let resumed = Instant::now();
    c.nodes[1].resume().unwrap();
    let write = match blocks::write(&c.nodes[1], &dev(1), 71, b'Z') {
        Ok(w) => {
            assert_ne!(w.code, 0, "node2's write after it resumed must fail");
            "refused"
        }
        Err(_) => "cut short by the reset",
    };
    let reset = c.nodes[1]
        .wait_exit(c.timing.reset_bound() + Duration::from_secs(5))
        .expect("node2 must reset after it resumes");
    assert_eq!(
        blocks::distinct_bytes(node1, &dev(0), 71).unwrap(),
        vec![0],
        "node2's data must not be on the LUN"
    );
    assert!(c.nodes[0].is_running() && c.nodes[2].is_running());
    println!(
        "MEASURED: pacemaker, node2's guest paused: fence recorded {:.1} s after the pause; unfence refused while frozen; node2 reset {:.1} s after it resumed, its write {write} and not on the LUN",
        fenced_after.as_secs_f64(),
        reset.saturating_duration_since(resumed).as_secs_f64()
    );
}

/// Side by side with fence_scsi (proof 6), run by hand: the partition of the default scenario on
/// the same kind of cluster, but with fence_scsi as the stonith device (`devices=` the shared
/// LUN, `meta provides=unfencing`, as its documentation configures it) and its watchdog check
/// script (`/usr/share/cluster/fence_scsi_check` copied to `/etc/watchdog.d`, the watchdog
/// daemon started with Debian's default configuration once every node is unfenced), and no
/// fenced running. Fault: node2's
/// cluster-network link cut. Must: Pacemaker on node1 and node3 fences node2 through fence_scsi
/// (recorded successful), node2's fence_scsi key is gone from the LUN, its write is refused, and
/// the watchdog daemon's check reboots node2; node1 and node3 keep their resources. Records the
/// times for BENCHMARKS.md:
/// `cargo nextest run --profile long -p tests --test pacemaker_vm --run-ignored only -E 'test(fence_scsi)' --no-capture`.
#[test]
#[ignore = "comparison run by hand; BENCHMARKS.md records it"]
fn fence_scsi_fences_the_same_partition_for_comparison() {
    let c = boot("pacemaker-fence-scsi");
    let say = |s: String| println!("    {s}");
    let node1 = &c.nodes[0];
    // The harness registered fenced's keys at boot: fence_scsi starts from a LUN without any.
    let dev = c.lun_devices[0][0].clone();
    assert!(
        c.lun_devices.iter().all(|d| d[0] == dev),
        "the LUN must have one name on every node: {:?}",
        c.lun_devices
    );
    ok(
        node1,
        &format!(
            "sg_persist -n --out --clear --param-rk=0x{:x} {dev}",
            tests::cluster::node_key(0)
        ),
    );
    for g in &c.nodes {
        ok(
            g,
            "install -d /etc/watchdog.d && install -m 0755 /usr/share/cluster/fence_scsi_check /etc/watchdog.d/\n\
             install -m 0644 /lib/systemd/system/watchdog.service /etc/systemd/system/\n\
             systemctl daemon-reload",
        );
        // pacemaker-fenced gives an agent's metadata action 10 s and drops a device whose
        // metadata does not come (then "No fence device" for every unfencing). fence_scsi is
        // Python: its first run in a guest reads the interpreter and its modules over 9p.
        let mut took = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            ok(g, "fence_scsi -o metadata >/dev/null");
            took.push(format!("{:.1} s", t.elapsed().as_secs_f64()));
        }
        say(format!(
            "{}: fence_scsi -o metadata took {}",
            g.name(),
            took.join(", then ")
        ));
    }
    // pacemaker-fenced runs an agent's metadata action (10 s limit) when a device appears or
    // changes and when the fencer starts; a fencer without it cannot unfence ("No fence
    // device"; Pacemaker gives up until the next transition). fence_scsi takes 2-4 s alone in a
    // TCG guest, but three at once, or one during Pacemaker's start, ran past 10 s. So the
    // device is created once the cluster has settled, and a node whose fencer timed out gets
    // the device registered again (a harmless change of it), up to 3 times; counted below.
    let pending: Vec<_> = c
        .nodes
        .iter()
        .map(|g| g.spawn("systemctl start pacemaker.service").unwrap())
        .collect();
    for (g, p) in c.nodes.iter().zip(pending) {
        let out = g.wait(p, Duration::from_secs(240)).unwrap();
        assert!(out.success(), "{}: {out:?}", g.name());
    }
    wait_online(
        &c,
        0,
        &["node1", "node2", "node3"],
        Duration::from_secs(180),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(20));
    let metadata = |g: &Guest| {
        let n = |pattern: &str| {
            ok(
                g,
                &format!("grep -c '{pattern}' /var/log/pacemaker/pacemaker.log || true"),
            )
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
        };
        (
            n("fence_scsi_metadata.*exited with status 0"),
            n("Could not retrieve metadata for fencing agent fence_scsi"),
        )
    };
    let t = Instant::now();
    // The device as fence_scsi's documentation configures it (`pcs stonith create scsi-fence
    // fence_scsi pcmk_host_list=... devices=... meta provides=unfencing`), written with cibadmin:
    // pcs validates a Python agent for over two minutes under TCG.
    ok(
        node1,
        &format!(
            "cibadmin --create -o resources --xml-text '<primitive id=\"scsi-fence\" class=\"stonith\" type=\"fence_scsi\">\
             <instance_attributes id=\"scsi-fence-ia\">\
             <nvpair id=\"scsi-fence-hosts\" name=\"pcmk_host_list\" value=\"node1 node2 node3\"/>\
             <nvpair id=\"scsi-fence-devices\" name=\"devices\" value=\"{dev}\"/>\
             <nvpair id=\"scsi-fence-reboot\" name=\"pcmk_reboot_action\" value=\"off\"/></instance_attributes>\
             <meta_attributes id=\"scsi-fence-meta\"><nvpair id=\"scsi-fence-provides\" name=\"provides\" value=\"unfencing\"/></meta_attributes>\
             <operations><op id=\"scsi-fence-monitor\" name=\"monitor\" interval=\"60s\"/></operations></primitive>'\n\
             crm_attribute --type crm_config --name stonith-enabled --update true\n\
             crm_attribute --type crm_config --name stonith-timeout --update 60s"
        ),
    );
    for r in 1..=3 {
        ok(
            node1,
            &format!(
                "cibadmin --create -o resources --xml-text '<primitive id=\"dummy{r}\" class=\"ocf\" provider=\"pacemaker\" type=\"Dummy\"><operations><op id=\"dummy{r}-monitor\" name=\"monitor\" interval=\"10s\"/></operations></primitive>'"
            ),
        );
    }
    let mut timed_out = 0;
    for attempt in 1..=4 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let states = loop {
            let states: Vec<(u32, u32)> = c.nodes.iter().map(metadata).collect();
            if states
                .iter()
                .all(|&(read, failed)| read > 0 || failed >= attempt)
                || Instant::now() > deadline
            {
                break states;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        timed_out = states.iter().map(|s| s.1).sum();
        if states.iter().all(|&(read, _)| read > 0) {
            break;
        }
        assert!(
            attempt < 4,
            "fence_scsi's metadata still not read: {states:?}"
        );
        std::thread::sleep(Duration::from_secs(10));
        ok(
            node1,
            &format!("crm_resource --resource scsi-fence --meta --set-parameter description --parameter-value 'registered again ({attempt})'"),
        );
    }
    let before = match wait_started(&c, 0, 4, Duration::from_secs(180)) {
        Ok(b) => b,
        Err(e) => {
            for g in &c.nodes {
                let d = g.run("stonith_admin --list-registered; stonith_admin --history '*' --verbose; grep -i -E 'scsi|unfenc|fence' /var/log/pacemaker/pacemaker.log | tail -60; journalctl -b --no-pager | grep -i -E 'fence|scsi' | tail -40").unwrap();
                println!("===== {}:\n{}{}", g.name(), d.stdout, d.stderr);
            }
            panic!("{e}");
        }
    };
    // The watchdog daemon runs fence_scsi_check (Python) every second: started before
    // Pacemaker, its load on TCG guests pushed pacemaker-fenced's metadata call for fence_scsi
    // past its 10 s limit (8-10 s measured), and the device could unfence nobody.
    for g in &c.nodes {
        ok(
            g,
            "systemctl start watchdog.service && systemctl is-active watchdog.service",
        );
    }
    let keys = ok(node1, &format!("sg_persist -n -k {dev}"));
    say(format!(
        "fence_scsi configured and every node unfenced ({:.1} s; {timed_out} metadata call(s) timed out on the way): {before:?}; {}",
        t.elapsed().as_secs_f64(),
        keys.trim()
    ));
    // Where fence_scsi keeps the node's key: STORE_PATH + ".key", /var/run/cluster.key in
    // Debian 12's fence-agents (/var/run/cluster/fence_scsi.key in later ones).
    let node2_key = ok(
        &c.nodes[1],
        "cat /var/run/cluster/fence_scsi.key 2>/dev/null || cat /var/run/cluster.key",
    )
    .trim()
    .to_string();
    assert!(keys.contains(&node2_key), "node2's key {node2_key}: {keys}");

    let cut_mono = uptime_us(node1);
    let fences = fences_done(&fence_history(node1, "node2").unwrap());
    let cut = Instant::now();
    c.nodes[1].set_lan_link(false).unwrap();
    wait_fences_recorded(node1, "node2", fences + 1, Duration::from_secs(120)).unwrap();
    let recorded = cut.elapsed();
    let keys = ok(node1, &format!("sg_persist -n -k {dev}"));
    assert!(!keys.contains(&node2_key), "node2's key is gone: {keys}");
    let write = match blocks::write(&c.nodes[1], &dev, 81, b'S') {
        Ok(w) => {
            assert_ne!(w.code, 0, "node2's write after the fence must fail");
            "refused"
        }
        Err(_) => "cut short by the reboot",
    };
    let reset_at = c.nodes[1]
        .wait_exit(Duration::from_secs(120))
        .map(|at| at - cut)
        .expect("node2 was not rebooted by its watchdog check within 120 s of the fence");
    assert_eq!(
        blocks::distinct_bytes(node1, &dev, 81).unwrap(),
        vec![0],
        "node2's data must not be on the LUN"
    );
    let lines: Vec<(u64, String)> = journal_timeline_all(node1)
        .unwrap()
        .into_iter()
        .filter(|(at, m)| *at >= cut_mono && m.contains("targeting node2"))
        .collect();
    let requested = lines.first().map_or(0, |(at, _)| at - cut_mono);
    let confirmed = lines
        .iter()
        .find(|(_, m)| m.contains(": OK"))
        .map_or(0, |(at, _)| at - cut_mono);
    for (at, m) in &lines {
        println!("      node1 +{:.2} s: {m}", (at - cut_mono) as f64 / 1e6);
    }
    assert!(c.nodes[0].is_running() && c.nodes[2].is_running());
    let after = wait_started(&c, 0, 4, Duration::from_secs(60)).unwrap();
    for (id, _, node) in &before {
        if node.as_deref() != Some("node2") {
            let now = after.iter().find(|(i, _, _)| i == id).unwrap();
            assert_eq!(&now.2, node, "{id} moved: {before:?} -> {after:?}");
        }
    }
    println!(
        "MEASURED: fence_scsi, node2's cluster link cut: fence requested {:.1} s after the cut, confirmed by Pacemaker {:.1} s after the cut (recorded in the history at {:.1} s), node2's write {write}, node2 rebooted by the watchdog daemon's fence_scsi_check {:.1} s after the cut",
        requested as f64 / 1e6,
        confirmed as f64 / 1e6,
        recorded.as_secs_f64(),
        reset_at.as_secs_f64()
    );
}
