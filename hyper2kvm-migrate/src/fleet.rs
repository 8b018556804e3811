//! The fleet's state, read back from an output directory: `hyper2kvm report DIR`.
//!
//! An output directory shared by many workers (shards of a plan, retried pods, runs on one
//! machine) holds everything needed to say where the fleet stands: each VM's `report.json`
//! (its last run's outcome), each VM folder's lock (`.hyper2kvm.lock`: a worker is on it now,
//! as long as its heartbeat is fresh), and each finished run's `run-<id>.json` (its shard,
//! bytes and time). [`FleetReport::scan`] reads them all, and the plan if given (VMs not
//! started yet, and the shards' planned shares).
//!
//! A VM's state ([`VmState`]):
//! * `in_progress`: its folder's lock is held (fresh heartbeat; on this host, a live pid);
//! * `completed`: its report says so;
//! * `failed`: its report says failed, partial or refused (with the first error);
//! * `interrupted`: its report says interrupted, or running with no one holding the lock (a
//!   worker killed with `kill -9`): the next run on it resumes;
//! * `changed`: planned, never started, and a shard run found it gone or changed since the
//!   plan (not migrated);
//! * `not_started`: planned, and no folder yet.
//!
//! Left to clean up: snapshots that reports record and that were not deleted (nor kept),
//! and the cleanups that failed (`cleanup_errors`: grants not revoked, snapshots not deleted,
//! VMs not started again), of VMs no worker is on now. A run killed with `kill -9` leaves no
//! `run-<id>.json`: its bytes count in no shard's total, but its VMs' reports say where they
//! stand.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hyper2kvm_core::lock::LockInfo;
use serde::Serialize;

use crate::report::{
    CleanupRecord, ErrorRecord, ResourceKind, RunSummary, VmReport, VmStatus, SCHEMA_VERSION,
    TOOL_VERSION,
};
use crate::shard::FrozenPlan;
use crate::time::rfc3339;

/// Where a VM stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Migrated.
    Completed,
    /// Copied while running by `sync`, its cutover still to come.
    Synced,
    /// Failed, partly migrated or refused.
    Failed,
    /// Stopped before the end; the next run resumes it.
    Interrupted,
    /// A worker is on it now.
    InProgress,
    /// Planned, but gone or changed since the plan: not migrated.
    Changed,
    /// Planned, not started.
    NotStarted,
}

impl VmState {
    /// The word in the JSON and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Completed => "completed",
            VmState::Synced => "synced",
            VmState::Failed => "failed",
            VmState::Interrupted => "interrupted",
            VmState::InProgress => "in_progress",
            VmState::Changed => "changed",
            VmState::NotStarted => "not_started",
        }
    }
}

/// One VM of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct FleetVm {
    /// Its name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its id.
    pub vm_id: String,
    /// Where it stands.
    pub state: VmState,
    /// Its shard (from the plan, or from the run that wrote its report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// Its report's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<VmStatus>,
    /// The run that wrote its report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Disks done.
    pub disks_done: usize,
    /// Disks selected.
    pub disks_total: usize,
    /// Bytes of its finished images.
    pub image_bytes: u64,
    /// Why it failed, was interrupted or changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// Who holds its lock, when in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Its report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
}

/// One shard's runs (or, as shard `null`, the runs that migrated no shard).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetShard {
    /// The shard, absent for runs without one.
    pub shard: Option<u32>,
    /// Finished runs (those that wrote `run-<id>.json`).
    pub runs: usize,
    /// VMs of the fleet in this shard, completed.
    pub completed: usize,
    /// VMs of the fleet in this shard, in all.
    pub vms: usize,
    /// Bytes the plan gives it (provisioned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_bytes: Option<u64>,
    /// Bytes its runs downloaded.
    pub bytes_downloaded: u64,
    /// Seconds its runs took, summed.
    pub seconds: f64,
    /// `bytes_downloaded / seconds`, 0 without runs.
    pub bytes_per_second: f64,
}

