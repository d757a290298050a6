//! Operator tasks on single voting disks: format and read-back for `fenced disk format|dump`.
//!
//! Plain synchronous O_DIRECT I/O through `std` (no ring): these run once, by an operator, on
//! disks that are not yet (or no longer) polled by a daemon.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::format::{
    decode_header, decode_slot, disk_bytes_for, encode_header, slot_offset, BlockError, ClusterId,
    Header, SlotBlock, BLOCK_SIZE, FORMAT_VERSION,
};
use super::AlignedBlock;

/// Why an operator task on a voting disk failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// open(2) failed.
    #[error("{path}: cannot open: {source} (check the path and that you run as root)")]
    Open {
        /// Device or file.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// Reading the disk failed.
    #[error("{path}: read failed at byte {offset}: {source}")]
    Read {
        /// Device or file.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// OS error.
        source: io::Error,
    },
    /// Writing the disk failed.
    #[error("{path}: write failed at byte {offset}: {source}; the disk is not usable until `fenced disk format --force` succeeds")]
    Write {
        /// Device or file.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// OS error.
        source: io::Error,
    },
    /// The device is smaller than the header and slots need.
    #[error("{path}: too small: {size} bytes, {needed} needed for the header and the slots; use a larger LUN (or `truncate -s {needed}` for an image file)")]
    TooSmall {
        /// Device or file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// Block 0 is all zero.
    #[error(
        "{path}: not a formatted voting disk (block 0 is empty); run `fenced disk format` first"
    )]
    NotFormatted {
        /// Device or file.
        path: PathBuf,
    },
    /// Block 0 is not a valid v1 header.
    #[error("{path}: no valid voting-disk header: {verdict}; if this is the right device, reformat it with `fenced disk format --force` (all slots are lost)")]
    BadHeader {
        /// Device or file.
        path: PathBuf,
        /// What is wrong with block 0.
        verdict: BlockError,
    },
    /// Formatted by a newer fenced.
    #[error("{path}: formatted with voting-disk format version {found}, this fenced supports up to {FORMAT_VERSION}; upgrade fenced on this node")]
    NewerVersion {
        /// Device or file.
        path: PathBuf,
        /// Version on disk.
        found: u32,
    },
    /// The disk belongs to another cluster.
    #[error(
        "{path}: belongs to cluster {found}, not {expected}; check the device list (a wrong LUN?)"
    )]
    ForeignCluster {
        /// Device or file.
        path: PathBuf,
        /// Cluster found on the disk.
        found: ClusterId,
        /// Cluster expected.
        expected: ClusterId,
    },
    /// `format` without `--force` on a disk that holds data.
    #[error("{path}: {what}; refusing to overwrite it without --force")]
    WouldOverwrite {
        /// Device or file.
        path: PathBuf,
        /// What is on it.
        what: String,
    },
    /// A format parameter is out of range.
    #[error("invalid format parameters: {0}")]
    InvalidParameters(String),
}

