//! The stream-optimized form ("Virtual Disk Format 5.0", section "Stream-Optimized Compressed
//! Sparse Extents"), as found in OVA files: grains deflated one by one, each behind a grain
//! marker `{lba: u64, size: u32}`, and the grain tables and directory written after the
//! grains. The header then says `gdOffset = GD_AT_END`; the real header is the footer near the
//! end of the file:
//!
//! ```text
//! ... grains ... | GT marker, GT | ... | GD marker, GD | FOOTER marker | footer | EOS marker
//!                                                        end - 1536       - 1024    - 512
//! ```
//!
//! This module finds that footer and inflates grains. A reader of a 4 MiB chunk inflates each
//! of its grains once, straight into the caller's buffer when the whole grain is wanted; the
//! few grains a chunk only partly covers (a chunk smaller than a grain, an extent boundary
//! inside a grain) are kept in a small cache so the next chunk does not inflate them again.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use flate2::{Decompress, FlushDecompress, Status};

use super::header::{
    Marker, SparseHeader, GD_AT_END, GRAIN_MARKER_LEN, HEADER_LEN, MARKER_EOS, MARKER_FOOTER,
    SECTOR,
};
use super::region::{read_into, Region};
use crate::error::{Error, ErrorKind, Result};

/// Footer marker, footer and end-of-stream marker: the last three sectors.
const TAIL_LEN: u64 = 3 * SECTOR;

/// Reads the footer of a stream-optimized extent whose header says [`GD_AT_END`] and returns
/// the header it holds, with the file offset it was read from.
pub(crate) fn read_footer(
    file: &Region,
    path: &Path,
    file_len: u64,
) -> Result<(SparseHeader, u64)> {
    // Like qemu, look at whole sectors: a stream is written in sectors.
    let end = file_len / SECTOR * SECTOR;
    let missing = |at: u64, why: &str| {
        Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "streamOptimized VMDK without its footer ({why}); its header says the grain directory is at the end, so the file is truncated or was not completely written"
            ),
        )
        .with_path(path)
        .at_offset(at)
    };
    if end < TAIL_LEN + SECTOR {
        return Err(missing(0, "the file is too short to hold one"));
    }
    let at = end - TAIL_LEN;
    let mut tail = vec![0u8; TAIL_LEN as usize];
    read_into(file, path, &mut tail, at)?;
    let footer_marker = Marker::parse(&tail[..16]);
    let eos = Marker::parse(&tail[1024..1040]);
    if !footer_marker.is(MARKER_FOOTER) {
        return Err(missing(at, "no footer marker 1536 bytes before the end"));
    }
    if !(eos.is(MARKER_EOS) && eos.val == 0) {
        return Err(missing(
            at + 1024,
            "no end-of-stream marker in the last sector",
        ));
    }
    let footer_at = at + SECTOR;
    let bytes: &[u8; HEADER_LEN] = tail[512..1024].try_into().unwrap();
    let header = SparseHeader::parse(bytes, footer_at).map_err(|e| e.with_path(path))?;
    if header.gd_offset == GD_AT_END {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            "streamOptimized VMDK footer still says the grain directory is at the end (gdOffset = GD_AT_END)",
        )
        .with_path(path)
        .at_offset(footer_at + SparseHeader::GD_OFFSET_FIELD));
    }
    Ok((header, footer_at))
}

/// Per-read state for inflating grains: one zlib state reset between grains, and a buffer
/// for the compressed bytes. A read creates one and drops it at the end.
pub(crate) struct Inflater {
    z: Decompress,
    compressed: Vec<u8>,
}

impl Inflater {
    pub(crate) fn new() -> Self {
        Inflater {
            z: Decompress::new(true),
            compressed: Vec::new(),
        }
    }
}

/// Where a compressed grain is and what it must inflate to.
pub(crate) struct CompressedGrain<'a> {
    pub file: &'a Region,
    pub path: &'a Path,
    pub file_len: u64,
    /// Byte offset of the grain marker (or of the bare deflate stream without markers).
    pub at: u64,
    /// The grain's first sector in its extent, which a marker must repeat.
    pub lba: u64,
    /// Whether a 12-byte grain marker precedes the data.
    pub marker: bool,
    /// The size of a whole grain in bytes.
    pub grain_bytes: usize,
}

