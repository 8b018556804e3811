//! Migration runs end to end: `hyper2kvm -c config.yaml` (the real binary) against the
//! in-process simulator. A fleet of 20 VMs with three failing disks (exit 3, every image
//! identical to its disk, reports and domains as the run went, nothing left in Azure), a dry
//! run that changes nothing, runs killed with SIGKILL and SIGINT and run again, and the
//! `deallocate` / `refuse` policies for running VMs.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper2kvm_sim::{Route, Scenario, SimHandle, Simulator};
use serde_json::Value;
use support::{
    assert_image_matches, files_under, read_json, run_config, s, text, wait_child, wait_for,
    Scratch,
};

const BIN: &str = env!("CARGO_BIN_EXE_hyper2kvm");
const SUB: &str = "00000000-0000-0000-0000-0000000e2e00";
const MIB: u64 = 1 << 20;
/// The fixed-VHD footer every export reads once, besides the disk's data.
const FOOTER: u64 = 512;

/// `(size, vCPUs, MiB)` as the simulator reports them.
const SIZES: &[(&str, u32, u64)] = &[
    ("Standard_B1s", 1, 1024),
    ("Standard_B2s", 2, 4096),
    ("Standard_D2s_v5", 2, 8192),
    ("Standard_D4s_v5", 4, 16384),
    ("Standard_E4s_v5", 4, 32768),
    ("Standard_F2s_v2", 2, 4096),
    ("Standard_DS1_v2", 1, 3584),
];

/// One VM of a test scenario.
struct VmDef {
    name: String,
    rg: &'static str,
    power: &'static str,
    generation: u8,
    os: &'static str,
    size: &'static str,
    /// OS disk first; `(lun, size, fault)`.
    disks: Vec<(Option<u32>, u64, Option<&'static str>)>,
    seed: u64,
}

impl VmDef {
    fn disk_name(&self, lun: Option<u32>) -> String {
        match lun {
            None => format!("{}_OsDisk_1", self.name),
            Some(l) => format!("{}_DataDisk_{l}", self.name),
        }
    }

