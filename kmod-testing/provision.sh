#!/usr/bin/env bash
# Installs everything the VM harness needs on a fresh Debian machine and caches a pinned Debian
# kernel (image + modules + matching headers) under <repo>/.cache/kernel. Idempotent: a warm run
# only checks and returns. Prints the kernel directory's env file path on success.
#
# Every step either succeeds or ends with a message saying what to do; nothing here waits without
# a deadline (apt and downloads run under `timeout`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${FENCED_CACHE_DIR:-$repo/.cache}
# The pinned kernel ABI. When Debian's archive no longer serves it, we fall back to whatever
# linux-image-amd64 depends on today, and say so.
pinned_abi=${FENCED_KERNEL_ABI:-6.1.0-56}

say() { printf 'provision: %s\n' "$*" >&2; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages and builds kernel modules); re-run with sudo"
command -v apt-get >/dev/null || die "this harness needs a Debian machine (apt-get not found)"

packages=(
  qemu-system-x86   # the guests (TCG)
  qemu-block-extra  # QEMU's iSCSI initiator (libiscsi) for shared LUNs
  busybox-static    # the guests' initramfs
  kmod              # depmod for the extracted kernel's modules
  cpio
  sg3-utils         # sg_persist / sg_turs: peers and harness self-tests
  tgt               # tgtd: the second iSCSI target implementation (no PREEMPT AND ABORT)
  libiscsi-bin      # iscsi-inq: check a target from the host
  dmsetup           # dm-delay / dm-flakey faults inside guests
  multipath-tools   # multipathd, multipath, mpathpersist: dm-multipath maps in guests (multipath_vm)
  stress-ng         # CPU, memory and I/O stress inside guests (soak test)
  make gcc-12 libc6-dev  # build the fault-injection modules against the kernel headers
  systemd           # systemd-analyze verifies the shipped unit; PID 1 of GuestSpec::systemd guests
  udev              # the rules in udev/ run under a real udevd in a guest
  fence-agents      # its RelaxNG schema validates fence_fenced's metadata (not a runtime dependency)
  libxml2-utils     # xmllint for that validation
  python3 iproute2  # used inside guests (a notify-socket stand-in; the storage guest's network)
  corosync pacemaker pacemaker-cli-utils pcs  # real clusterware in systemd guests (pacemaker_vm);
                    # their units are enabled on this host but never start in a guest unless a test installs them
  watchdog          # the watchdog daemon that runs fence_scsi_check in the fence_scsi comparison (guests only)
  man-db zsh fish   # the Debian package's man pages and shell completions, checked in a guest (systemd_vm)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq || die "apt-get update failed or took over 10 min: check the Debian mirror in /etc/apt/sources.list"
  # No service of these packages starts on this machine (corosync and Pacemaker would form a
  # one-node cluster on a developer's host): policy-rc.d refuses starts during the install.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy && own_policy=1
  fi
  rc=0
  timeout 1200 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ -n "$own_policy" ] && rm -f $policy
  [ $rc = 0 ] || die "apt-get install ${missing[*]} failed: run it by hand to see why"
  case " ${missing[*]} " in
    *" corosync "*|*" pacemaker "*|*" pcs "*|*" watchdog "*)
      # ... nor at the host's next boot (the guests install these units themselves). The host
      # must never run the watchdog daemon: a failing check of it reboots the machine.
      systemctl disable corosync.service pacemaker.service pcsd.service pcsd-ruby.service \
        watchdog.service wd_keepalive.service >/dev/null 2>&1 || true ;;
  esac
fi

kroot=$cache/kernel
envfile=$kroot/env
if [ -f "$envfile" ]; then
  # shellcheck disable=SC1090
  . "$envfile"
  if [ -f "${KERNEL_IMAGE:-/nonexistent}" ] && [ -f "$KERNEL_MODULES/modules.dep" ] && [ -f "$KERNEL_HEADERS/Makefile" ]; then
    echo "$envfile"
    exit 0
  fi
  say "kernel cache at $kroot is incomplete; rebuilding it"
fi

mkdir -p "$kroot"
dl=$(mktemp -d "$kroot/download.XXXXXX")
trap 'rm -rf "$dl"' EXIT

download() { # abi -> 0 when all four packages were fetched
  local abi=$1 kbuild
  kbuild=linux-kbuild-$(echo "$abi" | cut -d. -f1-2)   # 6.1.0-56 -> linux-kbuild-6.1
  (cd "$dl" && timeout 600 apt-get download -qq \
      "linux-image-$abi-amd64" "linux-headers-$abi-amd64" "linux-headers-$abi-common" "$kbuild" 2>/dev/null)
}

abi=$pinned_abi
if ! download "$abi"; then
  [ -n "$(ls -A "$dl" 2>/dev/null)" ] && rm -f "$dl"/*.deb
  timeout 600 apt-get update -qq || true
  dep=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\([0-9.]*-[0-9]*\)-amd64.*/\1/p' | head -n1)
  [ -n "$dep" ] || die "cannot find a Debian kernel: neither linux-image-$pinned_abi-amd64 nor linux-image-amd64 is downloadable; check 'apt-cache policy linux-image-amd64'"
  say "pinned kernel $pinned_abi is not downloadable; falling back to $dep (what linux-image-amd64 depends on)"
  abi=$dep
  download "$abi" || die "apt-get download of linux-image-$abi-amd64 and its headers failed; check the Debian mirror"
fi

kver=$abi-amd64
dest=$kroot/$kver
rm -rf "$dest"
mkdir -p "$dest"
for deb in "$dl"/*.deb; do
  dpkg-deb -x "$deb" "$dest" || die "dpkg-deb could not extract $deb"
done
# The headers' Makefile includes the common tree by absolute path; point it into the cache.
sed -i "s|/usr/src/|$dest/usr/src/|g" "$dest/usr/src/linux-headers-$kver/Makefile"
depmod -b "$dest" "$kver" || die "depmod failed on the extracted modules of $kver"

cat >"$envfile" <<EOF
KERNEL_VERSION=$kver
KERNEL_IMAGE=$dest/boot/vmlinuz-$kver
KERNEL_MODULES=$dest/lib/modules/$kver
KERNEL_HEADERS=$dest/usr/src/linux-headers-$kver
EOF
say "kernel $kver cached in $dest"
echo "$envfile"
