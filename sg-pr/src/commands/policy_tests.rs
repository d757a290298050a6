//! The retry policy and command sequences, against a scripted transport.

use std::time::Duration;

use super::*;
use crate::fake::{ScriptedTransport, Step};
use crate::transport::CommandOutcome;

const UA: u8 = 0x06;
const NOT_READY: u8 = 0x02;
const ILLEGAL: u8 = 0x05;

fn device(steps: Vec<Step>) -> PrDevice<ScriptedTransport> {
    PrDevice::new(ScriptedTransport::new("/dev/sdx", steps)).with_policy(RetryPolicy {
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..RetryPolicy::default()
    })
}

#[test]
fn unit_attention_is_retried_and_reported() {
    let d = device(vec![Step::check(UA, 0x2a, 0x05), Step::good()]);
    let report = d.test_unit_ready().unwrap();
    assert_eq!(report.attempts, 2);
    assert_eq!(report.unit_attentions.len(), 1);
    assert!(report.saw_preemption());
    assert_eq!(d.transport().sent().len(), 2);
}

#[test]
fn power_on_reset_unit_attention_is_not_a_preemption() {
    let d = device(vec![Step::check(UA, 0x29, 0x00), Step::good()]);
    let report = d.test_unit_ready().unwrap();
    assert!(!report.saw_preemption());
    assert_eq!(
        report.unit_attentions[0].description(),
        "power on, reset, or bus device reset occurred"
    );
}

#[test]
fn unit_attentions_are_bounded() {
    let steps = (0..20).map(|_| Step::check(UA, 0x29, 0x00)).collect();
    let d = device(steps);
    let err = d.test_unit_ready().unwrap_err();
    assert!(matches!(err, Error::CheckCondition { .. }), "{err}");
    let limit = RetryPolicy::default().unit_attention_retries;
    assert_eq!(
        d.transport().sent().len(),
        usize::try_from(limit).unwrap() + 1
    );
}

#[test]
fn reservation_conflict_is_never_retried() {
    let d = device(vec![
        Step::status(ScsiStatus::RESERVATION_CONFLICT),
        Step::good(),
    ]);
    let err = d
        .reserve(ReservationKey(1), PrType::WriteExclusiveRegistrantsOnly)
        .unwrap_err();
    assert!(err.is_reservation_conflict());
    assert!(err.to_string().contains("/dev/sdx"));
    assert_eq!(d.transport().sent().len(), 1);
    assert_eq!(d.transport().remaining(), 1);
}

#[test]
fn busy_and_task_set_full_are_retried_then_succeed() {
    let d = device(vec![
        Step::status(ScsiStatus::BUSY),
        Step::status(ScsiStatus::TASK_SET_FULL),
        Step::good(),
    ]);
    assert_eq!(d.test_unit_ready().unwrap().attempts, 3);
}

#[test]
fn busy_forever_exhausts_retries_with_a_clear_error() {
    let d = device((0..10).map(|_| Step::status(ScsiStatus::BUSY)).collect());
    let err = d.test_unit_ready().unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 6, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("BUSY"));
}

#[test]
fn becoming_ready_is_retried() {
    let d = device(vec![
        Step::check(NOT_READY, 0x04, 0x01),
        Step::check(NOT_READY, 0x04, 0x0a),
        Step::good(),
    ]);
    assert_eq!(d.test_unit_ready().unwrap().attempts, 3);
}

#[test]
fn not_ready_needing_intervention_fails_at_once_with_a_hint() {
    let d = device(vec![Step::check(NOT_READY, 0x04, 0x0b), Step::good()]);
    let err = d.test_unit_ready().unwrap_err();
    assert!(err.to_string().contains("standby"), "{err}");
    assert_eq!(d.transport().sent().len(), 1);
}

#[test]
fn backoff_is_bounded_by_the_policy_ceiling() {
    let d = PrDevice::new(ScriptedTransport::new(
        "/dev/sdx",
        vec![
            Step::status(ScsiStatus::BUSY),
            Step::status(ScsiStatus::BUSY),
            Step::good(),
        ],
    ))
    .with_policy(RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(15),
        ..RetryPolicy::default()
    });
    let t0 = std::time::Instant::now();
    d.test_unit_ready().unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(25) && took < Duration::from_secs(1),
        "{took:?}"
    );
}

