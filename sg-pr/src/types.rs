//! Reservation keys and reservation types, in SCSI and in block-layer numbering.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::Error;

/// An 8-byte persistent-reservation key. Key 0 means "no key" to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReservationKey(pub u64);

impl ReservationKey {
    /// The zero key: "unregister" as a new key, "none" as a current key.
    pub const ZERO: ReservationKey = ReservationKey(0);

    /// True for the zero key.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Big-endian wire form, as in the PR OUT parameter list and PR IN replies.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Parses an operator-supplied key: hex digits, with or without `0x`, 1 to 16 digits.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let trimmed = text.trim();
        let digits = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        if digits.is_empty() || digits.len() > 16 || !digits.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(Error::InvalidKey {
                input: text.to_string(),
                reason: "expected 1 to 16 hex digits, with or without 0x (e.g. 0x1a2b or 1a2b)",
            });
        }
        let value = u64::from_str_radix(digits, 16).map_err(|_| Error::InvalidKey {
            input: text.to_string(),
            reason: "not a hex number",
        })?;
        Ok(ReservationKey(value))
    }

    /// Like [`ReservationKey::parse`] but refuses 0, for operations where 0 is meaningless.
    pub fn parse_nonzero(text: &str) -> Result<Self, Error> {
        let key = Self::parse(text)?;
        if key.is_zero() {
            return Err(Error::InvalidKey {
                input: text.to_string(),
                reason: "key 0 is reserved by SPC to mean \"no key\"; choose a non-zero key",
            });
        }
        Ok(key)
    }
}

impl fmt::Display for ReservationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

impl FromStr for ReservationKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ReservationKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A persistent reservation type (SPC-4 table "Persistent reservation type codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrType {
    /// Write Exclusive (SCSI 1).
    WriteExclusive,
    /// Exclusive Access (SCSI 3).
    ExclusiveAccess,
    /// Write Exclusive – Registrants Only (SCSI 5): the fencing type.
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access – Registrants Only (SCSI 6).
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive – All Registrants (SCSI 7).
    WriteExclusiveAllRegistrants,
    /// Exclusive Access – All Registrants (SCSI 8).
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    /// Every type, in SCSI code order.
    pub const ALL: [PrType; 6] = [
        PrType::WriteExclusive,
        PrType::ExclusiveAccess,
        PrType::WriteExclusiveRegistrantsOnly,
        PrType::ExclusiveAccessRegistrantsOnly,
        PrType::WriteExclusiveAllRegistrants,
        PrType::ExclusiveAccessAllRegistrants,
    ];

    /// The SCSI type code (TYPE field of PR OUT / READ RESERVATION).
    pub fn scsi_code(self) -> u8 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 3,
            PrType::WriteExclusiveRegistrantsOnly => 5,
            PrType::ExclusiveAccessRegistrantsOnly => 6,
            PrType::WriteExclusiveAllRegistrants => 7,
            PrType::ExclusiveAccessAllRegistrants => 8,
        }
    }

    /// Decodes a SCSI type code; `None` for obsolete or reserved codes.
    pub fn from_scsi_code(code: u8) -> Option<PrType> {
        Some(match code {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// The Linux block layer's `enum pr_type` value (linux/pr.h), which differs from SCSI's.
    pub fn block_code(self) -> u32 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 2,
            PrType::WriteExclusiveRegistrantsOnly => 3,
            PrType::ExclusiveAccessRegistrantsOnly => 4,
            PrType::WriteExclusiveAllRegistrants => 5,
            PrType::ExclusiveAccessAllRegistrants => 6,
        }
    }

    /// Decodes a block-layer `enum pr_type`; `None` for 0 (no reservation) or unknown values.
    pub fn from_block_code(code: u32) -> Option<PrType> {
        Some(match code {
            1 => PrType::WriteExclusive,
            2 => PrType::ExclusiveAccess,
            3 => PrType::WriteExclusiveRegistrantsOnly,
            4 => PrType::ExclusiveAccessRegistrantsOnly,
            5 => PrType::WriteExclusiveAllRegistrants,
            6 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// Short operator name, as accepted by the CLI (`we`, `ea`, `wero`, `earo`, `wear`, `eaar`).
    pub fn short_name(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "we",
            PrType::ExclusiveAccess => "ea",
            PrType::WriteExclusiveRegistrantsOnly => "wero",
            PrType::ExclusiveAccessRegistrantsOnly => "earo",
            PrType::WriteExclusiveAllRegistrants => "wear",
            PrType::ExclusiveAccessAllRegistrants => "eaar",
        }
    }

    /// Full SPC name.
    pub fn long_name(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "Write Exclusive",
            PrType::ExclusiveAccess => "Exclusive Access",
            PrType::WriteExclusiveRegistrantsOnly => "Write Exclusive, registrants only",
            PrType::ExclusiveAccessRegistrantsOnly => "Exclusive Access, registrants only",
            PrType::WriteExclusiveAllRegistrants => "Write Exclusive, all registrants",
            PrType::ExclusiveAccessAllRegistrants => "Exclusive Access, all registrants",
        }
    }

    /// True for the "all registrants" types, whose reservation holder is every registrant
    /// (the READ RESERVATION key is then 0).
    pub fn is_all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

impl fmt::Display for PrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.long_name())
    }
}

