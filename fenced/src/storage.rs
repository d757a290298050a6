//! The device side of the shared LUNs, behind two small traits so the LUN logic above them
//! (path failover, preemption versus PR-state loss, guarded registration, fences) is unit-tested
//! against a simulated SAN ([`sim`], tests only) and proven on real kernels in guests.
//!
//! - [`Storage`] finds the paths the configuration names and opens one;
//! - [`PathIo`] is one path (one I_T nexus): the PR commands the daemon sends through it;
//! - [`Runner`] runs chains of commands ([`Job`]s) on many paths with every command in flight
//!   at once: a fence, the key check's reads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sg_pr::batch::SgQueue;
pub use sg_pr::batch::{Answer, Failed, Job, Reply, Request, Step};
use sg_pr::{
    AnyDevice, Backend, Completed, PersistentReservations, PrOperation, RegisteredKeys, Report,
    ReservationKey, ReservationStatus, RetryPolicy,
};

/// One path to a LUN (one I_T nexus for SCSI).
pub trait PathIo: Send {
    /// The device node, for messages.
    fn name(&self) -> &str;
    /// The LUN's identity (VPD page 0x83), `Ok(None)` when the device has none (block-layer
    /// devices, LUNs without a designator), an error when the device did not answer.
    fn lun_id(&self) -> sg_pr::Result<Option<String>>;
    /// TEST UNIT READY, which absorbs a pending UNIT ATTENTION (reported in the [`Report`]).
    fn test_unit_ready(&self) -> sg_pr::Result<Report>;
    /// READ KEYS; the report lists the UNIT ATTENTIONs absorbed on the way.
    fn keys(&self) -> sg_pr::Result<Completed<RegisteredKeys>>;
    /// READ RESERVATION.
    fn reservation(&self) -> sg_pr::Result<Completed<ReservationStatus>>;
    /// How many I_T nexuses hold `key` (READ FULL STATUS); `Ok(None)` when the backend cannot
    /// tell (block layer, a target without FULL STATUS).
    fn registrations_of(&self, key: ReservationKey) -> sg_pr::Result<Option<usize>>;
    /// One PR OUT operation.
    fn apply(&self, op: PrOperation) -> sg_pr::Result<Report>;
}

/// Where the paths come from.
pub trait Storage: Send + Sync {
    /// The device nodes the configured patterns name now, sorted.
    fn paths(&self, patterns: &[String]) -> Vec<PathBuf>;
    /// A cheap fingerprint of what [`Storage::paths`] reads for `patterns`, taken before a
    /// scan: while it stays the same, a scan would find the same paths. `None` when there is
    /// none to trust (the caller then scans).
    fn paths_stamp(&self, _patterns: &[String]) -> Option<u64> {
        None
    }
    /// Opens one path with a per-command timeout.
    fn open(&self, path: &Path, timeout: Duration) -> sg_pr::Result<Box<dyn PathIo>>;
    /// A runner of command chains on these devices (keep it: it may hold their fds).
    fn runner(&self) -> Box<dyn Runner>;
}

/// Runs [`Job`]s whose steps name indexes into `paths`.
pub trait Runner: Send {
    /// Runs every job to its end, by `until` at the latest; `timeout` is each command's own.
    fn run(
        &mut self,
        paths: &[PathBuf],
        jobs: &mut [&mut dyn Job],
        timeout: Duration,
        until: Instant,
    );
}

/// A runner that sends one command at a time through [`Storage::open`]: the simulated SAN's,
/// and the fallback for devices with no sg node (block-layer PR: NVMe namespaces).
pub struct SequentialRunner<S> {
    storage: S,
}

impl<S> SequentialRunner<S> {
    /// Over `storage`.
    pub fn new(storage: S) -> SequentialRunner<S> {
        SequentialRunner { storage }
    }
}

