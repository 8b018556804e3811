//! The library as an embedding user sees it: `hyper2kvm::core` with a reader of their own.

mod support;

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper2kvm::core::ranges::{align_and_merge, total_len};
use hyper2kvm::core::{
    convert, open_disk, AlignedBuf, BoxFuture, Compression, ConvertOptions, DiskReader,
    InputFormat, Progress, RawFileReader, Result,
};
use support::{assert_image_matches, make_raw, Fill, Scratch};

const MIB: u64 = 1 << 20;

/// Wraps a reader and delays each read by a pseudo-random few milliseconds, so chunks finish
/// in a shuffled order, as they do over a network.
struct Shuffled {
    inner: RawFileReader,
    calls: AtomicU64,
}

impl DiskReader for Shuffled {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn describe(&self) -> String {
        format!("shuffled {}", self.inner.describe())
    }
    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        self.inner.allocated_ranges()
    }
    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let delay = Duration::from_millis((n * 7919 + offset / 4096) % 13);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            self.inner.read_at(offset, buf).await
        })
    }
}

fn scattered_disk(dir: &Scratch) -> std::path::PathBuf {
    let raw = dir.path("disk.raw");
    let extents: Vec<(u64, u64, Fill)> = (0..40)
        .map(|i| {
            let fill = if i % 3 == 0 {
                Fill::Noise(i)
            } else {
                Fill::Text
            };
            (i * 3 * MIB / 2 + i * 4096, 700 * 1024, fill)
        })
        .collect();
    make_raw(&raw, 64 * MIB, &extents);
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_chunks_make_a_valid_image() -> Result<()> {
    let dir = Scratch::new("shuffled");
    let raw = scattered_disk(&dir);
    for (cluster_size, compression) in [(4096, None), (4096, Some(Compression::Zstd)), (512, None)]
    {
        let reader = Arc::new(Shuffled {
            inner: RawFileReader::open(&raw)?,
            calls: AtomicU64::new(0),
        });
        let out = dir.path("out.qcow2");
        let opts = ConvertOptions {
            cluster_size,
            compression,
            chunk_size: 256 << 10,
            concurrency: 16,
            ..ConvertOptions::default()
        };
        let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
        let log = seen.clone();
        let stats = convert(
            reader,
            &out,
            &opts,
            Some(Arc::new(move |p| log.lock().unwrap().push(p))),
        )
        .await?;
        assert_image_matches(&out, "qcow2", &raw);
        let seen = seen.lock().unwrap();
        let last = seen.last().unwrap();
        assert_eq!(
            (last.done, last.total),
            (stats.bytes_read, stats.bytes_read)
        );
        assert!(
            seen.windows(2).all(|w| w[0].done <= w[1].done),
            "progress went backwards"
        );
        std::fs::remove_file(&out).unwrap();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_conversion_removes_the_part_file() -> Result<()> {
    let dir = Scratch::new("dropped");
    let raw = dir.path("disk.raw");
    make_raw(&raw, 256 * MIB, &[(0, 256 * MIB, Fill::Text)]);
    let out = dir.path("out.qcow2");
    let disk = open_disk(&raw, InputFormat::Auto)?;
    let opts = ConvertOptions {
        cluster_size: 512,
        compression: Some(Compression::Deflate),
        ..ConvertOptions::default()
    };
    let work = convert(disk, &out, &opts, None);
    let timed_out = tokio::time::timeout(Duration::from_millis(200), work).await;
    assert!(
        timed_out.is_err(),
        "the conversion was expected to take longer than 200 ms"
    );
    assert!(!dir.path("out.qcow2.part").exists());
    assert!(!out.exists());
    Ok(())
}

#[tokio::test]
async fn stats_count_zeros_and_unallocated_space() -> Result<()> {
    let dir = Scratch::new("stats");
    let raw = dir.path("disk.raw");
    make_raw(
        &raw,
        32 * MIB,
        &[(0, MIB, Fill::Text), (4 * MIB, MIB, Fill::Zeros)],
    );
    let out = dir.path("out.qcow2");
    let disk = open_disk(Path::new(&raw), InputFormat::Raw)?;
    let stats = convert(disk, &out, &ConvertOptions::default(), None).await?;
    assert_eq!(stats.virtual_size, 32 * MIB);
    // The file system may report a little more than we wrote as data; never less.
    assert!(
        stats.bytes_read >= 2 * MIB && stats.bytes_read < 4 * MIB,
        "{stats:?}"
    );
    assert!(stats.zero_bytes >= MIB, "{stats:?}");
    assert_eq!(
        stats.bytes_written,
        std::fs::metadata(&out).unwrap().len() - 65536 + 120
    );
    assert_image_matches(&out, "qcow2", &raw);
    Ok(())
}

/// A reader that fails every read after the first `ok_reads`, like a network that drops.
struct Failing {
    inner: RawFileReader,
    ok_reads: u64,
    calls: AtomicU64,
}

impl DiskReader for Failing {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        self.inner.allocated_ranges()
    }
    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n >= self.ok_reads {
                return Err(hyper2kvm::core::Error::new(
                    hyper2kvm::core::ErrorKind::Io,
                    "connection reset (injected)",
                ));
            }
            self.inner.read_at(offset, buf).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_resumes_where_it_stopped() -> Result<()> {
    use hyper2kvm::core::OutputFormat;
    let dir = Scratch::new("resume");
    let raw = scattered_disk(&dir);
    let variants = [
        (OutputFormat::Qcow2, None, 65536),
        (OutputFormat::Qcow2, Some(Compression::Zstd), 4096),
        (OutputFormat::Raw, None, 65536),
    ];
    for (format, compression, cluster_size) in variants {
        let out = dir.path("out.img");
        let part = dir.path("out.img.part");
        let journal = dir.path("out.img.part.journal");
        let opts = ConvertOptions {
            format,
            compression,
            cluster_size,
            chunk_size: 256 << 10,
            concurrency: 4,
            resume: true,
            checkpoint_bytes: 1 << 20,
            ..ConvertOptions::default()
        };
        let failing = Arc::new(Failing {
            inner: RawFileReader::open(&raw)?,
            ok_reads: 60,
            calls: AtomicU64::new(0),
        });
        let err = convert(failing, &out, &opts, None).await.unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(
            part.exists() && journal.exists() && !out.exists(),
            "{:?}",
            dir.files()
        );

        let full = open_disk(&raw, InputFormat::Raw)?;
        let granularity = if format == OutputFormat::Raw {
            4096
        } else {
            cluster_size as u64
        };
        let allocated = full.allocated_ranges().await?;
        let total = total_len(&align_and_merge(&allocated, granularity, full.size(), 0));
        let stats = convert(full, &out, &opts, None).await?;
        assert!(stats.resumed_bytes > 0, "{format:?}: nothing resumed");
        // Exactly what the first run had not made durable is read again.
        assert_eq!(stats.bytes_read + stats.resumed_bytes, total, "{stats:?}");
        let fmt = if format == OutputFormat::Raw {
            "raw"
        } else {
            "qcow2"
        };
        assert_image_matches(&out, fmt, &raw);
        assert!(!part.exists() && !journal.exists(), "{:?}", dir.files());
        std::fs::remove_file(&out).unwrap();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_source_is_not_resumed() -> Result<()> {
    let dir = Scratch::new("changed");
    let raw = scattered_disk(&dir);
    let out = dir.path("out.qcow2");
    let opts = ConvertOptions {
        chunk_size: 256 << 10,
        resume: true,
        checkpoint_bytes: 1 << 20,
        ..ConvertOptions::default()
    };
    let failing = Arc::new(Failing {
        inner: RawFileReader::open(&raw)?,
        ok_reads: 40,
        calls: AtomicU64::new(0),
    });
    convert(failing, &out, &opts, None).await.unwrap_err();
    assert!(dir.path("out.qcow2.part.journal").exists());
    // Rewrite part of the source: its modification time changes, so the journal no longer
    // vouches for the partial image.
    std::thread::sleep(Duration::from_millis(20));
    make_raw(&raw, 64 * MIB, &[(0, 8 * MIB, Fill::Noise(99))]);
    let stats = convert(open_disk(&raw, InputFormat::Raw)?, &out, &opts, None).await?;
    assert_eq!(stats.resumed_bytes, 0);
    assert_image_matches(&out, "qcow2", &raw);
    Ok(())
}

/// The whole run as a library call: one running VM of the simulator migrated through
/// snapshots, with progress reported to a callback, images identical to the disks, and
/// nothing left behind in (simulated) Azure.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_is_one_library_call_with_progress() {
    use hyper2kvm::azure::{
        build_http_client, ArmClient, ArmCredential, AuthMethod, AzureSource, ExportOptions,
        HttpOptions, Selection,
    };
    use hyper2kvm::core::libvirt::NetworkAttachment;
    use hyper2kvm::core::{Cleanups, Limits};
    use hyper2kvm::migrate::{DiskStatus, RunEvent, RunOptions, Source, VmStatus};
    use hyper2kvm_sim::{Scenario, Simulator};

    const SUB: &str = "00000000-0000-0000-0000-000000000000";
    let scenario = Scenario::from_yaml(&format!(
        "subscriptions:\n  - id: {SUB}\n    resource_groups:\n      - name: rg\n        vms:\n          - name: app\n            power_state: running\n            disks:\n              - {{ size_gb: 4, content: {{ seed: 7, scatter: {{ written_bytes: 6291456 }} }} }}\n              - {{ size_gb: 8, lun: 3, content: {{ seed: 8, scatter: {{ written_bytes: 3145728 }} }} }}\n"
    ))
    .unwrap();
    let sim = Simulator::start(&scenario).await.unwrap();
    let dir = Scratch::new("facade-migrate");
    let http = build_http_client(&HttpOptions::default()).unwrap();
    let arm = ArmClient::builder(http.clone())
        .credential(ArmCredential::from_env(AuthMethod::None, &http).unwrap())
        .endpoint(sim.base_url())
        .build()
        .unwrap();
    let cleanups = Cleanups::new();
    let azure = AzureSource::new(
        arm,
        http,
        vec![SUB.into()],
        Selection {
            resource_groups: vec!["rg".into()],
            ..Selection::default()
        },
        ExportOptions::default(),
        cleanups.clone(),
    );
    let source = Source::full(Arc::new(azure));
    // The library's defaults (snapshot running VMs, all disks, qcow2, `<dir>/<vm>/`), and a
    // few settings of this test's own.
    let mut opts = RunOptions::default();
    opts.plan.run_id = "h2k-test-run".into();
    opts.plan.dir = dir.path("out");
    opts.parallel_vms = 2;
    opts.parallel_disks = 2;
    opts.limits = Limits::new(Some(3), None);
    opts.network = NetworkAttachment::Network("default".into());
    let events: Arc<Mutex<Vec<RunEvent>>> = Arc::default();
    let sink = events.clone();
    let callback = Arc::new(move |e: &RunEvent| sink.lock().unwrap().push(e.clone()));
    let summary = hyper2kvm::run::migrate(&source, cleanups, opts, Some(callback))
        .await
        .unwrap();
    assert_eq!(summary.exit_code, 0, "{summary:?}");
    assert_eq!(summary.vms[0].status, VmStatus::Completed);

    let events = std::mem::take(&mut *events.lock().unwrap());
    for disk in ["app_OsDisk_1", "app_DataDisk_3"] {
        let last = events
            .iter()
            .filter_map(|e| match e {
                RunEvent::DiskProgress {
                    disk: d,
                    done,
                    total,
                    ..
                } if d == disk => Some((*done, *total)),
                _ => None,
            })
            .next_back()
            .unwrap_or_else(|| panic!("no progress for {disk}"));
        assert!(last.1 > 0 && last.0 == last.1, "{disk}: {last:?}");
        assert!(events.iter().any(|e| matches!(e,
            RunEvent::DiskFinished { report, .. } if report.name == disk && report.status == DiskStatus::Completed)));
    }
    // The run's totals come last, after the VM's end.
    let Some(RunEvent::Fleet(fleet)) = events.last() else {
        panic!("the run ends with its totals: {:?}", events.last());
    };
    assert_eq!(
        (fleet.vms, fleet.vms_finished, fleet.vms_in_flight),
        (1, 1, 0)
    );
    assert_eq!((fleet.disks, fleet.disks_known), (2, 2));
    assert!(
        fleet.bytes_known > 0 && fleet.bytes_done == fleet.bytes_known,
        "{fleet:?}"
    );
    assert_eq!(fleet.bytes_expected, fleet.bytes_known);
    assert!(fleet.in_flight.is_empty());
    assert!(matches!(
        events
            .iter()
            .rev()
            .find(|e| !matches!(e, RunEvent::Fleet(_))),
        Some(RunEvent::VmFinished {
            status: VmStatus::Completed,
            ..
        })
    ));
    for (disk, file) in [
        ("app_OsDisk_1", "app-os.qcow2"),
        ("app_DataDisk_3", "app-data-lun3.qcow2"),
    ] {
        let reference = dir.path(&format!("{disk}.raw"));
        sim.disk(disk)
            .unwrap()
            .write_raw_reference(&reference)
            .unwrap();
        assert_image_matches(&dir.path("out/app").join(file), "qcow2", &reference);
    }
    assert_eq!(sim.counters().open_grants(), 0);
    assert_eq!(sim.counters().snapshots_alive(), 0);
    assert_eq!(sim.counters().snapshots_created(), 2);
    sim.shutdown().await;
}
