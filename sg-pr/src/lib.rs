//! SCSI-3 persistent reservations over SG_IO, for storage fencing.
//!
//! - [`PrDevice`] sends TEST UNIT READY, INQUIRY/VPD and PERSISTENT RESERVE IN/OUT through a
//!   [`ScsiTransport`] with the retry policy fencing needs (unit attentions absorbed and
//!   reported, NOT READY/BUSY backed off, RESERVATION CONFLICT never retried, PREEMPT AND
//!   ABORT falling back to PREEMPT on targets that lack it).
//! - [`SgDevice`] is the SG_IO transport (`/dev/sdX`, `/dev/sgN`); [`fake::ScriptedTransport`]
//!   is a scripted one for tests.
//! - [`BlockPrDevice`] uses the Linux block-layer `IOC_PR_*` ioctls (NVMe, dm-multipath).
//! - [`apply_parallel`] / [`apply_to_all`] run one operation on many devices with a deadline.
//!
//! All `unsafe` code is in the private `sys` module.
#![deny(missing_docs)]

pub mod blk;
pub mod cdb;
mod commands;
mod device;
mod error;
pub mod fake;
pub mod inquiry;
mod parallel;
pub mod pr;
pub mod sense;
mod sys;
mod transport;
mod types;

pub use blk::BlockPrDevice;
pub use commands::{
    Completed, PersistentReservations, PrDevice, PrOperation, RegisterOptions, Report, RetryPolicy,
    DEFAULT_TIMEOUT,
};
pub use device::{open_device_node, partition_parent, NodeKind, SgDevice};
pub use error::{Error, ParseError, Result};
pub use inquiry::{DeviceIdentification, StandardInquiry};
pub use parallel::{apply_parallel, apply_to_all, summarize, BatchSummary, DeviceResult};
pub use pr::{
    Capabilities, FullStatus, RegisteredKeys, Registration, Reservation, ReservationStatus,
    TransportId,
};
pub use sense::{Sense, SenseFormat, SenseKey};
pub use transport::{
    CommandOutcome, DataTransfer, HostStatus, ScsiStatus, ScsiTransport, DRIVER_SENSE,
    DRIVER_TIMEOUT,
};
pub use types::{PrType, ReservationKey};
