//! `fenced run|fence|clear|unfence|status`: the daemon and the clusterware's entry points.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fenced::args::{ClearArgs, ConfigArg, LocalArgs, NodeArgs, RunArgs};
use fenced::channel::DiskChannel;
use fenced::config::Config;
use fenced::fence::{self, FenceReport};
use fenced::luns;
use fenced::vdisk::{OpenOptions, QuorumView, SlotState, VotingDisks};

use super::progress::Progress;
use super::Exit;

/// Loads and checks the configuration `--config` names; complains when it cannot.
fn load_config(arg: &ConfigArg) -> Result<Config, Exit> {
    Config::load(&arg.config, true).map_err(|e| {
        complain!("{e}");
        Exit::Failure
    })
}

/// Runs the daemon in the foreground (systemd: Type=notify).
pub fn run(args: &RunArgs) -> Exit {
    // Before any thread: glibc reads its tunables at start-up only.
    if let Some(e) = fenced::rt::reexec_with_lean_tunables() {
        tracing::warn!(error = %e, "cannot re-execute with one malloc arena: memory locked by the daemon grows with every thread it starts");
    }
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    tracing::info!(node = %config.me.name, cluster = %config.cluster_name, "starting");
    let daemon = match fenced::daemon::start(config.clone()) {
        Ok(d) => d,
        Err(e) => {
            complain!("{e}");
            return match e {
                fenced::daemon::StartError::MarkedDead { .. } => Exit::Fenced,
                fenced::daemon::StartError::Stopped => Exit::Ok,
                _ => Exit::Failure,
            };
        }
    };
    if let Err(e) = fenced::control::serve(daemon.control_context()) {
        // Without the socket, fencing from this node would need a second writer of our slot.
        complain!("control socket {}: {e}", config.control_socket.display());
        return Exit::Failure;
    }
    match daemon.run() {
        Ok(()) => Exit::Ok,
        Err(e) => {
            complain!("{e}");
            Exit::Failure
        }
    }
}

fn luns_of(config: &Config) -> Result<Vec<luns::Lun>, Exit> {
    fenced::ops::discover_luns(config).map_err(|e| {
        complain!("{e}");
        Exit::Failure
    })
}

fn print_report(report: &FenceReport, json: bool) {
    if json {
        say!("{}", json!({ "ok": true, "report": report }));
        return;
    }
    say!("{} (key {}) fenced.", report.victim, report.victim_key);
    for l in &report.luns {
        say!("  {}: {} ({} ms)", l.lun, l.outcome, l.ms);
    }
    if let Some(a) = &report.arbiter {
        say!("  fence race won on {a}");
    }
    match report.marker_epoch {
        Some(e) => say!(
            "  marked dead on the voting disks at epoch {e} (+{} ms)",
            report.marker_ms.unwrap_or(0)
        ),
        None => say!("  already marked dead on the voting disks"),
    }
    say!(
        "  PR-protected LUNs refuse its writes since +{} ms (verified by READ KEYS)",
        report.pr_confirmed_ms
    );
    if report.victim_left {
        say!("  it had left the cluster (a clean stop): its watchdog is disarmed and no reset follows, so only PR-protected LUNs are safe from it");
    } else if report.non_pr_safe_ms > 0 {
        say!(
            "  storage without PR is safe from it after +{} ms (marker + lease + watchdog + margin)",
            report.non_pr_safe_ms
        );
    }
    say!(
        "  re-verified every LUN after the registration bound, +{} ms",
        report.reverified_ms
    );
}

/// `fenced fence NODE`: exit 0 only when the node is cut off every LUN (verified).
pub fn fence(args: &NodeArgs) -> Exit {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let progress = Progress::start(args.json, format!("fencing {}", args.node));
    let result = fenced::ops::fence_node(&config, &args.node);
    drop(progress);
    match result {
        Ok(report) => {
            print_report(&report, args.json);
            Exit::Ok
        }
        Err(e) => {
            if args.json {
                say!(
                    "{}",
                    json!({ "ok": false, "error": e.message, "report": e.report })
                );
            } else if let Some(report) = &e.report {
                for l in &report.luns {
                    say!(
                        "  {}: {} ({})",
                        l.lun,
                        l.outcome,
                        if l.confirmed {
                            "confirmed"
                        } else {
                            "NOT CONFIRMED"
                        }
                    );
                }
            }
            complain!("{e}");
            if e.report.is_some() {
                Exit::Incomplete
            } else {
                Exit::Failure
            }
        }
    }
}

