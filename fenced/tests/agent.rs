//! `fence_fenced` (the binary under the agent's name) and `fenced doctor`, end to end on the
//! host: options on stdin as Pacemaker sends them, a configuration in a temp dir, voting disks
//! as files, no LUNs (the guest test covers LUNs).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{direct_io_dir, formatted, CLUSTER};

/// fence-agents' RelaxNG schema for `-o metadata`, from the Debian package fence-agents.
const METADATA_RNG: &str = "/usr/share/cluster/relaxng/metadata.rng";

/// A temp dir with `fence_fenced` -> the fenced binary, and a configuration file.
struct Agent {
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
}

fn config_text(voting: &[PathBuf], socket: &Path) -> String {
    let votes: Vec<String> = voting
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        r#"[cluster]
name = "lab"
uuid = "{CLUSTER}"
nodes = [ {{ id = 0, name = "node1" }}, {{ id = 1, name = "node2" }}, {{ id = 2, name = "node3" }} ]
[node]
id = 0
[storage]
luns = []
voting_disks = [ {} ]
[control]
socket = "{}"
"#,
        votes.join(", "),
        socket.display()
    )
}

impl Agent {
    /// With `voting` disks (paths that need not exist for parsing-only tests).
    fn new(dir: tempfile::TempDir, voting: &[PathBuf]) -> Agent {
        let bin = dir.path().join("fence_fenced");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fenced"), &bin).unwrap();
        let config = dir.path().join("fenced.toml");
        let socket = dir.path().join("no-daemon.sock");
        std::fs::write(&config, config_text(voting, &socket)).unwrap();
        Agent { dir, bin, config }
    }

    /// Voting disks that do not exist, so the file states the timeouts the disks would hold.
    fn parse_only() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let votes: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("v{i}"))).collect();
        let a = Agent::new(dir, &votes);
        let mut text = std::fs::read_to_string(&a.config).unwrap();
        text.push_str(
            "[timeouts]\npoll = 1000\nio_deadline = 500\nlease = 3000\nwatchdog = 5000\n",
        );
        std::fs::write(&a.config, text).unwrap();
        a
    }

    /// Runs the agent with `stdin` as its options (no arguments: Pacemaker's way).
    fn stdin(&self, stdin: &str) -> Output {
        let text = format!("config={}\n{stdin}", self.config.display());
        let mut child = Command::new(&self.bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run fence_fenced");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn args(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .arg(format!("--config={}", self.config.display()))
            .output()
            .expect("run fence_fenced")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

#[test]
fn metadata_is_valid_against_the_fence_agents_schema() {
    let a = Agent::parse_only();
    let o = a.stdin("action=metadata\n");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let xml = text(&o.stdout);
    assert!(
        xml.contains("<resource-agent name=\"fence_fenced\""),
        "{xml}"
    );
    let file = a.dir.path().join("metadata.xml");
    std::fs::write(&file, &xml).unwrap();
    let xmllint = Command::new("xmllint")
        .args(["--noout", "--relaxng", METADATA_RNG])
        .arg(&file)
        .output();
    match xmllint {
        Ok(v) if Path::new(METADATA_RNG).exists() => {
            assert!(v.status.success(), "xmllint: {}\n{xml}", text(&v.stderr));
        }
        _ => eprintln!(
            "SKIPPED schema validation: needs xmllint (libxml2-utils) and {METADATA_RNG} (fence-agents)"
        ),
    }
    // The same through getopt-style arguments.
    let o = a.args(&["-o", "metadata"]);
    assert_eq!(text(&o.stdout), xml);
}

#[test]
fn validate_all_checks_the_configuration_and_the_node() {
    let a = Agent::parse_only();
    let o = a.stdin("action=validate-all\nplug=node2\n");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = a.stdin("action=validate-all\n");
    assert_eq!(
        o.status.code(),
        Some(0),
        "validate-all needs no plug: {}",
        show(&o)
    );
    let o = a.stdin("action=validate-all\nplug=node9\n");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("node9 is not a member of cluster lab"));
    // A group-writable configuration is refused: whoever can edit it can fence any node.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&a.config, std::fs::Permissions::from_mode(0o664)).unwrap();
    let o = a.stdin("action=validate-all\n");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("writable"), "{}", show(&o));
}

#[test]
fn list_prints_one_member_per_line() {
    let a = Agent::parse_only();
    let o = a.stdin("action=list\n");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(text(&o.stdout), "node1,\nnode2,\nnode3,\n");
    let o = a.args(&["--action=list"]);
    assert_eq!(text(&o.stdout), "node1,\nnode2,\nnode3,\n");
}

#[test]
fn bad_input_exits_1_with_a_reason() {
    let a = Agent::parse_only();
    for (input, expect) in [
        ("action=off\n", "needs the node"),
        ("action=status\n", "needs the node"),
        ("action=explode\nplug=node2\n", "unknown action \"explode\""),
        ("action=off\nplug=node7\n", "node7 is not a member"),
        (
            "action=off\nplug=node2\ndelay=soon\n",
            "not a number of seconds",
        ),
    ] {
        let o = a.stdin(input);
        assert_eq!(o.status.code(), Some(1), "{input}: {}", show(&o));
        assert!(text(&o.stderr).contains(expect), "{input}: {}", show(&o));
        assert!(o.stdout.is_empty(), "{input}: {}", show(&o));
    }
    let o = a.args(&["--frobnicate"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    // Unknown names on stdin are ignored with a warning (the fence-agents rule).
    let o = a.stdin("action=list\nfrobnicate=1\nipaddr=10.0.0.1\n");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stderr).contains("frobnicate"), "{}", show(&o));
}

