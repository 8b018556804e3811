//! The file type identifier and the two VHDX headers (MS-VHDX 2.1, 2.2).
//!
//! The first 1 MiB of a VHDX holds the identifier (offset 0, signature `vhdxfile`), header 1
//! (64 KiB), header 2 (128 KiB) and the two region table copies. A writer updates the
//! headers alternately, so a crash can leave one half-written: the current header is the
//! valid one (signature and CRC-32C) with the higher sequence number, and one damaged copy is
//! normal, not an error.

use std::fmt::Write as _;

use super::crc32c::crc32c_skipping;
use super::fields::{le16, le32, le64};
use super::guid::Guid;
use super::view::FileView;
use crate::error::{Error, ErrorKind, Result};

/// The file type identifier's signature, at offset 0.
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Where the two header copies live.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Bytes of a header covered by its checksum.
pub const HEADER_LEN: usize = 4096;

const SIGNATURE: &[u8; 4] = b"head";
const OFF_CHECKSUM: usize = 4;
const OFF_SEQUENCE: usize = 8;
const OFF_FILE_WRITE_GUID: usize = 16;
const OFF_DATA_WRITE_GUID: usize = 32;
const OFF_LOG_GUID: usize = 48;
const OFF_LOG_VERSION: usize = 64;
const OFF_VERSION: usize = 66;
const OFF_LOG_LENGTH: usize = 68;
const OFF_LOG_OFFSET: usize = 72;

/// A checksum-verified VHDX header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdxHeader {
    /// Where this copy was read (64 KiB or 128 KiB).
    pub offset: u64,
    /// Higher is newer.
    pub sequence: u64,
    /// Changes whenever the file is opened for writing.
    pub file_write_guid: Guid,
    /// Changes whenever guest-visible data changes; a differencing child records its
    /// parent's value as `parent_linkage`.
    pub data_write_guid: Guid,
    /// Non-zero when the log may hold entries that must be replayed before reading.
    pub log_guid: Guid,
    /// Must be 0.
    pub log_version: u16,
    /// Must be 1.
    pub version: u16,
    /// Log size in bytes (a multiple of 1 MiB).
    pub log_length: u32,
    /// Log location in the file (a multiple of 1 MiB).
    pub log_offset: u64,
}

impl VhdxHeader {
    /// Parses and verifies the 4 KiB at `offset`; errors name what is wrong (without a path).
    pub fn parse(bytes: &[u8], offset: u64) -> Result<Self> {
        let invalid = |msg: String| Error::new(ErrorKind::InvalidFormat, msg).at_offset(offset);
        if &bytes[..4] != SIGNATURE {
            return Err(invalid(format!(
                "no VHDX header signature \"head\" (found {:?})",
                String::from_utf8_lossy(&bytes[..4])
            )));
        }
        let stored = le32(bytes, OFF_CHECKSUM);
        let computed = crc32c_skipping(&bytes[..HEADER_LEN], OFF_CHECKSUM);
        if stored != computed {
            return Err(invalid(format!(
                "bad VHDX header checksum (stored {stored:#010x}, computed {computed:#010x})"
            )));
        }
        Ok(VhdxHeader {
            offset,
            sequence: le64(bytes, OFF_SEQUENCE),
            file_write_guid: Guid::read(bytes, OFF_FILE_WRITE_GUID),
            data_write_guid: Guid::read(bytes, OFF_DATA_WRITE_GUID),
            log_guid: Guid::read(bytes, OFF_LOG_GUID),
            log_version: le16(bytes, OFF_LOG_VERSION),
            version: le16(bytes, OFF_VERSION),
            log_length: le32(bytes, OFF_LOG_LENGTH),
            log_offset: le64(bytes, OFF_LOG_OFFSET),
        })
    }

    /// The header's 4 KiB with its checksum, for test images.
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        use super::fields::{put16, put32, put64};
        let mut b = vec![0u8; HEADER_LEN];
        b[..4].copy_from_slice(SIGNATURE);
        put64(&mut b, OFF_SEQUENCE, self.sequence);
        b[OFF_FILE_WRITE_GUID..OFF_FILE_WRITE_GUID + 16].copy_from_slice(&self.file_write_guid.0);
        b[OFF_DATA_WRITE_GUID..OFF_DATA_WRITE_GUID + 16].copy_from_slice(&self.data_write_guid.0);
        b[OFF_LOG_GUID..OFF_LOG_GUID + 16].copy_from_slice(&self.log_guid.0);
        put16(&mut b, OFF_LOG_VERSION, self.log_version);
        put16(&mut b, OFF_VERSION, self.version);
        put32(&mut b, OFF_LOG_LENGTH, self.log_length);
        put64(&mut b, OFF_LOG_OFFSET, self.log_offset);
        let sum = crc32c_skipping(&b, OFF_CHECKSUM);
        put32(&mut b, OFF_CHECKSUM, sum);
        b
    }
}

/// Checks the file identifier and returns the current header: the valid copy with the
/// higher sequence number. Both copies damaged is an error naming both.
pub(crate) fn read_current_header(view: &FileView) -> Result<VhdxHeader> {
    view.check_range(
        0,
        HEADER_OFFSETS[1] + HEADER_LEN as u64,
        "the VHDX header area",
    )?;
    let id = view.read_vec(0, 8)?;
    if id != FILE_SIGNATURE {
        return Err(view.invalid(
            0,
            format!(
                "no VHDX file signature \"vhdxfile\" (found {:?})",
                String::from_utf8_lossy(&id)
            ),
        ));
    }
    let mut valid = Vec::new();
    let mut damage = String::new();
    for offset in HEADER_OFFSETS {
        let bytes = view.read_vec(offset, HEADER_LEN)?;
        match VhdxHeader::parse(&bytes, offset) {
            Ok(h) => valid.push(h),
            Err(e) => {
                let sep = if damage.is_empty() { "" } else { "; " };
                let _ = write!(damage, "{sep}{e}");
            }
        }
    }
    let Some(current) = valid.into_iter().max_by_key(|h| h.sequence) else {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!("both VHDX headers are damaged: {damage}"),
        )
        .with_path(&view.path));
    };
    if current.version != 1 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "VHDX header version {} (only version 1 is defined)",
                current.version
            ),
        )
        .with_path(&view.path)
        .at_offset(current.offset + OFF_VERSION as u64));
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sequence: u64) -> VhdxHeader {
        VhdxHeader {
            offset: 0,
            sequence,
            file_write_guid: Guid([1; 16]),
            data_write_guid: Guid([2; 16]),
            log_guid: Guid::default(),
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        }
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let h = header(7);
        let bytes = h.to_bytes();
        assert_eq!(VhdxHeader::parse(&bytes, 0).unwrap(), h);
        let mut bad = bytes.clone();
        bad[4000] ^= 1; // inside the checksummed reserved area
        let err = VhdxHeader::parse(&bad, 65536).unwrap_err();
        assert!(
            err.to_string().contains("bad VHDX header checksum"),
            "{err}"
        );
        assert_eq!(err.offset(), Some(65536));
        let err = VhdxHeader::parse(&[0u8; 4096], 131072).unwrap_err();
        assert!(err.to_string().contains("\"head\""), "{err}");
    }
}
