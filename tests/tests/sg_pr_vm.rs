//! `sg-pr` (the CLI, and through it the library) against real kernels and real SCSI targets:
//! LIO tcm_loop (two nexuses in one guest), LIO over iSCSI and tgt over iSCSI (two node guests
//! each). Every service action, the fence itself (the victim's writes refused by the target), the
//! unit attention that follows, PREEMPT AND ABORT and its fallback, exit codes, several LUNs in
//! one call, a frozen target, and bad input. One lab per target; many checks per lab.
//!
//! Run: `cargo build --workspace --bins && cargo test -p tests --test sg_pr_vm -- --test-threads=1 --nocapture`

use kmod_testing::iscsi::{Target, TargetKind};
use kmod_testing::{tcm_loop, Guest, GuestSpec, KernelLine, Lab};
use serde_json::Value;
use std::time::{Duration, Instant};
use tests::blocks;
use tests::sg_pr::{hex, SgPr};

const VICTIM: u64 = 0xa1;
const SURVIVOR: u64 = 0xb2;

/// One side of a two-initiator topology: a guest, its path to the shared LUN, and the initiator
/// name READ FULL STATUS must report for it.
struct Side<'a> {
    sg: SgPr<'a>,
    dev: String,
    initiator: String,
}

/// What each target is expected to do differently.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavour {
    TcmLoop,
    LioIscsi,
    TgtIscsi,
}

fn say(s: &str) {
    println!("    {s}");
}

/// Asserts that `stdout`'s READ FULL STATUS JSON lists `side`'s registration with its initiator.
fn assert_full_status_lists(status: &Value, key: u64, initiator: &str, flavour: Flavour) {
    let regs = status["registrations"]
        .as_array()
        .unwrap_or_else(|| panic!("no registrations in {status}"));
    let reg = regs
        .iter()
        .find(|r| r["key"].as_str().and_then(hex) == Some(key))
        .unwrap_or_else(|| panic!("key 0x{key:x} missing from READ FULL STATUS: {status}"));
    let tid = &reg["transport_id"];
    match flavour {
        Flavour::LioIscsi | Flavour::TgtIscsi => {
            assert_eq!(tid["protocol"], "iscsi", "{reg}");
            assert_eq!(
                tid["name"].as_str().map(str::to_lowercase),
                Some(initiator.to_lowercase()),
                "{reg}"
            );
        }
        Flavour::TcmLoop => {
            // tcm_loop's fabric is SAS: the transport ID is the nexus WWN as a SAS address.
            assert_eq!(tid["protocol"], "sas", "{reg}");
            let wwn = hex(initiator.trim_start_matches("naa.")).expect("naa WWN");
            assert_eq!(tid["sas_address"].as_u64(), Some(wwn), "{reg}");
        }
    }
}

