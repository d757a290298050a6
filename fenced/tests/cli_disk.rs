//! `fenced disk format|dump` end to end on files.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{direct_io_dir, image, CLUSTER, OTHER_CLUSTER};
use fenced::vdisk::format::{encode_header, encode_slot, slot_offset};
use fenced::vdisk::{
    AlignedBlock, DeadSet, Header, Marker, NodeName, SlotBlock, SlotState, Timeouts,
};

fn fenced(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(args)
        .output()
        .expect("run fenced")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_block(path: &Path, offset: u64, b: &AlignedBlock) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&b.0, offset).unwrap();
}

#[test]
fn format_refuses_formatted_disks_without_force() {
    let Some(dir) = direct_io_dir() else { return };
    let a = image(dir.path(), "a.img", 4 * 4096);
    let b = image(dir.path(), "b.img", 4 * 4096);
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "3",
        p(&a),
        p(&b),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "3",
        p(&a),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("without --force"), "{}", stderr(&o));
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        OTHER_CLUSTER,
        "--slots",
        "2",
        "--force",
        p(&a),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn format_rejects_bad_input() {
    let Some(dir) = direct_io_dir() else { return };
    let small = image(dir.path(), "small.img", 3 * 4096);
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "3",
        p(&small),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("too small"), "{}", stderr(&o));
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        "not-a-uuid",
        "--slots",
        "3",
        p(&small),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "256",
        p(&small),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "2",
        "--io-deadline-ms",
        "2000",
        p(&small),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("D < P"), "{}", stderr(&o));
    // Foreign data in block 0.
    std::fs::write(&small, vec![0xabu8; 3 * 4096]).unwrap();
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "2",
        p(&small),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn dump_shows_slots_verdicts_and_authority() {
    let Some(dir) = direct_io_dir() else { return };
    let disks: Vec<_> = (0..3)
        .map(|i| image(dir.path(), &format!("v{i}.img"), 5 * 4096))
        .collect();
    let mut args = vec!["disk", "format", "--cluster", CLUSTER, "--slots", "4"];
    args.extend(disks.iter().map(|d| p(d)));
    assert!(fenced(&args).status.success());

    let mut dead = DeadSet::default();
    dead.insert(3);
    let marker = Marker {
        epoch: 7,
        generation: 1,
        dead,
        issuer: 0,
    };
    let block = SlotBlock {
        cluster: CLUSTER.parse().unwrap(),
        slot: 0,
        state: SlotState::Joined,
        node_name: NodeName::new("alpha").unwrap(),
        incarnation: 0x1234,
        heartbeat_seq: 10,
        heartbeat_mono_ms: 5000,
        marker,
        boot: fenced::vdisk::BootId::NIL,
        fenced_boot: fenced::vdisk::BootId::NIL,
    };
    let mut b = AlignedBlock::ZERO;
    encode_slot(&block, &mut b.0);
    for d in &disks[..2] {
        write_block(d, slot_offset(0), &b);
    }
    b.0[100] ^= 1; // corrupt copy on disk 2
    write_block(&disks[2], slot_offset(0), &b);

    let mut args = vec!["disk", "dump"];
    args.extend(disks.iter().map(|d| p(d)));
    let o = fenced(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("\"alpha\""), "{text}");
    assert!(text.contains("bad-crc"), "{text}");
    assert!(
        text.contains("authority: epoch 7 generation 1 issuer 0 dead [3] (on 2 of 3 disks)"),
        "{text}"
    );

    args.push("--json");
    let o = fenced(&args);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["authority"]["marker"]["epoch"], 7);
    assert_eq!(v["authority"]["disks"], 2);
    assert_eq!(v["disks"][2]["slots"][0]["verdict"], "bad-crc");
    assert_eq!(v["disks"][0]["never_written_slots"], 3);
    assert_eq!(v["disks"][0]["header"]["cluster"], CLUSTER);
}

