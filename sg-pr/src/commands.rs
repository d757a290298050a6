//! [`PrDevice`]: the commands, with the retry policy fencing needs.
//!
//! Policy, in one place:
//! - UNIT ATTENTION: retried at once, a bounded number of times; each one is recorded in
//!   the [`Report`] (a "registrations preempted" here means this node's key was removed).
//! - NOT READY (becoming ready, operation in progress, ALUA transition), BUSY, TASK SET FULL,
//!   ABORTED COMMAND and transient host statuses: retried with bounded exponential backoff.
//! - RESERVATION CONFLICT: never retried; [`Error::ReservationConflict`].
//! - PREEMPT AND ABORT rejected as unsupported (ILLEGAL REQUEST, 20/00 or 24/00): sent again
//!   as PREEMPT, and [`Report::preempt_abort_fallback`] says so.

use std::path::Path;
use std::time::Duration;

use crate::cdb::{self, PrInAction, PrOutAction, PrOutFlags};
use crate::device::SgDevice;
use crate::error::{Error, Result};
use crate::inquiry::{self, DeviceIdentification, StandardInquiry};
use crate::ops::{Completed, PersistentReservations, PrOperation, RegisterOptions, Report};
use crate::pr::{Capabilities, FullStatus, RegisteredKeys, ReservationStatus};
use crate::sense::{Sense, SenseKey};
use crate::transport::{CommandOutcome, DataTransfer, HostStatus, ScsiStatus, ScsiTransport};
use crate::types::{PrType, ReservationKey};

/// Default per-command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounds of the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// UNIT ATTENTIONs absorbed per command (each is retried at once).
    pub unit_attention_retries: u32,
    /// Retries for NOT READY (becoming ready / in transition).
    pub not_ready_retries: u32,
    /// Retries for BUSY, TASK SET FULL, ABORTED COMMAND and transient host statuses.
    pub busy_retries: u32,
    /// First backoff delay.
    pub initial_backoff: Duration,
    /// Backoff ceiling (the delay doubles up to this).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            unit_attention_retries: 8,
            not_ready_retries: 5,
            busy_retries: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Data phase of a command, re-borrowable across retries.
enum Buf<'a> {
    None,
    In(&'a mut [u8]),
    Out(&'a [u8]),
}

/// A device spoken to through a [`ScsiTransport`], with the fencing retry policy.
#[derive(Debug)]
pub struct PrDevice<T> {
    transport: T,
    policy: RetryPolicy,
    timeout: Duration,
}

impl PrDevice<SgDevice> {
    /// Opens a SCSI device node (`/dev/sdX`, `/dev/sgN`) for SG_IO.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(PrDevice::new(SgDevice::open(path)?))
    }
}

