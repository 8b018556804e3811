#!/usr/bin/env bash
# The text capture of docs/progress.md: what a fleet migration's progress looks like on a
# terminal and in a log, on the simulator, slowed down so that there is something to see.
#
# The fleet is bench/fleet-link.sh's (20 running VMs, 1–4 disks each, seed 14), smaller:
# about WRITTEN_MIB MiB written in all, the blob side capped at RATE_MIB MiB/s, each
# long-running operation (deallocate, grant, revoke) 5–20 s. The run (`running_vm:
# deallocate`, the simulator in-process) goes twice:
#
# * under `script` on a pseudo-terminal of COLS x ROWS, its output rendered to the screen as
#   it stood every FRAME_SECS seconds (a small VT100 subset: enough for indicatif): frames.txt;
# * with stderr to a file and HYPER2KVM_PROGRESS_INTERVAL=10: plain.txt.
#
# usage: [H2K=target/debug/hyper2kvm] [RATE_MIB=32] [WRITTEN_MIB=1536] [COLS=120] [ROWS=24] \
#        [FRAME_SECS=10] bench/progress-capture.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/hyper2kvm-progress-capture}
h2k=$(realpath "${H2K:-${CARGO_TARGET_DIR:-target}/debug/hyper2kvm}")
rate_mib=${RATE_MIB:-32}
written_mib=${WRITTEN_MIB:-1536}
cols=${COLS:-120} rows=${ROWS:-24} frame_secs=${FRAME_SECS:-10}
mkdir -p "$work"
work=$(realpath "$work")
sub=00000000-0000-0000-0000-0000000f1ee7

python3 - "$work" "$written_mib" "$rate_mib" "$sub" <<'PY'
import random, sys
work, written_mib, rate_mib, sub = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rnd = random.Random(14)
mib, gib = 1 << 20, 1 << 30
vms = []
for i in range(20):
    disks = []
    for d in range(1 + rnd.randrange(4)):
        size = rnd.choice([8, 16, 32, 64, 128]) * gib
        written = int(rnd.choice([32, 32, 64, 64, 128, 256, 512, 1024]) * mib)
        disks.append([size, written])
    vms.append(disks)
scale = written_mib * mib / sum(w for disks in vms for _, w in disks)
lines = [f"settings: {{ blob_rate: {rate_mib * mib}, operations: {{ seconds: [5, 20], retry_after_secs: 1 }} }}",
         "subscriptions:", f"  - id: {sub}", "    resource_groups:", "      - name: rg",
         "        location: westeurope", "        vms:"]
for i, disks in enumerate(vms):
    lines += [f"          - name: vm-{i:02d}", "            power_state: running", "            disks:"]
    for d, (size, written) in enumerate(disks):
        w = max(4 * mib, int(written * scale) // (4 * mib) * (4 * mib))
        lines.append(f"              - {{ size_bytes: {size}, content: {{ seed: {i * 10 + d}, scatter: {{ written_bytes: {w}, extent_size: {4 * mib} }} }} }}")
open(f"{work}/scenario.yaml", "w").write("\n".join(lines) + "\n")
PY

config() {
  cat >"$work/config.yaml" <<YAML
azure:
  subscription: "$sub"
  resource_groups: [rg]
  running_vm: deallocate
  simulator: { scenario: scenario.yaml }
download: { concurrency: 8 }
output:
  dir: "$work/out"
YAML
  rm -rf "$work/out"
}

# On a terminal.
config
script -q -f -e --log-out "$work/tty.raw" --log-timing "$work/tty.timing" \
  -c "stty cols $cols rows $rows; exec '$h2k' -c '$work/config.yaml' >'$work/tty.stdout'" >/dev/null
python3 - "$work" "$cols" "$rows" "$frame_secs" >"$work/frames.txt" <<'PY'
import codecs, re, sys
work, cols, rows, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
raw = open(f"{work}/tty.raw", "rb").read()
# script's own header and footer lines are not the program's.
start = raw.index(b"\n") + 1 if raw.startswith(b"Script started") else 0
chunks, pos = [], start
for line in open(f"{work}/tty.timing"):
    f = line.split()
    delay, n = float(f[-2]), int(f[-1])
    chunks.append((delay, raw[pos:pos + n]))
    pos += n
screen, y, x = [""] * rows, 0, 0
def put(text):
    global y, x
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\x1b":
            m = re.match(r"\x1b\[([0-9;?]*)([A-Za-z])", text[i:])
            if not m:
                i += 1
                continue
            arg, op = m.group(1), m.group(2)
            n = int(arg) if arg.isdigit() else 1
            if op == "A": y = max(0, y - n)
            elif op == "B": y = min(rows - 1, y + n)
            elif op == "C": x += n
            elif op == "D": x = max(0, x - n)
            elif op == "G": x = n - 1
            elif op == "K":
                screen[y] = screen[y][:x] if arg in ("", "0") else ""
            elif op == "J":
                if arg in ("", "0"):
                    screen[y] = screen[y][:x]
                    for j in range(y + 1, rows): screen[j] = ""
            i += len(m.group(0))
            continue
        if c == "\r": x = 0
        elif c == "\n":
            if y == rows - 1: screen.pop(0); screen.append("")
            else: y += 1
        elif c >= " ":
            if x >= cols:  # the pending wrap of a full line
                x = 0
                if y == rows - 1: screen.pop(0); screen.append("")
                else: y += 1
            row = screen[y].ljust(x)
            screen[y] = row[:x] + c + row[x + 1:]
            x += 1
        i += 1
t, next_frame, out = 0.0, every, []
utf8 = codecs.getincrementaldecoder("utf-8")("replace")
def frame(at):
    shown = [r.rstrip() for r in screen]
    while shown and not shown[-1]: shown.pop()
    out.append(f"--- {at:.0f} s " + "-" * 40 + "\n" + "\n".join(shown) + "\n")
for delay, data in chunks:
    t += delay
    while t >= next_frame:
        frame(next_frame)
        next_frame += every
    put(utf8.decode(data))
frame(t)
sys.stdout.write("\n".join(out))
PY

# Off a terminal.
config
HYPER2KVM_PROGRESS_INTERVAL=10 "$h2k" -c "$work/config.yaml" >"$work/plain.stdout" 2>"$work/plain.txt"
rm -rf "$work/out"
echo "$work/frames.txt $work/plain.txt"
