//! INQUIRY: standard data and VPD pages 0x00, 0x80, 0x83 (SPC-4 6.6, 7.8).

use std::fmt;

use serde::Serialize;

use crate::error::ParseError;

fn ascii_field(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard INQUIRY data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandardInquiry {
    /// Peripheral qualifier (0 = LU connected).
    pub peripheral_qualifier: u8,
    /// Peripheral device type (0 = disk).
    pub device_type: u8,
    /// Removable medium.
    pub removable: bool,
    /// VERSION (6 = SPC-4).
    pub version: u8,
    /// T10 vendor identification.
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// Product revision level.
    pub revision: String,
}

impl StandardInquiry {
    /// Parses standard INQUIRY data; needs at least the 36 bytes SPC requires.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "standard INQUIRY data";
        // The device may send less than it claims (allocation length); what is needed is 36.
        if buf.len() < 36 {
            return Err(ParseError::new(
                WHAT,
                format!("{} bytes, need 36", buf.len()),
            ));
        }
        Ok(StandardInquiry {
            peripheral_qualifier: buf[0] >> 5,
            device_type: buf[0] & 0x1f,
            removable: buf[1] & 0x80 != 0,
            version: buf[2],
            vendor: ascii_field(&buf[8..16]),
            product: ascii_field(&buf[16..32]),
            revision: ascii_field(&buf[32..36]),
        })
    }

    /// Name of the peripheral device type.
    pub fn device_type_name(&self) -> &'static str {
        match self.device_type {
            0x00 => "disk",
            0x01 => "tape",
            0x05 => "cd/dvd",
            0x07 => "optical memory",
            0x08 => "medium changer",
            0x0c => "storage array controller",
            0x0d => "enclosure",
            0x0e => "simplified direct-access",
            0x1f => "unknown or no device",
            _ => "other",
        }
    }
}

/// Splits a VPD page into header fields and body, checking the page code.
fn vpd_body<'a>(what: &'static str, buf: &'a [u8], page: u8) -> Result<&'a [u8], ParseError> {
    if buf.len() < 4 {
        return Err(ParseError::new(what, "shorter than the 4-byte header"));
    }
    if buf[1] != page {
        return Err(ParseError::new(
            what,
            format!("page code is 0x{:02x}, expected 0x{page:02x}", buf[1]),
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    Ok(&buf[4..buf.len().min(4 + len)])
}

/// VPD page 0x00: the pages the device supports.
pub fn parse_supported_vpd_pages(buf: &[u8]) -> Result<Vec<u8>, ParseError> {
    Ok(vpd_body("VPD page 0x00", buf, 0x00)?.to_vec())
}

/// VPD page 0x80: unit serial number.
pub fn parse_unit_serial_number(buf: &[u8]) -> Result<String, ParseError> {
    Ok(ascii_field(vpd_body("VPD page 0x80", buf, 0x80)?))
}

/// What a designator identifies (ASSOCIATION field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Association {
    /// 0: the logical unit.
    LogicalUnit,
    /// 1: the target port the command came through.
    TargetPort,
    /// 2: the SCSI target device.
    TargetDevice,
    /// 3: reserved.
    Reserved,
}

/// A decoded designator value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Designator {
    /// Type 3: NAA. `naa` is the top nibble (2, 3, 5, 6).
    Naa {
        /// NAA type nibble.
        naa: u8,
        /// Whole identifier, hex.
        id: String,
    },
    /// Type 2: EUI-64 based (8, 12 or 16 bytes).
    Eui64 {
        /// Identifier, hex.
        id: String,
    },
    /// Type 1: T10 vendor ID based.
    T10VendorId {
        /// Vendor identification (8 bytes).
        vendor: String,
        /// Vendor-specific identifier (text when printable, else hex).
        specific: String,
    },
    /// Type 8: SCSI name string (UTF-8).
    ScsiName {
        /// Name.
        name: String,
    },
    /// Type 0xA: UUID.
    Uuid {
        /// UUID bytes, hex.
        id: String,
    },
    /// Type 4: relative target port identifier.
    RelativeTargetPort {
        /// Port number.
        port: u16,
    },
    /// Type 5: target port group.
    TargetPortGroup {
        /// Group number.
        group: u16,
    },
    /// Type 6: logical unit group.
    LogicalUnitGroup {
        /// Group number.
        group: u16,
    },
    /// Anything else (vendor specific, MD5 LU id, protocol specific...).
    Other {
        /// DESIGNATOR TYPE.
        designator_type: u8,
        /// Raw designator, hex.
        raw: String,
    },
}

/// One designation descriptor of VPD page 0x83.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Designation {
    /// What is identified.
    pub association: Association,
    /// Protocol identifier, when PIV is set.
    pub protocol_id: Option<u8>,
    /// The designator.
    pub designator: Designator,
}

