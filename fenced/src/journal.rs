//! Logging into systemd's journal through stderr.
//!
//! Under systemd, a service's stderr is a stream socket to journald, and systemd names it in
//! `JOURNAL_STREAM=<device>:<inode>` (systemd.exec(5)). Only when stderr is that very socket
//! (a shell redirect or `2>file` inherits the variable but not the socket), every line starts
//! with the sd-daemon priority prefix `<N>` (sd-daemon(3)), and carries no timestamp (the journal
//! stamps each line) and no colour codes: `journalctl -u fenced -p err` then shows exactly the
//! daemon's errors. Elsewhere the lines stay as they were: timestamp, level, colours on a
//! terminal.
//!
//! The stderr stream rather than journald's native protocol (the tracing-journald crate): the
//! same writer as without systemd, in order with the `fenced: error:` lines, nothing to connect
//! or reconnect in a daemon that must not block, and no other dependency.

use std::fmt;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The syslog priority journald files a line of `level` under: error 3 (err), warn 4
/// (warning), info 6 (info), debug and trace 7 (debug).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether `journal_stream`, a `JOURNAL_STREAM` value (`<device>:<inode>`, both decimal),
/// names the file with device `dev` and inode `ino`.
pub fn stream_matches(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Whether this process's stderr is the journal's stream socket (decided once).
pub fn stderr_is_journal() -> bool {
    static IS_JOURNAL: OnceLock<bool> = OnceLock::new();
    *IS_JOURNAL.get_or_init(|| {
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        // fstat(2) of fd 2, through a duplicate that std owns and closes.
        let stat = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| std::fs::File::from(fd).metadata());
        match stat {
            Ok(st) => stream_matches(&stream.to_string_lossy(), st.dev(), st.ino()),
            Err(_) => false,
        }
    })
}

/// An event format that writes the `<N>` priority of the event's level, then the event as
/// `inner` formats it (configure `inner` without time and level: the journal has both).
#[derive(Debug, Clone)]
pub struct JournalPrefix<F> {
    inner: F,
}

impl<F> JournalPrefix<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        JournalPrefix { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for JournalPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the process's log subscriber on stderr: `FENCED_LOG` (an `EnvFilter` directive)
/// or else `default_level`; journal lines under systemd (see the module doc), the usual
/// format elsewhere (colours only on a terminal).
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FENCED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if stderr_is_journal() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_level(false)
            .with_ansi(false);
        builder
            .with_ansi(false)
            .event_format(JournalPrefix::new(format))
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3, "err");
        assert_eq!(priority(&Level::WARN), 4, "warning");
        assert_eq!(priority(&Level::INFO), 6, "info");
        assert_eq!(priority(&Level::DEBUG), 7, "debug");
        assert_eq!(priority(&Level::TRACE), 7, "debug");
    }

    #[test]
    fn journal_stream_matches_only_its_own_device_and_inode() {
        assert!(stream_matches("8:123456", 8, 123456));
        assert!(stream_matches("64768:42\n", 64768, 42));
        assert!(!stream_matches("8:123456", 8, 123457), "other inode");
        assert!(!stream_matches("9:123456", 8, 123456), "other device");
        for junk in ["", ":", "8", "8:", ":5", "8:x", "-1:5", "8:5:6", "0x8:5"] {
            assert!(!stream_matches(junk, 8, 5), "{junk:?}");
        }
    }

    #[test]
    fn stderr_redirected_to_a_file_is_not_the_journal() {
        // What a shell redirect under systemd leaves: the variable names another file.
        let file = tempfile::tempfile().unwrap();
        let st = file.metadata().unwrap();
        let other = format!("{}:{}", st.dev(), st.ino() + 1);
        assert!(!stream_matches(&other, st.dev(), st.ino()));
        let same = format!("{}:{}", st.dev(), st.ino());
        assert!(stream_matches(&same, st.dev(), st.ino()));
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_start_with_the_priority_and_carry_no_time_level_or_colour() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_max_level(Level::DEBUG)
            .with_ansi(false)
            .event_format(JournalPrefix::new(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_ansi(false),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(reason = "marked dead", "fencing this node");
            tracing::warn!(victim = "node2", "fence requested");
            tracing::info!("watchdog armed");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let prefixes: Vec<&str> = lines.iter().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
        assert!(lines[0].contains("fencing this node") && lines[0].contains("marked dead"));
        assert!(
            lines[1].ends_with("fence requested victim=\"node2\""),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "no ANSI codes: {text:?}");
        for word in ["ERROR", "WARN", "INFO", "DEBUG"] {
            assert!(!text.contains(word), "no level word ({word}): {text}");
        }
        assert_eq!(
            lines[2], "<6>fenced::journal::tests: watchdog armed",
            "no timestamp"
        );
    }
}
