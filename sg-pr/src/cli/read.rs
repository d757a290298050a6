//! Read-only subcommands: tur, inquiry, keys, reservation, caps, status.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use sg_pr::{
    inquiry::{Association, DeviceIdentification},
    AnyDevice, Capabilities, Error, FullStatus, PersistentReservations, PrType, RegisteredKeys,
    Report, ReservationStatus, StandardInquiry,
};

use super::{exit, exit_code_for, fail, print_notes, Ctx};

pub(super) fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("sg-pr: could not encode JSON: {e}"),
    }
}

/// Reports an error (and in JSON mode also prints it as JSON on stdout).
pub(super) fn device_error(ctx: &Ctx, device: &Path, e: &Error) -> u8 {
    if ctx.json {
        print_json(&json!({
            "device": device.display().to_string(),
            "error": e.to_string(),
            "exit_code": exit_code_for(e),
        }));
    }
    fail(e)
}

/// `writeln!` into a String cannot fail.
macro_rules! out_line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

macro_rules! try_dev {
    ($ctx:expr, $path:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return device_error($ctx, $path, &e),
        }
    };
}

#[derive(Serialize)]
struct WithReport<'a, T: Serialize> {
    device: String,
    #[serde(flatten)]
    value: &'a T,
    report: &'a Report,
}

fn emit<T: Serialize>(ctx: &Ctx, device: &str, value: &T, report: &Report, human: impl FnOnce()) {
    if ctx.json {
        print_json(&WithReport {
            device: device.to_string(),
            value,
            report,
        });
    } else {
        human();
    }
    print_notes(device, report);
}

pub(super) fn tur(ctx: &Ctx, path: &Path) -> u8 {
    let dev = try_dev!(ctx, path, ctx.open_sg(path));
    let report = try_dev!(ctx, path, dev.test_unit_ready());
    let name = dev.name();
    emit(ctx, name, &json!({ "ready": true }), &report, || {
        println!("{name}: ready");
    });
    exit::OK
}

fn spc_version(v: u8) -> &'static str {
    match v {
        0 => "no standard claimed",
        3 => "SPC",
        4 => "SPC-2",
        5 => "SPC-3",
        6 => "SPC-4",
        7 => "SPC-5",
        _ => "unknown version",
    }
}

#[derive(Serialize)]
struct InquiryOut {
    standard: StandardInquiry,
    vpd_pages: Option<Vec<u8>>,
    serial: Option<String>,
    lun_id: Option<String>,
    identification: Option<DeviceIdentification>,
}

/// What `inquiry` says of an NVMe namespace: its id and the identity fenced groups paths by.
#[derive(Serialize)]
struct NvmeIdentity {
    nvme_namespace: u32,
    lun_id: Option<String>,
}

/// `path` opened once: a SCSI device for SG_IO (`Ok`), or an NVMe namespace (`Err`), whose
/// Identify and Reservation Report stand in for the SCSI commands. Anything else is opened for
/// SG_IO again, for that error.
fn scsi_or_nvme(
    ctx: &Ctx,
    path: &Path,
) -> sg_pr::Result<Result<sg_pr::PrDevice<sg_pr::SgDevice>, sg_pr::BlockPrDevice>> {
    match ctx.open_any(path) {
        Ok(AnyDevice::Sg(dev)) => Ok(Ok(dev)),
        Ok(AnyDevice::Block(b)) if b.nvme_nsid().is_some() => Ok(Err(b)),
        _ => ctx.open_sg(path).map(Ok),
    }
}

pub(super) fn inquiry(ctx: &Ctx, path: &Path) -> u8 {
    let dev = match try_dev!(ctx, path, scsi_or_nvme(ctx, path)) {
        Ok(dev) => dev,
        Err(b) => {
            let out = NvmeIdentity {
                nvme_namespace: b.nvme_nsid().unwrap_or_default(),
                lun_id: b.lun_id(),
            };
            let name = b.device_name();
            emit(ctx, name, &out, &Report::default(), || {
                println!(
                    "{name}: NVMe namespace {}, id {}",
                    out.nvme_namespace,
                    out.lun_id
                        .as_deref()
                        .unwrap_or("unknown (no wwid in sysfs)")
                );
            });
            return exit::OK;
        }
    };
    let std = try_dev!(ctx, path, dev.inquiry());
    let mut report = std.report;
    // VPD pages are optional; ask for 0x80/0x83 only when listed (or when 0x00 is missing).
    let pages = dev.supported_vpd_pages().ok().map(|c| {
        report.unit_attentions.extend(c.report.unit_attentions);
        c.value
    });
    let has = |p: u8| pages.as_ref().is_none_or(|list| list.contains(&p));
    let serial = if has(0x80) {
        dev.unit_serial_number().ok().map(|c| c.value)
    } else {
        None
    };
    let identification = if has(0x83) {
        dev.device_identification().ok().map(|c| c.value)
    } else {
        None
    };
    let out = InquiryOut {
        lun_id: identification
            .as_ref()
            .and_then(DeviceIdentification::lun_id),
        standard: std.value,
        vpd_pages: pages,
        serial,
        identification,
    };
    let name = dev.name();
    emit(ctx, name, &out, &report, || {
        let s = &out.standard;
        println!(
            "{name}: {} {} {}  ({}, {})",
            s.vendor,
            s.product,
            s.revision,
            s.device_type_name(),
            spc_version(s.version)
        );
        if let Some(serial) = &out.serial {
            println!("  serial number: {serial}");
        }
        match &out.lun_id {
            Some(id) => println!("  LUN id: {id}"),
            None => println!("  LUN id: none (no VPD 0x83 logical-unit designator)"),
        }
        if let Some(id) = &out.identification {
            for d in &id.designations {
                let assoc = match d.association {
                    Association::LogicalUnit => "logical unit",
                    Association::TargetPort => "target port",
                    Association::TargetDevice => "target device",
                    Association::Reserved => "reserved",
                };
                println!("    {assoc}: {}", d.designator);
            }
        }
    });
    exit::OK
}

