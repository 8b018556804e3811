//! [`VhdxReader`]: a VHDX disk — fixed, dynamic or differencing with its parent chain — as a
//! [`DiskReader`].
//!
//! Each file of a chain is a [`Layer`]: its view (file plus replayed log), metadata and BAT,
//! and its parent layer. A read walks the payload blocks it spans; a block's state says
//! whether its bytes are zeros, in this file, in the parent, or — partially present — sector
//! by sector in one or the other, as the chunk's sector bitmap says.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bat::{read_bat, Bat, Block};
use super::header::{read_current_header, VhdxHeader};
use super::log;
use super::metadata::{read_metadata, Metadata};
use super::parent;
use super::region::read_regions;
use super::view::FileView;
use crate::buffers::AlignedBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{blocking, check_within, data_ranges, file_identity, file_len, open_file};
use crate::source::{BoxFuture, DiskReader};

/// How many files a differencing chain may have; real chains are a handful deep, and a bound
/// keeps a damaged or malicious chain from exhausting the stack or file descriptors.
pub const MAX_CHAIN_LEN: usize = 32;

/// Sectors a sector bitmap block describes: 2^23, one bit each.
const SECTORS_PER_CHUNK: u64 = 1 << 23;

/// One VHDX file of a chain.
#[derive(Debug)]
pub(crate) struct Layer {
    view: FileView,
    header: VhdxHeader,
    meta: Metadata,
    bat: Bat,
    /// Log entries replayed into the view at open.
    replayed: usize,
    parent: Option<Arc<Layer>>,
}

