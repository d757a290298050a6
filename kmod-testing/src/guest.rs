//! One QEMU guest: boot, drive it command by command, pause it, see it reset.

use crate::error::{Error, IoContext, Result};
use crate::kernel::{Kernel, KernelLine};
use crate::process::ChildGuard;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a guest is made of. Build with [`GuestSpec::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub(crate) name: String,
    pub(crate) memory_mb: u32,
    pub(crate) cpus: u32,
    pub(crate) i6300esb: bool,
    pub(crate) initiator: Option<String>,
    /// Per LUN, its controller group and the URL of each of its paths.
    pub(crate) iscsi_luns: Vec<(usize, Vec<String>)>,
    /// The controller group of the LUNs added next ([`GuestSpec::separate_scsi_controller`]).
    pub(crate) scsi_group: usize,
    pub(crate) shared_disks: Vec<(PathBuf, String)>,
    pub(crate) forwards: Vec<(u16, u16)>,
    pub(crate) boot_timeout: Duration,
    pub(crate) systemd: bool,
    /// The guest LAN: its multicast port on the host and this guest's index on it.
    pub(crate) lan: Option<(u16, u8)>,
    /// The kernel this guest boots whatever its lab's default ([`GuestSpec::kernel`]).
    pub(crate) kernel: Option<KernelLine>,
    /// A user-mode NIC even without port forwards ([`GuestSpec::user_net`]).
    pub(crate) user_net: bool,
    /// Extra kernel arguments of this guest ([`GuestSpec::append`]).
    pub(crate) append: String,
}

impl GuestSpec {
    /// A guest with 2 vCPUs, 512 MiB and an i6300esb watchdog.
    pub fn new(name: &str) -> GuestSpec {
        let boot_secs = std::env::var("FENCED_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120);
        GuestSpec {
            name: name.to_string(),
            memory_mb: 512,
            cpus: 2,
            i6300esb: true,
            initiator: None,
            iscsi_luns: Vec::new(),
            scsi_group: 0,
            shared_disks: Vec::new(),
            forwards: Vec::new(),
            boot_timeout: Duration::from_secs(boot_secs),
            systemd: false,
            lan: None,
            kernel: None,
            user_net: false,
            append: String::new(),
        }
    }

    /// A user-mode NIC (QEMU's slirp: the guest is 10.0.2.15, the host 10.0.2.2) through which
    /// the guest reaches ports on the host's loopback, e.g. another guest's forwarded port. The
    /// guest configures the address itself. [`GuestSpec::forward_port`] implies it.
    pub fn user_net(mut self) -> Self {
        self.user_net = true;
        self
    }

    /// Extra kernel arguments for this guest (e.g. `nvme_core.multipath=N`).
    pub fn append(mut self, args: &str) -> Self {
        self.append.push(' ');
        self.append.push_str(args);
        self
    }

    /// Boots kernel `line` whatever the lab's default and `FENCED_KERNEL` say: for a guest that
    /// needs what only one kernel has (an NVMe-oF target with reservations needs the newest).
    pub fn kernel(mut self, line: KernelLine) -> Self {
        self.kernel = Some(line);
        self
    }

    /// Memory in MiB.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Whether the guest has QEMU's emulated i6300esb hardware watchdog (default: yes).
    pub fn i6300esb(mut self, present: bool) -> Self {
        self.i6300esb = present;
        self
    }

    /// The iSCSI initiator name QEMU logs in with (each guest its own: a distinct I_T nexus).
    pub fn initiator(mut self, iqn: &str) -> Self {
        self.initiator = Some(iqn.to_string());
        self
    }

    /// An iSCSI LUN (`iscsi://host:port/iqn/lun`) attached as a SCSI passthrough disk
    /// (scsi-block): SCSI commands, PR included, reach the target unchanged. LUNs appear in the
    /// guest in the order given (see [`Guest::scsi_disks`]).
    pub fn iscsi_lun(mut self, url: &str) -> Self {
        self.iscsi_luns
            .push((self.scsi_group, vec![url.to_string()]));
        self
    }

    /// One iSCSI LUN reached through several paths (one `iscsi://` URL per target port, e.g.
    /// [`crate::iscsi::Target::path_url`]): one scsi-block device, hence one guest disk and one
    /// iSCSI session (I_T nexus), per path. LUN `i` path `j` (in the order of the LUNs given,
    /// counting [`GuestSpec::iscsi_lun`] ones, and of `urls`) is QEMU device `lun<i>-p<j>`
    /// ([`Guest::scsi_paths`], [`Guest::lun_paths`], [`Guest::detach_path`]).
    pub fn iscsi_lun_paths(mut self, urls: &[String]) -> Self {
        self.iscsi_luns.push((self.scsi_group, urls.to_vec()));
        self
    }

    /// The iSCSI LUNs added after this call go on virtio-scsi controllers of their own: a SCSI
    /// host in the guest that no earlier LUN shares. The guest kernel's SCSI error handling
    /// (after a command times out: abort, then device, target, bus and host reset) blocks every
    /// device of its host until it ends, so LUNs that a test hangs (a paused target) must not
    /// share a controller with the LUNs that must keep answering. Without this call LUNs still
    /// spread over several controllers, [`PATHS_PER_CONTROLLER`] paths each.
    pub fn separate_scsi_controller(mut self) -> Self {
        if self.iscsi_luns.iter().any(|(g, _)| *g == self.scsi_group) {
            self.scsi_group += 1;
        }
        self
    }

    /// A disk image shared with other guests (virtio-blk, no host cache, no image locking), seen
    /// in the guest with `serial` (see [`Guest::disk_by_serial`]).
    pub fn shared_disk(mut self, image: &Path, serial: &str) -> Self {
        self.shared_disks
            .push((image.to_path_buf(), serial.to_string()));
        self
    }

    /// A user-mode NIC forwarding host `127.0.0.1:host_port` to the guest's `guest_port`.
    /// Called again, it adds another forward on the same NIC.
    pub fn forward_port(mut self, host_port: u16, guest_port: u16) -> Self {
        self.forwards.push((host_port, guest_port));
        self
    }

    /// A NIC on a LAN of guests only (a QEMU socket netdev on the host's loopback multicast group
    /// 230.0.0.1 port `port`: every guest given the same port is on one Ethernet segment, apart
    /// from the storage transport and from any other lab's LAN). The guest sees it as the
    /// interface with MAC [`lan_mac`]`(index)` and configures its address itself; a test cuts it
    /// with [`Guest::set_lan_link`]. Get a port with [`crate::Lab::lan_port`].
    pub fn lan(mut self, port: u16, index: u8) -> Self {
        self.lan = Some((port, index));
        self
    }

    /// Whether systemd (the host's, Debian 12: 252) runs as the guest's PID 1 (default: no, a
    /// busybox init). With it, systemd runs chrooted in the guest's root with only the basic
    /// targets and journald ([`crate::SYSTEMD_UNITS`]); the guest's /etc/systemd/system starts
    /// empty for a test to install its units there. The guest is ready when systemd reports
    /// `running` (`systemctl is-system-running`); commands still run through the agent, outside
    /// any unit (in the root cgroup). A reset a unit causes ends QEMU as in any guest.
    pub fn systemd(mut self, pid1: bool) -> Self {
        self.systemd = pid1;
        self
    }

    /// The scsi-block devices of the spec: LUN by LUN, path by path, on controller 0 with SCSI
    /// target ids 0, 1, ... in that order, the next controller after [`PATHS_PER_CONTROLLER`]
    /// paths or at a [`GuestSpec::separate_scsi_controller`] (so ordering the disks by SCSI
    /// address groups them by LUN).
    fn scsi_paths(&self) -> Vec<ScsiPath> {
        let mut out: Vec<ScsiPath> = Vec::new();
        let (mut controller, mut on_it, mut group) = (0, 0u32, 0);
        for (lun, (g, urls)) in self.iscsi_luns.iter().enumerate() {
            for (path, url) in urls.iter().enumerate() {
                if on_it > 0 && (*g != group || on_it as usize >= PATHS_PER_CONTROLLER) {
                    controller += 1;
                    on_it = 0;
                }
                group = *g;
                out.push(ScsiPath {
                    lun,
                    path,
                    controller,
                    scsi_id: on_it,
                    url: url.clone(),
                });
                on_it += 1;
            }
        }
        out
    }

    /// How long the guest may take to answer after QEMU starts: [`GuestSpec::new`]'s 120 s
    /// (`FENCED_BOOT_TIMEOUT`), plus 1 s per iSCSI path. QEMU logs in to every iSCSI drive and
    /// reads it (a dozen commands) one after another before the guest starts, then the guest
    /// scans them: with 256 LUNs on a LIO storage guest, 33 s of drive opening and 40 s of boot
    /// for one node alone, several times that for three nodes at once on 2 cores.
    pub(crate) fn boot_deadline(&self) -> Duration {
        let paths: usize = self.iscsi_luns.iter().map(|(_, urls)| urls.len()).sum();
        self.boot_timeout + Duration::from_secs(u64::try_from(paths).unwrap_or(u64::MAX / 2))
    }

    /// Number of virtio-scsi controllers the guest gets.
    fn scsi_controllers(&self) -> usize {
        self.scsi_paths()
            .iter()
            .map(|p| p.controller + 1)
            .max()
            .unwrap_or(0)
    }

    fn qemu_command(&self, kernel: &Kernel, dir: &Path, initrd: &Path) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let kvm = std::env::var("FENCED_KVM").is_ok_and(|v| v == "1");
        c.args([
            "-M",
            "pc",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ]);
        // The newest kernel under multi-threaded TCG oopsed at boot about once in 25 boots (int3
        // in sched_clock_cpu at 1.5 s: a CPU ran a breakpoint another CPU's text patching had
        // already taken out, which one-thread TCG cannot interleave): its guests run all their
        // vCPUs on one host thread.
        let accel = match (kvm, kernel.line) {
            (true, _) => "kvm",
            (false, KernelLine::Newest) => "tcg,thread=single",
            (false, KernelLine::Stable) => "tcg",
        };
        c.args(["-accel", accel]);
        c.args([
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &self.memory_mb.to_string(),
        ]);
        // A reset (watchdog, reboot, panic) ends QEMU: that is how a test sees and times it.
        c.arg("-no-reboot");
        c.arg("-kernel").arg(&kernel.image);
        c.arg("-initrd").arg(initrd);
        // FENCED_GUEST_APPEND: extra kernel arguments for every guest (an experiment's knob,
        // e.g. `clocksource=tsc tsc=reliable`; the suite sets none).
        let extra = std::env::var("FENCED_GUEST_APPEND").unwrap_or_default();
        c.arg("-append").arg(
            format!(
                "console=ttyS0 panic=-1 loglevel=5 mitigations=off random.trust_cpu=on {extra}{}",
                self.append
            )
            .trim_end(),
        );
        c.arg("-chardev").arg(format!(
            "file,id=con,path={}",
            dir.join("console.log").display()
        ));
        c.args(["-serial", "chardev:con"]);
        c.arg("-chardev").arg(format!(
            "socket,id=ctl,path={},server=on,wait=off",
            dir.join("ctl.sock").display()
        ));
        c.args(["-serial", "chardev:ctl"]);
        c.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ));
        // A second monitor only for events: the guest's reset is its SHUTDOWN event. QEMU
        // itself may take long to exit after it: it drains the guest's in-flight I/O first,
        // and an iSCSI LUN whose target is paused never answers.
        c.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("events.sock").display()
        ));
        c.args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ]);
        c.arg("-virtfs").arg(format!(
            "local,path={},mount_tag=xchg,security_model=none,multidevs=remap",
            dir.join("xchg").display()
        ));
        if self.i6300esb {
            c.args(["-device", "i6300esb"]);
        }
        if let Some(iqn) = &self.initiator {
            c.arg("-iscsi").arg(format!("initiator-name={iqn}"));
        }
        for n in 0..self.scsi_controllers() {
            c.arg("-device").arg(format!(
                "virtio-scsi-pci,id=scsi{n},addr=0x{:x}",
                scsi_controller_slot(n)
            ));
        }
        for p in self.scsi_paths() {
            c.arg("-drive").arg(format!(
                "file={},if=none,id={},format=raw,cache=none",
                p.url,
                p.drive_id()
            ));
            c.arg("-device").arg(p.device_arg());
        }
        for (i, (image, serial)) in self.shared_disks.iter().enumerate() {
            c.arg("-drive").arg(format!(
                "file={},format=raw,if=none,id=shared{i},cache=none,file.locking=off",
                image.display()
            ));
            c.arg("-device").arg(format!(
                "virtio-blk-pci,drive=shared{i},share-rw=on,serial={serial}"
            ));
        }
        if self.user_net || !self.forwards.is_empty() {
            let fwd: String = self
                .forwards
                .iter()
                .map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
                .collect();
            c.arg("-netdev").arg(format!("user,id=n0{fwd}"));
            c.args(["-device", "virtio-net-pci,netdev=n0"]);
        }
        if let Some((port, index)) = self.lan {
            c.arg("-netdev").arg(format!(
                "socket,id={LAN_NETDEV},mcast=230.0.0.1:{port},localaddr=127.0.0.1"
            ));
            c.arg("-device").arg(format!(
                "virtio-net-pci,netdev={LAN_NETDEV},mac={}",
                lan_mac(index)
            ));
        }
        c.stdin(Stdio::null());
        c.stdout(Stdio::null());
        c.stderr(
            std::fs::File::create(dir.join("qemu.stderr"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
        c
    }
}

/// The QEMU id of the guest-LAN netdev ([`GuestSpec::lan`]).
const LAN_NETDEV: &str = "lan";

/// The MAC address of guest `index`'s NIC on the guest LAN ([`GuestSpec::lan`]).
pub fn lan_mac(index: u8) -> String {
    format!("52:54:00:4c:41:{index:02x}")
}

/// Most iSCSI paths (SCSI targets) one virtio-scsi controller gets at boot; a guest with more
/// gets several controllers. QEMU's virtio-scsi takes target ids up to 255, and the guest's SCSI
/// error handling stops a whole host (controller) while it runs.
pub const PATHS_PER_CONTROLLER: usize = 64;

/// The PCI slot of virtio-scsi controller `n` (`scsi<n>`): fixed, so that the guest's sysfs path
/// of a disk (`/sys/bus/pci/devices/0000:00:<slot>.0/virtio*/host*/...`) names its controller.
/// QEMU places the other devices in the free slots from 2 up.
fn scsi_controller_slot(n: usize) -> usize {
    0x10 + n
}

/// The controller whose PCI slot is `slot`, if it is one.
fn scsi_controller_of_slot(slot: usize) -> Option<usize> {
    slot.checked_sub(0x10).filter(|n| *n < 0x10)
}

/// One path of an iSCSI LUN in a guest: a scsi-block device on its own iSCSI session (its own
/// I_T nexus), seen in the guest as SCSI address `H:0:<scsi_id>:0` of the SCSI host of
/// virtio-scsi controller `controller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiPath {
    /// The LUN's index in the guest (0-based, the order of [`GuestSpec::iscsi_lun`] and
    /// [`GuestSpec::iscsi_lun_paths`] calls).
    pub lun: usize,
    /// The path's index within its LUN: 0, 1, ... at boot, then one more for each
    /// [`Guest::attach_path`] (indices of detached paths are not reused).
    pub path: usize,
    /// The virtio-scsi controller (QEMU device `scsi<controller>`, 0-based; one SCSI host in the
    /// guest each, in this order).
    pub controller: usize,
    /// The SCSI target id on its controller (unique there, never reused).
    pub scsi_id: u32,
    /// The `iscsi://` URL QEMU logged in to.
    pub url: String,
}

