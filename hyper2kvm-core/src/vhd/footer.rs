//! The 512-byte VHD footer ("hard disk footer" in Microsoft's Virtual Hard Disk Image Format
//! Specification), read and written.
//!
//! All fields are big-endian. The disk size is `current_size`, never the CHS geometry: Azure
//! sizes disks in whole MiB, which CHS cannot express, and Hyper-V and Azure use `current_size`.

use crate::error::{Error, ErrorKind, Result};

/// Length of a footer in bytes.
pub const FOOTER_LEN: usize = 512;

/// `"conectix"`: the cookie every footer starts with.
pub const COOKIE: &[u8; 8] = b"conectix";

// Field offsets in the footer, from the specification.
const OFF_FEATURES: usize = 8;
const OFF_VERSION: usize = 12;
const OFF_DATA_OFFSET: usize = 16;
const OFF_TIMESTAMP: usize = 24;
const OFF_CREATOR_APP: usize = 28;
const OFF_CREATOR_VERSION: usize = 32;
const OFF_CREATOR_OS: usize = 36;
const OFF_ORIGINAL_SIZE: usize = 40;
const OFF_CURRENT_SIZE: usize = 48;
const OFF_GEOMETRY: usize = 56;
const OFF_DISK_TYPE: usize = 60;
const OFF_CHECKSUM: usize = 64;
const OFF_UNIQUE_ID: usize = 68;

/// The kind of VHD a footer describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Data, then the footer.
    Fixed,
    /// A copy of the footer, a dynamic header, a block allocation table, blocks, the footer.
    Dynamic,
    /// A dynamic disk holding only the changes to a parent VHD.
    Differencing,
}

impl DiskType {
    fn from_raw(v: u32) -> Option<DiskType> {
        match v {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }

    fn to_raw(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }
}

/// A parsed, checksum-verified VHD footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// The guest-visible size in bytes.
    pub current_size: u64,
    /// For dynamic disks, the byte offset of the dynamic disk header; `u64::MAX` for fixed.
    pub data_offset: u64,
    /// The four-character creator application, e.g. `"win "`, `"qem2"`.
    pub creator_app: [u8; 4],
}

impl VhdFooter {
    /// A footer for a fixed disk of `size` bytes (a multiple of 512), as Azure expects.
    pub fn fixed(size: u64) -> Self {
        VhdFooter {
            disk_type: DiskType::Fixed,
            current_size: size,
            data_offset: u64::MAX,
            creator_app: *b"h2kv",
        }
    }

    /// Parses and verifies `bytes`, a footer found at `offset` of some file (used in errors).
    pub fn parse(bytes: &[u8; FOOTER_LEN], offset: u64) -> Result<Self> {
        let invalid = |msg: String| Error::new(ErrorKind::InvalidFormat, msg).at_offset(offset);
        if &bytes[..8] != COOKIE {
            return Err(invalid(format!(
                "no VHD footer: expected cookie \"conectix\", found {:?}",
                String::from_utf8_lossy(&bytes[..8])
            )));
        }
        let stored = be32(bytes, OFF_CHECKSUM);
        let computed = checksum(bytes);
        if stored != computed {
            return Err(invalid(format!(
                "bad VHD footer checksum (stored {stored:#010x}, computed {computed:#010x})"
            )));
        }
        let raw_type = be32(bytes, OFF_DISK_TYPE);
        let disk_type = DiskType::from_raw(raw_type)
            .ok_or_else(|| invalid(format!("unknown VHD disk type {raw_type}")))?;
        let current_size = be64(bytes, OFF_CURRENT_SIZE);
        if current_size % 512 != 0 {
            return Err(invalid(format!(
                "VHD current size {current_size} is not a multiple of 512 bytes"
            )));
        }
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&bytes[OFF_CREATOR_APP..OFF_CREATOR_APP + 4]);
        Ok(VhdFooter {
            disk_type,
            current_size,
            data_offset: be64(bytes, OFF_DATA_OFFSET),
            creator_app,
        })
    }

    /// The footer's 512 bytes, with geometry and checksum filled in.
    pub fn to_bytes(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[..8].copy_from_slice(COOKIE);
        put32(&mut b, OFF_FEATURES, 2); // "reserved" feature bit, always set
        put32(&mut b, OFF_VERSION, 0x0001_0000);
        put64(&mut b, OFF_DATA_OFFSET, self.data_offset);
        put32(&mut b, OFF_TIMESTAMP, 0);
        b[OFF_CREATOR_APP..OFF_CREATOR_APP + 4].copy_from_slice(&self.creator_app);
        put32(&mut b, OFF_CREATOR_VERSION, 0x0001_0000);
        b[OFF_CREATOR_OS..OFF_CREATOR_OS + 4].copy_from_slice(b"Wi2k");
        put64(&mut b, OFF_ORIGINAL_SIZE, self.current_size);
        put64(&mut b, OFF_CURRENT_SIZE, self.current_size);
        let (c, h, s) = chs_geometry(self.current_size / 512);
        put32(
            &mut b,
            OFF_GEOMETRY,
            (u32::from(c) << 16) | (u32::from(h) << 8) | u32::from(s),
        );
        put32(&mut b, OFF_DISK_TYPE, self.disk_type.to_raw());
        // A stable, non-zero id derived from the size: reproducible output for tests.
        b[OFF_UNIQUE_ID..OFF_UNIQUE_ID + 8].copy_from_slice(&self.current_size.to_be_bytes());
        b[OFF_UNIQUE_ID + 8..OFF_UNIQUE_ID + 16].copy_from_slice(b"hyper2kv");
        let sum = checksum(&b);
        put32(&mut b, OFF_CHECKSUM, sum);
        b
    }
}

