/*!
Offline guest fix-ups: make a Linux or Windows disk migrated from Azure boot, and get a network, on KVM.

A converted Azure disk is not yet a KVM guest. Its initramfs may hold only Hyper-V's drivers,
so on a virtio disk the root file system is never found; its network configuration is pinned
to the Hyper-V NIC (driver `hv_netvsc`, its MAC address); the Azure agent and cloud-init's
Azure datasource wait for Azure; `rootdelay=300` stalls a failing boot for five minutes; fstab
names the resource disk and `/dev/sdX` devices that KVM does not have.

# Design

* **Pure edits** ([`edits`]): one module per file format (netplan YAML, fstab, grub defaults,
  ifcfg, NetworkManager keyfiles, cloud-init, initramfs-tools, dracut, kernel config), each a
  function from the file's text to its fixed text plus what changed, or `None` when nothing
  needs to change. They do no I/O and are unit-tested on the files' real formats.
* **Fix-ups** ([`fixups`]): small units, each with a name, a check, the edit, a line for the
  report. A fix-up reads the guest's files through the [`GuestFs`] seam and returns a
  [`Plan`](fixups::Plan) (files to write or remove, commands to run in the guest); an empty
  plan means the guest does not need it. Each can be skipped by name ([`GuestConfig::skip`]).
* **libguestfs** ([`guestfish`]): the ecosystem's tool for offline guest edits, driven as
  `guestfish --listen` / `--remote` subprocesses — one appliance per image, no mounting of
  images on the host, no library bindings. [`inspect`] finds the OS, the distribution family,
  the root file system, the kernels and the boot loader; guest tools (`update-initramfs`,
  `dracut`, `update-grub`, `grub2-mkconfig`, `systemctl disable`) run inside the guest.
* **Report** ([`FixReport`]): what each fix-up changed, or would change in a dry run.

* **Windows** ([`windows`]): with the user's virtio-win ([`GuestConfig::virtio_win`], ISO or
  tree), the storage drivers are injected offline as boot-start services bound to the virtio
  PCI ids (registry hives edited with hivex through the [`GuestFs`] seam, see [`registry`]),
  every driver package copied in for Plug and Play, a run-once first-boot service installs
  them with `pnputil` (and the QEMU guest agent), and Azure's agent services, page file on
  `D:` and an offline SAN policy are undone. Without virtio-win a Windows guest is reported
  not fixed and never mounted; a hibernated one is reported, not forced; an encrypted
  (BitLocker, LUKS) one is refused with how to decrypt it.

Where libguestfs is not installed, [`fix_image`] says so and carries on without fix-ups,
unless [`GuestConfig::require`] is set.

# Example

```no_run
use std::path::Path;
use hyper2kvm_guest::{fix_image, GuestConfig};

let config = GuestConfig { skip: vec!["azure-agent".into()], ..GuestConfig::default() };
let report = fix_image(Path::new("vm-os.qcow2"), &config)?;
println!("{report}");
# Ok::<(), hyper2kvm_guest::Error>(())
```
*/
#![deny(missing_docs)]

pub mod accel;
pub mod edits;
pub mod error;
pub mod fixups;
pub mod guestfish;
pub mod guestfs;
pub mod inspect;
pub mod network;
pub mod registry;
pub mod report;
pub mod run;
pub mod windows;

pub use error::{Error, ErrorKind, Result};
pub use fixups::FixUp;
pub use guestfs::GuestFs;
pub use inspect::{DistroFamily, Inspection};
pub use report::{FixReport, FixUpResult, Outcome, Status};
pub use run::{fix_guest, fix_image, GuestConfig};