/// Something left in the source to clean up.
#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    /// The VM concerned.
    pub vm: String,
    /// `snapshot` (recorded, not deleted), or the failed cleanup's action
    /// (`revoke_access`, `delete_snapshot`, `start_vm`, `cleanup` when unnamed).
    pub kind: String,
    /// The resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// For a snapshot: whether its creation was confirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// The command that finishes it by hand, when the source gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Why the cleanup failed, for a failed cleanup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts of the fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetTotals {
    /// VMs known (planned or with a folder).
    pub vms: usize,
    /// Completed.
    pub completed: usize,
    /// Synced, awaiting their cutover.
    pub synced: usize,
    /// Failed.
    pub failed: usize,
    /// Interrupted.
    pub interrupted: usize,
    /// In progress.
    pub in_progress: usize,
    /// Changed since the plan.
    pub changed: usize,
    /// Not started.
    pub not_started: usize,
    /// Disks done, of all VMs.
    pub disks_done: usize,
    /// Disks selected, of all VMs.
    pub disks_total: usize,
    /// Bytes of finished images.
    pub image_bytes: u64,
    /// Bytes the finished runs downloaded.
    pub bytes_downloaded: u64,
    /// Grants left open (failed revokes).
    pub grants_left: usize,
    /// Snapshots left (recorded and not deleted, or failed deletes).
    pub snapshots_left: usize,
}

/// `hyper2kvm report DIR --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// The hyper2kvm that made it.
    pub tool_version: String,
    /// The records' schema version.
    pub schema_version: u32,
    /// When.
    pub generated_at: String,
    /// The directory read.
    pub output_dir: PathBuf,
    /// The plan given, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PathBuf>,
    /// Its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The counts.
    pub totals: FleetTotals,
    /// Per shard.
    pub shards: Vec<FleetShard>,
    /// Per VM: by resource group and name.
    pub vms: Vec<FleetVm>,
    /// What is left to clean up.
    pub cleanup: Vec<Leftover>,
    /// Records that could not be read (`path: why`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// A VM folder found under the directory.
struct Folder {
    report: Option<VmReport>,
    report_path: PathBuf,
    lock: Option<LockInfo>,
}

