//! The crate's error type. Every message names the device and says what the operator can do.

use std::io;
use std::path::PathBuf;

use crate::sense::Sense;
use crate::status::PrStatus;
use crate::transport::{HostStatus, ScsiStatus};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A malformed reply from a device (too short, inconsistent lengths, unknown format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ParseError {
    /// Which structure was being decoded (e.g. "READ KEYS reply").
    pub what: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        ParseError {
            what,
            reason: reason.into(),
        }
    }
}

/// Everything that can go wrong talking to a device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist.
    #[error("{}: no such device; check the path (ls -l /dev/disk/by-id/) and that the LUN is attached", device.display())]
    NotFound {
        /// The path given.
        device: PathBuf,
    },

    /// Opening the device was refused.
    #[error("{}: permission denied; persistent reservations need root (or CAP_SYS_RAWIO and write access to the device)", device.display())]
    PermissionDenied {
        /// The path given.
        device: PathBuf,
    },

    /// The path is neither a block device nor a character device.
    #[error("{}: not a device node; give a whole-disk block device (/dev/sdX, /dev/mapper/...) or an sg node (/dev/sgN)", device.display())]
    NotADevice {
        /// The path given.
        device: PathBuf,
    },

    /// The path is a partition; reservations apply to the whole LUN.
    #[error("{}: is a partition; reservations apply to the whole LUN, use {parent} instead", device.display())]
    Partition {
        /// The path given.
        device: PathBuf,
        /// The whole-disk device that holds the partition, e.g. `/dev/sda`.
        parent: String,
    },

    /// The device does not accept SG_IO (it is not SCSI).
    #[error("{}: not a SCSI device (SG_IO not supported); for NVMe or dm-multipath use the block-layer backend (--backend block)", device.display())]
    NotScsi {
        /// The path given.
        device: PathBuf,
    },

    /// A SCSI-only command was asked of a device reached through the block layer.
    #[error("{device}: {command} needs SCSI (SG_IO); the block-layer backend cannot send it. Use a SCSI path (/dev/sdX) with --backend sg")]
    NeedsScsi {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
    },

    /// A key was malformed or not allowed here.
    #[error("invalid reservation key {input:?}: {reason}")]
    InvalidKey {
        /// What the operator typed.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A reservation type name was not recognised.
    #[error("invalid reservation type {input:?}: use one of we, ea, wero, earo, wear, eaar (or SCSI code 1, 3, 5, 6, 7, 8)")]
    InvalidType {
        /// What the operator typed.
        input: String,
    },

    /// A system call failed.
    #[error("{device}: {command} failed: {source}; check the device is still attached (dmesg) and retry")]
    Io {
        /// Device name.
        device: String,
        /// The command or ioctl.
        command: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The target answered RESERVATION CONFLICT (status 0x18). Never retried.
    #[error("{device}: {command} got RESERVATION CONFLICT; {}{}", conflict_hint(command),
        if *after_ambiguous_retry { "; an earlier attempt was cut off by a transport error and may have been carried out, so check with READ KEYS" } else { "" })]
    ReservationConflict {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// The command had been retried after a transport error (host status) that may have
        /// hidden its completion: a REGISTER or PREEMPT that already took effect answers
        /// RESERVATION CONFLICT when sent again. Confirm with READ KEYS before concluding.
        after_ambiguous_retry: bool,
    },

    /// CHECK CONDITION that the retry policy does not resolve.
    #[error("{device}: {command} failed with CHECK CONDITION: {sense}{hint}")]
    CheckCondition {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// Decoded sense data.
        sense: Sense,
        /// Operator hint (may be empty).
        hint: &'static str,
    },

    /// CHECK CONDITION without usable sense data.
    #[error("{device}: {command} failed with CHECK CONDITION and no sense data; check dmesg for the path state")]
    CheckConditionNoSense {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
    },

    /// BUSY / TASK SET FULL / NOT READY persisted through every retry.
    #[error("{device}: {command} still {state} after {attempts} attempts; the target is overloaded or still starting, retry later")]
    RetriesExhausted {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// What the target kept answering.
        state: String,
        /// Attempts made.
        attempts: u32,
    },

    /// The command timed out (SG_IO timeout, or the transport reported a timeout).
    #[error("{device}: {command} timed out after {timeout_ms} ms; the path may be hung, check multipath/iSCSI session state")]
    Timeout {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// The per-command timeout in force.
        timeout_ms: u64,
    },

    /// The host adapter or driver reported a failure (no SCSI status to act on).
    #[error("{device}: {command} failed in the transport: host status {host}, driver status 0x{driver:02x}; check the path (dmesg, iscsiadm -m session, multipath -ll)")]
    Transport {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// Host (adapter) status.
        host: HostStatus,
        /// Raw driver status.
        driver: u16,
    },

    /// A status this crate does not act on (e.g. CONDITION MET, ACA ACTIVE).
    #[error("{device}: {command} returned unexpected SCSI status {status}")]
    UnexpectedStatus {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// The status.
        status: ScsiStatus,
    },

    /// The device's reply could not be decoded.
    #[error("{device}: {command} returned a malformed reply ({source}); report this with the device model")]
    BadResponse {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// What was wrong.
        #[source]
        source: ParseError,
    },

    /// The kernel lacks this block-layer PR ioctl (ENOTTY/EOPNOTSUPP).
    #[error("{device}: {op} is not supported by this kernel or driver (block-layer PR ioctl; IOC_PR_READ_KEYS/READ_RESERVATION need Linux 6.19+); use SG_IO on the SCSI paths instead")]
    NotSupported {
        /// Device name.
        device: String,
        /// The operation.
        op: &'static str,
    },

    /// A block-layer PR ioctl returned a positive PR status (linux/pr.h `enum pr_status`).
    #[error("{device}: {op} failed with block-layer PR status: {status}")]
    BlockPrStatus {
        /// Device name.
        device: String,
        /// The operation.
        op: &'static str,
        /// The status.
        status: PrStatus,
    },

    /// An NVMe command through passthrough completed with an error status.
    #[error("{device}: {command} failed with NVMe status 0x{status:03x} ({})", crate::nvme::status_meaning(*status))]
    NvmeStatus {
        /// Device name.
        device: String,
        /// The command.
        command: &'static str,
        /// Status code type << 8 | status code (More and Do Not Retry removed).
        status: u16,
    },

    /// PREEMPT succeeded but READ KEYS still lists the victim's key.
    #[error("{device}: PREEMPT reported success but READ KEYS still lists {victim}; the victim is NOT fenced on this LUN, retry the preempt and check the target")]
    VictimStillRegistered {
        /// Device name.
        device: String,
        /// The key that should be gone.
        victim: crate::types::ReservationKey,
    },

    /// A device did not answer before the caller's deadline (parallel apply).
    #[error("{device}: no result within the deadline; the device or path is hung (the worker was left behind)")]
    DeadlineExceeded {
        /// Device name.
        device: String,
        /// True when the operation had started (a command may still be in flight).
        started: bool,
    },

    /// A worker thread panicked (a bug in this crate or the caller's closure).
    #[error("{device}: the worker thread failed unexpectedly; this is a bug, please report it")]
    WorkerFailed {
        /// Device name.
        device: String,
    },
}

