//! `fence_fenced`: the fence-agents protocol on top of `fenced` (see `fenced::agent` and
//! docs/pacemaker.md). The binary runs this when invoked under the agent's name (a symlink).
//!
//! Exit codes follow fence-agents: 0 success (status: the node is "ON", not fenced), 1 failure
//! or usage error, 2 (status only) the node is "OFF", fenced.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use fenced::agent::{self, Action, AgentOptions, AGENT_NAME};
use fenced::config::Config;
use fenced::ops;

/// Whether argv\[0\]'s basename is the agent's name.
pub fn invoked_as_agent() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n == std::ffi::OsStr::new(AGENT_NAME))
        })
        .unwrap_or(false)
}

/// Messages to stderr (unless quiet; errors always) and to the debug file.
struct Log {
    verbose: bool,
    quiet: bool,
    file: Option<std::fs::File>,
}

impl Log {
    fn line(&mut self, level: &str, msg: &str, to_stderr: bool) {
        if to_stderr {
            let _ = writeln!(std::io::stderr().lock(), "{AGENT_NAME}: {level}: {msg}");
        }
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{AGENT_NAME}: {level}: {msg}");
        }
    }
    fn error(&mut self, msg: &str) {
        self.line("error", msg, true);
    }
    fn warn(&mut self, msg: &str) {
        let show = !self.quiet;
        self.line("warning", msg, show);
    }
    fn info(&mut self, msg: &str) {
        let show = self.verbose && !self.quiet;
        self.line("info", msg, show);
    }
}

const MAX_STDIN: u64 = 64 * 1024;

fn out(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

/// Runs the agent: parses stdin (no arguments) or the command line, then the action.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = if args.is_empty() {
        let mut text = String::new();
        match std::io::stdin().take(MAX_STDIN).read_to_string(&mut text) {
            Ok(_) => AgentOptions::from_stdin(&text),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{AGENT_NAME}: error: reading options from stdin: {e}"
                );
                return ExitCode::from(1);
            }
        }
    } else {
        AgentOptions::from_args(&args)
    };
    let opts = match parsed.and_then(|o| o.check().map(|()| o)) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "{AGENT_NAME}: error: {e}\n{AGENT_NAME}: error: please use '-h' for usage"
            );
            return ExitCode::from(1);
        }
    };
    fenced::journal::init_logging(if opts.verbose { "info" } else { "warn" });
    let mut log = Log {
        verbose: opts.verbose,
        quiet: opts.quiet,
        file: opts.debug_file.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        }),
    };
    for w in &opts.warnings {
        log.warn(w);
    }
    ExitCode::from(run(&opts, &mut log))
}

