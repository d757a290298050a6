//! The README's demo: the scenarios the test suite proves, narrated for a person.
//!
//! 1. Storage fencing: two initiators on one shared LUN (LIO, two tcm_loop nexuses in one
//!    guest); one holds a Write Exclusive – Registrants Only reservation, the other preempts it,
//!    and the target refuses the preempted side's writes from that instant.
//! 2. Node fencing: a whole-kernel freeze (stop_machine) with a hardware watchdog (i6300esb)
//!    armed: the guest is reset during the freeze. The same freeze with softdog: nothing fires.

use std::process::ExitCode;
use tests::scenarios::{self, Feeder, WatchdogKind, SURVIVOR_KEY, VICTIM_KEY};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!(
                "\nThe demo saw something it should not have: see the lines marked UNEXPECTED."
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(ok: bool, what: &str) -> bool {
    println!("  {} {what}", if ok { "OK        " } else { "UNEXPECTED" });
    ok
}

fn run() -> kmod_testing::Result<bool> {
    let mut say = |s: &str| println!("  | {s}");
    let mut all = true;

    println!("\n== 1. Storage fencing: SCSI-3 persistent reservation preempt on a shared LUN ==");
    println!("   (real Linux 6.1 guest under QEMU, LIO target, two initiators on one LUN)\n");
    let r = scenarios::tcm_loop_preempt(&mut say)?;
    println!();
    all &= check(
        r.keys_after == vec![SURVIVOR_KEY],
        &format!(
            "only the survivor's key 0x{SURVIVOR_KEY:x} is left; 0x{VICTIM_KEY:x} was preempted"
        ),
    );
    all &= check(
        r.victim_write_code != 0 && r.victim_block_seen_by_survivor == vec![0],
        "the preempted initiator's write was refused by the target and its data is not on the LUN",
    );
    all &= check(
        r.survivor_write_code == 0 && r.survivor_block_seen_by_victim == vec![b'S'],
        "the survivor writes on",
    );

    println!("\n== 2. Node fencing: a frozen kernel and its watchdog ==\n");
    let feeder = Feeder::Ours(kmod_testing::project_binary("wdprobe"));
    println!("  -- hardware watchdog (i6300esb, a timer outside the guest's kernel) --");
    let hw = scenarios::watchdog_under_freeze(&mut say, WatchdogKind::I6300esb, &feeder, 8, 30)?;
    all &= check(
        hw.reset_after.is_some_and(|d| d.as_secs() < 14),
        &format!(
            "the hardware watchdog armed at {} s reset the frozen node after {}",
            hw.timeout_secs,
            hw.reset_after
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-- never".into())
        ),
    );
    println!("\n  -- softdog (a timer inside the frozen kernel) --");
    let soft = scenarios::watchdog_under_freeze(&mut say, WatchdogKind::Softdog, &feeder, 8, 30)?;
    all &= check(
        soft.reset_after.is_none_or(|d| d.as_secs() >= 29),
        "softdog armed at 8 s did not fire while the kernel was frozen: it cannot bound a hung node",
    );

    println!(
        "\nThat is why the daemon fences storage through the target itself and requires a hardware\n\
         watchdog by default (softdog only by explicit policy)."
    );
    Ok(all)
}
