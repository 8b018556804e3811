//! The VHDX reader against `qemu-img` (which makes every input it can and reads it back as
//! the oracle), and against images built from the spec by `testimage` where qemu cannot:
//! 4 KiB sectors, differencing chains, dirty logs and damage.

use std::fs::OpenOptions;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use super::testimage::{BlockSpec, Image, LogEntry, LogWrite, BAT_OFFSET, LOG_OFFSET};
use super::{Guid, VhdxReader};
use crate::buffers::AlignedBuf;
use crate::error::ErrorKind;
use crate::source::DiskReader;
use crate::testutil::{run, TempDir};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic bytes that differ by position and seed.
fn noise(seed: u64, at: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| {
            let mut z = seed ^ (at + i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8 | 1
        })
        .collect()
}

/// A sparse raw file of `size` bytes with noise at each (offset, len).
fn make_raw(path: &Path, size: u64, extents: &[(u64, u64)]) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    for (i, &(offset, len)) in extents.iter().enumerate() {
        f.write_all_at(&noise(i as u64, offset, len as usize), offset)
            .unwrap();
    }
}

/// The whole disk through `reader`, in reads of odd sizes that straddle blocks.
async fn read_all(reader: &dyn DiskReader) -> Vec<u8> {
    let size = reader.size();
    let mut out = Vec::with_capacity(size as usize);
    let step = 3 * MIB + 512 + 4096;
    let mut pos = 0;
    while pos < size {
        let n = step.min(size - pos) as usize;
        out.extend_from_slice(
            &reader
                .read_at(pos, AlignedBuf::from(vec![0xee; n]))
                .await
                .unwrap(),
        );
        pos += n as u64;
    }
    out
}

/// Every non-zero byte of `data` lies inside `ranges`, which are sorted and disjoint.
fn assert_covers(ranges: &[Range<u64>], data: &[u8]) {
    for w in ranges.windows(2) {
        assert!(w[0].end < w[1].start, "not merged/sorted: {ranges:?}");
    }
    let mut next = 0;
    for r in ranges {
        if let Some(i) = data[next as usize..r.start as usize]
            .iter()
            .position(|&b| b != 0)
        {
            panic!(
                "data at {} outside allocated ranges {ranges:?}",
                next + i as u64
            );
        }
        next = r.end;
    }
    assert!(
        data[next as usize..].iter().all(|&b| b == 0),
        "data past the last range"
    );
}

