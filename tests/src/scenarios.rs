//! The harness self-test scenarios: each boots guests, injects one fault, and reports what it saw.

use crate::{blocks, sg_persist, Narrator};
use kmod_testing::iscsi::{Target, TargetKind};
use kmod_testing::{faults, tcm_loop, Error, Guest, GuestSpec, Lab, Result};
use std::time::{Duration, Instant};

/// Key of the initiator that gets cut off.
pub const VICTIM_KEY: u64 = 0xa1;
/// Key of the initiator that survives.
pub const SURVIVOR_KEY: u64 = 0xb2;

/// What a preemption scenario observed.
#[derive(Debug, Clone, Default)]
pub struct PreemptReport {
    /// READ KEYS as each side saw it after both registered.
    pub keys_before: Vec<Vec<u64>>,
    /// Reservation (holder key, type) after the victim reserved.
    pub reservation_before: Option<(u64, String)>,
    /// Exit code of the preempting command and its stderr.
    pub preempt_code: i32,
    /// stderr of the preempting command.
    pub preempt_stderr: String,
    /// READ KEYS after the preemption (from the survivor).
    pub keys_after: Vec<u64>,
    /// Reservation after the preemption.
    pub reservation_after: Option<(u64, String)>,
    /// Exit code of the victim's 4 KiB O_DIRECT write after the preemption.
    pub victim_write_code: i32,
    /// What the victim's write printed.
    pub victim_write_stderr: String,
    /// Distinct bytes of the victim's target block, read by the survivor (`[0]`: never written).
    pub victim_block_seen_by_survivor: Vec<u8>,
    /// Exit code of the survivor's write.
    pub survivor_write_code: i32,
    /// Distinct bytes of the survivor's block, read back by the victim (WE-RO allows reads).
    pub survivor_block_seen_by_victim: Vec<u8>,
}

const VICTIM_BLOCK: u64 = 100;
const SURVIVOR_BLOCK: u64 = 101;

/// Runs the common PR sequence between a victim and a survivor path to one LUN: both register,
/// the victim reserves type 5 (WE-RO), the survivor preempts (with ABORT when `abort`), then each
/// writes one block.
fn preempt_sequence(
    say: Narrator<'_>,
    victim: (&Guest, &str),
    survivor: (&Guest, &str),
    abort: bool,
) -> Result<PreemptReport> {
    let mut r = PreemptReport::default();
    let (vg, vdev) = victim;
    let (sg, sdev) = survivor;
    must(
        sg_persist::register(vg, vdev, VICTIM_KEY)?,
        vg,
        "register victim key",
    )?;
    must(
        sg_persist::register(sg, sdev, SURVIVOR_KEY)?,
        sg,
        "register survivor key",
    )?;
    r.keys_before = vec![
        sg_persist::read_keys(vg, vdev)?,
        sg_persist::read_keys(sg, sdev)?,
    ];
    say(&format!(
        "registered: {}:{vdev} key 0x{VICTIM_KEY:x}, {}:{sdev} key 0x{SURVIVOR_KEY:x}; READ KEYS from each side: {:x?}",
        vg.name(),
        sg.name(),
        r.keys_before
    ));
    must(
        sg_persist::reserve(vg, vdev, VICTIM_KEY, sg_persist::WERO)?,
        vg,
        "reserve type 5",
    )?;
    r.reservation_before = sg_persist::read_reservation(sg, sdev)?;
    say(&format!(
        "reservation held by {:x?} ({})",
        r.reservation_before.as_ref().map(|x| x.0),
        r.reservation_before
            .as_ref()
            .map(|x| x.1.as_str())
            .unwrap_or("none")
    ));
    let pre = sg_persist::preempt(sg, sdev, SURVIVOR_KEY, VICTIM_KEY, sg_persist::WERO, abort)?;
    r.preempt_code = pre.code;
    r.preempt_stderr = pre.stderr.trim().to_string();
    say(&format!(
        "{} from {}: exit {}{}",
        if abort {
            "PREEMPT AND ABORT"
        } else {
            "PREEMPT"
        },
        sg.name(),
        pre.code,
        if pre.stderr.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", pre.stderr.trim())
        }
    ));
    r.keys_after = sg_persist::read_keys(sg, sdev)?;
    r.reservation_after = sg_persist::read_reservation(sg, sdev)?;
    say(&format!(
        "after: keys {:x?}, reservation held by {:x?}",
        r.keys_after,
        r.reservation_after.as_ref().map(|x| x.0)
    ));
    let w = blocks::write(vg, vdev, VICTIM_BLOCK, b'V')?;
    r.victim_write_code = w.code;
    r.victim_write_stderr = w.stderr.trim().to_string();
    r.victim_block_seen_by_survivor = blocks::distinct_bytes(sg, sdev, VICTIM_BLOCK)?;
    say(&format!(
        "victim's 4 KiB O_DIRECT write: exit {} ({}); the block as the survivor reads it: {:?}",
        w.code, r.victim_write_stderr, r.victim_block_seen_by_survivor
    ));
    let w = blocks::write(sg, sdev, SURVIVOR_BLOCK, b'S')?;
    r.survivor_write_code = w.code;
    r.survivor_block_seen_by_victim = blocks::distinct_bytes(vg, vdev, SURVIVOR_BLOCK)?;
    say(&format!(
        "survivor's write: exit {}; the block as the victim reads it: {:?}",
        w.code, r.survivor_block_seen_by_victim
    ));
    Ok(r)
}

