//! `fenced`: the fencing daemon and its operator commands.
//!
//! The top level is an enum of subcommand groups (`fenced::args`, where the man page and the
//! shell completions are generated from), one module under `commands/` each; add a group by
//! adding a variant there and a module here.
//!
//! Exit codes: 0 success, 1 failure (I/O, bad disk contents), 2 usage error, 3 refused (the
//! command would destroy data and `--force` was not given), 4 a fence not confirmed on every LUN
//! (the report names them).

use std::process::ExitCode;

use clap::Parser;

use fenced::args::{Cli, Group};

mod commands;

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
        Group::Setup(args) => commands::setup::run(&args),
    };
    status.into()
}
