//! The guest's initramfs: busybox, the few modules needed to reach the host filesystem over 9p,
//! an init that builds the writable root, and the agent that runs the host's commands.
//!
//! The guest's root: the host's `/` (9p, read-only) under an overlay with a tmpfs upper layer,
//! with the guest's own /dev, /proc, /sys, fresh tmpfs on /tmp, /run and /var/tmp, the cached
//! kernel's modules on /lib/modules/<version>, and the exchange directory (9p, read-write) on
//! /xchg. Commands run chrooted there, so they see the same paths as on the host.
//!
//! With [`crate::GuestSpec::systemd`], init then hands PID 1 to the host's systemd, chrooted in
//! that root, with a minimal set of units ([`SYSTEMD_UNITS`]); the agent keeps running beside it
//! and answers only once systemd has reached its target.

use crate::cpio::Archive;
use crate::error::Result;
use crate::kernel::Kernel;

/// Modules loaded from the initramfs itself, before the host filesystem is reachable.
const EARLY_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Modules loaded once the root exists: every guest has disks, SCSI generic and watchdogs.
const LATE_MODULES: &str =
    "virtio_blk virtio_scsi sd_mod sg virtio_net i6300esb configfs dm_mod loop";

const BUSYBOX: &str = "/bin/busybox";

/// The only units systemd sees in a systemd guest (links to the host's /lib/systemd/system):
/// the targets a service's default dependencies name (sysinit, basic and what basic pulls in),
/// journald with its sockets, and the network targets fenced.service orders itself after. No
/// getty, no udev, no networking, none of the host's enabled services or timers:
/// `SYSTEMD_UNIT_PATH` holds only the guest's own /etc/systemd/system (empty at boot) and this
/// list, and no generator runs. (-.slice and system.slice are built into systemd 252.)
pub const SYSTEMD_UNITS: &[&str] = &[
    "slices.target",
    "sysinit.target",
    "basic.target",
    "sockets.target",
    "paths.target",
    "timers.target",
    "local-fs.target",
    "swap.target",
    "shutdown.target",
    "network.target",
    "network-online.target",
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
    "systemd-journald-audit.socket",
];

/// Where a systemd guest's unit list lives (on the guest's /run tmpfs).
const SYSTEMD_UNIT_DIR: &str = "/run/kmod-testing/units";

/// The target systemd starts in a systemd guest.
pub const SYSTEMD_TARGET: &str = "kmod-testing.target";

/// Builds the initramfs for a guest named `name`. `keep` are host paths the guest must see even
/// when they lie under /tmp, /run or /var/tmp, which get fresh tmpfs in the guest (the checkout,
/// the kernel cache, the built binaries: CI may clone the repository under /tmp). With
/// `systemd`, systemd becomes PID 1 (see the module doc).
pub(crate) fn build(
    kernel: &Kernel,
    name: &str,
    keep: &[std::path::PathBuf],
    systemd: bool,
) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for d in [
        "/bin",
        "/sbin",
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/etc",
        "/lib",
        "/lib/early",
        "/host",
        "/rw",
        "/newroot",
    ] {
        a.dir(d);
    }
    a.char_dev("/dev/console", 0o600, 5, 1);
    a.char_dev("/dev/null", 0o666, 1, 3);
    let busybox = std::fs::read(BUSYBOX).map_err(|_| crate::Error::MissingTool {
        tool: format!("{BUSYBOX} (Debian package busybox-static)"),
    })?;
    a.file("/bin/busybox", 0o755, &busybox);
    a.symlink("/bin/sh", "busybox");

    let order = kernel.module_load_order(EARLY_MODULES)?;
    let mut early = String::new();
    for (i, rel) in order.iter().enumerate() {
        let (data, plain) = crate::kernel::read_module(&kernel.modules.join(rel))?;
        let file = format!("{i:02}-{plain}");
        a.file(&format!("/lib/early/{file}"), 0o644, &data);
        early.push_str(&file);
        early.push('\n');
    }
    a.file("/lib/early/order", 0o644, early.as_bytes());
    a.file(
        "/init",
        0o755,
        init_script(kernel, name, keep, systemd).as_bytes(),
    );
    a.file("/agent", 0o755, AGENT.as_bytes());
    // The kernel's request_module() runs this from the initramfs root; load from the real tree.
    a.file(
        "/sbin/modprobe-chroot",
        0o755,
        b"#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe \"$@\"\n",
    );
    Ok(a.finish())
}

