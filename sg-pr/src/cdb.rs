//! Command descriptor blocks and the PR OUT parameter list (SPC-4).

use crate::types::{PrType, ReservationKey};

/// TEST UNIT READY opcode.
pub const TEST_UNIT_READY: u8 = 0x00;
/// INQUIRY opcode.
pub const INQUIRY: u8 = 0x12;
/// PERSISTENT RESERVE IN opcode.
pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
/// PERSISTENT RESERVE OUT opcode.
pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;

/// MAINTENANCE IN opcode (REPORT SUPPORTED OPERATION CODES is its service action 0x0C).
pub const MAINTENANCE_IN: u8 = 0xa3;
/// MAINTENANCE IN service action REPORT SUPPORTED OPERATION CODES.
const REPORT_SUPPORTED_OPERATION_CODES: u8 = 0x0c;

/// Length of the basic PR OUT parameter list (no SPEC_I_PT transport IDs).
pub const PR_OUT_PARAM_LEN: usize = 24;

/// PR IN allocation length for READ KEYS / READ RESERVATION: 8-byte header + 255 keys
/// needs 2048; 8192 matches sg_persist and leaves room for targets with more.
pub const PR_IN_ALLOC_LEN: u16 = 8192;
/// PR IN allocation length ceiling, used when a first reply says it was truncated.
pub const PR_IN_MAX_ALLOC_LEN: u16 = 0xfff0;

/// REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), one-command form with service action
/// (REPORTING OPTIONS 010b) for `opcode`/`service_action`, with `alloc_len` bytes for the reply.
pub fn report_supported_operation(opcode: u8, service_action: u16, alloc_len: u32) -> [u8; 12] {
    let mut cdb = [0u8; 12];
    cdb[0] = MAINTENANCE_IN;
    cdb[1] = REPORT_SUPPORTED_OPERATION_CODES;
    cdb[2] = 0x02;
    cdb[3] = opcode;
    cdb[4..6].copy_from_slice(&service_action.to_be_bytes());
    cdb[6..10].copy_from_slice(&alloc_len.to_be_bytes());
    cdb
}

/// PERSISTENT RESERVE IN service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrInAction {
    /// 0x00
    ReadKeys,
    /// 0x01
    ReadReservation,
    /// 0x02
    ReportCapabilities,
    /// 0x03
    ReadFullStatus,
}

impl PrInAction {
    /// Service action code.
    pub fn code(self) -> u8 {
        match self {
            PrInAction::ReadKeys => 0x00,
            PrInAction::ReadReservation => 0x01,
            PrInAction::ReportCapabilities => 0x02,
            PrInAction::ReadFullStatus => 0x03,
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            PrInAction::ReadKeys => "PR IN READ KEYS",
            PrInAction::ReadReservation => "PR IN READ RESERVATION",
            PrInAction::ReportCapabilities => "PR IN REPORT CAPABILITIES",
            PrInAction::ReadFullStatus => "PR IN READ FULL STATUS",
        }
    }
}

/// PERSISTENT RESERVE OUT service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrOutAction {
    /// 0x00
    Register,
    /// 0x01
    Reserve,
    /// 0x02
    Release,
    /// 0x03
    Clear,
    /// 0x04
    Preempt,
    /// 0x05
    PreemptAndAbort,
    /// 0x06
    RegisterAndIgnoreExistingKey,
}

impl PrOutAction {
    /// Service action code.
    pub fn code(self) -> u8 {
        match self {
            PrOutAction::Register => 0x00,
            PrOutAction::Reserve => 0x01,
            PrOutAction::Release => 0x02,
            PrOutAction::Clear => 0x03,
            PrOutAction::Preempt => 0x04,
            PrOutAction::PreemptAndAbort => 0x05,
            PrOutAction::RegisterAndIgnoreExistingKey => 0x06,
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            PrOutAction::Register => "PR OUT REGISTER",
            PrOutAction::Reserve => "PR OUT RESERVE",
            PrOutAction::Release => "PR OUT RELEASE",
            PrOutAction::Clear => "PR OUT CLEAR",
            PrOutAction::Preempt => "PR OUT PREEMPT",
            PrOutAction::PreemptAndAbort => "PR OUT PREEMPT AND ABORT",
            PrOutAction::RegisterAndIgnoreExistingKey => "PR OUT REGISTER AND IGNORE EXISTING KEY",
        }
    }

