//! NVMe reservations: the Reservation Report command (NVM Command Set, opcode 0Eh) and its
//! data structure, read where the kernel has no `IOC_PR_READ_KEYS` / `IOC_PR_READ_RESERVATION`
//! (before Linux 6.19), and turned into this crate's SCSI-shaped reports.
//!
//! The data structure (little endian): a header of 24 bytes (64 with the extended data
//! structure) — generation at 0, reservation type at 4 (the block layer's `enum pr_type`
//! numbers, 0 for none), number of registered controllers at 5, PTPL state at 9 — then one
//! entry per registered controller, 24 bytes (64 extended): controller id at 0, bit 0 of byte 2
//! set on the reservation holder(s), then the host identifier (8 bytes at 8) and the key (at 16);
//! extended: the key at 8 and a 128-bit host identifier at 16. NVMe registrations belong to a
//! host, not to a path: every controller of one host is listed with that host's key.
//!
//! What a namespace supports comes from the admin command Identify (opcode 06h, 4096 bytes of
//! data): Identify Controller (CNS 1) declares reservations at all (ONCS, bytes 520-521, bit 5),
//! Identify Namespace (CNS 0) which types and PTPL (RESCAP, byte 31):
//! [`ReservationCapabilities`], read by [`read_reservation_support`].

use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde::Serialize;

use crate::blk::reservation_from_block;
use crate::error::{Error, ParseError, Result};
use crate::pr::{RegisteredKeys, ReservationStatus};
use crate::sys;
use crate::types::{PrType, ReservationKey};

/// The NVM command set's Reservation Report opcode.
pub const RESERVATION_REPORT: u8 = 0x0e;
/// The admin command set's Identify opcode.
pub const IDENTIFY: u8 = 0x06;
/// Bytes of an Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;
/// Identify's CNS values (command dword 10) for the two structures read here.
const CNS_NAMESPACE: u32 = 0;
const CNS_CONTROLLER: u32 = 1;
/// Identify Namespace: Reservation Capabilities (RESCAP), one byte.
const RESCAP_OFFSET: usize = 31;
/// Identify Controller: Optional NVM Command Support (ONCS), 16 bits little endian.
const ONCS_OFFSET: usize = 520;

/// Header and entry sizes of the two formats.
const HEADER: usize = 24;
const ENTRY: usize = 24;
const HEADER_EXTENDED: usize = 64;
const ENTRY_EXTENDED: usize = 64;

fn le_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le_u64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut v = [0u8; 8];
    v.copy_from_slice(b);
    Some(u64::from_le_bytes(v))
}

/// A host identifier: 64 bits in the standard data structure, 128 in the extended one.
/// Serialized as its hex digits, as nvme-cli prints it (`f3dced00000040008000000000000001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostId {
    /// 64-bit host identifier.
    Short([u8; 8]),
    /// 128-bit host identifier (extended data structure).
    Extended([u8; 16]),
}

impl std::fmt::Display for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes: &[u8] = match self {
            HostId::Short(b) => b,
            HostId::Extended(b) => b,
        };
        bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Serialize for HostId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One registered controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegisteredController {
    /// Controller id (0xFFFF: a dynamic controller whose id the subsystem did not report).
    pub controller_id: u16,
    /// The controller's host holds the reservation.
    pub holds_reservation: bool,
    /// The host identifier.
    pub host_id: HostId,
    /// The host's reservation key.
    pub key: ReservationKey,
}

/// A decoded Reservation Report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationReport {
    /// The reservation generation (bumped by register, preempt, clear).
    pub generation: u32,
    /// The reservation type's raw value (the block layer's numbers; 0: no reservation).
    pub type_code: u8,
    /// Persist through power loss.
    pub ptpl: bool,
    /// The registered controllers listed (as many as the buffer held).
    pub controllers: Vec<RegisteredController>,
    /// The number of registered controllers the device reported.
    pub registered: u16,
}

impl ReservationReport {
    /// Bytes a report with `controllers` entries needs.
    pub fn len_for(controllers: usize, extended: bool) -> usize {
        let (header, entry) = if extended {
            (HEADER_EXTENDED, ENTRY_EXTENDED)
        } else {
            (HEADER, ENTRY)
        };
        header.saturating_add(controllers.saturating_mul(entry))
    }

