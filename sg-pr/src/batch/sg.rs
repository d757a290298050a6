//! [`SgQueue`]: the sg driver's asynchronous interface as a [`Queue`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Completion, Data, Queue};
use crate::sys::{self, SgAsyncFd};
use crate::transport::{CommandOutcome, HostStatus, ScsiStatus};

/// The character major of the sg driver (`/dev/sgN`).
const SG_MAJOR: u32 = 21;

/// Devices reached through their `/dev/sgN` nodes, each its own fd, with every device's command
/// in flight at once, one command per device at a time. A command the caller stopped waiting
/// for keeps its buffers here until its completion is read on a later [`Queue::reap`] (until
/// then the device refuses new commands) or the queue is dropped.
pub struct SgQueue {
    devices: Vec<Device>,
    pollfds: Vec<libc::pollfd>,
    /// Which device each entry of `pollfds` is.
    polled: Vec<usize>,
}

struct Device {
    name: String,
    /// The open sg node, or why it could not be opened.
    fd: Result<SgAsyncFd, (io::ErrorKind, String)>,
}

impl std::fmt::Debug for SgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SgQueue")
            .field(
                "devices",
                &self.devices.iter().map(|d| &d.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The sg node (`/dev/sgN`) of a SCSI device node: itself when it is one, else the generic
/// device sysfs lists for the disk (`/sys/dev/block/M:m/device/scsi_generic/`). The sg driver
/// must be loaded (`modprobe sg`).
pub fn sg_node(path: &Path) -> io::Result<PathBuf> {
    sg_node_in(Path::new("/sys"), path)
}

fn sg_node_in(sysfs: &Path, path: &Path) -> io::Result<PathBuf> {
    let meta = std::fs::metadata(path)?;
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    if meta.file_type().is_char_device() && major == SG_MAJOR {
        return Ok(path.to_path_buf());
    }
    if !meta.file_type().is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a SCSI disk nor an sg node",
        ));
    }
    let dir = sysfs.join(format!("dev/block/{major}:{minor}/device/scsi_generic"));
    let entry = std::fs::read_dir(&dir)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "no sg node for this disk ({}: {e}); load the sg driver (modprobe sg)",
                    dir.display()
                ),
            )
        })?
        .flatten()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no sg node for this disk"))?;
    Ok(Path::new("/dev").join(entry.file_name()))
}

fn open_sg(path: &Path) -> Result<SgAsyncFd, (io::ErrorKind, String)> {
    sg_node(path)
        .and_then(|node| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(node)
        })
        .map(|f| SgAsyncFd::new(OwnedFd::from(f)))
        .map_err(|e| (e.kind(), e.to_string()))
}

impl SgQueue {
    /// An empty queue.
    pub fn new() -> SgQueue {
        SgQueue {
            devices: Vec::new(),
            pollfds: Vec::new(),
            polled: Vec::new(),
        }
    }

    /// Adds a device (a SCSI disk node or its sg node) and returns its index. A device that
    /// cannot be opened is still added: its commands fail with the reason.
    pub fn add(&mut self, path: &Path) -> usize {
        self.devices.push(Device {
            name: path.display().to_string(),
            fd: open_sg(path),
        });
        self.devices.len() - 1
    }

    /// Opens device `i` again from `path` when it could not be opened or was closed after a
    /// failure (a path that returned, the sg driver loaded since).
    pub fn reopen_if_closed(&mut self, i: usize, path: &Path) {
        if self.devices.get(i).is_some_and(|d| d.fd.is_err()) {
            self.devices[i].fd = open_sg(path);
        }
    }

    /// Closes device `i`'s fd (it is opened again by [`SgQueue::reopen_if_closed`]); what is
    /// still in flight on it is orphaned.
    pub fn close(&mut self, i: usize) {
        if let Some(d) = self.devices.get_mut(i) {
            d.fd = Err((io::ErrorKind::NotConnected, "closed while unused".into()));
        }
    }

    /// Whether device `i` opened (its commands can be sent).
    pub fn is_open(&self, i: usize) -> bool {
        self.devices.get(i).is_some_and(|d| d.fd.is_ok())
    }

    /// The number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the queue has no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Commands submitted whose completion was not read yet (including abandoned ones).
    pub fn in_flight(&self) -> usize {
        self.devices
            .iter()
            .filter_map(|d| d.fd.as_ref().ok())
            .map(SgAsyncFd::in_flight)
            .sum()
    }

    /// Drains the completions ready on device `i` into `done`.
    fn drain(&mut self, i: usize, done: &mut Vec<Completion>) -> io::Result<()> {
        let Ok(fd) = &mut self.devices[i].fd else {
            return Ok(());
        };
        while let Some(r) = fd.receive()? {
            let c = r.completion;
            done.push(Completion {
                tag: c.tag,
                result: Ok(CommandOutcome {
                    status: ScsiStatus(c.status),
                    host_status: HostStatus(c.host_status),
                    driver_status: c.driver_status,
                    sense: r.sense,
                    resid: usize::try_from(c.resid).unwrap_or(0),
                    duration: Some(Duration::from_millis(u64::from(c.duration_ms))),
                }),
                data: r.data,
            });
        }
        Ok(())
    }

