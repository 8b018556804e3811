//! What the pipeline hands to an image writer, and the file every writer writes through.
//!
//! The pipeline turns read chunks into [`PreparedChunk`]s on its CPU threads, one per core
//! ([`prepare_chunk`]: zero detection and compression are the CPU-heavy part), and a single
//! [`ImageSink`] writes them in whatever order they complete. Sinks write into a
//! [`PartFile`]: `NAME.part`, fsynced and renamed to `NAME` only when complete, and removed
//! if the writer is dropped before that.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::buffers::AlignedBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::qcow2::compress::{compress_cluster, Codec};
use crate::zero::is_zero;

/// The content of one cluster (or block) of a prepared chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterData {
    /// All zeros: nothing to write.
    Zero,
    /// Store the bytes as they are.
    Plain,
    /// Store `len` compressed bytes found at `start` in [`PreparedChunk::compressed`].
    Compressed {
        /// Offset into the chunk's compressed buffer.
        start: u32,
        /// Length of the compressed data.
        len: u32,
    },
}

/// A chunk of guest data, classified cluster by cluster, ready to be written.
#[derive(Debug)]
pub struct PreparedChunk {
    /// Guest offset of the first byte; a multiple of `granularity`.
    pub offset: u64,
    /// Guest bytes covered; a multiple of `granularity` except at the end of the disk.
    pub len: u64,
    /// The clusters' bytes, zero-padded to a whole number of clusters. Aligned, so that
    /// runs of whole pages go to an `O_DIRECT` write without a copy ([`PartFile::write_at`]).
    pub data: AlignedBuf,
    /// The classification of each `granularity`-sized piece of `data`.
    pub clusters: Vec<ClusterData>,
    /// Compressed payloads, back to back, for [`ClusterData::Compressed`] clusters.
    pub compressed: Vec<u8>,
    /// The size of each classified piece: the qcow2 cluster size, or the raw writer's block.
    pub granularity: usize,
}

impl PreparedChunk {
    /// Bytes of the chunk that are all-zero clusters (within the disk's size).
    pub fn zero_bytes(&self) -> u64 {
        let g = self.granularity as u64;
        self.clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == ClusterData::Zero)
            .map(|(i, _)| g.min(self.len - i as u64 * g))
            .sum()
    }
}

/// Classifies `data` (the guest bytes at `offset`) in `granularity`-sized clusters, dropping
/// zero clusters and compressing the others with `compression` when it is set. The
/// compressed payloads go into `compressed`, whose content is dropped and whose capacity is
/// reused (a vector from [`BufferPool::take_vec`](crate::buffers::BufferPool::take_vec)).
pub fn prepare_chunk(
    offset: u64,
    mut data: AlignedBuf,
    granularity: usize,
    compression: Option<Codec>,
    mut compressed: Vec<u8>,
) -> PreparedChunk {
    let len = data.len() as u64;
    // Zeros, also in a recycled buffer's old bytes: the padding is written to the image.
    data.resize(data.len().div_ceil(granularity) * granularity);
    compressed.clear();
    let clusters = data
        .chunks_exact(granularity)
        .map(|cluster| {
            if is_zero(cluster) {
                return ClusterData::Zero;
            }
            let Some(kind) = compression else {
                return ClusterData::Plain;
            };
            let start = compressed.len();
            match compress_cluster(kind, cluster, &mut compressed) {
                Some(n) => ClusterData::Compressed {
                    start: start as u32,
                    len: n as u32,
                },
                None => ClusterData::Plain,
            }
        })
        .collect();
    PreparedChunk {
        offset,
        len,
        data,
        clusters,
        compressed,
        granularity,
    }
}

/// Something that writes prepared chunks into an image.
pub trait ImageSink: Send {
    /// Writes one chunk; chunks arrive in any order, each guest range at most once.
    fn write_chunk(&mut self, chunk: &PreparedChunk) -> Result<()>;

    /// Promises that no chunk below `guest_offset` will follow, so metadata for that part of
    /// the disk can be written out and dropped from memory.
    fn complete_below(&mut self, guest_offset: u64) -> Result<()>;