fn run(opts: &AgentOptions, log: &mut Log) -> u8 {
    if opts.help {
        out(&agent::usage());
        return 0;
    }
    if opts.version {
        out(&format!(
            "{AGENT_NAME} (fenced) {}",
            env!("CARGO_PKG_VERSION")
        ));
        return 0;
    }
    if opts.action == Action::Metadata {
        let _ = write!(std::io::stdout().lock(), "{}", agent::metadata());
        return 0;
    }
    // `list` and `validate-all` work from the file alone, even while the voting disks (which
    // may hold the timeouts) do not answer; every action that fences or reads state needs them.
    let loaded = if matches!(opts.action, Action::List | Action::ValidateAll) {
        Config::load_reporting(&opts.config)
    } else {
        Config::load(&opts.config, true).map(|c| (c, None))
    };
    let config = match loaded {
        Ok((c, unread)) => {
            if let Some(why) = unread {
                log.warn(&format!("the voting disks' timeouts cannot be read: {why}"));
            }
            c
        }
        Err(e) => {
            log.error(&e.to_string());
            return 1;
        }
    };
    log.info(&format!(
        "action {} plug {} on node {} of cluster {}",
        opts.action.name(),
        opts.plug.as_deref().unwrap_or("-"),
        config.me.name,
        config.cluster_name
    ));
    let member = match &opts.plug {
        Some(p) => match ops::member(&config, p) {
            Ok(m) => Some(m.clone()),
            Err(e) => {
                log.error(&e);
                return 1;
            }
        },
        None => None,
    };
    match opts.action {
        Action::Metadata => 0,
        Action::ValidateAll => {
            if let Some(t) = opts.power_timeout {
                if t < config.timing.fence_deadline {
                    log.warn(&format!(
                        "power_timeout {} s is shorter than timeouts.fence_deadline {} ms: Pacemaker may give up before a fence completes",
                        t.as_secs_f64(),
                        config.timing.fence_deadline.as_millis()
                    ));
                }
            }
            log.info(&format!("{} is valid", config.path.display()));
            0
        }
        Action::List => {
            for m in &config.members {
                out(&format!("{},", m.name));
            }
            0
        }
        Action::Monitor => match agent::monitor(&config) {
            Ok(lines) => {
                for l in lines {
                    log.info(&l);
                }
                0
            }
            Err(e) => {
                log.error(&e);
                1
            }
        },
        Action::Status => {
            let Some(m) = member else { return 1 };
            match agent::plug_state(&config, &m) {
                Ok(st) => {
                    if st.marked_dead {
                        log.info(&format!("{} is marked dead on the voting disks", m.name));
                    }
                    if !st.luns_without_key.is_empty() {
                        log.info(&format!(
                            "{}'s key is not registered on {} of {} LUN(s): {}",
                            m.name,
                            st.luns_without_key.len(),
                            st.luns,
                            st.luns_without_key.join(", ")
                        ));
                    }
                    if st.is_on() {
                        out("Status: ON");
                        0
                    } else {
                        out("Status: OFF");
                        2
                    }
                }
                Err(e) => {
                    log.error(&e);
                    1
                }
            }
        }
        Action::Off | Action::Reboot => {
            let Some(m) = member else { return 1 };
            if opts.action == Action::Reboot {
                log.warn("storage fencing cannot power-cycle a node: reboot is carried out as off (the fenced node is reset by its own watchdog or self-fence)");
            }
            if !opts.delay.is_zero() {
                log.info(&format!("waiting {:?} before fencing", opts.delay));
                std::thread::sleep(opts.delay);
            }
            match ops::fence_node(&config, &m.name) {
                Ok(report) => {
                    for l in &report.luns {
                        log.info(&format!("{}: {} ({} ms)", l.lun, l.outcome, l.ms));
                    }
                    let non_pr = if report.victim_left {
                        "it had left the cluster (watchdog disarmed): storage without PR is not protected from it".to_string()
                    } else {
                        format!(
                            "storage without PR is safe after +{} ms",
                            report.non_pr_safe_ms
                        )
                    };
                    log.info(&format!(
                        "PR-protected LUNs refuse {}'s writes since +{} ms; {non_pr}",
                        m.name, report.pr_confirmed_ms
                    ));
                    out("Success: Powered OFF");
                    0
                }
                Err(e) => {
                    log.error(&format!("fencing {}: {e}", m.name));
                    1
                }
            }
        }
        Action::On => {
            let Some(m) = member else { return 1 };
            match ops::clear_node(&config, &m.name, false) {
                Ok(Some(epoch)) => log.info(&format!(
                    "{} rebooted since its fence and is no longer marked dead (epoch {epoch})",
                    m.name
                )),
                Ok(None) => log.info(&format!("{} is not marked dead", m.name)),
                Err(e) => {
                    log.error(&format!("unfencing {}: {e}", m.name));
                    return 1;
                }
            }
            if m.id == config.me.id {
                // On the node itself: register its key as `fenced unfence` does.
                let luns = match ops::discover_luns(&config) {
                    Ok(l) => l,
                    Err(e) => {
                        log.error(&e);
                        return 1;
                    }
                };
                let t = config.timing.fence_deadline;
                let reg = config.registration();
                let storage = std::sync::Arc::new(fenced::storage::SystemStorage);
                for (lun, r) in fenced::luns::unfence(storage, &luns, reg, t / 2, t) {
                    if let Err(e) = r {
                        log.error(&format!("{lun}: {e}"));
                        return 1;
                    }
                }
            } else {
                // A key is registered per I_T nexus, from the node itself: its fenced does it
                // once it reads the new marker. "On" means it can write again, so wait for it.
                let within = opts
                    .power_timeout
                    .unwrap_or(config.timing.lease * 2 + config.timing.fence_deadline);
                if let Err(e) = agent::wait_registered(&config, &m, within) {
                    log.error(&e);
                    return 1;
                }
                log.info(&format!("{}'s key is registered on every LUN", m.name));
            }
            out("Success: Powered ON");
            0
        }
    }
}
