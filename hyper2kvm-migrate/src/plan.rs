//! Planning a migration run: which VMs, how each is exported, which disks, where every
//! output goes. A plan is computed from discovered VMs alone (no request changes anything),
//! so `--dry-run` prints exactly what a run would do.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hyper2kvm_core::{Disk, DiskRole, OutputFormat, PowerState, Vm};
use serde::{Deserialize, Serialize};

use crate::time::new_run_id;

/// What to do with a VM that is not deallocated (a source such as Azure refuses to export its
/// disks directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunningVmPolicy {
    /// Snapshot every disk at once and export the snapshots; the VM keeps running.
    Snapshot,
    /// Deallocate the VM (and wait), then export its disks directly.
    Deallocate,
    /// Stop the VM (and wait), snapshot its disks, export the snapshots.
    Stop,
    /// Leave the VM alone and report it as not migrated.
    Refuse,
}

/// Which disks of each VM to migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskChoice {
    /// The OS disk and every data disk.
    All,
    /// The OS disk only.
    Os,
    /// Data disks only.
    Data,
}

/// How VM folders are laid out under the output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `<dir>/<vm>/`: VM names must be unique across the run.
    Vm,
    /// `<dir>/<resource group>/<vm>/`.
    ResourceGroup,
}

/// What a plan is made from besides the VMs. Start from [`PlanOptions::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlanOptions {
    /// Identifies the run; snapshots are named and tagged with it (a new id).
    pub run_id: String,
    /// Running or stopped VMs: snapshot (default), deallocate, stop or refuse.
    pub running_vm: RunningVmPolicy,
    /// Which disks (all).
    pub disks: DiskChoice,
    /// Folder layout (`vm`).
    pub layout: Layout,
    /// The output directory (`out`).
    pub dir: PathBuf,
    /// Image format (qcow2).
    pub format: OutputFormat,
    /// Start VMs again once their snapshots are taken (stop) or their disks exported
    /// (deallocate) (no).
    pub restart: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            run_id: new_run_id(),
            running_vm: RunningVmPolicy::Snapshot,
            disks: DiskChoice::All,
            layout: Layout::Vm,
            dir: PathBuf::from("out"),
            format: OutputFormat::Qcow2,
            restart: false,
        }
    }
}

/// A disk's role, as plans and reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The OS disk.
    Os,
    /// A data disk.
    Data,
}

impl Role {
    /// `os` or `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Os => "os",
            Role::Data => "data",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one VM's disks are exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VmAction {
    /// Deallocated already: grant access to the disks themselves.
    ExportDisks,
    /// Snapshot all disks at once, export the snapshots, delete them.
    Snapshot,
    /// Deallocate, export the disks, then start again if `restart`.
    DeallocateThenExport {
        /// Start the VM after the export.
        restart: bool,
    },
    /// Stop, snapshot all disks, start again if `restart`, export the snapshots.
    StopThenSnapshot {
        /// Start the VM once the snapshots exist.
        restart: bool,
    },
    /// Not migrated.
    Refused {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for VmAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmAction::ExportDisks => f.write_str("export disks"),
            VmAction::Snapshot => f.write_str("snapshot, export snapshots"),
            VmAction::DeallocateThenExport { restart: false } => {
                f.write_str("deallocate, export disks")
            }
            VmAction::DeallocateThenExport { restart: true } => {
                f.write_str("deallocate, export disks, start")
            }
            VmAction::StopThenSnapshot { restart: false } => f.write_str("stop, snapshot, export"),
            VmAction::StopThenSnapshot { restart: true } => {
                f.write_str("stop, snapshot, start, export")
            }
            VmAction::Refused { reason } => write!(f, "refused: {reason}"),
        }
    }
}

