//! The completion handling of [`run`], against a scripted queue: a small PR target per device
//! whose completions come back out of order, never, or after the device failed.

use super::*;
use crate::transport::ScsiStatus;
use crate::types::{PrType, ReservationKey};
use std::cell::RefCell;
use std::rc::Rc;

const TYPE: PrType = PrType::WriteExclusiveRegistrantsOnly;

#[derive(Default)]
struct Dev {
    name: String,
    keys: Vec<u64>,
    reservation: Option<u64>,
    generation: u32,
    /// Commands are accepted and never complete.
    hang: bool,
    /// Submissions fail (EIO) once this many were accepted.
    fail_after: Option<usize>,
    accepted: usize,
    /// A UNIT ATTENTION (asc, ascq) returned once.
    unit_attention: Option<(u8, u8)>,
    /// PREEMPT AND ABORT is rejected with ILLEGAL REQUEST.
    no_preempt_abort: bool,
    /// BUSY this many times first.
    busy: u32,
    /// READ KEYS lists this many extra keys (forces a re-read at a larger allocation).
    extra_keys: usize,
}

struct Fake {
    devs: Vec<Dev>,
    ready: Vec<Completion>,
    /// Tags of commands that will never complete.
    hung: Vec<u64>,
    /// Every submission, in order: (device, CDB opcode/service action).
    log: Rc<RefCell<Vec<(usize, u8)>>>,
}

fn sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

impl Fake {
    fn new(devs: Vec<Dev>) -> Fake {
        Fake {
            devs,
            ready: Vec::new(),
            hung: Vec::new(),
            log: Rc::default(),
        }
    }

    fn execute(&mut self, device: usize, cdb: &[u8], data: &Data) -> (CommandOutcome, Vec<u8>) {
        let d = &mut self.devs[device];
        if let Some((asc, ascq)) = d.unit_attention.take() {
            return (
                CommandOutcome::check_condition(sense(0x6, asc, ascq)),
                Vec::new(),
            );
        }
        if d.busy > 0 {
            d.busy -= 1;
            return (CommandOutcome::with_status(ScsiStatus::BUSY), Vec::new());
        }
        let conflict = (
            CommandOutcome::with_status(ScsiStatus::RESERVATION_CONFLICT),
            Vec::new(),
        );
        match (cdb[0], cdb[1] & 0x1f) {
            (0x00, _) => (CommandOutcome::good(), Vec::new()),
            (0x5e, sa) => {
                let Data::In(len) = data else {
                    panic!("PR IN without data-in")
                };
                let mut buf = vec![0u8; *len];
                let mut body = Vec::new();
                if sa == 0 {
                    for k in d
                        .keys
                        .iter()
                        .chain(std::iter::repeat_n(&0xeeee, d.extra_keys))
                    {
                        body.extend_from_slice(&k.to_be_bytes());
                    }
                } else if let Some(k) = d.reservation {
                    body.extend_from_slice(&k.to_be_bytes());
                    body.extend_from_slice(&[0, 0, 0, 0, 0, TYPE.scsi_code(), 0, 0]);
                }
                let mut full = d.generation.to_be_bytes().to_vec();
                full.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
                full.extend(body);
                let n = full.len().min(buf.len());
                buf[..n].copy_from_slice(&full[..n]);
                let mut out = CommandOutcome::good();
                out.resid = buf.len() - n;
                (out, buf)
            }
            (0x5f, sa) => {
                let Data::Out(p) = data else {
                    panic!("PR OUT without data-out")
                };
                let key = u64::from_be_bytes(p[0..8].try_into().unwrap());
                let sa_key = u64::from_be_bytes(p[8..16].try_into().unwrap());
                match sa {
                    // REGISTER AND IGNORE EXISTING KEY
                    0x06 => {
                        d.keys.push(sa_key);
                        d.generation += 1;
                    }
                    // PREEMPT AND ABORT unsupported
                    0x05 if d.no_preempt_abort => {
                        return (
                            CommandOutcome::check_condition(sense(0x5, 0x24, 0)),
                            Vec::new(),
                        )
                    }
                    0x04 | 0x05 => {
                        if !d.keys.contains(&key) || !d.keys.contains(&sa_key) {
                            return conflict;
                        }
                        d.keys.retain(|&k| k != sa_key);
                        d.reservation = Some(key);
                        d.generation += 1;
                    }
                    0x01 => {
                        if !d.keys.contains(&key) {
                            return conflict;
                        }
                        d.reservation.get_or_insert(key);
                    }
                    other => panic!("unexpected PR OUT service action {other}"),
                }
                (CommandOutcome::good(), Vec::new())
            }
            other => panic!("unexpected CDB {other:?}"),
        }
    }
}

