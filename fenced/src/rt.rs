//! Real-time scheduling for the daemon loop. The only `unsafe` outside the voting-disk ring.

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
