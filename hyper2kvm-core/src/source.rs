//! The seams other sources plug into: where VMs come from ([`VmSource`], which also says
//! what the source is: [`Origin`]), how a disk is read ([`DiskReader`]), how a VM is stopped
//! and started ([`PowerControl`]), and an exported disk whose cleanup always runs
//! ([`ExportedDisk`]). Point-in-time copies and hardware are in
//! [`copies`](crate::copies) and [`hardware`](crate::hardware).
//!
//! The traits return boxed futures rather than using `async fn` so they stay object safe:
//! the pipeline holds an `Arc<dyn DiskReader>` whatever the disk comes from.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::buffers::AlignedBuf;
use crate::error::Result;
use crate::model::{Disk, Vm};

/// A boxed, sendable future, as the traits of this module return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Random read access to a disk's guest-visible bytes.
///
/// `read_at` may be called concurrently from many tasks; implementations are cheap to share
/// behind an `Arc`.
pub trait DiskReader: Send + Sync {
    /// The disk's size in bytes, as the guest sees it.
    fn size(&self) -> u64;

    /// A name for messages: a path, or a URL with its secret query removed. Never a secret.
    fn describe(&self) -> String;

    /// What a resumed conversion checks to know it reads the same disk as the interrupted
    /// one: by default the description and size. Local files add their modification time.
    /// Never a secret.
    fn identity(&self) -> String {
        format!("{} ({} bytes)", self.describe(), self.size())
    }

    /// The byte ranges that may hold data, sorted and non-overlapping; everything else reads as
    /// zeros. A reader that cannot tell returns the whole disk.
    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>>;

    /// Fills `buf` (all of its `len()`) with the bytes at `offset` and gives it back.
    ///
    /// Taking the buffer by value lets callers recycle buffers and lets implementations move
    /// it to a blocking thread or an HTTP body without copying. The buffer is an
    /// [`AlignedBuf`] so that the bytes can go on to an `O_DIRECT` write without another copy
    /// (see [`crate::output::PartFile::write_at`]); its content on entry is unspecified
    /// (a recycled buffer keeps old bytes), so an implementation writes every byte of it.
    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>>;
}

/// What a source is, for the domain's description and the reports.
pub trait Origin: Send + Sync {
    /// The platform as people name it: `Azure`, `Hyper-V`, `an OVA file`.
    fn platform(&self) -> &str;

    /// One line saying where `vm` lived on the platform: by default its id, size and
    /// location.
    fn describe(&self, vm: &Vm) -> String {
        format!("{} ({}, {})", vm.id, vm.vm_size, vm.location)
    }
}

/// Where VMs come from: lists them and exports their disks for reading.
pub trait VmSource: Origin {
    /// Every VM the source's configuration selects, sorted for stable output.
    fn list_vms(&self) -> BoxFuture<'_, Result<Vec<Vm>>>;

    /// Makes `disk` of `vm` readable, e.g. by granting read access to it. The returned
    /// [`ExportedDisk`] undoes whatever the export created when it is closed or dropped.
    fn export_disk<'a>(&'a self, vm: &'a Vm, disk: &'a Disk)
        -> BoxFuture<'a, Result<ExportedDisk>>;
}

/// Stops, deallocates and starts VMs, for sources that can. A migration run uses it to
/// export the disks of a VM that is running (stop or deallocate first), and to start the VM
/// again afterwards, also when the run fails or is cancelled.
pub trait PowerControl: Send + Sync {
    /// Stops the guest but keeps the VM allocated; returns once it is stopped.
    fn stop<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<()>>;
    /// Stops the VM and releases its host; returns once it is deallocated.
    fn deallocate<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<()>>;
    /// Starts the VM, first undoing whatever of the run's would keep it from starting (for
    /// Azure, read grants on its disks); returns once it has started.
    fn start<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<()>>;
}

type CleanupFn = Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send>;

/// Cleanups that had to be started in the background because their [`ExportedDisk`] was
/// dropped (an error path, a cancelled task). A program waits for them before it exits, so
/// that Ctrl-C still revokes access grants and deletes snapshots.
#[derive(Clone, Default)]
pub struct Cleanups {
    pending: Arc<Mutex<Vec<tokio::task::JoinHandle<Result<()>>>>>,
}

