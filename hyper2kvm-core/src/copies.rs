//! Point-in-time copies of disks (Azure snapshots; later other sources' equivalents): what a
//! migration run exports when the VM must keep running, or must be started again before its
//! disks are read.
//!
//! A copy's id is known *before* it is created ([`PointInTimeCopies::copy_id`]), so a run
//! records it first and a run killed while the copy was being made leaves a trace the next
//! run finds again ([`PointInTimeCopies::is_ready`]) and reuses or deletes.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::model::{Disk, Vm};
use crate::source::BoxFuture;

/// Creates, finds and deletes point-in-time copies of a VM's disks.
pub trait PointInTimeCopies: Send + Sync {
    /// The id the copy of `disk` (of `vm`) named `name` will have. Pure: no request.
    fn copy_id(&self, vm: &Vm, disk: &Disk, name: &str) -> String;

    /// Creates the copy `id` of `disk`, labelled with `labels` (tags), and returns once it
    /// can be exported.
    fn create<'a>(
        &'a self,
        vm: &'a Vm,
        disk: &'a Disk,
        id: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Whether the copy `id` exists and is complete: a copy a killed run left is reused only
    /// then.
    fn is_ready<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Deletes the copy `id` (undoing first whatever keeps it from being deleted, such as a
    /// read grant). Deleting a copy that does not exist succeeds, so cleanup can always call
    /// it.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;

    /// The copy `id` of `disk` as a disk to export: by default the same role and size, named
    /// by the id's last `/` segment.
    fn as_disk(&self, disk: &Disk, id: &str) -> Disk {
        Disk {
            id: id.to_string(),
            name: id.rsplit('/').next().unwrap_or(id).to_string(),
            role: disk.role,
            size_bytes: disk.size_bytes,
        }
    }
}
