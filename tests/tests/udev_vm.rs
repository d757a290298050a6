//! The udev rules in udev/ under a real udevd in a guest.

use kmod_testing::{repo_root, tcm_loop, GuestSpec, Lab};

/// One LIO LUN seen through two tcm_loop nexuses (sda, sdb) plus a LUN-less virtio disk; the
/// shared LUN's WWID listed in /etc/fenced/shared-wwids.
/// Must: both paths of the listed LUN get /dev/fenced/<wwid>-<name> links and a 30 s SCSI
/// timeout; `fenced`'s `/dev/fenced/*` pattern finds exactly those paths; the watchdog node is
/// root-only (0600). Must not: an unlisted disk be tagged.
#[test]
fn shared_lun_paths_are_linked_and_get_the_scsi_timeout() {
    let lab = Lab::new("udev").unwrap();
    let other = lab.shared_disk("other", 4).unwrap();
    let g = lab
        .boot(GuestSpec::new("udev").shared_disk(&other, "other"))
        .unwrap();
    let lun = tcm_loop::setup(&g, 2, 16).unwrap();
    let rules = repo_root().join("udev");
    let out = g
        .run_ok(&format!(
            r#"set -e
# udevadm refuses to act in a chroot (the guest runs commands in one) unless told it is fine.
export SYSTEMD_IGNORE_CHROOT=1
mkdir -p /etc/udev/rules.d /etc/fenced
cp {rules}/*.rules /etc/udev/rules.d/
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add && udevadm settle --timeout=30
wwn=$(udevadm info --query=property {a} | sed -n 's/^ID_WWN=//p')
echo "$wwn" > /etc/fenced/shared-wwids
udevadm trigger --action=change && udevadm settle --timeout=30
echo "wwn=$wwn"
ls /dev/fenced/
echo "timeout_a=$(cat /sys/block/$(basename {a})/device/timeout)"
echo "timeout_b=$(cat /sys/block/$(basename {b})/device/timeout)"
echo "watchdog=$(stat -c %a /dev/watchdog0)"
"#,
            rules = rules.display(),
            a = lun.devices[0],
            b = lun.devices[1],
        ))
        .unwrap();
    println!("{out}");
    let wwn = out.lines().find_map(|l| l.strip_prefix("wwn=")).unwrap();
    assert!(wwn.starts_with("0x"), "the LUN has a WWN: {out}");
    for dev in &lun.devices {
        let name = dev.trim_start_matches("/dev/");
        assert!(
            out.contains(&format!("{wwn}-{name}")),
            "link for {dev}: {out}"
        );
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with(wwn)).count(),
        2,
        "exactly the two paths: {out}"
    );
    assert!(
        out.contains("timeout_a=30") && out.contains("timeout_b=30"),
        "{out}"
    );
    assert!(out.contains("watchdog=600"), "{out}");
}
