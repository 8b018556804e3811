//! The VMDK reader against qemu-img: every input is made by qemu-img (or, for the
//! VMware-style stream layout qemu-img does not write, by a small writer here that qemu-img
//! must read back identically first), and what we read must equal what qemu-img reads.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper2kvm_core::{open_disk, AlignedBuf, DiskReader, ErrorKind, InputFormat, VmdkReader};
use support::{make_raw, qemu_img, s, Fill, Scratch};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Written extents of the 48 MiB test disk: grain-crossing, partial, zeros, the last sector.
fn written() -> Vec<(u64, u64, Fill)> {
    vec![
        (0, 4096, Fill::Text),
        (MIB + 512, 3000, Fill::Noise(1)),
        (5 * MIB - 100, 200 * KIB, Fill::Noise(2)), // crosses many grains and a GT's 32 MiB? no: 5 MiB
        (10 * MIB, 3 * MIB, Fill::Text),
        (17 * MIB, MIB, Fill::Zeros),
        (32 * MIB - 4096, 8192, Fill::Noise(3)), // straddles the first grain table's end
        (48 * MIB - 512, 512, Fill::Text),
    ]
}

fn make_vmdk(raw: &Path, vmdk: &Path, opts: &str) {
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        opts,
        s(raw),
        s(vmdk),
    ]);
}

/// What qemu-img reads from `image` (its format detected), as raw bytes.
fn qemu_reads(image: &Path, dir: &Scratch) -> Vec<u8> {
    let out = dir.path("oracle.raw");
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(image), s(&out)]);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

async fn read(disk: &Arc<dyn DiskReader>, offset: u64, len: u64) -> Vec<u8> {
    disk.read_at(offset, AlignedBuf::from(vec![0xAA; len as usize]))
        .await
        .unwrap()
        .to_vec()
}

/// Reads the whole disk in 4 MiB chunks, as the pipeline does.
async fn read_all(disk: &Arc<dyn DiskReader>) -> Vec<u8> {
    let mut out = Vec::with_capacity(disk.size() as usize);
    let mut pos = 0;
    while pos < disk.size() {
        let n = (4 * MIB).min(disk.size() - pos);
        out.extend_from_slice(&read(disk, pos, n).await);
        pos += n;
    }
    out
}