impl Designator {
    /// Canonical text used to compare LUNs across paths (`naa.6001405...`, `eui.…`, `t10.…`).
    pub fn canonical(&self) -> Option<String> {
        match self {
            Designator::Naa { id, .. } => Some(format!("naa.{id}")),
            Designator::Eui64 { id } => Some(format!("eui.{id}")),
            // A vendor id alone (LIO without a unit serial says just "LIO-ORG") names every LUN
            // of that vendor: not an identity.
            Designator::T10VendorId { specific, .. } if specific.trim().is_empty() => None,
            Designator::T10VendorId { vendor, specific } => {
                Some(format!("t10.{vendor}:{specific}"))
            }
            Designator::ScsiName { name } => Some(name.clone()),
            Designator::Uuid { id } => Some(format!("uuid.{id}")),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Designator::Naa { naa: 6, .. } => 0,
            Designator::Naa { .. } => 1,
            Designator::Eui64 { .. } => 2,
            Designator::Uuid { .. } => 3,
            Designator::ScsiName { .. } => 4,
            Designator::T10VendorId { .. } => 5,
            _ => u8::MAX,
        }
    }
}

impl fmt::Display for Designator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Designator::RelativeTargetPort { port } => write!(f, "relative target port {port}"),
            Designator::TargetPortGroup { group } => write!(f, "target port group {group}"),
            Designator::LogicalUnitGroup { group } => write!(f, "logical unit group {group}"),
            Designator::Other {
                designator_type,
                raw,
            } => write!(f, "type 0x{designator_type:x}: {raw}"),
            other => f.write_str(&other.canonical().unwrap_or_default()),
        }
    }
}

/// VPD page 0x83: device identification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceIdentification {
    /// All descriptors in page order.
    pub designations: Vec<Designation>,
}

