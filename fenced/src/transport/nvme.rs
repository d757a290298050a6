//! The NVMe controllers behind a namespace's block device, and how long each holds I/O while it
//! reconnects, as sysfs publishes it.
//!
//! A fabric controller (`transport` tcp, rdma, fc) that loses its connection reconnects every
//! `reconnect_delay` seconds. Meanwhile the kernel keeps the I/O sent through it, and the PR
//! commands of the block layer's ioctls (which have no timeout of their own): until
//! `fast_io_fail_tmo` has passed, when it fails them (over to another path, where the namespace
//! has one), or, with `fast_io_fail_tmo` off, until `ctrl_loss_tmo` gives the controller up and
//! deletes it; with both off, for ever. The values are in `/sys/class/nvme/nvmeN/`, seconds or
//! `off` (`ctrl_loss_tmo` since Linux 5.8, `fast_io_fail_tmo` since 5.13). PCIe and loop
//! controllers do not reconnect over a fabric.
//!
//! The namespace's controllers: with native multipath (`nvme_core.multipath=Y`, Debian's
//! default) `/dev/nvmeXnY` is the multipath head, and `/sys/block/nvmeXnY/multipath/` lists its
//! path devices (`nvmeXcZnY`), each of whose `device` is its controller; without it
//! `/sys/block/nvmeXnY/device` is the controller.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A timeout sysfs shows as seconds or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// `off`: never.
    Off,
    /// After this long.
    After(Duration),
}

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timeout::Off => f.write_str("off"),
            Timeout::After(d) => write!(f, "{} s", d.as_secs()),
        }
    }
}

/// A fabric controller's reconnect settings; `None`: not published by this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricTimeouts {
    /// `ctrl_loss_tmo`.
    pub ctrl_loss_tmo: Option<Timeout>,
    /// `fast_io_fail_tmo` (kernels before 5.13 have no fast fail: as `off`).
    pub fast_io_fail_tmo: Option<Timeout>,
    /// `reconnect_delay`.
    pub reconnect_delay: Option<Duration>,
}

/// How long I/O waits on a controller that reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectHold {
    /// Until `fast_io_fail_tmo`.
    FastIoFail(Duration),
    /// Until `ctrl_loss_tmo` gives the controller up (`fast_io_fail_tmo` off).
    CtrlLoss(Duration),
    /// For ever: both off.
    Forever,
    /// `fast_io_fail_tmo` off and `ctrl_loss_tmo` not published.
    Unknown,
}

impl FabricTimeouts {
    /// How long I/O and PR commands sent through the controller wait while it reconnects:
    /// whichever of `fast_io_fail_tmo` and `ctrl_loss_tmo` ends first.
    pub fn hold(&self) -> ReconnectHold {
        let fast = match self.fast_io_fail_tmo {
            Some(Timeout::After(d)) => Some(d),
            Some(Timeout::Off) | None => None,
        };
        match (fast, self.ctrl_loss_tmo) {
            (Some(f), Some(Timeout::After(c))) if c < f => ReconnectHold::CtrlLoss(c),
            (Some(f), _) => ReconnectHold::FastIoFail(f),
            (None, Some(Timeout::After(c))) => ReconnectHold::CtrlLoss(c),
            (None, Some(Timeout::Off)) => ReconnectHold::Forever,
            (None, None) => ReconnectHold::Unknown,
        }
    }
}

/// One controller of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeController {
    /// `nvmeN`.
    pub name: String,
    /// Its sysfs directory (`/sys/class/nvme/nvmeN`).
    pub dir: PathBuf,
    /// `transport`: `tcp`, `rdma`, `fc`, `loop`, `pcie`; `None`: unreadable.
    pub transport: Option<String>,
    /// The reconnect settings, for the fabric transports (tcp, rdma, fc).
    pub fabric: Option<FabricTimeouts>,
}

/// The transports whose controllers reconnect over a network.
const FABRICS: [&str; 3] = ["tcp", "rdma", "fc"];

