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
//! 5. **Re-verify after t0 + B** (B: [`crate::config::Timing::registration_bound`]): a fresh
//!    authority read must mark the victim dead and not us, and every LUN is read again; where
//!    the victim's key is back (a registration it made on an authority read from before t0,
//!    which completes before t0 + B: see [`crate::luns`]) it is preempted again. Only then does
//!    the command return success.
//!
//! Any doubt ends in an error (fail closed). Fencing an already fenced node succeeds without
//! changing anything but the re-verification.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sg_pr::sense::asc;
use sg_pr::{PrOperation, ReservationKey};

use crate::config::{Config, Member};
use crate::luns::{AuthoritySource, Lun, FENCING_TYPE};
use crate::storage::{Answer, Job, Reply, Request, Runner, Step, Storage};
use crate::vdisk::{DeadSet, Marker};

/// Reads the authority and publishes this node's marker: through the running daemon's loop, or
/// directly on the voting disks when no daemon runs.
pub trait MarkerChannel: AuthoritySource {
    /// The current authority marker (epoch 0 = none yet).
    fn authority(&mut self) -> Result<Marker, String>;
    /// Writes `marker` in this node's slot to a majority of voting disks; returns when it got
    /// there (t0).
    fn publish(&mut self, marker: Marker, deadline: Duration) -> Result<Instant, String>;
    /// The other slots that showed, in the round [`authority`](Self::authority) last read,
    /// that their node rebooted since its fence (the rejoin evidence).
    fn rebooted(&self) -> DeadSet;
}

/// Why a fence failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The command was refused before anything changed.
    #[error("{0}")]
    Refused(String),
    /// `clear` of a node whose slot does not show it rebooted since its fence.
    #[error("{node} is marked dead and its voting-disk slot does not show it rebooted since: a node that has not rebooted since its fence may still run what it ran when it was evicted, so it stays out. Reboot it: its fenced then waits to be let back in, and the cluster's unfencing (fence_fenced on) or `fenced clear {node}` lets it in. Only if you know {node} is down, or rebooted under a fenced that does not record boots, `fenced clear --force {node}`")]
    NotRebooted {
        /// The node.
        node: String,
    },
    /// Another node fenced us first.
    #[error("lost the fence race: our key is gone from {lun}; this node is the one fenced (its daemon resets it)")]
    LostRace {
        /// The arbiter LUN.
        lun: String,
    },
    /// Our key is not registered on the arbiter LUN, and nothing says it was preempted.
    #[error("not registered on the arbiter LUN {lun}: {detail}; nothing was changed")]
    NotRegistered {
        /// The arbiter LUN.
        lun: String,
        /// What was seen.
        detail: String,
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
    /// (t0 + L + W + M, t0 = marker on a majority); 0 when nothing makes it safe: the victim
    /// was already marked dead, or it had left the cluster (`victim_left`).
    pub non_pr_safe_ms: u64,
    /// The victim's slot said it left the cluster (a clean stop): its watchdog is disarmed, so
    /// no reset follows the fence and only the PR-protected LUNs are safe from it.
    #[serde(default)]
    pub victim_left: bool,
    /// Milliseconds from start until the re-verification after t0 + B ended (the command
    /// returns then).
    #[serde(default)]
    pub reverified_ms: u64,
}

/// The fault campaign's proof that its auditor catches a bad fence (tests/src/bin/campaign.rs):
/// a fence that claims success and does nothing. A cargo feature of test builds only;
/// tests/package refuses a binary that carries this message.
#[cfg(feature = "broken-fence")]
fn broken_fence(victim: &Member, start: Instant) -> Option<FenceReport> {
    tracing::error!(victim = %victim.name, "broken-fence build: this fence is deliberately broken and does nothing");
    Some(FenceReport {
        victim: victim.name.clone(),
        victim_key: format!("0x{:x}", victim.key.0),
        arbiter: None,
        marker_epoch: None,
        luns: Vec::new(),
        pr_confirmed_ms: 0,
        marker_ms: None,
        non_pr_safe_ms: 0,
        victim_left: false,
        reverified_ms: ms(start.elapsed()),
    })
}

