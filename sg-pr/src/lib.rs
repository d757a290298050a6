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
//!
//! ```no_run
//! use std::time::Duration;
//! use sg_pr::{apply_to_all, PrDevice, PrOperation, PrType, RegisterOptions, ReservationKey};
//!
//! # fn main() -> sg_pr::Result<()> {
//! let me = ReservationKey::parse_nonzero("0x1a")?;
//! let lun = PrDevice::open("/dev/sdb")?.with_timeout(Duration::from_secs(10));
//! let options = RegisterOptions { ignore_existing: true, ..Default::default() };
//! lun.register(ReservationKey::ZERO, me, options)?;
//! lun.reserve(me, PrType::WriteExclusiveRegistrantsOnly)?;
//! let keys = lun.read_keys()?;
//! assert!(keys.value.contains(me));
//!
//! // Fence node 0x2b on every LUN at once; every result arrives by the deadline.
//! let luns = vec![PrDevice::open("/dev/sdb")?, PrDevice::open("/dev/sdc")?];
//! let fence = PrOperation::Preempt {
//!     own: me,
//!     victim: ReservationKey(0x2b),
//!     pr_type: PrType::WriteExclusiveRegistrantsOnly,
//!     abort: true,
//! };
//! for r in apply_to_all(luns, fence, 8, Duration::from_secs(20)) {
//!     match r.result {
//!         Ok(report) if report.preempt_abort_fallback => println!("{}: preempted (no abort)", r.device),
//!         Ok(_) => println!("{}: preempted", r.device),
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod any;
pub mod args;
pub mod batch;
pub mod blk;
pub mod cdb;
mod commands;
mod device;
mod error;
pub mod fake;
pub mod inquiry;
pub mod nvme;
mod ops;
mod parallel;
pub mod pr;
pub mod sense;
mod status;
mod support;
mod sys;
mod transport;
mod types;

pub use any::{AnyDevice, Backend};
pub use blk::BlockPrDevice;
pub use commands::{PrDevice, RetryPolicy, DEFAULT_TIMEOUT};
pub use device::{is_device_mapper, open_device_node, partition_parent, NodeKind, SgDevice};
pub use error::{Error, ParseError, Result};
pub use inquiry::{DeviceIdentification, StandardInquiry};
pub use ops::{Completed, PersistentReservations, PrOperation, RegisterOptions, Report};
pub use parallel::{
    apply_parallel, apply_to_all, preempt_and_verify_all, summarize, BatchSummary, DeviceResult,
    FenceOutcome,
};
pub use pr::{
    Capabilities, FullStatus, RegisteredKeys, Registration, Reservation, ReservationStatus,
    TransportId,
};
pub use sense::{Sense, SenseFormat, SenseKey};
pub use status::PrStatus;
pub use support::PreemptAbort;
pub use transport::{
    CommandOutcome, DataTransfer, HostStatus, ScsiStatus, ScsiTransport, DRIVER_SENSE,
    DRIVER_TIMEOUT,
};
pub use types::{PrType, ReservationKey};

#[cfg(test)]
mod robustness {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every parser of device data accepts any bytes without panicking.
        #[test]
        fn parsers_never_panic_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = crate::Sense::parse(&data).map(|s| s.to_string());
            let _ = crate::RegisteredKeys::parse(&data);
            let _ = crate::ReservationStatus::parse(&data);
            let _ = crate::Capabilities::parse(&data);
            let _ = crate::FullStatus::parse(&data);
            let _ = crate::TransportId::parse(&data);
            let _ = crate::StandardInquiry::parse(&data);
            let _ = crate::inquiry::parse_supported_vpd_pages(&data);
            let _ = crate::inquiry::parse_unit_serial_number(&data);
            let _ = crate::DeviceIdentification::parse(&data).map(|d| d.lun_id());
            for extended in [false, true] {
                let _ = crate::nvme::ReservationReport::parse(&data, extended).map(|r| (r.keys(), r.reservation()));
            }
            let _ = crate::nvme::ReservationCapabilities::parse(&data).map(|c| (c.types(), c.persist_through_power_loss()));
            let _ = crate::nvme::OptionalCommands::parse(&data).map(|c| c.reservations());
        }

        /// Identify data of the full 4096 bytes with any content: both fields always decode.
        #[test]
        fn identify_parsers_decode_any_full_structure(data in proptest::collection::vec(any::<u8>(), crate::nvme::IDENTIFY_LEN)) {
            let rescap = crate::nvme::ReservationCapabilities::parse(&data);
            prop_assert_eq!(rescap.map(|c| c.bits()).ok(), Some(data[31]));
            let oncs = crate::nvme::OptionalCommands::parse(&data);
            prop_assert_eq!(oncs.map(|c| c.bits()).ok(), Some(u16::from_le_bytes([data[520], data[521]])));
        }

        /// Structured PR IN replies: a header with any ADDITIONAL LENGTH and any body.
        #[test]
        fn pr_in_parsers_survive_any_additional_length(gen in any::<u32>(), len in any::<u32>(),
                                                      body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = gen.to_be_bytes().to_vec();
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&body);
            if let Ok(k) = crate::RegisteredKeys::parse(&data) {
                prop_assert!(k.keys.len() * 8 <= body.len());
            }
            let _ = crate::ReservationStatus::parse(&data);
            let _ = crate::FullStatus::parse(&data);
        }

        /// Sense data with a valid response code and random rest.
        #[test]
        fn sense_with_valid_response_code_always_decodes(code in prop::sample::select(vec![0x70u8, 0x71, 0x72, 0x73, 0xf0, 0xf2]),
                                                         rest in proptest::collection::vec(any::<u8>(), 2..260)) {
            let mut data = vec![code];
            data.extend_from_slice(&rest);
            prop_assert!(crate::Sense::parse(&data).is_ok());
        }
    }
}
