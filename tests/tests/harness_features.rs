//! Self-tests of the harness' own building blocks that later scenarios rely on: shared voting-disk
//! images, device-mapper faults, K nexuses, pausing a target, hanging some LUNs while the others
//! answer, guests with systemd as PID 1, and multipath LUNs with path and target PR-state faults.

use kmod_testing::iscsi::{Target, TargetKind, TARGET_IQN};
use kmod_testing::{faults, tcm_loop, GuestSpec, Lab};
use std::time::{Duration, Instant};
use tests::blocks;
use tests::sg_persist::{self, Registration};

/// Two guests attach one shared image (virtio-blk, cache=none, share-rw).
/// Must: a block one guest writes with O_DIRECT is read by the other with O_DIRECT.
#[test]
fn shared_disk_write_from_one_guest_is_read_by_the_other() {
    let lab = Lab::new("shared-disk").unwrap();
    let img = lab.shared_disk("vote0", 16).unwrap();
    let g = lab
        .boot_all(vec![
            GuestSpec::new("a").shared_disk(&img, "vote0"),
            GuestSpec::new("b").shared_disk(&img, "vote0"),
        ])
        .unwrap();
    let (da, db) = (
        g[0].disk_by_serial("vote0").unwrap(),
        g[1].disk_by_serial("vote0").unwrap(),
    );
    assert_eq!(blocks::distinct_bytes(&g[1], &db, 7).unwrap(), vec![0]);
    assert!(blocks::write(&g[0], &da, 7, b'Q').unwrap().success());
    assert_eq!(blocks::distinct_bytes(&g[1], &db, 7).unwrap(), vec![b'Q']);
}

/// One LUN through K=3 tcm_loop nexuses; then dm-delay and dm-flakey over it.
/// Must: 3 distinct devices that share data; a dm-delay of 1.5 s makes a direct read take at least
/// that long; dm-flakey with 0 s up fails I/O; reloading to `linear` heals the device.
#[test]
fn three_nexuses_and_device_mapper_faults() {
    let lab = Lab::new("dm-faults").unwrap();
    let g = lab.boot(GuestSpec::new("dm")).unwrap();
    let lun = tcm_loop::setup(&g, 3, 32).unwrap();
    assert_eq!(lun.devices.len(), 3);
    assert!(blocks::write(&g, &lun.devices[0], 3, b'K')
        .unwrap()
        .success());
    for dev in &lun.devices {
        assert_eq!(
            blocks::distinct_bytes(&g, dev, 3).unwrap(),
            vec![b'K'],
            "{dev}"
        );
    }

    let slow = faults::dm_delay(&g, &lun.devices[1], "slow", 1500).unwrap();
    let t = Instant::now();
    assert_eq!(blocks::distinct_bytes(&g, &slow, 3).unwrap(), vec![b'K']);
    let took = t.elapsed();
    println!("direct read through dm-delay 1500 ms took {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "dm-delay did not delay: {took:?}"
    );

    let flaky = faults::dm_flakey(&g, &lun.devices[2], "flaky", 0, 3600).unwrap();
    assert!(
        !blocks::write(&g, &flaky, 4, b'F').unwrap().success(),
        "dm-flakey down must fail writes"
    );
    faults::dm_reload(&g, "flaky", &lun.devices[2], "linear", "0").unwrap();
    assert!(
        blocks::write(&g, &flaky, 4, b'F').unwrap().success(),
        "healed device must accept writes"
    );
}