    /// Whether the TYPE field is meaningful (RESERVE, RELEASE, PREEMPT*).
    pub fn uses_type(self) -> bool {
        matches!(
            self,
            PrOutAction::Reserve
                | PrOutAction::Release
                | PrOutAction::Preempt
                | PrOutAction::PreemptAndAbort
        )
    }
}

/// PR OUT parameter-list flags (byte 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrOutFlags {
    /// Activate Persist Through Power Loss (0x01).
    pub aptpl: bool,
    /// Register on all target ports (0x04); REGISTER only.
    pub all_tg_pt: bool,
    /// Specify initiator ports (0x08); needs transport IDs, which this crate does not send.
    pub spec_i_pt: bool,
}

impl PrOutFlags {
    /// Byte 20 of the parameter list.
    pub fn byte(self) -> u8 {
        (if self.aptpl { 0x01 } else { 0 })
            | (if self.all_tg_pt { 0x04 } else { 0 })
            | (if self.spec_i_pt { 0x08 } else { 0 })
    }
}

/// TEST UNIT READY (6 bytes).
pub fn test_unit_ready() -> [u8; 6] {
    [TEST_UNIT_READY, 0, 0, 0, 0, 0]
}

/// INQUIRY (6 bytes): standard data when `vpd_page` is `None`, else EVPD with that page.
pub fn inquiry(vpd_page: Option<u8>, alloc_len: u16) -> [u8; 6] {
    let [hi, lo] = alloc_len.to_be_bytes();
    match vpd_page {
        None => [INQUIRY, 0, 0, hi, lo, 0],
        Some(page) => [INQUIRY, 0x01, page, hi, lo, 0],
    }
}

/// PERSISTENT RESERVE IN (10 bytes).
pub fn pr_in(action: PrInAction, alloc_len: u16) -> [u8; 10] {
    let [hi, lo] = alloc_len.to_be_bytes();
    [
        PERSISTENT_RESERVE_IN,
        action.code(),
        0,
        0,
        0,
        0,
        0,
        hi,
        lo,
        0,
    ]
}

/// PERSISTENT RESERVE OUT (10 bytes), LU scope, with a 24-byte parameter list.
pub fn pr_out(action: PrOutAction, pr_type: Option<PrType>) -> [u8; 10] {
    let type_code = if action.uses_type() {
        pr_type.map_or(0, PrType::scsi_code)
    } else {
        0
    };
    let len = u32::try_from(PR_OUT_PARAM_LEN).unwrap_or(24).to_be_bytes();
    [
        PERSISTENT_RESERVE_OUT,
        action.code(),
        type_code & 0x0f, // scope 0 (LU_SCOPE) in the high nibble
        0,
        0,
        len[0],
        len[1],
        len[2],
        len[3],
        0,
    ]
}

