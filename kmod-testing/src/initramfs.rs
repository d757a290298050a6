//! The guest's initramfs: busybox, the few modules needed to reach the host filesystem over 9p,
//! an init that builds the writable root, and the agent that runs the host's commands.
//!
//! The guest's root: the host's `/` (9p, read-only) under an overlay with a tmpfs upper layer,
//! with the guest's own /dev, /proc, /sys, fresh tmpfs on /tmp, /run and /var/tmp, the cached
//! kernel's modules on /lib/modules/<version>, and the exchange directory (9p, read-write) on
//! /xchg. Commands run chrooted there, so they see the same paths as on the host.

use crate::cpio::Archive;
use crate::error::{IoContext, Result};
use crate::kernel::Kernel;

/// Modules loaded from the initramfs itself, before the host filesystem is reachable.
const EARLY_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Modules loaded once the root exists: every guest has disks, SCSI generic and watchdogs.
const LATE_MODULES: &str =
    "virtio_blk virtio_scsi sd_mod sg virtio_net i6300esb configfs dm_mod loop";

const BUSYBOX: &str = "/bin/busybox";

/// Builds the initramfs for a guest named `name`. `keep` are host paths the guest must see even
/// when they lie under /tmp, /run or /var/tmp, which get fresh tmpfs in the guest (the checkout,
/// the kernel cache, the built binaries: CI may clone the repository under /tmp).
pub(crate) fn build(kernel: &Kernel, name: &str, keep: &[std::path::PathBuf]) -> Result<Vec<u8>> {
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
        let data = std::fs::read(kernel.modules.join(rel))
            .ctx(|| format!("reading module {rel} of {}", kernel.version))?;
        let file = format!("{i:02}-{}", rel.rsplit('/').next().unwrap_or(rel));
        a.file(&format!("/lib/early/{file}"), 0o644, &data);
        early.push_str(&file);
        early.push('\n');
    }
    a.file("/lib/early/order", 0o644, early.as_bytes());
    a.file("/init", 0o755, init_script(kernel, name, keep).as_bytes());
    a.file("/agent", 0o755, AGENT.as_bytes());
    // The kernel's request_module() runs this from the initramfs root; load from the real tree.
    a.file(
        "/sbin/modprobe-chroot",
        0o755,
        b"#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe \"$@\"\n",
    );
    Ok(a.finish())
}

fn init_script(kernel: &Kernel, name: &str, keep: &[std::path::PathBuf]) -> String {
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
exec /agent
"#,
        version = kernel.version,
        modules = kernel.modules.display(),
        late = LATE_MODULES,
        keep = keep.concat(),
    )
}

/// The agent: reads `RUN <id>` lines from the second serial port, runs `/xchg/<id>.sh` chrooted
/// in the background (so several commands can be in flight), writes its output to
/// `/xchg/<id>.out|.err` and answers `DONE <id> <code>`. `PING` is answered with `READY`.
const AGENT: &str = r#"#!/bin/busybox sh
stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
echo READY >&3
while read -r verb id <&3; do
    case "$verb" in
    RUN)
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