impl CompressedGrain<'_> {
    fn error(&self, msg: String) -> Error {
        Error::new(ErrorKind::InvalidFormat, msg)
            .with_path(self.path)
            .at_offset(self.at)
    }

    /// Inflates the grain into `out`, which is the grain's guest-visible length: a whole
    /// grain, or less for the last grain of an extent whose size is not a multiple of grains.
    pub(crate) fn inflate_into(&self, out: &mut [u8], inf: &mut Inflater) -> Result<()> {
        let avail = self.file_len.saturating_sub(self.at);
        // Deflate grows incompressible data by a few bytes per 16 KiB block; a grain marker
        // claiming more than this is damage, not data.
        let bound = (self.grain_bytes as u64) + (self.grain_bytes as u64 >> 4) + 4096;
        let (start, len) = if self.marker {
            let mut head = [0u8; GRAIN_MARKER_LEN];
            if avail < GRAIN_MARKER_LEN as u64 {
                return Err(self.error("grain marker past the end of the file (truncated?)".into()));
            }
            read_into(self.file, self.path, &mut head, self.at)?;
            let lba = u64::from_le_bytes(head[..8].try_into().unwrap());
            let size = u64::from(u32::from_le_bytes(head[8..12].try_into().unwrap()));
            if size == 0 {
                return Err(self.error(format!(
                    "a grain table entry points at a metadata marker, not at the grain for sector {}",
                    self.lba
                )));
            }
            if lba != self.lba {
                return Err(self.error(format!(
                    "grain marker is for sector {lba}, but the grain table puts it at sector {}",
                    self.lba
                )));
            }
            if size > bound {
                return Err(self.error(format!(
                    "grain marker claims {size} compressed bytes for a {}-byte grain",
                    self.grain_bytes
                )));
            }
            if GRAIN_MARKER_LEN as u64 + size > avail {
                return Err(self.error(format!(
                    "compressed grain of {size} bytes runs past the end of the file (truncated?)"
                )));
            }
            (self.at + GRAIN_MARKER_LEN as u64, size as usize)
        } else {
            // Without markers the deflate stream's own end says where the grain stops.
            (self.at, bound.min(avail) as usize)
        };
        inf.compressed.resize(len, 0);
        read_into(self.file, self.path, &mut inf.compressed, start)?;

        if out.len() == self.grain_bytes {
            return self.inflate_exact(out, inf);
        }
        // A short last grain: writers may still have deflated a whole grain.
        let mut whole = vec![0u8; self.grain_bytes];
        let produced = self.inflate(&mut whole, inf)?;
        if produced < out.len() {
            return Err(self.short(produced, out.len()));
        }
        out.copy_from_slice(&whole[..out.len()]);
        Ok(())
    }

    fn inflate_exact(&self, out: &mut [u8], inf: &mut Inflater) -> Result<()> {
        let produced = self.inflate(out, inf)?;
        if produced != out.len() {
            return Err(self.short(produced, out.len()));
        }
        Ok(())
    }

    fn short(&self, produced: usize, want: usize) -> Error {
        self.error(format!(
            "compressed grain for sector {} inflates to {produced} bytes, not the {want} bytes of its grain",
            self.lba
        ))
    }

    /// Inflates `inf.compressed` into `out` and returns how many bytes it produced; more than
    /// `out` holds is an error.
    fn inflate(&self, out: &mut [u8], inf: &mut Inflater) -> Result<usize> {
        let bad = |e: String| {
            self.error(format!(
                "compressed grain for sector {} is not a valid zlib stream: {e}",
                self.lba
            ))
        };
        inf.z.reset(true);
        let input = &inf.compressed[..];
        let status = inf
            .z
            .decompress(input, out, FlushDecompress::Finish)
            .map_err(|e| bad(e.to_string()))?;
        let produced = inf.z.total_out() as usize;
        if status == Status::StreamEnd {
            return Ok(produced);
        }
        if produced < out.len() {
            return Err(bad("the stream ends early".into()));
        }
        // `out` is full: the stream must end here, with no byte more.
        let consumed = inf.z.total_in() as usize;
        let mut extra = [0u8; 1];
        let status = inf
            .z
            .decompress(&input[consumed..], &mut extra, FlushDecompress::Finish)
            .map_err(|e| bad(e.to_string()))?;
        if status == Status::StreamEnd && inf.z.total_out() as usize == produced {
            Ok(produced)
        } else {
            Err(self.error(format!(
                "compressed grain for sector {} inflates to more than the {}-byte grain",
                self.lba, self.grain_bytes
            )))
        }
    }
}