impl<T: ScsiTransport> PrDevice<T> {
    /// Wraps a transport with the default policy and timeout.
    pub fn new(transport: T) -> Self {
        PrDevice {
            transport,
            policy: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Replaces the retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the per-command timeout (SG_IO `timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Device name for messages.
    pub fn name(&self) -> &str {
        self.transport.name()
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
    }

    /// The underlying transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Sends one command under the retry policy. Returns the bytes received and the report.
    fn run(&self, command: &'static str, cdb: &[u8], mut buf: Buf<'_>) -> Result<(usize, Report)> {
        let mut attempts = Attempts::new(&self.policy);
        let device = self.transport.name();
        loop {
            let (data, len) = match &mut buf {
                Buf::None => (DataTransfer::None, 0),
                Buf::In(b) => {
                    let len = b.len();
                    (DataTransfer::FromDevice(&mut b[..]), len)
                }
                Buf::Out(b) => (DataTransfer::ToDevice(b), b.len()),
            };
            attempts.started();
            let out = self
                .transport
                .execute(cdb, data, self.timeout)
                .map_err(|e| name_command(e, command, self.timeout))?;
            match attempts.judge(device, command, self.timeout, len, &out) {
                Verdict::Done(got) => return Ok((got, attempts.into_report())),
                Verdict::Retry(wait) => std::thread::sleep(wait),
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    fn bad_response(
        &self,
        command: &'static str,
    ) -> impl Fn(crate::error::ParseError) -> Error + '_ {
        move |source| Error::BadResponse {
            device: self.transport.name().to_string(),
            command,
            source,
        }
    }

    /// TEST UNIT READY. Also clears a pending UNIT ATTENTION (reported in the result).
    pub fn test_unit_ready(&self) -> Result<Report> {
        Ok(self
            .run("TEST UNIT READY", &cdb::test_unit_ready(), Buf::None)?
            .1)
    }

    fn read_in(
        &self,
        command: &'static str,
        cdb: &[u8],
        alloc: usize,
    ) -> Result<(Vec<u8>, Report)> {
        let mut buf = vec![0u8; alloc];
        let (got, report) = self.run(command, cdb, Buf::In(&mut buf))?;
        buf.truncate(got);
        Ok((buf, report))
    }

    /// Standard INQUIRY.
    pub fn inquiry(&self) -> Result<Completed<StandardInquiry>> {
        const CMD: &str = "INQUIRY";
        let (buf, report) = self.read_in(CMD, &cdb::inquiry(None, 255), 255)?;
        let value = StandardInquiry::parse(&buf).map_err(self.bad_response(CMD))?;
        Ok(Completed { value, report })
    }

    /// Reads a VPD page: first with 252 bytes (an SPC-2 device reads only the low byte of
    /// the allocation length, so a multiple of 256 would ask it for nothing), then again
    /// with the page's full length if it is longer.
    fn vpd(&self, page: u8, command: &'static str) -> Result<(Vec<u8>, Report)> {
        const FIRST: u16 = 252;
        let (buf, mut report) = self.read_in(
            command,
            &cdb::inquiry(Some(page), FIRST),
            usize::from(FIRST),
        )?;
        let page_len = buf
            .get(2..4)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let wanted = page_len + 4;
        if wanted > usize::from(FIRST) {
            let alloc = u16::try_from(wanted).unwrap_or(u16::MAX);
            let (buf, again) = self.read_in(
                command,
                &cdb::inquiry(Some(page), alloc),
                usize::from(alloc),
            )?;
            report.absorb(again);
            return Ok((buf, report));
        }
        Ok((buf, report))
    }

    /// VPD page 0x00: supported VPD pages.
    pub fn supported_vpd_pages(&self) -> Result<Completed<Vec<u8>>> {
        const CMD: &str = "INQUIRY VPD 0x00";
        let (buf, report) = self.vpd(0x00, CMD)?;
        let value = inquiry::parse_supported_vpd_pages(&buf).map_err(self.bad_response(CMD))?;
        Ok(Completed { value, report })
    }

    /// VPD page 0x80: unit serial number.
    pub fn unit_serial_number(&self) -> Result<Completed<String>> {
        const CMD: &str = "INQUIRY VPD 0x80";
        let (buf, report) = self.vpd(0x80, CMD)?;
        let value = inquiry::parse_unit_serial_number(&buf).map_err(self.bad_response(CMD))?;
        Ok(Completed { value, report })
    }

    /// VPD page 0x83: device identification (use [`DeviceIdentification::lun_id`] to match paths).
    pub fn device_identification(&self) -> Result<Completed<DeviceIdentification>> {
        const CMD: &str = "INQUIRY VPD 0x83";
        let (buf, report) = self.vpd(0x83, CMD)?;
        let value = DeviceIdentification::parse(&buf).map_err(self.bad_response(CMD))?;
        Ok(Completed { value, report })
    }

    /// PR IN with one re-read at a larger allocation when the device says it has more.
    fn pr_in(&self, action: PrInAction) -> Result<(Vec<u8>, Report)> {
        let command = action.name();
        let first = usize::from(cdb::PR_IN_ALLOC_LEN);
        let (buf, mut report) =
            self.read_in(command, &cdb::pr_in(action, cdb::PR_IN_ALLOC_LEN), first)?;
        if let Some(alloc) = pr_in_reread(action, &buf) {
            let (buf, again) =
                self.read_in(command, &cdb::pr_in(action, alloc), usize::from(alloc))?;
            report.absorb(again);
            return Ok((buf, report));
        }
        Ok((buf, report))
    }

    /// PR IN READ KEYS.
    pub fn read_keys(&self) -> Result<Completed<RegisteredKeys>> {
        let (buf, report) = self.pr_in(PrInAction::ReadKeys)?;
        let value =
            RegisteredKeys::parse(&buf).map_err(self.bad_response(PrInAction::ReadKeys.name()))?;
        Ok(Completed { value, report })
    }

    /// PR IN READ RESERVATION.
    pub fn read_reservation(&self) -> Result<Completed<ReservationStatus>> {
        let (buf, report) = self.pr_in(PrInAction::ReadReservation)?;
        let value = ReservationStatus::parse(&buf)
            .map_err(self.bad_response(PrInAction::ReadReservation.name()))?;
        Ok(Completed { value, report })
    }

    /// PR IN REPORT CAPABILITIES.
    pub fn report_capabilities(&self) -> Result<Completed<Capabilities>> {
        let action = PrInAction::ReportCapabilities;
        let (buf, report) = self.read_in(action.name(), &cdb::pr_in(action, 8), 8)?;
        let value = Capabilities::parse(&buf).map_err(self.bad_response(action.name()))?;
        Ok(Completed { value, report })
    }

    /// PR IN READ FULL STATUS.
    pub fn read_full_status(&self) -> Result<Completed<FullStatus>> {
        let (buf, report) = self.pr_in(PrInAction::ReadFullStatus)?;
        let value = FullStatus::parse(&buf)
            .map_err(self.bad_response(PrInAction::ReadFullStatus.name()))?;
        Ok(Completed { value, report })
    }

    fn pr_out(&self, op: PrOperation) -> Result<Report> {
        let (action, pr_type, key, sa_key, flags) = pr_out_fields(op);
        let cdb = cdb::pr_out(action, pr_type);
        let params = cdb::pr_out_params(key, sa_key, flags);
        tracing::debug!(device = %self.name(), command = action.name(), %key, %sa_key, "PR OUT");
        Ok(self.run(action.name(), &cdb, Buf::Out(&params))?.1)
    }

    /// REGISTER (`current` = this nexus' registered key, 0 if none) or REGISTER AND IGNORE
    /// EXISTING KEY. `new` = 0 unregisters.
    pub fn register(
        &self,
        current: ReservationKey,
        new: ReservationKey,
        options: RegisterOptions,
    ) -> Result<Report> {
        self.pr_out(PrOperation::Register {
            current,
            new,
            options,
        })
    }

    /// RESERVE with `key` (must be registered through this nexus).
    pub fn reserve(&self, key: ReservationKey, pr_type: PrType) -> Result<Report> {
        self.pr_out(PrOperation::Reserve { key, pr_type })
    }

    /// RELEASE the reservation held with `key` (type must match the reservation's).
    pub fn release(&self, key: ReservationKey, pr_type: PrType) -> Result<Report> {
        self.pr_out(PrOperation::Release { key, pr_type })
    }

    /// CLEAR: removes every registration and the reservation (`key` must be registered).
    pub fn clear(&self, key: ReservationKey) -> Result<Report> {
        self.pr_out(PrOperation::Clear { key })
    }

    /// PREEMPT (`abort` false) or PREEMPT AND ABORT the registrations of `victim`, using this
    /// nexus' registered key `own`. With `abort`, a target that rejects PREEMPT AND ABORT as
    /// unsupported gets a plain PREEMPT, and the report says so.
    ///
    /// A [`Error::ReservationConflict`] here means this node's own key is no longer
    /// registered: it lost the race.
    pub fn preempt(
        &self,
        own: ReservationKey,
        victim: ReservationKey,
        pr_type: PrType,
        abort: bool,
    ) -> Result<Report> {
        let op = PrOperation::Preempt {
            own,
            victim,
            pr_type,
            abort,
        };
        match self.pr_out(op) {
            Err(Error::CheckCondition { sense, .. }) if abort && sense.is_unsupported_command() => {
                tracing::warn!(device = %self.name(), %sense, "target rejected PREEMPT AND ABORT; falling back to PREEMPT (outstanding commands of the victim are not aborted)");
                let mut report = self.pr_out(op.without_abort())?;
                report.attempts += 1;
                report.preempt_abort_fallback = true;
                Ok(report)
            }
            other => other,
        }
    }
}

/// The PR OUT fields of `op`: service action, type, reservation key, service action
/// reservation key and flags.
pub(crate) fn pr_out_fields(
    op: PrOperation,
) -> (
    PrOutAction,
    Option<PrType>,
    ReservationKey,
    ReservationKey,
    PrOutFlags,
) {
    let zero = ReservationKey::ZERO;
    let none = PrOutFlags::default();
    match op {
        PrOperation::Register {
            current,
            new,
            options,
        } => {
            let flags = PrOutFlags {
                aptpl: options.aptpl,
                all_tg_pt: options.all_target_ports,
                spec_i_pt: false,
            };
            if options.ignore_existing {
                // REGISTER AND IGNORE EXISTING KEY ignores the reservation key field; send 0.
                (
                    PrOutAction::RegisterAndIgnoreExistingKey,
                    None,
                    zero,
                    new,
                    flags,
                )
            } else {
                (PrOutAction::Register, None, current, new, flags)
            }
        }
        PrOperation::Reserve { key, pr_type } => {
            (PrOutAction::Reserve, Some(pr_type), key, zero, none)
        }
        PrOperation::Release { key, pr_type } => {
            (PrOutAction::Release, Some(pr_type), key, zero, none)
        }
        PrOperation::Clear { key } => (PrOutAction::Clear, None, key, zero, none),
        PrOperation::Preempt {
            own,
            victim,
            pr_type,
            abort,
        } => {
            let action = if abort {
                PrOutAction::PreemptAndAbort
            } else {
                PrOutAction::Preempt
            };
            (action, Some(pr_type), own, victim, none)
        }
    }
}

/// How many bytes a PR IN reply says it holds beyond what `buf` got, for one re-read at a larger
/// allocation (READ KEYS and READ FULL STATUS only); `None` when `buf` holds it all.
pub(crate) fn pr_in_reread(action: PrInAction, buf: &[u8]) -> Option<u16> {
    let first = usize::from(cdb::PR_IN_ALLOC_LEN);
    let wanted = buf
        .get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .and_then(|n| usize::try_from(n).ok())
        .map_or(0, |n| n.saturating_add(8));
    (wanted > first && matches!(action, PrInAction::ReadKeys | PrInAction::ReadFullStatus)).then(
        || {
            u16::try_from(wanted.min(usize::from(cdb::PR_IN_MAX_ALLOC_LEN)))
                .unwrap_or(cdb::PR_IN_MAX_ALLOC_LEN)
        },
    )
}

/// Maps a transport error to the SCSI command it carried: a timeout of the ioctl becomes
/// [`Error::Timeout`], other I/O errors name the command rather than the ioctl.
pub(crate) fn name_command(e: Error, command: &'static str, timeout: Duration) -> Error {
    match e {
        Error::Io { device, source, .. } if source.raw_os_error() == Some(libc::ETIMEDOUT) => {
            Error::Timeout {
                device,
                command,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }
        }
        Error::Io { device, source, .. } => Error::Io {
            device,
            command,
            source,
        },
        other => other,
    }
}

/// What to do after one attempt of a command.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Finished: this many bytes came back.
    Done(usize),
    /// Send it again after this long (zero: at once).
    Retry(Duration),
    /// Give up with this error.
    Fail(Error),
}

/// The retry policy of one command as a state machine, without I/O: [`PrDevice`] drives it with
/// blocking SG_IO, [`crate::batch`] with many commands in flight.
#[derive(Debug)]
pub(crate) struct Attempts {
    policy: RetryPolicy,
    report: Report,
    ua_left: u32,
    nr_left: u32,
    busy_left: u32,
    backoff: Duration,
    /// Set once a retry follows a transport error after which the target may have carried out
    /// the command anyway (the reply, not the command, was lost).
    ambiguous: bool,
}

impl Attempts {
    pub(crate) fn new(policy: &RetryPolicy) -> Attempts {
        Attempts {
            report: Report::default(),
            ua_left: policy.unit_attention_retries,
            nr_left: policy.not_ready_retries,
            busy_left: policy.busy_retries,
            backoff: policy.initial_backoff,
            ambiguous: false,
            policy: policy.clone(),
        }
    }

    /// Counts an attempt about to be sent.
    pub(crate) fn started(&mut self) {
        self.report.attempts += 1;
    }

    pub(crate) fn report_mut(&mut self) -> &mut Report {
        &mut self.report
    }

    pub(crate) fn into_report(self) -> Report {
        self.report
    }

    fn wait(&mut self) -> Verdict {
        let now = self.backoff;
        self.backoff = (self.backoff * 2).min(self.policy.max_backoff);
        Verdict::Retry(now)
    }

    /// Judges one attempt's outcome; `len` is the data-in buffer's length.
    pub(crate) fn judge(
        &mut self,
        device: &str,
        command: &'static str,
        timeout: Duration,
        len: usize,
        out: &CommandOutcome,
    ) -> Verdict {
        let device = || device.to_string();
        if out.timed_out() {
            return Verdict::Fail(Error::Timeout {
                device: device(),
                command,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        if out.host_status != HostStatus::OK {
            if out.host_status.is_transient() && self.busy_left > 0 {
                self.busy_left -= 1;
                self.ambiguous = true;
                tracing::debug!(device = %device(), command, host = %out.host_status, "transient host status, retrying");
                return self.wait();
            }
            return Verdict::Fail(Error::Transport {
                device: device(),
                command,
                host: out.host_status,
                driver: out.driver_status,
            });
        }
        match out.status {
            ScsiStatus::GOOD | ScsiStatus::CONDITION_MET => {
                Verdict::Done(len.saturating_sub(out.resid))
            }
            ScsiStatus::RESERVATION_CONFLICT => Verdict::Fail(Error::ReservationConflict {
                device: device(),
                command,
                after_ambiguous_retry: self.ambiguous,
            }),
            ScsiStatus::BUSY | ScsiStatus::TASK_SET_FULL => {
                if self.busy_left == 0 {
                    return Verdict::Fail(Error::RetriesExhausted {
                        device: device(),
                        command,
                        state: out.status.name().to_string(),
                        attempts: self.report.attempts,
                    });
                }
                self.busy_left -= 1;
                self.wait()
            }
            ScsiStatus::CHECK_CONDITION => {
                let Some(sense) = out.decoded_sense() else {
                    return Verdict::Fail(Error::CheckConditionNoSense {
                        device: device(),
                        command,
                    });
                };
                match sense.key {
                    // The command completed; the device only reports a recovered error.
                    SenseKey::RecoveredError => Verdict::Done(len.saturating_sub(out.resid)),
                    SenseKey::UnitAttention => {
                        tracing::info!(device = %device(), command, %sense, "unit attention");
                        self.report.unit_attentions.push(sense.clone());
                        if self.ua_left == 0 {
                            return Verdict::Fail(Error::CheckCondition {
                                device: device(),
                                command,
                                sense,
                                hint: "; unit attentions kept arriving, retry the command",
                            });
                        }
                        self.ua_left -= 1;
                        Verdict::Retry(Duration::ZERO)
                    }
                    SenseKey::NotReady if is_transitional_not_ready(&sense) => {
                        if self.nr_left == 0 {
                            return Verdict::Fail(Error::RetriesExhausted {
                                device: device(),
                                command,
                                state: format!("NOT READY ({})", sense.description()),
                                attempts: self.report.attempts,
                            });
                        }
                        self.nr_left -= 1;
                        self.wait()
                    }
                    SenseKey::AbortedCommand if self.busy_left > 0 => {
                        self.busy_left -= 1;
                        self.wait()
                    }
                    _ => {
                        let hint = hint_for(&sense);
                        Verdict::Fail(Error::CheckCondition {
                            device: device(),
                            command,
                            sense,
                            hint,
                        })
                    }
                }
            }
            status => Verdict::Fail(Error::UnexpectedStatus {
                device: device(),
                command,
                status,
            }),
        }
    }
}

/// NOT READY states that resolve by themselves.
fn is_transitional_not_ready(sense: &Sense) -> bool {
    sense.asc == 0x04 && matches!(sense.ascq, 0x01 | 0x07 | 0x0a | 0x09)
}

fn hint_for(sense: &Sense) -> &'static str {
    match (sense.key, sense.asc, sense.ascq) {
        (SenseKey::IllegalRequest, 0x20, 0x00) => {
            "; the device does not implement this command (persistent reservations unsupported?)"
        }
        (SenseKey::IllegalRequest, 0x24, 0x00) => {
            "; the device rejected a CDB field (service action or type unsupported)"
        }
        (SenseKey::IllegalRequest, 0x26, _) => {
            "; the device rejected the parameter list (APTPL/ALL_TG_PT unsupported, or key 0 where a key is needed)"
        }
        (SenseKey::IllegalRequest, 0x25, 0x00) => "; the LUN is not mapped to this initiator",
        (SenseKey::NotReady, 0x04, 0x0b | 0x0c) => {
            "; this path is in ALUA standby/unavailable state, use an active path"
        }
        (SenseKey::NotReady, 0x04, 0x02) => "; the LUN needs a START UNIT (sg_start)",
        (SenseKey::NotReady, 0x04, 0x03) => "; the array asks for manual intervention",
        (SenseKey::DataProtect, _, _) => "; the LUN is write protected",
        _ => "",
    }
}

impl<T: ScsiTransport> PersistentReservations for PrDevice<T> {
    fn device_name(&self) -> &str {
        self.name()
    }

    fn apply(&self, op: PrOperation) -> Result<Report> {
        match op {
            PrOperation::Register {
                current,
                new,
                options,
            } => self.register(current, new, options),
            PrOperation::Reserve { key, pr_type } => self.reserve(key, pr_type),
            PrOperation::Release { key, pr_type } => self.release(key, pr_type),
            PrOperation::Clear { key } => self.clear(key),
            PrOperation::Preempt {
                own,
                victim,
                pr_type,
                abort,
            } => self.preempt(own, victim, pr_type, abort),
        }
    }

    fn keys(&self) -> Result<Completed<RegisteredKeys>> {
        self.read_keys()
    }

    fn reservation(&self) -> Result<Completed<ReservationStatus>> {
        self.read_reservation()
    }
}

#[cfg(test)]
mod policy_tests;
