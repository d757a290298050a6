//! Arming, feeding and disarming a watchdog, and the [`WatchdogDevice`] trait.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use libc::c_int;
use nix::errno::Errno;
use serde::Serialize;

use crate::discover::{Roots, State, WatchdogInfo};
use crate::flags::{BootStatus, WatchdogFlags};
use crate::holders::find_holders;
use crate::{sys, Error};

/// What a daemon needs from a watchdog: feed it, know its timeout, ask how long is left.
///
/// The daemon's loop takes `&dyn WatchdogDevice` (or a generic `D: WatchdogDevice`), so its
/// "feed only while healthy" logic is unit-tested with [`FakeWatchdog`] and proven against the
/// real [`Watchdog`] in a VM.
///
/// ```
/// use watchdog::{Errno, FakeWatchdog, WatchdogDevice};
///
/// /// One round of a daemon loop: feed only while healthy.
/// fn tick(dev: &dyn WatchdogDevice, healthy: bool) -> Result<(), Errno> {
///     if healthy {
///         dev.feed()
///     } else {
///         Ok(())
///     }
/// }
///
/// let fake = FakeWatchdog::new(5, None);
/// tick(&fake, true).unwrap();
/// tick(&fake, false).unwrap();
/// assert_eq!(fake.feeds(), 1);
/// ```
pub trait WatchdogDevice {
    /// Restarts the countdown. Must be cheap and must not allocate or log: it is called from the
    /// daemon's real-time loop.
    fn feed(&self) -> Result<(), Errno>;
    /// The timeout, in seconds, the driver really uses.
    fn timeout(&self) -> u32;
    /// Seconds until the watchdog fires, if the driver can tell
    /// ([`Error::NotSupported`] otherwise).
    fn time_left(&self) -> Result<u32, Error>;
    /// The device node, for messages.
    fn device(&self) -> &Path;
}

/// How to arm a watchdog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArmOptions {
    /// Timeout in seconds. The driver may round it; [`Watchdog::timeout`] says what it set.
    pub timeout: u32,
    /// Pretimeout in seconds (an interrupt, usually a panic for a crash dump, this long before
    /// the reset). Ignored, with a warning, by drivers without WDIOF_PRETIMEOUT.
    pub pretimeout: Option<u32>,
    /// Set nowayout through sysfs after arming: the watchdog can then never be stopped, not even
    /// by [`Watchdog::disarm`], until the machine resets.
    pub nowayout: bool,
}

/// What WDIOC_GETSUPPORT says about the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Support {
    /// `WDIOF_*` options the driver supports.
    pub options: WatchdogFlags,
    /// Driver-defined firmware version.
    pub firmware_version: u32,
    /// Identity string.
    pub identity: String,
}

impl From<sys::WatchdogInfoRaw> for Support {
    fn from(raw: sys::WatchdogInfoRaw) -> Self {
        let end = raw
            .identity
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.identity.len());
        Support {
            options: WatchdogFlags::from_bits_retain(raw.options),
            firmware_version: raw.firmware_version,
            identity: String::from_utf8_lossy(&raw.identity[..end]).into_owned(),
        }
    }
}

/// An armed watchdog: the open device. Feed it with [`WatchdogDevice::feed`].
///
/// Dropping it closes the descriptor **without** the magic character: the watchdog keeps
/// running and resets the machine unless something reopens and feeds it in time. The only way
/// to stop it is [`Watchdog::disarm`]. Devices whose driver stops on close (no WDIOF_MAGICCLOSE)
/// are armed only with nowayout, so that dropping never stops them either.
#[derive(Debug)]
pub struct Watchdog {
    file: File,
    device: PathBuf,
    sysfs_path: PathBuf,
    support: Support,
    timeout: u32,
    pretimeout: Option<u32>,
    nowayout: bool,
    bootstatus: Option<BootStatus>,
}

