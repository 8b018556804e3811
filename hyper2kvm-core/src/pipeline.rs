//! The conversion pipeline: allocated ranges → cluster-aligned chunks → bounded concurrent
//! reads → zero detection and compression on one thread per core → one writer thread.
//!
//! ```text
//!   allocated_ranges ──► chunks ──► read_at ×N ──► prepare_chunk (CPU threads) ──► writer thread
//!                                  (any order)      (one queue, ≤ cores)           (one sink)
//! ```
//!
//! `concurrency` bounds the reads in flight; a chunk gives its read slot back once read, so
//! the next reads overlap its zero scan and compression. Memory is bounded by `concurrency`
//! chunks being read, up to [`PREPARING`] more read and waiting for or in the CPU stage (or
//! waiting to be collected when the writer is slow), two queued for the writer, plus the
//! writer's metadata, whatever the disk's size and the host's core count. Chunks complete
//! out of order; the pipeline tells the writer the lowest guest offset still outstanding so
//! it can write out finished L2 tables early.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::buffers::{AlignedBuf, BufferPool};
use crate::error::{Error, ErrorKind, Result};
use crate::journal::{journal_path, Journal};
use crate::lock::LockFile;
use crate::output::{prepare_chunk, ImageSink, PreparedChunk};
use crate::qcow2::compress::Codec;
use crate::qcow2::{Compression, Qcow2Writer};
use crate::ranges::{align_and_merge, chunks, total_len, RangeSet};
use crate::raw_writer::{RawWriter, RAW_BLOCK};
use crate::source::DiskReader;

/// The image format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// qcow2 v3: sparse, optionally compressed, portable.
    #[default]
    Qcow2,
    /// A sparse raw file.
    Raw,
}

impl std::str::FromStr for OutputFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "qcow2" => Ok(OutputFormat::Qcow2),
            "raw" => Ok(OutputFormat::Raw),
            other => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("unknown output format {other:?}; expected qcow2 or raw"),
            )),
        }
    }
}

/// Reads in flight for a disk read over a network (an exported Azure disk, a SAS URL): enough
/// to hide the round trips. [`ConvertOptions::default`]'s 2 suits local files.
pub const REMOTE_CONCURRENCY: usize = 16;

/// Bytes per read over a network: few, large requests. [`ConvertOptions::default`]'s 1 MiB
/// suits local files, where every chunk is copied twice by the kernel (out of the page cache,
/// into the output's) and a small working set keeps both copies in the CPU's caches
/// (docs/BENCHMARKS.md: 2 reads of 1 MiB convert a VHDX in 0.4 of the time 4 of 4 MiB take).
pub const REMOTE_CHUNK_SIZE: u32 = 4 << 20;

/// Chunks that may be read and waiting for, or in, the CPU stage beyond the reads in flight:
/// two, so the reads go on while two cores zero-scan or compress. A fixed number, not one per
/// core: finished chunks hold their buffers until collected, and a pod without a CPU limit
/// sees every core of its node (64 would mean 256 MiB more per disk over a network).
const PREPARING: usize = 2;

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// qcow2 or raw.
    pub format: OutputFormat,
    /// Compress qcow2 clusters (not allowed for raw output).
    pub compression: Option<Compression>,
    /// The compression level; each algorithm's default when `None`.
    pub compression_level: Option<i32>,
    /// qcow2 cluster size: a power of two from 512 B to 2 MiB; 64 KiB by default.
    pub cluster_size: u32,
    /// Bytes per read; rounded up to whole clusters. 1 MiB by default, for local files;
    /// [`REMOTE_CHUNK_SIZE`] over a network.
    pub chunk_size: u32,
    /// Reads in flight at once: 2 by default, for local files; [`REMOTE_CONCURRENCY`] over
    /// a network.
    pub concurrency: usize,
    /// Reads closer than this many bytes are merged into one (worth it over a network).
    pub merge_gap: u64,
    /// Keep the partial image and a journal (`DST.part`, `DST.part.journal`) when the
    /// conversion fails or is interrupted, and carry on from them when the same disk is
    /// converted to the same place with the same options again.
    pub resume: bool,
    /// With `resume`, how many bytes of chunks between checkpoints (each one syncs the
    /// partial image and rewrites the journal). A checkpoint is also taken every 5 seconds.
    pub checkpoint_bytes: u64,
    /// Write image data with `O_DIRECT` where the filesystem allows it (no by default; yes
    /// for exports). It saves the CPU of copying into the page cache, which counts when the
    /// reading side is CPU-bound (an export shares the cores with HTTP and MD5), but each
    /// write then waits for the disk: a local conversion, bound by the disk, took 1.11 s
    /// instead of 0.76 s (docs/BENCHMARKS.md, "Export CPU per byte").
    pub direct_io: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            format: OutputFormat::Qcow2,
            compression: None,
            compression_level: None,
            cluster_size: 64 << 10,
            chunk_size: 1 << 20,
            concurrency: 2,
            merge_gap: 0,
            resume: false,
            checkpoint_bytes: 64 << 20,
            direct_io: false,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// The disk's guest-visible size.
    pub virtual_size: u64,
    /// Bytes read from the source (its allocated ranges, cluster-aligned).
    pub bytes_read: u64,
    /// Bytes read that were all-zero clusters and not written.
    pub zero_bytes: u64,
    /// Bytes written to the output file, metadata included.
    pub bytes_written: u64,
    /// Bytes of allocated ranges a resumed run found already written, and did not read.
    pub resumed_bytes: u64,
    /// Wall time from the first read to the renamed image.
    pub elapsed: Duration,
}

