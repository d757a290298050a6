//! Opening device nodes: checks that turn operator mistakes into clear errors, and the
//! SG_IO transport ([`SgDevice`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;
use crate::transport::{CommandOutcome, DataTransfer, HostStatus, ScsiStatus, ScsiTransport};

/// What kind of node a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A block device (whole disk).
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A character device (e.g. /dev/sgN).
    Char,
}

fn dev_major_minor(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

/// If the block device `major:minor` is a partition, returns the parent disk's name.
///
/// Reads `/sys/dev/block/MAJ:MIN/partition` (the same file as /sys/class/block/X/partition,
/// reached through the numbers so symlinks like /dev/disk/by-id/... work); `sysfs_root` is
/// `/sys` except in tests.
pub fn partition_parent(sysfs_root: &Path, major: u32, minor: u32) -> Option<String> {
    let node = sysfs_root.join(format!("dev/block/{major}:{minor}"));
    if !node.join("partition").exists() {
        return None;
    }
    // The partition's sysfs directory lives inside its disk's directory.
    let parent = std::fs::canonicalize(&node)
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "the whole-disk device".to_string());
    Some(if parent.starts_with('/') || parent.starts_with("the ") {
        parent
    } else {
        format!("/dev/{parent}")
    })
}

/// True when the block device `major:minor` is a device-mapper map (dm-multipath, LVM...):
/// `/sys/dev/block/MAJ:MIN/dm` exists.
///
/// dm passes SG_IO through to one underlying path only, so reservations on a dm device go
/// through the block-layer ioctls, which dm-multipath applies to every path.
pub fn is_device_mapper(sysfs_root: &Path, major: u32, minor: u32) -> bool {
    sysfs_root
        .join(format!("dev/block/{major}:{minor}/dm"))
        .is_dir()
}

/// The identity of the NVMe namespace at block device `major:minor`, as the kernel derives it
/// from the namespace's identifiers (`/sys/dev/block/MAJ:MIN/wwid`): `uuid.<UUID>` when the
/// namespace has a UUID, else `eui.<NGUID>` or `eui.<EUI-64>`, else `nvme.<vendor>-<serial>-
/// <model>-<nsid>`. The same on every host that sees the namespace, through any controller.
pub fn nvme_namespace_id(sysfs_root: &Path, major: u32, minor: u32) -> Option<String> {
    let wwid =
        std::fs::read_to_string(sysfs_root.join(format!("dev/block/{major}:{minor}/wwid"))).ok()?;
    let wwid = wwid.trim();
    (!wwid.is_empty()).then(|| wwid.to_string())
}

/// Checks that `path` names a device node usable for reservations and opens it read-write.
///
/// Errors name the path and say what to do: nonexistent path, permission, not a device node,
/// a partition instead of the whole LUN.
pub fn open_device_node(path: &Path) -> Result<(File, NodeKind)> {
    let meta = std::fs::metadata(path).map_err(|e| map_open_error(path, e))?;
    let ft = meta.file_type();
    let kind = if ft.is_block_device() {
        let (major, minor) = dev_major_minor(meta.rdev());
        if let Some(parent) = partition_parent(Path::new("/sys"), major, minor) {
            return Err(Error::Partition {
                device: path.to_path_buf(),
                parent,
            });
        }
        NodeKind::Block { major, minor }
    } else if ft.is_char_device() {
        NodeKind::Char
    } else {
        return Err(Error::NotADevice {
            device: path.to_path_buf(),
        });
    };
    // O_NONBLOCK: an sg node otherwise blocks in open() while another holder has O_EXCL.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| map_open_error(path, e))?;
    Ok((file, kind))
}

fn map_open_error(path: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            device: path.to_path_buf(),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            device: path.to_path_buf(),
        },
        _ if e.raw_os_error() == Some(libc::EROFS) => Error::PermissionDenied {
            device: path.to_path_buf(),
        },
        _ => Error::Io {
            device: path.display().to_string(),
            command: "open",
            source: e,
        },
    }
}

/// A SCSI device reached through SG_IO: `/dev/sdX` or `/dev/sgN`.
#[derive(Debug)]
pub struct SgDevice {
    file: File,
    path: PathBuf,
    name: String,
}

