//! `fenced`: the fencing daemon and its operator commands.
//!
//! The top level is an enum of subcommand groups, one module under `commands/` each; add a
//! group by adding a variant and a module.
//!
//! Exit codes: 0 success, 1 failure (I/O, bad disk contents), 2 usage error, 3 refused (the
//! command would destroy data and `--force` was not given), 4 a fence not confirmed on every LUN
//! (the report names them).

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
    /// Watchdogs: list them and the policy's choice; test that one resets this node.
    #[command(subcommand)]
    Watchdog(commands::watchdog::WatchdogCommand),
    /// Run the daemon in the foreground (as systemd's fenced.service does).
    Run(commands::node::RunArgs),
    /// Fence a node: cut it off every shared LUN and mark it dead (exit 0 only when verified).
    Fence(commands::node::NodeArgs),
    /// Let a fenced node rejoin: a new marker without it in the dead set.
    Clear(commands::node::NodeArgs),
    /// Register this node's key on every path of every LUN again (after a reboot or a clear).
    Unfence(commands::node::LocalArgs),
    /// Show voting disks, authority, heartbeats, keys per LUN, reservation holders, watchdogs.
    Status(commands::node::LocalArgs),
    /// Preflight checks: config and timing, voting disks, LUNs and PR support, watchdog.
    Doctor(commands::doctor::DoctorArgs),
}

fn main() -> ExitCode {
    if commands::agent::invoked_as_agent() {
        return commands::agent::main();
    }
    let cli = Cli::parse();
    // The daemon tells the journal its transitions (registered, watchdog armed, healthy, new
    // authority); the operator commands only warnings.
    let default_level = match cli.group {
        Group::Run(_) => "info",
        _ => "warn",
    };
    fenced::journal::init_logging(default_level);
    let status = match cli.group {
        Group::Disk(cmd) => commands::disk::run(cmd),
        Group::Watchdog(cmd) => commands::watchdog::run(cmd),
        Group::Run(args) => commands::node::run(&args),
        Group::Fence(args) => commands::node::fence(&args),
        Group::Clear(args) => commands::node::clear(&args),
        Group::Unfence(args) => commands::node::unfence(&args),
        Group::Status(args) => commands::node::status(&args),
        Group::Doctor(args) => commands::doctor::run(&args),
    };
    status.into()
}