fn read_sysfs_flag(path: &Path) -> Option<bool> {
    let s = fs::read_to_string(path).ok()?;
    s.trim().parse::<u32>().ok().map(|v| v != 0)
}

fn to_c_int(
    device: &Path,
    seconds: u32,
    min: Option<u32>,
    max: Option<u32>,
) -> Result<c_int, Error> {
    c_int::try_from(seconds).map_err(|_| Error::TimeoutOutOfRange {
        device: device.to_owned(),
        requested: seconds,
        min,
        max,
    })
}

fn from_c_int(v: c_int) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// Maps a failed open(2) of `info`'s node to the operator-facing error; EBUSY scans
/// `roots.proc` for the holders.
fn open_error(e: &std::io::Error, info: &WatchdogInfo, roots: &Roots) -> Error {
    let device = info.device_node.clone();
    match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
        Errno::EBUSY => Error::Busy {
            device,
            holders: find_holders(&roots.proc, &info.node_paths()).holders,
        },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied { device },
        source => Error::Open { device, source },
    }
}

/// Refuses devices that cannot fence safely, from their WDIOC_GETSUPPORT options.
/// `nowayout` is whether nowayout is or will be set.
fn check_support(device: &Path, options: WatchdogFlags, nowayout: bool) -> Result<(), Error> {
    let device = device.to_owned();
    if options.contains(WatchdogFlags::ALARMONLY) {
        return Err(Error::AlarmOnly { device });
    }
    if !options.contains(WatchdogFlags::KEEPALIVEPING) {
        return Err(Error::NotSupported {
            device,
            what: "WDIOC_KEEPALIVE (no WDIOF_KEEPALIVEPING)",
        });
    }
    // Without magic close the driver stops on every close, a daemon crash included.
    if !(options.contains(WatchdogFlags::MAGICCLOSE) || nowayout) {
        return Err(Error::NoMagicClose { device });
    }
    Ok(())
}