/// The sequence every target must pass, victim on `v`, survivor on `s`, one LUN seen by both.
/// Returns how long the fencing preempt took (process wall time seen from the host).
fn every_service_action(v: &Side<'_>, s: &Side<'_>, flavour: Flavour) -> Duration {
    let (vd, sd) = (v.dev.as_str(), s.dev.as_str());
    // Power-on / login unit attentions are absorbed, not failures.
    v.sg.run(&format!("tur {vd}")).unwrap().ok();
    s.sg.run(&format!("tur {sd}")).unwrap().ok();

    // INQUIRY + VPD 0x83: both paths name one LUN.
    let iv = v.sg.json(&format!("inquiry {vd}")).unwrap();
    let is = s.sg.json(&format!("inquiry {sd}")).unwrap();
    iv.ok();
    is.ok();
    let id = iv.json["lun_id"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "no LUN id: {}", iv.stdout);
    assert_eq!(iv.json["lun_id"], is.json["lun_id"], "one LUN, one id");
    assert!(
        iv.json["vpd_pages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x == 0x83)),
        "{}",
        iv.stdout
    );
    let human = v.sg.run(&format!("inquiry {vd}")).unwrap();
    human.ok();
    assert!(human.stdout.contains("LUN id: "), "{}", human.stdout);
    say(&format!(
        "inquiry: {} {} on both paths, LUN id {id}",
        iv.json["standard"]["vendor"], iv.json["standard"]["product"]
    ));

    // REPORT CAPABILITIES.
    let caps = s.sg.json(&format!("caps {sd}")).unwrap();
    caps.ok();
    if caps.json["type_mask_valid"] == true {
        assert!(
            caps.json["supported_types"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "write_exclusive_registrants_only")),
            "{}",
            caps.stdout
        );
    }
    s.sg.run(&format!("caps {sd}")).unwrap().ok();

    // Fresh LUN: nothing registered.
    assert_eq!(s.sg.keys(sd).unwrap(), Vec::<u64>::new());

    // REGISTER both; each side reads both keys.
    v.sg.run(&format!("register --key {VICTIM:#x} {vd}"))
        .unwrap()
        .ok();
    s.sg.run(&format!("register --key {SURVIVOR:x} {sd}"))
        .unwrap()
        .ok();
    for side in [v, s] {
        let mut k = side.sg.keys(&side.dev).unwrap();
        k.sort_unstable();
        assert_eq!(k, vec![VICTIM, SURVIVOR], "{}", side.sg.guest().name());
    }
    // A plain REGISTER while registered with another key: a real RESERVATION CONFLICT, exit 24.
    let again = v.sg.run(&format!("register --key 0xa9 {vd}")).unwrap();
    again.expect_code(24);
    assert!(
        again.stderr.to_lowercase().contains("reservation conflict"),
        "{}",
        again.stderr
    );
    // REGISTER AND IGNORE EXISTING KEY replaces it (what a re-login needs); --old-key changes it back.
    v.sg.run(&format!("register --ignore-existing --key 0xa3 {vd}"))
        .unwrap()
        .ok();
    let mut k = s.sg.keys(sd).unwrap();
    k.sort_unstable();
    assert_eq!(k, vec![0xa3, SURVIVOR]);
    v.sg.run(&format!("register --old-key 0xa3 --key {VICTIM:x} {vd}"))
        .unwrap()
        .ok();

    // RESERVE type 5 (wero) from the victim; READ RESERVATION from the other side.
    v.sg.run(&format!("reserve --key {VICTIM:x} --type wero {vd}"))
        .unwrap()
        .ok();
    let r = s.sg.json(&format!("reservation {sd}")).unwrap();
    r.ok();
    assert_eq!(
        r.json["reservation"]["key"].as_str().and_then(hex),
        Some(VICTIM)
    );
    assert_eq!(
        r.json["reservation"]["type"],
        "write_exclusive_registrants_only"
    );
    let rh = s.sg.run(&format!("reservation {sd}")).unwrap();
    rh.ok();
    assert!(rh.stdout.contains("held by key 0xa1"), "{}", rh.stdout);
    assert!(rh.stdout.contains("type 5"), "{}", rh.stdout);

    // READ FULL STATUS: both registrations, each with its initiator's transport ID. tgt does
    // not implement it (ILLEGAL REQUEST, invalid field in CDB): exit 5, as for sg_persist.
    if flavour == Flavour::TgtIscsi {
        let st = s.sg.json(&format!("status {sd}")).unwrap();
        st.expect_code(5);
        assert_eq!(st.json["exit_code"], 5, "{}", st.stdout);
        assert!(st.stderr.contains("READ FULL STATUS"), "{}", st.stderr);
        let peer =
            s.sg.guest()
                .run(&format!("sg_persist -n -i -s {sd}"))
                .unwrap();
        assert_ne!(peer.code, 0, "sg_persist -s on tgt: {}", peer.stdout);
        say(&format!(
            "tgt has no READ FULL STATUS: {}",
            st.stderr.trim()
        ));
    } else {
        let st = s.sg.json(&format!("status {sd}")).unwrap();
        st.ok();
        assert_eq!(
            st.json["registrations"].as_array().map(Vec::len),
            Some(2),
            "{}",
            st.stdout
        );
        assert_full_status_lists(&st.json, VICTIM, &v.initiator, flavour);
        assert_full_status_lists(&st.json, SURVIVOR, &s.initiator, flavour);
        let sh = s.sg.run(&format!("status {sd}")).unwrap();
        sh.ok();
        say(&format!("READ FULL STATUS:\n{}", sh.stdout.trim_end()));
    }

    // The survivor cannot reserve over the victim's reservation: exit 24.
    s.sg.run(&format!("reserve --key {SURVIVOR:x} --type wero {sd}"))
        .unwrap()
        .expect_code(24);
    // RELEASE, then reserve again.
    v.sg.run(&format!("release --key {VICTIM:x} --type wero {vd}"))
        .unwrap()
        .ok();
    let r = s.sg.json(&format!("reservation {sd}")).unwrap();
    assert!(r.json["reservation"].is_null(), "{}", r.stdout);
    v.sg.run(&format!("reserve --key {VICTIM:x} --type wero {vd}"))
        .unwrap()
        .ok();

    // The fence: the survivor preempts the victim (PREEMPT AND ABORT on iSCSI; never on
    // tcm_loop, where it hangs Linux 6.1).
    let abort = if flavour == Flavour::TcmLoop {
        ""
    } else {
        "--abort "
    };
    let fence =
        s.sg.run(&format!(
            "preempt {abort}--key {SURVIVOR:x} --victim {VICTIM:x} --type wero {sd}"
        ))
        .unwrap();
    fence.ok();
    assert!(
        fence
            .stdout
            .contains("READ KEYS confirms the victim key is gone"),
        "{}",
        fence.stdout
    );
    let fell_back = fence
        .stdout
        .contains("as PREEMPT: target lacks PREEMPT AND ABORT");
    assert_eq!(
        fell_back,
        flavour == Flavour::TgtIscsi,
        "PREEMPT AND ABORT fallback only on tgt: {}{}",
        fence.stdout,
        fence.stderr
    );
    if fell_back {
        assert!(
            fence.stderr.contains("sent PREEMPT instead"),
            "{}",
            fence.stderr
        );
    }
    say(&format!(
        "fence ({}) took {:.0} ms: {}",
        if abort.is_empty() {
            "PREEMPT"
        } else {
            "PREEMPT AND ABORT"
        },
        fence.elapsed.as_secs_f64() * 1000.0,
        fence.stdout.trim()
    ));
    assert_eq!(s.sg.keys(sd).unwrap(), vec![SURVIVOR]);
    let r = s.sg.json(&format!("reservation {sd}")).unwrap();
    assert_eq!(
        r.json["reservation"]["key"].as_str().and_then(hex),
        Some(SURVIVOR),
        "{}",
        r.stdout
    );

    // The victim's next sg-pr command absorbs the UNIT ATTENTION and says so.
    let ua = v.sg.json(&format!("keys {vd}")).unwrap();
    ua.ok();
    assert_eq!(ua.keys(), vec![SURVIVOR]);
    let uas = ua.json["report"]["unit_attentions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!uas.is_empty(), "no unit attention reported: {}", ua.stdout);
    assert!(
        ua.stderr
            .contains("preempted or released this host's registration"),
        "{}",
        ua.stderr
    );
    say(&format!(
        "victim's next command reported: {}",
        ua.stderr.lines().next().unwrap_or_default()
    ));

    // The target refuses the victim's writes; the data is absent; the survivor writes.
    let refused = blocks::write(v.sg.guest(), vd, 100, b'V').unwrap();
    assert_ne!(refused.code, 0, "the victim's write must fail");
    assert!(
        refused.stderr.contains("Invalid exchange"),
        "EBADE (reservation conflict) expected: {}",
        refused.stderr
    );
    assert_eq!(
        blocks::distinct_bytes(s.sg.guest(), sd, 100).unwrap(),
        vec![0]
    );
    let w = blocks::write(s.sg.guest(), sd, 101, b'S').unwrap();
    assert_eq!(w.code, 0, "{}", w.stderr);
    assert_eq!(
        blocks::distinct_bytes(v.sg.guest(), vd, 101).unwrap(),
        vec![b'S']
    );
    say(&format!(
        "victim's O_DIRECT write refused ({}); block absent; survivor's write landed",
        refused.stderr.trim()
    ));

    // The preempted victim's own PR OUT conflicts (exit 24): it is no longer registered.
    let lost =
        v.sg.run(&format!("reserve --key {VICTIM:x} --type wero {vd}"))
            .unwrap();
    lost.expect_code(24);
    // It may register afresh, and unregister with --key 0 --old-key.
    v.sg.run(&format!("register --key {VICTIM:x} {vd}"))
        .unwrap()
        .ok();
    v.sg.run(&format!("register --key 0 --old-key {VICTIM:x} {vd}"))
        .unwrap()
        .ok();
    assert_eq!(s.sg.keys(sd).unwrap(), vec![SURVIVOR]);
    // Unregister through IGNORE EXISTING too (the survivor), then register back and CLEAR.
    s.sg.run(&format!("register --ignore-existing --key 0 {sd}"))
        .unwrap()
        .ok();
    assert_eq!(s.sg.keys(sd).unwrap(), Vec::<u64>::new());
    s.sg.run(&format!("register --key {SURVIVOR:x} {sd}"))
        .unwrap()
        .ok();
    v.sg.run(&format!("register --key {VICTIM:x} {vd}"))
        .unwrap()
        .ok();
    s.sg.run(&format!("reserve --key {SURVIVOR:x} --type wero {sd}"))
        .unwrap()
        .ok();
    s.sg.run(&format!("clear --key {SURVIVOR:x} {sd}"))
        .unwrap()
        .ok();
    assert_eq!(v.sg.keys(vd).unwrap(), Vec::<u64>::new());
    let r = v.sg.json(&format!("reservation {vd}")).unwrap();
    r.ok();
    assert!(r.json["reservation"].is_null(), "{}", r.stdout);
    // The victim's UA from the CLEAR is absorbed by the read above. Bad keys on a real device.
    v.sg.run(&format!("reserve --key 0 --type wero {vd}"))
        .unwrap()
        .expect_code(3);
    v.sg.run(&format!("register --key 0 {vd}"))
        .unwrap()
        .expect_code(3);
    let bad =
        v.sg.run(&format!("preempt --key 0xzz --victim 1 --type wero {vd}"))
            .unwrap();
    bad.expect_code(2);
    assert!(bad.stderr.contains("0xzz"), "{}", bad.stderr);
    fence.elapsed
}

/// `--backend block` (IOC_PR_* ioctls, what dm-multipath and NVMe need) on the two SCSI paths,
/// checked through SG_IO. Linux 6.1 has the PR OUT ioctls but not IOC_PR_READ_KEYS (6.19).
/// Must: the block layer's type numbering maps to SCSI type 5; a conflict exits 24 (6.1 returns
/// the raw SCSI result 0x118, the newest kernel PR_STS_RESERVATION_CONFLICT); preempt succeeds
/// and is verified with READ KEYS over SG_IO; reading keys through the block layer is not
/// supported (exit 5) on 6.1 and answers on the newest kernel.
fn block_layer_backend_on_scsi_disks(v: &Side<'_>, s: &Side<'_>, line: KernelLine) {
    let (vd, sd) = (v.dev.as_str(), s.dev.as_str());
    v.sg.run(&format!("--backend block register --key c1 {vd}"))
        .unwrap()
        .ok();
    s.sg.run(&format!("--backend block register --key c2 {sd}"))
        .unwrap()
        .ok();
    let mut k = s.sg.keys(sd).unwrap();
    k.sort_unstable();
    assert_eq!(k, vec![0xc1, 0xc2]);
    v.sg.run(&format!(
        "--backend block reserve --key c1 --type wero {vd}"
    ))
    .unwrap()
    .ok();
    let r = s.sg.json(&format!("reservation {sd}")).unwrap();
    assert_eq!(r.json["reservation"]["type_code"], 5, "{}", r.stdout);
    let conflict =
        s.sg.run(&format!(
            "--backend block reserve --key c2 --type wero {sd}"
        ))
        .unwrap();
    conflict.expect_code(24);
    let fence =
        s.sg.run(&format!(
            "--backend block preempt --key c2 --victim c1 --type wero {sd}"
        ))
        .unwrap();
    fence.ok();
    assert!(
        fence
            .stdout
            .contains("READ KEYS confirms the victim key is gone"),
        "{}",
        fence.stdout
    );
    assert_eq!(s.sg.keys(sd).unwrap(), vec![0xc2]);
    v.sg.run(&format!("tur {vd}")).unwrap().ok();
    s.sg.run(&format!(
        "--backend block release --key c2 --type wero {sd}"
    ))
    .unwrap()
    .ok();
    let r = s.sg.json(&format!("reservation {sd}")).unwrap();
    assert!(r.json["reservation"].is_null(), "{}", r.stdout);
    s.sg.run(&format!("--backend block clear --key c2 {sd}"))
        .unwrap()
        .ok();
    assert_eq!(v.sg.keys(vd).unwrap(), Vec::<u64>::new());
    let reads = v.sg.run(&format!("--backend block keys {vd}")).unwrap();
    match line {
        KernelLine::Stable => {
            reads.expect_code(5);
        }
        KernelLine::Newest => {
            reads.ok();
            assert!(
                reads.stdout.contains("no registered keys"),
                "{}",
                reads.stdout
            );
        }
    }
    say(&format!(
        "--backend block: register/reserve/preempt/release/clear work; conflict: {}; reads: {}{}",
        conflict.stderr.trim(),
        reads.stdout.trim(),
        reads.stderr.trim()
    ));
}

/// Writes a one-partition MBR to `dev` and waits for `dev`1.
fn make_partition(g: &Guest, dev: &str) -> String {
    // Partition 1: type 0x83, LBA 2048, 2048 sectors; boot signature 55 AA.
    g.run_ok(&format!(
        r#"set -e
printf '\000\000\000\000\203\000\000\000\000\010\000\000\000\010\000\000' > /tmp/p1
dd if=/dev/zero of=/tmp/mbr bs=512 count=1 status=none
dd if=/tmp/p1 of=/tmp/mbr bs=1 seek=446 conv=notrunc status=none
printf '\125\252' | dd of=/tmp/mbr bs=1 seek=510 conv=notrunc status=none
dd if=/tmp/mbr of={dev} bs=512 count=1 oflag=direct conv=notrunc status=none
blockdev --rereadpt {dev}
i=0; while [ ! -b {dev}1 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
test -b {dev}1"#
    ))
    .unwrap();
    format!("{dev}1")
}

/// Runs sg-pr's own kernel-facing test binary (sg-pr/tests/scsi_target.rs) in the guest with
/// `SG_PR_TEST_REQUIRE=1`, so none of its tests may skip.
///
/// `bin` comes from [`tests::sg_pr::scsi_target_binary`], called BEFORE the guest boots (see
/// there why).
fn run_scsi_target_binary(g: &Guest, bin: &std::path::Path, env: &str, filter: &str, tests: usize) {
    let out = g
        .run_with_timeout(
            &format!(
                "cd /tmp && SG_PR_TEST_REQUIRE=1 {env} {} --test-threads=1 {filter} 2>&1",
                bin.display()
            ),
            Duration::from_secs(180),
        )
        .unwrap();
    println!("{}", out.stdout);
    assert_eq!(out.code, 0, "scsi_target in {} ({env}) failed", g.name());
    assert!(
        out.stdout
            .contains(&format!("test result: ok. {tests} passed")),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("SKIP"), "{}", out.stdout);
}

/// Target: LIO tcm_loop, one LUN through two nexuses (/dev/sdX, /dev/sdY) in one guest.
/// Fault: nexus 2 PREEMPTs (never PREEMPT AND ABORT here: it hangs 6.1) nexus 1's type-5
/// reservation. Must: every service action works (tur, inquiry: one LUN id on both paths, keys,
/// reservation, caps, status: both nexuses' SAS transport IDs, register incl. --ignore-existing
/// and unregister, reserve wero, release, clear, preempt); exit 24 on real conflicts; the victim's
/// next command succeeds and reports the UNIT ATTENTION; its O_DIRECT write fails and its data is
/// absent. Bad input must give the documented codes: a partition (3, names the whole disk), a
/// virtio-blk disk (3 with --backend sg, 5 through the block layer), a missing node (3), key 0
/// (3), a malformed key (2). The block-layer backend works on the same paths (see
/// `block_layer_backend_on_scsi_disks`). sg-pr's scsi_target test binary passes in the guest,
/// nothing skipped.
#[test]
fn tcm_loop_every_service_action_and_bad_input() {
    tcm_loop_every_service_action_and_bad_input_with(KernelLine::Stable);
}

/// The same on the newest kernel (the kernel matrix: PR on each target).
#[test]
fn tcm_loop_every_service_action_and_bad_input_on_the_newest_kernel() {
    tcm_loop_every_service_action_and_bad_input_with(KernelLine::Newest);
}

fn tcm_loop_every_service_action_and_bad_input_with(line: KernelLine) {
    let scsi_target = tests::sg_pr::scsi_target_binary();
    let lab = Lab::on(&format!("sgpr-tcm-loop-{}", line.name()), line).unwrap();
    let vdisk = lab.shared_disk("plain", 16).unwrap();
    let g = lab
        .boot(GuestSpec::new("tcmloop").shared_disk(&vdisk, "plain0"))
        .unwrap();
    let lun = tcm_loop::setup(&g, 2, 64).unwrap();
    let side = |i: usize| Side {
        sg: SgPr::new(&g),
        dev: lun.devices[i].clone(),
        initiator: lun.initiators[i].clone(),
    };
    let (v, s) = (side(0), side(1));
    every_service_action(&v, &s, Flavour::TcmLoop);

    block_layer_backend_on_scsi_disks(&v, &s, line);

    // Bad input in a real kernel.
    let sg = SgPr::new(&g);
    let part = make_partition(&g, &v.dev);
    let c = sg.run(&format!("keys {part}")).unwrap();
    c.expect_code(3);
    assert!(
        c.stderr.contains(&v.dev),
        "names the whole disk: {}",
        c.stderr
    );
    say(&format!("partition: {}", c.stderr.trim()));
    let c = sg
        .run(&format!("preempt --key 1 --victim 2 --type wero {part}"))
        .unwrap();
    c.expect_code(3);
    let vda = g.disk_by_serial("plain0").unwrap();
    let c = sg.run(&format!("--backend sg keys {vda}")).unwrap();
    c.expect_code(3);
    assert!(c.stderr.contains("not a SCSI device"), "{}", c.stderr);
    say(&format!("virtio-blk, SG_IO: {}", c.stderr.trim()));
    let c = sg.run(&format!("inquiry {vda}")).unwrap();
    c.expect_code(3);
    let c = sg.run(&format!("keys {vda}")).unwrap();
    c.expect_code(5);
    say(&format!("virtio-blk, block layer: {}", c.stderr.trim()));
    let c = sg.run("tur /dev/sdz").unwrap();
    c.expect_code(3);

    run_scsi_target_binary(
        &g,
        &scsi_target,
        &format!(
            "SG_PR_TEST_DEV_A={} SG_PR_TEST_DEV_B={} SG_PR_TEST_PARTITION={part} SG_PR_TEST_NON_SCSI={vda}",
            v.dev, s.dev
        ),
        "",
        3,
    );
}

const NODE_PREFIX: &str = "iqn.2026-11.org.fenced:";

/// Both node guests register on `luns` (one `sg-pr register` call per node for all of them),
/// node1 reserves them, node2 preempts node1 on all of them in ONE `sg-pr preempt` call.
/// Must: every LUN's result is ok, says whether PREEMPT AND ABORT fell back (tgt only), READ KEYS
/// leaves only node2's key, and node1's writes to every LUN are refused.
fn preempt_several_luns(v: &[Side<'_>], s: &[Side<'_>], flavour: Flavour) -> Duration {
    let vdevs: Vec<&str> = v.iter().map(|x| x.dev.as_str()).collect();
    let sdevs: Vec<&str> = s.iter().map(|x| x.dev.as_str()).collect();
    let (vsg, ssg) = (&v[0].sg, &s[0].sg);
    vsg.run(&format!("register --key {VICTIM:x} {}", vdevs.join(" ")))
        .unwrap()
        .ok();
    ssg.run(&format!("register --key {SURVIVOR:x} {}", sdevs.join(" ")))
        .unwrap()
        .ok();
    vsg.run(&format!(
        "reserve --key {VICTIM:x} --type wero {}",
        vdevs.join(" ")
    ))
    .unwrap()
    .ok();
    let c = ssg
        .json(&format!(
            "preempt --abort --key {SURVIVOR:x} --victim {VICTIM:x} --type wero {}",
            sdevs.join(" ")
        ))
        .unwrap();
    c.ok();
    let results = c.results();
    assert_eq!(results.len(), sdevs.len(), "{}", c.stdout);
    for (r, dev) in results.iter().zip(&sdevs) {
        assert_eq!(r["device"], *dev, "{r}");
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["result"]["victim_removed"], true, "{r}");
        assert_eq!(
            r["result"]["report"]["preempt_abort_fallback"],
            flavour == Flavour::TgtIscsi,
            "{r}"
        );
        let keys: Vec<u64> = r["result"]["keys_after"]
            .as_array()
            .map(|a| a.iter().filter_map(|k| k.as_str().and_then(hex)).collect())
            .unwrap_or_default();
        assert_eq!(keys, vec![SURVIVOR], "{r}");
    }
    for dev in &vdevs {
        let w = blocks::write(vsg.guest(), dev, 200, b'V').unwrap();
        assert_ne!(w.code, 0, "node1's write to {dev} must fail");
    }
    say(&format!(
        "one `sg-pr preempt --abort` on {} LUNs: {:.0} ms, all ok{}; node1's writes refused on every LUN",
        sdevs.len(),
        c.elapsed.as_secs_f64() * 1000.0,
        if flavour == Flavour::TgtIscsi {
            " (each reported as a PREEMPT fallback)"
        } else {
            ""
        }
    ));
    c.elapsed
}

/// Two node guests on `target`'s LUNs (plus `extra` LUN URLs each), with their sides on every
/// disk in order.
fn node_sides<'a>(nodes: &'a [Guest], disks: &[Vec<String>], node: usize) -> Vec<Side<'a>> {
    disks[node]
        .iter()
        .map(|d| Side {
            sg: SgPr::new(&nodes[node]),
            dev: d.clone(),
            initiator: format!("{NODE_PREFIX}node{}", node + 1),
        })
        .collect()
}

