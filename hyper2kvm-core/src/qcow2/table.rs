//! Raw L1 and L2 table entries, encoded as qemu's `docs/interop/qcow2.rst` specifies.

use super::types::{Geometry, HostOffset};

/// Bit 63 of an L1 or standard L2 entry: the cluster's refcount is exactly one.
pub(crate) const COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: the cluster is compressed.
pub(crate) const COMPRESSED: u64 = 1 << 62;
/// Bits 9-55 of L1 and standard L2 entries hold a cluster-aligned host offset.
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// An L1 entry pointing at an L2 table whose only reference is this entry.
pub fn l1_entry(l2_table: HostOffset) -> u64 {
    debug_assert_eq!(l2_table.0 & !OFFSET_MASK, 0);
    l2_table.0 | COPIED
}

/// A standard L2 entry for an uncompressed data cluster referenced once.
pub fn l2_standard(cluster: HostOffset) -> u64 {
    debug_assert_eq!(cluster.0 & !OFFSET_MASK, 0);
    cluster.0 | COPIED
}

/// A compressed L2 entry for `len` compressed bytes at the (byte-granular) host `offset`.
///
/// The low `x = 62 - (cluster_bits - 8)` bits hold the offset; bits `x..62` hold the number of
/// 512-byte sectors the data occupies beyond the one containing `offset`.
pub fn l2_compressed(geo: &Geometry, offset: HostOffset, len: u64) -> u64 {
    debug_assert!(len > 0);
    let x = 62 - (geo.cluster_bits - 8);
    let extra_sectors = ((offset.0 + len - 1) >> 9) - (offset.0 >> 9);
    debug_assert!(offset.0 < 1 << x);
    debug_assert!(extra_sectors < 1 << (geo.cluster_bits - 8));
    COMPRESSED | (extra_sectors << x) | offset.0
}

/// The host byte range a compressed entry's reader (and `qemu-img check`) considers in use:
/// from `offset` to the end of the 512-byte sector holding the last byte.
pub fn compressed_span(offset: HostOffset, len: u64) -> std::ops::Range<u64> {
    offset.0..((offset.0 + len - 1) | 511) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_entry_layout() {
        let geo = Geometry::new(65536, 1 << 30).unwrap();
        // x = 62 - 8 = 54: offset in bits 0-53, sector count from bit 54.
        let e = l2_compressed(&geo, HostOffset(0x10_0200 + 17), 1000);
        assert_eq!(e & COMPRESSED, COMPRESSED);
        assert_eq!(e & ((1 << 54) - 1), 0x10_0200 + 17);
        // Bytes 17..1017 of the sector at 0x100200: one extra sector.
        assert_eq!((e >> 54) & 0xff, 1);
        assert_eq!(
            compressed_span(HostOffset(0x10_0211), 1000),
            0x10_0211..0x10_0600
        );
    }

    #[test]
    fn standard_entries_set_copied() {
        assert_eq!(l2_standard(HostOffset(0x20000)), 0x20000 | COPIED);
        assert_eq!(l1_entry(HostOffset(0x30000)), 0x30000 | COPIED);
    }
}
