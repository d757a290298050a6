//! `WDIOF_*` bits: the driver's support options, its status and its boot status.

use std::fmt;

use serde::{Serialize, Serializer};

bitflags::bitflags! {
    /// `WDIOF_*` bits of `linux/watchdog.h`.
    ///
    /// The same bits describe what a driver supports (`watchdog_info.options`), its current
    /// status (WDIOC_GETSTATUS, sysfs `status`) and why the machine last booted
    /// (WDIOC_GETBOOTSTATUS, sysfs `bootstatus`). Unknown bits are kept.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct WatchdogFlags: u32 {
        /// Reset due to CPU overheat.
        const OVERHEAT = 0x0001;
        /// Fan failed.
        const FANFAULT = 0x0002;
        /// External relay 1.
        const EXTERN1 = 0x0004;
        /// External relay 2.
        const EXTERN2 = 0x0008;
        /// Power bad / power fault.
        const POWERUNDER = 0x0010;
        /// The card (the watchdog) previously reset the CPU.
        const CARDRESET = 0x0020;
        /// Power over voltage.
        const POWEROVER = 0x0040;
        /// The timeout can be set (WDIOC_SETTIMEOUT works).
        const SETTIMEOUT = 0x0080;
        /// Supports the magic close character 'V'.
        const MAGICCLOSE = 0x0100;
        /// Supports a pretimeout (WDIOC_SETPRETIMEOUT works).
        const PRETIMEOUT = 0x0200;
        /// The watchdog raises an alarm, it does not reboot.
        const ALARMONLY = 0x0400;
        /// WDIOC_KEEPALIVE works.
        const KEEPALIVEPING = 0x8000;
        const _ = !0;
    }
}

impl WatchdogFlags {
    /// Names of the known bits set, plus `0x..` for unknown bits.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.iter_names().map(|(n, _)| n.to_owned()).collect();
        let unknown = self.bits() & !Self::all_known().bits();
        if unknown != 0 {
            names.push(format!("{unknown:#x}"));
        }
        names
    }

    fn all_known() -> Self {
        Self::OVERHEAT
            | Self::FANFAULT
            | Self::EXTERN1
            | Self::EXTERN2
            | Self::POWERUNDER
            | Self::CARDRESET
            | Self::POWEROVER
            | Self::SETTIMEOUT
            | Self::MAGICCLOSE
            | Self::PRETIMEOUT
            | Self::ALARMONLY
            | Self::KEEPALIVEPING
    }
}

impl fmt::Display for WatchdogFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.names().join("|"))
    }
}

impl Serialize for WatchdogFlags {
    /// As `{"raw": 32, "names": ["CARDRESET"]}`, so JSON readers need no bit table.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("WatchdogFlags", 2)?;
        s.serialize_field("raw", &self.bits())?;
        s.serialize_field("names", &self.names())?;
        s.end()
    }
}

/// Whether the last reset was caused by the watchdog, as far as the driver tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LastReset {
    /// The driver reports WDIOF_CARDRESET: the watchdog reset the machine.
    Watchdog,
    /// The driver can report a watchdog reset (it lists CARDRESET among its options) and did not.
    NotWatchdog,
    /// The driver does not say (CARDRESET clear and its support options unknown or without
    /// CARDRESET). Many drivers, softdog among them, never report it.
    Unknown,
}

impl fmt::Display for LastReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LastReset::Watchdog => "the watchdog reset this machine",
            LastReset::NotWatchdog => "not a watchdog reset",
            LastReset::Unknown => "unknown (driver does not report it)",
        })
    }
}

/// A decoded boot status (sysfs `bootstatus` or WDIOC_GETBOOTSTATUS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BootStatus {
    /// The bits as the driver reported them.
    pub flags: WatchdogFlags,
    /// Whether the last reset was the watchdog's.
    pub last_reset: LastReset,
}

impl BootStatus {
    /// Decodes `raw` boot status bits. `support` is the driver's WDIOC_GETSUPPORT options when
    /// known (sysfs does not export them): only a driver that lists CARDRESET among its options
    /// can say "not a watchdog reset".
    pub fn decode(raw: u32, support: Option<WatchdogFlags>) -> Self {
        let flags = WatchdogFlags::from_bits_retain(raw);
        let last_reset = if flags.contains(WatchdogFlags::CARDRESET) {
            LastReset::Watchdog
        } else if support.is_some_and(|s| s.contains(WatchdogFlags::CARDRESET)) {
            LastReset::NotWatchdog
        } else {
            LastReset::Unknown
        };
        BootStatus { flags, last_reset }
    }
}

impl fmt::Display for BootStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.flags, self.last_reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardreset_in_bootstatus_means_the_watchdog_reset_the_machine() {
        let b = BootStatus::decode(0x20, None);
        assert_eq!(b.last_reset, LastReset::Watchdog);
        assert_eq!(b.flags.names(), vec!["CARDRESET"]);
    }

    #[test]
    fn clear_bootstatus_is_not_a_watchdog_reset_only_if_the_driver_can_report_one() {
        let can = WatchdogFlags::CARDRESET | WatchdogFlags::MAGICCLOSE;
        assert_eq!(
            BootStatus::decode(0, Some(can)).last_reset,
            LastReset::NotWatchdog
        );
        let cannot = WatchdogFlags::MAGICCLOSE | WatchdogFlags::SETTIMEOUT;
        assert_eq!(
            BootStatus::decode(0, Some(cannot)).last_reset,
            LastReset::Unknown
        );
        assert_eq!(BootStatus::decode(0, None).last_reset, LastReset::Unknown);
    }

    #[test]
    fn other_reset_causes_are_decoded_and_unknown_bits_kept() {
        let b = BootStatus::decode(0x0001 | 0x0010 | 0x1_0000, None);
        assert_eq!(b.flags.names(), vec!["OVERHEAT", "POWERUNDER", "0x10000"]);
        assert_eq!(b.last_reset, LastReset::Unknown);
        assert_eq!(b.flags.to_string(), "OVERHEAT|POWERUNDER|0x10000");
    }

    #[test]
    fn flags_serialise_with_raw_value_and_names() {
        let json = serde_json::to_string(&(WatchdogFlags::MAGICCLOSE | WatchdogFlags::SETTIMEOUT))
            .unwrap();
        assert_eq!(json, r#"{"raw":384,"names":["SETTIMEOUT","MAGICCLOSE"]}"#);
    }
}
