//! Test-only minimal node on voting disks, for VM scenarios (not the daemon).
//!
//! ```text
//! vdisk-node --slot N [--name NAME] [--incarnation HEX] [--marker EPOCH:GEN:DEAD[,DEAD..]]
//!            [--for SECS | --rounds N] [--period MS] [--io-deadline MS]
//!            [--until-authority EPOCH] [--write-always] DEV...
//! ```
//!
//! Every period: one `poll_round`, fold it into a `QuorumView`, then write its own slot (a
//! heartbeat; the newer of `--marker` and the authority in force as its marker) when the view
//! allows it (`may_take_part`), or always with `--write-always` (to prove that a write without a
//! majority fails closed). Prints one JSON line per round (the fields of
//! `fenced::vdisk::report::round_json_fields` plus `round`, `t_ms`, `write`, `acked`, `write_us`,
//! `self_dead`, `lease_expired`, `duplicate`) and a final `{"summary": ...}` line.
//!
//! Exit: 0 at the end of its time or rounds, or when `--until-authority` is reached; 10 when the
//! authority declares its own slot dead (a real node would fence itself there: it stops writing);
//! 11 when its lease expired (no majority read for longer than the lease: a real node stops
//! feeding its watchdog there);
//! 2 when `--until-authority` was not reached in time; 1 when the disks cannot be opened.
//! After start-up a round allocates nothing.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use fenced::vdisk::report::{self, LINE_CAPACITY};
use fenced::vdisk::{
    self, DeadSet, Marker, NodeName, OpenOptions, QuorumView, SlotBlock, SlotState, VotingDisks,
    WriteError,
};

