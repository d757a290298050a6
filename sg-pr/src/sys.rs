//! The only module with `unsafe`: the SG_IO, block-layer PR and NVMe passthrough ioctls.
//!
//! Layouts and numbers follow scsi/sg.h, linux/pr.h and linux/nvme_ioctl.h; unit tests pin
//! them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// `SG_IO` (scsi/sg.h): a bare number, not an `_IO*` encoding.
pub(crate) const SG_IO: u32 = 0x2285;
/// `SG_GET_VERSION_NUM`: answered by sg nodes and by SCSI block devices; used as a probe.
pub(crate) const SG_GET_VERSION_NUM: u32 = 0x2282;

pub(crate) const SG_DXFER_NONE: i32 = -1;
pub(crate) const SG_DXFER_TO_DEV: i32 = -2;
pub(crate) const SG_DXFER_FROM_DEV: i32 = -3;
/// Largest sense buffer SG_IO fills (SCSI_SENSE_BUFFERSIZE is 96; sg allows up to 252).
pub(crate) const SENSE_BUFFER_LEN: usize = 252;

/// `struct sg_io_hdr` (version 3 interface), scsi/sg.h.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SgIoHdr {
    pub interface_id: i32,
    pub dxfer_direction: i32,
    pub cmd_len: u8,
    pub mx_sb_len: u8,
    pub iovec_count: u16,
    pub dxfer_len: u32,
    pub dxferp: *mut libc::c_void,
    pub cmdp: *const u8,
    pub sbp: *mut u8,
    pub timeout: u32,
    pub flags: u32,
    pub pack_id: i32,
    pub usr_ptr: *mut libc::c_void,
    pub status: u8,
    pub masked_status: u8,
    pub msg_status: u8,
    pub sb_len_wr: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub resid: i32,
    pub duration: u32,
    pub info: u32,
}

impl SgIoHdr {
    /// A version-3 header with no command, no data and every reply field zero.
    fn empty() -> SgIoHdr {
        SgIoHdr {
            interface_id: i32::from(b'S'),
            dxfer_direction: SG_DXFER_NONE,
            cmd_len: 0,
            mx_sb_len: 0,
            iovec_count: 0,
            dxfer_len: 0,
            dxferp: std::ptr::null_mut(),
            cmdp: std::ptr::null(),
            sbp: std::ptr::null_mut(),
            timeout: 0,
            flags: 0,
            pack_id: 0,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        }
    }
}

