//! Progress of a long command on a terminal: one line on stderr saying what the command is
//! doing and for how long (`fencing node2 on 64 LUN(s) through the daemon... 1.4 s`), redrawn
//! every 200 ms and erased when the command ends, so the output proper is unchanged. Silent
//! when stderr is not a terminal (scripts, the journal, Pacemaker) and with `--json`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// A progress line; dropping it erases the line.
pub struct Progress {
    shown: Option<Shown>,
}

struct Shown {
    what: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    drawer: Option<JoinHandle<()>>,
}

/// Whether a command shows progress: on a terminal, without `--json`.
fn enabled(json: bool, terminal: bool) -> bool {
    terminal && !json
}

/// The line for `what` after `elapsed` (`\r`, the text, the time, then clear to the end of the
/// line: a shorter phase leaves nothing of a longer one).
fn render(what: &str, elapsed: Duration) -> String {
    format!("\r{what}... {:.1} s\x1b[K", elapsed.as_secs_f64())
}

impl Progress {
    /// Starts showing `what` when stderr is a terminal and `json` is false; else does nothing.
    pub fn start(json: bool, what: impl Into<String>) -> Progress {
        if !enabled(json, std::io::stderr().is_terminal()) {
            return Progress { shown: None };
        }
        let what = Arc::new(Mutex::new(what.into()));
        let stop = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        let drawer = {
            let (what, stop) = (what.clone(), stop.clone());
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let line = match what.lock() {
                            Ok(w) => render(&w, began.elapsed()),
                            Err(_) => return,
                        };
                        let _ = std::io::stderr().lock().write_all(line.as_bytes());
                        std::thread::park_timeout(TICK);
                    }
                })
                .ok()
        };
        Progress {
            shown: Some(Shown { what, stop, drawer }),
        }
    }

    /// Says what the command does now.
    pub fn set(&self, what: impl Into<String>) {
        if let Some(Ok(mut w)) = self.shown.as_ref().map(|s| s.what.lock()) {
            *w = what.into();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(s) = &mut self.shown {
            s.stop.store(true, Ordering::Relaxed);
            if let Some(d) = s.drawer.take() {
                d.thread().unpark();
                let _ = d.join();
            }
            let _ = std::io::stderr().lock().write_all(b"\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_shown_only_on_a_terminal_and_never_with_json() {
        assert!(enabled(false, true));
        assert!(!enabled(true, true));
        assert!(!enabled(false, false));
        assert!(!enabled(true, false));
    }

    #[test]
    fn the_line_redraws_in_place_with_the_elapsed_time() {
        assert_eq!(
            render("fencing node2 on 64 LUN(s)", Duration::from_millis(1440)),
            "\rfencing node2 on 64 LUN(s)... 1.4 s\x1b[K"
        );
    }

    #[test]
    fn a_progress_that_is_not_shown_does_nothing() {
        // Under the test runner stderr is captured, not a terminal.
        let p = Progress::start(true, "formatting");
        p.set("still formatting");
        assert!(p.shown.is_none());
    }
}