/// Target: LIO's iSCSI target in a storage guest, three LUNs, two node guests (each its own
/// initiator). Fault: node2 fences node1 with PREEMPT AND ABORT, first on one LUN, then on two
/// LUNs in one call. Must: every service action works; READ FULL STATUS names both guests' iSCSI
/// initiators; PREEMPT AND ABORT is performed (no fallback reported); node1's next command
/// reports the UNIT ATTENTION and succeeds; node1's writes fail (EBADE) and its data is absent;
/// exit 24 on real conflicts.
///
/// (sg-pr's own scsi_target test is not run here: it needs two nexuses in one guest, and when
/// node1 had a second iSCSI session to LUN 0 (same initiator name, another ISID), LIO answered
/// both PREEMPT and PREEMPT AND ABORT between the two sessions with RESERVATION CONFLICT and no
/// log line; tgt accepts it, see the next test. Not investigated further: a node never fences its
/// own other path.)
#[test]
fn lio_iscsi_every_service_action_and_preempt_abort() {
    lio_iscsi_every_service_action_and_preempt_abort_with(KernelLine::Stable);
}

/// The same on the newest kernel (the kernel matrix: PR on each target).
#[test]
fn lio_iscsi_every_service_action_and_preempt_abort_on_the_newest_kernel() {
    lio_iscsi_every_service_action_and_preempt_abort_with(KernelLine::Newest);
}