    fn has_fault(&self) -> bool {
        self.disks.iter().any(|d| d.2.is_some())
    }
}

/// The scenario YAML: every disk gets about `written` bytes scattered over it, plus its
/// last 64 KiB, with bytes from its own seed.
fn scenario_yaml(vms: &[VmDef], written: u64) -> String {
    let mut y = format!(
        "settings: {{ operations: {{ polls: 1, retry_after_secs: 0 }}, page_list_size: 16 }}\nsubscriptions:\n  - id: {SUB}\n    resource_groups:\n"
    );
    for rg in ["rg-a", "rg-b"] {
        if !vms.iter().any(|v| v.rg == rg) {
            continue;
        }
        // Two locations: VM sizes are looked up once for each.
        let location = if rg == "rg-a" {
            "westeurope"
        } else {
            "northeurope"
        };
        y.push_str(&format!(
            "      - name: {rg}\n        location: {location}\n        vms:\n"
        ));
        for vm in vms.iter().filter(|v| v.rg == rg) {
            y.push_str(&format!(
                "          - name: {}\n            size: {}\n            power_state: {}\n            os_type: {}\n            generation: {}\n            disks:\n",
                vm.name, vm.size, vm.power, vm.os, vm.generation
            ));
            for (j, (lun, size, fault)) in vm.disks.iter().enumerate() {
                y.push_str(&format!(
                    "              - size_bytes: {size}\n                content: {{ seed: {}, scatter: {{ written_bytes: {written}, extent_size: 131072 }}, extents: [{{ offset: {}, length: 65536 }}] }}\n",
                    vm.seed * 10 + j as u64,
                    size - 65536
                ));
                if let Some(l) = lun {
                    y.push_str(&format!("                lun: {l}\n"));
                }
                if let Some(f) = fault {
                    y.push_str(&format!("                fault: {f}\n"));
                }
            }
        }
    }
    y
}

/// 20 VMs: running, stopped and deallocated in turn, Gen1 and Gen2, one Windows, 1 to 4
/// disks, LUNs with gaps on some; three with a failing disk.
fn fleet20() -> Vec<VmDef> {
    (0..20u64)
        .map(|i| {
            let n = (i % 4 + 1) as u32;
            let gappy = n >= 3 && i % 8 >= 3;
            let mut disks: Vec<(Option<u32>, u64, Option<&'static str>)> =
                vec![(None, (24 + 8 * (i % 3)) * MIB, None)];
            for j in 0..n - 1 {
                let lun = if gappy { [0, 3, 9][j as usize] } else { j };
                disks.push((Some(lun), (16 + 16 * ((i + j as u64) % 3)) * MIB, None));
            }
            let fault_at = |d: &mut Vec<(Option<u32>, u64, Option<&'static str>)>, k: usize, f| {
                d[k].2 = Some(f)
            };
            match i {
                // Deallocated, exported directly: the grant on its data disk is refused.
                5 => fault_at(&mut disks, 1, "grant_denied"),
                // Running: a snapshot cannot be made, so none of its disks is exported.
                6 => fault_at(&mut disks, 2, "snapshot_fails"),
                // Stopped: its OS disk's snapshot cannot be read.
                10 => fault_at(&mut disks, 0, "read_fails"),
                _ => {}
            }
            VmDef {
                name: format!("m{i:02}"),
                rg: if i % 2 == 0 { "rg-a" } else { "rg-b" },
                power: ["running", "stopped", "deallocated"][(i % 3) as usize],
                generation: if i % 4 < 2 { 2 } else { 1 },
                os: if i == 9 { "windows" } else { "linux" },
                size: SIZES[(i as usize) % SIZES.len()].0,
                disks,
                seed: i + 1,
            }
        })
        .collect()
}

/// A small fleet without faults: `(name, power, disks)`.
fn small_fleet(vms: &[(&str, &'static str, u32)]) -> Vec<VmDef> {
    vms.iter()
        .enumerate()
        .map(|(i, &(name, power, n))| VmDef {
            name: name.to_string(),
            rg: "rg-a",
            power,
            generation: 2,
            os: "linux",
            size: "Standard_B2s",
            disks: (0..n)
                .map(|j| ((j > 0).then(|| j - 1), 16 * MIB, None))
                .collect(),
            seed: 100 + i as u64,
        })
        .collect()
}

async fn start(vms: &[VmDef], written: u64) -> SimHandle {
    let scenario = Scenario::from_yaml(&scenario_yaml(vms, written)).unwrap();
    Simulator::start(&scenario).await.unwrap()
}

fn config(sim: &SimHandle, out: &Path, extra: &str) -> String {
    format!(
        "azure:\n  subscriptions: [\"{SUB}\"]\n  arm_endpoint: \"{}\"\n  auth: none\n  retry: {{ max_retries: 1, timeout_secs: 10 }}\n  resource_groups: [rg-a, rg-b]\n{extra}output:\n  dir: \"{}\"\n  format: qcow2\n",
        sim.base_url(),
        out.display()
    )
}

/// `hyper2kvm -c CFG EXTRA...`, off the async runtime (the simulator runs on it).
async fn run(cfg: &Path, extra: &[&str]) -> Output {
    run_config(BIN, cfg, extra).await
}

fn spawn(cfg: &Path, dir: &Scratch) -> Child {
    Command::new(BIN)
        .args(["-c", s(cfg)])
        .stdout(std::fs::File::create(dir.path("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path("stderr")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Images under their final name (complete) below `dir`.
fn finished_images(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "qcow2"))
        .count()
}

/// The run summary `run-<id>.json` (the only one, or the newest by its `finished_at`).
fn summaries(out: &Path) -> Vec<Value> {
    let mut all: Vec<Value> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("run-") && n.ends_with(".json")
        })
        .map(|p| read_json(&p))
        .collect();
    all.sort_by_key(|v| v["finished_at"].as_str().unwrap_or("").to_string());
    all
}

fn report(out: &Path, vm: &str) -> Value {
    read_json(&out.join(vm).join("report.json"))
}

/// No SAS signature in the output or in any report, domain or summary.
fn assert_no_secret(sim: &SimHandle, outputs: &[&[u8]], out: &Path) {
    let sigs = sim.signatures();
    assert!(!sigs.is_empty(), "the run made no grant at all");
    let mut texts: Vec<(String, String)> = outputs
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("output {i}"), text(b)))
        .collect();
    for f in files_under(out) {
        if f.extension()
            .is_some_and(|e| e == "json" || e == "xml" || e == "journal")
        {
            texts.push((f.display().to_string(), text(&std::fs::read(&f).unwrap())));
        }
    }
    for (what, t) in &texts {
        for sig in &sigs {
            let encoded = sig
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            assert!(
                !t.contains(sig.as_str()) && !t.contains(&encoded),
                "a SAS signature leaked into {what}"
            );
        }
    }
}

/// Checks every completed disk's image against the simulator's disk.
fn assert_images(sim: &SimHandle, scratch: &Scratch, rep: &Value) {
    for d in rep["disks"].as_array().unwrap() {
        if !matches!(d["status"].as_str(), Some("completed" | "already_done")) {
            continue;
        }
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

/// Checks a domain XML: valid for libvirt, OS disk first then data disks by LUN, UEFI
/// only for Gen2, vCPUs and memory of the VM size. Returns whether it was validated.
fn assert_domain(vm: &VmDef, rep: &Value) -> bool {
    let path = PathBuf::from(rep["domain_xml"].as_str().expect("a domain XML"));
    let xml = std::fs::read_to_string(&path).unwrap();
    let mut want: Vec<String> = Vec::new();
    let mut sorted = vm.disks.clone();
    sorted.sort_by_key(|d| d.0.map_or(-1, |l| l as i64));
    for (lun, _, _) in &sorted {
        let disk = rep["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == vm.disk_name(*lun))
            .unwrap();
        let p = PathBuf::from(disk["output"].as_str().unwrap());
        want.push(
            std::path::absolute(&p)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    let got: Vec<String> = xml
        .split("<source file='")
        .skip(1)
        .map(|rest| rest.split('\'').next().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "{}: disks in LUN order, OS first", vm.name);
    assert_eq!(
        xml.contains("<os firmware='efi'>"),
        vm.generation == 2,
        "{}: UEFI exactly for Gen2\n{xml}",
        vm.name
    );
    let (_, vcpus, mib) = SIZES.iter().find(|s| s.0 == vm.size).unwrap();
    assert!(
        xml.contains(&format!("<vcpu placement='static'>{vcpus}</vcpu>")),
        "{}: {vcpus} vCPUs\n{xml}",
        vm.name
    );
    assert!(
        xml.contains(&format!("<memory unit='MiB'>{mib}</memory>")),
        "{}: {mib} MiB\n{xml}",
        vm.name
    );
    assert_eq!(rep["vcpus"], *vcpus);
    assert_eq!(rep["memory_mib"], *mib);
    // The simulator's Gen2 VMs are Trusted Launch (Azure's default): secure boot and a vTPM.
    let trusted = vm.generation == 2;
    assert_eq!(
        xml.contains("<feature enabled='yes' name='secure-boot'/>"),
        trusted,
        "{}: secure boot exactly for Trusted Launch\n{xml}",
        vm.name
    );
    assert_eq!(xml.contains("<tpm model='tpm-crb'>"), trusted, "{xml}");
    assert_eq!(
        (rep["secure_boot"].as_bool(), rep["tpm"].as_bool()),
        (Some(trusted), Some(trusted))
    );
    assert_eq!(xml.matches("<interface ").count(), 1, "{xml}");
    validate_domain(&path)
}

/// `virt-xml-validate` on a domain XML; false when it is not installed.
fn validate_domain(path: &Path) -> bool {
    match Command::new("virt-xml-validate")
        .args([s(path), "domain"])
        .output()
    {
        Ok(o) => {
            assert!(
                o.status.success(),
                "{}: virt-xml-validate: {}{}",
                path.display(),
                text(&o.stdout),
                text(&o.stderr)
            );
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("virt-xml-validate: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_of_20_with_failing_disks_is_partial_and_leaves_nothing_behind() {
    let vms = fleet20();
    let sim = start(&vms, 2 * MIB).await;
    let scratch = Scratch::new("mig20");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "  running_vm: snapshot\ndownload: { parallel_vms: 6, parallel_disks: 6 }\n",
        ),
    )
    .unwrap();
    let result = run(&cfg, &[]).await;
    let (stdout, stderr) = (text(&result.stdout), text(&result.stderr));
    assert_eq!(result.status.code(), Some(3), "{stdout}\n{stderr}");

    // Nothing is left in Azure.
    let c = sim.counters();
    assert_eq!(c.open_grants(), 0, "grants left open");
    assert_eq!(c.snapshots_alive(), 0, "snapshots left behind");
    assert!(c.snapshots_created() > 0);
    // VM sizes: one list per location, however many VMs.
    assert_eq!(c.received(Route::ListVmSizes), 2);

    // The table lists every VM once.
    for vm in &vms {
        let rows: Vec<&str> = stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(vm.name.as_str()))
            .collect();
        assert_eq!(rows.len(), 1, "{}: one row\n{stdout}", vm.name);
    }

    let mut validated = 0;
    let mut downloaded = 0;
    let mut kinds = BTreeMap::new();
    for vm in &vms {
        let rep = report(&out, &vm.name);
        let via_snapshot = vm.power != "deallocated";
        let want = match vm.name.as_str() {
            "m05" | "m10" => "partial",
            "m06" => "failed",
            _ => "completed",
        };
        assert_eq!(rep["status"], want, "{}: {rep:#}", vm.name);
        assert_eq!(rep["generation"], vm.generation);
        let disks = rep["disks"].as_array().unwrap();
        assert_eq!(disks.len(), vm.disks.len());
        for (lun, _, fault) in &vm.disks {
            let name = vm.disk_name(*lun);
            let d = disks.iter().find(|d| d["name"] == name.as_str()).unwrap();
            let failed = fault.is_some() || vm.name == "m06";
            let bytes = d["bytes_downloaded"].as_u64().unwrap();
            downloaded += bytes;
            if failed {
                assert_eq!(d["status"], "failed", "{name}: {d:#}");
                // A structured error: the kind, and Azure's status and code where it said.
                let (kind, status, code) = match fault.unwrap_or("snapshot_fails") {
                    "grant_denied" => ("permission_denied", 403, "AuthorizationFailed"),
                    "snapshot_fails" => ("conflict", 409, "OperationNotAllowed"),
                    _ => ("not_found", 404, ""),
                };
                let e = &d["error"];
                assert_eq!(e["kind"], kind, "{name}: {d:#}");
                assert_eq!(e["status"], status, "{name}: {d:#}");
                if !code.is_empty() {
                    assert_eq!(e["code"], code, "{name}: {d:#}");
                }
                assert!(
                    e["message"]
                        .as_str()
                        .is_some_and(|m| !m.contains("api-version")),
                    "{name}: {d:#}"
                );
                continue;
            }
            assert_eq!(d["status"], "completed", "{name}: {d:#}");
            // Every written byte, and each at most once more for chunking.
            let written = sim.disk(&name).unwrap().content.written_bytes();
            assert!(bytes >= written, "{name}: {bytes} < {written}");
            assert_eq!(d["lun"].as_u64(), lun.map(u64::from));
            let image = PathBuf::from(d["output"].as_str().unwrap());
            assert_eq!(
                d["sha256"].as_str(),
                Some(sha256(&image).as_str()),
                "{name}"
            );
            let from = d["exported_from"].as_str().unwrap();
            assert_eq!(from.contains("/snapshots/"), via_snapshot, "{name}: {from}");
            assert!(
                via_snapshot || from.ends_with(&format!("/disks/{name}")),
                "{from}"
            );
            kinds.insert((lun.is_none(), via_snapshot), name);
        }
        let errors = rep["errors"].as_array().unwrap();
        if vm.has_fault() {
            let (lun, _, _) = vm.disks.iter().find(|d| d.2.is_some()).unwrap();
            let failing = vm.disk_name(*lun);
            assert!(
                errors
                    .iter()
                    .any(|e| e["detail"].as_str().unwrap().contains(&failing)),
                "{}: the errors name {failing}: {errors:?}",
                vm.name
            );
            assert!(rep["domain_xml"].is_null(), "{}: no domain", vm.name);
        } else {
            assert!(errors.is_empty(), "{}: {errors:?}", vm.name);
            assert_images(&sim, &scratch, &rep);
            if assert_domain(vm, &rep) {
                validated += 1;
            }
        }
        // Snapshots: one per disk for a VM not deallocated, each deleted and dated.
        let resources = rep["resources"].as_array().unwrap();
        assert_eq!(
            resources.len(),
            if via_snapshot { vm.disks.len() } else { 0 },
            "{}: {resources:?}",
            vm.name
        );
        for r in resources {
            assert!(r["deleted_at"].is_string(), "{}: {r}", vm.name);
            let fails = vm.disks.iter().any(|(lun, _, f)| {
                *f == Some("snapshot_fails")
                    && r["source"].as_str().unwrap().ends_with(&vm.disk_name(*lun))
            });
            assert_eq!(r["created"], !fails, "{}: {r}", vm.name);
        }
    }
    // Each kind of disk was compared at least once: OS and data, snapshot and direct.
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    if validated == 0 {
        println!("note: virt-xml-validate is not installed; domain XMLs were not validated");
    }
    // What the simulator served is what the reports say was downloaded, plus one VHD footer
    // per opened export.
    assert_eq!(c.bytes_served(), downloaded + FOOTER * c.grants());

    let sums = summaries(&out);
    assert_eq!(sums.len(), 1);
    let sum = &sums[0];
    assert_eq!(sum["completed"], 17);
    assert_eq!(sum["not_completed"], 3);
    assert_eq!(sum["exit_code"], 3);
    assert_eq!(sum["vms"].as_array().unwrap().len(), 20);
    assert_eq!(sum["bytes_downloaded"], downloaded);

    assert_no_secret(&sim, &[&result.stdout, &result.stderr], &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_changes_nothing() {
    let vms = fleet20();
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migdry");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "  running_vm: stop\n")).unwrap();
    let result = run(&cfg, &["--dry-run"]).await;
    assert!(result.status.success(), "{}", text(&result.stderr));
    let stdout = text(&result.stdout);
    for vm in &vms {
        assert!(stdout.contains(&vm.name), "{}: {stdout}", vm.name);
    }
    let c = sim.counters();
    for route in [
        Route::BeginGetAccess,
        Route::EndGetAccess,
        Route::Snapshot,
        Route::PowerOperation,
        Route::BlobGet,
    ] {
        assert_eq!(c.received(route), 0, "{route}");
    }
    assert!(c.received(Route::ListVms) > 0);
    assert!(!out.exists(), "the dry run created {}", out.display());
}

/// A run with a bandwidth cap, one disk at a time, is killed with SIGKILL once an image is
/// finished; the second run skips what is done, continues the rest from the snapshots the
/// killed run left, and deletes them.
#[tokio::test(flavor = "multi_thread")]
async fn killed_run_is_finished_by_the_next_without_downloading_again() {
    let vms = small_fleet(&[
        ("k0", "running", 3),
        ("k1", "deallocated", 2),
        ("k2", "stopped", 1),
    ]);
    let sim = start(&vms, 2 * MIB).await;
    let scratch = Scratch::new("migkill");
    let out = scratch.path("out");
    let slow = scratch.path("slow.yaml");
    std::fs::write(
        &slow,
        config(
            &sim,
            &out,
            "download: { parallel_vms: 1, parallel_disks: 1, bandwidth: 2M, concurrency: 2, chunk_size: 256K }\n",
        ),
    )
    .unwrap();
    let child = spawn(&slow, &scratch);
    let total = vms.iter().map(|v| v.disks.len()).sum::<usize>();
    wait_for("a first image", Duration::from_secs(120), || {
        finished_images(&out) >= 1
    })
    .await;
    let mut child = child;
    child.kill().unwrap();
    assert!(!wait_child(child).await.success());
    let done_before = finished_images(&out);
    assert!(done_before < total, "the run finished before it was killed");
    let left_behind = sim.counters().snapshots_alive();
    assert!(left_behind > 0, "the killed run had snapshots");

    let fast = scratch.path("fast.yaml");
    std::fs::write(&fast, config(&sim, &out, "")).unwrap();
    let served_before = sim.counters().bytes_served();
    let grants_before = sim.counters().grants();
    let result = run(&fast, &[]).await;
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}{}",
        text(&result.stdout),
        text(&result.stderr)
    );
    let c = sim.counters();
    assert_eq!(c.open_grants(), 0);
    assert_eq!(c.snapshots_alive(), 0);

    let mut already = 0;
    let mut downloaded = 0;
    for vm in &vms {
        let rep = report(&out, &vm.name);
        assert_eq!(rep["status"], "completed", "{rep:#}");
        for d in rep["disks"].as_array().unwrap() {
            let bytes = d["bytes_downloaded"].as_u64().unwrap();
            downloaded += bytes;
            if d["status"] == "already_done" {
                already += 1;
                assert_eq!(bytes, 0, "{d:#}");
                assert!(d["sha256"].is_string());
            } else {
                assert_eq!(d["status"], "completed", "{d:#}");
            }
        }
        assert_images(&sim, &scratch, &rep);
        // Snapshots of both runs: all deleted, with the time.
        for r in rep["resources"].as_array().unwrap() {
            assert!(r["deleted_at"].is_string(), "{}: {r}", vm.name);
        }
    }
    // An image the killed run renamed into place but had not yet recorded in its report
    // is not proven complete: it is moved aside and converted again.
    let set_aside = vms
        .iter()
        .flat_map(|vm| report(&out, &vm.name)["disks"].as_array().unwrap().clone())
        .filter(|d| d["set_aside"].is_string())
        .count();
    assert_eq!(already + set_aside, done_before);
    assert_eq!(
        c.bytes_served() - served_before,
        downloaded + FOOTER * (c.grants() - grants_before)
    );
    // k0's snapshots were made by the killed run: the second run reports them (reused for
    // the disks it still had to convert, deleted in any case).
    // Unless the kill fell between k0's first image's rename and its report: then nothing
    // of k0 was proven, and fresh snapshots were taken for all its disks.
    let k0 = report(&out, "k0");
    let resources = k0["resources"].as_array().unwrap();
    let k0_redone = k0["disks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["set_aside"].is_string());
    let run_id = k0["run_id"].as_str().unwrap();
    if !k0_redone {
        assert_eq!(resources.len(), 3, "{resources:?}");
        assert!(
            resources.iter().all(|r| r["run_id"] != run_id),
            "no new snapshot for k0: {resources:?}"
        );
    }
    assert!(resources.iter().all(|r| r["deleted_at"].is_string()));
    assert_eq!(summaries(&out).last().unwrap()["exit_code"], 0);
    assert_no_secret(&sim, &[&result.stdout, &result.stderr], &out);
}

/// Killed while its snapshots are being created: the report records them before they exist,
/// and the next run deletes them (the killed run got nowhere with the VM, so fresh snapshots
/// are taken rather than the old ones reused).
#[tokio::test(flavor = "multi_thread")]
async fn run_killed_while_snapshotting_leaves_no_snapshot() {
    let vms = small_fleet(&[("s0", "running", 2)]);
    let sim = start(&vms, MIB).await;
    // Operations take a while: the run is killed while it polls the snapshots' creation.
    sim.set_operations(hyper2kvm_sim::OperationSettings {
        polls: 30,
        immediate: false,
        retry_after_secs: 1,
        ..Default::default()
    });
    let scratch = Scratch::new("migsnap");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let mut child = spawn(&cfg, &scratch);
    wait_for("the snapshots", Duration::from_secs(60), || {
        sim.counters().snapshots_alive() == 2
    })
    .await;
    child.kill().unwrap();
    wait_child(child).await;
    assert_eq!(sim.counters().snapshots_alive(), 2);

    sim.set_operations(hyper2kvm_sim::OperationSettings::default());
    let result = run(&cfg, &[]).await;
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert_eq!(sim.counters().snapshots_alive(), 0, "snapshots leaked");
    assert_eq!(
        sim.counters().snapshots_created(),
        4,
        "no progress to continue: new snapshots"
    );
    let rep = report(&out, "s0");
    let resources = rep["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 4, "{resources:?}");
    for r in resources {
        assert!(r["deleted_at"].is_string(), "{r}");
    }
    let run_id = rep["run_id"].as_str().unwrap();
    let new: Vec<_> = resources.iter().filter(|r| r["run_id"] == run_id).collect();
    assert_eq!(new.len(), 2, "{resources:?}");
    assert!(new.iter().all(|r| r["created"] == true), "{resources:?}");
    assert_images(&sim, &scratch, &rep);
}

/// Ctrl-C: exit 130, and the grants and snapshots of the run are gone when it exits.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_run_cleans_up_and_exits_130() {
    let vms = small_fleet(&[("i0", "running", 2), ("i1", "deallocated", 2)]);
    let sim = start(&vms, 3 * MIB).await;
    let scratch = Scratch::new("migint");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "download: { bandwidth: 1M, chunk_size: 256K }\n",
        ),
    )
    .unwrap();
    let child = spawn(&cfg, &scratch);
    wait_for("reads under way", Duration::from_secs(60), || {
        let c = sim.counters();
        c.open_grants() >= 2 && c.snapshots_alive() == 2 && c.bytes_served() > MIB
    })
    .await;
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_child(child).await;
    let stderr = std::fs::read_to_string(scratch.path("stderr")).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let c = sim.counters();
    assert_eq!(c.open_grants(), 0, "{stderr}");
    assert_eq!(c.snapshots_alive(), 0, "{stderr}");
    assert!(finished_images(&out) < 4, "the run finished before Ctrl-C");
    let stdout = std::fs::read(scratch.path("stdout")).unwrap();
    assert_no_secret(&sim, &[&stdout, stderr.as_bytes()], &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn deallocate_with_restart_starts_running_vms_again() {
    let vms = small_fleet(&[
        ("p0", "running", 2),
        ("p1", "deallocated", 1),
        ("p2", "running", 1),
    ]);
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migpower");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "  running_vm: deallocate\n  restart_vms: true\n",
        ),
    )
    .unwrap();
    let result = run(&cfg, &[]).await;
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_created()), (0, 0));
    for (vm, state, ops) in [
        ("p0", "running", &["deallocate", "start"][..]),
        ("p1", "deallocated", &[][..]),
        ("p2", "running", &["deallocate", "start"][..]),
    ] {
        assert_eq!(sim.power_state(SUB, "rg-a", vm).unwrap(), state, "{vm}");
        let rep = report(&out, vm);
        assert_eq!(rep["status"], "completed");
        let power: Vec<(&str, bool)> = rep["power"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["action"].as_str().unwrap(), p["ok"].as_bool().unwrap()))
            .collect();
        let want: Vec<(&str, bool)> = ops.iter().map(|o| (*o, true)).collect();
        assert_eq!(power, want, "{vm}");
        assert_images(&sim, &scratch, &rep);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_encryption_is_refused_before_export_and_nics_and_security_reach_the_domain() {
    // Scenario keys after the ARM shapes: Azure Disk Encryption (the extension, the disks'
    // encryptionSettingsCollection), a Gen2 VM without Trusted Launch and two NICs.
    let yaml = format!(
        "settings: {{ operations: {{ polls: 1, retry_after_secs: 0 }} }}
subscriptions:
  - id: {SUB}
    resource_groups:
      - name: rg-a
        location: westeurope
        vms:
          - {{ name: ade-win, os_type: windows, power_state: running, disk_encryption: true, disks: [{{ size_bytes: {MIB} }}] }}
          - {{ name: ade-lin, power_state: deallocated, generation: 1, disk_encryption: true, disks: [{{ size_bytes: {MIB} }}, {{ size_bytes: {MIB} }}] }}
          - {{ name: plain, size: Standard_B2s, power_state: deallocated, security_type: standard, nics: 2, disks: [{{ size_bytes: {MIB} }}] }}
          - {{ name: tl, size: Standard_B2s, power_state: deallocated, os_type: windows, nics: 3, disks: [{{ size_bytes: {MIB} }}] }}
"
    );
    let sim = Simulator::start(&Scenario::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let scratch = Scratch::new("migade");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();

    // The listing shows what was found, for a user to see before migrating.
    let listed = run(&cfg, &["--list-only", "--output", "json"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let vms: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let by_name = |n: &str| {
        vms.as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == n)
            .unwrap()
            .clone()
    };
    assert!(by_name("ade-win")["guest_encryption"]
        .as_str()
        .unwrap()
        .contains("AzureDiskEncryption extension"));
    assert_eq!(by_name("tl")["secure_boot"], true);
    assert_eq!(by_name("tl")["vtpm"], true);
    assert_eq!(by_name("plain")["nics"], 2);
    assert!(by_name("plain")["secure_boot"].is_null());

    let result = run(&cfg, &[]).await;
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{stderr}");
    // Refused before anything: no power operation, snapshot or grant for the encrypted VMs.
    let c = sim.counters();
    assert_eq!(c.received(Route::PowerOperation), 0);
    assert_eq!(c.received(Route::Snapshot), 0);
    assert_eq!(
        c.received(Route::BeginGetAccess),
        2,
        "only plain's and tl's disks"
    );
    for (vm, how) in [
        ("ade-win", "--volume-type ALL"),
        ("ade-lin", "--volume-type DATA"),
    ] {
        let rep = report(&out, vm);
        assert_eq!(rep["status"], "refused", "{rep}");
        let why = rep["warnings"].to_string();
        assert!(why.contains("encrypted inside the guest"), "{why}");
        assert!(why.contains(how), "{why}");
        assert!(rep["domain_xml"].is_null());
        assert_eq!(
            files_under(&out.join("rg-a").join(vm))
                .iter()
                .filter(|f| !f.ends_with("report.json"))
                .count(),
            0
        );
    }
    assert!(report(&out, "ade-lin")["warnings"]
        .to_string()
        .contains("disk ade-lin_DataDisk_0 has encryptionSettingsCollection.enabled"));

    let plain = report(&out, "plain");
    let xml = std::fs::read_to_string(plain["domain_xml"].as_str().unwrap()).unwrap();
    assert_eq!(xml.matches("<interface ").count(), 2, "{xml}");
    assert!(
        xml.contains("<os firmware='efi'>") && !xml.contains("secure"),
        "{xml}"
    );
    assert!(!xml.contains("<tpm"), "{xml}");
    assert_eq!(plain["nics"], 2);
    let tl = report(&out, "tl");
    let path = PathBuf::from(tl["domain_xml"].as_str().unwrap());
    let xml = std::fs::read_to_string(&path).unwrap();
    assert_eq!(xml.matches("<interface ").count(), 3, "{xml}");
    for want in [
        "<feature enabled='yes' name='secure-boot'/>",
        "<feature enabled='yes' name='enrolled-keys'/>",
        "<smm state='on'/>",
        "<tpm model='tpm-crb'>",
        "<backend type='emulator' version='2.0'/>",
        "<hyperv mode='custom'>",
        "<clock offset='localtime'>",
    ] {
        assert!(xml.contains(want), "{want}\n{xml}");
    }
    if !validate_domain(&path) {
        println!("note: virt-xml-validate is not installed; domain XMLs were not validated");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refuse_leaves_running_vms_alone() {
    let vms = small_fleet(&[
        ("r0", "running", 1),
        ("r1", "deallocated", 2),
        ("r2", "stopped", 1),
    ]);
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migrefuse");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "  running_vm: refuse\n")).unwrap();
    let result = run(&cfg, &[]).await;
    let stdout = text(&result.stdout);
    assert_eq!(
        result.status.code(),
        Some(3),
        "{stdout}{}",
        text(&result.stderr)
    );
    let c = sim.counters();
    assert_eq!(c.received(Route::PowerOperation), 0);
    assert_eq!(c.received(Route::Snapshot), 0);
    assert_eq!(c.open_grants(), 0);
    let sum = &summaries(&out)[0];
    let status: BTreeMap<&str, &str> = sum["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        BTreeMap::from([("r0", "refused"), ("r1", "completed"), ("r2", "refused")])
    );
    for vm in ["r0", "r2"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(vm))
            .unwrap_or_else(|| panic!("{vm} in the table: {stdout}"));
        assert!(row.contains("refused"), "{row}");
        assert_eq!(
            sim.power_state(SUB, "rg-a", vm).unwrap(),
            vms.iter().find(|v| v.name == vm).unwrap().power
        );
    }
    assert_images(&sim, &scratch, &report(&out, "r1"));

    // Nothing completes: exit 1.
    let only_running = scratch.path("running.yaml");
    std::fs::write(
        &only_running,
        config(
            &sim,
            &scratch.path("out2"),
            "  running_vm: refuse\n  selection: { power_states: [running, stopped] }\n",
        ),
    )
    .unwrap();
    let result = run(&only_running, &[]).await;
    assert_eq!(result.status.code(), Some(1), "{}", text(&result.stderr));
    let sum = &summaries(&scratch.path("out2"))[0];
    assert_eq!(
        (sum["completed"].as_u64(), sum["exit_code"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(sum["vms"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["status"] == "refused"));
    assert_eq!(sum["vms"].as_array().unwrap().len(), 2);
}

/// Runs the binary with no libguestfs to be found (`PATH` without `guestfish`).
async fn run_without_libguestfs(cfg: &Path) -> Output {
    let cfg = cfg.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["-c", s(&cfg)])
            .env("PATH", "/nonexistent")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// With `guest:` but no libguestfs, a run warns and carries on (the OS image gets its final
/// name); with `guest.require` the OS disk fails, its converted image is kept as
/// `.pre-fixup`, and a later run fixes it without downloading it again.
#[tokio::test(flavor = "multi_thread")]
async fn guest_fixups_without_libguestfs_warn_or_fail_as_configured() {
    let vms = small_fleet(&[("g0", "deallocated", 2)]);
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migguest");

    // Not required: a warning, and the VM completes.
    let out = scratch.path("optional");
    let cfg = scratch.path("optional.yaml");
    std::fs::write(&cfg, config(&sim, &out, "guest: {}\n")).unwrap();
    let result = run_without_libguestfs(&cfg).await;
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("libguestfs"),
        "the warning is shown: {stderr}"
    );
    let rep = report(&out, "g0");
    assert_eq!(rep["status"], "completed", "{rep:#}");
    assert_eq!(rep["guest"]["result"], "skipped", "{rep:#}");
    assert!(
        rep["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("libguestfs")),
        "{rep:#}"
    );
    assert!(out.join("g0/g0-os.qcow2").is_file());
    assert!(!out.join("g0/g0-os.qcow2.pre-fixup").exists());

    // Required: the OS disk fails, converted but kept under its staging name.
    let out = scratch.path("required");
    let cfg = scratch.path("required.yaml");
    std::fs::write(&cfg, config(&sim, &out, "guest: { require: true }\n")).unwrap();
    let result = run_without_libguestfs(&cfg).await;
    assert_eq!(result.status.code(), Some(3), "{}", text(&result.stderr));
    let rep = report(&out, "g0");
    assert_eq!(rep["status"], "partial", "{rep:#}");
    let os = &rep["disks"][0];
    assert_eq!(os["status"], "failed", "{rep:#}");
    assert!(
        os["error"]["kind"] == "guest"
            && os["error"]["message"]
                .as_str()
                .unwrap()
                .contains("guest fix-ups"),
        "{rep:#}"
    );
    assert_eq!(rep["disks"][1]["status"], "completed", "{rep:#}");
    assert!(!out.join("g0/g0-os.qcow2").exists());
    assert!(out.join("g0/g0-os.qcow2.pre-fixup").is_file());
    assert!(
        !out.join("g0/g0.xml").exists(),
        "no domain while a disk is missing"
    );

    // Optional again on the same folder: nothing is downloaded, the image gets its name.
    let served = sim.counters().bytes_served();
    std::fs::write(&cfg, config(&sim, &out, "guest: {}\n")).unwrap();
    let result = run_without_libguestfs(&cfg).await;
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert_eq!(
        sim.counters().bytes_served(),
        served,
        "nothing downloaded again"
    );
    let rep = report(&out, "g0");
    assert_eq!(rep["status"], "completed", "{rep:#}");
    for d in rep["disks"].as_array().unwrap() {
        assert_eq!(d["status"], "already_done", "{rep:#}");
        assert_eq!(d["bytes_downloaded"], 0, "{rep:#}");
    }
    let image = out.join("g0/g0-os.qcow2");
    assert_eq!(
        rep["disks"][0]["sha256"].as_str(),
        Some(sha256(&image).as_str())
    );
    let reference = scratch.path("g0-os.raw");
    sim.disk(&vms[0].disk_name(None))
        .unwrap()
        .write_raw_reference(&reference)
        .unwrap();
    assert_image_matches(&image, "qcow2", &reference);
    assert!(out.join("g0/g0.xml").is_file());
    assert_eq!(sim.counters().open_grants(), 0);
}

/// `sha256sum`'s digest of a file: what a report's `sha256` must say.
fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Killed after it deallocated a running VM it was to start again: the next run finds the VM
/// deallocated (so plans a plain export) but still owes the start, and gives it.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_owed_by_a_killed_run_is_given_by_the_next() {
    let vms = small_fleet(&[("o0", "running", 1)]);
    let sim = start(&vms, 3 * MIB).await;
    let scratch = Scratch::new("migowed");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "  running_vm: deallocate\n  restart_vms: true\ndownload: { bandwidth: 1M, chunk_size: 256K }\n",
        ),
    )
    .unwrap();
    let mut child = spawn(&cfg, &scratch);
    wait_for("the deallocation", Duration::from_secs(60), || {
        sim.power_state(SUB, "rg-a", "o0").as_deref() == Some("deallocated")
            && sim.counters().bytes_served() > 0
    })
    .await;
    child.kill().unwrap();
    wait_child(child).await;
    assert_eq!(sim.power_state(SUB, "rg-a", "o0").unwrap(), "deallocated");

    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "  running_vm: deallocate\n  restart_vms: true\n",
        ),
    )
    .unwrap();
    let result = run(&cfg, &[]).await;
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert_eq!(sim.power_state(SUB, "rg-a", "o0").unwrap(), "running");
    let rep = report(&out, "o0");
    assert_eq!(rep["power_state_before"], "running", "{rep:#}");
    let actions: Vec<&str> = rep["power"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["deallocate", "start"], "{rep:#}");
    assert!(
        rep["warnings"].to_string().contains("interrupted"),
        "{rep:#}"
    );
    assert_eq!(sim.counters().open_grants(), 0);
    assert_images(&sim, &scratch, &rep);
}

/// A report.json that cannot be read is moved aside, not overwritten, and the run says so.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_report_is_kept_aside() {
    let vms = small_fleet(&[("u0", "deallocated", 1)]);
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migunread");
    let out = scratch.path("out");
    std::fs::create_dir_all(out.join("u0")).unwrap();
    std::fs::write(out.join("u0/report.json"), "{ not json").unwrap();
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let result = run(&cfg, &[]).await;
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("u0/report.json.unreadable")).unwrap(),
        "{ not json"
    );
    let rep = report(&out, "u0");
    assert!(
        rep["warnings"].to_string().contains("could not be read"),
        "{rep:#}"
    );
}

// ---- The "trust" issue: locks, proven completion, empty selections. ----

/// Regression (trust issue): two runs on one output directory at once. Each VM is migrated
/// by one run only; the other reports it `locked`, naming the holder, and writes nothing of
/// it; every image is identical to its disk and nothing is left in Azure.
#[tokio::test(flavor = "multi_thread")]
async fn trust_two_concurrent_runs_on_one_output_dir_never_share_a_vm() {
    let vms = small_fleet(&[
        ("c0", "running", 2),
        ("c1", "deallocated", 2),
        ("c2", "stopped", 1),
        ("c3", "deallocated", 1),
    ]);
    let sim = start(&vms, 2 * MIB).await;
    let scratch = Scratch::new("migconc");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    // Slow enough that the runs overlap.
    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "download: { parallel_vms: 4, parallel_disks: 2, bandwidth: 8M, chunk_size: 256K }\n",
        ),
    )
    .unwrap();
    let (a, b) = tokio::join!(run(&cfg, &[]), run(&cfg, &[]));
    let (ea, eb) = (text(&a.stderr), text(&b.stderr));
    let all = summaries(&out);
    assert_eq!(all.len(), 2, "{ea}\n{eb}");
    let mut locked = 0;
    for vm in &vms {
        let statuses: Vec<&str> = all
            .iter()
            .map(|s| {
                s["vms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == vm.name.as_str())
                    .unwrap()["status"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        // Migrated by one run; the other found it locked, or (if it came later) done.
        assert!(
            statuses.contains(&"completed")
                && statuses
                    .iter()
                    .all(|s| matches!(*s, "completed" | "locked")),
            "{}: {statuses:?}\n{ea}\n{eb}",
            vm.name
        );
        locked += statuses.iter().filter(|s| **s == "locked").count();
        let rep = report(&out, &vm.name);
        assert_eq!(rep["status"], "completed", "{rep:#}");
        assert_images(&sim, &scratch, &rep);
    }
    assert!(locked > 0, "the runs did not overlap:\n{ea}\n{eb}");
    let both = format!("{ea}{eb}");
    assert!(both.contains("locked by run h2k-"), "{both}");
    let c = sim.counters();
    assert_eq!(c.open_grants(), 0);
    assert_eq!(c.snapshots_alive(), 0);
    // Locks are released; no partial image is left.
    for f in files_under(&out) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".lock") && !name.ends_with(".part"),
            "left behind: {}",
            f.display()
        );
    }
    // A third run finds everything done.
    let third = run(&cfg, &[]).await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third.stderr));
}

