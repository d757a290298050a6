//! The control socket: how `fenced fence|clear` reach a running daemon, which owns this node's
//! voting-disk slot (a second writer of the slot would look like a duplicate node).
//!
//! Protocol version 1: the client sends one JSON line `{"v":1,"op":"fence","node":"NAME"}`
//! (ops: `fence`, `clear`, `ping`), the daemon answers one JSON line
//! `{"v":1,"ok":true,"report":{...}}` or `{"v":1,"ok":false,"error":"..."}`. Only root may
//! connect: the daemon checks the peer's credentials (SO_PEERCRED) and the socket is 0600 in a
//! 0700 directory. Requests are bounded (4 KiB, 10 s to arrive).
//!
//! Two threads serve it, both started with the daemon: the acceptor reads each request and
//! answers `ping` itself, so `fenced status` answers while a fence runs; fences and clears go,
//! in the order they came, to the worker (one at a time: they write this node's slot).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
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
/// Fences and clears waiting behind the one running; more are refused at once.
const QUEUE: usize = 8;

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

/// Binds the control socket (replacing a stale one) and serves it on two threads.
pub fn serve(ctx: Context) -> std::io::Result<()> {
    let path = ctx.config.control_socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let ctx = Arc::new(ctx);
    let (queue, jobs) = mpsc::sync_channel::<(UnixStream, Value)>(QUEUE);
    let worker = ctx.clone();
    std::thread::Builder::new()
        .name("control-fence".into())
        .spawn(move || {
            for (stream, req) in jobs {
                answer(stream, &act(&req, &worker));
            }
        })?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => accept(stream, &ctx, &queue),
                    Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                }
            }
        })?;
    Ok(())
}

fn answer(mut stream: UnixStream, reply: &Value) {
    let _ = writeln!(stream, "{reply}");
}

/// Reads one request: answers it (a ping, or an error) or queues it for the worker.
fn accept(stream: UnixStream, ctx: &Context, queue: &SyncSender<(UnixStream, Value)>) {
    let req = match read_request(&stream) {
        Ok(req) => req,
        Err(e) => return answer(stream, &error(e)),
    };
    if req["op"].as_str() == Some("ping") {
        return answer(stream, &ping(ctx));
    }
    match queue.try_send((stream, req)) {
        Ok(()) => {}
        Err(TrySendError::Full((stream, _)) | TrySendError::Disconnected((stream, _))) => answer(
            stream,
            &error(format!(
                "{QUEUE} fences or clears already wait on this node's daemon; retry when they end"
            )),
        ),
    }
}

/// The request, once its peer is root and it is one JSON line of this protocol version.
fn read_request(stream: &UnixStream) -> Result<Value, String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read peer credentials: {e}"))?;
    if cred.uid() != 0 {
        tracing::warn!(
            uid = cred.uid(),
            pid = cred.pid(),
            "control socket: refused a non-root peer"
        );
        return Err("only root may control fenced".into());
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    BufReader::new(stream.take(MAX_REQUEST))
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    let req = serde_json::from_str::<Value>(line.trim())
        .map_err(|_| "the request is not one JSON line".to_string())?;
    if req["v"].as_u64() != Some(VERSION) {
        return Err(format!(
            "unsupported protocol version {}; this daemon speaks {VERSION}",
            req["v"]
        ));
    }
    Ok(req)
}

fn error(message: String) -> Value {
    json!({ "v": VERSION, "ok": false, "error": message })
}

fn ping(ctx: &Context) -> Value {
    let luns = ctx.board.health();
    json!({
        "v": VERSION,
        "ok": true,
        "node": ctx.config.me.name,
        "verdict": ctx.shared.verdict().map(|v| format!("{v:?}")),
        "degraded": luns.iter().filter(|l| l.state != "confirmed").count(),
        "checked_ms_ago": ctx.board.checked_ms_ago(),
        "luns": luns,
    })
}

/// Performs a fence or a clear.
fn act(req: &Value, ctx: &Context) -> Value {
    let (config, shared) = (&ctx.config, &ctx.shared);
    let node = |name: &str| {
        config
            .member(name)
            .cloned()
            .ok_or_else(|| format!("{name} is not a member of cluster {}", config.cluster_name))
    };
    let mut channel = DaemonChannel::new(shared.clone(), config.me.id);
    match (req["op"].as_str(), req["node"].as_str()) {
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
        _ => error(format!("unknown request: {req}")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Shared;
    use crate::storage::sim::San;
    use crate::vdisk::Marker;
    use std::time::Instant;

    fn config(socket: &Path) -> Config {
        let text = format!(
            r#"
[cluster]
name = "lab"
uuid = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10"
nodes = [ {{ id = 0, name = "node1", key = "0xa1" }}, {{ id = 1, name = "node2", key = "0xa2" }}, {{ id = 2, name = "node3", key = "0xa3" }} ]
[node]
id = 0
[storage]
luns = ["/dev/n0-*"]
voting_disks = ["/dev/vda", "/dev/vdb", "/dev/vdc"]
[timeouts]
poll = 100
io_deadline = 50
lease = 300
watchdog = 1000
[control]
socket = "{}"
"#,
            socket.display()
        );
        Config::parse(Path::new("/etc/fenced/fenced.toml"), &text).unwrap()
    }

    /// A fence waits for a voting-disk round no loop runs; a ping sent after it is answered
    /// meanwhile, and the fence gets its own answer once rounds come.
    #[test]
    fn a_ping_is_answered_while_a_fence_waits_and_the_fence_is_answered_after() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: the control socket serves root peers only");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let shared = Shared::new();
        serve(Context {
            config: config(&socket),
            storage: Arc::new(San::new()),
            board: LunBoard::new(&[]),
            shared: shared.clone(),
        })
        .unwrap();
        // Connected before the ping, so the acceptor takes it first.
        let mut fence = UnixStream::connect(&socket).unwrap();
        writeln!(fence, r#"{{"v":1,"op":"fence","node":"node2"}}"#).unwrap();
        let ping = request(
            &socket,
            &json!({"v": 1, "op": "ping"}),
            Duration::from_secs(5),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ping["ok"], true, "{ping}");
        assert_eq!(ping["node"], "node1");
        fence.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            fence.read(&mut byte).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the fence is still waiting for a round"
        );
        fence.set_nonblocking(false).unwrap();
        fence
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut reply = String::new();
        let mut reader = BufReader::new(fence);
        for _ in 0..500 {
            // Rounds without a read-majority: the fence must refuse.
            shared.loop_record_authority(Marker::default(), Instant::now(), false);
            if reader.read_line(&mut reply).is_ok_and(|n| n > 0) {
                break;
            }
        }
        let reply: Value = serde_json::from_str(reply.trim()).unwrap();
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("majority"),
            "{reply}"
        );
    }

    /// A request of another protocol version, or not JSON, is refused with the reason.
    #[test]
    fn a_request_of_another_version_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: the control socket serves root peers only");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        serve(Context {
            config: config(&socket),
            storage: Arc::new(San::new()),
            board: LunBoard::new(&[]),
            shared: Shared::new(),
        })
        .unwrap();
        let reply = request(
            &socket,
            &json!({"v": 9, "op": "ping"}),
            Duration::from_secs(5),
        )
        .unwrap()
        .unwrap();
        assert_eq!(reply["ok"], false);
        assert!(reply["error"]
            .as_str()
            .unwrap()
            .contains("unsupported protocol version 9"));
    }
}
