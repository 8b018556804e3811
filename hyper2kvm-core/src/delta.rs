//! Applying a delta to an image: what changed between two incremental copies of a disk
//! ([`ChangedRanges`]) goes into the qcow2 image of the older one, in place
//! ([`Qcow2Patcher`]): cleared ranges become zeros, written ranges are read from the newer
//! copy (concurrently, in chunks, through the reader's own checks and retries) and written
//! where they belong. Only changed bytes move, so the time follows the delta, not the disk.
//!
//! Applying the same delta again gives the same image, so an interrupted application is
//! repaired by applying it again (see [`Qcow2Patcher`] for what a kill leaves). The image
//! must not be used between the start and the end of an application.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use crate::buffers::AlignedBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::incremental::ChangedRanges;
use crate::qcow2::{GuestOffset, Qcow2Patcher};
use crate::ranges::chunks;
use crate::source::DiskReader;

/// What an application did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Bytes read from the newer copy and written.
    pub bytes_written: u64,
    /// Bytes made zeros.
    pub bytes_cleared: u64,
}

/// Applies `changes` to the qcow2 image at `image` (a copy of the base, same size as
/// `reader`), reading written ranges from `reader` with at most `concurrency` reads of at
/// most `chunk` bytes in flight.
pub async fn apply_delta(
    reader: Arc<dyn DiskReader>,
    image: &Path,
    changes: &ChangedRanges,
    concurrency: usize,
    chunk: u64,
) -> Result<DeltaStats> {
    let path = image.to_path_buf();
    let patcher = blocking(move || Qcow2Patcher::open(&path)).await?;
    if patcher.virtual_size() != reader.size() {
        let err = Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the disk is {} bytes now, the image {}: a resized disk is copied in full",
                reader.size(),
                patcher.virtual_size()
            ),
        )
        .with_path(image);
        // Nothing was changed: the refcounts are still right.
        blocking(move || patcher.finish()).await?;
        return Err(err);
    }
    let patcher = Arc::new(Mutex::new(patcher));
    let mut stats = DeltaStats::default();
    for r in &changes.cleared {
        let (p, r) = (patcher.clone(), r.clone());
        stats.bytes_cleared += r.end - r.start;
        blocking(move || lock(&p).zero(r)).await?;
    }
    let mut pieces = chunks(&changes.written, chunk.max(512));
    let mut reads: JoinSet<Result<(u64, AlignedBuf)>> = JoinSet::new();
    loop {
        while reads.len() < concurrency.max(1) {
            let Some(r) = pieces.next() else { break };
            let reader = reader.clone();
            reads.spawn(async move {
                let buf = reader
                    .read_at(r.start, AlignedBuf::zeroed((r.end - r.start) as usize))
                    .await?;
                Ok((r.start, buf))
            });
        }
        let Some(done) = reads.join_next().await else {
            break;
        };
        let (at, buf) =
            done.map_err(|e| Error::new(ErrorKind::Io, format!("a read task failed: {e}")))??;
        stats.bytes_written += buf.len() as u64;
        let p = patcher.clone();
        blocking(move || lock(&p).write_at(GuestOffset(at), &buf)).await?;
    }
    let patcher = Arc::try_unwrap(patcher)
        .map_err(|_| Error::new(ErrorKind::Io, "the image is still in use"))?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    blocking(move || patcher.finish()).await?;
    Ok(stats)
}

fn lock(p: &Mutex<Qcow2Patcher>) -> std::sync::MutexGuard<'_, Qcow2Patcher> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("a blocking task failed: {e}")))?
}
