//! The region table (MS-VHDX 2.2.3): where the BAT and the metadata live.
//!
//! Two copies, at 192 KiB and 256 KiB, each 64 KiB with a CRC-32C. A writer updates them
//! through the log, so they are read after log replay. One damaged copy is tolerated; a region
//! we do not know that is marked required means we cannot read the file correctly, so it is
//! refused, naming its GUID.

use std::fmt::Write as _;

use super::crc32c::crc32c_skipping;
use super::fields::le32;
use super::fields::le64;
use super::guid::Guid;
use super::view::FileView;
use super::MIB;
use crate::error::{Error, ErrorKind, Result};

/// Where the two region table copies live.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Size of a region table copy, all covered by its checksum.
pub const REGION_TABLE_LEN: usize = 64 << 10;
/// The block allocation table region.
pub const BAT_GUID: Guid = Guid::from_fields(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
/// The metadata region.
pub const METADATA_GUID: Guid = Guid::from_fields(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);

const SIGNATURE: &[u8; 4] = b"regi";
const OFF_CHECKSUM: usize = 4;
const OFF_ENTRY_COUNT: usize = 8;
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 32;
const MAX_ENTRIES: u32 = 2047;
// Within an entry.
const OFF_GUID: usize = 0;
const OFF_FILE_OFFSET: usize = 16;
const OFF_LENGTH: usize = 24;
const OFF_REQUIRED: usize = 28;

/// A region of the file: where it starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// File offset, a multiple of 1 MiB.
    pub offset: u64,
    /// Length in bytes, a multiple of 1 MiB.
    pub length: u64,
}

/// The regions this reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regions {
    /// The block allocation table.
    pub bat: Region,
    /// The metadata region.
    pub metadata: Region,
}

/// Parses one region table copy read at `offset`; errors carry the offset, not the path.
fn parse(bytes: &[u8], offset: u64) -> Result<Regions> {
    let invalid = |at: u64, msg: String| Error::new(ErrorKind::InvalidFormat, msg).at_offset(at);
    if &bytes[..4] != SIGNATURE {
        return Err(invalid(
            offset,
            format!(
                "no VHDX region table signature \"regi\" (found {:?})",
                String::from_utf8_lossy(&bytes[..4])
            ),
        ));
    }
    let stored = le32(bytes, OFF_CHECKSUM);
    let computed = crc32c_skipping(bytes, OFF_CHECKSUM);
    if stored != computed {
        return Err(invalid(
            offset,
            format!(
                "bad VHDX region table checksum (stored {stored:#010x}, computed {computed:#010x})"
            ),
        ));
    }
    let count = le32(bytes, OFF_ENTRY_COUNT);
    if count > MAX_ENTRIES {
        return Err(invalid(
            offset + OFF_ENTRY_COUNT as u64,
            format!("VHDX region table has {count} entries; at most {MAX_ENTRIES} are allowed"),
        ));
    }
    let (mut bat, mut metadata) = (None, None);
    for i in 0..count as usize {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let e = &bytes[at..at + ENTRY_LEN];
        let entry_offset = offset + at as u64;
        let guid = Guid::read(e, OFF_GUID);
        let region = Region {
            offset: le64(e, OFF_FILE_OFFSET),
            length: u64::from(le32(e, OFF_LENGTH)),
        };
        let required = le32(e, OFF_REQUIRED) & 1 != 0;
        let slot = match guid {
            g if g == BAT_GUID => &mut bat,
            g if g == METADATA_GUID => &mut metadata,
            _ if required => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("VHDX file has a required region {guid} this reader does not know"),
                )
                .at_offset(entry_offset))
            }
            _ => continue,
        };
        if region.offset < MIB || region.offset % MIB != 0 || region.length % MIB != 0 {
            return Err(invalid(
                entry_offset,
                format!(
                    "VHDX region {guid} at file offset {} with length {} is not 1 MiB aligned past the header area",
                    region.offset, region.length
                ),
            ));
        }
        if slot.replace(region).is_some() {
            return Err(invalid(
                entry_offset,
                format!("VHDX region table lists region {guid} twice"),
            ));
        }
    }
    let missing = |name: &str| invalid(offset, format!("VHDX region table has no {name} region"));
    Ok(Regions {
        bat: bat.ok_or_else(|| missing("BAT"))?,
        metadata: metadata.ok_or_else(|| missing("metadata"))?,
    })
}

