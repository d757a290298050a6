//! `fenced doctor`'s NVMe checks: what a namespace declares about reservations (Identify
//! Controller's ONCS, Identify Namespace's RESCAP), its reservation as the Reservation Report
//! shows it, and how long its fabric controllers hold I/O while they reconnect.
//!
//! An NVMe LUN's PR OUT commands (register, reserve, preempt) go through the block layer's PR
//! ioctls, which have no timeout: a controller that reconnects holds them, and the node's
//! writes, until its `fast_io_fail_tmo` (or, with that off, its `ctrl_loss_tmo`) has passed
//! ([`crate::transport::nvme`]). So that hold is held against both the deadline a fence gives
//! each command (half the fence deadline) and the lease (the key check's command deadline).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sg_pr::nvme::{ReservationCapabilities, ReservationSupport};
use sg_pr::BlockPrDevice;

use super::{reservation_check, Flavour, Report, Verdict};
use crate::config::{Config, Timing};
use crate::luns::FENCING_TYPE;
use crate::transport::nvme::{namespace_controllers, NvmeController, ReconnectHold, Timeout};

/// The line for one path that is an NVMe namespace (namespace id `nsid`).
pub(super) fn path_line(subject: &str, nsid: u32, r: &mut Report) {
    r.add(
        Verdict::Pass,
        subject,
        format!("NVMe namespace {nsid}: reservations through the block layer's PR ioctls (a fence's preempt reaches the namespace as Preempt and Abort, unlike through dm-multipath), read with the NVMe Reservation Report"),
    );
}

/// The checks of a LUN reached through the NVMe namespace `ns`: what it declares, and its
/// reservation.
pub(super) fn namespace_checks(config: &Config, subject: &str, ns: &BlockPrDevice, r: &mut Report) {
    support_check(subject, ns.nvme_reservation_support(), r);
    let report = ns.nvme_report();
    if let Ok(rep) = &report {
        r.add(
            Verdict::Pass,
            subject,
            format!(
                "NVMe Reservation Report: {} registered controller(s), PTPL {}",
                rep.registered,
                if rep.ptpl { "active" } else { "not active" }
            ),
        );
    }
    reservation_check(
        config,
        subject,
        report.map(|rep| rep.reservation()),
        &Flavour::NVME,
        r,
    );
}

/// What Identify says (`support`): reservations at all (ONCS bit 5), the fencing type and PTPL
/// (RESCAP).
fn support_check(subject: &str, support: sg_pr::Result<ReservationSupport>, r: &mut Report) {
    let s = match support {
        Ok(s) => s,
        Err(e) => {
            r.add_fix(
                Verdict::Warn,
                subject,
                format!("NVMe Identify: {e}"),
                "reservation support is not declared; the reservation check below shows whether it works",
            );
            return;
        }
    };
    if !s.controller.reservations() {
        r.add_fix(
            Verdict::Fail,
            subject,
            format!(
                "Identify Controller: ONCS {:#06x} lacks bit 5: the controller does not support reservations",
                s.controller.bits()
            ),
            "fenced needs NVMe reservations: enable them on the target (Linux nvmet: the namespace's resv_enable, set before enable) or use one that supports them",
        );
        return;
    }
    let caps = s.namespace;
    let declared = describe(caps);
    if caps.supports(FENCING_TYPE) {
        r.add(
            Verdict::Pass,
            subject,
            format!("Identify: reservations supported (ONCS bit 5); Write Exclusive – Registrants Only supported; {declared}"),
        );
    } else {
        r.add_fix(
            Verdict::Fail,
            subject,
            format!("Identify Namespace: Write Exclusive – Registrants Only (RESCAP bit 3) not supported; {declared}"),
            "fenced needs Write Exclusive – Registrants Only reservations: use a namespace that supports them",
        );
    }
    if !caps.persist_through_power_loss() {
        r.add_fix(
            Verdict::Warn,
            subject,
            "the namespace cannot persist reservations through power loss (RESCAP bit 0, PTPL): a power loss of the subsystem drops every key and the reservation",
            "the daemons register again after such a loss (guarded by the voting disks); until they do, the LUN is unprotected",
        );
    }
}