/// qemu-img's reading of `image` as raw bytes.
fn qemu_raw(image: &Path, format: &str, dir: &TempDir) -> Vec<u8> {
    let out = dir.path().join("oracle.raw");
    run(
        "qemu-img",
        &["convert", "-f", format, "-O", "raw", s(image), s(&out)],
    );
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

#[tokio::test]
async fn qemu_made_fixed_and_dynamic_images_read_like_qemu() {
    let dir = TempDir::new("vhdx-qemu");
    let raw = dir.path().join("src.raw");
    // Odd size; data at the start, across 1 MiB and 8 MiB block boundaries, in the middle of
    // a large block, and in the last sector.
    let size = 48 * MIB + 2560;
    let extents = [
        (0, 4096),
        (MIB - 1000, 3000),
        (8 * MIB - 512, 1024 + 5 * MIB),
        (33 * MIB + 7 * 512, 512),
        (size - 512, 512),
    ];
    make_raw(&raw, size, &extents);
    let original = std::fs::read(&raw).unwrap();
    for subformat in ["dynamic", "fixed"] {
        for block in ["1M", "8M", "32M", "256M"] {
            let vhdx = dir.path().join(format!("{subformat}-{block}.vhdx"));
            let opts = format!("subformat={subformat},block_size={block},log_size=1M");
            run(
                "qemu-img",
                &[
                    "convert",
                    "-f",
                    "raw",
                    "-O",
                    "vhdx",
                    "-o",
                    &opts,
                    s(&raw),
                    s(&vhdx),
                ],
            );
            let oracle = qemu_raw(&vhdx, "vhdx", &dir);
            let reader = VhdxReader::open(&vhdx).unwrap();
            assert_eq!(reader.size(), oracle.len() as u64, "{subformat} {block}");
            let ours = read_all(&reader).await;
            assert!(
                ours == oracle,
                "{subformat} {block}: bytes differ from qemu-img's"
            );
            assert_eq!(&ours[..original.len()], &original[..]);
            let ranges = reader.allocated_ranges().await.unwrap();
            assert_covers(&ranges, &ours);
            let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            // Only touched blocks (dynamic) or written extents (fixed, sparse file) count:
            // far less than the whole disk for every block size.
            let bound = match (subformat, block) {
                ("dynamic", "1M") => 12 * MIB,
                ("dynamic", "8M") => 32 * MIB,
                ("dynamic", _) => size,
                _ => 16 * MIB,
            };
            assert!(
                total <= bound,
                "{subformat} {block}: {total} bytes allocated: {ranges:?}"
            );
            std::fs::remove_file(&vhdx).unwrap();
        }
    }
}

#[tokio::test]
async fn qemu_io_writes_into_an_empty_dynamic_image() {
    let dir = TempDir::new("vhdx-qemu-io");
    let vhdx = dir.path().join("d.vhdx");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "vhdx",
            "-o",
            "subformat=dynamic,block_size=1M,log_size=1M",
            s(&vhdx),
            "16M",
        ],
    );
    for cmd in [
        "write -P 0xab 1M 64k",
        "write -P 0x5c 3583k 2M",
        "write -z 1M 4k",
    ] {
        run("qemu-io", &["-f", "vhdx", "-c", cmd, s(&vhdx)]);
    }
    let oracle = qemu_raw(&vhdx, "vhdx", &dir);
    let reader = VhdxReader::open(&vhdx).unwrap();
    let ours = read_all(&reader).await;
    assert!(ours == oracle);
    assert_eq!(ours[MIB as usize + 4096], 0xab);
    let ranges = reader.allocated_ranges().await.unwrap();
    assert_covers(&ranges, &ours);
    // Inside the written blocks; the file system's extents may narrow them further.
    for r in &ranges {
        assert!(
            (r.start >= MIB && r.end <= 2 * MIB) || (r.start >= 3 * MIB && r.end <= 6 * MIB),
            "{ranges:?}"
        );
    }
}

