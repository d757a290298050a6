//! Sense data (SPC-4 4.4): fixed (0x70/0x71) and descriptor (0x72/0x73) formats.

use std::fmt;

use serde::Serialize;

use crate::error::ParseError;

/// SPC sense key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenseKey {
    /// 0x0
    NoSense,
    /// 0x1
    RecoveredError,
    /// 0x2
    NotReady,
    /// 0x3
    MediumError,
    /// 0x4
    HardwareError,
    /// 0x5
    IllegalRequest,
    /// 0x6
    UnitAttention,
    /// 0x7
    DataProtect,
    /// 0x8
    BlankCheck,
    /// 0x9
    VendorSpecific,
    /// 0xA
    CopyAborted,
    /// 0xB
    AbortedCommand,
    /// 0xC (obsolete EQUAL)
    Reserved0C,
    /// 0xD
    VolumeOverflow,
    /// 0xE
    Miscompare,
    /// 0xF
    Completed,
}

impl SenseKey {
    /// Decodes the low nibble of `code`.
    pub fn from_code(code: u8) -> SenseKey {
        match code & 0x0f {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0x9 => SenseKey::VendorSpecific,
            0xa => SenseKey::CopyAborted,
            0xb => SenseKey::AbortedCommand,
            0xc => SenseKey::Reserved0C,
            0xd => SenseKey::VolumeOverflow,
            0xe => SenseKey::Miscompare,
            _ => SenseKey::Completed,
        }
    }

    /// SPC name.
    pub fn name(self) -> &'static str {
        match self {
            SenseKey::NoSense => "NO SENSE",
            SenseKey::RecoveredError => "RECOVERED ERROR",
            SenseKey::NotReady => "NOT READY",
            SenseKey::MediumError => "MEDIUM ERROR",
            SenseKey::HardwareError => "HARDWARE ERROR",
            SenseKey::IllegalRequest => "ILLEGAL REQUEST",
            SenseKey::UnitAttention => "UNIT ATTENTION",
            SenseKey::DataProtect => "DATA PROTECT",
            SenseKey::BlankCheck => "BLANK CHECK",
            SenseKey::VendorSpecific => "VENDOR SPECIFIC",
            SenseKey::CopyAborted => "COPY ABORTED",
            SenseKey::AbortedCommand => "ABORTED COMMAND",
            SenseKey::Reserved0C => "RESERVED (0xC)",
            SenseKey::VolumeOverflow => "VOLUME OVERFLOW",
            SenseKey::Miscompare => "MISCOMPARE",
            SenseKey::Completed => "COMPLETED",
        }
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which sense-data format the device used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenseFormat {
    /// Response code 0x70/0x71.
    Fixed,
    /// Response code 0x72/0x73.
    Descriptor,
}

/// Decoded sense data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sense {
    /// Fixed or descriptor format.
    pub format: SenseFormat,
    /// False for deferred errors (0x71/0x73).
    pub current: bool,
    /// Sense key.
    pub key: SenseKey,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// INFORMATION field, when valid.
    pub information: Option<u64>,
    /// Sense-key specific bytes (SKSV set), e.g. the field pointer of ILLEGAL REQUEST.
    pub sense_key_specific: Option<[u8; 3]>,
}

/// Well-known ASC/ASCQ pairs a fencing tool acts on.
pub mod asc {
    /// 29/00 power on, reset, or bus device reset occurred (29/xx all are resets).
    pub const POWER_ON_RESET: (u8, u8) = (0x29, 0x00);
    /// 2A/03 reservations preempted.
    pub const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x03);
    /// 2A/04 reservations released.
    pub const RESERVATIONS_RELEASED: (u8, u8) = (0x2a, 0x04);
    /// 2A/05 registrations preempted.
    pub const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x05);
    /// 20/00 invalid command operation code.
    pub const INVALID_OPCODE: (u8, u8) = (0x20, 0x00);
    /// 24/00 invalid field in CDB.
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    /// 25/00 logical unit not supported.
    pub const LUN_NOT_SUPPORTED: (u8, u8) = (0x25, 0x00);
    /// 26/00 invalid field in parameter list.
    pub const INVALID_FIELD_IN_PARAMETER_LIST: (u8, u8) = (0x26, 0x00);
    /// 04/01 logical unit is in process of becoming ready.
    pub const BECOMING_READY: (u8, u8) = (0x04, 0x01);
}

