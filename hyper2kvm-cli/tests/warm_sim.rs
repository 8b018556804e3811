//! Warm migration end to end: `hyper2kvm -c config.yaml sync` and `cutover` (the real
//! binary) against the in-process simulator. A full sync, three deltas with writes and trims
//! between them, then a cutover whose images equal the disks as they are at the end (qemu-img
//! compare and check), with nothing left in Azure; a sync and a cutover killed with SIGKILL
//! or interrupted with SIGINT during a delta and run again; a recreated and a resized disk
//! copied in full again; a base deleted behind our back; Azure's limit on incremental
//! snapshots waited out; `hyper2kvm report` telling synced from cut over; a cutover of a VM
//! never synced, and one under the `snapshot` policy, refused with what to do.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper2kvm_sim::{IncrementalLimits, Route, Scenario, SimHandle, Simulator};
use serde_json::Value;
use support::{assert_image_matches, output_of, qemu_img, run_config, s, text, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_hyper2kvm");
const SUB: &str = "00000000-0000-0000-0000-00000000a4a2";
const MIB: u64 = 1 << 20;
const OS: &str = "app_OsDisk_1";
const DATA: &str = "app_DataDisk_0";

/// One running VM with an OS disk and a data disk, 32 MiB each, partly written.
async fn start() -> SimHandle {
    let yaml = format!(
        r#"
settings: {{ operations: {{ polls: 1, retry_after_secs: 0 }}, page_list_size: 4 }}
subscriptions:
  - id: {SUB}
    resource_groups:
      - name: rg-w
        location: westeurope
        vms:
          - name: app
            size: Standard_B2s
            power_state: running
            os_type: linux
            generation: 2
            disks:
              - size_bytes: 33554432
                content: {{ seed: 7, extents: [{{ offset: 0, length: 4194304 }}, {{ offset: 16777216, length: 2097152 }}] }}
              - size_bytes: 33554432
                lun: 0
                content: {{ seed: 8, extents: [{{ offset: 1048576, length: 3145728 }}] }}
"#
    );
    Simulator::start(&Scenario::from_yaml(&yaml).unwrap())
        .await
        .unwrap()
}

fn config(sim: &SimHandle, out: &Path, extra: &str) -> String {
    format!(
        "azure:\n  subscriptions: [\"{SUB}\"]\n  arm_endpoint: \"{}\"\n  auth: none\n  retry: {{ max_retries: 1, timeout_secs: 10 }}\n  resource_groups: [rg-w]\n{extra}output:\n  dir: \"{}\"\n  format: qcow2\n",
        sim.base_url(),
        out.display()
    )
}

/// `hyper2kvm -c CFG EXTRA...`, off the async runtime (the simulator runs on it).
async fn run(cfg: &Path, extra: &[&str]) -> Output {
    run_config(BIN, cfg, extra).await
}

fn report(out: &Path) -> Value {
    let p = out.join("app").join("report.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn warm_disk<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["warm"]["disks"]
        .as_array()
        .expect("a warm section")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no warm entry for {name}: {rep:#}"))
}

/// The image at `image` equals the disk `name` as it is now, and `qemu-img check` is clean.
fn assert_equals_now(sim: &SimHandle, scratch: &Scratch, image: &Path, name: &str) {
    let reference = scratch.path(&format!("{name}.ref"));
    sim.disk_now(name)
        .unwrap()
        .write_raw_reference(&reference)
        .unwrap();
    assert_image_matches(image, "qcow2", &reference);
    let check = qemu_img(&["check", "-f", "qcow2", s(image)]);
    assert!(check.contains("No errors"), "{check}");
    std::fs::remove_file(&reference).unwrap();
}

fn working(out: &Path, disk: &str) -> PathBuf {
    let rep = report(out);
    PathBuf::from(warm_disk(&rep, disk)["image"].as_str().unwrap())
}

async fn sync(cfg: &Path, extra: &[&str]) {
    let mut args = vec!["sync"];
    args.extend_from_slice(extra);
    let o = run(cfg, &args).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// A simulator, a scratch folder, its output folder and a config whose reads are slow
/// (2 MiB/s, so a delta takes a while) with `extra` in its `azure` section; synced once.
async fn synced_slowly(name: &str, extra: &str) -> (SimHandle, Scratch, PathBuf, PathBuf) {
    let extra = format!("{extra}download: {{ bandwidth: 2M, concurrency: 2, chunk_size: 256K }}\n");
    let (sim, scratch, out, cfg) = fixture(name, &extra).await;
    sync(&cfg, &[]).await;
    (sim, scratch, out, cfg)
}

/// A simulator, a scratch folder `name`, its output folder and a config with `extra` in its
/// `azure` section.
async fn fixture(name: &str, extra: &str) -> (SimHandle, Scratch, PathBuf, PathBuf) {
    let sim = start().await;
    let scratch = Scratch::new(name);
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, extra)).unwrap();
    (sim, scratch, out, cfg)
}

/// After a sync where the data disk could not be diffed: it was copied in full again, with
/// a warning naming it and containing `why`; the OS disk still got only its delta; both
/// images equal the disks and only the chain is left in Azure.
fn assert_data_copied_in_full_again(sim: &SimHandle, scratch: &Scratch, out: &Path, why: &str) {
    let rep = report(out);
    assert_eq!(warm_disk(&rep, DATA)["full_copies"], 2, "{rep:#}");
    assert_eq!(warm_disk(&rep, OS)["full_copies"], 1, "{rep:#}");
    let warned = rep["warnings"].as_array().unwrap().iter().any(|w| {
        let w = w.as_str().unwrap();
        w.contains(DATA) && w.contains(why)
    });
    assert!(warned, "{rep:#}");
    assert_in_sync(sim, scratch, out);
}

/// Between syncs: both working images equal the disks as they are now, no grant is open and
/// the chain (one base per disk) is all that is left in Azure.
fn assert_in_sync(sim: &SimHandle, scratch: &Scratch, out: &Path) {
    for d in [OS, DATA] {
        assert_equals_now(sim, scratch, &working(out, d), d);
    }
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 2));
}