/// RESCAP for the operator: the raw byte, the types, PTPL, the IEKEY semantics.
fn describe(caps: ReservationCapabilities) -> String {
    let types: Vec<&str> = caps.types().into_iter().map(|t| t.short_name()).collect();
    format!(
        "RESCAP {:#04x}: types [{}], PTPL {}, Ignore Existing Key as in NVMe {}",
        caps.bits(),
        types.join(", "),
        if caps.persist_through_power_loss() {
            "capable"
        } else {
            "not capable"
        },
        if caps.contains(ReservationCapabilities::IGNORE_EXISTING_KEY) {
            "1.3+"
        } else {
            "1.2.1"
        }
    )
}

/// The controllers of the NVMe namespaces `disks` (configured path, block device name) under
/// the sysfs tree `sys`, one line per controller: how long it holds I/O while it reconnects,
/// against half the fence deadline and the lease of `timing`.
pub(super) fn transport_timeouts(
    sys: &Path,
    disks: &[(String, String)],
    timing: &Timing,
    r: &mut Report,
) {
    let mut controllers: BTreeMap<String, (NvmeController, Vec<&str>)> = BTreeMap::new();
    for (path, disk) in disks {
        let found = namespace_controllers(sys, disk);
        if found.is_empty() {
            r.add_fix(
                Verdict::Warn,
                format!("transport {path}"),
                format!("no NVMe controller found for {disk} (neither {0}/block/{disk}/multipath/ nor {0}/block/{disk}/device leads to one): its timeouts are not checked", sys.display()),
                "check that the namespace is connected (`nvme list-subsys`)",
            );
        }
        for c in found {
            controllers
                .entry(c.name.clone())
                .or_insert_with(|| (c, Vec::new()))
                .1
                .push(path);
        }
    }
    for (name, (c, paths)) in controllers {
        judge(&name, &c, &paths, timing, r);
    }
}

/// One controller's line.
fn judge(name: &str, c: &NvmeController, paths: &[&str], timing: &Timing, r: &mut Report) {
    let subject = format!("transport {name} {}", paths.join(" "));
    let Some(transport) = c.transport.as_deref() else {
        r.add_fix(
            Verdict::Warn,
            subject,
            format!(
                "{}/transport is not readable: the reconnect timeouts are not checked",
                c.dir.display()
            ),
            "check that the controller exists (`nvme list-subsys`)",
        );
        return;
    };
    let Some(fabric) = c.fabric else {
        r.add(
            Verdict::Pass,
            subject,
            format!("transport {transport}: not judged (no fabric reconnect; ctrl_loss_tmo and fast_io_fail_tmo are NVMe over Fabrics settings)"),
        );
        return;
    };
    let per_command = timing.fence_deadline / 2;
    let bound = per_command.min(timing.lease);
    let settings = format!(
        "{transport}: fast_io_fail_tmo {}, ctrl_loss_tmo {}, reconnect_delay {}",
        shown(fabric.fast_io_fail_tmo),
        shown(fabric.ctrl_loss_tmo),
        fabric
            .reconnect_delay
            .map_or_else(|| "unknown".to_string(), |d| format!("{} s", d.as_secs()))
    );
    let limits = format!(
        "a fence gives each command {} s (half of timeouts.fence_deadline), the lease is {} s",
        secs(per_command),
        secs(timing.lease)
    );
    let held = "while the controller reconnects, the kernel holds this node's writes and the block layer's PR commands (register, preempt: they have no timeout of their own)";
    let (verdict, message) = match fabric.hold() {
        ReconnectHold::FastIoFail(d) if d <= bound => (
            Verdict::Pass,
            format!("{settings}: held I/O fails after {} s, within the {} s bound ({limits})", d.as_secs(), secs(bound)),
        ),
        ReconnectHold::CtrlLoss(d) if d <= bound => (
            Verdict::Pass,
            format!("{settings}: held I/O fails when the controller is given up after {} s, within the {} s bound ({limits}); it does not come back without `nvme connect`", d.as_secs(), secs(bound)),
        ),
        ReconnectHold::FastIoFail(d) => (
            Verdict::Warn,
            format!("{settings}: {held} for {} s: longer than {limits}", d.as_secs()),
        ),
        ReconnectHold::CtrlLoss(d) => (
            Verdict::Warn,
            format!("{settings}: {held} until ctrl_loss_tmo gives the controller up, {} s: longer than {limits}", d.as_secs()),
        ),
        ReconnectHold::Forever => (
            Verdict::Warn,
            format!("{settings}: {held} for ever: longer than {limits}"),
        ),
        ReconnectHold::Unknown => (
            Verdict::Warn,
            format!("{settings}: ctrl_loss_tmo is not published (the kernel's default is 600 s) and fast_io_fail_tmo is off: {held} for as long as ctrl_loss_tmo, which may be longer than {limits}"),
        ),
    };
    if verdict == Verdict::Pass {
        r.add(verdict, subject, message);
    } else {
        r.add_fix(verdict, subject, message, fix(name, bound));
    }
}

