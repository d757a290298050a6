//! Fault injection inside guests: whole-kernel freezes, slow or failing disks, SCSI paths taken
//! offline.
//!
//! Pausing a whole guest or a target is [`crate::Guest::pause`] / [`crate::iscsi::Target::pause`].
//! Removing and adding a path at runtime is [`crate::Guest::detach_path`] /
//! [`crate::Guest::attach_path`]; losing the target's PR state is
//! [`crate::iscsi::Target::restart_dropping_pr_state`].

use crate::error::Result;
use crate::guest::{Guest, Pending};
use crate::kernel::Kernel;

/// Freezes the guest's whole kernel for `seconds` with the `freeze` module (stop_machine on
/// every CPU, interrupts off): no task, timer or softdog runs meanwhile. Returns the pending
/// `insmod`, which completes when the kernel thaws (if the guest is not reset first).
pub fn freeze_kernel(kernel: &Kernel, guest: &Guest, seconds: u32) -> Result<Pending> {
    let ko = kernel.build_module("freeze")?;
    guest.spawn(&format!(
        "rmmod freeze 2>/dev/null; insmod {} seconds={seconds}",
        ko.display()
    ))
}

/// Takes the SCSI path `device` (`/dev/sdX`) offline in the guest's SCSI midlayer
/// (`echo offline > /sys/block/sdX/device/state`), as the kernel does when error recovery gives
/// up on a device. Nothing reaches the target any more; the device and its `/dev` node stay.
///
/// What a program then sees (verified on the harness kernel, 6.1):
/// - `open("/dev/sdX")` fails at once with `ENXIO` (sd_open refuses an offline device), so
///   `sg_persist`, `dd` and any fresh opener fail before issuing a command;
/// - `ioctl(SG_IO)` on a file descriptor opened *before* the path went offline fails at once
///   (in milliseconds) with `-1`/`ENODEV`: the request never reaches the queue, so no SCSI
///   status, host status or sense is set in the `sg_io_hdr`;
/// - `ioctl(SG_IO)` on the path's `/dev/sgN` fails with `ENXIO`.
///
/// [`path_online`] undoes it; the old file descriptors work again.
pub fn path_offline(guest: &Guest, device: &str) -> Result<()> {
    set_path_state(guest, device, "offline")
}

/// Brings a path taken offline by [`path_offline`] back (`running`).
pub fn path_online(guest: &Guest, device: &str) -> Result<()> {
    set_path_state(guest, device, "running")
}

fn set_path_state(guest: &Guest, device: &str, state: &str) -> Result<()> {
    let name = device.trim_start_matches("/dev/");
    // The kernel accepts the state only with its trailing newline (echo adds it).
    guest.run_ok(&format!(
        "echo {state} > /sys/block/{name}/device/state && grep -qx {state} /sys/block/{name}/device/state"
    ))?;
    Ok(())
}

/// Puts a device-mapper `delay` target named `name` over `device`: every read and write waits
/// `delay_ms` first. Returns the new device's path.
pub fn dm_delay(guest: &Guest, device: &str, name: &str, delay_ms: u32) -> Result<String> {
    dm_create(
        guest,
        name,
        &format!("delay {device} 0 {delay_ms}"),
        device,
        "dm_delay",
    )
}

/// Puts a device-mapper `flakey` target named `name` over `device`: it works for `up_secs`,
/// then fails every I/O for `down_secs`, and so on.
pub fn dm_flakey(
    guest: &Guest,
    device: &str,
    name: &str,
    up_secs: u32,
    down_secs: u32,
) -> Result<String> {
    dm_create(
        guest,
        name,
        &format!("flakey {device} 0 {up_secs} {down_secs}"),
        device,
        "dm_flakey",
    )
}

/// Replaces the table of device-mapper device `name` (over `device`) in place with
/// `<target> <device> <args>` (e.g. `linear` with args `0` to heal it, or `error` with no device),
/// without closing it for its users.
pub fn dm_reload(guest: &Guest, name: &str, device: &str, target: &str, args: &str) -> Result<()> {
    let table = if target == "error" {
        "error".to_string()
    } else {
        format!("{target} {device} {args}")
    };
    guest.run_ok(&format!(
        "set -e\nsz=$(blockdev --getsz {device})\n\
         dmsetup --noudevsync suspend --nolockfs --noflush {name}\n\
         dmsetup --noudevsync reload {name} --table \"0 $sz {table}\"\n\
         dmsetup --noudevsync resume {name}"
    ))?;
    Ok(())
}

fn dm_create(
    guest: &Guest,
    name: &str,
    table_rest: &str,
    device: &str,
    module: &str,
) -> Result<String> {
    guest.run_ok(&format!(
        "set -e\nmodprobe {module}\nsz=$(blockdev --getsz {device})\n\
         dmsetup --noudevsync create {name} --table \"0 $sz {table_rest}\"\n\
         dmsetup --noudevsync mknodes {name}"
    ))?;
    Ok(format!("/dev/mapper/{name}"))
}
