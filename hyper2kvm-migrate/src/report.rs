//! What a run did: one [`VmReport`] per VM (written as `<vm folder>/report.json`, also while
//! the VM is in progress, so it records every resource before it is created) and a
//! [`RunSummary`] for the whole run. The JSON shapes are documented in `docs/config.md`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Role;

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
    pub error: Option<String>,
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
}

/// Everything the run did for one VM: `report.json` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmReport {
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
    pub errors: Vec<String>,
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
    /// Its folder's report.
    pub report: PathBuf,
    /// The first error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole run: `<output.dir>/run-<run id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
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
    /// Cleanups (access grants, snapshots, starts) that failed: they need attention.
    pub cleanup_errors: Vec<String>,
    /// 0 all done, 3 partial, 1 failed.
    pub exit_code: u8,
}

impl RunSummary {
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
                    VmStatus::Failed | VmStatus::Refused | VmStatus::Locked
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

/// Writes `bytes` to `path` through `path.tmp`, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Created new, never through a symlink left under the temporary name.
    let mut f = hyper2kvm_core::fsafe::create_new(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
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
    fn typed_fields_keep_their_json_words() {
        let p = PowerRecord {
            action: PowerAction::PowerOff,
            at: "t".into(),
            ok: true,
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