impl ScsiPath {
    /// QEMU's id of the scsi-block device: `lun<lun>-p<path>`.
    pub fn device_id(&self) -> String {
        format!("lun{}-p{}", self.lun, self.path)
    }

    /// QEMU's id of the drive (the iSCSI session) under the device.
    pub(crate) fn drive_id(&self) -> String {
        format!("drive-lun{}-p{}", self.lun, self.path)
    }

    fn device_arg(&self) -> String {
        format!(
            "scsi-block,id={},drive={},bus=scsi{}.0,channel=0,scsi-id={},lun=0",
            self.device_id(),
            self.drive_id(),
            self.controller,
            self.scsi_id
        )
    }

    /// The guest's sysfs directory of the path's controller (a PCI device).
    fn controller_sysfs(&self) -> String {
        format!(
            "/sys/bus/pci/devices/0000:00:{:02x}.0",
            scsi_controller_slot(self.controller)
        )
    }
}

/// The scsi-block devices a guest has now, and the ids the next one gets.
#[derive(Debug, Default)]
struct PathBook {
    attached: Vec<ScsiPath>,
    /// Per controller, the next SCSI target id.
    next_scsi_id: Vec<u32>,
    /// Per LUN, the next path index.
    next_path: Vec<usize>,
}

impl PathBook {
    fn new(paths: Vec<ScsiPath>) -> PathBook {
        let mut book = PathBook::default();
        for p in &paths {
            if book.next_scsi_id.len() <= p.controller {
                book.next_scsi_id.resize(p.controller + 1, 0);
            }
            book.next_scsi_id[p.controller] = book.next_scsi_id[p.controller].max(p.scsi_id + 1);
            if book.next_path.len() <= p.lun {
                book.next_path.resize(p.lun + 1, 0);
            }
            book.next_path[p.lun] = book.next_path[p.lun].max(p.path + 1);
        }
        book.attached = paths;
        book
    }

