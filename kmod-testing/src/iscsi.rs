//! Topology (b): several node guests share N LUNs over iSCSI, each guest its own initiator.
//!
//! Two target implementations, because real SANs differ and the product must handle both:
//! - [`Target::Lio`]: Linux's LIO iSCSI target in a storage guest (full SPC-4 persistent
//!   reservations, PREEMPT AND ABORT included), reached through a QEMU user-net port forward;
//! - [`Target::Tgt`]: tgtd on host loopback (no PREEMPT AND ABORT: it answers ILLEGAL REQUEST).
//!
//! Node guests attach each LUN with QEMU's iSCSI initiator and `scsi-block`, so SCSI commands
//! from the guest reach the target unchanged and every guest is a distinct I_T nexus.

use crate::error::{Error, IoContext, Result};
use crate::guest::{Guest, GuestSpec};
use crate::lab::Lab;
use crate::process::ChildGuard;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The IQN of the target the harness creates.
pub const TARGET_IQN: &str = "iqn.2026-11.org.fenced:lab";

/// Which iSCSI target implementation serves the LUNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// LIO in a storage guest.
    Lio,
    /// tgtd on the host.
    Tgt,
}

/// A running iSCSI target with its LUNs.
pub enum Target {
    /// LIO's iSCSI target in a storage guest.
    Lio {
        /// The storage guest (pause it to pause the target).
        guest: Guest,
        /// Host port forwarded to the guest's 3260.
        port: u16,
        /// Number of LUNs.
        luns: usize,
    },
    /// tgtd on 127.0.0.1.
    Tgt {
        /// The tgtd process.
        tgtd: Tgtd,
        /// Its iSCSI port.
        port: u16,
        /// Number of LUNs.
        luns: usize,
    },
}

/// tgtd on host loopback, with its own management port so tests can run side by side.
pub struct Tgtd {
    process: ChildGuard,
    control_port: u16,
    backing: Vec<PathBuf>,
}