impl Queue for Fake {
    fn name(&self, device: usize) -> &str {
        &self.devs[device].name
    }

    fn submit(
        &mut self,
        device: usize,
        tag: u64,
        cdb: &[u8],
        data: Data,
        _timeout: Duration,
    ) -> io::Result<()> {
        self.log.borrow_mut().push((device, cdb[1] & 0x1f | cdb[0]));
        let d = &mut self.devs[device];
        if d.fail_after.is_some_and(|n| d.accepted >= n) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        d.accepted += 1;
        if d.hang {
            self.hung.push(tag);
            return Ok(());
        }
        let (outcome, data) = self.execute(device, cdb, &data);
        self.ready.push(Completion {
            tag,
            result: Ok(outcome),
            data,
        });
        Ok(())
    }

    /// Hands back what is ready newest first: completions arrive in the reverse of the order
    /// their commands were sent.
    fn reap(&mut self, until: Instant, done: &mut Vec<Completion>) -> io::Result<()> {
        if self.ready.is_empty() {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            return Ok(());
        }
        done.extend(self.ready.drain(..).rev());
        Ok(())
    }
}

fn dev(name: &str, keys: &[u64]) -> Dev {
    Dev {
        name: name.into(),
        keys: keys.to_vec(),
        ..Dev::default()
    }
}

/// A fence of one LUN as the daemon does it, on the paths it is given in order: READ KEYS,
/// PREEMPT AND ABORT, READ KEYS, READ RESERVATION; a failed command moves it to the next path.
struct FenceJob {
    paths: Vec<usize>,
    at: usize,
    stage: u8,
    victim: u64,
    /// Every answer, in order, with the device it came from.
    seen: Vec<(usize, Result<String, String>)>,
    finished: Option<Result<String, String>>,
    /// Shared order in which jobs finished.
    order: Rc<RefCell<Vec<String>>>,
    name: String,
}

impl FenceJob {
    fn new(name: &str, paths: &[usize], order: &Rc<RefCell<Vec<String>>>) -> FenceJob {
        FenceJob {
            paths: paths.to_vec(),
            at: 0,
            stage: 0,
            victim: 0xb,
            seen: Vec::new(),
            finished: None,
            order: order.clone(),
            name: name.into(),
        }
    }

    fn step(&self, request: Request) -> Option<Step> {
        Some(Step {
            device: self.paths[self.at],
            request,
        })
    }

    fn finish(&mut self, r: Result<String, String>) -> Option<Step> {
        self.order.borrow_mut().push(self.name.clone());
        self.finished = Some(r);
        None
    }
}

impl Job for FenceJob {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        let device = self.paths[self.at];
        let last = match last {
            None => return self.step(Request::ReadKeys),
            Some(Err(f)) => {
                self.seen.push((device, Err(f.error.to_string())));
                self.at += 1;
                self.stage = 0;
                if self.at == self.paths.len() {
                    return self.finish(Err(f.error.to_string()));
                }
                return self.step(Request::ReadKeys);
            }
            Some(Ok(reply)) => reply,
        };
        self.seen.push((device, Ok(format!("{last:?}"))));
        self.stage += 1;
        match (self.stage, last) {
            (1, Reply::Keys(_)) => self.step(Request::Out(PrOperation::Preempt {
                own: ReservationKey(0xa),
                victim: ReservationKey(self.victim),
                pr_type: TYPE,
                abort: true,
            })),
            (2, Reply::Out(r)) => {
                let fallback = r.preempt_abort_fallback;
                self.seen.push((device, Ok(format!("fallback={fallback}"))));
                self.step(Request::ReadKeys)
            }
            (3, Reply::Keys(k)) if k.value.contains(ReservationKey(self.victim)) => {
                self.finish(Err("victim still registered".into()))
            }
            (3, Reply::Keys(_)) => self.step(Request::ReadReservation),
            (4, Reply::Reservation(r)) => {
                let holder = r.value.reservation.map(|r| r.key.0);
                self.finish(Ok(format!("held by {holder:x?}")))
            }
            (_, other) => self.finish(Err(format!("unexpected {other:?}"))),
        }
    }
}

fn run_jobs(q: &mut Fake, jobs: &mut [FenceJob], timeout: Duration) {
    let mut refs: Vec<&mut dyn Job> = jobs.iter_mut().map(|j| j as &mut dyn Job).collect();
    run(
        q,
        &mut refs,
        &RetryPolicy::default(),
        timeout,
        Instant::now() + Duration::from_secs(20),
    );
}

