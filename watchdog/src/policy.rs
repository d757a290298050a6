//! Which watchdog to use: hardware first, softdog only when the policy allows it and no hardware
//! exists, or an explicitly configured device.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::discover::{discover, Kind, Roots, WatchdogInfo};
use crate::Error;

/// The operator's watchdog policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Use a hardware watchdog; refuse to run without one.
    RequireHardware,
    /// Use a hardware watchdog if there is one; otherwise use softdog, loading it with
    /// `modprobe softdog soft_margin=<soft_margin> [soft_panic=1]` if it is not loaded.
    AllowSoftdog {
        /// softdog's initial timeout, seconds (the arming timeout overrides it later).
        soft_margin: u32,
        /// Panic instead of rebooting when softdog fires (to get a crash dump).
        soft_panic: bool,
    },
    /// Use exactly this device node (e.g. `/dev/watchdog1`), whatever its kind.
    Device(PathBuf),
}

/// A chosen device and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The device.
    pub device: WatchdogInfo,
    /// One sentence for the log and `fenced watchdog list`.
    pub reason: String,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}): {}",
            self.device.device_node.display(),
            self.device.identity.as_deref().unwrap_or("no identity"),
            self.device.kind,
            self.reason
        )
    }
}

/// What [`choose`] decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Use this discovered device.
    Use(Box<Choice>),
    /// No watchdog at all and the policy allows softdog: load it, then discover again.
    LoadSoftdog {
        /// `soft_margin=` for modprobe.
        soft_margin: u32,
        /// `soft_panic=1` for modprobe.
        soft_panic: bool,
        /// Why.
        reason: String,
    },
}

fn busy(w: &WatchdogInfo) -> Error {
    Error::Busy {
        device: w.device_node.clone(),
        holders: w.holders.clone(),
    }
}

/// Picks a device from a discovery result, without side effects.
///
/// Hardware devices are preferred, lowest index first, skipping those held by another process;
/// if every hardware device is held, the answer is [`Error::Busy`] naming the holders (softdog
/// is never a fallback for a busy hardware watchdog: the operator must decide). A device of
/// unknown kind is used only when configured explicitly.
pub fn choose(found: &[WatchdogInfo], policy: &Policy) -> Result<Decision, Error> {
    if let Policy::Device(path) = policy {
        let Some(w) = found.iter().find(|w| w.is_named_by(path)) else {
            return Err(Error::UnknownDevice {
                device: path.clone(),
                available: found.iter().map(|w| w.device_node.clone()).collect(),
            });
        };
        if !w.holders.is_empty() {
            return Err(busy(w));
        }
        let reason = match w.kind {
            Kind::Hardware => "configured explicitly",
            Kind::Software => {
                "configured explicitly; warning: software watchdog, it does not fire if the \
                 whole kernel freezes"
            }
            Kind::Unknown => {
                "configured explicitly; warning: kind unknown, it may not fire if the whole \
                 kernel freezes"
            }
        }
        .to_owned();
        return Ok(Decision::Use(Box::new(Choice {
            device: w.clone(),
            reason,
        })));
    }

    let of_kind = |k: Kind| found.iter().filter(move |w| w.kind == k);
    let software: Vec<&WatchdogInfo> = of_kind(Kind::Software).collect();
    if let Some(w) = of_kind(Kind::Hardware).find(|w| w.holders.is_empty()) {
        let mut reason = "hardware watchdog, first free one".to_owned();
        if !software.is_empty() {
            reason.push_str("; software watchdog present but not used");
        }
        return Ok(Decision::Use(Box::new(Choice {
            device: w.clone(),
            reason,
        })));
    }
    if let Some(w) = of_kind(Kind::Hardware).next() {
        return Err(busy(w));
    }

    match policy {
        // `Device` returned above; grouping it here keeps this match total without a panic.
        Policy::RequireHardware | Policy::Device(_) if found.is_empty() => Err(Error::NoWatchdog {
            class_dir: PathBuf::from("/sys/class/watchdog"),
        }),
        Policy::RequireHardware | Policy::Device(_) => Err(Error::NoHardwareWatchdog {
            software: found.iter().map(|w| w.device_node.clone()).collect(),
        }),
        Policy::AllowSoftdog {
            soft_margin,
            soft_panic,
        } => match software.first() {
            Some(w) if w.holders.is_empty() => Ok(Decision::Use(Box::new(Choice {
                device: (*w).clone(),
                reason: "no hardware watchdog; softdog already loaded, used as allowed by \
                         policy (its soft_panic setting is whatever it was loaded with)"
                    .to_owned(),
            }))),
            Some(w) => Err(busy(w)),
            None => Ok(Decision::LoadSoftdog {
                soft_margin: *soft_margin,
                soft_panic: *soft_panic,
                reason: "no hardware watchdog; loading softdog as allowed by policy".to_owned(),
            }),
        },
    }
}