/// Text for an ASC/ASCQ pair, for the values a fencing tool meets.
pub fn asc_ascq_name(asc: u8, ascq: u8) -> Option<&'static str> {
    Some(match (asc, ascq) {
        (0x00, 0x00) => "no additional sense information",
        (0x04, 0x00) => "logical unit not ready, cause not reportable",
        (0x04, 0x01) => "logical unit is in process of becoming ready",
        (0x04, 0x02) => "logical unit not ready, initializing command required",
        (0x04, 0x03) => "logical unit not ready, manual intervention required",
        (0x04, 0x04) => "logical unit not ready, format in progress",
        (0x04, 0x07) => "logical unit not ready, operation in progress",
        (0x04, 0x09) => "logical unit not ready, self-test in progress",
        (0x04, 0x0a) => "logical unit not accessible, asymmetric access state transition",
        (0x04, 0x0b) => "logical unit not accessible, target port in standby state",
        (0x04, 0x0c) => "logical unit not accessible, target port in unavailable state",
        (0x04, 0x11) => "logical unit not ready, notify (enable spinup) required",
        (0x04, 0x12) => "logical unit not ready, offline",
        (0x05, 0x00) => "logical unit does not respond to selection",
        (0x08, 0x00) => "logical unit communication failure",
        (0x08, 0x01) => "logical unit communication time-out",
        (0x0c, 0x00) => "write error",
        (0x11, 0x00) => "unrecovered read error",
        (0x1a, 0x00) => "parameter list length error",
        (0x20, 0x00) => "invalid command operation code",
        (0x21, 0x00) => "logical block address out of range",
        (0x24, 0x00) => "invalid field in CDB",
        (0x25, 0x00) => "logical unit not supported",
        (0x26, 0x00) => "invalid field in parameter list",
        (0x26, 0x01) => "parameter not supported",
        (0x26, 0x02) => "parameter value invalid",
        (0x27, 0x00) => "write protected",
        (0x28, 0x00) => "not ready to ready change, medium may have changed",
        (0x29, 0x00) => "power on, reset, or bus device reset occurred",
        (0x29, 0x01) => "power on occurred",
        (0x29, 0x02) => "SCSI bus reset occurred",
        (0x29, 0x03) => "bus device reset function occurred",
        (0x29, 0x04) => "device internal reset",
        (0x29, 0x07) => "I_T nexus loss occurred",
        (0x2a, 0x00) => "parameters changed",
        (0x2a, 0x01) => "mode parameters changed",
        (0x2a, 0x03) => "reservations preempted",
        (0x2a, 0x04) => "reservations released",
        (0x2a, 0x05) => "registrations preempted",
        (0x2a, 0x06) => "asymmetric access state changed",
        (0x2a, 0x09) => "capacity data has changed",
        (0x2c, 0x00) => "command sequence error",
        (0x2f, 0x00) => "commands cleared by another initiator",
        (0x2f, 0x01) => "commands cleared by power loss notification",
        (0x3a, 0x00) => "medium not present",
        (0x3f, 0x01) => "microcode has been changed",
        (0x3f, 0x03) => "inquiry data has changed",
        (0x3f, 0x0e) => "reported LUNs data has changed",
        (0x44, 0x00) => "internal target failure",
        (0x4b, 0x00) => "data phase error",
        (0x55, 0x03) => "insufficient resources",
        (0x55, 0x04) => "insufficient registration resources",
        _ => return None,
    })
}