impl FleetReport {
    /// Reads `dir` (and `plan`, with its file name for the record).
    pub fn scan(dir: &Path, plan: Option<(&Path, &FrozenPlan)>) -> std::io::Result<FleetReport> {
        let mut unreadable = Vec::new();
        let mut runs: Vec<RunSummary> = Vec::new();
        let mut folders: Vec<Folder> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_file() && name.starts_with("run-") && name.ends_with(".json") {
                match read_json::<RunSummary>(&path) {
                    Ok(r) => runs.push(r),
                    Err(e) => unreadable.push(format!("{}: {e}", path.display())),
                }
            } else if ft.is_dir() {
                // `<dir>/<vm>/` or, with the resource-group layout, `<dir>/<rg>/<vm>/`.
                match read_folder(&path, &mut unreadable) {
                    Some(f) => folders.push(f),
                    None => {
                        for sub in std::fs::read_dir(&path)?.flatten() {
                            if sub.file_type().is_ok_and(|t| t.is_dir()) {
                                folders.extend(read_folder(&sub.path(), &mut unreadable));
                            }
                        }
                    }
                }
            }
        }
        runs.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        let run_shard: HashMap<&str, Option<u32>> = runs
            .iter()
            .map(|r| (r.run_id.as_str(), r.shard.as_ref().map(|s| s.index)))
            .collect();
        let planned: HashMap<String, &crate::shard::FrozenVm> = plan
            .map(|(_, p)| {
                p.vms
                    .iter()
                    .map(|v| (v.id.to_ascii_lowercase(), v))
                    .collect()
            })
            .unwrap_or_default();
        let mut vms: Vec<FleetVm> = Vec::new();
        let mut cleanup = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for f in folders {
            let vm = fleet_vm(&f, &planned, &run_shard);
            if vm.state != VmState::InProgress {
                if let Some(r) = &f.report {
                    leftovers(r, &mut cleanup);
                }
            }
            if !vm.vm_id.is_empty() {
                seen.insert(vm.vm_id.to_ascii_lowercase(), vms.len());
            }
            vms.push(vm);
        }
        // Planned VMs without a folder: not started, or found changed by a shard run.
        let changed: HashMap<String, &crate::shard::PlanDeviation> = runs
            .iter()
            .flat_map(|r| &r.plan_deviations)
            .filter(|d| !d.migrated)
            .map(|d| (d.vm_id.to_ascii_lowercase(), d))
            .collect();
        if let Some((_, p)) = plan {
            for v in &p.vms {
                let key = v.id.to_ascii_lowercase();
                if seen.contains_key(&key) {
                    continue;
                }
                let deviation = changed.get(&key);
                vms.push(FleetVm {
                    name: v.name.clone(),
                    resource_group: v.resource_group.clone(),
                    vm_id: v.id.clone(),
                    state: if deviation.is_some() {
                        VmState::Changed
                    } else {
                        VmState::NotStarted
                    },
                    shard: Some(v.shard),
                    status: None,
                    run_id: None,
                    disks_done: 0,
                    disks_total: v.disks.len(),
                    image_bytes: 0,
                    error: deviation.map(|d| {
                        ErrorRecord::new(hyper2kvm_core::ErrorKind::NotFound, d.detail.clone())
                    }),
                    lock: None,
                    report: None,
                });
            }
        }
        vms.sort_by(|a, b| {
            (a.resource_group.to_lowercase(), a.name.to_lowercase())
                .cmp(&(b.resource_group.to_lowercase(), b.name.to_lowercase()))
        });
        let shards = shard_lines(&vms, &runs, plan.map(|(_, p)| p));
        let count = |s: VmState| vms.iter().filter(|v| v.state == s).count();
        let totals = FleetTotals {
            vms: vms.len(),
            completed: count(VmState::Completed),
            synced: count(VmState::Synced),
            failed: count(VmState::Failed),
            interrupted: count(VmState::Interrupted),
            in_progress: count(VmState::InProgress),
            changed: count(VmState::Changed),
            not_started: count(VmState::NotStarted),
            disks_done: vms.iter().map(|v| v.disks_done).sum(),
            disks_total: vms.iter().map(|v| v.disks_total).sum(),
            image_bytes: vms.iter().map(|v| v.image_bytes).sum(),
            bytes_downloaded: runs.iter().map(|r| r.bytes_downloaded).sum(),
            grants_left: cleanup
                .iter()
                .filter(|l: &&Leftover| l.kind == "revoke_access")
                .count(),
            snapshots_left: cleanup
                .iter()
                .filter(|l| l.kind == "snapshot" || l.kind == "delete_snapshot")
                .count(),
        };
        Ok(FleetReport {
            tool_version: TOOL_VERSION.to_string(),
            schema_version: SCHEMA_VERSION,
            generated_at: rfc3339(SystemTime::now()),
            output_dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()),
            plan: plan.map(|(p, _)| std::path::absolute(p).unwrap_or_else(|_| p.to_owned())),
            plan_id: plan.map(|(_, p)| p.plan_id.clone()),
            totals,
            shards,
            vms,
            cleanup,
            unreadable,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// A VM folder (holding a report or a lock), or `None` when `path` is not one.
fn read_folder(path: &Path, unreadable: &mut Vec<String>) -> Option<Folder> {
    let report_path = path.join("report.json");
    let lock_path = path.join(".hyper2kvm.lock");
    let report = match std::fs::read(&report_path) {
        Ok(bytes) => match serde_json::from_slice::<VmReport>(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                unreadable.push(format!("{}: {e}", report_path.display()));
                None
            }
        },
        Err(_) => None,
    };
    // A lock that cannot be parsed (being rewritten, or garbage) counts as held only while
    // its file is fresh; LockInfo::is_stale says the same for one that parses.
    let lock = read_json::<LockInfo>(&lock_path)
        .ok()
        .filter(|l| !l.is_stale());
    if report.is_none() && lock.is_none() && !report_path.exists() && !lock_path.exists() {
        return None;
    }
    Some(Folder {
        report,
        report_path,
        lock,
    })
}

fn fleet_vm(
    f: &Folder,
    planned: &HashMap<String, &crate::shard::FrozenVm>,
    run_shard: &HashMap<&str, Option<u32>>,
) -> FleetVm {
    let r = f.report.as_ref();
    let vm_id = r.map(|r| r.vm_id.clone()).unwrap_or_default();
    let name = r.map(|r| r.name.clone()).unwrap_or_else(|| {
        f.report_path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let state = match (&f.lock, r.map(|r| r.status)) {
        (Some(_), _) => VmState::InProgress,
        // `sync` completes a VM's report too; only a cutover gives it a downtime.
        (None, Some(VmStatus::Completed))
            if r.and_then(|r| r.warm.as_ref())
                .is_some_and(|w| w.downtime_seconds.is_none()) =>
        {
            VmState::Synced
        }
        (None, Some(VmStatus::Completed)) => VmState::Completed,
        (None, Some(VmStatus::Failed | VmStatus::Partial | VmStatus::Refused)) => VmState::Failed,
        // Running without a lock: its worker is gone.
        (None, _) => VmState::Interrupted,
    };
    let shard = planned
        .get(&vm_id.to_ascii_lowercase())
        .map(|p| p.shard)
        .or_else(|| r.and_then(|r| run_shard.get(r.run_id.as_str()).copied().flatten()));
    let error = match state {
        VmState::Completed | VmState::Synced | VmState::InProgress => None,
        _ => r.and_then(|r| {
            r.errors
                .first()
                .cloned()
                .or_else(|| r.cleanup_errors.first().map(|c| c.error.clone()))
        }),
    }
    .or_else(|| {
        (state == VmState::Interrupted && r.is_some_and(|r| r.status == VmStatus::Running)).then(
            || {
                ErrorRecord::new(
                    hyper2kvm_core::ErrorKind::Cancelled,
                    "its worker stopped without finishing (killed?); the next run resumes it",
                )
            },
        )
    });
    FleetVm {
        name,
        resource_group: r.map(|r| r.resource_group.clone()).unwrap_or_default(),
        vm_id,
        state,
        shard,
        status: r.map(|r| r.status),
        run_id: r.map(|r| r.run_id.clone()),
        disks_done: r.map_or(0, VmReport::disks_done),
        disks_total: r.map_or(0, |r| r.disks.len()),
        image_bytes: r.map_or(0, |r| {
            r.disks
                .iter()
                .filter(|d| {
                    matches!(
                        d.status,
                        crate::DiskStatus::Completed | crate::DiskStatus::AlreadyDone
                    )
                })
                .map(|d| d.image_bytes)
                .sum()
        }),
        error,
        lock: f.lock.as_ref().map(|l| l.to_string()),
        report: r.map(|_| f.report_path.clone()),
    }
}

/// Snapshots recorded and not deleted (nor kept), and failed cleanups, of one report.
fn leftovers(r: &VmReport, out: &mut Vec<Leftover>) {
    let mut snapshots: Vec<&str> = Vec::new();
    for res in &r.resources {
        if res.kind == ResourceKind::Snapshot && res.deleted_at.is_none() && !res.kept {
            snapshots.push(&res.id);
            out.push(Leftover {
                vm: r.name.clone(),
                kind: "snapshot".into(),
                resource: Some(res.id.clone()),
                created: Some(res.created),
                command: None,
                error: None,
            });
        }
    }
    for c in &r.cleanup_errors {
        let kind = c.action.map_or("cleanup", |a| a.as_str()).to_string();
        // A failed delete of a snapshot listed above is one leftover, not two.
        if kind == "delete_snapshot"
            && c.resource
                .as_deref()
                .is_some_and(|id| snapshots.iter().any(|s| s.eq_ignore_ascii_case(id)))
        {
            continue;
        }
        out.push(cleanup_leftover(&r.name, c, kind));
    }
}

fn cleanup_leftover(vm: &str, c: &CleanupRecord, kind: String) -> Leftover {
    Leftover {
        vm: vm.to_string(),
        kind,
        resource: c.resource.clone(),
        created: None,
        command: c.command.clone(),
        error: Some(c.error.message.clone()),
    }
}

/// One line per shard: its VMs from the fleet, its runs' bytes and time.
fn shard_lines(vms: &[FleetVm], runs: &[RunSummary], plan: Option<&FrozenPlan>) -> Vec<FleetShard> {
    let mut lines: BTreeMap<Option<u32>, FleetShard> = BTreeMap::new();
    if let Some(p) = plan {
        for t in &p.shard_totals {
            lines.insert(
                Some(t.shard),
                FleetShard {
                    shard: Some(t.shard),
                    planned_bytes: Some(t.bytes),
                    ..FleetShard::default()
                },
            );
        }
    }
    for r in runs {
        let key = r.shard.as_ref().map(|s| s.index);
        let line = lines.entry(key).or_insert_with(|| FleetShard {
            shard: key,
            ..FleetShard::default()
        });
        line.runs += 1;
        line.bytes_downloaded += r.bytes_downloaded;
        line.seconds += r.seconds;
    }
    for v in vms {
        let line = lines.entry(v.shard).or_insert_with(|| FleetShard {
            shard: v.shard,
            ..FleetShard::default()
        });
        line.vms += 1;
        line.completed += usize::from(v.state == VmState::Completed);
    }
    lines
        .into_values()
        .map(|mut l| {
            if l.seconds > 0.0 {
                l.bytes_per_second = l.bytes_downloaded as f64 / l.seconds;
            }
            l
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ResourceRecord, VmReport};

    fn report(name: &str, status: VmStatus) -> VmReport {
        serde_json::from_value(serde_json::json!({
            "run_id": "h2k-1", "vm_id": format!("/vms/{name}"), "name": name,
            "resource_group": "rg", "location": "l", "vm_size": "s", "generation": 2,
            "os_type": "linux", "power_state_before": "running", "action": "snapshot",
            "status": status, "started_at": "t", "seconds": 1.0, "disks": [],
            "resources": [], "power": [], "warnings": [], "errors": []
        }))
        .unwrap()
    }

    #[test]
    fn states_come_from_reports_and_live_locks() {
        let dir = std::env::temp_dir().join(format!("h2k-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |name: &str, r: &VmReport| {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            crate::report::write_json_atomic(&dir.join(name).join("report.json"), r).unwrap();
        };
        write("done", &report("done", VmStatus::Completed));
        // Killed: still `running`, with a snapshot recorded and not deleted.
        let mut killed = report("killed", VmStatus::Running);
        killed.resources.push(ResourceRecord {
            kind: ResourceKind::Snapshot,
            id: "/snapshots/k".into(),
            source: "/disks/k".into(),
            run_id: "h2k-1".into(),
            requested_at: "t".into(),
            created: true,
            deleted_at: None,
            kept: false,
        });
        write("killed", &killed);
        // Held by a live worker (this process): in progress, its snapshot not a leftover.
        let mut busy = killed.clone();
        busy.name = "busy".into();
        busy.vm_id = "/vms/busy".into();
        write("busy", &busy);
        let lock =
            hyper2kvm_core::LockFile::acquire(&dir.join("busy/.hyper2kvm.lock"), "h2k-2", "test")
                .unwrap();
        write("bad", &report("bad", VmStatus::Partial));
        std::fs::create_dir_all(dir.join(".locks")).unwrap();
        let fleet = FleetReport::scan(&dir, None).unwrap();
        let states: Vec<(&str, VmState)> = fleet
            .vms
            .iter()
            .map(|v| (v.name.as_str(), v.state))
            .collect();
        assert_eq!(
            states,
            [
                ("bad", VmState::Failed),
                ("busy", VmState::InProgress),
                ("done", VmState::Completed),
                ("killed", VmState::Interrupted)
            ]
        );
        assert!(fleet.vms[1].lock.as_deref().unwrap().contains("run h2k-2"));
        assert_eq!(fleet.cleanup.len(), 1);
        assert_eq!(fleet.cleanup[0].vm, "killed");
        assert_eq!(fleet.totals.snapshots_left, 1);
        drop(lock);
        // Released: the busy VM's report says running, nobody holds it.
        let fleet = FleetReport::scan(&dir, None).unwrap();
        assert_eq!(fleet.vms[1].state, VmState::Interrupted);
        assert_eq!(fleet.totals.snapshots_left, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
