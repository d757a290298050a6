//! The shipped systemd unit parses and names only options systemd knows (systemd-analyze verify).

use std::process::Command;

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // provision.sh installs systemd's tools on the test machines; on others say so loudly.
        eprintln!("SKIP: systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/fenced.service"
    ))
    .unwrap();
    // Point ExecStart at the binary this build made, so the check covers the unit, not the install.
    let unit = unit.replace("/usr/sbin/fenced", env!("CARGO_BIN_EXE_fenced"));
    let path = dir.path().join("fenced.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
