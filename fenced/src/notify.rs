//! systemd's notification protocol (sd_notify): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1
//! with EXTEND_TIMEOUT_USEC=.
//!
//! Our own small client rather than the sd-notify crate: that crate fails on abstract sockets
//! (`NOTIFY_SOCKET=@...`, ENOENT), and the daemon loop needs a send that never allocates: the
//! socket is connected once, and messages are written from fixed buffers.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A connection to systemd's notification socket, or nothing when not run by systemd.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<UnixDatagram>,
}

/// Room for one `STATUS=` line.
pub const STATUS_CAPACITY: usize = 200;

impl Notifier {
    /// Connects to `$NOTIFY_SOCKET` (path or `@abstract`); without it, every send is a no-op.
    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) => Notifier::connect(&path.to_string_lossy()),
            None => Ok(Notifier { socket: None }),
        }
    }

    /// Connects to `target` (a path, or `@name` for the abstract namespace).
    pub fn connect(target: &str) -> io::Result<Notifier> {
        let addr = match target.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(target)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.connect_addr(&addr)?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket: Some(socket),
        })
    }

    /// Whether systemd is listening.
    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends raw `KEY=VALUE` lines. Never blocks (the socket is non-blocking) and never
    /// allocates; a full or gone socket is reported, not retried.
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        match &self.socket {
            Some(s) => s.send(message).map(|_| ()),
            None => Ok(()),
        }
    }

    /// READY=1.
    pub fn ready(&self) -> io::Result<()> {
        self.send(b"READY=1")
    }

    /// WATCHDOG=1: the daemon loop is alive and the node healthy.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send(b"WATCHDOG=1")
    }

    /// STOPPING=1, with `EXTEND_TIMEOUT_USEC=` the time the stop may take: systemd then kills
    /// the daemon only past the later of `TimeoutStopSec=` and now + `within` (since systemd
    /// 236). A leave whose limit exceeds the unit's stop timeout (long timeouts) is not killed
    /// halfway, which would leave the watchdog armed and reset the node.
    pub fn stopping_within(&self, within: std::time::Duration) -> io::Result<()> {
        self.send_formatted(
            &mut [0u8; 64],
            format_args!("STOPPING=1\nEXTEND_TIMEOUT_USEC={}", within.as_micros()),
        )
    }

    /// `STATUS=<line>`, formatted into a stack buffer (truncated to [`STATUS_CAPACITY`]).
    pub fn status(&self, args: std::fmt::Arguments<'_>) -> io::Result<()> {
        self.send_formatted(
            &mut [0u8; STATUS_CAPACITY + 7],
            format_args!("STATUS={args}"),
        )
    }

    /// Formats `args` into `buf` (truncated to its length: no allocation) and sends it; nothing
    /// is formatted when systemd is not listening.
    fn send_formatted(&self, buf: &mut [u8], args: std::fmt::Arguments<'_>) -> io::Result<()> {
        if self.socket.is_none() {
            return Ok(());
        }
        let mut w = StackWriter { buf, len: 0 };
        let _ = std::fmt::write(&mut w, args);
        let len = w.len;
        self.send(&w.buf[..len])
    }
}

/// A `fmt::Write` into a fixed buffer that truncates instead of failing.
pub struct StackWriter<'a> {
    /// The buffer.
    pub buf: &'a mut [u8],
    /// Bytes written.
    pub len: usize,
}

impl std::fmt::Write for StackWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.ready().unwrap();
        n.status(format_args!("healthy, epoch {}", 7)).unwrap();
        let mut buf = [0u8; 512];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=healthy, epoch 7");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("fenced-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.watchdog().unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn stopping_asks_for_the_time_the_leave_may_take() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.stopping_within(std::time::Duration::from_millis(27_500))
            .unwrap();
        let mut buf = [0u8; 128];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nEXTEND_TIMEOUT_USEC=27500000");
    }

    #[test]
    fn long_status_lines_are_truncated_not_failed() {
        let mut buf = [0u8; 8];
        let mut w = StackWriter {
            buf: &mut buf,
            len: 0,
        };
        std::fmt::Write::write_str(&mut w, "0123456789").unwrap();
        assert_eq!(&buf, b"01234567");
    }

    #[test]
    fn without_systemd_sends_are_no_ops() {
        let n = Notifier { socket: None };
        assert!(!n.active());
        n.watchdog().unwrap();
    }
}
