//! The voting-disk poller and writer: O_DIRECT I/O through one io_uring.
//!
//! This is the only module of `fenced` with `unsafe`. The rules that make it sound:
//!
//! * Every buffer the kernel may touch is a heap block owned by `VotingDisks::bufs`, allocated
//!   once at start-up and never moved, resized or freed while the ring lives.
//! * A buffer is handed to the kernel only when its state is `Free`, and becomes `Free` again only
//!   when *its own* completion arrives — never because a timeout fired. A read that outlives its
//!   deadline simply leaves its buffer `InFlight`; that disk counts as missing.
//! * If the poller is dropped while a buffer is still in flight, that buffer's memory is leaked
//!   on purpose rather than freed under a pending DMA.
//!
//! Each round: one read per disk of the header and every slot block (one contiguous, aligned
//! transfer into a registered buffer), each with a linked timeout (`IOSQE_IO_LINK` +
//! `LinkTimeout`), all submitted in one `io_uring_enter`; the wait on the ring itself is bounded by
//! `io_uring_enter`'s own timeout (`IORING_ENTER_EXT_ARG`). Two read buffers per disk let a
//! disk whose previous read is still stuck be read again while the old buffer stays owned.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::format::{
    decode_header, decode_slot, encode_slot, slot_offset, BlockError, Header, SlotBlock, BLOCK_SIZE,
};
use super::quorum::{compute_authority, majority, AuthorityOutcome, Observation};
use super::AlignedBlock;

/// Buffer roles per disk.
const ROLE_READ_A: usize = 0;
const ROLE_READ_B: usize = 1;
const ROLE_WRITE: usize = 2;
const ROLE_PROBE: usize = 3;
const ROLES: usize = 4;
/// Roles that are registered as fixed buffers (`disk * REGISTERED_ROLES + role`).
const REGISTERED_ROLES: usize = 3;

/// `user_data` of our own reads/writes has this bit set; linked timeouts use 0 and are ignored.
const UD_IO: u64 = 1 << 63;
const UD_TAG_SHIFT: u32 = 16;
const UD_TAG_MASK: u64 = (1 << 47) - 1;

/// Largest number of voting disks one poller handles.
pub const MAX_DISKS: usize = 32;

/// Where a buffer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufState {
    /// Not owned by the kernel; may be handed out.
    Free,
    /// Owned by the kernel until the completion carrying `tag` arrives.
    InFlight { tag: u64 },
    /// The completion of the operation `tag` arrived with result `res`.
    Done { tag: u64, res: i32 },
}

struct IoBuf {
    mem: Box<[AlignedBlock]>,
    state: BufState,
}

impl IoBuf {
    fn empty() -> Self {
        IoBuf {
            mem: Box::new([]),
            state: BufState::Free,
        }
    }

    fn with_blocks(n: usize) -> Self {
        IoBuf {
            mem: vec![AlignedBlock::ZERO; n].into_boxed_slice(),
            state: BufState::Free,
        }
    }

    fn byte_len(&self) -> usize {
        self.mem.len() * BLOCK_SIZE
    }
}

/// Options of [`VotingDisks::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Refuse disks of any other cluster. `None` accepts the cluster the majority carries.
    pub cluster: Option<super::format::ClusterId>,
    /// Deadline of the header read at start-up.
    pub probe_deadline: Duration,
    /// Deadline of each round's I/O; `None` uses the header's `io_deadline_ms`.
    pub io_deadline: Option<Duration>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cluster: None,
            probe_deadline: Duration::from_secs(2),
            io_deadline: None,
        }
    }
}

