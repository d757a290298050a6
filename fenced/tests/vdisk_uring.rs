//! Host tests of the io_uring poller and writer on real files with O_DIRECT.

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cluster, direct_io_dir, formatted};
use fenced::vdisk::admin;
use fenced::vdisk::format::slot_offset;
use fenced::vdisk::{
    BlockError, DeadSet, DiskStatus, Header, Marker, NodeName, OpenError, OpenOptions, QuorumView,
    SlotBlock, SlotState, Timeouts, VotingDisks, WriteError,
};

fn block(slot: u8, incarnation: u64, seq: u64, marker: Marker) -> SlotBlock {
    SlotBlock {
        cluster: cluster(),
        slot,
        state: SlotState::Joined,
        node_name: NodeName::new(&format!("node-{slot}")).unwrap(),
        incarnation,
        heartbeat_seq: seq,
        heartbeat_mono_ms: seq * 1000,
        marker,
        boot: fenced::vdisk::BootId::NIL,
        fenced_boot: fenced::vdisk::BootId::NIL,
    }
}

fn marker(epoch: u64, dead: &[u8], issuer: u8) -> Marker {
    let mut d = DeadSet::default();
    for &s in dead {
        d.insert(s);
    }
    Marker {
        epoch,
        generation: 0,
        dead: d,
        issuer,
    }
}

macro_rules! need_direct_io {
    () => {
        match direct_io_dir() {
            Some(d) => d,
            None => return,
        }
    };
}

#[test]
fn empty_disks_poll_clean() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 255);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    assert_eq!(disks.header().slots, 255);
    let round = disks.poll_round();
    assert_eq!(round.answered_disks(), 3);
    assert!(round.has_read_majority());
    for d in 0..3 {
        for s in 0..255 {
            assert_eq!(round.slot(d, s), Some(&Err(BlockError::NeverWritten)));
        }
    }
    assert_eq!(round.authority().authority, None);
}

#[test]
fn write_then_read_back_and_authority() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 8);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let fence = marker(3, &[5], 1);
    let ack = disks.write_own_slot(&block(1, 77, 1, fence)).unwrap();
    assert_eq!((ack.acked, ack.total), (3, 3));
    let round = disks.poll_round();
    for d in 0..3 {
        let b = round.slot(d, 1).unwrap().as_ref().unwrap();
        assert_eq!(b.incarnation, 77);
        assert_eq!(b.marker, fence);
    }
    let auth = round.authority().authority.unwrap();
    assert_eq!(auth.marker, fence);
    assert_eq!(auth.disks, 3);

    let mut view = QuorumView::new(disks.header(), 3, 2, 99);
    view.update(disks.poll_round(), Instant::now());
    assert!(view.is_dead(5));
    assert!(!view.self_dead());
    assert!(view.has_read_majority());
    assert!(view.may_take_part());
}

#[test]
fn corrupt_and_foreign_blocks_are_rejected_per_disk() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 8);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let fence = marker(2, &[4], 0);
    disks.write_own_slot(&block(0, 1, 1, fence)).unwrap();

    // Flip one bit of slot 0 on disk 0 behind the poller's back.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&paths[0])
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, slot_offset(0) + 300).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], slot_offset(0) + 300)
        .unwrap();
    // Copy slot 0's block into slot 3 of disk 1: a block at the wrong position.
    let mut blk = vec![0u8; 4096];
    let f1 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&paths[1])
        .unwrap();
    f1.read_exact_at(&mut blk, slot_offset(0)).unwrap();
    f1.write_all_at(&blk, slot_offset(3)).unwrap();
    drop((f, f1));

    let round = disks.poll_round();
    assert!(matches!(
        round.slot(0, 0),
        Some(Err(BlockError::BadCrc { .. }))
    ));
    assert!(matches!(
        round.slot(1, 3),
        Some(Err(BlockError::WrongSlot {
            expected: 3,
            found: 0
        }))
    ));
    let auth = round.authority().authority.unwrap();
    assert_eq!((auth.marker, auth.disks), (fence, 2));
}