/// Runs `hyper2kvm -c CFG COMMAND` and sends it `signal` once every disk's new copy is
/// created and its delta is being read (the config slows reads down); its output.
async fn stop_during_delta(cfg: &Path, out: &Path, command: &str, signal: i32) -> Output {
    let mut child = Command::new(BIN)
        .args(["-c", s(cfg), command])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while ![OS, DATA]
        .iter()
        .all(|d| warm_disk(&report(out), d)["pending"]["created"] == true)
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{command} ended before it could be stopped"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Into the delta's reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

/// `docs/records.md`'s table `section`: each field's name and whether it is optional.
fn documented(section: &str) -> Vec<(String, bool)> {
    let doc = include_str!("../../docs/records.md");
    let mut current = String::new();
    let mut out = Vec::new();
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            current = h.replace('`', "");
            continue;
        }
        if current != section {
            continue;
        }
        if let Some(row) = line.strip_prefix("| `") {
            let name = row.split('`').next().unwrap().to_string();
            let optional = line
                .split('|')
                .nth(2)
                .is_some_and(|t| t.contains("optional"));
            out.push((name, optional));
        }
    }
    assert!(!out.is_empty(), "no table {section}");
    out
}

/// The object `v` has every field `section` documents as required, and no other field.
fn assert_documented(v: &Value, section: &str) {
    let fields = documented(section);
    let obj = v.as_object().unwrap_or_else(|| panic!("{section}: {v:#}"));
    for k in obj.keys() {
        assert!(
            fields.iter().any(|(n, _)| n == k),
            "{section}: `{k}` is not documented"
        );
    }
    for (n, optional) in &fields {
        assert!(
            *optional || obj.contains_key(n),
            "{section}: `{n}` is missing"
        );
    }
}

/// `report.json`'s `warm` section as `docs/records.md` documents it.
fn assert_warm_documented(rep: &Value) {
    assert_documented(&rep["warm"], "report.json: warm");
    for d in rep["warm"]["disks"].as_array().unwrap() {
        assert_documented(d, "report.json: warm.disks[]");
        for c in ["base", "pending"] {
            if !d[c].is_null() {
                assert_documented(&d[c], "report.json: warm.disks[].base");
            }
        }
    }
}

