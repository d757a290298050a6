//! `fenced disk format|dump` (`watch` is in `disk_watch.rs`).

use serde_json::{json, Value};

use fenced::args::{DiskCommand, DumpArgs, FormatArgs};
use fenced::vdisk::admin::{self, AdminError, DiskDump};
use fenced::vdisk::{
    compute_authority, BlockError, ClusterId, Header, Marker, Observation, SlotBlock,
};

use super::progress::Progress;
use super::Exit;

/// Runs a voting-disk command.
pub fn run(cmd: DiskCommand) -> Exit {
    match cmd {
        DiskCommand::Format(args) => format(&args),
        DiskCommand::Dump(args) => dump(&args),
        DiskCommand::Watch(args) => super::disk_watch::watch(&args),
    }
}

fn format(args: &FormatArgs) -> Exit {
    let timeouts = args.timeouts.timeouts();
    if let Err(msg) = timeouts.check() {
        complain!("invalid timeouts: {msg}");
        return Exit::Failure;
    }
    format_disks(
        &args.devices,
        &Header::new(args.cluster, args.slots, timeouts),
        args.force,
    )
}

/// Formats `devices` with `header`; without `force`, refused (every disk untouched) when one
/// holds a voting-disk header or other data.
pub(super) fn format_disks(devices: &[std::path::PathBuf], header: &Header, force: bool) -> Exit {
    // Check every disk before writing any, so a refusal leaves all of them untouched.
    if !force {
        for dev in devices {
            match admin::read_disk(dev, None) {
                Err(AdminError::NotFormatted { .. }) => {}
                Err(e @ (AdminError::Open { .. } | AdminError::Read { .. })) => {
                    complain!("{e}");
                    return Exit::Failure;
                }
                Ok(d) => {
                    complain!(
                        "{}: already a voting disk of cluster {} with {} slots; refusing to overwrite it without --force",
                        dev.display(),
                        d.header.cluster,
                        d.header.slots
                    );
                    return Exit::Refused;
                }
                Err(AdminError::TooSmall { .. }) => {} // reported by format_disk with the right size
                Err(e) => {
                    complain!("{e}; refusing to overwrite it without --force");
                    return Exit::Refused;
                }
            }
        }
    }
    let mut status = Exit::Ok;
    for (i, dev) in devices.iter().enumerate() {
        let progress = Progress::start(
            false,
            format!(
                "formatting voting disk {} of {}: {}",
                i + 1,
                devices.len(),
                dev.display()
            ),
        );
        let result = admin::format_disk(dev, header, force);
        drop(progress);
        match result {
            Ok(()) => say!(
                "{}: formatted: cluster {}, {} slots, format v{}",
                dev.display(),
                header.cluster,
                header.slots,
                header.version
            ),
            Err(e @ AdminError::WouldOverwrite { .. }) => {
                complain!("{e}");
                return Exit::Refused;
            }
            Err(e) => {
                complain!("{e}");
                status = Exit::Failure;
            }
        }
    }
    status
}

fn marker_json(m: &Marker) -> Value {
    json!({
        "epoch": m.epoch,
        "generation": m.generation,
        "issuer": m.issuer,
        "dead": m.dead.iter().collect::<Vec<_>>(),
    })
}

fn marker_text(m: &Marker) -> String {
    if !m.is_present() {
        return "none".into();
    }
    format!(
        "epoch {} generation {} issuer {} dead {:?}",
        m.epoch,
        m.generation,
        m.issuer,
        m.dead.iter().collect::<Vec<_>>()
    )
}

fn slot_json(slot: usize, s: &Result<SlotBlock, BlockError>) -> Value {
    match s {
        Ok(b) => json!({
            "slot": slot,
            "verdict": "ok",
            "node": b.node_name.as_str(),
            "state": b.state.as_str(),
            "self_fence_cause": b.state.self_fence_cause().map(|c| c.as_str()),
            "incarnation": format!("{:#018x}", b.incarnation),
            "heartbeat_seq": b.heartbeat_seq,
            "heartbeat_mono_ms": b.heartbeat_mono_ms,
            "boot": (!b.boot.is_nil()).then(|| b.boot.to_string()),
            "fenced_boot": (!b.fenced_boot.is_nil()).then(|| b.fenced_boot.to_string()),
            "marker": if b.marker.is_present() { marker_json(&b.marker) } else { Value::Null },
        }),
        Err(e) => json!({ "slot": slot, "verdict": verdict_name(e), "error": e.to_string() }),
    }
}

fn verdict_name(e: &BlockError) -> &'static str {
    match e {
        BlockError::NeverWritten => "never-written",
        BlockError::BadMagic => "bad-magic",
        BlockError::NewerVersion { .. } => "newer-version",
        BlockError::InvalidVersion => "invalid-version",
        BlockError::BadCrc { .. } => "bad-crc",
        BlockError::Torn => "torn",
        BlockError::ForeignCluster { .. } => "foreign-cluster",
        BlockError::WrongSlot { .. } => "wrong-slot",
        BlockError::InvalidField(_) => "invalid-field",
    }
}

