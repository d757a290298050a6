//! What a block-layer PR ioctl answers when the device refuses: linux/pr.h's `enum pr_status`
//! since Linux 6.4, and the older kernels' raw forms mapped onto it, so that a lost race is
//! recognised as RESERVATION CONFLICT on every kernel:
//!
//! - sd before 6.4 returns the raw SCSI result (host byte << 16 | midlayer byte << 8 | SAM
//!   status): Linux 6.1 answers a conflict with 0x118 (seen in the VM tests);
//! - NVMe before 6.4 returns the NVMe status field (status code type << 8 | status code, with
//!   the More 0x2000 and Do Not Retry 0x4000 bits): a conflict is 0x83, 0x4083 with DNR.

use serde::Serialize;
use std::fmt;

/// A block-layer PR status, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PrStatus {
    /// `PR_STS_SUCCESS`.
    Success,
    /// `PR_STS_IOERR`.
    IoError,
    /// `PR_STS_RESERVATION_CONFLICT`, or an older kernel's SCSI or NVMe form of it.
    ReservationConflict,
    /// `PR_STS_RETRY_PATH_FAILURE`: a path failed and the command may be retried on another.
    RetryPathFailure,
    /// `PR_STS_PATH_FAST_FAILED`: the transport failed the path fast (fast_io_fail_tmo).
    PathFastFailed,
    /// `PR_STS_PATH_FAILED`.
    PathFailed,
    /// An older kernel's raw NVMe status other than a conflict (status code type << 8 | status
    /// code, without the More and Do Not Retry bits).
    Nvme(u16),
    /// A value none of the forms explains (a raw SCSI result of an older kernel), kept raw.
    Other(u32),
}

/// linux/pr.h `enum pr_status` values.
const PR_STS_SUCCESS: u32 = 0;
const PR_STS_IOERR: u32 = 0x2;
const PR_STS_RESERVATION_CONFLICT: u32 = 0x18;
const PR_STS_RETRY_PATH_FAILURE: u32 = 0xe0000;
const PR_STS_PATH_FAST_FAILED: u32 = 0xf0000;
const PR_STS_PATH_FAILED: u32 = 0x10000;

/// SAM status RESERVATION CONFLICT, the low byte of a raw SCSI result.
const SAM_STAT_RESERVATION_CONFLICT: u32 = 0x18;
/// NVMe status field: More (bit 13) and Do Not Retry (bit 14), as Linux keeps them.
const NVME_SC_MORE: u32 = 0x2000;
const NVME_SC_DNR: u32 = 0x4000;

impl PrStatus {
    /// The status of what an ioctl returned (a non-negative value), whichever kernel's form.
    pub fn from_raw(raw: u32) -> PrStatus {
        match raw {
            PR_STS_SUCCESS => PrStatus::Success,
            PR_STS_IOERR => PrStatus::IoError,
            PR_STS_RESERVATION_CONFLICT => PrStatus::ReservationConflict,
            PR_STS_RETRY_PATH_FAILURE => PrStatus::RetryPathFailure,
            PR_STS_PATH_FAST_FAILED => PrStatus::PathFastFailed,
            PR_STS_PATH_FAILED => PrStatus::PathFailed,
            // An NVMe status field: 15 bits at most, and a status code type (bits 8-10) no raw
            // SCSI result below 0x8000 carries with a conflict's low byte.
            r if (r < 0x8000 && r & (NVME_SC_MORE | NVME_SC_DNR) != 0) || r == 0x83 => {
                match crate::nvme::status_code(r) {
                    crate::nvme::SC_RESERVATION_CONFLICT => PrStatus::ReservationConflict,
                    sc => PrStatus::Nvme(sc),
                }
            }
            r if r & 0xff == SAM_STAT_RESERVATION_CONFLICT => PrStatus::ReservationConflict,
            r => PrStatus::Other(r),
        }
    }

    /// What the operator reads.
    pub fn name(self) -> &'static str {
        match self {
            PrStatus::Success => "success",
            PrStatus::IoError => "I/O error",
            PrStatus::ReservationConflict => "reservation conflict",
            PrStatus::RetryPathFailure => "temporary path failure",
            PrStatus::PathFastFailed => "path fast-failed",
            PrStatus::PathFailed => "path failed",
            PrStatus::Nvme(_) => "NVMe status from a kernel before 6.4",
            PrStatus::Other(_) => "unknown status (a raw SCSI result from a kernel before 6.4?)",
        }
    }

    /// True for the statuses that say a path failed, not the device's answer: try another
    /// path (or wait for it to come back).
    pub fn is_path_failure(self) -> bool {
        matches!(
            self,
            PrStatus::RetryPathFailure | PrStatus::PathFastFailed | PrStatus::PathFailed
        )
    }
}

impl fmt::Display for PrStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrStatus::Nvme(sc) => write!(f, "{} (0x{sc:03x})", self.name()),
            PrStatus::Other(raw) => write!(f, "{} (0x{raw:x})", self.name()),
            s => f.write_str(s.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernels_form_of_a_reservation_conflict_is_a_conflict() {
        // 6.4 and later, every driver.
        assert_eq!(PrStatus::from_raw(0x18), PrStatus::ReservationConflict);
        // sd before 6.4: the raw SCSI result (6.1 answers 0x118), with any host byte.
        assert_eq!(PrStatus::from_raw(0x118), PrStatus::ReservationConflict);
        assert_eq!(PrStatus::from_raw(0x7_0018), PrStatus::ReservationConflict);
        // NVMe before 6.4: the status field, with or without Do Not Retry and More.
        for raw in [0x83, 0x4083, 0x2083, 0x6083] {
            assert_eq!(
                PrStatus::from_raw(raw),
                PrStatus::ReservationConflict,
                "{raw:#x}"
            );
        }
    }

    #[test]
    fn the_enum_values_map_to_their_statuses_and_the_rest_is_kept_raw() {
        assert_eq!(PrStatus::from_raw(0), PrStatus::Success);
        assert_eq!(PrStatus::from_raw(0x2), PrStatus::IoError);
        assert_eq!(PrStatus::from_raw(0xe0000), PrStatus::RetryPathFailure);
        assert_eq!(PrStatus::from_raw(0xf0000), PrStatus::PathFastFailed);
        assert_eq!(PrStatus::from_raw(0x10000), PrStatus::PathFailed);
        assert!(PrStatus::from_raw(0x10000).is_path_failure());
        assert!(!PrStatus::from_raw(0x18).is_path_failure());
        // An NVMe host pathing error with DNR (SCT 3h, SC 70h).
        assert_eq!(PrStatus::from_raw(0x4370), PrStatus::Nvme(0x370));
        assert_eq!(PrStatus::from_raw(0x7_0002), PrStatus::Other(0x7_0002));
        assert_eq!(
            PrStatus::from_raw(0x7_0002).to_string(),
            "unknown status (a raw SCSI result from a kernel before 6.4?) (0x70002)"
        );
        assert_eq!(
            PrStatus::from_raw(0x4370).to_string(),
            "NVMe status from a kernel before 6.4 (0x370)"
        );
    }
}
