#!/usr/bin/env bash
# Shards on one machine (issue 16): a simulated fleet of VMS VMs (one disk each, WRITTEN MiB
# written of 1 GiB) migrated by 1, 2 and 3 shards of one frozen plan, the shards run as
# concurrent processes into one output directory. Prints the wall time of the whole fleet and
# what `hyper2kvm report` says per shard. Method and results: docs/BENCHMARKS.md.
#
#   bench/fleet-shards.sh [VMS] [WRITTEN_MIB]      (defaults: 60 VMs, 32 MiB written each)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
VMS="${1:-60}"
WRITTEN="${2:-32}"
WORK="$(mktemp -d)"
trap 'kill "$SIM" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') memory"
cargo build --release --quiet -p hyper2kvm-cli
BIN="$CARGO_TARGET_DIR/release/hyper2kvm"
SUB=00000000-0000-0000-0000-00000000f1ee
{
  echo "settings: { operations: { polls: 1, retry_after_secs: 0 } }"
  echo "subscriptions:"
  echo "  - id: $SUB"
  echo "    resource_groups:"
  echo "      - name: rg-a"
  echo "        location: westeurope"
  echo "        vms:"
  for i in $(seq 0 $((VMS - 1))); do
    echo "          - { name: vm-$i, power_state: deallocated, disks: [{ size_bytes: 1073741824, content: { seed: $i, scatter: { written_bytes: $((WRITTEN << 20)), extent_size: 1048576 } } }] }"
  done
} > "$WORK/scenario.yaml"
"$BIN" sim --scenario "$WORK/scenario.yaml" --listen 127.0.0.1:0 > "$WORK/sim.out" &
SIM=$!
for _ in $(seq 100); do grep -q http "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
URL="$(grep -o 'http://[0-9.:]*' "$WORK/sim.out" | head -1)"
cat > "$WORK/config.yaml" <<YAML
azure:
  subscriptions: ["$SUB"]
  arm_endpoint: "$URL"
  auth: none
  resource_groups: [rg-a]
download: { parallel_vms: 2, parallel_disks: 2 }
output:
  dir: "$WORK/out"
YAML
for shards in 1 2 3; do
  rm -rf "$WORK/out"
  "$BIN" -c "$WORK/config.yaml" plan --shards "$shards" --output "$WORK/plan.json" > /dev/null 2>&1
  start=$(date +%s.%N)
  pids=()
  for i in $(seq 0 $((shards - 1))); do
    "$BIN" -c "$WORK/config.yaml" --plan "$WORK/plan.json" --shard "$i" --quiet > /dev/null 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  end=$(date +%s.%N)
  "$BIN" report "$WORK/out" --plan "$WORK/plan.json" -o json > "$WORK/report.json"
  python3 - "$WORK/report.json" "$shards" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
shards, wall = int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3])
t = r["totals"]
mib = t["bytes_downloaded"] / 2**20
print(f"{shards} shard(s): {t['completed']}/{t['vms']} VMs completed, {mib:.0f} MiB in {wall:.1f} s wall = {mib / wall:.1f} MiB/s fleet")
for s in r["shards"]:
    print(f"  shard {s['shard']}: {s['completed']} VMs, {s['bytes_downloaded'] / 2**20:.0f} MiB in {s['seconds']:.1f} s = {s['bytes_per_second'] / 2**20:.1f} MiB/s")
PY
done
