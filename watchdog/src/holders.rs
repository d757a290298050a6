//! Who holds a watchdog open: a scan of `/proc/*/fd` symlinks.
//!
//! The kernel lets one process open a watchdog; the next open gets EBUSY. sbd, corosync,
//! watchdog(8) and wdmd are the usual holders. Reading other users' `/proc/PID/fd` needs root;
//! processes that cannot be inspected are skipped, and the scan says how many.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A process holding a watchdog device open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), when readable.
    pub comm: Option<String>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.comm {
            Some(comm) => write!(f, "pid {} ({comm})", self.pid),
            None => write!(f, "pid {}", self.pid),
        }
    }
}

/// The result of a holder scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolderScan {
    /// Processes with an fd pointing at one of the device paths.
    pub holders: Vec<Holder>,
    /// Processes whose fd table could not be read (not root, or they exited meanwhile).
    pub uninspected: usize,
}

/// Finds the processes under `proc_root` (normally `/proc`) that hold any of `device_paths`
/// open. Pass both `/dev/watchdogN` and, for watchdog 0, the legacy `/dev/watchdog`, which is
/// the same device. A missing `proc_root` yields an empty scan.
pub fn find_holders(proc_root: &Path, device_paths: &[PathBuf]) -> HolderScan {
    let mut scan = HolderScan::default();
    let Ok(entries) = fs::read_dir(proc_root) else {
        return scan;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            scan.uninspected += 1;
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| device_paths.contains(&target)));
        if holds {
            let comm = fs::read_to_string(entry.path().join("comm"))
                .ok()
                .map(|s| s.trim_end_matches('\n').to_owned());
            scan.holders.push(Holder { pid, comm });
        }
    }
    scan.holders.sort_by_key(|h| h.pid);
    scan
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Adds a fake process `pid` named `comm` whose fds point at `targets`.
    pub(crate) fn fake_process(proc_root: &Path, pid: u32, comm: &str, targets: &[&Path]) {
        let dir = proc_root.join(pid.to_string());
        fs::create_dir_all(dir.join("fd")).unwrap();
        fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        for (i, t) in targets.iter().enumerate() {
            symlink(t, dir.join("fd").join(i.to_string())).unwrap();
        }
    }

    #[test]
    fn the_process_holding_the_device_is_found_with_pid_and_comm() {
        let proc_root = tempfile::tempdir().unwrap();
        let dev = Path::new("/dev/watchdog1");
        fake_process(proc_root.path(), 42, "sbd", &[Path::new("/dev/null"), dev]);
        fake_process(proc_root.path(), 7, "bash", &[Path::new("/dev/pts/0")]);
        fs::create_dir_all(proc_root.path().join("self")).unwrap();
        let scan = find_holders(proc_root.path(), &[dev.to_path_buf()]);
        assert_eq!(
            scan.holders,
            vec![Holder {
                pid: 42,
                comm: Some("sbd".into())
            }]
        );
        assert_eq!(scan.holders[0].to_string(), "pid 42 (sbd)");
    }

    #[test]
    fn a_holder_of_the_legacy_dev_watchdog_alias_is_found_for_watchdog0() {
        let proc_root = tempfile::tempdir().unwrap();
        fake_process(
            proc_root.path(),
            300,
            "corosync",
            &[Path::new("/dev/watchdog")],
        );
        let scan = find_holders(
            proc_root.path(),
            &["/dev/watchdog0".into(), "/dev/watchdog".into()],
        );
        assert_eq!(scan.holders.len(), 1);
        assert_eq!(scan.holders[0].pid, 300);
    }

    #[test]
    fn processes_without_readable_fds_are_counted_not_fatal() {
        let proc_root = tempfile::tempdir().unwrap();
        fs::create_dir_all(proc_root.path().join("99")).unwrap(); // no fd dir
        let scan = find_holders(proc_root.path(), &["/dev/watchdog0".into()]);
        assert!(scan.holders.is_empty());
        assert_eq!(scan.uninspected, 1);
    }

    #[test]
    fn a_missing_proc_root_yields_an_empty_scan() {
        let scan = find_holders(Path::new("/nonexistent/proc"), &["/dev/watchdog0".into()]);
        assert_eq!(scan, HolderScan::default());
    }
}