    /// Command dwords 10 and 11 of a Reservation Report into `len` bytes (a multiple of 4):
    /// NUMD (dwords minus one) and EDS.
    pub fn command_dwords(len: usize, extended: bool) -> (u32, u32) {
        let dwords = u32::try_from(len / 4).unwrap_or(u32::MAX).max(1);
        (dwords - 1, u32::from(extended))
    }

    /// Parses the data structure a Reservation Report transferred into `buf`, in the
    /// standard or the extended format (as the command asked).
    pub fn parse(buf: &[u8], extended: bool) -> Result<Self, ParseError> {
        const WHAT: &str = "NVMe Reservation Report";
        let (header, entry) = if extended {
            (HEADER_EXTENDED, ENTRY_EXTENDED)
        } else {
            (HEADER, ENTRY)
        };
        if buf.len() < header {
            return Err(ParseError::new(
                WHAT,
                format!("shorter than its {header}-byte header"),
            ));
        }
        let generation = le_u32(buf, 0).unwrap_or(0);
        let type_code = buf[4];
        let registered = le_u16(buf, 5).unwrap_or(0);
        let ptpl = buf[9] & 1 == 1;
        let present = (buf.len() - header) / entry;
        let listed = usize::from(registered).min(present);
        let mut controllers = Vec::with_capacity(listed);
        for i in 0..listed {
            let at = header + i * entry;
            let e = &buf[at..at + entry];
            let controller_id = le_u16(e, 0).unwrap_or(0);
            let holds_reservation = e[2] & 1 == 1;
            let (host_id, key) = if extended {
                let mut id = [0u8; 16];
                id.copy_from_slice(&e[16..32]);
                (HostId::Extended(id), le_u64(e, 8).unwrap_or(0))
            } else {
                let mut id = [0u8; 8];
                id.copy_from_slice(&e[8..16]);
                (HostId::Short(id), le_u64(e, 16).unwrap_or(0))
            };
            controllers.push(RegisteredController {
                controller_id,
                holds_reservation,
                host_id,
                key: ReservationKey(key),
            });
        }
        Ok(ReservationReport {
            generation,
            type_code,
            ptpl,
            controllers,
            registered,
        })
    }

    /// True when the device registered more controllers than the buffer held: read again with
    /// [`len_for`](Self::len_for)`(registered)`.
    pub fn truncated(&self) -> bool {
        usize::from(self.registered) > self.controllers.len()
    }

    /// The reservation type, when there is one this crate knows.
    pub fn pr_type(&self) -> Option<PrType> {
        PrType::from_block_code(u32::from(self.type_code))
    }

    /// As READ KEYS reports it: one key per registered controller listed.
    pub fn keys(&self) -> RegisteredKeys {
        RegisteredKeys {
            generation: self.generation,
            keys: self.controllers.iter().map(|c| c.key).collect(),
            truncated: self.truncated(),
            additional_length: u32::try_from(usize::from(self.registered).saturating_mul(8))
                .unwrap_or(u32::MAX),
        }
    }

    /// As READ RESERVATION reports it: the holder's key, or 0 for the all-registrants types
    /// (every registrant holds those), as SPC reports them.
    pub fn reservation(&self) -> ReservationStatus {
        let all_registrants = matches!(
            self.pr_type(),
            Some(PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants)
        );
        let holder = self
            .controllers
            .iter()
            .find(|c| c.holds_reservation)
            .map_or(ReservationKey::ZERO, |c| c.key);
        let key = if all_registrants {
            ReservationKey::ZERO
        } else {
            holder
        };
        reservation_from_block(key.0, self.generation, u32::from(self.type_code))
    }
}

