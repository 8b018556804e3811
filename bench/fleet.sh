#!/usr/bin/env bash
# Fleet benchmark (issue 16): `hyper2kvm plan` over a simulated fleet of VMS VMs, and
# `hyper2kvm report` over an output directory holding VMS VM reports, each under
# /usr/bin/time -v (wall time, peak RSS). Method and results: docs/BENCHMARKS.md.
#
#   bench/fleet.sh [VMS] [SHARDS]      (defaults: 10000 VMs x 2 disks, 8 shards)
#
# The simulator runs as its own process (`hyper2kvm sim`), so the planner's RSS is its own.
# The report's directory is synthetic: one report.json per VM (2 completed disks, one
# snapshot deleted) and one run-<id>.json per shard, as a finished sharded run leaves them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hyper2kvm-target}"
VMS="${1:-10000}"
SHARDS="${2:-8}"
WORK="$(mktemp -d)"
trap 'kill "$SIM" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') memory, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "rustc: $(rustc --version)"
cargo build --release --quiet -p hyper2kvm-cli
BIN="$CARGO_TARGET_DIR/release/hyper2kvm"
SUB=00000000-0000-0000-0000-00000000f1ee

cat > "$WORK/scenario.yaml" <<YAML
settings: { page_size: 1000 }
subscriptions:
  - id: $SUB
    generate:
      - { count: $VMS, resource_groups: [rg-a, rg-b, rg-c], prefix: vm, data_disks: 1 }
YAML
"$BIN" sim --scenario "$WORK/scenario.yaml" --listen 127.0.0.1:0 > "$WORK/sim.out" &
SIM=$!
for _ in $(seq 100); do grep -q http "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
URL="$(grep -o 'http://[0-9.:]*' "$WORK/sim.out" | head -1)"
cat > "$WORK/config.yaml" <<YAML
azure:
  subscriptions: ["$SUB"]
  arm_endpoint: "$URL"
  auth: none
  resource_groups: [rg-a, rg-b, rg-c]
output:
  dir: "$WORK/out"
  layout: resource-group
YAML

measure() {
  local what="$1"; shift
  /usr/bin/time -v "$@" > "$WORK/stdout" 2> "$WORK/time"
  local wall rss
  wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time")"
  rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time")"
  printf '%-40s wall %s  peak RSS %d MiB\n' "$what" "$wall" $((rss / 1024))
}

for i in 1 2 3; do
  measure "plan: $VMS VMs, $SHARDS shards (#$i)" "$BIN" -c "$WORK/config.yaml" plan --shards "$SHARDS" --output "$WORK/plan.json"
done
grep -v '^SHARD' "$WORK/stdout" | awk '{print "  shard " $1 ": " $2 " VMs, " $4 " " $5}' | head -3
echo "  plan.json: $(du -h "$WORK/plan.json" | cut -f1)"

python3 - "$WORK/plan.json" "$WORK/out" <<'PY'
import json, os, sys
plan = json.load(open(sys.argv[1]))
out = sys.argv[2]
runs = {}
for v in plan["vms"]:
    d = os.path.join(out, v["resource_group"], v["name"])
    os.makedirs(d, exist_ok=True)
    run_id = "h2k-20261206t120000z-%04x" % v["shard"]
    disks = []
    for k in v["disks"]:
        img = os.path.join(d, "%s-%s.qcow2" % (v["name"], "os" if k["role"] == "os" else "data-lun%d" % k["lun"]))
        disks.append({"name": k["name"], "id": k["id"], "role": k["role"], "output": img,
                      "status": "completed", "virtual_size": k["size_bytes"],
                      "bytes_downloaded": 1 << 30, "bytes_skipped": 0, "bytes_resumed": 0,
                      "bytes_zero": 0, "image_bytes": 1 << 30, "sha256": "0" * 64, "seconds": 10.0,
                      **({"lun": k["lun"]} if "lun" in k else {})})
    rep = {"tool_version": plan["tool_version"], "schema_version": 2, "run_id": run_id,
           "vm_id": v["id"], "name": v["name"], "resource_group": v["resource_group"],
           "location": "westeurope", "vm_size": "Standard_D2s_v5", "generation": 2,
           "os_type": "linux", "power_state_before": v["power_state"], "action": v["action"],
           "status": "completed", "started_at": "2026-12-06T12:00:00Z",
           "finished_at": "2026-12-06T12:00:20Z", "seconds": 20.0, "disks": disks,
           "domain_xml": os.path.join(d, v["name"] + ".xml"), "vcpus": 2, "memory_mib": 8192,
           "resources": [{"kind": "snapshot", "id": v["id"] + "-snap", "source": v["disks"][0]["id"],
                          "run_id": run_id, "requested_at": "2026-12-06T12:00:01Z", "created": True,
                          "deleted_at": "2026-12-06T12:00:19Z", "kept": False}],
           "power": [], "warnings": [], "errors": [], "cleanup_errors": []}
    with open(os.path.join(d, "report.json"), "w") as f:
        json.dump(rep, f, indent=2)
    r = runs.setdefault(v["shard"], {"run_id": run_id, "vms": [], "bytes": 0})
    r["vms"].append({"name": v["name"], "resource_group": v["resource_group"], "status": "completed",
                     "disks_done": len(disks), "disks_total": len(disks),
                     "bytes_downloaded": len(disks) << 30, "seconds": 20.0,
                     "report": os.path.join(d, "report.json")})
    r["bytes"] += len(disks) << 30
for shard, r in runs.items():
    path = os.path.join(out, "run-%s.json" % r["run_id"])
    json.dump({"tool_version": plan["tool_version"], "schema_version": 2, "run_id": r["run_id"],
               "status": "completed", "output_dir": out, "summary": path,
               "started_at": "2026-12-06T12:00:00Z", "finished_at": "2026-12-06T14:00:00Z",
               "seconds": 7200.0, "vms": r["vms"], "completed": len(r["vms"]), "not_completed": 0,
               "bytes_downloaded": r["bytes"], "cleanup_errors": [],
               "shard": {"index": shard, "count": plan["shards"], "plan_id": plan["plan_id"]},
               "exit_code": 0}, open(path, "w"), indent=2)
PY
echo "  output directory: $(find "$WORK/out" -name report.json | wc -l) reports, $(du -sh "$WORK/out" | cut -f1)"
sync
for i in 1 2 3; do
  measure "report table: $VMS VMs (#$i)" "$BIN" report "$WORK/out" --plan "$WORK/plan.json"
done
tail -1 "$WORK/stdout"
for i in 1 2 3; do
  measure "report json: $VMS VMs (#$i)" "$BIN" report "$WORK/out" --plan "$WORK/plan.json" --output json
done
