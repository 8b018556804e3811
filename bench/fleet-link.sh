#!/usr/bin/env bash
# Fleet scheduling against a link (issue 14, item 3): does a migration keep the link to
# storage busy while VMs wait for their long-running operations?
#
# The simulator (`hyper2kvm sim`, its own process) serves 20 running VMs with 1–4 disks each
# (sizes 8–128 GiB, 32 MiB to ~1 GiB written each in 4 MiB extents, about WRITTEN_GIB in all;
# seed 14), caps its blob data plane at RATE_MIB MiB/s (`settings.blob_rate`, one token bucket
# for every body) and makes each long-running operation take 5–30 s (`operations.seconds`,
# a duration that is a pure function of the action and the resource's name). The run is
# `running_vm: deallocate`: per VM a deallocate, then per disk a grant, the download and a
# revoke. Each configuration of CONFIGS (name:parallel_vms:parallel_disks[:max_connections],
# an empty field: the default) runs `hyper2kvm -c config.yaml` under /usr/bin/time -v (wall clock, peak RSS), REPS times.
#
#   ideal = bytes downloaded (the run's summary) / rate + the longest single VM's operations,
#   a VM's operations = deallocate + its longest grant + its longest revoke
#
# (its disks' grants and revokes can run side by side; the durations are computed here with
# the simulator's formula, `hyper2kvm_sim::operation_duration`: min + FNV-1a-64 of
# "<action> <name>" lower-cased, modulo the range in ms). The script prints wall / ideal.
# Every image of the first VM is checked with qemu-img check. Results: docs/BENCHMARKS.md.
#
# usage: [RATE_MIB=100] [WRITTEN_GIB=4] [CONFIGS="default:: wide:20:80:64"] \
#        bench/fleet-link.sh [WORKDIR] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/hyper2kvm-bench-fleet-link}
reps=${2:-1}
rate_mib=${RATE_MIB:-100}
written_gib=${WRITTEN_GIB:-4}
configs=${CONFIGS:-"default:: wide:20:80:64"}
ops_min=5 ops_max=30
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
cargo build --release -q -p hyper2kvm-cli
h2k="$CARGO_TARGET_DIR/release/hyper2kvm"
mkdir -p "$work"
sub=00000000-0000-0000-0000-0000000f1ee7

# The fleet, and per VM its disks' names (for the ideal).
python3 - "$work" "$written_gib" "$rate_mib" "$ops_min" "$ops_max" "$sub" <<'PY'
import json, random, sys
work, written_gib, rate_mib, lo, hi, sub = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rnd = random.Random(14)
mib, gib = 1 << 20, 1 << 30
vms = []
for i in range(20):
    n = 1 + rnd.randrange(4)
    disks = []
    for d in range(n):
        size = rnd.choice([8, 16, 32, 64, 128]) * gib
        # Skewed: most disks hold little, a few a lot (the long tail to start first).
        written = int(rnd.choice([32, 32, 64, 64, 128, 256, 512, 1024]) * mib)
        disks.append([size, written])
    vms.append(disks)
total = sum(w for disks in vms for _, w in disks)
scale = written_gib * gib / total
lines = [f"settings: {{ blob_rate: {rate_mib * mib}, operations: {{ seconds: [{lo}, {hi}], retry_after_secs: 1 }} }}",
         "subscriptions:", f"  - id: {sub}", "    resource_groups:", "      - name: rg",
         "        location: westeurope", "        vms:"]
