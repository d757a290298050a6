//! What a node's commands do to the cluster (fence, clear), through the daemon running on this
//! node when there is one — it owns this node's voting-disk slot — or directly on the disks.
//! Shared by `fenced fence|clear` and the fence-agent mode.

use serde_json::{json, Value};

use crate::channel::DiskChannel;
use crate::config::{Config, Member};
use crate::fence::{self, FenceError, FenceReport};
use crate::luns::{self, Lun};
use crate::storage::{Storage, SystemStorage};

/// The shared LUNs of `config`, grouped by identity. Paths that do not answer INQUIRY are left
/// out with a warning (a LUN is reached through its other paths); none answering is an error.
pub fn discover_luns(config: &Config) -> Result<Vec<Lun>, String> {
    let paths = SystemStorage.paths(&config.luns);
    if paths.is_empty() && !config.luns.is_empty() {
        return Err(format!("no device matches storage.luns {:?}", config.luns));
    }
    luns::discover(&SystemStorage, &paths, config.timing.fence_deadline / 2)
        .usable()
        .map_err(|e| e.to_string())
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

/// Why `fence_node` did not confirm the fence.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FenceFailure {
    /// What to tell the operator.
    pub message: String,
    /// The per-LUN report when the victim is cut off some LUNs but not confirmed on all.
    pub report: Option<Box<FenceReport>>,
}

impl From<String> for FenceFailure {
    fn from(message: String) -> Self {
        FenceFailure {
            message,
            report: None,
        }
    }
}

fn incomplete(report: Box<FenceReport>) -> FenceFailure {
    FenceFailure {
        message: format!(
            "{} is not confirmed cut off every LUN; not confirmed: {}",
            report.victim,
            report
                .luns
                .iter()
                .filter(|l| !l.confirmed)
                .map(|l| format!("{}: {}", l.lun, l.outcome))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        report: Some(report),
    }
}

/// Fences `node` through the running daemon, or directly when no daemon runs (the same paths
/// as `fenced fence`).
pub fn fence_node(config: &Config, node: &str) -> Result<FenceReport, FenceFailure> {
    if let Some(reply) = via_daemon(config, "fence", node)? {
        let report = || {
            serde_json::from_value::<FenceReport>(reply["report"].clone())
                .map_err(|e| format!("the daemon's report is not understood ({e}): {reply}"))
        };
        if reply["ok"] == true {
            return Ok(report()?);
        }
        if !reply["report"].is_null() {
            return Err(incomplete(Box::new(report()?)));
        }
        return Err(reply["error"]
            .as_str()
            .unwrap_or("the daemon refused")
            .to_string()
            .into());
    }
    let victim = member(config, node)?.clone();
    let luns = discover_luns(config)?;
    let mut channel = DiskChannel::open(config).map_err(|e| format!("voting disks: {e}"))?;
    let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(SystemStorage);
    match fence::fence(config, &storage, &luns, &victim, &mut channel) {
        Ok(report) => Ok(report),
        Err(FenceError::Incomplete { report, .. }) => Err(incomplete(report)),
        Err(e) => Err(e.to_string().into()),
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
