/*!
hyper2kvm's migration engine: everything a migration run does that does not depend on where
the VMs come from. It depends on `hyper2kvm-core` alone and runs over core's source traits;
`hyper2kvm-azure` implements them for Azure, and tests implement them in memory.

# Design

* **Sources** ([`Source`]): a bundle of core's traits — [`VmSource`] (VMs, disks, exports,
  and through [`Origin`] the platform's name), and optionally [`PowerControl`],
  [`PointInTimeCopies`] (snapshots) and [`HardwareCatalog`] (vCPUs, memory, firmware).
* **Plan** ([`plan()`]): which VMs, how each is exported (directly, through snapshots, after a
  stop or deallocate, or refused), which disks, where each output goes. Made from the VMs
  alone, so `--dry-run` shows exactly what a run would do.
* **Run** ([`Migration`]): VMs and disks in parallel within limits; disks staged (OS disks
  converted to `.pre-fixup` when the guest hook runs) and renamed into place only when whole;
  partial images resumed from their journal; snapshots recorded *before* they are created so a
  killed run's successor finds them again; guards that delete snapshots, revoke grants (the
  [`ExportedDisk`] cleanup) and start stopped VMs on success, failure and cancellation;
  SHA-256 of every image; the [`GuestHook`] on OS disks; a libvirt domain per VM.
* **Warm migration** ([`warm`], [`WarmMode`]): `sync` rounds apply incremental copies
  (core's [`IncrementalCopies`], [`Source::with_incremental`]) to working images
  `<image>.warm`, the chain's state in `report.json`'s `warm` section; `cutover` stops the
  VM, applies the last delta and publishes the images as a migration would.
* **Reports** ([`report`]): `report.json` per VM, written as the VM goes, and
  `run-<id>.json` for the run; their JSON shapes are documented in `docs/records.md`.
  Errors in them are structured (kind, status, code, resource, message); what could not be
  cleaned up is listed with the command to do it by hand. A full or read-only output
  directory is survived as far as possible (a reserve for the records) and reported.
* **Shards** ([`shard`]): a frozen plan (`plan.json`) assigns the VMs to shards balanced by
  bytes; a run migrates one shard, re-reading each VM's state first, into an output
  directory shared with the other shards (the per-VM locks keep two workers off one VM).
  [`fleet`] reads that directory back: what is done, failed, in progress, not started.
* **Interruption** ([`Interrupt`]): a signal stops the work, but the run still waits for
  its cleanups and writes records that say `interrupted` and what was undone.
* **Errors**: a run fails as a whole only when it cannot start (a plan that cannot work, an
  output directory that cannot be made, a discovery that fails); those errors are core's
  [`Error`], whose [`ErrorKind`] keeps what the source said (credential, throttled, not
  found, conflict, …) and whose `source()` chain reaches the source's own error. Each VM's
  own failures are in its report, and the summary's `exit_code` says how the run went.

[`VmSource`]: hyper2kvm_core::VmSource
[`Origin`]: hyper2kvm_core::Origin
[`PowerControl`]: hyper2kvm_core::PowerControl
[`PointInTimeCopies`]: hyper2kvm_core::PointInTimeCopies
[`HardwareCatalog`]: hyper2kvm_core::HardwareCatalog
[`IncrementalCopies`]: hyper2kvm_core::IncrementalCopies
[`ExportedDisk`]: hyper2kvm_core::ExportedDisk
*/
#![deny(missing_docs)]

mod checksum;
mod domain;
pub mod fleet;
mod guards;
pub mod interrupt;
pub mod options;
pub mod plan;
mod records;
pub mod report;
pub mod run;
mod sched;
pub mod shard;
pub mod source;
mod time;
mod vm;
pub mod warm;

pub use fleet::{FleetReport, VmState};
pub use hyper2kvm_core::{Error, ErrorKind, Result};
pub use interrupt::Interrupt;
pub use options::{
    EventFn, FleetProgress, GuestHook, GuestOutcome, KubevirtOptions, RunEvent, RunOptions,
    SyncOptions, Target, VmInFlight, WarmMode,
};
pub use plan::{
    plan, snapshot_name, DiskChoice, DiskPlan, Layout, Plan, PlanError, PlanOptions, Role,
    RunningVmPolicy, VmAction, VmPlan,
};
pub use report::{
    CleanupAction, CleanupRecord, DiskReport, DiskStatus, ErrorRecord, PowerAction, PowerRecord,
    ResourceKind, ResourceRecord, RunStatus, RunSummary, UnwrittenRecord, VmReport, VmStatus,
    VmSummary, WarmCopy, WarmDisk, WarmRecord, SCHEMA_VERSION, TOOL_VERSION,
};
pub use run::Migration;
pub use shard::{
    FrozenPlan, PlanDeviation, ShardArg, ShardError, ShardFilter, ShardRecord, ShardWork,
};
pub use source::Source;
pub use time::{new_run_id, rfc3339};
