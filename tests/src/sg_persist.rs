//! Persistent-reservation commands through sg_persist (sg3-utils), the reference peer. The
//! harness self-tests use it to prove the topologies behave per SPC before our own `sg-pr` is
//! measured against them.

use kmod_testing::{Guest, Output, Result};

/// PR type 5: Write Exclusive – Registrants Only.
pub const WERO: u8 = 5;

/// REGISTER `key` from this initiator (REGISTER AND IGNORE EXISTING KEY, as fence_scsi does).
pub fn register(guest: &Guest, dev: &str, key: u64) -> Result<Output> {
    guest.run(&format!(
        "sg_persist -n --out --register-ignore --param-sark=0x{key:x} {dev}"
    ))
}

/// RESERVE with `key`, type `prtype`.
pub fn reserve(guest: &Guest, dev: &str, key: u64, prtype: u8) -> Result<Output> {
    guest.run(&format!(
        "sg_persist -n --out --reserve --param-rk=0x{key:x} --prout-type={prtype} {dev}"
    ))
}

/// PREEMPT (or PREEMPT AND ABORT when `abort`) `victim`'s registration with our `key`.
pub fn preempt(
    guest: &Guest,
    dev: &str,
    key: u64,
    victim: u64,
    prtype: u8,
    abort: bool,
) -> Result<Output> {
    let sa = if abort {
        "--preempt-abort"
    } else {
        "--preempt"
    };
    guest.run(&format!(
        "sg_persist -n --out {sa} --param-rk=0x{key:x} --param-sark=0x{victim:x} --prout-type={prtype} {dev}"
    ))
}

/// READ KEYS: the registered keys, in the target's order. Retries once after a UNIT ATTENTION.
pub fn read_keys(guest: &Guest, dev: &str) -> Result<Vec<u64>> {
    let out = guest.run_ok(&format!(
        "sg_persist -n -i -k {dev} || sg_persist -n -i -k {dev}"
    ))?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("0x"))
        .filter_map(|k| u64::from_str_radix(k, 16).ok())
        .collect())
}

/// READ RESERVATION: `Some((key, type))` of the holder, `None` when nothing is reserved.
pub fn read_reservation(guest: &Guest, dev: &str) -> Result<Option<(u64, String)>> {
    let out = guest.run_ok(&format!(
        "sg_persist -n -i -r {dev} || sg_persist -n -i -r {dev}"
    ))?;
    let key = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Key=0x"))
        .and_then(|k| u64::from_str_radix(k.trim(), 16).ok());
    let prtype = out
        .lines()
        .find_map(|l| l.split_once("type:").map(|(_, t)| t.trim().to_string()));
    Ok(key.map(|k| (k, prtype.unwrap_or_default())))
}
