//! What a run did: one [`VmReport`] per VM (written as `<vm folder>/report.json`, also while
//! the VM is in progress, so it records every resource before it is created) and a
//! [`RunSummary`] for the whole run. The JSON shapes are documented in `docs/records.md`;
//! every record carries [`TOOL_VERSION`] and [`SCHEMA_VERSION`].
//!
//! Errors are [`ErrorRecord`]s (kind, status, code, resource, a short message and the whole
//! line), and what a run could not undo is a [`CleanupRecord`] with the command that does
//! it by hand, as the source said it.

use std::fmt;
use std::path::{Path, PathBuf};

use hyper2kvm_core::{Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::plan::Role;
use crate::shard::{PlanDeviation, ShardRecord};

/// The version of the tool that wrote a record (the workspace's version).
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the records' shape: 2 added structured errors, cleanup records,
/// `interrupted`, and these two fields. Reports without it are version 1.
pub const SCHEMA_VERSION: u32 = 2;

fn schema_v1() -> u32 {
    1
}

/// One error, as the JSON records write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ErrorRepr")]
pub struct ErrorRecord {
    /// What went wrong, coarsely: core's [`ErrorKind`] as a snake_case word (`conflict`,
    /// `no_space`, …).
    #[serde(with = "kind_word")]
    pub kind: ErrorKind,
    /// The status code the source answered with (an HTTP status), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The source's error code (ARM's `error.code`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The resource (disk, snapshot, VM id) or file the error concerns, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// A short message, for tables.
    pub message: String,
    /// The whole error on one line, causes included.
    pub detail: String,
}

impl ErrorRecord {
    /// The record of `e`.
    pub fn of(e: &Error) -> ErrorRecord {
        let redact = |s: &str| hyper2kvm_core::redact(s).into_owned();
        ErrorRecord {
            kind: e.kind(),
            status: e.status(),
            code: e.code().map(str::to_owned),
            resource: e.resource().or(e.subject()).map(redact),
            message: redact(&e.summary()),
            detail: redact(&e.to_string()),
        }
    }

    /// A record of the engine's own: `message` is also the detail.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorRecord {
        let message = hyper2kvm_core::redact(&message.into()).into_owned();
        ErrorRecord {
            kind,
            status: None,
            code: None,
            resource: None,
            message: message.clone(),
            detail: message,
        }
    }

    /// Puts `context` in front of the message and the detail ("disk-1: …").
    pub fn context(mut self, context: &str) -> ErrorRecord {
        self.message = format!("{context}: {}", self.message);
        self.detail = format!("{context}: {}", self.detail);
        self
    }

    /// One line for a table: kind, status and code, then the short message, at most `max`
    /// characters.
    pub fn one_line(&self, max: usize) -> String {
        let mut head = self.kind.as_str().to_string();
        if let Some(s) = self.status {
            head.push_str(&format!(" {s}"));
        }
        if let Some(c) = &self.code {
            head.push_str(&format!(" {c}"));
        }
        let text: String = format!("{head}: {}", self.message)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if text.chars().count() <= max {
            text
        } else {
            let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
            cut.push('…');
            cut
        }
    }
}

impl fmt::Display for ErrorRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Reports of schema 1 held errors as text; they still load (as kind `remote`), so a report
/// an older version wrote is read for resuming and not set aside.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorRepr {
    Text(String),
    Full {
        #[serde(with = "kind_word")]
        kind: ErrorKind,
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        resource: Option<String>,
        message: String,
        #[serde(default)]
        detail: Option<String>,
    },
}

impl From<ErrorRepr> for ErrorRecord {
    fn from(r: ErrorRepr) -> Self {
        match r {
            ErrorRepr::Text(t) => ErrorRecord::new(ErrorKind::Remote, t),
            ErrorRepr::Full {
                kind,
                status,
                code,
                resource,
                message,
                detail,
            } => ErrorRecord {
                kind,
                status,
                code,
                resource,
                detail: detail.unwrap_or_else(|| message.clone()),
                message,
            },
        }
    }
}

/// core's `ErrorKind` as its snake_case word.
mod kind_word {
    use hyper2kvm_core::ErrorKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &ErrorKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
        let word = String::deserialize(d)?;
        // A kind a newer version added reads as `remote`: the record stays readable.
        Ok(ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == word)
            .unwrap_or(ErrorKind::Remote))
    }
}

/// What a cleanup was to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupAction {
    /// Revoke a read grant (the export of a disk or snapshot).
    RevokeAccess,
    /// Delete a snapshot the run created.
    DeleteSnapshot,
    /// Start a VM the run stopped or deallocated.
    StartVm,
}