#[test]
fn dump_rejects_unformatted_foreign_small_and_newer_disks() {
    let Some(dir) = direct_io_dir() else { return };
    let good = image(dir.path(), "good.img", 3 * 4096);
    assert!(fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "2",
        p(&good)
    ])
    .status
    .success());

    let empty = image(dir.path(), "empty.img", 3 * 4096);
    let o = fenced(&["disk", "dump", p(&good), p(&empty)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a formatted voting disk"),
        "{}",
        stderr(&o)
    );

    let foreign = image(dir.path(), "foreign.img", 3 * 4096);
    assert!(fenced(&[
        "disk",
        "format",
        "--cluster",
        OTHER_CLUSTER,
        "--slots",
        "2",
        p(&foreign)
    ])
    .status
    .success());
    let o = fenced(&["disk", "dump", "--cluster", CLUSTER, p(&foreign)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("belongs to cluster"), "{}", stderr(&o));

    let truncated = image(dir.path(), "truncated.img", 3 * 4096);
    assert!(fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "2",
        p(&truncated)
    ])
    .status
    .success());
    std::fs::File::options()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(2 * 4096)
        .unwrap();
    let o = fenced(&["disk", "dump", p(&truncated)]);
    assert!(stderr(&o).contains("too small"), "{}", stderr(&o));

    let newer = image(dir.path(), "newer.img", 3 * 4096);
    let mut h = Header::new(CLUSTER.parse().unwrap(), 2, Timeouts::default());
    h.version = 2;
    let mut b = AlignedBlock::ZERO;
    encode_header(&h, &mut b.0);
    write_block(&newer, 0, &b);
    let o = fenced(&["disk", "dump", p(&newer)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("upgrade fenced"), "{}", stderr(&o));
    let o = fenced(&[
        "disk",
        "format",
        "--cluster",
        CLUSTER,
        "--slots",
        "2",
        p(&newer),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// `fenced disk watch` on files: one JSON line per round and a summary; a missing disk counts
/// against the majority; a marker on a majority is reported as the authority.
#[test]
fn watch_prints_rounds_and_a_summary() {
    let Some(dir) = direct_io_dir() else { return };
    let paths = common::formatted(dir.path(), 3, 4);
    let mut block = AlignedBlock::ZERO;
    let mut dead = DeadSet::default();
    dead.insert(2);
    let slot = SlotBlock {
        cluster: common::cluster(),
        slot: 1,
        state: SlotState::Joined,
        node_name: NodeName::new("b").unwrap(),
        incarnation: 9,
        heartbeat_seq: 4,
        heartbeat_mono_ms: 0,
        marker: Marker {
            epoch: 5,
            generation: 1,
            dead,
            issuer: 1,
        },
        boot: fenced::vdisk::BootId::NIL,
        fenced_boot: fenced::vdisk::BootId::NIL,
    };
    encode_slot(&slot, &mut block.0);
    for path in &paths[..2] {
        write_block(path, slot_offset(1), &block);
    }
    let mut args = vec!["disk", "watch", "--rounds", "2", "--period", "10", "--json"];
    args.extend(paths.iter().map(|x| p(x)));
    let o = fenced(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    let round = &lines[1];
    assert_eq!(round["answered"], 3, "{round}");
    assert_eq!(round["majority"], true);
    assert_eq!(round["authority"]["marker"]["epoch"], 5, "{round}");
    assert_eq!(round["authority"]["marker"]["dead"], serde_json::json!([2]));
    assert_eq!(round["authority"]["disks"], 2);
    assert_eq!(round["slots"][0]["slot"], 1, "{round}");
    assert_eq!(round["slots"][0]["seq"], 4);
    let summary = &lines[2]["summary"];
    assert_eq!(summary["rounds"], 2, "{summary}");
    assert_eq!(summary["majority_rounds"], 2);
    assert_eq!(summary["over_deadline"], 0);

    // Text mode, with one disk gone: 2 of 3 still a majority.
    std::fs::remove_file(&paths[2]).unwrap();
    let mut args = vec!["disk", "watch", "--rounds", "1"];
    args.extend(paths.iter().map(|x| p(x)));
    let o = fenced(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("disks 2/3 [answered answered excluded] majority yes"),
        "{text}"
    );
    assert!(
        text.contains("authority epoch 5 gen 1 issuer 1 dead {2} on 2/3"),
        "{text}"
    );
    assert!(
        text.contains("summary: 1 rounds, 1 with a read majority"),
        "{text}"
    );
}
