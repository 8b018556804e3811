//! Offsets and geometry: guest offsets (what the VM sees) and host offsets (where bytes lie in
//! the image file) are different types so they cannot be mixed up.

use crate::error::{Error, ErrorKind, Result};

/// A byte offset in the guest's view of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestOffset(pub u64);

/// A byte offset in the image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostOffset(pub u64);

/// qemu refuses L1 tables above 32 MiB (`QCOW_MAX_L1_SIZE`).
const MAX_L1_BYTES: u64 = 32 << 20;

/// The fixed shape of an image: cluster size, virtual size, table sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// The guest-visible size in bytes (need not be a multiple of the cluster size).
    pub virtual_size: u64,
}

impl Geometry {
    /// Checks that `cluster_size` is a power of two from 512 B to 2 MiB and that qemu can
    /// address `virtual_size` with it.
    pub fn new(cluster_size: u32, virtual_size: u64) -> Result<Geometry> {
        if !(512..=2 << 20).contains(&cluster_size) || !cluster_size.is_power_of_two() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("cluster size {cluster_size} must be a power of two from 512 to 2097152"),
            ));
        }
        let geo = Geometry {
            cluster_bits: cluster_size.trailing_zeros(),
            virtual_size,
        };
        let l1_bytes = geo.l1_entries() * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a {virtual_size}-byte disk with {cluster_size}-byte clusters needs a {l1_bytes}-byte L1 table, above qemu's 32 MiB limit; use a larger cluster size"
                ),
            ));
        }
        Ok(geo)
    }

    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table (one cluster of 8-byte entries).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest bytes one L2 table maps.
    pub fn l2_coverage(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// Entries the L1 table needs to map the whole virtual size.
    pub fn l1_entries(&self) -> u64 {
        self.virtual_size.div_ceil(self.l2_coverage())
    }

    /// Refcount entries in one refcount block (16-bit refcounts).
    pub fn refcount_block_entries(&self) -> u64 {
        self.cluster_size() / 2
    }

    /// The guest cluster index of `offset`.
    pub fn guest_cluster(&self, offset: GuestOffset) -> u64 {
        offset.0 >> self.cluster_bits
    }

    /// The L1 index and L2 index that map guest cluster `cluster`.
    pub fn table_indexes(&self, cluster: u64) -> (u64, usize) {
        let l2_bits = self.cluster_bits - 3;
        (
            cluster >> l2_bits,
            (cluster & ((1 << l2_bits) - 1)) as usize,
        )
    }

    /// The host cluster index holding `offset`.
    pub fn host_cluster(&self, offset: HostOffset) -> u64 {
        offset.0 >> self.cluster_bits
    }

    /// `n` bytes rounded up to whole clusters.
    pub fn clusters_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.cluster_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_geometry() {
        let geo = Geometry::new(65536, 10 << 30).unwrap();
        assert_eq!(geo.l2_entries(), 8192);
        assert_eq!(geo.l2_coverage(), 512 << 20);
        assert_eq!(geo.l1_entries(), 20);
        assert_eq!(geo.table_indexes(8193), (1, 1));
        assert_eq!(geo.refcount_block_entries(), 32768);
    }

    #[test]
    fn rejects_bad_cluster_sizes_and_huge_l1() {
        for cs in [0, 256, 1000, 4 << 20] {
            assert!(Geometry::new(cs, 1 << 20).is_err(), "{cs}");
        }
        // 512-byte clusters map 32 KiB per L2 table: 2 TiB needs a 512 MiB L1.
        let err = Geometry::new(512, 2 << 40).unwrap_err();
        assert!(err.to_string().contains("L1 table"), "{err}");
        assert!(Geometry::new(4096, 2 << 40).is_ok());
    }
}
