#!/usr/bin/env bash
# Discovery benchmark: hyper2kvm's batched discovery against the per-VM request pattern of the
# Python hyper2kvm, against the same simulator. Method and results: docs/BENCHMARKS.md.
#
#   bench/discovery.sh [VMS] [LATENCY_MS] [PAGE_SIZE] [PER_VM_CONCURRENCY...]
#   (defaults: 2000 VMs x 2 disks, 30 ms per request, page size 100, concurrency 1 and 16)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"

echo "machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') memory, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "rustc: $(rustc --version)"
cargo build --release --quiet -p hyper2kvm-azure --example discovery_bench
"$CARGO_TARGET_DIR/release/examples/discovery_bench" "$@"
