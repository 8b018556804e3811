#!/usr/bin/env bash
# Warm migration benchmark (issue 15): the downtime of `cutover` after `sync` against a cold
# migration with `running_vm: deallocate`, on the simulator.
#
# Two identical running VMs (Gen2 Linux), each with a 32 GiB disk holding 4 GiB of written data
# (4 MiB extents, same seed). `cold` is migrated cold: the run deallocates it first, so its
# downtime is the whole run. `warm` is synced once (a full copy while it runs), then 1 % of its
# written data changes (40 writes of 1 MiB and 1 trim of 1 MiB through the simulator's control
# endpoint), then `cutover` deallocates it, applies the last delta and writes the outputs; its
# downtime is `downtime_seconds` in its report.json (from the stop request to the outputs).
# Long-running operations (power, snapshot, grant, revoke, delete) take one poll of
# RETRY_AFTER seconds each on both sides (default 1; RETRY_AFTER=0 is the simulator's default
# timing, where the control plane answers at once and only the data is left). Every command runs under
# /usr/bin/time -v (wall clock, peak RSS); the images are checked with qemu-img check.
#
# usage: [RETRY_AFTER=S] bench/warm.sh [WORKDIR] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/hyper2kvm-bench-warm}
reps=${2:-3}
port=${H2K_BENCH_PORT:-18099}
retry_after=${RETRY_AFTER:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
cargo build --release -q -p hyper2kvm-cli
h2k="$CARGO_TARGET_DIR/release/hyper2kvm"
mkdir -p "$work"
gib=$((1 << 30)); mib=$((1 << 20))

cat >"$work/scenario.yaml" <<YAML
settings: { operations: { polls: 1, retry_after_secs: $retry_after } }
subscriptions:
  - id: 00000000-0000-0000-0000-0000000be715
    resource_groups:
      - name: rg
        location: westeurope
        vms:
$(for vm in cold warm; do cat <<VM
          - name: $vm
            size: Standard_D4s_v5
            power_state: running
            os_type: linux
            generation: 2
            disks:
              - { size_bytes: $((32 * gib)), content: { seed: 7, scatter: { written_bytes: $((4 * gib)), extent_size: $((4 * mib)) } } }
VM
done)
YAML

config() {  # config VM OUT
  cat <<YAML
azure:
  subscriptions: ["00000000-0000-0000-0000-0000000be715"]
  arm_endpoint: "http://127.0.0.1:$port"
  auth: none
  resource_groups: [rg]
  running_vm: deallocate
  selection: { names: [$1] }
output:
  dir: "$2"
YAML
}

timed() {  # timed NAME CMD...: appends "NAME wall_s rss_mib" to results
  local name=$1; shift
  sync
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || { cat "$work/err.txt"; exit 1; }
  awk -v n="$name" -F': ' '/Elapsed \(wall clock\)/ {k=split($2,t,":"); s=0; for(i=1;i<=k;i++) s=s*60+t[i]; w=s}
    /Maximum resident/ {r=$2/1024} END {printf "%s %s %.0f\n", n, w, r}' "$work/time.txt" >>"$results"
}

results="$work/results.txt"; : >"$results"
for ((i = 1; i <= reps; i++)); do
  rm -rf "$work/out-cold" "$work/out-warm"
  "$h2k" sim --scenario "$work/scenario.yaml" --listen "127.0.0.1:$port" >"$work/sim.log" 2>&1 &
  sim=$!
  trap 'kill $sim 2>/dev/null || true' EXIT
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  config cold "$work/out-cold" >"$work/cold.yaml"
  config warm "$work/out-warm" >"$work/warm.yaml"

  timed cold "$h2k" -c "$work/cold.yaml" --quiet
  timed sync "$h2k" -c "$work/warm.yaml" --quiet sync
  # 1 % of the 4 GiB written changes while the VM runs: 40 MiB written, 1 MiB trimmed.
  disk=warm_OsDisk_1   # the simulator names an OS disk <vm>_OsDisk_1
  for j in $(seq 0 39); do
    curl -sf -X POST "http://127.0.0.1:$port/_sim/disks/$disk/write?offset=$(( (j * 797 % 32768) * mib ))&length=$mib&seed=$((i * 100 + j))"
  done
  curl -sf -X POST "http://127.0.0.1:$port/_sim/disks/$disk/trim?offset=$((5 * gib))&length=$mib"
  timed cutover "$h2k" -c "$work/warm.yaml" --quiet cutover
  python3 - "$work/out-cold" "$work/out-warm" >>"$results" <<'PY'
import json, sys, glob
cold = json.load(open(glob.glob(sys.argv[1] + "/cold/report.json")[0]))
warm = json.load(open(glob.glob(sys.argv[2] + "/warm/report.json")[0]))
print("downtime-warm", warm["warm"]["downtime_seconds"], 0)
print("read-cutover-MiB", sum(d.get("bytes_downloaded", 0) for d in warm["disks"]) >> 20, 0)
PY
  for img in "$work"/out-cold/cold/*.qcow2 "$work"/out-warm/warm/*.qcow2; do
    qemu-img check -q "$img"
  done
  kill $sim; wait $sim 2>/dev/null || true
  trap - EXIT
done
echo "$(nproc) cores; 32 GiB disk, 4 GiB written, 1 % changed before cutover; operations poll after $retry_after s; $reps runs"
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for name, v, rss in (l.split() for l in open(sys.argv[1])):
    runs.setdefault(name, []).append((float(v), int(rss)))
for n, v in runs.items():
    print(f"{n:16} median {statistics.median(x for x, _ in v):8.2f}  runs {', '.join(f'{x:.2f}' for x, _ in v)}  peak RSS {max(r for _, r in v)} MiB")
cold = statistics.median(x for x, _ in runs["cold"])
warm = statistics.median(x for x, _ in runs["downtime-warm"])
print(f"downtime: warm cutover {warm:.2f} s / cold deallocate migration {cold:.2f} s = {warm / cold:.3f}")
PY
