//! One poll round as a line of text or JSON, for `fenced disk watch` and test drivers.
//!
//! Writes into any [`fmt::Write`] and allocates nothing itself: give it a `String` created with
//! enough capacity (see [`LINE_CAPACITY`]) and clear it each round, and the round path of a
//! watcher stays allocation-free like the poller.

use std::fmt::{self, Write};
use std::time::{Duration, Instant};

use super::format::{DeadSet, Marker};
use super::uring::{DiskStatus, RoundReport};
use super::view::QuorumView;

/// A buffer capacity that holds one JSON round line of 32 disks and 255 live slots.
pub const LINE_CAPACITY: usize = 96 * 1024;

/// Short name of a disk's status in a round, as printed.
pub fn status_name(s: &DiskStatus) -> &'static str {
    match s {
        DiskStatus::Answered => "answered",
        DiskStatus::Excluded => "excluded",
        DiskStatus::Busy => "busy",
        DiskStatus::TimedOut => "timed-out",
        DiskStatus::IoError(_) => "io-error",
        DiskStatus::ShortTransfer(_) => "short-transfer",
        DiskStatus::BadHeader(_) => "bad-header",
        DiskStatus::HeaderChanged => "header-changed",
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

/// Writes `s` as a JSON string literal.
fn json_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            c if u32::from(c) < 0x20 => write!(w, "\\u{:04x}", u32::from(c))?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

fn dead_json(w: &mut impl Write, dead: &DeadSet) -> fmt::Result {
    w.write_char('[')?;
    for (i, s) in dead.iter().enumerate() {
        if i > 0 {
            w.write_char(',')?;
        }
        write!(w, "{s}")?;
    }
    w.write_char(']')
}

/// Writes a marker as a JSON object (`null` when no fence event is present).
pub fn marker_json(w: &mut impl Write, m: &Marker) -> fmt::Result {
    if !m.is_present() {
        return w.write_str("null");
    }
    write!(
        w,
        r#"{{"epoch":{},"generation":{},"issuer":{},"dead":"#,
        m.epoch, m.generation, m.issuer
    )?;
    dead_json(w, &m.dead)?;
    w.write_char('}')
}

/// Valid and rejected (present but invalid) slot blocks of `disk` this round.
fn slot_counts(round: &RoundReport, disk: usize) -> (usize, usize) {
    let (mut valid, mut rejected) = (0, 0);
    for slot in 0..round.slot_count() {
        match round.slot(disk, slot) {
            Some(Ok(_)) => valid += 1,
            Some(Err(super::format::BlockError::NeverWritten)) | None => {}
            Some(Err(_)) => rejected += 1,
        }
    }
    (valid, rejected)
}

/// Writes the JSON fields (no surrounding braces) describing one round and the view after it:
/// `wall_us`, `answered`, `disks` (status, valid and rejected slot blocks), `majority`,
/// `majority_age_ms`, `authority` (this round's), `view_authority` (newest seen), `conflict`,
/// `in_flight` (buffers still owned by the kernel) and `slots` (every slot with a heartbeat:
/// name, state, incarnation, sequence, age of its last change in ms).
pub fn round_json_fields(
    w: &mut impl Write,
    round: &RoundReport,
    view: &QuorumView,
    in_flight: usize,
    now: Instant,
) -> fmt::Result {
    write!(
        w,
        r#""wall_us":{},"answered":{},"disks":["#,
        round.elapsed().as_micros(),
        round.answered_disks()
    )?;
    for (disk, status) in round.disk_statuses().iter().enumerate() {
        if disk > 0 {
            w.write_char(',')?;
        }
        let (valid, rejected) = slot_counts(round, disk);
        write!(
            w,
            r#"{{"status":"{}","valid":{valid},"rejected":{rejected}"#,
            status_name(status)
        )?;
        if let DiskStatus::IoError(errno) = status {
            write!(w, r#","errno":{errno}"#)?;
        }
        w.write_char('}')?;
    }
    write!(
        w,
        r#"],"majority":{},"majority_age_ms":"#,
        round.has_read_majority()
    )?;
    match view.majority_age(now) {
        Some(age) => write!(w, "{}", millis(age))?,
        None => w.write_str("null")?,
    }
    w.write_str(r#","authority":"#)?;
    match round.authority().authority {
        Some(a) => {
            w.write_str(r#"{"marker":"#)?;
            marker_json(w, &a.marker)?;
            write!(w, r#","disks":{}}}"#, a.disks)?;
        }
        None => w.write_str("null")?,
    }
    w.write_str(r#","view_authority":"#)?;
    match view.authority() {
        Some(a) => marker_json(w, &a.marker)?,
        None => w.write_str("null")?,
    }
    write!(
        w,
        r#","conflict":{},"in_flight":{in_flight},"slots":["#,
        round.authority().conflict
    )?;
    let mut first = true;
    for node in view.nodes() {
        let Some((incarnation, seq)) = node.heartbeat else {
            continue;
        };
        if !first {
            w.write_char(',')?;
        }
        first = false;
        write!(w, r#"{{"slot":{},"node":"#, node.slot)?;
        json_str(w, node.node_name.as_ref().map_or("", |n| n.as_str()))?;
        write!(
            w,
            r#","state":"{}","incarnation":"{incarnation:#018x}","seq":{seq},"age_ms":"#,
            node.state.map_or("unknown", |s| s.as_str())
        )?;
        match node.age(now) {
            Some(age) => write!(w, "{}", millis(age))?,
            None => w.write_str("null")?,
        }
        w.write_char('}')?;
    }
    w.write_char(']')
}

/// Writes one round as a line of text for operators (no trailing newline).
pub fn round_text(
    w: &mut impl Write,
    round: &RoundReport,
    view: &QuorumView,
    in_flight: usize,
    now: Instant,
) -> fmt::Result {
    write!(
        w,
        "round {} wall {:.1} ms | disks {}/{} [",
        view.rounds(),
        round.elapsed().as_secs_f64() * 1e3,
        round.answered_disks(),
        round.disk_count()
    )?;
    for (disk, status) in round.disk_statuses().iter().enumerate() {
        if disk > 0 {
            w.write_char(' ')?;
        }
        w.write_str(status_name(status))?;
        if let DiskStatus::IoError(errno) = status {
            write!(w, "({errno})")?;
        }
        let (_, rejected) = slot_counts(round, disk);
        if rejected > 0 {
            write!(w, ",{rejected} rejected")?;
        }
    }
    write!(
        w,
        "] majority {}",
        if round.has_read_majority() {
            "yes"
        } else {
            "NO"
        }
    )?;
    if let Some(age) = view.majority_age(now) {
        if !round.has_read_majority() {
            write!(w, " (last {} ms ago)", millis(age))?;
        }
    }
    match round.authority().authority {
        Some(a) => {
            let m = a.marker;
            write!(
                w,
                " | authority epoch {} gen {} issuer {} dead {:?} on {}/{}",
                m.epoch,
                m.generation,
                m.issuer,
                m.dead,
                a.disks,
                round.disk_count()
            )?;
        }
        None => w.write_str(" | authority none")?,
    }
    if in_flight > 0 {
        write!(w, " | {in_flight} buffer(s) still in flight")?;
    }
    w.write_str(" | slots")?;
    let mut any = false;
    for node in view.nodes() {
        let Some((_, seq)) = node.heartbeat else {
            continue;
        };
        any = true;
        write!(
            w,
            " {}:{} seq {seq} age {} ms",
            node.slot,
            node.node_name.as_ref().map_or("", |n| n.as_str()),
            node.age(now).map_or(0, millis)
        )?;
    }
    if !any {
        w.write_str(" none")?;
    }
    Ok(())
}
