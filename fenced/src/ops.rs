//! What a node's commands do to the cluster (fence, clear), through the daemon running on this
//! node when there is one — it owns this node's voting-disk slot — or directly on the disks.
//! Shared by `fenced fence|clear` and the fence-agent mode.

use crate::channel::DiskChannel;
use crate::config::{Config, Member};
use crate::control::{Reply, Request};
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

/// Sends `req` to the daemon running on this node; `Ok(None)` when none runs.
pub fn via_daemon(config: &Config, req: &Request) -> Result<Option<Reply>, String> {
    crate::control::call(
        &config.control_socket,
        req,
        config.timing.fence_deadline * 2,
    )
    .map_err(|e| e.to_string())
}

fn unexpected(reply: &Reply) -> String {
    format!("the fenced daemon answered out of turn: {reply:?}")
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
    let req = Request::Fence { node: node.into() };
    if let Some(reply) = via_daemon(config, &req)? {
        return match reply {
            Reply::Fenced { report } => Ok(*report),
            Reply::Incomplete { report } => Err(incomplete(report)),
            Reply::Refused { error } => Err(error.into()),
            other => Err(unexpected(&other).into()),
        };
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

/// Clears `node`'s dead mark through the running daemon, or directly: only with the rejoin
/// evidence in its slot unless `force` ([`fence::clear`]). `Ok(None)` when it was not marked
/// dead.
pub fn clear_node(config: &Config, node: &str, force: bool) -> Result<Option<u64>, String> {
    let req = Request::Clear {
        node: node.into(),
        force,
    };
    if let Some(reply) = via_daemon(config, &req)? {
        return match reply {
            Reply::Cleared { epoch } => Ok(epoch),
            Reply::Refused { error } => Err(error),
            other => Err(unexpected(&other)),
        };
    }
    let m = member(config, node)?.clone();
    let mut channel = DiskChannel::open(config).map_err(|e| format!("voting disks: {e}"))?;
    fence::clear(config, &m, &mut channel, force).map_err(|e| e.to_string())
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