fn total(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// Ranges sorted, disjoint, inside the disk; every non-zero byte of `want` inside one.
fn check_ranges(ranges: &[Range<u64>], size: u64, want: &[u8]) {
    for pair in ranges.windows(2) {
        assert!(pair[0].end < pair[1].start, "not merged/sorted: {ranges:?}");
    }
    assert!(ranges.iter().all(|r| r.start < r.end && r.end <= size));
    let mut covered = vec![false; want.len()];
    for r in ranges {
        covered[r.start as usize..r.end as usize].fill(true);
    }
    let stray = want.iter().zip(&covered).position(|(&b, &c)| b != 0 && !c);
    assert_eq!(stray, None, "data outside the allocated ranges {ranges:?}");
}

#[tokio::test]
async fn every_subformat_reads_like_qemu_img() {
    let dir = Scratch::new("vmdk-subformats");
    let raw = dir.path("disk.raw");
    make_raw(&raw, 48 * MIB, &written());
    let raw_bytes = std::fs::read(&raw).unwrap();
    let written_bytes: u64 = written().iter().map(|w| w.1).sum();
    for (name, opts) in [
        ("sparse", "subformat=monolithicSparse"),
        ("sparse6", "subformat=monolithicSparse,compat6=on"),
        ("zg", "subformat=monolithicSparse,zeroed_grain=on"),
        ("stream", "subformat=streamOptimized"),
        ("flat", "subformat=monolithicFlat"),
        ("split", "subformat=twoGbMaxExtentSparse"),
        (
            "splitflat",
            "subformat=twoGbMaxExtentFlat,adapter_type=lsilogic",
        ),
    ] {
        let vmdk = dir.path(&format!("{name}.vmdk"));
        make_vmdk(&raw, &vmdk, opts);
        let oracle = qemu_reads(&vmdk, &dir);
        assert_eq!(oracle, raw_bytes, "{name}: qemu-img itself");
        let disk = open_disk(&vmdk, InputFormat::Auto).unwrap();
        assert_eq!(disk.size(), 48 * MIB, "{name}");
        assert_eq!(read_all(&disk).await, oracle, "{name}: whole disk");
        // Odd reads: inside one grain, across grains, across the 32 MiB grain-table edge.
        for (offset, len) in [
            (MIB + 700, 100),
            (5 * MIB - 4096, 300 * KIB + 13),
            (32 * MIB - 6000, 12_000),
            (48 * MIB - 1000, 1000),
        ] {
            let got = read(&disk, offset, len).await;
            assert_eq!(
                got,
                &oracle[offset as usize..(offset + len) as usize],
                "{name}: {len} bytes at {offset}"
            );
        }
        let ranges = disk.allocated_ranges().await.unwrap();
        check_ranges(&ranges, disk.size(), &oracle);
        // Sparse formats allocate whole 64 KiB grains; flat ones what the file system
        // reports, at its block size. Either way, near what was written, not the disk.
        let slack = 8 * 128 * KIB;
        assert!(
            total(&ranges) <= written_bytes + slack,
            "{name}: {} bytes allocated for {written_bytes} written: {ranges:?}",
            total(&ranges)
        );
        // A read past the end is refused, not clipped.
        let err = disk
            .read_at(48 * MIB - 512, AlignedBuf::zeroed(1024))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}");
    }
    let reader = VmdkReader::open(&dir.path("splitflat.vmdk")).unwrap();
    assert_eq!(reader.create_type(), "twoGbMaxExtentFlat");
    assert_eq!(reader.adapter_type(), Some("lsilogic"));
    let reader = VmdkReader::open(&dir.path("stream.vmdk")).unwrap();
    assert_eq!(reader.create_type(), "streamOptimized");
}

#[tokio::test]
async fn zeroed_grain_entries_read_as_zeros_and_are_not_allocated() {
    let dir = Scratch::new("vmdk-zeroed");
    let vmdk = dir.path("zg.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        s(&vmdk),
        "4M",
    ]);
    // The first grain is written, then zeroed: its GT entry becomes 1 while its old data
    // stays in the file. The second keeps its data.
    let out = std::process::Command::new("qemu-io")
        .args([
            "-f",
            "vmdk",
            "-c",
            "write -P 0x55 0 128k",
            "-c",
            "write -z 0 64k",
            s(&vmdk),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disk = open_disk(&vmdk, InputFormat::Vmdk).unwrap();
    assert_eq!(read_all(&disk).await, qemu_reads(&vmdk, &dir));
    assert_eq!(
        disk.allocated_ranges().await.unwrap(),
        vec![64 * KIB..128 * KIB]
    );
}

#[tokio::test]
async fn split_disks_over_2_gib_join_their_extents() {
    let dir = Scratch::new("vmdk-split");
    let raw = dir.path("big.raw");
    let size = 5 * GIB;
    let extents = [
        (0, 4096, Fill::Text),
        (2 * GIB - 100 * KIB, 300 * KIB, Fill::Noise(7)), // across the first extent boundary
        (4 * GIB - 512, 1024, Fill::Text),                // across the second
        (size - 512, 512, Fill::Noise(8)),
    ];
    make_raw(&raw, size, &extents);
    let raw_file = std::fs::File::open(&raw).unwrap();
    let reference = |offset: u64, len: u64| {
        let mut b = vec![0; len as usize];
        raw_file.read_exact_at(&mut b, offset).unwrap();
        b
    };
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let vmdk = dir.path(&format!("{sub}.vmdk"));
        make_vmdk(&raw, &vmdk, &format!("subformat={sub}"));
        let extent_files = dir.files().iter().filter(|f| f.starts_with(sub)).count();
        assert!(
            extent_files >= 4,
            "{sub}: expected a descriptor and 3 extents"
        );
        let disk = open_disk(&vmdk, InputFormat::Auto).unwrap();
        assert_eq!(disk.size(), size, "{sub}");
        let ranges = disk.allocated_ranges().await.unwrap();
        for &(offset, len, _) in &extents {
            assert!(
                ranges
                    .iter()
                    .any(|r| r.start <= offset && r.end >= offset + len)
                    || len > 64 * KIB, // may be split at an extent boundary
                "{sub}: {offset}+{len} not in {ranges:?}"
            );
        }
        assert!(total(&ranges) < 64 * MIB, "{sub}: {ranges:?}");
        // Every allocated byte, and windows around the extent boundaries, equal the raw disk.
        for r in &ranges {
            let mut pos = r.start;
            while pos < r.end {
                let n = (4 * MIB).min(r.end - pos);
                assert_eq!(
                    read(&disk, pos, n).await,
                    reference(pos, n),
                    "{sub} at {pos}"
                );
                pos += n;
            }
        }
        for edge in [2 * GIB, 4 * GIB] {
            let (offset, len) = (edge - 3 * MIB, 6 * MIB);
            assert_eq!(
                read(&disk, offset, len).await,
                reference(offset, len),
                "{sub}"
            );
        }
    }
}

