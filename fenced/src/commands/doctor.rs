//! `fenced doctor`: preflight checks (see `fenced::doctor`).

use fenced::args::DoctorArgs;

use super::Exit;

/// Runs every check; exit 0 when none failed, 1 otherwise.
pub fn run(args: &DoctorArgs) -> Exit {
    let report = fenced::doctor::run(&args.config.config);
    if args.json {
        say!(
            "{}",
            serde_json::json!({ "ok": report.ok(), "checks": report.checks })
        );
    } else {
        for c in &report.checks {
            say!("{c}");
        }
        let count = |v| report.checks.iter().filter(|c| c.verdict == v).count();
        use fenced::doctor::Verdict;
        say!(
            "{} passed, {} warnings, {} failed",
            count(Verdict::Pass),
            count(Verdict::Warn),
            count(Verdict::Fail)
        );
    }
    if report.ok() {
        Exit::Ok
    } else {
        Exit::Failure
    }
}