/// Why the voting disks could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No disks, or more than the poller handles.
    #[error("between 1 and {MAX_DISKS} voting disks are needed, {0} were given")]
    DiskCount(usize),
    /// The ring could not be created.
    #[error("cannot set up io_uring: {0} (is io_uring disabled by kernel.io_uring_disabled or a seccomp filter?)")]
    Ring(#[source] io::Error),
    /// The kernel lacks a feature the bounded wait needs.
    #[error("the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11+ is required for bounded waits)")]
    KernelTooOld,
    /// Fewer than a majority of disks carry one identical valid header.
    #[error("only {agreeing} of {total} voting disks carry the same valid header, {needed} are needed; check each with `fenced disk dump`: {details}")]
    NoMajorityHeader {
        /// Disks with the most common valid header.
        agreeing: usize,
        /// Majority of `total`.
        needed: usize,
        /// Configured disks.
        total: usize,
        /// One line per disk saying what was found.
        details: String,
    },
}

/// Why an own-slot write was not acknowledged by a majority. Nothing may be claimed then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The block is not for this cluster or slot range.
    #[error("refusing to write a block of cluster {cluster} slot {slot}: the disks are cluster {expected} with {slots} slots")]
    InvalidBlock {
        /// Cluster in the block.
        cluster: super::format::ClusterId,
        /// Slot in the block.
        slot: u8,
        /// Cluster of the disks.
        expected: super::format::ClusterId,
        /// Slot count of the disks.
        slots: u8,
    },
    /// Fewer than a majority of disks acknowledged within the deadline.
    #[error("own slot written to only {acked} of {total} voting disks within the deadline, {needed} needed: not claiming it")]
    NoMajority {
        /// Disks that acknowledged the full block in time.
        acked: usize,
        /// Majority of `total`.
        needed: usize,
        /// Configured disks.
        total: usize,
    },
}

/// What happened to one disk in one round or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskStatus {
    /// Completed in time with a valid, matching header (reads) or the full block (writes).
    Answered,
    /// Could not be opened, or its header at start-up was missing or different: never used.
    Excluded,
    /// Every buffer of this disk is still owned by an earlier, unfinished operation.
    Busy,
    /// No completion by the deadline (or cancelled by its linked timeout).
    TimedOut,
    /// Completed with this errno.
    IoError(i32),
    /// Completed with fewer bytes than asked.
    ShortTransfer(u32),
    /// The header block read this round is invalid.
    BadHeader(BlockError),
    /// The header is valid but differs from the one at start-up (reformatted?).
    HeaderChanged,
}

impl DiskStatus {
    /// Whether this disk counts towards the majority this round.
    pub fn answered(&self) -> bool {
        matches!(self, DiskStatus::Answered)
    }
}

/// Everything one poll round read. Owned by the poller, overwritten by the next round.
#[derive(Debug)]
pub struct RoundReport {
    slot_count: u8,
    started: Option<Instant>,
    elapsed: Duration,
    disks: Vec<DiskStatus>,
    slots: Vec<Result<SlotBlock, BlockError>>,
    outcome: AuthorityOutcome,
    answered: usize,
}

impl RoundReport {
    fn new(disks: usize, slot_count: u8) -> Self {
        RoundReport {
            slot_count,
            started: None,
            elapsed: Duration::ZERO,
            disks: vec![DiskStatus::Excluded; disks],
            slots: vec![Err(BlockError::NeverWritten); disks * usize::from(slot_count)],
            outcome: AuthorityOutcome::default(),
            answered: 0,
        }
    }

    /// Number of configured disks.
    pub fn disk_count(&self) -> usize {
        self.disks.len()
    }

    /// Slots per disk.
    pub fn slot_count(&self) -> u8 {
        self.slot_count
    }

    /// CLOCK_MONOTONIC time the round started.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Wall time the round took (never much more than the I/O deadline).
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Status of each disk this round.
    pub fn disk_statuses(&self) -> &[DiskStatus] {
        &self.disks
    }

    /// The decoded block of `slot` on `disk`, if that disk answered.
    pub fn slot(&self, disk: usize, slot: u8) -> Option<&Result<SlotBlock, BlockError>> {
        if !self.disks.get(disk)?.answered() {
            return None;
        }
        self.slots
            .get(disk * usize::from(self.slot_count) + usize::from(slot))
    }