impl Sense {
    /// Decodes sense data as written by the device into the sense buffer.
    ///
    /// Returns an error for an empty buffer or an unknown response code; a short buffer
    /// yields whatever fields it does contain (ASC/ASCQ 0 when cut off), because devices
    /// and HBAs do truncate sense data and the sense key alone is still useful.
    pub fn parse(buf: &[u8]) -> Result<Sense, ParseError> {
        const WHAT: &str = "sense data";
        let first = *buf.first().ok_or_else(|| ParseError::new(WHAT, "empty"))?;
        let code = first & 0x7f;
        let at = |i: usize| buf.get(i).copied().unwrap_or(0);
        match code {
            0x70 | 0x71 => {
                if buf.len() < 3 {
                    return Err(ParseError::new(WHAT, "fixed format shorter than 3 bytes"));
                }
                // Bytes 8.. are present only up to ADDITIONAL SENSE LENGTH (byte 7).
                let end = buf.len().min(8 + usize::from(at(7)));
                let field = |i: usize| if i < end { at(i) } else { 0 };
                let information = if first & 0x80 != 0 && buf.len() >= 7 {
                    Some(u64::from(u32::from_be_bytes([at(3), at(4), at(5), at(6)])))
                } else {
                    None
                };
                let sense_key_specific = if field(15) & 0x80 != 0 && end >= 18 {
                    Some([at(15) & 0x7f, at(16), at(17)])
                } else {
                    None
                };
                Ok(Sense {
                    format: SenseFormat::Fixed,
                    current: code == 0x70,
                    key: SenseKey::from_code(at(2)),
                    asc: field(12),
                    ascq: field(13),
                    information,
                    sense_key_specific,
                })
            }
            0x72 | 0x73 => {
                if buf.len() < 2 {
                    return Err(ParseError::new(
                        WHAT,
                        "descriptor format shorter than 2 bytes",
                    ));
                }
                let mut sense = Sense {
                    format: SenseFormat::Descriptor,
                    current: code == 0x72,
                    key: SenseKey::from_code(at(1)),
                    asc: at(2),
                    ascq: at(3),
                    information: None,
                    sense_key_specific: None,
                };
                let end = buf.len().min(8 + usize::from(at(7)));
                let mut pos = 8;
                while pos + 2 <= end {
                    let dtype = buf[pos];
                    let dlen = usize::from(buf[pos + 1]);
                    let body_end = pos + 2 + dlen;
                    if body_end > end {
                        break;
                    }
                    let desc = &buf[pos..body_end];
                    match dtype {
                        // Information descriptor: VALID bit in byte 2, 8-byte value at 4..12.
                        0x00 if desc.len() >= 12 && desc[2] & 0x80 != 0 => {
                            let mut v = [0u8; 8];
                            v.copy_from_slice(&desc[4..12]);
                            sense.information = Some(u64::from_be_bytes(v));
                        }
                        // Sense key specific descriptor: SKSV in byte 4.
                        0x02 if desc.len() >= 7 && desc[4] & 0x80 != 0 => {
                            sense.sense_key_specific = Some([desc[4] & 0x7f, desc[5], desc[6]]);
                        }
                        _ => {}
                    }
                    pos = body_end;
                }
                Ok(sense)
            }
            _ => Err(ParseError::new(
                WHAT,
                format!("unknown response code 0x{code:02x}"),
            )),
        }
    }

    /// True when ASC/ASCQ equal `pair`.
    pub fn is(&self, pair: (u8, u8)) -> bool {
        (self.asc, self.ascq) == pair
    }

    /// Text for the ASC/ASCQ, or a generic hex form.
    pub fn description(&self) -> String {
        match asc_ascq_name(self.asc, self.ascq) {
            Some(name) => name.to_string(),
            None => format!("ASC 0x{:02x} ASCQ 0x{:02x}", self.asc, self.ascq),
        }
    }

    /// True for "your registration or reservation was taken away" unit attentions.
    pub fn is_preemption_notice(&self) -> bool {
        self.key == SenseKey::UnitAttention
            && (self.is(asc::REGISTRATIONS_PREEMPTED)
                || self.is(asc::RESERVATIONS_PREEMPTED)
                || self.is(asc::RESERVATIONS_RELEASED))
    }

    /// True for ILLEGAL REQUEST meaning "this command or service action is not implemented".
    pub fn is_unsupported_command(&self) -> bool {
        self.key == SenseKey::IllegalRequest
            && (self.is(asc::INVALID_OPCODE) || self.is(asc::INVALID_FIELD_IN_CDB))
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}, {} ({:02X}/{:02X})",
            if self.current { "" } else { "deferred " },
            self.key,
            self.description(),
            self.asc,
            self.ascq
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed-format UNIT ATTENTION 2A/05 as LIO sends to a preempted initiator.
    fn fixed(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
        let mut b = vec![0u8; 18];
        b[0] = 0x70;
        b[2] = key;
        b[7] = 10;
        b[12] = asc;
        b[13] = ascq;
        b
    }

    #[test]
    fn fixed_unit_attention_registrations_preempted_decodes() {
        let s = Sense::parse(&fixed(0x06, 0x2a, 0x05)).unwrap();
        assert_eq!(s.format, SenseFormat::Fixed);
        assert!(s.current);
        assert_eq!(s.key, SenseKey::UnitAttention);
        assert!(s.is(asc::REGISTRATIONS_PREEMPTED));
        assert!(s.is_preemption_notice());
        assert_eq!(
            s.to_string(),
            "UNIT ATTENTION, registrations preempted (2A/05)"
        );
    }