    fn find(&self, lun: usize, path: usize) -> Option<&ScsiPath> {
        self.attached
            .iter()
            .find(|p| p.lun == lun && p.path == path)
    }
}

/// The result of a command run in a guest.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (128+N when killed by signal N).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// When the host heard that the command ended.
    pub finished_at: Instant,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// A command started with [`Guest::spawn`], collected with [`Guest::wait`].
#[derive(Debug)]
#[must_use = "a pending command should be waited for"]
pub struct Pending {
    id: u64,
    command: String,
}

#[derive(Default)]
struct ControlState {
    ready: bool,
    failed: Option<String>,
    done: HashMap<u64, (i32, Instant)>,
    closed_at: Option<Instant>,
}

struct Control {
    state: Mutex<ControlState>,
    changed: Condvar,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `f` returns Some or the deadline passes.
    fn wait_for<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&ControlState) -> Option<T>,
    ) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(v) = f(&st) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// A running guest. Killed (by its QEMU's pid) when dropped.
pub struct Guest {
    name: String,
    dir: PathBuf,
    qemu: Mutex<ChildGuard>,
    control: Arc<Control>,
    writer: Mutex<UnixStream>,
    next_id: AtomicU64,
    booted_at: Instant,
    /// Serializes monitor connections (QEMU serves one at a time).
    qmp_lock: Mutex<()>,
    paths: Mutex<PathBook>,
}