    /// Makes everything written so far durable and returns the state a resumed run needs to
    /// carry on from here (see [`crate::journal`]).
    fn checkpoint(&mut self) -> Result<Vec<u8>>;

    /// Keeps the partial output if the sink is dropped unfinished, for a resumed run.
    fn keep_on_failure(&mut self);

    /// Writes large aligned pieces with `O_DIRECT` from now on, where the filesystem allows
    /// it (see [`ConvertOptions::direct_io`](crate::ConvertOptions::direct_io)).
    fn direct_io(&mut self) {}

    /// Writes the remaining metadata, syncs, and moves the image to its final name. Returns
    /// the number of bytes written to the file.
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// A file written as `NAME.part` and renamed to `NAME` once complete.
///
/// Dropping it without [`commit`](PartFile::commit) removes the `.part` file, so an error or
/// a cancellation never leaves a half image under either name, unless it was created to be
/// kept for a resumed run ([`PartFile::keep_on_failure`]).
#[derive(Debug)]
pub struct PartFile {
    file: File,
    /// The same file opened with `O_DIRECT`, for large aligned writes, where the filesystem
    /// allows it.
    direct: Option<Direct>,
    part: PathBuf,
    dst: PathBuf,
    committed: bool,
    written: u64,
    /// Bytes written since writeback was last started.
    unflushed: u64,
    flusher: Option<Flusher>,
    keep: bool,
}

/// Start writeback after this many bytes: the kernel would otherwise hold everything dirty
/// until the final fsync (up to `dirty_background_ratio` of RAM), which then waits for the
/// whole image; writing back as we go overlaps disk writes with reading and compressing.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// A thread that asks the kernel to start writeback, so that submitting I/O (which can block
/// on the device queue) never holds up the thread that writes.
#[derive(Debug)]
struct Flusher {
    tx: std::sync::mpsc::SyncSender<()>,
    handle: std::thread::JoinHandle<()>,
}

impl Flusher {
    fn spawn(file: &File) -> Option<Flusher> {
        let file = file.try_clone().ok()?;
        // One pending request is enough: a request covers every dirty page of the file.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let handle = std::thread::Builder::new()
            .name("hyper2kvm-flush".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    start_writeback(&file);
                }
            })
            .ok()?;
        Some(Flusher { tx, handle })
    }

    /// Requests writeback unless a request is already pending.
    fn request(&self) {
        let _ = self.tx.try_send(());
    }

    fn stop(self) {
        drop(self.tx);
        let _ = self.handle.join();
    }
}

impl PartFile {
    /// Creates `dst` + `.part` as a new file: whatever had that name (an old partial image,
    /// a symlink) is removed first, never written through ([`crate::fsafe::create_new`]).
    pub fn create(dst: &Path) -> Result<PartFile> {
        let part = part_path(dst);
        let file = crate::fsafe::create_new(&part)
            .map_err(|e| Error::io("cannot create the output file", e).with_path(&part))?;
        Ok(PartFile::wrap(file, part, dst, false))
    }