#[test]
fn transport_timeout_is_reported_as_timeout() {
    let d = device(vec![Step::Reply {
        outcome: CommandOutcome {
            host_status: HostStatus::TIME_OUT,
            ..CommandOutcome::good()
        },
        data: vec![],
    }]);
    let err = d.test_unit_ready().unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[test]
fn hard_host_error_is_reported_with_host_status() {
    let d = device(vec![Step::Reply {
        outcome: CommandOutcome {
            host_status: HostStatus::NO_CONNECT,
            ..CommandOutcome::good()
        },
        data: vec![],
    }]);
    let err = d.test_unit_ready().unwrap_err();
    assert!(err.to_string().contains("DID_NO_CONNECT"), "{err}");
}

#[test]
fn transient_host_status_is_retried() {
    let d = device(vec![
        Step::Reply {
            outcome: CommandOutcome {
                host_status: HostStatus::TRANSPORT_DISRUPTED,
                ..CommandOutcome::good()
            },
            data: vec![],
        },
        Step::good(),
    ]);
    assert_eq!(d.test_unit_ready().unwrap().attempts, 2);
}

#[test]
fn check_condition_without_sense_is_an_error() {
    let d = device(vec![Step::status(ScsiStatus::CHECK_CONDITION)]);
    assert!(matches!(
        d.test_unit_ready().unwrap_err(),
        Error::CheckConditionNoSense { .. }
    ));
}

#[test]
fn recovered_error_counts_as_success() {
    let d = device(vec![Step::check(0x01, 0x00, 0x00)]);
    assert!(d.test_unit_ready().is_ok());
}

#[test]
fn ioctl_failure_is_an_io_error_naming_the_device() {
    let d = device(vec![Step::Errno(libc::EIO)]);
    let err = d.test_unit_ready().unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(
        err.to_string().starts_with("/dev/sdx: TEST UNIT READY"),
        "{err}"
    );
}

#[test]
fn preempt_and_abort_rejected_as_invalid_field_falls_back_to_preempt() {
    let d = device(vec![Step::check(ILLEGAL, 0x24, 0x00), Step::good()]);
    let report = d
        .preempt(
            ReservationKey(0xa),
            ReservationKey(0xb),
            PrType::WriteExclusiveRegistrantsOnly,
            true,
        )
        .unwrap();
    assert!(report.preempt_abort_fallback);
    let sent = d.transport().sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].cdb[..3], [0x5f, 0x05, 0x05]);
    assert_eq!(sent[1].cdb[..3], [0x5f, 0x04, 0x05]);
    assert_eq!(sent[1].data_out[0..8], 0xau64.to_be_bytes());
    assert_eq!(sent[1].data_out[8..16], 0xbu64.to_be_bytes());
}

#[test]
fn preempt_and_abort_rejected_as_invalid_opcode_falls_back_to_preempt() {
    let d = device(vec![Step::check(ILLEGAL, 0x20, 0x00), Step::good()]);
    let r = d
        .preempt(
            ReservationKey(1),
            ReservationKey(2),
            PrType::WriteExclusive,
            true,
        )
        .unwrap();
    assert!(r.preempt_abort_fallback);
}

#[test]
fn preempt_and_abort_accepted_does_not_fall_back() {
    let d = device(vec![Step::good()]);
    let r = d
        .preempt(
            ReservationKey(1),
            ReservationKey(2),
            PrType::WriteExclusive,
            true,
        )
        .unwrap();
    assert!(!r.preempt_abort_fallback);
    assert_eq!(d.transport().sent().len(), 1);
}

#[test]
fn preempt_and_abort_other_illegal_request_is_not_masked() {
    let d = device(vec![Step::check(ILLEGAL, 0x26, 0x00), Step::good()]);
    let err = d
        .preempt(
            ReservationKey(1),
            ReservationKey(2),
            PrType::WriteExclusive,
            true,
        )
        .unwrap_err();
    assert!(matches!(err, Error::CheckCondition { .. }));
    assert_eq!(d.transport().sent().len(), 1);
}

