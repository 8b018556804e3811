//! Warm migration's Azure calls against the in-process simulator, through core's
//! `IncrementalCopies`: incremental snapshots (what they are of), the delta between two of
//! them (written and cleared ranges, over several `NextMarker` pages, with the base's grant
//! closed before the call returns), and the cases that force a full copy (base deleted,
//! disk recreated); Azure's limit on incremental snapshots per disk is waited out.

#![allow(clippy::single_range_in_vec_init)] // a list of one range is what is meant

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper2kvm_azure::{
    build_http_client, ArmClient, AzureSource, BackoffConfig, ExportOptions, HttpOptions,
    RetryConfig, Selection, SplitMix64,
};
use hyper2kvm_core::{
    apply_delta, convert, AlignedBuf, ChangedRanges, Cleanups, ConvertOptions, Delta,
    IncrementalCopies, PointInTimeCopies, Vm, VmSource,
};
use hyper2kvm_sim::{IncrementalLimits, Route, Scenario, SimHandle, Simulator};
use support::{assert_image_matches, Scratch};

const SUB: &str = "00000000-0000-0000-0000-0000000000aa";
const MIB: u64 = 1 << 20;

fn scenario() -> Scenario {
    let yaml = format!(
        r#"
settings:
  page_list_size: 2
  operations: {{ polls: 1, retry_after_secs: 0 }}
subscriptions:
  - id: {SUB}
    resource_groups:
      - name: rg
        vms:
          - name: web
            power_state: running
            disks:
              - size_bytes: 16777216
                content: {{ seed: 5, extents: [{{ offset: 0, length: 4194304 }}, {{ offset: 8388608, length: 2097152 }}] }}
"#
    );
    Scenario::from_yaml(&yaml).unwrap()
}