/// Fault: tgtd paused with SIGSTOP while a node reads a LUN.
/// Must: the read does not complete while the target is paused, and completes after SIGCONT.
#[test]
fn paused_target_hangs_io_until_resumed() {
    let lab = Lab::new("pause-target").unwrap();
    let target = Target::start(&lab, TargetKind::Tgt, 1, 16).unwrap();
    let g = lab.boot(target.node_spec("node1")).unwrap();
    let dev = g.scsi_disks(1).unwrap().remove(0);
    target.pause().unwrap();
    let read = g
        .spawn(&format!(
            "dd if={dev} of=/dev/null bs=4096 count=1 skip=9 iflag=direct"
        ))
        .unwrap();
    let hung = g.wait(read, Duration::from_secs(4));
    assert!(
        matches!(hung, Err(kmod_testing::Error::Timeout { .. })),
        "read finished against a paused target: {hung:?}"
    );
    target.resume().unwrap();
    let read = g
        .run_with_timeout(
            &format!("dd if={dev} of=/dev/null bs=4096 count=1 skip=10 iflag=direct"),
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(read.success(), "{}", read.stderr);
}

/// Seconds of the guest's uptime around a shell command, and its exit code: `read` from
/// /proc/uptime is a builtin, so only the command itself (its process start included) is timed.
fn timed(command: &str) -> String {
    format!(
        "read a _ < /proc/uptime; {command} >/dev/null 2>&1; rc=$?; read b _ < /proc/uptime; echo \"$a $b $rc\""
    )
}

/// (seconds, exit code) of a [`timed`] command's output.
fn took(out: &str) -> (f64, i32) {
    let f: Vec<&str> = out.split_whitespace().collect();
    match f.as_slice() {
        [a, b, rc] => (
            b.parse::<f64>().unwrap_or(f64::NAN) - a.parse::<f64>().unwrap_or(f64::NAN),
            rc.parse().unwrap_or(-1),
        ),
        _ => panic!("not a timed output: {out:?}"),
    }
}

/// Fault: the second LIO target of a node (`Target::start_extra`, its own storage guest, its LUN
/// on a virtio-scsi controller of its own in the node) paused with SIGSTOP, as one array of a
/// SAN that froze, for ~20 s, while the main target's two LUNs keep answering. The pause spans
/// QEMU's NOP-Out timeout on the hung iSCSI session (3 NOPs 5 s apart: at ~15 s it reconnects).
/// Must: the hung LUN is on another SCSI host than the main LUNs; READ KEYS
/// (`sg_persist --in -k`) on a main LUN answers within 1 s every time it is asked (timed in the
/// guest, process start included), right after the pause, after 5 s and after ~20 s; one on the
/// hung LUN does not answer within 5 s; nor does one with a 2 s SG_IO timeout (`sg-pr --timeout
/// 2`): virtio-scsi never times a command out in the guest (its `eh_timed_out` resets the
/// timer; the host is trusted to answer), so neither a command's SG_IO timeout nor the SCSI
/// error handling ever ends a hung command there. After the resume both pending commands
/// complete and a new READ KEYS on the hung LUN answers.
#[test]
fn a_paused_extra_target_hangs_its_lun_while_the_others_answer() {
    let t0 = Instant::now();
    let lab = Lab::new("hung-lun").unwrap();
    let (main, extra) = Target::start_with_extra(&lab, TargetKind::Lio, 2, 16, 1, 1).unwrap();
    let spec = main
        .node_spec("node1")
        .separate_scsi_controller()
        .iscsi_lun(&extra.lun_url(0));
    let g = lab.boot(spec).unwrap();
    println!(
        "MEASURED: two storage guests and the node up in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let luns = g.lun_paths().unwrap();
    let (m0, m1, hung) = (luns[0][0].clone(), luns[1][0].clone(), luns[2][0].clone());
    let controllers: Vec<usize> = g.scsi_paths().iter().map(|p| p.controller).collect();
    assert_eq!(
        controllers,
        [0, 0, 1],
        "the extra LUN on a controller of its own"
    );
    let host = |dev: &str| {
        let name = dev.trim_start_matches("/dev/");
        g.run_ok(&format!("ls /sys/block/{name}/device/scsi_device"))
            .unwrap()
            .trim()
            .split(':')
            .next()
            .unwrap()
            .to_string()
    };
    assert_ne!(host(&m0), host(&hung), "another SCSI host in the guest");
    for dev in [&m0, &m1, &hung] {
        assert!(g
            .run(&timed(&format!("sg_persist -n -i -k {dev}")))
            .unwrap()
            .success());
    }
    let xchg = lab.dir().join("node1/xchg");
    let sg_pr = kmod_testing::project_binary("sg-pr");

    extra.pause().unwrap();
    let paused = Instant::now();
    let hung_keys = g
        .spawn(&format!(
            "{} > /xchg/hung-keys.done",
            timed(&format!("sg_persist -n -i -k {hung}"))
        ))
        .unwrap();
    let hung_short = g
        .spawn(&format!(
            "{} > /xchg/hung-short.done",
            timed(&format!("{} --timeout 2 keys {hung}", sg_pr.display()))
        ))
        .unwrap();
    let mut worst: f64 = 0.0;
    let mut probe = |when: &str| {
        for dev in [&m0, &m1] {
            let (secs, rc) = took(
                &g.run_ok(&timed(&format!("sg_persist -n -i -k {dev}")))
                    .unwrap(),
            );
            println!("MEASURED: READ KEYS on main LUN {dev} {when}: {secs:.2} s (exit {rc})");
            assert_eq!(rc, 0, "{dev} {when}");
            assert!(secs < 1.0, "{dev} {when}: {secs:.2} s");
            worst = worst.max(secs);
        }
    };
    probe("just after the pause");
    std::thread::sleep(Duration::from_secs(5).saturating_sub(paused.elapsed()));
    assert!(
        !xchg.join("hung-keys.done").exists(),
        "READ KEYS on the hung LUN answered within 5 s"
    );
    assert!(
        !xchg.join("hung-short.done").exists(),
        "a 2 s SG_IO timeout ended a command on a hung virtio-scsi LUN"
    );
    probe("5 s into the pause");
    while paused.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(5));
        probe(&format!(
            "{:.0} s into the pause",
            paused.elapsed().as_secs_f64()
        ));
    }
    assert!(!xchg.join("hung-keys.done").exists(), "still hung");
    let hung_for = paused.elapsed();
    extra.resume().unwrap();
    let resumed = Instant::now();
    for (name, p) in [("sg_persist", hung_keys), ("sg-pr --timeout 2", hung_short)] {
        let out = g.wait(p, Duration::from_secs(90)).unwrap();
        let done = std::fs::read_to_string(xchg.join(format!(
            "hung-{}.done",
            if name == "sg_persist" {
                "keys"
            } else {
                "short"
            }
        )))
        .unwrap();
        let (secs, rc) = took(&done);
        println!(
            "MEASURED: {name} READ KEYS on the hung LUN: exit {rc} after {secs:.1} s in the guest, {:.1} s after the resume",
            out.finished_at.saturating_duration_since(resumed).as_secs_f64()
        );
    }
    let (secs, rc) = took(
        &g.run_ok(&timed(&format!("sg_persist -n -i -k {hung}")))
            .unwrap(),
    );
    println!("MEASURED: READ KEYS on the resumed LUN: {secs:.2} s (exit {rc}); main LUNs answered in at most {worst:.2} s during the {:.0} s pause", hung_for.as_secs_f64());
    assert_eq!(rc, 0, "the resumed LUN answers");
    println!(
        "MEASURED: hung-LUN self-test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A guest booted with systemd as PID 1 (`GuestSpec::systemd`), beside a plain one.
/// Must: in the systemd guest, PID 1 is systemd and reports `running` to the agent's commands,
/// the only service running is journald (none of the host's services, no getty, no udev), the
/// machine is the guest (its hostname; virtualization `qemu`, not the host's container), the
/// journal files a message at its priority, and a reboot ends QEMU as a reset does. The plain
/// guest's PID 1 is still the harness's own init.
#[test]
fn systemd_guest_runs_systemd_as_pid1_with_journald_only() {
    let lab = Lab::new("systemd-guest").unwrap();
    let t = Instant::now();
    let g = lab
        .boot_all(vec![
            GuestSpec::new("sd").systemd(true),
            GuestSpec::new("plain"),
        ])
        .unwrap();
    println!(
        "MEASURED: a systemd guest and a plain one booted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (sd, plain) = (&g[0], &g[1]);
    let out = sd
        .run_ok(
            "cat /proc/1/comm; systemctl is-system-running; hostname; systemd-detect-virt; \
             systemctl list-units --type=service --state=active --no-legend --plain | cut -d' ' -f1",
        )
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "systemd",
            "running",
            "sd",
            "qemu",
            "systemd-journald.service"
        ],
        "{out}"
    );
    let journal = sd
        .run_ok("logger -p user.err harness-err; logger -p user.info harness-info; sleep 0.5; journalctl -q -p err -o cat --no-pager")
        .unwrap();
    assert!(journal.contains("harness-err"), "{journal}");
    assert!(!journal.contains("harness-info"), "{journal}");
    assert_ne!(plain.run_ok("cat /proc/1/comm").unwrap().trim(), "systemd");

    let _reboot = sd.spawn("systemctl reboot --force --force").unwrap();
    assert!(
        sd.wait_exit(Duration::from_secs(30)).is_some(),
        "a reboot in a systemd guest ends QEMU"
    );
}

/// Multipath mechanics on LIO, one storage guest and one node: one LUN served through two target
/// ports (`tpgt_1` on 3260, `tpgt_2` on 3261), the node attaching it through both.
/// Must: the node has two disks for the LUN, in path order (VPD 0x83: the same NAA id, target
/// ports `,t,0x0001` then `,t,0x0002`, distinct relative ports); a key registered through path A
/// is one registration, on A's port only; after path B is detached (its disk gone) and a new
/// path through B's port attached (a new disk), the new path is a new, unregistered I_T nexus
/// (registering through it adds a third registration, beside B's old one); with path A offline
/// a command through A fails at once while the other path works, and works again once online;
/// restart_keeping_pr_state brings back the APTPL-persisted registrations exactly (keys, ports,
/// initiator ports); restart_dropping_pr_state leaves no registration while the LUN keeps its
/// NAA id, and a read issued during it completes; CLEAR needs a registered nexus and then
/// removes every registration.
#[test]
fn two_paths_per_lun_path_faults_and_target_pr_state_loss() {
    const KA: u64 = 0xa1;
    const KB: u64 = 0xb1;
    const KN: u64 = 0xc1;
    let t0 = Instant::now();
    let lab = Lab::new("multipath").unwrap();
    let target = Target::start_with_paths(&lab, TargetKind::Lio, 1, 16, 2).unwrap();
    let g = lab.boot(target.node_spec("node1")).unwrap();
    println!(
        "MEASURED: storage guest and node up in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let status = |dev: &str| {
        let mut s = sg_persist::read_full_status(&g, dev).unwrap();
        s.sort_by_key(|r| (r.key, r.transport_id.clone()));
        s
    };
    let keys = |dev: &str| sg_persist::read_keys(&g, dev).unwrap();

    // Two paths, in path order.
    let paths = g.lun_paths().unwrap();
    assert!(paths.len() == 1 && paths[0].len() == 2, "{paths:?}");
    let (a, b) = (paths[0][0].clone(), paths[0][1].clone());
    let (ida, idb) = (
        sg_persist::device_id(&g, &a).unwrap(),
        sg_persist::device_id(&g, &b).unwrap(),
    );
    assert!(ida.naa.starts_with("0x6001405"), "{ida:?}");
    assert_eq!(ida.naa, idb.naa, "both paths lead to one LUN");
    assert_eq!(ida.target_port, format!("{TARGET_IQN},t,0x0001"));
    assert_eq!(idb.target_port, format!("{TARGET_IQN},t,0x0002"));
    assert_ne!(ida.relative_port, idb.relative_port);

    // A registration through A is A's nexus only.
    assert!(sg_persist::register(&g, &a, KA).unwrap().success());
    let st = status(&b);
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(
        (st[0].key, st[0].relative_port, st[0].all_target_ports),
        (KA, ida.relative_port, false),
        "{st:?}"
    );
    assert!(sg_persist::register(&g, &b, KB).unwrap().success());
    let st = status(&a);
    let on_b: Vec<&Registration> = st.iter().filter(|r| r.key == KB).collect();
    assert!(
        st.len() == 2 && on_b.len() == 1 && on_b[0].relative_port == idb.relative_port,
        "{st:?}"
    );
    assert_ne!(st[0].transport_id, st[1].transport_id, "one ISID per path");
    let old_b = on_b[0].transport_id.clone();

    // Path B removed, a new path through B's port added.
    let took = g.detach_path(0, 1).unwrap();
    println!("MEASURED: detach_path (device_del until the guest's SCSI device is gone): {took:?}");
    assert!(
        g.run(&format!("[ ! -e {b} ]")).unwrap().success(),
        "{b} still there"
    );
    assert_eq!(g.lun_paths().unwrap(), [[a.clone()]]);
    let t = Instant::now();
    let (added, n) = g.attach_path(0, &target.path_url(0, 1)).unwrap();
    println!(
        "MEASURED: attach_path (drive_add + device_add until the new disk is there): {:?}",
        t.elapsed()
    );
    assert_eq!(
        (added.lun, added.path, added.device_id()),
        (0, 2, "lun0-p2".into())
    );
    assert!(g.run(&format!("[ -b {n} ]")).unwrap().success());
    assert_eq!(g.lun_paths().unwrap(), [[a.clone(), n.clone()]]);
    assert_eq!(sg_persist::device_id(&g, &n).unwrap(), idb);
    assert_eq!(status(&n).len(), 2, "the new path registered nothing yet");
    assert!(sg_persist::register(&g, &n, KN).unwrap().success());
    let st = status(&n);
    let new = st.iter().find(|r| r.key == KN);
    assert!(
        st.len() == 3
            && st.iter().any(|r| r.key == KB && r.transport_id == old_b)
            && new.is_some_and(|r| r.relative_port == idb.relative_port && r.transport_id != old_b),
        "the new path must be a new nexus beside B's old registration: {st:?}"
    );

    // Path A offline, then online.
    faults::path_offline(&g, &a).unwrap();
    // Timed in the guest: the agent's round trip grows with the host's load.
    let out = g
        .run(&format!(
            "s=$(date +%s%N); sg_persist -n -i -k {a}; rc=$?; \
             echo ms=$(( ($(date +%s%N) - s) / 1000000 )); exit $rc"
        ))
        .unwrap();
    let failed_ms: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ms="))
        .and_then(|ms| ms.trim().parse().ok())
        .unwrap_or(u64::MAX);
    println!(
        "MEASURED: a command through an offline path failed after {failed_ms} ms (in the guest): {}",
        out.stderr.trim()
    );
    assert!(
        !out.success() && out.stderr.contains("No such device or address"),
        "{out:?}"
    );
    assert!(failed_ms < 2000, "{failed_ms} ms");
    assert_eq!(keys(&n).len(), 3, "the other path works");
    faults::path_online(&g, &a).unwrap();
    assert_eq!(keys(&a).len(), 3, "the path works again");

    // APTPL: the whole PR state comes back after restart_keeping_pr_state.
    assert!(g
        .run(&format!(
            "sg_persist -n --out --register-ignore --param-aptpl --param-sark=0x{KA:x} {a}"
        ))
        .unwrap()
        .success());
    let before = status(&a);
    let down = target.restart_keeping_pr_state().unwrap();
    let after = status(&a);
    println!(
        "MEASURED: restart_keeping_pr_state: target down {down:?}; {} of {} registrations back",
        after.len(),
        before.len()
    );
    assert_eq!(after, before, "APTPL registrations survive the restart");

    // restart_dropping_pr_state, with a read issued while the target is down.
    let read = g
        .spawn(&format!(
            "sleep 1; dd if={a} of=/dev/null bs=4096 count=1 skip=3 iflag=direct"
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let down = target.restart_dropping_pr_state().unwrap();
    let restarted = t.elapsed();
    let read = g.wait(read, Duration::from_secs(60)).unwrap();
    println!(
        "MEASURED: restart_dropping_pr_state: target down {down:?} (call {restarted:?}); a read \
         issued ~1 s into it completed {:?} after the restart began, exit {}",
        read.finished_at - t,
        read.code
    );
    assert!(read.success(), "{read:?}");
    assert_eq!(status(&a), [], "no registration left");
    assert_eq!(status(&n), []);
    assert_eq!(sg_persist::device_id(&g, &a).unwrap(), ida, "same LUN id");

    // CLEAR: refused from an unregistered nexus, then clears every registration.
    assert!(sg_persist::register(&g, &a, KA).unwrap().success());
    let refused = g
        .run(&format!(
            "sg_persist -n --out --clear --param-rk=0x{KA:x} {n}"
        ))
        .unwrap();
    assert!(!refused.success());
    assert_eq!(keys(&a), [KA]);
    assert!(sg_persist::register(&g, &n, KN).unwrap().success());
    assert!(g
        .run(&format!(
            "sg_persist -n --out --clear --param-rk=0x{KA:x} {a}"
        ))
        .unwrap()
        .success());
    assert_eq!(keys(&n), [] as [u64; 0]);
    println!(
        "MEASURED: multipath self-test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
