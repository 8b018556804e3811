//! The qcow2 version 3 header, written last, into cluster 0.

use super::types::{Geometry, HostOffset};
use super::Compression;

/// `QFI\xfb`.
const MAGIC: u32 = 0x5146_49fb;
/// Bytes 0-111: the v3 header including the compression type byte and its padding.
pub const HEADER_LENGTH: u32 = 112;
/// Incompatible feature bit 3: the compression type field is not deflate.
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
/// 16-bit refcounts.
pub const REFCOUNT_ORDER: u32 = 4;

/// The fields of a v3 header we set; everything else is zero (no backing file, no
/// encryption, no snapshots, no extensions but the end marker).
#[derive(Debug, Clone)]
pub struct Header {
    /// Cluster size and virtual size.
    pub geometry: Geometry,
    /// Where the L1 table lies.
    pub l1_table_offset: HostOffset,
    /// Where the refcount table lies.
    pub refcount_table_offset: HostOffset,
    /// How many clusters the refcount table spans.
    pub refcount_table_clusters: u32,
    /// The compression type of compressed clusters, if any were written.
    pub compression: Option<Compression>,
}

impl Header {
    /// The header bytes followed by the end-of-extensions marker.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LENGTH as usize + 8];
        let geo = &self.geometry;
        let zstd = self.compression == Some(Compression::Zstd);
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 4, 3); // version
                             // 8: backing_file_offset, 16: backing_file_size: none.
        put32(&mut b, 20, geo.cluster_bits);
        put64(&mut b, 24, geo.virtual_size);
        // 32: crypt_method: none.
        put32(&mut b, 36, geo.l1_entries() as u32);
        put64(&mut b, 40, self.l1_table_offset.0);
        put64(&mut b, 48, self.refcount_table_offset.0);
        put32(&mut b, 56, self.refcount_table_clusters);
        // 60: nb_snapshots, 64: snapshots_offset: none.
        put64(&mut b, 72, if zstd { INCOMPAT_COMPRESSION_TYPE } else { 0 });
        // 80: compatible_features, 88: autoclear_features: none.
        put32(&mut b, 96, REFCOUNT_ORDER);
        put32(&mut b, 100, HEADER_LENGTH);
        b[104] = if zstd { 1 } else { 0 };
        // 112..120: header extension type 0 (end), length 0.
        b
    }
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
    fn zstd_sets_incompatible_bit_and_type() {
        let h = Header {
            geometry: Geometry::new(65536, 1 << 30).unwrap(),
            l1_table_offset: HostOffset(0x30000),
            refcount_table_offset: HostOffset(0x10000),
            refcount_table_clusters: 1,
            compression: Some(Compression::Zstd),
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], b"QFI\xfb");
        assert_eq!(b[79], 8);
        assert_eq!(b[104], 1);
        assert_eq!(u32::from_be_bytes(b[100..104].try_into().unwrap()), 112);
        let plain = Header {
            compression: None,
            ..h
        }
        .to_bytes();
        assert_eq!((plain[79], plain[104]), (0, 0));
    }
}
