//! Disk export end to end against the in-process simulator: `AzureSource::export_disk`
//! (grant over ARM's long-running-operation protocol, page-blob reader) feeding
//! `hyper2kvm_core::convert`, checked with `qemu-img compare` against the simulator's own
//! reference of the disk, and with `qemu-img check`.
//!
//! Each injected fault (connection resets, truncated bodies, wrong MD5, 5xx, 429, SAS expiry)
//! must still give an identical image; an interrupted download resumes and fetches only what
//! is missing; grants are revoked after success, failure and cancellation; no SAS signature
//! shows in any error or `Debug` output.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use hyper2kvm_azure::{
    build_http_client, ArmClient, AzureSource, BackoffConfig, BlobOptions, ExportOptions,
    HttpOptions, RetryConfig, Selection, SplitMix64,
};
use hyper2kvm_core::{convert, Cleanups, ConvertOptions, ConvertStats, Disk, Vm, VmSource};
use hyper2kvm_sim::{BlobFaults, OperationSettings, Route, Scenario, SimHandle, Simulator};
use support::{assert_image_matches, Scratch};

const SUB: &str = "00000000-0000-0000-0000-00000000e4e4";

/// A deallocated VM whose 96 MiB OS disk has ~20 MiB scattered in 192 KiB extents plus a few
/// hand-placed ones (the first sectors, an unaligned one, the last sector), a running VM, and
/// a stopped (still allocated) one. Get Page Ranges pages hold 16 ranges, so the listing
/// takes several `NextMarker` pages.
fn scenario() -> Scenario {
    let yaml = format!(
        r#"
settings:
  page_list_size: 16
  operations: {{ polls: 2, retry_after_secs: 0 }}
subscriptions:
  - id: {SUB}
    resource_groups:
      - name: rg-export
        vms:
          - name: vm-off
            power_state: deallocated
            disks:
              - size_bytes: 100663296
                content:
                  seed: 7
                  scatter: {{ written_bytes: 20971520, extent_size: 196608 }}
                  extents:
                    - {{ offset: 0, length: 4096 }}
                    - {{ offset: 5243392, length: 70144 }}
                    - {{ offset: 100662784, length: 512 }}
          - name: vm-on
            power_state: running
            disks: [{{ size_bytes: 8388608, content: {{ extents: [{{ offset: 0, length: 4096 }}] }} }}]
          - name: vm-stopped
            power_state: stopped
            disks: [{{ size_bytes: 8388608 }}]
"#
    );
    Scenario::from_yaml(&yaml).unwrap()
}

fn fast_retry(max_retries: u32) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
            base: 2.0,
        },
        max_retries,
        retry_timeout: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(2),
    }
}

struct Setup {
    sim: SimHandle,
    source: AzureSource,
    cleanups: Cleanups,
    vms: Vec<Vm>,
}

impl Setup {
    async fn new(faults: BlobFaults) -> Setup {
        Setup::with(scenario(), faults, 10).await
    }

    async fn with(mut scenario: Scenario, faults: BlobFaults, retries: u32) -> Setup {
        scenario.settings.blob_faults = faults;
        let sim = Simulator::start(&scenario).await.unwrap();
        let http = build_http_client(&HttpOptions::default()).unwrap();
        let arm = ArmClient::builder(http.clone())
            .endpoint(sim.base_url())
            // One retry configuration: blob reads use the ARM client's.
            .retry(fast_retry(retries))
            .jitter(Arc::new(SplitMix64::new(1)))
            .build()
            .unwrap();
        let cleanups = Cleanups::new();
        let mut export = ExportOptions::default();
        export.blob = BlobOptions {
            body_retries: retries,
            jitter: Some(Arc::new(SplitMix64::new(2))),
            ..BlobOptions::default()
        };
        let source = AzureSource::new(
            arm,
            http,
            vec![SUB.to_string()],
            Selection::default(),
            export,
            cleanups.clone(),
        );
        let vms = source.list_vms().await.unwrap();
        Setup {
            sim,
            source,
            cleanups,
            vms,
        }
    }

