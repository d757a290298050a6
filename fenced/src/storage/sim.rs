//! A simulated SAN for unit tests: LUNs with SPC-4 persistent-reservation state kept per I_T
//! nexus (one nexus per path), unit attentions queued per nexus, and faults a real SAN has
//! (a path down or removed, a path whose identity cannot be read, the PR state lost).
//!
//! Semantics follow SPC-4 for what the daemon uses: REGISTER AND IGNORE EXISTING KEY, RESERVE,
//! PREEMPT (removes every registration of the victim's key and queues 2A/05 on those nexuses;
//! takes the reservation when the victim held it), CLEAR (2A/03 to the others), READ KEYS (one
//! entry per nexus), READ RESERVATION, READ FULL STATUS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sg_pr::sense::asc;
use sg_pr::{
    Completed, PrOperation, RegisteredKeys, Report, Reservation, ReservationKey, ReservationStatus,
    Sense, SenseFormat, SenseKey,
};

use super::{PathIo, Storage};
use crate::luns::FENCING_TYPE;

/// How a path behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMode {
    /// Answers.
    Up,
    /// Every command fails with an I/O error (link down, device offline).
    Down,
    /// The device node is gone (hot-removed); it is not listed and cannot be opened.
    Removed,
    /// Answers PR commands but its INQUIRY fails.
    NoInquiry,
}

#[derive(Debug, Default)]
struct SimLun {
    id: String,
    /// (nexus, key) in registration order.
    registrations: Vec<(u32, ReservationKey)>,
    /// The holding nexus and its key.
    reservation: Option<(u32, ReservationKey)>,
    generation: u32,
    /// Unit attentions waiting for the next command on a nexus.
    pending: BTreeMap<u32, Vec<(u8, u8)>>,
}

#[derive(Debug)]
struct SimPath {
    lun: usize,
    nexus: u32,
    mode: PathMode,
}

#[derive(Debug, Default)]
struct State {
    luns: Vec<SimLun>,
    paths: BTreeMap<PathBuf, SimPath>,
    next_nexus: u32,
    commands: usize,
    /// Commands per path.
    commands_on: BTreeMap<PathBuf, usize>,
    /// Bumped whenever the listed paths change (the stamp [`Storage::paths_stamp`] gives).
    version: u64,
    /// Scans ([`Storage::paths`]) so far.
    scans: usize,
}

/// The SAN, shared by the paths opened on it.
#[derive(Debug, Default, Clone)]
pub struct San {
    state: Arc<Mutex<State>>,
}

fn conflict(path: &Path, command: &'static str) -> sg_pr::Error {
    sg_pr::Error::ReservationConflict {
        device: path.display().to_string(),
        command,
        after_ambiguous_retry: false,
    }
}

fn unit_attention((a, q): (u8, u8)) -> Sense {
    Sense {
        format: SenseFormat::Fixed,
        current: true,
        key: SenseKey::UnitAttention,
        asc: a,
        ascq: q,
        information: None,
        sense_key_specific: None,
    }
}

