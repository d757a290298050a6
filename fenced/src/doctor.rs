//! `fenced doctor`: preflight checks of a node, each a PASS/WARN/FAIL line that says what to do.
//!
//! What is checked, and how (nothing here changes any device state: the SCSI commands sent are
//! TEST UNIT READY, PR IN, REPORT SUPPORTED OPERATION CODES, and at most one PR OUT per LUN that
//! the standard forbids from changing anything, see below; the keys are read again after it):
//! - the configuration loads (owner root, not group/world-writable) and its timing relations
//!   hold (D < P, L >= 2P + D, W >= 2P, W whole seconds);
//! - each voting disk: readable, of this cluster (UUID), enough slots for every member, header
//!   timeouts equal to the configuration's; a majority of them good; an odd count;
//! - each LUN path: TEST UNIT READY, READ KEYS shows this node's key, device-mapper maps are
//!   warned about (dm-multipath's PR preempt never sets the abort flag); per LUN: REPORT
//!   CAPABILITIES (type 5, Write Exclusive – Registrants Only, in the type mask; PTPL), READ FULL
//!   STATUS (one registration of our key per configured path), the reservation (type 5 held),
//!   and PREEMPT AND ABORT support, probed by [`sg_pr::PrDevice::probe_preempt_abort`]: PREEMPT AND ABORT for a
//!   key nobody holds, which a target that implements it must refuse with RESERVATION CONFLICT
//!   and one that does not rejects as an ILLEGAL REQUEST. What the target declares in REPORT
//!   SUPPORTED OPERATION CODES is only the fallback, reported beside the probe: LIO does not
//!   answer that command, and tgt declares PREEMPT AND ABORT supported and then rejects it;
//! - each NVMe namespace (a LUN whose paths are NVMe namespaces' block devices; [`nvme`]):
//!   Identify Controller (ONCS: reservations at all), Identify Namespace (RESCAP: Write
//!   Exclusive – Registrants Only, PTPL), the reservation as the NVMe Reservation Report shows
//!   it; nothing is sent that changes a registration;
//! - the transport's timeouts (iSCSI replacement_timeout, FC fast_io_fail_tmo/dev_loss_tmo,
//!   multipath no_path_retry, an NVMe fabric controller's fast_io_fail_tmo/ctrl_loss_tmo)
//!   against the deadline of each PR command in a fence (and, for NVMe, the lease)
//!   ([`crate::transport`]);
//! - the watchdog: which device the policy would pick (or the one the running daemon holds),
//!   hardware or softdog, nowayout, and whether the driver's timeout range contains W.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sg_pr::{PersistentReservations, PrType, PreemptAbort};

use crate::config::{Config, WatchdogPolicy};
use crate::luns::{self, FENCING_TYPE};
use crate::vdisk::admin::read_disk;
use crate::vdisk::quorum::majority;

mod nvme;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// As it should be.
    Pass,
    /// Works, but weaker than it should be, or not verifiable.
    Warn,
    /// Fencing would not work (or not safely) as configured.
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// PASS, WARN or FAIL.
    pub verdict: Verdict,
    /// What was checked (`config`, `voting-disk /dev/vdb`, `lun naa.6001405... path /dev/sdb`).
    pub subject: String,
    /// What was found.
    pub message: String,
    /// What to do about it (WARN and FAIL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.verdict, self.subject, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " -> {fix}")?;
        }
        Ok(())
    }
}

/// The checks made so far.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// In order.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, verdict: Verdict, subject: impl Into<String>, message: impl Into<String>) {
        self.checks.push(Check {
            verdict,
            subject: subject.into(),
            message: message.into(),
            fix: None,
        });
    }

    fn add_fix(
        &mut self,
        verdict: Verdict,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.checks.push(Check {
            verdict,
            subject: subject.into(),
            message: message.into(),
            fix: Some(fix.into()),
        });
    }

    /// Whether no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }
}