/// Linux `_IOC` encoding (asm-generic/ioctl.h; x86, arm, riscv share it).
pub(crate) const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    // The size field is 14 bits; every struct used here is under 100 bytes.
    #[allow(clippy::cast_possible_truncation)]
    let size = (size as u32) & 0x3fff;
    (dir << 30) | (size << 16) | ((ty as u32) << 8) | (nr as u32)
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `struct pr_registration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrRegistration {
    pub old_key: u64,
    pub new_key: u64,
    pub flags: u32,
    pub pad: u32,
}

/// `struct pr_reservation`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrReservation {
    pub key: u64,
    pub pr_type: u32,
    pub flags: u32,
}

/// `struct pr_preempt`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrPreempt {
    pub old_key: u64,
    pub new_key: u64,
    pub pr_type: u32,
    pub flags: u32,
}

/// `struct pr_clear`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrClear {
    pub key: u64,
    pub flags: u32,
    pub pad: u32,
}

/// `struct pr_read_keys` (Linux 6.19).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrReadKeys {
    pub generation: u32,
    pub num_keys: u32,
    pub keys_ptr: u64,
}

/// `struct pr_read_reservation` (Linux 6.19).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrReadReservation {
    pub key: u64,
    pub generation: u32,
    pub pr_type: u32,
}

/// `PR_FL_IGNORE_KEY`.
pub(crate) const PR_FL_IGNORE_KEY: u32 = 1;

pub(crate) const IOC_PR_REGISTER: u32 =
    ioc(IOC_WRITE, b'p', 200, std::mem::size_of::<PrRegistration>());
pub(crate) const IOC_PR_RESERVE: u32 =
    ioc(IOC_WRITE, b'p', 201, std::mem::size_of::<PrReservation>());
pub(crate) const IOC_PR_RELEASE: u32 =
    ioc(IOC_WRITE, b'p', 202, std::mem::size_of::<PrReservation>());
pub(crate) const IOC_PR_PREEMPT: u32 = ioc(IOC_WRITE, b'p', 203, std::mem::size_of::<PrPreempt>());
pub(crate) const IOC_PR_PREEMPT_ABORT: u32 =
    ioc(IOC_WRITE, b'p', 204, std::mem::size_of::<PrPreempt>());
pub(crate) const IOC_PR_CLEAR: u32 = ioc(IOC_WRITE, b'p', 205, std::mem::size_of::<PrClear>());
pub(crate) const IOC_PR_READ_KEYS: u32 = ioc(
    IOC_READ | IOC_WRITE,
    b'p',
    206,
    std::mem::size_of::<PrReadKeys>(),
);
pub(crate) const IOC_PR_READ_RESERVATION: u32 = ioc(
    IOC_READ,
    b'p',
    207,
    std::mem::size_of::<PrReadReservation>(),
);

/// `struct nvme_passthru_cmd` (linux/nvme_ioctl.h): an NVMe command through
/// `NVME_IOCTL_IO_CMD`, with its own timeout.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NvmePassthruCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub result: u32,
}

/// `NVME_IOCTL_ID`: the namespace id of an NVMe namespace's block or generic device.
pub(crate) const NVME_IOCTL_ID: u32 = ioc(0, b'N', 0x40, 0);
/// `NVME_IOCTL_ADMIN_CMD`: an admin command (Identify) through passthrough. On a namespace's
/// block device the kernel sends it to that namespace's controller (on a multipath head, to
/// the controller of the path it would use).
pub(crate) const NVME_IOCTL_ADMIN_CMD: u32 = ioc(
    IOC_READ | IOC_WRITE,
    b'N',
    0x41,
    std::mem::size_of::<NvmePassthruCmd>(),
);
/// `NVME_IOCTL_IO_CMD`: an I/O command set command through passthrough.
pub(crate) const NVME_IOCTL_IO_CMD: u32 = ioc(
    IOC_READ | IOC_WRITE,
    b'N',
    0x43,
    std::mem::size_of::<NvmePassthruCmd>(),
);

/// The queue an NVMe passthrough command goes to: each has its own ioctl, both taking a
/// `struct nvme_passthru_cmd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NvmeQueue {
    /// The admin queue (`NVME_IOCTL_ADMIN_CMD`): Identify.
    Admin,
    /// An I/O queue (`NVME_IOCTL_IO_CMD`): Reservation Report.
    Io,
}

impl NvmeQueue {
    fn request(self) -> u32 {
        match self {
            NvmeQueue::Admin => NVME_IOCTL_ADMIN_CMD,
            NvmeQueue::Io => NVME_IOCTL_IO_CMD,
        }
    }
}

/// What SG_IO wrote back.
#[derive(Debug)]
pub(crate) struct SgIoResult {
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub sense: Vec<u8>,
    pub resid: i32,
    pub duration_ms: u32,
}

/// Data phase for [`sg_io`].
pub(crate) enum SgData<'a> {
    None,
    In(&'a mut [u8]),
    Out(&'a [u8]),
}

/// Issues one SG_IO. Fails only when the ioctl itself fails (errno); SCSI-level
/// errors come back in the result.
pub(crate) fn sg_io(
    fd: BorrowedFd<'_>,
    cdb: &[u8],
    data: SgData<'_>,
    timeout: Duration,
) -> io::Result<SgIoResult> {
    let cmd_len = u8::try_from(cdb.len())
        .ok()
        .filter(|&l| (6..=16).contains(&l))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "CDB must be 6..=16 bytes"))?;
    let (direction, ptr, len) = match data {
        SgData::None => (SG_DXFER_NONE, std::ptr::null_mut(), 0usize),
        SgData::In(buf) => (
            SG_DXFER_FROM_DEV,
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
        ),
        // SG_IO never writes through dxferp for TO_DEV; the kernel only copies from it.
        SgData::Out(buf) => (
            SG_DXFER_TO_DEV,
            buf.as_ptr().cast_mut().cast::<libc::c_void>(),
            buf.len(),
        ),
    };
    let dxfer_len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "data buffer over 4 GiB"))?;
    // Zero means "default" to some kernels; clamp to at least 1 ms and at most u32::MAX - 1
    // (u32::MAX means "no timeout").
    let timeout_ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX - 1)
        .clamp(1, u32::MAX - 1);
    let mut sense = [0u8; SENSE_BUFFER_LEN];
    let mut hdr = SgIoHdr {
        dxfer_direction: direction,
        cmd_len,
        mx_sb_len: u8::try_from(SENSE_BUFFER_LEN).unwrap_or(u8::MAX),
        dxfer_len,
        dxferp: ptr,
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        ..SgIoHdr::empty()
    };
    // SAFETY: `hdr` is a correctly laid out sg_io_hdr (layout pinned by tests). Every pointer
    // in it (cdb, data buffer, sense buffer) points to memory that outlives this synchronous
    // call and is at least as long as the length stored beside it (cmd_len, dxfer_len,
    // mx_sb_len). SG_IO blocks until the command completes or times out, and the kernel does
    // not keep the pointers afterwards. For TO_DEV the kernel only reads the data buffer.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            SG_IO as libc::Ioctl,
            std::ptr::from_mut(&mut hdr),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let written = usize::from(hdr.sb_len_wr).min(SENSE_BUFFER_LEN);
    Ok(SgIoResult {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense: sense[..written].to_vec(),
        resid: hdr.resid,
        duration_ms: hdr.duration,
    })
}