impl CleanupAction {
    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupAction::RevokeAccess => "revoke_access",
            CleanupAction::DeleteSnapshot => "delete_snapshot",
            CleanupAction::StartVm => "start_vm",
        }
    }
}

/// Something a run created or changed and could not undo: it needs a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupRecord {
    /// What was to be undone; absent when a background cleanup failed without saying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<CleanupAction>,
    /// The VM it belongs to, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The resource left behind (a disk with an open grant, a snapshot, a VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The command that finishes it by hand, as the source said it (e.g. `az snapshot
    /// delete --ids …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Why it failed.
    pub error: ErrorRecord,
}

impl CleanupRecord {
    /// The record of a failed cleanup `action` of `vm` on `resource`.
    pub fn of(
        action: Option<CleanupAction>,
        vm: Option<&str>,
        resource: Option<&str>,
        e: &Error,
    ) -> CleanupRecord {
        let error = ErrorRecord::of(e);
        CleanupRecord {
            action,
            vm: vm.map(str::to_owned),
            resource: e
                .resource()
                .map(str::to_owned)
                .or_else(|| resource.map(str::to_owned))
                .or_else(|| error.resource.clone()),
            command: e.remedy().map(str::to_owned),
            error,
        }
    }

    /// One line for stderr: what, on what, why, and what to run.
    pub fn line(&self) -> String {
        let mut out = String::new();
        if let Some(vm) = &self.vm {
            out.push_str(&format!("{vm}: "));
        }
        out.push_str(self.action.map_or("cleanup", CleanupAction::as_str));
        if let Some(r) = &self.resource {
            out.push_str(&format!(" {r}"));
        }
        out.push_str(&format!(" failed: {}", self.error.one_line(200)));
        match &self.command {
            Some(c) => out.push_str(&format!("; do it by hand: {c}")),
            None => out.push_str("; check it by hand"),
        }
        out
    }
}

/// A record the run could not write (the output directory became read-only or full).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwrittenRecord {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub error: String,
}

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    /// Still running (a report left in this state means the run was killed).
    Running,
    /// Every selected disk is an image and the domain XML is written.
    Completed,
    /// Some disks are done, some failed.
    Partial,
    /// Nothing was migrated.
    Failed,
    /// Not migrated by policy (`running_vm: refuse`).
    Refused,
    /// Not touched: another run holds its lock (the error names the holder).
    Locked,
    /// The run was interrupted (SIGINT, SIGTERM) while on this VM, or before it started.
    Interrupted,
}

impl VmStatus {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Running => "running",
            VmStatus::Completed => "completed",
            VmStatus::Partial => "partial",
            VmStatus::Failed => "failed",
            VmStatus::Refused => "refused",
            VmStatus::Locked => "locked",
            VmStatus::Interrupted => "interrupted",
        }
    }
}

/// How a disk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskStatus {
    /// Not started yet (or the run stopped before it).
    Pending,
    /// Converted in this run (possibly continuing a partial image of an earlier one).
    Completed,
    /// Its image was already complete from an earlier run; nothing was downloaded.
    AlreadyDone,
    /// Failed; see `error`.
    Failed,
}

/// One disk of a VM report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskReport {
    /// The source disk's name.
    pub name: String,
    /// The source disk's id.
    pub id: String,
    /// `os` or `data`.
    pub role: Role,
    /// The LUN of a data disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u32>,
    /// The image.
    pub output: PathBuf,
    /// How it ended.
    pub status: DiskStatus,
    /// What was read: the disk itself or a snapshot of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_from: Option<String>,
    /// The guest size in bytes.
    pub virtual_size: u64,
    /// Bytes downloaded in this run.
    pub bytes_downloaded: u64,
    /// Bytes not downloaded in this run: never written in Azure, or already in the partial
    /// image of an earlier run.
    pub bytes_skipped: u64,
    /// Of the skipped bytes, those an earlier run had already written.
    pub bytes_resumed: u64,
    /// Downloaded bytes that were zeros and not stored.
    pub bytes_zero: u64,
    /// The image file's size.
    pub image_bytes: u64,
    /// An earlier file under the image's name that no report proved complete, moved aside
    /// (`NAME.suspect-<time>`) before the disk was converted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_aside: Option<PathBuf>,
    /// SHA-256 of the image file, hex (`sha256sum` prints the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Seconds spent on this disk in this run.
    pub seconds: f64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
}

/// What kind of resource a run created in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A point-in-time copy of a disk.
    Snapshot,
}