impl Cleanups {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `cleanup` in the background on the current Tokio runtime (or, with none left, to
    /// completion on a private one) and tracks it for [`wait_all`](Self::wait_all).
    pub fn spawn(&self, cleanup: BoxFuture<'static, Result<()>>) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let task = handle.spawn(cleanup);
                self.pending.lock().unwrap().push(task);
            }
            Err(_) => {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    let _ = rt.block_on(cleanup);
                }
            }
        }
    }

    /// Waits for every background cleanup started so far and returns the errors they reported.
    pub async fn wait_all(&self) -> Vec<crate::Error> {
        let handles: Vec<_> = std::mem::take(&mut *self.pending.lock().unwrap());
        let mut errors = Vec::new();
        for handle in handles {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(join) => errors.push(crate::Error::new(
                    crate::ErrorKind::Cancelled,
                    format!("a cleanup task did not finish: {join}"),
                )),
            }
        }
        errors
    }
}

/// A disk made readable by a [`VmSource`], carrying the cleanup that undoes the export.
///
/// The cleanup runs exactly once: when [`close`](ExportedDisk::close) is awaited, or, if the
/// value is dropped first (an error, a cancelled future), in the background on the current
/// Tokio runtime, tracked by the [`Cleanups`] given at construction.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use hyper2kvm_core::{Cleanups, ExportedDisk, RawFileReader};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> hyper2kvm_core::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("h2k-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("disk.raw");
/// # std::fs::write(&path, vec![0u8; 4096]).unwrap();
/// let revoked = Arc::new(AtomicBool::new(false));
/// let flag = revoked.clone();
/// let reader = Arc::new(RawFileReader::open(&path)?);
/// let disk = ExportedDisk::new(reader, Cleanups::new(), move || {
///     Box::pin(async move {
///         flag.store(true, Ordering::SeqCst); // e.g. endGetAccess
///         Ok(())
///     })
/// });
/// assert_eq!(disk.reader().size(), 4096);
/// disk.close().await?;
/// assert!(revoked.load(Ordering::SeqCst));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
pub struct ExportedDisk {
    reader: Arc<dyn DiskReader>,
    cleanup: Option<CleanupFn>,
    cleanups: Cleanups,
}

impl ExportedDisk {
    /// Wraps `reader` with the `cleanup` that undoes its export.
    pub fn new<F>(reader: Arc<dyn DiskReader>, cleanups: Cleanups, cleanup: F) -> Self
    where
        F: FnOnce() -> BoxFuture<'static, Result<()>> + Send + 'static,
    {
        ExportedDisk {
            reader,
            cleanup: Some(Box::new(cleanup)),
            cleanups,
        }
    }

    /// The exported disk's reader.
    pub fn reader(&self) -> &Arc<dyn DiskReader> {
        &self.reader
    }

    /// Runs the cleanup now and reports its outcome.
    pub async fn close(mut self) -> Result<()> {
        match self.cleanup.take() {
            Some(cleanup) => cleanup().await,
            None => Ok(()),
        }
    }
}

impl Drop for ExportedDisk {
    fn drop(&mut self) {
        // With no runtime left, `spawn` runs it to completion on a private one rather than
        // leave a grant open.
        if let Some(cleanup) = self.cleanup.take() {
            self.cleanups.spawn(cleanup());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Empty;
    impl DiskReader for Empty {
        fn size(&self) -> u64 {
            0
        }
        fn describe(&self) -> String {
            "empty".into()
        }
        fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn read_at(&self, _offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
            Box::pin(async move { Ok(buf) })
        }
    }

    fn counting(count: &Arc<AtomicUsize>, cleanups: &Cleanups) -> ExportedDisk {
        let count = count.clone();
        ExportedDisk::new(Arc::new(Empty), cleanups.clone(), move || {
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        })
    }

    #[tokio::test]
    async fn close_runs_cleanup_once() {
        let count = Arc::new(AtomicUsize::new(0));
        let cleanups = Cleanups::new();
        counting(&count, &cleanups).close().await.unwrap();
        assert!(cleanups.wait_all().await.is_empty());
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn drop_runs_cleanup_in_background() {
        let count = Arc::new(AtomicUsize::new(0));
        let cleanups = Cleanups::new();
        drop(counting(&count, &cleanups));
        assert!(cleanups.wait_all().await.is_empty());
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn cancelled_task_still_cleans_up() {
        let count = Arc::new(AtomicUsize::new(0));
        let cleanups = Cleanups::new();
        let disk = counting(&count, &cleanups);
        let task = tokio::spawn(async move {
            let _disk = disk;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await;
        assert!(cleanups.wait_all().await.is_empty());
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn drop_without_runtime_still_cleans_up() {
        let count = Arc::new(AtomicUsize::new(0));
        drop(counting(&count, &Cleanups::new()));
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