fn must(out: kmod_testing::Output, g: &Guest, what: &str) -> Result<()> {
    if out.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "{}: {what} failed (exit {}): {}",
            g.name(),
            out.code,
            out.stderr
        )))
    }
}

/// Topology (a): one guest, one LIO LUN through two tcm_loop nexuses; nexus 1 is the victim,
/// nexus 2 preempts it (plain PREEMPT: PREEMPT AND ABORT hangs tcm_loop on 6.1).
pub fn tcm_loop_preempt(say: Narrator<'_>) -> Result<PreemptReport> {
    let lab = Lab::new("tcm-loop-preempt")?;
    let g = lab.boot(GuestSpec::new("tcmloop"))?;
    let lun = tcm_loop::setup(&g, 2, 64)?;
    say(&format!(
        "one LIO fileio LUN seen through two tcm_loop nexuses: {} (initiator {}) and {} (initiator {})",
        lun.devices[0], lun.initiators[0], lun.devices[1], lun.initiators[1]
    ));
    preempt_sequence(say, (&g, &lun.devices[0]), (&g, &lun.devices[1]), false)
}

/// Topology (b): a target of `kind` and two node guests, each its own iSCSI initiator, one LUN.
/// node1 is the victim; node2 preempts with ABORT when `abort`.
pub fn iscsi_preempt(say: Narrator<'_>, kind: TargetKind, abort: bool) -> Result<PreemptReport> {
    let lab = Lab::new(&format!("iscsi-{kind:?}-preempt").to_lowercase())?;
    let target = Target::start(&lab, kind, 1, 64)?;
    say(&format!("{kind:?} iSCSI target up: {}", target.lun_url(0)));
    let nodes = lab.boot_all(vec![target.node_spec("node1"), target.node_spec("node2")])?;
    let d1 = nodes[0].scsi_disks(1)?.remove(0);
    let d2 = nodes[1].scsi_disks(1)?.remove(0);
    preempt_sequence(say, (&nodes[0], &d1), (&nodes[1], &d2), abort)
}

/// Which watchdog the freeze scenario arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogKind {
    /// QEMU's emulated i6300esb: a timer outside the guest's kernel.
    I6300esb,
    /// softdog: a timer inside the guest's kernel.
    Softdog,
}

/// The /dev node of the guest's watchdog whose sysfs identity is `identity`
/// ("i6300ESB timer", "Software Watchdog").
pub fn watchdog_device(g: &Guest, identity: &str) -> Result<String> {
    let out = g.run_ok(&format!(
        r#"for w in /sys/class/watchdog/watchdog*; do
    if [ "$(cat $w/identity)" = "{identity}" ]; then echo /dev/$(basename $w); fi
done"#
    ))?;
    match out.lines().next() {
        Some(dev) => Ok(dev.trim().to_string()),
        None => Err(Error::Setup(format!(
            "no {identity} watchdog in guest {}",
            g.name()
        ))),
    }
}