/// One disk to migrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskPlan {
    /// The disk's id.
    pub id: String,
    /// The disk's name.
    pub name: String,
    /// `os` or `data`.
    pub role: Role,
    /// The LUN of a data disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lun: Option<u32>,
    /// Guest size in bytes.
    pub size_bytes: u64,
    /// The image to write.
    pub output: PathBuf,
    /// The snapshot to create and export, if the VM is exported through snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// One VM to migrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmPlan {
    /// The VM's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its subscription.
    pub subscription: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its power state now.
    pub power_state: String,
    /// How it is exported.
    pub action: VmAction,
    /// Its folder.
    pub dir: PathBuf,
    /// The libvirt domain XML to write.
    pub domain_xml: PathBuf,
    /// The per-VM report to write.
    pub report: PathBuf,
    /// Disks, the OS disk first, then data disks by LUN.
    pub disks: Vec<DiskPlan>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The run id.
    pub run_id: String,
    /// VMs in discovery order.
    pub vms: Vec<VmPlan>,
}

impl Plan {
    /// Bytes of all disks to migrate (their guest sizes).
    pub fn total_bytes(&self) -> u64 {
        self.vms
            .iter()
            .flat_map(|v| &v.disks)
            .map(|d| d.size_bytes)
            .sum()
    }

    /// Snapshots the run will create.
    pub fn snapshot_count(&self) -> usize {
        self.vms
            .iter()
            .flat_map(|v| &v.disks)
            .filter(|d| d.snapshot.is_some())
            .count()
    }
}

/// A plan that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Plans the migration of `vms`.
///
/// Two VMs with the same name in different resource groups or subscriptions would share a
/// folder with the `vm` layout: that is an error naming both, unless the layout is
/// `resource-group`.
pub fn plan(vms: &[Vm], opts: &PlanOptions) -> Result<Plan, PlanError> {
    let mut folders: BTreeMap<PathBuf, &Vm> = BTreeMap::new();
    let mut out = Vec::with_capacity(vms.len());
    for vm in vms {
        let dir = match opts.layout {
            Layout::Vm => opts.dir.join(safe_name(&vm.name)),
            Layout::ResourceGroup => opts
                .dir
                .join(safe_name(&vm.resource_group))
                .join(safe_name(&vm.name)),
        };
        let key = PathBuf::from(dir.to_string_lossy().to_lowercase());
        if let Some(other) = folders.insert(key, vm) {
            return Err(PlanError(format!(
                "two selected VMs would share the folder {}: {} and {}; select one, or set output.layout: resource-group",
                dir.display(),
                other.id,
                vm.id
            )));
        }
        out.push(plan_vm(vm, dir, opts));
    }
    Ok(Plan {
        run_id: opts.run_id.clone(),
        vms: out,
    })
}

fn plan_vm(vm: &Vm, dir: PathBuf, opts: &PlanOptions) -> VmPlan {
    // "Start again" restores what the run changed: a VM someone had stopped stays stopped.
    let restart =
        opts.restart && matches!(vm.power_state, PowerState::Running | PowerState::Starting);
    let action = match (&vm.power_state, opts.running_vm) {
        // Refused before anything is exported, stopped or snapshotted: without the key the
        // image can be neither read nor fixed, so the copy would be useless.
        _ if vm.security.guest_encryption.is_some() => VmAction::Refused {
            reason: format!(
                "its disks are encrypted inside the guest: {}",
                vm.security.guest_encryption.as_deref().unwrap_or_default()
            ),
        },
        (PowerState::Deallocated, _) => VmAction::ExportDisks,
        (_, RunningVmPolicy::Snapshot) => VmAction::Snapshot,
        (_, RunningVmPolicy::Deallocate) => VmAction::DeallocateThenExport { restart },
        (_, RunningVmPolicy::Stop) => VmAction::StopThenSnapshot { restart },
        (state, RunningVmPolicy::Refuse) => VmAction::Refused {
            reason: format!(
                "the VM is {state}, not deallocated, and the running-VM policy (running_vm) is refuse"
            ),
        },
    };
    let snapshots = matches!(
        action,
        VmAction::Snapshot | VmAction::StopThenSnapshot { .. }
    );
    let ext = match opts.format {
        OutputFormat::Qcow2 => "qcow2",
        OutputFormat::Raw => "raw",
    };
    let vm_name = safe_name(&vm.name);
    let disks = vm
        .disks
        .iter()
        .filter(|d| match (opts.disks, d.role) {
            (DiskChoice::All, _) => true,
            (DiskChoice::Os, role) => role == DiskRole::Os,
            (DiskChoice::Data, role) => role != DiskRole::Os,
        })
        .map(|d| disk_plan(d, &dir, &vm_name, ext, snapshots.then_some(&opts.run_id)))
        .collect();
    VmPlan {
        id: vm.id.clone(),
        name: vm.name.clone(),
        subscription: vm.subscription.clone(),
        resource_group: vm.resource_group.clone(),
        power_state: vm.power_state.to_string(),
        action,
        domain_xml: dir.join(format!("{vm_name}.xml")),
        report: dir.join("report.json"),
        dir,
        disks,
    }
}