/// A command for the sg driver's asynchronous interface (`write(2)` of an `sg_io_hdr` to a
/// `/dev/sgN` node, its completion later `read(2)` from the same fd).
struct SgSubmit<'a> {
    pub cdb: &'a [u8],
    /// SG_DXFER_NONE, _TO_DEV or _FROM_DEV.
    pub direction: i32,
    pub data: *mut u8,
    pub data_len: usize,
    pub sense: *mut u8,
    pub timeout: Duration,
    /// Comes back in the completion (`usr_ptr`).
    pub id: usize,
}

/// What `read(2)` of a completion returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SgCompletion {
    pub tag: u64,
    /// `usr_ptr` as submitted.
    id: usize,
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub sense_len: usize,
    pub resid: i32,
    pub duration_ms: u32,
}

/// Starts one command on a `/dev/sgN` fd (sg v3 asynchronous interface).
///
/// # Safety
///
/// `data` (`data_len` bytes) and `sense` ([`SENSE_BUFFER_LEN`] bytes) must stay valid and not be
/// moved or otherwise used until [`sg_receive`] returned this command's completion or the fd was
/// closed: the kernel writes the reply into them when the completion is read. (A command still
/// outstanding when its fd is closed is orphaned: the kernel finishes it in a work queue and
/// copies nothing to user memory.)
unsafe fn sg_submit(fd: BorrowedFd<'_>, cmd: &SgSubmit<'_>) -> io::Result<()> {
    let cmd_len = u8::try_from(cmd.cdb.len())
        .ok()
        .filter(|&l| (6..=16).contains(&l))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "CDB must be 6..=16 bytes"))?;
    let dxfer_len = u32::try_from(cmd.data_len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "data buffer over 4 GiB"))?;
    let timeout_ms = u32::try_from(cmd.timeout.as_millis())
        .unwrap_or(u32::MAX - 1)
        .clamp(1, u32::MAX - 1);
    let hdr = SgIoHdr {
        dxfer_direction: cmd.direction,
        cmd_len,
        mx_sb_len: u8::try_from(SENSE_BUFFER_LEN).unwrap_or(u8::MAX),
        dxfer_len,
        dxferp: cmd.data.cast::<libc::c_void>(),
        cmdp: cmd.cdb.as_ptr(),
        sbp: cmd.sense,
        timeout: timeout_ms,
        // An id, not a pointer: the kernel hands it back untouched.
        usr_ptr: cmd.id as *mut libc::c_void,
        ..SgIoHdr::empty()
    };
    let size = std::mem::size_of::<SgIoHdr>();
    // SAFETY: `hdr` is a correctly laid out sg_io_hdr (layout pinned by tests) and `size` is its
    // size. The kernel copies the header and the CDB during the call, and the data of a TO_DEV
    // transfer; the data and sense pointers it keeps are valid until the completion is read or
    // the fd closed, as this function's contract requires of the caller.
    let rc = unsafe { libc::write(fd.as_raw_fd(), std::ptr::from_ref(&hdr).cast(), size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(rc).ok() != Some(size) {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write of sg_io_hdr",
        ));
    }
    Ok(())
}

