#!/usr/bin/env bash
# Benchmark: exporting an Azure managed disk into qcow2, against the same simulator over
# loopback, in one run. Method and results: docs/BENCHMARKS.md ("Export").
#
#   (a) hyper2kvm convert 'SAS URL' out.qcow2         (written ranges only, straight to qcow2)
#   (b) the Python tool's pipeline: one streaming GET of the whole blob into a .vhd (curl -o),
#       then qemu-img convert -f vpc -O qcow2
#   (c) AzCopy (npm @azure-tools/azcopy-linux, installed under .tools/) + qemu-img convert
#   (d) what the simulator serves: the written ranges as 4 MiB ranged GETs, 16 in flight,
#       bodies discarded (hyper2kvm-azure/examples/blob_serve_rate.rs)
#
# usage: bench/export.sh [WORKDIR] [DISK_GIB] [WRITTEN_MIB]   (defaults: 8 GiB, 800 MiB)
#        PIN=1 bench/export.sh …   the simulator on CPU 0, every client on CPU 1 (taskset): the
#        server does not compete with the client for CPU, as Azure does not
# needs: qemu-img, curl, python3, /usr/bin/time; npm and Debian's libsecret-1-0 for AzCopy
#        (skipped without them)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${1:-/tmp/hyper2kvm-export-bench}
disk_gib=${2:-8}
written_mib=${3:-800}
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
cargo build --release -q -p hyper2kvm-cli
cargo build --release -q -p hyper2kvm-azure --example blob_serve_rate
h2k="$CARGO_TARGET_DIR/release/hyper2kvm"
rate="$CARGO_TARGET_DIR/release/examples/blob_serve_rate"

sub=00000000-0000-0000-0000-0000000be4c4
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

server=() client=()
if [[ ${PIN:-0} == 1 ]]; then
  server=(taskset -c 0) client=(taskset -c 1)
fi
"${server[@]}" "$h2k" sim --scenario "$work/scenario.yaml" --listen 127.0.0.1:0 > "$work/sim.out" 2> "$work/sim.err" &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do [[ -s $work/sim.out ]] && break; sleep 0.1; done
base=$(head -1 "$work/sim.out")
disk_id="/subscriptions/$sub/resourceGroups/rg-bench/providers/Microsoft.Compute/disks/bench_OsDisk_1"
grant() {
  curl -sf -X POST -H 'Content-Type: application/json' \
    -d '{"access":"Read","durationInSeconds":3600,"fileFormat":"VHD"}' \
    "$base$disk_id/beginGetAccess?api-version=2025-01-02" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["accessSAS"])'
}
sas=$(grant)

# run NAME CMD...: time one command; appends "NAME wall_s rss_mib" to results.
results="$work/results.txt"; : > "$results"
run() {
  local name=$1; shift
  sync
  "${client[@]}" /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || { cat "$work/err.txt"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2/1024}' "$work/time.txt")
  echo "$name $wall $rss" >> "$results"
}

rm -f "$work"/*.qcow2 "$work"/*.vhd

# (d) the serving ceiling
run d-serve "$rate" "$sas" 16
read -r d_bytes d_secs < "$work/out.txt"

# (a) ours
run a-hyper2kvm "$h2k" convert --quiet "$sas" "$work/a.qcow2"

# (b) one streaming GET, then qemu-img
run b-curl "curl" -sf -o "$work/b.vhd" "$sas"
run b-qemu-img qemu-img convert -f vpc -O qcow2 "$work/b.vhd" "$work/b.qcow2"
qemu-img compare -q -f vpc -F qcow2 "$work/b.vhd" "$work/a.qcow2"
qemu-img compare -q -f vpc -F qcow2 "$work/b.vhd" "$work/b.qcow2"

# (c) AzCopy
# .tools/ is git-ignored; the package ships the binary without its execute bit.
azcopy=$root/.tools/azcopy/node_modules/@azure-tools/azcopy-linux/dist/bin/azcopy_linux_amd64
if [[ ! -f $azcopy ]] && command -v npm >/dev/null; then
  npm install --no-package-lock --silent --prefix "$root/.tools/azcopy" @azure-tools/azcopy-linux >/dev/null 2>&1 || true
fi
[[ -f $azcopy ]] && chmod +x "$azcopy" || azcopy=
# It links libsecret: without Debian's libsecret-1-0 it cannot start.
if [[ -n $azcopy ]] && ! "$azcopy" --version >/dev/null 2>&1; then
  echo "AzCopy does not start (install libsecret-1-0)" >&2; azcopy=
fi
if [[ -n $azcopy ]]; then
  rm -f "$work/c.vhd"
  export AZCOPY_LOG_LOCATION=$work/azcopy-logs AZCOPY_JOB_PLAN_LOCATION=$work/azcopy-plans
  run c-azcopy "$azcopy" copy "$sas" "$work/c.vhd" --from-to BlobLocal
  run c-qemu-img qemu-img convert -f vpc -O qcow2 "$work/c.vhd" "$work/c.qcow2"
  qemu-img compare -q -f vpc -F qcow2 "$work/b.vhd" "$work/c.qcow2"
else
  echo "AzCopy not installed; (c) skipped" >&2
fi

a_mib=$(( $(stat -c %s "$work/a.qcow2") >> 20 ))
rm -f "$work"/*.vhd "$work"/*.qcow2
echo "pinned: ${PIN:-0}; disk: ${disk_gib} GiB, $(( d_bytes >> 20 )) MiB in written ranges, our qcow2 ${a_mib} MiB; $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')); $(qemu-img --version | head -1)"
python3 - "$results" "$d_bytes" <<'PY'
import sys
rows = {n: (float(w), int(r)) for n, w, r in (l.split() for l in open(sys.argv[1]))}
written = int(sys.argv[2])
print("| step | wall (s) | peak RSS (MiB) |")
print("| --- | ---: | ---: |")
for n, (w, r) in rows.items():
    print(f"| {n} | {w:.2f} | {r} |")
a = rows["a-hyper2kvm"][0]
b = rows["b-curl"][0] + rows["b-qemu-img"][0]
print(f"\n- (b) curl + qemu-img total: {b:.2f} s; (b) / (a) = {b / a:.1f}x")
if "c-azcopy" in rows:
    c = rows["c-azcopy"][0] + rows["c-qemu-img"][0]
    print(f"- (c) AzCopy + qemu-img total: {c:.2f} s; (c) / (a) = {c / a:.1f}x")
d = rows["d-serve"][0]
print(f"- (a) throughput on written bytes: {written / a / 2**20:.0f} MiB/s; (d) serving: {written / d / 2**20:.0f} MiB/s (wall incl. start-up), (a)/(d) = {d / a:.2f}")
PY