impl San {
    /// An empty SAN.
    pub fn new() -> San {
        San::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a LUN; returns its index.
    pub fn add_lun(&self, id: &str) -> usize {
        let mut st = self.lock();
        st.luns.push(SimLun {
            id: id.into(),
            ..SimLun::default()
        });
        st.luns.len() - 1
    }

    /// Adds a path (a new I_T nexus) to LUN `lun` at device node `path`.
    pub fn add_path(&self, lun: usize, path: &str) {
        let mut st = self.lock();
        st.next_nexus += 1;
        st.version += 1;
        let nexus = st.next_nexus;
        st.paths.insert(
            PathBuf::from(path),
            SimPath {
                lun,
                nexus,
                mode: PathMode::Up,
            },
        );
    }

    /// Sets how a path behaves.
    pub fn set_mode(&self, path: &str, mode: PathMode) {
        let mut st = self.lock();
        if let Some(p) = st.paths.get_mut(Path::new(path)) {
            p.mode = mode;
        }
        st.version += 1;
    }

    /// Scans ([`Storage::paths`]) so far.
    pub fn scans(&self) -> usize {
        self.lock().scans
    }

    /// The array forgets every registration and the reservation of LUN `lun` (a reset without
    /// APTPL): every nexus gets a power-on UNIT ATTENTION.
    pub fn lose_pr_state(&self, lun: usize) {
        let mut st = self.lock();
        let nexuses: Vec<u32> = st
            .paths
            .values()
            .filter(|p| p.lun == lun)
            .map(|p| p.nexus)
            .collect();
        let l = &mut st.luns[lun];
        l.registrations.clear();
        l.reservation = None;
        l.generation = 0;
        for n in nexuses {
            l.pending.entry(n).or_default().push(asc::POWER_ON_RESET);
        }
    }

    /// Keys registered on LUN `lun`, one per nexus, in registration order.
    pub fn keys(&self, lun: usize) -> Vec<u64> {
        self.lock().luns[lun]
            .registrations
            .iter()
            .map(|(_, k)| k.0)
            .collect()
    }

    /// Whether the nexus of `path` is registered with `key`.
    pub fn registered(&self, path: &str, key: u64) -> bool {
        let st = self.lock();
        let Some(p) = st.paths.get(Path::new(path)) else {
            return false;
        };
        st.luns[p.lun]
            .registrations
            .iter()
            .any(|&(n, k)| n == p.nexus && k.0 == key)
    }

    /// The reservation holder's key on LUN `lun`.
    pub fn holder(&self, lun: usize) -> Option<u64> {
        self.lock().luns[lun].reservation.map(|(_, k)| k.0)
    }

    /// Commands sent so far, on every path.
    pub fn commands(&self) -> usize {
        self.lock().commands
    }

    /// Commands sent so far through `path`.
    pub fn commands_on(&self, path: &str) -> usize {
        self.lock()
            .commands_on
            .get(Path::new(path))
            .copied()
            .unwrap_or(0)
    }

    /// Drops any unit attention waiting on `path` (as when the sd driver's own I/O takes it).
    pub fn consume_unit_attentions(&self, path: &str) {
        let mut st = self.lock();
        if let Some((lun, nexus)) = st.paths.get(Path::new(path)).map(|p| (p.lun, p.nexus)) {
            st.luns[lun].pending.remove(&nexus);
        }
    }

    /// Runs `f` on the LUN and nexus behind `path`, after the path checks; unit attentions
    /// pending on the nexus are delivered into `report`.
    fn with<T>(
        &self,
        path: &Path,
        report: &mut Report,
        f: impl FnOnce(&mut SimLun, u32) -> sg_pr::Result<T>,
    ) -> sg_pr::Result<T> {
        let mut st = self.lock();
        st.commands += 1;
        *st.commands_on.entry(path.to_path_buf()).or_default() += 1;
        let (lun, nexus, mode) = match st.paths.get(path) {
            Some(p) => (p.lun, p.nexus, p.mode),
            None => {
                return Err(sg_pr::Error::NotFound {
                    device: path.to_path_buf(),
                })
            }
        };
        match mode {
            PathMode::Down => {
                return Err(sg_pr::Error::Io {
                    device: path.display().to_string(),
                    command: "SG_IO",
                    source: std::io::Error::from_raw_os_error(libc::ENXIO),
                })
            }
            PathMode::Removed => {
                return Err(sg_pr::Error::NotFound {
                    device: path.to_path_buf(),
                })
            }
            PathMode::Up | PathMode::NoInquiry => {}
        }
        let l = &mut st.luns[lun];
        if let Some(uas) = l.pending.remove(&nexus) {
            report.attempts += u32::try_from(uas.len()).unwrap_or(u32::MAX);
            report
                .unit_attentions
                .extend(uas.into_iter().map(unit_attention));
        }
        report.attempts += 1;
        f(l, nexus)
    }
}

impl SimLun {
    fn key_of(&self, nexus: u32) -> Option<ReservationKey> {
        self.registrations
            .iter()
            .find(|(n, _)| *n == nexus)
            .map(|(_, k)| *k)
    }

    fn queue(&mut self, nexus: u32, ua: (u8, u8)) {
        self.pending.entry(nexus).or_default().push(ua);
    }
}

/// One simulated path.
#[derive(Debug)]
pub struct SimDevice {
    san: San,
    path: PathBuf,
    name: String,
}

impl PathIo for SimDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn lun_id(&self) -> sg_pr::Result<Option<String>> {
        let st = self.san.lock();
        match st.paths.get(&self.path) {
            Some(p) if p.mode == PathMode::Up => Ok(Some(st.luns[p.lun].id.clone())),
            _ => Err(sg_pr::Error::Io {
                device: self.name.clone(),
                command: "INQUIRY",
                source: std::io::Error::from_raw_os_error(libc::EIO),
            }),
        }
    }

    fn test_unit_ready(&self) -> sg_pr::Result<Report> {
        let mut report = Report::default();
        self.san.with(&self.path, &mut report, |_, _| Ok(()))?;
        Ok(report)
    }

    fn keys(&self) -> sg_pr::Result<Completed<RegisteredKeys>> {
        let mut report = Report::default();
        let value = self.san.with(&self.path, &mut report, |l, _| {
            Ok(RegisteredKeys {
                generation: l.generation,
                keys: l.registrations.iter().map(|(_, k)| *k).collect(),
                truncated: false,
                additional_length: 0,
            })
        })?;
        Ok(Completed { value, report })
    }

    fn reservation(&self) -> sg_pr::Result<Completed<ReservationStatus>> {
        let mut report = Report::default();
        let value = self.san.with(&self.path, &mut report, |l, _| {
            Ok(ReservationStatus {
                generation: l.generation,
                reservation: l.reservation.map(|(_, key)| Reservation {
                    key,
                    pr_type: Some(FENCING_TYPE),
                    type_code: FENCING_TYPE.scsi_code(),
                    scope: 0,
                }),
            })
        })?;
        Ok(Completed { value, report })
    }