impl DeviceIdentification {
    /// Parses VPD page 0x83. A descriptor running past the page ends the list.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        let body = vpd_body("VPD page 0x83", buf, 0x83)?;
        let mut designations = Vec::new();
        let mut pos = 0usize;
        while pos + 4 <= body.len() {
            let (b0, b1, len) = (body[pos], body[pos + 1], usize::from(body[pos + 3]));
            let Some(value) = body.get(pos + 4..pos + 4 + len) else {
                break;
            };
            let code_set = b0 & 0x0f;
            let piv = b1 & 0x80 != 0;
            let association = match (b1 >> 4) & 0x03 {
                0 => Association::LogicalUnit,
                1 => Association::TargetPort,
                2 => Association::TargetDevice,
                _ => Association::Reserved,
            };
            let designator_type = b1 & 0x0f;
            let text = || {
                if code_set == 2 || code_set == 3 {
                    ascii_field(value)
                } else {
                    hex(value)
                }
            };
            let u16_tail = || {
                value
                    .get(2..4)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
            };
            let designator = match designator_type {
                0x1 => Designator::T10VendorId {
                    vendor: ascii_field(value.get(..8).unwrap_or(value)),
                    specific: {
                        let rest = value.get(8..).unwrap_or(&[]);
                        if code_set == 2 || code_set == 3 {
                            ascii_field(rest)
                        } else {
                            hex(rest)
                        }
                    },
                },
                0x2 => Designator::Eui64 { id: hex(value) },
                0x3 => Designator::Naa {
                    naa: value.first().map_or(0, |b| b >> 4),
                    id: hex(value),
                },
                0x4 => Designator::RelativeTargetPort { port: u16_tail() },
                0x5 => Designator::TargetPortGroup { group: u16_tail() },
                0x6 => Designator::LogicalUnitGroup { group: u16_tail() },
                0x8 => Designator::ScsiName { name: text() },
                0xa => Designator::Uuid {
                    id: hex(value.get(2..).unwrap_or(&[])),
                },
                t => Designator::Other {
                    designator_type: t,
                    raw: hex(value),
                },
            };
            designations.push(Designation {
                association,
                protocol_id: piv.then_some(b0 >> 4),
                designator,
            });
            pos += 4 + len;
        }
        Ok(DeviceIdentification { designations })
    }

    /// The best logical-unit designator as canonical text (NAA 6 preferred, then other NAA,
    /// EUI-64, UUID, SCSI name, T10 vendor ID with a vendor-specific part). Two paths with equal
    /// ids are one LUN; `None` when the device offers nothing unique.
    pub fn lun_id(&self) -> Option<String> {
        self.designations
            .iter()
            .filter(|d| d.association == Association::LogicalUnit)
            .filter_map(|d| d.designator.canonical().map(|c| (d.designator.rank(), c)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, c)| c)
    }

    /// The relative target port of the path the page was read through.
    pub fn relative_target_port(&self) -> Option<u16> {
        self.designations.iter().find_map(|d| match d.designator {
            Designator::RelativeTargetPort { port } if d.association == Association::TargetPort => {
                Some(port)
            }
            _ => None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Standard INQUIRY data as LIO sends it (SPC-4, "LIO-ORG", "FILEIO").
    pub(crate) fn lio_standard_inquiry() -> Vec<u8> {
        let mut b = vec![0x00, 0x00, 0x06, 0x12, 0x3f, 0x08, 0x00, 0x02];
        b.extend_from_slice(b"LIO-ORG ");
        b.extend_from_slice(b"disk0           ");
        b.extend_from_slice(b"4.0 ");
        b.resize(64, 0);
        b
    }

    /// VPD 0x83 as LIO sends it: NAA 6, T10 vendor id, relative target port, TPG.
    pub(crate) fn lio_vpd83() -> Vec<u8> {
        let mut body = Vec::new();
        // NAA 6 (registered extended), binary code set, LU association.
        body.extend_from_slice(&[0x01, 0x03, 0x00, 0x10]);
        body.extend_from_slice(&[
            0x60, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde,
            0xf0, 0x12,
        ]);
        // T10 vendor id, ASCII, LU association.
        let t10 = b"LIO-ORG 5abcdef0-1234-5678-9abc-def012345678";
        body.extend_from_slice(&[0x02, 0x01, 0x00, u8::try_from(t10.len()).unwrap()]);
        body.extend_from_slice(t10);
        // Relative target port 1, PIV + target port association, iSCSI protocol.
        body.extend_from_slice(&[0x51, 0x94, 0x00, 0x04, 0, 0, 0, 1]);
        // Target port group 0.
        body.extend_from_slice(&[0x51, 0x95, 0x00, 0x04, 0, 0, 0, 0]);
        let mut b = vec![0x00, 0x83];
        b.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        b.extend(body);
        b
    }

    #[test]
    fn lio_standard_inquiry_decodes_vendor_product_revision() {
        let i = StandardInquiry::parse(&lio_standard_inquiry()).unwrap();
        assert_eq!(i.vendor, "LIO-ORG");
        assert_eq!(i.product, "disk0");
        assert_eq!(i.revision, "4.0");
        assert_eq!(i.device_type, 0);
        assert_eq!(i.device_type_name(), "disk");
        assert_eq!(i.version, 6);
    }

    #[test]
    fn short_standard_inquiry_is_rejected() {
        assert!(StandardInquiry::parse(&[0u8; 35]).is_err());
    }

    #[test]
    fn vpd00_lists_supported_pages() {
        let b = [0x00, 0x00, 0x00, 0x04, 0x00, 0x80, 0x83, 0x86];
        assert_eq!(
            parse_supported_vpd_pages(&b).unwrap(),
            vec![0, 0x80, 0x83, 0x86]
        );
    }

    #[test]
    fn vpd80_decodes_serial_number() {
        let mut b = vec![0x00, 0x80, 0x00, 0x0c];
        b.extend_from_slice(b"  SER12345  ");
        assert_eq!(parse_unit_serial_number(&b).unwrap(), "SER12345");
    }

    #[test]
    fn vpd_with_wrong_page_code_is_rejected() {
        assert!(parse_unit_serial_number(&[0, 0x83, 0, 0]).is_err());
        assert!(parse_supported_vpd_pages(&[0, 0]).is_err());
    }

    #[test]
    fn lio_vpd83_decodes_naa6_and_t10_and_port() {
        let id = DeviceIdentification::parse(&lio_vpd83()).unwrap();
        assert_eq!(id.designations.len(), 4);
        assert_eq!(
            id.designations[0].designator,
            Designator::Naa {
                naa: 6,
                id: "6001405abcdef0123456789abcdef012".into()
            }
        );
        assert_eq!(
            id.designations[1].designator,
            Designator::T10VendorId {
                vendor: "LIO-ORG".into(),
                specific: "5abcdef0-1234-5678-9abc-def012345678".into()
            }
        );
        assert_eq!(id.designations[2].protocol_id, Some(5));
        assert_eq!(id.relative_target_port(), Some(1));
        assert_eq!(
            id.lun_id().as_deref(),
            Some("naa.6001405abcdef0123456789abcdef012")
        );
    }

    #[test]
    fn two_paths_with_same_naa_but_different_ports_are_one_lun() {
        let a = DeviceIdentification::parse(&lio_vpd83()).unwrap();
        let mut other_path = lio_vpd83();
        let len = other_path.len();
        other_path[len - 9] = 2; // relative target port 2
        let b = DeviceIdentification::parse(&other_path).unwrap();
        assert_eq!(a.lun_id(), b.lun_id());
        assert_ne!(a.relative_target_port(), b.relative_target_port());
    }

    #[test]
    fn eui64_is_used_when_no_naa() {
        let b = [
            0x00, 0x83, 0x00, 0x0c, 0x01, 0x02, 0x00, 0x08, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x66, 0x77,
        ];
        let id = DeviceIdentification::parse(&b).unwrap();
        assert_eq!(id.lun_id().as_deref(), Some("eui.0011223344556677"));
    }

    #[test]
    fn vpd83_descriptor_past_page_end_stops_parsing() {
        let b = [0x00, 0x83, 0x00, 0x06, 0x01, 0x03, 0x00, 0x10, 0x60, 0x01];
        let id = DeviceIdentification::parse(&b).unwrap();
        assert!(id.designations.is_empty());
        assert_eq!(id.lun_id(), None);
    }

    #[test]
    fn a_vendor_id_without_a_serial_is_no_lun_identity() {
        // LIO fileio backstore without a unit serial: T10 designator "LIO-ORG " and nothing else.
        let mut b = vec![0x00, 0x83, 0x00, 12, 0x02, 0x01, 0x00, 8];
        b.extend_from_slice(b"LIO-ORG ");
        let id = DeviceIdentification::parse(&b).unwrap();
        assert_eq!(id.designations.len(), 1);
        assert_eq!(id.lun_id(), None, "every LIO LUN would share it");
    }
}