#[test]
fn own_preempt_losing_the_race_is_reservation_conflict() {
    let d = device(vec![Step::status(ScsiStatus::RESERVATION_CONFLICT)]);
    let err = d
        .preempt(
            ReservationKey(1),
            ReservationKey(2),
            PrType::WriteExclusive,
            true,
        )
        .unwrap_err();
    assert!(err.is_reservation_conflict());
    assert!(err.to_string().contains("lost the race"));
}

#[test]
fn register_sends_current_and_new_key_with_flags() {
    let d = device(vec![Step::good()]);
    d.register(
        ReservationKey(0x11),
        ReservationKey(0x22),
        RegisterOptions {
            ignore_existing: false,
            aptpl: true,
            all_target_ports: true,
        },
    )
    .unwrap();
    let sent = &d.transport().sent()[0];
    assert_eq!(sent.cdb, vec![0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0]);
    assert_eq!(sent.data_out.len(), 24);
    assert_eq!(sent.data_out[0..8], 0x11u64.to_be_bytes());
    assert_eq!(sent.data_out[8..16], 0x22u64.to_be_bytes());
    assert_eq!(sent.data_out[20], 0x05);
}

#[test]
fn register_and_ignore_existing_key_uses_service_action_6() {
    let d = device(vec![Step::good()]);
    d.register(
        ReservationKey(0x99),
        ReservationKey(0x22),
        RegisterOptions {
            ignore_existing: true,
            ..RegisterOptions::default()
        },
    )
    .unwrap();
    let sent = &d.transport().sent()[0];
    assert_eq!(sent.cdb[1], 0x06);
    assert_eq!(sent.data_out[0..8], [0u8; 8]);
    assert_eq!(sent.data_out[8..16], 0x22u64.to_be_bytes());
}

#[test]
fn reserve_release_clear_send_the_right_service_actions() {
    let d = device(vec![Step::good(), Step::good(), Step::good()]);
    d.reserve(ReservationKey(5), PrType::ExclusiveAccessRegistrantsOnly)
        .unwrap();
    d.release(ReservationKey(5), PrType::ExclusiveAccessRegistrantsOnly)
        .unwrap();
    d.clear(ReservationKey(5)).unwrap();
    let sent = d.transport().sent();
    assert_eq!(sent[0].cdb[..3], [0x5f, 0x01, 0x06]);
    assert_eq!(sent[1].cdb[..3], [0x5f, 0x02, 0x06]);
    assert_eq!(sent[2].cdb[..3], [0x5f, 0x03, 0x00]);
    assert!(sent.iter().all(|s| s.data_out[0..8] == 5u64.to_be_bytes()));
}

#[test]
fn read_keys_parses_lio_reply_after_a_unit_attention() {
    let d = device(vec![
        Step::check(UA, 0x2a, 0x03),
        Step::data(crate::pr::tests::lio_read_keys_two()),
    ]);
    let c = d.read_keys().unwrap();
    assert_eq!(c.value.keys.len(), 2);
    assert!(c.report.saw_preemption());
    let sent = d.transport().sent();
    assert_eq!(sent[1].cdb, vec![0x5e, 0, 0, 0, 0, 0, 0, 0x20, 0x00, 0]);
}

#[test]
fn read_keys_rereads_with_a_larger_buffer_when_truncated() {
    let keys = 2000u32;
    let mut full = vec![0, 0, 0, 1];
    full.extend_from_slice(&(keys * 8).to_be_bytes());
    for k in 0..u64::from(keys) {
        full.extend_from_slice(&(k + 1).to_be_bytes());
    }
    let d = device(vec![Step::data(full.clone()), Step::data(full)]);
    let c = d.read_keys().unwrap();
    assert_eq!(c.value.keys.len(), 2000);
    assert!(!c.value.truncated);
    let sent = d.transport().sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(u16::from_be_bytes([sent[1].cdb[7], sent[1].cdb[8]]), 16008);
    assert_eq!(c.report.attempts, 2);
}

