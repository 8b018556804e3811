//! Hosted sparse extents ("Virtual Disk Format 5.0", section "Hosted Sparse Extents"): the
//! disk is cut into grains (64 KiB usually); a grain directory (GD) points to grain tables
//! (GT) of `numGTEsPerGT` (512) entries, each the sector where a grain's data starts.
//!
//! A GT entry of 0 is a grain never written (zeros, not allocated); 1 is a zeroed grain when
//! the header's zeroed-GTE flag is set (zeros too); anything else is the grain's sector, whose
//! data is raw, or deflated behind a grain marker in a stream-optimized extent.
//!
//! Opening reads the GD and every GT once: every entry is checked against the file's length
//! (so a damaged table fails at open, naming the entry) and the allocated ranges are
//! collected. Reads then load just the GT entries they need, from the page cache; nothing
//! proportional to the disk's size stays in memory but the GD (4 bytes per 32 MiB).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::header::{SparseHeader, FLAG_REDUNDANT_GD, GRAIN_MARKER_LEN, SECTOR};
use super::region::{read_into, Region};
use super::stream::{CompressedGrain, GrainCache, Inflater};
use crate::error::{Error, ErrorKind, Result};

/// The largest grain we accept: 16 MiB. Writers use 64 KiB; a compressed grain is inflated
/// into a buffer of this size, so the bound is also a memory bound.
const MAX_GRAIN_SECTORS: u64 = 32 * 1024;
/// Every known writer uses 512 entries per grain table; qemu accepts up to 512.
const MAX_GTES_PER_GT: u32 = 512;

/// What a grain table entry means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grain {
    /// Never written: zeros, not allocated.
    Unallocated,
    /// Written as zeros (zeroed-grain GTE): zeros, not allocated.
    Zeroed,
    /// Data at this byte offset of the extent file.
    At(u64),
}

/// One hosted sparse (or stream-optimized) extent file.
#[derive(Debug)]
pub(crate) struct SparseExtent {
    file: Arc<Region>,
    path: PathBuf,
    file_len: u64,
    /// The extent's size in bytes.
    size: u64,
    grain_bytes: u64,
    gtes_per_gt: u64,
    /// Sector of each grain table, 0 for none.
    gd: Vec<u32>,
    compressed: bool,
    markers: bool,
    zeroed_gte: bool,
    /// Extent-relative byte ranges of allocated grains, sorted and merged.
    allocated: Vec<Range<u64>>,
    cache: GrainCache,
}