/// Reads the region table: the first valid copy; both damaged is an error naming both.
/// Each region must lie inside the file.
pub(crate) fn read_regions(view: &FileView) -> Result<Regions> {
    let mut damage = String::new();
    let mut found = None;
    for offset in REGION_TABLE_OFFSETS {
        let bytes = view.read_vec(offset, REGION_TABLE_LEN)?;
        match parse(&bytes, offset) {
            Ok(r) => {
                found = Some(r);
                break;
            }
            // A required region we do not know is not damage: the other copy says the same.
            Err(e) if e.kind() == ErrorKind::Unsupported => return Err(e.with_path(&view.path)),
            Err(e) => {
                let sep = if damage.is_empty() { "" } else { "; " };
                let _ = write!(damage, "{sep}{e}");
            }
        }
    }
    let Some(regions) = found else {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!("both VHDX region tables are damaged: {damage}"),
        )
        .with_path(&view.path));
    };
    view.check_range(regions.bat.offset, regions.bat.length, "the BAT region")?;
    view.check_range(
        regions.metadata.offset,
        regions.metadata.length,
        "the metadata region",
    )?;
    Ok(regions)
}

/// A region table copy listing `entries` (guid, offset, length, required), for test images.
#[cfg(test)]
pub(crate) fn table_bytes(entries: &[(Guid, u64, u32, bool)]) -> Vec<u8> {
    use super::fields::put32;
    use super::fields::put64;
    let mut b = vec![0u8; REGION_TABLE_LEN];
    b[..4].copy_from_slice(SIGNATURE);
    put32(&mut b, OFF_ENTRY_COUNT, entries.len() as u32);
    for (i, &(guid, offset, length, required)) in entries.iter().enumerate() {
        let at = HEADER_LEN + i * ENTRY_LEN;
        b[at..at + 16].copy_from_slice(&guid.0);
        put64(&mut b, at + OFF_FILE_OFFSET, offset);
        put32(&mut b, at + OFF_LENGTH, length);
        put32(&mut b, at + OFF_REQUIRED, u32::from(required));
    }
    let sum = crc32c_skipping(&b, OFF_CHECKSUM);
    put32(&mut b, OFF_CHECKSUM, sum);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_regions_and_refuses_unknown_required_ones() {
        let table = table_bytes(&[
            (BAT_GUID, 3 << 20, 1 << 20, true),
            (METADATA_GUID, 2 << 20, 1 << 20, true),
            (Guid([5; 16]), 9 << 20, 1 << 20, false),
        ]);
        let r = parse(&table, 0).unwrap();
        assert_eq!(
            r.bat,
            Region {
                offset: 3 << 20,
                length: 1 << 20
            }
        );
        assert_eq!(r.metadata.offset, 2 << 20);

        let table = table_bytes(&[
            (BAT_GUID, 3 << 20, 1 << 20, true),
            (METADATA_GUID, 2 << 20, 1 << 20, true),
            (Guid([5; 16]), 9 << 20, 1 << 20, true),
        ]);
        let err = parse(&table, 196608).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(
            err.to_string()
                .contains("05050505-0505-0505-0505-050505050505"),
            "{err}"
        );

        let table = table_bytes(&[(METADATA_GUID, 2 << 20, 1 << 20, true)]);
        assert!(parse(&table, 0).unwrap_err().to_string().contains("no BAT"));
        let table = table_bytes(&[
            (BAT_GUID, 3 << 20, 1000, true),
            (METADATA_GUID, 2 << 20, 1 << 20, true),
        ]);
        assert!(parse(&table, 0)
            .unwrap_err()
            .to_string()
            .contains("aligned"));
    }
}
