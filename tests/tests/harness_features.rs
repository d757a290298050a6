//! Self-tests of the harness' own building blocks that later scenarios rely on: shared voting-disk
//! images, device-mapper faults, K nexuses, pausing a target, and guests with systemd as PID 1.

use kmod_testing::iscsi::{Target, TargetKind};
use kmod_testing::{faults, tcm_loop, GuestSpec, Lab};
use std::time::{Duration, Instant};
use tests::blocks;

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