#[test]
fn off_on_and_status_on_voting_disk_files() {
    let Some(dir) = direct_io_dir() else { return };
    let votes = formatted(dir.path(), 3, 3);
    let a = Agent::new(dir, &votes);
    let status = |a: &Agent| a.stdin("action=status\nplug=node2\n");
    let o = status(&a);
    assert_eq!(o.status.code(), Some(0), "node2 starts ON: {}", show(&o));
    assert_eq!(text(&o.stdout), "Status: ON\n");
    let o = a.stdin("action=monitor\n");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // Pacemaker's way: port + nodename; reboot is carried out as off.
    let o = a.stdin("action=reboot\nport=node2\nnodename=node2\n");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(text(&o.stdout), "Success: Powered OFF\n");
    assert!(text(&o.stderr).contains("reboot is carried out as off"));
    let o = status(&a);
    assert_eq!(o.status.code(), Some(2), "node2 is OFF: {}", show(&o));
    assert_eq!(text(&o.stdout), "Status: OFF\n");
    // Fencing again succeeds without change; this node cannot fence itself.
    let o = a.args(&["-o", "off", "-n", "node2"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = a.args(&["-o", "off", "-n", "node1"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    // Unfencing a node whose slot does not show it rebooted since its fence is refused.
    let o = a.stdin("action=on\nplug=node2\n");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("does not show it rebooted since"),
        "{}",
        show(&o)
    );
    assert_eq!(status(&a).status.code(), Some(2), "node2 stays OFF");
    // node2's daemon after a reboot: its slot says the boot it was fenced in and a new one.
    write_slot(&votes, 1, "node2", ("b2", "b1"));
    let o = a.stdin("action=on\nplug=node2\nnodename=node2\n");
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(text(&o.stdout), "Success: Powered ON\n");
    let o = status(&a);
    assert_eq!(o.status.code(), Some(0), "node2 ON again: {}", show(&o));
}

/// Writes `slot`'s block on every voting disk as a daemon waiting to be let back in does:
/// state joining, `boots` = (this boot, the boot it was fenced in), as `b<n>` shorthands.
fn write_slot(votes: &[PathBuf], slot: u8, name: &str, boots: (&str, &str)) {
    use fenced::vdisk::format::{encode_slot, slot_offset};
    use fenced::vdisk::{AlignedBlock, BootId, NodeName, SlotBlock, SlotState};
    use std::os::unix::fs::FileExt;
    let boot = |s: &str| -> BootId { format!("{:0>32}", &s[1..]).parse().unwrap() };
    let block = SlotBlock {
        cluster: CLUSTER.parse().unwrap(),
        slot,
        state: SlotState::Joining,
        node_name: NodeName::new(name).unwrap(),
        incarnation: 0x77,
        heartbeat_seq: 1,
        heartbeat_mono_ms: 0,
        marker: Default::default(),
        boot: boot(boots.0),
        fenced_boot: boot(boots.1),
    };
    let mut b = AlignedBlock::ZERO;
    encode_slot(&block, &mut b.0);
    for v in votes {
        let f = std::fs::OpenOptions::new().write(true).open(v).unwrap();
        f.write_all_at(&b.0, slot_offset(slot)).unwrap();
    }
}

#[test]
fn doctor_reports_each_check_and_fails_on_fail() {
    let Some(dir) = direct_io_dir() else { return };
    let votes = formatted(dir.path(), 3, 3);
    let a = Agent::new(dir, &votes);
    let o = Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(["doctor", "--json", "--config"])
        .arg(&a.config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let checks = v["checks"].as_array().unwrap();
    let verdict = |subject: &str| {
        checks
            .iter()
            .find(|c| c["subject"].as_str().unwrap().starts_with(subject))
            .map(|c| c["verdict"].as_str().unwrap().to_string())
    };
    assert_eq!(verdict("config").as_deref(), Some("PASS"), "{v}");
    assert_eq!(verdict("voting disks").as_deref(), Some("PASS"), "{v}");
    assert_eq!(
        verdict("voting-disk majority").as_deref(),
        Some("PASS"),
        "{v}"
    );
    assert_eq!(verdict("luns").as_deref(), Some("WARN"), "no LUNs: {v}");
    assert!(verdict("watchdog").is_some(), "{v}");
    let failed = checks.iter().any(|c| c["verdict"] == "FAIL");
    assert_eq!(v["ok"], !failed);
    assert_eq!(o.status.code(), Some(if failed { 1 } else { 0 }));

    // Timeouts that differ from the disks' header: FAIL, exit 1.
    let mut text = std::fs::read_to_string(&a.config).unwrap();
    text.push_str("[timeouts]\npoll = 1000\nio_deadline = 500\nlease = 4000\nwatchdog = 5000\n");
    std::fs::write(&a.config, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fenced"))
        .args(["doctor", "--config"])
        .arg(&a.config)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL voting disk") && l.contains("differ")),
        "{out}"
    );
}
