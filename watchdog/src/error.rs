//! The crate's error type. Every message names the device and says what the operator can do.

use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::holders::Holder;

/// Everything that can go wrong while finding, choosing, arming, feeding or disarming a watchdog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No watchdog device at all.
    #[error(
        "no watchdog device found under {class_dir}: enable the hardware watchdog in the BIOS/UEFI \
         setup and load its driver (e.g. `modprobe iTCO_wdt`, `modprobe i6300esb` in a QEMU guest \
         with `-device i6300esb`, `modprobe ipmi_watchdog`), or set the watchdog policy to \
         allow-softdog (softdog does not fire if the whole kernel freezes)"
    )]
    NoWatchdog {
        /// The directory that was searched (`<sysfs>/class/watchdog`).
        class_dir: PathBuf,
    },

    /// Policy `RequireHardware`, but only software watchdogs exist.
    #[error(
        "no hardware watchdog found (only software watchdogs: {}): the policy requires one. \
         Enable the hardware watchdog in the BIOS/UEFI setup and load its driver (iTCO_wdt, \
         i6300esb, ipmi_watchdog, ...), or set the policy to allow-softdog knowing that softdog \
         does not fire if the whole kernel freezes", DisplayPaths(.software))]
    NoHardwareWatchdog {
        /// Software watchdogs present (not acceptable under this policy).
        software: Vec<PathBuf>,
    },

    /// An explicitly configured device path that discovery did not find.
    #[error(
        "watchdog device {device} is not among the discovered watchdogs ({}): check the \
         configured path against `fenced watchdog list`", DisplayPaths(.available))]
    UnknownDevice {
        /// The configured path.
        device: PathBuf,
        /// Device nodes that do exist.
        available: Vec<PathBuf>,
    },

    /// A sysfs or /proc directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },

    /// open(2) was refused for lack of permission.
    #[error(
        "permission denied opening {device}: run as root, or give the daemon's user write \
         access to the device node with a udev rule"
    )]
    PermissionDenied {
        /// The device node.
        device: PathBuf,
    },

    /// Another process has the device open (the kernel allows one opener).
    #[error(
        "watchdog {device} is busy: {}. Only one process may hold a watchdog; stop it \
         (sbd, corosync, watchdog(8), wdmd, systemd's RuntimeWatchdogSec=...) or configure a \
         different device", DisplayHolders(.holders))]
    Busy {
        /// The device node.
        device: PathBuf,
        /// Processes found holding it (empty when /proc could not tell, e.g. not root).
        holders: Vec<Holder>,
    },

    /// open(2) failed for another reason.
    #[error("cannot open watchdog {device}: {source}")]
    Open {
        /// The device node.
        device: PathBuf,
        /// The errno.
        source: Errno,
    },

    /// The requested timeout is outside what the driver accepts.
    #[error(
        "timeout {requested} s is outside the range of watchdog {device} ({}): choose a timeout \
         in that range", DisplayRange(*.min, *.max))]
    TimeoutOutOfRange {
        /// The device node.
        device: PathBuf,
        /// What was asked for.
        requested: u32,
        /// The driver's minimum, when known.
        min: Option<u32>,
        /// The driver's maximum, when known.
        max: Option<u32>,
    },

    /// The driver's timeout is fixed and differs from the requested one.
    #[error(
        "watchdog {device} cannot change its timeout (no WDIOF_SETTIMEOUT); it is fixed at \
         {current} s: configure a timeout of {current} s or use another device"
    )]
    TimeoutNotSettable {
        /// The device node.
        device: PathBuf,
        /// The fixed timeout.
        current: u32,
    },

    /// The pretimeout must be shorter than the timeout.
    #[error(
        "pretimeout {pretimeout} s must be shorter than the timeout {timeout} s of watchdog \
         {device}: lower it, or do not ask for a pretimeout"
    )]
    PretimeoutTooLong {
        /// The device node.
        device: PathBuf,
        /// What was asked for.
        pretimeout: u32,
        /// The timeout the driver set.
        timeout: u32,
    },

    /// The driver stops the watchdog on close (no magic close), and nowayout is not set.
    #[error(
        "watchdog {device} does not support magic close: its driver stops the watchdog whenever \
         the device is closed, so a crash of this daemon would silently disarm it. Arm it with \
         nowayout, or use another device"
    )]
    NoMagicClose {
        /// The device node.
        device: PathBuf,
    },

    /// The device only raises an alarm; it does not reset the machine.
    #[error(
        "watchdog {device} is alarm-only (WDIOF_ALARMONLY): it does not reset the machine and \
         cannot fence it; use another device"
    )]
    AlarmOnly {
        /// The device node.
        device: PathBuf,
    },

    /// An optional operation the driver does not implement.
    #[error("watchdog {device} does not support {what}")]
    NotSupported {
        /// The device node.
        device: PathBuf,
        /// The operation (e.g. `WDIOC_GETTIMELEFT`).
        what: &'static str,
    },

    /// A watchdog ioctl failed.
    #[error("{op} on watchdog {device} failed: {source}")]
    Ioctl {
        /// The device node.
        device: PathBuf,
        /// The ioctl.
        op: &'static str,
        /// The errno.
        source: Errno,
    },

    /// Disarming was asked for but nowayout is set.
    #[error(
        "watchdog {device} has nowayout set: it cannot be stopped until the machine resets; keep \
         feeding it or let it reset the machine"
    )]
    Nowayout {
        /// The device node.
        device: PathBuf,
    },

    /// Disarming was asked for but the driver has no magic close.
    #[error("watchdog {device} cannot be disarmed: its driver has no magic close")]
    CannotDisarm {
        /// The device node.
        device: PathBuf,
    },

    /// Setting nowayout through sysfs failed.
    #[error(
        "cannot set nowayout on watchdog {device} through {path}: {source}. Load the driver with \
         nowayout=1 instead"
    )]
    SetNowayout {
        /// The device node.
        device: PathBuf,
        /// The sysfs attribute.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },

    /// The device has no sysfs entry, so nowayout cannot be set through sysfs.
    #[error(
        "cannot set nowayout on watchdog {device}: it has no writable sysfs nowayout attribute. \
         Load the driver with nowayout=1 instead"
    )]
    NowayoutUnavailable {
        /// The device node.
        device: PathBuf,
    },

    /// Disarming: writing the magic character failed.
    #[error("writing the magic close character to watchdog {device} failed: {source}")]
    MagicClose {
        /// The device node.
        device: PathBuf,
        /// Why it failed.
        source: io::Error,
    },

    /// modprobe softdog failed.
    #[error(
        "loading softdog failed (`{command}`: {detail}): check that the softdog module is \
         installed for the running kernel and that this process may load modules \
         (CAP_SYS_MODULE)"
    )]
    SoftdogLoad {
        /// The command line that was run.
        command: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },

    /// softdog loaded but no software watchdog appeared.
    #[error(
        "softdog was loaded but no software watchdog appeared under {class_dir} within {waited_ms} \
         ms: check `dmesg` for softdog errors"
    )]
    SoftdogMissing {
        /// The directory that was searched.
        class_dir: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },

    /// A reset test ended without a reset.
    #[error(
        "watchdog {device} did not reset the machine within {waited_s} s of its last feed: it \
         does NOT protect this node; check the driver, the BIOS setting and dmesg"
    )]
    NoResetObserved {
        /// The device node.
        device: PathBuf,
        /// Seconds waited since arming.
        waited_s: u64,
    },
}

struct DisplayPaths<'a>(&'a [PathBuf]);

impl fmt::Display for DisplayPaths<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", p.display())?;
        }
        Ok(())
    }
}

struct DisplayHolders<'a>(&'a [Holder]);

impl fmt::Display for DisplayHolders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(
                "held by a process that could not be identified (run as root to scan /proc)",
            );
        }
        f.write_str("held by ")?;
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{h}")?;
        }
        Ok(())
    }
}

struct DisplayRange(Option<u32>, Option<u32>);

impl fmt::Display for DisplayRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(min), Some(max)) => write!(f, "{min}..={max} s"),
            (Some(min), None) => write!(f, "at least {min} s"),
            (None, Some(max)) => write!(f, "at most {max} s"),
            (None, None) => f.write_str("range not reported by the driver"),
        }
    }
}
