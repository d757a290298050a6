//! Harness errors. Every one says what failed and, where it is the machine's fault rather than the
//! product's, what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// A harness failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel cache is missing: the provisioning script has not run.
    #[error(
        "no cached kernel at {0}: run `kmod-testing/provision.sh` (tests/run and tests/demo do it)"
    )]
    NoKernel(PathBuf),
    /// A host tool the harness needs is missing.
    #[error("{tool} not found: run `kmod-testing/provision.sh`, which installs the Debian packages the harness needs")]
    MissingTool {
        /// The program that was not found.
        tool: String,
    },
    /// A guest did not come up.
    #[error("guest {guest} did not boot: {reason} (console log: {log})")]
    Boot {
        /// Guest name.
        guest: String,
        /// What was seen.
        reason: String,
        /// The console log file.
        log: PathBuf,
    },
    /// A command in a guest did not finish by its deadline.
    #[error("guest {guest}: command did not finish within {after:?}: {command}")]
    Timeout {
        /// Guest name.
        guest: String,
        /// The command.
        command: String,
        /// The deadline it missed.
        after: Duration,
    },
    /// The guest went away (reset or crash) while a command was pending.
    #[error("guest {guest} exited while running: {command}")]
    GuestGone {
        /// Guest name.
        guest: String,
        /// The command.
        command: String,
    },
    /// A command in a guest exited non-zero where success was required.
    #[error("guest {guest}: `{command}` exited with {code}\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    CommandFailed {
        /// Guest name.
        guest: String,
        /// The command.
        command: String,
        /// Its exit code.
        code: i32,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
    /// Setting up a topology or a fault failed.
    #[error("{0}")]
    Setup(String),
    /// An I/O error on the host, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with the harness error.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}