/// Regression (trust issue): garbage under an image's final name was taken for a finished
/// image (`already_done`, its checksum recorded, exit 0). It is moved aside and redone.
#[tokio::test(flavor = "multi_thread")]
async fn trust_garbage_under_a_final_name_is_moved_aside_and_redone() {
    let vms = small_fleet(&[("g0", "deallocated", 2)]);
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("miggarbage");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let first = run(&cfg, &[]).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let os = out.join("g0/g0-os.qcow2");
    std::fs::write(&os, "garbage\n").unwrap();
    // A file no report knows of is not trusted either.
    let stray = out.join("g0/g0-data-lun0.qcow2");
    let rep = report(&out, "g0");
    let mut doctored = rep.clone();
    for d in doctored["disks"].as_array_mut().unwrap() {
        if d["output"].as_str().unwrap().ends_with("lun0.qcow2") {
            d["status"] = "pending".into();
        }
    }
    std::fs::write(out.join("g0/report.json"), doctored.to_string()).unwrap();
    let second = run(&cfg, &[]).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let rep = report(&out, "g0");
    for d in rep["disks"].as_array().unwrap() {
        assert_eq!(d["status"], "completed", "{d:#}");
        let aside = PathBuf::from(d["set_aside"].as_str().expect("moved aside"));
        assert!(aside.to_string_lossy().contains(".suspect-"), "{aside:?}");
        assert!(aside.exists());
    }
    let aside_os = rep["disks"][0]["set_aside"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(aside_os).unwrap(), "garbage\n");
    assert!(rep["warnings"].to_string().contains("moved to"), "{rep:#}");
    assert_images(&sim, &scratch, &rep);
    assert_eq!(rep["disks"][0]["sha256"].as_str().unwrap(), sha256(&os));
    assert!(stray.exists());
    // The redone images are proven by their report now: a third run calls them done.
    let third = run(&cfg, &["--verify-images"]).await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third.stderr));
    let rep = report(&out, "g0");
    for d in rep["disks"].as_array().unwrap() {
        assert_eq!(d["status"], "already_done", "{d:#}");
    }
}

