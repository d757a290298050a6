//! The daemon's decision each round: feed the watchdog, withhold it, or fence this node now.
//! Pure and allocation-free, so every rule is unit-tested.

use std::fmt;
use std::time::{Duration, Instant};

use crate::keycheck::KeyLoss;

/// Why the node is not healthy, or why it fences itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The authority on the voting disks marks this node dead.
    MarkedDead,
    /// This node's key is gone from a LUN for good: the target said it was preempted, or the
    /// key check could not register it again in time (see [`crate::keycheck`]).
    KeyGone {
        /// Index of the LUN in the key checker's LUN list.
        lun: usize,
        /// What proved it.
        cause: KeyLoss,
    },
    /// No read-majority of voting disks for longer than the lease.
    LeaseExpired,
    /// Another daemon incarnation writes this node's slot.
    DuplicateSlot,
    /// The loop itself ran late by more than it may (starved, stopped, or stuck).
    LoopLate,
    /// No read-majority of voting disks this round (the lease still runs).
    NoReadMajority,
    /// The own slot could not be written to a majority this round.
    HeartbeatNotWritten,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MarkedDead => write!(f, "the voting-disk authority marks this node dead"),
            Reason::KeyGone { lun, cause } => write!(
                f,
                "this node's reservation key is gone from LUN #{lun} ({})",
                match cause {
                    KeyLoss::Preempted => "the target reported it preempted",
                    KeyLoss::Unexplained => "storage.key_loss = \"self-fence\"",
                    KeyLoss::RegistrationLate => "registering it again took longer than the bound",
                }
            ),
            Reason::LeaseExpired => write!(
                f,
                "no read-majority of voting disks for longer than the lease"
            ),
            Reason::DuplicateSlot => {
                write!(f, "another daemon writes this node's voting-disk slot")
            }
            Reason::LoopLate => write!(f, "the daemon loop ran late beyond its deadline"),
            Reason::NoReadMajority => write!(f, "no read-majority of voting disks this round"),
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
pub struct Inputs {
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
    /// This node's key lost for good on a LUN (index, cause), from the key checker. A LUN that
    /// is unreachable or degraded is not an input: it never withholds the watchdog, because
    /// the target enforces the reservation whether or not this node can read it.
    pub key_lost: Option<(usize, KeyLoss)>,
    /// How late this round started against its schedule.
    pub lateness: Duration,
    /// The largest lateness tolerated (beyond it the loop cannot vouch for the node).
    pub max_lateness: Duration,
}

/// Decides. Self-fencing reasons come first; then anything that withholds the feed.
pub fn decide(i: &Inputs) -> Verdict {
    if i.marked_dead {
        return Verdict::SelfFence(Reason::MarkedDead);
    }
    if let Some((lun, cause)) = i.key_lost {
        return Verdict::SelfFence(Reason::KeyGone { lun, cause });
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
    Verdict::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(now: Instant) -> Inputs {
        Inputs {
            now,
            joined_at: now - Duration::from_secs(10),
            lease: Duration::from_secs(3),
            last_majority: Some(now),
            read_majority: true,
            marked_dead: false,
            duplicate_slot: false,
            heartbeat_written: true,
            key_lost: None,
            lateness: Duration::ZERO,
            max_lateness: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_node_with_fresh_majority_and_no_key_loss_is_healthy() {
        assert_eq!(decide(&base(Instant::now())), Verdict::Healthy);
    }

    #[test]
    fn marked_dead_or_key_lost_or_duplicate_fences_at_once() {
        let now = Instant::now();
        let mut i = base(now);
        i.marked_dead = true;
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::MarkedDead));
        for cause in [
            KeyLoss::Preempted,
            KeyLoss::Unexplained,
            KeyLoss::RegistrationLate,
        ] {
            let mut i = base(now);
            i.key_lost = Some((2, cause));
            assert_eq!(
                decide(&i),
                Verdict::SelfFence(Reason::KeyGone { lun: 2, cause })
            );
        }
        let mut i = base(now);
        i.duplicate_slot = true;
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::DuplicateSlot));
    }

    #[test]
    fn losing_the_majority_withholds_the_feed_until_the_lease_runs_out() {
        let now = Instant::now();
        let mut i = base(now);
        i.read_majority = false;
        i.last_majority = Some(now - Duration::from_secs(2));
        assert_eq!(decide(&i), Verdict::Unhealthy(Reason::NoReadMajority));
        i.last_majority = Some(now - Duration::from_millis(3001));
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::LeaseExpired));
    }

    #[test]
    fn the_lease_counts_from_joining_before_any_majority_read() {
        let now = Instant::now();
        let mut i = base(now);
        i.last_majority = None;
        i.read_majority = false;
        i.joined_at = now - Duration::from_secs(1);
        assert_eq!(decide(&i), Verdict::Unhealthy(Reason::NoReadMajority));
        i.joined_at = now - Duration::from_secs(4);
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::LeaseExpired));
    }

    #[test]
    fn a_late_loop_fences_and_a_failed_heartbeat_withholds() {
        let now = Instant::now();
        let mut i = base(now);
        i.lateness = Duration::from_millis(1500);
        assert_eq!(decide(&i), Verdict::SelfFence(Reason::LoopLate));
        let mut i = base(now);
        i.heartbeat_written = false;
        assert_eq!(decide(&i), Verdict::Unhealthy(Reason::HeartbeatNotWritten));
    }
}
