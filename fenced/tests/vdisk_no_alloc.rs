//! A poll round and an own-slot write allocate nothing after start-up. Its own test binary
//! because it installs a counting global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fenced::vdisk::{report, Marker, NodeName, QuorumView, SlotBlock, SlotState, VotingDisks};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call unchanged to the system allocator; the counter has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn poll_rounds_and_writes_do_not_allocate() {
    let Some(dir) = common::direct_io_dir() else {
        return;
    };
    let paths = common::formatted(dir.path(), 3, 255);
    let mut disks = VotingDisks::open(&paths, &common::patient()).unwrap();
    let mut view = QuorumView::new(disks.header(), 3, 7, 4242);
    let mut block = SlotBlock {
        cluster: common::cluster(),
        slot: 7,
        state: SlotState::Joined,
        node_name: NodeName::new("node-7").unwrap(),
        incarnation: 4242,
        heartbeat_seq: 0,
        heartbeat_mono_ms: 0,
        marker: Marker {
            epoch: 1,
            ..Marker::default()
        },
        boot: fenced::vdisk::BootId::NIL,
        fenced_boot: fenced::vdisk::BootId::NIL,
    };
    // Warm-up (first use of the clock, the ring's first enter).
    view.update(disks.poll_round(), Instant::now());
    block.heartbeat_seq = view.next_own_seq();
    disks.write_own_slot(&block).unwrap();

    // What `fenced disk watch` and the VM tests' node driver do each round: format the round
    // into a line buffer allocated once.
    let mut line = String::with_capacity(report::LINE_CAPACITY);
    COUNTING.with(|c| c.set(true));
    for _ in 0..100 {
        let round = disks.poll_round();
        assert!(round.has_read_majority());
        view.update(round, Instant::now());
        block.heartbeat_seq = view.next_own_seq();
        disks.write_own_slot(&block).unwrap();
        let in_flight = disks.buffers_in_flight();
        line.clear();
        report::round_json_fields(
            &mut line,
            disks.last_round(),
            &view,
            in_flight,
            Instant::now(),
        )
        .unwrap();
        report::round_text(
            &mut line,
            disks.last_round(),
            &view,
            in_flight,
            Instant::now(),
        )
        .unwrap();
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "heap allocations in 100 rounds"
    );
    assert!(view.authority().is_some());
    assert!(line.contains(r#""slot":7,"node":"node-7""#), "{line}");
}
