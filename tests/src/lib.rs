//! End-to-end scenarios on the VM harness ([`kmod_testing`]).
//!
//! Each scenario boots real guests, injects its fault, and returns what it observed; the tests in
//! `tests/` assert on those observations, and the `demo` binary narrates them. So the demo shows
//! exactly what the test suite proves.
#![deny(missing_docs)]

pub mod blocks;
pub mod campaign;
pub mod cluster;
pub mod multipath;
pub mod pacemaker;
pub mod package;
pub mod scenarios;
pub mod sg_persist;
pub mod sg_pr;
pub mod systemd;
pub mod vdisk;

/// Where a scenario tells what it is doing (the demo prints it; tests print it too, and the test
/// runner shows it when a test fails).
pub type Narrator<'a> = &'a mut dyn FnMut(&str);

/// The kernel-log timestamp (seconds since boot) of the first console line containing `text`,
/// as the guest's console prints it (`[   12.345678] ...`).
pub fn kernel_time(console: &str, text: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(text))?;
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    stamp.trim().parse().ok()
}