impl<S: Storage + Clone> Runner for SequentialRunner<S> {
    fn run(
        &mut self,
        paths: &[PathBuf],
        jobs: &mut [&mut dyn Job],
        timeout: Duration,
        until: Instant,
    ) {
        let mut open: Vec<Option<Box<dyn PathIo>>> = paths.iter().map(|_| None).collect();
        for job in jobs.iter_mut() {
            let mut answer = None;
            while let Some(step) = job.next(answer.take()) {
                let name = || {
                    paths
                        .get(step.device)
                        .map_or_else(String::new, |p| p.display().to_string())
                };
                if Instant::now() >= until {
                    answer = Some(Err(Failed {
                        error: sg_pr::Error::DeadlineExceeded {
                            device: name(),
                            started: false,
                        },
                        report: Report::default(),
                    }));
                    continue;
                }
                let dev = match (open.get_mut(step.device), paths.get(step.device)) {
                    (Some(slot @ None), Some(path)) => match self.storage.open(path, timeout) {
                        Ok(d) => slot.insert(d),
                        Err(error) => {
                            answer = Some(Err(Failed {
                                error,
                                report: Report::default(),
                            }));
                            continue;
                        }
                    },
                    (Some(Some(d)), _) => d,
                    _ => {
                        answer = Some(Err(Failed {
                            error: sg_pr::Error::NotFound {
                                device: PathBuf::from(name()),
                            },
                            report: Report::default(),
                        }));
                        continue;
                    }
                };
                answer = Some(execute(&**dev, step.request));
            }
        }
    }
}

/// One request through a [`PathIo`].
fn execute(dev: &dyn PathIo, request: Request) -> Answer {
    let failed = |error| Failed {
        error,
        report: Report::default(),
    };
    match request {
        Request::TestUnitReady => dev.test_unit_ready().map(Reply::Ready).map_err(failed),
        Request::ReadKeys => dev.keys().map(Reply::Keys).map_err(failed),
        Request::ReadReservation => dev.reservation().map(Reply::Reservation).map_err(failed),
        Request::Out(op) => dev.apply(op).map(Reply::Out).map_err(failed),
    }
}

/// The system's runner: SCSI paths through their sg nodes with every command in flight at once
/// (fds kept between runs, reopened after a failure); the jobs on paths with no sg node (a
/// block-layer device: an NVMe namespace; or the sg driver not loaded) run one command at a
/// time after those.
struct SgRunner {
    queue: SgQueue,
    /// Per path: its device in the queue and when a run last used it.
    index: HashMap<PathBuf, (usize, Instant)>,
    policy: RetryPolicy,
    /// `modprobe sg` was tried (once per runner, when a path had no sg node).
    loaded_sg: bool,
    /// A run went through the sg nodes alone (logged once).
    asynchronous: bool,
    /// The paths without an sg node logged so far (each logged once).
    serial: HashSet<PathBuf>,
}