fn init_script(kernel: &Kernel, name: &str, keep: &[std::path::PathBuf], systemd: bool) -> String {
    let keep: Vec<String> = keep
        .iter()
        .map(|p| p.display().to_string())
        .filter(|p| ["/tmp", "/run", "/var/tmp"].iter().any(|d| p.starts_with(&format!("{d}/"))))
        .map(|p| format!("mkdir -p '/newroot{p}' && mount --bind '/host{p}' '/newroot{p}' || fatal \"cannot show {p} in the guest\"\n"))
        .collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
fatal() {{
    echo "init: FATAL: $*"
    # Tell the host at once rather than letting it wait for its boot deadline.
    stty -F /dev/ttyS1 raw -echo 2>/dev/null
    echo "FAIL $*" > /dev/ttyS1
    sleep 2
    poweroff -f
}}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "init: booted {name} on $(uname -r) in $(cut -d' ' -f1 /proc/uptime) s"
for m in $(cat /lib/early/order); do
    insmod /lib/early/$m || fatal "insmod $m failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || fatal "9p mount of the host root failed"
mount -t tmpfs -o mode=0755 tmpfs /rw || fatal "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || fatal "overlay mount failed"
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
for d in /tmp /run /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs /newroot$d; done
{keep}mkdir -p /newroot/xchg
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 xchg /newroot/xchg || fatal "9p mount of the exchange directory failed"
mkdir -p /newroot/lib/modules/{version}
mount --bind /newroot{modules} /newroot/lib/modules/{version} || fatal "no modules at {modules}"
mkdir -p /newroot/var/target/pr /var/target/pr
echo /sbin/modprobe-chroot > /proc/sys/kernel/modprobe
hostname {name}
chroot /newroot /sbin/modprobe -a {late} || echo "init: some modules did not load"
mount -t configfs configfs /newroot/sys/kernel/config || echo "init: configfs mount failed"
echo "init: ready in $(cut -d' ' -f1 /proc/uptime) s"
{pid1}"#,
        version = kernel.version,
        modules = kernel.modules.display(),
        late = LATE_MODULES,
        keep = keep.concat(),
        pid1 = if systemd {
            systemd_pid1(name)
        } else {
            "exec /agent\n".to_string()
        },
    )
}

/// The end of init in a systemd guest: the unit list, the agent in the background, then systemd
/// as PID 1 in the guest's root. A chroot, not a switch_root: the agent keeps running from the
/// initramfs (its busybox stays reachable) and runs commands chrooted, as in any guest.
fn systemd_pid1(name: &str) -> String {
    let links: String = SYSTEMD_UNITS
        .iter()
        .map(|u| format!("ln -s /lib/systemd/system/{u} /newroot{SYSTEMD_UNIT_DIR}/{u}\n"))
        .collect();
    format!(
        r#"[ -x /newroot/lib/systemd/systemd ] || fatal "no /lib/systemd/systemd on the host (Debian package systemd; kmod-testing/provision.sh installs it)"
# systemd names the machine from /etc/hostname (the host's): keep the guest's name.
echo {name} > /newroot/etc/hostname
# A guest is a machine, not a container: the host's /.dockerenv would make systemd say "docker".
rm -f /newroot/.dockerenv
# The guest's /etc/systemd/system starts empty (an opaque overlay directory): none of the host's
# enabled services exists here; a test installs what it needs.
rm -rf /newroot/etc/systemd/system && mkdir /newroot/etc/systemd/system || fatal "cannot empty /etc/systemd/system"
mkdir -p /newroot{dir}/sysinit.target.wants /newroot{dir}/sockets.target.wants /newroot/run/kmod-testing/no-generators
{links}ln -s ../systemd-journald.service /newroot{dir}/sysinit.target.wants/
for s in systemd-journald.socket systemd-journald-dev-log.socket systemd-journald-audit.socket; do
    ln -s ../$s /newroot{dir}/sockets.target.wants/
done
cat > /newroot{dir}/{target} <<'EOF'
[Unit]
Description=kmod-testing guest: the basic system and journald, no services
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
/agent systemd &
echo "init: systemd takes PID 1"
exec env SYSTEMD_UNIT_PATH=/etc/systemd/system:{dir} \
    SYSTEMD_GENERATOR_PATH=/run/kmod-testing/no-generators \
    SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/kmod-testing/no-generators \
    chroot /newroot /lib/systemd/systemd --unit={target}
"#,
        dir = SYSTEMD_UNIT_DIR,
        target = SYSTEMD_TARGET,
    )
}

/// The agent: reads `RUN <id>` lines from the second serial port, runs `/xchg/<id>.sh` chrooted
/// in the background (so several commands can be in flight), writes its output to
/// `/xchg/<id>.out|.err` and answers `DONE <id> <code>`. `PING` is answered with `READY`.
/// It marks each command started (`/xchg/<id>.started`) before running it and ignores a `RUN`
/// of an id already started: the host sends a `RUN` again when it sees no mark (a control line
/// was lost in full suite runs: the `.sh` written, never run), and a command runs once.
/// Started as `/agent systemd`, it first waits until systemd is running; if systemd ends up in
/// any other state, it says `FAIL` with the failed units and powers off, as init does on a fatal
/// error.
const AGENT: &str = r#"#!/bin/busybox sh
stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
if [ "$1" = systemd ]; then
    while :; do
        state=$(chroot /newroot /bin/systemctl is-system-running --wait 2>/dev/null)
        case "$state" in
        running) break ;;
        ""|offline|unknown|initializing|starting) sleep 0.1 ;;
        *)
            failed=$(chroot /newroot /bin/systemctl --failed --no-legend --plain 2>&1 | tr '\n' ' ')
            echo "agent: systemd is $state: $failed"
            echo "FAIL systemd is $state: $failed" >&3
            sleep 2
            poweroff -f
            ;;
        esac
    done
    echo "agent: systemd is running after $(cut -d' ' -f1 /proc/uptime) s"
fi
echo READY >&3
while read -r verb id <&3; do
    case "$verb" in
    RUN)
        [ -e /newroot/xchg/$id.started ] && continue
        : > /newroot/xchg/$id.started
        (
            chroot /newroot /usr/bin/env -i \
                PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                HOME=/root LANG=C.UTF-8 TERM=dumb \
                /bin/sh /xchg/$id.sh </dev/null >/newroot/xchg/$id.out 2>/newroot/xchg/$id.err
            echo "DONE $id $?" >&3
        ) &
        ;;
    PING) echo READY >&3 ;;
    esac
done
echo "agent: control channel closed"
"#;