/// Reads one completion from a `/dev/sgN` fd opened with O_NONBLOCK; `Ok(None)` when none is
/// ready.
pub(crate) fn sg_receive(fd: BorrowedFd<'_>) -> io::Result<Option<SgCompletion>> {
    let mut hdr = SgIoHdr {
        pack_id: -1,
        ..SgIoHdr::empty()
    };
    let size = std::mem::size_of::<SgIoHdr>();
    // SAFETY: `hdr` is a live, correctly laid out sg_io_hdr of `size` bytes; read(2) writes at
    // most `size` bytes into it. The data and sense pointers the kernel writes through are the
    // ones given at submission (see `sg_submit`'s contract), not the null ones here.
    let rc = unsafe { libc::read(fd.as_raw_fd(), std::ptr::from_mut(&mut hdr).cast(), size) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EAGAIN) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(SgCompletion {
        tag: 0,
        id: hdr.usr_ptr as usize,
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense_len: usize::from(hdr.sb_len_wr).min(SENSE_BUFFER_LEN),
        resid: hdr.resid,
        duration_ms: hdr.duration,
    }))
}

/// A `/dev/sgN` fd used through the asynchronous interface, owning the buffers of its commands
/// in flight until their completions are read, or until it is dropped: the fd is closed first
/// (field order), which orphans what is still in flight, and only then are the buffers freed.
pub(crate) struct SgAsyncFd {
    fd: std::os::fd::OwnedFd,
    pending: std::collections::HashMap<usize, Pending>,
    next_id: usize,
}

struct Pending {
    tag: u64,
    data: Vec<u8>,
    sense: Box<[u8; SENSE_BUFFER_LEN]>,
}

/// One completion and its buffers.
pub(crate) struct SgReceived {
    pub completion: SgCompletion,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
}

impl SgAsyncFd {
    /// Wraps an fd of a `/dev/sgN` node opened read-write with O_NONBLOCK.
    pub(crate) fn new(fd: std::os::fd::OwnedFd) -> SgAsyncFd {
        SgAsyncFd {
            fd,
            pending: std::collections::HashMap::new(),
            next_id: 0,
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Commands submitted and not yet received.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The tags of those commands.
    pub(crate) fn tags(&self) -> Vec<u64> {
        self.pending.values().map(|p| p.tag).collect()
    }

    /// Starts `cdb` with `data` (moved here until the completion is received) in `direction`.
    pub(crate) fn submit(
        &mut self,
        tag: u64,
        cdb: &[u8],
        direction: i32,
        mut data: Vec<u8>,
        timeout: Duration,
    ) -> io::Result<()> {
        let mut sense = Box::new([0u8; SENSE_BUFFER_LEN]);
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let cmd = SgSubmit {
            cdb,
            direction,
            data: data.as_mut_ptr(),
            data_len: data.len(),
            sense: sense.as_mut_ptr(),
            timeout,
            id,
        };
        // SAFETY: the data and sense buffers are heap allocations moved into `self.pending`
        // below (moving a Vec or Box does not move its heap buffer), where they stay until
        // `receive` returns this tag's completion or `self` is dropped, which closes the fd
        // before freeing them.
        unsafe { sg_submit(self.as_fd(), &cmd)? };
        self.pending.insert(id, Pending { tag, data, sense });
        Ok(())
    }

    /// The next completion, if one is ready.
    pub(crate) fn receive(&mut self) -> io::Result<Option<SgReceived>> {
        let Some(mut completion) = sg_receive(self.as_fd())? else {
            return Ok(None);
        };
        let (data, sense) = match self.pending.remove(&completion.id) {
            Some(p) => {
                completion.tag = p.tag;
                (p.data, p.sense[..completion.sense_len].to_vec())
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(Some(SgReceived {
            completion,
            data,
            sense,
        }))
    }
}

/// poll(2) for readability on `fds`, at most `timeout`; how many are ready.
pub(crate) fn poll_readable(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let n = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fds"))?;
    // SAFETY: `fds` is a live, exclusively borrowed slice of `n` pollfd structs; poll(2) only
    // writes their `revents` fields.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(usize::try_from(rc).unwrap_or(0))
}

/// Probes whether the fd accepts SCSI ioctls; returns the sg driver version.
pub(crate) fn sg_version(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut version: libc::c_int = 0;
    // SAFETY: SG_GET_VERSION_NUM writes one int through the pointer, which points to a live
    // local `c_int`. Drivers that do not know the ioctl return ENOTTY without writing.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            SG_GET_VERSION_NUM as libc::Ioctl,
            std::ptr::from_mut(&mut version),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(version)
    }
}

/// An ioctl's return value: errno when negative, else the value (a status or an id).
fn nonnegative(rc: libc::c_int) -> io::Result<u32> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc.unsigned_abs())
    }
}

