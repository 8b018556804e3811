//! `Qcow2Patcher` against qemu-img: an image written by our converter (and one written by
//! qemu-img) is patched with writes and zeroings of every shape (inside an allocated
//! cluster, into a hole, across clusters, under an L1 entry that has no L2 table yet, whole
//! and partial zeroing, writing into a zeroed cluster), the same changes are made to a raw
//! reference, and the patched image must pass `qemu-img check` (no errors, no leaks) and
//! compare identical. A patch interrupted before `finish` is applied again and finished.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::fs::OpenOptions;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use hyper2kvm_core::qcow2::{GuestOffset, Qcow2Patcher};
use hyper2kvm_core::{convert, ConvertOptions, RawFileReader};
use support::{assert_image_matches, make_raw, qemu_img, s, Fill, Scratch};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Past 512 MiB: the second L1 entry (64 KiB clusters), empty in the base image.
const SIZE: u64 = 768 * MIB;

enum Change {
    Write(u64, Vec<u8>),
    Zero(Range<u64>),
}

fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A delta of every shape against the base made by `base()`.
fn delta() -> Vec<Change> {
    vec![
        // Inside the allocated first extent, unaligned to clusters.
        Change::Write(4 * KIB + 512, noise(1, 3000 / 512 * 512)),
        // Into a hole, part of a cluster.
        Change::Write(40 * MIB + 512, noise(2, 1024)),
        // Across several clusters, half over allocated data and half over a hole.
        Change::Write(11 * MIB + 40 * KIB, noise(3, 300 * KIB as usize)),
        // Under the second L1 entry, which has no L2 table yet.
        Change::Write(600 * MIB, noise(4, 128 * KIB as usize)),
        // Whole clusters zeroed (kept allocated) and a part of one.
        Change::Zero(10 * MIB..10 * MIB + 256 * KIB),
        Change::Zero(12 * MIB + 512..12 * MIB + 4096),
        // Zeroing a hole is nothing.
        Change::Zero(100 * MIB..101 * MIB),
        // Writing part of a zeroed cluster: the rest must read zeros.
        Change::Write(10 * MIB + 64 * KIB + 1024, noise(5, 512)),
        // The last sector.
        Change::Write(SIZE - 512, noise(6, 512)),
    ]
}

fn base(dir: &Scratch) -> std::path::PathBuf {
    let raw = dir.path("ref.raw");
    make_raw(
        &raw,
        SIZE,
        &[
            (0, MIB, Fill::Noise(7)),
            (10 * MIB, 3 * MIB, Fill::Text),
            (300 * MIB, 64 * KIB, Fill::Noise(8)),
        ],
    );
    raw
}

fn apply_raw(raw: &Path, changes: &[Change]) {
    let f = OpenOptions::new().write(true).open(raw).unwrap();
    for c in changes {
        match c {
            Change::Write(at, data) => f.write_all_at(data, *at).unwrap(),
            Change::Zero(r) => f
                .write_all_at(&vec![0u8; (r.end - r.start) as usize], r.start)
                .unwrap(),
        }
    }
}

fn apply_qcow2(p: &mut Qcow2Patcher, changes: &[Change]) {
    for c in changes {
        match c {
            Change::Write(at, data) => p.write_at(GuestOffset(*at), data).unwrap(),
            Change::Zero(r) => p.zero(r.clone()).unwrap(),
        }
    }
}

async fn ours(raw: &Path, dst: &Path) {
    let reader = Arc::new(RawFileReader::open(raw).unwrap());
    convert(reader, dst, &ConvertOptions::default(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn patched_image_equals_the_changed_disk() {
    let dir = Scratch::new("qcow2-patch");
    let raw = base(&dir);
    let ours_img = dir.path("ours.qcow2");
    ours(&raw, &ours_img).await;
    let qemu_img_made = dir.path("qemu.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&raw),
        s(&qemu_img_made),
    ]);
    let changes = delta();
    apply_raw(&raw, &changes);
    for img in [&ours_img, &qemu_img_made] {
        let mut p = Qcow2Patcher::open(img).unwrap();
        assert_eq!(p.virtual_size(), SIZE);
        apply_qcow2(&mut p, &changes);
        p.finish().unwrap();
        assert_image_matches(img, "qcow2", &raw);
    }
    // Applying the same delta again changes nothing and allocates no data cluster.
    let before = std::fs::metadata(&ours_img).unwrap().len();
    let mut p = Qcow2Patcher::open(&ours_img).unwrap();
    apply_qcow2(&mut p, &changes);
    p.finish().unwrap();
    assert_image_matches(&ours_img, "qcow2", &raw);
    let grown = std::fs::metadata(&ours_img).unwrap().len() - before;
    assert!(
        grown <= 2 * 64 * KIB,
        "only new refcount structures: {grown}"
    );
}

#[tokio::test]
async fn an_interrupted_patch_is_applied_again() {
    let dir = Scratch::new("qcow2-patch-kill");
    let raw = base(&dir);
    let img = dir.path("img.qcow2");
    ours(&raw, &img).await;
    let changes = delta();
    apply_raw(&raw, &changes);
    // Killed halfway: no finish, refcounts stale.
    let mut p = Qcow2Patcher::open(&img).unwrap();
    apply_qcow2(&mut p, &changes[..5]);
    drop(p);
    // A cluster appended but never mapped (killed between the data and its L2 entry).
    let f = OpenOptions::new().write(true).open(&img).unwrap();
    let len = f.metadata().unwrap().len().div_ceil(64 * KIB) * 64 * KIB;
    f.write_all_at(&noise(9, 64 * KIB as usize), len).unwrap();
    drop(f);
    let mut p = Qcow2Patcher::open(&img).unwrap();
    apply_qcow2(&mut p, &changes);
    p.finish().unwrap();
    assert_image_matches(&img, "qcow2", &raw);
}

#[test]
fn out_of_range_and_unsupported_images_are_refused() {
    let dir = Scratch::new("qcow2-patch-bad");
    let raw = dir.path("r.raw");
    make_raw(&raw, 4 * MIB, &[(0, MIB, Fill::Text)]);
    let backed = dir.path("backed.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        s(&raw),
        s(&backed),
    ]);
    let err = Qcow2Patcher::open(&backed).err().unwrap();
    assert_eq!(err.kind(), hyper2kvm_core::ErrorKind::Unsupported, "{err}");
    let plain = dir.path("plain.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&plain), "4M"]);
    let mut p = Qcow2Patcher::open(&plain).unwrap();
    let err = p
        .write_at(GuestOffset(4 * MIB - 512), &[0u8; 1024])
        .unwrap_err();
    assert_eq!(
        err.kind(),
        hyper2kvm_core::ErrorKind::InvalidArgument,
        "{err}"
    );
    p.finish().unwrap();
    let report = qemu_img(&["check", "-f", "qcow2", s(&plain)]);
    assert!(report.contains("No errors were found"), "{report}");
}