    /// Reopens the `.part` file of an interrupted run and cuts it to `len`, the length its
    /// resume journal vouches for (anything after that was not synced, so is not trusted).
    pub fn reopen(dst: &Path, len: u64) -> Result<PartFile> {
        let part = part_path(dst);
        // Never through a symlink: only a regular file we wrote is resumed.
        let file = crate::fsafe::reopen_own(&part)
            .map_err(|e| Error::io("cannot reopen the partial output", e).with_path(&part))?;
        let actual = file
            .metadata()
            .map_err(|e| Error::io("cannot stat the partial output", e).with_path(&part))?
            .len();
        if actual < len {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                format!("partial output is {actual} bytes, its journal says {len}"),
            )
            .with_path(&part));
        }
        let mut out = PartFile::wrap(file, part, dst, true);
        out.set_len(len)?;
        Ok(out)
    }

    fn wrap(file: File, part: PathBuf, dst: &Path, keep: bool) -> PartFile {
        PartFile {
            file,
            direct: None,
            part,
            dst: dst.to_owned(),
            committed: false,
            written: 0,
            unflushed: 0,
            flusher: None,
            keep,
        }
    }

    /// Keeps the `.part` file when dropped without commit, for a later run to resume.
    pub fn keep_on_failure(&mut self) {
        self.keep = true;
    }

    /// Writes large aligned pieces with `O_DIRECT` from now on, where the filesystem allows
    /// it (see [`Direct`]).
    pub fn direct_io(&mut self) {
        if self.direct.is_none() {
            self.direct = Direct::open(&self.file);
        }
    }

    /// Waits until everything written so far is on disk.
    pub fn sync_data(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("syncing to disk", e).with_path(&self.part))
    }

    /// Writes all of `buf` at `offset`: the whole pages of a large aligned write with
    /// `O_DIRECT`, everything else through the page cache. The `O_DIRECT` write is made
    /// straight from `buf` when its memory is aligned too (a slice of an [`AlignedBuf`] that
    /// starts at a multiple of [`AlignedBuf::ALIGN`], as the writers' runs of clusters of a
    /// [`PreparedChunk`] do), and from a copy in an aligned bounce buffer otherwise.
    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let mut buf = buf;
        let mut offset = offset;
        if buf.len() >= DIRECT_MIN && offset % DIRECT_ALIGN as u64 == 0 {
            if let Some(direct) = &mut self.direct {
                let whole = buf.len() / DIRECT_ALIGN * DIRECT_ALIGN;
                match direct.write_all_at(&buf[..whole], offset) {
                    Ok(()) => {
                        self.written += whole as u64;
                        buf = &buf[whole..];
                        offset += whole as u64;
                    }
                    // Not supported after all (EINVAL: an alignment the device refuses):
                    // the page cache from now on. Anything else is a write error.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                    Err(e) => {
                        return Err(Error::io(format!("writing {whole} bytes"), e)
                            .with_path(&self.part)
                            .at_offset(offset))
                    }
                }
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(buf, offset).map_err(|e| {
            Error::io(format!("writing {} bytes", buf.len()), e)
                .with_path(&self.part)
                .at_offset(offset)
        })?;
        self.written += buf.len() as u64;
        self.unflushed += buf.len() as u64;
        if self.unflushed >= WRITEBACK_EVERY {
            self.unflushed = 0;
            if self.flusher.is_none() {
                self.flusher = Flusher::spawn(&self.file);
            }
            if let Some(flusher) = &self.flusher {
                flusher.request();
            }
        }
        Ok(())
    }

    /// Sets the file's length.
    pub fn set_len(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io(format!("setting the length to {len}"), e).with_path(&self.part))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Syncs the data, renames `NAME.part` to `NAME`, and syncs the directory so the rename
    /// survives a crash.
    pub fn commit(mut self) -> Result<u64> {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        self.file
            .sync_all()
            .map_err(|e| Error::io("syncing to disk", e).with_path(&self.part))?;
        std::fs::rename(&self.part, &self.dst).map_err(|e| {
            Error::io("renaming the finished image into place", e).with_path(&self.dst)
        })?;
        self.committed = true;
        crate::journal::sync_parent(&self.dst);
        Ok(self.written)
    }
}

/// Offsets, lengths and memory of `O_DIRECT` writes are multiples of this (the largest
/// logical block size in common use).
const DIRECT_ALIGN: usize = 4096;

// Chunk buffers are aligned enough to be written without the bounce copy.
const _: () = assert!(AlignedBuf::ALIGN % DIRECT_ALIGN == 0);

/// Writes at least this large go through [`Direct`]: data clusters and chunks, not headers.
const DIRECT_MIN: usize = 64 << 10;

/// The bounce buffer's size: one remote chunk (`pipeline::REMOTE_CHUNK_SIZE`).
const BOUNCE: usize = 4 << 20;

