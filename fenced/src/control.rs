//! The control socket: how `fenced fence|clear` reach a running daemon, which owns this node's
//! voting-disk slot (a second writer of the slot would look like a duplicate node).
//!
//! Protocol version 1: the client sends one JSON line `{"v":1,"op":"fence","node":"NAME"}`
//! (ops: `fence`, `clear`, `ping`), the daemon answers one JSON line
//! `{"v":1,"ok":true,"report":{...}}` or `{"v":1,"ok":false,"error":"..."}`. Only root may
//! connect: the daemon checks the peer's credentials (SO_PEERCRED) and the socket is 0600 in a
//! 0700 directory. Requests are bounded (4 KiB, 10 s to arrive).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::channel::{DaemonChannel, Shared};
use crate::config::Config;
use crate::fence::{self, FenceError};
use crate::keycheck::LunBoard;
use crate::storage::Storage;

/// The protocol version this build speaks.
pub const VERSION: u64 = 1;
const MAX_REQUEST: u64 = 4096;

/// The daemon's instance lock beside the socket: held (exclusively) for the daemon's whole life,
/// from before it touches any disk. A CLI that finds it held knows a daemon owns this node's
/// slot, even while that daemon is still starting and its socket is not there yet.
fn lock_path(socket: &Path) -> PathBuf {
    socket.with_file_name("daemon.lock")
}

/// Takes the instance lock (creating the 0700 directory); fails when another daemon holds it.
pub fn take_instance_lock(socket: &Path) -> Result<nix::fcntl::Flock<File>, String> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let path = lock_path(socket);
    let file = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            format!(
                "another fenced daemon already runs on this node (it holds {})",
                path.display()
            )
        } else {
            format!("locking {}: {e}", path.display())
        }
    })
}

/// Whether a daemon holds the instance lock (is running or starting).
fn daemon_present(socket: &Path) -> bool {
    let Ok(file) = File::open(lock_path(socket)) else {
        return false;
    };
    matches!(
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// What the control socket serves from: the daemon's configuration, its loop's shared state,
/// and the key checker's view of the LUNs (a fence uses the paths the checker found up).
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// The devices.
    pub storage: Arc<dyn Storage>,
    /// The LUNs and their health.
    pub board: Arc<LunBoard>,
    /// The loop's shared state.
    pub shared: Arc<Shared>,
}

/// Binds the control socket (replacing a stale one) and serves it on a thread.
pub fn serve(ctx: Context) -> std::io::Result<()> {
    let path = ctx.config.control_socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => handle(stream, &ctx),
                    Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                }
            }
        })?;
    Ok(())
}

fn handle(mut stream: UnixStream, ctx: &Context) {
    let reply =
        match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(cred) if cred.uid() == 0 => {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut line = String::new();
                match BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line) {
                    Ok(_) => dispatch(&line, ctx),
                    Err(e) => error(format!("reading the request: {e}")),
                }
            }
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "control socket: refused a non-root peer"
                );
                error("only root may control fenced".into())
            }
            Err(e) => error(format!("cannot read peer credentials: {e}")),
        };
    let _ = writeln!(stream, "{reply}");
}

fn error(message: String) -> Value {
    json!({ "v": VERSION, "ok": false, "error": message })
}

fn dispatch(line: &str, ctx: &Context) -> Value {
    let (config, shared) = (&ctx.config, &ctx.shared);
    let Ok(req) = serde_json::from_str::<Value>(line.trim()) else {
        return error("the request is not one JSON line".into());
    };
    if req["v"].as_u64() != Some(VERSION) {
        return error(format!(
            "unsupported protocol version {}; this daemon speaks {VERSION}",
            req["v"]
        ));
    }
    let node = |name: &str| {
        config
            .member(name)
            .cloned()
            .ok_or_else(|| format!("{name} is not a member of cluster {}", config.cluster_name))
    };
    let mut channel = DaemonChannel::new(shared.clone(), config.me.id);
    match (req["op"].as_str(), req["node"].as_str()) {
        (Some("ping"), _) => {
            let luns = ctx.board.health();
            json!({
                "v": VERSION,
                "ok": true,
                "node": config.me.name,
                "verdict": shared.verdict().map(|v| format!("{v:?}")),
                "degraded": luns.iter().filter(|l| l.state != "confirmed").count(),
                "luns": luns,
            })
        }
        (Some("fence"), Some(name)) => match node(name) {
            Ok(victim) => {
                tracing::warn!(victim = %victim.name, "fence requested");
                let luns = ctx.board.luns();
                match fence::fence(config, &ctx.storage, &luns, &victim, &mut channel) {
                    Ok(report) => json!({ "v": VERSION, "ok": true, "report": report }),
                    Err(FenceError::Incomplete { report, .. }) => {
                        json!({ "v": VERSION, "ok": false, "error": "not confirmed on every LUN", "report": report })
                    }
                    Err(e) => error(e.to_string()),
                }
            }
            Err(e) => error(e),
        },
        (Some("clear"), Some(name)) => match node(name) {
            Ok(member) => match fence::clear(config, &member, &mut channel) {
                Ok(epoch) => json!({ "v": VERSION, "ok": true, "epoch": epoch }),
                Err(e) => error(e.to_string()),
            },
            Err(e) => error(e),
        },
        _ => error(format!("unknown request: {}", line.trim())),
    }
}

/// Client side: sends one request to the daemon at `socket`. `Ok(None)` when no daemon listens
/// there (then the caller works on the disks itself).
///
/// While a daemon holds the instance lock but does not answer yet (it is starting), waits for it
/// up to `timeout` rather than working beside it: two writers of one slot look like two nodes.
pub fn request(socket: &Path, request: &Value, timeout: Duration) -> Result<Option<Value>, String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                if !daemon_present(socket) {
                    return Ok(None);
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!(
                        "the fenced daemon on this node is starting and does not answer on {} yet; retry",
                        socket.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("connecting to {}: {e}", socket.display())),
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    writeln!(stream, "{request}").map_err(|e| format!("sending to the daemon: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("waiting for the daemon's answer: {e}"))?;
    serde_json::from_str(line.trim())
        .map(Some)
        .map_err(|e| format!("the daemon's answer is not JSON ({e}): {line}"))
}
