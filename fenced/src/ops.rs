//! What a node's commands do to the cluster (fence, clear), through the daemon running on this
//! node when there is one — it owns this node's voting-disk slot — or directly on the disks.
//! Shared by `fenced fence|clear` and the fence-agent mode.

use serde_json::{json, Value};

use crate::channel::DiskChannel;
use crate::config::{self, Config, Member};
use crate::fence::{self, FenceError, FenceReport};
use crate::luns::{self, Lun};

/// The shared LUNs of `config`, grouped by identity.
pub fn discover_luns(config: &Config) -> Result<Vec<Lun>, String> {
    let paths = config::expand_paths(&config.luns);
    if paths.is_empty() && !config.luns.is_empty() {
        return Err(format!("no device matches storage.luns {:?}", config.luns));
    }
    luns::discover(&paths, config.timing.fence_deadline / 2)
}

/// Sends `op` for `node` to the daemon running on this node; `Ok(None)` when none runs.
pub fn via_daemon(config: &Config, op: &str, node: &str) -> Result<Option<Value>, String> {
    let req = json!({ "v": crate::control::VERSION, "op": op, "node": node });
    crate::control::request(
        &config.control_socket,
        &req,
        config.timing.fence_deadline * 2,
    )
}

/// Fences `node` through the running daemon, or directly when no daemon runs (the same paths
/// as `fenced fence`).
pub fn fence_node(config: &Config, node: &str) -> Result<FenceReport, String> {
    if let Some(reply) = via_daemon(config, "fence", node)? {
        if reply["ok"] == true {
            return serde_json::from_value::<FenceReport>(reply["report"].clone())
                .map_err(|e| format!("the daemon's report is not understood ({e}): {reply}"));
        }
        return Err(reply["error"]
            .as_str()
            .unwrap_or("the daemon refused")
            .to_string());
    }
    let victim = member(config, node)?.clone();
    let luns = discover_luns(config)?;
    let mut channel = DiskChannel::open(config).map_err(|e| format!("voting disks: {e}"))?;
    match fence::fence(config, &luns, &victim, &mut channel) {
        Ok(report) => Ok(report),
        Err(FenceError::Incomplete { report, .. }) => Err(format!(
            "not confirmed on every LUN: {}",
            report
                .luns
                .iter()
                .filter(|l| !l.confirmed)
                .map(|l| format!("{}: {}", l.lun, l.outcome))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Clears `node`'s dead mark through the running daemon, or directly. `Ok(None)` when it was
/// not marked dead.
pub fn clear_node(config: &Config, node: &str) -> Result<Option<u64>, String> {
    if let Some(reply) = via_daemon(config, "clear", node)? {
        if reply["ok"] == true {
            return Ok(reply["epoch"].as_u64());
        }
        return Err(reply["error"]
            .as_str()
            .unwrap_or("the daemon refused")
            .to_string());
    }
    let m = member(config, node)?.clone();
    let mut channel = DiskChannel::open(config).map_err(|e| format!("voting disks: {e}"))?;
    fence::clear(config, &m, &mut channel).map_err(|e| e.to_string())
}

/// The member named `node`, or an error naming the cluster.
pub fn member<'a>(config: &'a Config, node: &str) -> Result<&'a Member, String> {
    config.member(node).ok_or_else(|| {
        format!(
            "{node} is not a member of cluster {} (members: {})",
            config.cluster_name,
            config
                .members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}
