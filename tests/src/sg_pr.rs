//! The project's `sg-pr` CLI driven inside a guest: every call is the real binary against a real
//! kernel and target, and returns exit code, stdout, stderr and (with `--json`) the parsed JSON.

use kmod_testing::{Guest, Output, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

/// One `sg-pr` invocation's outcome.
#[derive(Debug, Clone)]
pub struct Call {
    /// The command line run in the guest.
    pub command: String,
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// stdout parsed as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
    /// Wall time from the host's request to the guest's answer.
    pub elapsed: Duration,
}

impl Call {
    fn from_output(command: String, out: Output, started: Instant) -> Call {
        let json = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        Call {
            command,
            code: out.code,
            elapsed: out.finished_at.saturating_duration_since(started),
            stdout: out.stdout,
            stderr: out.stderr,
            json,
        }
    }

    /// Panics, showing the whole call, unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Call {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the exit code is 0.
    #[track_caller]
    pub fn ok(&self) -> &Call {
        self.expect_code(0)
    }

    /// The keys of a `keys --json` reply, as numbers.
    pub fn keys(&self) -> Vec<u64> {
        self.json["keys"]
            .as_array()
            .map(|a| a.iter().filter_map(|k| k.as_str().and_then(hex)).collect())
            .unwrap_or_default()
    }

    /// The `results` array of a PR OUT command's `--json` reply.
    pub fn results(&self) -> Vec<Value> {
        self.json["results"].as_array().cloned().unwrap_or_default()
    }
}

/// Parses `0x1a` / `1a` as a hex key.
pub fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The `sg-pr` binary in one guest.
pub struct SgPr<'a> {
    guest: &'a Guest,
    bin: String,
}

impl<'a> SgPr<'a> {
    /// The workspace's `sg-pr` (build it first: `cargo build --workspace --bins`).
    pub fn new(guest: &'a Guest) -> SgPr<'a> {
        SgPr {
            guest,
            bin: kmod_testing::project_binary("sg-pr").display().to_string(),
        }
    }

    /// The guest.
    pub fn guest(&self) -> &Guest {
        self.guest
    }

    /// The binary's path (the same in host and guest).
    pub fn bin(&self) -> &str {
        &self.bin
    }

    /// Runs `sg-pr ARGS` (shell words) and returns whatever it did.
    pub fn run(&self, args: &str) -> Result<Call> {
        self.run_with_timeout(args, Duration::from_secs(120))
    }

    /// [`SgPr::run`] with a host-side deadline.
    pub fn run_with_timeout(&self, args: &str, timeout: Duration) -> Result<Call> {
        let command = format!("{} {args}", self.bin);
        let started = Instant::now();
        let out = self.guest.run_with_timeout(&command, timeout)?;
        Ok(Call::from_output(
            format!("{}: sg-pr {args}", self.guest.name()),
            out,
            started,
        ))
    }

    /// `sg-pr --json ARGS`.
    pub fn json(&self, args: &str) -> Result<Call> {
        self.run(&format!("--json {args}"))
    }

    /// Registered keys on `dev` (READ KEYS through sg-pr), requiring success.
    pub fn keys(&self, dev: &str) -> Result<Vec<u64>> {
        let c = self.json(&format!("keys {dev}"))?;
        c.ok();
        Ok(c.keys())
    }
}

/// Builds sg-pr's kernel-facing integration test (`sg-pr/tests/scsi_target.rs`) in the
/// workspace's dev profile and returns its executable, which a guest can run at the same path.
///
/// `--workspace`, so features unify as in `cargo test --workspace` / `cargo nextest run
/// --workspace` (tests/run): there the binary is already built and this is a no-op. Otherwise it
/// may re-link `target/debug/sg-pr` (dev-dependency features differ from `cargo build --bins`),
/// so call it before booting guests that run `sg-pr`: a guest that already ran the old file runs
/// a torn mix of both (SIGSEGV seen).
///
/// Panics when cargo fails: the VM tests that call it cannot run without it.
pub fn scsi_target_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(kmod_testing::repo_root())
        .args([
            "test",
            "--workspace",
            "--test",
            "scsi_target",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .expect("running cargo to build sg-pr's scsi_target test");
    assert!(
        out.status.success(),
        "building sg-pr's scsi_target test failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"]["name"] == "scsi_target")
        .find_map(|v| v["executable"].as_str().map(std::path::PathBuf::from))
        .expect("cargo named no scsi_target executable")
}
