//! The daemon's decision each round: feed the watchdog, withhold it, or fence this node now.
//! Pure and allocation-free, so every rule is unit-tested.

use std::fmt;
use std::time::{Duration, Instant};

/// Why the node is not healthy, or why it fences itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The authority on the voting disks marks this node dead.
    MarkedDead,
    /// READ KEYS on a LUN answered and this node's key is not there: it was preempted.
    KeyGone {
        /// Index of the LUN in the daemon's LUN list.
        lun: usize,
    },
    /// No read-majority of voting disks for longer than the lease.
    LeaseExpired,
    /// Another daemon incarnation writes this node's slot.
    DuplicateSlot,
    /// The loop itself ran late by more than it may (starved, stopped, or stuck).
    LoopLate,
    /// No read-majority of voting disks this round (the lease still runs).
    NoReadMajority,
    /// A LUN's keys have not been confirmed within the lease (the check hangs or fails).
    KeysUnconfirmed {
        /// Index of the LUN.
        lun: usize,
    },
    /// The own slot could not be written to a majority this round.
    HeartbeatNotWritten,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MarkedDead => write!(f, "the voting-disk authority marks this node dead"),
            Reason::KeyGone { lun } => {
                write!(f, "this node's reservation key is gone from LUN #{lun}")
            }
            Reason::LeaseExpired => write!(
                f,
                "no read-majority of voting disks for longer than the lease"
            ),
            Reason::DuplicateSlot => {
                write!(f, "another daemon writes this node's voting-disk slot")
            }
            Reason::LoopLate => write!(f, "the daemon loop ran late beyond its deadline"),
            Reason::NoReadMajority => write!(f, "no read-majority of voting disks this round"),
            Reason::KeysUnconfirmed { lun } => {
                write!(
                    f,
                    "the keys on LUN #{lun} were not confirmed within the lease"
                )
            }
            Reason::HeartbeatNotWritten => {
                write!(f, "the heartbeat did not reach a majority of voting disks")
            }
        }
    }
}

/// What to do this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Feed the watchdog and tell systemd.
    Healthy,
    /// Do not feed: if this lasts, the watchdog resets the node.
    Unhealthy(Reason),
    /// Fence this node now.
    SelfFence(Reason),
}

/// What the loop knows this round.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Now (CLOCK_MONOTONIC).
    pub now: Instant,
    /// When the daemon joined (leases count from here before the first majority read).
    pub joined_at: Instant,
    /// The lease L.
    pub lease: Duration,
    /// When a read-majority was last seen.
    pub last_majority: Option<Instant>,
    /// Whether this round had a read-majority.
    pub read_majority: bool,
    /// The authority marks this node dead.
    pub marked_dead: bool,
    /// Another incarnation writes our slot.
    pub duplicate_slot: bool,
    /// Whether this round's heartbeat reached a majority.
    pub heartbeat_written: bool,
    /// Per LUN: when its keys were last confirmed to include ours (None: never).
    pub keys_confirmed: &'a [Option<Instant>],
    /// Per LUN: READ KEYS answered without our key.
    pub keys_gone: &'a [bool],
    /// How late this round started against its schedule.
    pub lateness: Duration,
    /// The largest lateness tolerated (beyond it the loop cannot vouch for the node).
    pub max_lateness: Duration,
}