/// The footer checksum: the ones' complement of the byte sum, skipping the checksum field.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    checksum_skipping(bytes, OFF_CHECKSUM)
}

/// VHD's checksum over `bytes`, skipping the 4-byte checksum field at `field`: the ones'
/// complement of the sum of all other bytes. Footer and dynamic header use the same sum.
pub(crate) fn checksum_skipping(bytes: &[u8], field: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// The spec's CHS geometry for a disk of `total_sectors` (cylinders, heads, sectors per track).
fn chs_geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(65535 * 16 * 255);
    let (spt, heads, cyl_times_heads);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cyl_times_heads = total / spt;
    } else {
        let mut s = 17;
        let mut cth = total / s;
        let mut h = cth.div_ceil(1024).max(4);
        if cth >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / s;
        }
        if cth >= h * 1024 {
            s = 63;
            h = 16;
            cth = total / s;
        }
        spt = s;
        heads = h;
        cyl_times_heads = cth;
    }
    ((cyl_times_heads / heads) as u16, heads as u8, spt as u8)
}

pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_uses_current_size() {
        let footer = VhdFooter::fixed(30 << 30);
        let bytes = footer.to_bytes();
        assert_eq!(VhdFooter::parse(&bytes, 0).unwrap(), footer);
    }

    #[test]
    fn rejects_bad_checksum_with_offset() {
        let mut bytes = VhdFooter::fixed(1 << 20).to_bytes();
        bytes[OFF_CURRENT_SIZE + 7] ^= 0x02;
        let err = VhdFooter::parse(&bytes, 4096).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidFormat);
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(err.offset(), Some(4096));
    }

    #[test]
    fn rejects_wrong_cookie_and_type() {
        let err = VhdFooter::parse(&[0u8; FOOTER_LEN], 0).unwrap_err();
        assert!(err.to_string().contains("conectix"), "{err}");
        let mut bytes = VhdFooter::fixed(1 << 20).to_bytes();
        put32(&mut bytes, OFF_DISK_TYPE, 9);
        let sum = checksum(&bytes);
        put32(&mut bytes, OFF_CHECKSUM, sum);
        assert!(VhdFooter::parse(&bytes, 0)
            .unwrap_err()
            .to_string()
            .contains("disk type 9"));
    }

    #[test]
    fn geometry_matches_spec_examples() {
        // 127 GiB: beyond what 63 sectors/track can address, so 255 sectors, 16 heads. (qemu
        // writes 65279 cylinders: it grows the size until CHS covers it; the spec floors.)
        assert_eq!(chs_geometry((127u64 << 30) / 512), (65278, 16, 255));
        // 1 MiB: 17 sectors per track, at least 4 heads.
        assert_eq!(chs_geometry(2048), (30, 4, 17));
    }
}
