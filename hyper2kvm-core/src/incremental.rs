//! Incremental point-in-time copies, for warm migration: a running VM's disk is copied once
//! in full from a first incremental copy, then, as often as wanted, only what changed between
//! the last copy applied (the *base*) and a newer one. Azure implements it with incremental
//! snapshots and Get Page Ranges with `x-ms-previous-snapshot-url`; the engine only sees
//! this trait.
//!
//! A delta is only meaningful between two copies of the *same* disk: [`CopyInfo`] carries
//! the source disk's id and identity (Azure's `sourceUniqueId`, new when a disk is deleted
//! and created again under the same name), which the engine records with the chain and checks
//! before asking for a delta. When the source cannot diff the two (the base was deleted, the
//! disk was recreated or resized past a limit) it answers [`Delta::BaseUnusable`] with the
//! reason, and the engine copies the newer one in full instead.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::copies::PointInTimeCopies;
use crate::error::Result;
use crate::model::{Disk, Vm};
use crate::source::{BoxFuture, ExportedDisk};

/// What an incremental copy is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    /// The copy's id.
    pub id: String,
    /// The id of the disk it was made from.
    pub source_id: String,
    /// The identity of that disk when the copy was made: equal for two copies of the same
    /// disk, different once the disk was recreated (Azure: `sourceUniqueId`).
    pub source_identity: String,
    /// The disk's size when the copy was made, in bytes.
    pub size_bytes: u64,
    /// Whether the copy is incremental (only incremental copies can be diffed).
    pub incremental: bool,
}

/// The byte ranges that changed from a base copy to a newer one: `written` must be read
/// from the newer copy, `cleared` reads as zeros in it. Both sorted, non-overlapping, and
/// inside the newer copy's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedRanges {
    /// Ranges written since the base.
    pub written: Vec<Range<u64>>,
    /// Ranges cleared (trimmed) since the base.
    pub cleared: Vec<Range<u64>>,
}

impl ChangedRanges {
    /// Bytes to download.
    pub fn written_bytes(&self) -> u64 {
        self.written.iter().map(|r| r.end - r.start).sum()
    }

    /// Bytes to zero.
    pub fn cleared_bytes(&self) -> u64 {
        self.cleared.iter().map(|r| r.end - r.start).sum()
    }
}

/// The answer to "what changed since the base?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// These ranges changed.
    Changed(ChangedRanges),
    /// The source cannot diff against the base (it is gone, of another disk, or the disk
    /// changed in a way the source cannot diff across); the reason is for the report. Copy
    /// the newer copy in full.
    BaseUnusable(String),
}

/// Creates incremental copies of a disk and tells what changed between two of them.
pub trait IncrementalCopies: PointInTimeCopies {
    /// Creates the incremental copy `id` of `disk`, labelled with `labels`, and returns what
    /// it is of once it can be exported. A source that limits how often copies are made waits
    /// rather than fails.
    fn create_incremental<'a>(
        &'a self,
        vm: &'a Vm,
        disk: &'a Disk,
        id: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<CopyInfo>>;

    /// What the copy `id` is of, or `None` when it does not exist (any more).
    fn copy_info<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<CopyInfo>>>;

    /// Exports the copy `newer` for reading and says what changed in it since the copy
    /// `base_id` (an older incremental copy of the same disk, kept until the delta is
    /// applied). Whatever is opened on the base to ask is closed before this returns; the
    /// export of `newer` is closed with the [`ExportedDisk`].
    fn export_delta<'a>(
        &'a self,
        vm: &'a Vm,
        newer: &'a Disk,
        base_id: &'a str,
    ) -> BoxFuture<'a, Result<(ExportedDisk, Delta)>>;
}