/// A disk's expected bytes, from the blocks given to `Image` and a parent's bytes.
fn expected(image: &Image, parent: Option<&[u8]>) -> Vec<u8> {
    let bs = u64::from(image.block_size);
    let sector = image.logical_sector as usize;
    let mut out = vec![0u8; image.size as usize];
    for b in 0..image.size.div_ceil(bs) {
        let start = (b * bs) as usize;
        let end = ((b + 1) * bs).min(image.size) as usize;
        let from_parent = |out: &mut [u8], r: Range<usize>| {
            if let Some(p) = parent {
                let pe = r.end.min(p.len());
                if r.start < pe {
                    out[r.start..pe].copy_from_slice(&p[r.start..pe]);
                }
            }
        };
        match image.blocks.get(&b) {
            Some(BlockSpec::Full(d)) => out[start..end].copy_from_slice(&d[..end - start]),
            Some(BlockSpec::Partial(d, present)) => {
                for (i, &here) in present.iter().enumerate() {
                    let r = start + i * sector..(start + (i + 1) * sector).min(end);
                    if r.start >= end {
                        break;
                    }
                    if here {
                        out[r.clone()].copy_from_slice(&d[r.start - start..r.end - start]);
                    } else {
                        from_parent(&mut out, r);
                    }
                }
            }
            Some(BlockSpec::State(0)) | None if image.parent.is_some() => {
                from_parent(&mut out, start..end)
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn four_kib_logical_sectors() {
    let dir = TempDir::new("vhdx-4k");
    let path = dir.path().join("4k.vhdx");
    let mut img = Image::new(5 * MIB + 3 * 4096, 1 << 20, 4096);
    img.blocks
        .insert(0, BlockSpec::Full(noise(1, 0, MIB as usize)));
    img.blocks.insert(2, BlockSpec::State(2));
    img.blocks
        .insert(3, BlockSpec::Full(noise(3, 0, MIB as usize)));
    img.blocks.insert(5, BlockSpec::Full(noise(5, 0, 3 * 4096)));
    img.write(&path);
    let reader = VhdxReader::open(&path).unwrap();
    assert_eq!(reader.logical_sector_size(), 4096);
    let ours = read_all(&reader).await;
    assert!(ours == expected(&img, None));
    // qemu 10 refuses 4 KiB logical sectors ("Operation not supported"); where it reads
    // them, it must agree. The same image with 512-byte sectors, which qemu reads, checks
    // the test writer itself.
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "vhdx", "-O", "raw"])
        .arg(&path)
        .arg(dir.path().join("q.raw"))
        .output()
        .unwrap();
    if out.status.success() {
        assert!(std::fs::read(dir.path().join("q.raw")).unwrap() == ours);
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not supported"), "{stderr}");
    }
    let mut img512 = img.clone();
    img512.logical_sector = 512;
    let path512 = dir.path().join("512.vhdx");
    img512.write(&path512);
    let ours512 = read_all(&VhdxReader::open(&path512).unwrap()).await;
    assert!(ours512 == ours);
    assert!(qemu_raw(&path512, "vhdx", &dir) == ours);
    let ranges = reader.allocated_ranges().await.unwrap();
    assert_covers(&ranges, &ours);
    assert_eq!(
        ranges,
        vec![0..MIB, 3 * MIB..4 * MIB, 5 * MIB..5 * MIB + 3 * 4096]
    );
}

/// A base disk, a child with every block state, and a grandchild: each reads as its parent
/// overlaid by its own blocks.
#[tokio::test]
async fn differencing_chain_reads_parent_through_child() {
    for sector in [512u32, 4096] {
        let dir = TempDir::new("vhdx-diff");
        let size = 6 * MIB;
        let mut base = Image::new(size, 1 << 20, sector);
        base.data_write_guid = Guid([0xba; 16]);
        for b in 0..6 {
            base.blocks
                .insert(b, BlockSpec::Full(noise(100 + b, 0, MIB as usize)));
        }
        base.write(&dir.path().join("base.vhdx"));
        let base_bytes = expected(&base, None);

        let mut child =
            Image::new(size, 1 << 20, sector).child_of(r".\base.vhdx", base.data_write_guid);
        child.data_write_guid = Guid([0xc1; 16]);
        let per_block = (MIB / u64::from(sector)) as usize;
        let present: Vec<bool> = (0..per_block)
            .map(|i| i % 3 == 0 || (i / 7) % 2 == 1)
            .collect();
        child
            .blocks
            .insert(0, BlockSpec::Full(noise(200, 0, MIB as usize)));
        child.blocks.insert(
            1,
            BlockSpec::Partial(noise(201, 0, MIB as usize), present.clone()),
        );
        child.blocks.insert(2, BlockSpec::State(2)); // ZERO hides the parent
        child.blocks.insert(3, BlockSpec::State(0)); // NOT_PRESENT shows it
                                                     // Block 4 absent (NOT_PRESENT); block 5 partially present with nothing set.
        child.blocks.insert(
            5,
            BlockSpec::Partial(noise(205, 0, MIB as usize), vec![false; per_block]),
        );
        std::fs::create_dir(dir.path().join("kids")).unwrap();
        let mut child_for_path = child.clone();
        child_for_path.parent = Some(vec![
            (
                "parent_linkage".into(),
                format!("{{{}}}", base.data_write_guid),
            ),
            ("relative_path".into(), r"..\base.vhdx".into()),
        ]);
        child_for_path.write(&dir.path().join("kids/child.vhdx"));
        let child_bytes = expected(&child, Some(&base_bytes));

        let mut grand =
            Image::new(size, 1 << 20, sector).child_of(r".\kids\child.vhdx", child.data_write_guid);
        let present2: Vec<bool> = (0..per_block).map(|i| i % 2 == 0).collect();
        grand
            .blocks
            .insert(1, BlockSpec::Partial(noise(301, 0, MIB as usize), present2));
        grand
            .blocks
            .insert(4, BlockSpec::Full(noise(304, 0, MIB as usize)));
        grand.write(&dir.path().join("grand.vhdx"));
        let grand_bytes = expected(&grand, Some(&child_bytes));

        let reader = VhdxReader::open(&dir.path().join("grand.vhdx")).unwrap();
        assert_eq!(reader.chain().len(), 3);
        let ours = read_all(&reader).await;
        assert!(ours == grand_bytes, "{sector}-byte sectors");
        // Reads of odd sizes and offsets inside partially present blocks.
        for (off, len) in [(MIB + 100, 5000usize), (MIB + 511, 2), (2 * MIB - 1, 2)] {
            let got = reader.read_at(off, AlignedBuf::zeroed(len)).await.unwrap();
            assert_eq!(got, &grand_bytes[off as usize..off as usize + len]);
        }
        let ranges = reader.allocated_ranges().await.unwrap();
        assert_covers(&ranges, &ours);
        // The child's ZERO block 2 hides the base's data.
        assert!(
            !ranges.iter().any(|r| r.start < 3 * MIB && r.end > 2 * MIB),
            "{ranges:?}"
        );

        // qemu does not read differencing VHDX; say so here, so a qemu that learns it
        // becomes an oracle for this test.
        let out = Command::new("qemu-img")
            .args(["convert", "-f", "vhdx", "-O", "raw"])
            .arg(dir.path().join("grand.vhdx"))
            .arg(dir.path().join("q.raw"))
            .output()
            .unwrap();
        if out.status.success() {
            assert!(std::fs::read(dir.path().join("q.raw")).unwrap() == grand_bytes);
        }
    }
}

#[tokio::test]
async fn differencing_errors_name_the_problem() {
    let dir = TempDir::new("vhdx-diff-bad");
    let mut base = Image::new(2 * MIB, 1 << 20, 512);
    base.data_write_guid = Guid([0xba; 16]);
    base.write(&dir.path().join("base.vhdx"));
    // Wrong linkage: the parent changed after the child was made.
    let child = Image::new(2 * MIB, 1 << 20, 512).child_of("base.vhdx", Guid([0x99; 16]));
    child.write(&dir.path().join("child.vhdx"));
    let err = VhdxReader::open(&dir.path().join("child.vhdx")).unwrap_err();
    assert!(err.to_string().contains("DataWriteGuid"), "{err}");
    assert!(err.to_string().contains("99999999-9999"), "{err}");
    // Missing parent.
    let child = Image::new(2 * MIB, 1 << 20, 512).child_of("gone.vhdx", Guid([0x99; 16]));
    child.write(&dir.path().join("orphan.vhdx"));
    let err = VhdxReader::open(&dir.path().join("orphan.vhdx")).unwrap_err();
    assert!(err.to_string().contains("parent not found"), "{err}");
    assert!(err.to_string().contains("gone.vhdx"), "{err}");
    // A cycle: a is b's parent and b is a's.
    let mut a = Image::new(2 * MIB, 1 << 20, 512).child_of("b.vhdx", Guid([0xbb; 16]));
    a.data_write_guid = Guid([0xaa; 16]);
    let mut b = Image::new(2 * MIB, 1 << 20, 512).child_of("a.vhdx", Guid([0xaa; 16]));
    b.data_write_guid = Guid([0xbb; 16]);
    a.write(&dir.path().join("a.vhdx"));
    b.write(&dir.path().join("b.vhdx"));
    let err = VhdxReader::open(&dir.path().join("a.vhdx")).unwrap_err();
    assert!(err.to_string().contains("loops back"), "{err}");
    // A differencing BAT covers whole chunks; entries past the disk's end are never read
    // and do not need to make sense (nor may they overflow the checks).
    let mut child = Image::new(2 * MIB, 1 << 20, 512).child_of("base.vhdx", base.data_write_guid);
    child.raw_bat.push((10, (1 << 40) | 6));
    child.write(&dir.path().join("padded.vhdx"));
    VhdxReader::open(&dir.path().join("padded.vhdx")).unwrap();
}

/// A log with two entries of the active sequence (a BAT update, payload and zero writes),
/// plus an older entry of another log and a newer one with a bad checksum, neither of which
/// may be applied.
#[tokio::test]
async fn dirty_log_is_replayed_in_memory() {
    let dir = TempDir::new("vhdx-log");
    let path = dir.path().join("dirty.vhdx");
    let mut img = Image::new(4 * MIB, 1 << 20, 512);
    img.log_guid = Guid([0x10; 16]);
    let block0 = noise(1, 0, MIB as usize);
    img.blocks.insert(0, BlockSpec::Full(block0.clone()));
    // Block 2's data is in the file (at the next MiB after block 0) but its BAT entry still
    // says NOT_PRESENT: the writer crashed before updating the BAT in place.
    let clean = img.build();
    let block0_at = clean.len() as u64 - MIB;
    let block2_at = clean.len() as u64;
    let block2 = noise(2, 0, MIB as usize);
    let mut bat_sector = clean[BAT_OFFSET as usize..BAT_OFFSET as usize + 4096].to_vec();
    bat_sector[16..24].copy_from_slice(&(block2_at | 6).to_le_bytes());
    let entry1 = LogEntry {
        sequence: 41,
        tail: 0,
        log_guid: img.log_guid,
        flushed_file_offset: block2_at,
        last_file_offset: block2_at + MIB,
        writes: vec![
            LogWrite::Data(BAT_OFFSET, bat_sector),
            LogWrite::Zero(block0_at + 8192, 8192),
            LogWrite::Data(block0_at + 4096, vec![0x41; 4096]),
        ],
    }
    .bytes();
    let entry2 = LogEntry {
        sequence: 42,
        tail: 0,
        log_guid: img.log_guid,
        flushed_file_offset: block2_at,
        last_file_offset: block2_at + MIB,
        writes: vec![LogWrite::Data(block0_at + 4096, vec![0x42; 4096])],
    }
    .bytes();
    let stale = LogEntry {
        sequence: 40,
        tail: 0,
        log_guid: Guid([0x0f; 16]),
        flushed_file_offset: 0,
        last_file_offset: 0,
        writes: vec![LogWrite::Data(block0_at, vec![0x40; 4096])],
    }
    .bytes();
    let mut broken = LogEntry {
        sequence: 43,
        tail: 0,
        log_guid: img.log_guid,
        flushed_file_offset: 0,
        last_file_offset: 0,
        writes: vec![LogWrite::Data(block0_at, vec![0x43; 4096])],
    }
    .bytes();
    broken[5000] ^= 1;
    img.log = vec![entry1.clone(), entry2, broken, stale];
    let mut bytes = img.build();
    bytes.extend_from_slice(&block2);
    std::fs::write(&path, &bytes).unwrap();

    let reader = VhdxReader::open(&path).unwrap();
    assert_eq!(reader.replayed_log_entries(), 2);
    let mut want = vec![0u8; 4 * MIB as usize];
    want[..MIB as usize].copy_from_slice(&block0);
    want[4096..8192].fill(0x42);
    want[8192..16384].fill(0);
    want[2 * MIB as usize..3 * MIB as usize].copy_from_slice(&block2);
    let ours = read_all(&reader).await;
    assert!(ours == want);
    let ranges = reader.allocated_ranges().await.unwrap();
    assert_covers(&ranges, &ours);
    // The input was not modified.
    assert!(std::fs::read(&path).unwrap() == bytes);

    // qemu agrees: `qemu-img check -r all` replays the log into a copy, which then reads the
    // same.
    let copy = dir.path().join("copy.vhdx");
    std::fs::copy(&path, &copy).unwrap();
    let _ = Command::new("qemu-img")
        .args(["check", "-r", "all", "-f", "vhdx"])
        .arg(&copy)
        .output();
    assert!(
        qemu_raw(&copy, "vhdx", &dir) == want,
        "qemu's replay differs from ours"
    );
}

#[test]
fn dirty_log_we_cannot_replay_is_a_clear_error() {
    let dir = TempDir::new("vhdx-log-bad");
    // A log version we do not know.
    let path = dir.path().join("v1.vhdx");
    let mut img = Image::new(2 * MIB, 1 << 20, 512);
    img.log_guid = Guid([0x10; 16]);
    let mut bytes = img.build();
    let mut h = img.header(3, 65536);
    h.log_version = 1;
    bytes[65536..65536 + 4096].copy_from_slice(&h.to_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = VhdxReader::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let msg = err.to_string();
    assert!(msg.starts_with(s(&path)), "{msg}");
    assert!(
        msg.contains("VHDX log needs replay (log version 1"),
        "{msg}"
    );
    assert!(msg.contains("qemu-img check -r all"), "{msg}");
    assert!(msg.contains("at offset 65600"), "{msg}");

    // A log entry written when the file was larger than it is now: truncated.
    let path = dir.path().join("short.vhdx");
    let mut img = Image::new(2 * MIB, 1 << 20, 512);
    img.log_guid = Guid([0x10; 16]);
    img.log = vec![LogEntry {
        sequence: 1,
        tail: 0,
        log_guid: img.log_guid,
        flushed_file_offset: 100 * MIB,
        last_file_offset: 100 * MIB,
        writes: vec![LogWrite::Zero(BAT_OFFSET, 4096)],
    }
    .bytes()];
    img.write(&path);
    let err = VhdxReader::open(&path).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(err.offset(), Some(LOG_OFFSET));

    // A log entry that writes far past the end the log itself allows.
    let path = dir.path().join("wild.vhdx");
    img.log = vec![LogEntry {
        sequence: 1,
        tail: 0,
        log_guid: img.log_guid,
        flushed_file_offset: MIB,
        last_file_offset: MIB,
        writes: vec![LogWrite::Zero(1 << 50, 4096)],
    }
    .bytes()];
    img.write(&path);
    let err = VhdxReader::open(&path).unwrap_err();
    assert!(err.to_string().contains("VHDX log needs replay"), "{err}");
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, offset).unwrap();
}

#[tokio::test]
async fn damaged_headers_and_region_tables() {
    let dir = TempDir::new("vhdx-damage");
    let good = dir.path().join("good.vhdx");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "vhdx",
            "-o",
            "subformat=dynamic,block_size=1M,log_size=1M",
            s(&good),
            "8M",
        ],
    );
    run(
        "qemu-io",
        &["-f", "vhdx", "-c", "write -P 0x77 2M 1M", s(&good)],
    );
    let want = read_all(&VhdxReader::open(&good).unwrap()).await;
    assert!(want[2 * MIB as usize..3 * MIB as usize]
        .iter()
        .all(|&b| b == 0x77));
    let copy = |name: &str| {
        let p = dir.path().join(name);
        std::fs::copy(&good, &p).unwrap();
        p
    };
    // One damaged header (either one) or region table is tolerated.
    for (name, offset) in [
        ("h1", 65536 + 100),
        ("h2", 131072 + 100),
        ("r1", 196608 + 40),
        ("r2", 262144 + 40),
    ] {
        let p = copy(name);
        flip(&p, offset);
        let reader = VhdxReader::open(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(read_all(&reader).await == want, "{name}");
    }
    // Both headers damaged.
    let p = copy("hh.vhdx");
    flip(&p, 65536 + 100);
    flip(&p, 131072 + 100);
    let err = VhdxReader::open(&p).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(s(&p)), "{msg}");
    assert!(msg.contains("bad VHDX header checksum"), "{msg}");
    assert!(
        msg.contains("at offset 65536") && msg.contains("at offset 131072"),
        "{msg}"
    );
    // Both region tables damaged.
    let p = copy("rr.vhdx");
    flip(&p, 196608 + 40);
    flip(&p, 262144 + 40);
    let msg = VhdxReader::open(&p).unwrap_err().to_string();
    assert!(msg.contains("both VHDX region tables are damaged"), "{msg}");
    assert!(
        msg.contains("at offset 196608") && msg.contains("at offset 262144"),
        "{msg}"
    );
    // Not a VHDX at all.
    let p = copy("sig.vhdx");
    flip(&p, 0);
    let msg = VhdxReader::open(&p).unwrap_err().to_string();
    assert!(
        msg.contains("vhdxfile") && msg.contains("at offset 0"),
        "{msg}"
    );
    // Truncated: the allocated block lies past the end.
    let p = copy("short.vhdx");
    let len = std::fs::metadata(&p).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - MIB)
        .unwrap();
    let msg = VhdxReader::open(&p).unwrap_err().to_string();
    assert!(msg.contains("BAT entry 2 points to file offset"), "{msg}");
    assert!(msg.contains("at offset"), "{msg}");
}

