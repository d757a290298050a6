//! PERSISTENT RESERVE IN reply parsers (SPC-4 6.15). Every index is bounds-checked.

use serde::Serialize;

use crate::error::ParseError;
use crate::types::{PrType, ReservationKey};

fn be_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut v = [0u8; 8];
    v.copy_from_slice(b);
    Some(u64::from_be_bytes(v))
}

/// Header of READ KEYS / READ RESERVATION / READ FULL STATUS: generation and the body
/// actually present (the lesser of ADDITIONAL LENGTH and what was transferred).
fn pr_header<'a>(what: &'static str, buf: &'a [u8]) -> Result<(u32, &'a [u8], bool), ParseError> {
    let generation = be_u32(buf, 0).ok_or_else(|| ParseError::new(what, "shorter than 8 bytes"))?;
    let additional = be_u32(buf, 4).ok_or_else(|| ParseError::new(what, "shorter than 8 bytes"))?;
    let additional = usize::try_from(additional).unwrap_or(usize::MAX);
    let available = buf.len() - 8;
    let truncated = additional > available;
    let body = &buf[8..8 + additional.min(available)];
    Ok((generation, body, truncated))
}

/// READ KEYS reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredKeys {
    /// PRgeneration: bumped by every successful PR OUT except RESERVE/RELEASE.
    pub generation: u32,
    /// Registered keys, one per I_T nexus (the same key may appear once per path).
    pub keys: Vec<ReservationKey>,
    /// True when the device had more keys than the allocation length allowed.
    pub truncated: bool,
    /// The reply's ADDITIONAL LENGTH, so a caller can re-read with a larger buffer.
    #[serde(skip)]
    pub additional_length: u32,
}

impl RegisteredKeys {
    /// Parses a READ KEYS reply.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "READ KEYS reply";
        let (generation, body, truncated) = pr_header(WHAT, buf)?;
        if body.len() % 8 != 0 && !truncated {
            return Err(ParseError::new(
                WHAT,
                format!("additional length {} is not a multiple of 8", body.len()),
            ));
        }
        let keys = body
            .chunks_exact(8)
            .filter_map(|c| be_u64(c, 0).map(ReservationKey))
            .collect();
        Ok(RegisteredKeys {
            generation,
            keys,
            truncated,
            additional_length: be_u32(buf, 4).unwrap_or(0),
        })
    }

    /// True when `key` is registered (through at least one I_T nexus).
    pub fn contains(&self, key: ReservationKey) -> bool {
        self.keys.contains(&key)
    }
}

/// The reservation currently held, from READ RESERVATION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    /// Holder's key (0 for the all-registrants types).
    pub key: ReservationKey,
    /// Reservation type; `None` if the device reported a reserved/obsolete code.
    #[serde(rename = "type")]
    pub pr_type: Option<PrType>,
    /// The raw type code, for reporting unknown ones.
    pub type_code: u8,
    /// Scope (0 = LU).
    pub scope: u8,
}

/// READ RESERVATION reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationStatus {
    /// PRgeneration.
    pub generation: u32,
    /// The reservation, or `None` when no reservation is held.
    pub reservation: Option<Reservation>,
}

impl ReservationStatus {
    /// Parses a READ RESERVATION reply.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "READ RESERVATION reply";
        let (generation, body, truncated) = pr_header(WHAT, buf)?;
        if body.is_empty() && !truncated {
            return Ok(ReservationStatus {
                generation,
                reservation: None,
            });
        }
        if body.len() < 16 {
            return Err(ParseError::new(
                WHAT,
                format!("reservation descriptor is {} bytes, need 16", body.len()),
            ));
        }
        let key = ReservationKey(be_u64(body, 0).unwrap_or(0));
        let scope_type = body[13];
        let type_code = scope_type & 0x0f;
        Ok(ReservationStatus {
            generation,
            reservation: Some(Reservation {
                key,
                pr_type: PrType::from_scsi_code(type_code),
                type_code,
                scope: scope_type >> 4,
            }),
        })
    }
}

/// REPORT CAPABILITIES reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// RLR_C: replace lost reservation capable.
    pub replace_lost_reservation: bool,
    /// CRH: compatible reservation handling.
    pub compatible_reservation_handling: bool,
    /// SIP_C: specify initiator ports capable.
    pub specify_initiator_ports: bool,
    /// ATP_C: all target ports capable.
    pub all_target_ports: bool,
    /// PTPL_C: persist through power loss capable.
    pub persist_through_power_loss_capable: bool,
    /// TMV: the type mask is valid.
    pub type_mask_valid: bool,
    /// ALLOW COMMANDS field (0..7).
    pub allow_commands: u8,
    /// PTPL_A: persist through power loss activated.
    pub persist_through_power_loss_active: bool,
    /// Types the device supports (meaningful only when `type_mask_valid`).
    pub supported_types: Vec<PrType>,
}

