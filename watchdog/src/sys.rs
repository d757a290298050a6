//! The crate's only `unsafe`: the watchdog ioctls of `linux/watchdog.h` (and, in tests, an
//! allocation-counting allocator).
//!
//! Every request number is computed with nix's `_IOR`/`_IOWR` equivalents and pinned against the
//! C header's value by a unit test, then bound to a function with nix's `*_bad` ioctl macros so
//! the function provably uses the pinned number. The public wrappers take a [`BorrowedFd`], so
//! the descriptor is open for the duration of the call.

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use libc::c_int;
use nix::errno::Errno;
use nix::sys::ioctl::ioctl_num_type;
use nix::{ioctl_read_bad, ioctl_readwrite_bad, request_code_read, request_code_readwrite};

/// `struct watchdog_info` from `linux/watchdog.h` (40 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WatchdogInfoRaw {
    /// `WDIOF_*` bits the driver supports.
    pub options: u32,
    /// Driver-defined firmware version.
    pub firmware_version: u32,
    /// NUL-padded identity string (not necessarily NUL-terminated).
    pub identity: [u8; 32],
}

const IOCTL_TYPE: u8 = b'W';
const INT: usize = size_of::<c_int>();

/// `_IOR('W', 0, struct watchdog_info)`
pub(crate) const WDIOC_GETSUPPORT: ioctl_num_type =
    request_code_read!(IOCTL_TYPE, 0, size_of::<WatchdogInfoRaw>());
/// `_IOR('W', 1, int)`
pub(crate) const WDIOC_GETSTATUS: ioctl_num_type = request_code_read!(IOCTL_TYPE, 1, INT);
/// `_IOR('W', 2, int)`
pub(crate) const WDIOC_GETBOOTSTATUS: ioctl_num_type = request_code_read!(IOCTL_TYPE, 2, INT);
/// `_IOR('W', 5, int)` — the header really declares KEEPALIVE as a read.
pub(crate) const WDIOC_KEEPALIVE: ioctl_num_type = request_code_read!(IOCTL_TYPE, 5, INT);
/// `_IOWR('W', 6, int)`
pub(crate) const WDIOC_SETTIMEOUT: ioctl_num_type = request_code_readwrite!(IOCTL_TYPE, 6, INT);
/// `_IOR('W', 7, int)`
pub(crate) const WDIOC_GETTIMEOUT: ioctl_num_type = request_code_read!(IOCTL_TYPE, 7, INT);
/// `_IOWR('W', 8, int)`
pub(crate) const WDIOC_SETPRETIMEOUT: ioctl_num_type = request_code_readwrite!(IOCTL_TYPE, 8, INT);
/// `_IOR('W', 9, int)`
pub(crate) const WDIOC_GETPRETIMEOUT: ioctl_num_type = request_code_read!(IOCTL_TYPE, 9, INT);
/// `_IOR('W', 10, int)`
pub(crate) const WDIOC_GETTIMELEFT: ioctl_num_type = request_code_read!(IOCTL_TYPE, 10, INT);

mod raw {
    use super::*;
    ioctl_read_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a writable `WatchdogInfoRaw`.
        getsupport, WDIOC_GETSUPPORT, WatchdogInfoRaw
    );
    ioctl_read_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a writable `c_int`.
        getstatus, WDIOC_GETSTATUS, c_int
    );
    ioctl_read_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a writable `c_int`.
        getbootstatus, WDIOC_GETBOOTSTATUS, c_int
    );
    ioctl_read_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a writable `c_int`.
        keepalive, WDIOC_KEEPALIVE, c_int
    );
    ioctl_readwrite_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a readable and writable `c_int`.
        settimeout, WDIOC_SETTIMEOUT, c_int
    );
    ioctl_read_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a writable `c_int`.
        gettimeout, WDIOC_GETTIMEOUT, c_int
    );
    ioctl_readwrite_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a readable and writable `c_int`.
        setpretimeout, WDIOC_SETPRETIMEOUT, c_int
    );
    ioctl_read_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a writable `c_int`.
        getpretimeout, WDIOC_GETPRETIMEOUT, c_int
    );
    ioctl_read_bad!(
        /// # Safety
        /// `fd` must be open and `data` must point to a writable `c_int`.
        gettimeleft, WDIOC_GETTIMELEFT, c_int
    );
}

/// Takes ownership of descriptor `fd`, which a previous image of this process kept open across
/// execve(2) for this one (a reload in place; see `Watchdog::keep_across_exec`), after checking
/// that it is open. The caller reads the number once, from where the previous image left it.
pub(crate) fn inherited_fd(fd: std::os::fd::RawFd) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // Open, or EBADF.
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)?;
    // SAFETY: `fd` is open (checked above) and was left to this image by the previous one, which
    // gave it up with the exec: no other object in this process owns or will close it, so the
    // OwnedFd is its only owner.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// WDIOC_GETSUPPORT.