#[test]
fn read_reservation_type5_through_the_device() {
    let d = device(vec![Step::data(crate::pr::tests::read_reservation_type5())]);
    let r = d.read_reservation().unwrap().value.reservation.unwrap();
    assert_eq!(r.pr_type, Some(PrType::WriteExclusiveRegistrantsOnly));
}

#[test]
fn short_reply_is_a_bad_response_not_a_panic() {
    let d = device(vec![Step::data(vec![0, 0, 0])]);
    let err = d.read_keys().unwrap_err();
    assert!(matches!(err, Error::BadResponse { .. }), "{err}");
}

#[test]
fn report_capabilities_uses_an_8_byte_allocation() {
    let d = device(vec![Step::data(vec![0, 8, 0x1d, 0x90, 0xea, 0x01, 0, 0])]);
    let c = d.report_capabilities().unwrap().value;
    assert!(c.type_mask_valid);
    assert_eq!(
        d.transport().sent()[0].cdb,
        vec![0x5e, 2, 0, 0, 0, 0, 0, 0, 8, 0]
    );
}

#[test]
fn inquiry_and_vpd83_identify_the_lun() {
    let d = device(vec![
        Step::data(crate::inquiry::tests::lio_standard_inquiry()),
        Step::data(crate::inquiry::tests::lio_vpd83()),
    ]);
    assert_eq!(d.inquiry().unwrap().value.vendor, "LIO-ORG");
    let id = d.device_identification().unwrap().value;
    assert!(id.lun_id().unwrap().starts_with("naa.6001405"));
    let sent = d.transport().sent();
    assert_eq!(sent[0].cdb, vec![0x12, 0, 0, 0, 0xff, 0]);
    assert_eq!(sent[1].cdb, vec![0x12, 1, 0x83, 0, 252, 0]);
}

#[test]
fn long_vpd_page_is_read_again_with_its_full_length() {
    let mut page = vec![0x00, 0x83, 0x01, 0x00]; // 256-byte page
    page.extend_from_slice(&[0u8; 256]);
    let d = device(vec![Step::data(page.clone()), Step::data(page)]);
    let c = d.device_identification().unwrap();
    assert_eq!(c.report.attempts, 2);
    let sent = d.transport().sent();
    assert_eq!(sent[0].cdb, vec![0x12, 1, 0x83, 0, 252, 0]);
    assert_eq!(sent[1].cdb, vec![0x12, 1, 0x83, 0x01, 0x04, 0]);
}

#[test]
fn operation_enum_dispatches_to_the_same_commands() {
    let d = device(vec![Step::good()]);
    PersistentReservations::apply(
        &d,
        PrOperation::Preempt {
            own: ReservationKey(1),
            victim: ReservationKey(2),
            pr_type: PrType::WriteExclusiveRegistrantsOnly,
            abort: false,
        },
    )
    .unwrap();
    assert_eq!(d.transport().sent()[0].cdb[..3], [0x5f, 0x04, 0x05]);
}

#[test]
fn conflict_after_a_transport_error_retry_says_the_first_attempt_may_have_worked() {
    let d = device(vec![
        Step::Reply {
            outcome: CommandOutcome {
                host_status: HostStatus::TRANSPORT_DISRUPTED,
                ..CommandOutcome::good()
            },
            data: vec![],
        },
        Step::status(ScsiStatus::RESERVATION_CONFLICT),
    ]);
    let err = d
        .preempt(
            ReservationKey(1),
            ReservationKey(2),
            PrType::WriteExclusive,
            false,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        Error::ReservationConflict {
            after_ambiguous_retry: true,
            ..
        }
    ));
    assert!(err.to_string().contains("check with READ KEYS"));
}

#[test]
fn plain_conflict_is_not_marked_ambiguous() {
    let d = device(vec![Step::status(ScsiStatus::RESERVATION_CONFLICT)]);
    let err = d.clear(ReservationKey(1)).unwrap_err();
    assert!(matches!(
        err,
        Error::ReservationConflict {
            after_ambiguous_retry: false,
            ..
        }
    ));
}

#[test]
fn etimedout_from_the_ioctl_is_a_timeout() {
    let d = device(vec![Step::Errno(libc::ETIMEDOUT)]);
    assert!(d.test_unit_ready().unwrap_err().is_timeout());
}