#[test]
fn impossible_metadata_is_refused_without_allocating() {
    let dir = TempDir::new("vhdx-meta");
    let open = |img: &Image, name: &str| {
        let p = dir.path().join(name);
        img.write(&p);
        VhdxReader::open(&p).unwrap_err()
    };
    // A block size the spec does not allow.
    for bs in [3 << 20, 512 << 20, 1 << 19] {
        let err = open(&Image::new(8 * MIB, bs, 512), "bs.vhdx");
        assert!(err.to_string().contains("block size"), "{err}");
        assert!(err.offset().is_some());
    }
    // A 64 TiB disk in a 4 MiB file: its BAT would need 512 MiB; refused before reading it.
    let mut img = Image::new(64 << 40, 1 << 20, 512);
    img.bat_len = Some(MIB);
    let err = open(&img, "huge.vhdx");
    assert!(err.to_string().contains("cannot hold"), "{err}");
    // Larger than the spec's 64 TiB.
    let err = open(&Image::new((64 << 40) + 512, 256 << 20, 512), "huger.vhdx");
    assert!(err.to_string().contains("64 TiB"), "{err}");
    // A logical sector size of 1024.
    let err = open(&Image::new(8 * MIB, 1 << 20, 1024), "sector.vhdx");
    assert!(err.to_string().contains("sector size 1024"), "{err}");
    // An unknown required region.
    let mut img = Image::new(8 * MIB, 1 << 20, 512);
    img.extra_regions
        .push((Guid([0x77; 16]), 9 * MIB, MIB as u32, true));
    let err = open(&img, "region.vhdx");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(
        err.to_string()
            .contains("77777777-7777-7777-7777-777777777777"),
        "{err}"
    );
    // A BAT entry past the end of the file, and one with a reserved state.
    let mut img = Image::new(8 * MIB, 1 << 20, 512);
    img.raw_bat.push((3, (1 << 40) | 6));
    let err = open(&img, "bat.vhdx");
    assert!(
        err.to_string()
            .contains("BAT entry 3 points to file offset 1099511627776"),
        "{err}"
    );
    assert_eq!(err.offset(), Some(BAT_OFFSET + 3 * 8));
    let mut img = Image::new(8 * MIB, 1 << 20, 512);
    img.raw_bat.push((1, 4));
    let err = open(&img, "state.vhdx");
    assert!(err.to_string().contains("state 4"), "{err}");
    // Partially present blocks are for differencing disks only.
    let mut img = Image::new(8 * MIB, 1 << 20, 512);
    img.raw_bat.push((1, (4 << 20) | 7));
    let err = open(&img, "partial.vhdx");
    assert!(err.to_string().contains("state 7"), "{err}");
}

