//! Linux block-layer persistent reservations (linux/pr.h `IOC_PR_*`), for devices without
//! SG_IO: NVMe namespaces, dm-multipath maps.
//!
//! Differences from SG_IO worth knowing: the type enum is the block layer's (WE-RO is 3, not
//! 5; [`PrType::block_code`]); dm-multipath sends PREEMPT AND ABORT as a plain PREEMPT; reads
//! need Linux 6.19 (`IOC_PR_READ_KEYS`, `IOC_PR_READ_RESERVATION`), older kernels answer
//! ENOTTY, reported as [`Error::NotSupported`]. Device errors come back as a positive
//! `enum pr_status` ([`Error::BlockPrStatus`]); no sense data is available.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use crate::device::{open_device_node, NodeKind};
use crate::error::{Error, Result};
use crate::ops::{Completed, PersistentReservations, PrOperation, Report};
use crate::pr::{RegisteredKeys, Reservation, ReservationStatus};
use crate::status::PrStatus;
use crate::sys;
use crate::types::{PrType, ReservationKey};

/// Most keys read through IOC_PR_READ_KEYS (the kernel's PR_KEYS_MAX is 65536).
const MAX_KEYS: usize = 1 << 16;

/// A block device spoken to through the block-layer PR ioctls. On an NVMe namespace the
/// reads go through the NVMe Reservation Report command instead ([`crate::nvme::read_report`]):
/// it works on every kernel (the read ioctls need 6.19), carries host identifiers, and has a
/// timeout (the PR ioctls have none, and nvme-tcp holds a lost controller's commands for
/// `ctrl_loss_tmo`, 600 s by default).
#[derive(Debug)]
pub struct BlockPrDevice {
    file: File,
    name: String,
    /// The namespace id, on an NVMe namespace.
    nvme_nsid: Option<u32>,
    /// The timeout of the commands that carry one (NVMe passthrough reads).
    timeout: std::time::Duration,
    /// Its major and minor numbers.
    dev: (u32, u32),
}