/// The output opened a second time with `O_DIRECT`, and an aligned buffer to write from
/// when the caller's memory is not aligned.
///
/// Image data is written once and never read back by us, so going through the page cache
/// only costs: a copy into newly allocated cache pages, their accounting and writeback, and
/// later their reclaim (measured with `dd`: 1.9 s of system time to write 700 MiB through the
/// cache, 0.2 s with `O_DIRECT`). The chunk buffers the pipeline hands to sinks are
/// [`AlignedBuf`]s, so their clusters are written from where they are, with no copy in user
/// space either. Memory without the alignment (a caller's `Vec<u8>`, a run of 512-byte qcow2
/// clusters that does not start on a page) is copied into the bounce buffer first: still one
/// user-space copy into memory that stays in the CPU's caches instead of the kernel's copy
/// into fresh pages. The kernel keeps `O_DIRECT` and buffered writes of the same file
/// coherent, and [`PartFile::commit`]'s fsync covers both.
struct Direct {
    file: File,
    /// [`BOUNCE`] bytes once first needed; empty until then.
    bounce: AlignedBuf,
    /// Bytes written straight from the caller's memory.
    unbounced: u64,
    /// Bytes copied into `bounce` to be written.
    bounced: u64,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("unbounced", &self.unbounced)
            .field("bounced", &self.bounced)
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// Opens `file` again with `O_DIRECT` (through `/proc/self/fd`, so the very same file
    /// whatever happened to its name), or `None` where that is not possible (tmpfs, some
    /// FUSE filesystems, no `/proc`); `H2K_NO_DIRECT=1` turns it off.
    fn open(file: &File) -> Option<Direct> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        if std::env::var_os("H2K_NO_DIRECT").is_some_and(|v| v == "1") {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok()?;
        Some(Direct {
            file,
            bounce: AlignedBuf::new(),
            unbounced: 0,
            bounced: 0,
        })
    }

    /// Writes `buf` (a multiple of [`DIRECT_ALIGN`] long) at `offset` (aligned too): from
    /// `buf` itself when its address is aligned, else through the bounce buffer.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if (buf.as_ptr() as usize) % DIRECT_ALIGN == 0 {
            self.file.write_all_at(buf, offset)?;
            self.unbounced += buf.len() as u64;
            return Ok(());
        }
        if self.bounce.is_empty() {
            self.bounce = AlignedBuf::zeroed(BOUNCE);
        }
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(BOUNCE);
            let bounce = &mut self.bounce[..n];
            bounce.copy_from_slice(&buf[done..done + n]);
            self.file.write_all_at(bounce, offset + done as u64)?;
            self.bounced += n as u64;
            done += n;
        }
        Ok(())
    }
}

/// Where the image for `dst` is written until it is complete.
pub fn part_path(dst: &Path) -> PathBuf {
    let mut part = dst.as_os_str().to_owned();
    part.push(".part");
    PathBuf::from(part)
}

