//! Warm migration's cutover cost on one machine, without a network: a 32 GiB disk with
//! 4 GiB written is converted to qcow2 (what a cold migration does with the disk), then 1%
//! of its written bytes change (writes and trims) and the delta is applied in place (what a
//! cutover does). Prints both times and their ratio, and checks the result with qemu-img.
//!
//! `cargo run --release -p hyper2kvm-core --example delta_rate -- DIR`

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use hyper2kvm_core::{apply_delta, convert, ChangedRanges, ConvertOptions, RawFileReader};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn noise(seed: u64, buf: &mut [u8]) {
    let mut x = seed | 1;
    for c in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
}

#[tokio::main]
async fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/tmp".into()));
    let raw = dir.join("delta-rate.raw");
    let img = dir.join("delta-rate.qcow2");
    let (size, written, extent) = (32 * GIB, 4 * GIB, 4 * MIB);
    // 4 GiB in 4 MiB extents spread evenly over 32 GiB.
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&raw)
        .unwrap();
    f.set_len(size).unwrap();
    let n = written / extent;
    let stride = size / n;
    let mut buf = vec![0u8; extent as usize];
    for i in 0..n {
        noise(i + 1, &mut buf);
        f.write_all_at(&buf, i * stride).unwrap();
    }
    f.sync_all().unwrap();

    let opts = ConvertOptions::default();
    let t = Instant::now();
    let reader = Arc::new(RawFileReader::open(&raw).unwrap());
    convert(reader, &img, &opts, None).await.unwrap();
    let cold = t.elapsed();

    // 1% of the written bytes change: 64 KiB writes and trims scattered over the extents.
    let (mut changes, mut changed) = (ChangedRanges::default(), 0u64);
    let piece = 64 * 1024u64;
    let mut k = 0u64;
    while changed < written / 100 {
        let at = (k * 7 % n) * stride + (k * 13 % (extent / piece)) * piece;
        if k % 4 == 3 {
            f.write_all_at(&vec![0u8; piece as usize], at).unwrap();
            changes.cleared.push(at..at + piece);
        } else {
            let mut b = vec![0u8; piece as usize];
            noise(1000 + k, &mut b);
            f.write_all_at(&b, at).unwrap();
            changes.written.push(at..at + piece);
        }
        changed += piece;
        k += 1;
    }
    f.sync_all().unwrap();
    for list in [&mut changes.written, &mut changes.cleared] {
        list.sort_by_key(|r| r.start);
        list.dedup();
    }
    // A range both written and cleared: the later change wins in the file; keep the diff
    // disjoint as Azure's is.
    let cleared = changes.cleared.clone();
    changes
        .written
        .retain(|w| !cleared.iter().any(|c| c.start < w.end && w.start < c.end));

    let t = Instant::now();
    let reader = Arc::new(RawFileReader::open(&raw).unwrap());
    let stats = apply_delta(reader, &img, &changes, 8, 4 * MIB)
        .await
        .unwrap();
    let delta = t.elapsed();
    println!(
        "cold convert: {:.2} s for {} MiB written; delta: {:.3} s for {} MiB written + {} MiB cleared; ratio {:.4}",
        cold.as_secs_f64(),
        written / MIB,
        delta.as_secs_f64(),
        stats.bytes_written / MIB,
        stats.bytes_cleared / MIB,
        delta.as_secs_f64() / cold.as_secs_f64()
    );
    for args in [
        vec!["check", "-f", "qcow2", img.to_str().unwrap()],
        vec![
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("qemu-img").args(&args).output().unwrap();
        println!(
            "qemu-img {}: {}",
            args[0],
            if out.status.success() { "ok" } else { "FAILED" }
        );
    }
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&img);
}
