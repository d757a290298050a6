//! dm-multipath under the real multipathd (Debian's multipath-tools, run from the host's root)
//! in node guests, for [`crate::cluster::ClusterSpec::node_setup`].
//!
//! multipathd finds its paths in the udev database (it enumerates only devices udev has
//! initialized, and takes their WWID from udev's `ID_SERIAL`), so the set-up starts the host's
//! systemd-udevd in the busybox-init guest first and replays the block devices' `add` events;
//! without udevd multipathd starts, finds no path and builds no map. udevd also gives
//! multipathd its uevents and creates `/dev/mapper/<map>`. A systemd guest is not needed.
//!
//! multipath.conf: `find_multipaths off` (every SCSI disk is a path; the voting disks `vd*` are
//! blacklisted), user-friendly names (the guest's bindings file starts empty, so the LUN's map
//! is [`MAP`]), path checker every second, round-robin switching paths after every request (so
//! consecutive writes through the map alternate between the paths), and `reservation_key` set to
//! the node's fenced key so that multipathd registers it on a path it reinstates.
//!
//! multipathd (0.9.4, and the same condition up to 0.9.9) registers that key on a reinstated
//! path only while the map's PR flag is set ([`prflag`]). It sets the flag when it builds or
//! reconfigures the map and finds its key registered, when mpathpersist registers through the
//! map, or on `multipathd setprstatus`. fenced registers the slaves over SG_IO, so multipathd
//! does not learn of it by itself: a map built before fenced registered (the normal boot order)
//! would keep the flag clear, and a returning path that lost its registration would meet
//! RESERVATION CONFLICT until fenced registers it. So fenced runs `setprstatus` once the paths
//! are registered (at start and after a recovery).

use kmod_testing::{Guest, Result};
use std::time::{Duration, Instant};

/// The map's name in every guest.
pub const MAP: &str = "mpatha";

/// The map's device node, `/dev/mapper/mpatha`.
pub fn map_device() -> String {
    format!("/dev/mapper/{MAP}")
}

/// The node set-up script: udevd, multipath.conf, multipathd (in the foreground, in the
/// background of the guest, logging to `/xchg/multipathd.log`), then waits until
/// the map [`MAP`] exists with `paths` active paths. Nodes whose ids are in `without_key` get no
/// `reservation_key` in their multipath.conf. Reads `FENCED_KEY` and `FENCED_NODE_ID`
/// (set by [`crate::cluster::Cluster::start`]).
pub fn node_setup(paths: usize, without_key: &[usize]) -> String {
    let without: Vec<String> = without_key.iter().map(usize::to_string).collect();
    r##"set -e
stamp() { echo "set-up: $1 at $(cut -d' ' -f1 /proc/uptime) s"; }
stamp start
# udevadm and udevd refuse to act in a chroot (commands run in one) unless told it is fine.
export SYSTEMD_IGNORE_CHROOT=1
modprobe -a dm_multipath dm_round_robin
/lib/systemd/systemd-udevd --daemon
stamp "udevd started"
udevadm trigger --action=add --subsystem-match=block --sysname-match='sd*'
udevadm settle --timeout=60
stamp "udev database of the SCSI disks ready"
mkdir -p /etc/multipath
rm -f /etc/multipath/bindings /etc/multipath/wwids /etc/multipath/prkeys
case " @WITHOUT@ " in
*" $FENCED_NODE_ID "*) key="# no reservation_key on this node" ;;
*) key="reservation_key $FENCED_KEY" ;;
esac
cat > /etc/multipath.conf <<EOF
defaults {
    user_friendly_names yes
    find_multipaths off
    polling_interval 1
    path_selector "round-robin 0"
    rr_min_io_rq 1
    $key
}
blacklist {
    devnode "^vd[a-z]"
}
EOF
multipathd -d -s >/xchg/multipathd.log 2>&1 &
i=0
until [ "$(multipathd show paths format '%m %t' 2>/dev/null | grep -c '^@MAP@ *active')" = @PATHS@ ] && [ -b /dev/mapper/@MAP@ ]; do
    i=$((i+1))
    if [ $i -ge 240 ]; then
        echo "multipathd built no map @MAP@ with @PATHS@ active paths within 120 s"
        multipathd show paths; ls -l /dev/mapper; tail -n 40 /xchg/multipathd.log
        exit 1
    fi
    sleep 0.5
