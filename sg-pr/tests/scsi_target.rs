//! Kernel-facing scenario for the VM harness: two initiators (paths) on ONE LUN, e.g. LIO
//! tcm_loop /dev/sda + /dev/sdb, or two iSCSI sessions.
//!
//! Environment:
//! - `SG_PR_TEST_DEV_A`, `SG_PR_TEST_DEV_B`: the two paths. Unset: the test prints SKIP and
//!   passes, unless `SG_PR_TEST_REQUIRE=1` (set it in the guest, where nothing may skip).
//! - `SG_PR_TEST_ABORT=1`: use PREEMPT AND ABORT (do NOT set on tcm_loop: it hangs the guest
//!   on Linux 6.1; use LIO over iSCSI, or tgt to exercise the fallback).
//! - `SG_PR_TEST_EXPECT_PA_FALLBACK=1`: the target lacks PREEMPT AND ABORT (tgt); the
//!   fallback must be reported.
//! - `SG_PR_TEST_NO_FULL_STATUS=1`: the target lacks READ FULL STATUS (tgt): ILLEGAL REQUEST.
//!
//! The scenario clears every registration on the LUN at the start and at the end.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sg_pr::{
    AnyDevice, Backend, BlockPrDevice, Error, PersistentReservations, PrDevice, PrType,
    RegisterOptions, ReservationKey, SgDevice,
};

const KEY_A: ReservationKey = ReservationKey(0xa1a1);
const KEY_B: ReservationKey = ReservationKey(0xb2b2);
const WERO: PrType = PrType::WriteExclusiveRegistrantsOnly;

fn paths() -> Option<(PathBuf, PathBuf)> {
    let a = std::env::var_os("SG_PR_TEST_DEV_A");
    let b = std::env::var_os("SG_PR_TEST_DEV_B");
    match (a, b) {
        (Some(a), Some(b)) => Some((a.into(), b.into())),
        _ => {
            assert!(
                std::env::var("SG_PR_TEST_REQUIRE").as_deref() != Ok("1"),
                "SG_PR_TEST_REQUIRE=1 but SG_PR_TEST_DEV_A/SG_PR_TEST_DEV_B are not set"
            );
            eprintln!(
                "SKIP: set SG_PR_TEST_DEV_A and SG_PR_TEST_DEV_B (two paths to one LUN) to run"
            );
            None
        }
    }
}

/// The device named by `var`, or None after a loud SKIP; with `SG_PR_TEST_REQUIRE=1` a missing
/// variable fails the test (in the guest nothing may skip).
fn required_device(var: &str, example: &str) -> Option<std::ffi::OsString> {
    let dev = std::env::var_os(var);
    if dev.is_none() {
        assert!(
            !flag("SG_PR_TEST_REQUIRE"),
            "SG_PR_TEST_REQUIRE=1 but {var} is not set"
        );
        eprintln!("SKIP: set {var} to {example}");
    }
    dev
}

fn flag(name: &str) -> bool {
    std::env::var(name).as_deref() == Ok("1")
}