fn lio_iscsi_every_service_action_and_preempt_abort_with(line: KernelLine) {
    let lab = Lab::on(&format!("sgpr-lio-iscsi-{}", line.name()), line).unwrap();
    let target = Target::start(&lab, TargetKind::Lio, 3, 16).unwrap();
    let nodes = lab
        .boot_all(vec![target.node_spec("node1"), target.node_spec("node2")])
        .unwrap();
    let disks: Vec<Vec<String>> = nodes.iter().map(|g| g.scsi_disks(3).unwrap()).collect();
    let (v, s) = (node_sides(&nodes, &disks, 0), node_sides(&nodes, &disks, 1));
    every_service_action(&v[0], &s[0], Flavour::LioIscsi);
    preempt_several_luns(&v[1..], &s[1..], Flavour::LioIscsi);
}

/// Target: tgtd over iSCSI, three LUNs, plus a second tgtd with one LUN; two node guests (node1
/// with a second session to LUN 0, where sg-pr's scsi_target test runs expecting the fallback).
/// Faults: node2 fences node1 with `--abort` on a target without PREEMPT AND ABORT; then the second
/// tgtd is frozen (SIGSTOP) and node2 preempts on LUNs of both targets in one call.
/// Must: every service action works; the fence falls back to PREEMPT and says so (human output,
/// stderr note, `--json` report); node1 is cut off. With the frozen target: the live LUNs' results
/// arrive, the frozen LUN is reported as a timeout, and the process exits 15 within the deadline
/// (+ 4 s slack) while the target is still frozen, closing its output. Must not: stay alive (or
/// hold a reader's pipe open) until the target thaws.
#[test]
fn tgt_iscsi_every_service_action_fallback_and_frozen_target() {
    tgt_iscsi_every_service_action_fallback_and_frozen_target_with(KernelLine::Stable);
}

