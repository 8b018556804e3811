#!/usr/bin/env bash
# Benchmark: the export's client CPU per byte and its throughput against the serving ceiling,
# on Azurite and on the simulator, with and without the server pinned to its own core.
# Method and results: docs/BENCHMARKS.md ("Export CPU per byte (issue 14, item 1)").
#
#   ceiling  what the server serves: the same ranged GETs as `hyper2kvm convert` (the written
#            ranges cut by the same code into 4 MiB chunks, `x-ms-range-get-content-md5: true`,
#            16 in flight), bodies discarded (hyper2kvm-azure/examples/blob_serve_rate.rs)
#   LABEL    `LABEL-BIN convert --quiet 'SAS URL' out.qcow2` for every LABEL=BIN given
#
# Every round runs each client once per server and pinning, in an order that alternates
# between rounds; every image is checked with `qemu-img check` and `qemu-img compare`
# against the source VHD. The server is pinned (all its threads) with `taskset -a -p -c 0`
# and each client runs under `taskset -c 1`; unpinned, both may use both cores.
#
# usage: bench/export-azurite.sh WORKDIR RUNS LABEL=HYPER2KVM_BIN... [-- CEILING_BIN]
#   e.g. bench/export-azurite.sh /tmp/xb 5 before=/tmp/old/hyper2kvm after=target/release/hyper2kvm
# env:   AZURITE=path/to/azurite-blob (default .tools/node_modules/.bin/azurite-blob, as .ci/run
#        installs it), NODE_PATH_AZ (where @azure/storage-blob is; default .tools/node_modules),
#        DISK_GIB=4 WRITTEN_MIB=750, SERVERS="azurite sim", PINS="0 1"
# needs: qemu-img, curl, python3, node, taskset, /usr/bin/time
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${1:?WORKDIR}; runs=${2:?RUNS}; shift 2
labels=() bins=() ceiling=
while (($#)); do
  case $1 in
    --) ceiling=$2; shift 2 ;;
    *=*) labels+=("${1%%=*}"); bins+=("$(realpath "${1#*=}")"); shift ;;
    *) echo "bad argument $1" >&2; exit 2 ;;
  esac
done
((${#bins[@]})) || { echo "give at least one LABEL=HYPER2KVM_BIN" >&2; exit 2; }
if [[ -z $ceiling ]]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
  cargo build --release -q -p hyper2kvm-azure --example blob_serve_rate
  ceiling=$CARGO_TARGET_DIR/release/examples/blob_serve_rate
fi
azurite=${AZURITE:-$root/.tools/node_modules/.bin/azurite-blob}
node_path=${NODE_PATH_AZ:-$root/.tools/node_modules}
disk_gib=${DISK_GIB:-4} written_mib=${WRITTEN_MIB:-750}
servers=${SERVERS:-azurite sim} pins=${PINS:-0 1}
mkdir -p "$work"
h2k=${bins[0]}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The simulator: one deallocated VM whose disk has scattered written extents (noise, text
# and zero blocks mixed), granted over ARM.
sub=00000000-0000-0000-0000-0000000be4c5
cat > "$work/scenario.yaml" <<YAML
settings:
  operations: { immediate: true, polls: 0 }
subscriptions:
  - id: $sub
    resource_groups:
      - name: rg-bench
        vms:
          - name: bench
            power_state: deallocated
            disks:
              - size_gb: $disk_gib
                content:
                  seed: 42
                  scatter: { written_bytes: $((written_mib << 20)), extent_size: 4194304 }
YAML
"$h2k" sim --scenario "$work/scenario.yaml" --listen 127.0.0.1:0 > "$work/sim.out" 2> "$work/sim.err" &
sim_pid=$!; pids+=("$sim_pid")
for _ in $(seq 50); do [[ -s $work/sim.out ]] && break; sleep 0.1; done
base=$(head -1 "$work/sim.out")
disk_id="/subscriptions/$sub/resourceGroups/rg-bench/providers/Microsoft.Compute/disks/bench_OsDisk_1"
sim_sas=$(curl -sf -X POST -H 'Content-Type: application/json' \
  -d '{"access":"Read","durationInSeconds":7200,"fileFormat":"VHD"}' \
  "$base$disk_id/beginGetAccess?api-version=2025-01-02" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["accessSAS"])')

# The source VHD: the simulator's blob, downloaded once and made sparse again. Both servers
# serve it: Azurite gets it through Put Page (non-zero 64 KiB blocks only, like a disk's
# written pages; tests/azurite/upload-page-blob.cjs).
src=$work/source.vhd
if [[ ! -s $src ]]; then
  curl -sf -o "$src.tmp" "$sim_sas"
  fallocate --dig-holes "$src.tmp"
  mv "$src.tmp" "$src"
fi

port=${H2K_BENCH_AZURITE_PORT:-10077}

"$azurite" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence --disableTelemetry \
  --skipApiVersionCheck --silent > "$work/azurite.log" 2>&1 &
az_pid=$!; pids+=("$az_pid")
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
az_sas=$(NODE_PATH=$node_path node tests/azurite/upload-page-blob.cjs \
  "http://127.0.0.1:$port/devstoreaccount1" bench "disk-$$.vhd" "$src" 2> "$work/upload.err")
cat "$work/upload.err" >&2

# cpu_of PID: the process's user+system CPU so far, in clock ticks (all threads).
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

results=$work/results.tsv
printf 'round\tserver\tpinned\tclient\twall_s\tuser_s\tsys_s\trss_kib\tserver_cpu_s\n' > "$results"
# one ROUND SERVER PIN CLIENT: times one client once.
one() {
  local round=$1 server=$2 pin=$3 client=$4 sas spid
  case $server in
    azurite) sas=$az_sas spid=$az_pid ;;
    sim) sas=$sim_sas spid=$sim_pid ;;
  esac
  local taskset=()
  if [[ $pin == 1 ]]; then
    taskset -a -p -c 0 "$spid" > /dev/null
    taskset=(taskset -c 1)
  else
    taskset -a -p -c 0-1 "$spid" > /dev/null
  fi
  local out=$work/out.qcow2 cmd
  rm -f "$out" "$out".*
  if [[ $client == ceiling ]]; then
    cmd=("$ceiling" "$sas" 16)
  else
    local i
    for i in "${!labels[@]}"; do [[ ${labels[$i]} == "$client" ]] && cmd=("${bins[$i]}" convert --quiet "$sas" "$out"); done
  fi
  sync
  local before after
  before=$(cpu_of "$spid")
  "${taskset[@]}" /usr/bin/time -f '%e %U %S %M' -o "$work/time.txt" "${cmd[@]}" > "$work/client.out" 2> "$work/client.err" ||
    { cat "$work/client.err" >&2; exit 1; }
  after=$(cpu_of "$spid")
  read -r wall user sys rss < "$work/time.txt"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$server" "$pin" "$client" "$wall" "$user" "$sys" "$rss" \
    "$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')" >> "$results"
  # The ceiling prints the bytes it received: what each export of this server reads.
  if [[ $client == ceiling ]]; then awk '{print $1}' "$work/client.out" > "$work/bytes-$server"; fi
  if [[ $client != ceiling ]]; then
    qemu-img check -q "$out"
    qemu-img compare -q -f vpc -F qcow2 "$src" "$out"
    rm -f "$out"
  fi
  echo "round $round $server pin=$pin $client: $(cat "$work/time.txt")" >&2
}

clients=(ceiling "${labels[@]}")
for ((r = 1; r <= runs; r++)); do
  # Alternate the order of the clients between rounds (forwards, backwards), so that neither
  # always runs first after a pause or right after another.
  order=("${clients[@]}")
  if ((r % 2 == 0)); then
    order=(); for ((i = ${#clients[@]} - 1; i >= 0; i--)); do order+=("${clients[$i]}"); done
  fi
  for server in $servers; do
    for pin in $pins; do
      for c in "${order[@]}"; do one "$r" "$server" "$pin" "$c"; done
    done
  done
done

echo "machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')); kernel $(uname -r); Azurite $("$azurite" --version); $(qemu-img --version | head -1)"
echo "source: ${disk_gib} GiB disk; read per export: $(for s in $servers; do echo -n "$s $(($(cat "$work/bytes-$s") >> 20)) MiB; "; done)"
python3 - "$results" "$work" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
read = lambda server: int(open(f"{sys.argv[2]}/bytes-{server}").read()) / 2**30
groups = {}
for r in rows:
    groups.setdefault((r["server"], r["pinned"], r["client"]), []).append(r)
# "of ceiling": the ceiling's median wall over the client's. "per round": the ceiling's wall
# over the client's in each round, their median and range. A busy host moves single rounds
# by a third; the spread says how far the first column can be read.
wall_of = {(r["round"], r["server"], r["pinned"], r["client"]): float(r["wall_s"]) for r in rows}
print("| server | pinned | client | runs | wall (s) | user+sys (s) | CPU s/GiB | peak RSS (MiB) | server CPU (s) | of ceiling | per round |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
med = lambda rs, f: statistics.median(f(r) for r in rs)
for (server, pin, client), rs in groups.items():
    wall = med(rs, lambda r: float(r["wall_s"]))
    cpu = med(rs, lambda r: float(r["user_s"]) + float(r["sys_s"]))
    rss = max(int(r["rss_kib"]) for r in rs) / 1024
    scpu = med(rs, lambda r: float(r["server_cpu_s"]))
    ceil = med(groups[(server, pin, "ceiling")], lambda r: float(r["wall_s"]))
    rounds = [wall_of[(r["round"], server, pin, "ceiling")] / float(r["wall_s"]) for r in rs]
    spread = f"{statistics.median(rounds):.2f} ({min(rounds):.2f}–{max(rounds):.2f})"
    print(f"| {server} | {'yes' if pin == '1' else 'no'} | {client} | {len(rs)} | {wall:.2f} | {cpu:.2f} | {cpu / read(server):.2f} | {rss:.0f} | {scpu:.2f} | {ceil / wall:.2f} | {spread} |")
PY