impl Runner for SgRunner {
    fn run(
        &mut self,
        paths: &[PathBuf],
        jobs: &mut [&mut dyn Job],
        timeout: Duration,
        until: Instant,
    ) {
        let now = Instant::now();
        let mut map = Vec::with_capacity(paths.len());
        for path in paths {
            let i = match self.index.get_mut(path) {
                Some((i, used)) => {
                    self.queue.reopen_if_closed(*i, path);
                    *used = now;
                    *i
                }
                None => {
                    let i = self.queue.add(path);
                    self.index.insert(path.clone(), (i, now));
                    i
                }
            };
            map.push(i);
        }
        // A path no run has used for a while (removed, renamed) does not keep its device open.
        for (i, used) in self.index.values() {
            if now.duration_since(*used) > IDLE_CLOSE {
                self.queue.close(*i);
            }
        }
        // Only when the sg driver is not loaded: with it, a path without an sg node is no SCSI
        // device (an NVMe namespace), and running modprobe (a process: ~100 ms in a TCG guest)
        // in each `fenced fence` would only delay the fence.
        if !map.iter().all(|&i| self.queue.is_open(i))
            && !self.loaded_sg
            && !Path::new("/sys/module/sg").exists()
        {
            self.loaded_sg = true;
            match run_tool("modprobe", &["sg"]) {
                Ok(_) => tracing::info!(
                    "loaded the sg driver: PR commands go through /dev/sgN, all in flight at once"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the sg driver: PR commands are sent one at a time")
                }
            }
            for (path, &i) in paths.iter().zip(&map) {
                self.queue.reopen_if_closed(i, path);
            }
        }
        if !map.iter().all(|&i| self.queue.is_open(i)) {
            let missing: Vec<&PathBuf> = paths
                .iter()
                .zip(&map)
                .filter(|(_, &i)| !self.queue.is_open(i))
                .map(|(p, _)| p)
                .collect();
            if missing.iter().any(|p| !self.serial.contains(*p)) {
                tracing::warn!(?missing, "paths without an open sg node (not SCSI, or the sg driver missing): their PR commands are sent one at a time, after the others' (all in flight at once), so a hung one delays the rest of them");
                self.serial.extend(missing.into_iter().cloned());
            }
        } else if !self.asynchronous {
            tracing::info!(
                paths = paths.len(),
                "PR commands go through the paths' sg nodes, all in flight at once"
            );
            self.asynchronous = true;
        }
        // Each job goes where its first command does: a LUN's paths are all SCSI disks or all
        // block-layer devices (an NVMe namespace, a map without SCSI paths). The block layer's
        // PR ioctls have no asynchronous form: those jobs run one command at a time, after the
        // batch.
        let mut primed: Vec<Primed<'_>> = jobs
            .iter_mut()
            .map(|job| {
                let first = job.next(None);
                Primed {
                    job: &mut **job,
                    first,
                }
            })
            .collect();
        let on_sg = |p: &Primed<'_>| {
            p.first
                .is_none_or(|s| map.get(s.device).is_some_and(|&i| self.queue.is_open(i)))
        };
        let (mut batch, mut serial): (Vec<&mut Primed<'_>>, Vec<&mut Primed<'_>>) =
            primed.iter_mut().partition(|p| on_sg(p));
        let mut mapped: Vec<Mapped<'_>> = batch
            .iter_mut()
            .map(|job| Mapped {
                job: &mut **job,
                map: &map,
            })
            .collect();
        if !mapped.is_empty() {
            let mut refs: Vec<&mut dyn Job> =
                mapped.iter_mut().map(|m| m as &mut dyn Job).collect();
            sg_pr::batch::run(&mut self.queue, &mut refs, &self.policy, timeout, until);
        }
        if !serial.is_empty() {
            let mut refs: Vec<&mut dyn Job> = serial
                .iter_mut()
                .map(|p| &mut **p as &mut dyn Job)
                .collect();
            SequentialRunner::new(SystemStorage).run(paths, &mut refs, timeout, until);
        }
    }
}

/// A job whose first step was asked for already (to see where it goes): its first
/// `next(None)` answers that step.
struct Primed<'a> {
    job: &'a mut dyn Job,
    first: Option<Step>,
}

impl Job for Primed<'_> {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        match last {
            None => self.first.take(),
            Some(answer) => self.job.next(Some(answer)),
        }
    }
}

/// How long an sg node stays open unused.
const IDLE_CLOSE: Duration = Duration::from_secs(600);

/// A job whose device indexes are translated into the queue's.
struct Mapped<'a> {
    job: &'a mut dyn Job,
    map: &'a [usize],
}

impl Job for Mapped<'_> {
    fn next(&mut self, last: Option<Answer>) -> Option<Step> {
        let step = self.job.next(last)?;
        Some(Step {
            device: self.map.get(step.device).copied().unwrap_or(usize::MAX),
            request: step.request,
        })
    }
}

/// The machine's devices: SG_IO for SCSI disks, block-layer PR ioctls for the rest.
///
/// A configured dm-multipath map (`/dev/mapper/mpatha`, `/dev/dm-3`) stands for its paths: it
/// is replaced by the SCSI devices in its sysfs `slaves/`, reached over SG_IO with per-command
/// timeouts. The block-layer PR ioctls on a map have no timeout and block under
/// `queue_if_no_path`, need `IOC_PR_READ_KEYS` (Linux 6.19) to verify, and dm's preempt never
/// sets the abort flag; registering every path, as fence_mpath does, works on every kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemStorage;

impl Storage for SystemStorage {
    fn paths(&self, patterns: &[String]) -> Vec<PathBuf> {
        expand_multipath(Path::new("/sys"), crate::config::expand_paths(patterns))
    }