fn disk_plan(disk: &Disk, dir: &Path, vm: &str, ext: &str, run_id: Option<&String>) -> DiskPlan {
    let (role, lun, file) = match disk.role {
        DiskRole::Os => (Role::Os, None, format!("{vm}-os.{ext}")),
        DiskRole::Data { lun } => (Role::Data, Some(lun), format!("{vm}-data-lun{lun}.{ext}")),
    };
    DiskPlan {
        id: disk.id.clone(),
        name: disk.name.clone(),
        role,
        lun,
        size_bytes: disk.size_bytes,
        output: dir.join(file),
        snapshot: run_id.map(|run| snapshot_name(&disk.name, run)),
    }
}

/// `<disk>-<run id>`, within 80 characters (Azure's limit for snapshot names, the strictest
/// of the sources). A disk name too long
/// for that is cut and followed by a hash of the whole name, so two long names that share
/// their beginning (`<long vm>_DataDisk_0`, `…_1`) still give two snapshots.
pub fn snapshot_name(disk: &str, run_id: &str) -> String {
    const MAX: usize = 80;
    if disk.chars().count() + 1 + run_id.len() <= MAX {
        return format!("{disk}-{run_id}");
    }
    // FNV-1a: stable across runs and builds.
    let hash = disk.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let keep = MAX.saturating_sub(run_id.len() + 1 + 9);
    let cut: String = disk.chars().take(keep).collect();
    format!("{cut}-{:08x}-{run_id}", hash as u32)
}