impl Watchdog {
    /// Arms `info`'s device: opens it (which starts it), checks WDIOC_GETSUPPORT, sets the
    /// timeout (and pretimeout when asked and supported), feeds it once, reads the boot status
    /// and, when asked, sets nowayout through sysfs.
    ///
    /// Refuses, before opening when sysfs already tells: a timeout outside the driver's range,
    /// a device held by another process ([`Error::Busy`] with the holders from `roots.proc`),
    /// an alarm-only device, a driver without WDIOC_KEEPALIVE, and a driver without magic close
    /// unless nowayout is set or asked for (see [`Error::NoMagicClose`]).
    ///
    /// If arming fails after the open, a watchdog this call started is stopped again with the
    /// magic character; one that was already running before is left running.
    pub fn arm(info: &WatchdogInfo, opts: &ArmOptions, roots: &Roots) -> Result<Watchdog, Error> {
        let device = info.device_node.clone();
        let out_of_range = || Error::TimeoutOutOfRange {
            device: info.device_node.clone(),
            requested: opts.timeout,
            min: info.min_timeout,
            max: info.max_timeout.filter(|&m| m > 0),
        };
        // A max_timeout of 0 means the core emulates long timeouts: no upper bound known.
        if opts.timeout == 0
            || info.min_timeout.is_some_and(|min| opts.timeout < min)
            || info
                .max_timeout
                .is_some_and(|max| max > 0 && opts.timeout > max)
        {
            return Err(out_of_range());
        }
        let timeout_arg = to_c_int(&device, opts.timeout, info.min_timeout, info.max_timeout)?;
        let nowayout_attr = info.sysfs_path.join("nowayout");
        let nowayout_before = read_sysfs_flag(&nowayout_attr).unwrap_or(false);
        if opts.nowayout && !nowayout_before && !info.nowayout_writable {
            return Err(Error::NowayoutUnavailable { device });
        }
        // Read fresh: `info` may be stale. Only when sysfs cannot tell, trust `info`.
        let was_active = match fs::read_to_string(info.sysfs_path.join("state")) {
            Ok(state) => state.trim() == "active",
            Err(_) => info.state == Some(State::Active),
        };

        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&device)
            .map_err(|e| open_error(&e, info, roots))?;
        // From here on the watchdog is running.
        let mut wd = Watchdog {
            file,
            device,
            sysfs_path: info.sysfs_path.clone(),
            support: Support {
                options: WatchdogFlags::empty(),
                firmware_version: 0,
                identity: String::new(),
            },
            timeout: 0,
            pretimeout: None,
            nowayout: nowayout_before,
            bootstatus: None,
        };
        match wd.configure(opts, timeout_arg, &nowayout_attr, out_of_range) {
            Ok(()) => Ok(wd),
            Err(e) => {
                wd.abandon_failed_arm(was_active);
                Err(e)
            }
        }
    }

    fn ioctl_err(&self, op: &'static str) -> impl Fn(Errno) -> Error + '_ {
        move |source| Error::Ioctl {
            device: self.device.clone(),
            op,
            source,
        }
    }

    fn configure(
        &mut self,
        opts: &ArmOptions,
        timeout_arg: c_int,
        nowayout_attr: &Path,
        out_of_range: impl Fn() -> Error,
    ) -> Result<(), Error> {
        let fd = self.file.as_fd();
        self.support = sys::get_support(fd)
            .map_err(self.ioctl_err("WDIOC_GETSUPPORT"))?
            .into();
        let options = self.support.options;
        check_support(&self.device, options, opts.nowayout || self.nowayout)?;

        self.timeout = if options.contains(WatchdogFlags::SETTIMEOUT) {
            match sys::set_timeout(fd, timeout_arg) {
                Ok(set) => from_c_int(set),
                Err(Errno::EINVAL) => return Err(out_of_range()),
                Err(e) => return Err(self.ioctl_err("WDIOC_SETTIMEOUT")(e)),
            }
        } else {
            let current =
                from_c_int(sys::get_timeout(fd).map_err(self.ioctl_err("WDIOC_GETTIMEOUT"))?);
            if current != opts.timeout {
                return Err(Error::TimeoutNotSettable {
                    device: self.device.clone(),
                    current,
                });
            }
            current
        };
        if self.timeout != opts.timeout {
            tracing::warn!(
                device = %self.device.display(),
                requested = opts.timeout,
                set = self.timeout,
                "watchdog driver rounded the timeout; using the value it set"
            );
        }

        if let Some(pre) = opts.pretimeout {
            if !options.contains(WatchdogFlags::PRETIMEOUT) {
                tracing::warn!(
                    device = %self.device.display(),
                    "watchdog driver has no pretimeout support; pretimeout ignored"
                );
            } else if pre >= self.timeout {
                return Err(Error::PretimeoutTooLong {
                    device: self.device.clone(),
                    pretimeout: pre,
                    timeout: self.timeout,
                });
            } else {
                let arg = to_c_int(&self.device, pre, None, None)?;
                sys::set_pretimeout(fd, arg).map_err(self.ioctl_err("WDIOC_SETPRETIMEOUT"))?;
                self.pretimeout = Some(sys::get_pretimeout(fd).map_or(pre, from_c_int));
            }
        }

        sys::keepalive(fd).map_err(self.ioctl_err("WDIOC_KEEPALIVE"))?;

        self.bootstatus = match sys::get_bootstatus(fd) {
            #[allow(clippy::cast_sign_loss)] // the bits are a bit set, not a number
            Ok(raw) => Some(BootStatus::decode(raw as u32, Some(options))),
            Err(e) => {
                tracing::debug!(device = %self.device.display(), error = %e, "no WDIOC_GETBOOTSTATUS");
                None
            }
        };

        if opts.nowayout && !self.nowayout {
            fs::write(nowayout_attr, "1").map_err(|source| Error::SetNowayout {
                device: self.device.clone(),
                path: nowayout_attr.to_owned(),
                source,
            })?;
            self.nowayout = true;
        }
        Ok(())
    }

    /// Undoes our own start after a failed arm; leaves a watchdog that was already running
    /// alone (the node is then reset, which is the safe outcome for a fencing daemon).
    fn abandon_failed_arm(mut self, was_active: bool) {
        if was_active || self.nowayout {
            tracing::warn!(
                device = %self.device.display(),
                "arming failed; the watchdog was already running (or has nowayout) and keeps running"
            );
        } else if let Err(e) = self.file.write_all(b"V") {
            tracing::warn!(
                device = %self.device.display(),
                error = %e,
                "arming failed and the magic close failed; the watchdog may keep running"
            );
        }
        // Dropping closes the fd.
    }

    /// The driver's support options, firmware version and identity.
    pub fn support(&self) -> &Support {
        &self.support
    }

    /// The pretimeout the driver set, if one was asked for and supported.
    pub fn pretimeout(&self) -> Option<u32> {
        self.pretimeout
    }

    /// Whether nowayout is set: the watchdog can then never be stopped.
    pub fn nowayout(&self) -> bool {
        self.nowayout
    }

    /// The boot status read at arming (WDIOC_GETBOOTSTATUS), if the driver answered.
    pub fn bootstatus(&self) -> Option<BootStatus> {
        self.bootstatus
    }

    /// The current status bits (WDIOC_GETSTATUS).
    pub fn status(&self) -> Result<WatchdogFlags, Error> {
        let raw = sys::get_status(self.file.as_fd()).map_err(self.ioctl_err("WDIOC_GETSTATUS"))?;
        #[allow(clippy::cast_sign_loss)] // a bit set
        Ok(WatchdogFlags::from_bits_retain(raw as u32))
    }

    /// Hands the armed watchdog over to the program this process is about to execve(2) (a
    /// reload in place): its descriptor stays open across the exec (close-on-exec cleared) and
    /// is not closed here. Returns the descriptor's number and the device node, for the new
    /// image's [`Watchdog::adopt`]; if the exec fails, `adopt` in this image takes it back. On
    /// error the watchdog is handed back, still armed.
    pub fn keep_across_exec(self) -> Result<(std::os::fd::RawFd, PathBuf), Box<DisarmError>> {
        use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
        let cleared = nix::fcntl::fcntl(
            self.file.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
        if let Err(source) = cleared {
            let error = self.ioctl_err("F_SETFD")(source);
            return Err(Box::new(DisarmError {
                watchdog: Box::new(self),
                error,
            }));
        }
        let device = self.device.clone();
        Ok((OwnedFd::from(self.file).into_raw_fd(), device))
    }

    /// Takes over the watchdog a previous image of this process armed and handed over with
    /// [`Watchdog::keep_across_exec`]: checks that `fd` is open and is `info`'s device (same
    /// device number), reads its support and timeout, feeds it, and sets close-on-exec again.
    /// On error the descriptor is closed without the magic character: the watchdog keeps
    /// running.
    pub fn adopt(fd: std::os::fd::RawFd, info: &WatchdogInfo) -> Result<Watchdog, Error> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let device = info.device_node.clone();
        let ioctl = |op| {
            let device = device.clone();
            move |source| Error::Ioctl { device, op, source }
        };
        let file = File::from(sys::inherited_fd(fd).map_err(ioctl("F_GETFD"))?);
        let same = match (file.metadata(), fs::metadata(&device)) {
            (Ok(a), Ok(b)) => a.rdev() == b.rdev(),
            _ => false,
        };
        if !same {
            return Err(Error::Ioctl {
                device,
                op: "fstat (the inherited descriptor is not this watchdog)",
                source: Errno::EBADF,
            });
        }
        nix::fcntl::fcntl(
            file.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(ioctl("F_SETFD"))?;
        let support: Support = sys::get_support(file.as_fd())
            .map_err(ioctl("WDIOC_GETSUPPORT"))?
            .into();
        let timeout =
            from_c_int(sys::get_timeout(file.as_fd()).map_err(ioctl("WDIOC_GETTIMEOUT"))?);
        sys::keepalive(file.as_fd()).map_err(ioctl("WDIOC_KEEPALIVE"))?;
        Ok(Watchdog {
            file,
            device: device.clone(),
            sysfs_path: info.sysfs_path.clone(),
            support,
            timeout,
            pretimeout: None,
            nowayout: read_sysfs_flag(&info.sysfs_path.join("nowayout")).unwrap_or(false),
            bootstatus: None,
        })
    }

    /// Whether [`Watchdog::disarm`] would be allowed now.
    pub fn can_disarm(&self) -> Result<(), Error> {
        if !self.support.options.contains(WatchdogFlags::MAGICCLOSE) {
            return Err(Error::CannotDisarm {
                device: self.device.clone(),
            });
        }
        let nowayout_now = read_sysfs_flag(&self.sysfs_path.join("nowayout")).unwrap_or(false);
        if self.nowayout || nowayout_now {
            return Err(Error::Nowayout {
                device: self.device.clone(),
            });
        }
        Ok(())
    }

    /// Stops the watchdog by magic close: writes 'V' and closes. Refused (and the still armed
    /// handle handed back in the error) when the driver has no magic close or nowayout is set.
    pub fn disarm(mut self) -> Result<(), DisarmError> {
        if let Err(error) = self.can_disarm() {
            return Err(DisarmError {
                watchdog: Box::new(self),
                error,
            });
        }
        if let Err(source) = self.file.write_all(b"V") {
            let error = Error::MagicClose {
                device: self.device.clone(),
                source,
            };
            return Err(DisarmError {
                watchdog: Box::new(self),
                error,
            });
        }
        let device = self.device.clone();
        let state_attr = self.sysfs_path.join("state");
        drop(self);
        if fs::read_to_string(&state_attr).is_ok_and(|s| s.trim() == "active") {
            tracing::warn!(device = %device.display(), "watchdog still active after magic close");
        } else {
            tracing::info!(device = %device.display(), "watchdog disarmed by magic close");
        }
        Ok(())
    }
}

impl WatchdogDevice for Watchdog {
    /// Exactly one WDIOC_KEEPALIVE ioctl; no allocation, no logging.
    #[inline]
    fn feed(&self) -> Result<(), Errno> {
        sys::keepalive(self.file.as_fd())
    }

    fn timeout(&self) -> u32 {
        self.timeout
    }

    fn time_left(&self) -> Result<u32, Error> {
        match sys::get_timeleft(self.file.as_fd()) {
            Ok(v) => Ok(from_c_int(v)),
            Err(Errno::EOPNOTSUPP | Errno::ENOTTY) => Err(Error::NotSupported {
                device: self.device.clone(),
                what: "WDIOC_GETTIMELEFT",
            }),
            Err(e) => Err(self.ioctl_err("WDIOC_GETTIMELEFT")(e)),
        }
    }

    fn device(&self) -> &Path {
        &self.device
    }
}

/// [`Watchdog::disarm`] was refused or failed; the watchdog is still armed and must be fed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DisarmError {
    /// The still armed watchdog.
    pub watchdog: Box<Watchdog>,
    /// Why.
    #[source]
    pub error: Error,
}