/// Decides. Self-fencing reasons come first; then anything that withholds the feed.
pub fn decide(i: &Inputs<'_>) -> Verdict {
    if i.marked_dead {
        return Verdict::SelfFence(Reason::MarkedDead);
    }
    if let Some(lun) = i.keys_gone.iter().position(|&g| g) {
        return Verdict::SelfFence(Reason::KeyGone { lun });
    }
    if i.duplicate_slot {
        return Verdict::SelfFence(Reason::DuplicateSlot);
    }
    let since = i.last_majority.unwrap_or(i.joined_at);
    if i.now.saturating_duration_since(since) > i.lease {
        return Verdict::SelfFence(Reason::LeaseExpired);
    }
    if i.lateness > i.max_lateness {
        return Verdict::SelfFence(Reason::LoopLate);
    }
    if !i.read_majority {
        return Verdict::Unhealthy(Reason::NoReadMajority);
    }
    if !i.heartbeat_written {
        return Verdict::Unhealthy(Reason::HeartbeatNotWritten);
    }
    for (lun, confirmed) in i.keys_confirmed.iter().enumerate() {
        let since = confirmed.unwrap_or(i.joined_at);
        if i.now.saturating_duration_since(since) > i.lease {
            return Verdict::Unhealthy(Reason::KeysUnconfirmed { lun });
        }
    }
    Verdict::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base<'a>(now: Instant, confirmed: &'a [Option<Instant>], gone: &'a [bool]) -> Inputs<'a> {
        Inputs {
            now,
            joined_at: now - Duration::from_secs(10),
            lease: Duration::from_secs(3),
            last_majority: Some(now),
            read_majority: true,
            marked_dead: false,
            duplicate_slot: false,
            heartbeat_written: true,
            keys_confirmed: confirmed,
            keys_gone: gone,
            lateness: Duration::ZERO,
            max_lateness: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_node_with_fresh_majority_and_keys_is_healthy() {
        let now = Instant::now();
        let c = [Some(now), Some(now - Duration::from_secs(2))];
        assert_eq!(decide(&base(now, &c, &[false, false])), Verdict::Healthy);
    }

    #[test]
    fn marked_dead_or_key_gone_or_duplicate_fences_at_once() {
        let now = Instant::now();
        let c = [Some(now)];
        let mut i = base(now, &c, &[false]);
        i.marked_dead = true;
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::MarkedDead));
        let i = base(now, &c, &[true]);
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::KeyGone { lun: 0 }));
        let mut i = base(now, &c, &[false]);
        i.duplicate_slot = true;
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::DuplicateSlot));
    }

    #[test]
    fn losing_the_majority_withholds_the_feed_until_the_lease_runs_out() {
        let now = Instant::now();
        let c = [Some(now)];
        let mut i = base(now, &c, &[false]);
        i.read_majority = false;
        i.last_majority = Some(now - Duration::from_secs(2));
        assert_eq!(decide(&i), Verdict::Unhealthy(Reason::NoReadMajority));
        i.last_majority = Some(now - Duration::from_millis(3001));
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::LeaseExpired));
    }

    #[test]
    fn the_lease_counts_from_joining_before_any_majority_read() {
        let now = Instant::now();
        let c = [Some(now)];
        let mut i = base(now, &c, &[false]);
        i.last_majority = None;
        i.read_majority = false;
        i.joined_at = now - Duration::from_secs(1);
        assert_eq!(decide(&i), Verdict::Unhealthy(Reason::NoReadMajority));
        i.joined_at = now - Duration::from_secs(4);
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::LeaseExpired));
    }

    #[test]
    fn unconfirmed_keys_withhold_the_feed_but_do_not_fence() {
        let now = Instant::now();
        let c = [Some(now), Some(now - Duration::from_secs(4))];
        assert_eq!(
            decide(&base(now, &c, &[false, false])),
            Verdict::Unhealthy(Reason::KeysUnconfirmed { lun: 1 })
        );
        let c = [None];
        let mut i = base(now, &c, &[false]);
        i.joined_at = now - Duration::from_secs(1);
        assert_eq!(decide(&i), Verdict::Healthy, "fresh after joining");
    }

    #[test]
    fn a_late_loop_fences_and_a_failed_heartbeat_withholds() {
        let now = Instant::now();
        let c = [Some(now)];
        let mut i = base(now, &c, &[false]);
        i.lateness = Duration::from_millis(1500);
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::LoopLate));
        let mut i = base(now, &c, &[false]);
        i.heartbeat_written = false;
        assert_eq!(decide(&i), Verdict::Unhealthy(Reason::HeartbeatNotWritten));
    }
}