    /// The directories the patterns' entries live in, and `/dev` (where the device nodes that
    /// their symlinks name live): adding, removing or replacing an entry changes a directory's
    /// modification time, size or inode. Not to be trusted while a directory changed within
    /// the last second (its time may not move again for a change in the same clock tick), nor
    /// for a dm-multipath map's paths (sysfs `slaves/` directories do not reliably keep a
    /// modification time): see [`paths_stamp`].
    fn paths_stamp(&self, patterns: &[String]) -> Option<u64> {
        paths_stamp(patterns, std::time::SystemTime::now())
    }

    fn open(&self, path: &Path, timeout: Duration) -> sg_pr::Result<Box<dyn PathIo>> {
        Ok(Box::new(AnyDevice::open(path, Backend::Auto, timeout)?))
    }

    fn runner(&self) -> Box<dyn Runner> {
        Box::new(SgRunner {
            queue: SgQueue::new(),
            index: HashMap::new(),
            policy: RetryPolicy::default(),
            loaded_sg: false,
            asynchronous: false,
            serial: HashSet::new(),
        })
    }
}

impl PathIo for AnyDevice {
    fn name(&self) -> &str {
        self.device_name()
    }

    fn lun_id(&self) -> sg_pr::Result<Option<String>> {
        match self {
            AnyDevice::Sg(sg) => Ok(sg.device_identification()?.value.lun_id()),
            AnyDevice::Block(b) => Ok(b.lun_id()),
        }
    }

    fn test_unit_ready(&self) -> sg_pr::Result<Report> {
        match self.as_sg() {
            Some(sg) => sg.test_unit_ready(),
            None => Ok(Report::default()),
        }
    }

    fn keys(&self) -> sg_pr::Result<Completed<RegisteredKeys>> {
        PersistentReservations::keys(self)
    }

    fn reservation(&self) -> sg_pr::Result<Completed<ReservationStatus>> {
        PersistentReservations::reservation(self)
    }

