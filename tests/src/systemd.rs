//! `fenced run` as a systemd service, in guests booted with systemd as PID 1
//! ([`kmod_testing::GuestSpec::systemd`], [`crate::cluster::ClusterSpec::systemd`]).

use kmod_testing::{project_binary, repo_root, Error, Guest, Result};
use std::collections::BTreeMap;

/// The shipped unit, as operators install it.
pub const UNIT_FILE: &str = "fenced/systemd/fenced.service";

/// Where the shipped unit runs the binary.
const SHIPPED_BINARY: &str = "/usr/sbin/fenced";

/// The drop-in that makes the shipped unit run the built binary: it replaces `ExecStart=` by
/// the shipped command line with only the binary's path changed (same subcommand, same
/// `--config`, which is where [`crate::cluster::Cluster::start`] writes each node's file).
pub fn drop_in() -> Result<String> {
    let unit = std::fs::read_to_string(repo_root().join(UNIT_FILE))
        .map_err(|e| Error::Setup(format!("reading {UNIT_FILE}: {e}")))?;
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .filter(|e| e.starts_with(SHIPPED_BINARY))
        .ok_or_else(|| {
            Error::Setup(format!(
                "{UNIT_FILE} has no ExecStart={SHIPPED_BINARY} ...; update the test"
            ))
        })?;
    let built = project_binary("fenced");
    let exec = exec.replacen(SHIPPED_BINARY, &built.display().to_string(), 1);
    Ok(format!(
        "# The test's only change: the built binary.\n[Service]\nExecStart=\nExecStart={exec}\n"
    ))
}

/// Installs the shipped unit file in the guest's /etc/systemd/system, the drop-in
/// ([`drop_in`]) beside it in `fenced.service.d/`, and reloads systemd.
pub fn install_fenced_unit(g: &Guest) -> Result<()> {
    g.run_ok(&format!(
        "install -m 0644 {unit} /etc/systemd/system/fenced.service\n\
         mkdir -p /etc/systemd/system/fenced.service.d\n\
         cat > /etc/systemd/system/fenced.service.d/test-binary.conf <<'EOF'\n{drop_in}EOF\n\
         systemctl daemon-reload",
        unit = repo_root().join(UNIT_FILE).display(),
        drop_in = drop_in()?,
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
    let out = g.run_ok(&format!(
        "journalctl --no-pager -q -u {unit} -o json --output-fields=MESSAGE"
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
