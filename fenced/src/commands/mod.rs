//! One module per subcommand group.

/// `println!` that never panics: a closed stdout (`fenced disk dump | head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics, prefixed with `fenced: error: ` (and, when stderr is the
/// journal, with the err priority `<3>`: see [`fenced::journal`]).
macro_rules! complain {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        if fenced::journal::stderr_is_journal() {
            let _ = write!(err, "<3>");
        }
        let _ = write!(err, "fenced: error: ");
        let _ = writeln!(err, $($arg)*);
    }};
}

pub mod agent;
pub mod disk;
pub mod disk_watch;
pub mod doctor;
pub mod node;
pub mod progress;
pub mod setup;
pub mod watchdog;

/// Documented exit codes of the `fenced` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The command failed (I/O error, bad disk contents).
    Failure = 1,
    /// The command would destroy data and `--force` was not given.
    Refused = 3,
    /// A fence cut the victim off some LUNs but could not confirm every one (the report names
    /// them): the clusterware must not treat the node as fenced.
    Incomplete = 4,
    /// `status`: the daemon runs healthy, but a LUN, path or voting disk is degraded.
    Degraded = 5,
    /// `status`: no daemon runs, its loop is not healthy, or no read-majority of voting disks.
    Unhealthy = 6,
    /// `status`: the authority marks this node dead; `run`: refused to start for that reason
    /// (the unit's RestartPreventExitStatus, so systemd does not retry a fenced-out node).
    Fenced = 7,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
