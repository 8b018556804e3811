/*!
The core of hyper2kvm: the domain model, the seams sources plug into, the disk formats, and
the conversion pipeline. No network, no Azure: `hyper2kvm-azure` implements this crate's
traits for Azure, and anything else (a local file, a test double) can too.

# Design

* **Model** ([`Vm`], [`Disk`], [`PowerState`], …): what a source knows about a VM.
* **Traits** ([`VmSource`], [`Origin`], [`DiskReader`], [`PowerControl`],
  [`PointInTimeCopies`], [`HardwareCatalog`]): a source lists VMs, says what platform it is
  and exports disks; a disk reader gives random access to a disk's bytes and says which
  ranges hold data; an [`ExportedDisk`] carries the cleanup (revoke a grant, delete a
  snapshot) that always runs; power control stops and starts VMs; point-in-time copies
  (snapshots) are created, found again and deleted; the hardware catalog says how many
  vCPUs and how much memory a VM needs. The migration engine (`hyper2kvm-migrate`) runs on
  these traits alone.
* **Formats**: readers for [raw](RawFileReader) files and [VHDs](vhd) (fixed and dynamic,
  footer checksums verified, size from `current_size`), [VMDKs](vmdk) (monolithicSparse,
  streamOptimized, flat and split extents); a one-pass, append-only
  [qcow2 writer](qcow2::Qcow2Writer) with zstd or deflate compression; a sparse
  [raw writer](RawWriter).
* **Pipeline** ([`convert`]): only allocated ranges are read, in cluster-aligned chunks,
  concurrently; all-zero clusters are dropped and the rest compressed on a bounded pool of
  threads; one writer thread appends. Memory is bounded by `concurrency × chunk size` plus
  metadata for the regions in flight, whatever the disk size. Output appears under its final
  name only once complete.

# Example

```no_run
use std::path::Path;
use hyper2kvm_core::{convert, open_disk, Compression, ConvertOptions, InputFormat};

# #[tokio::main] async fn main() -> hyper2kvm_core::Result<()> {
let disk = open_disk(Path::new("disk.vhd"), InputFormat::Auto)?;
let opts = ConvertOptions { compression: Some(Compression::Zstd), ..Default::default() };
let stats = convert(disk, Path::new("disk.qcow2"), &opts, None).await?;
println!("{} of {} bytes held data", stats.bytes_read - stats.zero_bytes, stats.virtual_size);
# Ok(()) }
```
*/
#![deny(missing_docs)]

pub mod buffers;
pub mod copies;
pub mod delta;
pub mod error;
pub mod fsafe;
pub mod hardware;
pub mod incremental;
pub mod journal;
pub mod kubevirt;
pub mod libvirt;
pub mod limits;
pub mod lock;
pub mod model;
pub mod open;
pub mod output;
pub mod pipeline;
pub mod qcow2;
pub mod ranges;
pub mod raw;
pub mod raw_writer;
pub mod redact;
pub mod source;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
pub mod waits;
pub mod zero;

#[cfg(test)]
mod testutil;

pub use buffers::AlignedBuf;
pub use copies::PointInTimeCopies;
pub use delta::{apply_delta, DeltaStats};
pub use error::{Error, ErrorKind, Result};
pub use hardware::{Hardware, HardwareCatalog};
pub use incremental::{ChangedRanges, CopyInfo, Delta, IncrementalCopies};
pub use limits::Limits;
pub use lock::{LockFile, LockInfo};
pub use model::{Disk, DiskRole, Firmware, OsType, PowerState, Security, Vm};
pub use open::{open_disk, InputFormat};
pub use output::{ImageSink, PreparedChunk};
pub use pipeline::{convert, ConvertOptions, ConvertStats, OutputFormat, Progress, ProgressFn};
pub use qcow2::{Compression, Qcow2Writer};
pub use raw::RawFileReader;
pub use raw_writer::RawWriter;
pub use redact::redact;
pub use source::{BoxFuture, Cleanups, DiskReader, ExportedDisk, Origin, PowerControl, VmSource};
pub use vhd::{DynamicVhdReader, VhdFooter};
pub use vhdx::VhdxReader;
pub use vmdk::VmdkReader;
