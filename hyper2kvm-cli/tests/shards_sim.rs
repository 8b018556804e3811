//! Fleets in shards (issue 16), end to end: the real binary against the in-process
//! simulator. One frozen plan, three shards run concurrently as plain processes into one
//! output directory (every VM migrated exactly once, `hyper2kvm report` agreeing with the
//! simulator); a shard killed with `kill -9` and run again; a second worker on a locked VM;
//! a VM deleted since the plan; hashed shards without a plan; the errors of `--shard`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use hyper2kvm_sim::{Scenario, SimHandle, Simulator};
use serde_json::Value;
use support::{
    assert_image_matches, files_under, read_json, s, text, wait_child, wait_for, Scratch,
};

const BIN: &str = env!("CARGO_BIN_EXE_hyper2kvm");
const SUB: &str = "00000000-0000-0000-0000-0000000e2e16";
const MIB: u64 = 1 << 20;
/// The fixed-VHD footer every export reads once, besides the disk's data.
const FOOTER: u64 = 512;
/// The scheduler variables `--shard auto` reads: never inherited from the test's own
/// environment (CI may itself run in an Indexed Job).
const SCHEDULER_VARS: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
];

/// `(name, power state, disk sizes in MiB)`.
type VmDef = (&'static str, &'static str, &'static [u64]);

/// Nine VMs of different sizes and power states: the plan must balance them.
const FLEET: &[VmDef] = &[
    ("s0", "running", &[48, 32, 32]),
    ("s1", "deallocated", &[32]),
    ("s2", "stopped", &[24, 16]),
    ("s3", "deallocated", &[64, 16]),
    ("s4", "running", &[16]),
    ("s5", "deallocated", &[32, 32]),
    ("s6", "stopped", &[40]),
    ("s7", "deallocated", &[16, 16, 16]),
    ("s8", "running", &[24]),
];

fn scenario_yaml(vms: &[VmDef]) -> String {
    let mut y = format!(
        "settings: {{ operations: {{ polls: 1, retry_after_secs: 0 }}, page_list_size: 16 }}\nsubscriptions:\n  - id: {SUB}\n    resource_groups:\n      - name: rg-a\n        location: westeurope\n        vms:\n"
    );
    for (i, (name, power, disks)) in vms.iter().enumerate() {
        y.push_str(&format!(
            "          - name: {name}\n            size: Standard_B2s\n            power_state: {power}\n            os_type: linux\n            generation: 2\n            disks:\n"
        ));
        for (j, mib) in disks.iter().enumerate() {
            let size = mib * MIB;
            y.push_str(&format!(
                "              - size_bytes: {size}\n                content: {{ seed: {}, scatter: {{ written_bytes: {}, extent_size: 131072 }}, extents: [{{ offset: {}, length: 65536 }}] }}\n",
                100 + i * 10 + j,
                2 * MIB,
                size - 65536
            ));
            if j > 0 {
                y.push_str(&format!("                lun: {}\n", j - 1));
            }
        }
    }
    y
}

async fn start(vms: &[VmDef]) -> SimHandle {
    Simulator::start(&Scenario::from_yaml(&scenario_yaml(vms)).unwrap())
        .await
        .unwrap()
}

fn config(sim: &SimHandle, out: &Path, extra: &str) -> String {
    format!(
        "azure:\n  subscriptions: [\"{SUB}\"]\n  arm_endpoint: \"{}\"\n  auth: none\n  retry: {{ max_retries: 1, timeout_secs: 10 }}\n  resource_groups: [rg-a]\n{extra}output:\n  dir: \"{}\"\n  format: qcow2\n",
        sim.base_url(),
        out.display()
    )
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).stdin(Stdio::null());
    for v in SCHEDULER_VARS {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs the binary off the async runtime (the simulator runs on it).
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command(args, env);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

/// Starts the binary, its stdout and stderr into `log`.stdout / .stderr.
fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let mut c = command(args, env);
    c.stdout(std::fs::File::create(log.with_extension("stdout")).unwrap())
        .stderr(std::fs::File::create(log.with_extension("stderr")).unwrap())
        .spawn()
        .unwrap()
}

/// Every `run-*.json` of `out`.
fn summaries(out: &Path) -> Vec<Value> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("run-") && n.ends_with(".json")
        })
        .map(|p| read_json(&p))
        .collect()
}

