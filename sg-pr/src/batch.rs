//! Many PR commands in flight at once, from one thread.
//!
//! A fence, an unfence or a key check is a small chain of commands per LUN (READ KEYS, then
//! PREEMPT AND ABORT, then READ KEYS and READ RESERVATION...), where each step depends on the
//! last answer. [`run`] drives one [`Job`] per LUN (or per path) at the same time: every job's
//! current command is in flight together, a completion advances only its own job, and each
//! command keeps its own deadline, so a hung path delays nothing but its own job. No thread is
//! created.
//!
//! The commands go through a [`Queue`]: [`SgQueue`] is the sg driver's asynchronous interface
//! (`write(2)` of an `sg_io_hdr` to `/dev/sgN`, poll(2), `read(2)` of the completion); tests use
//! a scripted one. The retry policy is the one [`crate::PrDevice`] applies with blocking SG_IO
//! (unit attentions absorbed and reported, NOT READY and BUSY backed off without blocking the
//! other jobs, PREEMPT AND ABORT falling back to PREEMPT, PR IN re-read when the reply was
//! truncated).

use std::io;
use std::time::{Duration, Instant};

use crate::cdb::{self, PrInAction};
use crate::commands::{name_command, pr_in_reread, pr_out_fields, Attempts, RetryPolicy, Verdict};
use crate::error::Error;
use crate::ops::{Completed, PrOperation, Report};
use crate::pr::{RegisteredKeys, ReservationStatus};
use crate::transport::CommandOutcome;

mod sg;

pub use sg::SgQueue;

/// One command a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// TEST UNIT READY (absorbs a pending UNIT ATTENTION).
    TestUnitReady,
    /// PR IN READ KEYS.
    ReadKeys,
    /// PR IN READ RESERVATION.
    ReadReservation,
    /// One PR OUT operation.
    Out(PrOperation),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// TEST UNIT READY succeeded.
    Ready(Report),
    /// READ KEYS.
    Keys(Completed<RegisteredKeys>),
    /// READ RESERVATION.
    Reservation(Completed<ReservationStatus>),
    /// The PR OUT operation succeeded.
    Out(Report),
}

/// A failed command, with what was seen on the way (a UNIT ATTENTION absorbed before a
/// RESERVATION CONFLICT says why the conflict came).
#[derive(Debug)]
pub struct Failed {
    /// Why it failed.
    pub error: Error,
    /// Attempts and unit attentions before the failure.
    pub report: Report,
}

/// The answer to one [`Step`].
pub type Answer = std::result::Result<Reply, Failed>;

/// The next command of a job: which device (an index into the queue's devices) and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Device index.
    pub device: usize,
    /// The command.
    pub request: Request,
}

/// A chain of commands decided one answer at a time.
pub trait Job {
    /// The first step (`last` is `None`), or the next one given the answer to the last; `None`
    /// ends the job.
    fn next(&mut self, last: Option<Answer>) -> Option<Step>;
}

/// The data phase of a submitted command.
#[derive(Debug)]
pub enum Data {
    /// No data.
    None,
    /// Data from the device, into a buffer of this many bytes.
    In(usize),
    /// Data to the device.
    Out(Vec<u8>),
}

/// One finished command.
#[derive(Debug)]
pub struct Completion {
    /// The tag it was submitted with.
    pub tag: u64,
    /// What the device and kernel said, or why the command could not be carried out.
    pub result: io::Result<CommandOutcome>,
    /// The data-in buffer (empty for other directions).
    pub data: Vec<u8>,
}

/// Where commands go: submit without waiting, collect completions.
pub trait Queue {
    /// Device name for messages.
    fn name(&self, device: usize) -> &str;
    /// Starts one command. The queue keeps its buffers until the command completes (or the
    /// queue is dropped), even when the caller stopped waiting for it.
    fn submit(
        &mut self,
        device: usize,
        tag: u64,
        cdb: &[u8],
        data: Data,
        timeout: Duration,
    ) -> io::Result<()>;
    /// Appends the completions that arrived, waiting until at least one did or `until` passed.
    fn reap(&mut self, until: Instant, done: &mut Vec<Completion>) -> io::Result<()>;
}

