//! How long a path may hold I/O before it fails it, as the transport is set up, for
//! `fenced doctor`: read from sysfs (and multipath.conf) and held against the deadline of each
//! PR command in a fence (half the fence deadline).
//!
//! While a path holds I/O instead of failing it (an iSCSI session in recovery, an FC remote port
//! being lost), a PR command sent down it neither completes nor fails: the fence cannot confirm
//! that LUN through it and fails closed at its deadline, and a LUN with no other path stays
//! unconfirmed. The settings that bound the hold:
//! - iSCSI: the session's `recovery_tmo` (open-iscsi's `node.session.timeo.replacement_timeout`,
//!   120 s by default), in `/sys/class/iscsi_session/sessionN/`;
//! - FC: the remote port's `fast_io_fail_tmo` (off by default), else its `dev_loss_tmo`, in
//!   `/sys/class/fc_remote_ports/rport-H:B-R/`;
//! - dm-multipath: `no_path_retry` (`queue`: I/O on a map with no path up waits for ever; `N`:
//!   for N x `polling_interval`), which hangs the node's applications rather than its fencing
//!   (fenced sends its PR commands down the paths, not the map);
//! - NVMe over Fabrics: each controller's `fast_io_fail_tmo`, else its `ctrl_loss_tmo` ([`nvme`]).

use std::path::{Component, Path};
use std::time::Duration;

pub mod nvme;

/// One setting that bounds how long I/O can wait on a path or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// What it is, e.g. `iSCSI replacement_timeout`.
    pub setting: &'static str,
    /// Where it was read.
    pub source: String,
    /// The bound; `None`: unbounded.
    pub hold: Option<Duration>,
    /// How to change it.
    pub fix: &'static str,
}

/// The hold of the SCSI disk `disk` (`sdX`) under the sysfs tree `sys`: its iSCSI session's
/// or FC remote port's. `None` for a transport this does not know (SAS, virtio, ...).
pub fn scsi_disk_hold(sys: &Path, disk: &str) -> Option<Hold> {
    let device = std::fs::canonicalize(sys.join("block").join(disk).join("device")).ok()?;
    let parts: Vec<String> = device
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str().map(String::from),
            _ => None,
        })
        .collect();
    if let Some(session) = parts.iter().find(|p| is_numbered(p, "session")) {
        let file = sys
            .join("class/iscsi_session")
            .join(session)
            .join("recovery_tmo");
        let secs = read_number(&file)?;
        return Some(Hold {
            setting: "iSCSI replacement_timeout",
            source: file.display().to_string(),
            hold: Some(Duration::from_secs(secs)),
            fix: "set node.session.timeo.replacement_timeout in /etc/iscsi/iscsid.conf, and for the existing sessions `iscsiadm -m node -o update -n node.session.timeo.replacement_timeout -v N` then log in again",
        });
    }
    if let Some(rport) = parts.iter().find(|p| p.starts_with("rport-")) {
        let dir = sys.join("class/fc_remote_ports").join(rport);
        let fast = dir.join("fast_io_fail_tmo");
        if let Some(secs) = read_number(&fast) {
            return Some(Hold {
                setting: "FC fast_io_fail_tmo",
                source: fast.display().to_string(),
                hold: Some(Duration::from_secs(secs)),
                fix: "set fast_io_fail_tmo in the defaults of /etc/multipath.conf (multipathd applies it to the remote ports), or write it to the remote port's fast_io_fail_tmo",
            });
        }
        let dev_loss = dir.join("dev_loss_tmo");
        let secs = read_number(&dev_loss)?;
        return Some(Hold {
            setting: "FC dev_loss_tmo (fast_io_fail_tmo off)",
            source: dev_loss.display().to_string(),
            hold: Some(Duration::from_secs(secs)),
            fix: "set fast_io_fail_tmo (below dev_loss_tmo) in the defaults of /etc/multipath.conf, so I/O fails over before the remote port is given up",
        });
    }
    None
}

