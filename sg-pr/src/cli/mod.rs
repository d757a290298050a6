//! Command line: device opening, exit codes; the argument definitions are `sg_pr::args`.

mod detach;
mod read;
mod write;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use sg_pr::args::{Backend, Cli, Command};
use sg_pr::{AnyDevice, Error, PrDevice, Report, SgDevice};

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure (transport error, unexpected sense, malformed reply).
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// The device could not be used: nonexistent, no permission, not a device, a partition,
    /// not SCSI; or key 0 where it means nothing (a malformed key is a usage error, 2).
    pub const BAD_DEVICE: u8 = 3;
    /// The device does not support the command (ILLEGAL REQUEST, ioctl not in this kernel).
    pub const NOT_SUPPORTED: u8 = 5;
    /// The device stayed busy / not ready / kept raising unit attentions through every retry.
    pub const RETRIES_EXHAUSTED: u8 = 6;
    /// A command timed out or a device missed the deadline.
    pub const TIMEOUT: u8 = 15;
    /// RESERVATION CONFLICT (same code as sg3_utils).
    pub const RESERVATION_CONFLICT: u8 = 24;
}

/// The exit code for one error.
pub fn exit_code_for(e: &Error) -> u8 {
    match e {
        Error::ReservationConflict { .. } => exit::RESERVATION_CONFLICT,
        e if e.is_reservation_conflict() => exit::RESERVATION_CONFLICT,
        Error::Timeout { .. } | Error::DeadlineExceeded { .. } => exit::TIMEOUT,
        Error::NotFound { .. }
        | Error::PermissionDenied { .. }
        | Error::NotADevice { .. }
        | Error::Partition { .. }
        | Error::NotScsi { .. }
        | Error::InvalidKey { .. }
        | Error::InvalidType { .. } => exit::BAD_DEVICE,
        Error::NotSupported { .. } | Error::NeedsScsi { .. } => exit::NOT_SUPPORTED,
        Error::CheckCondition { sense, .. } if sense.key == sg_pr::SenseKey::IllegalRequest => {
            exit::NOT_SUPPORTED
        }
        Error::RetriesExhausted { .. } => exit::RETRIES_EXHAUSTED,
        Error::CheckCondition { sense, .. } if sense.key == sg_pr::SenseKey::UnitAttention => {
            exit::RETRIES_EXHAUSTED
        }
        _ => exit::FAILURE,
    }
}

/// Combines per-device exit codes: conflict beats timeout beats the first other failure.
pub fn worst_exit_code(codes: impl IntoIterator<Item = u8>) -> u8 {
    let mut worst = exit::OK;
    for c in codes {
        worst = match (worst, c) {
            (_, exit::RESERVATION_CONFLICT) | (exit::RESERVATION_CONFLICT, _) => {
                exit::RESERVATION_CONFLICT
            }
            (_, exit::TIMEOUT) | (exit::TIMEOUT, _) => exit::TIMEOUT,
            (exit::OK, c) => c,
            (w, _) => w,
        };
    }
    worst
}

/// Global options the subcommands need.
pub struct Ctx {
    timeout: Duration,
    backend: Backend,
    json: bool,
}

impl Ctx {
    /// Opens `path` for SG_IO (commands that only exist in SCSI).
    fn open_sg(&self, path: &Path) -> sg_pr::Result<PrDevice<SgDevice>> {
        if self.backend == Backend::Block {
            return Err(Error::NeedsScsi {
                device: path.display().to_string(),
                command: "this command",
            });
        }
        Ok(PrDevice::open(path)?.with_timeout(self.timeout))
    }

