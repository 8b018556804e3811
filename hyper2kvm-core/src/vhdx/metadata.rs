//! The metadata region (MS-VHDX 2.6): a table of items, of which we need the file parameters
//! (block size, has-parent), the virtual disk size, the sector sizes, the disk id and, for a
//! differencing disk, the parent locator.
//!
//! Every size read here drives an allocation or an index later, so each is checked against
//! the spec's limits and the region's bounds before it is used.

use super::fields::{le16, le32, le64};
use super::guid::Guid;
use super::region::Region;
use super::view::FileView;
use super::MIB;
use crate::error::{Error, ErrorKind, Result};

/// File parameters: block size and flags.
pub const FILE_PARAMETERS: Guid = Guid::from_fields(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
/// The guest-visible size in bytes.
pub const VIRTUAL_DISK_SIZE: Guid = Guid::from_fields(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// The disk's identity, as SCSI page 83 reports it.
pub const VIRTUAL_DISK_ID: Guid = Guid::from_fields(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
/// Logical sector size: 512 or 4096.
pub const LOGICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
/// Physical sector size: 512 or 4096.
pub const PHYSICAL_SECTOR_SIZE: Guid = Guid::from_fields(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
/// Where a differencing disk's parent is.
pub const PARENT_LOCATOR: Guid = Guid::from_fields(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);
/// The only parent locator type defined: a VHDX parent.
pub const VHDX_PARENT_LOCATOR_TYPE: Guid = Guid::from_fields(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);

/// The metadata table is the region's first 64 KiB.
pub(crate) const TABLE_LEN: usize = 64 << 10;
const SIGNATURE: &[u8; 8] = b"metadata";
const OFF_ENTRY_COUNT: usize = 10;
const HEADER_LEN: usize = 32;
const ENTRY_LEN: usize = 32;
const MAX_ENTRIES: u16 = 2047;
// Within an entry.
const OFF_ITEM_OFFSET: usize = 16;
const OFF_ITEM_LENGTH: usize = 20;
const OFF_FLAGS: usize = 24;
const FLAG_IS_USER: u32 = 1;
const FLAG_IS_REQUIRED: u32 = 4;
/// The spec's largest virtual disk.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Parent locators are a few hundred bytes of paths; anything larger is damage, and we
/// refuse it rather than allocate what the file says.
const MAX_PARENT_LOCATOR_LEN: u32 = 1 << 20;

/// The metadata items this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Payload block size: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    /// Blocks stay allocated (a fixed disk).
    pub leave_blocks_allocated: bool,
    /// A differencing disk: unwritten blocks come from the parent.
    pub has_parent: bool,
    /// Guest-visible size in bytes, a multiple of the logical sector size.
    pub virtual_size: u64,
    /// 512 or 4096.
    pub logical_sector_size: u32,
    /// 512 or 4096.
    pub physical_sector_size: u32,
    /// The page 83 identifier.
    pub disk_id: Guid,
    /// For a differencing disk, the parent locator's key-value pairs.
    pub parent_locator: Option<Vec<(String, String)>>,
}

impl Metadata {
    /// The parent locator's value for `key`, if any.
    pub fn locator(&self, key: &str) -> Option<&str> {
        self.parent_locator
            .as_ref()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads and checks the metadata region.
pub(crate) fn read_metadata(view: &FileView, region: Region) -> Result<Metadata> {
    let base = region.offset;
    if region.length < TABLE_LEN as u64 {
        return Err(view.invalid(
            base,
            format!(
                "VHDX metadata region of {} bytes cannot hold its table",
                region.length
            ),
        ));
    }
    let table = view.read_vec(base, TABLE_LEN)?;
    if &table[..8] != SIGNATURE {
        return Err(view.invalid(
            base,
            format!(
                "no VHDX metadata table signature \"metadata\" (found {:?})",
                String::from_utf8_lossy(&table[..8])
            ),
        ));
    }
    let count = le16(&table, OFF_ENTRY_COUNT);
    if count > MAX_ENTRIES {
        return Err(view.invalid(
            base + OFF_ENTRY_COUNT as u64,
            format!("VHDX metadata table has {count} entries; at most {MAX_ENTRIES} are allowed"),
        ));
    }
    // (entry's file offset, item offset in the region, item length) per known item.
    let mut items: Vec<(Guid, u64, u32, u32)> = Vec::new();
    for i in 0..count as usize {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let e = &table[at..at + ENTRY_LEN];
        let entry_offset = base + at as u64;
        let id = Guid::read(e, 0);
        let offset = le32(e, OFF_ITEM_OFFSET);
        let length = le32(e, OFF_ITEM_LENGTH);
        let flags = le32(e, OFF_FLAGS);
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            VIRTUAL_DISK_ID,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ]
        .contains(&id);
        if !known {
            if flags & FLAG_IS_REQUIRED != 0 {
                let user = if flags & FLAG_IS_USER != 0 {
                    "user "
                } else {
                    ""
                };
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("VHDX file has a required {user}metadata item {id} this reader does not know"),
                )
                .with_path(&view.path)
                .at_offset(entry_offset));
            }
            continue;
        }
        let in_region = length == 0
            || (offset as usize >= TABLE_LEN
                && u64::from(offset) + u64::from(length) <= region.length);
        if !in_region {
            return Err(view.invalid(
                entry_offset,
                format!(
                    "VHDX metadata item {id} ({length} bytes at region offset {offset}) lies outside the {}-byte metadata region",
                    region.length
                ),
            ));
        }
        if items.iter().any(|item| item.0 == id) {
            return Err(view.invalid(
                entry_offset,
                format!("VHDX metadata table lists item {id} twice"),
            ));
        }
        items.push((id, entry_offset, offset, length));
    }

    // Reads a known item whose length must be `want` bytes (0: any, bounded by the region).
    let item = |id: Guid, name: &str, want: u32| -> Result<Option<(Vec<u8>, u64)>> {
        let Some(&(_, entry_offset, offset, length)) = items.iter().find(|i| i.0 == id) else {
            return Ok(None);
        };
        if (want != 0 && length != want) || (want == 0 && length > MAX_PARENT_LOCATOR_LEN) {
            return Err(view.invalid(
                entry_offset,
                format!("VHDX {name} metadata item is {length} bytes; expected {want}"),
            ));
        }
        let at = base + u64::from(offset);
        Ok(Some((view.read_vec(at, length as usize)?, at)))
    };
    let need = |id: Guid, name: &str, want: u32| -> Result<(Vec<u8>, u64)> {
        item(id, name, want)?
            .ok_or_else(|| view.invalid(base, format!("VHDX metadata has no {name} item")))
    };

    let (params, params_at) = need(FILE_PARAMETERS, "file parameters", 8)?;
    let block_size = le32(&params, 0);
    if !(MIB as u32..=256 * MIB as u32).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(view.invalid(
            params_at,
            format!("VHDX block size {block_size} is not a power of two from 1 MiB to 256 MiB"),
        ));
    }
    let flags = le32(&params, 4);
    let leave_blocks_allocated = flags & 1 != 0;
    let has_parent = flags & 2 != 0;

    let (sector, sector_at) = need(LOGICAL_SECTOR_SIZE, "logical sector size", 4)?;
    let logical_sector_size = le32(&sector, 0);
    if logical_sector_size != 512 && logical_sector_size != 4096 {
        return Err(view.invalid(
            sector_at,
            format!("VHDX logical sector size {logical_sector_size} is neither 512 nor 4096"),
        ));
    }
    let (sector, sector_at) = need(PHYSICAL_SECTOR_SIZE, "physical sector size", 4)?;
    let physical_sector_size = le32(&sector, 0);
    if physical_sector_size != 512 && physical_sector_size != 4096 {
        return Err(view.invalid(
            sector_at,
            format!("VHDX physical sector size {physical_sector_size} is neither 512 nor 4096"),
        ));
    }

    let (size, size_at) = need(VIRTUAL_DISK_SIZE, "virtual disk size", 8)?;
    let virtual_size = le64(&size, 0);
    if virtual_size > MAX_VIRTUAL_SIZE || virtual_size % u64::from(logical_sector_size) != 0 {
        return Err(view.invalid(
            size_at,
            format!(
                "VHDX virtual disk size {virtual_size} is not a multiple of the {logical_sector_size}-byte sector up to 64 TiB"
            ),
        ));
    }
    let (id, _) = need(VIRTUAL_DISK_ID, "virtual disk id", 16)?;
    let disk_id = Guid::read(&id, 0);

    let parent_locator = if has_parent {
        let (bytes, at) = need(PARENT_LOCATOR, "parent locator", 0)?;
        Some(parse_parent_locator(view, &bytes, at)?)
    } else {
        None
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated,
        has_parent,
        virtual_size,
        logical_sector_size,
        physical_sector_size,
        disk_id,
        parent_locator,
    })
}

