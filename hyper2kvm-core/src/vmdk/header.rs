//! The 512-byte header of a hosted sparse extent (`SparseExtentHeader` in VMware's "Virtual
//! Disk Format 5.0", section "Hosted Sparse Extent Header"), and the 512-byte markers of the
//! stream-optimized form.
//!
//! All fields are little-endian. Offsets and sizes are in 512-byte sectors, as the spec stores
//! them; [`SparseHeader`] keeps them so, and callers multiply by [`SECTOR`] with checked
//! arithmetic, because every one of them comes from an untrusted file.

use crate::error::{Error, ErrorKind, Result};

/// Bytes per sector: every offset and size in a VMDK header counts these.
pub const SECTOR: u64 = 512;

/// Length of the header, a marker, and the footer of a stream-optimized extent.
pub const HEADER_LEN: usize = 512;

/// `"KDMV"` as it appears on disk (the little-endian `0x564d444b`).
pub const MAGIC: &[u8; 4] = b"KDMV";

/// `"COWD"`: the ESX 2.x / `vmfsSparse` extent format, which we do not read.
pub const COWD_MAGIC: &[u8; 4] = b"COWD";

/// `gdOffset` of a stream-optimized header whose grain directory follows the grains: the
/// real offset is in the footer at the end of the file.
pub const GD_AT_END: u64 = u64::MAX;

// Field offsets in `SparseExtentHeader`, from the spec (the struct is packed).
const OFF_VERSION: usize = 4;
const OFF_FLAGS: usize = 8;
const OFF_CAPACITY: usize = 12;
const OFF_GRAIN_SIZE: usize = 20;
const OFF_DESCRIPTOR_OFFSET: usize = 28;
const OFF_DESCRIPTOR_SIZE: usize = 36;
const OFF_NUM_GTES_PER_GT: usize = 44;
const OFF_RGD_OFFSET: usize = 48;
const OFF_GD_OFFSET: usize = 56;
const OFF_OVERHEAD: usize = 64;
/// `singleEndLineChar`, `nonEndLineChar`, `doubleEndLineChar1`, `doubleEndLineChar2`.
const OFF_NEWLINE_CHECK: usize = 73;
const OFF_COMPRESS_ALGORITHM: usize = 77;

/// The bytes a text-mode transfer would mangle: `'\n' ' ' '\r' '\n'`.
const NEWLINE_CHECK: &[u8; 4] = b"\n \r\n";

/// Flag bit 0: the newline-detection bytes are valid.
pub const FLAG_NEWLINE_CHECK: u32 = 1 << 0;
/// Flag bit 1: the redundant grain directory and tables are in use.
pub const FLAG_REDUNDANT_GD: u32 = 1 << 1;
/// Flag bit 2: a grain table entry of 1 means "grain reads as zeros".
pub const FLAG_ZEROED_GTE: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: the extent holds markers (stream-optimized).
pub const FLAG_MARKERS: u32 = 1 << 17;

/// `compressAlgorithm` 1: RFC 1951 deflate in a RFC 1950 zlib stream.
pub const COMPRESSION_DEFLATE: u16 = 1;

/// Marker types of a stream-optimized extent (a marker whose `size` is 0).
pub const MARKER_EOS: u32 = 0;
/// A grain table follows.
pub const MARKER_GT: u32 = 1;
/// A grain directory follows.
pub const MARKER_GD: u32 = 2;
/// The footer (a copy of the header with the real `gdOffset`) follows.
pub const MARKER_FOOTER: u32 = 3;