fn open(path: &PathBuf) -> PrDevice<SgDevice> {
    PrDevice::open(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_timeout(Duration::from_secs(20))
}

/// Removes every registration: register our key with IGNORE EXISTING, then CLEAR.
fn wipe(dev: &PrDevice<SgDevice>) {
    let opts = RegisterOptions {
        ignore_existing: true,
        ..RegisterOptions::default()
    };
    dev.register(ReservationKey::ZERO, KEY_B, opts).unwrap();
    dev.clear(KEY_B).unwrap();
}

#[test]
fn two_initiators_register_reserve_preempt_and_observe() {
    let Some((path_a, path_b)) = paths() else {
        return;
    };
    let a = open(&path_a);
    let b = open(&path_b);

    // Drain power-on / nexus-loss unit attentions; they must be absorbed, not fail.
    a.test_unit_ready().unwrap();
    b.test_unit_ready().unwrap();
    wipe(&b);

    // Identity: both paths are one LUN.
    let inq = a.inquiry().unwrap().value;
    assert!(!inq.vendor.is_empty());
    let pages = a.supported_vpd_pages().unwrap().value;
    assert!(pages.contains(&0x83), "VPD pages: {pages:x?}");
    let id_a = a.device_identification().unwrap().value.lun_id();
    let id_b = b.device_identification().unwrap().value.lun_id();
    assert!(id_a.is_some());
    assert_eq!(id_a, id_b, "the two paths must be one LUN");
    let _ = a.unit_serial_number();

    // Capabilities decode; WE-RO is supported where the mask is valid.
    let caps = a.report_capabilities().unwrap().value;
    if caps.type_mask_valid {
        assert!(caps.supported_types.contains(&WERO));
    }

    // Register both, reserve type 5 from A.
    a.register(ReservationKey::ZERO, KEY_A, RegisterOptions::default())
        .unwrap();
    b.register(ReservationKey::ZERO, KEY_B, RegisterOptions::default())
        .unwrap();
    let keys = b.read_keys().unwrap().value;
    assert!(keys.contains(KEY_A) && keys.contains(KEY_B), "{keys:?}");
    a.reserve(KEY_A, WERO).unwrap();
    let res = b.read_reservation().unwrap().value.reservation.unwrap();
    assert_eq!((res.key, res.pr_type), (KEY_A, Some(WERO)));

    // Full status: both registrations, A the holder, transport IDs decoded. tgt lacks READ FULL
    // STATUS (ILLEGAL REQUEST): `SG_PR_TEST_NO_FULL_STATUS=1` expects exactly that.
    match b.read_full_status() {
        Ok(full) => {
            assert!(
                !flag("SG_PR_TEST_NO_FULL_STATUS"),
                "READ FULL STATUS worked"
            );
            let full = full.value;
            assert_eq!(full.registrations.len(), 2, "{full:?}");
            let holder = full
                .registrations
                .iter()
                .find(|r| r.reservation_holder)
                .unwrap();
            assert_eq!(holder.key, KEY_A);
            assert!(full.registrations.iter().all(|r| r.transport_id.is_some()));
        }
        Err(Error::CheckCondition { sense, .. })
            if flag("SG_PR_TEST_NO_FULL_STATUS")
                && sense.key == sg_pr::SenseKey::IllegalRequest =>
        {
            eprintln!("note: no READ FULL STATUS on this target (ILLEGAL REQUEST)")
        }
        Err(e) => panic!("READ FULL STATUS: {e}"),
    }

    // A second RESERVE from B conflicts, and the error is the dedicated variant.
    let err = b.reserve(KEY_B, WERO).unwrap_err();
    assert!(matches!(err, Error::ReservationConflict { .. }), "{err}");

    // B fences A.
    let abort = flag("SG_PR_TEST_ABORT");
    let report = b.preempt(KEY_B, KEY_A, WERO, abort).unwrap();
    assert_eq!(
        report.preempt_abort_fallback,
        abort && flag("SG_PR_TEST_EXPECT_PA_FALLBACK")
    );
    let keys = b.read_keys().unwrap().value;
    assert!(!keys.contains(KEY_A) && keys.contains(KEY_B), "{keys:?}");
    let res = b.read_reservation().unwrap().value.reservation.unwrap();
    assert_eq!(res.key, KEY_B);

    // A learns it was preempted (UNIT ATTENTION 2A/05 or 2A/03 absorbed and reported)...
    let seen = a.test_unit_ready().unwrap();
    assert!(seen.saw_preemption(), "{seen:?}");
    // ...and can no longer reserve.
    let err = a.reserve(KEY_A, WERO).unwrap_err();
    assert!(err.is_reservation_conflict(), "{err}");

    // Re-register after a nexus change: REGISTER AND IGNORE EXISTING KEY works unregistered.
    a.register(
        ReservationKey::ZERO,
        KEY_A,
        RegisterOptions {
            ignore_existing: true,
            ..RegisterOptions::default()
        },
    )
    .unwrap();
    assert!(b.read_keys().unwrap().value.contains(KEY_A));

    // Block-layer backend on the same disk: reads agree (6.19+) or say "not supported".
    if let Ok(blk) = BlockPrDevice::open(&path_a) {
        match blk.read_keys() {
            Ok(k) => assert!(k.contains(KEY_A) && k.contains(KEY_B)),
            Err(Error::NotSupported { .. }) => {
                eprintln!("note: IOC_PR_READ_KEYS not in this kernel")
            }
            Err(e) => panic!("{e}"),
        }
        match blk.read_reservation() {
            Ok(r) => assert_eq!(r.reservation.unwrap().pr_type, Some(WERO)),
            Err(Error::NotSupported { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let any = AnyDevice::open(&path_b, Backend::Auto, Duration::from_secs(20)).unwrap();
    assert!(any.keys().unwrap().value.contains(KEY_B));

    // CLI: a conflicting reserve exits 24; keys --json is valid JSON listing both keys.
    let bin = env!("CARGO_BIN_EXE_sg-pr");
    let out = Command::new(bin)
        .args(["reserve", "--key", "a1a1", "--type", "wero"])
        .arg(&path_a)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(24), "{out:?}");
    let out = Command::new(bin)
        .args(["--json", "keys"])
        .arg(&path_a)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);

    // Clean up.
    b.clear(KEY_B).unwrap();
    assert!(b.read_keys().unwrap().value.keys.is_empty());
    assert!(b.read_reservation().unwrap().value.reservation.is_none());
}

/// `SG_PR_TEST_PARTITION=/dev/sda1`: a partition is refused, naming the whole disk.
#[test]
fn partition_is_refused_with_the_whole_disk_named() {
    let Some(part) = required_device("SG_PR_TEST_PARTITION", "a partition node (e.g. /dev/sda1)")
    else {
        return;
    };
    let err = PrDevice::open(&part).unwrap_err();
    match err {
        Error::Partition { parent, .. } => assert!(parent.starts_with("/dev/"), "{parent}"),
        other => panic!("expected Partition, got {other}"),
    }
}

/// `SG_PR_TEST_NON_SCSI=/dev/vda` (virtio-blk): SG_IO is refused as NotScsi, and the auto
/// backend falls back to the block layer.
#[test]
fn non_scsi_block_device_uses_the_block_layer() {
    let Some(dev) = required_device("SG_PR_TEST_NON_SCSI", "a virtio-blk/NVMe whole disk") else {
        return;
    };
    assert!(matches!(PrDevice::open(&dev), Err(Error::NotScsi { .. })));
    let any = AnyDevice::open(&dev, Backend::Auto, Duration::from_secs(5)).unwrap();
    assert!(matches!(any, AnyDevice::Block(_)));
    // virtio-blk has no pr_ops: the kernel answers EOPNOTSUPP.
    let err = any.keys().unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
}