/// Progress of a running conversion: bytes of the allocated ranges processed so far, of
/// `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes processed.
    pub done: u64,
    /// Bytes to process (known once the allocated ranges are).
    pub total: u64,
}

/// Receives progress updates; called from the pipeline's task, keep it cheap.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

enum ToWriter {
    Chunk(PreparedChunk, u64),
    Finish,
}

/// Owns the writer thread. Dropping it (a cancelled conversion) closes the queue without
/// `Finish`, and waits for the thread, so the `.part` file is gone when the drop returns.
struct WriterThread {
    tx: Option<mpsc::Sender<ToWriter>>,
    handle: Option<JoinHandle<Result<u64>>>,
}

impl WriterThread {
    fn spawn(
        mut sink: Box<dyn ImageSink>,
        pool: Arc<BufferPool>,
        mut resume: Option<Checkpoints>,
    ) -> WriterThread {
        let (tx, mut rx) = mpsc::channel::<ToWriter>(2);
        let handle = std::thread::Builder::new()
            .name("hyper2kvm-writer".into())
            .spawn(move || {
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        ToWriter::Chunk(chunk, done_below) => {
                            sink.write_chunk(&chunk)?;
                            sink.complete_below(done_below)?;
                            if let Some(resume) = &mut resume {
                                resume.written(&chunk, &mut *sink)?;
                            }
                            pool.give(chunk.data);
                            pool.give_vec(chunk.compressed);
                        }
                        ToWriter::Finish => {
                            let written = sink.finish()?;
                            if let Some(resume) = resume {
                                Journal::remove(&resume.path);
                            }
                            return Ok(written);
                        }
                    }
                }
                Err(Error::new(ErrorKind::Cancelled, "conversion cancelled"))
            })
            .expect("spawning the writer thread");
        WriterThread {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Queues a chunk; `false` if the writer has stopped (its error comes from `join`).
    async fn send(&self, msg: ToWriter) -> bool {
        self.tx
            .as_ref()
            .expect("writer open")
            .send(msg)
            .await
            .is_ok()
    }

    async fn join(mut self) -> Result<u64> {
        self.tx.take();
        let handle = self.handle.take().expect("joined once");
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| Error::new(ErrorKind::Cancelled, format!("writer wait failed: {e}")))?
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "the writer thread panicked")))
    }
}

/// A read chunk waiting for the CPU stage, and where its prepared form goes.
struct CpuJob {
    offset: u64,
    data: AlignedBuf,
    compressed: Vec<u8>,
    done: oneshot::Sender<Result<PreparedChunk>>,
}

/// The CPU stage: long-lived threads, one per core, that take read chunks from one queue and
/// zero-scan and compress them. A thread that finishes a chunk takes the next one at once.
/// Handing each chunk to the blocking pool instead took several wake-ups per chunk, and the
/// woken threads often landed on the core that woke them: one core ran two compressions in
/// turn while the other idled for up to 10 ms (`perf sched`). The two cores were 79 % busy
/// during a zstd conversion, now 93 % (docs/BENCHMARKS.md, "One thread per core for the CPU
/// stage").
///
/// The threads stop when the queue's last sender is dropped: when the conversion ends, or
/// when a cancelled conversion's chunk tasks (holding clones) have been dropped by their
/// runtime. A queued chunk whose task is gone is skipped, not prepared. The threads touch no
/// file, and a panic in `prepare_chunk` fails that chunk with its offset, not the thread.
#[derive(Clone)]
struct CpuStage {
    queue: std_mpsc::Sender<CpuJob>,
    /// The threads' shared end of the queue; gone once every thread has stopped.
    #[cfg(test)]
    jobs: std::sync::Weak<Mutex<std_mpsc::Receiver<CpuJob>>>,
}