pub(super) fn keys(ctx: &Ctx, path: &Path) -> u8 {
    let dev = try_dev!(ctx, path, ctx.open_any(path));
    let c = try_dev!(ctx, path, dev.keys());
    let name = dev.device_name();
    emit(ctx, name, &c.value, &c.report, || {
        print!("{}", render_keys(name, &c.value));
    });
    exit::OK
}

fn render_keys(name: &str, k: &RegisteredKeys) -> String {
    let mut out = String::new();
    match k.keys.len() {
        0 => out_line!(
            out,
            "{name}: PR generation 0x{:x}, no registered keys",
            k.generation
        ),
        n => {
            out_line!(
                out,
                "{name}: PR generation 0x{:x}, {n} registered key{}:",
                k.generation,
                if n == 1 { "" } else { "s" }
            );
            for key in &k.keys {
                out_line!(out, "    {key}");
            }
        }
    }
    if k.truncated {
        out_line!(
            out,
            "  (list truncated: the device has more keys than fit in one reply)"
        );
    }
    out
}

pub(super) fn reservation(ctx: &Ctx, path: &Path) -> u8 {
    let dev = try_dev!(ctx, path, ctx.open_any(path));
    let c = try_dev!(ctx, path, dev.reservation());
    let name = dev.device_name();
    emit(ctx, name, &c.value, &c.report, || {
        print!("{}", render_reservation(name, &c.value));
    });
    exit::OK
}

fn type_text(pr_type: Option<PrType>, code: u8) -> String {
    match pr_type {
        Some(t) => format!("{t} (type {}, '{}')", t.scsi_code(), t.short_name()),
        None => format!("unknown type code {code}"),
    }
}

fn render_reservation(name: &str, r: &ReservationStatus) -> String {
    let mut out = String::new();
    match &r.reservation {
        None => out_line!(
            out,
            "{name}: PR generation 0x{:x}, no reservation held",
            r.generation
        ),
        Some(res) => {
            let holder = if res.pr_type.is_some_and(PrType::is_all_registrants) {
                "all registrants".to_string()
            } else {
                format!("key {}", res.key)
            };
            out_line!(
                out,
                "{name}: PR generation 0x{:x}, reservation held by {holder}: {}, scope {}",
                r.generation,
                type_text(res.pr_type, res.type_code),
                if res.scope == 0 {
                    "LU".to_string()
                } else {
                    format!("0x{:x}", res.scope)
                }
            );
        }
    }
    out
}

/// What `caps` says of an NVMe namespace (Identify Controller's ONCS, Identify Namespace's
/// RESCAP).
#[derive(Serialize)]
struct NvmeCaps {
    reservations: bool,
    supported_types: Vec<&'static str>,
    persist_through_power_loss: bool,
    rescap: u8,
}

pub(super) fn caps(ctx: &Ctx, path: &Path) -> u8 {
    let dev = match try_dev!(ctx, path, scsi_or_nvme(ctx, path)) {
        Ok(dev) => dev,
        Err(b) => {
            let support = try_dev!(ctx, path, b.nvme_reservation_support());
            let out = NvmeCaps {
                reservations: support.controller.reservations(),
                supported_types: support
                    .namespace
                    .types()
                    .into_iter()
                    .map(PrType::short_name)
                    .collect(),
                persist_through_power_loss: support.namespace.persist_through_power_loss(),
                rescap: support.namespace.bits(),
            };
            let name = b.device_name();
            emit(ctx, name, &out, &Report::default(), || {
                let yn = |b: bool| if b { "yes" } else { "no" };
                println!("{name}: NVMe reservation capabilities (Identify)");
                println!(
                    "  reservations (ONCS bit 5):             {}",
                    yn(out.reservations)
                );
                println!(
                    "  supported types (RESCAP 0x{:02x}):       {}",
                    out.rescap,
                    out.supported_types.join(", ")
                );
                println!(
                    "  persist through power loss:            {}",
                    yn(out.persist_through_power_loss)
                );
            });
            return exit::OK;
        }
    };
    let c = try_dev!(ctx, path, dev.report_capabilities());
    let name = dev.name();
    emit(ctx, name, &c.value, &c.report, || {
        print!("{}", render_caps(name, &c.value));
    });
    exit::OK
}