#[test]
fn out_of_order_completions_each_advance_their_own_job() {
    let mut q = Fake::new(
        (0..4)
            .map(|i| dev(&format!("/dev/s{i}"), &[0xa, 0xb, 0x100 + i]))
            .collect(),
    );
    let order = Rc::default();
    let mut jobs: Vec<FenceJob> = (0..4)
        .map(|i| FenceJob::new(&format!("lun{i}"), &[i], &order))
        .collect();
    run_jobs(&mut q, &mut jobs, Duration::from_secs(5));
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(
            j.finished,
            Some(Ok("held by Some(a)".into())),
            "{:?}",
            j.seen
        );
        // Each job's first READ KEYS saw its own device's third key.
        assert!(j.seen[0]
            .1
            .as_ref()
            .unwrap()
            .contains(&format!("{}", 0x100 + i)));
        assert!(j.seen.iter().all(|(d, _)| *d == i));
        assert_eq!(q.devs[i].keys, vec![0xa, 0x100 + i as u64]);
    }
    // All four chains ran side by side: the first four commands were the four READ KEYS.
    let log = q.log.borrow();
    assert_eq!(
        log[..4].iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn a_command_that_never_completes_fails_at_its_deadline_after_every_other_job_finished() {
    let mut devs: Vec<Dev> = (0..3)
        .map(|i| dev(&format!("/dev/s{i}"), &[0xa, 0xb]))
        .collect();
    devs[1].hang = true;
    let mut q = Fake::new(devs);
    let order = Rc::default();
    let mut jobs: Vec<FenceJob> = (0..3)
        .map(|i| FenceJob::new(&format!("lun{i}"), &[i], &order))
        .collect();
    let t = Instant::now();
    run_jobs(&mut q, &mut jobs, Duration::from_millis(300));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(*order.borrow(), vec!["lun0", "lun2", "lun1"]);
    let hung = jobs[1].finished.clone().unwrap().unwrap_err();
    assert!(hung.contains("timed out"), "{hung}");
    assert!(hung.contains("/dev/s1"), "{hung}");
    assert_eq!(jobs[0].finished, Some(Ok("held by Some(a)".into())));
    assert_eq!(jobs[2].finished, Some(Ok("held by Some(a)".into())));
    assert_eq!(
        q.hung.len(),
        1,
        "the hung command was sent once, not retried"
    );
}

#[test]
fn a_late_completion_of_an_abandoned_command_is_dropped() {
    let mut q = Fake::new(vec![dev("/dev/s0", &[0xa, 0xb])]);
    q.devs[0].hang = true;
    let order = Rc::default();
    let mut jobs = vec![FenceJob::new("lun0", &[0], &order)];
    run_jobs(&mut q, &mut jobs, Duration::from_millis(50));
    let abandoned = q.hung[0];
    // The command completes after all; the next batch must not take it for its own.
    q.devs[0].hang = false;
    q.ready.push(Completion {
        tag: abandoned,
        result: Ok(CommandOutcome::with_status(
            ScsiStatus::RESERVATION_CONFLICT,
        )),
        data: Vec::new(),
    });
    let mut again = vec![FenceJob::new("lun0", &[0], &order)];
    run_jobs(&mut q, &mut again, Duration::from_secs(5));
    assert_eq!(
        again[0].finished,
        Some(Ok("held by Some(a)".into())),
        "{:?}",
        again[0].seen
    );
}

#[test]
fn a_path_that_fails_mid_batch_moves_only_its_job_to_the_next_path() {
    let mut devs = vec![
        dev("/dev/s0", &[0xa, 0xb]),
        dev("/dev/s1", &[0xa, 0xb]),
        dev("/dev/s2", &[0xa, 0xb]),
    ];
    // LUN 0's first path takes the READ KEYS, then fails the PREEMPT AND ABORT.
    devs[0].fail_after = Some(1);
    let mut q = Fake::new(devs);
    // Paths 0 and 1 are the same LUN here; the fake keeps them apart, which is enough to see the
    // job move.
    let order = Rc::default();
    let mut jobs = vec![
        FenceJob::new("lun0", &[0, 1], &order),
        FenceJob::new("lun1", &[2], &order),
    ];
    run_jobs(&mut q, &mut jobs, Duration::from_secs(5));
    assert_eq!(jobs[0].finished, Some(Ok("held by Some(a)".into())));
    let failed: Vec<_> = jobs[0].seen.iter().filter(|(_, r)| r.is_err()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 0);
    assert!(
        failed[0]
            .1
            .as_ref()
            .unwrap_err()
            .contains("Input/output error"),
        "{failed:?}"
    );
    assert!(jobs[0].seen.last().unwrap().0 == 1);
    assert_eq!(jobs[1].finished, Some(Ok("held by Some(a)".into())));
    assert_eq!(q.devs[1].keys, vec![0xa]);
}

#[test]
fn unit_attentions_are_absorbed_and_reported_busy_backs_off_without_holding_others() {
    let mut devs = vec![dev("/dev/s0", &[0xa, 0xb]), dev("/dev/s1", &[0xa, 0xb])];
    devs[0].unit_attention = Some((0x2a, 0x05));
    devs[1].busy = 2;
    let mut q = Fake::new(devs);
    let order = Rc::default();
    let mut jobs = vec![
        FenceJob::new("lun0", &[0], &order),
        FenceJob::new("lun1", &[1], &order),
    ];
    run_jobs(&mut q, &mut jobs, Duration::from_secs(5));
    assert!(
        jobs[0].seen[0].1.as_ref().unwrap().contains("asc: 42"),
        "{:?}",
        jobs[0].seen[0]
    );
    assert_eq!(jobs[0].finished, Some(Ok("held by Some(a)".into())));
    assert_eq!(jobs[1].finished, Some(Ok("held by Some(a)".into())));
    // lun1 backed off twice (50 ms, 100 ms) while lun0 went through its whole chain.
    assert_eq!(*order.borrow(), vec!["lun0", "lun1"]);
}

#[test]
fn preempt_and_abort_falls_back_to_preempt_and_says_so() {
    let mut devs = vec![dev("/dev/s0", &[0xa, 0xb])];
    devs[0].no_preempt_abort = true;
    let mut q = Fake::new(devs);
    let order = Rc::default();
    let mut jobs = vec![FenceJob::new("lun0", &[0], &order)];
    run_jobs(&mut q, &mut jobs, Duration::from_secs(5));
    assert_eq!(jobs[0].finished, Some(Ok("held by Some(a)".into())));
    assert!(jobs[0]
        .seen
        .iter()
        .any(|(_, r)| r.as_deref() == Ok("fallback=true")));
    let sent: Vec<u8> = q.log.borrow().iter().map(|(_, op)| *op).collect();
    // READ KEYS, PREEMPT AND ABORT (refused), PREEMPT, READ KEYS, READ RESERVATION.
    assert_eq!(sent, vec![0x5e, 0x5f | 0x05, 0x5f | 0x04, 0x5e, 0x5f]);
}

#[test]
fn a_truncated_read_keys_is_read_again_with_the_length_the_device_asked_for() {
    let mut devs = vec![dev("/dev/s0", &[0xa, 0xb])];
    devs[0].extra_keys = 1100; // 8 + 1102 * 8 bytes > 8192
    let mut q = Fake::new(devs);
    let order = Rc::default();
    let mut jobs = vec![FenceJob::new("lun0", &[0], &order)];
    run_jobs(&mut q, &mut jobs, Duration::from_secs(5));
    assert_eq!(jobs[0].finished, Some(Ok("held by Some(a)".into())));
    let first_read = &jobs[0].seen[0].1.as_ref().unwrap();
    assert!(first_read.contains("truncated: false"), "{first_read}");
    assert_eq!(q.log.borrow()[..2], [(0, 0x5e), (0, 0x5e)]);
}

#[test]
fn after_the_batch_deadline_no_command_is_sent_and_every_job_is_told() {
    let mut devs = vec![dev("/dev/s0", &[0xa, 0xb]), dev("/dev/s1", &[0xa, 0xb])];
    devs[0].hang = true;
    let mut q = Fake::new(devs);
    let order = Rc::default();
    let mut jobs = [
        FenceJob::new("lun0", &[0, 1], &order),
        FenceJob::new("lun1", &[1], &order),
    ];
    let mut refs: Vec<&mut dyn Job> = jobs.iter_mut().map(|j| j as &mut dyn Job).collect();
    run(
        &mut q,
        &mut refs,
        &RetryPolicy::default(),
        Duration::from_secs(30),
        Instant::now() + Duration::from_millis(100),
    );
    // lun0's first path hung past the batch's deadline: its move to path 1 is refused too.
    let e = jobs[0].finished.clone().unwrap().unwrap_err();
    assert!(e.contains("deadline"), "{e}");
    let to_path_1 = q.log.borrow().iter().filter(|(d, _)| *d == 1).count();
    assert_eq!(to_path_1, 4, "only lun1's own chain went to path 1");
    assert_eq!(jobs[1].finished, Some(Ok("held by Some(a)".into())));
}