impl BlockPrDevice {
    /// Opens a whole-disk block device (partitions are refused).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (file, kind) = open_device_node(path)?;
        let NodeKind::Block { major, minor } = kind else {
            return Err(Error::NotADevice {
                device: path.to_path_buf(),
            });
        };
        let nvme_nsid = sys::nvme_ns_id(file.as_fd()).ok();
        Ok(BlockPrDevice {
            file,
            name: path.display().to_string(),
            nvme_nsid,
            timeout: crate::commands::DEFAULT_TIMEOUT,
            dev: (major, minor),
        })
    }

    /// The identity of the LUN behind this device, the same on every host: an NVMe
    /// namespace's ([`crate::device::nvme_namespace_id`]); `None` for other block devices.
    pub fn lun_id(&self) -> Option<String> {
        self.nvme_nsid?;
        crate::device::nvme_namespace_id(Path::new("/sys"), self.dev.0, self.dev.1)
    }

    /// Sets the timeout of the commands that carry one (the NVMe reads).
    #[must_use]
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The namespace id, when this is an NVMe namespace.
    pub fn nvme_nsid(&self) -> Option<u32> {
        self.nvme_nsid
    }

    /// An NVMe namespace's Reservation Report: every registered controller with its host
    /// identifier and key, and the holder ([`Error::NotSupported`] on other devices).
    pub fn nvme_report(&self) -> Result<crate::nvme::ReservationReport> {
        if self.nvme_nsid.is_none() {
            return Err(Error::NotSupported {
                device: self.name.clone(),
                op: "NVMe Reservation Report",
            });
        }
        crate::nvme::read_report(self.file.as_fd(), &self.name, self.timeout)
    }

    /// What an NVMe namespace and its controller declare about reservations (Identify
    /// Namespace's RESCAP, Identify Controller's ONCS), each command within this device's
    /// timeout ([`Error::NotSupported`] on other devices).
    pub fn nvme_reservation_support(&self) -> Result<crate::nvme::ReservationSupport> {
        if self.nvme_nsid.is_none() {
            return Err(Error::NotSupported {
                device: self.name.clone(),
                op: "NVMe Identify",
            });
        }
        crate::nvme::read_reservation_support(self.file.as_fd(), &self.name, self.timeout)
    }

    /// Maps an ioctl result to this crate's errors.
    fn check(&self, op: &'static str, r: io::Result<u32>) -> Result<()> {
        match r.map(PrStatus::from_raw) {
            Ok(PrStatus::Success) => Ok(()),
            Ok(PrStatus::ReservationConflict) => Err(Error::ReservationConflict {
                device: self.name.clone(),
                command: op,
                after_ambiguous_retry: false,
            }),
            Ok(status) => Err(Error::BlockPrStatus {
                device: self.name.clone(),
                op,
                status,
            }),
            Err(e) => Err(map_errno(&self.name, op, e)),
        }
    }

    /// IOC_PR_REGISTER (`ignore_existing` sets PR_FL_IGNORE_KEY).
    pub fn register(
        &self,
        current: ReservationKey,
        new: ReservationKey,
        ignore_existing: bool,
    ) -> Result<()> {
        let arg = sys::PrRegistration {
            old_key: current.0,
            new_key: new.0,
            flags: if ignore_existing {
                sys::PR_FL_IGNORE_KEY
            } else {
                0
            },
            pad: 0,
        };
        self.check("IOC_PR_REGISTER", sys::pr_register(self.file.as_fd(), arg))
    }

    /// IOC_PR_RESERVE.
    pub fn reserve(&self, key: ReservationKey, pr_type: PrType) -> Result<()> {
        let arg = reservation_arg(key, pr_type);
        self.check("IOC_PR_RESERVE", sys::pr_reserve(self.file.as_fd(), arg))
    }

    /// IOC_PR_RELEASE.
    pub fn release(&self, key: ReservationKey, pr_type: PrType) -> Result<()> {
        let arg = reservation_arg(key, pr_type);
        self.check("IOC_PR_RELEASE", sys::pr_release(self.file.as_fd(), arg))
    }

    /// IOC_PR_PREEMPT / IOC_PR_PREEMPT_ABORT: `own` is this host's key, `victim` the key
    /// removed (old_key/new_key in linux/pr.h terms). dm-multipath ignores `abort`.
    ///
    /// On an NVMe namespace, when the victim's key is still registered afterwards while this
    /// host holds the reservation, the preempt is done again without the reservation: released,
    /// preempted, taken back. Linux's nvmet (7.2) answers a Preempt from the reservation holder
    /// by changing the reservation's type only, whatever key it names, so the holder could never
    /// fence a registrant that does not hold the reservation (a node registered again after its
    /// fence). The release leaves no host more access than it has: the victim is a registrant
    /// (Write Exclusive – Registrants Only lets it write until its key goes), and the others
    /// hold keys of their own.
    pub fn preempt(
        &self,
        own: ReservationKey,
        victim: ReservationKey,
        pr_type: PrType,
        abort: bool,
    ) -> Result<()> {
        self.preempt_once(own, victim, pr_type, abort)?;
        if self.nvme_nsid.is_none() {
            return Ok(());
        }
        let report = self.nvme_report()?;
        let held = report
            .controllers
            .iter()
            .any(|c| c.holds_reservation && c.key == own);
        if !held || !report.keys().contains(victim) {
            return Ok(());
        }
        tracing::warn!(device = %self.name, victim = %victim, "the namespace kept the key its reservation holder preempted (nvmet ignores the key of a holder's Preempt): releasing, preempting again and taking the reservation back");
        self.release(own, pr_type)?;
        self.preempt_once(own, victim, pr_type, abort)?;
        self.reserve(own, pr_type)
    }

    fn preempt_once(
        &self,
        own: ReservationKey,
        victim: ReservationKey,
        pr_type: PrType,
        abort: bool,
    ) -> Result<()> {
        let arg = preempt_arg(own, victim, pr_type);
        let op = if abort {
            "IOC_PR_PREEMPT_ABORT"
        } else {
            "IOC_PR_PREEMPT"
        };
        self.check(op, sys::pr_preempt(self.file.as_fd(), arg, abort))
    }

    /// IOC_PR_CLEAR.
    pub fn clear(&self, key: ReservationKey) -> Result<()> {
        let arg = sys::PrClear {
            key: key.0,
            flags: 0,
            pad: 0,
        };
        self.check("IOC_PR_CLEAR", sys::pr_clear(self.file.as_fd(), arg))
    }

    /// The registered keys: on NVMe through the Reservation Report (one key per registered
    /// controller), elsewhere IOC_PR_READ_KEYS (Linux 6.19+), growing the buffer when the device
    /// has more keys.
    pub fn read_keys(&self) -> Result<RegisteredKeys> {
        const OP: &str = "IOC_PR_READ_KEYS";
        if self.nvme_nsid.is_some() {
            return self.nvme_report().map(|r| r.keys());
        }
        let mut capacity = 256usize;
        loop {
            let mut keys = vec![0u64; capacity];
            let r = sys::pr_read_keys(self.file.as_fd(), &mut keys);
            let (status, generation, total) = match r {
                Ok(v) => v,
                Err(e) => return Err(map_errno(&self.name, OP, e)),
            };
            self.check(OP, Ok(status))?;
            let total = usize::try_from(total).unwrap_or(usize::MAX);
            if total > capacity && capacity < MAX_KEYS {
                capacity = total.min(MAX_KEYS);
                continue;
            }
            let truncated = total > capacity;
            keys.truncate(total.min(capacity));
            return Ok(RegisteredKeys {
                generation,
                keys: keys.into_iter().map(ReservationKey).collect(),
                truncated,
                additional_length: u32::try_from(total.saturating_mul(8)).unwrap_or(u32::MAX),
            });
        }
    }

    /// The reservation: on NVMe through the Reservation Report, elsewhere
    /// IOC_PR_READ_RESERVATION (Linux 6.19+).
    pub fn read_reservation(&self) -> Result<ReservationStatus> {
        const OP: &str = "IOC_PR_READ_RESERVATION";
        if self.nvme_nsid.is_some() {
            return self.nvme_report().map(|r| r.reservation());
        }
        let (status, r) = sys::pr_read_reservation(self.file.as_fd())
            .map_err(|e| map_errno(&self.name, OP, e))?;
        self.check(OP, Ok(status))?;
        Ok(reservation_from_block(r.key, r.generation, r.pr_type))
    }
}