/// Whether `name` is an NVMe namespace's block device (`nvmeXnY`: a multipath head or a
/// namespace of one controller; not a partition, not a path device `nvmeXcZnY`).
pub fn is_namespace_disk(name: &str) -> bool {
    namespace_parts(name).is_some()
}

/// The two numbers of a namespace block device's name `nvme<X>n<Y>`.
fn namespace_parts(name: &str) -> Option<(&str, &str)> {
    let (x, y) = name.strip_prefix("nvme")?.split_once('n')?;
    (number(x) && number(y)).then_some((x, y))
}

/// Whether `s` is a decimal number (one digit at least, nothing else).
fn number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The controllers of the namespace block device `disk` (`nvmeXnY`) under the sysfs tree
/// `sys`, sorted by name; empty when none is found.
pub fn namespace_controllers(sys: &Path, disk: &str) -> Vec<NvmeController> {
    let block = sys.join("block").join(disk);
    let mut names: Vec<String> = match std::fs::read_dir(block.join("multipath")) {
        Ok(paths) => paths
            .filter_map(Result::ok)
            .filter_map(|p| controller_of(&p.path().join("device")))
            .collect(),
        // Kernels before 6.x's `multipath/` links (6.1): the head's path devices are the
        // hidden disks `nvme<S>c<C>n<N>` of head `nvme<S>n<N>`, each on controller `nvme<C>`.
        Err(_) => match path_devices(sys, disk) {
            paths if !paths.is_empty() => paths
                .iter()
                .filter_map(|p| controller_of(&sys.join("block").join(p).join("device")))
                .collect(),
            _ => controller_of(&block.join("device")).into_iter().collect(),
        },
    };
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| controller(sys, name))
        .collect()
}

/// The path devices (`nvme<S>c<C>n<N>`) of multipath head `disk` (`nvme<S>n<N>`) in
/// `<sys>/block`.
fn path_devices(sys: &Path, disk: &str) -> Vec<String> {
    let Some((subsys, ns)) = namespace_parts(disk) else {
        return Vec::new();
    };
    let prefix = format!("nvme{subsys}c");
    let suffix = format!("n{ns}");
    let Ok(entries) = std::fs::read_dir(sys.join("block")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(&suffix))
                .is_some_and(number)
        })
        .collect()
}

/// The controller a `device` link leads to (`nvmeN`).
fn controller_of(device: &Path) -> Option<String> {
    let target = std::fs::canonicalize(device).ok()?;
    let name = target.file_name()?.to_str()?;
    number(name.strip_prefix("nvme")?).then(|| name.to_string())
}

fn controller(sys: &Path, name: String) -> NvmeController {
    let dir = sys.join("class/nvme").join(&name);
    let read = |attr: &str| {
        std::fs::read_to_string(dir.join(attr))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let transport = read("transport");
    let fabric = transport
        .as_deref()
        .filter(|t| FABRICS.contains(t))
        .map(|_| FabricTimeouts {
            ctrl_loss_tmo: read("ctrl_loss_tmo").as_deref().and_then(parse_timeout),
            fast_io_fail_tmo: read("fast_io_fail_tmo").as_deref().and_then(parse_timeout),
            reconnect_delay: read("reconnect_delay")
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs),
        });
    NvmeController {
        name,
        dir,
        transport,
        fabric,
    }
}

/// `off` or whole seconds; anything else is not a value.
fn parse_timeout(text: &str) -> Option<Timeout> {
    if text == "off" {
        return Some(Timeout::Off);
    }
    text.parse()
        .ok()
        .map(|s| Timeout::After(Duration::from_secs(s)))
}

