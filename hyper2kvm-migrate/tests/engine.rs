//! The engine on an in-memory source ([`fake::FakeCloud`]): real qcow2 images in a scratch
//! directory (held to `qemu-img compare`), reports as `migrate_sim.rs` reads them, and
//! cleanup (snapshots deleted, grants revoked, VMs started again) on success, failure and
//! cancellation — without HTTP.

#[path = "../../tests/support/mod.rs"]
mod support;

mod fake;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake::{FakeCloud, MIB};
use hyper2kvm_core::{Cleanups, ErrorKind, PowerState};
use hyper2kvm_migrate::{
    DiskStatus, EventFn, Interrupt, Migration, RunEvent, RunOptions, RunStatus, RunSummary,
    RunningVmPolicy, Source, VmStatus,
};
use serde_json::Value;
use support::{assert_image_matches, Scratch};

fn options(out: &Path, policy: RunningVmPolicy) -> RunOptions {
    let mut opts = RunOptions::default();
    opts.plan.run_id = "h2k-test".into();
    opts.plan.dir = out.to_path_buf();
    opts.plan.running_vm = policy;
    opts.convert.chunk_size = 1 << 20;
    opts
}

async fn run(cloud: &FakeCloud, cleanups: &Cleanups, opts: RunOptions) -> RunSummary {
    let source = Source::full(Arc::new(cloud.clone()));
    Migration::new(source, cleanups.clone(), opts)
        .discover_and_run()
        .await
        .expect("the run starts")
}

/// The events a run sends, kept: the list, and the sink to give the run.
fn recorder() -> (Arc<Mutex<Vec<RunEvent>>>, EventFn) {
    let events: Arc<Mutex<Vec<RunEvent>>> = Arc::default();
    let sink = events.clone();
    let record: EventFn = Arc::new(move |e: &RunEvent| sink.lock().unwrap().push(e.clone()));
    (events, record)
}

fn report(out: &Path, vm: &str) -> Value {
    serde_json::from_slice(&std::fs::read(out.join(vm).join("report.json")).unwrap()).unwrap()
}