/// Issues an ioctl whose argument is `*arg` (a block-layer PR ioctl, an NVMe passthrough).
/// Returns the ioctl's non-negative return value: 0, or a positive status from the device
/// (`enum pr_status`, an NVMe status field).
///
/// # Safety
///
/// `T` must be the `#[repr(C)]` struct that `request` encodes (same size and layout), and any
/// user pointer inside `*arg` must be valid for what the kernel does with it during the call.
unsafe fn ioctl_with<T>(fd: BorrowedFd<'_>, request: u32, arg: &mut T) -> io::Result<u32> {
    // SAFETY: `arg` is a live, exclusively borrowed struct; the caller guarantees it matches
    // `request`, so the kernel reads (and for READ ioctls writes) only within it.
    nonnegative(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            request as libc::Ioctl,
            std::ptr::from_mut(arg),
        )
    })
}

pub(crate) fn pr_register(fd: BorrowedFd<'_>, mut arg: PrRegistration) -> io::Result<u32> {
    // SAFETY: IOC_PR_REGISTER takes a struct pr_registration, which PrRegistration mirrors.
    unsafe { ioctl_with(fd, IOC_PR_REGISTER, &mut arg) }
}

pub(crate) fn pr_reserve(fd: BorrowedFd<'_>, mut arg: PrReservation) -> io::Result<u32> {
    // SAFETY: IOC_PR_RESERVE takes a struct pr_reservation, which PrReservation mirrors.
    unsafe { ioctl_with(fd, IOC_PR_RESERVE, &mut arg) }
}

pub(crate) fn pr_release(fd: BorrowedFd<'_>, mut arg: PrReservation) -> io::Result<u32> {
    // SAFETY: IOC_PR_RELEASE takes a struct pr_reservation, which PrReservation mirrors.
    unsafe { ioctl_with(fd, IOC_PR_RELEASE, &mut arg) }
}

pub(crate) fn pr_preempt(fd: BorrowedFd<'_>, mut arg: PrPreempt, abort: bool) -> io::Result<u32> {
    let request = if abort {
        IOC_PR_PREEMPT_ABORT
    } else {
        IOC_PR_PREEMPT
    };
    // SAFETY: both IOC_PR_PREEMPT and IOC_PR_PREEMPT_ABORT take a struct pr_preempt, which
    // PrPreempt mirrors.
    unsafe { ioctl_with(fd, request, &mut arg) }
}

pub(crate) fn pr_clear(fd: BorrowedFd<'_>, mut arg: PrClear) -> io::Result<u32> {
    // SAFETY: IOC_PR_CLEAR takes a struct pr_clear, which PrClear mirrors.
    unsafe { ioctl_with(fd, IOC_PR_CLEAR, &mut arg) }
}

/// IOC_PR_READ_KEYS into `keys`; returns (pr status, generation, keys the device has).
/// The device may have more keys than `keys` holds; only `keys.len()` are written.
pub(crate) fn pr_read_keys(fd: BorrowedFd<'_>, keys: &mut [u64]) -> io::Result<(u32, u32, u32)> {
    let mut arg = PrReadKeys {
        generation: 0,
        num_keys: u32::try_from(keys.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many keys"))?,
        keys_ptr: keys.as_mut_ptr() as u64,
    };
    // SAFETY: IOC_PR_READ_KEYS takes a struct pr_read_keys, which PrReadKeys mirrors. The
    // kernel writes at most `num_keys` u64 values through `keys_ptr`, which points to `keys`:
    // exactly that many elements, alive and exclusively borrowed for the whole call.
    let status = unsafe { ioctl_with(fd, IOC_PR_READ_KEYS, &mut arg) }?;
    Ok((status, arg.generation, arg.num_keys))
}

/// IOC_PR_READ_RESERVATION; returns (pr status, reply).
pub(crate) fn pr_read_reservation(fd: BorrowedFd<'_>) -> io::Result<(u32, PrReadReservation)> {
    let mut arg = PrReadReservation::default();
    // SAFETY: IOC_PR_READ_RESERVATION takes a struct pr_read_reservation, which
    // PrReadReservation mirrors; it holds no pointers.
    let status = unsafe { ioctl_with(fd, IOC_PR_READ_RESERVATION, &mut arg) }?;
    Ok((status, arg))
}

/// The namespace id of the NVMe namespace behind `fd` (`NVME_IOCTL_ID`); ENOTTY when it is no
/// NVMe namespace.
pub(crate) fn nvme_ns_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument and reads or writes no user memory; it returns
    // the namespace id or -1 with errno.
    nonnegative(unsafe { libc::ioctl(fd.as_raw_fd(), NVME_IOCTL_ID as libc::Ioctl) })
}

