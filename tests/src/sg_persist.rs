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

/// One registration as READ FULL STATUS reports it: which I_T nexus holds which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The reservation key.
    pub key: u64,
    /// Registered through every target port (ALL_TG_PT).
    pub all_target_ports: bool,
    /// The relative target port the nexus goes through.
    pub relative_port: u16,
    /// Whether this nexus holds the reservation.
    pub holder: bool,
    /// The initiator port's TransportID as sg_persist prints it (iSCSI: `<iqn>,i,0x<isid>`).
    pub transport_id: String,
}

/// READ FULL STATUS: every registration with its I_T nexus. Retries once after a UNIT ATTENTION.
pub fn read_full_status(guest: &Guest, dev: &str) -> Result<Vec<Registration>> {
    let out = guest.run_ok(&format!(
        "sg_persist -n -i -s {dev} || sg_persist -n -i -s {dev}"
    ))?;
    Ok(parse_full_status(&out))
}

fn parse_full_status(out: &str) -> Vec<Registration> {
    let mut regs: Vec<Registration> = Vec::new();
    let mut transport_next = false;
    for line in out.lines().map(str::trim) {
        if let Some(k) = line.strip_prefix("Key=0x") {
            regs.push(Registration {
                key: u64::from_str_radix(k.trim(), 16).unwrap_or(0),
                all_target_ports: false,
                relative_port: 0,
                holder: false,
                transport_id: String::new(),
            });
            continue;
        }
        let Some(r) = regs.last_mut() else { continue };
        if transport_next && !line.is_empty() {
            r.transport_id = line
                .split_once(": ")
                .map_or(line, |(_, id)| id)
                .trim()
                .to_string();
            transport_next = false;
        } else if line == "All target ports bit set" {
            r.all_target_ports = true;
        } else if let Some(p) = line.strip_prefix("Relative port address: 0x") {
            r.relative_port = u16::from_str_radix(p.trim(), 16).unwrap_or(0);
        } else if line.contains("<< Reservation holder >>") {
            r.holder = true;
        } else if line.starts_with("Transport Id of initiator") {
            transport_next = true;
        }
    }
    regs
}

/// What VPD page 0x83 (Device Identification) says about a path: the LUN's NAA designator and
/// the target port the path goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    /// The logical unit's NAA designator, e.g. `0x6001405...` (the same through every path).
    pub naa: String,
    /// The relative target port identifier of this path.
    pub relative_port: u16,
    /// The SCSI name string of the target port (iSCSI: `<target iqn>,t,0x<tpgt>`).
    pub target_port: String,
}

/// Reads VPD page 0x83 of `dev` with sg_inq.
pub fn device_id(guest: &Guest, dev: &str) -> Result<DeviceId> {
    let out = guest.run_ok(&format!("sg_inq -p 0x83 {dev}"))?;
    Ok(parse_device_id(&out))
}

fn parse_device_id(out: &str) -> DeviceId {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let naa = lines
        .iter()
        .find_map(|l| l.strip_prefix("[0x").and_then(|r| r.strip_suffix(']')))
        .map(|n| format!("0x{n}"))
        .unwrap_or_default();
    let relative_port = lines
        .iter()
        .find_map(|l| l.strip_prefix("Relative target port: 0x"))
        .and_then(|p| u16::from_str_radix(p.trim(), 16).ok())
        .unwrap_or(0);
    // The SCSI name string "associated with the Target port" is the line after "SCSI name
    // string:" in that descriptor; the target device's own name has no ",t,".
    let target_port = lines
        .iter()
        .find(|l| l.contains(",t,0x"))
        .map(|l| l.to_string())
        .unwrap_or_default();
    DeviceId {
        naa,
        relative_port,
        target_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_status_lists_each_nexus() {
        let out = "  PR generation=0x2
    Key=0x1
      All target ports bit clear
      Relative port address: 0x1
      << Reservation holder >>
      scope: LU_SCOPE,  type: Write Exclusive, registrants only
      Transport Id of initiator:
        iSCSI world wide unique port id: iqn.2026-11.org.fenced:node1,i,0x809718b90000
    Key=0x2
      All target ports bit set
      Relative port address: 0x2
      not reservation holder
      Transport Id of initiator:
        iSCSI world wide unique port id: iqn.2026-11.org.fenced:node2,i,0x80cbe5e00000
";
        let r = parse_full_status(out);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Registration {
                key: 1,
                all_target_ports: false,
                relative_port: 1,
                holder: true,
                transport_id: "iqn.2026-11.org.fenced:node1,i,0x809718b90000".into()
            }
        );
        assert!(r[1].all_target_ports && !r[1].holder && r[1].relative_port == 2);
        assert!(
            parse_full_status("  PR generation=0x0\n  No full status descriptors\n").is_empty()
        );
    }

    #[test]
    fn device_id_has_the_lun_and_the_target_port() {
        let out = "VPD INQUIRY: Device Identification page
  Designation descriptor number 1, descriptor length: 20
    designator_type: NAA,  code_set: Binary
      [0x6001405000000005f2a4c0080000000f]
  Designation descriptor number 3, descriptor length: 8
      Relative target port: 0x2
  Designation descriptor number 6, descriptor length: 40
    designator_type: SCSI name string,  code_set: UTF-8
    associated with the Target port
      SCSI name string:
      iqn.2026-11.org.fenced:lab,t,0x0002
  Designation descriptor number 7, descriptor length: 32
      SCSI name string:
      iqn.2026-11.org.fenced:lab
";
        assert_eq!(
            parse_device_id(out),
            DeviceId {
                naa: "0x6001405000000005f2a4c0080000000f".into(),
                relative_port: 2,
                target_port: "iqn.2026-11.org.fenced:lab,t,0x0002".into()
            }
        );
    }
}