/// Of two valid headers the one with the higher sequence number rules, whichever slot it is
/// in: here it asks for a log version we do not know, so whether it was chosen shows.
#[test]
fn the_newer_valid_header_is_current() {
    let dir = TempDir::new("vhdx-seq");
    let path = dir.path().join("seq.vhdx");
    let mut img = Image::new(2 * MIB, 1 << 20, 512);
    img.log_guid = Guid([0x10; 16]);
    let clean = Image::new(2 * MIB, 1 << 20, 512);
    for (odd_slot, odd_seq, other_seq, chosen) in [
        (65536usize, 9, 4, true),
        (131072, 9, 4, true),
        (65536, 3, 4, false),
        (131072, 3, 4, false),
    ] {
        let mut bytes = clean.build();
        let other_slot = if odd_slot == 65536 { 131072 } else { 65536 };
        let mut odd = img.header(odd_seq, odd_slot as u64);
        odd.log_version = 1;
        bytes[odd_slot..odd_slot + 4096].copy_from_slice(&odd.to_bytes());
        let normal = clean.header(other_seq, other_slot as u64).to_bytes();
        bytes[other_slot..other_slot + 4096].copy_from_slice(&normal);
        std::fs::write(&path, &bytes).unwrap();
        let opened = VhdxReader::open(&path);
        assert_eq!(opened.is_err(), chosen, "slot {odd_slot} seq {odd_seq}");
        if let Err(e) = opened {
            assert_eq!(e.offset(), Some(odd_slot as u64 + 64), "{e}");
        }
    }
}