/// Reports a failure: on stderr, and with `--json` as `{"ok":false,"error":...}` on stdout too.
fn failed(json: bool, message: &str, code: Exit) -> Exit {
    if json {
        say!("{}", json!({ "ok": false, "error": message }));
    }
    complain!("{message}");
    code
}

/// `fenced clear [--force] NODE`.
pub fn clear(clear: &ClearArgs) -> Exit {
    let args = &clear.target;
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    match fenced::ops::clear_node(&config, &args.node, clear.force) {
        Ok(epoch) if args.json => {
            say!(
                "{}",
                json!({ "ok": true, "node": args.node, "was_dead": epoch.is_some(), "epoch": epoch })
            );
            Exit::Ok
        }
        Ok(Some(epoch)) => {
            say!("{} may rejoin (epoch {epoch}): its fenced registers its key once it reads the new marker (at start, or within a poll period if it waits to be let back in).", args.node);
            Exit::Ok
        }
        Ok(None) => {
            say!("{} is not marked dead.", args.node);
            Exit::Ok
        }
        Err(e) => failed(args.json, &e, Exit::Failure),
    }
}

/// `fenced unfence`: register this node's key on every path again (after a reboot, or after
/// `fenced clear`). Refused while the authority marks this node dead.
pub fn unfence(args: &LocalArgs) -> Exit {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let progress = Progress::start(args.json, "reading the voting disks");
    let results = register_everywhere(&config, &progress);
    drop(progress);
    let results = match results {
        Ok(r) => r,
        Err(e) => return failed(args.json, &e, Exit::Failure),
    };
    let ok = results.iter().all(|(_, r)| r.is_ok());
    if args.json {
        let per_lun: Vec<Value> = results
            .iter()
            .map(|(lun, r)| match r {
                Ok(r) => json!({
                    "lun": lun,
                    "registered_paths": r.paths,
                    "reserved": r.reserved,
                    "paths_down": r.paths_down,
                }),
                Err(e) => json!({ "lun": lun, "error": e.to_string() }),
            })
            .collect();
        say!("{}", json!({ "ok": ok, "luns": per_lun }));
    }
    for (lun, r) in &results {
        match r {
            Ok(r) if !args.json => say!(
                "{lun}: registered on {} path(s){}{}",
                r.paths,
                if r.reserved { ", reserved" } else { "" },
                if r.paths_down.is_empty() {
                    String::new()
                } else {
                    format!("; DEGRADED, not registered: {}", r.paths_down.join("; "))
                }
            ),
            Ok(_) => {}
            Err(e) => complain!("{lun}: {e}"),
        }
    }
    if ok {
        Exit::Ok
    } else {
        Exit::Failure
    }
}

/// `fenced unfence`'s work: refused while the authority marks this node dead; else every path
/// of every LUN registered ([`luns::unfence`]), the LUN's result each.
fn register_everywhere(
    config: &Config,
    progress: &Progress,
) -> Result<Vec<luns::LunUnfenced>, String> {
    let mut channel = DiskChannel::open(config).map_err(|e| format!("voting disks: {e}"))?;
    let a =
        fence::MarkerChannel::authority(&mut channel).map_err(|e| format!("voting disks: {e}"))?;
    if a.is_present() && a.dead.contains(config.me.id) {
        return Err(format!(
            "this node is marked dead (epoch {}): a live node must run `fenced clear {}` first",
            a.epoch, config.me.name
        ));
    }
    progress.set("finding the LUNs and their paths");
    let luns = fenced::ops::discover_luns(config)?;
    progress.set(format!(
        "registering on {} path(s) of {} LUN(s)",
        luns.iter().map(|l| l.paths.len()).sum::<usize>(),
        luns.len()
    ));
    Ok(luns::unfence(
        std::sync::Arc::new(fenced::storage::SystemStorage),
        &luns,
        config.registration(),
        config.timing.fence_deadline / 2,
        config.timing.fence_deadline,
    ))
}

