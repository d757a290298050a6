//! Fencing another node, and letting it back in.
//!
//! `fence(victim)`:
//! 1. Refuse when the authority on the voting disks marks *us* dead (an ejected node cannot
//!    eject another), or when the victim is us.
//! 2. **Race on the arbiter LUN.** The LUNs are in one cluster-wide order (by VPD 0x83 id); the
//!    first one that answers decides: we PREEMPT (AND ABORT) the victim's key there. The target
//!    performs a preempt atomically, so when two survivors fence each other at once exactly one
//!    succeeds; the other finds its own key gone (RESERVATION CONFLICT) and has lost — it fails
//!    the command, and its daemon fences it when the key check sees the key gone. (Writing the
//!    marker first, as a plain "highest marker wins" rule, cannot give exactly one winner when
//!    two issuers write concurrently and read each other at different times; the target's
//!    preempt is a compare-and-swap we get for free, as in Veritas' coordinator-disk race.)
//! 3. **Marker**: epoch + 1, the victim added to the dead set, written to a majority of voting
//!    disks (t0). From then on every node reads the victim dead; the victim fences itself on its
//!    next round or is reset by its watchdog at most L + W after its last good read.
//! 4. **Every other LUN**: PREEMPT (AND ABORT, falling back to PREEMPT where the target lacks
//!    it) in parallel, then READ KEYS confirms the victim's key is gone and READ RESERVATION that
//!    a reservation is held.
//!
//! Any doubt ends in an error (fail closed). Fencing an already fenced node succeeds without
//! changing anything.

use std::path::Path;
use std::time::{Duration, Instant};

use sg_pr::{apply_parallel, PersistentReservations, PrOperation, ReservationKey};

use crate::config::{Config, Member};
use crate::luns::{open_path, Lun, FENCING_TYPE};
use crate::vdisk::{DeadSet, Marker};

/// Reads the authority and publishes this node's marker: through the running daemon's loop, or
/// directly on the voting disks when no daemon runs.
pub trait MarkerChannel {
    /// The current authority marker (epoch 0 = none yet).
    fn authority(&mut self) -> Result<Marker, String>;
    /// Writes `marker` in this node's slot to a majority of voting disks; returns when it got
    /// there (t0).
    fn publish(&mut self, marker: Marker, deadline: Duration) -> Result<Instant, String>;
}

/// Why a fence failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The command was refused before anything changed.
    #[error("{0}")]
    Refused(String),
    /// Another node fenced us first.
    #[error("lost the fence race: our key is gone from {lun}; this node is the one fenced (its daemon resets it)")]
    LostRace {
        /// The arbiter LUN.
        lun: String,
    },
    /// Voting disks could not be read or written.
    #[error("voting disks: {0}")]
    Quorum(String),
    /// No LUN answered the arbiter race.
    #[error("no LUN answered the fence race: {0}; nothing was changed")]
    NoArbiter(String),
    /// Some LUNs could not be confirmed.
    #[error("the victim is not confirmed cut off from every LUN: {failed} of {total} failed (see the per-LUN results); retry, or check those LUNs' paths")]
    Incomplete {
        /// What was done.
        report: Box<FenceReport>,
        /// LUNs that failed.
        failed: usize,
        /// All LUNs.
        total: usize,
    },
}

/// One LUN's part in a fence.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LunFence {
    /// LUN id.
    pub lun: String,
    /// What happened: `preempted`, `preempted (PREEMPT AND ABORT unsupported: plain PREEMPT)`,
    /// `already fenced`, or the error.
    pub outcome: String,
    /// Whether the victim is confirmed gone and a reservation is held.
    pub confirmed: bool,
    /// Milliseconds it took.
    pub ms: u64,
}

/// What a fence did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FenceReport {
    /// Victim node name.
    pub victim: String,
    /// Victim key.
    pub victim_key: String,
    /// The LUN that decided the race.
    pub arbiter: Option<String>,
    /// The marker written (None when the authority already marked the victim dead).
    pub marker_epoch: Option<u64>,
    /// Per LUN.
    pub luns: Vec<LunFence>,
    /// Milliseconds from start until every PR-protected LUN refused the victim (confirmed): the
    /// arbiter's preempt alone on one LUN, else the end of the parallel phase (after the marker).
    pub pr_confirmed_ms: u64,
    /// Milliseconds from start until the marker was on a majority of voting disks (t0); None
    /// when the victim was already marked dead.
    #[serde(default)]
    pub marker_ms: Option<u64>,
    /// Milliseconds from start until storage without PR is safe from the victim
    /// (t0 + L + W + M, t0 = marker on a majority).
    pub non_pr_safe_ms: u64,
}

