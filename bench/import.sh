#!/usr/bin/env bash
# Benchmark: `hyper2kvm import x.ova` against what users do by hand, `tar -xf` and one
# `qemu-img convert -t writeback` per disk (durable output on both sides), alternating.
#
# The OVA holds two streamOptimized VMDKs made by qemu-img and a SHA256 manifest: disk 1 is
# the 4 GiB ext4 disk of bench/convert.sh (about 1 GiB of real files), disk 2 a 1 GiB disk
# with 256 MiB of random data. Each run is timed with /usr/bin/time -v (wall clock, peak RSS);
# every image is checked with qemu-img compare.
#
# usage: bench/import.sh [WORKDIR] [REPS]   (run bench/convert.sh first: it makes disk.raw)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/hyper2kvm-bench}
reps=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
cargo build --release -q -p hyper2kvm-cli
h2k="$CARGO_TARGET_DIR/release/hyper2kvm"
[[ -f $work/disk.raw ]] || { echo "no $work/disk.raw: keep it from bench/convert.sh (or make one)" >&2; exit 2; }

ova="$work/bench.ova"
if [[ ! -f $ova ]]; then
  src="$work/ova-src"
  rm -rf "$src"; mkdir -p "$src"
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$work/disk.raw" "$src/web01-disk1.vmdk"
  truncate -s 1G "$src/d2.raw"
  dd if=/dev/urandom of="$src/d2.raw" bs=1M count=256 seek=100 conv=notrunc status=none
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$src/d2.raw" "$src/web01-disk2.vmdk"
  rm "$src/d2.raw"
  size() { stat -c %s "$1"; }
  sed -e "s/@SIZE1@/$(size "$src/web01-disk1.vmdk")/" -e "s/@SIZE2@/$(size "$src/web01-disk2.vmdk")/" \
    -e "s/@CAP1@/4096/" -e "s/@CAP2@/1024/" hyper2kvm-local/testdata/vmware.ovf >"$src/web01.ovf"
  (cd "$src" && for f in web01.ovf web01-disk1.vmdk web01-disk2.vmdk; do
     echo "SHA256($f)= $(sha256sum "$f" | cut -d' ' -f1)"; done) >"$src/web01.mf"
  tar --format=ustar -C "$src" -cf "$ova" web01.ovf web01.mf web01-disk1.vmdk web01-disk2.vmdk
  mv "$src"/web01-disk*.vmdk "$work/"   # the references for qemu-img compare
  rm -rf "$src"
fi

timed() {  # timed NAME CMD...: prints "NAME wall_s rss_mib"
  local name=$1; shift
  sync
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || { cat "$work/err.txt"; exit 1; }
  awk -v n="$name" -F': ' '/Elapsed \(wall clock\)/ {k=split($2,t,":"); s=0; for(i=1;i<=k;i++) s=s*60+t[i]; w=s}
    /Maximum resident/ {r=$2/1024} END {printf "%s %s %.0f\n", n, w, r}' "$work/time.txt"
}

results="$work/import-results.txt"; : >"$results"
cat "$ova" >/dev/null
for ((i = 1; i <= reps; i++)); do
  rm -rf "$work/h" "$work/m"; mkdir -p "$work/m"
  timed h2k "$h2k" import --quiet "$ova" --output-dir "$work/h" >>"$results"
  timed manual bash -c "tar -xf '$ova' -C '$work/m' && qemu-img convert -t writeback -f vmdk -O qcow2 '$work/m/web01-disk1.vmdk' '$work/m/1.qcow2' && qemu-img convert -t writeback -f vmdk -O qcow2 '$work/m/web01-disk2.vmdk' '$work/m/2.qcow2'" >>"$results"
  qemu-img compare -q -f vmdk -F qcow2 "$work/web01-disk1.vmdk" "$work/h/web01/web01-os.qcow2"
  qemu-img compare -q -f vmdk -F qcow2 "$work/web01-disk2.vmdk" "$work/h/web01/web01-data-lun0.qcow2"
done
rm -rf "$work/h" "$work/m"
echo "OVA: $(du -m "$ova" | cut -f1) MiB; $(nproc) cores; $(qemu-img --version | head -1)"
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for name, wall, rss in (l.split() for l in open(sys.argv[1])):
    runs.setdefault(name, []).append((float(wall), int(rss)))
med = {n: statistics.median(w for w, _ in v) for n, v in runs.items()}
for n, v in runs.items():
    print(f"{n:7} median {med[n]:.2f} s  runs {', '.join(f'{w:.2f}' for w, _ in v)}  peak RSS {max(r for _, r in v)} MiB")
print(f"ratio h2k/manual: {med['h2k'] / med['manual']:.2f}")
PY