/// Writes `raw` as a stream-optimized VMDK laid out as VMware writes one for an OVA (qemu-img
/// keeps the grain directory at the start instead): header with gdOffset = GD_AT_END,
/// descriptor, deflated grains behind markers, then GT markers and tables, the GD, the footer
/// and the end-of-stream marker.
fn write_vmware_stream(raw: &[u8], out: &Path) {
    const GRAIN: usize = 64 * 1024;
    let sectors = raw.len() as u64 / 512;
    let descriptor = format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n\
RW {sectors} SPARSE \"stream.vmdk\"\n\nddb.adapterType = \"lsilogic\"\n"
    );
    let header = |gd: u64| {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(1u32 | 1 << 16 | 1 << 17).to_le_bytes());
        h[12..20].copy_from_slice(&sectors.to_le_bytes());
        h[20..28].copy_from_slice(&128u64.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&2u64.to_le_bytes());
        h[44..48].copy_from_slice(&512u32.to_le_bytes());
        h[56..64].copy_from_slice(&gd.to_le_bytes());
        h[64..72].copy_from_slice(&128u64.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    };
    let pad = |f: &mut Vec<u8>| f.resize(f.len().div_ceil(512) * 512, 0);
    let marker = |f: &mut Vec<u8>, val: u64, kind: u32| {
        let mut m = vec![0u8; 512];
        m[..8].copy_from_slice(&val.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&m);
    };
    let mut f = header(u64::MAX);
    f.extend_from_slice(descriptor.as_bytes());
    f.resize(128 * 512, 0);
    let grains = raw.len().div_ceil(GRAIN);
    let mut gtes = vec![0u32; grains.div_ceil(512) * 512];
    for (g, data) in raw.chunks(GRAIN).enumerate() {
        if data.iter().all(|&b| b == 0) {
            continue;
        }
        gtes[g] = (f.len() / 512) as u32;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap(); // the last grain may be short: only the guest's bytes
        let z = enc.finish().unwrap();
        f.extend_from_slice(&((g * GRAIN / 512) as u64).to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&z);
        pad(&mut f);
    }
    let mut gd = Vec::new();
    for table in gtes.chunks(512) {
        if table.iter().all(|&e| e == 0) {
            gd.push(0u32);
            continue;
        }
        marker(&mut f, 4, 1);
        gd.push((f.len() / 512) as u32);
        for e in table {
            f.extend_from_slice(&e.to_le_bytes());
        }
    }
    marker(&mut f, (gd.len() * 4).div_ceil(512) as u64, 2);
    let gd_sector = (f.len() / 512) as u64;
    for e in &gd {
        f.extend_from_slice(&e.to_le_bytes());
    }
    pad(&mut f);
    marker(&mut f, 1, 3);
    f.extend_from_slice(&header(gd_sector));
    marker(&mut f, 0, 0);
    std::fs::write(out, f).unwrap();
}

