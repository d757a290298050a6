//! One operation on many devices at once, on a bounded pool of threads, with a deadline.
//!
//! A device whose command hangs (a dead path, a target bug) must not delay the verdict on the
//! others. The caller gets every device's result by the deadline; a worker still stuck in an
//! ioctl then is left behind (detached) and its eventual result discarded. Jobs not started
//! by the deadline are not started at all.
//!
//! Each call starts its own workers (at most `max_threads`). A worker stuck in the kernel
//! keeps its thread and the device's file descriptor until the ioctl returns: SG_IO returns
//! after its timeout plus the SCSI error handler's recovery, which can take much longer; a
//! device in uninterruptible sleep may never return. A caller that polls periodically should
//! not send new commands to a device whose previous call is still outstanding (see
//! [`Error::DeadlineExceeded`]'s `started`), or stuck threads accumulate.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ops::{PersistentReservations, PrOperation, Report};
use crate::types::{PrType, ReservationKey};

/// One device's result.
#[derive(Debug)]
pub struct DeviceResult<R> {
    /// The device's label (its path).
    pub device: String,
    /// What happened; [`Error::DeadlineExceeded`] when it did not finish in time.
    pub result: Result<R>,
    /// How long the operation took, when it finished.
    pub elapsed: Option<Duration>,
}

/// Counts over a batch, for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    /// Devices that succeeded.
    pub ok: usize,
    /// Devices that failed (including timeouts).
    pub failed: usize,
    /// Devices that did not answer by the deadline.
    pub timed_out: usize,
}

/// Summarises a batch.
pub fn summarize<R>(results: &[DeviceResult<R>]) -> BatchSummary {
    let mut s = BatchSummary::default();
    for r in results {
        match &r.result {
            Ok(_) => s.ok += 1,
            Err(e) => {
                s.failed += 1;
                if matches!(e, Error::DeadlineExceeded { .. }) {
                    s.timed_out += 1;
                }
            }
        }
    }
    s
}

type Finished<R> = (usize, std::thread::Result<Result<R>>, Duration);

/// Applies `op` to every `(label, device)` on at most `max_threads` threads and returns one
/// result per device, in input order, no later than `deadline` from now (plus scheduling).
pub fn apply_parallel<D, R, F>(
    devices: Vec<(String, D)>,
    max_threads: usize,
    deadline: Duration,
    op: F,
) -> Vec<DeviceResult<R>>
where
    D: Send + 'static,
    R: Send + 'static,
    F: Fn(&D) -> Result<R> + Send + Sync + 'static,
{
    let deadline_at = Instant::now() + deadline;
    let count = devices.len();
    let labels: Vec<String> = devices.iter().map(|(l, _)| l.clone()).collect();
    let started: Arc<Vec<AtomicBool>> =
        Arc::new((0..count).map(|_| AtomicBool::new(false)).collect());
    let queue: Arc<Mutex<VecDeque<(usize, D)>>> = Arc::new(Mutex::new(
        devices.into_iter().map(|(_, d)| d).enumerate().collect(),
    ));
    let op = Arc::new(op);
    let (tx, rx) = mpsc::channel::<Finished<R>>();

    let workers = max_threads.clamp(1, count.max(1));
    let mut spawned = 0usize;
    for n in 0..workers.min(count) {
        let (queue, started, op, tx) = (queue.clone(), started.clone(), op.clone(), tx.clone());
        let spawn = std::thread::Builder::new()
            .name(format!("sg-pr-worker-{n}"))
            .spawn(move || loop {
                let job = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((index, device)) = job else { break };
                if Instant::now() >= deadline_at {
                    break;
                }
                if let Some(flag) = started.get(index) {
                    flag.store(true, Ordering::SeqCst);
                }
                let t0 = Instant::now();
                let result = catch_unwind(AssertUnwindSafe(|| op(&device)));
                // The receiver is gone once the deadline passed: this result is discarded.
                if tx.send((index, result, t0.elapsed())).is_err() {
                    break;
                }
            });
        match spawn {
            Ok(_detached) => spawned += 1,
            Err(e) => tracing::warn!(error = %e, "could not start a worker thread"),
        }
    }
    drop(tx);

    let mut results: Vec<Option<(Result<R>, Duration)>> = (0..count).map(|_| None).collect();
    if spawned > 0 {
        let mut pending = count;
        while pending > 0 {
            let now = Instant::now();
            if now >= deadline_at {
                break;
            }
            match rx.recv_timeout(deadline_at - now) {
                Ok((index, outcome, elapsed)) => {
                    let result = outcome.unwrap_or_else(|_| {
                        Err(Error::WorkerFailed {
                            device: labels.get(index).cloned().unwrap_or_default(),
                        })
                    });
                    if let Some(slot) = results.get_mut(index) {
                        if slot.is_none() {
                            pending -= 1;
                        }
                        *slot = Some((result, elapsed));
                    }
                }
                Err(_) => break,
            }
        }
    }

    labels
        .into_iter()
        .zip(results)
        .enumerate()
        .map(|(index, (device, slot))| match slot {
            Some((result, elapsed)) => DeviceResult {
                device,
                result,
                elapsed: Some(elapsed),
            },
            None if spawned == 0 => DeviceResult {
                result: Err(Error::WorkerFailed {
                    device: device.clone(),
                }),
                device,
                elapsed: None,
            },
            None => DeviceResult {
                result: Err(Error::DeadlineExceeded {
                    device: device.clone(),
                    started: started.get(index).is_some_and(|f| f.load(Ordering::SeqCst)),
                }),
                device,
                elapsed: None,
            },
        })
        .collect()
}

