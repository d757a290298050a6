//! Host processes the harness starts (QEMU, tgtd). Each is killed by its own pid when its guard
//! drops, and dies with the test process if the runner kills the test (PR_SET_PDEATHSIG).

use crate::error::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// A child process killed (SIGKILL) and reaped on drop.
pub(crate) struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`, arranging for it to be killed if this process dies.
    pub(crate) fn spawn(mut cmd: Command, name: &str) -> Result<ChildGuard> {
        // SAFETY: the closure runs in the forked child before exec; it only calls prctl(2) and
        // getppid(2), both async-signal-safe, and touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingTool { tool: program }
            } else {
                Error::Io {
                    what: format!("starting {name}"),
                    source: e,
                }
            }
        })?;
        Ok(ChildGuard {
            child,
            name: name.to_string(),
        })
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// Sends `sig` to the process (SIGSTOP/SIGCONT for pause faults).
    pub(crate) fn signal(&self, sig: Signal) -> Result<()> {
        kill(self.pid(), sig).map_err(|e| Error::Setup(format!("{sig} to {}: {e}", self.name)))
    }

    /// Whether the process has exited (reaps it if so).
    pub(crate) fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.exited() {
            // A stopped process still dies from SIGKILL.
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
