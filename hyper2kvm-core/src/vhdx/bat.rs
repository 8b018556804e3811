//! The block allocation table (MS-VHDX 2.5): one 64-bit entry per payload block, with one
//! sector bitmap entry after every `chunk_ratio` payload entries.
//!
//! An entry's low 3 bits are its state, its high 44 bits the block's file offset in MiB.
//! Entries are checked once at open — state allowed for this kind of disk, block inside the
//! file — so reads can trust them.

use super::fields::le64;
use super::metadata::Metadata;
use super::region::Region;
use super::view::FileView;
use super::MIB;
use crate::error::{Error, ErrorKind, Result};

// Payload block states.
const NOT_PRESENT: u64 = 0;
const UNDEFINED: u64 = 1;
const ZERO: u64 = 2;
const UNMAPPED: u64 = 3;
/// The 0.95 draft's value for UNMAPPED; qemu reads it as zeros too, and so do we.
const UNMAPPED_V095: u64 = 5;
const FULLY_PRESENT: u64 = 6;
const PARTIALLY_PRESENT: u64 = 7;
// Sector bitmap block states.
const SB_NOT_PRESENT: u64 = 0;
const SB_PRESENT: u64 = 6;
/// A sector bitmap block is always 1 MiB: 2^23 bits, one per logical sector of a chunk.
pub(crate) const SECTOR_BITMAP_LEN: u64 = MIB;

/// Where a payload block's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    /// Zeros: never written, zeroed, unmapped or undefined (we choose zeros where the spec
    /// allows any content).
    Zero,
    /// A differencing disk's block that lives in the parent.
    Parent,
    /// All of the block is at this file offset.
    Present(u64),
    /// Differencing only: the block is at this file offset, but only sectors whose bit is
    /// set in the chunk's sector bitmap; the others come from the parent.
    Partial(u64),
}

/// A checked BAT.
pub(crate) struct Bat {
    entries: Vec<u64>,
    chunk_ratio: u64,
    /// A differencing disk: NOT_PRESENT blocks come from the parent.
    is_diff: bool,
}

impl Bat {
    /// Where payload block `index` is.
    pub(crate) fn block(&self, index: u64) -> Block {
        let entry = self.entries[(index + index / self.chunk_ratio) as usize];
        let offset = entry >> 20 << 20;
        match entry & 7 {
            FULLY_PRESENT => Block::Present(offset),
            PARTIALLY_PRESENT => Block::Partial(offset),
            NOT_PRESENT if self.differencing() => Block::Parent,
            _ => Block::Zero,
        }
    }

    /// The file offset of the sector bitmap covering payload block `index`, if present.
    pub(crate) fn bitmap_of(&self, index: u64) -> Option<u64> {
        let chunk = index / self.chunk_ratio;
        let entry = *self
            .entries
            .get((chunk * (self.chunk_ratio + 1) + self.chunk_ratio) as usize)?;
        (entry & 7 == SB_PRESENT).then_some(entry >> 20 << 20)
    }

    fn differencing(&self) -> bool {
        self.is_diff
    }
}

impl std::fmt::Debug for Bat {
    // Millions of entries are no use in a message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bat")
            .field("entries", &self.entries.len())
            .field("chunk_ratio", &self.chunk_ratio)
            .field("is_diff", &self.is_diff)
            .finish()
    }
}

/// Reads the BAT region and checks every entry against `meta` and the file's size.
pub(crate) fn read_bat(view: &FileView, region: Region, meta: &Metadata) -> Result<Bat> {
    let block_size = u64::from(meta.block_size);
    // (2^23 × logical sector size) / block size: an integer ≥ 16, since block sizes are at
    // most 256 MiB and sectors at least 512 bytes.
    let chunk_ratio = (1u64 << 23) * u64::from(meta.logical_sector_size) / block_size;
    let data_blocks = meta.virtual_size.div_ceil(block_size);
    let total = if meta.has_parent {
        data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else if data_blocks == 0 {
        0
    } else {
        data_blocks + (data_blocks - 1) / chunk_ratio
    };
    // The region lies inside the file (checked with the region table), so this bounds the
    // allocation below by the file's size whatever the metadata claims.
    if total * 8 > region.length {
        return Err(view.invalid(
            region.offset,
            format!(
                "the VHDX BAT region ({} bytes) cannot hold the {total} entries a {}-byte disk with {block_size}-byte blocks needs",
                region.length, meta.virtual_size
            ),
        ));
    }
    let raw = view.read_vec(region.offset, (total * 8) as usize)?;
    let entries: Vec<u64> = raw.chunks_exact(8).map(|e| le64(e, 0)).collect();
    drop(raw);
    let bat = Bat {
        entries,
        chunk_ratio,
        is_diff: meta.has_parent,
    };
    for (i, &entry) in bat.entries.iter().enumerate() {
        let i = i as u64;
        let at = region.offset + i * 8;
        let state = entry & 7;
        let offset = entry >> 20 << 20;
        let is_bitmap = i % (chunk_ratio + 1) == chunk_ratio;
        let bad_state = |what: &str| {
            Error::new(
                ErrorKind::InvalidFormat,
                format!("VHDX BAT entry {i} has state {state}, not valid for {what}"),
            )
            .with_path(&view.path)
            .at_offset(at)
        };
        if is_bitmap {
            match state {
                SB_NOT_PRESENT => {}
                SB_PRESENT if meta.has_parent => {
                    check_block(view, at, i, offset, SECTOR_BITMAP_LEN)?;
                }
                _ => return Err(bad_state("a sector bitmap entry of this disk")),
            }
            continue;
        }
        let index = i - i / (chunk_ratio + 1);
        // A differencing BAT covers whole chunks: entries past the disk's last block are
        // never read, whatever they hold.
        if index >= data_blocks {
            continue;
        }
        match state {
            NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED | UNMAPPED_V095 => {}
            FULLY_PRESENT => {
                let len = block_size.min(meta.virtual_size - index * block_size);
                check_block(view, at, i, offset, len)?;
            }
            PARTIALLY_PRESENT if meta.has_parent => {
                let len = block_size.min(meta.virtual_size - index * block_size);
                check_block(view, at, i, offset, len)?;
                if bat.bitmap_of(index).is_none() {
                    return Err(view.invalid(
                        at,
                        format!(
                            "VHDX BAT entry {i} is partially present but its chunk has no sector bitmap"
                        ),
                    ));
                }
            }
            _ => return Err(bad_state("a payload block of this disk")),
        }
    }
    Ok(bat)
}

/// A block must start past the header area and end inside the file.
fn check_block(view: &FileView, at: u64, i: u64, offset: u64, len: u64) -> Result<()> {
    if offset < MIB || offset + len > view.len {
        return Err(view.invalid(
            at,
            format!(
                "VHDX BAT entry {i} points to file offset {offset}, whose {len}-byte block lies outside the {}-byte file (truncated?)",
                view.len
            ),
        ));
    }
    Ok(())
}
