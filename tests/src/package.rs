//! The Debian package, as `tests/package` (the README's one documented command) builds it and
//! as an operator installs it: `apt install ./fenced_*.deb` in a systemd guest.

use kmod_testing::{repo_root, Error, Guest, Result};
use std::path::PathBuf;
use std::process::Command;

/// Builds the package with `tests/package`, Debian revision `revision` (`1` is what the command
/// builds by default; a higher one is a newer build of the same version, an upgrade for dpkg),
/// into a directory of its own under the target directory, and returns the `.deb`. Quick once
/// `tests/run` has built the package: the release binaries and cargo-deb are there already.
pub fn build(revision: u32) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join(format!("debian/test-revision-{revision}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Setup(format!("creating {}: {e}", dir.display())))?;
    let out = Command::new(repo_root().join("tests/package"))
        .arg("--deb-revision")
        .arg(revision.to_string())
        .arg("--output")
        .arg(&dir)
        .output()
        .map_err(|e| Error::Setup(format!("running tests/package: {e}")))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "tests/package --deb-revision {revision} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let deb = std::fs::read_dir(&dir)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("fenced_") && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            Error::Setup(format!(
                "tests/package left no fenced_*.deb in {}",
                dir.display()
            ))
        })?;
    Ok(deb)
}

/// Installs (or upgrades to) `deb` in the guest with `apt-get install ./...`, dependencies
/// resolved by apt from the guest's package database, and returns apt's output. The man-db
/// trigger is turned off first (its index rebuild takes minutes under TCG; `man` finds a page by
/// its path without it). A systemd guest's unit path holds only /etc/systemd/system and the
/// harness's own units (kmod_testing::initramfs::SYSTEMD_UNITS), not /lib/systemd/system: a link
/// there to the installed unit stands in for it, so systemd runs the package's unit file as
/// installed, and as replaced by an upgrade.
pub fn install(g: &Guest, deb: &std::path::Path) -> Result<String> {
    g.run_ok(&format!(
        "rm -f /var/lib/man-db/auto-update\n\
         DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 {} 2>&1\n\
         ln -sf /lib/systemd/system/fenced.service /etc/systemd/system/fenced.service\n\
         systemctl daemon-reload",
        deb.display()
    ))
}

/// Upgrades the guest to `deb` with `dpkg -i`, as a configuration-management tool or an
/// operator with the file at hand does (no dependency changes: apt adds nothing here but
/// half a minute of reading the package lists under TCG), and returns dpkg's output; the
/// maintainer scripts run as with apt.
pub fn upgrade(g: &Guest, deb: &std::path::Path) -> Result<String> {
    g.run_ok(&upgrade_command(deb))
}

/// The shell command [`upgrade`] runs, for a test that runs it in a script of its own.
pub fn upgrade_command(deb: &std::path::Path) -> String {
    format!("dpkg -i {} 2>&1", deb.display())
}
