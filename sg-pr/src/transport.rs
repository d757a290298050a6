//! The device side: one SCSI command in, one outcome out, behind [`ScsiTransport`].

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;
use crate::sense::Sense;

/// Data phase of a command.
#[derive(Debug)]
pub enum DataTransfer<'a> {
    /// No data phase (TEST UNIT READY).
    None,
    /// Device to host (INQUIRY, PR IN): the buffer receives the reply.
    FromDevice(&'a mut [u8]),
    /// Host to device (PR OUT parameter list).
    ToDevice(&'a [u8]),
}

/// SCSI status byte (SAM-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ScsiStatus(pub u8);

impl ScsiStatus {
    /// 0x00
    pub const GOOD: ScsiStatus = ScsiStatus(0x00);
    /// 0x02
    pub const CHECK_CONDITION: ScsiStatus = ScsiStatus(0x02);
    /// 0x04
    pub const CONDITION_MET: ScsiStatus = ScsiStatus(0x04);
    /// 0x08
    pub const BUSY: ScsiStatus = ScsiStatus(0x08);
    /// 0x18: the initiator is not allowed by a persistent reservation.
    pub const RESERVATION_CONFLICT: ScsiStatus = ScsiStatus(0x18);
    /// 0x28
    pub const TASK_SET_FULL: ScsiStatus = ScsiStatus(0x28);
    /// 0x30
    pub const ACA_ACTIVE: ScsiStatus = ScsiStatus(0x30);
    /// 0x40
    pub const TASK_ABORTED: ScsiStatus = ScsiStatus(0x40);

    /// SAM name.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "GOOD",
            0x02 => "CHECK CONDITION",
            0x04 => "CONDITION MET",
            0x08 => "BUSY",
            0x18 => "RESERVATION CONFLICT",
            0x28 => "TASK SET FULL",
            0x30 => "ACA ACTIVE",
            0x40 => "TASK ABORTED",
            _ => "unknown status",
        }
    }
}

impl fmt::Display for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.0)
    }
}

/// Linux host (HBA/transport) status, `DID_*` in scsi/scsi_status.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct HostStatus(pub u16);

impl HostStatus {
    /// DID_OK
    pub const OK: HostStatus = HostStatus(0x00);
    /// DID_NO_CONNECT
    pub const NO_CONNECT: HostStatus = HostStatus(0x01);
    /// DID_BUS_BUSY
    pub const BUS_BUSY: HostStatus = HostStatus(0x02);
    /// DID_TIME_OUT
    pub const TIME_OUT: HostStatus = HostStatus(0x03);
    /// DID_ABORT
    pub const ABORT: HostStatus = HostStatus(0x05);
    /// DID_RESET
    pub const RESET: HostStatus = HostStatus(0x08);
    /// DID_SOFT_ERROR
    pub const SOFT_ERROR: HostStatus = HostStatus(0x0b);
    /// DID_IMM_RETRY
    pub const IMM_RETRY: HostStatus = HostStatus(0x0c);
    /// DID_REQUEUE
    pub const REQUEUE: HostStatus = HostStatus(0x0d);
    /// DID_TRANSPORT_DISRUPTED
    pub const TRANSPORT_DISRUPTED: HostStatus = HostStatus(0x0e);

    /// Kernel name.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "DID_OK",
            0x01 => "DID_NO_CONNECT",
            0x02 => "DID_BUS_BUSY",
            0x03 => "DID_TIME_OUT",
            0x04 => "DID_BAD_TARGET",
            0x05 => "DID_ABORT",
            0x06 => "DID_PARITY",
            0x07 => "DID_ERROR",
            0x08 => "DID_RESET",
            0x09 => "DID_BAD_INTR",
            0x0a => "DID_PASSTHROUGH",
            0x0b => "DID_SOFT_ERROR",
            0x0c => "DID_IMM_RETRY",
            0x0d => "DID_REQUEUE",
            0x0e => "DID_TRANSPORT_DISRUPTED",
            0x0f => "DID_TRANSPORT_FAILFAST",
            0x11 => "DID_NEXUS_FAILURE",
            0x12 => "DID_ALLOC_FAILURE",
            0x13 => "DID_MEDIUM_ERROR",
            0x14 => "DID_TRANSPORT_MARGINAL",
            _ => "DID_unknown",
        }
    }

    /// Host statuses after which the same command may succeed if sent again.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            HostStatus::BUS_BUSY
                | HostStatus::SOFT_ERROR
                | HostStatus::IMM_RETRY
                | HostStatus::REQUEUE
                | HostStatus::TRANSPORT_DISRUPTED
        )
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.0)
    }
}

