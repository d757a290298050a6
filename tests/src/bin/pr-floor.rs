//! The floor of a fence, for the benchmarks (issue 14): on every given LUN at once (one sg-pr
//! batch, one thread), the verified chain a fence needs per LUN and nothing else: PREEMPT AND
//! ABORT of the victim's key, READ KEYS, READ RESERVATION. Prints one JSON line with the time
//! from the first command to the last completion. Not shipped: it preempts without any of the
//! fence's checks.
//!
//! ```text
//! pr-floor OWN_KEY VICTIM_KEY DEVICE...
//! ```
//!
//! Devices with no sg node (NVMe namespaces: block-layer PR ioctls and NVMe passthrough, with no
//! asynchronous form) get the same chain one device after another, as fenced sends them; the
//! JSON then says `"serial": true`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use sg_pr::batch::{run, Answer, Failed, Job, Reply, Request, SgQueue, Step};
use sg_pr::{
    AnyDevice, Backend, PersistentReservations, PrOperation, PrType, ReservationKey, RetryPolicy,
};

/// PREEMPT AND ABORT, READ KEYS, READ RESERVATION on one device.
struct Chain {
    device: usize,
    own: ReservationKey,
    victim: ReservationKey,
    sent: usize,
    error: Option<String>,
    victim_gone: bool,
}

impl Job for Chain {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        match last {
            Some(Err(f)) => {
                self.error = Some(f.error.to_string());
                return None;
            }
            Some(Ok(Reply::Keys(k))) => self.victim_gone = !k.value.contains(self.victim),
            _ => {}
        }
        let request = match self.sent {
            0 => Request::Out(PrOperation::Preempt {
                own: self.own,
                victim: self.victim,
                pr_type: PrType::WriteExclusiveRegistrantsOnly,
                abort: true,
            }),
            1 => Request::ReadKeys,
            2 => Request::ReadReservation,
            _ => return None,
        };
        self.sent += 1;
        Some(Step {
            device: self.device,
            request,
        })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = |s: Option<&String>| s.and_then(|s| ReservationKey::parse_nonzero(s).ok());
    let (Some(own), Some(victim)) = (key(args.first()), key(args.get(1))) else {
        println!(
            "{}",
            json!({ "error": "usage: pr-floor OWN_KEY VICTIM_KEY DEVICE..." })
        );
        return ExitCode::FAILURE;
    };
    let devices = &args[2..];
    let serial = devices.iter().any(|d| !has_sg_node(d));
    let mut queue = SgQueue::new();
    // Serially, the devices are opened first, as the daemon holds its devices open: the time is
    // the commands'.
    let opened: Vec<sg_pr::Result<AnyDevice>> = if serial {
        devices
            .iter()
            .map(|d| AnyDevice::open(d, Backend::Auto, Duration::from_secs(10)))
            .collect()
    } else {
        Vec::new()
    };
    let mut chains: Vec<Chain> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| Chain {
            device: if serial { i } else { queue.add(Path::new(d)) },
            own,
            victim,
            sent: 0,
            error: None,
            victim_gone: false,
        })
        .collect();
    let start = Instant::now();
    if serial {
        for (chain, dev) in chains.iter_mut().zip(&opened) {
            match dev {
                Ok(dev) => drive(chain, dev),
                Err(e) => chain.error = Some(e.to_string()),
            }
        }
    } else {
        let mut jobs: Vec<&mut dyn Job> = chains.iter_mut().map(|c| c as &mut dyn Job).collect();
        run(
            &mut queue,
            &mut jobs,
            &RetryPolicy::default(),
            Duration::from_secs(10),
            start + Duration::from_secs(60),
        );
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let errors: Vec<&String> = chains.iter().filter_map(|c| c.error.as_ref()).collect();
    let gone = chains.iter().filter(|c| c.victim_gone).count();
    let mut out = json!({ "luns": chains.len(), "ms": ms, "victim_gone": gone, "errors": errors });
    if serial {
        out["serial"] = json!(true);
    }
    println!("{out}");
    if errors.is_empty() && gone == chains.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `job` on `dev` one command at a time (the block layer's PR ioctls have no asynchronous
/// form).
fn drive(job: &mut dyn Job, dev: &AnyDevice) {
    let failed = |error| Failed {
        error,
        report: Default::default(),
    };
    let mut answer = None;
    while let Some(step) = job.next(answer.take()) {
        answer = Some(match step.request {
            Request::ReadKeys => dev.keys().map(Reply::Keys).map_err(failed),
            Request::ReadReservation => dev.reservation().map(Reply::Reservation).map_err(failed),
            Request::Out(op) => dev.apply(op).map(Reply::Out).map_err(failed),
            Request::TestUnitReady => Err(failed(sg_pr::Error::NotSupported {
                device: dev.device_name().to_string(),
                op: "TEST UNIT READY",
            })),
        });
    }
}

/// Whether `device` (`/dev/sdX`, `/dev/sgN`) has an sg node to send asynchronous commands to.
fn has_sg_node(device: &str) -> bool {
    let name = device.rsplit('/').next().unwrap_or(device);
    name.starts_with("sg") || Path::new(&format!("/sys/block/{name}/device/scsi_generic")).exists()
}