async fn setup() -> (SimHandle, AzureSource, Cleanups, Vm) {
    let sim = Simulator::start(&scenario()).await.unwrap();
    let http = build_http_client(&HttpOptions::default()).unwrap();
    let arm = ArmClient::builder(http.clone())
        .endpoint(sim.base_url())
        .retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(2),
                max_backoff: Duration::from_millis(20),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(2),
        })
        .jitter(Arc::new(SplitMix64::new(1)))
        .build()
        .unwrap();
    let cleanups = Cleanups::new();
    let source = AzureSource::new(
        arm,
        http,
        vec![SUB.to_string()],
        Selection::default(),
        ExportOptions::default(),
        cleanups.clone(),
    );
    let vm = source.list_vms().await.unwrap().remove(0);
    (sim, source, cleanups, vm)
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("hyper2kvm-run".to_string(), "t".to_string())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_between_incremental_snapshots() {
    let (sim, source, cleanups, vm) = setup().await;
    let disk = &vm.disks[0];
    let id1 = source.copy_id(&vm, disk, "warm-1");
    let info1 = source
        .create_incremental(&vm, disk, &id1, &labels())
        .await
        .unwrap();
    assert!(info1.incremental);
    assert!(info1.source_id.eq_ignore_ascii_case(&disk.id), "{info1:?}");
    assert!(!info1.source_identity.is_empty());
    assert_eq!(info1.size_bytes, 16 * MIB);
    assert_eq!(source.copy_info(&id1).await.unwrap(), Some(info1.clone()));

    // The first copy is a full one: its written ranges.
    let full = source
        .export_disk(&vm, &source.as_disk(disk, &id1))
        .await
        .unwrap();
    assert_eq!(
        full.reader().allocated_ranges().await.unwrap(),
        [0..4 * MIB, 8 * MIB..10 * MIB]
    );
    full.close().await.unwrap();

    // The VM writes and trims; the second snapshot's delta says exactly that.
    let name = &disk.name;
    sim.write_disk(name, MIB, 512 * 1024, 9).unwrap();
    sim.write_disk(name, 12 * MIB, MIB, 10).unwrap();
    sim.trim_disk(name, 8 * MIB, MIB).unwrap();
    sim.write_disk(name, 14 * MIB, 4096, 11).unwrap();
    let id2 = source.copy_id(&vm, disk, "warm-2");
    let info2 = source
        .create_incremental(&vm, disk, &id2, &labels())
        .await
        .unwrap();
    assert_eq!(info2.source_identity, info1.source_identity);
    let before = sim.counters().received(Route::BlobPageList);
    let (newer, delta) = source
        .export_delta(&vm, &source.as_disk(disk, &id2), &id1)
        .await
        .unwrap();
    assert!(
        sim.counters().received(Route::BlobPageList) - before >= 2,
        "paged by NextMarker"
    );
    let want = ChangedRanges {
        written: vec![
            MIB..MIB + 512 * 1024,
            12 * MIB..13 * MIB,
            14 * MIB..14 * MIB + 4096,
        ],
        cleared: vec![8 * MIB..9 * MIB],
    };
    assert_eq!(delta, Delta::Changed(want));
    // Both grants (the base's and the newer one's, 2 of the 5 a snapshot family may have)
    // stay open until the export is closed, which revokes both.
    assert_eq!(sim.counters().open_grants(), 2);
    let now = sim.disk_now(name).unwrap();
    let got = newer
        .reader()
        .read_at(12 * MIB, AlignedBuf::zeroed(MIB as usize))
        .await
        .unwrap();
    let mut expect = vec![0u8; MIB as usize];
    now.read_at(12 * MIB, &mut expect).unwrap();
    assert_eq!(got, expect);
    newer.close().await.unwrap();
    assert_eq!(sim.counters().open_grants(), 0);

    // No change: an empty delta.
    let id3 = source.copy_id(&vm, disk, "warm-3");
    source
        .create_incremental(&vm, disk, &id3, &labels())
        .await
        .unwrap();
    let (e, delta) = source
        .export_delta(&vm, &source.as_disk(disk, &id3), &id2)
        .await
        .unwrap();
    e.close().await.unwrap();
    assert_eq!(delta, Delta::Changed(ChangedRanges::default()));

    // The base deleted: copy in full, with the reason.
    source.delete(&id1).await.unwrap();
    assert_eq!(source.copy_info(&id1).await.unwrap(), None);
    let (e, delta) = source
        .export_delta(&vm, &source.as_disk(disk, &id3), &id1)
        .await
        .unwrap();
    e.close().await.unwrap();
    match delta {
        Delta::BaseUnusable(why) => assert!(why.contains("no longer exists"), "{why}"),
        other => panic!("{other:?}"),
    }

    // The disk recreated: another identity, and Azure refuses the diff.
    sim.recreate_disk(name).unwrap();
    let id4 = source.copy_id(&vm, disk, "warm-4");
    let info4 = source
        .create_incremental(&vm, disk, &id4, &labels())
        .await
        .unwrap();
    assert_ne!(info4.source_identity, info1.source_identity);
    let (e, delta) = source
        .export_delta(&vm, &source.as_disk(disk, &id4), &id3)
        .await
        .unwrap();
    e.close().await.unwrap();
    match delta {
        Delta::BaseUnusable(why) => {
            assert!(
                why.contains("PreviousSnapshotOperationNotSupported"),
                "{why}"
            );
            for sig in sim.signatures() {
                assert!(!why.contains(&sig) && !why.contains("sig="), "{why}");
            }
        }
        other => panic!("{other:?}"),
    }

    for id in [&id2, &id3, &id4] {
        source.delete(id).await.unwrap();
    }
    assert!(cleanups.wait_all().await.is_empty());
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_on_incremental_snapshots_is_waited_out() {
    let (sim, source, _cleanups, vm) = setup().await;
    sim.set_incremental_limits(IncrementalLimits {
        per_window: 1,
        window_secs: 1,
        open_grants_per_family: 5,
    });
    let disk = &vm.disks[0];
    for n in 0..3 {
        let id = source.copy_id(&vm, disk, &format!("rl-{n}"));
        source
            .create_incremental(&vm, disk, &id, &labels())
            .await
            .unwrap();
    }
    assert!(sim.counters().throttled(Route::Snapshot) >= 2);
    assert_eq!(sim.counters().snapshots_alive(), 3);
}

/// The warm path at library level: a full copy of the first incremental snapshot, then three
/// deltas (writes inside and outside written extents, trims, a write into a trimmed range)
/// applied in place; after each, the image equals the disk as it is now (qemu-img check and
/// compare), only the changed bytes were read, and the base snapshot is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_copy_then_three_deltas_equal_the_disk_now() {
    let (sim, source, cleanups, vm) = setup().await;
    let disk = &vm.disks[0];
    let name = disk.name.clone();
    let dir = Scratch::new("warm-deltas");
    let img = dir.path("disk.qcow2");

    let mut base = source.copy_id(&vm, disk, "gen-0");
    source
        .create_incremental(&vm, disk, &base, &labels())
        .await
        .unwrap();
    let full = source
        .export_disk(&vm, &source.as_disk(disk, &base))
        .await
        .unwrap();
    convert(
        full.reader().clone(),
        &img,
        &ConvertOptions::default(),
        None,
    )
    .await
    .unwrap();
    full.close().await.unwrap();

    let rounds: [&[(&str, u64, u64)]; 3] = [
        &[
            ("w", MIB + 4096, 8192),
            ("w", 12 * MIB, 3 * MIB),
            ("t", 9 * MIB, MIB),
        ],
        &[
            ("t", 0, 2 * MIB),
            ("w", 15 * MIB, 512),
            ("w", 9 * MIB + 512, 1024),
        ],
        &[
            ("w", 0, 64 * 1024),
            ("t", 12 * MIB + 4096, 4096),
            ("w", 3 * MIB, 2 * MIB),
        ],
    ];
    for (n, changes) in rounds.iter().enumerate() {
        for (i, &(op, at, len)) in changes.iter().enumerate() {
            match op {
                "w" => sim.write_disk(&name, at, len, 100 + (n * 10 + i) as u64),
                _ => sim.trim_disk(&name, at, len),
            }
            .unwrap();
        }
        let next = source.copy_id(&vm, disk, &format!("gen-{}", n + 1));
        source
            .create_incremental(&vm, disk, &next, &labels())
            .await
            .unwrap();
        let (newer, delta) = source
            .export_delta(&vm, &source.as_disk(disk, &next), &base)
            .await
            .unwrap();
        let Delta::Changed(changed) = delta else {
            panic!("{delta:?}")
        };
        let stats = apply_delta(newer.reader().clone(), &img, &changed, 4, 4 * MIB)
            .await
            .unwrap();
        newer.close().await.unwrap();
        assert_eq!(stats.bytes_written, changed.written_bytes());
        assert_eq!(stats.bytes_cleared, changed.cleared_bytes());
        assert!(stats.bytes_written < 8 * MIB, "only the delta: {stats:?}");
        source.delete(&base).await.unwrap();
        base = next;

        let reference = dir.path(&format!("ref-{n}.raw"));
        sim.disk_now(&name)
            .unwrap()
            .write_raw_reference(&reference)
            .unwrap();
        assert_image_matches(&img, "qcow2", &reference);
    }
    source.delete(&base).await.unwrap();
    assert!(cleanups.wait_all().await.is_empty());
    let c = sim.counters();
    assert_eq!((c.open_grants(), c.snapshots_alive()), (0, 0));
}