/// A first line for a guest script that runs many small commands: it runs again under busybox's
/// sh, whose `mkdir`, `ln`, `rm`, `grep`, `seq`, ... are applets run without an `exec` of the
/// host's binary (each of those, dynamically linked and read over 9p, costs ~250 ms under TCG:
/// 50 `mkdir` took 12 s under the host's dash, 50 `mkdir` + `ln` + `echo` 1.7 s under busybox).
pub(crate) const BUSYBOX_SH: &str =
    "[ -n \"$KMOD_TESTING_BUSYBOX\" ] || KMOD_TESTING_BUSYBOX=1 exec busybox sh \"$0\"\n";

/// Default deadline of [`Guest::run`].
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

impl Guest {
    /// Starts QEMU for `spec` in `dir` (no waiting).
    pub(crate) fn start(kernel: &Kernel, spec: &GuestSpec, dir: &Path) -> Result<Guest> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("xchg")).ctx(|| format!("creating {}", dir.display()))?;
        let initrd = dir.join("initrd.cpio");
        let mut keep = vec![crate::repo_root(), kernel.modules.clone()];
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            // target/<profile>/deps: keep target/<profile>, where the binaries are.
            keep.push(dir.parent().map(Path::to_path_buf).unwrap_or(dir));
        }
        std::fs::write(
            &initrd,
            crate::initramfs::build(kernel, &spec.name, &keep, spec.systemd)?,
        )
        .ctx(|| format!("writing {}", initrd.display()))?;
        let cmd = spec.qemu_command(kernel, dir, &initrd);
        std::fs::write(dir.join("qemu.cmdline"), format!("{cmd:?}\n"))
            .ctx(|| "writing qemu.cmdline".to_string())?;
        let mut qemu = ChildGuard::spawn(cmd, &format!("qemu ({})", spec.name))?;
        crate::lab::register_console(&spec.name, dir.join("console.log"));

        // QEMU creates the control socket before it runs the guest.
        let sock = dir.join("ctl.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline && !qemu.exited() => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    let stderr =
                        std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
                    return Err(Error::Boot {
                        guest: spec.name.clone(),
                        reason: format!("QEMU did not open its control socket ({e}): {stderr}"),
                        log: dir.join("console.log"),
                    });
                }
            }
        };
        let control = Arc::new(Control {
            state: Mutex::new(ControlState::default()),
            changed: Condvar::new(),
        });
        let reader = stream
            .try_clone()
            .ctx(|| "cloning the control socket".to_string())?;
        let c = control.clone();
        std::thread::Builder::new()
            .name(format!("ctl-{}", spec.name))
            .spawn(move || read_control(reader, c))
            .ctx(|| "starting the control reader".to_string())?;
        // QEMU opens its monitors with the control socket, before it runs the guest.
        let events = loop {
            match UnixStream::connect(dir.join("events.sock")) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline && !qemu.exited() => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    return Err(Error::Boot {
                        guest: spec.name.clone(),
                        reason: format!("QEMU did not open its event monitor: {e}"),
                        log: dir.join("console.log"),
                    })
                }
            }
        };
        let c = control.clone();
        std::thread::Builder::new()
            .name(format!("qmp-events-{}", spec.name))
            .spawn(move || watch_events(events, c))
            .ctx(|| "starting the event reader".to_string())?;
        Ok(Guest {
            name: spec.name.clone(),
            dir: dir.to_path_buf(),
            qemu: Mutex::new(qemu),
            control,
            writer: Mutex::new(stream),
            next_id: AtomicU64::new(1),
            booted_at: Instant::now(),
            qmp_lock: Mutex::new(()),
            paths: Mutex::new(PathBook::new(spec.scsi_paths())),
        })
    }

    /// Waits until the guest's agent answers, pinging it every second.
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let _ = self.send("PING 0");
            let step = (Instant::now() + Duration::from_secs(1)).min(deadline);
            let verdict = self.control.wait_for(step, |st| {
                if st.ready {
                    Some(Ok(()))
                } else if let Some(f) = &st.failed {
                    Some(Err(f.clone()))
                } else if st.closed_at.is_some() {
                    Some(Err("QEMU exited during boot".to_string()))
                } else {
                    None
                }
            });
            match verdict {
                Some(Ok(())) => {
                    self.booted_at = Instant::now();
                    return Ok(());
                }
                Some(Err(reason)) => return Err(self.boot_error(reason)),
                None if Instant::now() >= deadline => {
                    return Err(self.boot_error(format!("no answer within {timeout:?}")))
                }
                None => {}
            }
        }
    }

    fn boot_error(&self, reason: String) -> Error {
        Error::Boot {
            guest: self.name.clone(),
            reason,
            log: self.console_path(),
        }
    }

    fn send(&self, line: &str) -> Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(format!("{line}\n").as_bytes())
            .ctx(|| format!("writing to guest {}'s control port", self.name))
    }

    /// The guest's name (its hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the agent first answered.
    pub fn booted_at(&self) -> Instant {
        self.booted_at
    }

    /// Starts `script` (POSIX sh, run chrooted in the guest's root) without waiting for it.
    pub fn spawn(&self, script: &str) -> Result<Pending> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join("xchg").join(format!("{id}.sh"));
        std::fs::write(&path, script).ctx(|| format!("writing {}", path.display()))?;
        self.send(&format!("RUN {id}"))?;
        // The agent marks a command started before it runs it. A RUN line was lost on the way in
        // full suite runs (the script written, never run, the test timing out): send it again
        // until the mark appears; the agent never starts an id twice. Bounded: a frozen or gone
        // guest is left to `wait` to report.
        let started = self.dir.join("xchg").join(format!("{id}.started"));
        let since = Instant::now();
        let mut sent = since;
        while !started.exists()
            && since.elapsed() < Duration::from_secs(10)
            && self.control.lock().closed_at.is_none()
        {
            if sent.elapsed() >= Duration::from_secs(2) {
                eprintln!(
                    "harness: {}: command {id} not started after {:.1} s: sending RUN again",
                    self.name,
                    since.elapsed().as_secs_f64()
                );
                self.send(&format!("RUN {id}"))?;
                sent = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Pending {
            id,
            command: script.to_string(),
        })
    }

    /// Waits for a spawned command until `timeout`.
    pub fn wait(&self, pending: Pending, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let id = pending.id;
        let verdict = self.control.wait_for(deadline, |st| {
            if let Some(done) = st.done.get(&id) {
                Some(Some(*done))
            } else if st.closed_at.is_some() {
                Some(None)
            } else {
                None
            }
        });
        match verdict {
            Some(Some((code, finished_at))) => {
                let read = |ext: &str| {
                    std::fs::read_to_string(self.dir.join("xchg").join(format!("{id}.{ext}")))
                        .unwrap_or_default()
                };
                Ok(Output {
                    code,
                    stdout: read("out"),
                    stderr: read("err"),
                    finished_at,
                })
            }
            Some(None) => Err(Error::GuestGone {
                guest: self.name.clone(),
                command: pending.command,
            }),
            None => Err(Error::Timeout {
                guest: self.name.clone(),
                command: pending.command,
                after: timeout,
            }),
        }
    }

    /// Runs `script` and returns its output, whatever its exit code, within `timeout`.
    pub fn run_with_timeout(&self, script: &str, timeout: Duration) -> Result<Output> {
        let p = self.spawn(script)?;
        self.wait(p, timeout)
    }

    /// Runs `script` with the default deadline ([`DEFAULT_COMMAND_TIMEOUT`]).
    pub fn run(&self, script: &str) -> Result<Output> {
        self.run_with_timeout(script, DEFAULT_COMMAND_TIMEOUT)
    }

    /// Runs `script`, requires exit code 0, and returns its stdout.
    pub fn run_ok(&self, script: &str) -> Result<String> {
        let out = self.run(script)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(Error::CommandFailed {
                guest: self.name.clone(),
                command: script.to_string(),
                code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    }

    /// The SCSI disks of the guest, ordered by SCSI address (for iSCSI LUNs: the order of
    /// [`GuestSpec::iscsi_lun`], controller by controller: the guest numbers its SCSI hosts in
    /// the order of their PCI slots), after waiting for `expected` of them to appear: up to 30 s,
    /// plus 2 s per disk (dozens of LUNs take minutes to scan under TCG).
    pub fn scsi_disks(&self, expected: usize) -> Result<Vec<String>> {
        let polls = 300 + 20 * expected;
        // Shell builtins only (a process started under TCG over 9p costs ~250 ms): the glob
        // lists the disks, `$#` counts them; the listing is parsed and ordered here.
        let script = format!(
            r#"list() {{ set -- /sys/class/scsi_disk/*/device/block/*; [ -e "$1" ] && printf '%s\n' "$@"; }}
n() {{ set -- /sys/class/scsi_disk/*/device/block/*; [ -e "$1" ] && echo $# || echo 0; }}
i=0
while [ "$(n)" -lt {expected} ] && [ $i -lt {polls} ]; do sleep 0.1; i=$((i+1)); done
list"#
        );
        let out = self.run_ok_within(&script, poll_budget(polls))?;
        let disks = order_scsi_disks(&out);
        if disks.len() != expected {
            return Err(Error::Setup(format!(
                "guest {}: expected {expected} SCSI disks, found {}: {out}",
                self.name,
                disks.len()
            )));
        }
        Ok(disks)
    }

    /// [`Guest::run_ok`] with a deadline of its own.
    fn run_ok_within(&self, script: &str, timeout: Duration) -> Result<String> {
        let out = self.run_with_timeout(script, timeout)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(Error::CommandFailed {
                guest: self.name.clone(),
                command: script.to_string(),
                code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    }

    /// Runs a QMP command (`{"execute": ..., "arguments": {...}}`) on the guest's QEMU monitor and
    /// returns its `return` value; an `error` answer is an [`Error::Setup`].
    pub fn qmp(&self, command: &serde_json::Value) -> Result<serde_json::Value> {
        let _one = self.qmp_lock.lock().unwrap_or_else(|e| e.into_inner());
        crate::qmp::execute(&self.name, &self.dir.join("qmp.sock"), command)
    }

    /// Connects (`up`) or cuts the guest's NIC on the guest LAN ([`GuestSpec::lan`]) from the
    /// host (QMP `set_link`): the guest sees its carrier go, as when a switch port dies; nothing
    /// inside the guest is touched, so it works on a paused or frozen guest too.
    pub fn set_lan_link(&self, up: bool) -> Result<()> {
        self.qmp(&serde_json::json!({
            "execute": "set_link",
            "arguments": { "name": LAN_NETDEV, "up": up }
        }))?;
        Ok(())
    }

    /// Runs a human-monitor (HMP) command through QMP's `human-monitor-command` and returns
    /// what it printed. HMP reports most failures as text, not as an error: check the output.
    pub fn hmp(&self, command_line: &str) -> Result<String> {
        let out = self.qmp(&serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": { "command-line": command_line }
        }))?;
        Ok(out.as_str().unwrap_or_default().to_string())
    }

    /// The iSCSI paths (scsi-block devices) the guest has now, by LUN then path.
    pub fn scsi_paths(&self) -> Vec<ScsiPath> {
        let mut v = self.path_book().attached.clone();
        v.sort_by_key(|p| (p.lun, p.path));
        v
    }

    fn path_book(&self) -> std::sync::MutexGuard<'_, PathBook> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the guest has a disk for each of `paths` (by controller and SCSI target id,
    /// up to 30 s plus 2 s per disk) and returns (controller, target id) -> `/dev/sdX`.
    fn wait_virtio_scsi_disks(&self, paths: &[&ScsiPath]) -> Result<HashMap<(usize, u32), String>> {
        let polls = 300 + 20 * paths.len();
        // Per line (one disk), a pattern naming its controller's PCI address and its target:
        // the disks are there when as many lines match as paths are awaited. Builtins and one
        // busybox grep per poll (a process started under TCG over 9p costs ~250 ms).
        let mut by_controller: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
        for p in paths {
            by_controller
                .entry(p.controller)
                .or_default()
                .push(p.scsi_id);
        }
        let pattern: Vec<String> = by_controller
            .iter()
            .map(|(c, ts)| {
                let ts: Vec<String> = ts.iter().map(u32::to_string).collect();
                format!(
                    "0000:00:{:02x}\\.0/virtio[0-9]+/host[0-9]+/target[0-9:]+/[0-9]+:0:({}):0/block/",
                    scsi_controller_slot(*c),
                    ts.join("|")
                )
            })
            .collect();
        let script = format!(
            r#"{BUSYBOX_SH}list() {{ set -- /sys/bus/pci/devices/*/virtio*/host*/target*/*/block/*; [ -e "$1" ] || return 0; printf '%s\n' "$@"; }}
i=0
while [ $i -lt {polls} ]; do
    [ "$(list | grep -cE '{pattern}')" -ge {want} ] && break
    sleep 0.1; i=$((i+1))
done
list"#,
            pattern = pattern.join("|"),
            want = paths.len(),
        );
        let out = self.run_ok_within(&script, poll_budget(polls))?;
        let found = virtio_scsi_disks(&out);
        let missing: Vec<String> = paths
            .iter()
            .filter(|p| !found.contains_key(&(p.controller, p.scsi_id)))
            .map(|p| {
                format!(
                    "{} (controller {}, target {})",
                    p.device_id(),
                    p.controller,
                    p.scsi_id
                )
            })
            .collect();
        if !missing.is_empty() {
            return Err(Error::Setup(format!(
                "guest {}: no disk for {} on the virtio-scsi controllers: {out}",
                self.name,
                missing.join(", ")
            )));
        }
        Ok(found)
    }

    /// The disks of every attached iSCSI path, grouped by LUN: `[lun][k]` is the `/dev/sdX` of
    /// that LUN's k-th attached path in path order ([`Guest::scsi_paths`]; after a detach the
    /// indices shift). Waits for every one to appear. Found by SCSI address, not by order of
    /// discovery: path `(lun, path)` is SCSI target [`ScsiPath::scsi_id`] of the SCSI host of
    /// virtio-scsi controller [`ScsiPath::controller`].
    pub fn lun_paths(&self) -> Result<Vec<Vec<String>>> {
        let paths = self.scsi_paths();
        let disks = self.wait_virtio_scsi_disks(&paths.iter().collect::<Vec<_>>())?;
        let luns = paths.iter().map(|p| p.lun + 1).max().unwrap_or(0);
        let mut out = vec![Vec::new(); luns];
        for p in &paths {
            out[p.lun].push(disks[&(p.controller, p.scsi_id)].clone());
        }
        Ok(out)
    }

    /// The `/dev/sdX` of LUN `lun` through path `path`, waiting for it to appear.
    pub fn path_device(&self, lun: usize, path: usize) -> Result<String> {
        let p = self.attached_path(lun, path)?;
        let mut disks = self.wait_virtio_scsi_disks(&[&p])?;
        Ok(disks.remove(&(p.controller, p.scsi_id)).unwrap_or_default())
    }

    fn attached_path(&self, lun: usize, path: usize) -> Result<ScsiPath> {
        self.path_book().find(lun, path).cloned().ok_or_else(|| {
            Error::Setup(format!(
                "guest {}: no path {path} of LUN {lun} is attached",
                self.name
            ))
        })
    }

    /// Removes path `path` of LUN `lun` at runtime, as a SAN path that is gone for good (an FC
    /// path after dev_loss_tmo): QEMU unplugs the scsi-block device (`device_del`) and closes its
    /// drive, which logs its iSCSI session out; the guest kernel removes the SCSI device and
    /// devtmpfs its `/dev/sdX`. Returns how long it took until the guest's SCSI device was gone
    /// (about 1 s under TCG). A program that still holds the disk open keeps a dead file
    /// descriptor: `ioctl(SG_IO)` on it fails at once with `ENODEV`, `read` returns 0 bytes (the
    /// disk's size is 0). The name `sdX` is free again: the next disk may get it. Registrations
    /// made through the path stay on the target (an I_T nexus outlives its session).
    pub fn detach_path(&self, lun: usize, path: usize) -> Result<Duration> {
        let p = self.attached_path(lun, path)?;
        let t = Instant::now();
        self.qmp(&serde_json::json!({
            "execute": "device_del",
            "arguments": { "id": p.device_id() }
        }))?;
        let gone = self.run_with_timeout(
            &format!(
                r#"i=0
while ls -d {host}/virtio*/host*/target*/*:0:{t}:0 >/dev/null 2>&1; do
    [ $i -lt 300 ] || exit 1
    sleep 0.05; i=$((i+1))
done"#,
                host = p.controller_sysfs(),
                t = p.scsi_id
            ),
            Duration::from_secs(60),
        )?;
        let took = t.elapsed();
        if !gone.success() {
            return Err(Error::Setup(format!(
                "guest {}: SCSI target {} of controller {} ({}) still present 15 s after device_del",
                self.name,
                p.scsi_id,
                p.controller,
                p.device_id()
            )));
        }
        self.path_book()
            .attached
            .retain(|a| (a.lun, a.path) != (lun, path));
        Ok(took)
    }

    /// Adds a new path to LUN `lun` at runtime: an iSCSI drive for `url` (HMP `drive_add`; QEMU
    /// logs in a new session with a fresh ISID, so a new I_T nexus with no registration) and a
    /// scsi-block device on it (`device_add`), on the controller of the LUN's other paths
    /// (controller 0 if it has none); the guest kernel scans the new SCSI target and devtmpfs
    /// creates its `/dev/sdY` (about 1.5 s under TCG). The guest needs a virtio-scsi controller
    /// (at least one iSCSI LUN at boot). Returns the new path (its index, [`ScsiPath::path`],
    /// names it for [`Guest::detach_path`]) and its disk, once the disk is there.
    pub fn attach_path(&self, lun: usize, url: &str) -> Result<(ScsiPath, String)> {
        let p = {
            let mut book = self.path_book();
            if book.next_path.len() <= lun {
                book.next_path.resize(lun + 1, 0);
            }
            let controller = book
                .attached
                .iter()
                .find(|a| a.lun == lun)
                .map_or(0, |a| a.controller);
            if book.next_scsi_id.len() <= controller {
                book.next_scsi_id.resize(controller + 1, 0);
            }
            let p = ScsiPath {
                lun,
                path: book.next_path[lun],
                controller,
                scsi_id: book.next_scsi_id[controller],
                url: url.to_string(),
            };
            book.next_path[lun] += 1;
            book.next_scsi_id[controller] += 1;
            p
        };
        let out = self.hmp(&format!(
            "drive_add 0 file={url},if=none,id={},format=raw,cache=none",
            p.drive_id()
        ))?;
        if out.trim() != "OK" {
            return Err(Error::Setup(format!(
                "guest {}: drive_add {url}: {}",
                self.name,
                out.trim()
            )));
        }
        let added = self.qmp(&serde_json::json!({
            "execute": "device_add",
            "arguments": {
                "driver": "scsi-block",
                "id": p.device_id(),
                "drive": p.drive_id(),
                "bus": format!("scsi{}.0", p.controller),
                "channel": 0,
                "scsi-id": p.scsi_id,
                "lun": 0
            }
        }));
        if let Err(e) = added {
            let _ = self.hmp(&format!("drive_del {}", p.drive_id()));
            return Err(e);
        }
        self.path_book().attached.push(p.clone());
        let dev = self.path_device(p.lun, p.path)?;
        Ok((p, dev))
    }

    /// The /dev path of the virtio disk whose serial is `serial` ([`GuestSpec::shared_disk`]).
    pub fn disk_by_serial(&self, serial: &str) -> Result<String> {
        let out = self.run_ok(&format!(
            r#"{BUSYBOX_SH}for d in /sys/block/vd*; do if [ "$(cat $d/serial 2>/dev/null)" = "{serial}" ]; then echo /dev/${{d##*/}}; fi; done"#
        ))?;
        out.lines().next().map(String::from).ok_or_else(|| {
            Error::Setup(format!("guest {}: no disk with serial {serial}", self.name))
        })
    }

    /// Freezes the whole guest (SIGSTOP to its QEMU): from outside it looks hung.
    pub fn pause(&self) -> Result<()> {
        self.qemu().signal(Signal::SIGSTOP)
    }

    /// Resumes a paused guest.
    pub fn resume(&self) -> Result<()> {
        self.qemu().signal(Signal::SIGCONT)
    }

    /// QEMU's pid.
    pub fn pid(&self) -> i32 {
        self.qemu().pid().as_raw()
    }

    fn qemu(&self) -> std::sync::MutexGuard<'_, ChildGuard> {
        self.qemu.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the guest to reset (QEMU exits under `-no-reboot`). Returns
    /// when the reset happened: QEMU's SHUTDOWN event, or its control socket closing if that
    /// came first. QEMU may still run a while after (draining I/O on a hung LUN).
    pub fn wait_exit(&self, timeout: Duration) -> Option<Instant> {
        let at = self
            .control
            .wait_for(Instant::now() + timeout, |st| st.closed_at)?;
        // Reap it; it is gone or going.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.qemu().exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(at)
    }

    /// Whether QEMU still runs.
    pub fn is_running(&self) -> bool {
        !self.qemu().exited()
    }

    /// Path of the serial console log.
    pub fn console_path(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.console_path()).unwrap_or_default()
    }
}