#[test]
fn open_excludes_missing_and_foreign_disks_but_needs_a_majority() {
    let dir = need_direct_io!();
    let mut paths = formatted(dir.path(), 2, 4);
    let foreign = common::image(dir.path(), "foreign.img", 5 * 4096);
    let other: fenced::vdisk::ClusterId = common::OTHER_CLUSTER.parse().unwrap();
    admin::format_disk(&foreign, &Header::new(other, 4, Timeouts::default()), false).unwrap();
    paths.push(foreign.clone());
    let opts = OpenOptions {
        cluster: Some(cluster()),
        ..common::patient()
    };
    let mut disks = VotingDisks::open(&paths, &opts).unwrap();
    let round = disks.poll_round();
    assert_eq!(round.disk_statuses()[2], DiskStatus::Excluded);
    assert_eq!(round.answered_disks(), 2);
    assert!(round.has_read_majority());

    let missing = dir.path().join("does-not-exist");
    let err = VotingDisks::open(&[paths[0].clone(), missing, foreign], &opts)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            OpenError::NoMajorityHeader {
                agreeing: 1,
                needed: 2,
                total: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("does-not-exist"));
}

#[test]
fn reformatted_disk_is_reported_and_not_counted() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 4);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let other: fenced::vdisk::ClusterId = common::OTHER_CLUSTER.parse().unwrap();
    admin::format_disk(&paths[1], &Header::new(other, 4, Timeouts::default()), true).unwrap();
    let round = disks.poll_round();
    assert_eq!(round.disk_statuses()[1], DiskStatus::HeaderChanged);
    assert_eq!(round.answered_disks(), 2);
    assert_eq!(round.slot(1, 0), None);
}

/// Writes that fail on two of three disks must not be claimed (fail closed). `chattr +i` makes
/// ext4 refuse writes on an already open fd with EPERM.
#[test]
fn write_without_majority_fails_closed() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 4);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let chattr = |flag: &str, p: &std::path::Path| {
        Command::new("chattr")
            .arg(flag)
            .arg(p)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i", &paths[1]) {
        eprintln!("SKIPPED: chattr +i not available (needs root and ext4)");
        return;
    }
    assert!(chattr("+i", &paths[2]));
    let one_of_three = disks.write_own_slot(&block(0, 5, 1, Marker::default()));
    // Also: exactly a majority (2 of 3) succeeds.
    assert!(chattr("-i", &paths[2]));
    let two_of_three = disks.write_own_slot(&block(0, 5, 2, Marker::default()));
    let statuses = disks.last_write().to_vec();
    assert!(chattr("-i", &paths[1]));
    assert_eq!(
        one_of_three,
        Err(WriteError::NoMajority {
            acked: 1,
            needed: 2,
            total: 3
        })
    );
    assert_eq!(
        statuses,
        [
            DiskStatus::Answered,
            DiskStatus::IoError(libc::EPERM),
            DiskStatus::Answered
        ]
    );
    let ack = two_of_three.unwrap();
    assert_eq!(ack.acked, 2);
}

#[test]
fn write_of_a_foreign_block_is_refused() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 1, 4);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let mut b = block(4, 1, 1, Marker::default());
    assert!(matches!(
        disks.write_own_slot(&b),
        Err(WriteError::InvalidBlock { .. })
    ));
    b.slot = 0;
    b.cluster = common::OTHER_CLUSTER.parse().unwrap();
    assert!(matches!(
        disks.write_own_slot(&b),
        Err(WriteError::InvalidBlock { .. })
    ));
}