    fn registrations_of(&self, key: ReservationKey) -> sg_pr::Result<Option<usize>> {
        let mut report = Report::default();
        self.san.with(&self.path, &mut report, |l, _| {
            Ok(Some(
                l.registrations.iter().filter(|(_, k)| *k == key).count(),
            ))
        })
    }

    fn apply(&self, op: PrOperation) -> sg_pr::Result<Report> {
        let mut report = Report::default();
        let path = self.path.clone();
        self.san
            .with(&self.path, &mut report, |l, nexus| match op {
                PrOperation::Register {
                    current,
                    new,
                    options,
                } => {
                    // SPC-4: without IGNORE EXISTING KEY, the key given must be the nexus's own
                    // (0 when it holds none).
                    let held = l.key_of(nexus).unwrap_or(ReservationKey(0));
                    if !options.ignore_existing && current != held {
                        return Err(conflict(&path, "REGISTER"));
                    }
                    l.registrations.retain(|(n, _)| *n != nexus);
                    if new.is_zero() {
                        if l.reservation.is_some_and(|(n, _)| n == nexus) {
                            l.reservation = None;
                        }
                    } else {
                        l.registrations.push((nexus, new));
                    }
                    l.generation += 1;
                    Ok(())
                }
                PrOperation::Reserve { key, .. } => {
                    if l.key_of(nexus) != Some(key) {
                        return Err(conflict(&path, "RESERVE"));
                    }
                    match l.reservation {
                        None => {
                            l.reservation = Some((nexus, key));
                            Ok(())
                        }
                        Some((n, _)) if n == nexus => Ok(()),
                        Some(_) => Err(conflict(&path, "RESERVE")),
                    }
                }
                PrOperation::Release { key, .. } => {
                    if l.key_of(nexus) != Some(key) {
                        return Err(conflict(&path, "RELEASE"));
                    }
                    if l.reservation.is_some_and(|(n, _)| n == nexus) {
                        l.reservation = None;
                    }
                    Ok(())
                }
                PrOperation::Clear { key } => {
                    if l.key_of(nexus) != Some(key) {
                        return Err(conflict(&path, "CLEAR"));
                    }
                    let others: Vec<u32> = l
                        .registrations
                        .iter()
                        .map(|(n, _)| *n)
                        .filter(|&n| n != nexus)
                        .collect();
                    for n in others {
                        l.queue(n, asc::RESERVATIONS_PREEMPTED);
                    }
                    l.registrations.clear();
                    l.reservation = None;
                    l.generation += 1;
                    Ok(())
                }
                PrOperation::Preempt { own, victim, .. } => {
                    if l.key_of(nexus) != Some(own) {
                        return Err(conflict(&path, "PREEMPT"));
                    }
                    let victims: Vec<u32> = l
                        .registrations
                        .iter()
                        .filter(|(_, k)| *k == victim)
                        .map(|(n, _)| *n)
                        .collect();
                    let held_by_victim = l.reservation.is_some_and(|(_, k)| k == victim);
                    if victims.is_empty() && !held_by_victim {
                        return Err(conflict(&path, "PREEMPT"));
                    }
                    for n in victims {
                        if n != nexus {
                            l.queue(n, asc::REGISTRATIONS_PREEMPTED);
                        }
                    }
                    l.registrations.retain(|(_, k)| *k != victim);
                    if held_by_victim {
                        l.reservation = Some((nexus, own));
                    }
                    l.generation += 1;
                    Ok(())
                }
            })?;
        Ok(report)
    }
}

impl Storage for San {
    fn paths_stamp(&self, _patterns: &[String]) -> Option<u64> {
        Some(self.lock().version)
    }

    fn paths(&self, patterns: &[String]) -> Vec<PathBuf> {
        let mut st = self.lock();
        st.scans += 1;
        st.paths
            .iter()
            .filter(|(_, p)| p.mode != PathMode::Removed)
            .map(|(path, _)| path.clone())
            .filter(|path| {
                let text = path.display().to_string();
                patterns.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => text.starts_with(prefix),
                    None => *p == text,
                })
            })
            .collect()
    }

    fn runner(&self) -> Box<dyn super::Runner> {
        Box::new(super::SequentialRunner::new(self.clone()))
    }

    fn open(&self, path: &Path, _timeout: Duration) -> sg_pr::Result<Box<dyn PathIo>> {
        match self.lock().paths.get(path).map(|p| p.mode) {
            None | Some(PathMode::Removed) => Err(sg_pr::Error::NotFound {
                device: path.to_path_buf(),
            }),
            Some(_) => Ok(Box::new(SimDevice {
                san: self.clone(),
                path: path.to_path_buf(),
                name: path.display().to_string(),
            })),
        }
    }
}
