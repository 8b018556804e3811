/*!
Local VM exports as a source for hyper2kvm's migration engine: `hyper2kvm import`.

# Design

One SRC is one VM:

* an **OVA** — a tar archive ([`tar`]) holding an OVF descriptor, maybe a manifest, and
  (streamOptimized) VMDK disks, which are read *in place* at their byte range of the archive
  (`VmdkReader::open_region`), never unpacked;
* an **OVF** with its files beside it (the same, read from the folder);
* a **Hyper-V export folder** (`.vhdx` / `.vhd` files in `Virtual Hard Disks`; the binary `.vmcx`
  configuration is not read, so hardware comes from [`Defaults`]);
* a **single disk image** (VHD, VHDX, VMDK, raw), hardware from [`Defaults`].

The [descriptor](ovf) gives vCPUs, memory, firmware (BIOS/EFI, secure boot), NIC count and
the disk order; a [manifest] is checked when present, each disk hashed before it is
converted. [`LocalSource`] implements core's `VmSource`, `Origin` and `HardwareCatalog`, so
the engine (`hyper2kvm-migrate`) runs it like any other source: same images, domain XML,
reports, guest fix-ups and resume.

Every SRC is opened (archive indexed, descriptor and manifest parsed, disk headers and
tables checked) before the run starts, so a broken SRC stops the run before anything is
written; errors name the file, and the field, line or offset.
*/
#![deny(missing_docs)]

pub mod hyperv;
pub mod manifest;
pub mod ovf;
pub mod package;
pub mod source;
pub mod tar;
#[cfg(test)]
mod testutil;

pub use package::{open, Defaults, Kind, Package, PackageDisk};
pub use source::LocalSource;