/// The exact fix: fast_io_fail_tmo at most `bound`, ctrl_loss_tmo bounded.
fn fix(controller: &str, bound: Duration) -> String {
    let b = bound.as_secs().max(1);
    format!(
        "set fast_io_fail_tmo to at most {b} s and keep ctrl_loss_tmo bounded (not off): for this controller now `echo {b} > /sys/class/nvme/{controller}/fast_io_fail_tmo`; for its next connection `nvme connect ... --fast_io_fail_tmo={b} --ctrl-loss-tmo=M` (or the same options in /etc/nvme/discovery.conf for `nvme connect-all` and nvmf-autoconnect), or a udev rule writing the attribute when the controller appears"
    )
}

fn shown(t: Option<Timeout>) -> String {
    t.map_or_else(|| "not published".to_string(), |t| t.to_string())
}

/// Whole seconds, or seconds with a fraction when not whole.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::nvme::fake;
    use sg_pr::nvme::OptionalCommands;

    /// P 1 s, D 0.5 s, L `lease_ms`, W 5 s, fence deadline 20 s (10 s per command).
    fn timing(lease_ms: u64) -> Timing {
        Timing {
            poll: Duration::from_secs(1),
            io_deadline: Duration::from_millis(500),
            lease: Duration::from_millis(lease_ms),
            watchdog: Duration::from_secs(5),
            startup_delay: Duration::ZERO,
            fence_deadline: Duration::from_secs(20),
        }
    }

    /// The line whose subject starts with `transport nvmeN `.
    fn line<'a>(r: &'a Report, controller: &str) -> &'a super::super::Check {
        r.checks
            .iter()
            .find(|c| c.subject.starts_with(&format!("transport {controller} ")))
            .unwrap_or_else(|| panic!("no line for {controller}: {:#?}", r.checks))
    }

    #[test]
    fn fabric_controllers_are_judged_by_what_ends_their_hold_against_fence_and_lease() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        // The Linux defaults: fast_io_fail_tmo off, ctrl_loss_tmo 600 s.
        fake::controller(
            sys,
            "nvme1",
            "tcp",
            &[
                ("ctrl_loss_tmo", "600"),
                ("fast_io_fail_tmo", "off"),
                ("reconnect_delay", "10"),
            ],
        );
        // Fast fail within the bound, the controller kept for ever.
        fake::controller(
            sys,
            "nvme2",
            "tcp",
            &[
                ("ctrl_loss_tmo", "off"),
                ("fast_io_fail_tmo", "4"),
                ("reconnect_delay", "2"),
            ],
        );
        fake::controller(
            sys,
            "nvme3",
            "rdma",
            &[("ctrl_loss_tmo", "off"), ("fast_io_fail_tmo", "off")],
        );
        fake::controller(
            sys,
            "nvme4",
            "fc",
            &[("ctrl_loss_tmo", "600"), ("fast_io_fail_tmo", "30")],
        );
        fake::controller(sys, "nvme5", "pcie", &[]);
        fake::controller(
            sys,
            "nvme6",
            "tcp",
            &[("ctrl_loss_tmo", "6"), ("fast_io_fail_tmo", "off")],
        );
        fake::head(sys, "nvme0n1", &["nvme1", "nvme2"]);
        fake::head(sys, "nvme0n2", &["nvme1", "nvme2"]);
        fake::head(sys, "nvme7n1", &["nvme3", "nvme4", "nvme6"]);
        fake::single(sys, "nvme5n1", "nvme5");
        let disks: Vec<(String, String)> = ["nvme0n1", "nvme0n2", "nvme7n1", "nvme5n1", "nvme9n1"]
            .iter()
            .map(|d| (format!("/dev/{d}"), d.to_string()))
            .collect();
        let mut r = Report::default();
        transport_timeouts(sys, &disks, &timing(8000), &mut r);

        // One line per controller, naming every configured path through it.
        let c = line(&r, "nvme1");
        assert_eq!(c.subject, "transport nvme1 /dev/nvme0n1 /dev/nvme0n2");
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.message
                .contains("until ctrl_loss_tmo gives the controller up, 600 s"),
            "{}",
            c.message
        );
        assert!(
            c.message.contains("a fence gives each command 10 s"),
            "{}",
            c.message
        );
        assert!(c.message.contains("the lease is 8 s"), "{}", c.message);
        let fix = c.fix.as_deref().unwrap();
        assert!(
            fix.contains("echo 8 > /sys/class/nvme/nvme1/fast_io_fail_tmo"),
            "{fix}"
        );
        assert!(
            fix.contains("nvme connect ... --fast_io_fail_tmo=8 --ctrl-loss-tmo=M"),
            "{fix}"
        );

        let c = line(&r, "nvme2");
        assert_eq!(c.verdict, Verdict::Pass, "{c}");
        assert!(
            c.message
                .contains("held I/O fails after 4 s, within the 8 s bound"),
            "{}",
            c.message
        );

        let c = line(&r, "nvme3");
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.message.contains("for ever"), "{}", c.message);

        let c = line(&r, "nvme4");
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.message
                .starts_with("fc: fast_io_fail_tmo 30 s, ctrl_loss_tmo 600 s"),
            "{}",
            c.message
        );
        assert!(c.message.contains("for 30 s: longer than"), "{}", c.message);

        let c = line(&r, "nvme5");
        assert_eq!(c.verdict, Verdict::Pass);
        assert!(
            c.message.contains("transport pcie: not judged"),
            "{}",
            c.message
        );
        assert!(c.fix.is_none());

        let c = line(&r, "nvme6");
        assert_eq!(c.verdict, Verdict::Pass, "{c}");
        assert!(c.message.contains("given up after 6 s"), "{}", c.message);

        let missing = r
            .checks
            .iter()
            .find(|c| c.subject == "transport /dev/nvme9n1")
            .unwrap();
        assert_eq!(missing.verdict, Verdict::Warn);
        assert_eq!(r.checks.len(), 7, "{:#?}", r.checks);
    }

    #[test]
    fn a_lease_shorter_than_half_the_fence_deadline_is_the_bound() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        fake::controller(
            sys,
            "nvme1",
            "tcp",
            &[("ctrl_loss_tmo", "off"), ("fast_io_fail_tmo", "5")],
        );
        fake::head(sys, "nvme0n1", &["nvme1"]);
        let disks = [("/dev/nvme0n1".to_string(), "nvme0n1".to_string())];
        let mut short = Report::default();
        transport_timeouts(sys, &disks, &timing(4000), &mut short);
        assert_eq!(
            short.checks[0].verdict,
            Verdict::Warn,
            "5 s is above a 4 s lease"
        );
        assert!(short.checks[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("at most 4 s"));
        let mut long = Report::default();
        transport_timeouts(sys, &disks, &timing(6000), &mut long);
        assert_eq!(long.checks[0].verdict, Verdict::Pass, "{}", long.checks[0]);
    }

    #[test]
    fn a_fabric_controller_without_published_timeouts_is_not_passed() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        // A kernel before 5.8 publishes neither attribute.
        fake::controller(sys, "nvme1", "tcp", &[]);
        fake::head(sys, "nvme0n1", &["nvme1"]);
        let mut r = Report::default();
        transport_timeouts(
            sys,
            &[("/dev/nvme0n1".into(), "nvme0n1".into())],
            &timing(8000),
            &mut r,
        );
        assert_eq!(r.checks[0].verdict, Verdict::Warn);
        assert!(
            r.checks[0].message.contains("not published"),
            "{}",
            r.checks[0]
        );
    }

    fn support(oncs: u16, rescap: u8) -> sg_pr::Result<ReservationSupport> {
        Ok(ReservationSupport {
            controller: OptionalCommands::from_bits_retain(oncs),
            namespace: ReservationCapabilities::from_bits_retain(rescap),
        })
    }

    #[test]
    fn a_namespace_passes_only_with_reservations_and_write_exclusive_registrants_only() {
        // nvmet with resv_enable: every type, PTPL, 1.3 IEKEY.
        let mut r = Report::default();
        support_check("lun x", support(0x0020, 0xff), &mut r);
        assert_eq!(r.checks.len(), 1, "{:#?}", r.checks);
        assert_eq!(r.checks[0].verdict, Verdict::Pass);
        assert!(r.checks[0].message.contains("types [we, ea, wero, earo, wear, eaar], PTPL capable, Ignore Existing Key as in NVMe 1.3+"), "{}", r.checks[0]);

        // Every type but the fencing one (bit 3).
        let mut r = Report::default();
        support_check("lun x", support(0x0020, 0xf7), &mut r);
        assert_eq!(r.checks[0].verdict, Verdict::Fail);
        assert!(
            r.checks[0].message.contains("RESCAP bit 3"),
            "{}",
            r.checks[0]
        );

        // No reservations on the controller: one FAIL, RESCAP not judged.
        let mut r = Report::default();
        support_check("lun x", support(0x001f, 0xff), &mut r);
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.checks[0].verdict, Verdict::Fail);
        assert!(
            r.checks[0].message.contains("ONCS 0x001f lacks bit 5"),
            "{}",
            r.checks[0]
        );

        // The fencing type without PTPL: a PASS and a WARN.
        let mut r = Report::default();
        support_check("lun x", support(0x0020, 0x08), &mut r);
        let verdicts: Vec<Verdict> = r.checks.iter().map(|c| c.verdict).collect();
        assert_eq!(verdicts, [Verdict::Pass, Verdict::Warn]);
        assert!(r.checks[1].message.contains("PTPL"), "{}", r.checks[1]);

        // Identify refused: a WARN, the reservation check decides.
        let mut r = Report::default();
        let refused = Err(sg_pr::Error::NotSupported {
            device: "/dev/nvme0n1".into(),
            op: "NVMe Identify Controller",
        });
        support_check("lun x", refused, &mut r);
        assert_eq!(r.checks[0].verdict, Verdict::Warn);
        assert!(
            r.checks[0].message.starts_with("NVMe Identify: "),
            "{}",
            r.checks[0]
        );
    }

    #[test]
    fn an_nvme_reservation_is_named_in_nvme_terms() {
        let text = r#"
[cluster]
name = "prod"
uuid = "5f0c5a3e-2b1d-4c43-9a55-1d0e6b1c9f10"
nodes = [ { id = 0, name = "node1" } ]
[node]
id = 0
[storage]
voting_disks = ["/dev/vda"]
[timeouts]
poll = 1000
io_deadline = 500
lease = 3000
watchdog = 5000
"#;
        let config = Config::parse(Path::new("fenced.toml"), text).unwrap();
        let status = |pr_type| {
            Ok(sg_pr::ReservationStatus {
                generation: 1,
                reservation: Some(sg_pr::Reservation {
                    key: sg_pr::ReservationKey(0x2b),
                    pr_type: Some(pr_type),
                    type_code: pr_type.scsi_code(),
                    scope: 0,
                }),
            })
        };
        let mut r = Report::default();
        reservation_check(
            &config,
            "lun x",
            status(FENCING_TYPE),
            &Flavour::NVME,
            &mut r,
        );
        reservation_check(
            &config,
            "lun x",
            status(sg_pr::PrType::ExclusiveAccess),
            &Flavour::NVME,
            &mut r,
        );
        assert_eq!(r.checks[0].verdict, Verdict::Pass);
        assert!(
            r.checks[0].message.starts_with(
                "reserved, Write Exclusive – Registrants Only (NVMe type 3), holder 0x2b"
            ),
            "{}",
            r.checks[0]
        );
        assert_eq!(r.checks[1].verdict, Verdict::Fail);
        assert!(r.checks[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("nvme resv-release"));
    }
}
