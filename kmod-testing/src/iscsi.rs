//! Topology (b): several node guests share N LUNs over iSCSI, each guest its own initiator.
//!
//! Two target implementations, because real SANs differ and the product must handle both:
//! - [`Target::Lio`]: Linux's LIO iSCSI target in a storage guest (full SPC-4 persistent
//!   reservations, PREEMPT AND ABORT included), reached through a QEMU user-net port forward;
//! - [`Target::Tgt`]: tgtd on host loopback (no PREEMPT AND ABORT: it answers ILLEGAL REQUEST).
//!
//! Node guests attach each LUN with QEMU's iSCSI initiator and `scsi-block`, so SCSI commands
//! from the guest reach the target unchanged and every guest is a distinct I_T nexus.
//!
//! Multipath ([`Target::start_with_paths`], LIO only): the storage guest serves every LUN through
//! several target portal groups, `tpgt_1` on guest port 3260, `tpgt_2` on 3261, ..., each its own
//! SCSI target port (relative target port id 1, 2, ... per LUN), each forwarded from its own host
//! port. [`Target::node_spec`] then attaches every LUN through every port: a node guest has one
//! disk per LUN and path, each on its own iSCSI session, so each its own I_T nexus — a
//! registration through one path is not a registration through the other (SPC-4 5.14.7).
//!
//! Target-side PR faults (LIO): [`Target::restart_dropping_pr_state`] and
//! [`Target::restart_keeping_pr_state`] rebuild the LUNs in the running storage guest with the
//! same identity and data.

