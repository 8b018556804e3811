#!/usr/bin/env bash
# Benchmark: hyper2kvm convert against qemu-img convert on the same fixed VHD, in one run.
#
# The input is a 4 GiB disk image holding an ext4 file system filled with about 1 GiB of real
# files (hard links to /usr, so no extra disk is used for staging), the shape of a typical
# Azure OS disk: a fixed VHD by default, or (INPUT=vhdx|vmdk) a dynamic VHDX as Hyper-V
# exports it or a streamOptimized VMDK as OVAs carry it, each written by qemu-img. Each tool converts it REPS times, alternating, with a warm page cache; each
# run is timed with /usr/bin/time -v (wall clock and peak RSS) and its output is checked with
# qemu-img compare. Each ratio is given twice: of the medians, and the median (and range) of
# the ratios within each round. Beside the plain conversions, the durable-write floor: `dd` writing as many
# bytes as our plain output with O_DIRECT and an fdatasync, the least any tool can take to put
# that output on this disk durably. MODES (default "plain zstd deflate") picks the modes;
# ZSTD_LEVELS (e.g. "-1 -3") adds zstd runs of ours at those levels.
#
# usage: [INPUT=vhd|vhdx|vmdk] [MODES=...] [ZSTD_LEVELS=...] [H2K=binary] bench/convert.sh [WORKDIR] [REPS]   (needs qemu-img, mke2fs, /usr/bin/time)
set -euo pipefail
# H2K=path/to/hyper2kvm runs another build (an earlier commit's, for a before/after).
[[ -n ${H2K:-} ]] && H2K=$(realpath "$H2K")
cd "$(dirname "$0")/.."
work=${1:-/tmp/hyper2kvm-bench}
reps=${2:-3}
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
if [[ -z ${H2K:-} ]]; then
  cargo build --release -q -p hyper2kvm-cli
fi
h2k=${H2K:-$CARGO_TARGET_DIR/release/hyper2kvm}

input=${INPUT:-vhd}
case $input in
  vhd) qfmt=vpc; qopts=subformat=fixed,force_size=on ;;
  vhdx) qfmt=vhdx; qopts=subformat=dynamic ;;
  vmdk) qfmt=vmdk; qopts=subformat=streamOptimized ;;
  *) echo "INPUT must be vhd, vhdx or vmdk" >&2; exit 2 ;;
esac
vhd="$work/disk.$input"
if [[ ! -f $vhd ]]; then
  stage="$work/stage"
  rm -rf "$stage"; mkdir -p "$stage"
  # Add /usr subtrees until about 1 GiB of files is staged.
  for d in /usr/share /usr/local /usr/libexec /usr/lib/gcc /usr/lib/python3* /usr/lib/x86_64-linux-gnu; do
    [[ -d $d ]] || continue
    cp -al "$d" "$stage/$(echo "$d" | tr / _)" 2>/dev/null || true
    (( $(du -sm "$stage" | cut -f1) >= 1024 )) && break
  done
  truncate -s 4G "$work/disk.raw"
  mke2fs -q -F -t ext4 -d "$stage" "$work/disk.raw"
  rm -rf "$stage"
  qemu-img convert -f raw -O "$qfmt" -o "$qopts" "$work/disk.raw" "$vhd"
  rm -f "$work/disk.raw"
fi
data_mib=$(du -m "$vhd" | cut -f1)

# run NAME OUT CMD...: time one conversion, print "NAME wall_s rss_mib out_mib".
run() {
  local name=$1 out=$2; shift 2
  rm -f "$out"
  sync
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || { cat "$work/err.txt"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2/1024}' "$work/time.txt")
  qemu-img compare -q -f "$qfmt" -F qcow2 "$vhd" "$out"
  echo "$name $wall $rss $(( $(stat -c %s "$out") >> 20 ))"
}

# floor MIB: time dd writing MIB MiB durably, print "floor-durable wall_s rss_mib MIB".
floor() {
  rm -f "$work/floor"
  sync
  /usr/bin/time -v -o "$work/time.txt" dd if=/dev/zero of="$work/floor" bs=1M count="$1" \
    oflag=direct conv=fdatasync status=none
  local wall
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/time.txt")
  rm -f "$work/floor"
  echo "floor-durable $wall 0 $1"
}

