//! `fenced run|fence|clear|unfence|status`: the daemon and the clusterware's entry points.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fenced::args::{ConfigArg, LocalArgs, NodeArgs, RunArgs};
use fenced::channel::DiskChannel;
use fenced::config::Config;
use fenced::fence::{self, FenceReport};
use fenced::luns;
use fenced::vdisk::{OpenOptions, QuorumView, SlotState, VotingDisks};

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
            return Exit::Failure;
        }
    };
    if let Err(e) = fenced::control::serve(daemon.control_context()) {
        // Without the socket, fencing from this node would need a second writer of our slot.
        complain!("control socket {}: {e}", config.control_socket.display());
        return Exit::Failure;
    }
    let e = daemon.run();
    complain!("{e}");
    Exit::Failure
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
    if report.non_pr_safe_ms > 0 {
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
    match fenced::ops::fence_node(&config, &args.node) {
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

/// `fenced clear NODE`.
pub fn clear(args: &NodeArgs) -> Exit {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    match fenced::ops::clear_node(&config, &args.node) {
        Ok(Some(epoch)) => {
            say!("{} may rejoin (epoch {epoch}).", args.node);
            Exit::Ok
        }
        Ok(None) => {
            say!("{} is not marked dead.", args.node);
            Exit::Ok
        }
        Err(e) => {
            complain!("{e}");
            Exit::Failure
        }
    }
}

/// `fenced unfence`: register this node's key on every path again (after a reboot, or after
/// `fenced clear`). Refused while the authority marks this node dead.
pub fn unfence(args: &LocalArgs) -> Exit {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut channel = match DiskChannel::open(&config) {
        Ok(c) => c,
        Err(e) => {
            complain!("voting disks: {e}");
            return Exit::Failure;
        }
    };
    match fence::MarkerChannel::authority(&mut channel) {
        Ok(a) if a.is_present() && a.dead.contains(config.me.id) => {
            complain!(
                "this node is marked dead (epoch {}): a live node must run `fenced clear {}` first",
                a.epoch,
                config.me.name
            );
            return Exit::Failure;
        }
        Ok(_) => {}
        Err(e) => {
            complain!("voting disks: {e}");
            return Exit::Failure;
        }
    }
    let luns = match luns_of(&config) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let mut failed = false;
    let results = luns::unfence(
        std::sync::Arc::new(fenced::storage::SystemStorage),
        &luns,
        config.registration(),
        config.timing.fence_deadline / 2,
        config.timing.fence_deadline,
    );
    for (lun, r) in &results {
        match r {
            Ok(r) => say!(
                "{lun}: registered on {} path(s){}{}",
                r.paths,
                if r.reserved { ", reserved" } else { "" },
                if r.paths_down.is_empty() {
                    String::new()
                } else {
                    format!("; DEGRADED, not registered: {}", r.paths_down.join("; "))
                }
            ),
            Err(e) => {
                failed = true;
                complain!("{lun}: {e}");
            }
        }
    }
    if failed {
        Exit::Failure
    } else {
        Exit::Ok
    }
}

/// `fenced status`: what the voting disks, the LUNs and the watchdogs say now.
pub fn status(args: &LocalArgs) -> Exit {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut out = json!({ "cluster": config.cluster_name, "node": config.me.name });
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
                        "heartbeat_seq": n.and_then(|n| n.heartbeat).map(|h| h.1),
                        "heartbeat_advancing": n.is_some_and(|n| n.rounds_since_change == 0 && n.heartbeat.is_some()),
                        "dead": view.is_dead(m.id),
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
    let ping = json!({ "v": fenced::control::VERSION, "op": "ping" });
    out["daemon"] =
        match fenced::control::request(&config.control_socket, &ping, Duration::from_secs(5)) {
            Ok(Some(reply)) => json!({
                "running": true,
                "verdict": reply["verdict"],
                "degraded": reply["degraded"],
                "key_check_ms_ago": reply["checked_ms_ago"],
                "luns": reply["luns"],
            }),
            Ok(None) => json!({ "running": false }),
            Err(e) => json!({ "running": null, "error": e }),
        };
    if args.json {
        say!("{out}");
    } else {
        say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Exit::Ok
}