/// A fake sysfs tree of NVMe controllers and namespaces, for the tests here and doctor's.
#[cfg(test)]
pub(crate) mod fake {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// Adds controller `nvmeN` with `transport` and `attrs` (name, contents) under `sys`.
    pub(crate) fn controller(sys: &Path, name: &str, transport: &str, attrs: &[(&str, &str)]) {
        let dir = sys.join("devices/virtual/nvme-fabrics/ctl").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("transport"), format!("{transport}\n")).unwrap();
        for (attr, text) in attrs {
            std::fs::write(dir.join(attr), format!("{text}\n")).unwrap();
        }
        std::fs::create_dir_all(sys.join("class/nvme")).unwrap();
        symlink(&dir, sys.join("class/nvme").join(name)).unwrap();
    }

    /// Adds the multipath head `disk` with one path device per controller in `controllers`
    /// (`nvme0c1n1` for controller `nvme1` of head `nvme0n1`).
    pub(crate) fn head(sys: &Path, disk: &str, controllers: &[&str]) {
        let head = sys.join("block").join(disk);
        std::fs::create_dir_all(head.join("multipath")).unwrap();
        let (subsys, ns) = disk
            .strip_prefix("nvme")
            .and_then(|r| r.split_once('n'))
            .unwrap();
        for c in controllers {
            let ctrl = sys.join("devices/virtual/nvme-fabrics/ctl").join(c);
            let path_name = format!("nvme{subsys}c{}n{ns}", c.trim_start_matches("nvme"));
            let path = ctrl.join(&path_name);
            std::fs::create_dir_all(&path).unwrap();
            symlink(&ctrl, path.join("device")).unwrap();
            symlink(&path, head.join("multipath").join(&path_name)).unwrap();
        }
    }

    /// Adds the multipath head `disk` as Linux 6.1 shows it: no `multipath/` directory, its
    /// `device` the subsystem, its path devices (`nvme0c1n1` for controller `nvme1` of head
    /// `nvme0n1`) beside it in `block/`.
    pub(crate) fn head_6_1(sys: &Path, disk: &str, controllers: &[&str]) {
        let head = sys.join("block").join(disk);
        std::fs::create_dir_all(&head).unwrap();
        let subsys = sys.join("devices/virtual/nvme-subsystem/nvme-subsys0");
        std::fs::create_dir_all(&subsys).unwrap();
        symlink(&subsys, head.join("device")).unwrap();
        let (s, ns) = disk
            .strip_prefix("nvme")
            .and_then(|r| r.split_once('n'))
            .unwrap();
        for c in controllers {
            let ctrl = sys.join("devices/virtual/nvme-fabrics/ctl").join(c);
            let path = sys
                .join("block")
                .join(format!("nvme{s}c{}n{ns}", c.trim_start_matches("nvme")));
            std::fs::create_dir_all(&path).unwrap();
            symlink(&ctrl, path.join("device")).unwrap();
        }
    }

    /// Adds `disk` as the namespace of the one controller `controller` (no multipath).
    pub(crate) fn single(sys: &Path, disk: &str, controller: &str) {
        let block = sys.join("block").join(disk);
        std::fs::create_dir_all(&block).unwrap();
        let ctrl = sys
            .join("devices/virtual/nvme-fabrics/ctl")
            .join(controller);
        symlink(ctrl, block.join("device")).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipath_head_is_reached_through_the_controller_of_each_path() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        fake::controller(
            sys,
            "nvme1",
            "tcp",
            &[
                ("ctrl_loss_tmo", "600"),
                ("fast_io_fail_tmo", "off"),
                ("reconnect_delay", "10"),
            ],
        );
        fake::controller(
            sys,
            "nvme2",
            "rdma",
            &[("ctrl_loss_tmo", "off"), ("fast_io_fail_tmo", "5")],
        );
        fake::head(sys, "nvme0n1", &["nvme2", "nvme1"]);
        let found = namespace_controllers(sys, "nvme0n1");
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["nvme1", "nvme2"]);
        assert_eq!(found[0].transport.as_deref(), Some("tcp"));
        assert_eq!(
            found[0].fabric,
            Some(FabricTimeouts {
                ctrl_loss_tmo: Some(Timeout::After(Duration::from_secs(600))),
                fast_io_fail_tmo: Some(Timeout::Off),
                reconnect_delay: Some(Duration::from_secs(10)),
            })
        );
        assert!(found[1].dir.ends_with("class/nvme/nvme2"));
        assert_eq!(
            found[1].fabric.unwrap().hold(),
            ReconnectHold::FastIoFail(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_6_1_multipath_head_is_reached_through_its_path_devices_beside_it() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        for c in ["nvme3", "nvme4"] {
            fake::controller(sys, c, "tcp", &[("ctrl_loss_tmo", "30")]);
        }
        fake::head_6_1(sys, "nvme0n1", &["nvme4", "nvme3"]);
        // Another namespace's path device of the same subsystem is not this head's.
        fake::head_6_1(sys, "nvme0n2", &["nvme5"]);
        let found = namespace_controllers(sys, "nvme0n1");
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["nvme3", "nvme4"]);
    }

    #[test]
    fn a_namespace_without_multipath_is_reached_through_its_device() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        fake::controller(sys, "nvme0", "pcie", &[]);
        fake::single(sys, "nvme0n1", "nvme0");
        let found = namespace_controllers(sys, "nvme0n1");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "nvme0");
        assert_eq!(found[0].transport.as_deref(), Some("pcie"));
        assert_eq!(
            found[0].fabric, None,
            "PCIe does not reconnect over a fabric"
        );
        assert!(
            namespace_controllers(sys, "nvme9n1").is_empty(),
            "no such disk"
        );
    }

    #[test]
    fn io_waits_for_whichever_of_fast_io_fail_and_ctrl_loss_ends_first() {
        let secs = |s| Some(Timeout::After(Duration::from_secs(s)));
        let hold = |ctrl_loss_tmo, fast_io_fail_tmo| {
            FabricTimeouts {
                ctrl_loss_tmo,
                fast_io_fail_tmo,
                reconnect_delay: None,
            }
            .hold()
        };
        let d = Duration::from_secs;
        assert_eq!(
            hold(secs(600), Some(Timeout::Off)),
            ReconnectHold::CtrlLoss(d(600))
        );
        assert_eq!(
            hold(secs(600), None),
            ReconnectHold::CtrlLoss(d(600)),
            "kernel before 5.13"
        );
        assert_eq!(hold(secs(600), secs(5)), ReconnectHold::FastIoFail(d(5)));
        assert_eq!(
            hold(Some(Timeout::Off), secs(5)),
            ReconnectHold::FastIoFail(d(5))
        );
        assert_eq!(hold(secs(3), secs(5)), ReconnectHold::CtrlLoss(d(3)));
        assert_eq!(
            hold(Some(Timeout::Off), Some(Timeout::Off)),
            ReconnectHold::Forever
        );
        assert_eq!(hold(None, Some(Timeout::Off)), ReconnectHold::Unknown);
        assert_eq!(hold(None, secs(5)), ReconnectHold::FastIoFail(d(5)));
    }

    #[test]
    fn sysfs_timeouts_are_seconds_or_off() {
        assert_eq!(parse_timeout("off"), Some(Timeout::Off));
        assert_eq!(
            parse_timeout("30"),
            Some(Timeout::After(Duration::from_secs(30)))
        );
        assert_eq!(parse_timeout("-1"), None);
        assert_eq!(parse_timeout(""), None);
        assert_eq!(Timeout::After(Duration::from_secs(30)).to_string(), "30 s");
    }

    #[test]
    fn only_whole_namespace_devices_are_namespaces() {
        assert!(is_namespace_disk("nvme0n1"));
        assert!(is_namespace_disk("nvme12n34"));
        assert!(!is_namespace_disk("nvme0n1p1"), "a partition");
        assert!(!is_namespace_disk("nvme0c1n1"), "a path device");
        assert!(!is_namespace_disk("nvme0"), "a controller");
        assert!(!is_namespace_disk("sda"));
        assert!(!is_namespace_disk("nvmen1"));
    }
}