fn read_control(stream: UnixStream, control: Arc<Control>) {
    let reader = BufReader::new(stream);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        let mut words = line.split_whitespace();
        let mut st = control.lock();
        match (words.next(), words.next(), words.next()) {
            (Some("READY"), _, _) => st.ready = true,
            (Some("FAIL"), _, _) => {
                st.failed = Some(line.trim().trim_start_matches("FAIL ").to_string())
            }
            (Some("DONE"), Some(id), Some(code)) => {
                if let (Ok(id), Ok(code)) = (id.parse(), code.parse()) {
                    st.done.insert(id, (code, Instant::now()));
                }
            }
            _ => {}
        }
        drop(st);
        control.changed.notify_all();
    }
    control.lock().closed_at.get_or_insert_with(Instant::now);
    control.changed.notify_all();
}

/// Marks the guest gone at QEMU's SHUTDOWN event (under `-no-reboot`, a guest reset, watchdog
/// or panic is one), which comes before QEMU drains the guest's I/O and exits.
fn watch_events(stream: UnixStream, control: Arc<Control>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    // Events come only once the capabilities are negotiated.
    if writer
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .is_err()
    {
        return;
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["event"] == "SHUTDOWN" {
            control.lock().closed_at.get_or_insert_with(Instant::now);
            control.changed.notify_all();
        }
    }
}

