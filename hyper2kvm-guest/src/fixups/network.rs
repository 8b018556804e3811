//! Network fix-ups: the guest's NIC configuration must not be pinned to the Hyper-V NIC.

use super::{files_in, FixUp, Plan};
use crate::edits::netplan::Rewrite;
use crate::edits::{cloud_init, ifcfg, netplan, nm_keyfile};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::Result;

/// netplan files matching the Hyper-V NIC (driver, MAC, `set-name`) → DHCP on any NIC.
pub struct NetplanDhcp;

impl FixUp for NetplanDhcp {
    fn name(&self) -> &'static str {
        "netplan"
    }
    fn description(&self) -> &'static str {
        "netplan: DHCP on any en*/eth* NIC instead of the Hyper-V NIC's driver and MAC"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        let files = files_in(guest, "/etc/netplan", |n| {
            n.ends_with(".yaml") || n.ends_with(".yml")
        })?;
        for path in files {
            let Some(text) = guest.read(&path)? else {
                continue;
            };
            match netplan::rewrite(&text) {
                Rewrite::Unchanged => {}
                Rewrite::Rewritten(edit) => {
                    plan.changes
                        .extend(edit.changes.iter().map(|c| format!("{path}: {c}")));
                    plan.write(&path, edit.text);
                }
                Rewrite::LeftAlone(why) => plan.notes.push(format!(
                    "{path}: pins the Hyper-V NIC but was left alone: {why}"
                )),
            }
        }
        Ok(plan)
    }
}

/// cloud-init must not render the network from a datasource again.
pub struct CloudInitNetwork;

impl FixUp for CloudInitNetwork {
    fn name(&self) -> &'static str {
        "cloud-init-network"
    }
    fn description(&self) -> &'static str {
        "cloud-init: network configuration disabled (network: {config: disabled})"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        if !guest.exists("/etc/cloud")? {
            return Ok(plan);
        }
        let path = cloud_init::DISABLE_NETWORK_PATH;
        let disabled = guest
            .read(path)?
            .is_some_and(|text| text.contains("config: disabled"));
        if !disabled {
            plan.write(path, cloud_init::DISABLE_NETWORK.to_string());
            plan.changes
                .push(format!("{path}: written (network: {{config: disabled}})"));
        }
        Ok(plan)
    }
}

/// `HWADDR=` / `MACADDR=` removed from ifcfg files (RHEL family, SUSE).
pub struct Ifcfg;

impl FixUp for Ifcfg {
    fn name(&self) -> &'static str {
        "ifcfg"
    }
    fn description(&self) -> &'static str {
        "ifcfg: HWADDR/MACADDR pinning removed"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        for dir in ["/etc/sysconfig/network-scripts", "/etc/sysconfig/network"] {
            let files = files_in(guest, dir, |n| n.starts_with("ifcfg-") && n != "ifcfg-lo")?;
            for path in files {
                if let Some(edit) = guest.read(&path)?.as_deref().and_then(ifcfg::fix) {
                    plan.changes
                        .extend(edit.changes.iter().map(|c| format!("{path}: {c}")));
                    plan.write(&path, edit.text);
                }
            }
        }
        Ok(plan)
    }
}

/// `mac-address=` removed from NetworkManager keyfiles.
pub struct NmKeyfile;

