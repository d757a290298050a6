#!/usr/bin/env bash
# Installs everything the VM harness needs on a fresh Debian machine and caches two Debian kernels:
# the pinned stable one (image + modules + matching headers, for the fault-injection modules)
# under <repo>/.cache/kernel, and the newest one Debian builds (image + modules, from the unstable
# suite through an APT configuration private to the harness: the machine's own sources are never
# touched) under <repo>/.cache/kernel-newest. Idempotent: a warm run only checks and returns.
# Prints the stable kernel's env file path on success.
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
# The pinned newest kernel (Debian unstable), with the same kind of fallback.
newest_abi=${FENCED_NEWEST_KERNEL_ABI:-7.2.13+deb14}

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
  nvme-cli          # nvme connect and resv-report in NVMe-oF node guests (nvme_vm)
  xz-utils          # the newest kernel's modules are .ko.xz: its initramfs gets them decompressed
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

newest() { # caches the newest kernel and writes its env file; on failure says why, returns 1
  local nroot=$cache/kernel-newest apt=$cache/apt-newest
  local nenv=$nroot/env
  if [ -f "$nenv" ]; then
    # shellcheck disable=SC1090
    (. "$nenv" && [ -f "${KERNEL_IMAGE:-/nonexistent}" ] && [ -f "$KERNEL_MODULES/modules.dep" ] &&
      [ -f "$KERNEL_MODULES/modules.builtin" ]) && return 0
    say "newest kernel cache at $nroot is incomplete; rebuilding it"
  fi
  mkdir -p "$nroot" "$apt/etc/preferences.d" "$apt/etc/sources.list.d" "$apt/state/lists/partial" \
    "$apt/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
    >"$apt/etc/sources.list"
  : >"$apt/state/status"
  printf '%s\n' \
    "Dir::Etc::sourcelist \"$apt/etc/sources.list\";" \
    "Dir::Etc::sourceparts \"$apt/etc/sources.list.d\";" \
    "Dir::Etc::preferencesparts \"$apt/etc/preferences.d\";" \
    "Dir::State \"$apt/state\";" \
    "Dir::State::status \"$apt/state/status\";" \
    "Dir::Cache \"$apt/cache\";" \
    'APT::Architecture "amd64";' \
    'APT::Architectures { "amd64"; };' \
    'Acquire::Languages "none";' >"$apt/apt.conf"
  local ndl abi kver dest deb
  ndl=$(mktemp -d "$nroot/download.XXXXXX") || return 1
  # The image package is a meta package: the kernel is in linux-binary-*, its modules in
  # linux-modules-*, the list of built-in modules and the config in linux-base-*. No headers: the fault-injection module cannot be built for this kernel here
  # (its kbuild needs a newer compiler and C library than Debian 12 has).
  fetch_newest() {
    (cd "$ndl" && APT_CONFIG=$apt/apt.conf timeout 900 apt-get download -qq \
      "linux-binary-$1-amd64" "linux-modules-$1-amd64" "linux-base-$1-amd64" 2>/dev/null)
  }
  if ! APT_CONFIG=$apt/apt.conf timeout 600 apt-get update -qq 2>/dev/null; then
    rm -rf "$ndl"
    say "apt-get update of Debian unstable failed (private configuration $apt/apt.conf)"
    return 1
  fi
  abi=$newest_abi
  if ! fetch_newest "$abi"; then
    rm -f "$ndl"/*.deb
    abi=$(APT_CONFIG=$apt/apt.conf apt-cache depends linux-image-amd64 2>/dev/null |
      sed -n 's/.*Depends: linux-image-\(.*\)-amd64$/\1/p' | head -n1)
    if [ -z "$abi" ] || ! fetch_newest "$abi"; then
      rm -rf "$ndl"
      say "cannot download Debian unstable's kernel: neither $newest_abi nor what linux-image-amd64 depends on (${abi:-none})"
      return 1
    fi
    say "pinned newest kernel $newest_abi is not downloadable; falling back to $abi (what unstable's linux-image-amd64 depends on)"
  fi
  kver=$abi-amd64
  dest=$nroot/$kver
  rm -rf "$dest" && mkdir -p "$dest" || return 1
  for deb in "$ndl"/*.deb; do
    dpkg-deb -x "$deb" "$dest" || { rm -rf "$ndl"; say "dpkg-deb could not extract $deb"; return 1; }
  done
  rm -rf "$ndl"
  # Merged /usr: the modules are under usr/lib/modules; depmod takes the prefix that holds lib/.
  depmod -b "$dest/usr" "$kver" || { say "depmod failed on the modules of $kver"; return 1; }
  printf '%s\n' "KERNEL_VERSION=$kver" "KERNEL_IMAGE=$dest/usr/lib/modules/$kver/vmlinuz" \
    "KERNEL_MODULES=$dest/usr/lib/modules/$kver" >"$nenv"
  say "newest kernel $kver cached in $dest"
}

kroot=$cache/kernel
envfile=$kroot/env
if [ -f "$envfile" ]; then
  # shellcheck disable=SC1090
  . "$envfile"
  if [ -f "${KERNEL_IMAGE:-/nonexistent}" ] && [ -f "$KERNEL_MODULES/modules.dep" ] && [ -f "$KERNEL_HEADERS/Makefile" ]; then
    newest || die "the newest kernel could not be cached (above); the tests on it cannot run"
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
newest || die "the newest kernel could not be cached (above); the tests on it cannot run"
echo "$envfile"