    /// Disks that answered with a valid header.
    pub fn answered_disks(&self) -> usize {
        self.answered
    }

    /// Whether a majority of the configured disks answered.
    pub fn has_read_majority(&self) -> bool {
        self.answered >= majority(self.disks.len())
    }

    /// The authority computed this round.
    pub fn authority(&self) -> &AuthorityOutcome {
        &self.outcome
    }
}

/// Result of a successful own-slot write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAck {
    /// Disks that acknowledged the block in time.
    pub acked: usize,
    /// Configured disks.
    pub total: usize,
    /// Time from submission to the last awaited completion.
    pub elapsed: Duration,
}

/// A set of voting disks opened for polling and for writing this node's slot.
pub struct VotingDisks {
    // Field order matters: the ring is dropped (and closed) before the buffers.
    ring: IoUring,
    paths: Vec<PathBuf>,
    files: Vec<Option<File>>,
    bufs: Vec<IoBuf>,
    fixed_buffers: bool,
    header: Header,
    io_deadline: Duration,
    /// The linked timeouts' timespec; boxed so queued SQEs never point into a moved struct.
    link_timeout: Box<types::Timespec>,
    tag: u64,
    batch: Vec<usize>,
    scratch: Vec<Observation>,
    report: RoundReport,
    write_status: Vec<DiskStatus>,
    /// Per disk: the slot as last written there durably (RWF_DSYNC, acknowledged in time),
    /// its heartbeat fields cleared ([`durable_part`]).
    durable: Vec<Option<SlotBlock>>,
    /// Per disk: whether the write in flight is a durable one.
    durable_pending: Vec<bool>,
}

/// What of a slot must be on stable media before a write of it is claimed: all of it but the
/// heartbeat, which the owner rewrites every round and nobody needs after a power loss.
fn durable_part(block: &SlotBlock) -> SlotBlock {
    SlotBlock {
        heartbeat_seq: 0,
        heartbeat_mono_ms: 0,
        ..*block
    }
}

fn buf_id(disk: usize, role: usize) -> usize {
    disk * ROLES + role
}

fn user_data(tag: u64, id: usize) -> u64 {
    UD_IO | ((tag & UD_TAG_MASK) << UD_TAG_SHIFT) | (id as u64 & 0xffff)
}

