//! Test-only driver of the `watchdog` library inside guests: arms a device through the library
//! and then feeds, disarms, drops or holds it as a scenario needs, printing one JSON line per
//! step; and measures the cost of a feed. Not shipped: the operator commands are
//! `fenced watchdog list|test`.
//!
//! ```text
//! wdprobe arm DEV TIMEOUT [--nowayout] [--feed-ms MS --feed-for-s S] (--then disarm|drop|hold)
//! wdprobe bench DEV COUNT
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use watchdog::{discover, ArmOptions, Roots, Watchdog, WatchdogDevice};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("arm") => arm(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => Err("usage: wdprobe arm DEV TIMEOUT [--nowayout] [--feed-ms MS --feed-for-s S] --then disarm|drop|hold | wdprobe bench DEV COUNT".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", json!({ "error": e }));
            ExitCode::FAILURE
        }
    }
}

fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn open(dev: &str, timeout: u32, nowayout: bool) -> Result<Watchdog, String> {
    let roots = Roots::system();
    let found = discover(&roots).map_err(|e| e.to_string())?;
    let info = found
        .iter()
        .find(|w| w.is_named_by(Path::new(dev)))
        .ok_or_else(|| format!("{dev} not found"))?;
    let opts = ArmOptions {
        timeout,
        pretimeout: None,
        nowayout,
    };
    Watchdog::arm(info, &opts, &roots).map_err(|e| e.to_string())
}

fn arm(args: &[String]) -> Result<(), String> {
    let dev = args.first().ok_or("DEV missing")?;
    let timeout: u32 = args
        .get(1)
        .and_then(|t| t.parse().ok())
        .ok_or("TIMEOUT missing")?;
    let nowayout = args.iter().any(|a| a == "--nowayout");
    let feed_ms: u64 = flag_value(args, "--feed-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let feed_for: u64 = flag_value(args, "--feed-for-s")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let then = flag_value(args, "--then").ok_or("--then missing")?;

    let wd = open(dev, timeout, nowayout)?;
    let sysfs = std::fs::read_to_string(
        Path::new("/sys/class/watchdog")
            .join(dev.trim_start_matches("/dev/"))
            .join("timeout"),
    )
    .unwrap_or_default();
    println!(
        "{}",
        json!({
            "armed": dev,
            "requested": timeout,
            "timeout": wd.timeout(),
            "sysfs_timeout": sysfs.trim().parse::<u32>().ok(),
            "identity": wd.support().identity,
            "nowayout": wd.nowayout(),
            "pid": std::process::id(),
        })
    );
    if feed_ms > 0 {
        let end = Instant::now() + Duration::from_secs(feed_for);
        let mut feeds = 0u64;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(feed_ms));
            wd.feed().map_err(|e| format!("feed: {e}"))?;
            feeds += 1;
        }
        println!("{}", json!({ "fed": feeds }));
    }
    match then {
        "disarm" => match wd.disarm() {
            Ok(()) => println!("{}", json!({ "disarm": "ok" })),
            Err(e) => {
                println!("{}", json!({ "disarm_refused": e.to_string() }));
                // Close without the magic character: the watchdog keeps running.
                drop(e);
            }
        },
        "drop" => drop(wd),
        "hold" => loop {
            // Keep it open and fed, so it is busy for anyone else, until killed.
            std::thread::sleep(Duration::from_millis(500));
            wd.feed().map_err(|e| format!("feed: {e}"))?;
        },
        other => return Err(format!("unknown --then {other}")),
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let dev = args.first().ok_or("DEV missing")?;
    let count: usize = args
        .get(1)
        .and_then(|c| c.parse().ok())
        .ok_or("COUNT missing")?;
    let wd = open(dev, 30, false)?;
    let mut ns: Vec<u64> = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        wd.feed().map_err(|e| format!("feed: {e}"))?;
        ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    ns.sort_unstable();
    let pct = |p: usize| ns[(ns.len() - 1) * p / 100];
    println!(
        "{}",
        json!({
            "device": dev,
            "identity": wd.support().identity,
            "feeds": count,
            "p50_ns": pct(50),
            "p99_ns": pct(99),
            "max_ns": ns[ns.len() - 1],
        })
    );
    wd.disarm().map_err(|e| e.to_string())
}