/// Regression (trust issue): a selection that matched nothing exited 0, so
/// `migrate && decommission` went on. Exit 2, saying what matched nothing.
#[tokio::test(flavor = "multi_thread")]
async fn trust_an_empty_selection_is_an_error_unless_allowed() {
    let vms = small_fleet(&[("e0", "deallocated", 1)]);
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migempty");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(&sim, &out, "  selection:\n    names: [\"nomatch-*\"]\n"),
    )
    .unwrap();
    let result = run(&cfg, &[]).await;
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("matched no VM")
            && stderr.contains("matched: resource groups rg-a, rg-b; names nomatch-*"),
        "{stderr}"
    );
    assert!(!stderr.contains("Selection {"), "no debug dump: {stderr}");
    let allowed = run(&cfg, &["--allow-empty"]).await;
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed.stderr));
}

// ---- Issue 13, items 4, 5 and 7: honest outcomes, structured records, visible waits ----

/// A tmpfs mounted for a test, unmounted when dropped (before its `Scratch` goes).
struct Mounted(PathBuf);

impl Mounted {
    /// Mounts a tmpfs of `size` (e.g. `16m`) at `dir`; `None` (with a message) where
    /// mounting is not allowed (not root, no `mount`), so the test is skipped, not failed.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(dir),
            ])
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Mounted(dir.to_path_buf())),
            _ => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs at {} (needs root): the full and read-only output tests do not run",
                    dir.display()
                );
                None
            }
        }
    }

    /// Remounts read-only, retrying while a file is open for writing (EBUSY), until `limit`.
    async fn make_read_only(&self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            let dir = self.0.clone();
            let ok = tokio::task::spawn_blocking(move || {
                Command::new("mount")
                    .args(["-o", "remount,ro", s(&dir)])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .await
            .unwrap();
            if ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", s(&self.0)]).status();
    }
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect()
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Regression (issue 13): SIGTERM left no `run-*.json` and a report saying `running`. Now it
/// stops like Ctrl-C: the run cleans up, every record says `interrupted` (the snapshots with
/// `deleted_at`), the partial images keep their resume journal, no `*.tmp` is left, exit 130.
#[tokio::test(flavor = "multi_thread")]
async fn records_sigterm_leaves_an_interrupted_summary_and_the_journals() {
    let vms = small_fleet(&[("t0", "running", 2), ("t1", "deallocated", 2)]);
    let sim = start(&vms, 12 * MIB).await;
    let scratch = Scratch::new("migterm");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(
            &sim,
            &out,
            "download: { bandwidth: 2M, chunk_size: 256K }\n",
        ),
    )
    .unwrap();
    let child = spawn(&cfg, &scratch);
    // A checkpoint (every 5 s) has written t1's journal: there is something to resume. (t0's
    // partial images come from snapshots the interruption deletes, so only t1's, read from
    // its disks, can be resumed by the next run.)
    wait_for("t1's resume journal", Duration::from_secs(120), || {
        files_under(&out).iter().any(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("t1-") && name.ends_with(".part.journal")
        })
    })
    .await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_child(child).await;
    let stderr = std::fs::read_to_string(scratch.path("stderr")).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 0), "{stderr}");
    let runs = summaries(&out);
    assert_eq!(runs.len(), 1, "run-<id>.json is written: {stderr}");
    let sum = &runs[0];
    assert_eq!(sum["status"], "interrupted", "{sum:#}");
    assert_eq!(sum["interrupted_by"], "SIGTERM");
    assert_eq!(sum["exit_code"], 130);
    assert_eq!(
        sum["cleanup_errors"].as_array().unwrap().len(),
        0,
        "{sum:#}"
    );
    for vm in sum["vms"].as_array().unwrap() {
        assert!(
            Path::new(vm["report"].as_str().unwrap()).is_absolute(),
            "{vm}"
        );
    }
    let t0 = report(&out, "t0");
    assert_eq!(t0["status"], "interrupted", "{t0:#}");
    let snaps = t0["resources"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(
        snaps.iter().all(|r| r["deleted_at"].is_string()),
        "deleted snapshots are recorded as deleted: {t0:#}"
    );
    let t1 = report(&out, "t1");
    assert_eq!(t1["status"], "interrupted", "{t1:#}");
    assert!(
        files_under(&out)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".part.journal")),
        "SIGTERM keeps the resume journals"
    );
    assert!(tmp_files(&out).is_empty(), "{:?}", tmp_files(&out));
    // The next run resumes and finishes.
    let again = run(&cfg, &[]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(report(&out, "t1")["disks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["bytes_resumed"].as_u64() > Some(0)));
}

/// Regression (issue 13): `cleanup_errors` stayed empty when Azure refused revokes and
/// deletes. Forced 409s (simulator faults) now show in the VM's report and the run's summary
/// with the resource, the HTTP status, ARM's code, and the `az` command that finishes it;
/// stderr says the same; the run is partial (exit 3).
#[tokio::test(flavor = "multi_thread")]
async fn records_refused_revokes_and_deletes_list_what_to_do_by_hand() {
    let mut vms = small_fleet(&[("c0", "deallocated", 1), ("c1", "running", 1)]);
    vms[0].disks[0].2 = Some("revoke_conflict");
    vms[1].disks[0].2 = Some("delete_conflict");
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migcleanup");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let result = run(&cfg, &["--output", "json"]).await;
    let (stdout, stderr) = (text(&result.stdout), text(&result.stderr));
    assert_eq!(result.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(sim.counters().cleanup_conflicts() >= 2);
    // `--output json` prints the summary as run-<id>.json has it.
    let printed: Value = serde_json::from_str(&stdout).expect("the summary as JSON");
    let run = summaries(&out).pop().unwrap();
    assert_eq!(printed, run);
    let errors = run["cleanup_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{run:#}");
    let revoke = errors
        .iter()
        .find(|e| e["action"] == "revoke_access")
        .expect("the refused revoke");
    let disk_id = report(&out, "c0")["disks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(revoke["resource"], disk_id.as_str(), "{revoke:#}");
    assert_eq!(revoke["vm"], "c0");
    assert_eq!(
        revoke["command"],
        format!("az disk revoke-access --ids {disk_id}").as_str()
    );
    let delete = errors
        .iter()
        .find(|e| e["action"] == "delete_snapshot")
        .expect("the refused delete");
    let snapshot = report(&out, "c1")["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(delete["resource"], snapshot.as_str());
    assert!(delete["command"]
        .as_str()
        .unwrap()
        .contains(&format!("az snapshot delete --ids {snapshot}")));
    for e in [revoke, delete] {
        assert_eq!(e["error"]["kind"], "conflict", "{e:#}");
        assert_eq!(e["error"]["status"], 409, "{e:#}");
        assert_eq!(e["error"]["code"], "OperationNotAllowed", "{e:#}");
        assert!(
            !e["error"]["message"].as_str().unwrap().contains("http"),
            "{e:#}"
        );
    }
    // The VM's own report has its cleanup error; the snapshot is not marked deleted.
    let c1 = report(&out, "c1");
    assert_eq!(c1["status"], "partial", "{c1:#}");
    assert_eq!(c1["cleanup_errors"].as_array().unwrap().len(), 1);
    assert!(c1["resources"][0]["deleted_at"].is_null());
    assert!(
        stderr.contains(&format!("az disk revoke-access --ids {disk_id}"))
            && stderr.contains("az snapshot delete --ids"),
        "{stderr}"
    );
}

/// Regression: a summary that could not be printed (stdout on a full disk) made the run exit
/// 1 and lost the stderr lines listing the cleanups left to do. They are printed, and the
/// run's own code (3) stays.
#[tokio::test(flavor = "multi_thread")]
async fn trust_a_failing_stdout_keeps_the_exit_code_and_the_cleanup_lines() {
    let mut vms = small_fleet(&[("f0", "deallocated", 1)]);
    vms[0].disks[0].2 = Some("revoke_conflict");
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migfullout");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("SKIPPED: no /dev/full");
        return;
    };
    let args = ["-c", s(&cfg), "--output", "json"].map(String::from);
    let result = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .stdout(full)
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("writing the summary"), "{stderr}");
    assert!(stderr.contains("az disk revoke-access --ids"), "{stderr}");
    assert!(stderr.contains("0 of 1 VM(s) completed"), "{stderr}");
}

/// Regression (issue 13): an unreachable ARM endpoint took 41 s of silence. A refused
/// connection to a host that never answered is retried briefly: the run fails within 10 s,
/// naming the host, with the default retry configuration.
#[tokio::test(flavor = "multi_thread")]
async fn records_an_unreachable_endpoint_fails_within_10_s_naming_the_host() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = Scratch::new("migrefused");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "azure:\n  subscriptions: [\"{SUB}\"]\n  arm_endpoint: \"http://127.0.0.1:{port}\"\n  auth: none\n  resource_groups: [rg-a]\noutput:\n  dir: \"{}\"\n",
            scratch.path("out").display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let result = run(&cfg, &["-v"]).await;
    let took = started.elapsed();
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    // -v shows the retries as they happen, with the wait.
    assert!(stderr.contains("retry 1/"), "{stderr}");
}

/// Regression (issue 13): a full output file system printed only "cannot write the run
/// summary", left `report.json` saying `running` and 0-byte `*.tmp` files. Now the disk
/// fails with kind `no_space`, and both records are written and say so; no `*.tmp` is left.
/// (Whether the records fit in what the image left depends on where its last write stopped;
/// the room a run sets aside for them is proven on a disk filled to the last byte by
/// `records::tests::a_full_disk_still_takes_the_records` in the engine.)
#[tokio::test(flavor = "multi_thread")]
async fn records_a_full_output_disk_is_recorded() {
    let mut vms = small_fleet(&[("f0", "deallocated", 1)]);
    vms[0].disks[0].1 = 64 * MIB;
    let sim = start(&vms, 40 * MIB).await;
    let scratch = Scratch::new("migfull");
    let out = scratch.path("out");
    let Some(_mount) = Mounted::tmpfs(&out, "12m") else {
        return;
    };
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let result = run(&cfg, &[]).await;
    let (stdout, stderr) = (text(&result.stdout), text(&result.stderr));
    assert_eq!(result.status.code(), Some(1), "{stdout}\n{stderr}");
    let f0 = report(&out, "f0");
    assert_eq!(f0["status"], "failed", "{f0:#}");
    assert_eq!(f0["disks"][0]["error"]["kind"], "no_space", "{f0:#}");
    assert_eq!(f0["tool_version"], env!("CARGO_PKG_VERSION"));
    let run = summaries(&out).pop().expect("run-<id>.json is written");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["vms"][0]["error"]["kind"], "no_space", "{run:#}");
    assert!(tmp_files(&out).is_empty(), "{:?}", tmp_files(&out));
    // The table's error is one line, not a wrapped URL.
    let row = stdout
        .lines()
        .find(|l| l.contains(" f0 "))
        .expect("f0's row");
    assert!(row.contains("no_space"), "{stdout}");
    assert!(row.chars().count() < 160, "{row}");
}

/// Regression (issue 13): an output directory that became read-only in the middle of a run
/// printed only "cannot write the run summary". Now stderr names every record that could
/// not be written with the reason, the exit code is not 0, and no `*.tmp` is left.
#[tokio::test(flavor = "multi_thread")]
async fn records_an_output_dir_made_read_only_during_a_run_is_reported() {
    let vms = small_fleet(&[("r0", "running", 1)]);
    let mut yaml = scenario_yaml(&vms, 2 * MIB);
    // Slow snapshots: a few seconds in which the run holds no file open for writing.
    yaml = yaml.replace(
        "operations: { polls: 1, retry_after_secs: 0 }",
        "operations: { polls: 4, retry_after_secs: 1 }",
    );
    let sim = Simulator::start(&Scenario::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let scratch = Scratch::new("migro");
    let out = scratch.path("out");
    let Some(mount) = Mounted::tmpfs(&out, "64m") else {
        return;
    };
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    let child = spawn(&cfg, &scratch);
    // The snapshot is recorded (report.json written) and being created.
    wait_for("the snapshot's record", Duration::from_secs(60), || {
        std::fs::read(out.join("r0/report.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|r| !r["resources"].as_array().unwrap().is_empty())
    })
    .await;
    assert!(
        mount.make_read_only(Duration::from_secs(20)).await,
        "could not remount read-only"
    );
    let status = wait_child(child).await;
    let stderr = std::fs::read_to_string(scratch.path("stderr")).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let unwritten: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("record not written"))
        .collect();
    assert!(
        unwritten
            .iter()
            .any(|l| l.contains("r0/report.json") && l.contains("Read-only file system")),
        "{stderr}"
    );
    assert!(
        unwritten.iter().any(|l| l.contains("/run-")),
        "the run summary's failure is said: {stderr}"
    );
    // Azure is cleaned up all the same.
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 0), "{stderr}");
    assert!(tmp_files(&out).is_empty(), "{:?}", tmp_files(&out));
}

/// The documented fields of each record section of `docs/records.md`: heading -> (field,
/// optional).
fn documented_records() -> BTreeMap<String, Vec<(String, bool)>> {
    let doc = include_str!("../../docs/records.md");
    let mut sections: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    let mut current = None;
    for line in doc.lines() {
        if let Some(h) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            current = Some(h.replace('`', ""));
            continue;
        }
        let (Some(section), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let name = row.split('`').next().unwrap().to_string();
        let optional = line
            .split('|')
            .nth(2)
            .is_some_and(|t| t.contains("optional"));
        sections
            .entry(section.clone())
            .or_default()
            .push((name, optional));
    }
    sections
}

/// What a real run writes matches `docs/records.md`: every field written is documented,
/// and every field the document does not call optional is written.
#[tokio::test(flavor = "multi_thread")]
async fn records_match_the_documented_schema() {
    let mut vms = small_fleet(&[("d0", "running", 2), ("d1", "deallocated", 2)]);
    vms[0].disks[1].2 = Some("delete_conflict");
    vms[1].disks[1].2 = Some("read_fails");
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migschema");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(
        &cfg,
        config(&sim, &out, "  running_vm: stop\n  restart_vms: true\n"),
    )
    .unwrap();
    let result = run(&cfg, &[]).await;
    assert_eq!(result.status.code(), Some(3), "{}", text(&result.stderr));
    let run = summaries(&out).pop().unwrap();
    let reports = [report(&out, "d0"), report(&out, "d1")];
    let mut written: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    let mut add =
        |section: &'static str, v: &'static Value| written.entry(section).or_default().push(v);
    // Values live for the test; leak them to keep the bookkeeping simple.
    let run: &'static Value = Box::leak(Box::new(run));
    let reports: &'static [Value; 2] = Box::leak(Box::new(reports));
    add("run-<id>.json", run);
    for vm in run["vms"].as_array().unwrap() {
        add("run-<id>.json: vms[]", vm);
        if vm["error"].is_object() {
            add("Error object", &vm["error"]);
        }
    }
    for c in run["cleanup_errors"].as_array().unwrap() {
        add("Cleanup object", c);
        add("Error object", &c["error"]);
    }
    for r in reports.iter() {
        add("report.json", r);
        for d in r["disks"].as_array().unwrap() {
            add("report.json: disks[]", d);
            if d["error"].is_object() {
                add("Error object", &d["error"]);
            }
        }
        for x in r["resources"].as_array().unwrap() {
            add("report.json: resources[]", x);
        }
        for p in r["power"].as_array().unwrap() {
            add("report.json: power[]", p);
        }
        for e in r["errors"].as_array().unwrap() {
            add("Error object", e);
        }
        for c in r["cleanup_errors"].as_array().unwrap() {
            add("Cleanup object", c);
        }
    }
    let documented = documented_records();
    for (section, objects) in &written {
        let fields = documented
            .get(*section)
            .unwrap_or_else(|| panic!("docs/records.md has no section {section:?}"));
        let mut seen = std::collections::BTreeSet::new();
        for o in objects {
            for k in keys(o) {
                assert!(
                    fields.iter().any(|(f, _)| *f == k),
                    "{section}: field {k:?} is written but not in docs/records.md"
                );
                seen.insert(k);
            }
        }
        for (f, optional) in fields {
            assert!(
                *optional || seen.contains(f),
                "{section}: docs/records.md lists {f:?} as always written, but it is not"
            );
        }
    }
    // The run exercised every kind of object the document describes (but the unwritten
    // record, which the full and read-only tests see on stderr).
    for section in [
        "run-<id>.json: vms[]",
        "report.json: disks[]",
        "report.json: resources[]",
        "report.json: power[]",
        "Error object",
        "Cleanup object",
    ] {
        assert!(
            written.contains_key(section),
            "nothing written for {section}"
        );
    }
    // Error objects carry the HTTP status and ARM's code where Azure refused.
    assert!(written["Error object"]
        .iter()
        .any(|e| e["status"] == 409 && e["code"] == "OperationNotAllowed"));
}

/// `output.target: kubevirt`: per VM a `<vm>.kubevirt.yaml` instead of the domain XML, with a
/// DataVolume per disk whose URL names that disk's image under the output directory and
/// whose storage request holds its virtual size, and a VirtualMachine using them in boot
/// order. (The manifests' schema is checked in core's `kubevirt_schema` test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubevirt_target_writes_datavolumes_and_a_virtualmachine_per_vm() {
    let mut vms = small_fleet(&[("App_01", "deallocated", 3), ("db", "stopped", 1)]);
    vms[1].generation = 1;
    vms[1].os = "windows";
    let sim = start(&vms, MIB).await;
    let scratch = Scratch::new("migkubevirt");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    let base = "https://images.example:8443/fleet";
    let text_cfg = format!(
        "{}  target: kubevirt\n  kubevirt: {{ image_url_base: \"{base}/\", namespace: migrated }}\n",
        config(&sim, &out, "")
    );
    std::fs::write(&cfg, text_cfg).unwrap();
    let result = run(&cfg, &[]).await;
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert!(
        !files_under(&out)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "xml")),
        "a domain XML was written for target kubevirt"
    );
    for vm in &vms {
        let rep = report(&out, &vm.name);
        assert!(rep.get("domain_xml").is_none(), "{rep}");
        assert_images(&sim, &scratch, &rep);
        let path = PathBuf::from(rep["kubevirt_manifest"].as_str().expect("a manifest"));
        assert_eq!(
            path,
            out.join(&vm.name)
                .join(format!("{}.kubevirt.yaml", vm.name))
        );
        let yaml = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = yaml
            .split("---\n")
            .skip(1)
            .map(|d| serde_saphyr::from_str(d).unwrap())
            .collect();
        let disks = rep["disks"].as_array().unwrap();
        assert_eq!(docs.len(), disks.len() + 1, "{yaml}");
        let machine = docs.last().unwrap();
        assert_eq!(machine["kind"], "VirtualMachine");
        assert_eq!(machine["metadata"]["namespace"], "migrated");
        assert_eq!(
            machine["metadata"]["annotations"]["hyper2kvm.io/source-name"],
            vm.name
        );
        let name = machine["metadata"]["name"].as_str().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}"
        );
        let template = &machine["spec"]["template"]["spec"];
        let bootloader = &template["domain"]["firmware"]["bootloader"];
        assert_eq!(
            bootloader.get("efi").is_some(),
            vm.generation == 2,
            "{bootloader}"
        );
        assert_eq!(
            template["domain"]["features"].get("hyperv").is_some(),
            vm.os == "windows"
        );
        let (_, vcpus, mib) = SIZES.iter().find(|s| s.0 == vm.size).unwrap();
        assert_eq!(template["domain"]["cpu"]["cores"], *vcpus);
        assert_eq!(template["domain"]["memory"]["guest"], format!("{mib}Mi"));
        // Disks in report order (OS first), each volume on its own DataVolume.
        for (i, (disk, dv)) in disks.iter().zip(&docs).enumerate() {
            assert_eq!(dv["kind"], "DataVolume");
            let volume = &template["volumes"][i];
            assert_eq!(volume["dataVolume"]["name"], dv["metadata"]["name"]);
            assert_eq!(
                template["domain"]["devices"]["disks"][i]["name"],
                volume["name"]
            );
            assert_eq!(
                template["domain"]["devices"]["disks"][i]
                    .get("bootOrder")
                    .is_some(),
                i == 0
            );
            let url = dv["spec"]["source"]["http"]["url"].as_str().unwrap();
            let relative = url.strip_prefix(&format!("{base}/")).expect(url);
            assert_eq!(
                out.join(relative),
                PathBuf::from(disk["output"].as_str().unwrap())
            );
            let request = dv["spec"]["storage"]["resources"]["requests"]["storage"]
                .as_str()
                .unwrap();
            let mib_requested: u64 = match request.strip_suffix("Gi") {
                Some(gib) => gib.parse::<u64>().unwrap() * 1024,
                None => request.strip_suffix("Mi").unwrap().parse().unwrap(),
            };
            assert!(
                mib_requested * MIB >= disk["virtual_size"].as_u64().unwrap(),
                "{dv}"
            );
        }
    }
    assert_eq!(sim.counters().open_grants(), 0);
}
