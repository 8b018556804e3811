//! Updating a qcow2 image in place, for warm migration's deltas: guest ranges written again
//! (allocated clusters overwritten where they lie, new ones appended), guest ranges zeroed
//! (whole clusters get the zero flag and keep their host cluster; parts are written as
//! zeros), then [`Qcow2Patcher::finish`] makes the refcounts right.
//!
//! # Why the refcounts are rebuilt, and what a crash leaves
//!
//! Data is written before the L2 entry that points at it, and a new L2 table before the L1
//! entry that points at it, so the mapping never shows a cluster that is not written. The
//! refcounts are not touched while patching: `finish` counts every cluster the header, the
//! L1, the L2 tables and the data use, writes a fresh refcount table and blocks after the end
//! of the file, syncs, and only then points the header at them (the commit), and syncs
//! again. Clusters nothing references any more (an old refcount table, a cluster appended by
//! a killed run before its L2 entry was written) keep refcount 0: free, not leaked, so
//! `qemu-img check` reports no errors and no leaks.
//!
//! Between [`open`](Qcow2Patcher::open) and `finish` the image's refcounts are stale: it must
//! not be used then. A delta is idempotent (the same bytes at the same guest offsets), so a
//! run killed in the middle re-applies the same delta to the same image and finishes; a
//! cluster the killed run already mapped is overwritten in place, not appended again.
//!
//! Only images without a backing file, encryption, snapshots or extended L2 entries are
//! patched, with 16-bit refcounts: what [`Qcow2Writer`](super::Qcow2Writer) writes.
//! A compressed cluster is replaced when a write covers it whole; a partial write into one
//! is refused ([`ErrorKind::Unsupported`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::header::REFCOUNT_ORDER;
use super::table::{compressed_span, l1_entry, l2_standard, COMPRESSED, OFFSET_MASK};
use super::types::{Geometry, GuestOffset, HostOffset};
use crate::error::{Error, ErrorKind, Result};

/// Bit 0 of a standard L2 entry: the cluster reads as zeros.
const ZERO: u64 = 1;
/// Incompatible feature bit 3 (compression type) is the only one we accept.
const KNOWN_INCOMPATIBLE: u64 = 1 << 3;

/// A qcow2 image opened for in-place updates. Call [`finish`](Self::finish) when done.
#[must_use = "the refcounts are stale until finish() rebuilds them"]
pub struct Qcow2Patcher {
    file: File,
    path: PathBuf,
    geo: Geometry,
    l1_offset: u64,
    l1: Vec<u64>,
    /// L2 tables read or created, by L1 index.
    l2: HashMap<u64, Vec<u64>>,
    /// Where the next appended cluster goes (cluster-aligned).
    end: u64,
    zeros: Vec<u8>,
}

/// What the guest cluster maps to now.
enum Mapping {
    /// Not allocated, or compressed (treated as "needs a new cluster").
    None,
    /// A host cluster; `zero`: flagged as reading zeros.
    Host {
        offset: u64,
        zero: bool,
    },
    Compressed,
}