impl FixUp for NmKeyfile {
    fn name(&self) -> &'static str {
        "nm-keyfile"
    }
    fn description(&self) -> &'static str {
        "NetworkManager: mac-address pinning removed from keyfiles"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        let files = files_in(guest, "/etc/NetworkManager/system-connections", |_| true)?;
        for path in files {
            if let Some(edit) = guest.read(&path)?.as_deref().and_then(nm_keyfile::fix) {
                plan.changes
                    .extend(edit.changes.iter().map(|c| format!("{path}: {c}")));
                plan.write(&path, edit.text);
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::testing::{debian, rhel};
    use crate::fixups::{apply, Action};
    use crate::guestfs::memory::MemoryGuest;

    const AZURE_NETPLAN: &str = "network:\n    ethernets:\n        eth0:\n            dhcp4: true\n            match:\n                driver: hv_netvsc\n                macaddress: 00:0d:3a:5e:21:7c\n            set-name: eth0\n    version: 2\n";

    #[test]
    fn netplan_rewritten_then_not_needed() {
        let mut guest = MemoryGuest::with(&[
            ("/etc/netplan/50-cloud-init.yaml", AZURE_NETPLAN),
            ("/etc/netplan/README", "not yaml"),
        ]);
        let plan = NetplanDhcp.plan(&mut guest, &debian()).unwrap();
        assert!(plan.is_needed());
        assert_eq!(plan.actions.len(), 1);
        assert!(plan.changes[0].starts_with("/etc/netplan/50-cloud-init.yaml: eth0: dropped"));
        apply(&mut guest, &plan).unwrap();
        assert!(guest.files["/etc/netplan/50-cloud-init.yaml"].contains("name: \"en*\""));
        assert!(!NetplanDhcp.plan(&mut guest, &debian()).unwrap().is_needed());
    }

    #[test]
    fn netplan_with_a_bridge_is_noted_not_changed() {
        let text = "network:\n  version: 2\n  ethernets:\n    eth0:\n      match:\n        macaddress: 00:0d:3a:5e:21:7c\n  bridges:\n    br0:\n      interfaces: [eth0]\n";
        let mut guest = MemoryGuest::with(&[("/etc/netplan/01-br.yaml", text)]);
        let plan = NetplanDhcp.plan(&mut guest, &debian()).unwrap();
        assert!(!plan.is_needed());
        assert_eq!(plan.notes.len(), 1);
    }

    #[test]
    fn cloud_init_network_disabled_once() {
        let mut guest = MemoryGuest::with(&[("/etc/cloud/cloud.cfg", "users: [default]\n")]);
        let plan = CloudInitNetwork.plan(&mut guest, &debian()).unwrap();
        assert_eq!(
            plan.actions,
            [Action::Write {
                path: cloud_init::DISABLE_NETWORK_PATH.into(),
                content: cloud_init::DISABLE_NETWORK.into()
            }]
        );
        apply(&mut guest, &plan).unwrap();
        assert!(!CloudInitNetwork
            .plan(&mut guest, &debian())
            .unwrap()
            .is_needed());
    }

    #[test]
    fn no_cloud_init_no_change() {
        let mut guest = MemoryGuest::default();
        assert!(!CloudInitNetwork
            .plan(&mut guest, &debian())
            .unwrap()
            .is_needed());
    }

    #[test]
    fn ifcfg_and_keyfiles_on_rhel() {
        let mut guest = MemoryGuest::with(&[
            (
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                "DEVICE=eth0\nBOOTPROTO=dhcp\nHWADDR=00:0D:3A:5E:21:7C\n",
            ),
            (
                "/etc/sysconfig/network-scripts/ifcfg-lo",
                "DEVICE=lo\nHWADDR=00:00:00:00:00:00\n",
            ),
            (
                "/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection",
                "[ethernet]\nmac-address=00:0D:3A:5E:21:7C\n[ipv4]\nmethod=auto\n",
            ),
        ]);
        let ifcfg_plan = Ifcfg.plan(&mut guest, &rhel()).unwrap();
        assert_eq!(ifcfg_plan.actions.len(), 1, "ifcfg-lo is left alone");
        let nm_plan = NmKeyfile.plan(&mut guest, &rhel()).unwrap();
        assert_eq!(nm_plan.actions.len(), 1);
        apply(&mut guest, &ifcfg_plan).unwrap();
        apply(&mut guest, &nm_plan).unwrap();
        assert_eq!(
            guest.files["/etc/sysconfig/network-scripts/ifcfg-eth0"],
            "DEVICE=eth0\nBOOTPROTO=dhcp\n"
        );
        assert!(!guest.files
            ["/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection"]
            .contains("mac-address"));
    }
}