/// `fenced status`: what the voting disks, the LUNs and the watchdogs say now.
pub fn status(args: &LocalArgs) -> Exit {
    // A status must report voting disks that do not answer, even when they hold the timeouts.
    let (config, unread) = match Config::load_reporting(&args.config.config) {
        Ok(c) => c,
        Err(e) => {
            complain!("{e}");
            return Exit::Failure;
        }
    };
    let mut out = json!({ "cluster": config.cluster_name, "node": config.me.name });
    if let Some(why) = unread {
        out["timeouts_error"] = json!(why);
    }
    // Voting disks: two rounds one poll period apart, to tell live heartbeats from stale ones.
    match VotingDisks::open(
        &config.voting_disks,
        &OpenOptions {
            cluster: Some(config.cluster),
            ..OpenOptions::default()
        },
    ) {
        Ok(mut disks) => {
            // An observer: the running daemon writes this node's slot, which is not a duplicate.
            let mut view = QuorumView::observer(disks.header(), disks.paths().len());
            view.update(disks.poll_round(), Instant::now());
            std::thread::sleep(config.timing.poll + Duration::from_millis(200));
            let paths = disks.paths().to_vec();
            let round = disks.poll_round();
            view.update(round, Instant::now());
            let verdicts: Vec<Value> = paths
                .iter()
                .zip(round.disk_statuses())
                .map(|(p, s)| json!({ "disk": p, "status": format!("{s:?}") }))
                .collect();
            let nodes: Vec<Value> = config
                .members
                .iter()
                .map(|m| {
                    let n = view.node(m.id);
                    json!({
                        "id": m.id,
                        "name": m.name,
                        "key": format!("0x{:x}", m.key.0),
                        "state": n.and_then(|n| n.state).map(|s| match s {
                            SlotState::SelfFenced(_) => "SelfFenced".to_string(),
                            s => format!("{s:?}"),
                        }),
                        "self_fence_cause": n
                            .and_then(|n| n.state)
                            .and_then(SlotState::self_fence_cause)
                            .map(|c| c.as_str()),
                        "incarnation": n.and_then(|n| n.heartbeat).map(|h| format!("{:#018x}", h.0)),
                        "heartbeat_seq": n.and_then(|n| n.heartbeat).map(|h| h.1),
                        "heartbeat_advancing": n.is_some_and(|n| n.rounds_since_change == 0 && n.heartbeat.is_some()),
                        "dead": view.is_dead(m.id),
                        "rebooted_since_fence": view.is_dead(m.id) && n.is_some_and(|n| n.rebooted_since_fence()),
                    })
                })
                .collect();
            out["voting_disks"] = json!(verdicts);
            out["read_majority"] = json!(view.has_read_majority());
            out["authority"] = match view.authority() {
                Some(a) => json!({
                    "epoch": a.marker.epoch,
                    "issuer": a.marker.issuer,
                    "dead": a.marker.dead.iter().collect::<Vec<_>>(),
                    "disks": a.disks,
                }),
                None => Value::Null,
            };
            out["nodes"] = json!(nodes);
        }
        Err(e) => out["voting_disks_error"] = json!(e.to_string()),
    }
    // LUNs: keys and reservation holder, read through the first path.
    match luns_of(&config) {
        Ok(luns) => {
            let mut list = Vec::new();
            for lun in &luns {
                let mut entry = json!({ "lun": lun.id, "paths": lun.paths });
                // Through the first path that answers: a path down is routine.
                let mut errors = Vec::new();
                let dev = lun.paths.iter().find_map(|p| {
                    use sg_pr::PersistentReservations;
                    match luns::open_path(p, config.timing.lease)
                        .and_then(|d| d.keys().map(|k| (d, k)))
                    {
                        Ok(ok) => Some(ok),
                        Err(e) => {
                            errors.push(e.to_string());
                            None
                        }
                    }
                });
                if !errors.is_empty() {
                    entry["path_errors"] = json!(errors);
                }
                match dev {
                    Some((dev, k)) => {
                        use sg_pr::PersistentReservations;
                        entry["keys"] = json!(k
                            .value
                            .keys
                            .iter()
                            .map(|key| {
                                let who = config.member_by_key(*key).map(|m| m.name.clone());
                                json!({ "key": format!("0x{:x}", key.0), "node": who })
                            })
                            .collect::<Vec<_>>());
                        entry["own_key_registered"] = json!(k.value.contains(config.me.key));
                        if let Ok(r) = dev.reservation() {
                            entry["reservation"] = match r.value.reservation {
                                Some(r) => json!({
                                    "holder": format!("0x{:x}", r.key.0),
                                    "holder_node": config.member_by_key(r.key).map(|m| m.name.clone()),
                                    "type": r.pr_type.map(|t| t.short_name()),
                                }),
                                None => Value::Null,
                            };
                        }
                    }
                    None => entry["error"] = json!(errors.join("; ")),
                }
                list.push(entry);
            }
            out["luns"] = json!(list);
        }
        Err(_) => out["luns_error"] = json!("LUN discovery failed"),
    }
    if let Ok(wds) = watchdog::discover(&watchdog::Roots::system()) {
        out["watchdogs"] = json!(wds
            .iter()
            .map(|w| json!({
                "device": w.device_node,
                "identity": w.identity,
                "kind": format!("{}", w.kind),
                "state": w.state.as_ref().map(|s| format!("{s:?}")),
                "timeout": w.timeout,
                "timeleft": w.timeleft,
                "holders": w.holders,
            }))
            .collect::<Vec<_>>());
    }
    let ping = fenced::control::call(
        &config.control_socket,
        &fenced::control::Request::Ping,
        Duration::from_secs(5),
    );
    out["daemon"] = match ping {
        Ok(Some(fenced::control::Reply::State(s))) => json!({
            "running": true,
            "verdict": s.verdict,
            "degraded": s.degraded,
            "key_check_ms_ago": s.checked_ms_ago,
            "luns": s.luns,
        }),
        Ok(Some(other)) => json!({ "running": true, "error": format!("{other:?}") }),
        Ok(None) => json!({ "running": false }),
        Err(e) => json!({ "running": null, "error": e.to_string() }),
    };
    let (health, why) = status_health(&out, config.me.id);
    out["health"] = json!(health.name());
    out["health_reasons"] = json!(why);
    if args.json {
        say!("{out}");
    } else {
        say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    health.exit()
}

/// What `fenced status` found, worst first; its exit code says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    /// The authority marks this node dead.
    Fenced,
    /// No daemon runs, its loop is not healthy (it does not feed the watchdog), or the voting
    /// disks give no read-majority.
    Unhealthy,
    /// Running and healthy, but a LUN, a path or a voting disk is not as it should be.
    Degraded,
    /// Everything confirmed.
    Ok,
}

