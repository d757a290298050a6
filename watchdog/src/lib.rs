//! Find, arm and feed Linux watchdogs (`/dev/watchdogN`) for the fencing daemon.
//!
//! * [`discover`] reads `/sys/class/watchdog` (never opening a device: that would start it) and
//!   reports, per device, its identity, driver, timeouts, nowayout, state, boot status and the
//!   processes holding it. [`WatchdogTable`] is the human table, serde gives `--json`.
//! * [`choose`] / [`select`] apply the [`Policy`]: hardware first; softdog only when allowed and
//!   no hardware watchdog exists (it is loaded through a [`ModuleLoader`]); or one explicit
//!   device.
//! * [`Watchdog::arm`] opens and configures the chosen device; [`WatchdogDevice::feed`] is one
//!   ioctl; [`Watchdog::disarm`] is the only way to stop it (magic close). Dropping a
//!   [`Watchdog`] leaves it running.
//! * [`test_watchdog`] arms a device and stops feeding it, for `fenced watchdog test`.
//!
//! The daemon's logic takes a [`WatchdogDevice`], so it can be tested with [`FakeWatchdog`].
//! All `unsafe` code is in the private `sys` module.
#![deny(missing_docs)]

mod device;
mod discover;
mod error;
mod flags;
mod holders;
mod policy;
mod reset_test;
mod sys;

pub use device::{ArmOptions, DisarmError, FakeWatchdog, Support, Watchdog, WatchdogDevice};
pub use discover::{
    classify, discover, read_watchdog, Kind, Roots, State, WatchdogInfo, WatchdogTable,
    SOFTDOG_IDENTITY,
};
pub use error::Error;
pub use flags::{BootStatus, LastReset, WatchdogFlags};
pub use holders::{find_holders, Holder, HolderScan};
pub use nix::errno::Errno;
pub use policy::{choose, select, Choice, Decision, Modprobe, ModuleLoader, Policy};
pub use reset_test::{test_watchdog, ResetDeadline, ResetTest};