bitflags::bitflags! {
    /// A namespace's Reservation Capabilities (RESCAP, byte 31 of Identify Namespace): the
    /// reservation types it supports, PTPL, and which Ignore Existing Key semantics it follows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ReservationCapabilities: u8 {
        /// Persist Through Power Loss is supported.
        const PERSIST_THROUGH_POWER_LOSS = 1 << 0;
        /// Write Exclusive.
        const WRITE_EXCLUSIVE = 1 << 1;
        /// Exclusive Access.
        const EXCLUSIVE_ACCESS = 1 << 2;
        /// Write Exclusive – Registrants Only.
        const WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 1 << 3;
        /// Exclusive Access – Registrants Only.
        const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 1 << 4;
        /// Write Exclusive – All Registrants.
        const WRITE_EXCLUSIVE_ALL_REGISTRANTS = 1 << 5;
        /// Exclusive Access – All Registrants.
        const EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 1 << 6;
        /// Ignore Existing Key as NVMe 1.3 defines it (Reservation Register only); clear: as
        /// 1.2.1 did (Register, Acquire and Release).
        const IGNORE_EXISTING_KEY = 1 << 7;
    }
}

impl ReservationCapabilities {
    /// Decodes RESCAP from an Identify Namespace data structure.
    pub fn parse(identify_namespace: &[u8]) -> Result<Self, ParseError> {
        identify_namespace
            .get(RESCAP_OFFSET)
            .map(|&b| Self::from_bits_retain(b))
            .ok_or_else(|| {
                ParseError::new(
                    "NVMe Identify Namespace",
                    format!(
                        "{} bytes: too short for RESCAP (byte {RESCAP_OFFSET})",
                        identify_namespace.len()
                    ),
                )
            })
    }

    /// The bit that declares `pr_type`.
    pub fn for_type(pr_type: PrType) -> Self {
        match pr_type {
            PrType::WriteExclusive => Self::WRITE_EXCLUSIVE,
            PrType::ExclusiveAccess => Self::EXCLUSIVE_ACCESS,
            PrType::WriteExclusiveRegistrantsOnly => Self::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
            PrType::ExclusiveAccessRegistrantsOnly => Self::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
            PrType::WriteExclusiveAllRegistrants => Self::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
            PrType::ExclusiveAccessAllRegistrants => Self::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        }
    }

    /// Whether the namespace declares `pr_type`.
    pub fn supports(self, pr_type: PrType) -> bool {
        self.contains(Self::for_type(pr_type))
    }

    /// The reservation types declared, in SCSI code order.
    pub fn types(self) -> Vec<PrType> {
        PrType::ALL
            .into_iter()
            .filter(|&t| self.supports(t))
            .collect()
    }

    /// Whether Persist Through Power Loss is supported.
    pub fn persist_through_power_loss(self) -> bool {
        self.contains(Self::PERSIST_THROUGH_POWER_LOSS)
    }
}

bitflags::bitflags! {
    /// A controller's Optional NVM Command Support (ONCS, bytes 520-521 of Identify
    /// Controller). Unknown bits are kept.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct OptionalCommands: u16 {
        /// Compare.
        const COMPARE = 1 << 0;
        /// Write Uncorrectable.
        const WRITE_UNCORRECTABLE = 1 << 1;
        /// Dataset Management.
        const DATASET_MANAGEMENT = 1 << 2;
        /// Write Zeroes.
        const WRITE_ZEROES = 1 << 3;
        /// The Save field of Set Features and the Select field of Get Features.
        const SAVE_AND_SELECT = 1 << 4;
        /// Reservations (Register, Report, Acquire, Release).
        const RESERVATIONS = 1 << 5;
        /// Timestamp.
        const TIMESTAMP = 1 << 6;
        /// Verify.
        const VERIFY = 1 << 7;
        /// Copy.
        const COPY = 1 << 8;
    }
}

impl OptionalCommands {
    /// Decodes ONCS from an Identify Controller data structure.
    pub fn parse(identify_controller: &[u8]) -> Result<Self, ParseError> {
        le_u16(identify_controller, ONCS_OFFSET)
            .map(Self::from_bits_retain)
            .ok_or_else(|| {
                ParseError::new(
                    "NVMe Identify Controller",
                    format!(
                        "{} bytes: too short for ONCS (bytes {ONCS_OFFSET}-{})",
                        identify_controller.len(),
                        ONCS_OFFSET + 1
                    ),
                )
            })
    }