/// Runs every check for the configuration at `path`.
pub fn run(path: &Path) -> Report {
    let mut r = Report::default();
    let config = match Config::load_reporting(path) {
        Ok((c, unread)) => {
            if let Some(why) = unread {
                r.add(
                    Verdict::Fail,
                    "timeouts",
                    format!("the file leaves [timeouts] to the voting disks' header, which cannot be read ({why}); the defaults stand in for the checks below: fix the voting disks"),
                );
            }
            let t = c.timing;
            r.add(
                Verdict::Pass,
                "config",
                format!(
                    "{} loads; node {} (id {}) of cluster {} ({} members); P {} ms, D {} ms, L {} ms, W {} ms: D < P, L >= 2P + D, W >= 2P hold; fence deadline {} ms",
                    path.display(),
                    c.me.name,
                    c.me.id,
                    c.cluster_name,
                    c.members.len(),
                    t.poll.as_millis(),
                    t.io_deadline.as_millis(),
                    t.lease.as_millis(),
                    t.watchdog.as_millis(),
                    t.fence_deadline.as_millis()
                ),
            );
            c
        }
        Err(e) => {
            r.add_fix(
                Verdict::Fail,
                "config",
                e.to_string(),
                "fix the file; nothing else can be checked without it",
            );
            return r;
        }
    };
    voting_disks(&config, &mut r);
    shared_luns(&config, &mut r);
    watchdog_check(&config, &mut r);
    r
}

fn voting_disks(config: &Config, r: &mut Report) {
    let n = config.voting_disks.len();
    if n % 2 == 0 {
        r.add_fix(
            Verdict::Warn,
            "voting disks",
            format!(
                "{n} configured: an even count tolerates no more disk failures than {} disks would",
                n - 1
            ),
            "use an odd number (3 or 5) of voting disks",
        );
    } else {
        r.add(
            Verdict::Pass,
            "voting disks",
            format!("{n} configured (odd)"),
        );
    }
    let want = config.timing.as_header_timeouts();
    let needed_slots = config.members.iter().map(|m| m.id).max().unwrap_or(0);
    let mut good = 0;
    for path in &config.voting_disks {
        let subject = format!("voting disk {}", path.display());
        match read_disk(path, Some(config.cluster)) {
            Ok(dump) => {
                let h = dump.header;
                if h.timeouts != want {
                    r.add_fix(
                        Verdict::Fail,
                        subject,
                        format!(
                            "header timeouts P {} D {} L {} W {} ms differ from the configuration's P {} D {} L {} W {} ms",
                            h.timeouts.poll_ms, h.timeouts.io_deadline_ms, h.timeouts.lease_ms, h.timeouts.watchdog_ms,
                            want.poll_ms, want.io_deadline_ms, want.lease_ms, want.watchdog_ms
                        ),
                        "make [timeouts] equal to the disks' (`fenced disk dump`), or stop the cluster and reformat the disks with the new timeouts",
                    );
                } else if h.slots <= needed_slots {
                    r.add_fix(
                        Verdict::Fail,
                        subject,
                        format!(
                            "{} slots, but node id {needed_slots} needs slot {needed_slots}",
                            h.slots
                        ),
                        "reformat the voting disks with more --slots",
                    );
                } else {
                    good += 1;
                    r.add(
                        Verdict::Pass,
                        subject,
                        format!(
                            "cluster {}, {} slots, timeouts match the configuration",
                            h.cluster, h.slots
                        ),
                    );
                }
            }
            Err(e) => r.add_fix(
                Verdict::Fail,
                subject,
                e.to_string(),
                "check the path and the device; `fenced disk dump` shows what is on it",
            ),
        }
    }
    let need = majority(n);
    if good >= need {
        r.add(
            Verdict::Pass,
            "voting-disk majority",
            format!("{good} of {n} good, {need} needed"),
        );
    } else {
        r.add_fix(
            Verdict::Fail,
            "voting-disk majority",
            format!("only {good} of {n} good, {need} needed: the daemon cannot keep its lease"),
            "repair or replace the failing voting disks",
        );
    }
}

/// A key for [`sg_pr::PrDevice::probe_preempt_abort`]: random, not 0, not registered, not any member's.
fn absent_key(
    config: &Config,
    registered: &sg_pr::RegisteredKeys,
) -> Option<sg_pr::ReservationKey> {
    (0..8).find_map(|_| {
        let k = sg_pr::ReservationKey(crate::vdisk::random_u64().ok()?);
        (k.0 != 0 && !registered.contains(k) && config.member_by_key(k).is_none()).then_some(k)
    })
}