/// Issues `cmd` on `queue` (`NVME_IOCTL_ADMIN_CMD` or `NVME_IOCTL_IO_CMD`) with `data` as its
/// host-bound data buffer (its address and length are set here). Returns the NVMe status field
/// the kernel hands back: 0, or a positive (status code type << 8 | status code, with More and
/// Do Not Retry).
pub(crate) fn nvme_passthru_read(
    fd: BorrowedFd<'_>,
    queue: NvmeQueue,
    mut cmd: NvmePassthruCmd,
    data: &mut [u8],
) -> io::Result<u32> {
    cmd.addr = data.as_mut_ptr() as u64;
    cmd.data_len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "data buffer over 4 GiB"))?;
    cmd.metadata = 0;
    cmd.metadata_len = 0;
    // SAFETY: NVME_IOCTL_ADMIN_CMD and NVME_IOCTL_IO_CMD both take a struct nvme_passthru_cmd,
    // which NvmePassthruCmd mirrors (size pinned by a test). The kernel transfers at most
    // `data_len` bytes into `addr`, which is `data`: that many bytes, alive and exclusively
    // borrowed for the whole call; no metadata buffer is given.
    unsafe { ioctl_with(fd, queue.request(), &mut cmd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvme_passthru_layout_and_ioctl_numbers_match_linux_nvme_ioctl_h() {
        assert_eq!(std::mem::size_of::<NvmePassthruCmd>(), 72);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, nsid), 4);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, addr), 24);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, data_len), 36);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, cdw10), 40);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, timeout_ms), 64);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, result), 68);
        // _IO('N', 0x40), _IOWR('N', 0x41, struct nvme_passthru_cmd) and
        // _IOWR('N', 0x43, struct nvme_passthru_cmd).
        assert_eq!(NVME_IOCTL_ID, 0x4e40);
        assert_eq!(NVME_IOCTL_ADMIN_CMD, 0xc048_4e41);
        assert_eq!(NVME_IOCTL_IO_CMD, 0xc048_4e43);
        assert_eq!(NvmeQueue::Admin.request(), NVME_IOCTL_ADMIN_CMD);
        assert_eq!(NvmeQueue::Io.request(), NVME_IOCTL_IO_CMD);
        use nix::{request_code_none, request_code_readwrite};
        let as_u32 = |v: nix::sys::ioctl::ioctl_num_type| u32::try_from(v).unwrap();
        assert_eq!(NVME_IOCTL_ID, as_u32(request_code_none!(b'N', 0x40)));
        assert_eq!(
            NVME_IOCTL_ADMIN_CMD,
            as_u32(request_code_readwrite!(
                b'N',
                0x41,
                std::mem::size_of::<NvmePassthruCmd>()
            ))
        );
        assert_eq!(
            NVME_IOCTL_IO_CMD,
            as_u32(request_code_readwrite!(
                b'N',
                0x43,
                std::mem::size_of::<NvmePassthruCmd>()
            ))
        );
    }

    #[test]
    fn nvme_ioctls_on_a_regular_file_fail_with_enotty() {
        let f = tempfile::tempfile().unwrap();
        let fd = std::os::fd::AsFd::as_fd(&f);
        assert_eq!(
            nvme_ns_id(fd).unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
        let mut buf = [0u8; 64];
        for queue in [NvmeQueue::Admin, NvmeQueue::Io] {
            let err =
                nvme_passthru_read(fd, queue, NvmePassthruCmd::default(), &mut buf).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{queue:?}");
        }
    }

    #[test]
    fn sg_io_header_layout_matches_scsi_sg_h_on_64_bit() {
        if std::mem::size_of::<usize>() == 8 {
            assert_eq!(std::mem::size_of::<SgIoHdr>(), 88);
            assert_eq!(std::mem::offset_of!(SgIoHdr, dxfer_len), 12);
            assert_eq!(std::mem::offset_of!(SgIoHdr, dxferp), 16);
            assert_eq!(std::mem::offset_of!(SgIoHdr, cmdp), 24);
            assert_eq!(std::mem::offset_of!(SgIoHdr, sbp), 32);
            assert_eq!(std::mem::offset_of!(SgIoHdr, timeout), 40);
            assert_eq!(std::mem::offset_of!(SgIoHdr, usr_ptr), 56);
            assert_eq!(std::mem::offset_of!(SgIoHdr, status), 64);
            assert_eq!(std::mem::offset_of!(SgIoHdr, sb_len_wr), 67);
            assert_eq!(std::mem::offset_of!(SgIoHdr, host_status), 68);
            assert_eq!(std::mem::offset_of!(SgIoHdr, driver_status), 70);
            assert_eq!(std::mem::offset_of!(SgIoHdr, resid), 72);
            assert_eq!(std::mem::offset_of!(SgIoHdr, info), 80);
        }
    }

    #[test]
    fn sg_ioctl_numbers_match_scsi_sg_h() {
        assert_eq!(SG_IO, 0x2285);
        assert_eq!(SG_GET_VERSION_NUM, 0x2282);
    }

    #[test]
    fn pr_struct_sizes_match_linux_pr_h() {
        assert_eq!(std::mem::size_of::<PrRegistration>(), 24);
        assert_eq!(std::mem::size_of::<PrReservation>(), 16);
        assert_eq!(std::mem::size_of::<PrPreempt>(), 24);
        assert_eq!(std::mem::size_of::<PrClear>(), 16);
        assert_eq!(std::mem::size_of::<PrReadKeys>(), 16);
        assert_eq!(std::mem::size_of::<PrReadReservation>(), 16);
    }

    /// Values computed from linux/pr.h's `_IOW('p', 200.., struct ...)` definitions.
    #[test]
    fn pr_ioctl_numbers_match_linux_pr_h() {
        assert_eq!(IOC_PR_REGISTER, 0x4018_70c8);
        assert_eq!(IOC_PR_RESERVE, 0x4010_70c9);
        assert_eq!(IOC_PR_RELEASE, 0x4010_70ca);
        assert_eq!(IOC_PR_PREEMPT, 0x4018_70cb);
        assert_eq!(IOC_PR_PREEMPT_ABORT, 0x4018_70cc);
        assert_eq!(IOC_PR_CLEAR, 0x4010_70cd);
        assert_eq!(IOC_PR_READ_KEYS, 0xc010_70ce);
        assert_eq!(IOC_PR_READ_RESERVATION, 0x8010_70cf);
    }

    #[test]
    fn pr_ioctl_numbers_agree_with_nix_request_code_macros() {
        use nix::{request_code_read, request_code_readwrite, request_code_write};
        let as_u32 = |v: nix::sys::ioctl::ioctl_num_type| u32::try_from(v).unwrap();
        assert_eq!(
            IOC_PR_REGISTER,
            as_u32(request_code_write!(
                b'p',
                200,
                std::mem::size_of::<PrRegistration>()
            ))
        );
        assert_eq!(
            IOC_PR_CLEAR,
            as_u32(request_code_write!(
                b'p',
                205,
                std::mem::size_of::<PrClear>()
            ))
        );
        assert_eq!(
            IOC_PR_READ_KEYS,
            as_u32(request_code_readwrite!(
                b'p',
                206,
                std::mem::size_of::<PrReadKeys>()
            ))
        );
        assert_eq!(
            IOC_PR_READ_RESERVATION,
            as_u32(request_code_read!(
                b'p',
                207,
                std::mem::size_of::<PrReadReservation>()
            ))
        );
    }

    #[test]
    fn sg_io_on_a_regular_file_fails_with_enotty() {
        let f = tempfile::tempfile().unwrap();
        let fd = std::os::fd::AsFd::as_fd(&f);
        let mut buf = [0u8; 36];
        let err = sg_io(
            fd,
            &[0x12, 0, 0, 0, 36, 0],
            SgData::In(&mut buf),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        assert_eq!(
            sg_version(fd).unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
        let err = pr_read_reservation(fd).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}
