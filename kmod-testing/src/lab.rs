//! A lab: one test's run directory and the guests and targets started in it.

use crate::error::{IoContext, Result};
use crate::guest::{Guest, GuestSpec};
use crate::kernel::{Kernel, KernelLine};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// One test's workspace: `target/vm-runs/<name>-<pid>/`, one sub-directory per guest (console
/// log, QEMU command line, exchanged files). Kept after the test (the test command clears
/// `target/vm-runs` when it starts); when the test thread panics, the tail of every console of
/// its guests is printed (see [`Lab::new`]).
///
/// Start guests and targets from a thread that outlives them (the test's own): every process
/// the harness starts gets SIGKILL when the *thread* that started it ends (PR_SET_PDEATHSIG
/// follows the parent thread, not the process), so a storage guest booted in a scoped thread
/// dies as soon as that thread returns. Waiting on guests from other threads is fine.
pub struct Lab {
    dir: PathBuf,
    kernel: Kernel,
}

impl Lab {
    /// Creates the run directory, with guests on the stable kernel by default (see
    /// [`Lab::on`]); fails with an instruction when the kernel cache is missing. Installs (once
    /// per process) a panic hook that prints the consoles of the guests booted by the panicking
    /// thread, so a failing test shows what its kernels said.
    pub fn new(name: &str) -> Result<Lab> {
        Lab::on(name, KernelLine::Stable)
    }

    /// [`Lab::new`] with guests on kernel `line` by default, unless the run forces one with
    /// `FENCED_KERNEL` ([`KernelLine::forced`]). A guest pinned with [`GuestSpec::kernel`]
    /// boots its own kernel either way.
    pub fn on(name: &str, line: KernelLine) -> Result<Lab> {
        install_console_panic_hook();
        let kernel = Kernel::locate(KernelLine::forced().unwrap_or(line))?;
        let dir = crate::repo_root()
            .join("target/vm-runs")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Lab { dir, kernel })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The guests' kernel (unless a guest pins its own).
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The kernel guest `spec` boots.
    fn kernel_of(&self, spec: &GuestSpec) -> Result<Kernel> {
        match spec.kernel {
            Some(line) if line != self.kernel.line => Kernel::locate(line),
            _ => Ok(self.kernel.clone()),
        }
    }

    /// Boots one guest (see [`Lab::boot_all`]).
    pub fn boot(&self, spec: GuestSpec) -> Result<Guest> {
        let mut v = self.boot_all(vec![spec])?;
        Ok(v.remove(0))
    }

    /// Starts all guests at once, then waits for each to answer. A guest that does not boot is
    /// an infrastructure failure: it is retried once, and the retry is logged on stderr.
    pub fn boot_all(&self, specs: Vec<GuestSpec>) -> Result<Vec<Guest>> {
        let mut started = Vec::new();
        let mut kernels = Vec::new();
        for spec in &specs {
            let kernel = self.kernel_of(spec)?;
            started.push(Guest::start(&kernel, spec, &self.dir.join(&spec.name)));
            kernels.push(kernel);
        }
        let mut guests = Vec::new();
        for ((spec, first), kernel) in specs.iter().zip(started).zip(&kernels) {
            let first = first.and_then(|mut g| g.wait_ready(spec.boot_deadline()).map(|()| g));
            let guest = match first {
                Ok(g) => g,
                Err(e) => {
                    eprintln!(
                        "harness: infrastructure retry: {e}; booting {} once more",
                        spec.name
                    );
                    let failed = self.dir.join(format!("{}.failed-boot", spec.name));
                    let _ = std::fs::rename(self.dir.join(&spec.name), &failed);
                    let mut g = Guest::start(kernel, spec, &self.dir.join(&spec.name))?;
                    g.wait_ready(spec.boot_deadline())?;
                    g
                }
            };
            guests.push(guest);
        }
        Ok(guests)
    }

    /// A sparse disk image of `size_mb` MiB in the run directory, for [`GuestSpec::shared_disk`].
    pub fn shared_disk(&self, name: &str, size_mb: u64) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.img"));
        let f = std::fs::File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        f.set_len(size_mb << 20)
            .ctx(|| format!("sizing {}", path.display()))?;
        Ok(path)
    }

    /// A port for a guest LAN ([`crate::GuestSpec::lan`]): a free port (UDP, where the LAN's
    /// multicast socket lives), so that labs running at the same time get LANs of their own.
    pub fn lan_port() -> Result<u16> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ctx(|| "binding a free UDP port".into())?;
        Ok(s.local_addr()
            .ctx(|| "reading a free UDP port".into())?
            .port())
    }

    /// A TCP port on 127.0.0.1 that is free now.
    pub fn free_port() -> Result<u16> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ctx(|| "binding a free port".into())?;
        Ok(l.local_addr().ctx(|| "reading a free port".into())?.port())
    }
}

thread_local! {
    static CONSOLES: RefCell<Vec<(String, PathBuf)>> = const { RefCell::new(Vec::new()) };
}

/// Remembers a guest's console log for the panic hook of the current thread.
pub(crate) fn register_console(guest: &str, log: PathBuf) {
    CONSOLES.with(|c| c.borrow_mut().push((guest.to_string(), log)));
}

fn install_console_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let consoles = CONSOLES.with(|c| c.borrow().clone());
            for (guest, log) in consoles {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!(
                    "---- console of guest {guest} (last {} lines; whole log: {}) ----\n{}\n---- end of {guest}'s console ----",
                    tail.len(),
                    log.display(),
                    tail.join("\n"),
                );
            }
        }));
    });
}