/// Each device with its name as the label [`apply_parallel`] reports it under.
fn labelled<P: PersistentReservations>(devices: Vec<P>) -> Vec<(String, P)> {
    devices
        .into_iter()
        .map(|d| (d.device_name().to_string(), d))
        .collect()
}

/// Applies one PR OUT operation (e.g. PREEMPT AND ABORT of a victim key) to every device.
pub fn apply_to_all<P>(
    devices: Vec<P>,
    op: PrOperation,
    max_threads: usize,
    deadline: Duration,
) -> Vec<DeviceResult<Report>>
where
    P: PersistentReservations + 'static,
{
    let labelled = labelled(devices);
    apply_parallel(labelled, max_threads, deadline, move |d: &P| d.apply(op))
}

/// What [`preempt_and_verify_all`] found on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FenceOutcome {
    /// The PREEMPT (AND ABORT) report, merged with the READ KEYS one.
    pub report: Report,
    /// READ KEYS after the preempt no longer lists the victim (false when `verified` is).
    pub victim_removed: bool,
    /// READ KEYS could be sent. False only where no way to read keys exists (NVMe through the
    /// block layer before Linux 6.19): the target answered GOOD to the PREEMPT, but nothing
    /// confirmed it.
    pub verified: bool,
    /// Keys registered after the preempt.
    pub keys_after: Vec<ReservationKey>,
}