/// O_DIRECT, without O_DSYNC: the writes that must be durable ask for it (RWF_DSYNC). On a
/// disk with a volatile write cache and no FUA (virtio-blk, some LUNs), every durable write
/// waits for the block layer's flush sequence, which runs on kblockd's kworkers at normal
/// priority: real-time load that starves them held every heartbeat past its deadline and reset
/// a healthy node (the fault campaign's `rt-hogs` below the loop's priority).
fn open_disk(path: &Path) -> io::Result<File> {
    FsOpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

impl VotingDisks {
    /// Opens the voting disks, reads their headers through the ring (bounded by
    /// `probe_deadline`), and allocates and registers every buffer the poller will ever use.
    ///
    /// Disks that cannot be opened or whose header differs from the majority's are excluded
    /// (they count as missing in every round); opening fails unless a majority agree.
    pub fn open<P: AsRef<Path>>(paths: &[P], opts: &OpenOptions) -> Result<Self, OpenError> {
        let n = paths.len();
        if n == 0 || n > MAX_DISKS {
            return Err(OpenError::DiskCount(n));
        }
        let entries = u32::try_from((n * 8).next_power_of_two().max(16)).unwrap_or(256);
        let ring = IoUring::new(entries).map_err(OpenError::Ring)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(OpenError::KernelTooOld);
        }
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let mut open_errors: Vec<Option<io::Error>> = Vec::with_capacity(n);
        let mut files = Vec::with_capacity(n);
        for p in &paths {
            match open_disk(p) {
                Ok(f) => {
                    files.push(Some(f));
                    open_errors.push(None);
                }
                Err(e) => {
                    tracing::warn!(disk = %p.display(), error = %e, "cannot open voting disk; it counts as missing");
                    files.push(None);
                    open_errors.push(Some(e));
                }
            }
        }
        let mut bufs = Vec::with_capacity(n * ROLES);
        for _ in 0..n {
            for role in 0..ROLES {
                bufs.push(if role == ROLE_PROBE {
                    IoBuf::with_blocks(1)
                } else {
                    IoBuf::empty()
                });
            }
        }
        let placeholder = Header::new(super::format::ClusterId::NIL, 1, Default::default());
        let mut this = VotingDisks {
            ring,
            paths,
            files,
            bufs,
            fixed_buffers: false,
            header: placeholder,
            io_deadline: opts.probe_deadline,
            link_timeout: Box::new(types::Timespec::from(opts.probe_deadline)),
            tag: 0,
            batch: Vec::with_capacity(n),
            scratch: Vec::new(),
            report: RoundReport::new(n, 0),
            write_status: vec![DiskStatus::Excluded; n],
            durable: vec![None; n],
            durable_pending: vec![false; n],
        };

        // Probe: read block 0 of every disk.
        let headers = this.probe_headers(opts.probe_deadline);
        let mut best: Option<(Header, usize)> = None;
        for h in headers.iter().flatten() {
            if opts.cluster.is_some_and(|c| c != h.cluster) {
                continue;
            }
            let count = headers.iter().filter(|x| x.as_ref() == Ok(h)).count();
            if best.is_none_or(|(_, c)| count > c) {
                best = Some((*h, count));
            }
        }
        let needed = majority(n);
        let (header, agreeing) = match best {
            Some((h, c)) if c >= needed => (h, c),
            other => {
                let details = this
                    .paths
                    .iter()
                    .zip(&headers)
                    .zip(&open_errors)
                    .map(|((p, h), e)| match (e, h) {
                        (Some(e), _) => format!("{}: cannot open: {e}", p.display()),
                        (None, Ok(h)) => format!(
                            "{}: cluster {} with {} slots",
                            p.display(),
                            h.cluster,
                            h.slots
                        ),
                        (None, Err(e)) => format!("{}: {}", p.display(), e),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(OpenError::NoMajorityHeader {
                    agreeing: other.map_or(0, |(_, c)| c),
                    needed,
                    total: n,
                    details,
                });
            }
        };
        tracing::info!(cluster = %header.cluster, slots = header.slots, agreeing, total = n, "voting disks opened");
        for (disk, h) in headers.iter().enumerate() {
            if h.as_ref() != Ok(&header) {
                tracing::warn!(disk = %this.paths[disk].display(), found = ?h, "voting disk excluded: its header differs from the majority's");
                this.files[disk] = None;
            }
        }
        this.header = header;
        this.io_deadline = opts.io_deadline.unwrap_or(Duration::from_millis(u64::from(
            header.timeouts.io_deadline_ms,
        )));
        *this.link_timeout = types::Timespec::from(this.io_deadline);
        let blocks = 1 + usize::from(header.slots);
        for disk in 0..n {
            for role in [ROLE_READ_A, ROLE_READ_B] {
                this.bufs[buf_id(disk, role)] = IoBuf::with_blocks(blocks);
            }
            this.bufs[buf_id(disk, ROLE_WRITE)] = IoBuf::with_blocks(1);
        }
        this.report = RoundReport::new(n, header.slots);
        this.scratch = Vec::with_capacity(n * usize::from(header.slots));
        this.register_buffers();
        Ok(this)
    }

    fn register_buffers(&mut self) {
        let mut iovecs = Vec::with_capacity(self.paths.len() * REGISTERED_ROLES);
        for disk in 0..self.paths.len() {
            for role in 0..REGISTERED_ROLES {
                let buf = &mut self.bufs[buf_id(disk, role)];
                iovecs.push(libc::iovec {
                    iov_base: buf.mem.as_mut_ptr().cast(),
                    iov_len: buf.byte_len(),
                });
            }
        }
        // SAFETY: every iovec points at a boxed slice owned by `self.bufs`. Those boxes are
        // never replaced, resized or freed after this point while the ring lives (the ring field
        // is dropped first, and `Drop` leaks any buffer still in flight), so the memory stays
        // valid until the buffers are unregistered with the ring.
        let registered = unsafe { self.ring.submitter().register_buffers(&iovecs) };
        match registered {
            Ok(()) => self.fixed_buffers = true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register io_uring buffers (RLIMIT_MEMLOCK?); using unregistered buffers")
            }
        }
    }

    fn probe_headers(&mut self, deadline: Duration) -> Vec<Result<Header, BlockError>> {
        let n = self.paths.len();
        self.tag += 1;
        let tag = self.tag;
        self.batch.clear();
        *self.link_timeout = types::Timespec::from(deadline);
        for disk in 0..n {
            let Some(fd) = self.files[disk].as_ref().map(AsRawFd::as_raw_fd) else {
                continue;
            };
            let id = buf_id(disk, ROLE_PROBE);
            let buf = &mut self.bufs[id];
            let len = u32::try_from(buf.byte_len()).unwrap_or(0);
            let read = opcode::Read::new(types::Fd(fd), buf.mem.as_mut_ptr().cast(), len)
                .offset(0)
                .build();
            if self.push_linked(read, tag, id) {
                self.batch.push(id);
            }
        }
        self.wait(Instant::now() + deadline);
        let mut out = vec![Err(BlockError::NeverWritten); n];
        for (disk, out) in out.iter_mut().enumerate() {
            let id = buf_id(disk, ROLE_PROBE);
            let buf = &mut self.bufs[id];
            if let BufState::Done { tag: t, res } = buf.state {
                buf.state = BufState::Free;
                if t == tag && usize::try_from(res).is_ok_and(|r| r == BLOCK_SIZE) {
                    // Timeouts that break the timing model (e.g. a huge I/O deadline) would
                    // let a crafted disk stretch every round: such a header is not accepted.
                    *out = decode_header(&buf.mem[0].0).and_then(|h| {
                        h.timeouts.check().map(|()| h).map_err(|_| {
                            BlockError::InvalidField("timeouts (break the timing model)")
                        })
                    });
                } else {
                    *out = Err(BlockError::InvalidField(
                        "header read (I/O error or timeout)",
                    ));
                }
            } else if self.files[disk].is_some() {
                *out = Err(BlockError::InvalidField(
                    "header read (no answer by the deadline)",
                ));
            }
        }
        out
    }

    /// Queues `op` (already built for buffer `id`) followed by a linked timeout. Returns false
    /// and queues nothing if the submission queue is full.
    fn push_linked(&mut self, op: squeue::Entry, tag: u64, id: usize) -> bool {
        let op = op
            .flags(squeue::Flags::IO_LINK)
            .user_data(user_data(tag, id));
        let timeout = opcode::LinkTimeout::new(&*self.link_timeout)
            .build()
            .user_data(0);
        let mut sq = self.ring.submission();
        // SAFETY: `op` points into the buffer `id`, owned by `self.bufs` and not moved or freed
        // until its own completion arrives (its state becomes `InFlight` right below and only
        // `reap` moves it on, on the CQE carrying this buffer's id and tag). The linked
        // timeout points into `self.link_timeout`, a box that outlives the ring and is read by
        // the kernel when the entry is submitted.
        let pushed = unsafe { sq.push_multiple(&[op, timeout]) };
        drop(sq);
        if pushed.is_ok() {
            self.bufs[id].state = BufState::InFlight { tag };
        }
        pushed.is_ok()
    }

    /// Moves completions from the ring into the buffer states.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            let ud = cqe.user_data();
            if ud & UD_IO == 0 {
                continue; // a linked timeout's own completion
            }
            let tag = (ud >> UD_TAG_SHIFT) & UD_TAG_MASK;
            let id = usize::try_from(ud & 0xffff).unwrap_or(usize::MAX);
            if let Some(buf) = self.bufs.get_mut(id) {
                if buf.state == (BufState::InFlight { tag }) {
                    buf.state = BufState::Done {
                        tag,
                        res: cqe.result(),
                    };
                }
            }
        }
    }

    /// Submits what is queued and waits until every operation of `self.batch` completed or the
    /// deadline passed, whichever is first. Never blocks past `deadline`.
    fn wait(&mut self, deadline: Instant) {
        let mut submitted = false;
        loop {
            self.reap();
            let pending = self
                .batch
                .iter()
                .any(|&id| matches!(self.bufs[id].state, BufState::InFlight { .. }));
            if submitted && !pending {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                if !submitted {
                    let _ = self.ring.submit();
                }
                return;
            }
            let ts = types::Timespec::from(deadline - now);
            let args = types::SubmitArgs::new().timespec(&ts);
            let want = usize::from(pending);
            match self.ring.submitter().submit_with_args(want, &args) {
                Ok(_) => submitted = true,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) =>
                {
                    submitted = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed");
                    return;
                }
            }
        }
    }

    /// Frees buffers whose late completion arrived since they were abandoned.
    fn release_stale(&mut self) {
        for buf in &mut self.bufs {
            if matches!(buf.state, BufState::Done { .. }) {
                buf.state = BufState::Free;
            }
        }
    }

    /// The header the disks were opened with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Paths of the configured disks, in index order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Deadline of each round's I/O.
    pub fn io_deadline(&self) -> Duration {
        self.io_deadline
    }

    /// Whether buffers are registered with the ring (fixed reads/writes).
    pub fn uses_fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    /// The report of the last round.
    pub fn last_round(&self) -> &RoundReport {
        &self.report
    }

    /// One poll round: reads every slot of every disk in one batch, decodes, and computes the
    /// authority. Returns within the I/O deadline (plus decoding time) whatever the disks do.
    /// Allocates nothing.
    pub fn poll_round(&mut self) -> &RoundReport {
        let started = Instant::now();
        let deadline = started + self.io_deadline;
        self.reap();
        self.release_stale();
        self.tag += 1;
        let tag = self.tag;
        self.batch.clear();
        let n = self.paths.len();
        for disk in 0..n {
            let Some(fd) = self.files[disk].as_ref().map(AsRawFd::as_raw_fd) else {
                self.report.disks[disk] = DiskStatus::Excluded;
                continue;
            };
            let free_role = [ROLE_READ_A, ROLE_READ_B]
                .into_iter()
                .find(|&r| self.bufs[buf_id(disk, r)].state == BufState::Free);
            let Some(role) = free_role else {
                self.report.disks[disk] = DiskStatus::Busy;
                continue;
            };
            let id = buf_id(disk, role);
            let buf = &mut self.bufs[id];
            let len = u32::try_from(buf.byte_len()).unwrap_or(0);
            let ptr = buf.mem.as_mut_ptr().cast::<u8>();
            let read = if self.fixed_buffers {
                let index = u16::try_from(disk * REGISTERED_ROLES + role).unwrap_or(u16::MAX);
                opcode::ReadFixed::new(types::Fd(fd), ptr, len, index)
                    .offset(0)
                    .build()
            } else {
                opcode::Read::new(types::Fd(fd), ptr, len).offset(0).build()
            };
            if self.push_linked(read, tag, id) {
                self.batch.push(id);
                self.report.disks[disk] = DiskStatus::TimedOut;
            } else {
                self.report.disks[disk] = DiskStatus::Busy;
            }
        }
        self.wait(deadline);

        self.scratch.clear();
        self.report.answered = 0;
        let slots = usize::from(self.header.slots);
        for i in 0..self.batch.len() {
            let id = self.batch[i];
            let disk = id / ROLES;
            let buf = &mut self.bufs[id];
            let BufState::Done { tag: t, res } = buf.state else {
                continue; // still in flight: stays owned, disk counts as missing
            };
            buf.state = BufState::Free;
            debug_assert_eq!(t, tag);
            let status = if res == -libc::ECANCELED || res == -libc::EINTR {
                DiskStatus::TimedOut
            } else if res < 0 {
                DiskStatus::IoError(-res)
            } else if usize::try_from(res).ok() != Some(buf.byte_len()) {
                DiskStatus::ShortTransfer(res.unsigned_abs())
            } else {
                match decode_header(&buf.mem[0].0) {
                    Err(e) => DiskStatus::BadHeader(e),
                    Ok(h) if h != self.header => DiskStatus::HeaderChanged,
                    Ok(_) => DiskStatus::Answered,
                }
            };
            self.report.disks[disk] = status;
            if !status.answered() {
                continue;
            }
            self.report.answered += 1;
            let cluster = self.header.cluster;
            for s in 0..slots {
                let slot = u8::try_from(s).unwrap_or(u8::MAX);
                let decoded = decode_slot(&buf.mem[1 + s].0, &cluster, slot);
                if let Ok(block) = &decoded {
                    if block.marker.is_present() && self.scratch.len() < self.scratch.capacity() {
                        self.scratch.push(Observation {
                            disk: u8::try_from(disk).unwrap_or(u8::MAX),
                            marker: block.marker,
                        });
                    }
                }
                self.report.slots[disk * slots + s] = decoded;
            }
        }
        self.report.outcome = compute_authority(n, &mut self.scratch);
        if self.report.outcome.conflict {
            tracing::error!(authority = ?self.report.outcome.authority, "two different fence markers with one (epoch, generation) are both on a majority");
        }
        self.report.started = Some(started);
        self.report.elapsed = started.elapsed();
        &self.report
    }

    /// Writes this node's slot block to every disk in parallel (O_DIRECT, linked timeouts;
    /// RWF_DSYNC where the disk has not yet stored durably what the block says besides its
    /// heartbeat: a marker, a state). Succeeds only when a majority acknowledged the whole
    /// block by the deadline; otherwise nothing may be claimed (fail closed). Allocates
    /// nothing.
    pub fn write_own_slot(&mut self, block: &SlotBlock) -> Result<WriteAck, WriteError> {
        if block.cluster != self.header.cluster || block.slot >= self.header.slots {
            return Err(WriteError::InvalidBlock {
                cluster: block.cluster,
                slot: block.slot,
                expected: self.header.cluster,
                slots: self.header.slots,
            });
        }
        let started = Instant::now();
        let deadline = started + self.io_deadline;
        self.reap();
        self.release_stale();
        self.tag += 1;
        let tag = self.tag;
        self.batch.clear();
        let n = self.paths.len();
        let offset = slot_offset(block.slot);
        let durable = durable_part(block);
        for disk in 0..n {
            let Some(fd) = self.files[disk].as_ref().map(AsRawFd::as_raw_fd) else {
                self.write_status[disk] = DiskStatus::Excluded;
                continue;
            };
            let id = buf_id(disk, ROLE_WRITE);
            if self.bufs[id].state != BufState::Free {
                self.write_status[disk] = DiskStatus::Busy;
                continue;
            }
            let buf = &mut self.bufs[id];
            encode_slot(block, &mut buf.mem[0].0);
            let ptr = buf.mem.as_ptr().cast::<u8>();
            let len = u32::try_from(BLOCK_SIZE).unwrap_or(0);
            // Durable when anything but the heartbeat changed since this disk last stored the
            // slot durably (a marker, a state, a new incarnation): a heartbeat alone is not.
            let dsync = self.durable[disk] != Some(durable);
            self.durable_pending[disk] = dsync;
            let rw_flags = if dsync { libc::RWF_DSYNC } else { 0 };
            let write = if self.fixed_buffers {
                let index = u16::try_from(disk * REGISTERED_ROLES + ROLE_WRITE).unwrap_or(u16::MAX);
                opcode::WriteFixed::new(types::Fd(fd), ptr, len, index)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            } else {
                opcode::Write::new(types::Fd(fd), ptr, len)
                    .offset(offset)
                    .rw_flags(rw_flags)
                    .build()
            };
            if self.push_linked(write, tag, id) {
                self.batch.push(id);
                self.write_status[disk] = DiskStatus::TimedOut;
            } else {
                self.write_status[disk] = DiskStatus::Busy;
            }
        }
        self.wait(deadline);
        let mut acked = 0;
        for i in 0..self.batch.len() {
            let id = self.batch[i];
            let buf = &mut self.bufs[id];
            let BufState::Done { res, .. } = buf.state else {
                continue;
            };
            buf.state = BufState::Free;
            let disk = id / ROLES;
            self.write_status[disk] = if usize::try_from(res).ok() == Some(BLOCK_SIZE) {
                acked += 1;
                if self.durable_pending[disk] {
                    self.durable[disk] = Some(durable);
                }
                DiskStatus::Answered
            } else if res == -libc::ECANCELED || res == -libc::EINTR {
                DiskStatus::TimedOut
            } else if res < 0 {
                DiskStatus::IoError(-res)
            } else {
                DiskStatus::ShortTransfer(res.unsigned_abs())
            };
        }
        let needed = majority(n);
        if acked >= needed {
            Ok(WriteAck {
                acked,
                total: n,
                elapsed: started.elapsed(),
            })
        } else {
            Err(WriteError::NoMajority {
                acked,
                needed,
                total: n,
            })
        }
    }

    /// Per-disk outcome of the last [`write_own_slot`](Self::write_own_slot).
    pub fn last_write(&self) -> &[DiskStatus] {
        &self.write_status
    }

    /// Buffers still owned by the kernel (operations abandoned at their deadline and not
    /// completed yet).
    pub fn buffers_in_flight(&mut self) -> usize {
        self.reap();
        self.bufs
            .iter()
            .filter(|b| matches!(b.state, BufState::InFlight { .. }))
            .count()
    }
}