/// `DRIVER_TIMEOUT` in the low nibble of the SG driver status.
pub const DRIVER_TIMEOUT: u16 = 0x06;
/// `DRIVER_SENSE`: sense data is valid.
pub const DRIVER_SENSE: u16 = 0x08;

/// What came back from one command, before any policy is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// SCSI status byte.
    pub status: ScsiStatus,
    /// Host (adapter) status.
    pub host_status: HostStatus,
    /// Driver status (low nibble: DRIVER_*, high nibble: suggestions).
    pub driver_status: u16,
    /// Raw sense bytes written by the device (at most 252).
    pub sense: Vec<u8>,
    /// Bytes of the data buffer that were NOT transferred.
    pub resid: usize,
    /// Time the kernel took, when known.
    pub duration: Option<Duration>,
}

impl CommandOutcome {
    /// A GOOD outcome with no residue (test helper and fake transports).
    pub fn good() -> Self {
        CommandOutcome {
            status: ScsiStatus::GOOD,
            host_status: HostStatus::OK,
            driver_status: 0,
            sense: Vec::new(),
            resid: 0,
            duration: None,
        }
    }

    /// An outcome with `status` and no sense.
    pub fn with_status(status: ScsiStatus) -> Self {
        CommandOutcome {
            status,
            ..Self::good()
        }
    }

    /// CHECK CONDITION with the given raw sense bytes.
    pub fn check_condition(sense: Vec<u8>) -> Self {
        CommandOutcome {
            status: ScsiStatus::CHECK_CONDITION,
            driver_status: DRIVER_SENSE,
            sense,
            ..Self::good()
        }
    }

    /// Decoded sense data, when present and well-formed.
    pub fn decoded_sense(&self) -> Option<Sense> {
        if self.sense.is_empty() {
            None
        } else {
            Sense::parse(&self.sense).ok()
        }
    }

    /// True when the transport (not the target) reported a timeout.
    pub fn timed_out(&self) -> bool {
        self.host_status == HostStatus::TIME_OUT || self.driver_status & 0x0f == DRIVER_TIMEOUT
    }
}

/// Sends one SCSI command to one device. The real implementation is SG_IO
/// ([`crate::SgDevice`]); tests use [`crate::fake::ScriptedTransport`].
///
/// Implementations report only what the device and kernel said; retries and the
/// interpretation of statuses are the caller's ([`crate::PrDevice`]).
pub trait ScsiTransport: Send + Sync {
    /// Device name for messages (e.g. `/dev/sdb`).
    fn name(&self) -> &str;

    /// Executes `cdb` with the given data phase and per-command timeout.
    fn execute(
        &self,
        cdb: &[u8],
        data: DataTransfer<'_>,
        timeout: Duration,
    ) -> Result<CommandOutcome>;
}

impl<T: ScsiTransport + ?Sized> ScsiTransport for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn execute(
        &self,
        cdb: &[u8],
        data: DataTransfer<'_>,
        timeout: Duration,
    ) -> Result<CommandOutcome> {
        (**self).execute(cdb, data, timeout)
    }
}

impl<T: ScsiTransport + ?Sized> ScsiTransport for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn execute(
        &self,
        cdb: &[u8],
        data: DataTransfer<'_>,
        timeout: Duration,
    ) -> Result<CommandOutcome> {
        (**self).execute(cdb, data, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_sam() {
        assert_eq!(ScsiStatus(0x18).name(), "RESERVATION CONFLICT");
        assert_eq!(ScsiStatus::TASK_SET_FULL.0, 0x28);
        assert_eq!(ScsiStatus::BUSY.to_string(), "BUSY (0x08)");
        assert_eq!(HostStatus(0x03).name(), "DID_TIME_OUT");
    }

    #[test]
    fn outcome_reports_transport_timeouts() {
        let mut o = CommandOutcome::good();
        assert!(!o.timed_out());
        o.host_status = HostStatus::TIME_OUT;
        assert!(o.timed_out());
        let o = CommandOutcome {
            driver_status: 0x26, // suggest bits + DRIVER_TIMEOUT
            ..CommandOutcome::good()
        };
        assert!(o.timed_out());
    }
}