/// Answers a job gets after the batch's deadline before it gives up (it may try other paths).
const STEPS_AFTER_DEADLINE: usize = 16;

struct Command {
    device: usize,
    request: Request,
    attempts: Attempts,
    /// A PR IN re-read at this allocation (the first reply was truncated).
    alloc: Option<u16>,
    /// PREEMPT AND ABORT was refused: sent as PREEMPT.
    fallback: bool,
}

impl Command {
    fn name(&self) -> &'static str {
        match self.request {
            Request::TestUnitReady => "TEST UNIT READY",
            Request::ReadKeys => PrInAction::ReadKeys.name(),
            Request::ReadReservation => PrInAction::ReadReservation.name(),
            Request::Out(op) => pr_out_fields(self.op(op)).0.name(),
        }
    }

    fn op(&self, op: PrOperation) -> PrOperation {
        if self.fallback {
            op.without_abort()
        } else {
            op
        }
    }

    /// The CDB and the data phase of the next attempt.
    fn encode(&self) -> (Vec<u8>, Data) {
        let pr_in = |action| {
            let alloc = self.alloc.unwrap_or(cdb::PR_IN_ALLOC_LEN);
            (
                cdb::pr_in(action, alloc).to_vec(),
                Data::In(usize::from(alloc)),
            )
        };
        match self.request {
            Request::TestUnitReady => (cdb::test_unit_ready().to_vec(), Data::None),
            Request::ReadKeys => pr_in(PrInAction::ReadKeys),
            Request::ReadReservation => pr_in(PrInAction::ReadReservation),
            Request::Out(op) => {
                let (action, pr_type, key, sa_key, flags) = pr_out_fields(self.op(op));
                (
                    cdb::pr_out(action, pr_type).to_vec(),
                    Data::Out(cdb::pr_out_params(key, sa_key, flags).to_vec()),
                )
            }
        }
    }
}

enum State {
    /// Waiting for the completion tagged `tag`.
    Flight {
        cmd: Command,
        tag: u64,
        deadline: Instant,
    },
    /// Backing off before the next attempt.
    Sleep {
        cmd: Command,
        until: Instant,
    },
    Done,
}

struct Runner<'q, Q: ?Sized> {
    queue: &'q mut Q,
    policy: RetryPolicy,
    timeout: Duration,
    until: Instant,
    seq: u64,
    /// The clock, read once per wake-up rather than once per command (reading it is a system
    /// call on machines whose clock source has no vDSO, as in the test guests).
    now: Instant,
}