fn reservation_arg(key: ReservationKey, pr_type: PrType) -> sys::PrReservation {
    sys::PrReservation {
        key: key.0,
        pr_type: pr_type.block_code(),
        flags: 0,
    }
}

fn preempt_arg(own: ReservationKey, victim: ReservationKey, pr_type: PrType) -> sys::PrPreempt {
    sys::PrPreempt {
        old_key: own.0,
        new_key: victim.0,
        pr_type: pr_type.block_code(),
        flags: 0,
    }
}

/// Converts IOC_PR_READ_RESERVATION output (block-layer type numbering) to the SCSI-level
/// view. Type 0 means no reservation.
pub(crate) fn reservation_from_block(
    key: u64,
    generation: u32,
    block_type: u32,
) -> ReservationStatus {
    let reservation = if block_type == 0 {
        None
    } else {
        let pr_type = PrType::from_block_code(block_type);
        Some(Reservation {
            key: ReservationKey(key),
            pr_type,
            type_code: pr_type.map_or(0, PrType::scsi_code),
            scope: 0,
        })
    };
    ReservationStatus {
        generation,
        reservation,
    }
}

/// An ioctl's errno as this crate's error: not supported (ENOTTY, EOPNOTSUPP; EINVAL for the
/// read ioctls), permission, or an I/O error naming `op`.
pub(crate) fn map_errno(device: &str, op: &'static str, e: io::Error) -> Error {
    match e.raw_os_error() {
        // Kernels before 6.19 pass unknown ioctls to the driver, and some drivers (loop)
        // answer EINVAL rather than ENOTTY. We never send num_keys above PR_KEYS_MAX, so
        // EINVAL on a read means "unknown ioctl".
        Some(libc::EINVAL) if op.starts_with("IOC_PR_READ") => Error::NotSupported {
            device: device.to_string(),
            op,
        },
        Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) => Error::NotSupported {
            device: device.to_string(),
            op,
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            device: device.into(),
        },
        _ => Error::Io {
            device: device.to_string(),
            command: op,
            source: e,
        },
    }
}

impl PersistentReservations for BlockPrDevice {
    fn device_name(&self) -> &str {
        &self.name
    }

    fn apply(&self, op: PrOperation) -> Result<Report> {
        match op {
            PrOperation::Register {
                current,
                new,
                options,
            } => self.register(current, new, options.ignore_existing)?,
            PrOperation::Reserve { key, pr_type } => self.reserve(key, pr_type)?,
            PrOperation::Release { key, pr_type } => self.release(key, pr_type)?,
            PrOperation::Clear { key } => self.clear(key)?,
            PrOperation::Preempt {
                own,
                victim,
                pr_type,
                abort,
            } => self.preempt(own, victim, pr_type, abort)?,
        }
        Ok(Report {
            attempts: 1,
            ..Report::default()
        })
    }

    fn keys(&self) -> Result<Completed<RegisteredKeys>> {
        Ok(Completed {
            value: self.read_keys()?,
            report: Report {
                attempts: 1,
                ..Report::default()
            },
        })
    }

    /// As [`keys`](Self::keys) (the Reservation Report on NVMe), or, where the kernel lacks
    /// IOC_PR_READ_KEYS (before 6.19), READ KEYS through SG_IO on the same node: a SCSI disk,
    /// or a dm-multipath map (dm passes SG_IO to its current path, and the keys are the LUN's
    /// whichever path answers).
    fn keys_for_verification(&self) -> Result<Completed<RegisteredKeys>> {
        match self.keys() {
            Err(not_supported @ Error::NotSupported { .. }) => {
                match crate::PrDevice::open(&self.name) {
                    Ok(sg) => sg.read_keys(),
                    Err(_) => Err(not_supported),
                }
            }
            other => other,
        }
    }