/// A parsed sparse extent header. Offsets and sizes are in sectors, unchecked beyond what
/// [`SparseHeader::parse`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// 1, 2 or 3 (3 adds changed-block tracking, which readers may ignore).
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The extent's size in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    /// Where the embedded descriptor starts (0: none).
    pub descriptor_offset: u64,
    /// The embedded descriptor's size.
    pub descriptor_size: u64,
    /// Entries per grain table (512 in every known writer).
    pub num_gtes_per_gt: u32,
    /// The redundant grain directory.
    pub rgd_offset: u64,
    /// The grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// 0: none, [`COMPRESSION_DEFLATE`]: deflate.
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parses the header in `bytes`, found at `offset` of its file (for errors). Checks the
    /// magic, the version, the newline bytes and the compression algorithm; the caller checks
    /// the geometry against the file's size.
    pub fn parse(bytes: &[u8; HEADER_LEN], offset: u64) -> Result<Self> {
        let invalid = |field: usize, msg: String| {
            Error::new(ErrorKind::InvalidFormat, msg).at_offset(offset + field as u64)
        };
        if &bytes[..4] != MAGIC {
            return Err(invalid(
                0,
                format!(
                    "no VMDK sparse extent header: expected magic \"KDMV\", found {:?}",
                    String::from_utf8_lossy(&bytes[..4])
                ),
            ));
        }
        let version = le32(bytes, OFF_VERSION);
        if !(1..=3).contains(&version) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("VMDK sparse extent version {version} (this reader knows 1 to 3)"),
            )
            .at_offset(offset + OFF_VERSION as u64));
        }
        let flags = le32(bytes, OFF_FLAGS);
        if flags & FLAG_NEWLINE_CHECK != 0
            && &bytes[OFF_NEWLINE_CHECK..OFF_NEWLINE_CHECK + 4] != NEWLINE_CHECK
        {
            return Err(invalid(
                OFF_NEWLINE_CHECK,
                "the header's newline-detection bytes are damaged: the file was probably copied in text mode (e.g. ASCII FTP)".into(),
            ));
        }
        let compress_algorithm = le16(bytes, OFF_COMPRESS_ALGORITHM);
        if compress_algorithm > COMPRESSION_DEFLATE {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "VMDK compression algorithm {compress_algorithm} (only 1, deflate, is defined)"
                ),
            )
            .at_offset(offset + OFF_COMPRESS_ALGORITHM as u64));
        }
        Ok(SparseHeader {
            version,
            flags,
            capacity: le64(bytes, OFF_CAPACITY),
            grain_size: le64(bytes, OFF_GRAIN_SIZE),
            descriptor_offset: le64(bytes, OFF_DESCRIPTOR_OFFSET),
            descriptor_size: le64(bytes, OFF_DESCRIPTOR_SIZE),
            num_gtes_per_gt: le32(bytes, OFF_NUM_GTES_PER_GT),
            rgd_offset: le64(bytes, OFF_RGD_OFFSET),
            gd_offset: le64(bytes, OFF_GD_OFFSET),
            overhead: le64(bytes, OFF_OVERHEAD),
            compress_algorithm,
        })
    }

    /// Grains are deflated, each behind a grain marker or (without markers) bare.
    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }

    /// Compressed grains start with a 12-byte grain marker (lba, size).
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// A grain table entry of 1 means a zeroed grain.
    pub fn zeroed_gte(&self) -> bool {
        self.flags & FLAG_ZEROED_GTE != 0
    }

    /// The byte offset in the header of the `capacity` field (for errors).
    pub const CAPACITY_FIELD: u64 = OFF_CAPACITY as u64;
    /// The byte offset in the header of the `grainSize` field.
    pub const GRAIN_SIZE_FIELD: u64 = OFF_GRAIN_SIZE as u64;
    /// The byte offset in the header of the `numGTEsPerGT` field.
    pub const NUM_GTES_FIELD: u64 = OFF_NUM_GTES_PER_GT as u64;
    /// The byte offset in the header of the `gdOffset` field.
    pub const GD_OFFSET_FIELD: u64 = OFF_GD_OFFSET as u64;
    /// The byte offset in the header of the `descriptorOffset` field.
    pub const DESCRIPTOR_FIELD: u64 = OFF_DESCRIPTOR_OFFSET as u64;
}

/// A marker of a stream-optimized extent: `val` (u64) at 0, `size` (u32) at 8, and, when
/// `size` is 0, `type` (u32) at 12. With `size` > 0 it is a grain marker: `val` is the
/// grain's first sector in the extent and `size` bytes of compressed data follow at 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Sectors of metadata that follow (metadata markers), or the grain's LBA.
    pub val: u64,
    /// Compressed bytes that follow; 0 for a metadata marker.
    pub size: u32,
    /// One of `MARKER_*` when `size` is 0.
    pub kind: u32,
}