impl<Q: Queue + ?Sized> Runner<'_, Q> {
    /// Tags carry the job's index in the low 32 bits and a sequence number above it, so a late
    /// completion of a command the job stopped waiting for is recognised and dropped.
    fn tag(&mut self, job: usize) -> u64 {
        self.seq += 1;
        (self.seq << 32) | (job as u64 & 0xffff_ffff)
    }

    /// Sends `cmd`'s next attempt; on failure, the failure to hand to the job.
    fn send(&mut self, job: usize, mut cmd: Command) -> Result<State, Failed> {
        let (cdb, data) = cmd.encode();
        let tag = self.tag(job);
        cmd.attempts.started();
        match self.queue.submit(cmd.device, tag, &cdb, data, self.timeout) {
            Ok(()) => Ok(State::Flight {
                cmd,
                tag,
                deadline: self.now + self.timeout,
            }),
            Err(source) => {
                let e = io_error(self.queue.name(cmd.device), source);
                Err(self.failed(cmd, e))
            }
        }
    }

    fn failed(&self, cmd: Command, error: Error) -> Failed {
        let command = cmd.name();
        Failed {
            error: name_command(error, command, self.timeout),
            report: cmd.attempts.into_report(),
        }
    }

    /// Asks job `i` for its next step with `answer` and starts it.
    fn advance(&mut self, i: usize, job: &mut dyn Job, mut answer: Option<Answer>) -> State {
        for _ in 0..STEPS_AFTER_DEADLINE {
            let Some(step) = job.next(answer.take()) else {
                return State::Done;
            };
            let cmd = Command {
                device: step.device,
                request: step.request,
                attempts: Attempts::new(&self.policy),
                alloc: None,
                fallback: false,
            };
            if self.now >= self.until {
                answer = Some(Err(
                    self.failed(cmd, self.deadline_error(step.device, false))
                ));
                continue;
            }
            match self.send(i, cmd) {
                Ok(state) => return state,
                Err(f) => answer = Some(Err(f)),
            }
        }
        State::Done
    }

    fn deadline_error(&self, device: usize, started: bool) -> Error {
        Error::DeadlineExceeded {
            device: self.queue.name(device).to_string(),
            started,
        }
    }

    /// Handles the completion of `cmd`: the job's answer, or the command's next state.
    fn complete(
        &mut self,
        i: usize,
        mut cmd: Command,
        result: io::Result<CommandOutcome>,
        mut data: Vec<u8>,
    ) -> Result<State, Answer> {
        let out = match result {
            Ok(out) => out,
            Err(source) => {
                let e = io_error(self.queue.name(cmd.device), source);
                return Err(Err(self.failed(cmd, e)));
            }
        };
        let len = data.len();
        let device = self.queue.name(cmd.device).to_string();
        match cmd
            .attempts
            .judge(&device, cmd.name(), self.timeout, len, &out)
        {
            Verdict::Done(got) => {
                data.truncate(got);
                self.decode(i, cmd, &device, &data)
            }
            Verdict::Retry(wait) if wait.is_zero() => self.send(i, cmd).map_err(Err),
            Verdict::Retry(wait) => Ok(State::Sleep {
                cmd,
                until: self.now + wait,
            }),
            Verdict::Fail(Error::CheckCondition { sense, .. })
                if matches!(
                    cmd.request,
                    Request::Out(PrOperation::Preempt { abort: true, .. })
                ) && !cmd.fallback
                    && sense.is_unsupported_command() =>
            {
                tracing::warn!(device = %device, %sense, "target rejected PREEMPT AND ABORT; falling back to PREEMPT (outstanding commands of the victim are not aborted)");
                cmd.fallback = true;
                cmd.attempts.report_mut().preempt_abort_fallback = true;
                self.send(i, cmd).map_err(Err)
            }
            Verdict::Fail(e) => Err(Err(self.failed(cmd, e))),
        }
    }

    fn decode(
        &mut self,
        i: usize,
        mut cmd: Command,
        device: &str,
        data: &[u8],
    ) -> Result<State, Answer> {
        let action = match cmd.request {
            Request::TestUnitReady => return Err(Ok(Reply::Ready(cmd.attempts.into_report()))),
            Request::Out(_) => return Err(Ok(Reply::Out(cmd.attempts.into_report()))),
            Request::ReadKeys => PrInAction::ReadKeys,
            Request::ReadReservation => PrInAction::ReadReservation,
        };
        if cmd.alloc.is_none() {
            if let Some(alloc) = pr_in_reread(action, data) {
                cmd.alloc = Some(alloc);
                return self.send(i, cmd).map_err(Err);
            }
        }
        let report = std::mem::take(cmd.attempts.report_mut());
        let bad = |source| Error::BadResponse {
            device: device.to_string(),
            command: action.name(),
            source,
        };
        let answer = if action == PrInAction::ReadKeys {
            match RegisteredKeys::parse(data) {
                Ok(value) => Ok(Reply::Keys(Completed { value, report })),
                Err(e) => Err(Failed {
                    error: bad(e),
                    report,
                }),
            }
        } else {
            match ReservationStatus::parse(data) {
                Ok(value) => Ok(Reply::Reservation(Completed { value, report })),
                Err(e) => Err(Failed {
                    error: bad(e),
                    report,
                }),
            }
        };
        Err(answer)
    }
}

fn io_error(device: &str, source: io::Error) -> Error {
    Error::Io {
        device: device.to_string(),
        command: "SG write/read",
        source,
    }
}