/// Loads the softdog module. A trait so policy tests need not run modprobe.
pub trait ModuleLoader {
    /// Loads softdog with these parameters; returns when the module is loaded.
    fn load_softdog(&self, soft_margin: u32, soft_panic: bool) -> Result<(), Error>;
}

/// The real loader: runs `modprobe softdog soft_margin=N [soft_panic=1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modprobe {
    /// The modprobe program (`modprobe`, looked up in PATH).
    pub program: PathBuf,
}

impl Default for Modprobe {
    fn default() -> Self {
        Modprobe {
            program: "modprobe".into(),
        }
    }
}

impl Modprobe {
    /// The arguments after the program name.
    pub fn softdog_args(soft_margin: u32, soft_panic: bool) -> Vec<String> {
        let mut args = vec!["softdog".to_owned(), format!("soft_margin={soft_margin}")];
        if soft_panic {
            args.push("soft_panic=1".to_owned());
        }
        args
    }
}

impl ModuleLoader for Modprobe {
    fn load_softdog(&self, soft_margin: u32, soft_panic: bool) -> Result<(), Error> {
        let args = Self::softdog_args(soft_margin, soft_panic);
        let command = format!("{} {}", self.program.display(), args.join(" "));
        tracing::info!(%command, "loading softdog");
        let output = Command::new(&self.program)
            .args(&args)
            .output()
            .map_err(|e| Error::SoftdogLoad {
                command: command.clone(),
                detail: e.to_string(),
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(Error::SoftdogLoad {
            command,
            detail: format!("{}: {}", output.status, stderr.trim()),
        })
    }
}

/// Discovers, chooses and, when the decision says so, loads softdog and waits up to `wait` for
/// it to appear. This is the whole of "which watchdog do we use" for the daemon.
pub fn select(
    roots: &Roots,
    policy: &Policy,
    loader: &dyn ModuleLoader,
    wait: Duration,
) -> Result<Choice, Error> {
    let found = discover(roots)?;
    let decision = choose(&found, policy).map_err(|e| match e {
        Error::NoWatchdog { .. } => Error::NoWatchdog {
            class_dir: roots.class_dir(),
        },
        e => e,
    })?;
    let (soft_margin, soft_panic, reason) = match decision {
        Decision::Use(choice) => return Ok(*choice),
        Decision::LoadSoftdog {
            soft_margin,
            soft_panic,
            reason,
        } => (soft_margin, soft_panic, reason),
    };
    loader.load_softdog(soft_margin, soft_panic)?;
    let start = Instant::now();
    loop {
        let found = discover(roots)?;
        if let Some(w) = found.iter().find(|w| w.kind == Kind::Software) {
            return Ok(Choice {
                device: w.clone(),
                reason: format!(
                    "{reason} (soft_margin={soft_margin}{})",
                    if soft_panic { ", soft_panic=1" } else { "" }
                ),
            });
        }
        if start.elapsed() >= wait {
            return Err(Error::SoftdogMissing {
                class_dir: roots.class_dir(),
                waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::tests::FakeSystem;
    use std::cell::RefCell;

    const ALLOW: Policy = Policy::AllowSoftdog {
        soft_margin: 10,
        soft_panic: true,
    };

    fn used(d: Decision) -> Choice {
        match d {
            Decision::Use(c) => *c,
            other => panic!("expected a device, got {other:?}"),
        }
    }

    #[test]
    fn hardware_is_preferred_over_a_loaded_softdog() {
        let sys = FakeSystem::new();
        sys.add_softdog(0);
        sys.add_i6300esb(1);
        let found = discover(&sys.roots).unwrap();
        for policy in [Policy::RequireHardware, ALLOW] {
            let c = used(choose(&found, &policy).unwrap());
            assert_eq!(c.device.name, "watchdog1");
            assert!(c.reason.contains("software watchdog present but not used"));
        }
    }

    #[test]
    fn require_hardware_refuses_when_only_softdog_exists() {
        let sys = FakeSystem::new();
        sys.add_softdog(0);
        let found = discover(&sys.roots).unwrap();
        let err = choose(&found, &Policy::RequireHardware).unwrap_err();
        assert!(matches!(err, Error::NoHardwareWatchdog { .. }), "{err}");
        assert!(err.to_string().contains("iTCO_wdt"));
    }

    #[test]
    fn require_hardware_with_no_watchdog_at_all_suggests_drivers_and_allow_softdog() {
        let err = choose(&[], &Policy::RequireHardware).unwrap_err();
        let msg = err.to_string();
        for hint in [
            "BIOS",
            "iTCO_wdt",
            "i6300esb",
            "ipmi_watchdog",
            "allow-softdog",
        ] {
            assert!(msg.contains(hint), "{hint} missing from: {msg}");
        }
    }

    #[test]
    fn allow_softdog_loads_softdog_only_when_no_watchdog_exists() {
        assert_eq!(
            choose(&[], &ALLOW).unwrap(),
            Decision::LoadSoftdog {
                soft_margin: 10,
                soft_panic: true,
                reason: "no hardware watchdog; loading softdog as allowed by policy".into()
            }
        );
    }

    #[test]
    fn allow_softdog_uses_an_already_loaded_softdog_without_loading_it_again() {
        let sys = FakeSystem::new();
        sys.add_softdog(0);
        let found = discover(&sys.roots).unwrap();
        assert_eq!(
            used(choose(&found, &ALLOW).unwrap()).device.name,
            "watchdog0"
        );
    }

    #[test]
    fn a_busy_hardware_watchdog_is_skipped_for_a_free_one() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(0);
        sys.add_i6300esb(1);
        sys.hold(100, "sbd", 0);
        let found = discover(&sys.roots).unwrap();
        assert_eq!(
            used(choose(&found, &Policy::RequireHardware).unwrap())
                .device
                .name,
            "watchdog1"
        );
    }

    #[test]
    fn a_busy_hardware_watchdog_is_reported_with_its_holder_and_never_replaced_by_softdog() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        sys.hold(4321, "corosync", 1);
        let found = discover(&sys.roots).unwrap();
        for policy in [Policy::RequireHardware, ALLOW] {
            let err = choose(&found, &policy).unwrap_err();
            match &err {
                Error::Busy { device, holders } => {
                    assert_eq!(device, &sys.roots.dev.join("watchdog1"));
                    assert_eq!(holders[0].pid, 4321);
                }
                other => panic!("expected Busy, got {other}"),
            }
            assert!(err.to_string().contains("pid 4321 (corosync)"));
        }
    }

    #[test]
    fn an_explicit_device_is_used_whatever_its_kind_with_a_warning_for_softdog() {
        let sys = FakeSystem::new();
        sys.add_softdog(0);
        sys.add_i6300esb(1);
        let found = discover(&sys.roots).unwrap();
        let c = used(choose(&found, &Policy::Device(sys.roots.dev.join("watchdog0"))).unwrap());
        assert_eq!(c.device.name, "watchdog0");
        assert!(c
            .reason
            .contains("does not fire if the whole kernel freezes"));
        // The legacy node names watchdog 0.
        let c = used(choose(&found, &Policy::Device(sys.roots.dev.join("watchdog"))).unwrap());
        assert_eq!(c.device.name, "watchdog0");
    }

    #[test]
    fn an_explicit_device_that_does_not_exist_lists_the_ones_that_do() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        let found = discover(&sys.roots).unwrap();
        let err = choose(&found, &Policy::Device("/dev/watchdog7".into())).unwrap_err();
        assert!(matches!(err, Error::UnknownDevice { .. }));
        assert!(err.to_string().contains("watchdog1"));
    }

    #[test]
    fn an_explicit_busy_device_is_reported_busy() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        sys.hold(5, "watchdog", 1);
        let found = discover(&sys.roots).unwrap();
        let err = choose(&found, &Policy::Device(sys.roots.dev.join("watchdog1"))).unwrap_err();
        assert!(matches!(err, Error::Busy { .. }));
    }

    #[test]
    fn a_device_of_unknown_kind_is_not_chosen_automatically() {
        let sys = FakeSystem::new();
        sys.add(0, &[], None);
        let found = discover(&sys.roots).unwrap();
        assert!(matches!(
            choose(&found, &Policy::RequireHardware),
            Err(Error::NoHardwareWatchdog { .. })
        ));
        assert!(matches!(
            choose(&found, &ALLOW),
            Ok(Decision::LoadSoftdog { .. })
        ));
    }

    /// Records loads and makes softdog appear in the fake tree, as the kernel would.
    struct FakeLoader<'a> {
        sys: &'a FakeSystem,
        calls: RefCell<Vec<(u32, bool)>>,
        appear: bool,
    }

    impl ModuleLoader for FakeLoader<'_> {
        fn load_softdog(&self, soft_margin: u32, soft_panic: bool) -> Result<(), Error> {
            self.calls.borrow_mut().push((soft_margin, soft_panic));
            if self.appear {
                self.sys.add_softdog(0);
            }
            Ok(())
        }
    }