/// A resource the run created in the source (a snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// `snapshot`.
    pub kind: ResourceKind,
    /// Its id.
    pub id: String,
    /// The disk it was made from.
    pub source: String,
    /// The run that created it.
    pub run_id: String,
    /// When the create was sent (it is recorded before, so a killed run leaves a trace).
    pub requested_at: String,
    /// Whether it was confirmed created.
    pub created: bool,
    /// When it was deleted, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Kept on purpose (`export.keep_snapshots`).
    #[serde(default)]
    pub kept: bool,
}

/// A power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Stop, staying allocated.
    PowerOff,
    /// Stop and release the host.
    Deallocate,
    /// Start.
    Start,
}

impl PowerAction {
    /// `power_off`, `deallocate` or `start`, as in `report.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "power_off",
            PowerAction::Deallocate => "deallocate",
            PowerAction::Start => "start",
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A power operation the run performed on the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerRecord {
    /// `power_off`, `deallocate` or `start`.
    pub action: PowerAction,
    /// When it was sent.
    pub at: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why not, when it did not (`cancelled`: the run was interrupted before the answer,
    /// so it may have happened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
}

/// Everything the run did for one VM: `report.json` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmReport {
    /// The version of hyper2kvm that wrote it.
    #[serde(default)]
    pub tool_version: String,
    /// The version of this shape ([`SCHEMA_VERSION`]).
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
    /// The run that wrote this report.
    pub run_id: String,
    /// The VM's id.
    pub vm_id: String,
    /// Its name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its location.
    pub location: String,
    /// Its size in the source (e.g. `Standard_D2s_v5`).
    pub vm_size: String,
    /// Hyper-V generation: 1 (BIOS) or 2 (UEFI).
    pub generation: u8,
    /// `linux` or `windows`.
    pub os_type: String,
    /// Its power state when the run found it.
    pub power_state_before: String,
    /// How it was exported.
    pub action: String,
    /// How it ended.
    pub status: VmStatus,
    /// When the run started on it.
    pub started_at: String,
    /// When it finished with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Seconds spent.
    pub seconds: f64,
    /// The selected disks.
    pub disks: Vec<DiskReport>,
    /// The libvirt domain XML, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_xml: Option<PathBuf>,
    /// The KubeVirt manifests (`output.target: kubevirt`), once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubevirt_manifest: Option<PathBuf>,
    /// vCPUs of the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Memory of the domain in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Whether the domain boots with UEFI secure boot (Microsoft's keys enrolled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// Whether the domain has an emulated TPM 2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<bool>,
    /// How many NICs the domain has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<u32>,
    /// Resources created in the source, and whether they were deleted.
    pub resources: Vec<ResourceRecord>,
    /// Power operations.
    pub power: Vec<PowerRecord>,
    /// The guest fix-up report of the OS disk, when fix-ups ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<serde_json::Value>,
    /// Things worth knowing that did not stop the VM.
    pub warnings: Vec<String>,
    /// What failed.
    pub errors: Vec<ErrorRecord>,
    /// What the run could not undo (grants, snapshots, starts), with what to do by hand.
    #[serde(default)]
    pub cleanup_errors: Vec<CleanupRecord>,
    /// Warm migration's state (`sync`, `cutover`): the chain of incremental copies of each
    /// disk and what was applied of it. Carried from report to report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmRecord>,
}

/// Warm migration's state of a VM: what `sync` made of it so far, and its `cutover`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WarmRecord {
    /// One entry per disk synced.
    pub disks: Vec<WarmDisk>,
    /// Sync rounds done so far, over all `sync` runs.
    pub rounds: u32,
    /// When the last round finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_at: Option<String>,
    /// The bytes the last round read or cleared, over all disks.
    #[serde(default)]
    pub last_delta_bytes: u64,
    /// Once a cutover started: when the VM was asked to stop (or the cutover began, for a
    /// VM already stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_started_at: Option<String>,
    /// Seconds from the stop request to the KVM-ready outputs (images, domain), once a
    /// cutover finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
}

/// One disk's chain: the copy its working image equals, and the one being applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmDisk {
    /// The source disk's id.
    pub disk_id: String,
    /// Its name.
    pub name: String,
    /// The working image (`<image>.warm`, uncompressed qcow2), renamed at cutover.
    pub image: PathBuf,
    /// The copy the working image equals (the base of the next delta), once one was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<WarmCopy>,
    /// The copy being applied: recorded before it is created, so a killed sync finds it,
    /// applies it again from the base (or copies it again in full) and goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<WarmCopy>,
    /// Copies to delete: older bases, and pending copies given up. Deleted by the next sync
    /// or the cutover if deleting failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
    /// Copies applied so far (1 after the first full copy).
    pub generation: u32,
    /// Full copies made (1, more when the chain could not be diffed).
    pub full_copies: u32,
    /// Bytes read by the last application (the whole disk's data for a full copy).
    #[serde(default)]
    pub last_bytes_written: u64,
    /// Bytes made zeros by the last application.
    #[serde(default)]
    pub last_bytes_cleared: u64,
    /// When the last application finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
}