impl Layer {
    /// Opens the VHDX at `path` and, for a differencing disk, its parents. `chain` holds the
    /// canonical paths of the children already open, to detect cycles.
    fn open(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Layer> {
        let file = open_file(path)?;
        let len = file_len(&file, path)?;
        let mut view = FileView::new(Arc::new(file), path, len);
        let header = read_current_header(&view)?;
        let replayed = log::replay(&mut view, &header)?;
        let regions = read_regions(&view)?;
        let meta = read_metadata(&view, regions.metadata)?;
        let bat = read_bat(&view, regions.bat, &meta)?;
        let parent = if meta.has_parent {
            Some(Arc::new(open_parent(path, &meta, chain)?))
        } else {
            None
        };
        Ok(Layer {
            view,
            header,
            meta,
            bat,
            replayed,
            parent,
        })
    }

    fn size(&self) -> u64 {
        self.meta.virtual_size
    }

    fn block_size(&self) -> u64 {
        u64::from(self.meta.block_size)
    }

    /// Fills `buf` with the guest bytes at `offset`; the range lies inside the disk.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / bs;
            let within = pos % bs;
            let n = ((bs - within) as usize).min(buf.len() - done);
            let piece = &mut buf[done..done + n];
            match self.bat.block(index) {
                Block::Zero => piece.fill(0),
                Block::Parent => self.read_parent(pos, piece)?,
                Block::Present(file_offset) => self.view.read_into(piece, file_offset + within)?,
                Block::Partial(file_offset) => self.read_partial(index, file_offset, pos, piece)?,
            }
            done += n;
        }
        Ok(())
    }

    /// Reads from the parent; a parent smaller than the child reads as zeros past its end.
    fn read_parent(&self, pos: u64, piece: &mut [u8]) -> Result<()> {
        let Some(parent) = &self.parent else {
            piece.fill(0);
            return Ok(());
        };
        let avail = parent.size().saturating_sub(pos).min(piece.len() as u64) as usize;
        parent.read(pos, &mut piece[..avail])?;
        piece[avail..].fill(0);
        Ok(())
    }

    /// A partially present block: runs of sectors whose bitmap bit is set come from this
    /// file, the others from the parent.
    fn read_partial(&self, index: u64, file_offset: u64, pos: u64, piece: &mut [u8]) -> Result<()> {
        let block_start = index * self.block_size();
        let end = pos + piece.len() as u64;
        for (run, here) in self.bitmap_runs(index, pos..end)? {
            let part = &mut piece[(run.start - pos) as usize..(run.end - pos) as usize];
            if here {
                self.view
                    .read_into(part, file_offset + run.start - block_start)?;
            } else {
                self.read_parent(run.start, part)?;
            }
        }
        Ok(())
    }

    /// Splits `range` (inside payload block `index`) into runs whose sectors are all in this
    /// file (`true`) or all in the parent (`false`), per the chunk's sector bitmap.
    fn bitmap_runs(&self, index: u64, range: Range<u64>) -> Result<Vec<(Range<u64>, bool)>> {
        let sector = u64::from(self.meta.logical_sector_size);
        // Checked at open: a partially present block's chunk has a bitmap.
        let bitmap_offset = self.bat.bitmap_of(index).expect("checked at open");
        let first = range.start / sector;
        let last = (range.end - 1) / sector;
        let (bit0, bit1) = (first % SECTORS_PER_CHUNK, last % SECTORS_PER_CHUNK);
        let bytes = self
            .view
            .read_vec(bitmap_offset + bit0 / 8, (bit1 / 8 - bit0 / 8 + 1) as usize)?;
        let is_set = |s: u64| {
            let bit = s % SECTORS_PER_CHUNK - bit0 / 8 * 8;
            bytes[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        };
        let mut runs: Vec<(Range<u64>, bool)> = Vec::new();
        for s in first..=last {
            let here = is_set(s);
            let r = (s * sector).max(range.start)..((s + 1) * sector).min(range.end);
            match runs.last_mut() {
                Some((prev, h)) if *h == here => prev.end = r.end,
                _ => runs.push((r, here)),
            }
        }
        Ok(runs)
    }

    /// Appends the guest ranges within `range` that may hold data.
    fn allocated(&self, range: Range<u64>, out: &mut Vec<Range<u64>>) -> Result<()> {
        let bs = self.block_size();
        let range = range.start..range.end.min(self.size());
        if range.start >= range.end {
            return Ok(());
        }
        // Consecutive present blocks that are also consecutive in the file are one run, so
        // the file system is asked once for a fixed disk's whole data area.
        let mut own: Option<(Range<u64>, u64)> = None;
        let mut from_parent: Option<Range<u64>> = None;
        for index in range.start / bs..=(range.end - 1) / bs {
            let r = (index * bs).max(range.start)..((index + 1) * bs).min(range.end);
            let block = self.bat.block(index);
            if let Block::Present(file_offset) = block {
                let file_start = file_offset + r.start - index * bs;
                match &mut own {
                    Some((g, f)) if g.end == r.start && *f + (g.end - g.start) == file_start => {
                        g.end = r.end
                    }
                    _ => {
                        if let Some((g, f)) = own.replace((r.clone(), file_start)) {
                            self.own_data(g, f, out)?;
                        }
                    }
                }
            }
            if block == Block::Parent {
                match &mut from_parent {
                    Some(p) if p.end == r.start => p.end = r.end,
                    _ => {
                        if let Some(p) = from_parent.replace(r.clone()) {
                            self.parent_allocated(p, out)?;
                        }
                    }
                }
            }
            if let Block::Partial(_) = block {
                for (run, here) in self.bitmap_runs(index, r.clone())? {
                    if here {
                        // Sector runs can be many and short: no file system query per run.
                        out.push(run);
                    } else {
                        self.parent_allocated(run, out)?;
                    }
                }
            }
        }
        if let Some((g, f)) = own {
            self.own_data(g, f, out)?;
        }
        if let Some(p) = from_parent {
            self.parent_allocated(p, out)?;
        }
        Ok(())
    }

    fn parent_allocated(&self, range: Range<u64>, out: &mut Vec<Range<u64>>) -> Result<()> {
        match &self.parent {
            Some(parent) => parent.allocated(range, out),
            None => Ok(()),
        }
    }

    /// The parts of `guest` (stored at `file_start`) that hold data: the file's data
    /// extents (holes in a sparse file read as zeros) plus whatever the replayed log wrote.
    fn own_data(
        &self,
        guest: Range<u64>,
        file_start: u64,
        out: &mut Vec<Range<u64>>,
    ) -> Result<()> {
        let file_range = file_start..file_start + (guest.end - guest.start);
        let to_guest = |r: Range<u64>| {
            (r.start - file_start + guest.start)..(r.end - file_start + guest.start)
        };
        let on_disk =
            file_range.start.min(self.view.disk_len)..file_range.end.min(self.view.disk_len);
        if on_disk.start < on_disk.end {
            let extents = data_ranges(&self.view.file, on_disk).map_err(|e| {
                Error::io("finding the written extents", e).with_path(&self.view.path)
            })?;
            out.extend(extents.into_iter().map(to_guest));
        }
        for r in self.view.overlay.ranges() {
            let (a, b) = (r.start.max(file_range.start), r.end.min(file_range.end));
            if a < b {
                out.push(to_guest(a..b));
            }
        }
        Ok(())
    }

    fn identity(&self) -> String {
        let mut id = file_identity(&self.view.file, &self.view.path, self.size());
        if let Some(parent) = &self.parent {
            id.push_str(" <- ");
            id.push_str(&parent.identity());
        }
        id
    }
}

