//! What a target supports beyond the basic PR commands, asked without changing any state:
//! PREEMPT AND ABORT, declared ([`PrDevice::preempt_abort_declared`]) and probed
//! ([`PrDevice::probe_preempt_abort`]). The probe decides; the declaration is only a fallback
//! (LIO does not answer REPORT SUPPORTED OPERATION CODES, and tgt declares PREEMPT AND ABORT
//! supported and then rejects it).

use crate::cdb::{self, PrOutAction, PrOutFlags};
use crate::commands::PrDevice;
use crate::sense::SenseKey;
use crate::transport::{DataTransfer, ScsiStatus, ScsiTransport};
use crate::types::{PrType, ReservationKey};

/// PREEMPT AND ABORT support, as the target declares it or as a probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreemptAbort {
    /// The target supports it.
    Supported,
    /// The target does not.
    NotSupported,
    /// The target did not say (why).
    Unknown(String),
}

impl<T: ScsiTransport> PrDevice<T> {
    /// Asks the target through REPORT SUPPORTED OPERATION CODES (one-command form with service
    /// action) for PERSISTENT RESERVE OUT service action PREEMPT AND ABORT. The reply's SUPPORT
    /// field (byte 1 bits 2..0): 011b/101b supported, 001b not supported, 000b not available.
    pub fn preempt_abort_declared(&self) -> PreemptAbort {
        let mut buf = [0u8; 64];
        let cdb = cdb::report_supported_operation(
            cdb::PERSISTENT_RESERVE_OUT,
            PrOutAction::PreemptAndAbort.code().into(),
            u32::try_from(buf.len()).unwrap_or(64),
        );
        // One retry absorbs a pending UNIT ATTENTION.
        for _ in 0..2 {
            let out = match self.transport().execute(
                &cdb,
                DataTransfer::FromDevice(&mut buf),
                self.timeout(),
            ) {
                Ok(o) => o,
                Err(e) => return PreemptAbort::Unknown(e.to_string()),
            };
            if out.status == ScsiStatus::GOOD {
                return match buf[1] & 0x07 {
                    0b011 | 0b101 => PreemptAbort::Supported,
                    0b001 => PreemptAbort::NotSupported,
                    s => PreemptAbort::Unknown(format!(
                        "REPORT SUPPORTED OPERATION CODES answered SUPPORT {s:03b} (no data)"
                    )),
                };
            }
            let sense = out.decoded_sense();
            if !sense
                .as_ref()
                .is_some_and(|s| s.key == SenseKey::UnitAttention)
            {
                return PreemptAbort::Unknown(match sense {
                    Some(s) => format!(
                        "the target does not support REPORT SUPPORTED OPERATION CODES ({s})"
                    ),
                    None => format!("REPORT SUPPORTED OPERATION CODES: status {}", out.status),
                });
            }
        }
        PreemptAbort::Unknown("unit attentions kept arriving".into())
    }