#[derive(Debug, Parser)]
#[command(name = "vdisk-node", about = "Test-only minimal voting-disk node")]
struct Args {
    /// Own slot.
    #[arg(long)]
    slot: u8,
    /// Node name written in the slot (default `node-<slot>`).
    #[arg(long)]
    name: Option<String>,
    /// Incarnation in hex (default: random).
    #[arg(long, value_parser = parse_hex)]
    incarnation: Option<u64>,
    /// Fence marker to write: EPOCH:GENERATION:DEAD[,DEAD...] (issuer: own slot).
    #[arg(long, value_parser = parse_marker)]
    marker: Option<Marker>,
    /// Stop after this many seconds.
    #[arg(long = "for", value_name = "SECS")]
    duration: Option<f64>,
    /// Stop after this many rounds.
    #[arg(long)]
    rounds: Option<u64>,
    /// Poll period in ms (default: the disks' poll period).
    #[arg(long)]
    period: Option<u64>,
    /// I/O deadline in ms (default: the disks').
    #[arg(long)]
    io_deadline: Option<u64>,
    /// Exit 0 as soon as an authority of at least this epoch is in force.
    #[arg(long)]
    until_authority: Option<u64>,
    /// Write the own slot every round even when the view forbids it.
    #[arg(long)]
    write_always: bool,
    /// Voting disks.
    #[arg(required = true)]
    devices: Vec<PathBuf>,
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

fn parse_marker(s: &str) -> Result<Marker, String> {
    let mut parts = s.split(':');
    let mut num = |what: &str| -> Result<u64, String> {
        parts
            .next()
            .ok_or_else(|| format!("missing {what}"))?
            .parse()
            .map_err(|e| format!("{what}: {e}"))
    };
    let epoch = num("epoch")?;
    let generation = num("generation")?;
    let mut dead = DeadSet::default();
    if let Some(list) = parts.next() {
        for d in list.split(',').filter(|d| !d.is_empty()) {
            dead.insert(d.parse().map_err(|e| format!("dead slot {d}: {e}"))?);
        }
    }
    Ok(Marker {
        epoch,
        generation,
        dead,
        issuer: 0,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = OpenOptions {
        io_deadline: args.io_deadline.map(Duration::from_millis),
        ..OpenOptions::default()
    };
    let mut disks = match VotingDisks::open(&args.devices, &opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vdisk-node: {e}");
            return ExitCode::from(1);
        }
    };
    let header = *disks.header();
    let incarnation = args
        .incarnation
        .unwrap_or_else(|| vdisk::random_u64().unwrap_or(1));
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("node-{}", args.slot));
    let Some(node_name) = NodeName::new(&name) else {
        eprintln!("vdisk-node: node name too long: {name}");
        return ExitCode::from(1);
    };
    let own_marker = args.marker.map(|m| Marker {
        issuer: args.slot,
        ..m
    });
    let period = Duration::from_millis(
        args.period
            .unwrap_or_else(|| u64::from(header.timeouts.poll_ms)),
    );
    let deadline = disks.io_deadline();
    let lease = Duration::from_millis(u64::from(header.timeouts.lease_ms));
    let mut view = QuorumView::new(&header, args.devices.len(), args.slot, incarnation);
    let started = Instant::now();
    let stop_at = args
        .duration
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .and_then(|d| started.checked_add(d));
    let mut line = String::with_capacity(LINE_CAPACITY);
    let (mut rounds, mut worst, mut over_deadline) = (0u64, Duration::ZERO, 0u64);
    let (mut writes_ok, mut writes_failed) = (0u64, 0u64);
    let mut worst_write = Duration::ZERO;
    let mut next = started;
    let mut exit = 0u8;
    let mut reason = "done";
    loop {
        if args.rounds.is_some_and(|n| rounds >= n) || stop_at.is_some_and(|t| next >= t) {
            if args.until_authority.is_some() {
                exit = 2;
                reason = "authority not reached";
            }
            break;
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let round = disks.poll_round();
        let now = Instant::now();
        view.update(round, now);
        rounds += 1;
        worst = worst.max(round.elapsed());
        // As `fenced disk watch`: a tenth of the deadline is allowed for decoding.
        if round.elapsed() > deadline + deadline / 10 {
            over_deadline += 1;
        }
        let self_dead = view.self_dead();
        let lease_expired = view.majority_age(now).unwrap_or_else(|| now - started) > lease;
        let mut write: Result<usize, Option<WriteError>> = Err(None);
        let mut write_time = Duration::ZERO;
        if !self_dead && ((view.may_take_part() && !lease_expired) || args.write_always) {
            let authority = view.authority().map(|a| a.marker).unwrap_or_default();
            let marker = match own_marker {
                Some(m) if m.key() > authority.key() => m,
                _ => authority,
            };
            let block = SlotBlock {
                cluster: header.cluster,
                slot: args.slot,
                state: SlotState::Joined,
                node_name,
                incarnation,
                heartbeat_seq: view.next_own_seq(),
                heartbeat_mono_ms: fenced::vdisk::mono_ms(),
                marker,
                boot: fenced::vdisk::BootId::NIL,
                fenced_boot: fenced::vdisk::BootId::NIL,
            };
            let t = Instant::now();
            write = disks
                .write_own_slot(&block)
                .map(|ack| ack.acked)
                .map_err(Some);
            write_time = t.elapsed();
            worst_write = worst_write.max(write_time);
            match write {
                Ok(_) => writes_ok += 1,
                Err(_) => writes_failed += 1,
            }
        }
        let in_flight = disks.buffers_in_flight();
        let round = disks.last_round();
        line.clear();
        let _ = write!(
            line,
            r#"{{"round":{rounds},"t_ms":{},"mono_ms":{},"#,
            (now - started).as_millis(),
            fenced::vdisk::mono_ms()
        );
        let _ = report::round_json_fields(&mut line, round, &view, in_flight, now);
        let _ = match write {
            Ok(acked) => write!(line, r#","write":"ok","acked":{acked}"#),
            Err(None) => write!(line, r#","write":"not-attempted","acked":0"#),
            Err(Some(WriteError::NoMajority { acked, .. })) => {
                write!(line, r#","write":"no-majority","acked":{acked}"#)
            }
            Err(Some(WriteError::InvalidBlock { .. })) => {
                write!(line, r#","write":"invalid-block","acked":0"#)
            }
        };
        let _ = write!(
            line,
            r#","write_us":{},"may_take_part":{},"self_dead":{self_dead},"lease_expired":{lease_expired},"duplicate":"#,
            write_time.as_micros(),
            view.may_take_part()
        );
        let _ = match view.duplicate_own_slot() {
            Some(d) => write!(
                line,
                r#"{{"disk":{},"incarnation":"{:#018x}","seq":{}}}"#,
                d.disk, d.incarnation, d.heartbeat_seq
            ),
            None => line.write_str("null"),
        };
        line.push_str("}\n");
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
        if self_dead {
            exit = 10;
            reason = "own slot declared dead by the authority: stopped writing (self-fence)";
            break;
        }
        if lease_expired {
            exit = 11;
            reason = "lease expired: no majority read within the lease (a node stops feeding its watchdog here)";
            break;
        }
        if let (Some(want), Some(a)) = (args.until_authority, view.authority()) {
            if a.marker.epoch >= want {
                reason = "authority reached";
                break;
            }
        }
        next += period;
        if next < now {
            next = now;
        }
    }
    println!(
        r#"{{"summary":{{"rounds":{rounds},"worst_round_us":{},"over_deadline":{over_deadline},"io_deadline_ms":{},"writes_ok":{writes_ok},"writes_failed":{writes_failed},"worst_write_us":{},"duplicate":{},"incarnation":"{incarnation:#018x}","exit":{exit},"reason":"{reason}"}}}}"#,
        worst.as_micros(),
        deadline.as_millis(),
        worst_write.as_micros(),
        view.duplicate_own_slot().is_some()
    );
    ExitCode::from(exit)
}