/// Preempts `victim` with `own` on every device in parallel, then confirms with READ KEYS
/// that the victim's key is gone (the target's own word that it refuses the victim's
/// writes). A device where the key is still listed is an error
/// ([`Error::VictimStillRegistered`]).
pub fn preempt_and_verify_all<P>(
    devices: Vec<P>,
    own: ReservationKey,
    victim: ReservationKey,
    pr_type: PrType,
    abort: bool,
    max_threads: usize,
    deadline: Duration,
) -> Vec<DeviceResult<FenceOutcome>>
where
    P: PersistentReservations + 'static,
{
    let labelled = labelled(devices);
    apply_parallel(labelled, max_threads, deadline, move |d: &P| {
        let op = PrOperation::Preempt {
            own,
            victim,
            pr_type,
            abort,
        };
        let mut report = d.apply(op)?;
        // A PREEMPT that succeeded must not be reported as failed because this kernel cannot
        // read keys through the block layer (seen on 6.1 with --backend block).
        let keys = match d.keys_for_verification() {
            Err(Error::NotSupported { .. }) => {
                return Ok(FenceOutcome {
                    report,
                    victim_removed: false,
                    verified: false,
                    keys_after: Vec::new(),
                })
            }
            other => other?,
        };
        report.attempts += keys.report.attempts;
        report.unit_attentions.extend(keys.report.unit_attentions);
        if keys.value.contains(victim) {
            return Err(Error::VictimStillRegistered {
                device: d.device_name().to_string(),
                victim,
            });
        }
        Ok(FenceOutcome {
            report,
            victim_removed: true,
            verified: true,
            keys_after: keys.value.keys,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{ScriptedTransport, Step};
    use crate::PrDevice;

    fn keys_reply(keys: &[u64]) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 1];
        b.extend_from_slice(&u32::try_from(keys.len() * 8).unwrap().to_be_bytes());
        for k in keys {
            b.extend_from_slice(&k.to_be_bytes());
        }
        b
    }

    #[test]
    fn preempt_and_verify_confirms_the_victim_key_is_gone() {
        let ok = PrDevice::new(ScriptedTransport::new(
            "/dev/sdb",
            [Step::good(), Step::data(keys_reply(&[0xa]))],
        ));
        let stale = PrDevice::new(ScriptedTransport::new(
            "/dev/sdc",
            [Step::good(), Step::data(keys_reply(&[0xa, 0xb]))],
        ));
        let results = preempt_and_verify_all(
            vec![ok, stale],
            ReservationKey(0xa),
            ReservationKey(0xb),
            PrType::WriteExclusiveRegistrantsOnly,
            true,
            2,
            Duration::from_secs(5),
        );
        let first = results[0].result.as_ref().unwrap();
        assert!(first.victim_removed && first.verified);
        assert_eq!(first.keys_after, vec![ReservationKey(0xa)]);
        assert_eq!(first.report.attempts, 2);
        let err = results[1].result.as_ref().unwrap_err();
        assert!(matches!(err, Error::VictimStillRegistered { .. }), "{err}");
        assert!(err.to_string().contains("/dev/sdc"));
    }

    /// A block-layer device on a kernel before 6.19: PR OUT works, reads do not.
    struct NoReads;

    impl PersistentReservations for NoReads {
        fn device_name(&self) -> &str {
            "/dev/nvme0n1"
        }
        fn apply(&self, _op: PrOperation) -> Result<crate::Report> {
            Ok(crate::Report::default())
        }
        fn keys(&self) -> Result<crate::Completed<crate::RegisteredKeys>> {
            Err(Error::NotSupported {
                device: "/dev/nvme0n1".into(),
                op: "IOC_PR_READ_KEYS",
            })
        }
        fn reservation(&self) -> Result<crate::Completed<crate::ReservationStatus>> {
            Err(Error::NotSupported {
                device: "/dev/nvme0n1".into(),
                op: "IOC_PR_READ_RESERVATION",
            })
        }
    }

    /// Regression (Linux 6.1, `sg-pr --backend block preempt`): the PREEMPT took effect but the
    /// command failed with exit 5 because IOC_PR_READ_KEYS does not exist before 6.19.
    #[test]
    fn preempt_without_a_way_to_read_keys_succeeds_unverified() {
        let results = preempt_and_verify_all(
            vec![NoReads],
            ReservationKey(0xa),
            ReservationKey(0xb),
            PrType::WriteExclusiveRegistrantsOnly,
            false,
            1,
            Duration::from_secs(5),
        );
        let outcome = results[0].result.as_ref().unwrap();
        assert!(!outcome.verified);
        assert!(!outcome.victim_removed);
    }

    #[test]
    fn results_come_back_in_input_order() {
        let devices = (0..5).map(|i| (format!("dev{i}"), i)).collect();
        let results = apply_parallel(devices, 2, Duration::from_secs(5), |i: &u32| Ok(i * 10));
        let values: Vec<u32> = results
            .iter()
            .map(|r| *r.result.as_ref().unwrap())
            .collect();
        assert_eq!(values, vec![0, 10, 20, 30, 40]);
        assert!(results.iter().all(|r| r.elapsed.is_some()));
    }

    #[test]
    fn hung_device_times_out_without_holding_back_the_others() {
        let (hold, hang) = mpsc::channel();
        let hung = PrDevice::new(ScriptedTransport::new("/dev/sdhung", [Step::Block(hang)]));
        let ok1 = PrDevice::new(ScriptedTransport::new("/dev/sdb", [Step::good()]));
        let ok2 = PrDevice::new(ScriptedTransport::new("/dev/sdc", [Step::good()]));
        let op = PrOperation::Preempt {
            own: ReservationKey(1),
            victim: ReservationKey(2),
            pr_type: PrType::WriteExclusiveRegistrantsOnly,
            abort: false,
        };
        let t0 = Instant::now();
        let results = apply_to_all(vec![hung, ok1, ok2], op, 4, Duration::from_millis(300));
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(
            took >= Duration::from_millis(250),
            "returned before the deadline: {took:?}"
        );
        assert!(matches!(
            results[0].result,
            Err(Error::DeadlineExceeded { started: true, .. })
        ));
        assert_eq!(results[0].device, "/dev/sdhung");
        assert!(results[1].result.is_ok());
        assert!(results[2].result.is_ok());
        let s = summarize(&results);
        assert_eq!((s.ok, s.failed, s.timed_out), (2, 1, 1));
        drop(hold); // lets the detached worker finish; its result is discarded
    }

    #[test]
    fn with_one_worker_stuck_the_queue_is_served_by_the_others() {
        let (hold, hang) = mpsc::channel();
        let mut devices = vec![(
            "stuck".to_string(),
            PrDevice::new(ScriptedTransport::new("stuck", [Step::Block(hang)])),
        )];
        for i in 0..6 {
            let name = format!("ok{i}");
            devices.push((
                name.clone(),
                PrDevice::new(ScriptedTransport::new(&name, [Step::good()])),
            ));
        }
        let results = apply_parallel(
            devices,
            2,
            Duration::from_millis(500),
            |d: &PrDevice<ScriptedTransport>| d.test_unit_ready(),
        );
        assert!(results[0].result.is_err());
        assert!(results[1..].iter().all(|r| r.result.is_ok()));
        drop(hold);
    }

    #[test]
    fn jobs_not_started_by_the_deadline_are_reported_as_not_started() {
        let (hold, hang) = mpsc::channel();
        let (hold2, hang2) = mpsc::channel();
        let devices = vec![
            ("a".to_string(), Some(hang)),
            ("b".to_string(), Some(hang2)),
            ("c".to_string(), None),
        ];
        let results = apply_parallel(
            devices,
            1,
            Duration::from_millis(100),
            |rx: &Option<mpsc::Receiver<()>>| {
                if let Some(rx) = rx {
                    let _ = rx.recv();
                }
                Ok(())
            },
        );
        assert!(matches!(
            results[0].result,
            Err(Error::DeadlineExceeded { started: true, .. })
        ));
        assert!(matches!(
            results[1].result,
            Err(Error::DeadlineExceeded { started: false, .. })
        ));
        assert!(matches!(
            results[2].result,
            Err(Error::DeadlineExceeded { started: false, .. })
        ));
        drop((hold, hold2));
    }

    #[test]
    fn a_panicking_operation_is_reported_not_propagated() {
        let devices = vec![("a".to_string(), 0u8), ("b".to_string(), 1u8)];
        let results = apply_parallel(devices, 2, Duration::from_secs(5), |v: &u8| {
            if *v == 0 {
                panic!("boom");
            }
            Ok(*v)
        });
        assert!(matches!(results[0].result, Err(Error::WorkerFailed { .. })));
        assert_eq!(*results[1].result.as_ref().unwrap(), 1);
    }

    #[test]
    fn empty_batch_returns_immediately() {
        let results = apply_parallel(
            Vec::<(String, u8)>::new(),
            4,
            Duration::from_secs(5),
            |_| Ok(()),
        );
        assert!(results.is_empty());
    }
}
