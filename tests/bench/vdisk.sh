#!/usr/bin/env bash
# Voting-disk round cost in a guest (3 virtio-blk disks x 255 slots): io_uring poll_round vs
# synchronous pread loops, whole `fenced disk watch --rounds 1` / `dump` processes, and the real
# sbd listing a 255-slot disk. Medians over repeated runs in one guest. ~2-3 minutes.
#
# Usage (from anywhere, as root): tests/bench/vdisk.sh
# Prints a Markdown table (BENCH TABLE ...) for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

kmod-testing/provision.sh >/dev/null
if ! command -v sbd >/dev/null; then
    echo "vdisk.sh: installing sbd (Debian package) on the host; the guest runs it from there" >&2
    timeout 600 apt-get install -y --no-install-recommends sbd >/dev/null ||
        { timeout 600 apt-get update >/dev/null && timeout 600 apt-get install -y --no-install-recommends sbd >/dev/null; }
fi
cargo build --release --workspace --bins --quiet
cargo test --release -p tests --test vdisk_bench_vm --quiet -- --ignored --nocapture --test-threads=1
