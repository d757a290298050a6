//! A reload in place (SIGHUP, `systemctl reload fenced`, a package upgrade): the daemon
//! re-executes its binary, which may be a newer one, and the new image takes over what must not
//! stop: the armed watchdog (its descriptor is kept open across execve(2)), and this daemon's
//! identity on the voting disks (its incarnation, so that the slot keeps one writer). The PID
//! stays the same, so systemd sees one service throughout. Everything else (configuration,
//! LUNs, voting disks, the key check, the control socket) the new image sets up as at a start,
//! feeding the adopted watchdog between its steps.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The environment variable the old image hands over in.
pub const ENV: &str = "FENCED_REEXEC";

/// What a re-executed daemon takes over from the image before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The armed watchdog's descriptor, open across the exec.
    pub watchdog_fd: i32,
    /// Its device node.
    pub watchdog_device: PathBuf,
    /// The daemon's incarnation on the voting disks.
    pub incarnation: u64,
}

/// A hand-over that cannot be read: the new image cannot take over (the watchdog resets the
/// node unless the operator starts the service again within its timeout).
#[derive(Debug, thiserror::Error)]
#[error("{ENV}={value:?} is not a hand-over this version understands ({why}); it comes only from a reloading fenced")]
pub struct HandoverError {
    value: String,
    why: &'static str,
}

impl Handover {
    /// The environment value: `v1 FD INCARNATION-HEX DEVICE` (version first, so that a newer
    /// format is refused rather than misread).
    pub fn to_env(&self) -> OsString {
        let mut v = OsString::from(format!("v1 {} {:x} ", self.watchdog_fd, self.incarnation));
        v.push(self.watchdog_device.as_os_str());
        v
    }

    /// Parses [`Handover::to_env`]'s output.
    pub fn from_env(value: &str) -> Result<Handover, HandoverError> {
        let bad = |why| HandoverError {
            value: value.to_string(),
            why,
        };
        let mut parts = value.splitn(4, ' ');
        if parts.next() != Some("v1") {
            return Err(bad("unknown version"));
        }
        let watchdog_fd = parts
            .next()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|&fd| fd > 2)
            .ok_or_else(|| bad("no descriptor"))?;
        let incarnation = parts
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| bad("no incarnation"))?;
        let device = parts
            .next()
            .filter(|d| d.starts_with("/dev/"))
            .ok_or_else(|| bad("no watchdog device"))?;
        Ok(Handover {
            watchdog_fd,
            watchdog_device: PathBuf::from(device),
            incarnation,
        })
    }

    /// Takes the hand-over from the environment, once (the variable is removed, so nothing
    /// started later inherits it).
    pub fn take() -> Option<Result<Handover, HandoverError>> {
        let value = std::env::var_os(ENV)?;
        std::env::remove_var(ENV);
        Some(Handover::from_env(&value.to_string_lossy()))
    }
}

/// The binary to execute: the path this process was started as (`/usr/sbin/fenced`, so an
/// upgraded file is the one run), not /proc/self/exe, which names the replaced, deleted file.
pub fn program() -> Option<PathBuf> {
    let arg0 = PathBuf::from(std::env::args_os().next()?);
    if arg0.is_absolute() {
        return Some(arg0);
    }
    let exe = std::env::current_exe().ok()?;
    let s = exe.to_string_lossy();
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
}

/// Executes `program` with this process's arguments and `handover` in the environment; returns
/// only if that failed.
pub fn exec(program: &std::path::Path, handover: &Handover) -> std::io::Error {
    let to_c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).ok();
    let Some(path) = to_c(program.as_os_str()) else {
        return std::io::Error::other("the binary's path contains a NUL byte");
    };
    let args: Option<Vec<CString>> = std::env::args_os().map(|a| to_c(&a)).collect();
    let Some(args) = args else {
        return std::io::Error::other("an argument contains a NUL byte");
    };
    std::env::set_var(ENV, handover.to_env());
    let e = match nix::unistd::execv(&path, &args) {
        Err(e) => std::io::Error::from(e),
        Ok(never) => match never {},
    };
    std::env::remove_var(ENV);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_round_trips_through_the_environment_value() {
        let h = Handover {
            watchdog_fd: 7,
            watchdog_device: PathBuf::from("/dev/watchdog1"),
            incarnation: 0x7a9d_049f_a08b_2c39,
        };
        let env = h.to_env();
        assert_eq!(env, "v1 7 7a9d049fa08b2c39 /dev/watchdog1");
        assert_eq!(Handover::from_env(&env.to_string_lossy()).unwrap(), h);
    }

    #[test]
    fn a_damaged_or_foreign_handover_is_refused() {
        for bad in [
            "",
            "v2 7 1 /dev/watchdog",
            "v1 x 1 /dev/watchdog",
            "v1 1 1 /dev/watchdog",
            "v1 7 zz /dev/watchdog",
            "v1 7 1",
            "v1 7 1 watchdog",
        ] {
            assert!(Handover::from_env(bad).is_err(), "{bad:?}");
        }
    }
}
