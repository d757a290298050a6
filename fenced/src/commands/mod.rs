//! One module per subcommand group.

pub mod disk;

/// Documented exit codes of the `fenced` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The command failed (I/O error, bad disk contents).
    Failure = 1,
    /// The command would destroy data and `--force` was not given.
    Refused = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
