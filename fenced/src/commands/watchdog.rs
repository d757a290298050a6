//! `fenced watchdog list|test`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use watchdog::{
    choose, discover, select, test_watchdog, Decision, Modprobe, Policy, Roots, WatchdogTable,
};

use super::Exit;

/// Watchdog commands.
#[derive(Debug, Subcommand)]
pub enum WatchdogCommand {
    /// List the watchdog devices, the one the policy would use, and why.
    List(ListArgs),
    /// Arm a watchdog and stop feeding it: the node should reset within the timeout (the
    /// equivalent of `sbd test-watchdog`). Requires --yes-reset-this-node.
    Test(TestArgs),
}

/// The operator's watchdog policy, as on the command line and in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Use a hardware watchdog; refuse to run without one.
    RequireHardware,
    /// Use a hardware watchdog if there is one, else load and use softdog.
    AllowSoftdog,
}

/// Policy selection shared by both commands.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Which kinds of watchdog may be used.
    #[arg(long, value_enum, default_value_t = PolicyArg::RequireHardware)]
    policy: PolicyArg,
    /// Use exactly this device (e.g. /dev/watchdog1) whatever the policy.
    #[arg(long, value_name = "DEV")]
    device: Option<PathBuf>,
    /// softdog_margin for modprobe when allow-softdog has to load softdog, seconds.
    #[arg(long, default_value_t = 60, value_name = "S")]
    soft_margin: u32,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        match (&self.device, self.policy) {
            (Some(dev), _) => Policy::Device(dev.clone()),
            (None, PolicyArg::RequireHardware) => Policy::RequireHardware,
            (None, PolicyArg::AllowSoftdog) => Policy::AllowSoftdog {
                soft_margin: self.soft_margin,
                soft_panic: false,
            },
        }
    }
}

/// `fenced watchdog list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `fenced watchdog test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Timeout to arm with, seconds (the driver may adjust it; the real value is printed).
    #[arg(long, default_value_t = 10, value_name = "S")]
    timeout: u32,
    /// Also set nowayout, so the test cannot be cancelled.
    #[arg(long)]
    nowayout: bool,
    /// Confirms that this node may be reset by the test.
    #[arg(long)]
    yes_reset_this_node: bool,
    /// Print the deadline as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a watchdog command.
pub fn run(cmd: WatchdogCommand) -> Exit {
    match cmd {
        WatchdogCommand::List(args) => list(&args),
        WatchdogCommand::Test(args) => test(&args),
    }
}

fn list(args: &ListArgs) -> Exit {
    let roots = Roots::system();
    let found = match discover(&roots) {
        Ok(f) => f,
        Err(e) => {
            complain!("{e}");
            return Exit::Failure;
        }
    };
    let policy = args.policy.policy();
    let decision = choose(&found, &policy);
    if args.json {
        let (choice, reason, error) = match &decision {
            Ok(Decision::Use(c)) => (
                Some(c.device.device_node.clone()),
                Some(c.reason.clone()),
                None,
            ),
            Ok(Decision::LoadSoftdog { reason, .. }) => (None, Some(reason.clone()), None),
            Err(e) => (None, None, Some(e.to_string())),
        };
        let load_softdog = matches!(decision, Ok(Decision::LoadSoftdog { .. }));
        say!(
            "{}",
            json!({
                "devices": found,
                "policy": policy,
                "choice": choice,
                "would_load_softdog": load_softdog,
                "reason": reason,
                "error": error,
            })
        );
    } else {
        if found.is_empty() {
            say!("no watchdog devices in /sys/class/watchdog");
        } else {
            say!("{}", WatchdogTable(&found));
        }
        match &decision {
            Ok(Decision::Use(c)) => say!("\npolicy {:?} uses {c}", args.policy.policy),
            Ok(Decision::LoadSoftdog { reason, .. }) => {
                say!(
                    "\npolicy {:?} would load softdog: {reason}",
                    args.policy.policy
                )
            }
            Err(_) => {}
        }
    }
    match decision {
        Ok(_) => Exit::Ok,
        Err(e) => {
            complain!("{e}");
            Exit::Failure
        }
    }
}

fn test(args: &TestArgs) -> Exit {
    if !args.yes_reset_this_node {
        complain!(
            "this test arms a watchdog and stops feeding it: the node resets within about {} s. \
             Stop cluster services on this node first, then re-run with --yes-reset-this-node",
            args.timeout
        );
        return Exit::Refused;
    }
    let roots = Roots::system();
    let policy = args.policy.policy();
    let choice = match select(
        &roots,
        &policy,
        &Modprobe::default(),
        Duration::from_secs(5),
    ) {
        Ok(c) => c,
        Err(e) => {
            complain!("{e}");
            return Exit::Failure;
        }
    };
    let running = match test_watchdog(&choice.device, args.timeout, args.nowayout, &roots) {
        Ok(t) => t,
        Err(e) => {
            complain!("{e}");
            return Exit::Failure;
        }
    };
    if args.json {
        say!(
            "{}",
            json!({ "choice": choice, "deadline": running.deadline })
        );
    } else {
        say!("using {choice}");
        say!("{}", running.deadline);
    }
    // Keep the device open (closing without the magic character leaves it running anyway) and
    // wait well past the deadline: if we get to print, the watchdog did not reset the node.
    let error = running.wait_for_reset(Duration::from_secs(10));
    complain!("{error}");
    Exit::Failure
}