/// A full sync, three deltas with writes and trims between them (each applied in place and
/// equal to the disks then, reading only what changed), then a cutover with `deallocate`:
/// the final images equal the disks, and no grant nor snapshot is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_three_deltas_then_cutover_equal_the_disks() {
    let sim = start().await;
    let scratch = Scratch::new("warm-e2e");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "  running_vm: deallocate\n")).unwrap();

    sync(&cfg, &[]).await;
    let rep = report(&out);
    assert_eq!(rep["action"], "sync", "{rep:#}");
    assert_eq!(rep["status"], "completed", "{rep:#}");
    assert_warm_documented(&rep);
    for name in [OS, DATA] {
        let w = warm_disk(&rep, name);
        assert_eq!(w["generation"], 1, "{w:#}");
        assert_eq!(w["full_copies"], 1, "{w:#}");
        assert!(
            w["base"]["source_identity"].as_str().unwrap() != "",
            "{w:#}"
        );
        assert!(w.get("pending").is_none(), "{w:#}");
        let img = working(&out, name);
        assert!(img.to_string_lossy().ends_with(".qcow2.warm"), "{img:?}");
        assert_equals_now(&sim, &scratch, &img, name);
    }
    // Nothing under a final name before the cutover; the chain's one copy per disk kept.
    assert!(!out.join("app").join("app.xml").exists());
    assert_eq!(sim.counters().open_grants(), 0);
    assert_eq!(sim.counters().snapshots_alive(), 2);

    let rounds: [&[(&str, &str, u64, u64)]; 3] = [
        &[
            ("w", OS, MIB + 4096, 8192),
            ("w", DATA, 20 * MIB, 3 * MIB),
            ("t", OS, 17 * MIB, MIB),
        ],
        &[
            ("t", OS, 0, 2 * MIB),
            ("w", DATA, 31 * MIB, 512),
            ("w", OS, 17 * MIB + 512, 1024),
        ],
        &[
            ("w", OS, 0, 64 * 1024),
            ("t", DATA, 20 * MIB + 4096, 4096),
            ("w", DATA, 2 * MIB, 2 * MIB),
        ],
    ];
    for (n, changes) in rounds.iter().enumerate() {
        let before = report(&out);
        let mut changed = 0;
        for (i, &(op, disk, at, len)) in changes.iter().enumerate() {
            match op {
                "w" => {
                    changed += len;
                    sim.write_disk(disk, at, len, 100 + (n * 10 + i) as u64)
                }
                _ => sim.trim_disk(disk, at, len),
            }
            .unwrap();
        }
        sync(&cfg, &[]).await;
        let rep = report(&out);
        for name in [OS, DATA] {
            let w = warm_disk(&rep, name);
            assert_eq!(w["generation"], n as u64 + 2, "{w:#}");
            assert_eq!(w["full_copies"], 1, "only deltas: {w:#}");
            assert_ne!(
                w["base"]["id"],
                warm_disk(&before, name)["base"]["id"],
                "a new base"
            );
            assert_equals_now(&sim, &scratch, &working(&out, name), name);
        }
        let read: u64 = [OS, DATA]
            .iter()
            .map(|d| warm_disk(&rep, d)["last_bytes_written"].as_u64().unwrap())
            .sum();
        assert_eq!(read, changed, "only the written bytes are read: {rep:#}");
        // The older bases are deleted: one copy per disk.
        assert_eq!(sim.counters().snapshots_alive(), 2);
        assert_eq!(sim.counters().open_grants(), 0);
    }

    // The VM writes once more; the cutover stops it and applies that last delta.
    sim.write_disk(DATA, 8 * MIB, MIB, 999).unwrap();
    let o = run(&cfg, &["cutover"]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let rep = report(&out);
    assert_eq!(rep["status"], "completed", "{rep:#}");
    assert!(rep["action"].as_str().unwrap().starts_with("cutover"));
    assert!(
        rep["warm"]["downtime_seconds"].as_f64().is_some(),
        "{rep:#}"
    );
    assert!(rep["power"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["action"] == "deallocate" && p["ok"] == true));
    for d in rep["disks"].as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        let output = PathBuf::from(d["output"].as_str().unwrap());
        assert!(output.to_string_lossy().ends_with(".qcow2"), "{output:?}");
        assert!(
            !working(&out, name).exists(),
            "the working image is renamed"
        );
        assert!(d["sha256"].is_string(), "{d:#}");
        assert_equals_now(&sim, &scratch, &output, name);
    }
    assert!(PathBuf::from(rep["domain_xml"].as_str().unwrap()).exists());
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 0));
    let (state, totals) = fleet_state(&out).await;
    assert_eq!(state, "completed", "{totals:#}");
    assert_eq!(
        (totals["completed"].as_u64(), totals["synced"].as_u64()),
        (Some(1), Some(0))
    );
}