/// The parent locator (MS-VHDX 2.6.2.6): a type GUID, a count, then key-value entries whose
/// UTF-16LE strings lie inside the item.
fn parse_parent_locator(view: &FileView, b: &[u8], at: u64) -> Result<Vec<(String, String)>> {
    const HEADER: usize = 20;
    const ENTRY: usize = 12;
    if b.len() < HEADER {
        return Err(view.invalid(at, "VHDX parent locator is shorter than its header"));
    }
    let kind = Guid::read(b, 0);
    if kind != VHDX_PARENT_LOCATOR_TYPE {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("VHDX parent locator type {kind} is not the VHDX parent type"),
        )
        .with_path(&view.path)
        .at_offset(at));
    }
    let count = le16(b, 18) as usize;
    if HEADER + count * ENTRY > b.len() {
        return Err(view.invalid(
            at + 18,
            format!(
                "VHDX parent locator has {count} entries, more than its {} bytes hold",
                b.len()
            ),
        ));
    }
    let text = |offset: u32, len: u16, entry_at: usize| -> Result<String> {
        let (start, end) = (offset as usize, offset as usize + len as usize);
        if end > b.len() || len % 2 != 0 {
            return Err(view.invalid(
                at + entry_at as u64,
                format!(
                    "VHDX parent locator string ({len} bytes at {offset}) lies outside the locator"
                ),
            ));
        }
        let units: Vec<u16> = b[start..end]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).map_err(|_| {
            view.invalid(
                at + entry_at as u64,
                "VHDX parent locator string is not UTF-16",
            )
        })
    };
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let e = HEADER + i * ENTRY;
        let key = text(le32(b, e), le16(b, e + 8), e)?;
        let value = text(le32(b, e + 4), le16(b, e + 10), e)?;
        entries.push((key, value));
    }
    Ok(entries)
}