modes=" ${MODES:-plain zstd deflate} "
results="$work/results.txt"; : > "$results"
cat "$vhd" > /dev/null   # warm the page cache for everyone
for ((i = 1; i <= reps; i++)); do
  if [[ $modes == *" plain "* ]]; then
    run qemu-plain  "$work/q.qcow2"  qemu-img convert -f "$qfmt" -O qcow2 "$vhd" "$work/q.qcow2" >> "$results"
    # qemu-img's default is cache=unsafe (no flush after the data); -t writeback syncs like we do.
    run qemu-plain-durable "$work/q.qcow2" qemu-img convert -t writeback -f "$qfmt" -O qcow2 "$vhd" "$work/q.qcow2" >> "$results"
    run h2k-plain   "$work/h.qcow2"  "$h2k" convert --quiet "$vhd" "$work/h.qcow2" >> "$results"
    floor $(( $(stat -c %s "$work/h.qcow2") >> 20 )) >> "$results"
  fi
  if [[ $modes == *" zstd "* ]]; then
    run qemu-zstd   "$work/qz.qcow2" qemu-img convert -W -c -o compression_type=zstd -f "$qfmt" -O qcow2 "$vhd" "$work/qz.qcow2" >> "$results"
    run h2k-zstd    "$work/hz.qcow2" "$h2k" convert --quiet --compress zstd "$vhd" "$work/hz.qcow2" >> "$results"
    run h2k-zstd-l3 "$work/hz.qcow2" "$h2k" convert --quiet --compress zstd --compress-level 3 "$vhd" "$work/hz.qcow2" >> "$results"
    for level in ${ZSTD_LEVELS:-}; do
      run "h2k-zstd-l$level" "$work/hz.qcow2" "$h2k" convert --quiet --compress zstd --compress-level "$level" "$vhd" "$work/hz.qcow2" >> "$results"
    done
  fi
  if [[ $modes == *" deflate "* ]]; then
    run qemu-deflate "$work/qd.qcow2" qemu-img convert -W -c -f "$qfmt" -O qcow2 "$vhd" "$work/qd.qcow2" >> "$results"
    run h2k-deflate "$work/hd.qcow2" "$h2k" convert --quiet --compress deflate "$vhd" "$work/hd.qcow2" >> "$results"
  fi
done
rm -f "$work"/*.qcow2

echo "input: 4 GiB $input ($qopts), ${data_mib} MiB allocated ($(du -sm --apparent-size "$vhd" | cut -f1) MiB apparent); $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')); $(qemu-img --version | head -1)"
echo
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
runs = {}
for name, wall, rss, out in rows:
    runs.setdefault(name, []).append((float(wall), int(rss), int(out)))
print("| tool | median wall (s) | runs (s) | peak RSS (MiB) | output (MiB) |")
print("| --- | ---: | --- | ---: | ---: |")
for name, rs in runs.items():
    walls = [w for w, _, _ in rs]
    print(f"| {name} | {statistics.median(walls):.2f} | {', '.join(f'{w:.2f}' for w in walls)} "
          f"| {max(r for _, r, _ in rs)} | {rs[-1][2]} |")
print()
def median(name):
    return statistics.median(w for w, _, _ in runs[name])
# Each tool runs once per round, so the k-th run of each belongs to round k. The ratio within
# a round compares runs seconds apart; the host's speed drifts over minutes (and by the hour),
# which moves the medians of the first ratio more than it moves these.
def per_round(ours, peer):
    rs = [o[0] / p[0] for o, p in zip(runs[ours], runs[peer])]
    return f"{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"
for ours, peer in [("h2k-plain", "qemu-plain"), ("h2k-plain", "qemu-plain-durable"),
                   ("h2k-plain", "floor-durable"),
                   ("h2k-zstd", "qemu-zstd"), ("h2k-zstd-l3", "qemu-zstd"),
                   *[(n, "qemu-zstd") for n in runs if n.startswith("h2k-zstd-l") and n != "h2k-zstd-l3"],
                   ("h2k-deflate", "qemu-deflate")]:
    if ours in runs and peer in runs:
        print(f"- {ours} / {peer} wall time = {median(ours) / median(peer):.2f}; "
              f"per round {per_round(ours, peer)}")
PY