impl Capabilities {
    /// Parses a REPORT CAPABILITIES reply (8 bytes).
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "REPORT CAPABILITIES reply";
        if buf.len() < 8 {
            return Err(ParseError::new(
                WHAT,
                format!("{} bytes, need 8", buf.len()),
            ));
        }
        let length = be_u16(buf, 0).unwrap_or(0);
        if length < 8 {
            return Err(ParseError::new(
                WHAT,
                format!("LENGTH field is {length}, need 8"),
            ));
        }
        let (b2, b3, b4, b5) = (buf[2], buf[3], buf[4], buf[5]);
        let mask = [
            (b4 & 0x02 != 0, PrType::WriteExclusive),
            (b4 & 0x08 != 0, PrType::ExclusiveAccess),
            (b4 & 0x20 != 0, PrType::WriteExclusiveRegistrantsOnly),
            (b4 & 0x40 != 0, PrType::ExclusiveAccessRegistrantsOnly),
            (b4 & 0x80 != 0, PrType::WriteExclusiveAllRegistrants),
            (b5 & 0x01 != 0, PrType::ExclusiveAccessAllRegistrants),
        ];
        Ok(Capabilities {
            replace_lost_reservation: b2 & 0x80 != 0,
            compatible_reservation_handling: b2 & 0x10 != 0,
            specify_initiator_ports: b2 & 0x08 != 0,
            all_target_ports: b2 & 0x04 != 0,
            persist_through_power_loss_capable: b2 & 0x01 != 0,
            type_mask_valid: b3 & 0x80 != 0,
            allow_commands: (b3 >> 4) & 0x07,
            persist_through_power_loss_active: b3 & 0x01 != 0,
            supported_types: mask.iter().filter(|(on, _)| *on).map(|(_, t)| *t).collect(),
        })
    }
}

/// An initiator's TransportID (SPC-4 7.6.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum TransportId {
    /// Fibre Channel: the initiator's N_Port name (WWPN).
    FibreChannel {
        /// 8-byte N_Port name.
        n_port_name: u64,
    },
    /// iSCSI: name, and for format 01b the ISID.
    Iscsi {
        /// iSCSI initiator name (iqn./eui./naa.).
        name: String,
        /// ISID from the ",i,0x" separator (format 01b), as hex text.
        isid: Option<String>,
    },
    /// SAS: the initiator port's SAS address.
    Sas {
        /// 8-byte SAS address.
        sas_address: u64,
    },
    /// SRP: 16-byte initiator port identifier.
    Srp {
        /// Initiator port identifier, hex.
        port_id: String,
    },
    /// IEEE 1394: EUI-64.
    Ieee1394 {
        /// EUI-64.
        eui64: u64,
    },
    /// A protocol this crate does not decode.
    Other {
        /// Protocol identifier (low nibble of byte 0).
        protocol_id: u8,
        /// Format code (bits 7..6 of byte 0).
        format: u8,
        /// Raw bytes, hex.
        raw: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TransportId {
    /// Decodes a TransportID. Returns the ID and the number of bytes it occupies.
    pub fn parse(buf: &[u8]) -> Result<(TransportId, usize), ParseError> {
        const WHAT: &str = "TransportID";
        let first = *buf.first().ok_or_else(|| ParseError::new(WHAT, "empty"))?;
        let format = first >> 6;
        let protocol_id = first & 0x0f;
        let fixed24 = |name: &str| -> Result<&[u8], ParseError> {
            buf.get(..24).ok_or_else(|| {
                ParseError::new(WHAT, format!("{name} TransportID shorter than 24 bytes"))
            })
        };
        match protocol_id {
            0x0 => {
                let b = fixed24("FC")?;
                Ok((
                    TransportId::FibreChannel {
                        n_port_name: be_u64(b, 8).unwrap_or(0),
                    },
                    24,
                ))
            }
            0x3 => {
                let b = fixed24("IEEE 1394")?;
                Ok((
                    TransportId::Ieee1394 {
                        eui64: be_u64(b, 8).unwrap_or(0),
                    },
                    24,
                ))
            }
            0x4 => {
                let b = fixed24("SRP")?;
                Ok((
                    TransportId::Srp {
                        port_id: hex(&b[8..24]),
                    },
                    24,
                ))
            }
            0x6 => {
                let b = fixed24("SAS")?;
                Ok((
                    TransportId::Sas {
                        sas_address: be_u64(b, 4).unwrap_or(0),
                    },
                    24,
                ))
            }
            0x5 => {
                let additional = usize::from(be_u16(buf, 2).ok_or_else(|| {
                    ParseError::new(WHAT, "iSCSI TransportID shorter than 4 bytes")
                })?);
                let total = 4 + additional;
                let body = buf.get(4..total).ok_or_else(|| {
                    ParseError::new(
                        WHAT,
                        format!("iSCSI name length {additional} runs past the buffer"),
                    )
                })?;
                let text_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                let text = String::from_utf8_lossy(&body[..text_end]).into_owned();
                let (name, isid) = if format == 1 {
                    // "iqn.example:host,i,0x23d000000001"
                    match text.find(",i,0x").or_else(|| text.find(",I,0X")) {
                        Some(at) => (text[..at].to_string(), Some(text[at + 5..].to_string())),
                        None => (text, None),
                    }
                } else {
                    (text, None)
                };
                Ok((TransportId::Iscsi { name, isid }, total))
            }
            _ => {
                let b = fixed24("unknown-protocol")?;
                Ok((
                    TransportId::Other {
                        protocol_id,
                        format,
                        raw: hex(b),
                    },
                    24,
                ))
            }
        }
    }
}

impl std::fmt::Display for TransportId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportId::FibreChannel { n_port_name } => {
                write!(f, "FC N_Port name 0x{n_port_name:016x}")
            }
            TransportId::Iscsi {
                name,
                isid: Some(isid),
            } => write!(f, "iSCSI {name}, ISID 0x{isid}"),
            TransportId::Iscsi { name, isid: None } => write!(f, "iSCSI {name}"),
            TransportId::Sas { sas_address } => write!(f, "SAS address 0x{sas_address:016x}"),
            TransportId::Srp { port_id } => write!(f, "SRP port 0x{port_id}"),
            TransportId::Ieee1394 { eui64 } => write!(f, "IEEE 1394 EUI-64 0x{eui64:016x}"),
            TransportId::Other {
                protocol_id, raw, ..
            } => {
                write!(f, "protocol 0x{protocol_id:x} id {raw}")
            }
        }
    }
}