/// The same on the newest kernel (the kernel matrix: PR on each target).
#[test]
fn tgt_iscsi_every_service_action_fallback_and_frozen_target_on_the_newest_kernel() {
    tgt_iscsi_every_service_action_fallback_and_frozen_target_with(KernelLine::Newest);
}

fn tgt_iscsi_every_service_action_fallback_and_frozen_target_with(line: KernelLine) {
    let scsi_target = tests::sg_pr::scsi_target_binary();
    let lab = Lab::on(&format!("sgpr-tgt-iscsi-{}", line.name()), line).unwrap();
    let target = Target::start(&lab, TargetKind::Tgt, 3, 16).unwrap();
    let frozen = Target::start(&lab, TargetKind::Tgt, 1, 16).unwrap();
    let nodes = lab
        .boot_all(vec![
            target
                .node_spec("node1")
                .iscsi_lun(&frozen.lun_url(0))
                .iscsi_lun(&target.lun_url(0)),
            target.node_spec("node2").iscsi_lun(&frozen.lun_url(0)),
        ])
        .unwrap();
    let mut disks: Vec<Vec<String>> = vec![
        nodes[0].scsi_disks(5).unwrap(),
        nodes[1].scsi_disks(4).unwrap(),
    ];
    let second_path = disks[0].pop().unwrap_or_default();
    let (v, s) = (node_sides(&nodes, &disks, 0), node_sides(&nodes, &disks, 1));
    every_service_action(&v[0], &s[0], Flavour::TgtIscsi);
    preempt_several_luns(&v[1..3], &s[1..3], Flavour::TgtIscsi);
    // The library's own kernel test on two nexuses of node1 (second session to LUN 0): PREEMPT
    // AND ABORT must fall back and say so.
    run_scsi_target_binary(
        &nodes[0],
        &scsi_target,
        &format!(
            "SG_PR_TEST_DEV_A={} SG_PR_TEST_DEV_B={second_path} SG_PR_TEST_ABORT=1 SG_PR_TEST_EXPECT_PA_FALLBACK=1 SG_PR_TEST_NO_FULL_STATUS=1",
            v[0].dev
        ),
        "two_initiators",
        1,
    );

    // node1 comes back on LUN 1 and the frozen target's LUN; node2 registers there too.
    let (v1, v3, s1, s3) = (&v[1].dev, &v[3].dev, &s[1].dev, &s[3].dev);
    let (vsg, ssg) = (&v[0].sg, &s[0].sg);
    vsg.run(&format!(
        "register --ignore-existing --key {VICTIM:x} {v1} {v3}"
    ))
    .unwrap()
    .ok();
    ssg.run(&format!("register --key {SURVIVOR:x} {s3}"))
        .unwrap()
        .ok();
    frozen.pause().unwrap();
    let deadline = 8.0;
    let started = Instant::now();
    // Through a pipe, as a fence agent reads it: the pipeline ends only when every writer has
    // closed stdout, so this also proves a worker stuck in the kernel does not hold it open.
    let out = ssg
        .guest()
        .run_with_timeout(
            &format!(
                "( {} --timeout 3 --json preempt --deadline {deadline} --key {SURVIVOR:x} --victim {VICTIM:x} --type wero {s1} {s3} 2>/tmp/frozen.err; echo $? >/tmp/frozen.code ) | cat >/tmp/frozen.json",
                ssg.bin()
            ),
            Duration::from_secs_f64(deadline + 30.0),
        )
        .unwrap();
    let exited_after = out.finished_at.saturating_duration_since(started);
    let code = ssg.guest().run_ok("cat /tmp/frozen.code").unwrap();
    let text = ssg.guest().run_ok("cat /tmp/frozen.json").unwrap();
    let stuck = ssg
        .guest()
        .run_ok("ps -eo pid,ppid,stat,wchan:24,comm | grep '[s]g-pr' || true")
        .unwrap();
    frozen.resume().unwrap();
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    say(&format!(
        "frozen target: exit {} after {:.1} s (deadline {deadline} s), target still frozen; worker left in the kernel: {}; report: {json}",
        code.trim(),
        exited_after.as_secs_f64(),
        if stuck.trim().is_empty() { "none seen" } else { stuck.trim() }
    ));
    let results = json["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2, "{json}");
    assert_eq!(results[0]["ok"], true, "live LUN fenced: {json}");
    assert_eq!(results[1]["ok"], false, "{json}");
    assert_eq!(results[1]["exit_code"], 15, "{json}");
    assert_eq!(code.trim(), "15");
    // Before the fix the report came at the deadline but the process (and the pipe) stayed
    // until the target thawed: the stuck SG_IO thread kept the process from exiting.
    assert!(
        exited_after < Duration::from_secs_f64(deadline + 4.0),
        "exited {exited_after:?} after the start, deadline {deadline} s"
    );
    // After the thaw the frozen LUN answers again.
    let k = ssg.keys(s3).unwrap();
    say(&format!("frozen LUN's keys after the thaw: {k:x?}"));
}

/// Debugging aid (not part of the suite): boots the tcm_loop guest and runs `SG_PR_EXPLORE`
/// (a shell script; `$A`, `$B` are the two paths, `$SGPR` the binary) and prints its output.
#[test]
#[ignore]
fn explore_tcm_loop() {
    let lab = Lab::new("sgpr-explore").unwrap();
    let g = lab.boot(GuestSpec::new("explore")).unwrap();
    let lun = tcm_loop::setup(&g, 2, 64).unwrap();
    let script = std::env::var("SG_PR_EXPLORE").unwrap_or_default();
    let out = g
        .run(&format!(
            "A={} B={} SGPR={}\n{script}",
            lun.devices[0],
            lun.devices[1],
            kmod_testing::project_binary("sg-pr").display()
        ))
        .unwrap();
    println!("exit {}\n{}\n{}", out.code, out.stdout, out.stderr);
}
