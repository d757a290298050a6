//! `fenced watchdog test`: arm a watchdog, stop feeding it, and say when the reset is due.
//!
//! The operator command asks for confirmation first; this module does the work.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::device::{ArmOptions, Watchdog, WatchdogDevice};
use crate::discover::{Roots, WatchdogInfo};
use crate::flags::BootStatus;
use crate::Error;

/// When a watchdog that is no longer fed is expected to reset the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResetDeadline {
    /// The device node.
    pub device: PathBuf,
    /// The timeout the driver set, seconds.
    pub timeout_s: u32,
    /// The pretimeout (a panic, with the `panic` governor) this long before the reset.
    pub pretimeout_s: Option<u32>,
    /// What WDIOC_GETTIMELEFT said right after the last feed, when supported.
    pub time_left_s: Option<u32>,
    /// Seconds from `armed_at_unix_s` until the reset is due.
    pub expected_reset_in_s: u32,
    /// Wall-clock time of the last feed, seconds since the epoch (for the operator only; all
    /// waiting uses the monotonic clock).
    pub armed_at_unix_s: u64,
    /// Whether nowayout is set.
    pub nowayout: bool,
    /// The boot status the driver reported when armed.
    pub bootstatus: Option<BootStatus>,
}

impl ResetDeadline {
    /// Computes the deadline of `dev`, fed last just now: GETTIMELEFT when the driver has it,
    /// else the timeout.
    pub fn after_last_feed(dev: &dyn WatchdogDevice, armed_at_unix_s: u64) -> Self {
        let time_left_s = dev.time_left().ok();
        ResetDeadline {
            device: dev.device().to_owned(),
            timeout_s: dev.timeout(),
            pretimeout_s: None,
            time_left_s,
            expected_reset_in_s: time_left_s.unwrap_or(dev.timeout()),
            armed_at_unix_s,
            nowayout: false,
            bootstatus: None,
        }
    }

    /// Wall-clock time the reset is due, seconds since the epoch.
    pub fn expected_reset_at_unix_s(&self) -> u64 {
        self.armed_at_unix_s + u64::from(self.expected_reset_in_s)
    }
}

impl fmt::Display for ResetDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} armed with a {} s timeout and no longer fed.",
            self.device.display(),
            self.timeout_s
        )?;
        writeln!(
            f,
            "Expected reset in {} s (at unix time {}).",
            self.expected_reset_in_s,
            self.expected_reset_at_unix_s()
        )?;
        if let Some(pre) = self.pretimeout_s {
            writeln!(
                f,
                "Pretimeout: the kernel is interrupted {pre} s before the reset (a panic with the \
                 panic governor)."
            )?;
        }
        if self.nowayout {
            writeln!(f, "nowayout is set: this cannot be cancelled.")?;
        }
        write!(
            f,
            "If this machine is still running well after that, the watchdog does NOT protect it."
        )
    }
}

/// A running reset test: the armed watchdog, no longer fed, and its deadline.
#[derive(Debug)]
pub struct ResetTest {
    /// The deadline, for printing.
    pub deadline: ResetDeadline,
    watchdog: Watchdog,
    armed_at: Instant,
}

impl ResetTest {
    /// The armed watchdog (e.g. to cancel the test with [`Watchdog::disarm`]).
    pub fn into_watchdog(self) -> Watchdog {
        self.watchdog
    }

    /// Waits, on the monotonic clock, until the deadline plus `slack`. The machine should reset
    /// before that; if this returns, it did not, and the error says so.
    pub fn wait_for_reset(self, slack: Duration) -> Error {
        let due = self.armed_at
            + Duration::from_secs(u64::from(self.deadline.expected_reset_in_s))
            + slack;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        Error::NoResetObserved {
            device: self.deadline.device.clone(),
            waited_s: self.armed_at.elapsed().as_secs(),
        }
    }
}

/// Arms `info` with `timeout` seconds (and nowayout when asked), feeds it once, and from then on
/// never feeds it again. Returns the deadline; keep the [`ResetTest`] alive (or drop it: the
/// watchdog keeps running either way) and wait for the reset.
pub fn test_watchdog(
    info: &WatchdogInfo,
    timeout: u32,
    nowayout: bool,
    roots: &Roots,
) -> Result<ResetTest, Error> {
    let watchdog = Watchdog::arm(
        info,
        &ArmOptions {
            timeout,
            pretimeout: None,
            nowayout,
        },
        roots,
    )?;
    let armed_at = Instant::now();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut deadline = ResetDeadline::after_last_feed(&watchdog, unix);
    deadline.pretimeout_s = watchdog.pretimeout();
    deadline.nowayout = watchdog.nowayout();
    deadline.bootstatus = watchdog.bootstatus();
    tracing::warn!(device = %deadline.device.display(), reset_in_s = deadline.expected_reset_in_s, "watchdog reset test: no longer feeding");
    Ok(ResetTest {
        deadline,
        watchdog,
        armed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::FakeWatchdog;

    #[test]
    fn the_deadline_is_time_left_when_the_driver_reports_it() {
        let fake = FakeWatchdog::new(8, Some(7));
        let d = ResetDeadline::after_last_feed(&fake, 1_000);
        assert_eq!(d.expected_reset_in_s, 7);
        assert_eq!(d.expected_reset_at_unix_s(), 1_007);
    }

    #[test]
    fn the_deadline_is_the_timeout_when_the_driver_cannot_report_time_left() {
        let fake = FakeWatchdog::new(5, None);
        let d = ResetDeadline::after_last_feed(&fake, 1_000);
        assert_eq!(d.time_left_s, None);
        assert_eq!(d.expected_reset_in_s, 5);
        let text = d.to_string();
        assert!(
            text.contains("Expected reset in 5 s (at unix time 1005)"),
            "{text}"
        );
        assert!(text.contains("does NOT protect"), "{text}");
    }

    #[test]
    fn the_deadline_serialises_for_json_output() {
        let d = ResetDeadline::after_last_feed(&FakeWatchdog::new(5, Some(5)), 10);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["expected_reset_in_s"], 5);
        assert_eq!(v["time_left_s"], 5);
    }
}