done
stamp "map @MAP@ up"
multipath -ll @MAP@
"##
    .replace("@WITHOUT@", &without.join(" "))
    .replace("@MAP@", MAP)
    .replace("@PATHS@", &paths.to_string())
}

/// One path as multipathd shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpathPath {
    /// `/dev/sdX`.
    pub dev: String,
    /// The path's state in the kernel's map: `active` or `failed`.
    pub dm_state: String,
    /// The path checker's verdict: `ready`, `faulty`, ...
    pub checker: String,
}

/// The paths of [`MAP`] (`multipathd show paths`).
pub fn paths(g: &Guest) -> Result<Vec<MpathPath>> {
    let out = g.run_ok("multipathd show paths format '%m %d %t %T'")?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [MAP, dev, dm, chk] => Some(MpathPath {
                    dev: format!("/dev/{dev}"),
                    dm_state: (*dm).to_string(),
                    checker: (*chk).to_string(),
                }),
                _ => None,
            }
        })
        .collect())
}

/// Waits until multipathd shows path `dev` of [`MAP`] in kernel state `dm_state` (`active`,
/// `failed`); returns how long that took, or `None` after `timeout`.
pub fn wait_path(g: &Guest, dev: &str, dm_state: &str, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if paths(g)
            .unwrap_or_default()
            .iter()
            .any(|p| p.dev == dev && p.dm_state == dm_state)
        {
            return Some(t.elapsed());
        }
        if t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// multipathd's PR flag of [`MAP`] (`multipathd getprstatus`): only while it is set does
/// multipathd register its `reservation_key` on a path it reinstates.
pub fn prflag(g: &Guest) -> Result<bool> {
    Ok(g.run_ok(&format!("multipathd getprstatus map {MAP}"))?
        .trim()
        == "1")
}

/// What [`write_blocks`] saw.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// The writes that failed: block number and dd's message.
    pub failed: Vec<String>,
    /// Per path given, how many write requests it completed meanwhile (`/sys/block/sdX/stat`).
    pub per_path: Vec<u64>,
}

/// Writes blocks `first..first + n` (4 KiB each, filled with `byte`) through the map, one
/// O_DIRECT `dd` each as [`crate::blocks::write`] does, in one guest command, and counts the
/// write requests each of `paths` completed meanwhile. Round-robin sends consecutive requests
/// down alternate paths.
pub fn write_blocks(g: &Guest, paths: &[String], first: u64, n: u64, byte: u8) -> Result<Writes> {
    let names: Vec<&str> = paths
        .iter()
        .map(|p| p.trim_start_matches("/dev/"))
        .collect();
    let out = g.run(&format!(
        r#"counts() {{ for d in {names}; do set -- $(cat /sys/block/$d/stat); printf '%s ' $5; done; echo; }}
head -c 4096 /dev/zero | tr '\000' '\{byte:03o}' > /tmp/pattern
echo "before $(counts)"
b={first}
while [ $b -lt {end} ]; do
    if err=$(dd if=/tmp/pattern of={map} bs=4096 seek=$b count=1 oflag=direct conv=notrunc,fsync status=none 2>&1); then
        echo "ok $b"
    else
        echo "failed $b: $err"
    fi
    b=$((b+1))
done
echo "after $(counts)"
"#,
        names = names.join(" "),
        end = first + n,
        map = map_device(),
    ))?;
    let counts = |tag: &str| -> Vec<u64> {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (counts("before "), counts("after "));
    let mut failed: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("failed "))
        .map(String::from)
        .collect();
    let done = out.stdout.lines().filter(|l| l.starts_with("ok ")).count() + failed.len();
    if !out.success() || before.len() != paths.len() || done != usize::try_from(n).unwrap_or(0) {
        failed.push(format!(
            "the write script: exit {}: {}{}",
            out.code, out.stdout, out.stderr
        ));
    }
    Ok(Writes {
        failed,
        per_path: after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
    })
}

/// The lines of the guest's multipathd log containing `needle`.
pub fn log_lines(g: &Guest, needle: &str) -> Result<Vec<String>> {
    let out = g.run(&format!("grep -F -- '{needle}' /xchg/multipathd.log"))?;
    Ok(out.stdout.lines().map(String::from).collect())
}