#[test]
fn heartbeat_age_and_duplicate_own_slot() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 4);
    let mut a = VotingDisks::open(&paths, &common::patient()).unwrap();
    let mut b = VotingDisks::open(&paths, &common::patient()).unwrap();
    let mut view = QuorumView::new(a.header(), 3, 0, 1000);

    // Node in slot 2 heartbeats once, then stops.
    b.write_own_slot(&block(2, 2000, 1, Marker::default()))
        .unwrap();
    view.update(a.poll_round(), Instant::now());
    assert_eq!(view.node(2).unwrap().heartbeat, Some((2000, 1)));
    assert_eq!(view.node(2).unwrap().rounds_since_change, 0);
    for _ in 0..3 {
        view.update(a.poll_round(), Instant::now());
    }
    assert_eq!(view.node(2).unwrap().rounds_since_change, 3);
    assert!(view.node(2).unwrap().age(Instant::now()).is_some());
    assert!(view.duplicate_own_slot().is_none());

    // We write our slot 0, then another incarnation overwrites it: duplicate, loudly.
    let seq = view.next_own_seq();
    a.write_own_slot(&block(0, 1000, seq, Marker::default()))
        .unwrap();
    view.update(a.poll_round(), Instant::now());
    assert!(view.duplicate_own_slot().is_none());
    b.write_own_slot(&block(0, 3000, 1, Marker::default()))
        .unwrap();
    view.update(a.poll_round(), Instant::now());
    let dup = view.duplicate_own_slot().expect("duplicate detected");
    assert_eq!(dup.incarnation, 3000);
    assert!(!view.may_take_part());
}

#[test]
fn stale_block_of_previous_incarnation_is_not_a_duplicate() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 4);
    let mut old = VotingDisks::open(&paths, &common::patient()).unwrap();
    old.write_own_slot(&block(1, 41, 900, Marker::default()))
        .unwrap();
    drop(old);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let mut view = QuorumView::new(disks.header(), 3, 1, 42);
    view.update(disks.poll_round(), Instant::now());
    view.update(disks.poll_round(), Instant::now());
    assert!(view.duplicate_own_slot().is_none());
    // The restarted daemon continues above the old sequence.
    assert_eq!(view.next_own_seq(), 901);
    disks
        .write_own_slot(&block(1, 42, 901, Marker::default()))
        .unwrap();
    view.update(disks.poll_round(), Instant::now());
    assert!(view.duplicate_own_slot().is_none());
    assert_eq!(view.node(1).unwrap().heartbeat, Some((42, 901)));
}

#[test]
fn authority_never_moves_backwards_in_the_view() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 4);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let mut view = QuorumView::new(disks.header(), 3, 3, 1);
    let newer = marker(5, &[2], 0);
    disks.write_own_slot(&block(0, 9, 1, newer)).unwrap();
    view.update(disks.poll_round(), Instant::now());
    assert_eq!(view.authority().unwrap().marker, newer);
    // Slot 0 goes back to an older marker; slot 1 carries an even older one.
    disks
        .write_own_slot(&block(0, 9, 2, marker(4, &[1], 0)))
        .unwrap();
    view.update(disks.poll_round(), Instant::now());
    assert_eq!(view.authority().unwrap().marker, newer);
}

#[test]
fn rounds_stay_within_deadline_with_a_tiny_deadline() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 255);
    let opts = OpenOptions {
        io_deadline: Some(Duration::from_micros(50)),
        ..OpenOptions::default()
    };
    let mut disks = VotingDisks::open(&paths, &opts).unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..200 {
        let r = disks.poll_round();
        worst = worst.max(r.elapsed());
    }
    // Whatever answered or timed out, no round waited much past its deadline.
    assert!(worst < Duration::from_millis(20), "worst round {worst:?}");
}

#[test]
fn header_with_timeouts_breaking_the_model_is_excluded() {
    let dir = need_direct_io!();
    let paths = formatted(dir.path(), 3, 4);
    let mut h = Header::new(cluster(), 4, Timeouts::default());
    h.timeouts.io_deadline_ms = u32::MAX; // would stretch every round to 49 days
    let mut b = fenced::vdisk::AlignedBlock::ZERO;
    fenced::vdisk::format::encode_header(&h, &mut b.0);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[0])
        .unwrap();
    f.write_all_at(&b.0, 0).unwrap();
    let mut disks = VotingDisks::open(&paths, &OpenOptions::default()).unwrap();
    assert_eq!(disks.io_deadline(), Duration::from_millis(500));
    assert_eq!(disks.poll_round().disk_statuses()[0], DiskStatus::Excluded);
}