/// One registration from READ FULL STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// Registered key.
    pub key: ReservationKey,
    /// ALL_TG_PT: registered through all target ports.
    pub all_target_ports: bool,
    /// R_HOLDER: this I_T nexus holds the reservation.
    pub reservation_holder: bool,
    /// Reservation type, when `reservation_holder`.
    #[serde(rename = "type")]
    pub pr_type: Option<PrType>,
    /// Scope, when `reservation_holder`.
    pub scope: u8,
    /// Relative target port identifier (meaningless when `all_target_ports`).
    pub relative_target_port: u16,
    /// The initiator, when it decoded.
    pub transport_id: Option<TransportId>,
}

/// READ FULL STATUS reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullStatus {
    /// PRgeneration.
    pub generation: u32,
    /// One entry per registered I_T nexus.
    pub registrations: Vec<Registration>,
    /// True when the device had more than fit.
    pub truncated: bool,
    /// The reply's ADDITIONAL LENGTH.
    #[serde(skip)]
    pub additional_length: u32,
}

impl FullStatus {
    /// Parses a READ FULL STATUS reply.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        const WHAT: &str = "READ FULL STATUS reply";
        let (generation, body, mut truncated) = pr_header(WHAT, buf)?;
        let mut registrations = Vec::new();
        let mut pos = 0usize;
        while pos < body.len() {
            let Some(desc) = body.get(pos..pos + 24) else {
                truncated = true;
                break;
            };
            let tid_len = usize::try_from(be_u32(desc, 20).unwrap_or(0)).unwrap_or(usize::MAX);
            let tid_end = (pos + 24).saturating_add(tid_len);
            let tid_bytes = match body.get(pos + 24..tid_end) {
                Some(b) => b,
                None => {
                    truncated = true;
                    &body[pos + 24..]
                }
            };
            let holder = desc[12] & 0x01 != 0;
            registrations.push(Registration {
                key: ReservationKey(be_u64(desc, 0).unwrap_or(0)),
                all_target_ports: desc[12] & 0x02 != 0,
                reservation_holder: holder,
                pr_type: if holder {
                    PrType::from_scsi_code(desc[13] & 0x0f)
                } else {
                    None
                },
                scope: desc[13] >> 4,
                relative_target_port: be_u16(desc, 18).unwrap_or(0),
                transport_id: if tid_bytes.is_empty() {
                    None
                } else {
                    TransportId::parse(tid_bytes).ok().map(|(t, _)| t)
                },
            });
            if tid_end > body.len() {
                break;
            }
            pos = tid_end;
        }
        Ok(FullStatus {
            generation,
            registrations,
            truncated,
            additional_length: be_u32(buf, 4).unwrap_or(0),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// READ KEYS reply as LIO sends it with two registered keys.
    pub(crate) fn lio_read_keys_two() -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0x04, 0, 0, 0, 16];
        b.extend_from_slice(&0x0000_0000_0000_abcdu64.to_be_bytes());
        b.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
        b.resize(8192, 0); // the rest of the allocation is left zero
        b
    }