/// Waits (at most 30 s, else fails with `why`) until `n` read grants are open.
async fn until_grants(cloud: &FakeCloud, n: usize, why: &str) {
    let started = Instant::now();
    while cloud.open_grants() < n {
        assert!(started.elapsed() < Duration::from_secs(30), "{why}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every disk of `vm` is an image identical to the disk in the fake cloud.
fn assert_images(cloud: &FakeCloud, scratch: &Scratch, rep: &Value) {
    for d in rep["disks"].as_array().unwrap() {
        let reference = scratch.path("reference.raw");
        cloud.write_reference(d["id"].as_str().unwrap(), &reference);
        assert_image_matches(
            Path::new(d["output"].as_str().unwrap()),
            "qcow2",
            &reference,
        );
        assert!(d["sha256"].as_str().is_some_and(|h| h.len() == 64), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocated_and_running_vms_become_images_and_domains() {
    let scratch = Scratch::new("engine-ok");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("cold", PowerState::Deallocated, 1);
    cloud.add_vm("warm", PowerState::Running, 2);
    let (events, record) = recorder();
    let source = Source::full(Arc::new(cloud.clone()));
    let summary = Migration::new(
        source,
        cleanups.clone(),
        options(&out, RunningVmPolicy::Snapshot),
    )
    .with_events(record)
    .discover_and_run()
    .await
    .unwrap();
    assert_eq!(summary.exit_code, 0, "{summary:?}");
    assert_eq!(summary.completed, 2);

    let cold = report(&out, "cold");
    assert_eq!(cold["status"], "completed");
    assert!(cold["resources"].as_array().unwrap().is_empty());
    assert_images(&cloud, &scratch, &cold);
    let warm = report(&out, "warm");
    assert_eq!(warm["status"], "completed");
    assert_images(&cloud, &scratch, &warm);
    let resources = warm["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 3);
    for r in resources {
        assert_eq!(r["kind"], "snapshot");
        assert_eq!(r["created"], true);
        assert!(r["deleted_at"].is_string(), "{r}");
    }
    for d in warm["disks"].as_array().unwrap() {
        assert!(d["exported_from"].as_str().unwrap().contains("/snapshots/"));
        assert!(["os", "data"].contains(&d["role"].as_str().unwrap()));
    }
    // The domain: the source's hardware and where the VM came from.
    let xml = std::fs::read_to_string(out.join("warm/warm.xml")).unwrap();
    assert!(xml.contains("Migrated from FakeCloud by hyper2kvm (run h2k-test): /fake/rg/vms/warm (fake.small, lab)"), "{xml}");
    assert!(xml.contains("<vcpu placement='static'>3</vcpu>"), "{xml}");
    assert_eq!(
        (warm["vcpus"].as_u64(), warm["memory_mib"].as_u64()),
        (Some(3), Some(3072))
    );
    // Nothing left in the cloud, and the VM was not touched.
    assert!(cleanups.wait_all().await.is_empty());
    assert_eq!((cloud.open_grants(), cloud.snapshots_alive()), (0, 0));
    assert!(cloud.state.lock().unwrap().power_log.is_empty());
    assert_eq!(cloud.power_state("warm"), PowerState::Running);
    let events = events.lock().unwrap();
    assert!(matches!(
        events.first(),
        Some(RunEvent::RunStarted { vms: 2, .. })
    ));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(
                e,
                RunEvent::VmFinished {
                    status: VmStatus::Completed,
                    ..
                }
            ))
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_vms_get_a_report_and_are_left_alone() {
    let scratch = Scratch::new("engine-refuse");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("busy", PowerState::Running, 0);
    cloud.add_vm("idle", PowerState::Stopped, 1);
    let summary = run(&cloud, &cleanups, options(&out, RunningVmPolicy::Refuse)).await;
    assert_eq!(summary.exit_code, 1, "nothing completed: {summary:?}");
    for vm in ["busy", "idle"] {
        let rep = report(&out, vm);
        assert_eq!(rep["status"], "refused");
        assert!(
            rep["warnings"][0].as_str().unwrap().contains("refuse"),
            "{rep}"
        );
        assert!(rep["disks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "pending"));
    }
    let st = cloud.state.lock().unwrap();
    assert!(st.power_log.is_empty());
    assert_eq!((st.snapshots_created, st.grants.len()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_still_deletes_snapshots_and_revokes_grants() {
    let scratch = Scratch::new("engine-fail");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("app", PowerState::Running, 1);
    cloud
        .state
        .lock()
        .unwrap()
        .failing_reads
        .insert("app_data0".into());
    let summary = run(&cloud, &cleanups, options(&out, RunningVmPolicy::Snapshot)).await;
    assert_eq!(summary.exit_code, 3, "{summary:?}");
    let rep = report(&out, "app");
    assert_eq!(rep["status"], "partial");
    let disks = rep["disks"].as_array().unwrap();
    assert_eq!(disks[0]["status"], "completed");
    assert_eq!(disks[1]["status"], "failed");
    assert_eq!(disks[1]["error"]["kind"], "integrity", "{rep}");
    assert!(disks[1]["error"]["detail"]
        .as_str()
        .unwrap()
        .contains("checksum mismatch"));
    assert!(rep["domain_xml"].is_null(), "no domain for a partial VM");
    assert!(rep["resources"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["deleted_at"].is_string()));
    assert!(cleanups.wait_all().await.is_empty());
    assert_eq!((cloud.open_grants(), cloud.snapshots_alive()), (0, 0));
    // No partial image under a final name.
    assert!(!Path::new(disks[1]["output"].as_str().unwrap()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_run_resumes_and_downloads_only_what_is_missing() {
    let scratch = Scratch::new("engine-resume");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("db", PowerState::Deallocated, 2);
    cloud
        .state
        .lock()
        .unwrap()
        .failing_reads
        .insert("db_data1".into());
    let first = run(&cloud, &cleanups, options(&out, RunningVmPolicy::Snapshot)).await;
    assert_eq!(first.exit_code, 3);
    cloud.state.lock().unwrap().failing_reads.clear();
    let second = run(&cloud, &cleanups, options(&out, RunningVmPolicy::Snapshot)).await;
    assert_eq!(second.exit_code, 0, "{second:?}");
    let rep = report(&out, "db");
    let status: Vec<&str> = rep["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["already_done", "already_done", "completed"]);
    let downloaded: Vec<u64> = rep["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bytes_downloaded"].as_u64().unwrap())
        .collect();
    assert_eq!(downloaded[..2], [0, 0]);
    assert!(downloaded[2] > 0);
    assert_images(&cloud, &scratch, &rep);
    assert_eq!(cloud.open_grants(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_with_restart_starts_the_vm_again_and_a_missed_start_is_owed() {
    let scratch = Scratch::new("engine-restart");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("web", PowerState::Running, 0);
    let mut opts = options(&out, RunningVmPolicy::Deallocate);
    opts.plan.restart = true;
    // The start fails: the VM stays deallocated, and the report says what is owed.
    cloud.state.lock().unwrap().failing_starts = true;
    let first = run(&cloud, &cleanups, opts.clone()).await;
    assert_eq!(first.exit_code, 3, "{first:?}");
    assert_eq!(cloud.power_state("web"), PowerState::Deallocated);
    let rep = report(&out, "web");
    let power: Vec<(String, bool)> = rep["power"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["action"].as_str().unwrap().to_string(),
                p["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        power,
        [
            ("deallocate".to_string(), true),
            ("start".to_string(), false)
        ]
    );
    // The next run finds it deallocated with its image done, and starts it.
    cloud.state.lock().unwrap().failing_starts = false;
    let second = run(&cloud, &cleanups, opts).await;
    assert_eq!(second.exit_code, 0, "{second:?}");
    assert_eq!(cloud.power_state("web"), PowerState::Running);
    let rep = report(&out, "web");
    assert_eq!(rep["power_state_before"], "running");
    assert!(rep["warnings"].to_string().contains("interrupted"), "{rep}");
    let log = cloud.state.lock().unwrap().power_log.clone();
    assert_eq!(
        log.iter().map(|(_, op)| *op).collect::<Vec<_>>(),
        ["deallocate", "start"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_deletes_snapshots_revokes_grants_and_restarts_the_vm() {
    let scratch = Scratch::new("engine-cancel");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("api", PowerState::Running, 1);
    cloud.state.lock().unwrap().hang_reads = true;
    let mut opts = options(&out, RunningVmPolicy::Stop);
    opts.plan.restart = true;
    let task = {
        let (cloud, cleanups) = (cloud.clone(), cleanups.clone());
        tokio::spawn(async move { run(&cloud, &cleanups, opts).await })
    };
    // Wait until both disks are being read from their snapshots, then cancel (Ctrl-C).
    until_grants(&cloud, 2, "no export started").await;
    assert_eq!(cloud.snapshots_alive(), 2);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let errors = cleanups.wait_all().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((cloud.open_grants(), cloud.snapshots_alive()), (0, 0));
    // Stopped for the snapshots, started again once they were taken.
    assert_eq!(cloud.power_state("api"), PowerState::Running);
    // The report written before the snapshots were created records them.
    let rep = report(&out, "api");
    assert_eq!(rep["status"], "running", "a killed run's report");
    assert_eq!(rep["resources"].as_array().unwrap().len(), 2);
    // No partial image under a final name; the next run continues.
    assert!(!out.join("api/api-os.qcow2").exists());
    cloud.state.lock().unwrap().hang_reads = false;
    let again = run(&cloud, &cleanups, options(&out, RunningVmPolicy::Snapshot)).await;
    assert_eq!(again.exit_code, 0, "{again:?}");
    assert_images(&cloud, &scratch, &report(&out, "api"));
    assert_eq!((cloud.open_grants(), cloud.snapshots_alive()), (0, 0));
}

/// An interrupted run (SIGTERM in the CLI) still undoes what it started and says so: the
/// snapshots carry `deleted_at`, the start it owed is recorded, the VM is `interrupted`,
/// and `run-<id>.json` exists with exit code 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_records_what_it_undid() {
    let scratch = Scratch::new("engine-interrupt");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("api", PowerState::Running, 1);
    cloud.state.lock().unwrap().hang_reads = true;
    let mut opts = options(&out, RunningVmPolicy::Stop);
    opts.plan.restart = true;
    let interrupt = Interrupt::new();
    let task = {
        let (cloud, cleanups, interrupt) = (cloud.clone(), cleanups.clone(), interrupt.clone());
        tokio::spawn(async move {
            let source = Source::full(Arc::new(cloud.clone()));
            Migration::new(source, cleanups, opts)
                .with_interrupt(interrupt)
                .discover_and_run()
                .await
        })
    };
    until_grants(&cloud, 2, "no export started").await;
    interrupt.interrupt("SIGTERM");
    let summary = task
        .await
        .unwrap()
        .expect("an interrupted run still sums up");
    assert_eq!(summary.exit_code, 130, "{summary:?}");
    assert_eq!(summary.status, RunStatus::Interrupted);
    assert_eq!(summary.interrupted_by.as_deref(), Some("SIGTERM"));
    assert!(summary.cleanup_errors.is_empty(), "{summary:?}");
    assert_eq!(summary.vms[0].status, VmStatus::Interrupted);
    assert!(summary.vms[0].report.is_absolute());
    // Everything was undone before the run returned.
    assert_eq!((cloud.open_grants(), cloud.snapshots_alive()), (0, 0));
    let run_file: Value = serde_json::from_slice(
        &std::fs::read(out.join("run-h2k-test.json")).expect("run-<id>.json is written"),
    )
    .unwrap();
    assert_eq!(run_file["status"], "interrupted");
    assert_eq!(run_file["exit_code"], 130);
    assert_eq!(run_file["schema_version"], 2);
    assert!(run_file["tool_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let rep = report(&out, "api");
    assert_eq!(rep["status"], "interrupted", "{rep}");
    assert_eq!(rep["errors"][0]["kind"], "cancelled", "{rep}");
    let resources = rep["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 2);
    assert!(
        resources.iter().all(|r| r["deleted_at"].is_string()),
        "snapshots deleted in the background are recorded as deleted: {rep}"
    );
    let actions: Vec<&str> = rep["power"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["power_off", "start"], "{rep}");
    let tmp = std::fs::read_dir(out.join("api"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(tmp, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_snapshots_fails_running_vms_with_a_reason() {
    let scratch = Scratch::new("engine-caps");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("live", PowerState::Running, 0);
    cloud.add_vm("off", PowerState::Deallocated, 0);
    // VMs and disks only: no power control, no snapshots, no hardware catalog.
    let source = Source::new(Arc::new(cloud.clone()));
    let summary = Migration::new(
        source,
        cleanups.clone(),
        options(&out, RunningVmPolicy::Snapshot),
    )
    .discover_and_run()
    .await
    .unwrap();
    assert_eq!(summary.exit_code, 3);
    let live = report(&out, "live");
    assert_eq!(live["status"], "failed");
    assert!(
        live["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot take snapshots")
            && live["errors"][0]["kind"] == "unsupported",
        "{live}"
    );
    let off = report(&out, "off");
    assert_eq!(off["status"], "completed");
    // Without a hardware catalog the domain gets a default size, and the report says so.
    assert_eq!(
        (off["vcpus"].as_u64(), off["memory_mib"].as_u64()),
        (Some(2), Some(4096))
    );
    assert!(off["warnings"].to_string().contains("adjust it"), "{off}");
    let _ = DiskStatus::Completed;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_error_keeps_its_kind_and_cause() {
    let scratch = Scratch::new("engine-discovery");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.state.lock().unwrap().failing_list = Some(ErrorKind::Throttled);
    let source = Source::full(Arc::new(cloud));
    let err = Migration::new(
        source,
        cleanups,
        options(&scratch.path("out"), RunningVmPolicy::Snapshot),
    )
    .discover_and_run()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled);
    assert!(err.kind().is_transient());
    let cause = std::error::Error::source(&err).expect("the source's error");
    assert_eq!(cause.to_string(), "the fake cloud says no");
    assert!(!scratch.path("out").join("run-h2k-test.json").exists());
}

/// A disk holds its reading slot only while its data flows: with one slot, the second disk of
/// a VM is exported (its grant open, its ranges read) while the first is being read, instead
/// of waiting for the slot before its export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_are_exported_while_another_holds_the_only_reading_slot() {
    let scratch = Scratch::new("engine-slot");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("db", PowerState::Deallocated, 1);
    cloud.state.lock().unwrap().hang_reads = true;
    let mut opts = options(&out, RunningVmPolicy::Refuse);
    opts.parallel_disks = 1;
    let (events, record) = recorder();
    let task = {
        let (cloud, cleanups) = (cloud.clone(), cleanups.clone());
        tokio::spawn(async move {
            Migration::new(Source::full(Arc::new(cloud)), cleanups, opts)
                .with_events(record)
                .discover_and_run()
                .await
        })
    };
    until_grants(
        &cloud,
        2,
        "the second disk was not exported while the first held the only slot",
    )
    .await;
    let started = Instant::now();
    // One disk reads; the other, exported, waits for the slot, as the run's progress says.
    let waiting = loop {
        let fleet = events.lock().unwrap().iter().rev().find_map(|e| match e {
            RunEvent::Fleet(f) if !f.in_flight.is_empty() => Some(f.clone()),
            _ => None,
        });
        if let Some(f) = fleet.filter(|f| f.in_flight[0].disks_waiting == 1) {
            break f;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(waiting.in_flight[0].disks_reading, 1);
    assert_eq!((waiting.disks, waiting.disks_known), (2, 2));
    // The fake says every byte may hold data: 2 × 4 MiB.
    assert_eq!(waiting.bytes_known, 8 * MIB, "{waiting:?}");
    let disk_started = |e: &RunEvent| matches!(e, RunEvent::DiskStarted { .. });
    assert_eq!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| disk_started(e))
            .count(),
        1
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(cleanups.wait_all().await.is_empty());
    assert_eq!(cloud.open_grants(), 0);
}

/// VMs start largest first (their disks' sizes summed), whatever the plan's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_vms_start_first() {
    let scratch = Scratch::new("engine-order");
    let out = scratch.path("out");
    let cleanups = Cleanups::new();
    let cloud = FakeCloud::new(&cleanups);
    cloud.add_vm("a-small", PowerState::Deallocated, 0);
    cloud.add_vm("b-large", PowerState::Deallocated, 3);
    cloud.add_vm("c-medium", PowerState::Deallocated, 1);
    let (events, record) = recorder();
    let mut opts = options(&out, RunningVmPolicy::Refuse);
    // One at a time, so that the order of their starts is the order they were let in.
    opts.parallel_vms = 1;
    let summary = Migration::new(Source::full(Arc::new(cloud.clone())), cleanups, opts)
        .with_events(record)
        .discover_and_run()
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0, "{summary:?}");
    let started: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RunEvent::VmStarted { vm, .. } => Some(vm.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["b-large", "c-medium", "a-small"]);
    // The summary keeps the plan's order.
    let names: Vec<&str> = summary.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a-small", "b-large", "c-medium"]);
}
