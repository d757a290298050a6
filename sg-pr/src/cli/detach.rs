//! Keeps `--deadline` a bound on the `sg-pr` process, not only on its report.
//!
//! A worker stuck in SG_IO cannot be killed: the kernel waits, uninterruptibly, for the SCSI
//! error handler, which on a frozen target waits for the target. A process cannot finish
//! exiting while one of its threads is in the kernel, so `sg-pr preempt --deadline 8` printed
//! its report at 8 s but exited only when the target came back (VM test: tgtd stopped with
//! SIGSTOP). A fence agent waits for the exit, not the report.
//!
//! So the PR OUT commands run in a child process. The child prints the report, closes its
//! stdout and stderr (a caller reading them through pipes sees end-of-file), and sends its exit
//! code to the parent, which exits with it at once. A child with a worker stuck in the kernel
//! finishes on its own later (reparented to init); its commands may still reach the target then.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2, fork, pipe, read, write, ForkResult};

/// Runs `work` in a child process and returns its exit code as soon as the child reports it.
/// Falls back to running `work` in this process when no pipe or child can be made.
pub fn run_detachable(work: impl FnOnce() -> u8) -> u8 {
    let Ok((read_end, write_end)) = pipe() else {
        return work();
    };
    // SAFETY: called from `main` before any thread is started (argument parsing and logging
    // set-up start none), so the child is a complete copy of a single-threaded process and may
    // allocate, start threads and run any code.
    match unsafe { fork() } {
        Err(_) => {
            drop((read_end, write_end));
            work()
        }
        Ok(ForkResult::Child) => {
            drop(read_end);
            let code = work();
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
                let _ = dup2(null.as_raw_fd(), libc::STDERR_FILENO);
            }
            let _ = write(&write_end, &[code]);
            code
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let mut byte = [0u8; 1];
            let got = loop {
                match read(read_end.as_raw_fd(), &mut byte) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            if got == Ok(1) {
                // Reap a child that exits normally; leave one stuck in the kernel behind.
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
                        _ => break,
                    }
                }
                return byte[0];
            }
            // The child died without reporting (a crash): its own status says what happened.
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => u8::try_from(c).unwrap_or(super::exit::FAILURE),
                _ => super::exit::FAILURE,
            }
        }
    }
}