    fn registrations_of(&self, key: ReservationKey) -> sg_pr::Result<Option<usize>> {
        let Some(sg) = self.as_sg() else {
            return Ok(None);
        };
        match sg.read_full_status() {
            Ok(s) => Ok(Some(
                s.value
                    .registrations
                    .iter()
                    .filter(|r| r.key == key)
                    .count(),
            )),
            Err(sg_pr::Error::CheckCondition { sense, .. }) if sense.is_unsupported_command() => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn apply(&self, op: PrOperation) -> sg_pr::Result<Report> {
        PersistentReservations::apply(self, op)
    }
}

/// Replaces every dm-multipath map in `paths` by its slave devices (`/dev/<slave>`), sorted
/// and deduplicated; other paths stay as they are. `sysfs` is `/sys` except in tests.
pub fn expand_multipath(sysfs: &Path, paths: Vec<PathBuf>) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    for path in paths {
        let slaves = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .and_then(|m| {
                use std::os::unix::fs::MetadataExt;
                let rdev = m.rdev();
                multipath_slaves(sysfs, libc::major(rdev), libc::minor(rdev))
            });
        match slaves {
            Some(s) => out.extend(s),
            None => out.push(path),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// [`SystemStorage`]'s fingerprint of the directories `patterns` live in and `/dev`, as of
/// `now`.
pub fn paths_stamp(patterns: &[String], now: std::time::SystemTime) -> Option<u64> {
    let mut dirs: Vec<&Path> = patterns
        .iter()
        .filter_map(|p| Path::new(p).parent())
        .chain([Path::new("/dev")])
        .collect();
    // As bytes: `Path`'s own order compares component by component, which with hundreds of
    // patterns every period cost more than the scan this stamp saves.
    dirs.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    dirs.dedup_by(|a, b| a.as_os_str() == b.as_os_str());
    dirs_stamp(&dirs, now)
}

/// A fingerprint of `dirs`' entries (modification and change times, size, inode; a missing
/// directory counts as such), `None` while one of them changed less than a second before
/// `now` (a change in the same clock tick as the one seen would leave its time unchanged).
/// Wall-clock times, but no interval is timed with them: a clock stepped back makes every
/// directory look just changed (a scan each period), one stepped forward cannot hide the next
/// change (its time is the stepped clock's).
fn dirs_stamp(dirs: &[&Path], now: std::time::SystemTime) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for dir in dirs {
        dir.hash(&mut h);
        let Ok(m) = std::fs::metadata(dir) else {
            0u8.hash(&mut h);
            continue;
        };
        let modified = m.modified().ok()?;
        if now
            .duration_since(modified)
            .map_or(true, |age| age < Duration::from_secs(1))
        {
            return None;
        }
        (
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.size(),
            m.ino(),
        )
            .hash(&mut h);
    }
    Some(h.finish())
}

/// The slave devices of the dm-multipath map `major:minor` (its dm uuid starts with `mpath-`),
/// or `None` when it is not one.
pub fn multipath_slaves(sysfs: &Path, major: u32, minor: u32) -> Option<Vec<PathBuf>> {
    // A SCSI disk's majors are fixed (8, 65-71, 128-135) and never device-mapper's: no sysfs
    // lookup for them, which every key-check period would pay for every path.
    if matches!(major, 8 | 65..=71 | 128..=135) {
        return None;
    }
    let node = sysfs.join(format!("dev/block/{major}:{minor}"));
    let uuid = std::fs::read_to_string(node.join("dm/uuid")).ok()?;
    if !uuid.trim().starts_with("mpath-") {
        return None;
    }
    let mut slaves: Vec<PathBuf> = std::fs::read_dir(node.join("slaves"))
        .ok()?
        .flatten()
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    slaves.sort();
    Some(slaves)
}

/// The configured paths that are dm-multipath maps, each with its name
/// (`/sys/block/dm-N/dm/name`).
pub fn multipath_maps(sysfs: &Path, patterns: &[String]) -> Vec<(PathBuf, String)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    crate::config::expand_paths(patterns)
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            if !m.file_type().is_block_device() {
                return None;
            }
            let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
            multipath_slaves(sysfs, major, minor)?;
            let name =
                std::fs::read_to_string(sysfs.join(format!("dev/block/{major}:{minor}/dm/name")))
                    .ok()?;
            Some((p, name.trim().to_string()))
        })
        .collect()
}

/// The names (`/sys/block/dm-N/dm/name`) of the dm-multipath maps the configured `patterns`
/// name.
pub fn multipath_map_names(sysfs: &Path, patterns: &[String]) -> Vec<String> {
    let mut names: Vec<String> = multipath_maps(sysfs, patterns)
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Tells multipathd that this node's key is registered on the paths of map `name`
/// (`multipathd setprstatus map NAME`, what mpathpersist does after registering through a map):
/// multipathd then registers its `reservation_key` on a path it reinstates before it sends I/O
/// down it. multipathd sets the flag by itself only when it builds a map on which the key is
/// already registered; fenced registers the paths over SG_IO, so on a first start it must say so.
pub fn tell_multipathd(name: &str) -> Result<(), String> {
    multipathd(&["setprstatus", "map", name]).map(|_| ())
}

/// multipathd's PR flag of map `name` (`multipathd getprstatus map NAME`).
pub fn multipathd_knows_key(name: &str) -> Result<bool, String> {
    Ok(multipathd(&["getprstatus", "map", name])?.trim() == "1")
}

/// Runs `multipathd ARGS` (a client of the daemon's socket), bounded by 5 s; its stdout.
fn multipathd(args: &[&str]) -> Result<String, String> {
    run_tool("multipathd", args)
}

/// Runs `program ARGS`, bounded by 5 s; its stdout.
fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    use std::io::Read;
    let what = format!("{program} {}", args.join(" "));
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                let mut out = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                return Ok(out);
            }
            Ok(Some(status)) => return Err(format!("{what}: {status}")),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: no answer in 5 s"));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// [`tell_multipathd`] for every configured map, logging the outcome.
