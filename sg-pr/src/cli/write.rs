//! PR OUT subcommands: register, reserve, release, clear, preempt. Each takes several
//! devices and runs on them in parallel with a deadline.

use serde_json::json;

use serde::Serialize;
use sg_pr::{
    apply_to_all, preempt_and_verify_all, AnyDevice, DeviceResult, Error, FenceOutcome,
    PrOperation, RegisterOptions, Report, ReservationKey,
};

use super::read::print_json;
use super::{exit, exit_code_for, print_notes, worst_exit_code, Ctx};
use sg_pr::args::{KeyArgs, Many, PreemptArgs, RegisterArgs, TypedArgs};

/// Refuses key 0 where SPC gives it no meaning, naming the option.
fn require_nonzero(option: &str, key: ReservationKey) -> Result<(), Error> {
    if key.is_zero() {
        return Err(Error::InvalidKey {
            input: format!("{option} {key}"),
            reason: "key 0 means \"no key\" here; give this host's registered non-zero key",
        });
    }
    Ok(())
}

fn usage_error(e: &Error) -> u8 {
    eprintln!("sg-pr: {e}");
    exit_code_for(e)
}

/// Opens every device, runs `op` on those that opened, prints one line (or JSON object)
/// per device, and returns the combined exit code.
fn run(ctx: &Ctx, many: &Many, op: PrOperation, what: &str) -> u8 {
    let threads = usize::from(many.threads);
    run_with(
        ctx,
        many,
        what,
        |devices| apply_to_all(devices, op, threads, many.deadline),
        |report| (report, String::new()),
    )
}

/// [`run`] for any batch operation: `batch` runs on the opened devices; `describe` gives
/// each success's report and extra text for the human line.
fn run_with<R: Serialize>(
    ctx: &Ctx,
    many: &Many,
    what: &str,
    batch: impl FnOnce(Vec<AnyDevice>) -> Vec<DeviceResult<R>>,
    describe: impl Fn(&R) -> (&Report, String),
) -> u8 {
    let mut lines: Vec<(String, Result<R, Error>)> = Vec::new();
    let mut opened = Vec::new();
    let mut order = Vec::new();
    for path in &many.devices {
        let label = path.display().to_string();
        match ctx.open_any(path) {
            Ok(dev) => {
                order.push((label, None));
                opened.push(dev);
            }
            Err(e) => order.push((label, Some(e))),
        }
    }
    let mut results = batch(opened).into_iter();
    for (label, open_error) in order {
        let result = match open_error {
            Some(e) => Err(e),
            None => match results.next() {
                Some(r) => r.result,
                None => Err(Error::WorkerFailed {
                    device: label.clone(),
                }),
            },
        };
        lines.push((label, result));
    }

    let codes: Vec<u8> = lines
        .iter()
        .map(|(_, r)| r.as_ref().map_or_else(exit_code_for, |_| exit::OK))
        .collect();
    if ctx.json {
        let items: Vec<_> = lines
            .iter()
            .zip(&codes)
            .map(|((device, r), code)| match r {
                Ok(value) => json!({ "device": device, "ok": true, "result": value }),
                Err(e) => json!({ "device": device, "ok": false, "error": e.to_string(), "exit_code": code }),
            })
            .collect();
        print_json(&json!({ "operation": what, "results": items }));
    }
    for (device, r) in &lines {
        match r {
            Ok(value) => {
                let (report, extra) = describe(value);
                if !ctx.json {
                    let how = if report.preempt_abort_fallback {
                        " (as PREEMPT: target lacks PREEMPT AND ABORT)"
                    } else {
                        ""
                    };
                    println!("{device}: {what}: done{how}{extra}");
                }
                print_notes(device, report);
            }
            Err(e) => eprintln!("sg-pr: {e}"),
        }
    }
    worst_exit_code(codes)
}

pub(super) fn register(ctx: &Ctx, a: RegisterArgs) -> u8 {
    // Key 0 unregisters, which only makes sense when a key is being replaced.
    if a.key.is_zero() && a.old_key.is_none() && !a.ignore_existing {
        return usage_error(&Error::InvalidKey {
            input: "--key 0".into(),
            reason: "0 unregisters: give --old-key (the registered key) or --ignore-existing",
        });
    }
    let op = PrOperation::Register {
        current: a.old_key.unwrap_or(ReservationKey::ZERO),
        new: a.key,
        options: RegisterOptions {
            ignore_existing: a.ignore_existing,
            aptpl: a.aptpl,
            all_target_ports: a.all_tg_pt,
        },
    };
    let what = match (a.ignore_existing, a.key.is_zero()) {
        (true, true) => "unregister (ignoring existing key)".to_string(),
        (true, false) => format!("register {} (ignoring existing key)", a.key),
        (false, true) => "unregister".to_string(),
        (false, false) => format!("register {}", a.key),
    };
    run(ctx, &a.many, op, &what)
}

pub(super) fn reserve(ctx: &Ctx, a: TypedArgs) -> u8 {
    if let Err(e) = require_nonzero("--key", a.key) {
        return usage_error(&e);
    }
    let what = format!("reserve {} with key {}", a.pr_type.short_name(), a.key);
    run(
        ctx,
        &a.many,
        PrOperation::Reserve {
            key: a.key,
            pr_type: a.pr_type,
        },
        &what,
    )
}

pub(super) fn release(ctx: &Ctx, a: TypedArgs) -> u8 {
    if let Err(e) = require_nonzero("--key", a.key) {
        return usage_error(&e);
    }
    let what = format!("release {} with key {}", a.pr_type.short_name(), a.key);
    run(
        ctx,
        &a.many,
        PrOperation::Release {
            key: a.key,
            pr_type: a.pr_type,
        },
        &what,
    )
}

pub(super) fn clear(ctx: &Ctx, a: KeyArgs) -> u8 {
    if let Err(e) = require_nonzero("--key", a.key) {
        return usage_error(&e);
    }
    let what = format!("clear with key {}", a.key);
    run(ctx, &a.many, PrOperation::Clear { key: a.key }, &what)
}

pub(super) fn preempt(ctx: &Ctx, a: PreemptArgs) -> u8 {
    if let Err(e) =
        require_nonzero("--key", a.key).and_then(|()| require_nonzero("--victim", a.victim))
    {
        return usage_error(&e);
    }
    let what = format!(
        "{} of {} ({})",
        if a.abort {
            "preempt and abort"
        } else {
            "preempt"
        },
        a.victim,
        a.pr_type.short_name()
    );
    let threads = usize::from(a.many.threads);
    let deadline = a.many.deadline;
    run_with(
        ctx,
        &a.many,
        &what,
        |devices| {
            preempt_and_verify_all(
                devices, a.key, a.victim, a.pr_type, a.abort, threads, deadline,
            )
        },
        |fence: &FenceOutcome| {
            let verdict = if fence.verified {
                "; READ KEYS confirms the victim key is gone"
            } else {
                "; NOT verified: no way to read keys on this device and kernel (READ KEYS needs SG_IO, or the block layer on Linux 6.19+)"
            };
            (&fence.report, verdict.to_string())
        },
    )
}
