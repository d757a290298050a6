//! The shared LUNs: grouping paths into LUNs, registering this node's key on every path
//! (unfence), and the background check that our key is still there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sg_pr::{
    apply_parallel, AnyDevice, Backend, PersistentReservations, PrOperation, PrType,
    RegisterOptions, ReservationKey,
};

/// The reservation type the stack uses: Write Exclusive – Registrants Only.
pub const FENCING_TYPE: PrType = PrType::WriteExclusiveRegistrantsOnly;

/// One LUN and every path to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lun {
    /// Its identity: VPD page 0x83's designator (e.g. `naa.6001405...`), or the first path when
    /// the device has none. Every node sorts LUNs by it, so "the first LUN" is the same one
    /// cluster-wide.
    pub id: String,
    /// Paths (one per I_T nexus).
    pub paths: Vec<PathBuf>,
}

/// Opens one path with the backend the device needs (SG_IO, or block-layer PR for dm/NVMe).
pub fn open_path(path: &Path, timeout: Duration) -> sg_pr::Result<AnyDevice> {
    AnyDevice::open(path, Backend::Auto, timeout)
}

/// Groups `paths` into LUNs by their VPD 0x83 identity, sorted by id. A path that cannot be
/// opened or identified is an error: a configured LUN that is not there must stop the daemon.
pub fn discover(paths: &[PathBuf], timeout: Duration) -> Result<Vec<Lun>, String> {
    let mut luns: Vec<Lun> = Vec::new();
    for path in paths {
        let dev = open_path(path, timeout).map_err(|e| e.to_string())?;
        let id = match dev.as_sg() {
            Some(sg) => sg
                .device_identification()
                .ok()
                .and_then(|d| d.value.lun_id())
                .unwrap_or_else(|| path.display().to_string()),
            None => path.display().to_string(),
        };
        match luns.iter_mut().find(|l| l.id == id) {
            Some(l) => l.paths.push(path.clone()),
            None => luns.push(Lun {
                id,
                paths: vec![path.clone()],
            }),
        }
    }
    luns.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(luns)
}

/// What unfencing one LUN did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnfenceReport {
    /// The LUN.
    pub lun: String,
    /// Paths registered.
    pub paths: usize,
    /// Whether we took the (free) reservation.
    pub reserved: bool,
    /// The key of the reservation holder afterwards (0 for all-registrants types).
    pub holder: Option<String>,
}

/// Registers `key` on every path of every LUN (REGISTER AND IGNORE EXISTING KEY, so a stale or
/// different registration of this nexus is replaced, as after an iSCSI re-login), reserves
/// (type 5) every LUN nobody reserved, and verifies with READ KEYS that the key is there. LUNs
/// are handled in parallel; the whole call ends by `deadline`.
pub fn unfence(
    luns: &[Lun],
    key: ReservationKey,
    timeout: Duration,
    deadline: Duration,
) -> Vec<(String, Result<UnfenceReport, String>)> {
    let jobs: Vec<(String, Lun)> = luns.iter().map(|l| (l.id.clone(), l.clone())).collect();
    let results = apply_parallel(jobs, 16, deadline, move |lun: &Lun| {
        unfence_one(lun, key, timeout).map_err(|e| sg_pr::Error::Io {
            device: lun.id.clone(),
            command: "unfence",
            source: std::io::Error::other(e),
        })
    });
    results
        .into_iter()
        .map(|r| (r.device, r.result.map_err(|e| e.to_string())))
        .collect()
}