pub fn tell_multipathd_all(patterns: &[String]) {
    for name in multipath_map_names(Path::new("/sys"), patterns) {
        match tell_multipathd(&name) {
            Ok(()) => {
                tracing::info!(map = %name, "multipathd told the key is registered: it registers paths it reinstates")
            }
            Err(e) => {
                tracing::warn!(map = %name, error = %e, "multipathd does not know the key is registered: a path it reinstates meets RESERVATION CONFLICT until fenced registers it; run `multipathd setprstatus map NAME`")
            }
        }
    }
}

#[cfg(test)]
mod tests {

    /// A job that names device `n` at step `n` and records the answers it is given.
    struct Counting {
        steps: usize,
        answers: usize,
    }

    impl Job for Counting {
        fn next(&mut self, last: Option<Answer>) -> Option<Step> {
            if last.is_some() {
                self.answers += 1;
            }
            (self.steps < 3).then(|| {
                self.steps += 1;
                Step {
                    device: self.steps,
                    request: Request::ReadKeys,
                }
            })
        }
    }

    #[test]
    fn a_primed_job_gives_its_first_step_once_then_goes_on_from_the_answers() {
        let mut inner = Counting {
            steps: 0,
            answers: 0,
        };
        let first = inner.next(None);
        let mut p = Primed {
            job: &mut inner,
            first,
        };
        let ready = || Some(Ok(Reply::Ready(Report::default())));
        assert_eq!(
            p.next(None).map(|s| s.device),
            Some(1),
            "the step asked for first"
        );
        assert_eq!(p.next(ready()).map(|s| s.device), Some(2));
        assert_eq!(p.next(ready()).map(|s| s.device), Some(3));
        assert_eq!(p.next(ready()), None);
        assert_eq!(inner.answers, 3, "every answer reached the job");
    }
    use super::*;

    #[test]
    fn a_multipath_map_stands_for_its_slaves_and_other_dm_maps_for_themselves() {
        let dir = std::env::temp_dir().join(format!("fenced-sysfs-{}", std::process::id()));
        let map = dir.join("dev/block/253:0");
        std::fs::create_dir_all(map.join("dm")).unwrap();
        std::fs::create_dir_all(map.join("slaves/sdb")).unwrap();
        std::fs::create_dir_all(map.join("slaves/sda")).unwrap();
        std::fs::write(map.join("dm/uuid"), "mpath-36001405abc\n").unwrap();
        let lvm = dir.join("dev/block/253:1");
        std::fs::create_dir_all(lvm.join("dm")).unwrap();
        std::fs::write(lvm.join("dm/uuid"), "LVM-xyz\n").unwrap();
        assert_eq!(
            multipath_slaves(&dir, 253, 0),
            Some(vec![PathBuf::from("/dev/sda"), PathBuf::from("/dev/sdb")])
        );
        assert_eq!(multipath_slaves(&dir, 253, 1), None);
        assert_eq!(multipath_slaves(&dir, 8, 0), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The fingerprint moves when an entry is added, removed or replaced, and is withheld
    /// while a directory changed within the last second.
    #[test]
    fn the_paths_stamp_moves_with_a_directorys_entries_and_is_withheld_while_racy() {
        use std::time::SystemTime;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let past = SystemTime::now() - Duration::from_secs(60);
        let age = |t: SystemTime| std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
        std::fs::write(dir.join("sda"), "").unwrap();
        assert_eq!(
            dirs_stamp(&[dir], SystemTime::now()),
            None,
            "changed just now"
        );
        age(past);
        let a = dirs_stamp(&[dir], SystemTime::now()).expect("settled");
        assert_eq!(dirs_stamp(&[dir], SystemTime::now()), Some(a));
        std::fs::write(dir.join("sdb"), "").unwrap();
        assert_eq!(dirs_stamp(&[dir], SystemTime::now()), None, "racy again");
        // Even with its time put back, the directory's size and change time differ.
        age(past);
        let b = dirs_stamp(&[dir], SystemTime::now()).expect("settled");
        assert_ne!(a, b);
        std::fs::remove_file(dir.join("sdb")).unwrap();
        age(past);
        assert_ne!(dirs_stamp(&[dir], SystemTime::now()), Some(b));
        let missing = dir.join("gone");
        assert!(dirs_stamp(&[missing.as_path()], SystemTime::now()).is_some());
    }
}

#[cfg(test)]
pub(crate) mod sim;
