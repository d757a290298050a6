//! Under systemd, `fenced` writes journal lines on stderr (`<N>` priority prefixes) only when
//! stderr is the stream systemd names in JOURNAL_STREAM: here a socket stands in for journald's.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

/// Runs `fenced run` with a configuration that does not exist (it fails at once with an error),
/// stderr on a socket, and JOURNAL_STREAM naming that socket (or, with `other_inode`, another
/// file, as a shell redirect under systemd leaves it). Returns what arrived on the socket.
fn run_with_stderr_on_a_socket(other_inode: bool) -> String {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let st = std::fs::File::from(OwnedFd::from(theirs.try_clone().unwrap()))
        .metadata()
        .unwrap();
    let ino = if other_inode { st.ino() + 1 } else { st.ino() };
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(["run", "--config"])
        .arg(dir.path().join("missing.toml"))
        .env("JOURNAL_STREAM", format!("{}:{ino}", st.dev()))
        .env_remove("FENCED_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(OwnedFd::from(theirs)))
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a missing configuration fails the start"
    );
    let mut text = String::new();
    let mut ours = ours;
    ours.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_start_failure_reaches_the_journal_at_err_priority() {
    let text = run_with_stderr_on_a_socket(false);
    assert!(
        text.starts_with("<3>fenced: error: ") && text.contains("missing.toml"),
        "{text:?}"
    );
}

#[test]
fn stderr_that_is_not_the_named_stream_gets_no_priority_prefix() {
    let text = run_with_stderr_on_a_socket(true);
    assert!(text.starts_with("fenced: error: "), "{text:?}");
}