/// Inflated grains that a read wanted only part of, by grain index, newest last.
#[derive(Debug, Default)]
pub(crate) struct GrainCache {
    grains: Mutex<VecDeque<(u64, Arc<Vec<u8>>)>>,
}

/// Enough for the partial grains at both ends of several concurrent reads.
const CACHED_GRAINS: usize = 16;

impl GrainCache {
    pub(crate) fn get(&self, grain: u64) -> Option<Arc<Vec<u8>>> {
        let grains = self.grains.lock().unwrap();
        grains
            .iter()
            .find(|(g, _)| *g == grain)
            .map(|(_, d)| d.clone())
    }

    pub(crate) fn put(&self, grain: u64, data: Arc<Vec<u8>>) {
        let mut grains = self.grains.lock().unwrap();
        if grains.iter().any(|(g, _)| *g == grain) {
            return;
        }
        if grains.len() == CACHED_GRAINS {
            grains.pop_front();
        }
        grains.push_back((grain, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn grain_file(dir: &TempDir, lba: u64, payload: &[u8], claimed: Option<u32>) -> (Region, u64) {
        let mut enc = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(payload).unwrap();
        let data = enc.finish().unwrap();
        let mut bytes = vec![0u8; 512];
        bytes.extend_from_slice(&lba.to_le_bytes());
        bytes.extend_from_slice(&claimed.unwrap_or(data.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&data);
        let path = dir.path().join("g");
        std::fs::write(&path, &bytes).unwrap();
        let len = bytes.len() as u64;
        (Region::whole(std::fs::File::open(&path).unwrap(), len), len)
    }

    fn grain<'a>(file: &'a Region, path: &'a Path, len: u64, lba: u64) -> CompressedGrain<'a> {
        CompressedGrain {
            file,
            path,
            file_len: len,
            at: 512,
            lba,
            marker: true,
            grain_bytes: 4096,
        }
    }

    #[test]
    fn inflates_whole_and_short_grains() {
        let dir = TempDir::new("vmdk-grain");
        let payload: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let (file, len) = grain_file(&dir, 8, &payload, None);
        let path = dir.path().join("g");
        let mut inf = Inflater::new();
        let mut out = vec![0u8; 4096];
        grain(&file, &path, len, 8)
            .inflate_into(&mut out, &mut inf)
            .unwrap();
        assert_eq!(out, payload);
        // The guest sees only 1000 bytes of the last grain; the rest is cut off.
        let mut out = vec![0u8; 1000];
        grain(&file, &path, len, 8)
            .inflate_into(&mut out, &mut inf)
            .unwrap();
        assert_eq!(out, payload[..1000]);
    }

    #[test]
    fn rejects_wrong_lba_short_data_and_truncation() {
        let dir = TempDir::new("vmdk-grain-bad");
        let path = dir.path().join("g");
        let mut inf = Inflater::new();
        let (file, len) = grain_file(&dir, 8, &[7u8; 4096], None);
        let err = grain(&file, &path, len, 16)
            .inflate_into(&mut [0u8; 4096], &mut inf)
            .unwrap_err();
        assert!(err.to_string().contains("sector 8"), "{err}");
        assert_eq!(err.offset(), Some(512));

        let (file, len) = grain_file(&dir, 8, &[7u8; 100], None);
        let err = grain(&file, &path, len, 8)
            .inflate_into(&mut [0u8; 4096], &mut inf)
            .unwrap_err();
        assert!(err.to_string().contains("inflates to 100 bytes"), "{err}");

        let (file, len) = grain_file(&dir, 8, &[7u8; 8192], None);
        let err = grain(&file, &path, len, 8)
            .inflate_into(&mut [0u8; 4096], &mut inf)
            .unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");

        let (file, len) = grain_file(&dir, 8, &[7u8; 4096], Some(3000));
        let err = grain(&file, &path, len, 8)
            .inflate_into(&mut [0u8; 4096], &mut inf)
            .unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