    /// Whether the controller supports the reservation commands.
    pub fn reservations(self) -> bool {
        self.contains(Self::RESERVATIONS)
    }
}

/// What an NVMe namespace and its controller declare about reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationSupport {
    /// The controller's optional commands (reservations: [`OptionalCommands::RESERVATIONS`]).
    pub controller: OptionalCommands,
    /// The namespace's reservation capabilities.
    pub namespace: ReservationCapabilities,
}

/// NVMe status codes this crate names (status code type << 8 | status code).
const SC_INVALID_OPCODE: u16 = 0x001;
const SC_INVALID_FIELD: u16 = 0x002;
const SC_HOST_ID_INCONSISTENT_FORMAT: u16 = 0x018;
pub(crate) const SC_RESERVATION_CONFLICT: u16 = 0x083;
const SC_HOST_PATH_ERROR: u16 = 0x370;
pub(crate) const SC_HOST_ABORTED: u16 = 0x371;

/// The status code type << 8 | status code of an NVMe status field as Linux returns it (the
/// More and Do Not Retry bits, 13 and 14, dropped).
pub(crate) fn status_code(raw: u32) -> u16 {
    u16::try_from(raw & 0x7ff).unwrap_or(u16::MAX)
}

/// What an NVMe status (status code type << 8 | status code) means, for the operator.
pub fn status_meaning(status: u16) -> &'static str {
    match status {
        SC_INVALID_OPCODE => "invalid command opcode: the namespace does not support this command (reservations need ONCS bit 5)",
        SC_INVALID_FIELD => "invalid field in command",
        SC_HOST_ID_INCONSISTENT_FORMAT => "host identifier inconsistent format",
        SC_RESERVATION_CONFLICT => "reservation conflict",
        SC_HOST_PATH_ERROR => "host path error: the controller is unreachable (check the fabric, nvme list-subsys)",
        SC_HOST_ABORTED => "aborted by the host: its timeout passed or the controller was reset",
        s => match s >> 8 {
            0 => "generic command status",
            1 => "command specific status",
            2 => "media or data integrity error",
            3 => "path related status",
            _ => "vendor specific status",
        },
    }
}

/// The error for a non-zero NVMe `status` of `command` on `device`.
fn status_error(device: &str, command: &'static str, status: u16) -> Error {
    match status {
        SC_RESERVATION_CONFLICT => Error::ReservationConflict {
            device: device.to_string(),
            command,
            after_ambiguous_retry: false,
        },
        SC_INVALID_OPCODE => Error::NotSupported {
            device: device.to_string(),
            op: command,
        },
        status => Error::NvmeStatus {
            device: device.to_string(),
            command,
            status,
        },
    }
}