use crate::error::{Error, IoContext, Result};
use crate::guest::{Guest, GuestSpec, BUSYBOX_SH};
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
        /// Host port forwarded to the guest's 3260 (path 0, `tpgt_1`).
        port: u16,
        /// Number of LUNs.
        luns: usize,
        /// Per path (target portal group `tpgt_<j+1>`, guest port 3260+j), its host port; the
        /// first is `port`.
        ports: Vec<u16>,
        /// Size of each LUN in MiB.
        size_mb: u64,
        /// LUN `i`'s unit serial is [`unit_serial`]`(serial_base + i)`.
        serial_base: usize,
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
    /// Starts a target of `kind` serving `luns` LUNs of `size_mb` MiB each, one path each.
    pub fn start(lab: &Lab, kind: TargetKind, luns: usize, size_mb: u64) -> Result<Target> {
        Target::start_with_paths(lab, kind, luns, size_mb, 1)
    }

    /// Starts a target of `kind` serving `luns` LUNs of `size_mb` MiB each through `paths`
    /// target ports (see the module doc). More than one path needs [`TargetKind::Lio`].
    pub fn start_with_paths(
        lab: &Lab,
        kind: TargetKind,
        luns: usize,
        size_mb: u64,
        paths: usize,
    ) -> Result<Target> {
        if paths == 0 || (paths > 1 && kind != TargetKind::Lio) {
            return Err(Error::Setup(format!(
                "{paths} paths per LUN on a {kind:?} target: the harness gives several paths \
                 (target portal groups) only with LIO"
            )));
        }
        match kind {
            TargetKind::Lio => {
                let ports = (0..paths)
                    .map(|_| Lab::free_port())
                    .collect::<Result<Vec<_>>>()?;
                let plan = LioPlan::main(ports, luns, size_mb);
                Ok(start_lio(lab, vec![plan])?.remove(0))
            }
            TargetKind::Tgt => start_tgt(lab, Lab::free_port()?, luns, size_mb),
        }
    }

    /// A second LIO target, beside the one [`Target::start`] makes, for faults that must hit
    /// some LUNs only: its own storage guest `storage-extra` (256 MiB), so that pausing it
    /// ([`Target::pause`]) hangs exactly its `luns` LUNs while the other target answers. Its
    /// LUNs' unit serials, hence NAA ids (VPD 0x83), sort after those of any main target of up
    /// to 2^31 LUNs: software that orders LUNs by identity (fenced does) meets them last.
    /// Attach them in a node on a controller of their own
    /// ([`GuestSpec::separate_scsi_controller`]), or the guest's SCSI error handling for the
    /// hung LUNs stalls the others too.
    pub fn start_extra(lab: &Lab, luns: usize, size_mb: u64) -> Result<Target> {
        Ok(start_lio(lab, vec![LioPlan::extra(luns, size_mb)?])?.remove(0))
    }

    /// [`Target::start_with_paths`] and [`Target::start_extra`] (with `extra_luns` of
    /// `size_mb`) together: with LIO, both storage guests boot and are set up at once.
    pub fn start_with_extra(
        lab: &Lab,
        kind: TargetKind,
        luns: usize,
        size_mb: u64,
        paths: usize,
        extra_luns: usize,
    ) -> Result<(Target, Target)> {
        if kind != TargetKind::Lio {
            let main = Target::start_with_paths(lab, kind, luns, size_mb, paths)?;
            return Ok((main, Target::start_extra(lab, extra_luns, size_mb)?));
        }
        if paths == 0 {
            return Err(Error::Setup("0 paths per LUN".into()));
        }
        let ports = (0..paths)
            .map(|_| Lab::free_port())
            .collect::<Result<Vec<_>>>()?;
        let mut both = start_lio(
            lab,
            vec![
                LioPlan::main(ports, luns, size_mb),
                LioPlan::extra(extra_luns, size_mb)?,
            ],
        )?;
        let extra = both.remove(1);
        Ok((both.remove(0), extra))
    }

    /// The URL of LUN `index` (0-based) for [`GuestSpec::iscsi_lun`] (through path 0).
    pub fn lun_url(&self, index: usize) -> String {
        self.path_url(index, 0)
    }

    /// The URL of LUN `index` through path `path` (LIO: target port `tpgt_<path+1>`), e.g. for
    /// [`Guest::attach_path`]. tgt has one portal: every path is that one (a new session to it
    /// is still a new I_T nexus). Panics if a LIO target has no such path.
    pub fn path_url(&self, index: usize, path: usize) -> String {
        match self {
            // LIO numbers LUNs from 0; tgt keeps LUN 0 for its controller.
            Target::Lio { ports, .. } => {
                let Some(port) = ports.get(path) else {
                    panic!(
                        "the LIO target has {} path(s), not a path {path}",
                        ports.len()
                    )
                };
                format!("iscsi://127.0.0.1:{port}/{TARGET_IQN}/{index}")
            }
            Target::Tgt { port, .. } => {
                format!("iscsi://127.0.0.1:{port}/{TARGET_IQN}/{}", index + 1)
            }
        }
    }

    /// Number of paths (target ports) per LUN.
    pub fn paths(&self) -> usize {
        match self {
            Target::Lio { ports, .. } => ports.len(),
            Target::Tgt { .. } => 1,
        }
    }

    /// The storage guest of a LIO target.
    pub fn storage_guest(&self) -> Option<&Guest> {
        match self {
            Target::Lio { guest, .. } => Some(guest),
            Target::Tgt { .. } => None,
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

    /// A node-guest spec with initiator `iqn.2026-11.org.fenced:<name>` and every LUN attached
    /// through every path (LUN `i` path `j` is the guest's QEMU device `lun<i>-p<j>`, see
    /// [`Guest::lun_paths`]).
    pub fn node_spec(&self, name: &str) -> GuestSpec {
        let mut spec = GuestSpec::new(name).initiator(&format!("iqn.2026-11.org.fenced:{name}"));
        for i in 0..self.luns() {
            spec = match self.paths() {
                1 => spec.iscsi_lun(&self.lun_url(i)),
                n => spec.iscsi_lun_paths(&(0..n).map(|j| self.path_url(i, j)).collect::<Vec<_>>()),
            };
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

    /// LIO: the target loses every registration and reservation, as an array whose PR database
    /// is wiped (a controller replaced or reinitialised), while its LUNs keep their identity
    /// (VPD 0x80 unit serial, VPD 0x83 NAA id, relative target port ids) and their data. In the
    /// running storage guest: every target portal group disabled (LIO closes every session at
    /// once), every LUN unmapped and its backstore removed, the APTPL files deleted, all rebuilt
    /// identically and enabled again. The nodes' QEMU iSCSI initiators reconnect on their own,
    /// each with its old ISID (same I_T nexus, now unregistered). Meanwhile the nodes' commands
    /// wait in QEMU: no error, no UNIT ATTENTION reaches the guest. The target stays down at
    /// least 2 s (the script waits that long before rebuilding; the rebuild itself takes well
    /// under a second per dozen LUNs), as a real array's restart takes a while; before the
    /// storage guest's scripts ran under busybox the rebuild alone took 2.3-6.6 s under TCG. A
    /// command issued meanwhile completes 0.9-2.4 s after the target is back (libiscsi's
    /// reconnect). A node learns of
    /// the loss only by reading the keys. Returns how long the target was down (from disabling to enabling the portal
    /// groups, as the storage guest timed it).
    pub fn restart_dropping_pr_state(&self) -> Result<Duration> {
        self.lio_restart(false)
    }

    /// LIO: the same rebuild as [`Target::restart_dropping_pr_state`], but the PR state LIO
    /// persisted under APTPL (Activate Persist Through Power Loss) comes back, as LIO's own
    /// tooling (targetcli/rtslib `restoreconfig`) brings it back after a reboot.
    ///
    /// How LIO does APTPL (verified on the harness kernel, 6.1): the APTPL bit of the latest
    /// successful REGISTER (or REGISTER AND IGNORE) applies to the whole LUN, per SPC-4. While
    /// it is set, LIO rewrites `<dbroot>/pr/aptpl_<unit serial>` (dbroot `/var/target`) after
    /// every PR change with *every* registration and the reservation, made with APTPL or not;
    /// a later REGISTER without APTPL turns it off and the file then says "No Registrations or
    /// Reservations". The kernel never reads the file back, not even when the backstore is
    /// enabled: userspace must feed each registration to the new backstore's
    /// `pr/res_aptpl_metadata` before the LUN is exported (LIO refuses it afterwards), which
    /// the harness does as rtslib does. The registrations then reattach to their I_T nexuses
    /// (initiator name and ISID, target port) when the LUN is mapped again; the nodes' QEMU
    /// initiators reconnect with their old ISIDs, so each node finds its registration (and
    /// reservation) back. LIO writes the file from its kernel threads, which see the storage
    /// guest's initramfs root: it is `/proc/1/root/var/target/pr/` from the guest's commands.
    pub fn restart_keeping_pr_state(&self) -> Result<Duration> {
        self.lio_restart(true)
    }

    fn lio_restart(&self, keep_aptpl: bool) -> Result<Duration> {
        let Target::Lio {
            guest,
            luns,
            ports,
            size_mb,
            serial_base,
            ..
        } = self
        else {
            return Err(Error::Setup(
                "restarting the target with its PR state is a LIO fault; tgt has none".into(),
            ));
        };
        let paths = ports.len();
        let mut script = format!(
            r#"{BUSYBOX_SH}set -e
T=/sys/kernel/config/target
now() {{ cut -d' ' -f1 /proc/uptime; }}
down=$(now)
for j in $(seq 1 {paths}); do echo 0 > $T/iscsi/{TARGET_IQN}/tpgt_$j/enable; done
for j in $(seq 1 {paths}); do
    for l in $T/iscsi/{TARGET_IQN}/tpgt_$j/lun/lun_*; do rm $l/lun; rmdir $l; done
done
sleep 2
"#
        );
        for i in 0..*luns {
            script.push_str(&format!(
                "rmdir $T/core/fileio_{i}/lun{i}
"
            ));
        }
        if !keep_aptpl {
            script.push_str(&format!(
                "rm -f {}
",
                aptpl_dirs("/aptpl_*")
            ));
        }
        script.push_str(&lio_luns_script(
            *luns,
            *size_mb,
            paths,
            *serial_base,
            keep_aptpl,
        ));
        script.push_str(&lio_enable_script(paths));
        script.push_str("up=$(now)\necho \"$down $up\"\n");
        let out = guest.run_ok(&script)?;
        let times: Vec<f64> = out
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match times.as_slice() {
            [down, up] => Ok(Duration::from_secs_f64((up - down).max(0.0))),
            _ => Err(Error::Setup(format!(
                "target restart: no timing in its output: {out}"
            ))),
        }
    }
}

/// LIO writes APTPL files from the kernel thread that runs the PR OUT command; kernel threads
/// see the initramfs root, not the guest's chroot, so look at both (`/proc/1/root` is the
/// initramfs: PID 1 is the harness's init, which never leaves it).
fn aptpl_dirs(file: &str) -> String {
    format!("/var/target/pr{file} /proc/1/root/var/target/pr{file}")
}

/// Creates LUN backstores 0..luns (fileio over `/var/tmp/lun<i>.img`, sparse files on the
/// guest's tmpfs, kept across rebuilds), their unit serials ([`unit_serial`] of `serial_base +
/// i`), and maps each in the portal groups 1..=paths. With `restore_aptpl`, the
/// registrations of each LUN's APTPL file are fed to its backstore before it is mapped (as
/// rtslib does: the kernel refuses APTPL metadata once the LUN is exported).
fn lio_luns_script(
    luns: usize,
    size_mb: u64,
    paths: usize,
    serial_base: usize,
    restore_aptpl: bool,
) -> String {
    let mut script = String::new();
    for i in 0..luns {
        let serial = unit_serial(serial_base + i);
        script.push_str(&format!(
            r#"mkdir -p $T/core/fileio_{i}/lun{i}
echo "fd_dev_name=/var/tmp/lun{i}.img,fd_dev_size={bytes}" > $T/core/fileio_{i}/lun{i}/control
echo 1 > $T/core/fileio_{i}/lun{i}/enable
echo {serial} > $T/core/fileio_{i}/lun{i}/wwn/vpd_unit_serial
"#,
            bytes = size_mb << 20,
        ));
        if restore_aptpl {
            script.push_str(&format!(
                r#"for f in {files}; do
    [ -s $f ] || continue
    awk '/^PR_REG_START/ {{ r = ""; next }} /^PR_REG_END/ {{ print r; next }} NF {{ r = (r == "" ? $1 : r "," $1) }}' $f |
        while read -r reg; do echo "$reg" > $T/core/fileio_{i}/lun{i}/pr/res_aptpl_metadata; done
    break
done
"#,
                files = aptpl_dirs(&format!("/aptpl_{serial}"))
            ));
        }
        for j in 1..=paths {
            script.push_str(&format!(
                r#"mkdir -p $T/iscsi/{TARGET_IQN}/tpgt_{j}/lun/lun_{i}
ln -s $T/core/fileio_{i}/lun{i} $T/iscsi/{TARGET_IQN}/tpgt_{j}/lun/lun_{i}/lun
"#
            ));
        }
    }
    script
}

fn lio_enable_script(paths: usize) -> String {
    (1..=paths)
        .map(|j| {
            format!(
                "echo 1 > $T/iscsi/{TARGET_IQN}/tpgt_{j}/enable
"
            )
        })
        .collect()
}

/// One LIO storage guest to start: its guest name and memory, the host port of each path, and
/// its LUNs (count, size, first unit serial index).
struct LioPlan {
    name: &'static str,
    memory_mb: u32,
    ports: Vec<u16>,
    luns: usize,
    size_mb: u64,
    serial_base: usize,
}

/// Boots the storage guests of `plans` at once and sets up their LIO targets at once. Guests
/// are started and waited for from the calling thread: QEMU dies with the thread that started
/// it (PR_SET_PDEATHSIG follows the parent thread, not the process).
fn start_lio(lab: &Lab, plans: Vec<LioPlan>) -> Result<Vec<Target>> {
    let specs = plans
        .iter()
        .map(|plan| {
            let mut spec = GuestSpec::new(plan.name)
                .i6300esb(false)
                .memory_mb(plan.memory_mb);
            for (j, port) in plan.ports.iter().enumerate() {
                spec = spec.forward_port(*port, guest_port(j));
            }
            spec
        })
        .collect();
    let guests = lab.boot_all(specs)?;
    let pending = guests
        .iter()
        .zip(&plans)
        .map(|(guest, plan)| guest.spawn(&lio_setup_script(plan)))
        .collect::<Result<Vec<_>>>()?;
    for ((guest, plan), p) in guests.iter().zip(&plans).zip(pending) {
        let limit = 120 + 2 * plan.luns * plan.ports.len();
        let out = guest.wait(
            p,
            Duration::from_secs(u64::try_from(limit).unwrap_or(u64::MAX)),
        )?;
        if !out.success() {
            return Err(Error::Setup(format!(
                "{}: the LIO set-up script exited {}: {}{}",
                plan.name, out.code, out.stdout, out.stderr
            )));
        }
    }
    let mut targets = Vec::new();
    for (guest, plan) in guests.into_iter().zip(plans) {
        for port in &plan.ports {
            wait_for_iscsi(*port, plan.luns.saturating_sub(1))?;
        }
        targets.push(Target::Lio {
            guest,
            port: plan.ports[0],
            luns: plan.luns,
            ports: plan.ports,
            size_mb: plan.size_mb,
            serial_base: plan.serial_base,
        });
    }
    Ok(targets)
}

/// The configfs script that builds a plan's target in its freshly booted storage guest.
fn lio_setup_script(plan: &LioPlan) -> String {
    let paths = plan.ports.len();
    let mut script = String::from(BUSYBOX_SH);
    script.push_str(
        r#"set -e
modprobe -a target_core_mod target_core_file iscsi_target_mod virtio_net
# iSCSI digests' CRC32C: a module on 6.1, built into the newest kernel.
modprobe crc32c_generic 2>/dev/null || true
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
T=/sys/kernel/config/target
"#,
    );
    for j in 0..paths {
        script.push_str(&format!(
            r#"I=$T/iscsi/{TARGET_IQN}/tpgt_{tpgt}
mkdir -p $I/np/0.0.0.0:{port}
echo 1 > $I/attrib/generate_node_acls
echo 1 > $I/attrib/cache_dynamic_acls
echo 0 > $I/attrib/demo_mode_write_protect
echo 0 > $I/attrib/authentication
"#,
            tpgt = j + 1,
            port = guest_port(j),
        ));
    }
    script.push_str(&lio_luns_script(
        plan.luns,
        plan.size_mb,
        paths,
        plan.serial_base,
        false,
    ));
    script.push_str(&lio_enable_script(paths));
    script
}

impl LioPlan {
    /// The main target: guest `storage`, 512 MiB, LUN serials from 0.
    fn main(ports: Vec<u16>, luns: usize, size_mb: u64) -> LioPlan {
        LioPlan {
            name: "storage",
            memory_mb: 512,
            ports,
            luns,
            size_mb,
            serial_base: 0,
        }
    }

    /// The extra target ([`Target::start_extra`]).
    fn extra(luns: usize, size_mb: u64) -> Result<LioPlan> {
        Ok(LioPlan {
            name: "storage-extra",
            memory_mb: 256,
            ports: vec![Lab::free_port()?],
            luns,
            size_mb,
            serial_base: EXTRA_SERIAL_BASE,
        })
    }
}

/// The storage guest's iSCSI port of path `j` (target portal group `tpgt_<j+1>`).
fn guest_port(j: usize) -> u16 {
    3260 + u16::try_from(j).unwrap_or(0)
}

/// The first [`unit_serial`] index of a [`Target::start_extra`] target.
const EXTRA_SERIAL_BASE: usize = 0x8000_0000;

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