#[tokio::test]
async fn vmware_stream_with_footer_reads_like_qemu_img() {
    let dir = Scratch::new("vmdk-vmware-stream");
    let raw = dir.path("disk.raw");
    // 40 MiB plus three sectors: more than one grain table, and a short last grain.
    make_raw(&raw, 40 * MIB + 1536, &written()[..6]);
    let raw_bytes = std::fs::read(&raw).unwrap();
    let vmdk = dir.path("stream.vmdk");
    write_vmware_stream(&raw_bytes, &vmdk);
    assert_eq!(
        qemu_reads(&vmdk, &dir),
        raw_bytes,
        "qemu-img must agree with the writer"
    );
    let disk = open_disk(&vmdk, InputFormat::Auto).unwrap();
    assert_eq!(disk.size(), raw_bytes.len() as u64);
    assert_eq!(read_all(&disk).await, raw_bytes);
    // Reads smaller than a grain, and a grain read in two halves (the cached path).
    for (offset, len) in [
        (MIB + 512, 3000),
        (5 * MIB - 100, 64 * KIB),
        (5 * MIB + 32 * KIB, 32 * KIB),
    ] {
        let got = read(&disk, offset, len).await;
        assert_eq!(got, &raw_bytes[offset as usize..(offset + len) as usize]);
    }
    check_ranges(
        &disk.allocated_ranges().await.unwrap(),
        disk.size(),
        &raw_bytes,
    );

    // Without its footer (a download cut short) it must say so, not read garbage.
    let len = std::fs::metadata(&vmdk).unwrap().len();
    let cut = dir.path("cut.vmdk");
    std::fs::copy(&vmdk, &cut).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 2048)
        .unwrap();
    let err = open_err(&cut);
    assert_eq!(err.kind(), ErrorKind::InvalidFormat);
    let msg = err.to_string();
    assert!(
        msg.contains("cut.vmdk") && msg.contains("footer") && msg.contains("truncated"),
        "{msg}"
    );
}

/// A qemu-img monolithicSparse of a 4 MiB disk with data in its first grains.
fn small_sparse(dir: &Scratch, name: &str) -> PathBuf {
    let raw = dir.path("small.raw");
    make_raw(&raw, 4 * MIB, &[(0, 256 * KIB, Fill::Noise(4))]);
    let vmdk = dir.path(name);
    make_vmdk(&raw, &vmdk, "subformat=monolithicSparse");
    vmdk
}

fn le32_at(path: &Path, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    u32::from_le_bytes(b)
}