    #[test]
    fn fixed_illegal_request_with_field_pointer_decodes_sks() {
        let mut b = fixed(0x05, 0x24, 0x00);
        b[15] = 0xc0; // SKSV | C/D (CDB)
        b[16] = 0x00;
        b[17] = 0x01; // byte 1 of the CDB
        let s = Sense::parse(&b).unwrap();
        assert!(s.is_unsupported_command());
        assert_eq!(s.sense_key_specific, Some([0x40, 0x00, 0x01]));
    }

    #[test]
    fn fixed_with_valid_information_field_decodes_it() {
        let mut b = fixed(0x03, 0x11, 0x00);
        b[0] = 0xf0;
        b[3..7].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        let s = Sense::parse(&b).unwrap();
        assert_eq!(s.information, Some(0x1234_5678));
        assert_eq!(s.key, SenseKey::MediumError);
    }

    #[test]
    fn fixed_deferred_error_is_not_current() {
        let mut b = fixed(0x04, 0x44, 0x00);
        b[0] = 0x71;
        let s = Sense::parse(&b).unwrap();
        assert!(!s.current);
        assert!(s.to_string().starts_with("deferred HARDWARE ERROR"));
    }

    #[test]
    fn fixed_truncated_by_additional_length_reports_zero_asc() {
        let mut b = fixed(0x06, 0x29, 0x00);
        b[7] = 0; // device claims no additional bytes: ASC/ASCQ are not valid
        let s = Sense::parse(&b).unwrap();
        assert_eq!(s.key, SenseKey::UnitAttention);
        assert_eq!((s.asc, s.ascq), (0, 0));
    }

    #[test]
    fn descriptor_not_ready_becoming_ready_decodes() {
        let b = [0x72, 0x02, 0x04, 0x01, 0, 0, 0, 0];
        let s = Sense::parse(&b).unwrap();
        assert_eq!(s.format, SenseFormat::Descriptor);
        assert_eq!(s.key, SenseKey::NotReady);
        assert!(s.is(asc::BECOMING_READY));
    }

    #[test]
    fn descriptor_with_information_and_sks_descriptors_decodes_both() {
        let mut b = vec![0x72, 0x05, 0x26, 0x00, 0, 0, 0, 20];
        // Information descriptor: type 0, len 0x0a, VALID, reserved, 8-byte info.
        b.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
        b.extend_from_slice(&0xdead_beefu64.to_be_bytes());
        // Sense-key specific descriptor: type 2, len 6, SKSV|field pointer 0x0014.
        b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00, 0x80, 0x00, 0x14, 0x00]);
        let s = Sense::parse(&b).unwrap();
        assert_eq!(s.information, Some(0xdead_beef));
        assert_eq!(s.sense_key_specific, Some([0x00, 0x00, 0x14]));
        assert!(s.is(asc::INVALID_FIELD_IN_PARAMETER_LIST));
    }

    #[test]
    fn descriptor_with_overlong_descriptor_stops_without_panic() {
        let b = [0x72, 0x06, 0x2a, 0x03, 0, 0, 0, 4, 0x00, 0x0a, 0x80, 0x00];
        let s = Sense::parse(&b).unwrap();
        assert!(s.is(asc::RESERVATIONS_PREEMPTED));
        assert_eq!(s.information, None);
    }

    #[test]
    fn empty_or_unknown_sense_is_an_error() {
        assert!(Sense::parse(&[]).is_err());
        assert!(Sense::parse(&[0x7f, 0, 0, 0]).is_err());
        assert!(Sense::parse(&[0x70]).is_err());
    }

    #[test]
    fn names_cover_the_fencing_asc_values() {
        for (pair, text) in [
            (
                asc::POWER_ON_RESET,
                "power on, reset, or bus device reset occurred",
            ),
            (asc::RESERVATIONS_PREEMPTED, "reservations preempted"),
            (asc::RESERVATIONS_RELEASED, "reservations released"),
            (asc::REGISTRATIONS_PREEMPTED, "registrations preempted"),
            (asc::INVALID_OPCODE, "invalid command operation code"),
            (asc::INVALID_FIELD_IN_CDB, "invalid field in CDB"),
            (
                asc::INVALID_FIELD_IN_PARAMETER_LIST,
                "invalid field in parameter list",
            ),
            (asc::LUN_NOT_SUPPORTED, "logical unit not supported"),
        ] {
            assert_eq!(asc_ascq_name(pair.0, pair.1), Some(text));
        }
        assert_eq!(SenseKey::from_code(0xf6), SenseKey::UnitAttention);
    }
}
