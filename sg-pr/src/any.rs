//! [`AnyDevice`]: SG_IO or block-layer reservations, chosen per device.

use std::path::Path;
use std::time::Duration;

use crate::blk::BlockPrDevice;
use crate::commands::PrDevice;
use crate::device::{is_device_mapper, open_device_node, NodeKind, SgDevice};
use crate::error::{Error, Result};
use crate::ops::{Completed, PersistentReservations, PrOperation, Report};
use crate::pr::{RegisteredKeys, ReservationStatus};

/// How to reach a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Block-layer ioctls for device-mapper maps and devices that refuse SCSI ioctls (NVMe);
    /// SG_IO for everything else.
    #[default]
    Auto,
    /// SG_IO only (`/dev/sdX`, `/dev/sgN`).
    Sg,
    /// Block-layer `IOC_PR_*` only.
    Block,
}

/// A device opened with whichever backend applies.
#[derive(Debug)]
pub enum AnyDevice {
    /// SG_IO.
    Sg(PrDevice<SgDevice>),
    /// Block-layer ioctls.
    Block(BlockPrDevice),
}

impl AnyDevice {
    /// Opens `path` with `backend`; `timeout` is the per-command timeout of SG_IO and of the
    /// NVMe passthrough reads (the block layer's PR ioctls have none of their own).
    pub fn open(path: impl AsRef<Path>, backend: Backend, timeout: Duration) -> Result<Self> {
        let path = path.as_ref();
        let sg = |path: &Path| -> Result<AnyDevice> {
            Ok(AnyDevice::Sg(PrDevice::open(path)?.with_timeout(timeout)))
        };
        match backend {
            Backend::Sg => sg(path),
            Backend::Block => Ok(AnyDevice::Block(
                BlockPrDevice::open(path)?.with_timeout(timeout),
            )),
            Backend::Auto => {
                // Checks existence, permissions and partitions once, with clear errors.
                let (_, kind) = open_device_node(path)?;
                if let NodeKind::Block { major, minor } = kind {
                    if is_device_mapper(Path::new("/sys"), major, minor) {
                        return Ok(AnyDevice::Block(
                            BlockPrDevice::open(path)?.with_timeout(timeout),
                        ));
                    }
                }
                match sg(path) {
                    Err(Error::NotScsi { .. }) if matches!(kind, NodeKind::Block { .. }) => Ok(
                        AnyDevice::Block(BlockPrDevice::open(path)?.with_timeout(timeout)),
                    ),
                    other => other,
                }
            }
        }
    }

    /// The SG_IO device, for SCSI-only commands (INQUIRY, REPORT CAPABILITIES, FULL STATUS).
    pub fn as_sg(&self) -> Option<&PrDevice<SgDevice>> {
        match self {
            AnyDevice::Sg(d) => Some(d),
            AnyDevice::Block(_) => None,
        }
    }

    /// The block-layer device, for what only it has (an NVMe namespace's Identify and
    /// Reservation Report).
    pub fn as_block(&self) -> Option<&BlockPrDevice> {
        match self {
            AnyDevice::Sg(_) => None,
            AnyDevice::Block(d) => Some(d),
        }
    }
}

impl PersistentReservations for AnyDevice {
    fn device_name(&self) -> &str {
        match self {
            AnyDevice::Sg(d) => d.name(),
            AnyDevice::Block(d) => d.device_name(),
        }
    }

    fn apply(&self, op: PrOperation) -> Result<Report> {
        match self {
            AnyDevice::Sg(d) => d.apply(op),
            AnyDevice::Block(d) => d.apply(op),
        }
    }

    fn keys(&self) -> Result<Completed<RegisteredKeys>> {
        match self {
            AnyDevice::Sg(d) => d.keys(),
            AnyDevice::Block(d) => d.keys(),
        }
    }

    fn reservation(&self) -> Result<Completed<ReservationStatus>> {
        match self {
            AnyDevice::Sg(d) => d.reservation(),
            AnyDevice::Block(d) => d.reservation(),
        }
    }

    fn keys_for_verification(&self) -> Result<Completed<RegisteredKeys>> {
        match self {
            AnyDevice::Sg(d) => d.keys_for_verification(),
            AnyDevice::Block(d) => d.keys_for_verification(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_on_a_non_scsi_char_device_reports_not_scsi() {
        let err = AnyDevice::open("/dev/null", Backend::Auto, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, Error::NotScsi { .. }), "{err}");
    }

    #[test]
    fn block_backend_refuses_a_char_device() {
        let err = AnyDevice::open("/dev/null", Backend::Block, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, Error::NotADevice { .. }), "{err}");
    }

    #[test]
    fn auto_on_a_missing_path_reports_not_found() {
        let err =
            AnyDevice::open("/dev/nope-sgpr", Backend::Auto, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }
}