fn le64_at(path: &Path, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    u64::from_le_bytes(b)
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

fn open_err(path: &Path) -> hyper2kvm_core::Error {
    match open_disk(path, InputFormat::Auto) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn grain_table_entry_past_the_end_names_entry_and_offset() {
    let dir = Scratch::new("vmdk-gte");
    let vmdk = small_sparse(&dir, "disk.vmdk");
    let gd = le64_at(&vmdk, 56) * 512;
    let gt = u64::from(le32_at(&vmdk, gd)) * 512;
    let entry = gt + 2 * 4;
    assert_ne!(le32_at(&vmdk, entry), 0, "grain 2 holds data");
    patch(&vmdk, entry, &0x00ff_0000u32.to_le_bytes());
    let err = open_err(&vmdk);
    assert_eq!(err.kind(), ErrorKind::InvalidFormat);
    assert_eq!(err.offset(), Some(entry));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: grain table entry 2 ", vmdk.display()))
            && msg.contains("points past the end of the file")
            && msg.ends_with(&format!("at offset {entry}")),
        "{msg}"
    );
}

#[test]
fn absurd_header_fields_fail_without_huge_allocations() {
    let dir = Scratch::new("vmdk-absurd");
    for (field, value, want) in [
        (12u64, u64::MAX.to_le_bytes().to_vec(), "overflows"), // capacity
        (
            12,
            (1u64 << 50).to_le_bytes().to_vec(),
            "does not fit in the",
        ), // capacity: 512 PiB
        (20, 0u64.to_le_bytes().to_vec(), "grain size"),
        (20, (1u64 << 40).to_le_bytes().to_vec(), "grain size"),
        (44, 0u32.to_le_bytes().to_vec(), "numGTEsPerGT"),
        (44, 1_000_000u32.to_le_bytes().to_vec(), "numGTEsPerGT"),
        (
            36,
            (1u64 << 40).to_le_bytes().to_vec(),
            "embedded descriptor",
        ), // descriptorSize
        (4, 9u32.to_le_bytes().to_vec(), "version 9"),
    ] {
        let vmdk = small_sparse(&dir, "disk.vmdk");
        patch(&vmdk, field, &value);
        let err = open_err(&vmdk);
        let msg = err.to_string();
        assert!(
            msg.contains("disk.vmdk") && msg.contains(want),
            "field {field}: {msg}"
        );
    }
    // A primary grain directory past the end falls back to the redundant one (qemu-img
    // writes both) ...
    let vmdk = small_sparse(&dir, "disk.vmdk");
    let want = std::fs::read(dir.path("small.raw")).unwrap();
    patch(&vmdk, 56, &(1u64 << 40).to_le_bytes());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let disk = open_disk(&vmdk, InputFormat::Auto).unwrap();
    assert_eq!(
        rt.block_on(disk.read_at(0, AlignedBuf::zeroed(4 * MIB as usize)))
            .unwrap(),
        want
    );
    // ... and with both broken, the primary's error is reported.
    patch(&vmdk, 48, &(1u64 << 41).to_le_bytes());
    let msg = open_err(&vmdk).to_string();
    assert!(
        msg.contains("grain directory at sector 1099511627776"),
        "{msg}"
    );
    assert!(msg.contains("does not fit in the"), "{msg}");
}

#[test]
fn bad_magic_unsupported_types_deltas_and_missing_extents() {
    let dir = Scratch::new("vmdk-bad");
    // Not a VMDK, when one was asked for.
    let junk = dir.path("junk.vmdk");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let err = open_disk(&junk, InputFormat::Vmdk)
        .err()
        .expect("junk opened");
    assert!(err.to_string().contains("junk.vmdk: not a VMDK"), "{err}");
    // COWD (ESX 2 / vmfsSparse) extents.
    let cowd = dir.path("cowd.vmdk");
    std::fs::write(&cowd, [b"COWD".as_slice(), &[0u8; 2044]].concat()).unwrap();
    assert_eq!(open_err(&cowd).kind(), ErrorKind::Unsupported);

    let descriptor = |name: &str, create_type: &str, parent: &str, extents: &str| {
        let path = dir.path(name);
        std::fs::write(
            &path,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID={parent}\n\
createType=\"{create_type}\"\n{extents}\nddb.adapterType = \"ide\"\n"
            ),
        )
        .unwrap();
        path
    };
    let d = descriptor(
        "rdm.vmdk",
        "vmfsRawDeviceMap",
        "ffffffff",
        "RW 8 VMFSRDM \"x\"\n",
    );
    let err = open_err(&d);
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(
        err.to_string()
            .contains("\"vmfsRawDeviceMap\" is not supported"),
        "{err}"
    );

    let d = descriptor(
        "delta.vmdk",
        "monolithicSparse",
        "abcdef01",
        "parentFileNameHint=\"base.vmdk\"\nRW 8 SPARSE \"delta-s.vmdk\"\n",
    );
    let err = open_err(&d);
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let msg = err.to_string();
    assert!(
        msg.contains("delta.vmdk") && msg.contains("delta VMDK") && msg.contains("base.vmdk"),
        "{msg}"
    );

    let d = descriptor(
        "odd.vmdk",
        "vmfs",
        "ffffffff",
        "RW 8 SESPARSE \"x-sesparse.vmdk\"\n",
    );
    let err = open_err(&d);
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(
        err.to_string().contains("line 6: extent type SESPARSE"),
        "{err}"
    );

    let d = descriptor(
        "gone.vmdk",
        "twoGbMaxExtentFlat",
        "ffffffff",
        "RW 8 FLAT \"gone-f001.vmdk\" 0\n",
    );
    let err = open_err(&d);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: ", d.display())) && msg.contains("\"gone-f001.vmdk\""),
        "{msg}"
    );
    assert!(msg.contains("No such file"), "{msg}");

    // A flat extent shorter than its line says.
    std::fs::write(dir.path("short-flat.vmdk"), vec![1u8; 2048]).unwrap();
    let d = descriptor(
        "short.vmdk",
        "monolithicFlat",
        "ffffffff",
        "RW 8 FLAT \"short-flat.vmdk\" 0\n",
    );
    let msg = open_err(&d).to_string();
    assert!(
        msg.contains("short-flat.vmdk") && msg.contains("truncated"),
        "{msg}"
    );

    // A ZERO extent and an offset flat extent are fine: 4 sectors of data after 8 of zeros.
    let d = descriptor(
        "mixed.vmdk",
        "monolithicFlat",
        "ffffffff",
        "RW 8 ZERO\nRW 2 FLAT \"short-flat.vmdk\" 2\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let disk = open_disk(&d, InputFormat::Auto).unwrap();
    assert_eq!(disk.size(), 10 * 512);
    let bytes = rt
        .block_on(disk.read_at(0, AlignedBuf::from(vec![9; 10 * 512])))
        .unwrap();
    assert!(bytes[..4096].iter().all(|&b| b == 0) && bytes[4096..].iter().all(|&b| b == 1));
}