/// Asks the kernel to start writing the file's dirty pages back, without waiting for them.
/// Only a hint: durability comes from the fsync in [`PartFile::commit`], so errors are ignored.
fn start_writeback(file: &File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: sync_file_range on a descriptor we own; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        if !self.committed && !self.keep {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn classifies_zero_plain_and_compressed() {
        let mut data = vec![0u8; 3 * 512 + 100];
        data[600] = 1; // cluster 1 has data
        data[1536] = 9; // cluster 3 (partial, padded) has data
        let plain = prepare_chunk(1024, AlignedBuf::from_slice(&data), 512, None, Vec::new());
        assert_eq!(
            plain.clusters,
            vec![
                ClusterData::Zero,
                ClusterData::Plain,
                ClusterData::Zero,
                ClusterData::Plain
            ]
        );
        assert_eq!(plain.data.len(), 4 * 512);
        assert_eq!(plain.zero_bytes(), 1024);
        let zstd = Codec::new(crate::Compression::Zstd, None).unwrap();
        let packed = prepare_chunk(0, AlignedBuf::from(data), 512, Some(zstd), vec![5; 9]);
        assert!(matches!(
            packed.clusters[1],
            ClusterData::Compressed { start: 0, .. }
        ));
        assert!(matches!(packed.clusters[3], ClusterData::Compressed { start, .. } if start > 0));
    }

    #[test]
    fn padding_is_zero_in_a_recycled_buffer() {
        // A recycled buffer keeps old bytes beyond its length: they must not reach the image.
        let mut buf = AlignedBuf::zeroed(4096);
        buf.fill(0xff);
        buf.set_len_within_capacity(600);
        buf[..600].fill(0);
        buf[0] = 1;
        let chunk = prepare_chunk(0, buf, 512, None, Vec::new());
        assert_eq!(chunk.clusters, vec![ClusterData::Plain, ClusterData::Zero]);
        assert_eq!(chunk.data.len(), 1024);
        assert!(chunk.data[1..].iter().all(|&b| b == 0));
    }

    /// A part file writing with `O_DIRECT`, or `None` where the filesystem of the temporary
    /// directory refuses it (or `H2K_NO_DIRECT=1`): then there is nothing to check.
    fn direct_part_file(dir: &TempDir) -> Option<PartFile> {
        let mut f = PartFile::create(&dir.path().join("out.img")).unwrap();
        f.direct_io();
        if f.direct.is_none() {
            eprintln!("no O_DIRECT in {}: skipped", dir.path().display());
            return None;
        }
        Some(f)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn counts(f: &PartFile) -> (u64, u64) {
        let d = f.direct.as_ref().expect("still writing with O_DIRECT");
        (d.unbounced, d.bounced)
    }

    #[test]
    fn aligned_memory_is_written_without_a_copy() {
        let dir = TempDir::new("direct-aligned");
        let Some(mut f) = direct_part_file(&dir) else {
            return;
        };
        // A chunk's bytes, and a run of clusters starting one page into it.
        let data = AlignedBuf::from_slice(&pattern(5 << 20, 1));
        f.write_at(&data[4096..4096 + (1 << 20)], 8 << 20).unwrap();
        assert_eq!(counts(&f), (1 << 20, 0));
        // Larger than the bounce buffer, with a tail that is not a whole page.
        f.write_at(&data[..(4 << 20) + 4096 + 100], 0).unwrap();
        assert_eq!(counts(&f), ((1 << 20) + (4 << 20) + 4096, 0));
        assert_eq!(f.written(), (1 << 20) + (4 << 20) + 4096 + 100);
        f.commit().unwrap();
        let got = std::fs::read(dir.path().join("out.img")).unwrap();
        assert_eq!(got.len(), 9 << 20);
        assert!(got[..(4 << 20) + 4196] == data[..(4 << 20) + 4196]);
        assert!(got[(4 << 20) + 4196..8 << 20].iter().all(|&b| b == 0));
        assert!(got[8 << 20..] == data[4096..4096 + (1 << 20)]);
    }

    #[test]
    fn unaligned_memory_is_bounced_and_written_correctly() {
        let dir = TempDir::new("direct-unaligned");
        let Some(mut f) = direct_part_file(&dir) else {
            return;
        };
        // One byte into an aligned buffer: never aligned. Longer than the bounce buffer.
        let len = (4 << 20) + (64 << 10);
        let data = AlignedBuf::from_slice(&pattern(len + 1, 7));
        f.write_at(&data[1..], 4096).unwrap();
        assert_eq!(counts(&f), (0, len as u64));
        f.commit().unwrap();
        let got = std::fs::read(dir.path().join("out.img")).unwrap();
        assert_eq!(got.len(), 4096 + len);
        assert!(got[..4096].iter().all(|&b| b == 0));
        assert!(got[4096..] == data[1..]);
    }

    #[test]
    fn part_file_appears_only_on_commit() {
        let dir = TempDir::new("part");
        let dst = dir.path().join("out.img");
        let mut f = PartFile::create(&dst).unwrap();
        f.write_at(b"hello", 0).unwrap();
        assert!(dir.path().join("out.img.part").exists());
        assert!(!dst.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"hello");
        assert!(!dir.path().join("out.img.part").exists());

        let other = dir.path().join("dropped.img");
        drop(PartFile::create(&other).unwrap());
        assert!(!dir.path().join("dropped.img.part").exists());
        assert!(!other.exists());
    }

    #[test]
    fn unwritable_destination_names_the_file() {
        let err = PartFile::create(Path::new("/nonexistent-dir/out.qcow2")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent-dir/out.qcow2.part: "),
            "{err}"
        );
    }
}