/// Runs every job to its end, all of them at once, by `until` at the latest (a job still
/// waiting then gets [`Error::DeadlineExceeded`]). `timeout` is each command's own deadline.
pub fn run<Q: Queue + ?Sized>(
    queue: &mut Q,
    jobs: &mut [&mut dyn Job],
    policy: &RetryPolicy,
    timeout: Duration,
    until: Instant,
) {
    let mut r = Runner {
        queue,
        policy: policy.clone(),
        timeout,
        until,
        seq: 0,
        now: Instant::now(),
    };
    let mut states: Vec<State> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter_mut().enumerate() {
        let s = r.advance(i, &mut **job, None);
        states.push(s);
    }
    let mut done = Vec::new();
    loop {
        // The clock as read after the last wait (or at the start): the completions handled
        // since took little time, and a deadline noticed that much later is harmless.
        let now = r.now;
        // Deadlines and back-offs that came due.
        let mut next_wake = r.until;
        for (i, job) in jobs.iter_mut().enumerate() {
            let due = match &states[i] {
                State::Done => continue,
                State::Flight { deadline, .. } => {
                    next_wake = next_wake.min(*deadline);
                    now >= *deadline || now >= r.until
                }
                State::Sleep { until, .. } => {
                    next_wake = next_wake.min(*until);
                    now >= *until || now >= r.until
                }
            };
            if !due {
                continue;
            }
            let state = std::mem::replace(&mut states[i], State::Done);
            let answer = match state {
                State::Flight { cmd, deadline, .. } => {
                    let e = if now >= deadline {
                        Error::Timeout {
                            device: r.queue.name(cmd.device).to_string(),
                            command: cmd.name(),
                            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                        }
                    } else {
                        r.deadline_error(cmd.device, true)
                    };
                    Err(r.failed(cmd, e))
                }
                State::Sleep { cmd, .. } if now >= r.until => {
                    let e = r.deadline_error(cmd.device, true);
                    Err(r.failed(cmd, e))
                }
                State::Sleep { cmd, .. } => match r.send(i, cmd) {
                    Ok(s) => {
                        states[i] = s;
                        continue;
                    }
                    Err(f) => Err(f),
                },
                State::Done => continue,
            };
            states[i] = r.advance(i, &mut **job, Some(answer));
        }
        if states.iter().all(|s| matches!(s, State::Done)) {
            return;
        }
        let wake = states
            .iter()
            .filter_map(|s| match s {
                State::Flight { deadline, .. } => Some(*deadline),
                State::Sleep { until, .. } => Some(*until),
                State::Done => None,
            })
            .fold(r.until, Instant::min)
            .min(next_wake);
        done.clear();
        let reaped = r.queue.reap(wake, &mut done);
        r.now = Instant::now();
        if let Err(e) = reaped {
            // The queue itself failed: every job waiting on it gets the error.
            tracing::warn!(error = %e, "completion queue failed");
            for (i, job) in jobs.iter_mut().enumerate() {
                if !matches!(states[i], State::Flight { .. }) {
                    continue;
                }
                if let State::Flight { cmd, .. } = std::mem::replace(&mut states[i], State::Done) {
                    let source = io::Error::new(e.kind(), e.to_string());
                    let err = io_error(r.queue.name(cmd.device), source);
                    let f = r.failed(cmd, err);
                    states[i] = r.advance(i, &mut **job, Some(Err(f)));
                }
            }
            continue;
        }
        for c in done.drain(..) {
            let i = (c.tag & 0xffff_ffff) as usize;
            let Some(job) = jobs.get_mut(i) else { continue };
            if !matches!(&states[i], State::Flight { tag, .. } if *tag == c.tag) {
                // A command the job stopped waiting for (past its deadline).
                continue;
            }
            let State::Flight { cmd, .. } = std::mem::replace(&mut states[i], State::Done) else {
                continue;
            };
            states[i] = match r.complete(i, cmd, c.result, c.data) {
                Ok(s) => s,
                Err(answer) => r.advance(i, &mut **job, Some(answer)),
            };
        }
    }
}

#[cfg(test)]
mod tests;