/// [`sg_pr::PrDevice::probe_preempt_abort`] on one LUN, with the preconditions checked and the
/// registrations compared before and after: a definite answer (never
/// [`PreemptAbort::Unknown`]) and the key probed, or why there is none.
fn probe_preempt_abort(
    config: &Config,
    sg: &sg_pr::PrDevice<sg_pr::SgDevice>,
) -> Result<(PreemptAbort, sg_pr::ReservationKey), String> {
    let own = config.me.key;
    let before = sg.keys().map_err(|e| format!("READ KEYS: {e}"))?.value;
    if !before.contains(own) {
        return Err("not probed: this node's key is not registered through this path".into());
    }
    let absent = absent_key(config, &before).ok_or("not probed: no random key available")?;
    let support = match sg.probe_preempt_abort(own, absent, FENCING_TYPE) {
        PreemptAbort::Unknown(why) => return Err(why),
        definite => definite,
    };
    let after = sg
        .keys()
        .map_err(|e| format!("READ KEYS after the probe: {e}"))?
        .value;
    // Every PR OUT that changes a registration bumps the PR generation.
    if after.generation != before.generation || !after.contains(own) {
        return Err(format!(
            "the registrations changed during the probe (PR generation {} -> {}): another node registered or fenced meanwhile; run doctor again",
            before.generation, after.generation
        ));
    }
    Ok((support, absent))
}

/// The `reservation_key` multipathd uses, from multipath.conf's text (`None`: not set; the
/// string `file` means the prkeys file).
fn multipath_reservation_key(conf: &str) -> Option<String> {
    crate::transport::multipath_conf_value(conf, "reservation_key")
}