impl Health {
    fn name(self) -> &'static str {
        match self {
            Health::Fenced => "fenced",
            Health::Unhealthy => "unhealthy",
            Health::Degraded => "degraded",
            Health::Ok => "ok",
        }
    }

    fn exit(self) -> Exit {
        match self {
            Health::Fenced => Exit::Fenced,
            Health::Unhealthy => Exit::Unhealthy,
            Health::Degraded => Exit::Degraded,
            Health::Ok => Exit::Ok,
        }
    }
}

/// The node's health from the status document `out` (node id `me`), with the reasons.
fn status_health(out: &Value, me: u8) -> (Health, Vec<String>) {
    let mut found = Vec::new();
    let dead = out["authority"]["dead"]
        .as_array()
        .is_some_and(|d| d.iter().any(|n| n.as_u64() == Some(u64::from(me))));
    if dead {
        found.push((
            Health::Fenced,
            "the authority marks this node dead".to_string(),
        ));
    }
    let daemon = &out["daemon"];
    if daemon["running"] != true {
        found.push((Health::Unhealthy, "no fenced daemon runs".to_string()));
    } else if daemon["verdict"] != "Healthy" {
        found.push((
            Health::Unhealthy,
            format!("the daemon's verdict is {}", daemon["verdict"]),
        ));
    }
    if out["read_majority"] != true {
        found.push((
            Health::Unhealthy,
            "no read-majority of voting disks".to_string(),
        ));
    }
    if let Some(disks) = out["voting_disks"].as_array() {
        for d in disks.iter().filter(|d| d["status"] != "Answered") {
            found.push((
                Health::Degraded,
                format!("voting disk {} {}", d["disk"], d["status"]),
            ));
        }
    }
    if daemon["degraded"].as_u64().is_some_and(|n| n > 0) {
        found.push((
            Health::Degraded,
            format!("the daemon reports {} LUN(s) degraded", daemon["degraded"]),
        ));
    }
    for lun in out["luns"].as_array().into_iter().flatten() {
        if lun.get("error").is_some() || lun.get("path_errors").is_some() {
            found.push((
                Health::Degraded,
                format!("LUN {}: a path failed", lun["lun"]),
            ));
        } else if lun["own_key_registered"] == false {
            found.push((
                Health::Degraded,
                format!("LUN {}: this node's key is not registered", lun["lun"]),
            ));
        }
    }
    if out.get("luns_error").is_some() {
        found.push((Health::Degraded, "LUN discovery failed".to_string()));
    }
    let worst = found.iter().map(|(h, _)| *h).min().unwrap_or(Health::Ok);
    (worst, found.into_iter().map(|(_, why)| why).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status document of a healthy node 0 of two, on one LUN, three voting disks.
    fn healthy() -> Value {
        json!({
            "voting_disks": [
                { "disk": "/dev/vda", "status": "Answered" },
                { "disk": "/dev/vdb", "status": "Answered" },
                { "disk": "/dev/vdc", "status": "Answered" },
            ],
            "read_majority": true,
            "authority": { "epoch": 2, "issuer": 1, "dead": [], "disks": 3 },
            "luns": [ { "lun": "naa.1", "own_key_registered": true } ],
            "daemon": { "running": true, "verdict": "Healthy", "degraded": 0 },
        })
    }

    fn health(out: &Value) -> (Exit, Vec<String>) {
        let (h, why) = status_health(out, 0);
        (h.exit(), why)
    }

    #[test]
    fn a_healthy_node_exits_0() {
        assert_eq!(health(&healthy()), (Exit::Ok, vec![]));
    }

    #[test]
    fn a_degraded_lun_path_or_voting_disk_exits_5() {
        let mut out = healthy();
        out["daemon"]["degraded"] = json!(1);
        assert_eq!(health(&out).0, Exit::Degraded);
        let mut out = healthy();
        out["luns"][0]["path_errors"] = json!(["/dev/sdb: timed out"]);
        assert_eq!(health(&out).0, Exit::Degraded);
        let mut out = healthy();
        out["luns"][0]["own_key_registered"] = json!(false);
        assert_eq!(health(&out).0, Exit::Degraded);
        let mut out = healthy();
        out["voting_disks"][2]["status"] = json!("IoError(5)");
        let (code, why) = health(&out);
        assert_eq!(code, Exit::Degraded);
        assert!(why[0].contains("/dev/vdc"), "{why:?}");
    }

    #[test]
    fn no_daemon_an_unhealthy_loop_or_no_majority_exits_6() {
        let mut out = healthy();
        out["daemon"] = json!({ "running": false });
        assert_eq!(health(&out).0, Exit::Unhealthy);
        let mut out = healthy();
        out["daemon"]["verdict"] = json!("Unhealthy(LeaseExpired)");
        assert_eq!(health(&out).0, Exit::Unhealthy);
        let mut out = healthy();
        out["read_majority"] = json!(false);
        out["voting_disks"][0]["status"] = json!("IoError(5)");
        out["voting_disks"][1]["status"] = json!("IoError(5)");
        let (code, why) = health(&out);
        assert_eq!(
            code,
            Exit::Unhealthy,
            "the worst wins over the degraded disks"
        );
        assert_eq!(why.len(), 3, "{why:?}");
    }

    #[test]
    fn a_node_marked_dead_exits_7() {
        let mut out = healthy();
        out["authority"]["dead"] = json!([0]);
        out["daemon"] = json!({ "running": false });
        assert_eq!(health(&out).0, Exit::Fenced);
        // Another node dead is not this node's health.
        let mut out = healthy();
        out["authority"]["dead"] = json!([1]);
        assert_eq!(health(&out).0, Exit::Ok);
    }

    /// The documented numbers (the man page's EXIT STATUS and `fenced --help`).
    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes = [
            (Exit::Ok, 0),
            (Exit::Failure, 1),
            (Exit::Refused, 3),
            (Exit::Incomplete, 4),
            (Exit::Degraded, 5),
            (Exit::Unhealthy, 6),
            (Exit::Fenced, 7),
        ];
        for (exit, n) in codes {
            assert_eq!(exit as u8, n);
            assert!(
                fenced::args::EXIT_CODES_HELP.contains(&format!("\n  {n}  ")),
                "{n} is documented"
            );
        }
        assert!(fenced::args::EXIT_CODES_HELP.contains("\n  2  bad command line"));
    }
}