names = {}
for i, disks in enumerate(vms):
    name = f"vm-{i:02d}"
    lines += [f"          - name: {name}", "            power_state: running", "            disks:"]
    for d, (size, written) in enumerate(disks):
        w = max(4 * mib, int(written * scale) // (4 * mib) * (4 * mib))
        lines.append(f"              - {{ size_bytes: {size}, content: {{ seed: {i * 10 + d}, scatter: {{ written_bytes: {w}, extent_size: {4 * mib} }} }} }}")
    names[name] = [f"{name}_OsDisk_1"] + [f"{name}_DataDisk_{d - 1}" for d in range(1, len(disks))]
open(f"{work}/scenario.yaml", "w").write("\n".join(lines) + "\n")
json.dump(names, open(f"{work}/disks.json", "w"))
PY

# ideal_ops: the longest VM's deallocate + longest grant + longest revoke, in seconds.
ideal_ops=$(python3 - "$work/disks.json" "$ops_min" "$ops_max" <<'PY'
import json, sys
names, lo, hi = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
def dur(target):  # hyper2kvm_sim::operation_duration
    h = 0xcbf29ce484222325
    for b in target.lower().encode():
        h = ((h ^ b) * 0x100000001b3) & (2**64 - 1)
    return (lo * 1000 + h % ((hi - lo) * 1000 + 1)) / 1000
print(max(dur(f"deallocate {vm}") + max(dur(f"beginGetAccess {d}") for d in disks)
          + max(dur(f"endGetAccess {d}") for d in disks) for vm, disks in names.items()))
PY
)

results="$work/results.txt"; : >"$results"
for ((i = 1; i <= reps; i++)); do
  for c in $configs; do
    IFS=: read -r name pvms pdisks maxconn <<<"$c"
    rm -rf "$work/out"
    "$h2k" sim --scenario "$work/scenario.yaml" --listen 127.0.0.1:0 >"$work/sim.out" 2>"$work/sim.err" &
    sim=$!
    trap 'kill $sim 2>/dev/null || true' EXIT
    for _ in $(seq 100); do grep -q http "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
    url=$(grep -o 'http://[0-9.:]*' "$work/sim.out" | head -1)
    cat >"$work/config.yaml" <<YAML
azure:
  subscriptions: ["$sub"]
  arm_endpoint: "$url"
  auth: none
  resource_groups: [rg]
  running_vm: deallocate
download: { concurrency: 16${pvms:+, parallel_vms: $pvms}${pdisks:+, parallel_disks: $pdisks}${maxconn:+, max_connections: $maxconn} }
output:
  dir: "$work/out"
YAML
    sync
    /usr/bin/time -v -o "$work/time.txt" "$h2k" -c "$work/config.yaml" --quiet >/dev/null 2>"$work/err.txt" \
      || { cat "$work/err.txt"; exit 1; }
    for img in "$work"/out/vm-00/*.qcow2; do qemu-img check -q "$img"; done
    kill $sim; wait $sim 2>/dev/null || true
    trap - EXIT
    python3 - "$work" "$name" "$rate_mib" "$ideal_ops" >>"$results" <<'PY'
import glob, json, re, sys
work, name, rate, ops = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
run = json.load(open(glob.glob(f"{work}/out/run-*.json")[0]))
t = open(f"{work}/time.txt").read()
h = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1).split(":")
wall = sum(float(x) * 60 ** k for k, x in enumerate(reversed(h)))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) // 1024
data = run["bytes_downloaded"] / (rate << 20)
print(name, f"{wall:.1f}", f"{data + ops:.1f}", f"{data:.1f}", rss, run["completed"], run["bytes_downloaded"] >> 20)
PY
    tail -1 "$results"
  done
done
rm -rf "$work/out"
echo "$(nproc) cores; 20 VMs, link $rate_mib MiB/s, operations ${ops_min}-${ops_max} s, longest VM's operations ${ideal_ops} s; $reps run(s)"
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for l in open(sys.argv[1]):
    name, wall, ideal, data, rss, done, mib = l.split()
    runs.setdefault(name, []).append((float(wall), float(ideal), float(data), int(rss), int(done), int(mib)))
for n, v in runs.items():
    walls = [w for w, *_ in v]
    ideal = v[0][1]
    print(f"{n:8} wall median {statistics.median(walls):7.1f} s (runs {', '.join(f'{w:.1f}' for w in walls)}); "
          f"ideal {ideal:.1f} s ({v[0][5]} MiB / rate = {v[0][2]:.1f} s + operations); "
          f"wall/ideal {statistics.median(walls) / ideal:.2f}; VMs completed {min(x[4] for x in v)}/20; peak RSS {max(x[3] for x in v)} MiB")
PY
