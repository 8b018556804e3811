/*!
hyper2kvm moves virtual machines out of Azure onto KVM.

This crate is what an embedding tool depends on. It re-exports the workspace's libraries,
each usable on its own:

* [`core`] (`hyper2kvm-core`): the domain model (VMs, disks, power states), the traits a
  source implements, VHD and raw readers, the one-pass qcow2 writer and the conversion
  pipeline. No network.
* [`migrate`] (`hyper2kvm-migrate`): the migration engine — plan, staging, resume, cleanup
  guards, checksums, the guest hook, domain XML and reports — over core's source traits, for
  any source.
* [`azure`] (`hyper2kvm-azure`): one pooled HTTP client, the ARM client (retries, paging,
  credentials), batched discovery, access grants, and the page-blob reader that streams an
  exported disk into the pipeline. [`azure::AzureSource`] implements core's source traits
  ([`core::VmSource`], [`core::PowerControl`], [`core::PointInTimeCopies`],
  [`core::HardwareCatalog`]).
* [`guest`] (`hyper2kvm-guest`): offline fix-ups that make a migrated Azure Linux guest
  boot and reach the network on KVM, driven through libguestfs.

[`run::migrate`] is a whole migration run (discovery, snapshots or power operations, export,
conversion, guest fix-ups, domain XML, reports) as one call with a progress callback, for any
[`migrate::Source`]; the `hyper2kvm` binary (crate `hyper2kvm-cli`) is a thin layer over it
and these.

[`import::import`] is the same run over local exports — OVA, OVF, Hyper-V export folders,
disk images — through [`local`] (`hyper2kvm-local`).

[`config`] reads the `config.yaml` the command reads (its schema, line-and-column errors, the
libraries' defaults), so an embedding tool can share it.

# Errors

Every library call fails with [`core::Error`]: match its [`core::ErrorKind`] (`Credential`,
`Throttled`, `NotFound`, `Conflict`, `Integrity`, `Io`, `Guest`, `InvalidArgument` for
configuration, `Cancelled`, …) and walk `source()` down to the HTTP layer; see
`examples/retry_on_throttling.rs`.

# Converting a local disk

```no_run
use std::path::Path;
use hyper2kvm::core::{convert, open_disk, Compression, ConvertOptions, InputFormat};

# #[tokio::main] async fn main() -> hyper2kvm::core::Result<()> {
let disk = open_disk(Path::new("disk.vhd"), InputFormat::Auto)?;
let opts = ConvertOptions { compression: Some(Compression::Zstd), ..Default::default() };
let stats = convert(disk, Path::new("disk.qcow2"), &opts, None).await?;
println!("wrote {} bytes in {:?}", stats.bytes_written, stats.elapsed);
# Ok(()) }
```

A disk that is not a local file (an HTTP range reader, a test double) implements
[`core::DiskReader`] and goes through the same [`core::convert`]; see `examples/`.
*/
#![deny(missing_docs)]

pub mod config;
pub mod import;
pub mod run;

pub use hyper2kvm_azure as azure;
pub use hyper2kvm_core as core;
pub use hyper2kvm_guest as guest;
pub use hyper2kvm_local as local;
pub use hyper2kvm_migrate as migrate;