/// The hold of a dm-multipath map whose table has (`queueing`) or lacks the
/// `queue_if_no_path` feature, under the multipath.conf text `conf`.
pub fn multipath_hold(conf: &str, map: &str, queueing: bool) -> Hold {
    let fix = "set no_path_retry to a number N in /etc/multipath.conf (N x polling_interval below the fence deadline), not `queue`, and `multipathd reconfigure`";
    let source = format!("{map}: multipath.conf no_path_retry, dm table features");
    if !queueing {
        return Hold {
            setting: "multipath no_path_retry",
            source,
            hold: Some(Duration::ZERO),
            fix,
        };
    }
    let interval = multipath_conf_value(conf, "polling_interval")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5);
    let hold = match multipath_conf_value(conf, "no_path_retry").as_deref() {
        Some("fail") => Some(Duration::ZERO),
        Some(n) => match n.parse::<u64>() {
            Ok(n) => Some(Duration::from_secs(n * interval)),
            Err(_) => None,
        },
        // The table queues and multipath.conf does not bound it: for ever.
        None => None,
    };
    Hold {
        setting: "multipath no_path_retry",
        source,
        hold,
        fix,
    }
}

/// The value of the first `key value` line of multipath.conf text (comments stripped, quotes
/// removed).
pub(crate) fn multipath_conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(key))
                .then(|| words.next().map(|v| v.trim_matches('"').to_string()))
                .flatten()
        })
}

fn is_numbered(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn read_number(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs tree with `sdX` whose device sits under `device_path`, and `files` (relative
    /// path, contents).
    fn sysfs(disk: &str, device_path: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join(device_path)).unwrap();
        std::fs::create_dir_all(sys.join("block").join(disk)).unwrap();
        symlink(
            sys.join(device_path),
            sys.join("block").join(disk).join("device"),
        )
        .unwrap();
        for (f, text) in files {
            let p = sys.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn an_iscsi_disk_holds_io_for_its_sessions_replacement_timeout() {
        let t = sysfs(
            "sdb",
            "devices/platform/host3/session7/target3:0:0/3:0:0:1",
            &[("class/iscsi_session/session7/recovery_tmo", "120\n")],
        );
        let h = scsi_disk_hold(t.path(), "sdb").unwrap();
        assert_eq!(h.setting, "iSCSI replacement_timeout");
        assert_eq!(h.hold, Some(Duration::from_secs(120)));
        assert!(h.source.ends_with("session7/recovery_tmo"), "{}", h.source);
    }

    #[test]
    fn an_fc_disk_holds_io_for_fast_io_fail_else_dev_loss() {
        let dev = "devices/pci0000:00/0000:00:03.0/host5/rport-5:0-2/target5:0:1/5:0:1:0";
        let t = sysfs(
            "sdc",
            dev,
            &[
                (
                    "class/fc_remote_ports/rport-5:0-2/fast_io_fail_tmo",
                    "off\n",
                ),
                ("class/fc_remote_ports/rport-5:0-2/dev_loss_tmo", "60\n"),
            ],
        );
        let h = scsi_disk_hold(t.path(), "sdc").unwrap();
        assert_eq!(h.hold, Some(Duration::from_secs(60)));
        assert!(h.setting.contains("dev_loss_tmo"));
        std::fs::write(
            t.path()
                .join("class/fc_remote_ports/rport-5:0-2/fast_io_fail_tmo"),
            "5\n",
        )
        .unwrap();
        let h = scsi_disk_hold(t.path(), "sdc").unwrap();
        assert_eq!(
            (h.setting, h.hold),
            ("FC fast_io_fail_tmo", Some(Duration::from_secs(5)))
        );
    }

    #[test]
    fn another_transport_is_not_guessed() {
        let t = sysfs(
            "sda",
            "devices/pci0000:00/virtio2/host0/target0:0:0/0:0:0:0",
            &[],
        );
        assert_eq!(scsi_disk_hold(t.path(), "sda"), None);
        assert_eq!(scsi_disk_hold(t.path(), "sdz"), None, "no such disk");
    }

    #[test]
    fn a_multipath_map_queues_for_no_path_retry_times_the_polling_interval() {
        let conf = "defaults {\n  polling_interval 2\n  no_path_retry 4 # comment\n}\n";
        assert_eq!(
            multipath_hold(conf, "mpatha", true).hold,
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            multipath_hold("defaults {\n no_path_retry 3\n}", "m", true).hold,
            Some(Duration::from_secs(15)),
            "polling_interval 5 by default"
        );
        assert_eq!(
            multipath_hold("defaults {\n no_path_retry queue\n}", "m", true).hold,
            None
        );
        assert_eq!(
            multipath_hold("", "m", true).hold,
            None,
            "a queueing table, unbounded"
        );
        assert_eq!(
            multipath_hold("defaults {\n no_path_retry \"fail\"\n}", "m", true).hold,
            Some(Duration::ZERO)
        );
        assert_eq!(
            multipath_hold("defaults {\n no_path_retry queue\n}", "m", false).hold,
            Some(Duration::ZERO),
            "the table does not queue"
        );
    }
}