/// `hyper2kvm report DIR -o json`: the VM's state and the totals.
async fn fleet_state(out: &Path) -> (String, Value) {
    let args = ["report", s(out), "-o", "json"].map(String::from).to_vec();
    let o = output_of(BIN, args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v["vms"][0]["state"].as_str().unwrap().to_string(),
        v["totals"].clone(),
    )
}

/// A sync killed with SIGKILL while it applies a delta leaves the base and the pending copy
/// recorded; the next sync applies that copy again and the image equals the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_during_a_delta_is_finished_by_the_next() {
    let (sim, scratch, out, cfg) = synced_slowly("warm-kill", "").await;
    // 12 MiB to read at 2 MiB/s: the delta takes a while.
    sim.write_disk(OS, 4 * MIB, 6 * MIB, 41).unwrap();
    sim.write_disk(DATA, 10 * MIB, 6 * MIB, 42).unwrap();
    stop_during_delta(&cfg, &out, "sync", libc::SIGKILL).await;
    let killed = report(&out);
    assert_warm_documented(&killed);
    let pending: Vec<String> = [OS, DATA]
        .iter()
        .map(|d| {
            warm_disk(&killed, d)["pending"]["id"]
                .as_str()
                .expect("the delta in progress is recorded")
                .to_string()
        })
        .collect();
    assert_eq!(
        sim.counters().snapshots_alive(),
        4,
        "bases and pending kept"
    );

    sync(&cfg, &[]).await;
    let rep = report(&out);
    for (d, p) in [OS, DATA].iter().zip(&pending) {
        let w = warm_disk(&rep, d);
        assert_eq!(w["base"]["id"].as_str(), Some(p.as_str()), "applied again");
        assert_eq!(w["full_copies"], 1, "{w:#}");
    }
    assert_in_sync(&sim, &scratch, &out);
}

/// A disk deleted and created again between two syncs is copied in full again, and the
/// report says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_disk_is_copied_in_full_again() {
    let (sim, scratch, out, cfg) = fixture("warm-recreate", "").await;
    sync(&cfg, &[]).await;
    sim.recreate_disk(DATA).unwrap();
    sim.write_disk(DATA, 3 * MIB, MIB, 77).unwrap();
    sim.write_disk(OS, 3 * MIB, MIB, 78).unwrap();
    sync(&cfg, &[]).await;
    assert_data_copied_in_full_again(&sim, &scratch, &out, "copied in full again");
}

/// `--rounds` with `--until-delta`: a sync with nothing changing stops after its second
/// round (the first delta is empty), not its fifth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_stop_once_the_delta_is_small() {
    let (sim, _scratch, out, cfg) = fixture("warm-rounds", "").await;
    sync(&cfg, &["--rounds", "5", "--until-delta", "1M"]).await;
    let (state, totals) = fleet_state(&out).await;
    assert_eq!(state, "synced", "{totals:#}");
    assert_eq!(
        (totals["completed"].as_u64(), totals["synced"].as_u64()),
        (Some(0), Some(1))
    );
    let rep = report(&out);
    assert_eq!(rep["warm"]["rounds"], 2, "{rep:#}");
    assert_eq!(rep["warm"]["last_delta_bytes"], 0, "{rep:#}");
    for d in [OS, DATA] {
        assert_eq!(warm_disk(&rep, d)["generation"], 2);
    }
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 2));
}