/// Finds, opens and checks the parent of the differencing disk at `child`.
fn open_parent(child: &Path, meta: &Metadata, chain: &mut Vec<PathBuf>) -> Result<Layer> {
    let expected = parent::linkage(child, meta)?;
    let candidates = parent::candidates(child, meta);
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "differencing VHDX's parent not found (looked for {}); put the parent beside it",
                if tried.is_empty() {
                    "no usable path in the parent locator".to_string()
                } else {
                    tried.join(", ")
                }
            ),
        )
        .with_path(child));
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::io("cannot open", e).with_path(path))?;
    if chain.contains(&canonical) {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "differencing VHDX chain loops back to {}",
                canonical.display()
            ),
        )
        .with_path(child));
    }
    if chain.len() >= MAX_CHAIN_LEN {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("differencing VHDX chain is longer than {MAX_CHAIN_LEN} files"),
        )
        .with_path(child));
    }
    chain.push(canonical);
    let parent = Layer::open(path, chain)?;
    let actual = parent.header.data_write_guid;
    if !expected.contains(&actual) {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "parent {} has DataWriteGuid {actual}, but this differencing disk was made from {} (parent_linkage): the parent changed since",
                path.display(),
                expected[0]
            ),
        )
        .with_path(child));
    }
    if parent.meta.logical_sector_size != meta.logical_sector_size {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "parent {} has {}-byte sectors, this differencing disk {}-byte ones",
                path.display(),
                parent.meta.logical_sector_size,
                meta.logical_sector_size
            ),
        )
        .with_path(child));
    }
    Ok(parent)
}

/// Reads a VHDX disk (fixed, dynamic, or differencing with its parents).
#[derive(Debug, Clone)]
pub struct VhdxReader {
    top: Arc<Layer>,
    path: PathBuf,
    identity: String,
}

impl VhdxReader {
    /// Opens the VHDX at `path`: checks its headers, replays its log in memory if it is dirty,
    /// reads its metadata and BAT, and opens its parents if it is a differencing disk.
    pub fn open(path: &Path) -> Result<Self> {
        let canonical = path
            .canonicalize()
            .map_err(|e| Error::io("cannot open", e).with_path(path))?;
        let top = Layer::open(path, &mut vec![canonical])?;
        Ok(VhdxReader {
            identity: top.identity(),
            top: Arc::new(top),
            path: path.to_owned(),
        })
    }

    /// The payload block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.top.meta.block_size
    }

    /// The logical sector size: 512 or 4096.
    pub fn logical_sector_size(&self) -> u32 {
        self.top.meta.logical_sector_size
    }

    /// The physical sector size: 512 or 4096.
    pub fn physical_sector_size(&self) -> u32 {
        self.top.meta.physical_sector_size
    }

    /// The files of the chain, this one first, then its parent, and so on.
    pub fn chain(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut layer = Some(&self.top);
        while let Some(l) = layer {
            out.push(l.view.path.clone());
            layer = l.parent.as_ref();
        }
        out
    }

    /// How many log entries were replayed (in memory) when this file was opened.
    pub fn replayed_log_entries(&self) -> usize {
        self.top.replayed
    }
}

impl DiskReader for VhdxReader {
    fn size(&self) -> u64 {
        self.top.size()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        let top = self.top.clone();
        Box::pin(async move {
            blocking(move || {
                let mut out = Vec::new();
                top.allocated(0..top.size(), &mut out)?;
                out.sort_by_key(|r| r.start);
                let mut merged: Vec<Range<u64>> = Vec::with_capacity(out.len());
                for r in out.into_iter().filter(|r| r.start < r.end) {
                    match merged.last_mut() {
                        Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                        _ => merged.push(r),
                    }
                }
                Ok(merged)
            })
            .await
        })
    }

    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        let top = self.top.clone();
        let path = self.path.clone();
        Box::pin(async move {
            check_within(offset, buf.len(), top.size(), &path)?;
            blocking(move || {
                let mut buf = buf;
                top.read(offset, &mut buf)?;
                Ok(buf)
            })
            .await
        })
    }
}