/// An incremental copy in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmCopy {
    /// The copy's id.
    pub id: String,
    /// The id of the disk it is of (empty until created).
    #[serde(default)]
    pub source_id: String,
    /// That disk's identity (Azure: `sourceUniqueId`; empty until created).
    #[serde(default)]
    pub source_identity: String,
    /// The disk's size then, in bytes (0 until created).
    #[serde(default)]
    pub size_bytes: u64,
    /// When it was requested.
    pub requested_at: String,
    /// Whether its creation was confirmed.
    #[serde(default)]
    pub created: bool,
    /// Whether it is applied in full (no base) rather than as a delta.
    #[serde(default)]
    pub full: bool,
}

impl VmReport {
    /// Reads a report written by an earlier run; `None` if there is none or it cannot be
    /// read (it is only a hint for resuming: images are what count).
    pub fn load(path: &Path) -> Option<VmReport> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Bytes downloaded for this VM in this run.
    pub fn bytes_downloaded(&self) -> u64 {
        self.disks.iter().map(|d| d.bytes_downloaded).sum()
    }

    /// Disks whose image is complete.
    pub fn disks_done(&self) -> usize {
        self.disks
            .iter()
            .filter(|d| matches!(d.status, DiskStatus::Completed | DiskStatus::AlreadyDone))
            .count()
    }
}

/// One VM's line in the run summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    /// Its name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// How it ended.
    pub status: VmStatus,
    /// Disks done (completed now or earlier).
    pub disks_done: usize,
    /// Disks selected.
    pub disks_total: usize,
    /// Bytes downloaded in this run.
    pub bytes_downloaded: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Its folder's report (absolute).
    pub report: PathBuf,
    /// The first error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every VM completed, every cleanup done, every record written.
    Completed,
    /// Some VMs completed, or a cleanup or a record failed.
    Partial,
    /// No VM completed.
    Failed,
    /// Stopped by a signal; what it started was undone as far as `cleanup_errors` says.
    Interrupted,
}

/// The whole run: `<output.dir>/run-<run id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The version of hyper2kvm that wrote it.
    pub tool_version: String,
    /// The version of this shape ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The run id.
    pub run_id: String,
    /// How it ended.
    pub status: RunStatus,
    /// What interrupted it (`SIGTERM`, `SIGINT`), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted_by: Option<String>,
    /// The output directory (absolute).
    pub output_dir: PathBuf,
    /// This file (absolute).
    pub summary: PathBuf,
    /// When it started.
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Seconds.
    pub seconds: f64,
    /// Per VM.
    pub vms: Vec<VmSummary>,
    /// VMs completed.
    pub completed: usize,
    /// VMs partially migrated, failed or refused.
    pub not_completed: usize,
    /// Bytes downloaded in this run.
    pub bytes_downloaded: u64,
    /// Cleanups (access grants, snapshots, starts) that failed, of every VM and in the
    /// background: they need attention, and each says what to do.
    pub cleanup_errors: Vec<CleanupRecord>,
    /// Records that could not be written (the output directory became read-only or full).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records_not_written: Vec<UnwrittenRecord>,
    /// The shard this run migrated, when it migrated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRecord>,
    /// Planned VMs of the shard that were gone or changed when the run looked again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan_deviations: Vec<PlanDeviation>,
    /// 0 all done, 3 partial, 1 failed, 130 interrupted.
    pub exit_code: u8,
}

impl RunSummary {
    /// Sets `status` and `exit_code` from the rest: 130 and `interrupted` when a signal
    /// stopped the run; else [`exit_code_for`](Self::exit_code_for) the VMs, where a
    /// cleanup error or a record not written turns "all done" (0) into partial (3).
    pub fn settle(&mut self) {
        if self.interrupted_by.is_some() {
            self.status = RunStatus::Interrupted;
            self.exit_code = 130;
            return;
        }
        let mut code = RunSummary::exit_code_for(&self.vms);
        if code == 0
            && (!self.cleanup_errors.is_empty()
                || !self.records_not_written.is_empty()
                || self.plan_deviations.iter().any(|d| !d.migrated))
        {
            code = 3;
        }
        self.exit_code = code;
        self.status = match code {
            0 => RunStatus::Completed,
            1 => RunStatus::Failed,
            _ => RunStatus::Partial,
        };
    }