/// Length of a grain marker's fields before the compressed data.
pub const GRAIN_MARKER_LEN: usize = 12;

impl Marker {
    /// Reads a marker from the start of `bytes` (at least 16 bytes long).
    pub fn parse(bytes: &[u8]) -> Marker {
        Marker {
            val: le64(bytes, 0),
            size: le32(bytes, 8),
            kind: le32(bytes, 12),
        }
    }

    /// A metadata marker of `kind` (not a grain).
    pub fn is(&self, kind: u32) -> bool {
        self.size == 0 && self.kind == kind
    }
}

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header as qemu-img writes one for a 10 MiB monolithicSparse disk.
    pub(crate) fn sample() -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&1u32.to_le_bytes());
        b[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&3u32.to_le_bytes());
        b[OFF_CAPACITY..OFF_CAPACITY + 8].copy_from_slice(&20480u64.to_le_bytes());
        b[OFF_GRAIN_SIZE..OFF_GRAIN_SIZE + 8].copy_from_slice(&128u64.to_le_bytes());
        b[OFF_DESCRIPTOR_OFFSET..OFF_DESCRIPTOR_OFFSET + 8].copy_from_slice(&1u64.to_le_bytes());
        b[OFF_DESCRIPTOR_SIZE..OFF_DESCRIPTOR_SIZE + 8].copy_from_slice(&20u64.to_le_bytes());
        b[OFF_NUM_GTES_PER_GT..OFF_NUM_GTES_PER_GT + 4].copy_from_slice(&512u32.to_le_bytes());
        b[OFF_RGD_OFFSET..OFF_RGD_OFFSET + 8].copy_from_slice(&21u64.to_le_bytes());
        b[OFF_GD_OFFSET..OFF_GD_OFFSET + 8].copy_from_slice(&26u64.to_le_bytes());
        b[OFF_OVERHEAD..OFF_OVERHEAD + 8].copy_from_slice(&128u64.to_le_bytes());
        b[OFF_NEWLINE_CHECK..OFF_NEWLINE_CHECK + 4].copy_from_slice(NEWLINE_CHECK);
        b
    }

    #[test]
    fn parses_fields_at_spec_offsets() {
        let h = SparseHeader::parse(&sample(), 0).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.capacity, 20480);
        assert_eq!(h.grain_size, 128);
        assert_eq!((h.descriptor_offset, h.descriptor_size), (1, 20));
        assert_eq!(h.num_gtes_per_gt, 512);
        assert_eq!((h.rgd_offset, h.gd_offset, h.overhead), (21, 26, 128));
        assert!(!h.compressed() && !h.has_markers() && !h.zeroed_gte());
    }

    #[test]
    fn rejects_magic_version_newlines_and_compression() {
        let mut b = sample();
        b[0] = b'X';
        let err = SparseHeader::parse(&b, 4096).unwrap_err();
        assert!(err.to_string().contains("KDMV"), "{err}");
        assert_eq!(err.offset(), Some(4096));

        let mut b = sample();
        b[OFF_VERSION] = 4;
        let err = SparseHeader::parse(&b, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("version 4"), "{err}");

        let mut b = sample();
        b[OFF_NEWLINE_CHECK + 2] = b'\n'; // "\r\n" became "\n\n"
        let err = SparseHeader::parse(&b, 0).unwrap_err();
        assert!(err.to_string().contains("text mode"), "{err}");
        assert_eq!(err.offset(), Some(OFF_NEWLINE_CHECK as u64));

        let mut b = sample();
        b[OFF_COMPRESS_ALGORITHM] = 7;
        let err = SparseHeader::parse(&b, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn markers() {
        let mut b = [0u8; 16];
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        b[12..16].copy_from_slice(&MARKER_FOOTER.to_le_bytes());
        assert!(Marker::parse(&b).is(MARKER_FOOTER));
        b[8] = 9; // a grain marker of 9 bytes
        assert!(!Marker::parse(&b).is(MARKER_FOOTER));
    }
}