/// A parent locator item holding `entries`, for test images.
#[cfg(test)]
pub(crate) fn parent_locator_bytes(entries: &[(&str, &str)]) -> Vec<u8> {
    use super::fields::{put16, put32};
    let mut b = vec![0u8; 20 + 12 * entries.len()];
    b[..16].copy_from_slice(&VHDX_PARENT_LOCATOR_TYPE.0);
    put16(&mut b, 18, entries.len() as u16);
    for (i, (k, v)) in entries.iter().enumerate() {
        let e = 20 + 12 * i;
        for (field, s) in [(0, k), (4, v)] {
            let offset = b.len() as u32;
            let units: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            b.extend_from_slice(&units);
            put32(&mut b, e + field, offset);
            put16(&mut b, e + 8 + field / 2, units.len() as u16);
        }
    }
    b
}

/// A metadata region of `len` bytes holding `items` (id, bytes, flags), for test images.
#[cfg(test)]
pub(crate) fn region_bytes(items: &[(Guid, Vec<u8>, u32)], len: usize) -> Vec<u8> {
    use super::fields::{put16, put32};
    let mut b = vec![0u8; len];
    b[..8].copy_from_slice(SIGNATURE);
    put16(&mut b, OFF_ENTRY_COUNT, items.len() as u16);
    let mut next = TABLE_LEN;
    for (i, (id, data, flags)) in items.iter().enumerate() {
        let e = HEADER_LEN + i * ENTRY_LEN;
        b[e..e + 16].copy_from_slice(&id.0);
        put32(&mut b, e + OFF_ITEM_OFFSET, next as u32);
        put32(&mut b, e + OFF_ITEM_LENGTH, data.len() as u32);
        put32(&mut b, e + OFF_FLAGS, *flags);
        b[next..next + data.len()].copy_from_slice(data);
        next += data.len().next_multiple_of(8);
    }
    b
}