fn render_caps(name: &str, c: &Capabilities) -> String {
    let mut out = String::new();
    let yn = |b: bool| if b { "yes" } else { "no" };
    out_line!(out, "{name}: persistent reservation capabilities");
    out_line!(
        out,
        "  compatible reservation handling (CRH): {}",
        yn(c.compatible_reservation_handling)
    );
    out_line!(
        out,
        "  specify initiator ports (SIP_C):       {}",
        yn(c.specify_initiator_ports)
    );
    out_line!(
        out,
        "  all target ports (ATP_C):              {}",
        yn(c.all_target_ports)
    );
    out_line!(
        out,
        "  persist through power loss (PTPL_C):   {}",
        yn(c.persist_through_power_loss_capable)
    );
    out_line!(
        out,
        "  persist through power loss on (PTPL_A): {}",
        yn(c.persist_through_power_loss_active)
    );
    out_line!(
        out,
        "  replace lost reservation (RLR_C):      {}",
        yn(c.replace_lost_reservation)
    );
    out_line!(
        out,
        "  allow commands:                        {}",
        c.allow_commands
    );
    if c.type_mask_valid {
        let names: Vec<&str> = c.supported_types.iter().map(|t| t.short_name()).collect();
        out_line!(
            out,
            "  supported types:                       {}",
            names.join(", ")
        );
    } else {
        out_line!(
            out,
            "  supported types:                       not reported (TMV=0)"
        );
    }
    out
}

pub(super) fn full_status(ctx: &Ctx, path: &Path) -> u8 {
    // An NVMe namespace's Reservation Report lists every registered controller with its host
    // identifier.
    let dev = match try_dev!(ctx, path, scsi_or_nvme(ctx, path)) {
        Ok(dev) => dev,
        Err(b) => {
            let r = try_dev!(ctx, path, b.nvme_report());
            let name = b.device_name();
            let report = Report {
                attempts: 1,
                ..Report::default()
            };
            emit(ctx, name, &r, &report, || {
                print!("{}", render_nvme_report(name, &r));
            });
            return exit::OK;
        }
    };
    let c = try_dev!(ctx, path, dev.read_full_status());
    let name = dev.name();
    emit(ctx, name, &c.value, &c.report, || {
        print!("{}", render_full_status(name, &c.value));
    });
    exit::OK
}

fn render_full_status(name: &str, s: &FullStatus) -> String {
    let mut out = String::new();
    let n = s.registrations.len();
    out_line!(
        out,
        "{name}: PR generation 0x{:x}, {n} registration{}",
        s.generation,
        if n == 1 { "" } else { "s" }
    );
    for r in &s.registrations {
        let holder = if r.reservation_holder {
            format!("  reservation holder: {}", type_text(r.pr_type, 0))
        } else {
            String::new()
        };
        out_line!(out, "  key {}{holder}", r.key);
        match &r.transport_id {
            Some(t) => out_line!(out, "      initiator: {t}"),
            None => out_line!(out, "      initiator: (no transport ID)"),
        }
        if r.all_target_ports {
            out_line!(out, "      all target ports");
        } else {
            out_line!(out, "      relative target port {}", r.relative_target_port);
        }
    }
    if s.truncated {
        out_line!(out, "  (list truncated)");
    }
    out
}

