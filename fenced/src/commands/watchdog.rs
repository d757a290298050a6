//! `fenced watchdog list|test`.

use std::time::Duration;

use serde_json::json;

use watchdog::{choose, discover, select, test_watchdog, Decision, Modprobe, Roots, WatchdogTable};

use fenced::args::{ListArgs, TestArgs, WatchdogCommand};

use super::Exit;

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
