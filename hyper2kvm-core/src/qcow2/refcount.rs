//! Refcounts, kept for a sliding window of host clusters only.
//!
//! The writer appends: once the append position has moved past a host cluster, nothing will
//! reference that cluster again, so its count is final. When a whole refcount block's worth
//! of clusters is final the writer writes the block out and forgets it. Memory stays at about
//! one block's worth of counts, whatever the image size, and only the refcount *table* (8
//! bytes per block, one block per 2 GiB of image at 64 KiB clusters) grows.

use super::types::Geometry;
use crate::journal::{Decoder, Encoder};

/// Counts for the host clusters not yet written out in a refcount block.
#[derive(Debug)]
pub struct Refcounts {
    block_entries: u64,
    /// Host offsets of refcount blocks written so far, by block number.
    table: Vec<u64>,
    /// The first host cluster whose count is still in `counts`; a multiple of `block_entries`.
    window_start: u64,
    counts: Vec<u16>,
}

impl Refcounts {
    /// Counts for an empty image.
    pub fn new(geo: &Geometry) -> Self {
        Refcounts {
            block_entries: geo.refcount_block_entries(),
            table: Vec::new(),
            window_start: 0,
            counts: Vec::new(),
        }
    }

    /// Adds one reference to each of the `n` host clusters from `first`.
    pub fn add(&mut self, first: u64, n: u64) {
        assert!(
            first >= self.window_start,
            "cluster {first} already written out"
        );
        let lo = (first - self.window_start) as usize;
        let hi = lo + n as usize;
        if self.counts.len() < hi {
            self.counts.resize(hi, 0);
        }
        for c in &mut self.counts[lo..hi] {
            *c = c
                .checked_add(1)
                .expect("refcount overflow: caller must keep counts below 65535");
        }
    }

    /// The count of host cluster `cluster` (0 if never referenced or already written out).
    pub fn get(&self, cluster: u64) -> u16 {
        cluster
            .checked_sub(self.window_start)
            .and_then(|i| self.counts.get(i as usize).copied())
            .unwrap_or(0)
    }

    /// If every cluster of the oldest block in the window lies below `final_below` (the
    /// first cluster that may still gain references), that block's number.
    pub fn complete_block(&self, final_below: u64) -> Option<u64> {
        (final_below >= self.window_start + self.block_entries)
            .then_some(self.window_start / self.block_entries)
    }

    /// Encodes the oldest block of the window (big-endian 16-bit counts, padded to a cluster)
    /// and drops it from the window. The caller writes it and records where with
    /// [`set_block_offset`](Self::set_block_offset).
    pub fn take_block(&mut self) -> (u64, Vec<u8>) {
        let block = self.window_start / self.block_entries;
        let n = (self.block_entries as usize).min(self.counts.len());
        let mut bytes = vec![0u8; self.block_entries as usize * 2];
        for (i, c) in self.counts.drain(..n).enumerate() {
            bytes[i * 2..i * 2 + 2].copy_from_slice(&c.to_be_bytes());
        }
        self.window_start += self.block_entries;
        (block, bytes)
    }

    /// Records that block `block` lies at host offset `offset`.
    pub fn set_block_offset(&mut self, block: u64, offset: u64) {
        let i = block as usize;
        if self.table.len() <= i {
            self.table.resize(i + 1, 0);
        }
        self.table[i] = offset;
    }

    /// The number of the block holding the oldest count still in the window.
    pub fn first_open_block(&self) -> u64 {
        self.window_start / self.block_entries
    }

    /// The refcount table: host offsets of blocks by block number (0 for none).
    pub fn table(&self) -> &[u64] {
        &self.table
    }

    /// Refcount entries per block.
    pub fn block_entries(&self) -> u64 {
        self.block_entries
    }

