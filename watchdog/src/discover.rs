//! Discovery of watchdogs from `/sys/class/watchdog`.
//!
//! Discovery only reads sysfs and /proc. It never opens a device node: opening a watchdog
//! starts it.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::flags::{BootStatus, WatchdogFlags};
use crate::holders::{find_holders, Holder};
use crate::Error;

/// softdog's `identity`.
pub const SOFTDOG_IDENTITY: &str = "Software Watchdog";

/// The filesystem roots discovery, holder lookup and nowayout use; tests point them at temp
/// dirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// Where sysfs is mounted (`/sys`).
    pub sysfs: PathBuf,
    /// Where device nodes live (`/dev`).
    pub dev: PathBuf,
    /// Where procfs is mounted (`/proc`).
    pub proc: PathBuf,
}

impl Roots {
    /// The running system's `/sys`, `/dev` and `/proc`.
    pub fn system() -> Self {
        Roots {
            sysfs: "/sys".into(),
            dev: "/dev".into(),
            proc: "/proc".into(),
        }
    }

    /// `<sysfs>/class/watchdog`.
    pub fn class_dir(&self) -> PathBuf {
        self.sysfs.join("class/watchdog")
    }
}

impl Default for Roots {
    fn default() -> Self {
        Self::system()
    }
}

/// Hardware or software watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A timer outside the kernel (chipset, BMC, hypervisor): resets even a frozen kernel.
    Hardware,
    /// softdog: a kernel timer; it does not fire while the whole kernel is frozen.
    Software,
    /// Neither identity nor driver is known; never chosen automatically.
    Unknown,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Hardware => "hardware",
            Kind::Software => "software",
            Kind::Unknown => "unknown",
        })
    }
}

/// Classifies a watchdog from its sysfs identity and driver name.
///
/// softdog (identity "Software Watchdog", or driver "softdog") is software; any other device
/// with an identity or a bound driver is hardware (this includes hypervisor timers such as
/// QEMU's i6300esb, which run outside the guest kernel); without either it is unknown.
pub fn classify(identity: Option<&str>, driver: Option<&str>) -> Kind {
    if identity == Some(SOFTDOG_IDENTITY) || driver == Some("softdog") {
        Kind::Software
    } else if identity.is_some_and(|i| !i.is_empty()) || driver.is_some() {
        Kind::Hardware
    } else {
        Kind::Unknown
    }
}

/// The sysfs `state` attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Running: someone must feed it.
    Active,
    /// Stopped.
    Inactive,
    /// Anything else the kernel may print.
    Other(String),
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Active => f.write_str("active"),
            State::Inactive => f.write_str("inactive"),
            State::Other(s) => f.write_str(s),
        }
    }
}

/// Everything sysfs says about one watchdog. Attributes the kernel does not expose are `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatchdogInfo {
    /// `watchdogN`.
    pub name: String,
    /// N.
    pub index: u32,
    /// `<sysfs>/class/watchdog/watchdogN`.
    pub sysfs_path: PathBuf,
    /// `<dev>/watchdogN` (from the uevent DEVNAME when present).
    pub device_node: PathBuf,
    /// `<dev>/watchdog`, the legacy node, which is watchdog 0 when it exists.
    pub legacy_node: Option<PathBuf>,
    /// `MAJOR:MINOR`.
    pub dev: Option<String>,
    /// The driver's identity string (e.g. "iTCO_wdt", "i6300ESB timer", "Software Watchdog").
    pub identity: Option<String>,
    /// The bound driver (basename of `device/driver`); software watchdogs have none.
    pub driver: Option<String>,
    /// Hardware or software.
    pub kind: Kind,
    /// Current timeout, seconds.
    pub timeout: Option<u32>,
    /// Smallest timeout the driver accepts.
    pub min_timeout: Option<u32>,
    /// Largest timeout the driver accepts (0 or absent: not reported).
    pub max_timeout: Option<u32>,
    /// Current pretimeout, seconds (present only on drivers with pretimeout support).
    pub pretimeout: Option<u32>,
    /// The pretimeout governor (`panic`, `noop`).
    pub pretimeout_governor: Option<String>,
    /// Available pretimeout governors.
    pub pretimeout_available_governors: Option<Vec<String>>,
    /// Whether nowayout is set (the watchdog can then never be stopped).
    pub nowayout: Option<bool>,
    /// Whether the nowayout attribute is writable by its mode bits.
    pub nowayout_writable: bool,
    /// Running or not.
    pub state: Option<State>,
    /// Current status bits.
    pub status: Option<WatchdogFlags>,
    /// Why the machine last booted, as far as the driver knows.
    pub bootstatus: Option<BootStatus>,
    /// Seconds until reset (drivers with `get_timeleft` only).
    pub timeleft: Option<u32>,
    /// Processes holding the device open (empty if none, or /proc could not tell).
    pub holders: Vec<Holder>,
}

