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
use crate::error::{Error, ErrorKind, Result};

/// zstd's default level here: 1, the fastest standard level, which still compresses
/// file-system data well (docs/BENCHMARKS.md compares it with qemu's default of 3).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// deflate's default level: zlib's default, 6, as qemu uses.
pub const DEFAULT_DEFLATE_LEVEL: i32 = 6;

/// A compression algorithm at a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    kind: Compression,
    level: i32,
}

impl Codec {
    /// `kind` at `level`, or at its default level. zstd takes -7 (fastest) to 19, deflate 1
    /// to 9.
    pub fn new(kind: Compression, level: Option<i32>) -> Result<Codec> {
        let (range, default) = match kind {
            Compression::Zstd => (-7..=19, DEFAULT_ZSTD_LEVEL),
            Compression::Deflate => (1..=9, DEFAULT_DEFLATE_LEVEL),
        };
        let level = level.unwrap_or(default);
        if !range.contains(&level) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{kind} level {level} is outside {}..={}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(Codec { kind, level })
    }

    /// The algorithm.
    pub fn kind(&self) -> Compression {
        self.kind
    }

    /// The level.
    pub fn level(&self) -> i32 {
        self.level
    }
}

thread_local! {
    // One context per thread, rebuilt only when the level changes.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DEFLATE: RefCell<Option<(i32, Compress)>> = const { RefCell::new(None) };
}

/// Compresses one cluster and appends the result to `out`. Returns the number of bytes
/// appended, or `None` (appending nothing) when compression would not save space.
///
/// Both codecs write straight into `out`'s spare capacity, reserved for the worst case: no
/// scratch buffer, no second copy of the compressed bytes.
pub fn compress_cluster(codec: Codec, cluster: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let level = codec.level;
    let start = out.len();
    // Room for the worst case: zlib-rs panics (rather than failing) when a stored block does
    // not fit the output, so compress fully and judge the size afterwards.
    out.reserve(worst_case(cluster.len()));
    let n = match codec.kind {
        Compression::Zstd => ZSTD.with_borrow_mut(|z| {
            if z.as_ref().is_none_or(|(l, _)| *l != level) {
                let c = zstd::bulk::Compressor::new(level).expect("zstd context");
                *z = Some((level, c));
            }
            let (_, z) = z.as_mut().unwrap();
            // A cursor at the end appends: zstd writes into the capacity after it.
            let mut tail = std::io::Cursor::new(&mut *out);
            tail.set_position(start as u64);
            z.compress_to_buffer(cluster, &mut tail).ok()
        }),
        Compression::Deflate => DEFLATE.with_borrow_mut(|d| {
            if d.as_ref().is_none_or(|(l, _)| *l != level) {
                let gz = flate2::Compression::new(level as u32);
                *d = Some((level, Compress::new_with_window_bits(gz, false, 12)));
            }
            let (_, d) = d.as_mut().unwrap();
            d.reset();
            // `compress_vec` appends into the spare capacity and never grows the vector.
            match d.compress_vec(cluster, out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => Some(d.total_out() as usize),
                _ => None,
            }
        }),
    };
    // Only fewer bytes than the cluster are worth it (and fit the L2 entry's sector count).
    match n {
        Some(n) if n < cluster.len() && out.len() == start + n => Some(n),
        _ => {
            out.truncate(start);
            None
        }
    }
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

    fn zstd() -> Codec {
        Codec::new(Compression::Zstd, None).unwrap()
    }

    #[test]
    fn levels_are_checked_and_switchable() {
        assert!(Codec::new(Compression::Zstd, Some(20)).is_err());
        assert!(Codec::new(Compression::Deflate, Some(0)).is_err());
        let cluster = text_cluster(65536);
        let (mut fast, mut small) = (Vec::new(), Vec::new());
        let fastest = Codec::new(Compression::Zstd, Some(-7)).unwrap();
        compress_cluster(fastest, &cluster, &mut fast).unwrap();
        compress_cluster(
            Codec::new(Compression::Zstd, Some(19)).unwrap(),
            &cluster,
            &mut small,
        )
        .unwrap();
        assert!(small.len() <= fast.len());
        assert_eq!(zstd::bulk::decompress(&fast, 65536).unwrap(), cluster);
    }

    #[test]
    fn zstd_round_trips() {
        let cluster = text_cluster(65536);
        let mut out = vec![7u8]; // appends after existing bytes
        let n = compress_cluster(zstd(), &cluster, &mut out).unwrap();
        assert_eq!(out.len(), 1 + n);
        assert!(n < 1000);
        assert_eq!(zstd::bulk::decompress(&out[1..], 65536).unwrap(), cluster);
    }

    #[test]
    fn deflate_is_raw_with_small_window() {
        let cluster = text_cluster(65536);
        let mut out = vec![7u8, 8]; // appends after existing bytes
        let n = compress_cluster(
            Codec::new(Compression::Deflate, None).unwrap(),
            &cluster,
            &mut out,
        )
        .unwrap();
        assert_eq!((out.len(), &out[..2]), (2 + n, &[7u8, 8][..]));
        // Inflate exactly as qemu does: raw, windowBits 12.
        let mut d = Decompress::new_with_window_bits(false, 12);
        let mut back = vec![0u8; 65536];
        d.decompress(&out[2..], &mut back, FlushDecompress::Finish)
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
            let mut out = vec![1u8, 2, 3]; // what was there stays, nothing is appended
            let codec = Codec::new(kind, None).unwrap();
            assert_eq!(compress_cluster(codec, &noise, &mut out), None, "{kind:?}");
            assert_eq!(out, [1, 2, 3], "{kind:?}");
        }
    }
}