fn unfence_one(lun: &Lun, key: ReservationKey, timeout: Duration) -> Result<UnfenceReport, String> {
    let mut first: Option<AnyDevice> = None;
    for path in &lun.paths {
        let dev = open_path(path, timeout).map_err(|e| e.to_string())?;
        if let Some(sg) = dev.as_sg() {
            // Absorbs a pending UNIT ATTENTION (power-on, re-login) before the PR commands.
            let _ = sg.test_unit_ready();
        }
        dev.apply(PrOperation::Register {
            current: ReservationKey::ZERO,
            new: key,
            options: RegisterOptions {
                ignore_existing: true,
                ..Default::default()
            },
        })
        .map_err(|e| e.to_string())?;
        if first.is_none() {
            first = Some(dev);
        }
    }
    let dev = first.ok_or_else(|| format!("LUN {} has no paths", lun.id))?;
    let mut reserved = false;
    let current = dev
        .reservation()
        .map_err(|e| e.to_string())?
        .value
        .reservation;
    let holder = match current {
        Some(r) => Some(r.key),
        None => match dev.apply(PrOperation::Reserve {
            key,
            pr_type: FENCING_TYPE,
        }) {
            Ok(_) => {
                reserved = true;
                Some(key)
            }
            // Another node reserved it between our read and our reserve: fine, a holder exists.
            Err(e) if e.is_reservation_conflict() => dev
                .reservation()
                .map_err(|e| e.to_string())?
                .value
                .reservation
                .map(|r| r.key),
            Err(e) => return Err(e.to_string()),
        },
    };
    let keys = dev.keys().map_err(|e| e.to_string())?;
    if !keys.value.contains(key) {
        return Err(format!(
            "{}: registered key 0x{:x} is not listed by READ KEYS after REGISTER",
            lun.id, key.0
        ));
    }
    Ok(UnfenceReport {
        lun: lun.id.clone(),
        paths: lun.paths.len(),
        reserved,
        holder: holder.map(|k| format!("0x{:x}", k.0)),
    })
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A monotonic instant as a non-zero u64 (0 means "never"), for atomics.
fn encode(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

fn decode(v: u64) -> Option<Instant> {
    (v != 0).then(|| epoch() + Duration::from_nanos(v - 1))
}

/// What the key checker last saw, shared with the daemon loop through atomics (the loop reads it
/// without locks or allocation).
#[derive(Debug)]
pub struct KeyWatch {
    confirmed: Vec<AtomicU64>,
    gone: Vec<AtomicBool>,
}

impl KeyWatch {
    /// For `luns` LUNs, nothing confirmed yet.
    pub fn new(luns: usize) -> Arc<KeyWatch> {
        Arc::new(KeyWatch {
            confirmed: (0..luns).map(|_| AtomicU64::new(0)).collect(),
            gone: (0..luns).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// Number of LUNs.
    pub fn len(&self) -> usize {
        self.confirmed.len()
    }

    /// Whether there are no LUNs.
    pub fn is_empty(&self) -> bool {
        self.confirmed.is_empty()
    }

    /// Copies the state into the loop's preallocated arrays.
    pub fn snapshot(&self, confirmed: &mut [Option<Instant>], gone: &mut [bool]) {
        for (i, c) in self.confirmed.iter().enumerate() {
            if let Some(slot) = confirmed.get_mut(i) {
                *slot = decode(c.load(Ordering::Acquire));
            }
        }
        for (i, g) in self.gone.iter().enumerate() {
            if let Some(slot) = gone.get_mut(i) {
                *slot = g.load(Ordering::Acquire);
            }
        }
    }

    fn record(&self, lun: usize, present: bool, at: Instant) {
        if present {
            self.confirmed[lun].store(encode(at), Ordering::Release);
        } else {
            self.gone[lun].store(true, Ordering::Release);
        }
    }
}

/// Starts the thread that reads the keys of every LUN (through its first path), one LUN after
/// the other, once per `interval`, and records in `watch` whether `key` is present. (Spreading
/// the reads over the interval was tried: one wake-up per LUN cost more CPU than the burst.) It
/// never blocks the daemon loop: a hung LUN only stops its confirmations from advancing, which
/// the loop sees as stale.
pub fn spawn_key_checker(
    luns: Vec<Lun>,
    key: ReservationKey,
    timeout: Duration,
    interval: Duration,
    watch: Arc<KeyWatch>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("key-check".into())
        .spawn(move || {
            let mut devices: Vec<Option<AnyDevice>> = luns.iter().map(|_| None).collect();
            loop {
                let started = Instant::now();
                for (i, lun) in luns.iter().enumerate() {
                    if devices[i].is_none() {
                        match lun.paths.first().map(|p| open_path(p, timeout)) {
                            Some(Ok(d)) => devices[i] = Some(d),
                            Some(Err(e)) => {
                                tracing::warn!(lun = %lun.id, error = %e, "cannot open LUN for the key check");
                                continue;
                            }
                            None => continue,
                        }
                    }
                    let Some(dev) = &devices[i] else { continue };
                    match dev.keys() {
                        Ok(keys) => {
                            let present = keys.value.contains(key);
                            if !present {
                                tracing::error!(lun = %lun.id, key = format_args!("0x{:x}", key.0), "our reservation key is gone: this node was fenced");
                            }
                            watch.record(i, present, Instant::now());
                        }
                        Err(e) => {
                            tracing::warn!(lun = %lun.id, error = %e, "READ KEYS failed");
                            devices[i] = None;
                        }
                    }
                }
                let spent = started.elapsed();
                if spent < interval {
                    std::thread::sleep(interval - spent);
                }
            }
        })
}