/// (controller, SCSI target id) -> `/dev/sdX` for each
/// `/sys/bus/pci/devices/0000:00:<slot>.0/virtioN/hostH/targetH:0:T/H:0:T:0/block/sdX` line (LUN
/// 0, channel 0) whose PCI slot is a virtio-scsi controller's ([`scsi_controller_slot`]).
fn virtio_scsi_disks(listing: &str) -> HashMap<(usize, u32), String> {
    listing
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.trim().split('/').collect();
            let [.., addr, "block", name] = parts.as_slice() else {
                return None;
            };
            let pci = parts
                .windows(2)
                .find(|w| w[1].starts_with("virtio"))
                .map(|w| w[0])?;
            let slot = pci.strip_prefix("0000:00:")?.strip_suffix(".0")?;
            let controller = scsi_controller_of_slot(usize::from_str_radix(slot, 16).ok()?)?;
            let hctl: Vec<&str> = addr.split(':').collect();
            match hctl.as_slice() {
                [_, "0", t, "0"] => Some(((controller, t.parse().ok()?), format!("/dev/{name}"))),
                _ => None,
            }
        })
        .collect()
}

/// How long a guest script that polls `polls` times, 0.1 s apart, may take: its sleeps, the
/// commands between them, and a margin.
fn poll_budget(polls: usize) -> Duration {
    Duration::from_millis(
        u64::try_from(polls)
            .unwrap_or(u64::MAX / 400)
            .saturating_mul(200),
    ) + Duration::from_secs(60)
}