pub(crate) fn get_support(fd: BorrowedFd<'_>) -> Result<WatchdogInfoRaw, Errno> {
    let mut info = WatchdogInfoRaw::default();
    // SAFETY: `fd` is borrowed, so it stays open for the call; `info` is a live, writable
    // `repr(C)` struct of exactly the size encoded in the request number (pinned by a test), so
    // the kernel writes within it.
    unsafe { raw::getsupport(fd.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// One of the `_IOR(.., int)` getters.
fn get_int(
    fd: BorrowedFd<'_>,
    f: unsafe fn(c_int, *mut c_int) -> nix::Result<c_int>,
) -> Result<c_int, Errno> {
    let mut value: c_int = 0;
    // SAFETY: `f` is one of the `raw` int ioctls, each taking a pointer to one `c_int`; `value`
    // is a live, writable `c_int` on our stack and `fd` is borrowed, so it stays open.
    unsafe { f(fd.as_raw_fd(), &mut value) }?;
    Ok(value)
}

/// One of the `_IOWR(.., int)` setters: returns what the kernel wrote back.
fn set_int(
    fd: BorrowedFd<'_>,
    f: unsafe fn(c_int, *mut c_int) -> nix::Result<c_int>,
    value: c_int,
) -> Result<c_int, Errno> {
    let mut value = value;
    // SAFETY: as in `get_int`: `f` takes a pointer to one readable/writable `c_int`, which
    // `value` is, and `fd` stays open for the call.
    unsafe { f(fd.as_raw_fd(), &mut value) }?;
    Ok(value)
}

/// WDIOC_GETSTATUS.
pub(crate) fn get_status(fd: BorrowedFd<'_>) -> Result<c_int, Errno> {
    get_int(fd, raw::getstatus)
}

/// WDIOC_GETBOOTSTATUS.
pub(crate) fn get_bootstatus(fd: BorrowedFd<'_>) -> Result<c_int, Errno> {
    get_int(fd, raw::getbootstatus)
}

/// WDIOC_KEEPALIVE: one ioctl, no allocation.
#[inline]
pub(crate) fn keepalive(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut unused: c_int = 0;
    // SAFETY: the request is declared `_IOR('W', 5, int)`; the watchdog core ignores the
    // argument, but we still pass a valid, writable `c_int` in case a driver's own ioctl handler
    // writes to it. `fd` is borrowed, so it stays open for the call.
    unsafe { raw::keepalive(fd.as_raw_fd(), &mut unused) }?;
    Ok(())
}

/// WDIOC_SETTIMEOUT: returns the timeout the driver really set (the kernel writes it back).
pub(crate) fn set_timeout(fd: BorrowedFd<'_>, seconds: c_int) -> Result<c_int, Errno> {
    set_int(fd, raw::settimeout, seconds)
}

/// WDIOC_GETTIMEOUT.
pub(crate) fn get_timeout(fd: BorrowedFd<'_>) -> Result<c_int, Errno> {
    get_int(fd, raw::gettimeout)
}

/// WDIOC_SETPRETIMEOUT. The core does not write the value back; read it with GETPRETIMEOUT.
pub(crate) fn set_pretimeout(fd: BorrowedFd<'_>, seconds: c_int) -> Result<c_int, Errno> {
    set_int(fd, raw::setpretimeout, seconds)
}

/// WDIOC_GETPRETIMEOUT.
pub(crate) fn get_pretimeout(fd: BorrowedFd<'_>) -> Result<c_int, Errno> {
    get_int(fd, raw::getpretimeout)
}

/// WDIOC_GETTIMELEFT (EOPNOTSUPP when the driver has no `get_timeleft`).
pub(crate) fn get_timeleft(fd: BorrowedFd<'_>) -> Result<c_int, Errno> {
    get_int(fd, raw::gettimeleft)
}

/// Counts allocations per thread, so tests can prove a path does not allocate.
#[cfg(test)]
pub(crate) mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    // SAFETY: every call is forwarded unchanged to the system allocator; the thread-local
    // counter is const-initialised and has no destructor, so touching it never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as our caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations made by this thread so far.
    pub(crate) fn on_this_thread() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_info_has_the_c_layout() {
        assert_eq!(size_of::<WatchdogInfoRaw>(), 40);
        assert_eq!(std::mem::align_of::<WatchdogInfoRaw>(), 4);
    }

    #[test]
    fn ioctl_numbers_match_linux_watchdog_h() {
        // Values from the C preprocessor on x86_64/arm64 (asm-generic ioctl encoding).
        assert_eq!(WDIOC_GETSUPPORT, 0x8028_5700);
        assert_eq!(WDIOC_GETSTATUS, 0x8004_5701);
        assert_eq!(WDIOC_GETBOOTSTATUS, 0x8004_5702);
        assert_eq!(WDIOC_KEEPALIVE, 0x8004_5705);
        assert_eq!(WDIOC_SETTIMEOUT, 0xc004_5706);
        assert_eq!(WDIOC_GETTIMEOUT, 0x8004_5707);
        assert_eq!(WDIOC_SETPRETIMEOUT, 0xc004_5708);
        assert_eq!(WDIOC_GETPRETIMEOUT, 0x8004_5709);
        assert_eq!(WDIOC_GETTIMELEFT, 0x8004_570a);
    }

    #[test]
    fn ioctls_on_a_non_watchdog_fd_fail_with_an_errno_instead_of_crashing() {
        let file = tempfile::tempfile().unwrap();
        use std::os::fd::AsFd;
        assert_eq!(keepalive(file.as_fd()), Err(Errno::ENOTTY));
        assert_eq!(get_support(file.as_fd()), Err(Errno::ENOTTY));
        assert_eq!(set_timeout(file.as_fd(), 5), Err(Errno::ENOTTY));
    }
}
