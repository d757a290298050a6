//! The control socket: how `fenced fence|clear|status` reach a running daemon, which owns this
//! node's voting-disk slot (a second writer of the slot would look like a duplicate node).
//!
//! One JSON line each way ([`protocol`]: typed messages shared by both ends, versioned; the
//! previous version is still served and spoken). Only root may connect: the daemon checks the
//! peer's credentials (SO_PEERCRED) and the socket is 0600 in a 0700 directory. Requests are
//! bounded (4 KiB, 10 s to arrive).
//!
//! Two threads serve it, both started with the daemon: the acceptor reads each request and
//! answers `ping` itself, so `fenced status` answers while a fence runs; fences and clears go,
//! in the order they came, to the worker (one at a time: they write this node's slot).

pub mod protocol;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::channel::{DaemonChannel, Shared};
use crate::config::Config;
use crate::fence::{self, FenceError};
use crate::keycheck::LunBoard;
use crate::storage::Storage;
pub use protocol::{DaemonState, Reply, Request, PREVIOUS, VERSION};

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
    let (queue, jobs) = mpsc::sync_channel::<Job>(QUEUE);
    let worker = ctx.clone();
    std::thread::Builder::new()
        .name("control-fence".into())
        .spawn(move || {
            for (stream, v, req) in jobs {
                answer(stream, &protocol::encode_reply(v, &act(&req, &worker)));
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

/// A fence or clear waiting for the worker: the client, its protocol version, the request.
type Job = (UnixStream, u64, Request);

fn answer(mut stream: UnixStream, line: &str) {
    let _ = writeln!(stream, "{line}");
}

fn refuse(stream: UnixStream, v: u64, error: String) {
    answer(
        stream,
        &protocol::encode_reply(v, &Reply::Refused { error }),
    );
}

/// Reads one request: answers it (a ping, or a refusal) or queues it for the worker.
fn accept(stream: UnixStream, ctx: &Context, queue: &SyncSender<Job>) {
    let line = match read_line(&stream) {
        Ok(line) => line,
        Err(e) => return refuse(stream, VERSION, e),
    };
    let (v, req) = match protocol::decode_request(&line) {
        Ok(r) => r,
        Err(e) => return answer(stream, &protocol::encode_bad_request(&e)),
    };
    if req == Request::Ping {
        return answer(
            stream,
            &protocol::encode_reply(v, &Reply::State(state(ctx))),
        );
    }
    if let Err(TrySendError::Full((stream, v, _)) | TrySendError::Disconnected((stream, v, _))) =
        queue.try_send((stream, v, req))
    {
        refuse(
            stream,
            v,
            format!(
                "{QUEUE} fences or clears already wait on this node's daemon; retry when they end"
            ),
        );
    }
}

/// The request line, once its peer is root.
fn read_line(stream: &UnixStream) -> Result<String, String> {
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
    Ok(line)
}

fn state(ctx: &Context) -> DaemonState {
    let luns = ctx.board.health();
    DaemonState {
        node: ctx.config.me.name.clone(),
        verdict: ctx.shared.verdict().map(|v| format!("{v:?}")),
        degraded: luns.iter().filter(|l| l.state != "confirmed").count(),
        checked_ms_ago: ctx.board.checked_ms_ago(),
        luns,
    }
}

/// Performs a fence or a clear.
fn act(req: &Request, ctx: &Context) -> Reply {
    let config = &ctx.config;
    let member = |name: &str| {
        config.member(name).cloned().ok_or_else(|| Reply::Refused {
            error: format!("{name} is not a member of cluster {}", config.cluster_name),
        })
    };
    let mut channel = DaemonChannel::new(ctx.shared.clone(), config.me.id);
    let refused = |e: &dyn std::fmt::Display| Reply::Refused {
        error: e.to_string(),
    };
    match req {
        Request::Ping => Reply::State(state(ctx)),
        Request::Fence { node } => {
            let victim = match member(node) {
                Ok(m) => m,
                Err(r) => return r,
            };
            tracing::warn!(victim = %victim.name, "fence requested");
            let luns = ctx.board.luns();
            match fence::fence(config, &ctx.storage, &luns, &victim, &mut channel) {
                Ok(report) => Reply::Fenced {
                    report: Box::new(report),
                },
                Err(FenceError::Incomplete { report, .. }) => Reply::Incomplete { report },
                Err(e) => refused(&e),
            }
        }
        Request::Clear { node, force } => match member(node) {
            Ok(m) => match fence::clear(config, &m, &mut channel, *force) {
                Ok(epoch) => Reply::Cleared { epoch },
                Err(e) => refused(&e),
            },
            Err(r) => r,
        },
    }
}

/// Why a request did not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A daemon holds the instance lock but does not answer yet.
    #[error("the fenced daemon on this node is starting, or waits to be let back in after a fence, and does not answer on {} yet: retry, or run the command on a live node", socket.display())]
    Starting {
        /// The socket.
        socket: PathBuf,
    },
    /// The socket could not be reached.
    #[error("connecting to the fenced daemon on {}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Sending or receiving failed (the daemon died, or took longer than the timeout).
    #[error("talking to the fenced daemon on {}: {source}; see `journalctl -u fenced`", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not one this client understands.
    #[error("the fenced daemon's answer is not understood ({source}): {line}; is it the same release as this command?")]
    Garbled {
        /// The answer.
        line: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// Client side: sends `req` to the daemon at `socket` and returns its answer; `Ok(None)` when
/// no daemon runs there (then the caller works on the disks itself). Speaks [`VERSION`], and
/// [`PREVIOUS`] to a daemon that refuses it (not yet reloaded after an upgrade).
///
/// While a daemon holds the instance lock but does not answer yet (it is starting), waits for it
/// up to `timeout` rather than working beside it: two writers of one slot look like two nodes.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Option<Reply>, ClientError> {
    let deadline = std::time::Instant::now() + timeout;
    for v in [VERSION, PREVIOUS] {
        let Some(line) = exchange(socket, &protocol::encode_request(v, req), deadline)? else {
            return Ok(None);
        };
        if v == VERSION && protocol::is_version_refusal(&line) {
            continue;
        }
        return protocol::decode_reply(v, req, &line)
            .map(Some)
            .map_err(|source| ClientError::Garbled {
                line: line.trim().to_string(),
                source,
            });
    }
    Err(ClientError::Garbled {
        line: "no protocol version in common".into(),
        source: serde::de::Error::custom(format!(
            "the daemon refused versions {VERSION} and {PREVIOUS}"
        )),
    })
}

/// One request line out, one answer line back; `Ok(None)` when no daemon runs.
fn exchange(
    socket: &Path,
    line: &str,
    deadline: std::time::Instant,
) -> Result<Option<String>, ClientError> {
    let path = || socket.to_path_buf();
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
                    return Err(ClientError::Starting { socket: path() });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(source) => {
                return Err(ClientError::Connect {
                    socket: path(),
                    source,
                })
            }
        }
    };
    let io = |source| ClientError::Io {
        socket: path(),
        source,
    };
    let left = deadline
        .saturating_duration_since(std::time::Instant::now())
        .max(Duration::from_millis(100));
    stream.set_read_timeout(Some(left)).map_err(io)?;
    writeln!(stream, "{line}").map_err(io)?;
    let mut answer = String::new();
    if BufReader::new(stream).read_line(&mut answer).map_err(io)? == 0 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "it closed the connection without an answer",
        )));
    }
    Ok(Some(answer))
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
            "{}[control]\nsocket = \"{}\"\n",
            crate::fence::tests::CONFIG,
            socket.display()
        );
        Config::parse(Path::new("/etc/fenced/fenced.toml"), &text).unwrap()
    }

    fn serve_on(dir: &Path, shared: Arc<Shared>) -> PathBuf {
        let socket = dir.join("control.sock");
        serve(Context {
            config: config(&socket),
            storage: Arc::new(San::new()),
            board: LunBoard::new(&[]),
            shared,
        })
        .unwrap();
        socket
    }

    fn root() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipped: the control socket serves root peers only");
        }
        root
    }

    /// A fence waits for a voting-disk round no loop runs; a ping sent after it is answered
    /// meanwhile, and the fence gets its own answer once rounds come.
    #[test]
    fn a_ping_is_answered_while_a_fence_waits_and_the_fence_is_answered_after() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new();
        let socket = serve_on(dir.path(), shared.clone());
        // Connected before the ping, so the acceptor takes it first.
        let mut fence = UnixStream::connect(&socket).unwrap();
        writeln!(fence, r#"{{"v":2,"op":"fence","node":"node2"}}"#).unwrap();
        let ping = call(&socket, &Request::Ping, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        match ping {
            Reply::State(s) => assert_eq!(s.node, "node1"),
            other => panic!("{other:?}"),
        }
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
            shared.loop_record_authority(
                Marker::default(),
                crate::keycheck::Peers::default(),
                Instant::now(),
                false,
            );
            if reader.read_line(&mut reply).is_ok_and(|n| n > 0) {
                break;
            }
        }
        let fence = Request::Fence {
            node: "node2".into(),
        };
        match protocol::decode_reply(VERSION, &fence, &reply).unwrap() {
            Reply::Refused { error } => assert!(error.contains("majority"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    /// A client of the previous release is served in its own form; a request of an unknown
    /// version is refused with the reason.
    #[test]
    fn the_previous_version_is_served_and_unknown_ones_refused() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = serve_on(dir.path(), Shared::new());
        let ask = |line: &str| {
            let mut s = UnixStream::connect(&socket).unwrap();
            writeln!(s, "{line}").unwrap();
            let mut answer = String::new();
            BufReader::new(s).read_line(&mut answer).unwrap();
            answer
        };
        let v1 = ask(r#"{"v":1,"op":"ping"}"#);
        let v1: serde_json::Value = serde_json::from_str(&v1).unwrap();
        assert_eq!(
            (v1["v"].as_u64(), v1["ok"].as_bool()),
            (Some(1), Some(true)),
            "{v1}"
        );
        assert_eq!(v1["node"], "node1");
        let v9 = ask(r#"{"v":9,"op":"ping"}"#);
        assert!(protocol::is_version_refusal(&v9), "{v9}");
        assert!(v9.contains("unsupported protocol version 9"), "{v9}");
    }

    /// A daemon of the previous release (not yet reloaded) refuses version 2: the client asks
    /// again in version 1 and reads the answer.
    #[test]
    fn the_client_falls_back_to_the_previous_version_for_an_old_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let old = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for conn in listener.incoming().take(2) {
                let mut stream = conn.unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                let req: serde_json::Value = serde_json::from_str(&line).unwrap();
                seen.push(req["v"].as_u64());
                let answer = if req["v"] == 1 {
                    r#"{"v":1,"ok":true,"epoch":7}"#.to_string()
                } else {
                    format!(
                        r#"{{"v":1,"ok":false,"error":"unsupported protocol version {}; this daemon speaks 1"}}"#,
                        req["v"]
                    )
                };
                writeln!(stream, "{answer}").unwrap();
            }
            seen
        });
        let clear = Request::Clear {
            node: "node2".into(),
            force: false,
        };
        let reply = call(&socket, &clear, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert!(
            matches!(reply, Reply::Cleared { epoch: Some(7) }),
            "{reply:?}"
        );
        assert_eq!(old.join().unwrap(), [Some(2), Some(1)]);
    }
}
