//! `fenced`: the fencing daemon and its operator commands.
//!
//! The top level is an enum of subcommand groups, one module under `commands/` each; add a
//! group by adding a variant and a module.
//!
//! Exit codes: 0 success, 1 failure (I/O, bad disk contents), 2 usage error, 3 refused (the
//! command would destroy data and `--force` was not given).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

#[derive(Debug, Parser)]
#[command(
    name = "fenced",
    version,
    about = "Fencing daemon: voting disks, SCSI-3 PR fencing, watchdog"
)]
struct Cli {
    #[command(subcommand)]
    group: Group,
}

#[derive(Debug, Subcommand)]
enum Group {
    /// Voting disks: format, inspect and watch.
    #[command(subcommand)]
    Disk(commands::disk::DiskCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FENCED_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let status = match cli.group {
        Group::Disk(cmd) => commands::disk::run(cmd),
    };
    status.into()
}