#[tokio::test]
async fn truncated_files_fail_cleanly() {
    let dir = Scratch::new("vmdk-truncated");
    let raw = dir.path("disk.raw");
    make_raw(&raw, 8 * MIB, &[(0, 2 * MIB, Fill::Noise(9))]);
    for sub in ["monolithicSparse", "streamOptimized"] {
        let vmdk = dir.path(&format!("{sub}.vmdk"));
        make_vmdk(&raw, &vmdk, &format!("subformat={sub}"));
        let len = std::fs::metadata(&vmdk).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&vmdk)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        // Either open finds an entry past the end, or the read finds the grain cut short.
        let err = match open_disk(&vmdk, InputFormat::Auto) {
            Err(e) => e,
            Ok(disk) => read_all_err(&disk).await,
        };
        let msg = err.to_string();
        assert!(msg.contains(&format!("{sub}.vmdk")), "{msg}");
        assert!(
            msg.contains("past the end") || msg.contains("truncated"),
            "{sub}: {msg}"
        );
    }
}

async fn read_all_err(disk: &Arc<dyn DiskReader>) -> hyper2kvm_core::Error {
    let mut pos = 0;
    while pos < disk.size() {
        let n = (4 * MIB).min(disk.size() - pos);
        if let Err(e) = disk.read_at(pos, AlignedBuf::zeroed(n as usize)).await {
            return e;
        }
        pos += n;
    }
    panic!("{} read without error", disk.describe());
}

#[test]
fn grain_tables_shared_by_directory_entries_are_refused() {
    let dir = Scratch::new("vmdk-shared-gt");
    let raw = dir.path("two.raw");
    make_raw(
        &raw,
        64 * MIB,
        &[(0, 4096, Fill::Text), (40 * MIB, 4096, Fill::Text)],
    );
    let vmdk = dir.path("two.vmdk");
    make_vmdk(&raw, &vmdk, "subformat=monolithicSparse");
    // Both directories (primary and redundant) get entry 1 pointing at entry 0's table.
    for field in [56, 48] {
        let gd = le64_at(&vmdk, field) * 512;
        let first = le32_at(&vmdk, gd);
        assert_ne!(le32_at(&vmdk, gd + 4), 0);
        patch(&vmdk, gd + 4, &first.to_le_bytes());
    }
    let err = open_err(&vmdk);
    let msg = err.to_string();
    assert!(
        msg.contains("two.vmdk") && msg.contains("entries 0 and 1 both point"),
        "{msg}"
    );
}