impl SparseExtent {
    /// Checks `header` (read at `header_at` of `file`, or from its footer) against the file,
    /// reads the grain directory and checks every grain table.
    pub(crate) fn open(
        file: Arc<Region>,
        path: &Path,
        file_len: u64,
        header: &SparseHeader,
        header_at: u64,
    ) -> Result<Self> {
        let field = |off: u64, msg: String| {
            Error::new(ErrorKind::InvalidFormat, msg)
                .with_path(path)
                .at_offset(header_at + off)
        };
        if header.grain_size == 0 || header.grain_size > MAX_GRAIN_SECTORS {
            return Err(field(
                SparseHeader::GRAIN_SIZE_FIELD,
                format!(
                    "VMDK grain size of {} sectors is outside 1 to {MAX_GRAIN_SECTORS}",
                    header.grain_size
                ),
            ));
        }
        if header.num_gtes_per_gt == 0 || header.num_gtes_per_gt > MAX_GTES_PER_GT {
            return Err(field(
                SparseHeader::NUM_GTES_FIELD,
                format!(
                    "VMDK numGTEsPerGT {} is outside 1 to {MAX_GTES_PER_GT}",
                    header.num_gtes_per_gt
                ),
            ));
        }
        let size = header.capacity.checked_mul(SECTOR).ok_or_else(|| {
            field(
                SparseHeader::CAPACITY_FIELD,
                format!("VMDK capacity of {} sectors overflows", header.capacity),
            )
        })?;
        let grain_bytes = header.grain_size * SECTOR;
        let gtes_per_gt = u64::from(header.num_gtes_per_gt);
        let gt_span = grain_bytes * gtes_per_gt;
        let gd_entries = size.div_ceil(gt_span);
        // The grain directory must lie in the file: this bounds what a header can make us
        // allocate by what the file could hold, whatever capacity it claims.
        let gd_len = gd_entries * 4;
        let load_gd = |gd_offset: u64, name: &str| -> Result<Vec<u32>> {
            let at = gd_offset.checked_mul(SECTOR).filter(|&at| at != 0);
            let Some(at) = at.filter(|at| at.checked_add(gd_len).is_some_and(|e| e <= file_len))
            else {
                return Err(field(
                    SparseHeader::GD_OFFSET_FIELD,
                    format!(
                        "{name} at sector {gd_offset} with {gd_entries} entries (for a capacity of {} sectors) does not fit in the {file_len}-byte file: the capacity or the offset is wrong, or the file is truncated",
                        header.capacity
                    ),
                ));
            };
            let mut raw = vec![0u8; gd_len as usize];
            read_into(&file, path, &mut raw, at)?;
            let gd: Vec<u32> = raw
                .chunks_exact(4)
                .map(|e| u32::from_le_bytes(e.try_into().unwrap()))
                .collect();
            for (index, &gt) in gd.iter().enumerate() {
                let end = u64::from(gt) * SECTOR + gtes_per_gt * 4;
                if gt != 0 && end > file_len {
                    return Err(Error::new(
                        ErrorKind::InvalidFormat,
                        format!(
                            "{name} entry {index} points to a grain table at sector {gt}, past the end of the {file_len}-byte file"
                        ),
                    )
                    .with_path(path)
                    .at_offset(at + index as u64 * 4));
                }
            }
            // Writers give each directory entry its own table. A shared one would let a
            // small file claim a huge disk full of grains and make the allocated ranges,
            // which are kept in memory, grow far beyond the file's size.
            let mut used: Vec<(u32, usize)> = gd
                .iter()
                .enumerate()
                .filter(|(_, &gt)| gt != 0)
                .map(|(i, &gt)| (gt, i))
                .collect();
            used.sort_unstable();
            if let Some(pair) = used.windows(2).find(|p| p[0].0 == p[1].0) {
                let ((gt, first), (_, second)) = (pair[0], pair[1]);
                return Err(Error::new(
                    ErrorKind::InvalidFormat,
                    format!(
                        "{name} entries {first} and {second} both point to the grain table at sector {gt}"
                    ),
                )
                .with_path(path)
                .at_offset(at + second as u64 * 4));
            }
            Ok(gd)
        };
        // The primary directory is the one writers keep current; the redundant copy is a
        // fallback when the primary is damaged.
        let gd = match load_gd(header.gd_offset, "grain directory") {
            Ok(gd) => gd,
            Err(primary)
                if header.flags & FLAG_REDUNDANT_GD != 0
                    && header.rgd_offset != 0
                    && header.rgd_offset != header.gd_offset =>
            {
                load_gd(header.rgd_offset, "redundant grain directory").map_err(|_| primary)?
            }
            Err(e) => return Err(e),
        };
        let mut extent = SparseExtent {
            file,
            path: path.to_owned(),
            file_len,
            size,
            grain_bytes,
            gtes_per_gt,
            gd,
            compressed: header.compressed(),
            markers: header.has_markers(),
            zeroed_gte: header.zeroed_gte(),
            allocated: Vec::new(),
            cache: GrainCache::default(),
        };
        extent.allocated = extent.scan()?;
        Ok(extent)
    }

    /// The extent's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Extent-relative byte ranges of the allocated grains.
    pub(crate) fn allocated(&self) -> &[Range<u64>] {
        &self.allocated
    }