/// Fences `victim` on `luns`.
pub fn fence(
    config: &Config,
    luns: &[Lun],
    victim: &Member,
    channel: &mut dyn MarkerChannel,
) -> Result<FenceReport, FenceError> {
    let start = Instant::now();
    if victim.id == config.me.id {
        return Err(FenceError::Refused(format!(
            "refusing to fence this node ({}) from itself; run the command on another node",
            victim.name
        )));
    }
    let authority = channel.authority().map_err(FenceError::Quorum)?;
    if authority.is_present() && authority.dead.contains(config.me.id) {
        return Err(FenceError::Refused(format!(
            "this node ({}) is marked dead by the authority (epoch {}): a fenced node cannot fence another",
            config.me.name, authority.epoch
        )));
    }
    let timeout = config.timing.fence_deadline / 2;
    let own = config.me.key;

    // 2. The arbiter race.
    let mut arbiter = None;
    let mut arbiter_done = start;
    let mut results: Vec<LunFence> = Vec::new();
    let mut errors = Vec::new();
    for lun in luns {
        let t = Instant::now();
        match preempt_lun(lun, own, victim.key, timeout) {
            Ok(outcome) => {
                arbiter_done = Instant::now();
                arbiter = Some(lun.id.clone());
                results.push(LunFence {
                    lun: lun.id.clone(),
                    outcome,
                    confirmed: true,
                    ms: ms(t.elapsed()),
                });
                break;
            }
            Err(LunError::Lost) => {
                return Err(FenceError::LostRace {
                    lun: lun.id.clone(),
                })
            }
            Err(LunError::Other(e)) => errors.push(format!("{}: {e}", lun.id)),
        }
    }
    if !luns.is_empty() && arbiter.is_none() {
        return Err(FenceError::NoArbiter(errors.join("; ")));
    }

    // 3. The marker.
    let already_dead = authority.is_present() && authority.dead.contains(victim.id);
    let mut marker_epoch = None;
    let t0 = if already_dead {
        None
    } else {
        let mut dead: DeadSet = if authority.is_present() {
            authority.dead
        } else {
            DeadSet::default()
        };
        dead.insert(victim.id);
        let marker = Marker {
            epoch: authority.epoch + 1,
            generation: crate::vdisk::random_u64()
                .map_err(|e| FenceError::Quorum(e.to_string()))?,
            dead,
            issuer: config.me.id,
        };
        let t0 = channel
            .publish(marker, config.timing.fence_deadline)
            .map_err(FenceError::Quorum)?;
        marker_epoch = Some(marker.epoch);
        Some(t0)
    };

    // 4. Every other LUN, in parallel.
    let rest: Vec<(String, Lun)> = luns
        .iter()
        .filter(|l| Some(&l.id) != arbiter.as_ref())
        .map(|l| (l.id.clone(), l.clone()))
        .collect();
    let victim_key = victim.key;
    let outcomes = apply_parallel(rest, 32, config.timing.fence_deadline, move |lun: &Lun| {
        preempt_lun(lun, own, victim_key, timeout).map_err(|e| sg_pr::Error::Io {
            device: lun.id.clone(),
            command: "fence",
            source: std::io::Error::other(match e {
                LunError::Lost => {
                    "our own key is gone from this LUN: another node fenced us".to_string()
                }
                LunError::Other(e) => e,
            }),
        })
    });
    let mut failed = 0;
    for o in outcomes {
        let (outcome, confirmed) = match o.result {
            Ok(s) => (s, true),
            Err(e) => {
                failed += 1;
                (e.to_string(), false)
            }
        };
        results.push(LunFence {
            lun: o.device,
            outcome,
            confirmed,
            ms: o.elapsed.map(ms).unwrap_or(0),
        });
    }
    let pr_confirmed_ms = if results.len() > 1 {
        ms(start.elapsed())
    } else {
        ms(arbiter_done.saturating_duration_since(start))
    };
    let non_pr_safe_ms = match t0 {
        Some(t0) => ms(t0.saturating_duration_since(start) + config.timing.non_pr_safe_after()),
        None => 0,
    };
    let report = FenceReport {
        victim: victim.name.clone(),
        victim_key: format!("0x{:x}", victim.key.0),
        arbiter,
        marker_epoch,
        luns: results,
        pr_confirmed_ms,
        marker_ms: t0.map(|t0| ms(t0.saturating_duration_since(start))),
        non_pr_safe_ms,
    };
    if failed > 0 {
        let total = report.luns.len();
        return Err(FenceError::Incomplete {
            report: Box::new(report),
            failed,
            total,
        });
    }
    Ok(report)
}