/// A name safe as one path component: Azure names are already (letters, digits, `-`, `_`,
/// `.`), but never trust a server with paths.
pub(crate) fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim_matches('.') {
        "" => "_".to_string(),
        s => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper2kvm_core::{Firmware, OsType};

    fn vm(name: &str, rg: &str, state: PowerState) -> Vm {
        let disk = |n: &str, role| Disk {
            id: format!(
                "/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{n}"
            ),
            name: n.into(),
            role,
            size_bytes: 1 << 30,
        };
        Vm {
            id: format!("/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"),
            name: name.into(),
            subscription: "s".into(),
            resource_group: rg.into(),
            location: "westeurope".into(),
            vm_size: "Standard_D2s_v5".into(),
            tags: Default::default(),
            power_state: state,
            os_type: OsType::Linux,
            firmware: Firmware::Uefi,
            disks: vec![
                disk(&format!("{name}-os"), DiskRole::Os),
                disk(&format!("{name}-data0"), DiskRole::Data { lun: 0 }),
                disk(&format!("{name}-data3"), DiskRole::Data { lun: 3 }),
            ],
            security: Default::default(),
            nics: None,
        }
    }

    #[test]
    fn guest_encrypted_vms_are_refused_whatever_the_policy() {
        let mut encrypted = vm("enc", "rg", PowerState::Deallocated);
        encrypted.security = hyper2kvm_core::Security::default()
            .with_guest_encryption(Some("BitLocker by Azure Disk Encryption".into()));
        for policy in [RunningVmPolicy::Snapshot, RunningVmPolicy::Deallocate] {
            let p = plan(std::slice::from_ref(&encrypted), &opts(policy)).unwrap();
            match &p.vms[0].action {
                VmAction::Refused { reason } => {
                    assert!(
                        reason.contains("encrypted inside the guest: BitLocker"),
                        "{reason}"
                    )
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(p.snapshot_count(), 0);
        }
    }

    fn opts(policy: RunningVmPolicy) -> PlanOptions {
        PlanOptions {
            run_id: "h2k-20261126t083500z".into(),
            running_vm: policy,
            dir: "/out".into(),
            ..PlanOptions::default()
        }
    }

    #[test]
    fn actions_follow_power_state_and_policy() {
        let vms = [
            vm("a", "rg", PowerState::Deallocated),
            vm("b", "rg", PowerState::Running),
            vm("c", "rg", PowerState::Stopped),
        ];
        let p = plan(&vms, &opts(RunningVmPolicy::Snapshot)).unwrap();
        let actions: Vec<_> = p.vms.iter().map(|v| v.action.clone()).collect();
        assert_eq!(
            actions,
            vec![
                VmAction::ExportDisks,
                VmAction::Snapshot,
                VmAction::Snapshot
            ]
        );
        assert_eq!(p.snapshot_count(), 6);
        assert!(p.vms[0].disks.iter().all(|d| d.snapshot.is_none()));
        assert_eq!(
            p.vms[1].disks[0].snapshot.as_deref(),
            Some("b-os-h2k-20261126t083500z")
        );

        let p = plan(&vms, &opts(RunningVmPolicy::Refuse)).unwrap();
        assert!(matches!(p.vms[1].action, VmAction::Refused { .. }));
        assert_eq!(p.vms[0].action, VmAction::ExportDisks);
        let mut o = opts(RunningVmPolicy::Stop);
        o.restart = true;
        let p = plan(&vms, &o).unwrap();
        assert_eq!(
            p.vms[1].action,
            VmAction::StopThenSnapshot { restart: true }
        );
        // A VM that was already stopped is not started by the run.
        assert_eq!(
            p.vms[2].action,
            VmAction::StopThenSnapshot { restart: false }
        );
    }

    #[test]
    fn outputs_are_named_by_role_and_lun() {
        let p = plan(
            &[vm("web", "rg", PowerState::Deallocated)],
            &opts(RunningVmPolicy::Snapshot),
        )
        .unwrap();
        let v = &p.vms[0];
        let outputs: Vec<_> = v
            .disks
            .iter()
            .map(|d| d.output.display().to_string())
            .collect();
        assert_eq!(
            outputs,
            [
                "/out/web/web-os.qcow2",
                "/out/web/web-data-lun0.qcow2",
                "/out/web/web-data-lun3.qcow2"
            ]
        );
        assert_eq!(v.domain_xml, PathBuf::from("/out/web/web.xml"));
        assert_eq!(v.report, PathBuf::from("/out/web/report.json"));
        let mut o = opts(RunningVmPolicy::Snapshot);
        o.disks = DiskChoice::Data;
        o.format = OutputFormat::Raw;
        let p = plan(&[vm("web", "rg", PowerState::Deallocated)], &o).unwrap();
        assert_eq!(p.vms[0].disks.len(), 2);
        assert!(p.vms[0].disks[0].output.ends_with("web-data-lun0.raw"));
    }

    #[test]
    fn same_name_in_two_groups_needs_the_resource_group_layout() {
        let vms = [
            vm("app", "rg-a", PowerState::Deallocated),
            vm("APP", "rg-b", PowerState::Deallocated),
        ];
        let err = plan(&vms, &opts(RunningVmPolicy::Snapshot)).unwrap_err();
        assert!(err.0.contains("rg-a") && err.0.contains("rg-b"), "{err}");
        let mut o = opts(RunningVmPolicy::Snapshot);
        o.layout = Layout::ResourceGroup;
        let p = plan(&vms, &o).unwrap();
        assert!(p.vms[1].disks[0].output.starts_with("/out/rg-b/APP"));
    }

    #[test]
    fn snapshot_names_fit_azure_limits_and_paths_are_safe() {
        let long = "d".repeat(100);
        assert_eq!(snapshot_name(&long, "run-1").len(), 80);
        let vm = "v".repeat(60);
        let (a, b) = (format!("{vm}_DataDisk_0"), format!("{vm}_DataDisk_1"));
        let run = "h2k-20261126t083500z-abcd";
        assert_ne!(snapshot_name(&a, run), snapshot_name(&b, run));
        assert!(snapshot_name(&a, run).len() <= 80);
        assert_eq!(
            snapshot_name("web-01_OsDisk_1", run),
            format!("web-01_OsDisk_1-{run}")
        );
        assert_eq!(safe_name("../etc"), "_etc");
        assert_eq!(safe_name(".."), "_");
        assert_eq!(safe_name("a/b"), "a_b");
    }
}
