//! The extents of a VMDK laid end to end: which one holds a disk byte, and reading across
//! them. A `twoGbMaxExtent*` disk is several files of at most 2 GiB each; monolithic disks
//! are one extent.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::sparse::SparseExtent;
use super::stream::Inflater;
use crate::error::{Error, Result};
use crate::raw::{data_ranges, read_into};

/// Where an extent's bytes come from.
#[derive(Debug)]
pub(crate) enum ExtentData {
    /// Raw bytes of `file` starting at byte `offset`.
    Flat {
        file: Arc<File>,
        path: PathBuf,
        offset: u64,
    },
    /// A hosted sparse or stream-optimized extent.
    Sparse(SparseExtent),
    /// Zeros, no file.
    Zero,
}

/// One extent and its place in the disk.
#[derive(Debug)]
pub(crate) struct Extent {
    /// First disk byte it holds.
    pub start: u64,
    /// Bytes it holds.
    pub len: u64,
    pub data: ExtentData,
}

/// Fills `buf` with the disk's bytes at `offset`, which the caller checked lies in the disk.
pub(crate) fn read(extents: &[Extent], offset: u64, buf: &mut [u8]) -> Result<()> {
    let mut inf = Inflater::new();
    let mut done = 0usize;
    let mut index = extents.partition_point(|e| e.start + e.len <= offset);
    while done < buf.len() {
        let pos = offset + done as u64;
        let extent = &extents[index];
        let within = pos - extent.start;
        let n = ((extent.len - within) as usize).min(buf.len() - done);
        let piece = &mut buf[done..done + n];
        match &extent.data {
            ExtentData::Flat { file, path, offset } => {
                read_into(file, path, piece, offset + within)?
            }
            ExtentData::Sparse(sparse) => sparse.read(within, piece, &mut inf)?,
            ExtentData::Zero => piece.fill(0),
        }
        done += n;
        index += 1;
    }
    Ok(())
}

/// The disk's allocated ranges: grains present in sparse extents, data (not holes) of flat
/// extent files. Sorted and merged.
pub(crate) fn allocated(extents: &[Extent]) -> Result<Vec<Range<u64>>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut push = |r: Range<u64>| match out.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ if r.start < r.end => out.push(r),
        _ => {}
    };
    for extent in extents {
        match &extent.data {
            ExtentData::Zero => {}
            ExtentData::Sparse(sparse) => {
                for r in sparse.allocated() {
                    push(extent.start + r.start..extent.start + r.end);
                }
            }
            ExtentData::Flat { file, path, offset } => {
                let ranges = data_ranges(file, *offset..offset + extent.len)
                    .map_err(|e| Error::io("finding the written extents", e).with_path(path))?;
                for r in ranges {
                    push(extent.start + (r.start - offset)..extent.start + (r.end - offset));
                }
            }
        }
    }
    Ok(out)
}