/// Fences `victim` on `luns`.
pub fn fence(
    config: &Config,
    storage: &Arc<dyn Storage>,
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
    let authority_read = Instant::now();
    if authority.is_present() && authority.dead.contains(config.me.id) {
        return Err(FenceError::Refused(format!(
            "this node ({}) is marked dead by the authority (epoch {}): a fenced node cannot fence another",
            config.me.name, authority.epoch
        )));
    }
    #[cfg(feature = "broken-fence")]
    if let Some(report) = broken_fence(victim, start) {
        return Ok(report);
    }
    let timeout = config.timing.fence_deadline / 2;
    let own = config.me.key;

    // 2. The arbiter race.
    let mut runner = storage.runner();
    let mut arbiter = None;
    let mut arbiter_done = start;
    let mut results: Vec<LunFence> = Vec::new();
    let mut errors = Vec::new();
    for lun in luns {
        let t = Instant::now();
        let deadline = t + config.timing.fence_deadline;
        let mut run = LunRun::new(std::slice::from_ref(lun), own, victim.key, Mode::Fence);
        run.run(&mut *runner, timeout, deadline);
        match run.into_results().remove(0) {
            Ok(outcome) => {
                arbiter_done = Instant::now();
                arbiter = Some(lun.id.clone());
                results.push(LunFence {
                    lun: lun.id.clone(),
                    outcome: outcome.unwrap_or_default(),
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
            // The arbiter is the first LUN that answers, on every node alike: never move on to
            // another LUN while this one answers, or two fencers could each win on a different
            // one.
            Err(e @ LunError::NotRegistered { .. }) => {
                return Err(FenceError::NotRegistered {
                    lun: lun.id.clone(),
                    detail: e.to_string(),
                })
            }
            Err(e) => errors.push(format!("{}: {e}", lun.id)),
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

    // 4. Every other LUN, all commands in flight at once.
    let rest: Vec<Lun> = luns
        .iter()
        .filter(|l| Some(&l.id) != arbiter.as_ref())
        .cloned()
        .collect();
    let phase = Instant::now();
    let mut run = LunRun::new(&rest, own, victim.key, Mode::Fence);
    run.run(&mut *runner, timeout, phase + config.timing.fence_deadline);
    let finished = run.finished_at();
    let mut failed = 0;
    for ((lun, result), done) in rest.iter().zip(run.into_results()).zip(finished) {
        let (outcome, confirmed) = match result {
            Ok(s) => (s.unwrap_or_default(), true),
            Err(e) => {
                failed += 1;
                (e.to_string(), false)
            }
        };
        results.push(LunFence {
            lun: lun.id.clone(),
            outcome,
            confirmed,
            ms: done.map_or(0, |t| ms(t.saturating_duration_since(phase))),
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

    // 5. Re-verify after t0 + B (t0: our marker, or the read that showed the victim dead).
    let bound = config.timing.registration_bound();
    let reverify_at = t0.unwrap_or(authority_read) + bound + bound / 4;
    std::thread::sleep(reverify_at.saturating_duration_since(Instant::now()));
    let fresh = channel.fresh().map_err(FenceError::Quorum)?;
    if !fresh.majority {
        return Err(FenceError::Quorum(
            "the voting-disk round after the fence read no majority: the fence cannot be confirmed"
                .into(),
        ));
    }
    let now = fresh.marker;
    // A victim that left cleanly disarmed its watchdog: nothing resets it, so only the
    // PR-protected LUNs are safe from it.
    let victim_left = fresh.leaving.contains(victim.id);
    if !now.dead.contains(victim.id) || now.dead.contains(config.me.id) {
        return Err(FenceError::Quorum(format!(
            "after the fence the authority (epoch {}) does not mark {} dead, or marks this node dead: another node's marker superseded ours; the cluster decided otherwise, so {} is not reported fenced",
            now.epoch, victim.name, victim.name
        )));
    }
    let confirmed: Vec<Lun> = results
        .iter()
        .filter(|r| r.confirmed)
        .filter_map(|r| luns.iter().find(|l| l.id == r.lun).cloned())
        .collect();
    let mut run = LunRun::new(&confirmed, own, victim.key, Mode::Reverify);
    run.run(
        &mut *runner,
        timeout,
        Instant::now() + config.timing.fence_deadline,
    );
    for (lun, result) in confirmed.iter().zip(run.into_results()) {
        let Some(r) = results.iter_mut().find(|r| r.lun == lun.id) else {
            continue;
        };
        match result {
            Ok(None) => {}
            Ok(Some(again)) => {
                tracing::warn!(lun = %lun.id, "the victim's key was back after the fence: {again}");
                r.outcome
                    .push_str(&format!("; victim's key back after t0, {again}"));
            }
            Err(e) => {
                failed += 1;
                r.confirmed = false;
                r.outcome
                    .push_str(&format!("; re-verification failed: {e}"));
            }
        }
    }
    let report = FenceReport {
        victim: victim.name.clone(),
        victim_key: format!("0x{:x}", victim.key.0),
        arbiter,
        marker_epoch,
        luns: results,
        pr_confirmed_ms,
        marker_ms: t0.map(|t0| ms(t0.saturating_duration_since(start))),
        non_pr_safe_ms: if victim_left { 0 } else { non_pr_safe_ms },
        victim_left,
        reverified_ms: ms(start.elapsed()),
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

/// Lets `node` back in: a new marker (epoch + 1) without it in the dead set. Only a node whose
/// slot shows it rebooted since its fence (its daemon waits to be let back in and registers its
/// key once the mark is gone), unless `force`d by the operator.
pub fn clear(
    config: &Config,
    node: &Member,
    channel: &mut dyn MarkerChannel,
    force: bool,
) -> Result<Option<u64>, FenceError> {
    let authority = channel.authority().map_err(FenceError::Quorum)?;
    if !authority.is_present() || !authority.dead.contains(node.id) {
        return Ok(None);
    }
    if !channel.rebooted().contains(node.id) {
        if !force {
            return Err(FenceError::NotRebooted {
                node: node.name.clone(),
            });
        }
        tracing::warn!(node = %node.name, "clearing a node whose slot does not show it rebooted since its fence (--force)");
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

/// Why one LUN's part of a fence failed.
#[derive(Debug, thiserror::Error)]
enum LunError {
    /// Our own key is gone and the target said it was preempted: someone fenced us.
    #[error("our own key is gone from this LUN and the target reported it preempted: another node fenced us")]
    Lost,
    /// Our own key is gone without a preemption notice.
    #[error("{}: this node's key is not registered (a PR-state loss, or a preemption whose notice went elsewhere); its key check registers it again unless the authority marks it dead: retry the fence", path.display())]
    NotRegistered {
        /// The path that was read.
        path: std::path::PathBuf,
    },
    /// The victim's key survived the preempt.
    #[error("{}: key 0x{key:x} still registered after PREEMPT", path.display())]
    StillRegistered {
        /// The path.
        path: std::path::PathBuf,
        /// The victim's key.
        key: u64,
    },
    /// The LUN has no path to try.
    #[error("no paths")]
    NoPaths,
    /// A command failed.
    #[error(transparent)]
    Device(#[from] sg_pr::Error),
    /// The chain got an answer it did not ask for (a bug).
    #[error("{0}")]
    Unexpected(String),
}

/// What a [`LunRun`] does on each LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// READ KEYS (ours must be there, the victim's decides), PREEMPT AND ABORT, READ KEYS (the
    /// victim's gone), READ RESERVATION (taken when none is held).
    Fence,
    /// READ KEYS; only where the victim's key is back, the whole fence again.
    Reverify,
}

/// Where one LUN's chain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    ReadKeys,
    Preempt,
    /// After a RESERVATION CONFLICT on the preempt: who is registered now?
    ConflictKeys,
    VerifyKeys,
    ReadReservation,
    Reserve,
}

/// One LUN's part of a fence as a chain of commands, tried on its paths in order: a path that
/// fails moves the chain to the next one; a verdict about our own key ends it.
struct LunJob {
    /// Indexes of the LUN's paths in the run's path list.
    paths: Vec<usize>,
    names: Vec<PathBuf>,
    at: usize,
    stage: Stage,
    mode: Mode,
    own: ReservationKey,
    victim: ReservationKey,
    outcome: String,
    /// The last path's error, reported when no path is left.
    last: LunError,
    result: Option<Result<Option<String>, LunError>>,
    finished_at: Option<Instant>,
}

impl LunJob {
    fn step(&self, request: Request) -> Option<Step> {
        Some(Step {
            device: self.paths[self.at],
            request,
        })
    }

    fn path(&self) -> PathBuf {
        self.names.get(self.at).cloned().unwrap_or_default()
    }

    fn finish(&mut self, result: Result<Option<String>, LunError>) -> Option<Step> {
        self.result = Some(result);
        self.finished_at = Some(Instant::now());
        None
    }

    /// This path failed: the chain starts again on the next one.
    fn next_path(&mut self, error: LunError) -> Option<Step> {
        self.last = error;
        self.at += 1;
        self.stage = Stage::ReadKeys;
        self.outcome.clear();
        if self.at >= self.paths.len() {
            let e = std::mem::replace(&mut self.last, LunError::NoPaths);
            return self.finish(Err(e));
        }
        self.step(Request::ReadKeys)
    }

    fn preempt(&mut self) -> Option<Step> {
        self.stage = Stage::Preempt;
        self.step(Request::Out(PrOperation::Preempt {
            own: self.own,
            victim: self.victim,
            pr_type: FENCING_TYPE,
            abort: true,
        }))
    }
}

impl Job for LunJob {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        let Some(answer) = last else {
            if self.paths.is_empty() {
                return self.finish(Err(LunError::NoPaths));
            }
            return self.step(Request::ReadKeys);
        };
        match (self.stage, answer) {
            (Stage::ReadKeys, Ok(Reply::Keys(k))) => {
                if !k.value.contains(self.own) {
                    let notice = k
                        .report
                        .unit_attentions
                        .iter()
                        .any(|s| s.is(asc::REGISTRATIONS_PREEMPTED));
                    if self.mode == Mode::Reverify && !k.value.contains(self.victim) {
                        return self.finish(Ok(None));
                    }
                    return self.finish(Err(if notice {
                        LunError::Lost
                    } else {
                        LunError::NotRegistered { path: self.path() }
                    }));
                }
                if k.value.contains(self.victim) {
                    return self.preempt();
                }
                if self.mode == Mode::Reverify {
                    return self.finish(Ok(None));
                }
                self.outcome = "already fenced".into();
                self.stage = Stage::ReadReservation;
                self.step(Request::ReadReservation)
            }
            (Stage::Preempt, Ok(Reply::Out(report))) => {
                self.outcome = if report.preempt_abort_fallback {
                    "preempted (PREEMPT AND ABORT unsupported by the target: plain PREEMPT)"
                } else {
                    "preempted and aborted"
                }
                .into();
                self.stage = Stage::VerifyKeys;
                self.step(Request::ReadKeys)
            }
            (Stage::Preempt, Err(f)) if f.error.is_reservation_conflict() => {
                // Either we were preempted meanwhile, or the victim vanished: look again.
                if f.report
                    .unit_attentions
                    .iter()
                    .any(|s| s.is(asc::REGISTRATIONS_PREEMPTED))
                {
                    return self.finish(Err(LunError::Lost));
                }
                self.last = LunError::Device(f.error);
                self.stage = Stage::ConflictKeys;
                self.step(Request::ReadKeys)
            }
            (Stage::ConflictKeys, Ok(Reply::Keys(k))) => {
                if !k.value.contains(self.own) {
                    return self.finish(Err(LunError::Lost));
                }
                if k.value.contains(self.victim) {
                    let e = std::mem::replace(&mut self.last, LunError::NoPaths);
                    return self.next_path(e);
                }
                self.outcome = "already fenced by another node".into();
                self.stage = Stage::ReadReservation;
                self.step(Request::ReadReservation)
            }
            (Stage::VerifyKeys, Ok(Reply::Keys(k))) => {
                if k.value.contains(self.victim) {
                    let e = LunError::StillRegistered {
                        path: self.path(),
                        key: self.victim.0,
                    };
                    return self.next_path(e);
                }
                self.stage = Stage::ReadReservation;
                self.step(Request::ReadReservation)
            }
            (Stage::ReadReservation, Ok(Reply::Reservation(r))) => match r.value.reservation {
                Some(r) => {
                    let outcome = format!("{}; reservation held by 0x{:x}", self.outcome, r.key.0);
                    self.finish(Ok(Some(outcome)))
                }
                None => {
                    // The victim's release or a target reset left the LUN unreserved: take it,
                    // so non-registrants (the victim) stay write-excluded.
                    self.stage = Stage::Reserve;
                    self.step(Request::Out(PrOperation::Reserve {
                        key: self.own,
                        pr_type: FENCING_TYPE,
                    }))
                }
            },
            (Stage::Reserve, Ok(Reply::Out(_))) => {
                let outcome = format!("{}; reservation taken", self.outcome);
                self.finish(Ok(Some(outcome)))
            }
            (_, Err(f)) => self.next_path(LunError::Device(f.error)),
            (stage, Ok(other)) => self.next_path(LunError::Unexpected(format!(
                "{stage:?}: unexpected reply {other:?}"
            ))),
        }
    }
}

/// One chain per LUN, all run at once.
struct LunRun {
    paths: Vec<PathBuf>,
    jobs: Vec<LunJob>,
}

impl LunRun {
    fn new(luns: &[Lun], own: ReservationKey, victim: ReservationKey, mode: Mode) -> LunRun {
        let mut paths = Vec::new();
        let jobs = luns
            .iter()
            .map(|lun| {
                let first = paths.len();
                paths.extend(lun.paths.iter().cloned());
                LunJob {
                    paths: (first..paths.len()).collect(),
                    names: lun.paths.clone(),
                    at: 0,
                    stage: Stage::ReadKeys,
                    mode,
                    own,
                    victim,
                    outcome: String::new(),
                    last: LunError::NoPaths,
                    result: None,
                    finished_at: None,
                }
            })
            .collect();
        LunRun { paths, jobs }
    }

    fn run(&mut self, runner: &mut dyn Runner, timeout: Duration, until: Instant) {
        let mut refs: Vec<&mut dyn Job> = self.jobs.iter_mut().map(|j| j as &mut dyn Job).collect();
        runner.run(&self.paths, &mut refs, timeout, until);
    }

    fn finished_at(&self) -> Vec<Option<Instant>> {
        self.jobs.iter().map(|j| j.finished_at).collect()
    }

    /// Per LUN: `Ok(Some(outcome))` when fenced (or, re-verifying, fenced again), `Ok(None)`
    /// when re-verification found nothing to do.
    fn into_results(self) -> Vec<Result<Option<String>, LunError>> {
        self.jobs
            .into_iter()
            .map(|j| {
                j.result
                    .unwrap_or(Err(LunError::Unexpected("the chain did not finish".into())))
            })
            .collect()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::luns::FreshAuthority;
    use crate::storage::sim::{PathMode, San};
    use std::path::Path;

    /// A 3-node configuration on simulated devices, with short timeouts.
    pub(crate) const CONFIG: &str = r#"
[cluster]
name = "lab"
uuid = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10"
nodes = [ { id = 0, name = "node1", key = "0xa1" }, { id = 1, name = "node2", key = "0xa2" }, { id = 2, name = "node3", key = "0xa3" } ]
[node]
id = 0
[storage]
luns = ["/dev/n0-*"]
voting_disks = ["/dev/vda", "/dev/vdb", "/dev/vdc"]
[timeouts]
poll = 100
io_deadline = 50
lease = 300
watchdog = 1000
"#;

    fn registration(key: u64) -> crate::luns::Registration {
        crate::luns::Registration {
            key: ReservationKey(key),
            aptpl: false,
        }
    }

    fn config() -> Config {
        Config::parse(Path::new("/etc/fenced/fenced.toml"), CONFIG).unwrap()
    }

    /// The voting disks as a fake channel; `before_reverify` runs when the fencer reads the
    /// authority the second time (the re-verification after t0 + B).
    type Hook = Box<dyn FnMut(&mut Marker)>;

    struct Votes {
        marker: Marker,
        reads: usize,
        before_reverify: Option<Hook>,
        /// Slots whose block says leaving.
        leaving: crate::vdisk::DeadSet,
        /// Slots whose block shows the rejoin evidence.
        rebooted: DeadSet,
    }

    impl Votes {
        fn new() -> Votes {
            Votes {
                marker: Marker::default(),
                reads: 0,
                before_reverify: None,
                leaving: crate::vdisk::DeadSet::default(),
                rebooted: DeadSet::default(),
            }
        }
    }

    impl AuthoritySource for Votes {
        fn fresh(&mut self) -> Result<FreshAuthority, String> {
            let marker = self.authority()?;
            Ok(FreshAuthority {
                round_started: Instant::now(),
                majority: true,
                self_dead: marker.dead.contains(0),
                marker,
                leaving: self.leaving,
            })
        }
    }

    impl MarkerChannel for Votes {
        fn authority(&mut self) -> Result<Marker, String> {
            self.reads += 1;
            if self.reads == 2 {
                if let Some(f) = &mut self.before_reverify {
                    f(&mut self.marker);
                }
            }
            Ok(self.marker)
        }

        fn publish(&mut self, marker: Marker, _deadline: Duration) -> Result<Instant, String> {
            self.marker = marker;
            Ok(Instant::now())
        }

        fn rebooted(&self) -> DeadSet {
            self.rebooted
        }
    }

    fn marked_dead(slots: &[u8]) -> Votes {
        let mut v = Votes::new();
        v.marker.epoch = 4;
        for &s in slots {
            v.marker.dead.insert(s);
        }
        v
    }

    #[test]
    fn clear_refuses_a_node_whose_slot_does_not_show_it_rebooted_since_its_fence() {
        let config = config();
        let mut v = marked_dead(&[2]);
        let err = clear(&config, &config.members[2], &mut v, false).unwrap_err();
        assert!(matches!(err, FenceError::NotRebooted { .. }), "{err}");
        assert_eq!(v.marker.epoch, 4, "nothing published");
    }

    #[test]
    fn clear_lets_back_a_node_that_rebooted_since_its_fence_and_keeps_the_others_dead() {
        let config = config();
        let mut v = marked_dead(&[1, 2]);
        v.rebooted.insert(2);
        assert_eq!(
            clear(&config, &config.members[2], &mut v, false).unwrap(),
            Some(5)
        );
        assert!(!v.marker.dead.contains(2) && v.marker.dead.contains(1));
        // Not marked dead: nothing to do, evidence or not.
        assert_eq!(
            clear(&config, &config.members[2], &mut v, false).unwrap(),
            None
        );
    }

    #[test]
    fn clear_force_lets_back_a_node_without_the_evidence() {
        let config = config();
        let mut v = marked_dead(&[2]);
        assert_eq!(
            clear(&config, &config.members[2], &mut v, true).unwrap(),
            Some(5)
        );
        assert!(!v.marker.dead.contains(2));
    }

    /// Two LUNs, each with one path per node; every node registered, node1 holds both.
    fn san() -> San {
        let san = San::new();
        for (lun, id) in ["naa.1", "naa.2"].iter().enumerate() {
            san.add_lun(id);
            for n in 0..3 {
                san.add_path(lun, &format!("/dev/n{n}-{lun}"));
            }
        }
        for n in 0..3u64 {
            for lun in 0..2 {
                let dev = san
                    .open(
                        Path::new(&format!("/dev/n{n}-{lun}")),
                        Duration::from_secs(1),
                    )
                    .unwrap();
                registration(0xa1 + n).register_on(&*dev).unwrap();
                if n == 0 {
                    dev.apply(PrOperation::Reserve {
                        key: ReservationKey(0xa1),
                        pr_type: FENCING_TYPE,
                    })
                    .unwrap();
                }
            }
        }
        san
    }

    fn luns() -> Vec<Lun> {
        (0..2)
            .map(|l| Lun {
                id: format!("naa.{}", l + 1),
                paths: vec![format!("/dev/n0-{l}").into()],
            })
            .collect()
    }

    #[test]
    fn a_fence_cuts_the_victim_off_every_lun_and_marks_it_dead() {
        let san = san();
        let storage: Arc<dyn Storage> = Arc::new(san.clone());
        let c = config();
        let mut votes = Votes::new();
        let report = fence(
            &c,
            &storage,
            &luns(),
            c.member("node2").unwrap(),
            &mut votes,
        )
        .unwrap();
        assert_eq!(report.arbiter.as_deref(), Some("naa.1"));
        assert!(report.luns.iter().all(|l| l.confirmed), "{report:?}");
        for lun in 0..2 {
            assert!(!san.keys(lun).contains(&0xa2));
            assert!(san.keys(lun).contains(&0xa3));
        }
        assert!(votes.marker.dead.contains(1));
        assert!(
            report.reverified_ms >= 125,
            "returned only after t0 + B: {report:?}"
        );
    }

    #[test]
    fn a_registration_that_raced_the_fence_is_preempted_again_by_the_reverification() {
        let san = san();
        let storage: Arc<dyn Storage> = Arc::new(san.clone());
        let c = config();
        let mut votes = Votes::new();
        let victim = san.clone();
        // The victim read the authority before t0 and registers again on LUN 2 before t0 + B.
        votes.before_reverify = Some(Box::new(move |_| {
            let dev = victim
                .open(Path::new("/dev/n1-1"), Duration::from_secs(1))
                .unwrap();
            registration(0xa2).register_on(&*dev).unwrap();
        }));
        let report = fence(
            &c,
            &storage,
            &luns(),
            c.member("node2").unwrap(),
            &mut votes,
        )
        .unwrap();
        assert!(!san.keys(1).contains(&0xa2), "{:?}", san.keys(1));
        assert!(
            report.luns[1].outcome.contains("victim's key back"),
            "{report:?}"
        );
    }

    #[test]
    fn a_fence_whose_marker_is_superseded_fails() {
        let san = san();
        let storage: Arc<dyn Storage> = Arc::new(san.clone());
        let c = config();
        let mut votes = Votes::new();
        // node2 fenced us at the same time and its marker won the tie-break.
        votes.before_reverify = Some(Box::new(|m: &mut Marker| {
            let mut dead = DeadSet::default();
            dead.insert(0);
            *m = Marker {
                epoch: m.epoch,
                generation: m.generation + 1,
                dead,
                issuer: 1,
            };
        }));
        let err = fence(
            &c,
            &storage,
            &luns(),
            c.member("node2").unwrap(),
            &mut votes,
        )
        .unwrap_err();
        assert!(matches!(err, FenceError::Quorum(_)), "{err}");
    }

    #[test]
    fn an_unreachable_lun_is_named_and_the_reachable_ones_are_fenced() {
        let san = san();
        san.set_mode("/dev/n0-1", PathMode::Down);
        let storage: Arc<dyn Storage> = Arc::new(san.clone());
        let c = config();
        let mut votes = Votes::new();
        match fence(
            &c,
            &storage,
            &luns(),
            c.member("node2").unwrap(),
            &mut votes,
        ) {
            Err(FenceError::Incomplete {
                report,
                failed,
                total,
            }) => {
                assert_eq!((failed, total), (1, 2));
                let bad = report.luns.iter().find(|l| !l.confirmed).unwrap();
                assert_eq!(bad.lun, "naa.2");
                assert!(!san.keys(0).contains(&0xa2));
                assert!(san.keys(1).contains(&0xa2), "unreachable: untouched");
            }
            other => panic!("expected an incomplete fence: {other:?}"),
        }
    }

    #[test]
    fn a_fencer_whose_key_vanished_without_a_notice_changes_nothing() {
        let san = san();
        let storage: Arc<dyn Storage> = Arc::new(san.clone());
        san.lose_pr_state(0);
        san.consume_unit_attentions("/dev/n0-0");
        let c = config();
        let mut votes = Votes::new();
        let err = fence(
            &c,
            &storage,
            &luns(),
            c.member("node2").unwrap(),
            &mut votes,
        )
        .unwrap_err();
        assert!(matches!(err, FenceError::NotRegistered { .. }), "{err}");
        assert!(!votes.marker.is_present(), "no marker written");
        assert!(
            san.keys(1).contains(&0xa2),
            "the next LUN was not used as arbiter"
        );
    }
}