/// Azure's limit on incremental snapshots per disk (7 in 5 minutes; here 2 in 2 s, so each
/// round after the first is refused with 429 at first): `sync` waits it out, says so under
/// `-v`, and every round lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incremental_snapshot_limit_is_waited_out() {
    let sim = start().await;
    sim.set_incremental_limits(IncrementalLimits {
        per_window: 2,
        window_secs: 2,
        open_grants_per_family: 5,
    });
    let scratch = Scratch::new("warm-limit");
    let out = scratch.path("out");
    let cfg = scratch.path("config.yaml");
    std::fs::write(&cfg, config(&sim, &out, "")).unwrap();
    sim.write_disk(OS, 8 * MIB, MIB, 41).unwrap();
    let o = run(&cfg, &["-v", "sync", "--rounds", "3", "--interval", "0"]).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(sim.counters().throttled(Route::Snapshot) >= 1, "{err}");
    assert!(
        err.contains("429") || err.contains("limits incremental snapshots"),
        "{err}"
    );
    let rep = report(&out);
    assert_eq!(rep["warm"]["rounds"], 3, "{rep:#}");
    for d in [OS, DATA] {
        assert_eq!(warm_disk(&rep, d)["generation"], 3, "{rep:#}");
    }
    assert_in_sync(&sim, &scratch, &out);
}

/// A cutover of a VM never synced fails with what to run first, and touches nothing; one
/// under `running_vm: snapshot` is refused: it would not stop the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_needs_a_sync_and_a_stopping_policy() {
    let (sim, _scratch, out, cfg) = fixture("warm-refuse", "  running_vm: stop\n").await;
    let o = run(&cfg, &["cutover"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let rep = report(&out);
    assert_eq!(rep["status"], "failed");
    let why = rep["errors"][0]["detail"].as_str().unwrap();
    assert!(
        why.contains("never synced") && why.contains("sync"),
        "{why}"
    );
    assert!(rep["power"].as_array().unwrap().is_empty(), "not stopped");
    assert_eq!(sim.counters().snapshots_alive(), 0);

    std::fs::write(&cfg, config(&sim, &out, "  running_vm: snapshot\n")).unwrap();
    sync(&cfg, &[]).await;
    let o = run(&cfg, &["cutover"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let rep = report(&out);
    let why = rep["errors"][0]["detail"].as_str().unwrap();
    assert!(why.contains("running_vm: stop or deallocate"), "{why}");
    assert!(rep["power"].as_array().unwrap().is_empty(), "not stopped");
    // The chain is kept for a cutover with another policy.
    assert_eq!(sim.counters().snapshots_alive(), 2);
    assert!(working(&out, OS).exists());
}

/// The base snapshot deleted behind our back between two syncs: the next sync copies that
/// disk in full again, says why, and the image equals the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_deleted_behind_our_back_is_copied_in_full_again() {
    let (sim, scratch, out, cfg) = fixture("warm-based", "").await;
    sync(&cfg, &[]).await;
    let base = warm_disk(&report(&out), OS)["base"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}{base}?api-version=2025-01-02", sim.base_url());
    // The workspace's client (its TLS provider installed), as the binary builds it.
    let http =
        hyper2kvm_azure::build_http_client(&hyper2kvm_azure::HttpOptions::default()).unwrap();
    let status = http.delete(&url).send().await.unwrap().status();
    assert!(status.is_success(), "{status}");
    let started = Instant::now();
    while sim.counters().snapshots_alive() != 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "not deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.write_disk(OS, 5 * MIB, MIB, 55).unwrap();
    sync(&cfg, &[]).await;
    let rep = report(&out);
    assert_eq!(warm_disk(&rep, OS)["full_copies"], 2, "{rep:#}");
    assert_eq!(warm_disk(&rep, DATA)["full_copies"], 1, "{rep:#}");
    let warned = rep["warnings"].as_array().unwrap().iter().any(|w| {
        let w = w.as_str().unwrap();
        w.contains(OS) && w.contains("copied in full again")
    });
    assert!(warned, "{rep:#}");
    assert_in_sync(&sim, &scratch, &out);
}

/// Ctrl-C (SIGINT) during a delta: the sync revokes its grants, records `interrupted` with
/// the pending copy, exits 130, and keeps the chain; the next sync finishes it. No SAS
/// signature reaches the outputs or the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sync_revokes_its_grants_and_the_next_finishes_it() {
    let (sim, scratch, out, cfg) = synced_slowly("warm-int", "").await;
    sim.write_disk(OS, 4 * MIB, 6 * MIB, 61).unwrap();
    sim.write_disk(DATA, 10 * MIB, 6 * MIB, 62).unwrap();
    let o = stop_during_delta(&cfg, &out, "sync", libc::SIGINT).await;
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    let rep = report(&out);
    assert_eq!(rep["status"], "interrupted", "{rep:#}");
    assert!(warm_disk(&rep, OS)["pending"]["id"].is_string(), "{rep:#}");
    assert_eq!(sim.counters().open_grants(), 0);
    assert_eq!(sim.counters().snapshots_alive(), 4, "the chain is kept");

    let again = run(&cfg, &["sync"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_in_sync(&sim, &scratch, &out);
    // No signature anywhere.
    let sigs = sim.signatures();
    assert!(!sigs.is_empty());
    let mut texts = vec![
        text(&o.stdout),
        text(&o.stderr),
        text(&again.stdout),
        text(&again.stderr),
    ];
    for e in std::fs::read_dir(out.join("app")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            texts.push(text(&std::fs::read(&p).unwrap()));
        }
    }
    for t in &texts {
        for sig in &sigs {
            assert!(!t.contains(sig.as_str()), "a SAS signature leaked");
        }
    }
}

/// A cutover killed with SIGKILL during its last delta (the VM already deallocated): run
/// again, it applies that delta, publishes the images (equal to the disks), writes the
/// domain and deletes the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_killed_during_its_last_delta_is_finished_by_the_next() {
    let (sim, scratch, out, cfg) =
        synced_slowly("warm-cutkill", "  running_vm: deallocate\n").await;
    sim.write_disk(OS, 4 * MIB, 6 * MIB, 71).unwrap();
    sim.write_disk(DATA, 10 * MIB, 6 * MIB, 72).unwrap();
    stop_during_delta(&cfg, &out, "cutover", libc::SIGKILL).await;
    let killed = report(&out);
    assert!(
        killed["warm"]["cutover_started_at"].is_string(),
        "{killed:#}"
    );
    assert!(killed.get("domain_xml").is_none(), "not published yet");

    let o = run(&cfg, &["cutover"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rep = report(&out);
    assert_eq!(rep["status"], "completed", "{rep:#}");
    for d in rep["disks"].as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        let output = PathBuf::from(d["output"].as_str().unwrap());
        assert_equals_now(&sim, &scratch, &output, name);
    }
    assert!(PathBuf::from(rep["domain_xml"].as_str().unwrap()).exists());
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 0));
}

