//! Fencing this node: say why where it survives a reset (the kernel log, the journal), then
//! reset at once without syncing. The caller stopped feeding the watchdog before calling, so
//! if the reset path itself hangs, the hardware watchdog finishes the job.
//!
//! A reset or power-off goes through the kernel's emergency path (sysrq `b`, `o`), as sbd's
//! does, and falls back to reboot(2) only where sysrq is missing: reboot(2) first shuts every
//! device down, and a SCSI disk's shutdown sends SYNCHRONIZE CACHE, which waits on a LUN that
//! does not answer (in a guest with one hung LUN: reboot(2) took 17 s to reset, sysrq `b`
//! 0.02 s). A fenced node's dirty caches are worthless anyway.

use std::io::Write;

use crate::config::SelfFenceAction;
use crate::health::Reason;

/// Writes `reason` to the kernel log (it reaches the console and any netconsole even when the
/// journal cannot be written), logs it, and performs `action`. Returns only if the action
/// failed (then the watchdog, no longer fed, resets the node).
pub fn fence_self(action: SelfFenceAction, reason: Reason) -> std::io::Error {
    let mut line = [0u8; 256];
    let mut w = crate::notify::StackWriter {
        buf: &mut line,
        len: 0,
    };
    let _ = std::fmt::write(
        &mut w,
        format_args!("<0>fenced: fencing this node ({action:?}): {reason}\n"),
    );
    let len = w.len;
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(&line[..len]);
    }
    tracing::error!(%reason, ?action, "fencing this node");
    match action {
        SelfFenceAction::Reboot => {
            let e = sysrq(b'b');
            tracing::error!(error = %e, "sysrq reset failed; trying reboot(2)");
            reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
        }
        SelfFenceAction::Off => {
            let e = sysrq(b'o');
            tracing::error!(error = %e, "sysrq power-off failed; trying reboot(2)");
            reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF)
        }
        SelfFenceAction::Crashdump | SelfFenceAction::Panic => sysrq(b'c'),
    }
}

fn reboot(mode: nix::sys::reboot::RebootMode) -> std::io::Error {
    // No sync: a fenced node must not write anything more, and a hung filesystem must not
    // delay the reset.
    match nix::sys::reboot::reboot(mode) {
        Ok(never) => match never {},
        Err(e) => std::io::Error::from(e),
    }
}

fn sysrq(cmd: u8) -> std::io::Error {
    // Enable every sysrq function first; the trigger works for root regardless of the
    // kernel.sysrq setting, but some kernels check it.
    let _ = std::fs::write("/proc/sys/kernel/sysrq", b"1");
    match std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
        .and_then(|mut f| f.write_all(&[cmd]))
    {
        Ok(()) => std::io::Error::other("sysrq-trigger returned"),
        Err(e) => e,
    }
}