    /// Tests PREEMPT AND ABORT without changing anything: sends PREEMPT AND ABORT of `pr_type`
    /// with this nexus' registered key `own` for `absent`, a key no one holds. SPC's PREEMPT
    /// rules: when the service action key matches no registration (and is not the reservation
    /// holder's) the device server removes nothing and terminates the command with RESERVATION
    /// CONFLICT — a target that does not implement the service action rejects it first as
    /// ILLEGAL REQUEST (INVALID FIELD IN CDB). Seen in guests: LIO answers RESERVATION CONFLICT
    /// with keys, reservation and PR generation unchanged; tgt answers ILLEGAL REQUEST.
    ///
    /// `own` must be registered through this nexus (an unregistered nexus gets RESERVATION
    /// CONFLICT for any PREEMPT), and `absent` must be neither 0 nor any registered key: the
    /// caller checks both, and compares the registrations before and after.
    pub fn probe_preempt_abort(
        &self,
        own: ReservationKey,
        absent: ReservationKey,
        pr_type: PrType,
    ) -> PreemptAbort {
        let cdb = cdb::pr_out(PrOutAction::PreemptAndAbort, Some(pr_type));
        let params = cdb::pr_out_params(own, absent, PrOutFlags::default());
        for _ in 0..2 {
            let out = match self.transport().execute(
                &cdb,
                DataTransfer::ToDevice(&params),
                self.timeout(),
            ) {
                Ok(o) => o,
                Err(e) => return PreemptAbort::Unknown(format!("the probe failed: {e}")),
            };
            if out.status == ScsiStatus::RESERVATION_CONFLICT {
                return PreemptAbort::Supported;
            }
            if out.status == ScsiStatus::GOOD {
                return PreemptAbort::Unknown(
                    "the target accepted a PREEMPT AND ABORT of a key nobody holds (SPC requires RESERVATION CONFLICT)".into(),
                );
            }
            match out.decoded_sense() {
                Some(s) if s.key == SenseKey::UnitAttention => continue,
                Some(s) if s.is_unsupported_command() => return PreemptAbort::NotSupported,
                Some(s) => return PreemptAbort::Unknown(format!("the probe was answered {s}")),
                None => {
                    return PreemptAbort::Unknown(format!(
                        "the probe was answered with status {}",
                        out.status
                    ))
                }
            }
        }
        PreemptAbort::Unknown("unit attentions kept arriving".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{ScriptedTransport, Step};
    use crate::types::ReservationKey;
    use std::time::Duration;

    fn device(steps: impl IntoIterator<Item = Step>) -> PrDevice<ScriptedTransport> {
        PrDevice::new(ScriptedTransport::new("sdx", steps)).with_timeout(Duration::from_secs(1))
    }

    const TYPE5: PrType = PrType::WriteExclusiveRegistrantsOnly;

    #[test]
    fn the_probe_reads_conflict_as_supported_and_illegal_request_as_not() {
        let (own, absent) = (ReservationKey(0x11), ReservationKey(0xdead));
        let dev = device([Step::status(ScsiStatus::RESERVATION_CONFLICT)]);
        assert_eq!(
            dev.probe_preempt_abort(own, absent, TYPE5),
            PreemptAbort::Supported
        );
        let sent = &dev.transport().sent()[0];
        // PR OUT, PREEMPT AND ABORT, LU scope type 5; our key, then the absent one.
        assert_eq!(&sent.cdb[..3], &[0x5f, 0x05, 0x05]);
        assert_eq!(&sent.data_out[..8], &0x11u64.to_be_bytes());
        assert_eq!(&sent.data_out[8..16], &0xdeadu64.to_be_bytes());
        // tgt: INVALID FIELD IN CDB.
        let dev = device([Step::check(0x5, 0x24, 0x00)]);
        assert_eq!(
            dev.probe_preempt_abort(own, absent, TYPE5),
            PreemptAbort::NotSupported
        );
        // A pending unit attention is absorbed.
        let dev = device([
            Step::check(0x6, 0x29, 0x00),
            Step::status(ScsiStatus::RESERVATION_CONFLICT),
        ]);
        assert_eq!(
            dev.probe_preempt_abort(own, absent, TYPE5),
            PreemptAbort::Supported
        );
        // GOOD for a key nobody holds is not what SPC allows: say so rather than guess.
        let dev = device([Step::good()]);
        assert!(matches!(
            dev.probe_preempt_abort(own, absent, TYPE5),
            PreemptAbort::Unknown(_)
        ));
        // Any other error: unknown, with the sense.
        let dev = device([Step::check(0x2, 0x04, 0x03)]);
        assert!(matches!(
            dev.probe_preempt_abort(own, absent, TYPE5),
            PreemptAbort::Unknown(_)
        ));
    }

    #[test]
    fn the_declaration_is_read_from_the_support_field() {
        let reply = |support: u8| Step::data(vec![0, support, 0, 10]);
        let dev = device([reply(0x03)]);
        assert_eq!(dev.preempt_abort_declared(), PreemptAbort::Supported);
        let cdb = &dev.transport().sent()[0].cdb;
        assert_eq!(&cdb[..6], &[0xa3, 0x0c, 0x02, 0x5f, 0x00, 0x05]);
        let dev = device([reply(0x01)]);
        assert_eq!(dev.preempt_abort_declared(), PreemptAbort::NotSupported);
        // A pending unit attention first, then the answer.
        let dev = device([Step::check(0x6, 0x29, 0x00), reply(0x05)]);
        assert_eq!(dev.preempt_abort_declared(), PreemptAbort::Supported);
        // ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE: the target does not say.
        let dev = device([Step::check(0x5, 0x20, 0x00)]);
        assert!(matches!(
            dev.preempt_abort_declared(),
            PreemptAbort::Unknown(_)
        ));
    }
}