    /// 0 when every VM completed (or none was selected), 1 when none did, 3 otherwise.
    pub fn exit_code_for(vms: &[VmSummary]) -> u8 {
        let done = vms
            .iter()
            .filter(|v| v.status == VmStatus::Completed)
            .count();
        if done == vms.len() {
            0
        } else if done == 0
            && vms.iter().all(|v| {
                matches!(
                    v.status,
                    VmStatus::Failed | VmStatus::Refused | VmStatus::Locked | VmStatus::Interrupted
                )
            })
        {
            1
        } else {
            3
        }
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename, so the file
/// is always whole.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Writes `bytes` to `path` through `path.tmp`, synced, then renamed. On any failure the
/// temporary file is removed: a full or failing disk leaves no `*.tmp` behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Created new, never through a symlink left under the temporary name.
    let mut f = hyper2kvm_core::fsafe::create_new(&tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| {
            drop(f);
            std::fs::rename(&tmp, path)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(status: VmStatus) -> VmSummary {
        VmSummary {
            name: "vm".into(),
            resource_group: "rg".into(),
            status,
            disks_done: 0,
            disks_total: 1,
            bytes_downloaded: 0,
            seconds: 0.0,
            report: "r".into(),
            error: None,
        }
    }

    #[test]
    fn error_records_keep_kind_status_code_and_resource() {
        let e = Error::new(
            ErrorKind::Conflict,
            "DELETE https://h/s?sig=SECRET: HTTP 409",
        )
        .with_status(409)
        .with_code("OperationNotAllowed")
        .with_resource("/subscriptions/s/snapshots/n")
        .with_summary("HTTP 409: busy")
        .with_remedy("az snapshot delete --ids /subscriptions/s/snapshots/n");
        let r = ErrorRecord::of(&e);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "conflict");
        assert_eq!(json["status"], 409);
        assert_eq!(json["code"], "OperationNotAllowed");
        assert_eq!(json["resource"], "/subscriptions/s/snapshots/n");
        assert_eq!(json["message"], "HTTP 409: busy");
        assert!(!json["detail"].as_str().unwrap().contains("SECRET"));
        assert_eq!(serde_json::from_value::<ErrorRecord>(json).unwrap(), r);
        assert_eq!(
            r.one_line(80),
            "conflict 409 OperationNotAllowed: HTTP 409: busy"
        );
        assert_eq!(r.one_line(12).chars().count(), 12);
        let c = CleanupRecord::of(Some(CleanupAction::DeleteSnapshot), Some("vm1"), None, &e);
        assert_eq!(c.resource.as_deref(), Some("/subscriptions/s/snapshots/n"));
        assert!(
            c.line().contains("do it by hand: az snapshot delete --ids"),
            "{}",
            c.line()
        );
        // Version 1 reports held text errors: still readable.
        let old: ErrorRecord = serde_json::from_value(serde_json::json!("disk-1: failed")).unwrap();
        assert_eq!(old.message, "disk-1: failed");
    }

    #[test]
    fn typed_fields_keep_their_json_words() {
        let p = PowerRecord {
            action: PowerAction::PowerOff,
            at: "t".into(),
            ok: true,
            error: None,
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["action"], "power_off");
        let back: PowerRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            serde_json::to_value(ResourceKind::Snapshot).unwrap(),
            "snapshot"
        );
        assert_eq!(serde_json::to_value(Role::Data).unwrap(), "data");
        assert_eq!(
            serde_json::to_value(PowerAction::Deallocate).unwrap(),
            "deallocate"
        );
    }

    #[test]
    fn exit_codes() {
        use VmStatus::*;
        assert_eq!(RunSummary::exit_code_for(&[]), 0);
        assert_eq!(RunSummary::exit_code_for(&[line(Completed)]), 0);
        assert_eq!(
            RunSummary::exit_code_for(&[line(Completed), line(Failed)]),
            3
        );
        assert_eq!(RunSummary::exit_code_for(&[line(Partial)]), 3);
        assert_eq!(RunSummary::exit_code_for(&[line(Failed), line(Refused)]), 1);
        assert_eq!(RunSummary::exit_code_for(&[line(Locked)]), 1);
        assert_eq!(
            RunSummary::exit_code_for(&[line(Completed), line(Locked)]),
            3
        );
    }
}
