//! Per-cluster compression, as qemu reads it back.
//!
//! * zstd: one frame per cluster (qemu decompresses until the cluster is full, so trailing
//!   bytes of the last sector do not matter).
//! * deflate: raw deflate (no zlib header) with a 4 KiB window; qemu inflates with
//!   `windowBits = -12`, so a larger window would produce images qemu cannot read.
//!
//! A cluster is stored compressed only when that saves space: the compressed bytes must be
//! fewer than the cluster size, which also keeps the sector count within the L2 entry's field.

use std::cell::RefCell;

use flate2::{Compress, FlushCompress, Status};

use super::Compression;

/// zstd level: 1 is the fastest standard level and still compresses file-system data well
/// (see docs/BENCHMARKS.md for the trade-off against qemu's default of 3).
pub const ZSTD_LEVEL: i32 = 1;

thread_local! {
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses one cluster and appends the result to `out`. Returns the number of bytes
/// appended, or `None` (appending nothing) when compression would not save space.
pub fn compress_cluster(kind: Compression, cluster: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    SCRATCH.with_borrow_mut(|scratch| {
        // Room for the worst case: zlib-rs panics (rather than failing) when a stored block
        // does not fit the output, so compress fully and judge the size afterwards.
        scratch.resize(worst_case(cluster.len()), 0);
        let n = match kind {
            Compression::Zstd => ZSTD.with_borrow_mut(|z| {
                let z = z.get_or_insert_with(|| {
                    zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context")
                });
                z.compress_to_buffer(cluster, &mut scratch[..]).ok()
            }),
            Compression::Deflate => DEFLATE.with_borrow_mut(|d| {
                let d = d.get_or_insert_with(|| {
                    Compress::new_with_window_bits(flate2::Compression::default(), false, 12)
                });
                d.reset();
                match d.compress(cluster, &mut scratch[..], FlushCompress::Finish) {
                    Ok(Status::StreamEnd) => Some(d.total_out() as usize),
                    _ => None,
                }
            }),
        }?;
        // Only fewer bytes than the cluster are worth it (and fit the L2 entry's sector count).
        if n >= cluster.len() {
            return None;
        }
        out.extend_from_slice(&scratch[..n]);
        Some(n)
    })
}

/// An output size neither codec exceeds for `n` input bytes: above zstd's `ZSTD_COMPRESSBOUND`
/// (n + n/256, plus up to 64 bytes for inputs under 128 KiB) and deflate's of about
/// n + 5 bytes per 16 KiB stored block.
fn worst_case(n: usize) -> usize {
    n + n / 128 + 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn text_cluster(len: usize) -> Vec<u8> {
        b"hyper2kvm moves virtual machines from Azure to KVM. "
            .iter()
            .cycle()
            .take(len)
            .copied()
            .collect()
    }

    #[test]
    fn zstd_round_trips() {
        let cluster = text_cluster(65536);
        let mut out = vec![7u8]; // appends after existing bytes
        let n = compress_cluster(Compression::Zstd, &cluster, &mut out).unwrap();
        assert_eq!(out.len(), 1 + n);
        assert!(n < 1000);
        assert_eq!(zstd::bulk::decompress(&out[1..], 65536).unwrap(), cluster);
    }

    #[test]
    fn deflate_is_raw_with_small_window() {
        let cluster = text_cluster(65536);
        let mut out = Vec::new();
        compress_cluster(Compression::Deflate, &cluster, &mut out).unwrap();
        // Inflate exactly as qemu does: raw, windowBits 12.
        let mut d = Decompress::new_with_window_bits(false, 12);
        let mut back = vec![0u8; 65536];
        d.decompress(&out, &mut back, FlushDecompress::Finish)
            .unwrap();
        assert_eq!(d.total_out(), 65536);
        assert_eq!(back, cluster);
    }

    #[test]
    fn incompressible_data_is_refused() {
        // A xorshift stream does not compress.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for kind in [Compression::Zstd, Compression::Deflate] {
            let mut out = Vec::new();
            assert_eq!(compress_cluster(kind, &noise, &mut out), None, "{kind:?}");
            assert!(out.is_empty());
        }
    }
}