/// A [`WatchdogDevice`] for tests of daemon logic: counts feeds, can be told to fail.
#[derive(Debug)]
pub struct FakeWatchdog {
    device: PathBuf,
    timeout: u32,
    time_left: Option<u32>,
    feeds: AtomicU64,
    fail_with: AtomicI32,
}

impl FakeWatchdog {
    /// A fake with this timeout; `time_left` `None` behaves like a driver without GETTIMELEFT.
    pub fn new(timeout: u32, time_left: Option<u32>) -> Self {
        FakeWatchdog {
            device: PathBuf::from("/dev/fake-watchdog"),
            timeout,
            time_left,
            feeds: AtomicU64::new(0),
            fail_with: AtomicI32::new(0),
        }
    }

    /// How many successful feeds so far.
    pub fn feeds(&self) -> u64 {
        self.feeds.load(Ordering::SeqCst)
    }

    /// Makes every following feed fail with `errno` (`None`: succeed again).
    pub fn fail_feeds(&self, errno: Option<Errno>) {
        self.fail_with
            .store(errno.map_or(0, |e| e as i32), Ordering::SeqCst);
    }
}

impl WatchdogDevice for FakeWatchdog {
    fn feed(&self) -> Result<(), Errno> {
        match self.fail_with.load(Ordering::SeqCst) {
            0 => {
                self.feeds.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            e => Err(Errno::from_raw(e)),
        }
    }

    fn timeout(&self) -> u32 {
        self.timeout
    }

    fn time_left(&self) -> Result<u32, Error> {
        self.time_left.ok_or_else(|| Error::NotSupported {
            device: self.device.clone(),
            what: "WDIOC_GETTIMELEFT",
        })
    }

    fn device(&self) -> &Path {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::discover;
    use crate::discover::tests::FakeSystem;

    fn opts(timeout: u32) -> ArmOptions {
        ArmOptions {
            timeout,
            pretimeout: None,
            nowayout: false,
        }
    }

    #[test]
    fn a_timeout_outside_the_driver_range_is_refused_before_opening_and_names_the_range() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        let w = &discover(&sys.roots).unwrap()[0];
        for t in [0, 2047] {
            let err = Watchdog::arm(w, &opts(t), &sys.roots).unwrap_err();
            assert!(matches!(err, Error::TimeoutOutOfRange { .. }), "{err}");
            assert!(err.to_string().contains("1..=2046 s"), "{err}");
        }
    }

    #[test]
    fn nowayout_is_refused_before_opening_when_sysfs_cannot_set_it() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        let attr = sys.roots.class_dir().join("watchdog1/nowayout");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&attr, fs::Permissions::from_mode(0o444)).unwrap();
        let w = &discover(&sys.roots).unwrap()[0];
        let o = ArmOptions {
            nowayout: true,
            ..opts(5)
        };
        assert!(matches!(
            Watchdog::arm(w, &o, &sys.roots),
            Err(Error::NowayoutUnavailable { .. })
        ));
    }

    #[test]
    fn a_missing_device_node_is_an_open_error_naming_it() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        fs::remove_file(sys.roots.dev.join("watchdog1")).unwrap();
        let w = &discover(&sys.roots).unwrap()[0];
        let err = Watchdog::arm(w, &opts(5), &sys.roots).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Open {
                    source: Errno::ENOENT,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("watchdog1"));
    }

    #[test]
    fn a_node_that_is_not_a_watchdog_fails_getsupport_and_is_not_left_half_armed() {
        // A regular file stands in for the node: open works, the first ioctl gets ENOTTY.
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        let w = &discover(&sys.roots).unwrap()[0];
        let err = Watchdog::arm(w, &opts(5), &sys.roots).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Ioctl {
                    op: "WDIOC_GETSUPPORT",
                    source: Errno::ENOTTY,
                    ..
                }
            ),
            "{err}"
        );
        // The failed arm wrote the magic character: it stopped what it had started.
        assert_eq!(fs::read(sys.roots.dev.join("watchdog1")).unwrap(), b"V");
    }

    #[test]
    fn a_failed_arm_leaves_an_already_running_watchdog_running() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        fs::write(sys.roots.class_dir().join("watchdog1/state"), "active\n").unwrap();
        let w = &discover(&sys.roots).unwrap()[0];
        assert!(Watchdog::arm(w, &opts(5), &sys.roots).is_err());
        assert_eq!(fs::read(sys.roots.dev.join("watchdog1")).unwrap(), b"");
    }

    #[test]
    fn identity_is_cut_at_the_first_nul_and_flags_are_kept() {
        let mut raw = sys::WatchdogInfoRaw {
            options: 0x8180,
            firmware_version: 3,
            identity: [0; 32],
        };
        raw.identity[..14].copy_from_slice(b"i6300ESB timer");
        let s = Support::from(raw);
        assert_eq!(s.identity, "i6300ESB timer");
        assert!(s
            .options
            .contains(WatchdogFlags::MAGICCLOSE | WatchdogFlags::KEEPALIVEPING));
        // A full 32-byte identity with no NUL is taken whole.
        let s = Support::from(sys::WatchdogInfoRaw {
            identity: [b'x'; 32],
            ..raw
        });
        assert_eq!(s.identity.len(), 32);
    }

    /// A handle over a plain file standing in for the device node, as `arm` would build it.
    fn handle_over_file(
        sys: &FakeSystem,
        options: WatchdogFlags,
        nowayout: bool,
    ) -> (Watchdog, PathBuf) {
        sys.add_i6300esb(1);
        let node = sys.roots.dev.join("watchdog1");
        let file = OpenOptions::new().write(true).open(&node).unwrap();
        let wd = Watchdog {
            file,
            device: node.clone(),
            sysfs_path: sys.roots.class_dir().join("watchdog1"),
            support: Support {
                options,
                firmware_version: 0,
                identity: "i6300ESB timer".into(),
            },
            timeout: 5,
            pretimeout: None,
            nowayout,
            bootstatus: None,
        };
        (wd, node)
    }

    const USUAL: WatchdogFlags = WatchdogFlags::SETTIMEOUT
        .union(WatchdogFlags::MAGICCLOSE)
        .union(WatchdogFlags::KEEPALIVEPING);

    #[test]
    fn dropping_a_watchdog_never_writes_the_magic_character() {
        let sys = FakeSystem::new();
        let (wd, node) = handle_over_file(&sys, USUAL, false);
        drop(wd);
        assert_eq!(fs::read(node).unwrap(), b"");
    }

    #[test]
    fn disarm_writes_the_magic_character_when_allowed() {
        let sys = FakeSystem::new();
        let (wd, node) = handle_over_file(&sys, USUAL, false);
        assert!(wd.can_disarm().is_ok());
        wd.disarm().unwrap();
        assert_eq!(fs::read(node).unwrap(), b"V");
    }

    #[test]
    fn disarm_is_refused_under_nowayout_and_hands_the_armed_watchdog_back() {
        let sys = FakeSystem::new();
        let (wd, node) = handle_over_file(&sys, USUAL, true);
        let refused = wd.disarm().unwrap_err();
        assert!(matches!(refused.error, Error::Nowayout { .. }), "{refused}");
        assert!(refused.to_string().contains("keep feeding it"));
        assert_eq!(refused.watchdog.timeout(), 5);
        drop(refused);
        assert_eq!(fs::read(node).unwrap(), b"");
    }

    #[test]
    fn disarm_is_refused_when_nowayout_was_set_in_sysfs_by_someone_else() {
        let sys = FakeSystem::new();
        let (wd, node) = handle_over_file(&sys, USUAL, false);
        fs::write(sys.roots.class_dir().join("watchdog1/nowayout"), "1\n").unwrap();
        assert!(matches!(
            wd.disarm().unwrap_err().error,
            Error::Nowayout { .. }
        ));
        assert_eq!(fs::read(node).unwrap(), b"");
    }

    #[test]
    fn disarm_is_refused_without_magic_close() {
        let sys = FakeSystem::new();
        let no_magic = WatchdogFlags::SETTIMEOUT | WatchdogFlags::KEEPALIVEPING;
        let (wd, node) = handle_over_file(&sys, no_magic, true);
        assert!(matches!(
            wd.disarm().unwrap_err().error,
            Error::CannotDisarm { .. }
        ));
        assert_eq!(fs::read(node).unwrap(), b"");
    }

    #[test]
    fn feed_is_one_ioctl_and_allocates_nothing_even_when_it_fails() {
        let sys = FakeSystem::new();
        let (wd, _node) = handle_over_file(&sys, USUAL, false);
        let before = crate::sys::alloc_count::on_this_thread();
        for _ in 0..1000 {
            // A regular file answers ENOTTY: the ioctl was issued and its errno came back.
            assert_eq!(wd.feed(), Err(Errno::ENOTTY));
        }
        assert_eq!(crate::sys::alloc_count::on_this_thread(), before);
    }

    #[test]
    fn time_left_on_a_driver_without_it_is_the_not_supported_variant() {
        let sys = FakeSystem::new();
        let (wd, _node) = handle_over_file(&sys, USUAL, false);
        let err = wd.time_left().unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotSupported {
                    what: "WDIOC_GETTIMELEFT",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn ebusy_on_open_is_busy_with_the_holders_pid_and_comm() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        sys.hold(2024, "sbd", 1);
        let w = &discover(&sys.roots).unwrap()[0];
        let err = open_error(
            &std::io::Error::from_raw_os_error(libc::EBUSY),
            w,
            &sys.roots,
        );
        assert!(matches!(err, Error::Busy { .. }));
        assert!(err.to_string().contains("pid 2024 (sbd)"), "{err}");
    }

    #[test]
    fn eacces_on_open_is_permission_denied_with_a_hint() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        let w = &discover(&sys.roots).unwrap()[0];
        let err = open_error(
            &std::io::Error::from_raw_os_error(libc::EACCES),
            w,
            &sys.roots,
        );
        assert!(matches!(err, Error::PermissionDenied { .. }));
        assert!(err.to_string().contains("udev rule"), "{err}");
    }

    #[test]
    fn a_driver_without_magic_close_is_refused_unless_nowayout() {
        let dev = Path::new("/dev/watchdog3");
        let no_magic = WatchdogFlags::SETTIMEOUT | WatchdogFlags::KEEPALIVEPING;
        let err = check_support(dev, no_magic, false).unwrap_err();
        assert!(matches!(err, Error::NoMagicClose { .. }));
        assert!(err.to_string().contains("nowayout"), "{err}");
        check_support(dev, no_magic, true).unwrap();
        check_support(dev, USUAL, false).unwrap();
    }

    #[test]
    fn alarm_only_and_unfeedable_devices_are_refused() {
        let dev = Path::new("/dev/watchdog3");
        assert!(matches!(
            check_support(dev, USUAL | WatchdogFlags::ALARMONLY, true),
            Err(Error::AlarmOnly { .. })
        ));
        assert!(matches!(
            check_support(dev, WatchdogFlags::MAGICCLOSE, true),
            Err(Error::NotSupported { .. })
        ));
    }

    #[test]
    fn the_fake_counts_feeds_and_fails_on_demand() {
        let fake = FakeWatchdog::new(5, None);
        fake.feed().unwrap();
        fake.feed().unwrap();
        assert_eq!(fake.feeds(), 2);
        fake.fail_feeds(Some(Errno::EIO));
        assert_eq!(fake.feed(), Err(Errno::EIO));
        fake.fail_feeds(None);
        fake.feed().unwrap();
        assert_eq!(fake.feeds(), 3);
        assert!(matches!(fake.time_left(), Err(Error::NotSupported { .. })));
        let dyn_dev: &dyn WatchdogDevice = &fake;
        assert_eq!(dyn_dev.timeout(), 5);
    }
}