impl CpuStage {
    fn spawn(threads: usize, granularity: usize, compression: Option<Codec>) -> Result<CpuStage> {
        let (queue, jobs) = std_mpsc::channel::<CpuJob>();
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name("hyper2kvm-cpu".into())
                .spawn(move || loop {
                    // One thread waits on the queue at a time; the lock is released before
                    // the work, so a panic in it cannot poison the queue for the others.
                    let next = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else { return };
                    // A cancelled conversion's chunk: nobody waits for it.
                    if job.done.is_closed() {
                        continue;
                    }
                    let offset = job.offset;
                    let prepared = catch_unwind(AssertUnwindSafe(|| {
                        prepare_chunk(offset, job.data, granularity, compression, job.compressed)
                    }))
                    .map_err(|panic| {
                        let why = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Error::new(
                            ErrorKind::Io,
                            format!("preparing the chunk at offset {offset} panicked: {why}"),
                        )
                    });
                    let _ = job.done.send(prepared);
                })
                .map_err(|e| Error::new(ErrorKind::Io, format!("starting a CPU thread: {e}")))?;
        }
        Ok(CpuStage {
            queue,
            #[cfg(test)]
            jobs: Arc::downgrade(&jobs),
        })
    }

    /// Zero-scans and compresses `data`, the guest bytes at `offset`, on a CPU thread.
    async fn prepare(
        &self,
        offset: u64,
        data: AlignedBuf,
        compressed: Vec<u8>,
    ) -> Result<PreparedChunk> {
        let (done, prepared) = oneshot::channel();
        let job = CpuJob {
            offset,
            data,
            compressed,
            done,
        };
        let stopped = || Error::new(ErrorKind::Io, "the conversion's CPU threads stopped");
        self.queue.send(job).map_err(|_| stopped())?;
        prepared.await.map_err(|_| stopped())?
    }
}

/// The writer thread's bookkeeping for a resumable conversion.
struct Checkpoints {
    path: PathBuf,
    header: String,
    completed: RangeSet,
    every_bytes: u64,
    since_bytes: u64,
    since: Instant,
}

impl Checkpoints {
    /// Records a written chunk and takes a checkpoint when one is due.
    fn written(&mut self, chunk: &PreparedChunk, sink: &mut dyn ImageSink) -> Result<()> {
        self.completed
            .insert(chunk.offset..chunk.offset + chunk.len);
        self.since_bytes += chunk.len;
        if self.since_bytes >= self.every_bytes || self.since.elapsed() >= CHECKPOINT_INTERVAL {
            let journal = Journal {
                header: self.header.clone(),
                completed: self.completed.clone(),
                sink_state: sink.checkpoint()?,
            };
            journal.store(&self.path)?;
            self.since_bytes = 0;
            self.since = Instant::now();
        }
        Ok(())
    }
}

/// A checkpoint is taken at least this often, however slowly bytes arrive.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// What a journal must match for its partial image to be resumed: the source and every
/// option that shapes the image's bytes.
fn journal_header(reader: &dyn DiskReader, opts: &ConvertOptions, codec: Option<Codec>) -> String {
    format!(
        "source: {}\nformat: {:?}\ncluster: {}\ncodec: {:?}\n",
        reader.identity(),
        opts.format,
        opts.cluster_size,
        codec
    )
}