fn dump(args: &DumpArgs) -> Exit {
    let mut results: Vec<Result<DiskDump, AdminError>> = args
        .devices
        .iter()
        .map(|d| admin::read_disk(d, args.cluster))
        .collect();
    // Without --cluster, the reference is the cluster most readable disks carry.
    let reference = args.cluster.or_else(|| {
        let clusters: Vec<ClusterId> = results.iter().flatten().map(|d| d.header.cluster).collect();
        clusters
            .iter()
            .max_by_key(|c| clusters.iter().filter(|x| x == c).count())
            .copied()
    });
    if let Some(reference) = reference {
        for r in &mut results {
            if let Ok(d) = r {
                if d.header.cluster != reference {
                    *r = Err(AdminError::ForeignCluster {
                        path: d.path.clone(),
                        found: d.header.cluster,
                        expected: reference,
                    });
                }
            }
        }
    }
    let mut observations = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if let Ok(d) = r {
            for b in d.slots.iter().flatten() {
                observations.push(Observation {
                    disk: u8::try_from(i).unwrap_or(u8::MAX),
                    marker: b.marker,
                });
            }
        }
    }
    let outcome = compute_authority(results.len(), &mut observations);
    let failed = results.iter().any(Result::is_err);

    if args.json {
        let disks: Vec<Value> = results
            .iter()
            .zip(&args.devices)
            .map(|(r, path)| match r {
                Ok(d) => json!({
                    "path": path,
                    "ok": true,
                    "size": d.size,
                    "header": {
                        "version": d.header.version,
                        "cluster": d.header.cluster.to_string(),
                        "slots": d.header.slots,
                        "block_size": d.header.block_size,
                        "poll_ms": d.header.timeouts.poll_ms,
                        "io_deadline_ms": d.header.timeouts.io_deadline_ms,
                        "lease_ms": d.header.timeouts.lease_ms,
                        "watchdog_ms": d.header.timeouts.watchdog_ms,
                    },
                    "never_written_slots": d.slots.iter().filter(|s| **s == Err(BlockError::NeverWritten)).count(),
                    "slots": d.slots.iter().enumerate()
                        .filter(|(_, s)| **s != Err(BlockError::NeverWritten))
                        .map(|(i, s)| slot_json(i, s)).collect::<Vec<_>>(),
                }),
                Err(e) => json!({ "path": path, "ok": false, "error": e.to_string() }),
            })
            .collect();
        let out = json!({
            "disks": disks,
            "authority": outcome.authority.map(|a| json!({
                "marker": marker_json(&a.marker),
                "disks": a.disks,
                "of": results.len(),
            })),
            "authority_conflict": outcome.conflict,
        });
        say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for r in &results {
            match r {
                Ok(d) => print_disk_text(d),
                Err(e) => complain!("{e}"),
            }
        }
        match outcome.authority {
            Some(a) => say!(
                "authority: {} (on {} of {} disks){}",
                marker_text(&a.marker),
                a.disks,
                results.len(),
                if outcome.conflict {
                    " CONFLICT: another marker with the same epoch/generation is also on a majority"
                } else {
                    ""
                }
            ),
            None => say!(
                "authority: none (no fence marker is on a majority of {} disks)",
                results.len()
            ),
        }
    }
    if failed {
        Exit::Failure
    } else {
        Exit::Ok
    }
}

fn print_disk_text(d: &DiskDump) {
    let h = &d.header;
    say!(
        "{}: cluster {} format v{} slots {} block {} size {} | poll {} ms, io deadline {} ms, lease {} ms, watchdog {} ms",
        d.path.display(),
        h.cluster,
        h.version,
        h.slots,
        h.block_size,
        d.size,
        h.timeouts.poll_ms,
        h.timeouts.io_deadline_ms,
        h.timeouts.lease_ms,
        h.timeouts.watchdog_ms
    );
    let mut never = 0;
    for (i, s) in d.slots.iter().enumerate() {
        match s {
            Err(BlockError::NeverWritten) => never += 1,
            Ok(b) => say!(
                "  slot {i:3}: ok  node {:?} {}{} incarnation {:#018x} seq {} mono {} ms boot {}{} marker {}",
                b.node_name.as_str(),
                b.state.as_str(),
                b.state
                    .self_fence_cause()
                    .map(|c| format!(" ({})", c.as_str()))
                    .unwrap_or_default(),
                b.incarnation,
                b.heartbeat_seq,
                b.heartbeat_mono_ms,
                if b.boot.is_nil() { "-".to_string() } else { b.boot.to_string() },
                if b.fenced_boot.is_nil() {
                    String::new()
                } else {
                    format!(" (waits to be let back in, fenced in boot {})", b.fenced_boot)
                },
                marker_text(&b.marker)
            ),
            Err(e) => say!("  slot {i:3}: REJECTED ({}): {e}", verdict_name(e)),
        }
    }
    say!("  {never} slot(s) never written");
}
