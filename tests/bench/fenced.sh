#!/usr/bin/env bash
# fenced's benchmark (issue 6): fenced beside fence_scsi, sg_persist and sbd in the same guests on
# the same LUNs. Installs the peers from Debian's packages, builds the workspace in release (what
# is shipped), then runs the ignored benchmark tests one at a time. Results: BENCHMARKS.md.
#
#   tests/bench/fenced.sh [TEST-NAME-FILTER]
#
# Environment (see tests/tests/fenced_bench.rs): FENCED_BENCH_RUNS (default 5),
# FENCED_BENCH_SCSI_RUNS_64 (default 3), FENCED_BENCH_IDLE_SECS (default 300),
# FENCED_CACHE_DIR (guest kernel cache; default <repo>/.cache).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# The peers: fence_scsi (fence-agents), sbd, sg_persist/sg_turs (sg3-utils); strace times the
# SG_IO floor. Only what is missing is installed.
need=()
for p in fence-agents sbd sg3-utils strace; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "peers: $(dpkg-query -W -f='${Package} ${Version}\n' fence-agents sbd sg3-utils | paste -sd ' ')"

kmod-testing/provision.sh >/dev/null
cargo build --release --workspace --bins --quiet
rm -rf target/vm-runs
cargo test --release -p tests --test fenced_bench -- --ignored --nocapture --test-threads=1 "$@"
