//! `fenced run` as a systemd service, in guests booted with systemd as PID 1
//! ([`kmod_testing::GuestSpec::systemd`], [`crate::cluster::ClusterSpec::systemd`]).

use kmod_testing::{project_binary, repo_root, Error, Guest, Result};
use std::collections::BTreeMap;

/// The shipped unit, as operators install it.
pub const UNIT_FILE: &str = "fenced/systemd/fenced.service";

/// Where the shipped unit runs the binary.
const SHIPPED_BINARY: &str = "/usr/sbin/fenced";

/// Installs the shipped unit file, unchanged, in the guest's /etc/systemd/system, puts the built
/// binary at the path its `ExecStart=` names (a bind mount: nothing is copied into the guest's
/// memory), and reloads systemd. (A drop-in pointing `ExecStart=` at the build directory would
/// not do: the unit's PrivateTmp=yes hides a checkout under /tmp, where CI may clone.)
pub fn install_fenced_unit(g: &Guest) -> Result<()> {
    let unit = repo_root().join(UNIT_FILE);
    let text = std::fs::read_to_string(&unit)
        .map_err(|e| Error::Setup(format!("reading {UNIT_FILE}: {e}")))?;
    if !text
        .lines()
        .any(|l| l.starts_with(&format!("ExecStart={SHIPPED_BINARY} ")))
    {
        return Err(Error::Setup(format!(
            "{UNIT_FILE} has no ExecStart={SHIPPED_BINARY} ...; update the test"
        )));
    }
    g.run_ok(&format!(
        "install -m 0644 {unit} /etc/systemd/system/fenced.service\n\
         touch {SHIPPED_BINARY} && mount --bind {built} {SHIPPED_BINARY}\n\
         systemctl daemon-reload",
        unit = unit.display(),
        built = project_binary("fenced").display(),
    ))?;
    Ok(())
}

/// `systemctl show -p ...` of `unit`: property → value.
pub fn show(g: &Guest, unit: &str, props: &[&str]) -> Result<BTreeMap<String, String>> {
    let args: String = props.iter().map(|p| format!(" -p {p}")).collect();
    let out = g.run_ok(&format!("systemctl show{args} {unit}"))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// A numeric `systemctl show` property (timestamps in µs of CLOCK_MONOTONIC, counters, pids).
pub fn show_u64(g: &Guest, unit: &str, prop: &str) -> Result<u64> {
    let v = show(g, unit, &[prop])?;
    v.get(prop)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Setup(format!("{}: {unit} {prop} is {:?}", g.name(), v.get(prop))))
}

/// The messages of `unit` in the journal at `priority` or more urgent (`journalctl -p`), one
/// per line, without the journal's own decoration.
pub fn journal(g: &Guest, unit: &str, priority: &str) -> Result<String> {
    g.run_ok(&format!(
        "journalctl --no-pager -q -u {unit} -p {priority} -o cat"
    ))
}

/// The messages of `unit` in the journal with their CLOCK_MONOTONIC time (µs), oldest first.
pub fn journal_timeline(g: &Guest, unit: &str) -> Result<Vec<(u64, String)>> {
    timeline(g, &format!("-u {unit}"))
}

/// Every message in the journal with its CLOCK_MONOTONIC time (µs), oldest first.
pub fn journal_timeline_all(g: &Guest) -> Result<Vec<(u64, String)>> {
    timeline(g, "")
}

/// `journalctl SELECTOR` as (CLOCK_MONOTONIC µs, message) pairs.
fn timeline(g: &Guest, selector: &str) -> Result<Vec<(u64, String)>> {
    let out = g.run_ok(&format!(
        "journalctl --no-pager -q {selector} -o json --output-fields=MESSAGE"
    ))?;
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let at = v["__MONOTONIC_TIMESTAMP"].as_str()?.parse().ok()?;
            Some((at, v["MESSAGE"].as_str()?.to_string()))
        })
        .collect())
}

/// `/proc/uptime` seconds (`12.34`) as µs. /proc/uptime is CLOCK_BOOTTIME, equal to
/// CLOCK_MONOTONIC (the clock of the journal and of systemd's `...TimestampMonotonic`) in a guest
/// that never suspends; 10 ms resolution. Panics on anything else.
pub fn uptime_secs_to_us(s: &str) -> u64 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<6}");
    whole.parse::<u64>().expect("/proc/uptime seconds") * 1_000_000
        + frac[..6].parse::<u64>().expect("/proc/uptime fraction")
}