/// Lets `node` back in: a new marker (epoch + 1) without it in the dead set. The node then
/// registers its key again when its daemon starts (`fenced unfence`).
pub fn clear(
    config: &Config,
    node: &Member,
    channel: &mut dyn MarkerChannel,
) -> Result<Option<u64>, FenceError> {
    let authority = channel.authority().map_err(FenceError::Quorum)?;
    if !authority.is_present() || !authority.dead.contains(node.id) {
        return Ok(None);
    }
    if authority.dead.contains(config.me.id) {
        return Err(FenceError::Refused(format!(
            "this node ({}) is marked dead itself: clear it from a live node",
            config.me.name
        )));
    }
    let mut dead = DeadSet::default();
    for s in authority.dead.iter().filter(|&s| s != node.id) {
        dead.insert(s);
    }
    let marker = Marker {
        epoch: authority.epoch + 1,
        generation: crate::vdisk::random_u64().map_err(|e| FenceError::Quorum(e.to_string()))?,
        dead,
        issuer: config.me.id,
    };
    channel
        .publish(marker, config.timing.fence_deadline)
        .map_err(FenceError::Quorum)?;
    Ok(Some(marker.epoch))
}

enum LunError {
    /// Our own key is gone: someone fenced us.
    Lost,
    Other(String),
}

/// PREEMPT (AND ABORT) `victim` on `lun` through its first answering path and confirm.
fn preempt_lun(
    lun: &Lun,
    own: ReservationKey,
    victim: ReservationKey,
    timeout: Duration,
) -> Result<String, LunError> {
    let mut last = String::from("no paths");
    for path in &lun.paths {
        match preempt_path(path, own, victim, timeout) {
            Ok(s) => return Ok(s),
            Err(LunError::Lost) => return Err(LunError::Lost),
            Err(LunError::Other(e)) => last = e,
        }
    }
    Err(LunError::Other(last))
}

fn preempt_path(
    path: &Path,
    own: ReservationKey,
    victim: ReservationKey,
    timeout: Duration,
) -> Result<String, LunError> {
    let other = |e: sg_pr::Error| LunError::Other(e.to_string());
    let dev = open_path(path, timeout).map_err(other)?;
    let keys = dev.keys().map_err(other)?.value;
    if !keys.contains(own) {
        return Err(LunError::Lost);
    }
    let mut outcome = if keys.contains(victim) {
        let op = PrOperation::Preempt {
            own,
            victim,
            pr_type: FENCING_TYPE,
            abort: true,
        };
        match dev.apply(op) {
            Ok(report) if report.preempt_abort_fallback => {
                "preempted (PREEMPT AND ABORT unsupported by the target: plain PREEMPT)".to_string()
            }
            Ok(_) => "preempted and aborted".to_string(),
            Err(e) if e.is_reservation_conflict() => {
                // Either we were preempted meanwhile, or the victim vanished: look again.
                let keys = dev.keys().map_err(other)?.value;
                if !keys.contains(own) {
                    return Err(LunError::Lost);
                }
                if keys.contains(victim) {
                    return Err(LunError::Other(e.to_string()));
                }
                "already fenced by another node".to_string()
            }
            Err(e) => return Err(other(e)),
        }
    } else {
        "already fenced".to_string()
    };
    let after = dev.keys().map_err(other)?.value;
    if after.contains(victim) {
        return Err(LunError::Other(format!(
            "{}: key 0x{:x} still registered after PREEMPT",
            path.display(),
            victim.0
        )));
    }
    match dev.reservation().map_err(other)?.value.reservation {
        Some(r) => outcome.push_str(&format!("; reservation held by 0x{:x}", r.key.0)),
        None => {
            // The victim's release or a target reset left the LUN unreserved: take it, so
            // non-registrants (the victim) stay write-excluded.
            dev.apply(PrOperation::Reserve {
                key: own,
                pr_type: FENCING_TYPE,
            })
            .map_err(other)?;
            outcome.push_str("; reservation taken");
        }
    }
    Ok(outcome)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