impl SgDevice {
    /// Opens `path` and checks that it accepts SCSI commands (SG_GET_VERSION_NUM probe).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (file, _kind) = open_device_node(path)?;
        if let Err(e) = sys::sg_version(file.as_fd()) {
            return Err(
                if e.raw_os_error() == Some(libc::ENOTTY) || e.raw_os_error() == Some(libc::EINVAL)
                {
                    Error::NotScsi {
                        device: path.to_path_buf(),
                    }
                } else {
                    map_open_error(path, e)
                },
            );
        }
        Ok(SgDevice {
            file,
            path: path.to_path_buf(),
            name: path.display().to_string(),
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ScsiTransport for SgDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn execute(
        &self,
        cdb: &[u8],
        data: DataTransfer<'_>,
        timeout: Duration,
    ) -> Result<CommandOutcome> {
        let sg_data = match data {
            DataTransfer::None => sys::SgData::None,
            DataTransfer::FromDevice(buf) => sys::SgData::In(buf),
            DataTransfer::ToDevice(buf) => sys::SgData::Out(buf),
        };
        let r =
            sys::sg_io(self.file.as_fd(), cdb, sg_data, timeout).map_err(|source| match source
                .raw_os_error()
            {
                Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
                    device: self.path.clone(),
                },
                Some(libc::ENOTTY) => Error::NotScsi {
                    device: self.path.clone(),
                },
                _ => Error::Io {
                    device: self.name.clone(),
                    command: "SG_IO",
                    source,
                },
            })?;
        Ok(CommandOutcome {
            status: ScsiStatus(r.status),
            host_status: HostStatus(r.host_status),
            driver_status: r.driver_status,
            sense: r.sense,
            resid: usize::try_from(r.resid).unwrap_or(0),
            duration: Some(Duration::from_millis(u64::from(r.duration_ms))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonexistent_path_reports_not_found_with_the_path() {
        let err = SgDevice::open("/dev/does-not-exist-sgpr").unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }));
        assert!(err.to_string().contains("/dev/does-not-exist-sgpr"));
    }

    #[test]
    fn regular_file_reports_not_a_device() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let err = SgDevice::open(f.path()).unwrap_err();
        assert!(matches!(err, Error::NotADevice { .. }), "{err}");
        assert!(err.to_string().contains("whole-disk"));
    }

    #[test]
    fn char_device_without_scsi_reports_not_scsi() {
        // /dev/null is a char device that knows no SCSI ioctls.
        let err = SgDevice::open("/dev/null").unwrap_err();
        assert!(matches!(err, Error::NotScsi { .. }), "{err}");
        assert!(err.to_string().contains("/dev/null"));
    }

    #[test]
    fn partition_is_detected_from_sysfs_and_names_the_disk() {
        let root = tempfile::tempdir().unwrap();
        let disk = root.path().join("devices/virtual/block/sda");
        let part = disk.join("sda1");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("partition"), "1\n").unwrap();
        std::fs::create_dir_all(root.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&part, root.path().join("dev/block/8:1")).unwrap();
        std::os::unix::fs::symlink(&disk, root.path().join("dev/block/8:0")).unwrap();
        assert_eq!(
            partition_parent(root.path(), 8, 1).as_deref(),
            Some("/dev/sda")
        );
        assert_eq!(partition_parent(root.path(), 8, 0), None);
        assert_eq!(partition_parent(root.path(), 8, 2), None);
    }

    #[test]
    fn device_mapper_is_detected_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dev/block/253:0/dm")).unwrap();
        std::fs::create_dir_all(root.path().join("dev/block/8:0")).unwrap();
        assert!(is_device_mapper(root.path(), 253, 0));
        assert!(!is_device_mapper(root.path(), 8, 0));
    }

    #[test]
    fn an_nvme_namespace_is_identified_by_the_kernels_wwid() {
        let root = tempfile::tempdir().unwrap();
        let ns = root.path().join("dev/block/259:0");
        std::fs::create_dir_all(&ns).unwrap();
        std::fs::write(
            ns.join("wwid"),
            "uuid.5b1c2d3e-4f50-4a1b-8c2d-3e4f5a6b7c8d\n",
        )
        .unwrap();
        assert_eq!(
            nvme_namespace_id(root.path(), 259, 0).as_deref(),
            Some("uuid.5b1c2d3e-4f50-4a1b-8c2d-3e4f5a6b7c8d")
        );
        std::fs::create_dir_all(root.path().join("dev/block/259:1")).unwrap();
        std::fs::write(root.path().join("dev/block/259:1/wwid"), "\n").unwrap();
        assert_eq!(nvme_namespace_id(root.path(), 259, 1), None, "empty");
        assert_eq!(nvme_namespace_id(root.path(), 8, 0), None, "no attribute");
    }

    #[test]
    fn permission_errors_say_root_is_needed() {
        let path = Path::new("/dev/sdz");
        for e in [
            io::Error::from_raw_os_error(libc::EACCES),
            io::Error::from_raw_os_error(libc::EPERM),
            io::Error::from_raw_os_error(libc::EROFS),
        ] {
            let err = map_open_error(path, e);
            assert!(matches!(err, Error::PermissionDenied { .. }));
            assert!(err.to_string().starts_with("/dev/sdz: permission denied"));
            assert!(err.to_string().contains("root"));
        }
    }

    #[test]
    fn partition_error_tells_the_operator_which_disk_to_use() {
        let err = Error::Partition {
            device: "/dev/sda1".into(),
            parent: "/dev/sda".into(),
        };
        assert_eq!(
            err.to_string(),
            "/dev/sda1: is a partition; reservations apply to the whole LUN, use /dev/sda instead"
        );
    }
}