/// Configured dm-multipath maps: multipathd reinstates a returning path before fenced can
/// register it, so unless multipathd registers the key itself (`reservation_key`, as
/// fence_mpath requires), this node's writes through that path meet RESERVATION CONFLICT.
fn multipath_maps(config: &Config, r: &mut Report) {
    let maps = crate::storage::multipath_maps(Path::new("/sys"), &config.luns);
    if maps.is_empty() {
        return;
    }
    let own = format!("0x{:x}", config.me.key.0);
    let conf = std::fs::read_to_string("/etc/multipath.conf").unwrap_or_default();
    let key = multipath_reservation_key(&conf);
    let ok = match key.as_deref() {
        Some("file") => std::fs::read_to_string("/etc/multipath/prkeys")
            .is_ok_and(|k| k.to_ascii_lowercase().contains(&own)),
        Some(k) => k.eq_ignore_ascii_case(&own),
        None => false,
    };
    let subject = format!(
        "multipath {}",
        maps.iter()
            .map(|(path, _)| path.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if ok {
        // multipathd acts on reservation_key only for maps whose PR flag is set.
        let mut unset: Vec<&str> = maps
            .iter()
            .map(|(_, name)| name.as_str())
            .filter(|m| !crate::storage::multipathd_knows_key(m).unwrap_or(false))
            .collect();
        unset.sort_unstable();
        unset.dedup();
        if unset.is_empty() {
            r.add(
                Verdict::Pass,
                subject,
                format!("multipathd registers this node's key {own} on paths it reinstates (reservation_key; PR flag set)"),
            );
        } else {
            r.add_fix(
                Verdict::Warn,
                subject,
                format!("multipathd's PR flag is not set for {unset:?} (multipathd getprstatus): it does not register the key on a path it reinstates"),
                "fenced sets it when it registers (start, recovery); if multipathd was restarted since, run `multipathd setprstatus map NAME` or restart fenced",
            );
        }
    } else {
        r.add_fix(
            Verdict::Warn,
            subject,
            format!(
                "multipath.conf has no reservation_key {own} for these maps (found {key:?}): multipathd reinstates a returning path before fenced registers it, and this node's writes through it meet RESERVATION CONFLICT until then"
            ),
            format!("add `reservation_key {own}` to the defaults (or the map's multipaths entry) of /etc/multipath.conf and `multipathd reconfigure`; fenced registers every path through SG_IO either way, and tells multipathd so (setprstatus)"),
        );
    }
}

/// How long the transport lets I/O wait on each path (iSCSI, FC), map (dm-multipath) and NVMe
/// controller (fabrics: [`nvme::transport_timeouts`]), held against the deadline of each PR
/// command in a fence ([`crate::transport`]). Paths of other transports (SAS, virtio) are not
/// judged.
fn transport_holds(config: &Config, r: &mut Report) {
    use crate::transport::{multipath_hold, scsi_disk_hold, Hold};
    use std::collections::BTreeMap;
    let sys = Path::new("/sys");
    let per_command = config.timing.fence_deadline / 2;
    let mut holds: Vec<(String, Hold)> = Vec::new();
    let mut namespaces: Vec<(String, String)> = Vec::new();
    for p in crate::storage::Storage::paths(&crate::storage::SystemStorage, &config.luns) {
        let name = p
            .canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()));
        match name {
            Some(name) if name.starts_with("sd") => {
                if let Some(h) = scsi_disk_hold(sys, &name) {
                    holds.push((p.display().to_string(), h));
                }
            }
            Some(name) if crate::transport::nvme::is_namespace_disk(&name) => {
                namespaces.push((p.display().to_string(), name));
            }
            _ => {}
        }
    }
    nvme::transport_timeouts(sys, &namespaces, &config.timing, r);
    let conf = std::fs::read_to_string("/etc/multipath.conf").unwrap_or_default();
    for (path, map) in crate::storage::multipath_maps(sys, &config.luns) {
        let table = std::process::Command::new("dmsetup")
            .args(["table", &map])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let queueing = table.contains("queue_if_no_path");
        holds.push((
            path.display().to_string(),
            multipath_hold(&conf, &map, queueing),
        ));
    }
    // One line per setting and value: its devices, and the setting as read.
    type Group = (Vec<String>, Hold);
    let mut grouped: BTreeMap<(&'static str, Option<Duration>), Group> = BTreeMap::new();
    for (dev, h) in holds {
        grouped
            .entry((h.setting, h.hold))
            .or_insert_with(|| (Vec::new(), h))
            .0
            .push(dev);
    }
    for ((setting, hold), (devs, h)) in grouped {
        let subject = format!("transport {}", devs.join(" "));
        match hold {
            None => r.add_fix(
                Verdict::Warn,
                subject,
                format!("{setting}: I/O waits for ever while no path is up ({}): the node's applications hang instead of failing (its fencing is unaffected: fenced sends its commands down the paths)", h.source),
                h.fix,
            ),
            Some(d) if d > per_command => r.add_fix(
                Verdict::Warn,
                subject,
                format!(
                    "{setting} {} s ({}): a failing path can hold a PR command that long, longer than a fence gives each command ({} s, half of timeouts.fence_deadline): a fence fails closed on a LUN whose every path is held",
                    d.as_secs(),
                    h.source,
                    per_command.as_secs()
                ),
                format!("{}; at most {} s", h.fix, per_command.as_secs()),
            ),
            Some(d) => r.add(
                Verdict::Pass,
                subject,
                format!(
                    "{setting} {} s: within the {} s a fence gives each command",
                    d.as_secs(),
                    per_command.as_secs()
                ),
            ),
        }
    }
}

fn shared_luns(config: &Config, r: &mut Report) {
    multipath_maps(config, r);
    transport_holds(config, r);
    let paths = crate::storage::Storage::paths(&crate::storage::SystemStorage, &config.luns);
    if config.luns.is_empty() {
        r.add_fix(
            Verdict::Warn,
            "luns",
            "storage.luns is empty: fencing only marks nodes dead on the voting disks; data is safe only after lease + watchdog",
            "list every path of every shared LUN in storage.luns",
        );
        return;
    }
    if paths.is_empty() {
        r.add_fix(
            Verdict::Fail,
            "luns",
            format!("no device matches storage.luns {:?}", config.luns),
            "check the patterns against /dev/disk/by-id",
        );
        return;
    }
    let timeout = config.timing.fence_deadline / 2;
    let found = luns::discover(&crate::storage::SystemStorage, &paths, timeout);
    for (path, e) in &found.unidentified {
        r.add_fix(
            Verdict::Warn,
            format!("path {}", path.display()),
            format!("does not answer INQUIRY, so it is not used: {e}"),
            "check the path (cabling, zoning, iSCSI session); the daemon retries it every key-check period",
        );
    }
    if found.luns.is_empty() {
        r.add_fix(
            Verdict::Fail,
            "luns",
            "none of the configured paths answers INQUIRY",
            "every shared LUN needs at least one path that answers",
        );
        return;
    }
    let luns = found.luns;
    r.add(
        Verdict::Pass,
        "key check",
        key_check_cadence(config, luns.len()),
    );
    let own = config.me.key;
    for lun in &luns {
        let mut sg_paths = 0usize;
        let mut first_sg = None;
        let mut first_nvme = None;
        for path in &lun.paths {
            let subject = format!("lun {} path {}", lun.id, path.display());
            // A path down is a degraded LUN (Warn) while another path answers; the LUN fails
            // below when none does.
            let dev = match luns::open_path(path, timeout) {
                Ok(d) => d,
                Err(e) => {
                    r.add_fix(
                        Verdict::Warn,
                        subject,
                        format!("path down: {e}"),
                        "check the path; the daemon keeps the LUN through its other paths and registers this one when it returns",
                    );
                    continue;
                }
            };
            let nvme_nsid = dev.as_block().and_then(|b| b.nvme_nsid());
            match (dev.as_sg(), nvme_nsid) {
                (None, Some(nsid)) => nvme::path_line(&subject, nsid, r),
                (None, None) => r.add_fix(
                    Verdict::Warn,
                    subject.clone(),
                    "a device-mapper (multipath) or non-SCSI device: reservations go through the block layer, and dm-multipath's PR preempt never sets the abort flag (queued writes of a fenced node are not aborted)",
                    "configure the SCSI paths (/dev/disk/by-path or the sdX under the map) in storage.luns instead of the dm device",
                ),
                (Some(sg), _) => {
                    sg_paths += 1;
                    match sg.test_unit_ready() {
                        Ok(_) => r.add(Verdict::Pass, subject.clone(), "TEST UNIT READY answers"),
                        Err(e) => r.add_fix(
                            Verdict::Warn,
                            subject.clone(),
                            format!("path down: TEST UNIT READY: {e}"),
                            "check the path (cabling, zoning, iSCSI session)",
                        ),
                    }
                }
            }
            match dev.keys() {
                Ok(k) if k.value.contains(own) => r.add(
                    Verdict::Pass,
                    subject,
                    format!(
                        "READ KEYS lists this node's key 0x{:x} ({} keys)",
                        own.0,
                        k.value.keys.len()
                    ),
                ),
                Ok(_) => r.add_fix(
                    Verdict::Fail,
                    subject,
                    format!("this node's key 0x{:x} is not registered", own.0),
                    "start fenced.service, or run `fenced unfence` (if this node was fenced, a live node runs `fenced clear` first)",
                ),
                Err(e) => r.add_fix(
                    Verdict::Fail,
                    subject,
                    format!("READ KEYS: {e}"),
                    "the target must support SCSI-3 persistent reservations",
                ),
            }
            if first_sg.is_none() && dev.as_sg().is_some() {
                first_sg = Some(dev);
            } else if first_nvme.is_none() && nvme_nsid.is_some() {
                first_nvme = Some(dev);
            }
        }
        let subject = format!("lun {}", lun.id);
        let Some(dev) = first_sg else {
            if let Some(ns) = first_nvme.as_ref().and_then(|d| d.as_block()) {
                nvme::namespace_checks(config, &subject, ns, r);
                continue;
            }
            r.add_fix(
                Verdict::Fail,
                subject,
                "no SCSI path of this LUN answers",
                "check its paths; the daemon reports it unreachable (it keeps running: the target still enforces the reservation)",
            );
            continue;
        };
        let Some(sg) = dev.as_sg() else { continue };
        match sg.report_capabilities() {
            Ok(c) => {
                let c = c.value;
                if !c.type_mask_valid {
                    r.add_fix(
                        Verdict::Warn,
                        subject.clone(),
                        "REPORT CAPABILITIES has no valid type mask: type 5 support not declared",
                        "check the target's documentation for Write Exclusive – Registrants Only",
                    );
                } else if c.supported_types.contains(&PrType::WriteExclusiveRegistrantsOnly) {
                    r.add(
                        Verdict::Pass,
                        subject.clone(),
                        format!(
                            "REPORT CAPABILITIES: type 5 (Write Exclusive – Registrants Only) supported; PTPL {}{}; ALL_TG_PT {}",
                            if c.persist_through_power_loss_capable { "capable" } else { "not capable" },
                            if c.persist_through_power_loss_active { " (active)" } else { "" },
                            if c.all_target_ports { "capable" } else { "not capable" },
                        ),
                    );
                } else {
                    r.add_fix(
                        Verdict::Fail,
                        subject.clone(),
                        format!(
                            "REPORT CAPABILITIES: type 5 (Write Exclusive – Registrants Only) not in the type mask {:?}",
                            c.supported_types
                        ),
                        "fenced needs type 5 reservations: use a target that supports them",
                    );
                }
                if !c.persist_through_power_loss_capable {
                    r.add_fix(
                        Verdict::Warn,
                        subject.clone(),
                        "the target cannot persist reservations through power loss (PTPL): a target reboot drops every key and the reservation",
                        "the daemons register again after such a loss (guarded by the voting disks); until they do, the LUN is unprotected",
                    );
                } else if config.aptpl && !c.persist_through_power_loss_active {
                    r.add_fix(
                        Verdict::Warn,
                        subject.clone(),
                        "storage.aptpl is on but APTPL is not active on this LUN: the last PR OUT carried no APTPL bit (a node with storage.aptpl = false, or another tool)",
                        "use one storage.aptpl value on every node; the next registration with APTPL activates it",
                    );
                } else if c.persist_through_power_loss_active {
                    r.add(
                        Verdict::Pass,
                        subject.clone(),
                        "APTPL active: the registrations survive the array's power loss",
                    );
                }
            }
            Err(e) => r.add_fix(
                Verdict::Warn,
                subject.clone(),
                format!("REPORT CAPABILITIES: {e}"),
                "type 5 support is not declared; the reservation check below shows whether it works",
            ),
        }
        match sg.read_full_status() {
            Ok(fs) => {
                let mine = fs
                    .value
                    .registrations
                    .iter()
                    .filter(|reg| reg.key == own)
                    .count();
                if mine >= sg_paths {
                    r.add(
                        Verdict::Pass,
                        subject.clone(),
                        format!(
                            "READ FULL STATUS: {mine} registration(s) of this node's key for {sg_paths} SCSI path(s)"
                        ),
                    );
                } else {
                    r.add_fix(
                        Verdict::Fail,
                        subject.clone(),
                        format!(
                            "READ FULL STATUS: {mine} registration(s) of this node's key for {sg_paths} SCSI path(s): some path (I_T nexus) is not registered and would be refused after a reservation change"
                        ),
                        "run `fenced unfence` (it registers every path); check that every path of the LUN is in storage.luns",
                    );
                }
            }
            Err(e) => r.add_fix(
                Verdict::Warn,
                subject.clone(),
                format!("READ FULL STATUS not available ({e}): registration per path is checked only as \"key listed\" through each path"),
                "nothing to do unless a path is missing from storage.luns",
            ),
        }
        reservation_check(
            config,
            &subject,
            dev.reservation().map(|st| st.value),
            &Flavour::SCSI,
            r,
        );
        // The probe decides; the declaration is only a fallback: tgt declares PREEMPT AND ABORT
        // supported and then rejects it.
        let declared = sg.preempt_abort_declared();
        let (support, how) = match probe_preempt_abort(config, sg) {
            Ok((probed, key)) => {
                let said = match declared {
                    PreemptAbort::Unknown(why) => why,
                    d if d == probed => "as REPORT SUPPORTED OPERATION CODES declares".into(),
                    _ => "REPORT SUPPORTED OPERATION CODES declares the opposite: the target's declaration is wrong".into(),
                };
                (
                    probed,
                    format!("probed with a PREEMPT AND ABORT of key 0x{:x}, which nobody holds; registrations unchanged; {said}", key.0),
                )
            }
            Err(probe) => match declared {
                PreemptAbort::Unknown(why) => (
                    PreemptAbort::Unknown(format!("{why}; {probe}")),
                    String::new(),
                ),
                d => (
                    d,
                    format!("declared in REPORT SUPPORTED OPERATION CODES, not confirmed: {probe}"),
                ),
            },
        };
        match support {
            PreemptAbort::Supported => r.add(
                Verdict::Pass,
                subject,
                format!("PREEMPT AND ABORT supported ({how})"),
            ),
            PreemptAbort::NotSupported => r.add_fix(
                Verdict::Warn,
                subject,
                format!("PREEMPT AND ABORT not supported ({how}): a fence falls back to plain PREEMPT, so commands the victim queued before the fence may still complete"),
                "use a target with PREEMPT AND ABORT, or count on lease + watchdog for queued I/O",
            ),
            PreemptAbort::Unknown(why) => r.add_fix(
                Verdict::Warn,
                subject,
                format!("PREEMPT AND ABORT support unknown: {why}"),
                "a fence falls back to PREEMPT if needed and says so in its per-LUN outcome",
            ),
        }
    }
}

/// How a protocol names what [`reservation_check`] reports.
struct Flavour {
    /// The fencing type, as this protocol numbers it.
    fencing_type: &'static str,
    /// The command that read the reservation.
    read: &'static str,
    /// How to release another tool's reservation.
    release: &'static str,
    /// What the device must support.
    needs: &'static str,
}

impl Flavour {
    const SCSI: Flavour = Flavour {
        fencing_type: "type 5",
        read: "READ RESERVATION",
        release: "sg_persist --release",
        needs: "the target must support SCSI-3 persistent reservations",
    };
    const NVME: Flavour = Flavour {
        fencing_type: "Write Exclusive – Registrants Only (NVMe type 3)",
        read: "NVMe Reservation Report",
        release: "nvme resv-release",
        needs: "the namespace must support NVMe reservations",
    };
}

/// The LUN's reservation, as read (`status`): held with the fencing type, by whom.
fn reservation_check(
    config: &Config,
    subject: &str,
    status: sg_pr::Result<sg_pr::ReservationStatus>,
    flavour: &Flavour,
    r: &mut Report,
) {
    let Flavour {
        fencing_type,
        read,
        release,
        needs,
    } = flavour;
    match status {
        Ok(st) => match st.reservation {
            Some(res) if res.pr_type == Some(FENCING_TYPE) => r.add(
                Verdict::Pass,
                subject,
                format!(
                    "reserved, {fencing_type}, holder 0x{:x}{}",
                    res.key.0,
                    config
                        .member_by_key(res.key)
                        .map(|m| format!(" ({})", m.name))
                        .unwrap_or_default()
                ),
            ),
            Some(res) => r.add_fix(
                Verdict::Fail,
                subject,
                format!(
                    "reserved with type {} by 0x{:x}, not {fencing_type}",
                    res.pr_type.map(|t| t.short_name()).unwrap_or("unknown"),
                    res.key.0
                ),
                format!("another tool holds a different reservation: release it ({release}) and restart fenced"),
            ),
            None => r.add_fix(
                Verdict::Warn,
                subject,
                "not reserved: registrations alone do not keep a preempted node out",
                "start fenced.service or run `fenced unfence` (it reserves a free LUN)",
            ),
        },
        Err(e) => r.add_fix(Verdict::Fail, subject, format!("{read}: {e}"), *needs),
    }
}

/// How often the key check reads each of `luns` LUNs at rest (`storage.key_check_luns`).
fn key_check_cadence(config: &Config, luns: usize) -> String {
    let period = config.timing.key_check_period();
    let budget = config.key_check_luns;
    if budget == 0 || luns <= budget + 1 {
        return format!(
            "{luns} LUN(s), every one read every {:.2} s",
            period.as_secs_f64()
        );
    }
    let periods = (luns - 1).div_ceil(budget);
    format!(
        "{luns} LUN(s): a period ({:.2} s) reads the first, every one that needs attention and {budget} of the others in turn (storage.key_check_luns), so each within {periods} periods ({:.1} s)",
        period.as_secs_f64(),
        (period * u32::try_from(periods).unwrap_or(u32::MAX)).as_secs_f64()
    )
}

fn watchdog_check(config: &Config, r: &mut Report) {
    use watchdog::{choose, discover, Decision, Kind, Policy, Roots};
    let w_secs = u32::try_from(config.timing.watchdog.as_secs()).unwrap_or(u32::MAX);
    let found = match discover(&Roots::system()) {
        Ok(f) => f,
        Err(e) => {
            r.add_fix(Verdict::Fail, "watchdog", e.to_string(), "is /sys mounted?");
            return;
        }
    };
    // The running daemon holds its watchdog open; that device is the one in use.
    let held = found.iter().find(|w| {
        w.holders
            .iter()
            .any(|h| h.comm.as_deref() == Some("fenced"))
    });
    let policy = match (&config.watchdog_device, config.watchdog_policy) {
        (Some(d), _) => Policy::Device(d.clone()),
        (None, WatchdogPolicy::RequireHardware) => Policy::RequireHardware,
        (None, WatchdogPolicy::AllowSoftdog) => Policy::AllowSoftdog {
            soft_margin: w_secs,
            soft_panic: false,
        },
    };
    let device = match (held, choose(&found, &policy)) {
        (Some(w), _) => {
            r.add(
                Verdict::Pass,
                "watchdog",
                format!(
                    "{} ({}) is held by the running fenced",
                    w.device_node.display(),
                    w.identity.as_deref().unwrap_or("unknown identity")
                ),
            );
            w.clone()
        }
        (None, Ok(Decision::Use(c))) => {
            r.add(
                Verdict::Pass,
                "watchdog",
                format!("policy {:?} would use {c}", config.watchdog_policy),
            );
            c.device
        }
        (None, Ok(Decision::LoadSoftdog { reason, .. })) => {
            r.add_fix(
                Verdict::Warn,
                "watchdog",
                format!("no watchdog device; the policy would load softdog: {reason}"),
                "softdog does not fire while the kernel is frozen: add a hardware watchdog (iTCO, IPMI, i6300esb)",
            );
            return;
        }
        (None, Err(e)) => {
            r.add_fix(
                Verdict::Fail,
                "watchdog",
                e.to_string(),
                "load the hardware watchdog driver, or set watchdog.policy = \"allow-softdog\" knowing its limits",
            );
            return;
        }
    };
    let subject = format!("watchdog {}", device.device_node.display());
    match device.kind {
        Kind::Hardware => r.add(
            Verdict::Pass,
            subject.clone(),
            "hardware: it resets the node even when the kernel is frozen",
        ),
        Kind::Software => r.add_fix(
            Verdict::Warn,
            subject.clone(),
            "softdog: it runs inside the kernel it guards and does not fire while the kernel is frozen",
            "use a hardware watchdog",
        ),
        Kind::Unknown => r.add_fix(
            Verdict::Warn,
            subject.clone(),
            "kind unknown (neither identity nor driver recognised)",
            "check with `fenced watchdog list` that it is a hardware timer",
        ),
    }
    match device.nowayout {
        Some(true) => r.add(
            Verdict::Pass,
            subject.clone(),
            "nowayout set: closing the device cannot stop it",
        ),
        Some(false) => r.add_fix(
            Verdict::Warn,
            subject.clone(),
            "nowayout not set: a process that writes the magic 'V' and closes it disarms it",
            "load the driver with nowayout=1 (or CONFIG_WATCHDOG_NOWAYOUT)",
        ),
        None => r.add(Verdict::Warn, subject.clone(), "nowayout unknown"),
    }
    match (device.min_timeout, device.max_timeout) {
        (Some(min), Some(max)) if (min..=max).contains(&w_secs) => r.add(
            Verdict::Pass,
            subject,
            format!("timeouts.watchdog {w_secs} s is in the driver's range {min}..={max} s"),
        ),
        (Some(min), Some(max)) => r.add_fix(
            Verdict::Fail,
            subject,
            format!("timeouts.watchdog {w_secs} s is outside the driver's range {min}..={max} s"),
            "choose timeouts.watchdog in the range (and reformat the voting disks with it)",
        ),
        _ => r.add_fix(
            Verdict::Warn,
            subject,
            "the driver does not publish its timeout range (min_timeout/max_timeout)",
            "the daemon reads back the timeout the driver set and refuses a different one",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multipath_reservation_key_is_read_from_multipath_conf() {
        let conf = "defaults {\n    user_friendly_names yes\n    # reservation_key 0x1\n    reservation_key \"0x5f0c0001\"\n}\n";
        assert_eq!(
            multipath_reservation_key(conf).as_deref(),
            Some("0x5f0c0001")
        );
        assert_eq!(
            multipath_reservation_key("defaults {\n reservation_key file\n}").as_deref(),
            Some("file")
        );
        assert_eq!(multipath_reservation_key("defaults {\n}"), None);
    }

    #[test]
    fn report_fails_only_on_fail() {
        let mut r = Report::default();
        r.add(Verdict::Pass, "a", "fine");
        r.add_fix(Verdict::Warn, "b", "meh", "do x");
        assert!(r.ok());
        assert_eq!(r.checks[1].to_string(), "WARN b: meh -> do x");
        r.add(Verdict::Fail, "c", "bad");
        assert!(!r.ok());
    }

    #[test]
    fn the_key_check_cadence_names_how_long_a_lun_may_go_unread() {
        let text = r#"
[cluster]
name = "prod"
uuid = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10"
nodes = [ { id = 0, name = "node1" } ]
[node]
id = 0
[storage]
voting_disks = ["/dev/vda"]
[timeouts]
poll = 1000
io_deadline = 500
lease = 3000
watchdog = 5000
"#;
        let config = Config::parse(Path::new("fenced.toml"), text).unwrap();
        assert_eq!(
            key_check_cadence(&config, 33),
            "33 LUN(s), every one read every 1.25 s"
        );
        assert!(
            key_check_cadence(&config, 256).ends_with("so each within 8 periods (10.0 s)"),
            "{}",
            key_check_cadence(&config, 256)
        );
        let every = Config::parse(
            Path::new("fenced.toml"),
            &text.replace("voting_disks", "key_check_luns = 0\nvoting_disks"),
        )
        .unwrap();
        assert_eq!(
            key_check_cadence(&every, 256),
            "256 LUN(s), every one read every 1.25 s"
        );
    }

    #[test]
    fn a_missing_config_is_one_fail() {
        let r = run(Path::new("/nonexistent/fenced.toml"));
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.checks[0].verdict, Verdict::Fail);
    }
}
