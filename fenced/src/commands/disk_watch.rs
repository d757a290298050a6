//! `fenced disk watch`: poll voting disks the way the daemon does and print every round.
//!
//! Read-only: it writes no slot. For operators (is every disk answering, how long do rounds
//! take, which authority is in force, whose heartbeat stalls) and for tests in guests. After
//! start-up the loop allocates nothing: each line is formatted into a buffer allocated once.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use fenced::args::WatchArgs;
use fenced::vdisk::report::{self, LINE_CAPACITY};
use fenced::vdisk::{DiskStatus, OpenOptions, QuorumView, VotingDisks};

use super::Exit;

/// Figures over the whole watch.
#[derive(Debug, Default)]
struct Summary {
    rounds: u64,
    majority_rounds: u64,
    worst: Duration,
    worst_round: u64,
    total: Duration,
    deadline_waits: u64,
    over_deadline: u64,
    over_period: u64,
    max_in_flight: usize,
    max_majority_gap: Duration,
}

/// Runs `fenced disk watch`.
pub fn watch(args: &WatchArgs) -> Exit {
    let opts = OpenOptions {
        cluster: args.cluster,
        io_deadline: args.io_deadline.map(Duration::from_millis),
        ..OpenOptions::default()
    };
    let mut disks = match VotingDisks::open(&args.devices, &opts) {
        Ok(d) => d,
        Err(e) => {
            complain!("{e}");
            return Exit::Failure;
        }
    };
    let header = *disks.header();
    let period = Duration::from_millis(
        args.period
            .unwrap_or_else(|| u64::from(header.timeouts.poll_ms)),
    );
    let deadline = disks.io_deadline();
    let grace = args.grace.map_or(deadline / 10, Duration::from_millis);
    let lease = Duration::from_millis(u64::from(header.timeouts.lease_ms));
    let mut view = QuorumView::observer(&header, args.devices.len());
    let started = Instant::now();
    let stop_at = args.duration.and_then(|d| started.checked_add(d));
    let mut line = String::with_capacity(LINE_CAPACITY);
    let mut sum = Summary::default();
    let mut next = started;
    if !args.json {
        say!(
            "watching {} disk(s) of cluster {} ({} slots): period {} ms, I/O deadline {} ms, lease {} ms",
            args.devices.len(),
            header.cluster,
            header.slots,
            period.as_millis(),
            deadline.as_millis(),
            lease.as_millis()
        );
    }
    loop {
        if args.rounds.is_some_and(|n| sum.rounds >= n) || stop_at.is_some_and(|t| next >= t) {
            break;
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let round = disks.poll_round();
        let now = Instant::now();
        view.update(round, now);
        let elapsed = round.elapsed();
        sum.rounds += 1;
        sum.total += elapsed;
        if round.has_read_majority() {
            sum.majority_rounds += 1;
        }
        if elapsed > sum.worst {
            sum.worst = elapsed;
            sum.worst_round = sum.rounds;
        }
        if round.disk_statuses().contains(&DiskStatus::TimedOut) {
            sum.deadline_waits += 1;
        }
        if elapsed > deadline + grace {
            sum.over_deadline += 1;
        }
        if elapsed > period {
            sum.over_period += 1;
        }
        let gap = view.majority_age(now).unwrap_or(now - started);
        sum.max_majority_gap = sum.max_majority_gap.max(gap);
        // Re-borrow the round: `buffers_in_flight` needs the poller mutably.
        let in_flight = disks.buffers_in_flight();
        sum.max_in_flight = sum.max_in_flight.max(in_flight);
        let round = disks.last_round();
        line.clear();
        let _ = if args.json {
            write!(
                line,
                r#"{{"round":{},"t_ms":{},"#,
                sum.rounds,
                (now - started).as_millis()
            )
            .and_then(|()| report::round_json_fields(&mut line, round, &view, in_flight, now))
            .and_then(|()| line.write_char('}'))
        } else {
            report::round_text(&mut line, round, &view, in_flight, now)
        };
        line.push('\n');
        if std::io::stdout().lock().write_all(line.as_bytes()).is_err() {
            return Exit::Ok; // stdout closed (`| head`): nobody is listening any more
        }
        next += period;
        if next < now {
            next = now; // a round overran the period: do not try to catch up in a burst
        }
    }
    print_summary(args.json, &sum, (deadline, grace, period, lease), &view);
    Exit::Ok
}

fn print_summary(
    json: bool,
    sum: &Summary,
    (deadline, grace, period, lease): (Duration, Duration, Duration, Duration),
    view: &QuorumView,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = if sum.rounds == 0 {
        Duration::ZERO
    } else {
        sum.total / u32::try_from(sum.rounds).unwrap_or(u32::MAX)
    };
    let authority = view.authority().map(|a| a.marker).unwrap_or_default();
    if json {
        let mut marker = String::new();
        let _ = report::marker_json(&mut marker, &authority);
        say!(
            r#"{{"summary":{{"rounds":{},"majority_rounds":{},"worst_round_us":{},"worst_round":{},"mean_round_us":{},"io_deadline_ms":{},"grace_ms":{},"period_ms":{},"lease_ms":{},"deadline_waits":{},"over_deadline":{},"over_period":{},"max_in_flight":{},"max_majority_gap_ms":{},"authority":{marker}}}}}"#,
            sum.rounds,
            sum.majority_rounds,
            sum.worst.as_micros(),
            sum.worst_round,
            mean.as_micros(),
            deadline.as_millis(),
            grace.as_millis(),
            period.as_millis(),
            lease.as_millis(),
            sum.deadline_waits,
            sum.over_deadline,
            sum.over_period,
            sum.max_in_flight,
            sum.max_majority_gap.as_millis(),
        );
    } else {
        say!(
            "summary: {} rounds, {} with a read majority; round wall time mean {:.1} ms, worst {:.1} ms (round {}); {} round(s) waited out the {} ms I/O deadline for a disk, {} overran it (by more than {} ms), {} overran the {} ms period; at most {} buffer(s) in flight; longest time without a majority {:.0} ms (lease {} ms){}",
            sum.rounds,
            sum.majority_rounds,
            ms(mean),
            ms(sum.worst),
            sum.worst_round,
            sum.deadline_waits,
            deadline.as_millis(),
            sum.over_deadline,
            grace.as_millis(),
            sum.over_period,
            period.as_millis(),
            sum.max_in_flight,
            ms(sum.max_majority_gap),
            lease.as_millis(),
            if sum.max_majority_gap > lease { ": LEASE EXCEEDED" } else { "" }
        );
    }
}