/// A passthrough command's timeout field: `timeout` in milliseconds, at least 1 (0 would mean
/// the kernel's default).
fn timeout_ms(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Most controllers read in one report (64-byte entries: 4 MiB).
const MAX_CONTROLLERS: usize = 1 << 16;
/// Controllers the first read makes room for: a report of a typical cluster fits at once.
const FIRST_READ_CONTROLLERS: usize = 32;

/// Reads the reservation state of the NVMe namespace behind `fd` (a namespace's block device)
/// with the Reservation Report command through passthrough, each command within `timeout`
/// (the kernel aborts it then: a lost controller cannot hold the caller for the transport's
/// `ctrl_loss_tmo`, as the block-layer PR ioctls can). Asks for the extended data structure
/// (the 128-bit host identifiers NVMe over Fabrics uses) and falls back to the standard one
/// where the controller refuses it; reads again, larger, when more controllers are registered
/// than the first buffer held. `device` names the device in errors.
pub fn read_report(
    fd: BorrowedFd<'_>,
    device: &str,
    timeout: Duration,
) -> Result<ReservationReport> {
    const COMMAND: &str = "NVMe Reservation Report";
    let io = |e: std::io::Error| crate::blk::map_errno(device, COMMAND, e);
    let nsid = sys::nvme_ns_id(fd).map_err(io)?;
    let timeout_ms = timeout_ms(timeout);
    let mut extended = true;
    let mut controllers = FIRST_READ_CONTROLLERS;
    loop {
        let len = ReservationReport::len_for(controllers, extended);
        let mut data = vec![0u8; len];
        let (cdw10, cdw11) = ReservationReport::command_dwords(len, extended);
        let cmd = sys::NvmePassthruCmd {
            opcode: RESERVATION_REPORT,
            nsid,
            cdw10,
            cdw11,
            timeout_ms,
            ..sys::NvmePassthruCmd::default()
        };
        let raw = sys::nvme_passthru_read(fd, sys::NvmeQueue::Io, cmd, &mut data).map_err(io)?;
        match status_code(raw) {
            0 => {}
            SC_HOST_ID_INCONSISTENT_FORMAT | SC_INVALID_FIELD if extended => {
                extended = false;
                continue;
            }
            status => return Err(status_error(device, COMMAND, status)),
        }
        let report =
            ReservationReport::parse(&data, extended).map_err(|source| Error::BadResponse {
                device: device.to_string(),
                command: COMMAND,
                source,
            })?;
        let registered = usize::from(report.registered);
        if report.truncated() && controllers < registered.min(MAX_CONTROLLERS) {
            controllers = registered.min(MAX_CONTROLLERS);
            continue;
        }
        return Ok(report);
    }
}

/// One Identify data structure (`cns`, for namespace `nsid`; 0 for the controller) through
/// the admin passthrough, within `timeout`.
fn identify(
    fd: BorrowedFd<'_>,
    device: &str,
    command: &'static str,
    cns: u32,
    nsid: u32,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let mut data = vec![0u8; IDENTIFY_LEN];
    let cmd = sys::NvmePassthruCmd {
        opcode: IDENTIFY,
        nsid,
        cdw10: cns,
        timeout_ms: timeout_ms(timeout),
        ..sys::NvmePassthruCmd::default()
    };
    let raw = sys::nvme_passthru_read(fd, sys::NvmeQueue::Admin, cmd, &mut data)
        .map_err(|e| crate::blk::map_errno(device, command, e))?;
    match status_code(raw) {
        0 => Ok(data),
        status => Err(status_error(device, command, status)),
    }
}

/// What the NVMe namespace behind `fd` (a namespace's block device) and its controller declare
/// about reservations: Identify Controller's ONCS and Identify Namespace's RESCAP, through the
/// admin passthrough, each command within `timeout`. On a multipath head the kernel asks the
/// controller of the path it would use. `device` names the device in errors.
pub fn read_reservation_support(
    fd: BorrowedFd<'_>,
    device: &str,
    timeout: Duration,
) -> Result<ReservationSupport> {
    const CONTROLLER: &str = "NVMe Identify Controller";
    const NAMESPACE: &str = "NVMe Identify Namespace";
    let nsid = sys::nvme_ns_id(fd).map_err(|e| crate::blk::map_errno(device, NAMESPACE, e))?;
    let bad = |command: &'static str| {
        move |source| Error::BadResponse {
            device: device.to_string(),
            command,
            source,
        }
    };
    let controller = identify(fd, device, CONTROLLER, CNS_CONTROLLER, 0, timeout)?;
    let controller = OptionalCommands::parse(&controller).map_err(bad(CONTROLLER))?;
    let namespace = identify(fd, device, NAMESPACE, CNS_NAMESPACE, nsid, timeout)?;
    let namespace = ReservationCapabilities::parse(&namespace).map_err(bad(NAMESPACE))?;
    Ok(ReservationSupport {
        controller,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_ids_serialize_as_the_hex_nvme_cli_prints() {
        let id = HostId::Extended([
            0xf3, 0xdc, 0xed, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 1,
        ]);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"f3dced00000040008000000000000001\""
        );
        let short = HostId::Short([0, 1, 2, 3, 4, 5, 6, 0xff]);
        assert_eq!(
            serde_json::to_string(&short).unwrap(),
            "\"00010203040506ff\""
        );
    }

    use super::*;

    #[test]
    fn nvme_statuses_are_named_for_the_operator() {
        assert_eq!(status_meaning(0x083), "reservation conflict");
        assert!(status_meaning(0x001).contains("ONCS bit 5"));
        assert!(status_meaning(0x371).contains("timeout"));
        assert_eq!(status_meaning(0x285), "media or data integrity error");
        let e = Error::NvmeStatus {
            device: "/dev/nvme0n1".into(),
            command: "NVMe Reservation Report",
            status: 0x370,
        };
        assert_eq!(
            e.to_string(),
            "/dev/nvme0n1: NVMe Reservation Report failed with NVMe status 0x370 (host path error: the controller is unreachable (check the fabric, nvme list-subsys))"
        );
        assert!(!e.is_timeout(), "a path error is not a timeout");
        let aborted = Error::NvmeStatus {
            device: "/dev/nvme0n1".into(),
            command: "NVMe Reservation Report",
            status: 0x371,
        };
        assert!(aborted.is_timeout());
    }

    #[test]
    fn a_report_on_a_device_that_is_no_nvme_namespace_is_not_supported() {
        let f = tempfile::tempfile().unwrap();
        let err = read_report(
            std::os::fd::AsFd::as_fd(&f),
            "/tmp/x",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    }

    /// A standard-format report: generation, type, the registered count, entries of
    /// (controller id, holder, host id, key).
    fn report(
        generation: u32,
        rtype: u8,
        regctl: u16,
        entries: &[(u16, bool, u64, u64)],
    ) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0..4].copy_from_slice(&generation.to_le_bytes());
        b[4] = rtype;
        b[5..7].copy_from_slice(&regctl.to_le_bytes());
        for &(cntlid, holder, host, key) in entries {
            let mut e = [0u8; ENTRY];
            e[0..2].copy_from_slice(&cntlid.to_le_bytes());
            e[2] = u8::from(holder);
            e[8..16].copy_from_slice(&host.to_be_bytes());
            e[16..24].copy_from_slice(&key.to_le_bytes());
            b.extend_from_slice(&e);
        }
        b
    }

    #[test]
    fn a_write_exclusive_registrants_only_reservation_reads_as_scsi_would_report_it() {
        // Two hosts, the first holding WE-RO (block/NVMe type 3); host 1 on two controllers.
        let buf = report(
            9,
            3,
            3,
            &[
                (1, true, 0x1111, 0xa1),
                (2, true, 0x1111, 0xa1),
                (3, false, 0x2222, 0xb2),
            ],
        );
        let r = ReservationReport::parse(&buf, false).unwrap();
        assert_eq!((r.generation, r.registered, r.truncated()), (9, 3, false));
        assert_eq!(r.pr_type(), Some(PrType::WriteExclusiveRegistrantsOnly));
        assert_eq!(r.controllers[2].host_id.to_string(), "0000000000002222");
        let keys = r.keys();
        assert_eq!(
            keys.keys,
            [
                ReservationKey(0xa1),
                ReservationKey(0xa1),
                ReservationKey(0xb2)
            ]
        );
        assert!(keys.contains(ReservationKey(0xb2)));
        let res = r.reservation().reservation.unwrap();
        assert_eq!(res.key, ReservationKey(0xa1));
        assert_eq!(res.pr_type, Some(PrType::WriteExclusiveRegistrantsOnly));
        // SPC's code for the same type: 5.
        assert_eq!(res.type_code, 5);
    }

    #[test]
    fn no_reservation_and_all_registrants_types_report_as_spc_does() {
        let none =
            ReservationReport::parse(&report(1, 0, 1, &[(1, false, 1, 0xa1)]), false).unwrap();
        assert_eq!(none.reservation().reservation, None);
        // WE-AR (type 5): every registrant holds it; SPC reports key 0.
        let all = ReservationReport::parse(&report(1, 5, 1, &[(1, true, 1, 0xa1)]), false).unwrap();
        let res = all.reservation().reservation.unwrap();
        assert_eq!(res.key, ReservationKey::ZERO);
        assert_eq!(res.pr_type, Some(PrType::WriteExclusiveAllRegistrants));
    }

    #[test]
    fn the_extended_format_carries_the_key_at_8_and_a_128_bit_host_id() {
        let mut b = vec![0u8; HEADER_EXTENDED];
        b[0..4].copy_from_slice(&4u32.to_le_bytes());
        b[4] = 1;
        b[5..7].copy_from_slice(&1u16.to_le_bytes());
        b[9] = 1;
        let mut e = [0u8; ENTRY_EXTENDED];
        e[0..2].copy_from_slice(&0xffffu16.to_le_bytes());
        e[2] = 1;
        e[8..16].copy_from_slice(&0x5f0c_0001u64.to_le_bytes());
        e[16..32].copy_from_slice(&[0xab; 16]);
        b.extend_from_slice(&e);
        let r = ReservationReport::parse(&b, true).unwrap();
        assert!(r.ptpl);
        let c = r.controllers[0];
        assert_eq!(c.controller_id, 0xffff);
        assert_eq!(c.key, ReservationKey(0x5f0c_0001));
        assert_eq!(c.host_id, HostId::Extended([0xab; 16]));
        assert_eq!(
            r.reservation().reservation.unwrap().pr_type,
            Some(PrType::WriteExclusive)
        );
    }

    #[test]
    fn a_short_buffer_is_truncated_and_says_how_much_to_read() {
        let mut buf = report(2, 3, 5, &[(1, true, 1, 0xa1), (2, false, 2, 0xb2)]);
        // The device said 5 controllers; 2 and a half fit.
        buf.extend_from_slice(&[0u8; 10]);
        let r = ReservationReport::parse(&buf, false).unwrap();
        assert_eq!(r.controllers.len(), 2);
        assert!(r.truncated());
        assert!(r.keys().truncated);
        assert_eq!(ReservationReport::len_for(5, false), 24 + 5 * 24);
        assert_eq!(ReservationReport::len_for(5, true), 64 + 5 * 64);
        // More entries present than registered: only the registered count is listed.
        let extra = report(2, 0, 1, &[(1, false, 1, 0xa1), (2, false, 2, 0xb2)]);
        assert_eq!(
            ReservationReport::parse(&extra, false)
                .unwrap()
                .controllers
                .len(),
            1
        );
        assert!(ReservationReport::parse(&[0u8; 23], false).is_err());
        assert!(ReservationReport::parse(&[0u8; 63], true).is_err());
    }

    /// An Identify Namespace data structure with RESCAP `rescap`.
    fn identify_namespace(rescap: u8) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[RESCAP_OFFSET] = rescap;
        b
    }

    /// An Identify Controller data structure with ONCS `oncs`.
    fn identify_controller(oncs: u16) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[ONCS_OFFSET..ONCS_OFFSET + 2].copy_from_slice(&oncs.to_le_bytes());
        b
    }

    #[test]
    fn rescap_byte_31_names_each_reservation_type_and_ptpl() {
        // Every bit alone: the flag it decodes to, and the one type (if any) it declares.
        let expected = [
            (
                0x01,
                ReservationCapabilities::PERSIST_THROUGH_POWER_LOSS,
                None,
            ),
            (
                0x02,
                ReservationCapabilities::WRITE_EXCLUSIVE,
                Some(PrType::WriteExclusive),
            ),
            (
                0x04,
                ReservationCapabilities::EXCLUSIVE_ACCESS,
                Some(PrType::ExclusiveAccess),
            ),
            (
                0x08,
                ReservationCapabilities::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                Some(PrType::WriteExclusiveRegistrantsOnly),
            ),
            (
                0x10,
                ReservationCapabilities::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
                Some(PrType::ExclusiveAccessRegistrantsOnly),
            ),
            (
                0x20,
                ReservationCapabilities::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
                Some(PrType::WriteExclusiveAllRegistrants),
            ),
            (
                0x40,
                ReservationCapabilities::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
                Some(PrType::ExclusiveAccessAllRegistrants),
            ),
            (0x80, ReservationCapabilities::IGNORE_EXISTING_KEY, None),
        ];
        for (byte, flag, pr_type) in expected {
            let c = ReservationCapabilities::parse(&identify_namespace(byte)).unwrap();
            assert_eq!(c, flag, "{byte:#04x}");
            assert_eq!(c.bits(), byte);
            assert_eq!(
                c.types(),
                pr_type.into_iter().collect::<Vec<_>>(),
                "{byte:#04x}"
            );
            assert_eq!(c.persist_through_power_loss(), byte == 0x01);
            if let Some(t) = pr_type {
                assert_eq!(ReservationCapabilities::for_type(t), flag);
            }
        }
        // A typical namespace (nvmet: every type, PTPL, 1.3 IEKEY): all six types.
        let all = ReservationCapabilities::parse(&identify_namespace(0xff)).unwrap();
        assert_eq!(all.types(), PrType::ALL);
        // The byte is read at 31, not next to it.
        let mut b = identify_namespace(0);
        b[30] = 0xff;
        b[32] = 0xff;
        assert!(ReservationCapabilities::parse(&b).unwrap().is_empty());
    }

    #[test]
    fn oncs_bit_5_little_endian_declares_reservations() {
        let c = OptionalCommands::parse(&identify_controller(0x0020)).unwrap();
        assert!(c.reservations());
        assert_eq!(c, OptionalCommands::RESERVATIONS);
        // Every other optional command, and unknown bits, kept but not reservations.
        let others = OptionalCommands::parse(&identify_controller(!0x0020)).unwrap();
        assert!(!others.reservations());
        assert_eq!(others.bits(), !0x0020);
        // Little endian: 0x20 in byte 521 is bit 13, not bit 5.
        let mut b = vec![0u8; IDENTIFY_LEN];
        b[ONCS_OFFSET + 1] = 0x20;
        assert!(!OptionalCommands::parse(&b).unwrap().reservations());
    }

    #[test]
    fn identify_data_too_short_for_its_field_is_a_parse_error() {
        // RESCAP is byte 31, ONCS bytes 520-521.
        assert!(ReservationCapabilities::parse(&[0u8; 31]).is_err());
        assert!(ReservationCapabilities::parse(&[0u8; 32]).is_ok());
        assert!(ReservationCapabilities::parse(&[]).is_err());
        let err = OptionalCommands::parse(&[0u8; 521]).unwrap_err();
        assert_eq!(err.what, "NVMe Identify Controller");
        assert!(err.reason.contains("ONCS"), "{}", err.reason);
        assert!(OptionalCommands::parse(&[0u8; 522]).is_ok());
    }

    #[test]
    fn reservation_support_of_a_device_that_is_no_nvme_namespace_is_not_supported() {
        let f = tempfile::tempfile().unwrap();
        let err = read_reservation_support(
            std::os::fd::AsFd::as_fd(&f),
            "/tmp/x",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotSupported { .. }), "{err}");
        assert!(err.to_string().contains("NVMe Identify Namespace"), "{err}");
    }

    #[test]
    fn passthrough_statuses_map_to_this_crates_errors() {
        let e = status_error(
            "/dev/nvme0n1",
            "NVMe Identify Controller",
            SC_INVALID_OPCODE,
        );
        assert!(matches!(e, Error::NotSupported { .. }), "{e}");
        let e = status_error(
            "/dev/nvme0n1",
            "NVMe Reservation Report",
            SC_RESERVATION_CONFLICT,
        );
        assert!(e.is_reservation_conflict(), "{e}");
        let e = status_error("/dev/nvme0n1", "NVMe Identify Namespace", SC_HOST_ABORTED);
        assert!(e.is_timeout(), "{e}");
        assert_eq!(
            timeout_ms(Duration::ZERO),
            1,
            "0 would be the kernel's default"
        );
        assert_eq!(timeout_ms(Duration::from_secs(5)), 5000);
    }

    #[test]
    fn the_command_asks_for_whole_dwords_minus_one_and_the_format() {
        assert_eq!(ReservationReport::command_dwords(4096, false), (1023, 0));
        assert_eq!(ReservationReport::command_dwords(4096, true), (1023, 1));
        assert_eq!(ReservationReport::command_dwords(0, false), (0, 0));
    }
}
