//! The shared LUNs: a LUN is an identity (VPD page 0x83) and the set of paths (I_T nexuses)
//! that reach it. Grouping paths into LUNs, registering this node's key on every path
//! (unfence), and the one registration rule every run-time registration follows
//! ([`register_guarded`]).
//!
//! # Why a registration at run time needs a guard
//!
//! REGISTER AND IGNORE EXISTING KEY succeeds for a node whose key was preempted: a node that
//! registers a new path, a returned path, or registers again after the array lost its PR state
//! would undo a fence that happened meanwhile. So every run-time registration is made only on
//! a fresh read of the voting disks (a poll round that started after the decision to
//! register, with a read-majority, not marking this node dead), and must complete within the
//! bound B of that round's start ([`crate::config::Timing::registration_bound`]):
//!
//! - a round that does not show the fence's marker started before the marker reached a
//!   majority (t0), so a registration it allows completes before t0 + B;
//! - the fencer re-verifies every LUN after t0 + B and preempts the victim's key again where it
//!   finds it ([`crate::fence`]), and every survivor's key check preempts the keys of nodes the
//!   authority marks dead whenever it sees one ([`crate::keycheck`]);
//! - a registration that completes after B is not covered by that argument: the node fences
//!   itself instead, unless READ FULL STATUS shows that its key never left another of its
//!   nexuses on that LUN (a preemption removes every nexus's registration of the key at once,
//!   so a key still held elsewhere proves no preemption came between).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sg_pr::{AnyDevice, Backend, PrOperation, PrType, RegisterOptions, ReservationKey};

use crate::storage::{Answer, Failed, Job, PathIo, Reply, Request, Runner, Step, Storage};

/// The reservation type the stack uses: Write Exclusive – Registrants Only.
pub const FENCING_TYPE: PrType = PrType::WriteExclusiveRegistrantsOnly;

/// One LUN and every path to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lun {
    /// Its identity: VPD page 0x83's designator (e.g. `naa.6001405...`), or the path itself for
    /// a device that has none (block-layer devices). Every node sorts LUNs by it, so "the first
    /// LUN" is the same one cluster-wide.
    pub id: String,
    /// Paths (one per I_T nexus).
    pub paths: Vec<PathBuf>,
}

/// What went wrong on a LUN.
#[derive(Debug, thiserror::Error)]
pub enum LunError {
    /// A command on one path failed.
    #[error("{lun}: {source}")]
    Device {
        /// The LUN.
        lun: String,
        /// The device error (it names the path).
        #[source]
        source: sg_pr::Error,
    },
    /// No path of the LUN answered.
    #[error("{lun}: no path answered ({detail}); check the paths (cabling, zoning, iSCSI sessions, `multipath -ll`, dmesg) and the array")]
    Unreachable {
        /// The LUN.
        lun: String,
        /// Each path's error.
        detail: String,
    },
    /// REGISTER answered GOOD but READ KEYS does not list the key.
    #[error("{lun}: key 0x{key:x} is not listed by READ KEYS after REGISTER: the target did not keep the registration; check the array's PR support")]
    NotListed {
        /// The LUN.
        lun: String,
        /// The key.
        key: u64,
    },
    /// Paths were configured and none of them answered INQUIRY.
    #[error("none of the {paths} configured paths answers INQUIRY: {detail}; check storage.luns and the paths")]
    NoneAnswers {
        /// How many paths the patterns named.
        paths: usize,
        /// Each path's error.
        detail: String,
    },
    /// The guard refused a run-time registration.
    #[error("{lun}: not registering this node's key: {why}")]
    Refused {
        /// The LUN.
        lun: String,
        /// Why.
        why: String,
    },
}

/// Opens one path with the backend the device needs (SG_IO, or block-layer PR for dm/NVMe),
/// for the commands that need the concrete device (doctor, status).
pub fn open_path(path: &std::path::Path, timeout: Duration) -> sg_pr::Result<AnyDevice> {
    AnyDevice::open(path, Backend::Auto, timeout)
}