    /// Device `i` failed (detached, or its fd errs): closes it, which orphans its commands in
    /// flight (the kernel then copies nothing into their buffers, freed after the close), and
    /// fails them in `done` at once rather than at their deadlines.
    fn fail(&mut self, i: usize, error: &io::Error, done: &mut Vec<Completion>) {
        let dev = &mut self.devices[i];
        tracing::warn!(device = %dev.name, %error, "sg node failed: closing it");
        let closed = std::mem::replace(&mut dev.fd, Err((error.kind(), error.to_string())));
        if let Ok(fd) = closed {
            for tag in fd.tags() {
                done.push(Completion {
                    tag,
                    result: Err(io::Error::new(error.kind(), error.to_string())),
                    data: Vec::new(),
                });
            }
        }
    }
}

impl Default for SgQueue {
    fn default() -> Self {
        SgQueue::new()
    }
}

impl Queue for SgQueue {
    fn name(&self, device: usize) -> &str {
        self.devices.get(device).map_or("?", |d| d.name.as_str())
    }

    fn submit(
        &mut self,
        device: usize,
        tag: u64,
        cdb: &[u8],
        data: Data,
        timeout: Duration,
    ) -> io::Result<()> {
        let dev = self
            .devices
            .get_mut(device)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such device"))?;
        let fd = dev
            .fd
            .as_mut()
            .map_err(|(kind, msg)| io::Error::new(*kind, msg.clone()))?;
        let (direction, buf) = match data {
            Data::None => (sys::SG_DXFER_NONE, Vec::new()),
            Data::In(len) => (sys::SG_DXFER_FROM_DEV, vec![0u8; len]),
            Data::Out(buf) => (sys::SG_DXFER_TO_DEV, buf),
        };
        let sent = (|| {
            // Completions of commands abandoned in an earlier run are read (and dropped) here:
            // nothing else waits for them.
            while fd.in_flight() > 0 && fd.receive()?.is_some() {}
            // One command per path at a time: a command still held by the kernel past its
            // deadline (a hung path, the SCSI error handler at work) is not joined by more,
            // which would only lengthen the error handling that blocks the whole SCSI host.
            if fd.in_flight() > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "an earlier command on this path has not completed yet (a hung path)",
                ));
            }
            fd.submit(tag, cdb, direction, buf, timeout)
        })();
        if let Err(e) = &sent {
            if e.kind() != io::ErrorKind::ResourceBusy {
                // A device that went away (ENODEV) is closed, so that the next run opens the
                // path's node again: a disk that came back under the same name is a new
                // device.
                tracing::debug!(device = %dev.name, error = %e, "closing the sg node after an error");
                dev.fd = Err((e.kind(), e.to_string()));
            }
        }
        sent
    }

    fn reap(&mut self, until: Instant, done: &mut Vec<Completion>) -> io::Result<()> {
        self.pollfds.clear();
        self.polled.clear();
        for (i, d) in self.devices.iter().enumerate() {
            if let Ok(fd) = &d.fd {
                if fd.in_flight() > 0 {
                    self.pollfds.push(libc::pollfd {
                        fd: fd.as_fd().as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    self.polled.push(i);
                }
            }
        }
        let wait = until.saturating_duration_since(Instant::now());
        if self.pollfds.is_empty() {
            std::thread::sleep(wait);
            return Ok(());
        }
        // Round up so that a wait of 0.4 ms does not spin.
        let wait = wait + Duration::from_micros(999);
        if sys::poll_readable(&mut self.pollfds, wait)? == 0 {
            return Ok(());
        }
        let ready: Vec<(usize, i16)> = self
            .pollfds
            .iter()
            .zip(&self.polled)
            .filter(|(p, _)| p.revents != 0)
            .map(|(p, &i)| (i, p.revents))
            .collect();
        for (i, revents) in ready {
            let drained = self.drain(i, done);
            let error = match drained {
                Err(e) => Some(e),
                Ok(()) if revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 => {
                    Some(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the device went away (sg node hung up)",
                    ))
                }
                Ok(()) => None,
            };
            if let Some(e) = error {
                self.fail(i, &e, done);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sg_node_is_found_through_the_disks_sysfs_entry() {
        // /dev/null is a char device of another major: refused.
        assert!(sg_node(Path::new("/dev/null")).is_err());
        assert!(sg_node(Path::new("/dev/does-not-exist")).is_err());
    }

    #[test]
    fn a_device_that_cannot_be_opened_fails_its_commands_with_the_reason() {
        let mut q = SgQueue::new();
        let i = q.add(Path::new("/dev/does-not-exist-sgpr"));
        assert!(!q.is_open(i));
        let e = q
            .submit(i, 1, &[0; 6], Data::None, Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(q.name(i), "/dev/does-not-exist-sgpr");
        let mut done = Vec::new();
        let t = Instant::now();
        q.reap(t, &mut done).unwrap();
        assert!(done.is_empty());
    }
}
