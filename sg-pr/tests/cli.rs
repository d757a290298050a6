//! The `sg-pr` binary on inputs that need no SCSI device: errors name the device, say what
//! to do, and use the documented exit codes; nothing panics.

use std::process::{Command, Output};

fn sg_pr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sg-pr"))
        .args(args)
        .output()
        .expect("run sg-pr")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn nonexistent_device_exits_3_and_names_the_path() {
    let o = sg_pr(&["keys", "/dev/does-not-exist-sgpr"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("/dev/does-not-exist-sgpr: no such device"));
}

#[test]
fn regular_file_exits_3_and_says_what_to_give() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let o = sg_pr(&["reservation", f.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("not a device node"));
}

#[test]
fn non_scsi_char_device_exits_3() {
    let o = sg_pr(&["tur", "/dev/null"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("not a SCSI device"));
}

#[test]
fn malformed_key_is_a_usage_error() {
    let o = sg_pr(&["register", "--key", "0xnothex", "/dev/null"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid reservation key"));
}

#[test]
fn zero_key_for_reserve_is_refused_before_touching_the_device() {
    let o = sg_pr(&[
        "reserve",
        "--key",
        "0",
        "--type",
        "wero",
        "/dev/does-not-exist-sgpr",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("key 0"));
    assert!(!stderr(&o).contains("does-not-exist"));
}

#[test]
fn zero_victim_is_refused() {
    let o = sg_pr(&[
        "preempt",
        "--key",
        "1",
        "--victim",
        "0x0",
        "--type",
        "wero",
        "/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("--victim"));
}

#[test]
fn preempt_on_several_bad_devices_reports_each_one() {
    let o = sg_pr(&[
        "--json",
        "preempt",
        "--key",
        "1",
        "--victim",
        "2",
        "--type",
        "wero",
        "--abort",
        "/dev/null",
        "/dev/does-not-exist-sgpr",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["device"], "/dev/null");
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["exit_code"], 3);
}

#[test]
fn json_error_for_read_command_is_valid_json() {
    let o = sg_pr(&["--json", "keys", "/dev/does-not-exist-sgpr"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 3);
}

#[test]
fn help_lists_exit_codes() {
    let o = sg_pr(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("24  RESERVATION CONFLICT"));
}
