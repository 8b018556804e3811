//! The write-once, append-only qcow2 writer.
//!
//! Layout of a finished image:
//!
//! ```text
//! cluster 0     header (written last)
//! clusters 1..  data clusters, compressed data (byte-packed), L2 tables and refcount blocks,
//!               interleaved in the order they were produced
//! end           the L1 table, the last refcount blocks, the refcount table
//! ```
//!
//! qemu accepts metadata anywhere, so nothing is ever rewritten: each byte of the file is
//! written once. Memory holds only the L2 tables of regions still being written (the pipeline
//! reports progress with [`ImageSink::complete_below`]), one refcount window, the L1 table
//! and the refcount table.

use std::collections::BTreeMap;
use std::path::Path;

use super::header::Header;
use super::refcount::{final_layout, Refcounts};
use super::table::{compressed_span, l1_entry, l2_compressed, l2_standard};
use super::types::{Geometry, GuestOffset, HostOffset};
use super::Compression;
use crate::error::{Error, ErrorKind, Result};
use crate::journal::{Decoder, Encoder};
use crate::output::{ClusterData, ImageSink, PartFile, PreparedChunk};

/// How the resume state names the compression a writer was created with.
fn compression_tag(compression: Option<Compression>) -> u16 {
    match compression {
        None => 0,
        Some(Compression::Zstd) => 1,
        Some(Compression::Deflate) => 2,
    }
}

/// Writes the non-zero entries of `table` as (index, value) pairs.
fn encode_sparse(enc: &mut Encoder, table: &[u64]) {
    let nonzero: Vec<(usize, u64)> = table
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, v)| v != 0)
        .collect();
    enc.u64(nonzero.len() as u64);
    for (i, v) in nonzero {
        enc.u64(i as u64);
        enc.u64(v);
    }
}

/// Writes a qcow2 v3 image from chunks that arrive in any order.
#[must_use = "the image is only complete once finish() has run"]
#[derive(Debug)]
pub struct Qcow2Writer {
    out: PartFile,
    geo: Geometry,
    compression: Option<Compression>,
    /// The next free byte of the file. Only compressed data leaves it unaligned.
    next: u64,
    l1: Vec<u64>,
    /// L2 tables of regions still open, by L1 index.
    open_l2: BTreeMap<u64, Vec<u64>>,
    refs: Refcounts,
    /// True once any cluster was stored compressed (the header then names the type).
    wrote_compressed: bool,
}

impl Qcow2Writer {
    /// Starts `dst.part` for a disk of `virtual_size` bytes with `cluster_size` clusters.
    pub fn create(
        dst: &Path,
        virtual_size: u64,
        cluster_size: u32,
        compression: Option<Compression>,
    ) -> Result<Qcow2Writer> {
        let geo = Geometry::new(cluster_size, virtual_size)?;
        let out = PartFile::create(dst)?;
        let mut refs = Refcounts::new(&geo);
        refs.add(0, 1); // the header cluster
        Ok(Qcow2Writer {
            out,
            geo,
            compression,
            next: geo.cluster_size(),
            l1: vec![0; geo.l1_entries() as usize],
            open_l2: BTreeMap::new(),
            refs,
            wrote_compressed: false,
        })
    }