impl WatchdogInfo {
    /// The device node and, for watchdog 0, the legacy `/dev/watchdog` alias.
    pub fn node_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.device_node.clone()];
        paths.extend(self.legacy_node.clone());
        paths
    }

    /// Whether `path` names this device (its node or its legacy alias).
    pub fn is_named_by(&self, path: &Path) -> bool {
        self.device_node == path || self.legacy_node.as_deref() == Some(path)
    }
}

/// Reads an attribute; `None` if absent or unreadable.
fn read_attr(dir: &Path, name: &str) -> Option<String> {
    let s = fs::read_to_string(dir.join(name)).ok()?;
    Some(s.trim_end_matches('\n').trim().to_owned())
}

/// Parses decimal or `0x` hexadecimal.
fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn attr_u32(dir: &Path, name: &str) -> Option<u32> {
    let raw = read_attr(dir, name)?;
    let v = parse_u32(&raw);
    if v.is_none() {
        tracing::debug!(attr = %dir.join(name).display(), value = %raw, "unparsable watchdog attribute");
    }
    v
}

fn is_writable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o222 != 0)
}

fn devname(dir: &Path) -> Option<String> {
    let uevent = fs::read_to_string(dir.join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_owned)
}

/// Reads one `<class>/watchdogN` directory.
pub fn read_watchdog(roots: &Roots, name: &str) -> Option<WatchdogInfo> {
    let index: u32 = name.strip_prefix("watchdog")?.parse().ok()?;
    let dir = roots.class_dir().join(name);
    let identity = read_attr(&dir, "identity");
    let driver = fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let kind = classify(identity.as_deref(), driver.as_deref());
    let device_node = roots
        .dev
        .join(devname(&dir).unwrap_or_else(|| name.to_owned()));
    let legacy = roots.dev.join("watchdog");
    let legacy_node = (index == 0 && fs::symlink_metadata(&legacy).is_ok()).then_some(legacy);
    let support = None; // sysfs does not export WDIOC_GETSUPPORT's options
    Some(WatchdogInfo {
        name: name.to_owned(),
        index,
        device_node,
        legacy_node,
        dev: read_attr(&dir, "dev"),
        identity,
        driver,
        kind,
        timeout: attr_u32(&dir, "timeout"),
        min_timeout: attr_u32(&dir, "min_timeout"),
        max_timeout: attr_u32(&dir, "max_timeout"),
        pretimeout: attr_u32(&dir, "pretimeout"),
        pretimeout_governor: read_attr(&dir, "pretimeout_governor"),
        pretimeout_available_governors: read_attr(&dir, "pretimeout_available_governors")
            .map(|s| s.split_whitespace().map(str::to_owned).collect()),
        nowayout: attr_u32(&dir, "nowayout").map(|v| v != 0),
        nowayout_writable: is_writable(&dir.join("nowayout")),
        state: read_attr(&dir, "state").map(|s| match s.as_str() {
            "active" => State::Active,
            "inactive" => State::Inactive,
            _ => State::Other(s),
        }),
        status: attr_u32(&dir, "status").map(WatchdogFlags::from_bits_retain),
        bootstatus: attr_u32(&dir, "bootstatus").map(|b| BootStatus::decode(b, support)),
        timeleft: attr_u32(&dir, "timeleft"),
        holders: Vec::new(),
        sysfs_path: dir,
    })
}

/// Lists the watchdogs under `<roots.sysfs>/class/watchdog`, sorted by index, each with the
/// processes holding it (scanned under `roots.proc`). A missing class directory means no
/// watchdog driver is loaded: an empty list, not an error.
pub fn discover(roots: &Roots) -> Result<Vec<WatchdogInfo>, Error> {
    let class_dir = roots.class_dir();
    let entries = match fs::read_dir(&class_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: class_dir,
                source,
            })
        }
    };
    let mut found: Vec<WatchdogInfo> = entries
        .flatten()
        .filter_map(|e| read_watchdog(roots, e.file_name().to_str()?))
        .collect();
    found.sort_by_key(|w| w.index);
    for w in &mut found {
        w.holders = find_holders(&roots.proc, &w.node_paths()).holders;
    }
    Ok(found)
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

