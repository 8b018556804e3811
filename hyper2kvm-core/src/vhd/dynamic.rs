//! Dynamic VHDs: a footer copy, a 1024-byte dynamic header, the block allocation table (BAT),
//! then blocks, each a sector bitmap followed by `block_size` bytes of data, then the footer.
//!
//! Only allocated blocks are reported as allocated ranges; the rest read as zeros. Like qemu,
//! we read an allocated block's data whole and ignore its sector bitmap: for a dynamic (not
//! differencing) disk, sectors never written hold zeros.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::footer::{be32, be64, checksum_skipping, VhdFooter, FOOTER_LEN};
use crate::buffers::AlignedBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{blocking, check_within, read_exact_at, read_into};
use crate::source::{BoxFuture, DiskReader};

/// Length of the dynamic disk header.
const HEADER_LEN: usize = 1024;
const OFF_TABLE_OFFSET: usize = 16;
const OFF_MAX_ENTRIES: usize = 28;
const OFF_BLOCK_SIZE: usize = 32;
const OFF_CHECKSUM: usize = 36;
/// A BAT entry for a block that was never written.
const UNALLOCATED: u32 = u32::MAX;

/// Reads a dynamic VHD.
#[derive(Debug)]
pub struct DynamicVhdReader {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    block_size: u64,
    /// For each block, the file offset of its data (past the bitmap), or `None`.
    blocks: Arc<Vec<Option<u64>>>,
    identity: String,
}

impl DynamicVhdReader {
    /// Reads and checks the dynamic header and the BAT of an opened file whose footer has
    /// been parsed already. Every allocated block must lie inside the file.
    pub(crate) fn open(
        file: Arc<File>,
        path: &Path,
        footer: &VhdFooter,
        file_len: u64,
    ) -> Result<Self> {
        let at = |offset: u64, msg: String| {
            Error::new(ErrorKind::InvalidFormat, msg)
                .with_path(path)
                .at_offset(offset)
        };
        let header_offset = footer.data_offset;
        if header_offset
            .checked_add(HEADER_LEN as u64)
            .is_none_or(|end| end > file_len)
        {
            return Err(at(
                header_offset,
                format!("dynamic VHD header lies past the end of the file ({file_len} bytes)"),
            ));
        }
        let header = read_exact_at(&file, path, vec![0; HEADER_LEN], header_offset)?;
        if &header[..8] != b"cxsparse" {
            return Err(at(
                header_offset,
                "no dynamic VHD header (cookie \"cxsparse\")".into(),
            ));
        }
        let stored = be32(&header, OFF_CHECKSUM);
        let computed = checksum_skipping(&header, OFF_CHECKSUM);
        if stored != computed {
            return Err(at(
                header_offset,
                format!(
                    "bad dynamic VHD header checksum (stored {stored:#010x}, computed {computed:#010x})"
                ),
            ));
        }
        let table_offset = be64(&header, OFF_TABLE_OFFSET);
        let max_entries = u64::from(be32(&header, OFF_MAX_ENTRIES));
        let block_size = u64::from(be32(&header, OFF_BLOCK_SIZE));
        if block_size < 512 || !block_size.is_power_of_two() {
            return Err(at(
                header_offset + OFF_BLOCK_SIZE as u64,
                format!("dynamic VHD block size {block_size} is not a power of two ≥ 512"),
            ));
        }
        let size = footer.current_size;
        let needed = size.div_ceil(block_size);
        if max_entries < needed {
            return Err(at(
                header_offset + OFF_MAX_ENTRIES as u64,
                format!(
                    "BAT has {max_entries} entries but a {size}-byte disk needs {needed} blocks of {block_size} bytes"
                ),
            ));
        }
        let table_len = needed * 4;
        if table_offset
            .checked_add(table_len)
            .is_none_or(|end| end > file_len)
        {
            return Err(at(
                table_offset,
                format!(
                    "block allocation table ({table_len} bytes) lies past the end of the file ({file_len} bytes)"
                ),
            ));
        }
        let table = read_exact_at(&file, path, vec![0; table_len as usize], table_offset)?;
        // Each block starts with a bitmap of one bit per sector, padded to whole sectors.
        let bitmap_len = (block_size / 512).div_ceil(8).div_ceil(512) * 512;
        // The trailing footer is not block space.
        let data_limit = file_len.saturating_sub(FOOTER_LEN as u64);
        let mut blocks = Vec::with_capacity(needed as usize);
        for (index, entry) in table.chunks_exact(4).enumerate() {
            let sector = u32::from_be_bytes(entry.try_into().unwrap());
            if sector == UNALLOCATED {
                blocks.push(None);
                continue;
            }
            let data = u64::from(sector) * 512 + bitmap_len;
            let guest_start = index as u64 * block_size;
            let data_len = block_size.min(size - guest_start);
            if data + data_len > data_limit {
                return Err(at(
                    table_offset + index as u64 * 4,
                    format!(
                        "BAT entry {index} points to sector {sector}, whose block ends at byte {} past the end of the data ({data_limit} bytes; truncated file?)",
                        data + data_len
                    ),
                ));
            }
            blocks.push(Some(data));
        }
        Ok(DynamicVhdReader {
            identity: crate::raw::file_identity(&file, path, size),
            file,
            path: path.to_owned(),
            size,
            block_size,
            blocks: Arc::new(blocks),
        })
    }
}

impl DiskReader for DynamicVhdReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for (index, block) in self.blocks.iter().enumerate() {
            if block.is_none() {
                continue;
            }
            let start = index as u64 * self.block_size;
            let end = (start + self.block_size).min(self.size);
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => ranges.push(start..end),
            }
        }
        Box::pin(async move { Ok(ranges) })
    }

    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        let file = self.file.clone();
        let path = self.path.clone();
        let blocks = self.blocks.clone();
        let (size, block_size) = (self.size, self.block_size);
        Box::pin(async move {
            check_within(offset, buf.len(), size, &path)?;
            blocking(move || {
                let mut buf = buf;
                let mut done = 0usize;
                while done < buf.len() {
                    let pos = offset + done as u64;
                    let index = (pos / block_size) as usize;
                    let within = pos % block_size;
                    let n = ((block_size - within) as usize).min(buf.len() - done);
                    let piece = &mut buf[done..done + n];
                    match blocks[index] {
                        None => piece.fill(0),
                        Some(data) => read_into(&file, &path, piece, data + within)?,
                    }
                    done += n;
                }
                Ok(buf)
            })
            .await
        })
    }
}
