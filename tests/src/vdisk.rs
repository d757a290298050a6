//! Voting disks in guests: shared images, the `fenced disk` commands and the `vdisk-node`
//! driver, and parsing what they print (one JSON object per line).

use kmod_testing::{Error, Guest, GuestSpec, Lab, Output, Result};
use serde_json::Value;
use std::path::PathBuf;

/// The cluster the scenarios format their voting disks with.
pub const CLUSTER: &str = "5a1f0c3e-7d2b-4e8a-9c61-0123456789ab";
/// Another cluster, for foreign disks and blocks.
pub const OTHER_CLUSTER: &str = "0b7e9d44-1c2a-4f3b-8d5e-fedcba987654";

/// Path of the `fenced` binary as guests see it.
pub fn fenced() -> String {
    kmod_testing::project_binary("fenced").display().to_string()
}

/// Path of the test-only `vdisk-node` driver as guests see it.
pub fn node() -> String {
    kmod_testing::project_binary("vdisk-node")
        .display()
        .to_string()
}

/// `count` shared images `vote0..` of `size_mb` MiB.
pub fn images(lab: &Lab, count: usize, size_mb: u64) -> Result<Vec<PathBuf>> {
    (0..count)
        .map(|i| lab.shared_disk(&format!("vote{i}"), size_mb))
        .collect()
}

/// `spec` with every image attached as a shared virtio disk with serial `vote<i>`.
pub fn with_images(mut spec: GuestSpec, images: &[PathBuf]) -> GuestSpec {
    for (i, img) in images.iter().enumerate() {
        spec = spec.shared_disk(img, &format!("vote{i}"));
    }
    spec
}

/// The guest's /dev paths of the voting disks `vote0..vote<count-1>`, space separated.
///
/// One guest command for all of them. (`Guest::disk_by_serial` fails whenever the disk it looks
/// for is not the last virtio disk: its loop's exit status is the last `[ ] && echo`'s.)
pub fn devices(guest: &Guest, count: usize) -> Result<String> {
    let out = guest.run_ok(
        r#"for d in /sys/block/vd*; do echo "$(cat $d/serial 2>/dev/null) /dev/$(basename $d)"; done"#,
    )?;
    let mut devs = Vec::new();
    for i in 0..count {
        let serial = format!("vote{i}");
        let dev = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{serial} ")))
            .ok_or_else(|| {
                Error::Setup(format!(
                    "guest {}: no virtio disk with serial {serial}: {out}",
                    guest.name()
                ))
            })?;
        devs.push(dev.to_string());
    }
    Ok(devs.join(" "))
}

/// Formats `devs` (space separated) for [`CLUSTER`] with `slots` slots and default timeouts.
pub fn format(guest: &Guest, devs: &str, slots: u8) -> Result<String> {
    guest.run_ok(&format!(
        "{} disk format --cluster {CLUSTER} --slots {slots} {devs}",
        fenced()
    ))
}

/// Every line of `out` that parses as JSON.
pub fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The per-round lines (everything but the summary).
pub fn rounds(out: &str) -> Vec<Value> {
    json_lines(out)
        .into_iter()
        .filter(|v| v.get("summary").is_none())
        .collect()
}

/// The `summary` object of a `fenced disk watch --json` or `vdisk-node` run.
pub fn summary(out: &Output) -> Result<Value> {
    json_lines(&out.stdout)
        .into_iter()
        .find_map(|v| v.get("summary").cloned())
        .ok_or_else(|| {
            Error::Setup(format!(
                "no summary line (exit {}):\nstdout:\n{}\nstderr:\n{}",
                out.code, out.stdout, out.stderr
            ))
        })
}

/// The epoch of a round's (or a view's) authority field, if any.
pub fn authority_epoch(v: &Value) -> Option<u64> {
    let a = v.get("authority")?;
    a.get("marker")
        .and_then(|m| m.get("epoch"))
        .or_else(|| a.get("epoch"))
        .and_then(Value::as_u64)
}

/// The status names of a round's disks.
pub fn disk_statuses(round: &Value) -> Vec<String> {
    round["disks"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| x["status"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}