impl FromStr for PrType {
    type Err = Error;
    /// Accepts the short names and the SCSI codes 1, 3, 5, 6, 7, 8.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        for t in PrType::ALL {
            if lower == t.short_name() || lower == t.scsi_code().to_string() {
                return Ok(t);
            }
        }
        Err(Error::InvalidType {
            input: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parses_hex_with_and_without_prefix() {
        assert_eq!(
            ReservationKey::parse("0x1A2b").unwrap(),
            ReservationKey(0x1a2b)
        );
        assert_eq!(
            ReservationKey::parse("1a2b").unwrap(),
            ReservationKey(0x1a2b)
        );
        assert_eq!(
            ReservationKey::parse("ffffffffffffffff").unwrap(),
            ReservationKey(u64::MAX)
        );
    }

    #[test]
    fn key_rejects_malformed_input() {
        for bad in ["", "0x", "xyz", "12345678901234567", "-1", "0x 1", "1.0"] {
            assert!(
                matches!(ReservationKey::parse(bad), Err(Error::InvalidKey { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn nonzero_key_rejects_zero() {
        assert!(ReservationKey::parse_nonzero("0x0").is_err());
        assert!(ReservationKey::parse_nonzero("0000").is_err());
        assert_eq!(ReservationKey::parse("0").unwrap(), ReservationKey::ZERO);
    }

    #[test]
    fn key_displays_as_prefixed_hex() {
        assert_eq!(ReservationKey(0xabc).to_string(), "0xabc");
    }

    #[test]
    fn scsi_and_block_type_codes_round_trip_and_differ_where_linux_says() {
        for t in PrType::ALL {
            assert_eq!(PrType::from_scsi_code(t.scsi_code()), Some(t));
            assert_eq!(PrType::from_block_code(t.block_code()), Some(t));
        }
        // WE-RO is 5 in SCSI but 3 in linux/pr.h.
        assert_eq!(PrType::WriteExclusiveRegistrantsOnly.scsi_code(), 5);
        assert_eq!(PrType::WriteExclusiveRegistrantsOnly.block_code(), 3);
        assert_eq!(PrType::ExclusiveAccess.scsi_code(), 3);
        assert_eq!(PrType::ExclusiveAccess.block_code(), 2);
        assert_eq!(PrType::from_scsi_code(2), None);
        assert_eq!(PrType::from_scsi_code(0), None);
        assert_eq!(PrType::from_block_code(0), None);
    }

    #[test]
    fn type_parses_short_names_and_scsi_codes() {
        assert_eq!(
            "wero".parse::<PrType>().unwrap(),
            PrType::WriteExclusiveRegistrantsOnly
        );
        assert_eq!(
            "5".parse::<PrType>().unwrap(),
            PrType::WriteExclusiveRegistrantsOnly
        );
        assert_eq!(
            "EAAR".parse::<PrType>().unwrap(),
            PrType::ExclusiveAccessAllRegistrants
        );
        assert!("2".parse::<PrType>().is_err());
        assert!("wro".parse::<PrType>().is_err());
    }
}