/// Opens the output: the partial image of an interrupted run if its journal matches
/// `header`, else a new one. Returns the sink and the guest ranges already written.
fn open_sink(
    dst: &Path,
    size: u64,
    opts: &ConvertOptions,
    header: &str,
) -> Result<(Box<dyn ImageSink>, RangeSet)> {
    let journal = journal_path(dst);
    if opts.resume {
        // A journal that is damaged, for another source, or whose partial image is gone or
        // does not fit means starting over: never a mixed image.
        if let Ok(Some(j)) = Journal::load(&journal) {
            if j.header == header {
                let resumed: Result<Box<dyn ImageSink>> = match opts.format {
                    OutputFormat::Qcow2 => Qcow2Writer::resume(
                        dst,
                        size,
                        opts.cluster_size,
                        opts.compression,
                        &j.sink_state,
                    )
                    .map(|w| Box::new(w) as Box<dyn ImageSink>),
                    OutputFormat::Raw => RawWriter::resume(dst, size, &j.sink_state)
                        .map(|w| Box::new(w) as Box<dyn ImageSink>),
                };
                if let Ok(mut sink) = resumed {
                    if opts.direct_io {
                        sink.direct_io();
                    }
                    return Ok((sink, j.completed));
                }
            }
        }
    }
    Journal::remove(&journal);
    let mut sink: Box<dyn ImageSink> = match opts.format {
        OutputFormat::Qcow2 => Box::new(Qcow2Writer::create(
            dst,
            size,
            opts.cluster_size,
            opts.compression,
        )?),
        OutputFormat::Raw => Box::new(RawWriter::create(dst, size)?),
    };
    if opts.resume {
        sink.keep_on_failure();
    }
    if opts.direct_io {
        sink.direct_io();
    }
    Ok((sink, RangeSet::new()))
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The lock file a conversion into `dst` holds while it writes (see [`crate::lock`]).
pub fn lock_path(dst: &Path) -> PathBuf {
    let mut p = dst.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Converts the disk behind `reader` into an image at `dst`.
///
/// Only one conversion writes to `dst` at a time: it holds `dst.lock` (see [`crate::lock`])
/// and a second one fails with [`ErrorKind::Conflict`] naming the holder. A `dst` that is a
/// directory is refused before anything is written.
///
/// The image appears at `dst` only when complete: it is written as `dst.part`, synced and
/// renamed; on error or cancellation the `.part` file is removed.
///
/// ```no_run
/// use std::path::{Path, PathBuf};
/// use hyper2kvm_core::{convert, open_disk, ConvertOptions, InputFormat};
///
/// # async fn run() -> hyper2kvm_core::Result<()> {
/// let disk = open_disk(Path::new("disk.vhd"), InputFormat::Auto)?;
/// let stats = convert(disk, Path::new("disk.qcow2"), &ConvertOptions::default(), None).await?;
/// println!("read {} bytes, wrote {}", stats.bytes_read, stats.bytes_written);
/// # Ok(())
/// # }
/// ```
pub async fn convert(
    reader: Arc<dyn DiskReader>,
    dst: &Path,
    opts: &ConvertOptions,
    progress: Option<ProgressFn>,
) -> Result<ConvertStats> {
    let started = Instant::now();
    let size = reader.size();
    // Check every option before the output file exists.
    let compression = opts
        .compression
        .map(|kind| Codec::new(kind, opts.compression_level))
        .transpose()?;
    if opts.format == OutputFormat::Raw && compression.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "compression needs qcow2 output; raw images cannot be compressed",
        ));
    }
    let granularity = match opts.format {
        OutputFormat::Qcow2 => opts.cluster_size as usize,
        OutputFormat::Raw => RAW_BLOCK,
    };
    // One writer per destination: a second conversion to the same image (another process,
    // another task) fails here, naming the holder, before it touches any file.
    crate::fsafe::check_destination(dst)?;
    let _lock = LockFile::acquire(
        &lock_path(dst),
        &format!("convert-{}", std::process::id()),
        &format!("converting {} into {}", reader.describe(), dst.display()),
    )?;
    let header = journal_header(&*reader, opts, compression);
    let (sink, completed) = open_sink(dst, size, opts, &header)?;
    let concurrency = opts.concurrency.max(1);
    let checkpoints = opts.resume.then(|| Checkpoints {
        path: journal_path(dst),
        header,
        completed: completed.clone(),
        every_bytes: opts.checkpoint_bytes.max(1),
        since_bytes: 0,
        since: Instant::now(),
    });
    let chunk =
        (u64::from(opts.chunk_size).max(1)).div_ceil(granularity as u64) * granularity as u64;
    // Chunks being read, read and being prepared, queued for the writer, and being written.
    let pool = Arc::new(BufferPool::new(concurrency + PREPARING + 3, chunk as usize));
    let writer = WriterThread::spawn(sink, pool.clone(), checkpoints);

    let ranges = reader.allocated_ranges().await?;
    let ranges = align_and_merge(&ranges, granularity as u64, size, opts.merge_gap);
    let total = total_len(&ranges);
    // A resumed run reads only what the journal does not vouch for.
    let ranges = completed.subtract_from(&ranges);
    let resumed_bytes = total - total_len(&ranges);
    let report = |done| {
        if let Some(p) = &progress {
            p(Progress { done, total });
        }
    };
    report(resumed_bytes);

    // CPU work (zero scan, compression) runs on one thread per core, and never on more threads
    // than chunks can wait for it.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cpu = CpuStage::spawn(cores.min(concurrency + PREPARING), granularity, compression)?;
    // A chunk holds a read slot only while it is read: with compression, two reads and two
    // cores used to take turns, and the cores idled while the next chunks were read.
    let reads = Arc::new(Semaphore::new(concurrency));
    let mut pending = chunks(&ranges, chunk).peekable();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut tasks: JoinSet<Result<PreparedChunk>> = JoinSet::new();
    let mut stats = ConvertStats {
        virtual_size: size,
        resumed_bytes,
        ..ConvertStats::default()
    };
    let mut done = resumed_bytes;
    loop {
        while tasks.len() < concurrency + PREPARING {
            let Some(range) = pending.next() else { break };
            in_flight.insert(range.start);
            let reader = reader.clone();
            let cpu = cpu.clone();
            let reads = reads.clone();
            let pool = pool.clone();
            tasks.spawn(async move {
                let reading = reads.acquire_owned().await.expect("semaphore open");
                let buf = pool.take((range.end - range.start) as usize);
                let data = reader.read_at(range.start, buf).await?;
                drop(reading);
                cpu.prepare(range.start, data, pool.take_vec()).await
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let prepared = joined
            .map_err(|e| Error::new(ErrorKind::Cancelled, format!("read task failed: {e}")))??;
        in_flight.remove(&prepared.offset);
        let done_below = in_flight
            .first()
            .copied()
            .or_else(|| pending.peek().map(|r| r.start))
            .unwrap_or(u64::MAX);
        stats.bytes_read += prepared.len;
        stats.zero_bytes += prepared.zero_bytes();
        done += prepared.len;
        if !writer.send(ToWriter::Chunk(prepared, done_below)).await {
            break; // the writer failed; join() below reports why
        }
        report(done);
    }
    // If the writer stopped early, Finish is not delivered and join() returns its error.
    writer.send(ToWriter::Finish).await;
    stats.bytes_written = writer.join().await?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 KiB clusters of every kind prepare_chunk tells apart: zero, compressible, random.
    fn chunk(seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut data = vec![0u8; 4 << 16];
        data[1 << 16..2 << 16]
            .iter_mut()
            .zip(b"hyper2kvm ".iter().cycle())
            .for_each(|(d, s)| *d = *s);
        for b in &mut data[2 << 16..] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        data
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cpu_stage_prepares_as_prepare_chunk_does_and_stops_with_its_senders() {
        // A lost reply would hang: fail instead.
        tokio::time::timeout(Duration::from_secs(60), prepares_and_stops())
            .await
            .expect("the CPU stage answered every chunk");
    }

    async fn prepares_and_stops() {
        let codec = Some(Codec::new(Compression::Zstd, None).unwrap());
        let stage = CpuStage::spawn(2, 1 << 16, codec).unwrap();
        let jobs = stage.jobs.clone();
        let mut tasks = JoinSet::new();
        for i in 0..16u64 {
            let stage = stage.clone();
            tasks.spawn(async move {
                let data = AlignedBuf::from(chunk(i));
                (i, stage.prepare(i << 18, data, Vec::new()).await.unwrap())
            });
        }
        drop(stage);
        while let Some(joined) = tasks.join_next().await {
            let (i, got) = joined.unwrap();
            let want = prepare_chunk(
                i << 18,
                AlignedBuf::from(chunk(i)),
                1 << 16,
                codec,
                Vec::new(),
            );
            assert_eq!(got.offset, want.offset);
            assert_eq!(got.clusters, want.clusters);
            assert_eq!(&got.compressed[..], &want.compressed[..]);
            assert_eq!(&got.data[..], &want.data[..]);
        }
        // Every sender is gone: the threads leave, and with them their end of the queue.
        let deadline = Instant::now() + Duration::from_secs(10);
        while jobs.upgrade().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            jobs.upgrade().is_none(),
            "the CPU threads outlived the stage"
        );
    }

    #[tokio::test]
    async fn a_panic_in_the_cpu_stage_fails_its_chunk_with_the_offset_and_the_thread_goes_on() {
        // Granularity 0 makes prepare_chunk divide by zero.
        let stage = CpuStage::spawn(1, 0, None).unwrap();
        for offset in [4096u64, 8192] {
            let data = AlignedBuf::from(vec![1u8; 512]);
            let err = tokio::time::timeout(
                Duration::from_secs(60),
                stage.prepare(offset, data, Vec::new()),
            )
            .await
            .expect("an answer, not a hang")
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io);
            assert!(
                err.to_string()
                    .contains(&format!("chunk at offset {offset} panicked")),
                "{err}"
            );
        }
    }
}
