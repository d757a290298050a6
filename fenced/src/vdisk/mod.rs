//! Voting disks: the on-disk format, the quorum (authority) computation, the io_uring poller and
//! writer, and the per-round views a daemon loop decides on.
//!
//! A daemon loop uses it like this:
//!
//! ```no_run
//! use fenced::vdisk::{self, NodeName, OpenOptions, QuorumView, SlotBlock, SlotState, VotingDisks};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut disks = VotingDisks::open(&["/dev/vote0", "/dev/vote1", "/dev/vote2"], &OpenOptions::default())?;
//! let own_slot = 2;
//! let incarnation = vdisk::random_u64()?;
//! let mut view = QuorumView::new(disks.header(), disks.paths().len(), own_slot, incarnation);
//! let round = disks.poll_round();
//! view.update(round, std::time::Instant::now());
//! let mut block = SlotBlock {
//!     cluster: disks.header().cluster,
//!     slot: own_slot,
//!     state: SlotState::Joined,
//!     node_name: NodeName::new("node-c").unwrap(),
//!     incarnation,
//!     heartbeat_seq: view.next_own_seq(),
//!     heartbeat_mono_ms: 0,
//!     marker: view.authority().map(|a| a.marker).unwrap_or_default(),
//!     boot: vdisk::BootId::NIL,
//!     fenced_boot: vdisk::BootId::NIL,
//! };
//! if view.may_take_part() {
//!     disks.write_own_slot(&block)?;
//! }
//! # block.heartbeat_seq += 1;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod format;
pub mod quorum;
pub mod report;
pub mod uring;
pub mod view;

use std::io::{self, Read};

pub use format::{
    BlockError, BootId, ClusterId, DeadSet, Header, Marker, NodeName, SelfFenceCause, SlotBlock,
    SlotState, Timeouts, BLOCK_SIZE, FORMAT_VERSION, MAX_SLOTS,
};
pub use quorum::{compute_authority, majority, Authority, AuthorityOutcome, Observation};
pub use uring::{
    DiskStatus, OpenError, OpenOptions, RoundReport, VotingDisks, WriteAck, WriteError,
};
pub use view::{DuplicateSlotUse, NodeView, QuorumView};

/// One 4096-byte block aligned to 4096 bytes, as O_DIRECT transfers need.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct AlignedBlock(pub format::Block);

impl AlignedBlock {
    /// An all-zero block.
    pub const ZERO: AlignedBlock = AlignedBlock([0; BLOCK_SIZE]);
}

/// 8 random bytes from the kernel (for incarnations).
pub fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// This host's CLOCK_MONOTONIC in milliseconds, for a slot block's `heartbeat_mono_ms` (0 if
/// the clock cannot be read; the field is informational).
pub fn mono_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
        })
        .unwrap_or(0)
}

/// The kernel boot this process runs in (`/proc/sys/kernel/random/boot_id`).
pub fn current_boot() -> io::Result<BootId> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    text.parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A random (version 4) cluster UUID.
pub fn random_cluster_id() -> io::Result<ClusterId> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(ClusterId(b))
}