/// Checks every completed disk's image against the simulator's disk.
fn assert_images(sim: &SimHandle, scratch: &Scratch, rep: &Value) {
    for d in rep["disks"].as_array().unwrap() {
        assert!(
            matches!(d["status"].as_str(), Some("completed" | "already_done")),
            "{d:#}"
        );
        let name = d["name"].as_str().unwrap();
        let reference = scratch.path(&format!("{name}.ref"));
        sim.disk(name)
            .unwrap()
            .write_raw_reference(&reference)
            .unwrap();
        assert_image_matches(
            Path::new(d["output"].as_str().unwrap()),
            "qcow2",
            &reference,
        );
        std::fs::remove_file(&reference).unwrap();
    }
}

/// `hyper2kvm -c CFG plan --shards N --output PLAN`, which must succeed; the plan.
async fn make_plan(cfg: &Path, shards: u32, plan: &Path) -> Value {
    let out = run(
        &[
            "-c",
            s(cfg),
            "plan",
            "--shards",
            &shards.to_string(),
            "--output",
            s(plan),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    read_json(plan)
}

/// `hyper2kvm report OUT --plan PLAN --output json`.
async fn fleet_report(out: &Path, plan: Option<&Path>) -> Value {
    let mut args = vec!["report", s(out), "--output", "json"];
    if let Some(p) = plan {
        args.extend(["--plan", s(p)]);
    }
    let o = run(&args, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Planned shard of each VM name.
fn planned_shards(plan: &Value) -> BTreeMap<String, u64> {
    plan["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["shard"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The documented fields of a section of `docs/records.md`: (field, optional).
fn documented(section: &str) -> Vec<(String, bool)> {
    let doc = include_str!("../../docs/records.md");
    let mut current = String::new();
    let mut fields = Vec::new();
    for line in doc.lines() {
        if let Some(h) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            current = h.replace('`', "");
            continue;
        }
        if current != section {
            continue;
        }
        if let Some(row) = line.strip_prefix("| `") {
            let optional = line
                .split('|')
                .nth(2)
                .is_some_and(|t| t.contains("optional"));
            fields.push((row.split('`').next().unwrap().to_string(), optional));
        }
    }
    assert!(
        !fields.is_empty(),
        "docs/records.md has no section {section:?}"
    );
    fields
}

/// Every field of `objects` is documented in `section`, and every field the section does
/// not call optional is there.
fn assert_documented(section: &str, objects: &[&Value]) {
    assert!(!objects.is_empty(), "nothing to check for {section}");
    let fields = documented(section);
    let mut seen = BTreeSet::new();
    for o in objects {
        for k in o.as_object().unwrap().keys() {
            assert!(
                fields.iter().any(|(f, _)| f == k),
                "{section}: field {k:?} is written but not in docs/records.md"
            );
            seen.insert(k.clone());
        }
    }
    for (f, optional) in &fields {
        assert!(
            *optional || seen.contains(f),
            "{section}: docs/records.md lists {f:?} as always written, but it is not"
        );
    }
}

/// After every shard of `plan` ran once into `out`: each VM was migrated by its own shard and
/// by no other, the simulator served each disk once and has nothing left open, every image
/// equals its disk, and `hyper2kvm report` agrees. Returns the runs and the fleet report.
async fn assert_every_vm_migrated_once(
    sim: &SimHandle,
    scratch: &Scratch,
    out: &Path,
    plan_path: &Path,
    plan: &Value,
) -> (Vec<Value>, Value) {
    let shards = planned_shards(plan);
    // Each VM was migrated by its own shard, and by no other.
    let runs = summaries(out);
    assert_eq!(runs.len(), 3);
    let mut migrated_by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &runs {
        let shard = r["shard"]["index"].as_u64().unwrap();
        assert_eq!(r["shard"]["count"], 3);
        assert_eq!(r["shard"]["plan_id"], plan["plan_id"]);
        for v in r["vms"].as_array().unwrap() {
            assert_eq!(v["status"], "completed", "{v:#}");
            migrated_by
                .entry(v["name"].as_str().unwrap().to_string())
                .or_default()
                .push(shard);
        }
    }
    let expected: BTreeMap<String, Vec<u64>> =
        shards.iter().map(|(k, &v)| (k.clone(), vec![v])).collect();
    assert_eq!(migrated_by, expected);

    // Exactly once, as the simulator saw it: one grant per disk, one snapshot per disk of
    // a VM that was not deallocated, every byte served once.
    let c = sim.counters();
    let disks: usize = FLEET.iter().map(|v| v.2.len()).sum();
    let snapshotted: usize = FLEET
        .iter()
        .filter(|v| v.1 != "deallocated")
        .map(|v| v.2.len())
        .sum();
    assert_eq!(c.grants(), disks as u64);
    assert_eq!(c.snapshots_created(), snapshotted as u64);
    assert_eq!(c.open_grants(), 0);
    assert_eq!(c.snapshots_alive(), 0);
    for (name, ..) in FLEET {
        let rep = read_json(&out.join(name).join("report.json"));
        assert_eq!(rep["status"], "completed");
        assert_images(sim, scratch, &rep);
    }

    // The report agrees with the simulator.
    let fleet = fleet_report(out, Some(plan_path)).await;
    let t = &fleet["totals"];
    assert_eq!(t["vms"], FLEET.len());
    assert_eq!(t["completed"], FLEET.len());
    assert_eq!(t["not_started"], 0);
    assert_eq!(t["in_progress"], 0);
    assert_eq!(t["disks_done"], disks);
    assert_eq!(
        t["bytes_downloaded"].as_u64().unwrap(),
        c.bytes_served() - FOOTER * c.grants()
    );
    assert_eq!(t["grants_left"].as_u64().unwrap(), c.open_grants());
    assert_eq!(t["snapshots_left"].as_u64().unwrap(), c.snapshots_alive());
    let per_shard: Vec<(u64, u64, u64)> = fleet["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard"].as_u64().unwrap(),
                s["runs"].as_u64().unwrap(),
                s["completed"].as_u64().unwrap(),
            )
        })
        .collect();
    let planned_per_shard = |i: u64| shards.values().filter(|&&s| s == i).count() as u64;
    assert_eq!(
        per_shard,
        (0..3)
            .map(|i| (i, 1, planned_per_shard(i)))
            .collect::<Vec<_>>()
    );
    (runs, fleet)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_shards_of_one_plan_migrate_every_vm_exactly_once() {
    let sim = start(FLEET).await;
    let scratch = Scratch::new("shards3");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "download: { parallel_vms: 2, parallel_disks: 2 }\n",
        ),
    )
    .unwrap();
    let plan_path = scratch.path("plan.json");
    let plan = make_plan(&cfg, 3, &plan_path).await;
    assert_eq!(plan["shards"], 3);
    assert!(plan["tool_version"].is_string());
    assert_eq!(plan["schema_version"], 2);
    assert_eq!(plan["policy"]["running_vm"], "snapshot");
    let shards = planned_shards(&plan);
    assert_eq!(shards.len(), FLEET.len());
    // Balanced: every shard has VMs, and no shard holds more than the lightest plus the
    // largest VM.
    let totals: Vec<u64> = plan["shard_totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["bytes"].as_u64().unwrap())
        .collect();
    let largest = FLEET
        .iter()
        .map(|v| v.2.iter().sum::<u64>() * MIB)
        .max()
        .unwrap();
    assert!(totals.iter().all(|&t| t > 0), "{totals:?}");
    assert!(
        totals.iter().max().unwrap() - totals.iter().min().unwrap() <= largest,
        "{totals:?}"
    );
    // Planning changed nothing and read no disk.
    assert_eq!(sim.counters().grants(), 0);
    assert_eq!(sim.counters().snapshots_created(), 0);

    // Three workers at once into one directory; shard 2 finds its number as a pod of a
    // Kubernetes Indexed Job does.
    let workers: Vec<Child> = (0..3)
        .map(|i| {
            let shard = if i == 2 {
                "auto".to_string()
            } else {
                i.to_string()
            };
            spawn(
                &["-c", s(&cfg), "--plan", s(&plan_path), "--shard", &shard],
                &[("JOB_COMPLETION_INDEX", "2")],
                &scratch.path(&format!("shard{i}")),
            )
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        let status = wait_child(w).await;
        let err = std::fs::read_to_string(scratch.path(&format!("shard{i}.stderr"))).unwrap();
        assert_eq!(status.code(), Some(0), "shard {i}: {err}");
    }

    let (runs, fleet) =
        assert_every_vm_migrated_once(&sim, &scratch, &out, &plan_path, &plan).await;
    // No lock, partial image or temporary file is left.
    for f in files_under(&out) {
        let n = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !n.ends_with(".lock") && !n.ends_with(".part") && !n.ends_with(".tmp"),
            "left behind: {}",
            f.display()
        );
    }
    // plan.json, the runs' shard and the fleet report are as docs/records.md says.
    let all = |v: &Value| -> Vec<Value> { v.as_array().unwrap().clone() };
    let plan_vms = all(&plan["vms"]);
    let plan_disks: Vec<Value> = plan_vms.iter().flat_map(|v| all(&v["disks"])).collect();
    let totals_v = all(&plan["shard_totals"]);
    assert_documented("plan.json", &[&plan]);
    assert_documented("plan.json: policy", &[&plan["policy"]]);
    assert_documented(
        "plan.json: shard_totals[]",
        &totals_v.iter().collect::<Vec<_>>(),
    );
    assert_documented("plan.json: vms[]", &plan_vms.iter().collect::<Vec<_>>());
    assert_documented(
        "plan.json: vms[].disks[]",
        &plan_disks.iter().collect::<Vec<_>>(),
    );
    assert_documented(
        "run-<id>.json: shard",
        &runs.iter().map(|r| &r["shard"]).collect::<Vec<_>>(),
    );
    assert_documented("Fleet report", &[&fleet]);
    assert_documented("Fleet report: totals", &[&fleet["totals"]]);
    let fleet_shards = all(&fleet["shards"]);
    assert_documented(
        "Fleet report: shards[]",
        &fleet_shards.iter().collect::<Vec<_>>(),
    );
    let fleet_vms = all(&fleet["vms"]);
    assert_documented("Fleet report: vms[]", &fleet_vms.iter().collect::<Vec<_>>());
    // The table says the same.
    let table = run(&["report", s(&out), "--plan", s(&plan_path)], &[]).await;
    let table = text(&table.stdout);
    assert!(
        table.contains(
            "9 VMs: 9 completed, 0 failed, 0 interrupted, 0 in progress, 0 changed, 0 not started"
        ),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_killed_with_sigkill_and_run_again_completes_the_fleet() {
    let sim = start(FLEET).await;
    let scratch = Scratch::new("shardkill");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    // The same policy, slow enough to be killed half-way.
    let slow = scratch.path("slow.yaml");
    std::fs::write(
        &slow,
        config(
            &sim,
            &out,
            "download: { parallel_vms: 1, parallel_disks: 1, bandwidth: 1M, concurrency: 2, chunk_size: 256K }\n",
        ),
    )
    .unwrap();
    let plan_path = scratch.path("plan.json");
    let plan = make_plan(&cfg, 3, &plan_path).await;
    let shards = planned_shards(&plan);
    let victims: Vec<&String> = shards
        .iter()
        .filter(|(_, &s)| s == 1)
        .map(|(n, _)| n)
        .collect();
    assert!(!victims.is_empty());

    let killed = spawn(
        &["-c", s(&slow), "--plan", s(&plan_path), "--shard", "1"],
        &[],
        &scratch.path("killed"),
    );
    let others: Vec<Child> = [0, 2]
        .iter()
        .map(|i| {
            spawn(
                &[
                    "-c",
                    s(&cfg),
                    "--plan",
                    s(&plan_path),
                    "--shard",
                    &i.to_string(),
                ],
                &[],
                &scratch.path(&format!("shard{i}")),
            )
        })
        .collect();
    // Killed once it has written into a VM's folder.
    wait_for("shard 1 to start a VM", Duration::from_secs(120), || {
        victims
            .iter()
            .any(|v| out.join(v).join("report.json").exists())
    })
    .await;
    let mut killed = killed;
    killed.kill().unwrap();
    assert!(!wait_child(killed).await.success());
    for w in others {
        assert_eq!(wait_child(w).await.code(), Some(0));
    }

    // The report sees shard 1 stopped half-way: nobody holds a lock (its pid is gone), its
    // VMs are interrupted or not started, and what it left in Azure is listed.
    let before = fleet_report(&out, Some(&plan_path)).await;
    let t = &before["totals"];
    assert_eq!(t["in_progress"], 0, "{before:#}");
    assert_eq!(
        t["completed"].as_u64().unwrap(),
        (FLEET.len() - victims.len()) as u64,
        "{before:#}"
    );
    assert!(t["interrupted"].as_u64().unwrap() >= 1, "{before:#}");
    assert_eq!(
        t["interrupted"].as_u64().unwrap() + t["not_started"].as_u64().unwrap(),
        victims.len() as u64
    );
    // Snapshots recorded and not deleted are what the simulator still has: at least those
    // confirmed created, at most all recorded (the kill may fall between a create and its
    // answer).
    let c = sim.counters();
    let snapshots = |confirmed: bool| {
        before["cleanup"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "snapshot" && (!confirmed || l["created"] == true))
            .count() as u64
    };
    let alive = c.snapshots_alive();
    assert!(
        snapshots(true) <= alive && alive <= snapshots(false),
        "{alive} alive\n{before:#}"
    );
    assert_eq!(
        before["totals"]["snapshots_left"].as_u64().unwrap(),
        snapshots(false)
    );
    let leftovers = before["cleanup"].as_array().unwrap();
    if !leftovers.is_empty() {
        assert_documented(
            "Fleet report: cleanup[]",
            &leftovers.iter().collect::<Vec<_>>(),
        );
    }

    // Run again, it finishes like a single-machine run.
    let again = run(
        &["-c", s(&cfg), "--plan", s(&plan_path), "--shard", "1"],
        &[],
    )
    .await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let after = fleet_report(&out, Some(&plan_path)).await;
    let t = &after["totals"];
    assert_eq!(t["completed"], FLEET.len(), "{after:#}");
    assert_eq!(t["grants_left"], 0);
    assert_eq!(t["snapshots_left"], 0);
    assert!(after["cleanup"].as_array().unwrap().is_empty());
    assert_eq!(c.open_grants(), 0);
    assert_eq!(c.snapshots_alive(), 0);
    for (name, ..) in FLEET {
        let rep = read_json(&out.join(name).join("report.json"));
        assert_eq!(rep["status"], "completed", "{rep:#}");
        assert_images(&sim, &scratch, &rep);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_worker_on_a_locked_vm_skips_or_waits() {
    let one: &[VmDef] = &[("solo", "deallocated", &[48, 32])];
    let sim = start(one).await;
    let scratch = Scratch::new("shardlock");
    let out = scratch.path("out");
    let slow = scratch.path("slow.yaml");
    std::fs::write(
        &slow,
        config(
            &sim,
            &out,
            "download: { parallel_disks: 1, bandwidth: 1M, concurrency: 2, chunk_size: 256K }\n",
        ),
    )
    .unwrap();
    let fast = scratch.path("fast.yaml");
    std::fs::write(&fast, config(&sim, &out, "")).unwrap();
    let first = spawn(&["-c", s(&slow)], &[], &scratch.path("first"));
    let folder_lock = out.join("solo").join(".hyper2kvm.lock");
    wait_for("the first worker's lock", Duration::from_secs(60), || {
        folder_lock.exists()
    })
    .await;

    // The report shows who is on it.
    let fleet = fleet_report(&out, None).await;
    assert_eq!(fleet["totals"]["in_progress"], 1, "{fleet:#}");
    let holder = fleet["vms"][0]["lock"].as_str().unwrap().to_string();
    assert!(holder.contains(&format!("pid {}", first.id())), "{holder}");

    // A worker that does not wait skips it, saying who holds it.
    let skipped = run(&["-c", s(&fast)], &[]).await;
    let err = text(&skipped.stderr);
    assert_eq!(skipped.status.code(), Some(1), "{err}");
    assert!(err.contains("solo: LOCKED"), "{err}");
    assert!(
        err.contains("solo: skipped, another run is migrating this VM: ")
            && err.contains(".lock: locked by run h2k-")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    assert!(text(&skipped.stdout).contains("locked"));

    // A worker that waits says so, then finds the VM done and downloads nothing.
    let waiting = spawn(
        &["-c", s(&fast), "--lock-wait", "600"],
        &[],
        &scratch.path("waiting"),
    );
    let waiting_err = scratch.path("waiting.stderr");
    wait_for(
        "the waiting worker to say so",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&waiting_err).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.starts_with("solo: waiting up to 600 s: another run is migrating this VM: ")
                        && l.contains("locked by run h2k-")
                })
            })
        },
    )
    .await;
    assert_eq!(wait_child(first).await.code(), Some(0));
    assert_eq!(wait_child(waiting).await.code(), Some(0));
    let rep = read_json(&out.join("solo").join("report.json"));
    assert_eq!(rep["status"], "completed");
    for d in rep["disks"].as_array().unwrap() {
        assert_eq!(d["status"], "already_done", "{d:#}");
    }
    let c = sim.counters();
    assert_eq!(c.grants(), 2, "the VM's two disks were exported once");
    assert_eq!(c.open_grants(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_deleted_since_the_plan_is_reported_not_guessed() {
    let sim = start(FLEET).await;
    let scratch = Scratch::new("sharddel");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let plan_path = scratch.path("plan.json");
    let plan = make_plan(&cfg, 2, &plan_path).await;
    let shards = planned_shards(&plan);
    // The same fleet later: s3 deleted, s5's data disk resized.
    let later: Vec<VmDef> = FLEET
        .iter()
        .filter(|v| v.0 != "s3")
        .map(|&v| {
            if v.0 == "s5" {
                ("s5", v.1, &[32u64, 48][..])
            } else {
                v
            }
        })
        .collect();
    let sim2 = start(&later).await;
    let cfg2 = scratch.path("config2.yaml");
    std::fs::write(&cfg2, config(&sim2, &out, "")).unwrap();
    let mut codes = Vec::new();
    for i in 0..2 {
        let o = run(
            &[
                "-c",
                s(&cfg2),
                "--plan",
                s(&plan_path),
                "--shard",
                &i.to_string(),
            ],
            &[],
        )
        .await;
        codes.push((i, o.status.code(), text(&o.stderr)));
    }
    for (i, code, err) in &codes {
        let has_change = shards
            .iter()
            .any(|(n, s)| *s == *i as u64 && (n == "s3" || n == "s5"));
        assert_eq!(*code, Some(if has_change { 3 } else { 0 }), "{err}");
    }
    let all_err: String = codes.iter().map(|c| c.2.clone()).collect();
    assert!(
        all_err.contains("not migrated: rg-a/s3: not found by the discovery made now"),
        "{all_err}"
    );
    assert!(all_err.contains("not migrated: rg-a/s5: its disks changed since the plan (disk s5_DataDisk_0 was 33554432 bytes, now 50331648)"), "{all_err}");
    let deviations: Vec<Value> = summaries(&out)
        .iter()
        .flat_map(|r| r["plan_deviations"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(deviations.len(), 2, "{deviations:#?}");
    assert_documented(
        "run-<id>.json: plan_deviations[]",
        &deviations.iter().collect::<Vec<_>>(),
    );
    let fleet = fleet_report(&out, Some(&plan_path)).await;
    let states: BTreeMap<String, String> = fleet["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(states["s3"], "changed");
    assert_eq!(states["s5"], "changed");
    assert_eq!(
        states.values().filter(|s| *s == "completed").count(),
        FLEET.len() - 2
    );
    assert_eq!(sim2.counters().open_grants(), 0);
    assert_eq!(sim2.counters().snapshots_alive(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hashed_shards_without_a_plan_cover_every_vm_once() {
    let sim = start(FLEET).await;
    let scratch = Scratch::new("shardhash");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let mut seen: Vec<String> = Vec::new();
    for i in 0..3 {
        let o = run(&["-c", s(&cfg), "--shard", &format!("{i}/3")], &[]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    for r in summaries(&out) {
        assert!(r["shard"]["plan_id"].is_null());
        for v in r["vms"].as_array().unwrap() {
            assert_eq!(v["status"], "completed");
            seen.push(v["name"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    let all: Vec<String> = FLEET.iter().map(|v| v.0.to_string()).collect();
    assert_eq!(seen, all, "every VM once");
    let set: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(set.len(), FLEET.len());
    assert_eq!(
        sim.counters().grants(),
        FLEET.iter().map(|v| v.2.len() as u64).sum::<u64>()
    );
}

/// Regression: with `--shard I/N` (hash shards), a selection that matched no VM exited 0, so
/// `hyper2kvm … && decommission` went on. It exits 2 as without shards; an empty shard of a
/// selection that matched VMs is still fine (exit 0).
#[tokio::test(flavor = "multi_thread")]
async fn hashed_shards_of_an_empty_selection_exit_2_and_empty_shards_0() {
    let sim = start(&FLEET[..1]).await;
    let scratch = Scratch::new("shardempty");
    let out = scratch.path("out");
    let nomatch = scratch.path("nomatch.yaml");
    std::fs::write(
        &nomatch,
        config(&sim, &out, "  selection:\n    names: [\"nomatch-*\"]\n"),
    )
    .unwrap();
    for shard in ["0/3", "2/3"] {
        let o = run(&["-c", s(&nomatch), "--shard", shard], &[]).await;
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{shard}: {stderr}");
        assert!(stderr.contains("matched no VM"), "{shard}: {stderr}");
        let allowed = run(&["-c", s(&nomatch), "--shard", shard, "--allow-empty"], &[]).await;
        assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed.stderr));
    }
    // One VM over three shards: two of them are empty, and that is no error.
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let mut migrated = 0;
    for i in 0..3 {
        let o = run(&["-c", s(&cfg), "--shard", &format!("{i}/3")], &[]).await;
        assert_eq!(o.status.code(), Some(0), "{i}/3: {}", text(&o.stderr));
        migrated += text(&o.stderr).contains("1 of 1 VM(s) completed") as u32;
    }
    assert_eq!(migrated, 1);
}

/// Arguments, environment, and what stderr must say.
type Case = (Vec<String>, Vec<(&'static str, &'static str)>, String);

#[tokio::test(flavor = "multi_thread")]
async fn shard_mistakes_name_the_file_or_variable_and_exit_2() {
    let sim = start(&FLEET[..3]).await;
    let scratch = Scratch::new("shardbad");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let plan_path = scratch.path("plan.json");
    make_plan(&cfg, 3, &plan_path).await;
    let shard = |s: &'static str| {
        vec![
            "-c".to_string(),
            self::s(&cfg).to_string(),
            "--plan".into(),
            self::s(&plan_path).to_string(),
            "--shard".into(),
            s.into(),
        ]
    };
    let cases: Vec<Case> = vec![
        (
            shard("3"),
            vec![],
            format!("shard 3 out of range 0–2 in {}", plan_path.display()),
        ),
        (
            shard("auto"),
            vec![],
            "neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) nor SLURM_ARRAY_TASK_ID"
                .into(),
        ),
        (
            shard("auto"),
            vec![("JOB_COMPLETION_INDEX", "one")],
            "JOB_COMPLETION_INDEX=\"one\" is not a shard number".into(),
        ),
        (
            shard("auto"),
            vec![("SLURM_ARRAY_TASK_ID", "7")],
            format!("shard 7 out of range 0–2 in {}", plan_path.display()),
        ),
        (shard("1/4"), vec![], "has 3 shards, not 4".into()),
        (
            vec!["-c".into(), s(&cfg).into(), "--shard".into(), "1".into()],
            vec![],
            "the number of shards is unknown".into(),
        ),
        (
            vec![
                "-c".into(),
                s(&cfg).into(),
                "--plan".into(),
                s(&scratch.path("missing.json")).into(),
                "--shard".into(),
                "0".into(),
            ],
            vec![],
            format!(
                "{}: cannot read the plan",
                scratch.path("missing.json").display()
            ),
        ),
    ];
    for (args, env, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args, &env).await;
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    // A config that would export differently from the plan.
    let other = scratch.path("other.yaml");
    std::fs::write(&other, config(&sim, &out, "  running_vm: deallocate\n")).unwrap();
    let o = run(
        &["-c", s(&other), "--plan", s(&plan_path), "--shard", "0"],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains(
            "the plan was made with azure.running_vm: snapshot, the config now says deallocate"
        ),
        "{}",
        text(&o.stderr)
    );
    // A plan of garbage names the file.
    std::fs::write(&plan_path, "{\"shards\": 3}").unwrap();
    let o = run(
        &shard("0").iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains(&format!("{}: not a hyper2kvm plan", plan_path.display())),
        "{}",
        text(&o.stderr)
    );
    // Nothing was touched in Azure by any of them.
    assert_eq!(sim.counters().grants(), 0);
}

/// The repository's own files: `deploy/…`, the Dockerfile.
fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The container's arguments of a Job in `deploy/kubernetes/`.
fn job_args(job: &Value) -> Vec<String> {
    job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The Kubernetes manifests' commands, run as Kubernetes would run them: the plan Job once,
/// then the Indexed Job's command once per index with `JOB_COMPLETION_INDEX` set, all at
/// once (parallelism = completions), with the pods' paths (`/config/config.yaml`,
/// `/data/…`) mapped to a scratch folder. Also holds the files to each other: the
/// ConfigMap's config reads, the shard count agrees, the pods' user is the image's.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_jobs_commands_migrate_every_vm_once_as_an_indexed_job() {
    let plan_job = yaml("deploy/kubernetes/plan-job.yaml");
    let migrate_job = yaml("deploy/kubernetes/migrate-job.yaml");
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let config_text = configmap["data"]["config.yaml"].as_str().unwrap();
    hyper2kvm::config::parse(config_text, "configmap.yaml: config.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config_text.contains("dir: /data/out"), "{config_text}");

    let spec = &migrate_job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(completions));
    let plan_args = job_args(&plan_job);
    let shards_arg = plan_args.iter().position(|a| a == "--shards").unwrap() + 1;
    assert_eq!(plan_args[shards_arg], completions.to_string());
    // The pods run as the image's user.
    let dockerfile = repo_file("Dockerfile");
    let image_user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap()
        .trim()
        .to_string();
    for job in [&plan_job, &migrate_job] {
        let ctx = &job["spec"]["template"]["spec"]["securityContext"];
        assert_eq!(ctx["runAsUser"].to_string(), image_user);
    }
    // The image holds this package's binary under the name the entry point runs.
    let bin = Path::new(BIN).file_name().unwrap().to_string_lossy();
    assert!(dockerfile.contains("cargo build --release --locked -p hyper2kvm-cli"));
    assert!(dockerfile.contains(&format!(
        "COPY --from=binary /src/target/release/{bin} /usr/local/bin/{bin}"
    )));
    assert!(dockerfile.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")));

    let sim = start(FLEET).await;
    let scratch = Scratch::new("kubejobs");
    let data = scratch.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &data.join("out"), "")).unwrap();
    let pod_paths = |args: Vec<String>| -> Vec<String> {
        args.into_iter()
            .map(|a| match a.strip_prefix("/data/") {
                Some(rest) => s(&data.join(rest)).to_string(),
                None if a == "/config/config.yaml" => s(&cfg).to_string(),
                None => a,
            })
            .collect()
    };
    let plan_args = pod_paths(plan_args);
    let plan_refs: Vec<&str> = plan_args.iter().map(String::as_str).collect();
    let o = run(&plan_refs, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let plan_path = data.join("plan.json");
    let plan = read_json(&plan_path);

    let migrate_args = pod_paths(job_args(&migrate_job));
    let refs: Vec<&str> = migrate_args.iter().map(String::as_str).collect();
    let pods: Vec<(u64, Child)> = (0..completions)
        .map(|i| {
            let index = i.to_string();
            let log = scratch.path(&format!("pod{i}"));
            (
                i,
                spawn(&refs, &[("JOB_COMPLETION_INDEX", index.as_str())], &log),
            )
        })
        .collect();
    for (i, pod) in pods {
        let status = wait_child(pod).await;
        let err = std::fs::read_to_string(scratch.path(&format!("pod{i}.stderr"))).unwrap();
        assert_eq!(status.code(), Some(0), "pod {i}: {err}");
    }
    assert_every_vm_migrated_once(&sim, &scratch, &data.join("out"), &plan_path, &plan).await;
}

/// `deploy/slurm/hyper2kvm.sbatch` under a real Slurm (`.ci/run` starts a one-node cluster
/// with `.ci/slurm.sh` and sets `H2K_SLURM_TEST=1`): a 3-task array with `--wait`, each task
/// a shard of one plan, into one output directory.
#[tokio::test(flavor = "multi_thread")]
async fn shards_under_slurm_migrate_every_vm_once() {
    if std::env::var_os("H2K_SLURM_TEST").is_none() {
        eprintln!("skipped: set H2K_SLURM_TEST=1 with a Slurm cluster up (.ci/slurm.sh)");
        return;
    }
    let sim = start(FLEET).await;
    let scratch = Scratch::new("slurm3");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let plan_path = scratch.path("plan.json");
    let plan = make_plan(&cfg, 3, &plan_path).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/slurm/hyper2kvm.sbatch");
    let mut sbatch = Command::new("sbatch");
    sbatch
        .args([
            "--wait",
            "--array=0-2",
            "--chdir",
            s(scratch.path(".").as_path()),
        ])
        .arg(&script)
        .env("H2K_BIN", BIN)
        .env("H2K_CONFIG", &cfg)
        .env("H2K_PLAN", &plan_path)
        .stdin(Stdio::null());
    for v in SCHEDULER_VARS {
        sbatch.env_remove(v);
    }
    let o = tokio::task::spawn_blocking(move || sbatch.output().unwrap())
        .await
        .unwrap();
    let logs: String = files_under(&scratch.path("."))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .map(|p| {
            format!(
                "--- {}\n{}",
                p.display(),
                std::fs::read_to_string(&p).unwrap()
            )
        })
        .collect();
    assert_eq!(
        o.status.code(),
        Some(0),
        "sbatch: {}{}\n{logs}",
        text(&o.stdout),
        text(&o.stderr)
    );
    // One log per array task, each a shard of this plan.
    let task_logs = logs.matches("--- ").count();
    assert_eq!(task_logs, 3, "{logs}");
    assert_every_vm_migrated_once(&sim, &scratch, &out, &plan_path, &plan).await;
}