impl Qcow2Patcher {
    /// Opens the image at `path` for patching.
    pub fn open(path: &Path) -> Result<Qcow2Patcher> {
        let io = |what: &str, e: std::io::Error| Error::io(what, e).with_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io("cannot open the qcow2 image to update it", e))?;
        let mut h = [0u8; 104];
        file.read_exact_at(&mut h, 0)
            .map_err(|e| io("cannot read the qcow2 header", e))?;
        let be32 = |o: usize| u32::from_be_bytes(h[o..o + 4].try_into().unwrap());
        let be64 = |o: usize| u64::from_be_bytes(h[o..o + 8].try_into().unwrap());
        let unsupported = |why: String| {
            Error::new(
                ErrorKind::Unsupported,
                format!("cannot update this qcow2 image in place: {why}"),
            )
            .with_path(path)
        };
        if &h[..4] != b"QFI\xfb" || be32(4) != 3 {
            return Err(unsupported("not a qcow2 version 3 image".into()));
        }
        if be64(8) != 0 || be32(32) != 0 || be32(60) != 0 {
            return Err(unsupported(
                "it has a backing file, encryption or snapshots".into(),
            ));
        }
        if be64(88) != 0 {
            // Persistent bitmaps and the like: their clusters would not be counted.
            return Err(unsupported(format!("autoclear features {:#x}", be64(88))));
        }
        if be64(72) & !KNOWN_INCOMPATIBLE != 0 || be32(96) != REFCOUNT_ORDER {
            return Err(unsupported(format!(
                "incompatible features {:#x}, refcount order {}",
                be64(72),
                be32(96)
            )));
        }
        let geo = Geometry::new(1 << be32(20), be64(24))?;
        let l1_size = be32(36) as u64;
        if l1_size < geo.l1_entries() {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                format!(
                    "L1 table of {l1_size} entries cannot map {} bytes",
                    geo.virtual_size
                ),
            )
            .with_path(path));
        }
        let l1_offset = be64(40);
        let mut raw = vec![0u8; (l1_size * 8) as usize];
        file.read_exact_at(&mut raw, l1_offset)
            .map_err(|e| io("cannot read the L1 table", e))?;
        let l1 = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        let len = file
            .metadata()
            .map_err(|e| io("cannot read the image's size", e))?
            .len();
        let cs = geo.cluster_size();
        Ok(Qcow2Patcher {
            file,
            path: path.to_path_buf(),
            end: len.div_ceil(cs) * cs,
            zeros: vec![0u8; cs as usize],
            geo,
            l1_offset,
            l1,
            l2: HashMap::new(),
        })
    }

    /// The guest's size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.geo.virtual_size
    }

    fn io(&self, what: String) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |e| Error::io(what, e).with_path(&self.path)
    }

    /// The L2 table of L1 index `i`, read if needed; `None` if there is none.
    fn l2_table(&mut self, i: u64) -> Result<Option<&mut Vec<u64>>> {
        let off = self.l1[i as usize] & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if !self.l2.contains_key(&i) {
            let mut raw = vec![0u8; self.geo.cluster_size() as usize];
            self.file
                .read_exact_at(&mut raw, off)
                .map_err(self.io(format!("cannot read the L2 table at {off}")))?;
            let table = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
                .collect();
            self.l2.insert(i, table);
        }
        Ok(self.l2.get_mut(&i))
    }

    fn mapping(&mut self, cluster: u64) -> Result<Mapping> {
        let (i, j) = self.geo.table_indexes(cluster);
        let Some(table) = self.l2_table(i)? else {
            return Ok(Mapping::None);
        };
        let e = table[j];
        Ok(if e & COMPRESSED != 0 {
            Mapping::Compressed
        } else if e & OFFSET_MASK != 0 {
            Mapping::Host {
                offset: e & OFFSET_MASK,
                zero: e & ZERO != 0,
            }
        } else {
            Mapping::None
        })
    }

    /// Appends a cluster holding `data` and returns its offset.
    fn append(&mut self, data: &[u8]) -> Result<u64> {
        let at = self.end;
        self.file
            .write_all_at(data, at)
            .map_err(self.io(format!("cannot append a cluster at {at}")))?;
        self.end += self.geo.cluster_size();
        Ok(at)
    }

    /// Sets the L2 entry of guest `cluster` (creating its L2 table if needed).
    fn set_l2(&mut self, cluster: u64, entry: u64) -> Result<()> {
        let (i, j) = self.geo.table_indexes(cluster);
        if self.l2_table(i)?.is_none() {
            let zeros = std::mem::take(&mut self.zeros);
            let at = self.append(&zeros);
            self.zeros = zeros;
            let at = at?;
            let l1 = l1_entry(HostOffset(at));
            let where_ = self.l1_offset + i * 8;
            self.file
                .write_all_at(&l1.to_be_bytes(), where_)
                .map_err(self.io(format!("cannot write the L1 entry at {where_}")))?;
            self.l1[i as usize] = l1;
            self.l2.insert(i, vec![0; self.geo.l2_entries() as usize]);
        }
        let table_at = self.l1[i as usize] & OFFSET_MASK;
        let where_ = table_at + j as u64 * 8;
        self.file
            .write_all_at(&entry.to_be_bytes(), where_)
            .map_err(self.io(format!("cannot write the L2 entry at {where_}")))?;
        if let Some(t) = self.l2.get_mut(&i) {
            t[j] = entry;
        }
        Ok(())
    }

    fn check_range(&self, start: u64, len: u64) -> Result<()> {
        if start
            .checked_add(len)
            .is_none_or(|e| e > self.geo.virtual_size)
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{start}+{len} lies outside the image's {} bytes",
                    self.geo.virtual_size
                ),
            )
            .with_path(&self.path));
        }
        Ok(())
    }

    /// Writes `data` at guest `offset`.
    pub fn write_at(&mut self, offset: GuestOffset, data: &[u8]) -> Result<()> {
        self.check_range(offset.0, data.len() as u64)?;
        let cs = self.geo.cluster_size();
        let mut done = 0usize;
        while done < data.len() {
            let at = offset.0 + done as u64;
            let cluster = self.geo.guest_cluster(GuestOffset(at));
            let within = at - cluster * cs;
            let n = ((cs - within) as usize).min(data.len() - done);
            let piece = &data[done..done + n];
            let whole = n as u64 == cs;
            match self.mapping(cluster)? {
                Mapping::Host {
                    offset: host,
                    zero: false,
                } => {
                    self.file.write_all_at(piece, host + within).map_err(
                        self.io(format!("cannot write at host offset {}", host + within)),
                    )?;
                }
                Mapping::Host {
                    offset: host,
                    zero: true,
                } => {
                    // Reads zeros now: the rest of the cluster must be zeros when it is
                    // mapped again.
                    let buf = self.cluster_with(within, piece);
                    self.file
                        .write_all_at(&buf, host)
                        .map_err(self.io(format!("cannot write at host offset {host}")))?;
                    self.set_l2(cluster, l2_standard(HostOffset(host)))?;
                }
                Mapping::Compressed if !whole => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "a partial write into the compressed cluster at guest offset {}",
                            cluster * cs
                        ),
                    )
                    .with_path(&self.path));
                }
                Mapping::None | Mapping::Compressed => {
                    let buf = self.cluster_with(within, piece);
                    let host = self.append(&buf)?;
                    self.set_l2(cluster, l2_standard(HostOffset(host)))?;
                }
            }
            done += n;
        }
        Ok(())
    }

    /// A cluster of zeros with `piece` at `within`.
    fn cluster_with(&self, within: u64, piece: &[u8]) -> Vec<u8> {
        let mut buf = self.zeros.clone();
        buf[within as usize..within as usize + piece.len()].copy_from_slice(piece);
        buf
    }

    /// Makes the guest `range` read as zeros.
    pub fn zero(&mut self, range: Range<u64>) -> Result<()> {
        self.check_range(range.start, range.end.saturating_sub(range.start))?;
        let cs = self.geo.cluster_size();
        let mut at = range.start;
        while at < range.end {
            let cluster = at / cs;
            let within = at - cluster * cs;
            let n = (cs - within).min(range.end - at);
            match self.mapping(cluster)? {
                Mapping::None | Mapping::Host { zero: true, .. } => {}
                Mapping::Host { offset: host, .. } if n == cs => {
                    // Keeps its host cluster: a later write lands there again.
                    self.set_l2(cluster, l2_standard(HostOffset(host)) | ZERO)?;
                }
                Mapping::Host { offset: host, .. } => {
                    self.file
                        .write_all_at(&self.zeros[..n as usize], host + within)
                        .map_err(
                            self.io(format!("cannot zero at host offset {}", host + within)),
                        )?;
                }
                Mapping::Compressed if n == cs => self.set_l2(cluster, ZERO)?,
                Mapping::Compressed => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "zeroing part of the compressed cluster at guest offset {}",
                            cluster * cs
                        ),
                    )
                    .with_path(&self.path));
                }
            }
            at += n;
        }
        Ok(())
    }

    /// Rebuilds the refcounts from what the image references, commits them in the header
    /// and syncs: the image is consistent again.
    pub fn finish(mut self) -> Result<()> {
        let cs = self.geo.cluster_size();
        let bits = self.geo.cluster_bits;
        // Every referenced host cluster, with its reference count.
        let mut counts: Vec<u16> = vec![0; (self.end / cs) as usize];
        let add = |counts: &mut Vec<u16>, host: u64| {
            let c = (host >> bits) as usize;
            if c >= counts.len() {
                counts.resize(c + 1, 0);
            }
            counts[c] = counts[c].saturating_add(1);
        };
        add(&mut counts, 0);
        let l1_bytes = self.l1.len() as u64 * 8;
        for k in 0..l1_bytes.div_ceil(cs) {
            add(&mut counts, self.l1_offset + k * cs);
        }
        for i in 0..self.l1.len() as u64 {
            let Some(table) = self.l2_table(i)? else {
                continue;
            };
            let entries = table.clone();
            add(&mut counts, self.l1[i as usize] & OFFSET_MASK);
            for e in entries {
                if e & COMPRESSED != 0 {
                    let x = 62 - (bits - 8);
                    let off = e & ((1 << x) - 1);
                    let sectors = ((e >> x) & ((1 << (bits - 8)) - 1)) + 1;
                    let span = compressed_span(HostOffset(off), sectors * 512 - (off & 511));
                    let (first, last) = (span.start >> bits, (span.end - 1) >> bits);
                    for c in first..=last {
                        add(&mut counts, c << bits);
                    }
                } else if e & OFFSET_MASK != 0 {
                    add(&mut counts, e & OFFSET_MASK);
                }
            }
            // Drop what is not needed any more: a whole disk's L2 tables would be a lot.
            self.l2.remove(&i);
        }
        // The new refcount structures go after everything, and count themselves.
        let start = self.end / cs;
        let per_block = self.geo.refcount_block_entries();
        let (mut blocks, mut table) = (0u64, 0u64);
        loop {
            let total = start + table + blocks;
            let need_blocks = total.div_ceil(per_block);
            let need_table = (need_blocks * 8).div_ceil(cs);
            if (need_blocks, need_table) == (blocks, table) {
                break;
            }
            (blocks, table) = (need_blocks, need_table);
        }
        let table_at = start * cs;
        let blocks_at = table_at + table * cs;
        counts.resize((start + table + blocks) as usize, 0);
        for c in start..start + table + blocks {
            counts[c as usize] = 1;
        }
        let mut raw_table = vec![0u8; (table * cs) as usize];
        for b in 0..blocks {
            let at = blocks_at + b * cs;
            raw_table[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&at.to_be_bytes());
            let mut block = vec![0u8; cs as usize];
            let first = (b * per_block) as usize;
            for (k, n) in counts
                .iter()
                .skip(first)
                .take(per_block as usize)
                .enumerate()
            {
                block[k * 2..k * 2 + 2].copy_from_slice(&n.to_be_bytes());
            }
            self.file
                .write_all_at(&block, at)
                .map_err(self.io(format!("cannot write a refcount block at {at}")))?;
        }
        self.file
            .write_all_at(&raw_table, table_at)
            .map_err(self.io(format!("cannot write the refcount table at {table_at}")))?;
        self.file
            .sync_all()
            .map_err(self.io("cannot sync the image".into()))?;
        // The commit: from here the header points at the new refcounts.
        let mut fields = [0u8; 12];
        fields[..8].copy_from_slice(&table_at.to_be_bytes());
        fields[8..].copy_from_slice(&(table as u32).to_be_bytes());
        self.file
            .write_all_at(&fields, 48)
            .map_err(self.io("cannot write the header".into()))?;
        self.file
            .sync_all()
            .map_err(self.io("cannot sync the image".into()))
    }
}