    #[test]
    fn select_loads_softdog_then_uses_it_when_allowed_and_nothing_else_exists() {
        let sys = FakeSystem::new();
        let loader = FakeLoader {
            sys: &sys,
            calls: RefCell::default(),
            appear: true,
        };
        let c = select(&sys.roots, &ALLOW, &loader, Duration::from_secs(1)).unwrap();
        assert_eq!(c.device.kind, Kind::Software);
        assert!(c.reason.contains("soft_margin=10, soft_panic=1"));
        assert_eq!(*loader.calls.borrow(), vec![(10, true)]);
    }

    #[test]
    fn select_never_loads_softdog_when_hardware_exists_or_policy_forbids_it() {
        let sys = FakeSystem::new();
        let loader = FakeLoader {
            sys: &sys,
            calls: RefCell::default(),
            appear: true,
        };
        let err = select(
            &sys.roots,
            &Policy::RequireHardware,
            &loader,
            Duration::ZERO,
        )
        .unwrap_err();
        match err {
            Error::NoWatchdog { class_dir } => assert_eq!(class_dir, sys.roots.class_dir()),
            other => panic!("{other}"),
        }
        sys.add_i6300esb(1);
        let c = select(&sys.roots, &ALLOW, &loader, Duration::ZERO).unwrap();
        assert_eq!(c.device.kind, Kind::Hardware);
        assert!(loader.calls.borrow().is_empty());
    }