#[tokio::test]
async fn open_disk_detects_vhdx_by_content() {
    use crate::open::{open_disk, InputFormat};
    let dir = TempDir::new("vhdx-open");
    let mut img = Image::new(3 * MIB, 1 << 20, 512);
    img.blocks
        .insert(1, BlockSpec::Full(noise(9, 0, MIB as usize)));
    // Named .img: the content decides.
    let path = dir.path().join("disk.img");
    img.write(&path);
    for format in [InputFormat::Auto, InputFormat::Vhdx] {
        let disk = open_disk(&path, format).unwrap();
        assert_eq!(disk.size(), 3 * MIB);
        assert!(read_all(disk.as_ref()).await == expected(&img, None));
    }
    assert_eq!("VHDX".parse::<InputFormat>().unwrap(), InputFormat::Vhdx);
    // Forced raw reads the container's bytes; forced vhd refuses it.
    let raw = open_disk(&path, InputFormat::Raw).unwrap();
    assert_eq!(raw.size(), std::fs::metadata(&path).unwrap().len());
    assert!(open_disk(&path, InputFormat::Vhd).is_err());
    // A raw file named .vhdx, or forced as vhdx, is refused at offset 0.
    let fake = dir.path().join("fake.vhdx");
    std::fs::write(&fake, vec![7u8; 4096]).unwrap();
    let Err(err) = open_disk(&fake, InputFormat::Auto) else {
        panic!("a raw file named .vhdx opened");
    };
    assert!(err.to_string().contains("not a VHDX"), "{err}");
    assert_eq!(err.offset(), Some(0));
    let fake_raw = dir.path().join("fake.raw");
    std::fs::write(&fake_raw, vec![7u8; 4096]).unwrap();
    assert!(open_disk(&fake_raw, InputFormat::Vhdx).is_err());
    assert!(open_disk(&fake_raw, InputFormat::Auto).is_ok());
}