    /// Appends the window and the table to a resume journal.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.window_start);
        enc.u64(self.counts.len() as u64);
        for &c in &self.counts {
            enc.u16(c);
        }
        enc.u64(self.table.len() as u64);
        for &t in &self.table {
            enc.u64(t);
        }
    }

    /// Reads what [`encode`](Self::encode) wrote, for an image of geometry `geo`.
    pub fn decode(dec: &mut Decoder, geo: &Geometry) -> Option<Self> {
        let block_entries = geo.refcount_block_entries();
        let window_start = dec.u64()?;
        if window_start % block_entries != 0 {
            return None;
        }
        let n = usize::try_from(dec.u64()?).ok()?;
        let counts = (0..n).map(|_| dec.u16()).collect::<Option<Vec<_>>>()?;
        let n = usize::try_from(dec.u64()?).ok()?;
        let table = (0..n).map(|_| dec.u64()).collect::<Option<Vec<_>>>()?;
        Some(Refcounts {
            block_entries,
            table,
            window_start,
            counts,
        })
    }
}

/// Where the final refcount blocks and the refcount table go, at the end of an image whose
/// other clusters end at `first_free` and whose blocks before `first_open_block` are written.
///
/// The blocks and the table need refcounts themselves, which may need another block, which may
/// need a bigger table: iterate from nothing to the least fixed point (both counts only grow).
pub fn final_layout(
    block_entries: u64,
    cluster_size: u64,
    first_free: u64,
    first_open_block: u64,
) -> (u64, u64) {
    let (mut blocks, mut table_clusters) = (0u64, 0u64);
    loop {
        let total = first_free + blocks + table_clusters;
        let all_blocks = total.div_ceil(block_entries);
        let need_blocks = all_blocks - first_open_block;
        let need_table = (all_blocks * 8).div_ceil(cluster_size);
        if (need_blocks, need_table) == (blocks, table_clusters) {
            return (blocks, table_clusters);
        }
        blocks = need_blocks;
        table_clusters = need_table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo512() -> Geometry {
        Geometry::new(512, 1 << 30).unwrap()
    }

    #[test]
    fn window_slides_block_by_block() {
        let geo = geo512(); // 256 refcounts per block
        let mut rc = Refcounts::new(&geo);
        rc.add(0, 300);
        rc.add(5, 1);
        assert_eq!(rc.get(5), 2);
        assert_eq!(rc.complete_block(255), None);
        assert_eq!(rc.complete_block(256), Some(0));
        let (block, bytes) = rc.take_block();
        assert_eq!(block, 0);
        assert_eq!(bytes.len(), 512);
        assert_eq!(&bytes[10..12], &[0, 2]);
        assert_eq!(rc.get(5), 0);
        assert_eq!(rc.get(299), 1);
        assert_eq!(rc.first_open_block(), 1);
    }

    #[test]
    fn encodes_for_resume() {
        let geo = geo512();
        let mut rc = Refcounts::new(&geo);
        rc.add(0, 300);
        let (block, _) = rc.take_block();
        rc.set_block_offset(block, 4096);
        let mut enc = Encoder::default();
        rc.encode(&mut enc);
        let bytes = enc.into_inner();
        let back = Refcounts::decode(&mut Decoder::new(&bytes), &geo).unwrap();
        assert_eq!(
            (back.window_start, back.table(), back.get(299)),
            (256, &[4096][..], 1)
        );
    }

    #[test]
    fn final_layout_counts_itself() {
        // 256 entries per block, 512-byte clusters (64 table entries per cluster).
        // 255 clusters used: one block covers 255 + block + table = 257 > 256, so two blocks.
        assert_eq!(final_layout(256, 512, 255, 0), (2, 1));
        assert_eq!(final_layout(256, 512, 10, 0), (1, 1));
        // Earlier blocks already written: only the open ones are laid out at the end.
        assert_eq!(final_layout(256, 512, 1000, 3), (1, 1));
        // Many blocks: the table itself spans clusters.
        let (b, t) = final_layout(256, 512, 64 * 256, 0);
        assert!(b >= 65 && t >= 2);
        let total = 64 * 256 + b + t;
        assert_eq!(total.div_ceil(256), b);
    }
}