    fn vm(&self, name: &str) -> (&Vm, &Disk) {
        let vm = self.vms.iter().find(|v| v.name == name).unwrap();
        (vm, &vm.disks[0])
    }

    /// Exports `vm`'s OS disk into `dst` and closes the export (revokes).
    async fn export(
        &self,
        name: &str,
        dst: &std::path::Path,
        opts: &ConvertOptions,
    ) -> hyper2kvm_core::Result<ConvertStats> {
        let (vm, disk) = self.vm(name);
        let exported = self.source.export_disk(vm, disk).await?;
        let stats = convert(exported.reader().clone(), dst, opts, None).await;
        exported.close().await?;
        stats
    }

    /// The reference raw file of `vm`'s OS disk.
    fn reference(&self, name: &str, dir: &Scratch) -> std::path::PathBuf {
        let path = dir.path(&format!("{name}.raw"));
        let (_, disk) = self.vm(name);
        self.sim
            .disk(&disk.name)
            .unwrap()
            .write_raw_reference(&path)
            .unwrap();
        path
    }

    /// Panics if any signature the simulator handed out appears in `text`.
    fn assert_no_sas(&self, text: &str) {
        let sigs = self.sim.signatures();
        assert!(!sigs.is_empty());
        for sig in sigs {
            let encoded = sig
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            assert!(
                !text.contains(&sig) && !text.contains(&encoded) && !text.contains("sig="),
                "SAS leaked: {text}"
            );
        }
    }
}

fn opts() -> ConvertOptions {
    ConvertOptions {
        concurrency: 8,
        ..ConvertOptions::default()
    }
}