    #[test]
    fn select_reports_a_softdog_that_never_appears() {
        let sys = FakeSystem::new();
        let loader = FakeLoader {
            sys: &sys,
            calls: RefCell::default(),
            appear: false,
        };
        let err = select(&sys.roots, &ALLOW, &loader, Duration::from_millis(60)).unwrap_err();
        assert!(matches!(err, Error::SoftdogMissing { .. }), "{err}");
    }

    #[test]
    fn modprobe_gets_soft_margin_and_soft_panic_only_when_asked() {
        assert_eq!(
            Modprobe::softdog_args(7, false),
            vec!["softdog", "soft_margin=7"]
        );
        assert_eq!(
            Modprobe::softdog_args(7, true),
            vec!["softdog", "soft_margin=7", "soft_panic=1"]
        );
    }

    #[test]
    fn modprobe_is_really_spawned_with_those_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("args");
        let script = dir.path().join("modprobe");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" > {}\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Modprobe { program: script }.load_softdog(5, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(log).unwrap(),
            "softdog soft_margin=5 soft_panic=1\n"
        );
    }

    #[test]
    fn a_failing_modprobe_is_a_softdog_load_error_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("modprobe");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'modprobe: FATAL: Module softdog not found' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = Modprobe { program: script }
            .load_softdog(5, false)
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::SoftdogLoad { .. }));
        assert!(msg.contains("Module softdog not found"), "{msg}");
        let missing = Modprobe {
            program: dir.path().join("nonexistent"),
        };
        assert!(matches!(
            missing.load_softdog(5, false),
            Err(Error::SoftdogLoad { .. })
        ));
    }
}