/// The paths of the configured patterns grouped into LUNs, and the paths that could not be
/// identified (they are never their own LUN: they are retried by the key check's rescan).
#[derive(Debug, Default)]
pub struct Discovery {
    /// LUNs, sorted by id.
    pub luns: Vec<Lun>,
    /// Paths that did not open or answer INQUIRY, with the error.
    pub unidentified: Vec<(PathBuf, sg_pr::Error)>,
}

impl Discovery {
    /// The LUNs found; each unidentified path is logged (its LUN is reached through its other
    /// paths, and the daemon retries it), and none answering is an error.
    pub fn usable(self) -> Result<Vec<Lun>, LunError> {
        for (path, e) in &self.unidentified {
            tracing::warn!(path = %path.display(), error = %e, "a configured path does not answer INQUIRY: left out for now");
        }
        if self.luns.is_empty() && !self.unidentified.is_empty() {
            return Err(LunError::NoneAnswers {
                paths: self.unidentified.len(),
                detail: self
                    .unidentified
                    .iter()
                    .map(|(_, e)| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(self.luns)
    }
}

/// The identity of the LUN behind `dev`: VPD 0x83, or the path for devices without one.
pub fn identify(dev: &dyn PathIo) -> sg_pr::Result<String> {
    Ok(dev.lun_id()?.unwrap_or_else(|| dev.name().to_string()))
}

/// Groups `paths` into LUNs by their VPD 0x83 identity, sorted by id.
pub fn discover(storage: &dyn Storage, paths: &[PathBuf], timeout: Duration) -> Discovery {
    let mut found = Discovery::default();
    for path in paths {
        let id = storage.open(path, timeout).and_then(|d| identify(&*d));
        match id {
            Ok(id) => match found.luns.iter_mut().find(|l| l.id == id) {
                Some(l) => l.paths.push(path.clone()),
                None => found.luns.push(Lun {
                    id,
                    paths: vec![path.clone()],
                }),
            },
            Err(e) => found.unidentified.push((path.clone(), e)),
        }
    }
    found.luns.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// How this node registers: its key, and the APTPL bit every PR OUT carries (one
/// cluster-wide setting: the bit of the latest PR OUT governs the whole LUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// This node's key.
    pub key: ReservationKey,
    /// Activate persist through power loss.
    pub aptpl: bool,
}

impl Registration {
    /// Registers through `dev` (REGISTER AND IGNORE EXISTING KEY). A target that refuses APTPL
    /// (ILLEGAL REQUEST) is registered without it, with a warning: its PR state then does not
    /// survive a power loss, and `fenced doctor` says so.
    pub fn register_on(self, dev: &dyn PathIo) -> sg_pr::Result<sg_pr::Report> {
        match dev.apply(self.op()) {
            Err(sg_pr::Error::CheckCondition { sense, .. })
                if self.aptpl && sense.key == sg_pr::SenseKey::IllegalRequest =>
            {
                tracing::warn!(path = dev.name(), %sense, "the target refuses APTPL: registered without it (its reservations do not survive a power loss)");
                dev.apply(
                    Registration {
                        aptpl: false,
                        ..self
                    }
                    .op(),
                )
            }
            r => r,
        }
    }

    fn op(self) -> PrOperation {
        PrOperation::Register {
            current: ReservationKey::ZERO,
            new: self.key,
            options: RegisterOptions {
                ignore_existing: true,
                aptpl: self.aptpl,
                ..Default::default()
            },
        }
    }
}

/// What unfencing one LUN did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnfenceReport {
    /// The LUN.
    pub lun: String,
    /// Paths registered.
    pub paths: usize,
    /// The paths registered.
    pub registered: Vec<PathBuf>,
    /// Paths that failed, with the error (the LUN is degraded; the key check retries them).
    pub paths_down: Vec<String>,
    /// Whether we took the (free) reservation.
    pub reserved: bool,
    /// The key of the reservation holder afterwards.
    pub holder: Option<String>,
}

/// One LUN's result of [`unfence`]: its name, and what was registered or why not.
pub type LunUnfenced = (String, Result<UnfenceReport, LunError>);

/// Registers `reg.key` on every path of every LUN (REGISTER AND IGNORE EXISTING KEY, so a
/// stale registration of this nexus is replaced, as after an iSCSI re-login), reserves (type 5)
/// every LUN nobody reserved, and verifies with READ KEYS that the key is there. A path that
/// fails leaves the LUN degraded; a LUN none of whose paths registers is an error. LUNs are
/// handled in parallel; the whole call ends by `deadline`. The caller has checked the authority
/// (a fenced node must not register).
pub fn unfence(
    storage: Arc<dyn Storage>,
    luns: &[Lun],
    reg: Registration,
    timeout: Duration,
    deadline: Duration,
) -> Vec<LunUnfenced> {
    let until = Instant::now() + deadline;
    let mut runner = storage.runner();
    // 1. Every path of every LUN at once: TEST UNIT READY (absorbs a power-on or re-login
    //    UNIT ATTENTION), then REGISTER AND IGNORE EXISTING KEY.
    let paths: Vec<PathBuf> = luns.iter().flat_map(|l| l.paths.iter().cloned()).collect();
    let mut jobs: Vec<RegisterPath> = (0..paths.len())
        .map(|i| RegisterPath::new(i, reg, true))
        .collect();
    run_jobs(&mut *runner, &paths, &mut jobs, timeout, until);
    // 2. Per LUN, through its first registered path: the reservation (taken when free) and a
    //    READ KEYS confirming the key.
    let mut registered: Vec<(Vec<PathBuf>, Vec<String>)> = Vec::new();
    let mut results = jobs.into_iter();
    for lun in luns {
        let mut ok = Vec::new();
        let mut down = Vec::new();
        for (path, job) in lun.paths.iter().zip(results.by_ref()) {
            match job.result {
                Some(Ok(())) => ok.push(path.clone()),
                Some(Err(e)) => {
                    tracing::warn!(lun = %lun.id, error = %e, "path not registered: the LUN starts degraded; the key check retries it");
                    down.push(e.to_string());
                }
                None => down.push(format!("{}: no answer", path.display())),
            }
        }
        registered.push((ok, down));
    }
    let firsts: Vec<PathBuf> = registered
        .iter()
        .filter_map(|(ok, _)| ok.first().cloned())
        .collect();
    let mut reserves: Vec<ReserveLun> = (0..firsts.len())
        .map(|i| ReserveLun::new(i, reg.key, true))
        .collect();
    run_jobs(&mut *runner, &firsts, &mut reserves, timeout, until);
    let mut reserves = reserves.into_iter();
    luns.iter()
        .zip(registered)
        .map(|(lun, (ok, down))| {
            if ok.is_empty() {
                let e = LunError::Unreachable {
                    lun: lun.id.clone(),
                    detail: down.join("; "),
                };
                return (lun.id.clone(), Err(e));
            }
            let result = reserves
                .next()
                .map_or_else(
                    || {
                        Err(LunError::Unreachable {
                            lun: lun.id.clone(),
                            detail: "no answer".into(),
                        })
                    },
                    |r| r.outcome(&lun.id),
                )
                .map(|(reserved, holder)| UnfenceReport {
                    lun: lun.id.clone(),
                    paths: ok.len(),
                    registered: ok,
                    paths_down: down,
                    reserved,
                    holder: holder.map(|k| format!("0x{:x}", k.0)),
                });
            (lun.id.clone(), result)
        })
        .collect()
}

/// Runs `jobs` on `paths` through `runner`.
pub(crate) fn run_jobs<J: Job>(
    runner: &mut dyn Runner,
    paths: &[PathBuf],
    jobs: &mut [J],
    timeout: Duration,
    until: Instant,
) {
    let mut refs: Vec<&mut dyn Job> = jobs.iter_mut().map(|j| j as &mut dyn Job).collect();
    runner.run(paths, &mut refs, timeout, until);
}

/// REGISTER AND IGNORE EXISTING KEY on one path (after a TEST UNIT READY when asked), again
/// without APTPL when the target refuses it.
pub(crate) struct RegisterPath {
    device: usize,
    reg: Registration,
    test_unit_ready: bool,
    /// The REGISTER was sent again with APTPL cleared after a refusal.
    without_aptpl: bool,
    /// Registered, or why not.
    pub result: Option<sg_pr::Result<()>>,
}

impl RegisterPath {
    pub(crate) fn new(device: usize, reg: Registration, test_unit_ready: bool) -> RegisterPath {
        RegisterPath {
            device,
            reg,
            test_unit_ready,
            without_aptpl: false,
            result: None,
        }
    }

    fn register(&self, reg: Registration) -> Option<Step> {
        Some(Step {
            device: self.device,
            request: Request::Out(reg.op()),
        })
    }

    fn finish(&mut self, result: sg_pr::Result<()>) -> Option<Step> {
        self.result = Some(result);
        None
    }
}

impl Job for RegisterPath {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        let Some(answer) = last else {
            if self.test_unit_ready {
                return Some(Step {
                    device: self.device,
                    request: Request::TestUnitReady,
                });
            }
            return self.register(self.reg);
        };
        if std::mem::take(&mut self.test_unit_ready) {
            // The TEST UNIT READY only absorbs what is pending; its outcome does not matter
            // (the REGISTER says what matters).
            return self.register(self.reg);
        }
        match answer {
            Ok(Reply::Out(_)) => self.finish(Ok(())),
            Err(Failed {
                error: sg_pr::Error::CheckCondition { sense, .. },
                ..
            }) if self.reg.aptpl
                && !self.without_aptpl
                && sense.key == sg_pr::SenseKey::IllegalRequest =>
            {
                tracing::warn!(device = self.device, %sense, "the target refuses APTPL: registered without it (its reservations do not survive a power loss)");
                self.without_aptpl = true;
                self.register(Registration {
                    aptpl: false,
                    ..self.reg
                })
            }
            Err(f) => self.finish(Err(f.error)),
            Ok(other) => self.finish(Err(unexpected(&other))),
        }
    }
}

/// An answer a chain did not ask for (a bug), as an error.
fn unexpected(reply: &Reply) -> sg_pr::Error {
    sg_pr::Error::Io {
        device: String::new(),
        command: "PR chain",
        source: std::io::Error::other(format!("unexpected reply {reply:?}")),
    }
}

/// The reservation of one LUN through one registered path: READ RESERVATION, RESERVE when
/// nobody holds it (a RESERVATION CONFLICT there means another node took it first: read it
/// again), and, when asked, a READ KEYS confirming our key.
pub(crate) struct ReserveLun {
    device: usize,
    key: ReservationKey,
    confirm: bool,
    stage: ReserveStage,
    reserved: bool,
    holder: Option<ReservationKey>,
    listed: Option<bool>,
    error: Option<sg_pr::Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReserveStage {
    Read,
    Reserve,
    ReadAgain,
    Confirm,
}

impl ReserveLun {
    pub(crate) fn new(device: usize, key: ReservationKey, confirm: bool) -> ReserveLun {
        ReserveLun {
            device,
            key,
            confirm,
            stage: ReserveStage::Read,
            reserved: false,
            holder: None,
            listed: None,
            error: None,
        }
    }

    fn step(&self, request: Request) -> Option<Step> {
        Some(Step {
            device: self.device,
            request,
        })
    }

    fn held(&mut self, holder: Option<ReservationKey>) -> Option<Step> {
        self.holder = holder;
        if self.confirm {
            self.stage = ReserveStage::Confirm;
            return self.step(Request::ReadKeys);
        }
        None
    }

    /// Whether we took the reservation and who holds it.
    pub(crate) fn outcome(self, lun: &str) -> Result<(bool, Option<ReservationKey>), LunError> {
        if let Some(source) = self.error {
            return Err(LunError::Device {
                lun: lun.to_string(),
                source,
            });
        }
        if self.confirm && self.listed != Some(true) {
            return Err(LunError::NotListed {
                lun: lun.to_string(),
                key: self.key.0,
            });
        }
        Ok((self.reserved, self.holder))
    }
}

impl Job for ReserveLun {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        let Some(answer) = last else {
            return self.step(Request::ReadReservation);
        };
        match (self.stage, answer) {
            (ReserveStage::Read, Ok(Reply::Reservation(r))) => match r.value.reservation {
                Some(r) => self.held(Some(r.key)),
                None => {
                    self.stage = ReserveStage::Reserve;
                    self.step(Request::Out(PrOperation::Reserve {
                        key: self.key,
                        pr_type: FENCING_TYPE,
                    }))
                }
            },
            (ReserveStage::ReadAgain, Ok(Reply::Reservation(r))) => {
                self.held(r.value.reservation.map(|r| r.key))
            }
            (ReserveStage::Reserve, Ok(Reply::Out(_))) => {
                self.reserved = true;
                self.held(Some(self.key))
            }
            // Another node reserved it between our read and our reserve: fine, a holder exists.
            (ReserveStage::Reserve, Err(f)) if f.error.is_reservation_conflict() => {
                self.stage = ReserveStage::ReadAgain;
                self.step(Request::ReadReservation)
            }
            (ReserveStage::Confirm, Ok(Reply::Keys(k))) => {
                self.listed = Some(k.value.contains(self.key));
                None
            }
            (_, Err(f)) => {
                self.error = Some(f.error);
                None
            }
            (_, Ok(other)) => {
                self.error = Some(unexpected(&other));
                None
            }
        }
    }
}

/// A read of the voting-disk authority from a poll round that started after the request.
#[derive(Debug, Clone, Copy)]
pub struct FreshAuthority {
    /// When the round that read it started (CLOCK_MONOTONIC).
    pub round_started: Instant,
    /// Whether that round read a majority.
    pub majority: bool,
    /// Whether the authority marks this node dead.
    pub self_dead: bool,
    /// The authority itself (epoch 0: none yet).
    pub marker: crate::vdisk::Marker,
    /// The other slots that round read as leaving or left (a clean stop).
    pub leaving: crate::vdisk::DeadSet,
}

/// Gives a fresh authority read for [`register_guarded`].
pub trait AuthoritySource {
    /// Reads the authority from a round that starts after this call.
    fn fresh(&mut self) -> Result<FreshAuthority, String>;
}

/// What a guarded registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardedOutcome {
    /// Registered within the bound.
    Registered,
    /// Registered after the bound, but READ FULL STATUS showed the key held on another nexus
    /// throughout (no preemption came between).
    RegisteredKeyHeldElsewhere,
    /// Registered after the bound with nothing to prove no preemption came between: the node
    /// must fence itself (the fencer's re-verification may have run before it).
    Late,
}

/// One LUN's part of a guarded registration: the outcome and the paths that failed.
pub type Guarded = (GuardedOutcome, Vec<(PathBuf, sg_pr::Error)>);

/// Registers `reg` on the given paths of several LUNs at once (one batch, every REGISTER in
/// flight together) under the guard described in the module docs: one fresh authority read,
/// and the whole batch judged against B from that round's start. Per LUN, in order: the
/// outcome and the paths that failed. `Err(Refused)` when the fresh read has no majority or
/// marks this node dead (nothing was sent).
pub fn register_guarded(
    storage: &dyn Storage,
    runner: &mut dyn Runner,
    luns: &[(String, Vec<PathBuf>)],
    reg: Registration,
    authority: &mut dyn AuthoritySource,
    bound: Duration,
    timeout: Duration,
) -> Result<Vec<Guarded>, LunError> {
    let names: Vec<&str> = luns.iter().map(|(id, _)| id.as_str()).collect();
    let refused = |why: String| LunError::Refused {
        lun: names.join(", "),
        why,
    };
    let fresh = authority
        .fresh()
        .map_err(|e| refused(format!("no fresh voting-disk read ({e})")))?;
    if !fresh.majority {
        return Err(refused("no read-majority of voting disks".into()));
    }
    if fresh.self_dead {
        return Err(refused(
            "the voting-disk authority marks this node dead".into(),
        ));
    }
    let paths: Vec<PathBuf> = luns.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    let mut jobs: Vec<RegisterPath> = (0..paths.len())
        .map(|i| RegisterPath::new(i, reg, false))
        .collect();
    run_jobs(runner, &paths, &mut jobs, timeout, Instant::now() + timeout);
    let late = fresh.round_started.elapsed() >= bound;
    let mut jobs = jobs.into_iter();
    let mut out = Vec::with_capacity(luns.len());
    for (_, lun_paths) in luns {
        let mut failed = Vec::new();
        let mut done = 0usize;
        for (path, job) in lun_paths.iter().zip(jobs.by_ref()) {
            match job.result {
                Some(Ok(())) => done += 1,
                Some(Err(e)) => failed.push((path.clone(), e)),
                None => failed.push((
                    path.clone(),
                    sg_pr::Error::DeadlineExceeded {
                        device: path.display().to_string(),
                        started: false,
                    },
                )),
            }
        }
        if !late || done == 0 {
            out.push((GuardedOutcome::Registered, failed));
            continue;
        }
        // Late. A key held on more nexuses than we just registered proves no preemption between.
        let held = lun_paths.iter().find_map(|p| {
            storage
                .open(p, timeout)
                .ok()?
                .registrations_of(reg.key)
                .ok()
                .flatten()
        });
        let outcome = match held {
            Some(n) if n > done => GuardedOutcome::RegisteredKeyHeldElsewhere,
            _ => GuardedOutcome::Late,
        };
        out.push((outcome, failed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{PathMode, San};

    const ME: ReservationKey = ReservationKey(0xa1);
    const REG: Registration = Registration {
        key: ME,
        aptpl: false,
    };

    fn two_luns() -> San {
        let san = San::new();
        let a = san.add_lun("naa.600a");
        let b = san.add_lun("naa.600b");
        san.add_path(b, "/dev/sda");
        san.add_path(a, "/dev/sdb");
        san.add_path(b, "/dev/sdc");
        san.add_path(a, "/dev/sdd");
        san
    }

    fn paths(p: &[&str]) -> Vec<PathBuf> {
        p.iter().map(PathBuf::from).collect()
    }

    fn discover_all(san: &San) -> Discovery {
        discover(
            san,
            &paths(&["/dev/sda", "/dev/sdb", "/dev/sdc", "/dev/sdd"]),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn paths_are_grouped_by_identity_and_luns_sorted() {
        let san = two_luns();
        let d = discover_all(&san);
        assert_eq!(
            d.luns,
            vec![
                Lun {
                    id: "naa.600a".into(),
                    paths: paths(&["/dev/sdb", "/dev/sdd"])
                },
                Lun {
                    id: "naa.600b".into(),
                    paths: paths(&["/dev/sda", "/dev/sdc"])
                },
            ]
        );
        assert!(d.unidentified.is_empty());
    }

    #[test]
    fn a_path_whose_inquiry_fails_is_never_its_own_lun() {
        let san = two_luns();
        san.set_mode("/dev/sdc", PathMode::NoInquiry);
        let d = discover_all(&san);
        assert_eq!(d.luns.len(), 2);
        assert_eq!(d.luns[1].paths, paths(&["/dev/sda"]));
        assert_eq!(d.unidentified.len(), 1);
        assert_eq!(d.unidentified[0].0, PathBuf::from("/dev/sdc"));
    }

    #[test]
    fn unfence_with_a_path_down_registers_the_others_and_reports_the_lun_degraded() {
        let san = two_luns();
        let luns = discover_all(&san).luns;
        san.set_mode("/dev/sdd", PathMode::Down);
        let storage: Arc<dyn Storage> = Arc::new(san.clone());
        let results = unfence(
            storage,
            &luns,
            REG,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        let a = results[0].1.as_ref().expect("LUN a unfenced");
        assert_eq!(a.paths, 1);
        assert_eq!(a.paths_down.len(), 1);
        assert!(a.reserved);
        assert!(san.registered("/dev/sdb", ME.0));
        assert!(!san.registered("/dev/sdd", ME.0));
        assert_eq!(san.holder(0), Some(ME.0));
        assert!(results[1].1.is_ok());
    }

    #[test]
    fn unfence_of_a_lun_with_no_answering_path_is_an_error() {
        let san = two_luns();
        let luns = discover_all(&san).luns;
        san.set_mode("/dev/sdb", PathMode::Down);
        san.set_mode("/dev/sdd", PathMode::Down);
        let results = unfence(
            Arc::new(san),
            &luns,
            REG,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        assert!(matches!(results[0].1, Err(LunError::Unreachable { .. })));
        assert!(results[1].1.is_ok());
    }

    struct Fixed(FreshAuthority, usize);
    impl AuthoritySource for Fixed {
        fn fresh(&mut self) -> Result<FreshAuthority, String> {
            self.1 += 1;
            Ok(self.0)
        }
    }

    fn fresh(age: Duration, majority: bool, self_dead: bool) -> Fixed {
        Fixed(
            FreshAuthority {
                round_started: Instant::now() - age,
                majority,
                self_dead,
                marker: crate::vdisk::Marker::default(),
                leaving: crate::vdisk::DeadSet::default(),
            },
            0,
        )
    }

    fn open(san: &San, p: &str) -> Box<dyn PathIo> {
        san.open(std::path::Path::new(p), Duration::from_secs(1))
            .unwrap()
    }

    fn guarded(
        san: &San,
        luns: &[(&str, &[&str])],
        a: &mut dyn AuthoritySource,
    ) -> Result<Vec<Guarded>, LunError> {
        let luns: Vec<(String, Vec<PathBuf>)> = luns
            .iter()
            .map(|(id, p)| (id.to_string(), paths(p)))
            .collect();
        let mut runner = san.runner();
        register_guarded(
            san,
            &mut *runner,
            &luns,
            REG,
            a,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn a_guarded_registration_is_refused_without_majority_or_when_marked_dead() {
        let san = two_luns();
        for mut a in [
            fresh(Duration::ZERO, false, false),
            fresh(Duration::ZERO, true, true),
        ] {
            let before = san.commands();
            let r = guarded(&san, &[("a", &["/dev/sdb"])], &mut a);
            assert!(matches!(r, Err(LunError::Refused { .. })), "{r:?}");
            assert_eq!(san.commands(), before, "nothing sent");
            assert_eq!(a.1, 1, "the authority was read");
        }
    }

    #[test]
    fn a_guarded_registration_of_several_luns_within_the_bound_registers_on_one_read() {
        let san = two_luns();
        let mut a = fresh(Duration::ZERO, true, false);
        let r = guarded(
            &san,
            &[("a", &["/dev/sdb", "/dev/sdd"]), ("b", &["/dev/sda"])],
            &mut a,
        )
        .unwrap();
        assert_eq!(a.1, 1, "one authority read for every LUN");
        assert!(r
            .iter()
            .all(|(o, failed)| *o == GuardedOutcome::Registered && failed.is_empty()));
        assert!(["/dev/sdb", "/dev/sdd", "/dev/sda"]
            .iter()
            .all(|p| san.registered(p, ME.0)));
    }

    #[test]
    fn a_late_registration_is_kept_only_when_the_key_never_left_another_nexus() {
        let san = two_luns();
        // sdb already holds our key: registering sdd late is provably safe.
        REG.register_on(&*open(&san, "/dev/sdb")).unwrap();
        let mut a = fresh(Duration::from_secs(5), true, false);
        let r = guarded(&san, &[("a", &["/dev/sdd"])], &mut a).unwrap();
        assert_eq!(r[0].0, GuardedOutcome::RegisteredKeyHeldElsewhere);
        // Our key was preempted meanwhile (nothing holds it): a late registration of sdd
        // proves nothing, the node must fence itself.
        let san2 = two_luns();
        let mut a = fresh(Duration::from_secs(5), true, false);
        let r = guarded(&san2, &[("a", &["/dev/sdd"])], &mut a).unwrap();
        assert_eq!(r[0].0, GuardedOutcome::Late);
    }
}