/// A copy of `vmdk` inside a larger file: `base` bytes of filler before it, 3000 after, as a
/// disk sits inside an OVA. Returns the file and the VMDK's length.
fn embed(dir: &Scratch, vmdk: &Path, base: u64, name: &str) -> (PathBuf, u64) {
    let bytes = std::fs::read(vmdk).unwrap();
    let mut out = vec![0x5Au8; base as usize];
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&[0xA5u8; 3000]);
    let path = dir.path(name);
    std::fs::write(&path, &out).unwrap();
    (path, bytes.len() as u64)
}

#[tokio::test]
async fn a_vmdk_inside_a_larger_file_reads_in_place() {
    let dir = Scratch::new("vmdk-region");
    let raw = dir.path("disk.raw");
    make_raw(&raw, 48 * MIB, &written());
    let raw_bytes = std::fs::read(&raw).unwrap();
    // 7 × 512: aligned as tar members are, but not to any grain or page.
    let base = 7 * 512;
    for (name, opts) in [
        ("stream", "subformat=streamOptimized"),
        ("sparse", "subformat=monolithicSparse"),
    ] {
        let vmdk = dir.path(&format!("{name}.vmdk"));
        make_vmdk(&raw, &vmdk, opts);
        let (outer, len) = embed(&dir, &vmdk, base, &format!("{name}.ova"));
        let reader = VmdkReader::open_region(&outer, base, len, &format!("{name}.vmdk")).unwrap();
        assert_eq!(reader.size(), 48 * MIB, "{name}");
        assert!(
            reader
                .describe()
                .ends_with(&format!("{name}.ova({name}.vmdk)")),
            "{}",
            reader.describe()
        );
        let disk: Arc<dyn DiskReader> = Arc::new(reader);
        assert_eq!(read_all(&disk).await, raw_bytes, "{name}: whole disk");
        let ranges = disk.allocated_ranges().await.unwrap();
        check_ranges(&ranges, disk.size(), &raw_bytes);
    }
}

#[tokio::test]
async fn a_region_cut_short_fails_naming_the_member() {
    let dir = Scratch::new("vmdk-region-cut");
    let raw = dir.path("disk.raw");
    make_raw(&raw, 8 * MIB, &[(0, 2 * MIB, Fill::Noise(9))]);
    let vmdk = dir.path("d.vmdk");
    make_vmdk(&raw, &vmdk, "subformat=streamOptimized");
    let (outer, len) = embed(&dir, &vmdk, 1024, "x.ova");
    // The member claims half the VMDK's bytes: the bytes after the member are not read as if
    // they were its own, so its tables or grains run past its end.
    let err = match VmdkReader::open_region(&outer, 1024, len / 2, "d.vmdk") {
        Err(e) => e,
        Ok(reader) => read_all_err(&(Arc::new(reader) as Arc<dyn DiskReader>)).await,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("x.ova(d.vmdk): ")
            && (msg.contains("past the end") || msg.contains("truncated")),
        "{msg}"
    );
    // A region past the end of the file.
    let err = VmdkReader::open_region(&outer, 1024, len + 4096, "d.vmdk").unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // A grain table entry past the member's end names the member-relative offset.
    let sparse = small_sparse(&dir, "s.vmdk");
    let gd = le64_at(&sparse, 56) * 512;
    let gt = u64::from(le32_at(&sparse, gd)) * 512;
    let entry = gt + 2 * 4;
    patch(&sparse, entry, &0x00ff_0000u32.to_le_bytes());
    let (outer, len) = embed(&dir, &sparse, 3584, "s.ova");
    let err = VmdkReader::open_region(&outer, 3584, len, "s.vmdk").unwrap_err();
    assert_eq!(err.offset(), Some(entry));
    assert!(
        err.to_string()
            .contains("s.ova(s.vmdk): grain table entry 2"),
        "{err}"
    );
}
