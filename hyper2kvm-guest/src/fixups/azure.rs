//! Azure's own pieces in the guest: the agent, cloud-init's datasource, udev rules.

use super::{files_in, Action, FixUp, Plan};
use crate::edits::cloud_init;
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::Result;

/// The Azure Linux agent's unit names: Debian and Ubuntu call it `walinuxagent`, RHEL and
/// SUSE `waagent`.
const AGENT_UNITS: [&str; 2] = ["walinuxagent.service", "waagent.service"];

/// Where `systemctl enable` puts the links that start a unit at boot.
const WANTS_DIRS: [&str; 2] = [
    "/etc/systemd/system/multi-user.target.wants",
    "/etc/systemd/system/default.target.wants",
];

/// The Azure agent disabled: on KVM it waits for Azure's wire server that is not there.
pub struct AzureAgent;

impl FixUp for AzureAgent {
    fn name(&self) -> &'static str {
        "azure-agent"
    }
    fn description(&self) -> &'static str {
        "Azure Linux agent (walinuxagent / waagent) disabled"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        for unit in AGENT_UNITS {
            let mut enabled = false;
            for dir in WANTS_DIRS {
                enabled |= guest.exists(&format!("{dir}/{unit}"))?;
            }
            if enabled {
                // systemctl works offline for enable/disable: it only edits the links.
                plan.run(format!("systemctl disable {unit}"));
                plan.changes.push(format!("disabled {unit}"));
            }
        }
        Ok(plan)
    }
}

/// cloud-init's `datasource_list: [ Azure ]` → `[ NoCloud, None ]`.
pub struct CloudInitDatasource;

impl FixUp for CloudInitDatasource {
    fn name(&self) -> &'static str {
        "cloud-init-datasource"
    }
    fn description(&self) -> &'static str {
        "cloud-init: datasource_list [ NoCloud, None ] instead of Azure"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        let mut paths = vec!["/etc/cloud/cloud.cfg".to_string()];
        paths.extend(files_in(guest, "/etc/cloud/cloud.cfg.d", |n| {
            n.ends_with(".cfg")
        })?);
        for path in paths {
            let Some(text) = guest.read(&path)? else {
                continue;
            };
            if let Some(edit) = cloud_init::replace_azure_datasource(&text) {
                plan.edit(&path, edit);
            }
        }
        Ok(plan)
    }
}

/// The udev rules the Azure agent installs: disk links for Azure's SCSI layout, and
/// NetworkManager told to ignore accelerated-networking NICs.
const AZURE_RULES: [&str; 2] = [
    "66-azure-storage.rules",
    "68-azure-sriov-nm-unmanaged.rules",
];

/// Azure's udev rules removed from `/etc/udev/rules.d`.
pub struct AzureUdevRules;

impl FixUp for AzureUdevRules {
    fn name(&self) -> &'static str {
        "azure-udev-rules"
    }
    fn description(&self) -> &'static str {
        "Azure udev rules (66-azure-storage, 68-azure-sriov-nm-unmanaged) removed"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        for rule in AZURE_RULES {
            let path = format!("/etc/udev/rules.d/{rule}");
            if guest.exists(&path)? {
                plan.changes.push(format!("removed {path}"));
                plan.actions.push(Action::Remove { path });
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::apply;
    use crate::fixups::testing::debian;
    use crate::guestfs::memory::MemoryGuest;

    #[test]
    fn agent_disabled_only_when_enabled() {
        let mut guest = MemoryGuest::with(&[
            ("/lib/systemd/system/walinuxagent.service", "[Unit]\n"),
            (
                "/etc/systemd/system/multi-user.target.wants/walinuxagent.service",
                "[Unit]\n",
            ),
        ]);
        let plan = AzureAgent.plan(&mut guest, &debian()).unwrap();
        assert_eq!(
            plan.actions,
            [Action::Run {
                command: "systemctl disable walinuxagent.service".into()
            }]
        );
        apply(&mut guest, &plan).unwrap();
        assert_eq!(guest.commands, ["systemctl disable walinuxagent.service"]);

        let mut installed_not_enabled =
            MemoryGuest::with(&[("/usr/lib/systemd/system/waagent.service", "[Unit]\n")]);
        assert!(!AzureAgent
            .plan(&mut installed_not_enabled, &debian())
            .unwrap()
            .is_needed());
    }

    #[test]
    fn datasource_replaced_in_cfg_d() {
        let mut guest = MemoryGuest::with(&[
            ("/etc/cloud/cloud.cfg", "datasource_list: [ NoCloud, None ]\n"),
            (
                "/etc/cloud/cloud.cfg.d/90_dpkg.cfg",
                "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Azure ]\n",
            ),
            ("/etc/cloud/cloud.cfg.d/README", "datasource_list: [ Azure ]\n"),
        ]);
        let plan = CloudInitDatasource.plan(&mut guest, &debian()).unwrap();
        assert_eq!(plan.actions.len(), 1);
        apply(&mut guest, &plan).unwrap();
        assert!(guest.files["/etc/cloud/cloud.cfg.d/90_dpkg.cfg"]
            .ends_with("datasource_list: [ NoCloud, None ]\n"));
        assert!(!CloudInitDatasource
            .plan(&mut guest, &debian())
            .unwrap()
            .is_needed());
    }

    #[test]
    fn udev_rules_removed() {
        let mut guest = MemoryGuest::with(&[
            (
                "/etc/udev/rules.d/66-azure-storage.rules",
                "# Azure specific rules.\n",
            ),
            ("/etc/udev/rules.d/70-persistent-net.rules", "# keep\n"),
        ]);
        let plan = AzureUdevRules.plan(&mut guest, &debian()).unwrap();
        apply(&mut guest, &plan).unwrap();
        assert_eq!(
            guest.files.keys().collect::<Vec<_>>(),
            ["/etc/udev/rules.d/70-persistent-net.rules"]
        );
        assert_eq!(
            plan.changes,
            ["removed /etc/udev/rules.d/66-azure-storage.rules"]
        );
    }
}
