//! How the daemon process runs: the loop at real-time priority, and glibc set up for a process
//! that locks all its memory. The only `unsafe` outside the voting-disk ring.

/// Moves the calling thread to SCHED_FIFO at `priority` (1-99), so CPU stress cannot delay the
/// loop that feeds the watchdog. Threads it starts afterwards inherit the policy.
pub fn set_fifo(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler(2) reads `param` (a valid, initialised sched_param on our
    // stack) and touches no other memory; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// glibc tunables for a process that locks all its memory (mlockall): one malloc arena, and no
/// cache of exited threads' stacks. With glibc's defaults every thread that ever allocated (a
/// fence's 32 workers, the unfence workers) leaves an arena behind, and up to 40 MiB of dead
/// threads' stacks are kept for reuse: all of it locked and resident (seen with 64 LUNs:
/// 12 MiB RSS against 6.7 MiB with one LUN).
pub const LEAN_TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.pthread.stack_cache_size=0";

/// Re-executes this program's binary (same pid, arguments and environment) with
/// [`LEAN_TUNABLES`] added to GLIBC_TUNABLES, which glibc reads only at start-up — unless an
/// arena limit is already set there (the operator's choice stands). Call it before any thread
/// starts. Returns `None` when nothing needed doing; otherwise the exec failed and the error
/// says why (the process runs on with glibc's defaults).
pub fn reexec_with_lean_tunables() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let tunables = with_lean_tunables(&current)?;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // The binary's own path, not /proc/self/exe: the kernel names the process after the file
    // executed, and operators (and pidof, pkill -x) look for "fenced", not "exe".
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return Some(e),
    };
    Some(
        std::process::Command::new(exe)
            .arg0(argv0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .exec(),
    )
}

/// GLIBC_TUNABLES with [`LEAN_TUNABLES`] added, or `None` when `current` already limits arenas.
fn with_lean_tunables(current: &str) -> Option<String> {
    if current
        .split(':')
        .any(|t| t.starts_with("glibc.malloc.arena_max="))
    {
        return None;
    }
    Some(if current.is_empty() {
        LEAN_TUNABLES.to_string()
    } else {
        format!("{current}:{LEAN_TUNABLES}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lean_tunables_are_added_once_and_keep_the_operators_own() {
        assert_eq!(with_lean_tunables("").as_deref(), Some(LEAN_TUNABLES));
        assert_eq!(
            with_lean_tunables("glibc.malloc.mmap_threshold=4096"),
            Some(format!("glibc.malloc.mmap_threshold=4096:{LEAN_TUNABLES}"))
        );
        // After the re-exec, or when the operator chose an arena limit: nothing to do.
        assert_eq!(with_lean_tunables(LEAN_TUNABLES), None);
        assert_eq!(with_lean_tunables("glibc.malloc.arena_max=4"), None);
    }
}