/// The 24-byte PR OUT parameter list: reservation key at bytes 0..8, service action
/// reservation key at 8..16, flags at byte 20.
pub fn pr_out_params(
    key: ReservationKey,
    service_action_key: ReservationKey,
    flags: PrOutFlags,
) -> [u8; PR_OUT_PARAM_LEN] {
    let mut p = [0u8; PR_OUT_PARAM_LEN];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&service_action_key.to_be_bytes());
    p[20] = flags.byte();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tur_is_six_zero_bytes() {
        assert_eq!(test_unit_ready(), [0u8; 6]);
    }

    #[test]
    fn standard_inquiry_cdb_has_no_evpd() {
        assert_eq!(inquiry(None, 255), [0x12, 0, 0, 0, 0xff, 0]);
    }

    #[test]
    fn vpd_inquiry_cdb_sets_evpd_and_page() {
        assert_eq!(inquiry(Some(0x83), 0x1000), [0x12, 1, 0x83, 0x10, 0x00, 0]);
        assert_eq!(inquiry(Some(0x00), 0xff), [0x12, 1, 0x00, 0x00, 0xff, 0]);
    }

    #[test]
    fn pr_in_cdbs_carry_service_action_and_allocation_length() {
        assert_eq!(
            pr_in(PrInAction::ReadKeys, PR_IN_ALLOC_LEN),
            [0x5e, 0, 0, 0, 0, 0, 0, 0x20, 0x00, 0]
        );
        assert_eq!(pr_in(PrInAction::ReadReservation, 0x2000)[1], 1);
        assert_eq!(pr_in(PrInAction::ReportCapabilities, 8)[1], 2);
        assert_eq!(pr_in(PrInAction::ReadFullStatus, 0xfff0)[1], 3);
        assert_eq!(
            pr_in(PrInAction::ReadFullStatus, 0xfff0)[7..9],
            [0xff, 0xf0]
        );
    }

    #[test]
    fn pr_in_allocation_fits_255_keys() {
        assert!(usize::from(PR_IN_ALLOC_LEN) >= 8 + 255 * 8);
    }

    #[test]
    fn pr_out_register_cdb_has_no_type_and_24_byte_list() {
        assert_eq!(
            pr_out(
                PrOutAction::Register,
                Some(PrType::WriteExclusiveRegistrantsOnly)
            ),
            [0x5f, 0x00, 0x00, 0, 0, 0, 0, 0, 24, 0]
        );
    }

    #[test]
    fn pr_out_reserve_cdb_carries_scsi_type_code() {
        let cdb = pr_out(
            PrOutAction::Reserve,
            Some(PrType::WriteExclusiveRegistrantsOnly),
        );
        assert_eq!(cdb, [0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0]);
        for t in PrType::ALL {
            assert_eq!(pr_out(PrOutAction::Release, Some(t))[2], t.scsi_code());
        }
    }

    #[test]
    fn pr_out_service_action_codes_match_spc() {
        let expect = [
            (PrOutAction::Register, 0),
            (PrOutAction::Reserve, 1),
            (PrOutAction::Release, 2),
            (PrOutAction::Clear, 3),
            (PrOutAction::Preempt, 4),
            (PrOutAction::PreemptAndAbort, 5),
            (PrOutAction::RegisterAndIgnoreExistingKey, 6),
        ];
        for (action, code) in expect {
            assert_eq!(pr_out(action, None)[1], code, "{}", action.name());
        }
        assert_eq!(
            pr_out(
                PrOutAction::PreemptAndAbort,
                Some(PrType::ExclusiveAccessAllRegistrants)
            )[2],
            8
        );
        assert_eq!(
            pr_out(PrOutAction::Clear, Some(PrType::WriteExclusive))[2],
            0
        );
    }

    #[test]
    fn pr_out_parameter_list_places_keys_and_flags() {
        let p = pr_out_params(
            ReservationKey(0x0102_0304_0506_0708),
            ReservationKey(0x1112_1314_1516_1718),
            PrOutFlags {
                aptpl: true,
                all_tg_pt: true,
                spec_i_pt: false,
            },
        );
        assert_eq!(p.len(), 24);
        assert_eq!(p[0..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p[8..16], [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(p[16..20], [0, 0, 0, 0]);
        assert_eq!(p[20], 0x05);
        assert_eq!(p[21..24], [0, 0, 0]);
    }

    #[test]
    fn pr_out_flag_bits_match_spc() {
        let only = |aptpl, all_tg_pt, spec_i_pt| {
            PrOutFlags {
                aptpl,
                all_tg_pt,
                spec_i_pt,
            }
            .byte()
        };
        assert_eq!(only(true, false, false), 0x01);
        assert_eq!(only(false, true, false), 0x04);
        assert_eq!(only(false, false, true), 0x08);
        assert_eq!(PrOutFlags::default().byte(), 0);
    }
}