    /// Carries on with the `dst.part` of an interrupted run from the checkpoint `state` that
    /// [`ImageSink::checkpoint`] returned; the options must be the ones it was started with.
    pub fn resume(
        dst: &Path,
        virtual_size: u64,
        cluster_size: u32,
        compression: Option<Compression>,
        state: &[u8],
    ) -> Result<Qcow2Writer> {
        let geo = Geometry::new(cluster_size, virtual_size)?;
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidFormat,
                format!("resume state does not fit: {why}"),
            )
        };
        let mut dec = Decoder::new(state);
        let mut decode = || -> Option<Result<Qcow2Writer>> {
            if dec.u64()? != u64::from(geo.cluster_bits) || dec.u64()? != virtual_size {
                return Some(Err(bad("other geometry")));
            }
            if dec.u16()? != compression_tag(compression) {
                return Some(Err(bad("other compression")));
            }
            let wrote_compressed = dec.u16()? != 0;
            let next = dec.u64()?;
            let mut l1 = vec![0u64; geo.l1_entries() as usize];
            for _ in 0..dec.u64()? {
                let (i, v) = (dec.u64()? as usize, dec.u64()?);
                *l1.get_mut(i)? = v;
            }
            let mut open_l2 = BTreeMap::new();
            for _ in 0..dec.u64()? {
                let index = dec.u64()?;
                let mut table = vec![0u64; geo.l2_entries() as usize];
                for _ in 0..dec.u64()? {
                    let (i, v) = (dec.u64()? as usize, dec.u64()?);
                    *table.get_mut(i)? = v;
                }
                open_l2.insert(index, table);
            }
            let refs = Refcounts::decode(&mut dec, &geo)?;
            if !dec.at_end() {
                return None;
            }
            let out = match PartFile::reopen(dst, next) {
                Ok(out) => out,
                Err(e) => return Some(Err(e)),
            };
            Some(Ok(Qcow2Writer {
                out,
                geo,
                compression,
                next,
                l1,
                open_l2,
                refs,
                wrote_compressed,
            }))
        };
        decode().unwrap_or_else(|| Err(bad("truncated")))
    }

    /// Reserves `n` whole clusters at the end of the file and counts one reference to each.
    fn alloc_clusters(&mut self, n: u64) -> HostOffset {
        let cs = self.geo.cluster_size();
        let start = self.next.div_ceil(cs) * cs;
        self.next = start + n * cs;
        self.refs.add(start / cs, n);
        HostOffset(start)
    }

    /// Writes `bytes` into newly allocated clusters (padding the last one) and returns where.
    fn append_clusters(&mut self, bytes: &[u8]) -> Result<HostOffset> {
        let n = self.geo.clusters_for(bytes.len() as u64);
        let at = self.alloc_clusters(n);
        self.out.write_at(bytes, at.0)?;
        let padded_end = at.0 + n * self.geo.cluster_size();
        let end = at.0 + bytes.len() as u64;
        if end < padded_end {
            self.out
                .write_at(&vec![0u8; (padded_end - end) as usize], end)?;
        }
        Ok(at)
    }

    /// Sets the L2 entry of guest cluster `cluster`, opening its table if needed.
    fn set_l2(&mut self, cluster: u64, entry: u64) -> Result<()> {
        let (l1_index, l2_index) = self.geo.table_indexes(cluster);
        if self.l1[l1_index as usize] != 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "guest cluster {cluster} arrived after its L2 table was written (complete_below was called too early)"
                ),
            ));
        }
        let entries = self.geo.l2_entries() as usize;
        let table = self
            .open_l2
            .entry(l1_index)
            .or_insert_with(|| vec![0; entries]);
        if table[l2_index] != 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("guest cluster {cluster} was written twice"),
            ));
        }
        table[l2_index] = entry;
        Ok(())
    }

    /// Writes out refcount blocks whose clusters can no longer gain references.
    fn flush_refcount_blocks(&mut self) -> Result<()> {
        // The cluster holding `next` may still receive packed compressed data.
        while let Some(block) = self
            .refs
            .complete_block(self.next / self.geo.cluster_size())
        {
            let (taken, bytes) = self.refs.take_block();
            debug_assert_eq!(taken, block);
            let at = self.append_clusters(&bytes)?;
            self.refs.set_block_offset(block, at.0);
        }
        Ok(())
    }

    /// Writes the L2 table of `l1_index` (if it maps anything) and records it in the L1 table.
    fn write_l2(&mut self, l1_index: u64, table: Vec<u64>) -> Result<()> {
        if table.iter().all(|&e| e == 0) {
            return Ok(());
        }
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        let at = self.append_clusters(&bytes)?;
        self.l1[l1_index as usize] = l1_entry(at);
        self.flush_refcount_blocks()
    }

    /// Appends compressed clusters byte by byte: `items` are (guest cluster, start, length)
    /// of payloads in `payloads`, back to back as [`prepare_chunk`](crate::output::prepare_chunk)
    /// packs them, so they go to the file straight from `payloads`, in one write unless a
    /// host cluster fills up.
    fn append_compressed(&mut self, items: &[(u64, usize, usize)], payloads: &[u8]) -> Result<()> {
        let cs = self.geo.cluster_size();
        // The bytes of `payloads` not yet written, and where in the file they go.
        let mut run = 0..0;
        let mut run_at = self.next;
        for &(cluster, start, len) in items {
            // Counts are 16-bit: a host cluster shared by too many tiny payloads is closed.
            // A payload that does not follow the run (not packed back to back) starts a new one.
            let closed = self.refs.get(self.next / cs) >= u16::MAX - 1;
            if closed || start != run.end {
                self.out.write_at(&payloads[run.clone()], run_at)?;
                if closed {
                    self.next = self.next.div_ceil(cs) * cs;
                }
                run = start..start;
                run_at = self.next;
            }
            let at = HostOffset(self.next);
            let span = compressed_span(at, len as u64);
            let first = span.start / cs;
            let last = (span.end - 1) / cs;
            self.refs.add(first, last - first + 1);
            self.set_l2(cluster, l2_compressed(&self.geo, at, len as u64))?;
            run.end += len;
            self.next += len as u64;
        }
        self.out.write_at(&payloads[run], run_at)?;
        self.wrote_compressed = true;
        Ok(())
    }
}

