//! Helpers shared by the host tests: temp files on a filesystem with O_DIRECT.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fenced::vdisk::admin;
use fenced::vdisk::{ClusterId, Header, Timeouts};

pub const CLUSTER: &str = "5a1f0c3e-7d2b-4e8a-9c61-0123456789ab";
pub const OTHER_CLUSTER: &str = "11111111-2222-4333-8444-555555555555";

pub fn cluster() -> ClusterId {
    CLUSTER.parse().unwrap()
}

/// A temp dir under the target directory (ext4 on the host, not tmpfs), or `None` with a loud
/// message when the filesystem refuses O_DIRECT or the kernel refuses io_uring.
pub fn direct_io_dir() -> Option<tempfile::TempDir> {
    let base = std::env::var_os("FENCED_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let probe = dir.path().join("probe");
    std::fs::write(&probe, [0u8; 4096]).unwrap();
    if let Err(e) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
    {
        eprintln!(
            "SKIPPED: {} does not support O_DIRECT ({e}); set FENCED_TEST_DIR to an ext4/xfs directory",
            base.display()
        );
        return None;
    }
    if let Err(e) = io_uring::IoUring::new(8) {
        eprintln!("SKIPPED: io_uring unavailable: {e}");
        return None;
    }
    Some(dir)
}

/// Creates a file of `bytes` bytes.
pub fn image(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(bytes).unwrap();
    p
}

/// Creates and formats `n` voting-disk files of `slots` slots.
pub fn formatted(dir: &Path, n: usize, slots: u8) -> Vec<PathBuf> {
    let h = Header::new(cluster(), slots, Timeouts::default());
    (0..n)
        .map(|i| {
            let p = image(dir, &format!("vote{i}.img"), h.disk_bytes());
            admin::format_disk(&p, &h, false).unwrap();
            p
        })
        .collect()
}

/// Options for tests that assert what the disks answered, not when: each round may wait 60 s,
/// so a write or read delayed by a busy host (other tests' fsyncs on a 2-core CI machine) is
/// not mistaken for a failed disk. Tests of the deadline itself set their own.
pub fn patient() -> fenced::vdisk::OpenOptions {
    fenced::vdisk::OpenOptions {
        probe_deadline: std::time::Duration::from_secs(60),
        io_deadline: Some(std::time::Duration::from_secs(60)),
        ..fenced::vdisk::OpenOptions::default()
    }
}