/// What a RESERVATION CONFLICT most likely means for `command` (SPC-4 5.14), so the operator
/// is not sent looking for a preemption when a RESERVE simply met another holder (seen in the
/// VM tests on LIO and tgt).
fn conflict_hint(command: &str) -> &'static str {
    if command.contains("PREEMPT") {
        "this initiator is not registered or its key was preempted (if this was your own PREEMPT, you lost the race: your key is gone)"
    } else if command.contains("IGNORE EXISTING") {
        "this initiator's registration was refused by the target's reservation rules"
    } else if command.contains("REGISTER") {
        "this initiator is already registered with another key (give it with --old-key, or use --ignore-existing), or its key was preempted"
    } else if command.contains("RESERVE") {
        "another initiator holds the reservation, or this initiator is not registered (or was preempted)"
    } else if command.contains("RELEASE") || command.contains("CLEAR") {
        "this initiator is not registered with that key (or was preempted)"
    } else {
        "another initiator's reservation excludes this one, or this initiator's registration was preempted"
    }
}

impl Error {
    /// True when the target answered RESERVATION CONFLICT.
    pub fn is_reservation_conflict(&self) -> bool {
        matches!(
            self,
            Error::ReservationConflict { .. }
                | Error::BlockPrStatus {
                    status: PrStatus::ReservationConflict,
                    ..
                }
        )
    }

    /// True for timeouts and missed deadlines.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::DeadlineExceeded { .. }
                | Error::NvmeStatus {
                    status: crate::nvme::SC_HOST_ABORTED,
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(command: &'static str) -> String {
        Error::ReservationConflict {
            device: "/dev/sdb".into(),
            command,
            after_ambiguous_retry: false,
        }
        .to_string()
    }

    /// A RESERVE that meets another holder must not send the operator looking for a preemption.
    #[test]
    fn conflict_message_fits_the_command() {
        assert!(conflict("PR OUT RESERVE").contains("another initiator holds the reservation"));
        assert!(conflict("IOC_PR_RESERVE").contains("another initiator holds the reservation"));
        assert!(conflict("PR OUT REGISTER").contains("--old-key"));
        assert!(conflict("PR OUT PREEMPT AND ABORT").contains("lost the race"));
        assert!(conflict("PR OUT RELEASE").contains("not registered with that key"));
    }
}