/// Exports vm-off under `faults` and checks the image; returns the setup for more checks.
async fn identical_under(faults: BlobFaults) -> Setup {
    let setup = Setup::new(faults).await;
    let dir = Scratch::new("export-fault");
    let out = dir.path("out.qcow2");
    let stats = setup.export("vm-off", &out, &opts()).await.unwrap();
    assert_image_matches(&out, "qcow2", &setup.reference("vm-off", &dir));
    assert!(stats.bytes_read < 96 << 20, "only written ranges are read");
    assert!(setup.cleanups.wait_all().await.is_empty());
    let c = setup.sim.counters();
    assert_eq!(c.open_grants(), 0);
    assert!(c.revokes() >= 1);
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_disk_exports_identically_reading_only_written_ranges() {
    let setup = identical_under(BlobFaults::default()).await;
    let c = setup.sim.counters();
    assert_eq!((c.grants(), c.revokes()), (1, 1));
    assert!(c.received(Route::BlobPageList) > 3, "paged by NextMarker");
    assert!(
        c.received(Route::PollOperation) >= 2,
        "the grant was polled"
    );
    assert_eq!(c.sas_refused(), 0);
    // Without faults, every byte served was needed exactly once: the footer (512) and the
    // cluster-aligned written ranges, far less than the 96 MiB disk.
    let disk = setup.sim.disk("vm-off_OsDisk_1").unwrap();
    assert!(c.bytes_served() >= disk.content.written_bytes());
    assert!(c.bytes_served() < 40 << 20, "{}", c.bytes_served());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_grants_and_raw_output_work_too() {
    let mut scenario = scenario();
    scenario.settings.operations = OperationSettings {
        polls: 0,
        immediate: true,
        retry_after_secs: 0,
        ..Default::default()
    };
    let setup = Setup::with(scenario, BlobFaults::default(), 10).await;
    let dir = Scratch::new("export-raw");
    let out = dir.path("out.raw");
    let opts = ConvertOptions {
        format: hyper2kvm_core::OutputFormat::Raw,
        ..opts()
    };
    setup.export("vm-off", &out, &opts).await.unwrap();
    assert_image_matches(&out, "raw", &setup.reference("vm-off", &dir));
    let c = setup.sim.counters();
    assert_eq!(c.received(Route::PollOperation), 0);
    assert_eq!(c.open_grants(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_mid_body_are_retried() {
    let setup = identical_under(BlobFaults {
        reset_every: 3,
        ..Default::default()
    })
    .await;
    assert!(setup.sim.counters().resets() > 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_are_retried() {
    let setup = identical_under(BlobFaults {
        truncate_every: 3,
        ..Default::default()
    })
    .await;
    assert!(setup.sim.counters().truncations() > 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_md5_is_retried() {
    let setup = identical_under(BlobFaults {
        bad_md5_every: 3,
        ..Default::default()
    })
    .await;
    assert!(setup.sim.counters().bad_md5() > 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let setup = identical_under(BlobFaults {
        error_every: 3,
        ..Default::default()
    })
    .await;
    // HEAD, page lists and ranged GETs all went through the failing numbering.
    let c = setup.sim.counters();
    let blob =
        c.received(Route::BlobGet) + c.received(Route::BlobHead) + c.received(Route::BlobPageList);
    assert!(blob > 30, "{blob}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out() {
    let setup = identical_under(BlobFaults {
        throttle_every: 7,
        retry_after_secs: 1,
        ..Default::default()
    })
    .await;
    assert!(setup.sim.counters().received(Route::BlobGet) > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_sas_is_granted_again() {
    let setup = identical_under(BlobFaults {
        sas_expire_after_requests: 15,
        ..Default::default()
    })
    .await;
    let c = setup.sim.counters();
    assert!(c.sas_refused() > 0);
    assert!(c.grants() > 2, "re-granted {} times", c.grants() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_and_fetches_only_what_is_missing() {
    let setup = Setup::new(BlobFaults {
        latency_ms: 15,
        ..Default::default()
    })
    .await;
    let dir = Scratch::new("export-resume");
    let out = dir.path("out.qcow2");
    let opts = ConvertOptions {
        resume: true,
        concurrency: 2,
        chunk_size: 256 << 10,
        checkpoint_bytes: 1 << 20,
        ..ConvertOptions::default()
    };
    let (vm, disk) = setup.vm("vm-off");

    // First run: dropped once half of the bytes are through.
    let half = Arc::new(tokio::sync::Notify::new());
    let progress: hyper2kvm_core::ProgressFn = {
        let half = half.clone();
        Arc::new(move |p| {
            if p.total > 0 && p.done * 2 >= p.total {
                half.notify_one();
            }
        })
    };
    {
        let exported = setup.source.export_disk(vm, disk).await.unwrap();
        tokio::select! {
            r = convert(exported.reader().clone(), &out, &opts, Some(progress)) => {
                panic!("the conversion should have been interrupted: {r:?}")
            }
            _ = half.notified() => {}
        }
        // Dropping the export (and the conversion) is a cancellation: revoke in background.
    }
    assert!(setup.cleanups.wait_all().await.is_empty());
    let c = setup.sim.counters();
    assert_eq!(c.open_grants(), 0, "revoked after cancellation");
    assert!(!out.exists());
    let first_served = c.bytes_served();
    assert!(first_served > 0);

    // Second run: resumes from the journal.
    c.reset();
    setup.sim.set_blob_faults(BlobFaults::default());
    let stats = setup.export("vm-off", &out, &opts).await.unwrap();
    assert_image_matches(&out, "qcow2", &setup.reference("vm-off", &dir));
    assert!(stats.resumed_bytes > 0, "{stats:?}");
    // Exactly what was missing was fetched, plus the footer read when the blob is opened.
    assert_eq!(c.bytes_served(), stats.bytes_read + 512, "{stats:?}");
    assert_eq!(c.open_grants(), 0);
    assert!(
        !dir.files().iter().any(|f| f.contains(".part")),
        "{:?}",
        dir.files()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_revokes_and_never_shows_the_sas() {
    let setup = Setup::with(scenario(), BlobFaults::default(), 2).await;
    let dir = Scratch::new("export-fail");
    let out = dir.path("out.qcow2");
    let (vm, disk) = setup.vm("vm-off");
    let exported = setup.source.export_disk(vm, disk).await.unwrap();
    assert_eq!(setup.sim.counters().open_grants(), 1);
    // Every blob request fails from now on: the retries run out.
    setup.sim.set_blob_faults(BlobFaults {
        error_every: 1,
        ..Default::default()
    });
    let err = convert(exported.reader().clone(), &out, &opts(), None)
        .await
        .unwrap_err();
    setup.assert_no_sas(&format!("{err} {err:?}"));
    setup.assert_no_sas(&format!("{:?}", exported.reader().describe()));
    drop(exported);
    assert!(setup.cleanups.wait_all().await.is_empty());
    assert_eq!(setup.sim.counters().open_grants(), 0);
    assert!(dir.files().is_empty(), "{:?}", dir.files());

    // Failing while opening the blob (HEAD) revokes through the export's guard.
    let err = match setup.source.export_disk(vm, disk).await {
        Ok(_) => panic!("opening should fail"),
        Err(e) => e,
    };
    setup.assert_no_sas(&format!("{err} {err:?}"));
    assert!(setup.cleanups.wait_all().await.is_empty());
    assert_eq!(setup.sim.counters().open_grants(), 0);
    assert_eq!(setup.sim.counters().grants(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_refused_for_allocated_vms_and_injected_conflicts() {
    let setup = Setup::new(BlobFaults::default()).await;
    for name in ["vm-on", "vm-stopped"] {
        let (vm, disk) = setup.vm(name);
        let err = match setup.source.export_disk(vm, disk).await {
            Ok(_) => panic!("{name}: a grant on an allocated VM's disk must fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("409"), "{err}");
    }
    setup.sim.set_blob_faults(BlobFaults {
        grant_conflicts: 1,
        ..Default::default()
    });
    let (vm, disk) = setup.vm("vm-off");
    assert!(setup.source.export_disk(vm, disk).await.is_err());
    assert!(setup.cleanups.wait_all().await.is_empty());
    let c = setup.sim.counters();
    assert_eq!(
        (c.grants(), c.open_grants(), c.grant_conflicts()),
        (0, 0, 3)
    );
    // The conflict was used up: the next export works.
    let exported = setup.source.export_disk(vm, disk).await.unwrap();
    exported.close().await.unwrap();
    assert_eq!((c.grants(), c.open_grants()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_backed_by_a_local_fixed_vhd_exports_identically() {
    use support::{assert_image_matches_as, make_raw, make_vhd, Fill};
    let dir = Scratch::new("export-vhd");
    let raw = dir.path("src.raw");
    make_raw(
        &raw,
        48 << 20,
        &[
            (0, 1 << 20, Fill::Text),
            (7 << 20, 3 << 20, Fill::Noise(11)),
            (20 << 20, 1 << 20, Fill::Zeros),
            ((48 << 20) - 4096, 4096, Fill::Noise(12)),
        ],
    );
    let vhd = dir.path("src.vhd");
    make_vhd(&raw, &vhd, "fixed");
    let yaml = format!(
        "subscriptions:\n  - id: {SUB}\n    resource_groups:\n      - name: rg-export\n        vms:\n          - name: vm-file\n            power_state: deallocated\n            disks: [{{ content: {{ file: {} }} }}]\n",
        vhd.display()
    );
    let setup = Setup::with(
        Scenario::from_yaml(&yaml).unwrap(),
        BlobFaults::default(),
        10,
    )
    .await;
    let out = dir.path("out.qcow2");
    let stats = setup.export("vm-file", &out, &opts()).await.unwrap();
    assert_image_matches_as(&out, "qcow2", &vhd, "vpc");
    // The file's holes are not written ranges: far less than 48 MiB is read.
    assert!(stats.bytes_read < 16 << 20, "{stats:?}");
    assert_eq!(setup.sim.counters().open_grants(), 0);
}