impl fmt::Display for WatchdogInfo {
    /// A multi-line description, one attribute per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({})", self.device_node.display(), self.kind)?;
        writeln!(f, "  identity:    {}", opt(&self.identity))?;
        writeln!(f, "  driver:      {}", opt(&self.driver))?;
        writeln!(
            f,
            "  timeout:     {} s (range {}..{})",
            opt(&self.timeout),
            opt(&self.min_timeout),
            opt(&self.max_timeout)
        )?;
        writeln!(
            f,
            "  pretimeout:  {} (governor {}, available {})",
            opt(&self.pretimeout),
            opt(&self.pretimeout_governor),
            self.pretimeout_available_governors
                .as_ref()
                .map_or_else(|| "-".to_owned(), |g| g.join(","))
        )?;
        writeln!(f, "  nowayout:    {}", opt(&self.nowayout))?;
        writeln!(f, "  state:       {}", opt(&self.state))?;
        writeln!(f, "  status:      {}", opt(&self.status))?;
        writeln!(f, "  bootstatus:  {}", opt(&self.bootstatus))?;
        writeln!(f, "  timeleft:    {}", opt(&self.timeleft))?;
        write!(f, "  held by:     {}", holders_cell(&self.holders))
    }
}

fn holders_cell(holders: &[Holder]) -> String {
    if holders.is_empty() {
        "-".to_owned()
    } else {
        holders
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The human table of `fenced watchdog list`: one row per watchdog.
pub struct WatchdogTable<'a>(pub &'a [WatchdogInfo]);

impl fmt::Display for WatchdogTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no watchdog devices\n");
        }
        let rows: Vec<[String; 9]> = self
            .0
            .iter()
            .map(|w| {
                [
                    w.device_node.display().to_string(),
                    w.kind.to_string(),
                    opt(&w.identity),
                    opt(&w.driver),
                    format!(
                        "{} ({}-{})",
                        opt(&w.timeout),
                        opt(&w.min_timeout),
                        opt(&w.max_timeout)
                    ),
                    opt(&w.nowayout),
                    opt(&w.state),
                    w.bootstatus
                        .map_or_else(|| "-".to_owned(), |b| b.flags.to_string()),
                    holders_cell(&w.holders),
                ]
            })
            .collect();
        let header = [
            "DEVICE",
            "KIND",
            "IDENTITY",
            "DRIVER",
            "TIMEOUT (MIN-MAX)",
            "NOWAYOUT",
            "STATE",
            "BOOTSTATUS",
            "HELD BY",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
            let last = cells.len() - 1;
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i == last {
                    writeln!(f, "{cell}")?;
                } else {
                    write!(f, "{cell:<w$}  ")?;
                }
            }
            Ok(())
        };
        line(f, &header)?;
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(f, &cells)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flags::LastReset;
    use crate::holders::tests::fake_process;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A fake `/sys`, `/dev` and `/proc` in a temp dir.
    pub(crate) struct FakeSystem {
        pub dir: tempfile::TempDir,
        pub roots: Roots,
    }

    impl FakeSystem {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let roots = Roots {
                sysfs: dir.path().join("sys"),
                dev: dir.path().join("dev"),
                proc: dir.path().join("proc"),
            };
            for d in [&roots.sysfs, &roots.dev, &roots.proc] {
                fs::create_dir_all(d).unwrap();
            }
            FakeSystem { dir, roots }
        }

        /// Adds `watchdogN` with the given attributes; `driver` adds a `device/driver` link.
        pub(crate) fn add(&self, index: u32, attrs: &[(&str, &str)], driver: Option<&str>) {
            let name = format!("watchdog{index}");
            let dir = self.roots.class_dir().join(&name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("uevent"),
                format!("MAJOR=248\nMINOR={index}\nDEVNAME={name}\n"),
            )
            .unwrap();
            for (k, v) in attrs {
                fs::write(dir.join(k), format!("{v}\n")).unwrap();
            }
            if let Some(drv) = driver {
                let drv_dir = self.dir.path().join("sys/bus/pci/drivers").join(drv);
                fs::create_dir_all(&drv_dir).unwrap();
                fs::create_dir_all(dir.join("device")).unwrap();
                symlink(&drv_dir, dir.join("device/driver")).unwrap();
            }
            fs::write(self.roots.dev.join(&name), "").unwrap();
            if index == 0 {
                fs::write(self.roots.dev.join("watchdog"), "").unwrap();
            }
        }

        pub(crate) fn add_softdog(&self, index: u32) {
            self.add(
                index,
                &[
                    ("identity", SOFTDOG_IDENTITY),
                    ("timeout", "60"),
                    ("min_timeout", "1"),
                    ("max_timeout", "65535"),
                    ("nowayout", "0"),
                    ("state", "inactive"),
                    ("status", "0x8180"),
                    ("bootstatus", "0"),
                    ("timeleft", "60"),
                ],
                None,
            );
        }

        pub(crate) fn add_i6300esb(&self, index: u32) {
            self.add(
                index,
                &[
                    ("identity", "i6300ESB timer"),
                    ("timeout", "30"),
                    ("min_timeout", "1"),
                    ("max_timeout", "2046"),
                    ("nowayout", "0"),
                    ("state", "inactive"),
                    ("status", "0x0"),
                    ("bootstatus", "32"),
                ],
                Some("i6300ESB timer"),
            );
        }

        pub(crate) fn hold(&self, pid: u32, comm: &str, index: u32) {
            let node = self.roots.dev.join(format!("watchdog{index}"));
            fake_process(&self.roots.proc, pid, comm, &[&node]);
        }
    }

    #[test]
    fn no_class_directory_means_no_watchdogs_not_an_error() {
        let sys = FakeSystem::new();
        assert!(discover(&sys.roots).unwrap().is_empty());
    }

    #[test]
    fn softdog_and_i6300esb_are_discovered_with_all_attributes_and_classified() {
        let sys = FakeSystem::new();
        sys.add_softdog(0);
        sys.add_i6300esb(1);
        let found = discover(&sys.roots).unwrap();
        assert_eq!(found.len(), 2);

        let soft = &found[0];
        assert_eq!(soft.name, "watchdog0");
        assert_eq!(soft.kind, Kind::Software);
        assert_eq!(soft.device_node, sys.roots.dev.join("watchdog0"));
        assert_eq!(soft.legacy_node, Some(sys.roots.dev.join("watchdog")));
        assert_eq!(soft.driver, None);
        assert_eq!(soft.timeout, Some(60));
        assert_eq!(soft.timeleft, Some(60));
        assert_eq!(soft.state, Some(State::Inactive));
        assert_eq!(
            soft.status,
            Some(
                WatchdogFlags::KEEPALIVEPING
                    | WatchdogFlags::MAGICCLOSE
                    | WatchdogFlags::SETTIMEOUT
            )
        );

        let hw = &found[1];
        assert_eq!(hw.kind, Kind::Hardware);
        assert_eq!(hw.identity.as_deref(), Some("i6300ESB timer"));
        assert_eq!(hw.driver.as_deref(), Some("i6300ESB timer"));
        assert_eq!((hw.min_timeout, hw.max_timeout), (Some(1), Some(2046)));
        assert_eq!(hw.nowayout, Some(false));
        assert_eq!(hw.legacy_node, None);
        assert_eq!(hw.bootstatus.unwrap().last_reset, LastReset::Watchdog);
        assert_eq!(hw.timeleft, None);
    }

    #[test]
    fn missing_and_garbage_attributes_are_none_never_a_panic() {
        let sys = FakeSystem::new();
        sys.add(3, &[("timeout", "banana"), ("bootstatus", "")], None);
        fs::create_dir_all(sys.roots.class_dir().join("not-a-watchdog")).unwrap();
        let found = discover(&sys.roots).unwrap();
        assert_eq!(found.len(), 1);
        let w = &found[0];
        assert_eq!(w.index, 3);
        assert_eq!(w.kind, Kind::Unknown);
        assert_eq!(w.timeout, None);
        assert_eq!(w.bootstatus, None);
        assert_eq!(w.identity, None);
        assert_eq!(w.pretimeout_available_governors, None);
        assert!(!w.nowayout_writable);
    }

    #[test]
    fn pretimeout_attributes_are_read_when_the_driver_has_them() {
        let sys = FakeSystem::new();
        sys.add(
            0,
            &[
                ("identity", "iTCO_wdt"),
                ("pretimeout", "5"),
                ("pretimeout_governor", "panic"),
                ("pretimeout_available_governors", "noop\npanic"),
            ],
            Some("iTCO_wdt"),
        );
        let w = &discover(&sys.roots).unwrap()[0];
        assert_eq!(w.pretimeout, Some(5));
        assert_eq!(w.pretimeout_governor.as_deref(), Some("panic"));
        assert_eq!(
            w.pretimeout_available_governors,
            Some(vec!["noop".to_owned(), "panic".to_owned()])
        );
    }

    #[test]
    fn writable_nowayout_attribute_is_detected_from_its_mode() {
        let sys = FakeSystem::new();
        sys.add(0, &[("identity", "x"), ("nowayout", "1")], None);
        let attr = sys.roots.class_dir().join("watchdog0/nowayout");
        fs::set_permissions(&attr, fs::Permissions::from_mode(0o644)).unwrap();
        let w = &discover(&sys.roots).unwrap()[0];
        assert_eq!(w.nowayout, Some(true));
        assert!(w.nowayout_writable);
        fs::set_permissions(&attr, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(!discover(&sys.roots).unwrap()[0].nowayout_writable);
    }

    #[test]
    fn hex_and_decimal_attribute_values_both_parse() {
        assert_eq!(parse_u32("0x8180"), Some(0x8180));
        assert_eq!(parse_u32("32"), Some(32));
        assert_eq!(parse_u32(" 7 "), Some(7));
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32("0xZZ"), None);
    }

    #[test]
    fn classification_only_calls_softdog_software() {
        assert_eq!(classify(Some(SOFTDOG_IDENTITY), None), Kind::Software);
        assert_eq!(classify(None, Some("softdog")), Kind::Software);
        assert_eq!(classify(Some("iTCO_wdt"), Some("iTCO_wdt")), Kind::Hardware);
        assert_eq!(classify(Some("IPMI"), None), Kind::Hardware);
        assert_eq!(classify(None, Some("i6300ESB timer")), Kind::Hardware);
        assert_eq!(classify(None, None), Kind::Unknown);
        assert_eq!(classify(Some(""), None), Kind::Unknown);
    }

    #[test]
    fn holders_are_reported_per_device_including_the_legacy_alias() {
        let sys = FakeSystem::new();
        sys.add_softdog(0);
        sys.add_i6300esb(1);
        sys.hold(4242, "sbd", 1);
        fake_process(
            &sys.roots.proc,
            77,
            "wdmd",
            &[&sys.roots.dev.join("watchdog")],
        );
        let found = discover(&sys.roots).unwrap();
        assert_eq!(found[0].holders.len(), 1);
        assert_eq!(found[0].holders[0].pid, 77);
        assert_eq!(found[1].holders[0].to_string(), "pid 4242 (sbd)");
    }

    #[test]
    fn the_list_serialises_to_json_for_the_cli() {
        let sys = FakeSystem::new();
        sys.add_i6300esb(1);
        let found = discover(&sys.roots).unwrap();
        let json: serde_json::Value = serde_json::to_value(&found).unwrap();
        let w = &json[0];
        assert_eq!(w["kind"], "hardware");
        assert_eq!(w["identity"], "i6300ESB timer");
        assert_eq!(w["timeout"], 30);
        assert_eq!(w["bootstatus"]["last_reset"], "watchdog");
        assert_eq!(w["bootstatus"]["flags"]["names"][0], "CARDRESET");
        assert_eq!(w["state"], "inactive");
        assert!(w["timeleft"].is_null());
    }

    #[test]
    fn the_human_table_has_a_header_and_one_row_per_device() {
        let sys = FakeSystem::new();
        sys.add_softdog(0);
        sys.add_i6300esb(1);
        sys.hold(9, "corosync", 1);
        let found = discover(&sys.roots).unwrap();
        let table = WatchdogTable(&found).to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("DEVICE"));
        assert!(lines[1].contains("software") && lines[1].contains("Software Watchdog"));
        assert!(lines[2].contains("i6300ESB timer") && lines[2].contains("pid 9 (corosync)"));
        assert!(lines[2].contains("30 (1-2046)"));
        assert_eq!(WatchdogTable(&[]).to_string(), "no watchdog devices\n");
        assert!(found[1].to_string().contains("CARDRESET"));
    }
}