/// Ctrl-C (SIGINT) while a cutover applies its last delta: exit 130, every grant revoked,
/// the chain kept (base and final copy of each disk); the next cutover finishes with the
/// images equal to the disks and nothing left in Azure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_cutover_revokes_its_grants_and_the_next_finishes_it() {
    let (sim, scratch, out, cfg) = synced_slowly("warm-cutint", "  running_vm: deallocate\n").await;
    sim.write_disk(OS, 4 * MIB, 6 * MIB, 81).unwrap();
    sim.trim_disk(DATA, MIB, MIB).unwrap();
    sim.write_disk(DATA, 10 * MIB, 6 * MIB, 82).unwrap();
    let o = stop_during_delta(&cfg, &out, "cutover", libc::SIGINT).await;
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    let rep = report(&out);
    assert_eq!(rep["status"], "interrupted", "{rep:#}");
    assert!(rep.get("domain_xml").is_none(), "not published: {rep:#}");
    let c = sim.counters();
    assert_eq!(
        (c.open_grants(), c.snapshots_alive()),
        (0, 4),
        "the chain is kept"
    );

    let again = run(&cfg, &["cutover"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let rep = report(&out);
    assert_eq!(rep["status"], "completed", "{rep:#}");
    for d in rep["disks"].as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        assert!(d["sha256"].is_string(), "{d:#}");
        assert_equals_now(
            &sim,
            &scratch,
            &PathBuf::from(d["output"].as_str().unwrap()),
            name,
        );
    }
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 0));
}

/// A disk resized between two syncs is copied in full again at its new size, with a
/// warning saying so; the other disk still gets only its delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resized_disk_is_copied_in_full_again() {
    let (sim, scratch, out, cfg) = fixture("warm-resize", "").await;
    sync(&cfg, &[]).await;
    sim.resize_disk(DATA, 48 * MIB).unwrap();
    sim.write_disk(DATA, 40 * MIB, MIB, 91).unwrap();
    sim.write_disk(OS, 3 * MIB, MIB, 92).unwrap();
    sync(&cfg, &[]).await;
    assert_data_copied_in_full_again(&sim, &scratch, &out, "resized");
}