    /// Reads every grain table, checks each entry, and returns the allocated ranges.
    fn scan(&self) -> Result<Vec<Range<u64>>> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut table = vec![0u8; (self.gtes_per_gt * 4) as usize];
        for (t, &gt) in self.gd.iter().enumerate() {
            if gt == 0 {
                continue;
            }
            let table_at = u64::from(gt) * SECTOR;
            read_into(&self.file, &self.path, &mut table, table_at)?;
            for (i, entry) in table.chunks_exact(4).enumerate() {
                let grain = t as u64 * self.gtes_per_gt + i as u64;
                let start = grain * self.grain_bytes;
                if start >= self.size {
                    break;
                }
                let entry = u32::from_le_bytes(entry.try_into().unwrap());
                if !matches!(
                    self.classify(entry, grain, table_at + i as u64 * 4)?,
                    Grain::At(_)
                ) {
                    continue;
                }
                let end = (start + self.grain_bytes).min(self.size);
                match ranges.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => ranges.push(start..end),
                }
            }
        }
        Ok(ranges)
    }

    /// Decodes the GT entry of `grain`, read from `entry_at`, and checks that its data lies in
    /// the file.
    fn classify(&self, entry: u32, grain: u64, entry_at: u64) -> Result<Grain> {
        match entry {
            0 => return Ok(Grain::Unallocated),
            1 if self.zeroed_gte => return Ok(Grain::Zeroed),
            _ => {}
        }
        let at = u64::from(entry) * SECTOR;
        let guest_len = self.grain_bytes.min(self.size - grain * self.grain_bytes);
        // A compressed grain's length is in its marker, checked when it is read.
        let need = match (self.compressed, self.markers) {
            (false, _) => guest_len,
            (true, true) => GRAIN_MARKER_LEN as u64,
            (true, false) => 1,
        };
        if at + need > self.file_len {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                format!(
                    "grain table entry {} (grain {grain}, disk byte {}) points past the end of the file (grain at sector {entry}, byte {at}; the file has {} bytes)",
                    grain % self.gtes_per_gt,
                    grain * self.grain_bytes,
                    self.file_len
                ),
            )
            .with_path(&self.path)
            .at_offset(entry_at));
        }
        Ok(Grain::At(at))
    }

    /// Fills `buf` with the extent's bytes at extent-relative `offset`.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8], inf: &mut Inflater) -> Result<()> {
        let mut plain = PlainRun::default();
        let mut done = 0usize;
        let mut entries = Vec::new();
        while done < buf.len() {
            let pos = offset + done as u64;
            let t = pos / (self.grain_bytes * self.gtes_per_gt);
            let table_end = ((t + 1) * self.grain_bytes * self.gtes_per_gt).min(self.size);
            let n = ((table_end - pos) as usize).min(buf.len() - done);
            let gt = self.gd.get(t as usize).copied().unwrap_or(0);
            if gt == 0 {
                plain.flush(self, buf)?;
                buf[done..done + n].fill(0);
                done += n;
                continue;
            }
            // The entries of this table that the piece touches, in one read.
            let first = pos / self.grain_bytes;
            let last = (pos + n as u64 - 1) / self.grain_bytes;
            let index0 = first % self.gtes_per_gt;
            let entries_at = u64::from(gt) * SECTOR + index0 * 4;
            entries.resize(((last - first + 1) * 4) as usize, 0);
            read_into(&self.file, &self.path, &mut entries, entries_at)?;
            for grain in first..=last {
                let k = (grain - first) as usize;
                let entry = u32::from_le_bytes(entries[k * 4..k * 4 + 4].try_into().unwrap());
                let grain_start = grain * self.grain_bytes;
                let p = offset + done as u64;
                let within = p - grain_start;
                let grain_len = self.grain_bytes.min(self.size - grain_start);
                let m = ((grain_len - within) as usize).min(buf.len() - done);
                match self.classify(entry, grain, entries_at + k as u64 * 4)? {
                    Grain::Unallocated | Grain::Zeroed => {
                        plain.flush(self, buf)?;
                        buf[done..done + m].fill(0);
                    }
                    Grain::At(at) if !self.compressed => {
                        plain.add(self, buf, at + within, done, m)?
                    }
                    Grain::At(at) => {
                        plain.flush(self, buf)?;
                        let grain_ref = CompressedGrain {
                            file: &self.file,
                            path: &self.path,
                            file_len: self.file_len,
                            at,
                            lba: grain_start / SECTOR,
                            marker: self.markers,
                            grain_bytes: self.grain_bytes as usize,
                        };
                        let piece = &mut buf[done..done + m];
                        if m as u64 == grain_len {
                            grain_ref.inflate_into(piece, inf)?;
                        } else {
                            let data = match self.cache.get(grain) {
                                Some(data) => data,
                                None => {
                                    let mut data = vec![0u8; grain_len as usize];
                                    grain_ref.inflate_into(&mut data, inf)?;
                                    let data = Arc::new(data);
                                    self.cache.put(grain, data.clone());
                                    data
                                }
                            };
                            piece.copy_from_slice(&data[within as usize..within as usize + m]);
                        }
                    }
                }
                done += m;
            }
        }
        plain.flush(self, buf)
    }
}

/// Raw grains that follow each other in the file are read with one call.
#[derive(Default)]
struct PlainRun {
    /// File offset, buffer offset, length.
    pending: Option<(u64, usize, usize)>,
}

impl PlainRun {
    fn add(
        &mut self,
        e: &SparseExtent,
        buf: &mut [u8],
        at: u64,
        done: usize,
        n: usize,
    ) -> Result<()> {
        if let Some((file_at, buf_at, len)) = &mut self.pending {
            if *file_at + *len as u64 == at && *buf_at + *len == done {
                *len += n;
                return Ok(());
            }
        }
        self.flush(e, buf)?;
        self.pending = Some((at, done, n));
        Ok(())
    }

    fn flush(&mut self, e: &SparseExtent, buf: &mut [u8]) -> Result<()> {
        if let Some((file_at, buf_at, len)) = self.pending.take() {
            read_into(&e.file, &e.path, &mut buf[buf_at..buf_at + len], file_at)?;
        }
        Ok(())
    }
}