    fn reservation(&self) -> Result<Completed<ReservationStatus>> {
        Ok(Completed {
            value: self.read_reservation()?,
            report: Report {
                attempts: 1,
                ..Report::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_argument_uses_block_layer_type_numbers() {
        let a = reservation_arg(ReservationKey(7), PrType::WriteExclusiveRegistrantsOnly);
        assert_eq!((a.key, a.pr_type, a.flags), (7, 3, 0));
        let a = reservation_arg(ReservationKey(7), PrType::ExclusiveAccessAllRegistrants);
        assert_eq!(a.pr_type, 6);
    }

    #[test]
    fn preempt_argument_puts_own_key_in_old_and_victim_in_new() {
        let a = preempt_arg(ReservationKey(1), ReservationKey(2), PrType::WriteExclusive);
        assert_eq!((a.old_key, a.new_key, a.pr_type), (1, 2, 1));
    }

    #[test]
    fn block_reservation_type_converts_to_scsi_view() {
        let r = reservation_from_block(0xabc, 5, 3);
        let res = r.reservation.unwrap();
        assert_eq!(res.pr_type, Some(PrType::WriteExclusiveRegistrantsOnly));
        assert_eq!(res.type_code, 5);
        assert_eq!(res.key, ReservationKey(0xabc));
        assert!(reservation_from_block(0, 5, 0).reservation.is_none());
    }

    #[test]
    fn read_ioctl_answered_einval_by_an_old_kernel_driver_is_not_supported() {
        // Linux 6.18 with the loop driver answers EINVAL to IOC_PR_READ_KEYS.
        let e = map_errno(
            "/dev/loop0",
            "IOC_PR_READ_KEYS",
            io::Error::from_raw_os_error(libc::EINVAL),
        );
        assert!(matches!(e, Error::NotSupported { .. }));
        let e = map_errno(
            "/dev/loop0",
            "IOC_PR_RESERVE",
            io::Error::from_raw_os_error(libc::EINVAL),
        );
        assert!(matches!(e, Error::Io { .. }));
    }

    #[test]
    fn missing_read_ioctls_report_not_supported_by_kernel() {
        let e = map_errno(
            "/dev/nvme0n1",
            "IOC_PR_READ_KEYS",
            io::Error::from_raw_os_error(libc::ENOTTY),
        );
        assert!(matches!(e, Error::NotSupported { .. }));
        assert!(e.to_string().contains("6.19"));
    }

    #[test]
    fn pr_status_conflict_maps_to_reservation_conflict_error() {
        let f = tempfile::tempfile().unwrap();
        let dev = BlockPrDevice {
            file: f,
            name: "/dev/dm-0".into(),
            nvme_nsid: None,
            timeout: crate::commands::DEFAULT_TIMEOUT,
            dev: (0, 0),
        };
        // Regression (Linux 6.1 sd, VM test): a conflict came back as 0x118, reported as
        // "unknown status" with exit 1 instead of RESERVATION CONFLICT (24). The same for
        // 6.1's NVMe form (status 83h with Do Not Retry).
        for raw in [0x18, 0x118, 0x4083] {
            let e = dev.check("IOC_PR_RESERVE", Ok(raw)).unwrap_err();
            assert!(e.is_reservation_conflict(), "{raw:#x}: {e}");
        }
        let e = dev.check("IOC_PR_RESERVE", Ok(0x10000)).unwrap_err();
        assert!(e.to_string().contains("path failed"));
    }

    #[test]
    fn ioctls_on_a_non_block_file_report_not_supported() {
        let f = tempfile::tempfile().unwrap();
        let mut dev = BlockPrDevice {
            file: f,
            name: "/tmp/x".into(),
            nvme_nsid: None,
            timeout: crate::commands::DEFAULT_TIMEOUT,
            dev: (0, 0),
        };
        assert!(matches!(dev.read_keys(), Err(Error::NotSupported { .. })));
        assert!(matches!(dev.nvme_report(), Err(Error::NotSupported { .. })));
        assert!(matches!(
            dev.nvme_reservation_support(),
            Err(Error::NotSupported { .. })
        ));
        // Taken for an NVMe namespace, the report and Identify go through passthrough, which a
        // regular file refuses as well.
        dev.nvme_nsid = Some(1);
        assert!(matches!(dev.read_keys(), Err(Error::NotSupported { .. })));
        assert!(matches!(
            dev.nvme_reservation_support(),
            Err(Error::NotSupported { .. })
        ));
        assert!(matches!(
            dev.reserve(ReservationKey(1), PrType::WriteExclusive),
            Err(Error::NotSupported { .. })
        ));
    }

    #[test]
    fn opening_a_regular_file_as_block_device_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            BlockPrDevice::open(f.path()),
            Err(Error::NotADevice { .. })
        ));
    }
}