impl ImageSink for Qcow2Writer {
    fn write_chunk(&mut self, chunk: &PreparedChunk) -> Result<()> {
        let cs = self.geo.cluster_size() as usize;
        if chunk.granularity != cs || chunk.offset % cs as u64 != 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "chunk at {} prepared for {}-byte clusters, image uses {cs}",
                    chunk.offset, chunk.granularity
                ),
            ));
        }
        let first_cluster = self.geo.guest_cluster(GuestOffset(chunk.offset));
        let clusters = &chunk.clusters;
        let mut i = 0;
        while i < clusters.len() {
            match clusters[i] {
                ClusterData::Zero => i += 1,
                ClusterData::Plain => {
                    // One write for the whole run of plain clusters.
                    let start = i;
                    while i < clusters.len() && clusters[i] == ClusterData::Plain {
                        i += 1;
                    }
                    let at = self.alloc_clusters((i - start) as u64);
                    self.out.write_at(&chunk.data[start * cs..i * cs], at.0)?;
                    for k in start..i {
                        let host = HostOffset(at.0 + ((k - start) * cs) as u64);
                        self.set_l2(first_cluster + k as u64, l2_standard(host))?;
                    }
                }
                ClusterData::Compressed { .. } => {
                    let mut items = Vec::new();
                    while let Some(&ClusterData::Compressed { start, len }) = clusters.get(i) {
                        items.push((first_cluster + i as u64, start as usize, len as usize));
                        i += 1;
                    }
                    self.append_compressed(&items, &chunk.compressed)?;
                }
            }
        }
        self.flush_refcount_blocks()
    }

    fn complete_below(&mut self, guest_offset: u64) -> Result<()> {
        let coverage = self.geo.l2_coverage();
        while let Some(entry) = self.open_l2.first_entry() {
            if (entry.key() + 1) * coverage > guest_offset {
                break;
            }
            let (l1_index, table) = entry.remove_entry();
            self.write_l2(l1_index, table)?;
        }
        Ok(())
    }

    fn keep_on_failure(&mut self) {
        self.out.keep_on_failure();
    }

    fn direct_io(&mut self) {
        self.out.direct_io();
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.out.sync_data()?;
        let mut enc = Encoder::default();
        enc.u64(u64::from(self.geo.cluster_bits));
        enc.u64(self.geo.virtual_size);
        enc.u16(compression_tag(self.compression));
        enc.u16(u16::from(self.wrote_compressed));
        enc.u64(self.next);
        encode_sparse(&mut enc, &self.l1);
        enc.u64(self.open_l2.len() as u64);
        for (&index, table) in &self.open_l2 {
            enc.u64(index);
            encode_sparse(&mut enc, table);
        }
        self.refs.encode(&mut enc);
        Ok(enc.into_inner())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.complete_below(u64::MAX)?;
        let cs = self.geo.cluster_size();

        let l1_bytes: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        let l1_at = if l1_bytes.is_empty() {
            HostOffset(0)
        } else {
            self.append_clusters(&l1_bytes)?
        };
        self.flush_refcount_blocks()?;

        // The last refcount blocks and the refcount table go at the end; they count themselves.
        let first_free = self.next.div_ceil(cs);
        let first_open = self.refs.first_open_block();
        let (blocks, table_clusters) =
            final_layout(self.refs.block_entries(), cs, first_free, first_open);
        self.next = first_free * cs;
        self.refs.add(first_free, blocks + table_clusters);
        for i in 0..blocks {
            let (block, bytes) = self.refs.take_block();
            debug_assert_eq!(block, first_open + i);
            let at = (first_free + i) * cs;
            self.out.write_at(&bytes, at)?;
            self.refs.set_block_offset(block, at);
        }
        let table_at = (first_free + blocks) * cs;
        let mut table: Vec<u8> = self
            .refs
            .table()
            .iter()
            .flat_map(|e| e.to_be_bytes())
            .collect();
        table.resize((table_clusters * cs) as usize, 0);
        self.out.write_at(&table, table_at)?;
        let end = table_at + table_clusters * cs;

        let header = Header {
            geometry: self.geo,
            l1_table_offset: l1_at,
            refcount_table_offset: HostOffset(table_at),
            refcount_table_clusters: table_clusters as u32,
            compression: self.compression.filter(|_| self.wrote_compressed),
        };
        self.out.write_at(&header.to_bytes(), 0)?;
        self.out.set_len(end)?;
        let Qcow2Writer { out, .. } = *self;
        out.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffers::AlignedBuf;
    use crate::testutil::TempDir;

    /// A host cluster's refcount is 16 bits wide: once 65,534 compressed payloads share one,
    /// the next payload starts the next cluster, and every payload's bytes are where its L2
    /// entry says. (Real clusters hardly ever compress this small: one-byte payloads do.)
    #[test]
    fn a_host_cluster_full_of_tiny_payloads_is_closed() {
        let dir = TempDir::new("tiny-payloads");
        let dst = dir.path().join("tiny.qcow2");
        let cs = 64u64 << 10;
        let n = 70_000u64;
        let mut w = Qcow2Writer::create(&dst, n * cs, cs as u32, Some(Compression::Zstd)).unwrap();
        let payloads: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let chunk = PreparedChunk {
            offset: 0,
            len: n * cs,
            data: AlignedBuf::default(),
            clusters: (0..n as u32)
                .map(|i| ClusterData::Compressed { start: i, len: 1 })
                .collect(),
            compressed: payloads.clone(),
            granularity: cs as usize,
        };
        w.write_chunk(&chunk).unwrap();
        let x = 62 - (w.geo.cluster_bits - 8);
        let hosts: Vec<u64> = (0..n)
            .map(|c| {
                let (l1, i) = w.geo.table_indexes(c);
                w.open_l2[&l1][i] & ((1 << x) - 1)
            })
            .collect();
        // The payloads start in cluster 1 (cluster 0 is the header): 65,534 fit in it.
        let limit = u64::from(u16::MAX) - 1;
        assert_eq!(hosts[0], cs);
        assert_eq!(hosts[limit as usize - 1], cs + limit - 1);
        assert_eq!(hosts[limit as usize], 2 * cs);
        assert_eq!(hosts[n as usize - 1], 2 * cs + (n - limit - 1));
        assert!(w.refs.get(1) < u16::MAX && w.refs.get(2) < u16::MAX);
        Box::new(w).finish().unwrap();
        // qemu's own view of the metadata: refcounts that match every L2 entry, no leaks
        // (the payloads are not zstd, and `check` does not decompress).
        crate::testutil::run("qemu-img", &["check", "-f", "qcow2", dst.to_str().unwrap()]);
        let image = std::fs::read(&dst).unwrap();
        for (c, &host) in hosts.iter().enumerate() {
            assert_eq!(image[host as usize], payloads[c], "cluster {c}");
        }
    }
}