fn open(path: &Path, write: bool) -> Result<File, AdminError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(write).custom_flags(libc::O_DIRECT);
    opts.open(path).map_err(|source| AdminError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn size_of(file: &mut File, path: &Path) -> Result<u64, AdminError> {
    file.seek(SeekFrom::End(0))
        .map_err(|source| AdminError::Read {
            path: path.to_path_buf(),
            offset: 0,
            source,
        })
}

fn read_block(
    file: &File,
    path: &Path,
    offset: u64,
    out: &mut AlignedBlock,
) -> Result<(), AdminError> {
    file.read_exact_at(&mut out.0, offset)
        .map_err(|source| AdminError::Read {
            path: path.to_path_buf(),
            offset,
            source,
        })
}

/// Classifies block 0 as an [`AdminError`] unless it is a valid v1 header.
fn header_or_error(path: &Path, block: &AlignedBlock) -> Result<Header, AdminError> {
    let path = path.to_path_buf();
    match decode_header(&block.0) {
        Ok(h) => Ok(h),
        Err(BlockError::NeverWritten) => Err(AdminError::NotFormatted { path }),
        Err(BlockError::NewerVersion { found, .. }) => {
            Err(AdminError::NewerVersion { path, found })
        }
        Err(verdict) => Err(AdminError::BadHeader { path, verdict }),
    }
}

/// Formats one voting disk: zeroes every slot block, then writes the header, then fsyncs.
///
/// Without `force`, refuses a disk whose block 0 holds anything (a voting-disk header of any
/// cluster or version, or foreign data).
pub fn format_disk(path: &Path, header: &Header, force: bool) -> Result<(), AdminError> {
    if header.slots == 0 {
        return Err(AdminError::InvalidParameters(
            "--slots must be between 1 and 255".into(),
        ));
    }
    if header.cluster.is_nil() {
        return Err(AdminError::InvalidParameters(
            "the nil cluster UUID is not allowed".into(),
        ));
    }
    header
        .timeouts
        .check()
        .map_err(|m| AdminError::InvalidParameters(m.into()))?;
    let mut file = open(path, true)?;
    let size = size_of(&mut file, path)?;
    let needed = disk_bytes_for(header.slots);
    if size < needed {
        return Err(AdminError::TooSmall {
            path: path.to_path_buf(),
            size,
            needed,
        });
    }
    let mut block = AlignedBlock::ZERO;
    read_block(&file, path, 0, &mut block)?;
    if !force {
        let what = match decode_header(&block.0) {
            Err(BlockError::NeverWritten) => None,
            Ok(h) => Some(format!(
                "already a voting disk of cluster {} with {} slots",
                h.cluster, h.slots
            )),
            Err(BlockError::NewerVersion { found, .. }) => Some(format!(
                "already a voting disk of a newer format (version {found})"
            )),
            Err(BlockError::BadMagic) => {
                Some("block 0 holds data that is not a voting-disk header".into())
            }
            Err(e) => Some(format!(
                "block 0 looks like a damaged voting-disk header ({e})"
            )),
        };
        if let Some(what) = what {
            return Err(AdminError::WouldOverwrite {
                path: path.to_path_buf(),
                what,
            });
        }
    }
    let write = |offset: u64, b: &AlignedBlock| {
        file.write_all_at(&b.0, offset)
            .map_err(|source| AdminError::Write {
                path: path.to_path_buf(),
                offset,
                source,
            })
    };
    // Header last: a format interrupted half-way leaves no valid header behind.
    write(0, &AlignedBlock::ZERO)?;
    for slot in 0..header.slots {
        write(slot_offset(slot), &AlignedBlock::ZERO)?;
    }
    encode_header(header, &mut block.0);
    write(0, &block)?;
    file.sync_all().map_err(|source| AdminError::Write {
        path: path.to_path_buf(),
        offset: 0,
        source,
    })
}

/// Everything on one voting disk.
#[derive(Debug)]
pub struct DiskDump {
    /// Device or file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// The header.
    pub header: Header,
    /// Verdict for each slot block, by slot index.
    pub slots: Vec<Result<SlotBlock, BlockError>>,
}

/// Reads the header of one disk (block 0 only); with `expected`, a disk of another cluster is
/// an error.
pub fn read_header(path: &Path, expected: Option<ClusterId>) -> Result<Header, AdminError> {
    let file = open(path, false)?;
    let mut block = AlignedBlock::ZERO;
    read_block(&file, path, 0, &mut block)?;
    let header = header_or_error(path, &block)?;
    match expected {
        Some(expected) if header.cluster != expected => Err(AdminError::ForeignCluster {
            path: path.to_path_buf(),
            found: header.cluster,
            expected,
        }),
        _ => Ok(header),
    }
}

/// The header a majority of `disks` hold (with `expected`, of that cluster only).
pub fn majority_header(disks: &[PathBuf], expected: Option<ClusterId>) -> Result<Header, String> {
    let mut seen: Vec<(Header, usize)> = Vec::new();
    let mut errors = Vec::new();
    for d in disks {
        match read_header(d, expected) {
            Ok(h) => match seen.iter_mut().find(|(s, _)| *s == h) {
                Some((_, n)) => *n += 1,
                None => seen.push((h, 1)),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    seen.into_iter()
        .find(|(_, n)| *n > disks.len() / 2)
        .map(|(h, _)| h)
        .ok_or_else(|| {
            format!(
                "no majority of the {} voting disks holds one header ({})",
                disks.len(),
                if errors.is_empty() {
                    "their headers differ".to_string()
                } else {
                    errors.join("; ")
                }
            )
        })
}

/// Reads the header and every slot block of one disk. With `expected`, a disk of another
/// cluster is an error.
pub fn read_disk(path: &Path, expected: Option<ClusterId>) -> Result<DiskDump, AdminError> {
    let mut file = open(path, false)?;
    let size = size_of(&mut file, path)?;
    if size < BLOCK_SIZE as u64 {
        return Err(AdminError::TooSmall {
            path: path.to_path_buf(),
            size,
            needed: BLOCK_SIZE as u64,
        });
    }
    let mut block = AlignedBlock::ZERO;
    read_block(&file, path, 0, &mut block)?;
    let header = header_or_error(path, &block)?;
    if let Some(expected) = expected {
        if header.cluster != expected {
            return Err(AdminError::ForeignCluster {
                path: path.to_path_buf(),
                found: header.cluster,
                expected,
            });
        }
    }
    if size < header.disk_bytes() {
        return Err(AdminError::TooSmall {
            path: path.to_path_buf(),
            size,
            needed: header.disk_bytes(),
        });
    }
    let mut slots = Vec::with_capacity(usize::from(header.slots));
    for slot in 0..header.slots {
        read_block(&file, path, slot_offset(slot), &mut block)?;
        slots.push(decode_slot(&block.0, &header.cluster, slot));
    }
    Ok(DiskDump {
        path: path.to_path_buf(),
        size,
        header,
        slots,
    })
}