impl Tgtd {
    fn admin(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("tgtadm")
            .arg("-C")
            .arg(self.control_port.to_string())
            .args(["--lld", "iscsi"])
            .args(args)
            .output()
            .map_err(|_| Error::MissingTool {
                tool: "tgtadm (Debian package tgt)".into(),
            })?;
        if !out.status.success() {
            return Err(Error::Setup(format!(
                "tgtadm {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The backing files of the LUNs (host paths).
    pub fn backing_files(&self) -> &[PathBuf] {
        &self.backing
    }
}

impl Target {
    /// Starts a target of `kind` serving `luns` LUNs of `size_mb` MiB each.
    pub fn start(lab: &Lab, kind: TargetKind, luns: usize, size_mb: u64) -> Result<Target> {
        let port = Lab::free_port()?;
        match kind {
            TargetKind::Lio => start_lio(lab, port, luns, size_mb),
            TargetKind::Tgt => start_tgt(lab, port, luns, size_mb),
        }
    }

    /// The URL of LUN `index` (0-based) for [`GuestSpec::iscsi_lun`].
    pub fn lun_url(&self, index: usize) -> String {
        match self {
            // LIO numbers LUNs from 0; tgt keeps LUN 0 for its controller.
            Target::Lio { port, .. } => format!("iscsi://127.0.0.1:{port}/{TARGET_IQN}/{index}"),
            Target::Tgt { port, .. } => {
                format!("iscsi://127.0.0.1:{port}/{TARGET_IQN}/{}", index + 1)
            }
        }
    }

    /// Number of LUNs.
    pub fn luns(&self) -> usize {
        match self {
            Target::Lio { luns, .. } | Target::Tgt { luns, .. } => *luns,
        }
    }

    /// Which implementation this is.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Lio { .. } => TargetKind::Lio,
            Target::Tgt { .. } => TargetKind::Tgt,
        }
    }

    /// A node-guest spec with initiator `iqn.2026-11.org.fenced:<name>` and every LUN attached.
    pub fn node_spec(&self, name: &str) -> GuestSpec {
        let mut spec = GuestSpec::new(name).initiator(&format!("iqn.2026-11.org.fenced:{name}"));
        for i in 0..self.luns() {
            spec = spec.iscsi_lun(&self.lun_url(i));
        }
        spec
    }

    /// Stops the target from answering (SIGSTOP to tgtd or to the storage guest's QEMU):
    /// commands in flight and new ones hang, as on a SAN whose controller froze.
    pub fn pause(&self) -> Result<()> {
        match self {
            Target::Lio { guest, .. } => guest.pause(),
            Target::Tgt { tgtd, .. } => tgtd.process.signal(Signal::SIGSTOP),
        }
    }

    /// Lets a paused target answer again.
    pub fn resume(&self) -> Result<()> {
        match self {
            Target::Lio { guest, .. } => guest.resume(),
            Target::Tgt { tgtd, .. } => tgtd.process.signal(Signal::SIGCONT),
        }
    }
}

fn start_lio(lab: &Lab, port: u16, luns: usize, size_mb: u64) -> Result<Target> {
    let guest = lab.boot(
        GuestSpec::new("storage")
            .forward_port(port, 3260)
            .i6300esb(false),
    )?;
    let mut script = format!(
        r#"set -e
modprobe -a target_core_mod target_core_file iscsi_target_mod crc32c_generic virtio_net
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
T=/sys/kernel/config/target
I=$T/iscsi/{TARGET_IQN}/tpgt_1
mkdir -p $I/np/0.0.0.0:3260
"#
    );
    for i in 0..luns {
        script.push_str(&format!(
            r#"mkdir -p $T/core/fileio_{i}/lun{i}
echo "fd_dev_name=/var/tmp/lun{i}.img,fd_dev_size={bytes}" > $T/core/fileio_{i}/lun{i}/control
echo 1 > $T/core/fileio_{i}/lun{i}/enable
echo {serial} > $T/core/fileio_{i}/lun{i}/wwn/vpd_unit_serial
mkdir -p $I/lun/lun_{i}
ln -s $T/core/fileio_{i}/lun{i} $I/lun/lun_{i}/lun
"#,
            bytes = size_mb << 20,
            serial = unit_serial(i),
        ));
    }
    script.push_str(
        r#"echo 1 > $I/attrib/generate_node_acls
echo 1 > $I/attrib/cache_dynamic_acls
echo 0 > $I/attrib/demo_mode_write_protect
echo 0 > $I/attrib/authentication
echo 1 > $I/enable
"#,
    );
    guest.run_ok(&script)?;
    wait_for_iscsi(port, luns.saturating_sub(1))?;
    Ok(Target::Lio { guest, port, luns })
}

/// The VPD 0x80 unit serial number the harness gives LIO backstore `index`. LIO reports no VPD
/// pages (0x00 lists none, 0x83 has no NAA designator) until one is set, as targetcli always
/// does; LIO derives the LUN's NAA id from its first 25 hex digits, so the index comes first.
pub(crate) fn unit_serial(index: usize) -> String {
    format!("{index:08x}-5f2a-4c00-8000-0000fe4ced00")
}

fn start_tgt(lab: &Lab, port: u16, luns: usize, size_mb: u64) -> Result<Target> {
    // The management socket is /var/run/tgtd/socket.<control port>: one per tgtd.
    // tgtd accepts control ports up to 32767; mix pid and a counter so labs of one process and
    // of concurrent processes do not share a socket.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let control_port = 1000 + u16::try_from((std::process::id() * 8 + n) % 30000).unwrap_or(0);
    let mut cmd = Command::new("tgtd");
    cmd.args(["-f", "-C", &control_port.to_string()])
        .arg("--iscsi")
        .arg(format!("portal=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(lab.dir().join("tgtd.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
    let mut process = ChildGuard::spawn(cmd, "tgtd")?;
    let sock = PathBuf::from(format!("/var/run/tgtd/socket.{control_port}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if Instant::now() > deadline || process.exited() {
            return Err(Error::Setup(format!(
                "tgtd did not open its management socket {} (log: {})",
                sock.display(),
                lab.dir().join("tgtd.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut tgtd = Tgtd {
        process,
        control_port,
        backing: Vec::new(),
    };
    // The daemon creates the socket before it accepts on it; retry the first command briefly.
    let new_target = [
        "--mode",
        "target",
        "--op",
        "new",
        "--tid",
        "1",
        "--targetname",
        TARGET_IQN,
    ];
    loop {
        match tgtd.admin(&new_target) {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e),
        }
    }
    for i in 0..luns {
        let file = lab.dir().join(format!("tgt-lun{i}.img"));
        let f = std::fs::File::create(&file).ctx(|| format!("creating {}", file.display()))?;
        f.set_len(size_mb << 20)
            .ctx(|| format!("sizing {}", file.display()))?;
        let lun = (i + 1).to_string();
        let path = file.display().to_string();
        tgtd.admin(&[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            "1",
            "--lun",
            &lun,
            "--backing-store",
            &path,
        ])?;
        tgtd.backing.push(file);
    }
    tgtd.admin(&[
        "--mode",
        "target",
        "--op",
        "bind",
        "--tid",
        "1",
        "--initiator-address",
        "ALL",
    ])?;
    wait_for_iscsi(port, luns)?;
    Ok(Target::Tgt { tgtd, port, luns })
}

/// Waits until the target answers an iSCSI INQUIRY on `lun` (iscsi-inq from libiscsi-bin).
fn wait_for_iscsi(port: u16, lun: usize) -> Result<()> {
    let url = format!("iscsi://127.0.0.1:{port}/{TARGET_IQN}/{lun}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("timeout")
            .args(["5", "iscsi-inq", "-i", "iqn.2026-11.org.fenced:probe", &url])
            .output()
            .map_err(|_| Error::MissingTool {
                tool: "iscsi-inq (Debian package libiscsi-bin)".into(),
            })?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(format!(
                "iSCSI target {url} does not answer: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