    /// READ RESERVATION reply with a type 5 (WE-RO) reservation held by key 0xabcd.
    pub(crate) fn read_reservation_type5() -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0x04, 0, 0, 0, 0x10];
        b.extend_from_slice(&0xabcdu64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]); // obsolete scope-specific address
        b.extend_from_slice(&[0, 0x05, 0, 0]); // reserved, scope 0 / type 5, obsolete
        b
    }

    #[test]
    fn lio_read_keys_with_two_keys_decodes() {
        let k = RegisteredKeys::parse(&lio_read_keys_two()).unwrap();
        assert_eq!(k.generation, 4);
        assert_eq!(
            k.keys,
            vec![
                ReservationKey(0xabcd),
                ReservationKey(0x1234_5678_9abc_def0)
            ]
        );
        assert!(!k.truncated);
        assert!(k.contains(ReservationKey(0xabcd)));
    }

    #[test]
    fn read_keys_with_no_keys_is_empty() {
        let k = RegisteredKeys::parse(&[0, 0, 0, 9, 0, 0, 0, 0]).unwrap();
        assert_eq!(k.generation, 9);
        assert!(k.keys.is_empty());
    }

    #[test]
    fn read_keys_longer_than_transferred_is_marked_truncated() {
        let mut b = vec![0, 0, 0, 1, 0, 0, 0x07, 0xf8]; // 255 keys claimed
        b.extend_from_slice(&1u64.to_be_bytes());
        let k = RegisteredKeys::parse(&b).unwrap();
        assert!(k.truncated);
        assert_eq!(k.keys, vec![ReservationKey(1)]);
        assert_eq!(k.additional_length, 255 * 8);
    }

    #[test]
    fn read_keys_with_ragged_length_is_rejected() {
        let mut b = vec![0, 0, 0, 1, 0, 0, 0, 12];
        b.extend_from_slice(&[0u8; 12]);
        assert!(RegisteredKeys::parse(&b).is_err());
        assert!(RegisteredKeys::parse(&[0, 0, 0]).is_err());
    }

    #[test]
    fn read_reservation_type5_decodes_holder_and_type() {
        let r = ReservationStatus::parse(&read_reservation_type5()).unwrap();
        let res = r.reservation.unwrap();
        assert_eq!(res.key, ReservationKey(0xabcd));
        assert_eq!(res.pr_type, Some(PrType::WriteExclusiveRegistrantsOnly));
        assert_eq!(res.scope, 0);
    }

    #[test]
    fn read_reservation_without_reservation_is_none() {
        let r = ReservationStatus::parse(&[0, 0, 0, 2, 0, 0, 0, 0]).unwrap();
        assert_eq!(r.generation, 2);
        assert!(r.reservation.is_none());
    }

    #[test]
    fn read_reservation_with_short_descriptor_is_rejected() {
        assert!(
            ReservationStatus::parse(&[0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]).is_err()
        );
    }

    #[test]
    fn report_capabilities_lio_style_decodes() {
        // LENGTH 8; PTPL_C | ATP_C | SIP_C | CRH; TMV | ALLOW_COMMANDS=1; all six types.
        let b = [0x00, 0x08, 0x1d, 0x90, 0xea, 0x01, 0x00, 0x00];
        let c = Capabilities::parse(&b).unwrap();
        assert!(c.compatible_reservation_handling);
        assert!(c.specify_initiator_ports);
        assert!(c.all_target_ports);
        assert!(c.persist_through_power_loss_capable);
        assert!(!c.replace_lost_reservation);
        assert!(c.type_mask_valid);
        assert_eq!(c.allow_commands, 1);
        assert!(!c.persist_through_power_loss_active);
        assert_eq!(c.supported_types, PrType::ALL.to_vec());
    }

    #[test]
    fn report_capabilities_short_is_rejected() {
        assert!(Capabilities::parse(&[0, 8, 0, 0]).is_err());
        assert!(Capabilities::parse(&[0, 4, 0, 0, 0, 0, 0, 0]).is_err());
    }

    fn full_status_descriptor(
        key: u64,
        flags: u8,
        scope_type: u8,
        rtp: u16,
        tid: &[u8],
    ) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&key.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, flags, scope_type, 0, 0, 0, 0]);
        d.extend_from_slice(&rtp.to_be_bytes());
        d.extend_from_slice(&u32::try_from(tid.len()).unwrap().to_be_bytes());
        d.extend_from_slice(tid);
        d
    }

    /// iSCSI TransportID, format 01b: "name,i,0xISID", NUL-padded to a multiple of 4.
    pub(crate) fn iscsi_tid(text: &str) -> Vec<u8> {
        let mut name = text.as_bytes().to_vec();
        name.push(0);
        while name.len() % 4 != 0 {
            name.push(0);
        }
        let mut t = vec![0x45, 0];
        t.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        t.extend_from_slice(&name);
        t
    }

    #[test]
    fn read_full_status_with_iscsi_transport_ids_decodes() {
        let t1 = iscsi_tid("iqn.2026-01.test:node1,i,0x23d000000001");
        let t2 = iscsi_tid("iqn.2026-01.test:node2,i,0x23d000000002");
        let mut body = full_status_descriptor(0xabcd, 0x01, 0x05, 1, &t1);
        body.extend(full_status_descriptor(0x1234, 0x00, 0x00, 1, &t2));
        let mut b = vec![0, 0, 0, 7];
        b.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        b.extend(body);
        let s = FullStatus::parse(&b).unwrap();
        assert_eq!(s.generation, 7);
        assert!(!s.truncated);
        assert_eq!(s.registrations.len(), 2);
        let r0 = &s.registrations[0];
        assert_eq!(r0.key, ReservationKey(0xabcd));
        assert!(r0.reservation_holder);
        assert_eq!(r0.pr_type, Some(PrType::WriteExclusiveRegistrantsOnly));
        assert_eq!(r0.relative_target_port, 1);
        assert_eq!(
            r0.transport_id,
            Some(TransportId::Iscsi {
                name: "iqn.2026-01.test:node1".into(),
                isid: Some("23d000000001".into())
            })
        );
        assert!(!s.registrations[1].reservation_holder);
        assert_eq!(s.registrations[1].pr_type, None);
    }

    #[test]
    fn read_full_status_with_fc_and_sas_transport_ids_decodes() {
        let mut fc = vec![0u8; 24];
        fc[8..16].copy_from_slice(&0x2100_0024_ff00_0001u64.to_be_bytes());
        let mut sas = vec![0x06u8; 1];
        sas.resize(24, 0);
        sas[4..12].copy_from_slice(&0x5000_c500_1234_5678u64.to_be_bytes());
        let mut body = full_status_descriptor(1, 0x02, 0, 0, &fc);
        body.extend(full_status_descriptor(2, 0, 0, 2, &sas));
        let mut b = vec![0, 0, 0, 1];
        b.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        b.extend(body);
        let s = FullStatus::parse(&b).unwrap();
        assert!(s.registrations[0].all_target_ports);
        assert_eq!(
            s.registrations[0].transport_id,
            Some(TransportId::FibreChannel {
                n_port_name: 0x2100_0024_ff00_0001
            })
        );
        assert_eq!(
            s.registrations[1].transport_id,
            Some(TransportId::Sas {
                sas_address: 0x5000_c500_1234_5678
            })
        );
    }

    #[test]
    fn read_full_status_with_overlong_transport_id_is_truncated_not_panicking() {
        let mut body = full_status_descriptor(1, 0, 0, 0, &[]);
        body[20..24].copy_from_slice(&1000u32.to_be_bytes());
        body.extend_from_slice(&[0x45, 0, 0, 8, b'i', b'q']);
        let mut b = vec![0, 0, 0, 1];
        b.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        b.extend(body);
        let s = FullStatus::parse(&b).unwrap();
        assert!(s.truncated);
        assert_eq!(s.registrations.len(), 1);
    }

    #[test]
    fn iscsi_transport_id_format_00_has_no_isid() {
        let mut t = iscsi_tid("iqn.2026-01.test:plain");
        t[0] = 0x05;
        let (id, len) = TransportId::parse(&t).unwrap();
        assert_eq!(len, t.len());
        assert_eq!(
            id,
            TransportId::Iscsi {
                name: "iqn.2026-01.test:plain".into(),
                isid: None
            }
        );
    }
}
