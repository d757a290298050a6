//! QEMU harness for the fencing stack: boots real Linux kernels (a pinned Debian 6.1 kernel, or
//! the newest Debian builds: [`KernelLine`], chosen per lab and per guest) under
//! QEMU with real SCSI targets and watchdogs, and lets a test drive the guests step by step.
//!
//! What a test gets:
//! - [`Lab`]: a run directory plus everything started in it; every process is killed by its own
//!   pid when the lab (or the test) ends, also on panic, and QEMU dies with the test process
//!   (`PR_SET_PDEATHSIG`) if the test runner kills it.
//! - [`Guest`]: one booted kernel. The host's filesystem is shared read-only into the guest (9p)
//!   under a writable tmpfs overlay, so a command in the guest runs the project's freshly built
//!   binaries and the host's tools. [`Guest::run`] returns exit code, stdout and stderr within a
//!   deadline; the serial console is kept in a log file printed when a test fails.
//! - Topologies: LIO tcm_loop with K nexuses on one LUN ([`tcm_loop`]), iSCSI LUNs shared by
//!   several guests from LIO in a storage guest or tgtd on the host ([`iscsi`]), with LIO also
//!   through several target ports per LUN (multipath: [`iscsi::Target::start_with_paths`],
//!   [`Guest::lun_paths`]), shared voting-disk images ([`Lab::shared_disk`]), an i6300esb in
//!   every guest and softdog loadable.
//! - Every guest's QEMU monitor ([`Guest::qmp`], [`Guest::hmp`]).
//! - Faults ([`faults`]): the `freeze` kernel module (stop_machine), pausing a guest or a target
//!   with SIGSTOP, dm-delay and dm-flakey inside a guest, SCSI paths taken offline, paths
//!   removed and added at runtime ([`Guest::detach_path`], [`Guest::attach_path`]), the
//!   target losing or keeping its PR state over a restart
//!   ([`iscsi::Target::restart_dropping_pr_state`]); guest resets are seen and timed
//!   ([`Guest::wait_exit`]), because QEMU runs with `-no-reboot`.
//!
//! Not for: production use. Nothing here is shipped; it exists so that every kernel-facing
//! behaviour of the product is proven inside a kernel.
#![deny(missing_docs)]

mod cpio;
mod error;
pub mod faults;
mod guest;
mod initramfs;
pub mod iscsi;
mod kernel;
mod lab;
pub mod nvmet;
mod process;
mod qmp;
pub mod tcm_loop;

pub use error::{Error, Result};
pub use guest::{lan_mac, Guest, GuestSpec, Output, Pending, ScsiPath};
pub use initramfs::{SYSTEMD_TARGET, SYSTEMD_UNITS};
pub use kernel::{Kernel, KernelLine};
pub use lab::Lab;

use std::path::PathBuf;

/// The repository's root (the directory holding the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of a binary built by this workspace (`sg-pr`, `fenced`, ...) in the same profile as the
/// running test, as the guest sees it (the host filesystem is mounted at the same paths).
///
/// Panics with an instruction when the binary has not been built: tests call it at set-up.
pub fn project_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary> or target/<profile>/<binary>
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (tests/run does)",
        path.display()
    );
    path
}