/// What the watchdog-under-freeze scenario observed.
#[derive(Debug, Clone)]
pub struct FreezeReport {
    /// The watchdog device armed and its identity.
    pub device: String,
    /// Timeout the driver reported after arming.
    pub timeout_secs: u32,
    /// How long the kernel was frozen.
    pub freeze_secs: u32,
    /// Time from the start of the freeze to the guest's reset, if it reset while watched.
    pub reset_after: Option<Duration>,
    /// When the guest did not reset: time from the start of the freeze until the `insmod` that
    /// froze it returned, i.e. how long the kernel really stood still.
    pub thawed_after: Option<Duration>,
}

/// Arms `kind` at `timeout` s through the `watchdog` crate (the `wdprobe` driver at `wdprobe`
/// feeds it every second), freezes the whole kernel for `freeze_secs` (stop_machine), and times
/// the reset, watching up to `freeze_secs + 15` s.
pub fn watchdog_under_freeze(
    say: Narrator<'_>,
    kind: WatchdogKind,
    wdprobe: &std::path::Path,
    timeout: u32,
    freeze_secs: u32,
) -> Result<FreezeReport> {
    let lab = Lab::new(&format!("freeze-{kind:?}").to_lowercase())?;
    let g = lab.boot(GuestSpec::new("frozen").i6300esb(kind == WatchdogKind::I6300esb))?;
    if kind == WatchdogKind::Softdog {
        g.run_ok("modprobe softdog")?;
    }
    let wanted = match kind {
        WatchdogKind::I6300esb => "i6300ESB timer",
        WatchdogKind::Softdog => "Software Watchdog",
    };
    let dev = watchdog_device(&g, wanted)?;
    let _feeder = g.spawn(&format!(
        "exec {} arm {dev} {timeout} --feed-ms 1000 --feed-for-s 3600 --then drop",
        wdprobe.display()
    ))?;
    let sys = format!("/sys/class/watchdog/{}", dev.trim_start_matches("/dev/"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let timeout_secs = loop {
        // Armed = running with the requested timeout (the device starts on open, with the
        // driver's default timeout, a moment before the feeder sets ours).
        let state = g.run_ok(&format!("cat {sys}/state {sys}/timeout"))?;
        let mut lines = state.lines();
        let active = lines.next() == Some("active");
        let set: u32 = lines
            .next()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if active && set == timeout {
            break set;
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(format!("{dev} was not armed: {state}")));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    say(&format!(
        "{dev} ({wanted}) armed at {timeout_secs} s through the watchdog crate, fed every second"
    ));
    // Let it run fed for a few periods: it must not fire while the node is healthy.
    std::thread::sleep(Duration::from_secs(3));
    if !g.is_running() {
        return Err(Error::Setup(
            "the guest reset while its watchdog was being fed".into(),
        ));
    }
    say(&format!(
        "freezing the whole kernel for {freeze_secs} s (stop_machine, interrupts off)"
    ));
    // The module is built on the host first: its build (seconds, more on a loaded host) is not
    // part of the freeze.
    lab.kernel().build_module("freeze")?;
    let start = Instant::now();
    let freeze = faults::freeze_kernel(lab.kernel(), &g, freeze_secs)?;
    let reset_after = g
        .wait_exit(Duration::from_secs(u64::from(freeze_secs) + 15))
        .map(|at| at.saturating_duration_since(start));
    let mut thawed_after = None;
    match reset_after {
        Some(d) => say(&format!(
            "guest reset {:.1} s after the freeze began",
            d.as_secs_f64()
        )),
        None => {
            // The insmod returns when the kernel thaws. mdelay's calibration is loose under TCG
            // on a loaded host, so the freeze can outlast its nominal length: wait generously.
            let out = g.wait(freeze, Duration::from_secs(u64::from(freeze_secs) * 3))?;
            if !out.success() {
                return Err(Error::Setup(format!(
                    "the freeze module failed: {}",
                    out.stderr
                )));
            }
            let d = out.finished_at.saturating_duration_since(start);
            thawed_after = Some(d);
            say(&format!(
                "no reset within {} s of the freeze's start; the kernel thawed {:.1} s after the freeze began and runs on",
                freeze_secs + 15,
                d.as_secs_f64()
            ));
        }
    }
    Ok(FreezeReport {
        device: format!("{dev} ({wanted})"),
        timeout_secs,
        freeze_secs,
        reset_after,
        thawed_after,
    })
}