impl Drop for VotingDisks {
    fn drop(&mut self) {
        self.reap();
        for buf in &mut self.bufs {
            if matches!(buf.state, BufState::InFlight { .. }) {
                // The kernel may still write into this memory after the ring is torn down;
                // never hand it back to the allocator.
                let mem = std::mem::replace(&mut buf.mem, Box::new([]));
                std::mem::forget(mem);
                tracing::warn!("voting-disk buffer still in flight at shutdown; leaked on purpose");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vdisk::format::{Marker, NodeName, SlotState};
    use crate::vdisk::{BootId, ClusterId};

    #[test]
    fn a_heartbeat_alone_needs_no_durable_write_and_any_other_change_does() {
        let block = SlotBlock {
            cluster: ClusterId::NIL,
            slot: 1,
            state: SlotState::Joined,
            node_name: NodeName::new("node2").unwrap(),
            incarnation: 7,
            heartbeat_seq: 41,
            heartbeat_mono_ms: 1_000,
            marker: Marker::default(),
            boot: BootId::NIL,
            fenced_boot: BootId::NIL,
        };
        let next_beat = SlotBlock {
            heartbeat_seq: 42,
            heartbeat_mono_ms: 2_000,
            ..block
        };
        assert_eq!(durable_part(&block), durable_part(&next_beat));
        let fenced = SlotBlock {
            marker: Marker {
                epoch: 1,
                ..Marker::default()
            },
            ..next_beat
        };
        assert_ne!(durable_part(&block), durable_part(&fenced));
        let leaving = SlotBlock {
            state: SlotState::Leaving,
            ..next_beat
        };
        assert_ne!(durable_part(&block), durable_part(&leaving));
        let restarted = SlotBlock {
            incarnation: 8,
            ..next_beat
        };
        assert_ne!(durable_part(&block), durable_part(&restarted));
    }
}