fn render_nvme_report(name: &str, r: &sg_pr::nvme::ReservationReport) -> String {
    let mut out = String::new();
    let n = usize::from(r.registered);
    out_line!(
        out,
        "{name}: PR generation 0x{:x}, {n} registered controller{}{}",
        r.generation,
        if n == 1 { "" } else { "s" },
        if r.ptpl {
            ", persist through power loss"
        } else {
            ""
        }
    );
    for c in &r.controllers {
        let holder = if c.holds_reservation {
            format!(
                "  reservation holder: {}",
                type_text(r.pr_type(), r.type_code)
            )
        } else {
            String::new()
        };
        out_line!(out, "  key {}{holder}", c.key);
        out_line!(
            out,
            "      host id {}, controller 0x{:04x}",
            c.host_id,
            c.controller_id
        );
    }
    if r.truncated() {
        out_line!(out, "  (list truncated)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sg_pr::{Registration, Reservation, ReservationKey, TransportId};

    #[test]
    fn an_nvme_report_lists_each_controller_with_its_host_id_and_the_holder() {
        use sg_pr::nvme::{HostId, RegisteredController, ReservationReport};
        let r = ReservationReport {
            generation: 3,
            type_code: 3,
            ptpl: false,
            controllers: vec![
                RegisteredController {
                    controller_id: 1,
                    holds_reservation: true,
                    host_id: HostId::Extended([0x11; 16]),
                    key: ReservationKey(0xa1),
                },
                RegisteredController {
                    controller_id: 2,
                    holds_reservation: false,
                    host_id: HostId::Extended([0x22; 16]),
                    key: ReservationKey(0xa2),
                },
            ],
            registered: 2,
        };
        let text = render_nvme_report("/dev/nvme0n1", &r);
        assert_eq!(
            text,
            format!(
                "/dev/nvme0n1: PR generation 0x3, 2 registered controllers\n  key 0xa1  reservation holder: Write Exclusive, registrants only (type 5, 'wero')\n      host id {}, controller 0x0001\n  key 0xa2\n      host id {}, controller 0x0002\n",
                "11".repeat(16),
                "22".repeat(16)
            )
        );
    }

    #[test]
    fn keys_are_listed_one_per_line_with_generation() {
        let k = RegisteredKeys {
            generation: 4,
            keys: vec![
                ReservationKey(0xabcd),
                ReservationKey(0x1234_5678_9abc_def0),
            ],
            truncated: false,
            additional_length: 16,
        };
        assert_eq!(
            render_keys("/dev/sdb", &k),
            "/dev/sdb: PR generation 0x4, 2 registered keys:\n    0xabcd\n    0x123456789abcdef0\n"
        );
        let none = RegisteredKeys { keys: vec![], ..k };
        assert_eq!(
            render_keys("/dev/sdb", &none),
            "/dev/sdb: PR generation 0x4, no registered keys\n"
        );
    }

    #[test]
    fn reservation_names_holder_type_and_scope() {
        let r = ReservationStatus {
            generation: 4,
            reservation: Some(Reservation {
                key: ReservationKey(0xabcd),
                pr_type: Some(PrType::WriteExclusiveRegistrantsOnly),
                type_code: 5,
                scope: 0,
            }),
        };
        assert_eq!(
            render_reservation("/dev/sdb", &r),
            "/dev/sdb: PR generation 0x4, reservation held by key 0xabcd: Write Exclusive, registrants only (type 5, 'wero'), scope LU\n"
        );
        let all = ReservationStatus {
            reservation: Some(Reservation {
                key: ReservationKey(0),
                pr_type: Some(PrType::ExclusiveAccessAllRegistrants),
                type_code: 8,
                scope: 0,
            }),
            ..r.clone()
        };
        assert!(render_reservation("/dev/sdb", &all).contains("held by all registrants"));
        let none = ReservationStatus {
            reservation: None,
            ..r
        };
        assert_eq!(
            render_reservation("/dev/sdb", &none),
            "/dev/sdb: PR generation 0x4, no reservation held\n"
        );
    }

    #[test]
    fn full_status_shows_initiator_and_holder() {
        let s = FullStatus {
            generation: 7,
            registrations: vec![Registration {
                key: ReservationKey(0xabcd),
                all_target_ports: false,
                reservation_holder: true,
                pr_type: Some(PrType::WriteExclusiveRegistrantsOnly),
                scope: 0,
                relative_target_port: 1,
                transport_id: Some(TransportId::Iscsi {
                    name: "iqn.2026-01.test:node1".into(),
                    isid: Some("23d000000001".into()),
                }),
            }],
            truncated: false,
            additional_length: 0,
        };
        let text = render_full_status("/dev/sdb", &s);
        assert!(text.starts_with("/dev/sdb: PR generation 0x7, 1 registration\n"));
        assert!(text.contains("key 0xabcd  reservation holder: Write Exclusive, registrants only"));
        assert!(text.contains("initiator: iSCSI iqn.2026-01.test:node1, ISID 0x23d000000001"));
        assert!(text.contains("relative target port 1"));
    }

    #[test]
    fn capabilities_list_supported_types_by_short_name() {
        let c = Capabilities {
            replace_lost_reservation: false,
            compatible_reservation_handling: true,
            specify_initiator_ports: true,
            all_target_ports: true,
            persist_through_power_loss_capable: true,
            type_mask_valid: true,
            allow_commands: 1,
            persist_through_power_loss_active: false,
            supported_types: PrType::ALL.to_vec(),
        };
        let text = render_caps("/dev/sdb", &c);
        assert!(text.contains("we, ea, wero, earo, wear, eaar"));
        assert!(text.contains("(PTPL_C):   yes"));
    }
}