/// `/dev/sdX` for each `/sys/class/scsi_disk/H:C:T:L/device/block/sdX` line, ordered by SCSI
/// address (host, channel, target, LUN numerically).
fn order_scsi_disks(listing: &str) -> Vec<String> {
    let mut disks: Vec<([u64; 4], String)> = listing
        .lines()
        .filter_map(|l| {
            let mut parts = l.trim().rsplit('/');
            let name = parts.next()?;
            let addr = l.trim().split('/').nth(4)?;
            let mut hctl = [0u64; 4];
            let mut fields = addr.split(':');
            for f in &mut hctl {
                *f = fields.next()?.parse().ok()?;
            }
            Some((hctl, format!("/dev/{name}")))
        })
        .collect();
    disks.sort();
    disks.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_scsi_disks_are_keyed_by_controller_and_target_id() {
        let listing = "/sys/bus/pci/devices/0000:00:10.0/virtio1/host2/target2:0:3/2:0:3:0/block/sdd\n\
                       /sys/bus/pci/devices/0000:00:10.0/virtio1/host2/target2:0:10/2:0:10:0/block/sdb\n\
                       /sys/bus/pci/devices/0000:00:11.0/virtio2/host3/target3:0:3/3:0:3:0/block/sdz\n\
                       /sys/bus/pci/devices/0000:00:10.0/virtio1/host2/target2:0:4/2:0:4:1/block/sdq\n\
                       /sys/bus/pci/devices/0000:00:05.0/virtio4/host5/target5:0:0/5:0:0:0/block/sdx\n\
                       garbage\n";
        let d = virtio_scsi_disks(listing);
        assert_eq!(d.len(), 3);
        assert_eq!(d[&(0, 3)], "/dev/sdd");
        assert_eq!(d[&(0, 10)], "/dev/sdb");
        assert_eq!(d[&(1, 3)], "/dev/sdz");
    }

    #[test]
    fn luns_spread_over_controllers_by_count_and_by_group() {
        let mut s = GuestSpec::new("x");
        for i in 0..PATHS_PER_CONTROLLER + 2 {
            s = s.iscsi_lun(&format!("m{i}"));
        }
        s = s.separate_scsi_controller().separate_scsi_controller();
        s = s.iscsi_lun("h0").iscsi_lun("h1");
        let p = s.scsi_paths();
        let at = |i: usize| (p[i].controller, p[i].scsi_id);
        assert_eq!(at(0), (0, 0));
        assert_eq!(at(PATHS_PER_CONTROLLER - 1), (0, 63));
        assert_eq!(at(PATHS_PER_CONTROLLER), (1, 0));
        assert_eq!(at(PATHS_PER_CONTROLLER + 1), (1, 1));
        assert_eq!(at(PATHS_PER_CONTROLLER + 2), (2, 0), "its own controller");
        assert_eq!(at(PATHS_PER_CONTROLLER + 3), (2, 1));
        assert_eq!(s.scsi_controllers(), 3);
        let book = PathBook::new(p);
        assert_eq!(book.next_scsi_id, vec![64, 2, 2]);
        assert_eq!(GuestSpec::new("y").scsi_controllers(), 0);
    }

    #[test]
    fn spec_paths_are_numbered_lun_by_lun() {
        let s = GuestSpec::new("x")
            .iscsi_lun("a")
            .iscsi_lun_paths(&["b0".into(), "b1".into()])
            .iscsi_lun("c");
        let ids: Vec<(String, usize, u32)> = s
            .scsi_paths()
            .iter()
            .map(|p| (p.device_id(), p.controller, p.scsi_id))
            .collect();
        assert_eq!(
            ids,
            [
                ("lun0-p0".to_string(), 0, 0),
                ("lun1-p0".to_string(), 0, 1),
                ("lun1-p1".to_string(), 0, 2),
                ("lun2-p0".to_string(), 0, 3)
            ]
        );
        let book = PathBook::new(s.scsi_paths());
        assert_eq!(
            (book.next_scsi_id, book.next_path.clone()),
            (vec![4], vec![1, 2, 1])
        );
    }

    #[test]
    fn scsi_disks_are_ordered_by_numeric_scsi_address() {
        let listing = "/sys/class/scsi_disk/2:0:0:10/device/block/sdk\n\
                       /sys/class/scsi_disk/2:0:0:2/device/block/sdc\n\
                       /sys/class/scsi_disk/1:0:0:0/device/block/sdz\n\
                       garbage\n";
        assert_eq!(
            order_scsi_disks(listing),
            ["/dev/sdz", "/dev/sdc", "/dev/sdk"]
        );
    }
}