    /// Opens `path` with the chosen backend.
    fn open_any(&self, path: &Path) -> sg_pr::Result<AnyDevice> {
        let backend = match self.backend {
            Backend::Auto => sg_pr::Backend::Auto,
            Backend::Sg => sg_pr::Backend::Sg,
            Backend::Block => sg_pr::Backend::Block,
        };
        AnyDevice::open(path, backend, self.timeout)
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SG_PR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Parses the command line, runs it, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_logging(cli.verbose);
    let ctx = Ctx {
        timeout: cli.timeout,
        backend: cli.backend,
        json: cli.json,
    };
    let code = match cli.command {
        Command::Tur(a) => read::tur(&ctx, &a.device),
        Command::Inquiry(a) => read::inquiry(&ctx, &a.device),
        Command::Keys(a) => read::keys(&ctx, &a.device),
        Command::Reservation(a) => read::reservation(&ctx, &a.device),
        Command::Caps(a) => read::caps(&ctx, &a.device),
        Command::Status(a) => read::full_status(&ctx, &a.device),
        // PR OUT commands promise an answer by --deadline even when a device hangs: see
        // `detach`.
        Command::Register(a) => detach::run_detachable(|| write::register(&ctx, a)),
        Command::Reserve(a) => detach::run_detachable(|| write::reserve(&ctx, a)),
        Command::Release(a) => detach::run_detachable(|| write::release(&ctx, a)),
        Command::Clear(a) => detach::run_detachable(|| write::clear(&ctx, a)),
        Command::Preempt(a) => detach::run_detachable(|| write::preempt(&ctx, a)),
    };
    ExitCode::from(code)
}

/// Prints an error for the operator and returns its exit code.
fn fail(e: &Error) -> u8 {
    eprintln!("sg-pr: {e}");
    exit_code_for(e)
}

/// Prints what the retry policy absorbed, so a preemption is never silent.
fn print_notes(device: &str, report: &Report) {
    for ua in &report.unit_attentions {
        eprintln!("note: {device}: {ua} (cleared)");
    }
    if report.saw_preemption() {
        eprintln!(
            "note: {device}: another initiator preempted or released this host's registration or reservation"
        );
    }
    if report.preempt_abort_fallback {
        eprintln!(
            "note: {device}: target rejected PREEMPT AND ABORT; sent PREEMPT instead (the victim's queued commands were not aborted)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use sg_pr::{PrType, ReservationKey};

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("24  RESERVATION CONFLICT"));
        assert!(help.contains("15  timeout"));
    }

    #[test]
    fn keys_are_accepted_with_or_without_prefix() {
        let cli = Cli::try_parse_from([
            "sg-pr", "preempt", "--key", "0xA", "--victim", "b", "--type", "wero", "--abort",
            "/dev/sda", "/dev/sdb",
        ])
        .unwrap();
        match cli.command {
            Command::Preempt(a) => {
                assert_eq!(a.key, ReservationKey(0xa));
                assert_eq!(a.victim, ReservationKey(0xb));
                assert_eq!(a.pr_type, PrType::WriteExclusiveRegistrantsOnly);
                assert!(a.abort);
                assert_eq!(a.many.devices.len(), 2);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn malformed_key_is_a_usage_error_naming_the_key() {
        let err = Cli::try_parse_from(["sg-pr", "clear", "--key", "0xzz", "/dev/sda"]).unwrap_err();
        assert!(err.to_string().contains("0xzz"), "{err}");
    }

    #[test]
    fn timeout_must_be_positive() {
        assert!(Cli::try_parse_from(["sg-pr", "--timeout", "0", "tur", "/dev/sda"]).is_err());
        let cli = Cli::try_parse_from(["sg-pr", "tur", "/dev/sda", "--timeout", "2.5"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn old_key_and_ignore_existing_conflict() {
        assert!(Cli::try_parse_from([
            "sg-pr",
            "register",
            "--key",
            "1",
            "--old-key",
            "2",
            "--ignore-existing",
            "/dev/sda"
        ])
        .is_err());
    }

    #[test]
    fn conflict_outranks_timeout_outranks_other_failures() {
        assert_eq!(worst_exit_code([0, 1, 15]), 15);
        assert_eq!(worst_exit_code([0, 24, 15]), 24);
        assert_eq!(worst_exit_code([3, 1]), 3);
        assert_eq!(worst_exit_code([0, 0]), 0);
        assert_eq!(worst_exit_code([]), 0);
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let conflict = Error::ReservationConflict {
            device: "d".into(),
            command: "c",
            after_ambiguous_retry: false,
        };
        assert_eq!(exit_code_for(&conflict), 24);
        let partition = Error::Partition {
            device: "/dev/sda1".into(),
            parent: "/dev/sda".into(),
        };
        assert_eq!(exit_code_for(&partition), 3);
        let timeout = Error::DeadlineExceeded {
            device: "d".into(),
            started: true,
        };
        assert_eq!(exit_code_for(&timeout), 15);
        let block_conflict = Error::BlockPrStatus {
            device: "d".into(),
            op: "IOC_PR_RESERVE",
            status: sg_pr::PrStatus::ReservationConflict,
        };
        assert_eq!(exit_code_for(&block_conflict), 24);
    }
}
