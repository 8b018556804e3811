//! Network fix-ups: the guest's NIC configuration must not be pinned to the Hyper-V NIC.

use super::{files_in, yaml_files, FixUp, Plan};
use crate::edits::netplan::Rewrite;
use crate::edits::{
    cloud_init, grub_default, ifcfg, ifupdown, netplan, nm_keyfile, systemd_net, udev_net,
};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::network::{self as net, Naming};
use crate::Result;

/// The note for a static address: kept, and a person should check it.
fn static_note(file: &str, what: &str, address: &str) -> String {
    format!(
        "{file}: {what} keeps its static address {address} (set by Azure for its virtual network: check that it fits the new one)"
    )
}

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
        let files = yaml_files(guest, "/etc/netplan")?;
        for path in files {
            let Some(text) = guest.read(&path)? else {
                continue;
            };
            match netplan::rewrite(&text) {
                Rewrite::Unchanged => {}
                Rewrite::Rewritten(edit) => {
                    plan.edit(&path, edit);
                }
                // The NIC it pins (by the Hyper-V driver or Azure's MAC) is not there on KVM.
                Rewrite::LeftAlone(why) => plan.blockers.push(format!(
                    "{path} pins the Hyper-V NIC but was left alone ({why}): the NIC it \
                     configures will not come up on KVM; edit it, or skip the netplan \
                     fix-up to accept the guest as it is"
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
        "ifcfg (RHEL, SUSE wicked): HWADDR/MACADDR/LLADDR pinning removed"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        for dir in ["/etc/sysconfig/network-scripts", "/etc/sysconfig/network"] {
            let files = files_in(guest, dir, |n| n.starts_with("ifcfg-") && n != "ifcfg-lo")?;
            for path in files {
                let Some(text) = guest.read(&path)? else {
                    continue;
                };
                let cfg = ifcfg::read(&text);
                if let Some(address) = &cfg.address {
                    let device = cfg.device.as_deref().unwrap_or("the NIC");
                    plan.notes.push(static_note(&path, device, address));
                }
                if let Some(edit) = ifcfg::fix(&text) {
                    plan.edit(&path, edit);
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
            let Some(text) = guest.read(&path)? else {
                continue;
            };
            let keyfile = nm_keyfile::read(&text);
            if keyfile.ipv4_method.as_deref() == Some("manual") {
                let name = keyfile
                    .interface_name
                    .as_deref()
                    .unwrap_or("the connection");
                plan.notes
                    .push(static_note(&path, name, &keyfile.addresses.join(" ")));
            }
            if let Some(edit) = nm_keyfile::fix(&text) {
                plan.edit(&path, edit);
            }
        }
        Ok(plan)
    }
}

/// ifupdown's files: `hwaddress` removed; what each stanza brings up is in the network plan.
pub struct Ifupdown;

impl FixUp for Ifupdown {
    fn name(&self) -> &'static str {
        "ifupdown"
    }
    fn description(&self) -> &'static str {
        "ifupdown: /etc/network/interfaces and the files it sources; hwaddress (the Azure MAC) removed"
    }
    fn plan(&self, guest: &mut dyn GuestFs, _: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        for (path, text) in net::ifupdown_files(guest)? {
            let parsed = ifupdown::parse(&text);
            for stanza in &parsed.stanzas {
                if let Some(address) = &stanza.address {
                    plan.notes.push(static_note(&path, &stanza.name, address));
                }
            }
            for name in &parsed.mappings {
                plan.notes.push(format!(
                    "{path}: `mapping {name}` runs a script to choose the configuration; check it on KVM"
                ));
            }
            if let Some(edit) = ifupdown::fix(&text) {
                plan.edit(&path, edit);
            }
        }
        Ok(plan)
    }
}

/// systemd-networkd `.network` files matching the Hyper-V NIC by MAC or driver: matched by the
/// NIC's name on Azure instead.
pub struct Networkd;

impl FixUp for Networkd {
    fn name(&self) -> &'static str {
        "networkd"
    }
    fn description(&self) -> &'static str {
        "systemd-networkd: .network files matching the Hyper-V NIC's MAC or driver match its name instead"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        for (path, kind) in net::systemd_files(guest)? {
            if kind != systemd_net::Kind::Network {
                continue;
            }
            let Some(text) = guest.read(&path)? else {
                continue;
            };
            let matched = systemd_net::read(&text, kind);
            for address in &matched.addresses {
                plan.notes.push(static_note(&path, "the NIC", address));
            }
            let name = match matched.macs.first() {
                Some(mac) => inspection.network.azure_name_for(mac),
                None => "eth0".to_string(),
            };
            if let Some(edit) = systemd_net::repin(&text, kind, &name) {
                plan.edit(&path, edit);
            }
        }
        Ok(plan)
    }
}

/// The NICs' names: naming rules and `.link` files pinned to the Hyper-V NIC undone, and the
/// kernel's names (`net.ifnames=0`) kept where the configuration names `ethN`.
pub struct InterfaceNames;

impl FixUp for InterfaceNames {
    fn name(&self) -> &'static str {
        "interface-names"
    }
    fn description(&self) -> &'static str {
        "NIC names: persistent-net rules and .link files pinned to the Hyper-V NIC undone; net.ifnames=0 where the configuration names eth0"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        let network = &inspection.network;
        for path in net::udev_rule_files(guest)? {
            let Some(text) = guest.read(&path)? else {
                continue;
            };
            if let Some(edit) = udev_net::fix(&text) {
                plan.edit(&path, edit);
            }
        }
        for (path, kind) in net::systemd_files(guest)? {
            if kind != systemd_net::Kind::Link {
                continue;
            }
            let Some(text) = guest.read(&path)? else {
                continue;
            };
            let matched = systemd_net::read(&text, kind);
            let kernel_name = match matched.macs.first() {
                Some(mac) => network.kernel_name_for(mac),
                None => "eth0".to_string(),
            };
            if let Some(edit) = systemd_net::repin(&text, kind, &kernel_name) {
                plan.edit(&path, edit);
            }
        }
        match (&network.naming, &network.kernel_names_needed) {
            (Naming::Kernel(why), _) => plan
                .notes
                .push(format!("the guest keeps kernel names (eth0…): {why}")),
            (Naming::Predictable, None) => plan.notes.push(
                "predictable names (the virtio NIC becomes enp1s0 or similar): no enabled configuration names eth0".into(),
            ),
            (Naming::Predictable, Some(why)) => {
                let text = guest.read(grub_default::PATH)?.unwrap_or_default();
                if let Some(edit) = grub_default::add_param(&text, "net.ifnames=0") {
                    plan.changes.push(format!(
                        "kernel names kept (eth0 stays eth0, as on Azure, where the Hyper-V NIC had no PCI path for a predictable name): {why}"
                    ));
                    plan.changes.extend(edit.changes);
                    plan.write(grub_default::PATH, edit.text);
                    plan.changes
                        .push("the grub fix-up regenerates grub's configuration".into());
                }
                // RHEL 8+ keeps each kernel's arguments in BLS entries.
                if guest.exists("/usr/sbin/grubby")? && !guest.list("/boot/loader/entries")?.is_empty() {
                    let command = "grubby --update-kernel=ALL --args=net.ifnames=0";
                    plan.run(command);
                    plan.changes.push(command.into());
                }
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
    fn netplan_with_a_bridge_is_left_alone_and_blocks() {
        let text = "network:\n  version: 2\n  ethernets:\n    eth0:\n      match:\n        macaddress: 00:0d:3a:5e:21:7c\n  bridges:\n    br0:\n      interfaces: [eth0]\n";
        let mut guest = MemoryGuest::with(&[("/etc/netplan/01-br.yaml", text)]);
        let plan = NetplanDhcp.plan(&mut guest, &debian()).unwrap();
        // Unchanged, but not "not needed": the bridge's NIC is matched by Azure's MAC.
        assert!(!plan.is_needed());
        assert_eq!(plan.blockers.len(), 1, "{plan:?}");
        assert!(plan.blockers[0].starts_with("/etc/netplan/01-br.yaml pins the Hyper-V NIC"));
        assert!(plan.blockers[0].contains("bridges"), "{plan:?}");
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

    /// An inspection of `guest` as the real run makes it: Debian's, with the network read.
    fn inspected(guest: &mut MemoryGuest) -> Inspection {
        let mut inspection = debian();
        inspection.network = crate::network::inspect(guest).unwrap();
        inspection
    }

    fn files(pairs: &[(&str, &str)]) -> MemoryGuest {
        let mut guest = MemoryGuest::with(pairs);
        for (path, content) in [
            ("/lib/udev/rules.d/80-ifupdown.rules", ""),
            ("/sbin/ifup", ""),
            ("/usr/sbin/NetworkManager", ""),
            ("/lib/systemd/systemd-networkd", ""),
            ("/usr/sbin/update-grub", ""),
            (
                "/boot/grub/grub.cfg",
                "linux /vmlinuz root=UUID=x ro console=ttyS0\n",
            ),
            (
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX=\"console=tty1 console=ttyS0,115200n8\"\n",
            ),
            // Debian's initramfs-tools, at its default (MODULES=most: virtio goes in).
            ("/usr/sbin/update-initramfs", ""),
            ("/etc/initramfs-tools/initramfs.conf", "MODULES=most\n"),
        ] {
            guest.files.entry(path.into()).or_insert(content.into());
        }
        guest
    }

    const RULE: &str = "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:0d:3a:5e:21:7c\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n";

    /// The boot matrix's Debian 12 ifupdown guest: allow-hotplug eth0 in a sourced file, a
    /// persistent-net rule. The fix: the rule disabled, net.ifnames=0, grub regenerated.
    #[test]
    fn ifupdown_guest_keeps_eth0_by_kernel_names() {
        let mut guest = files(&[
            (
                "/etc/systemd/system/multi-user.target.wants/networking.service",
                "",
            ),
            (
                "/etc/network/interfaces",
                "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n",
            ),
            (
                "/etc/network/interfaces.d/50-cloud-init",
                "allow-hotplug eth0\niface eth0 inet dhcp\n",
            ),
            ("/etc/udev/rules.d/70-persistent-net.rules", RULE),
        ]);
        let inspection = inspected(&mut guest);
        let (results, outcome) = crate::run::fix_guest(
            &mut guest,
            &inspection,
            &crate::GuestConfig::default(),
            &crate::fixups::all(),
        );
        assert_eq!(outcome, crate::Outcome::Fixed);
        let status = |name: &str| results.iter().find(|r| r.name == name).unwrap().clone();
        let names = status("interface-names");
        assert_eq!(names.status, crate::Status::Applied, "{names:?}");
        assert!(
            names
                .changes
                .iter()
                .any(|c| c.contains("added net.ifnames=0")),
            "{names:?}"
        );
        assert!(
            names
                .changes
                .iter()
                .any(|c| c.contains("disabled the rule naming eth0")),
            "{names:?}"
        );
        assert_eq!(status("grub").status, crate::Status::Applied);
        // ifupdown looked and found nothing to change: eth0 will exist.
        assert_eq!(status("ifupdown").status, crate::Status::NotNeeded);
        assert!(guest.files["/etc/default/grub"].contains("net.ifnames=0"));
        assert!(guest.files["/etc/udev/rules.d/70-persistent-net.rules"].starts_with("# hyper2kvm"));
        assert_eq!(guest.commands, ["update-grub"]);

        // update-grub would write the parameter into grub.cfg; then nothing is left to do.
        guest.files.insert(
            "/boot/grub/grub.cfg".into(),
            "linux /vmlinuz root=UUID=x ro console=ttyS0 net.ifnames=0\n".into(),
        );
        let inspection = inspected(&mut guest);
        assert!(matches!(inspection.network.naming, Naming::Kernel(_)));
        let (_, again) = crate::run::fix_guest(
            &mut guest,
            &inspection,
            &crate::GuestConfig::default(),
            &crate::fixups::all(),
        );
        assert_eq!(again, crate::Outcome::NothingToDo);
    }

    #[test]
    fn networkd_by_mac_matches_eth0() {
        let mut guest = files(&[
            (
                "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
                "",
            ),
            (
                "/etc/systemd/network/10-azure-eth0.network",
                "[Match]\nMACAddress=00:0d:3a:5e:21:7c\n\n[Network]\nDHCP=ipv4\n",
            ),
        ]);
        let inspection = inspected(&mut guest);
        let plan = Networkd.plan(&mut guest, &inspection).unwrap();
        apply(&mut guest, &plan).unwrap();
        assert_eq!(
            guest.files["/etc/systemd/network/10-azure-eth0.network"],
            "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n"
        );
        let names = InterfaceNames.plan(&mut guest, &inspection).unwrap();
        assert!(
            names.changes[0].contains("10-azure-eth0.network"),
            "{names:?}"
        );
    }

    #[test]
    fn link_files_and_nm_keyfiles() {
        let mut guest = files(&[
            ("/etc/systemd/system/multi-user.target.wants/NetworkManager.service", ""),
            ("/etc/systemd/network/10-persistent-net.link", "[Match]\nMACAddress=00:0d:3a:5e:21:7c\n\n[Link]\nName=eth0\n"),
            ("/etc/NetworkManager/system-connections/azure-eth0.nmconnection", "[connection]\nid=azure eth0\ntype=ethernet\ninterface-name=eth0\n\n[ethernet]\nmac-address=00:0D:3A:5E:21:7C\n\n[ipv4]\nmethod=auto\n"),
        ]);
        let inspection = inspected(&mut guest);
        let nm = NmKeyfile.plan(&mut guest, &inspection).unwrap();
        assert!(nm.is_needed());
        let names = InterfaceNames.plan(&mut guest, &inspection).unwrap();
        apply(&mut guest, &names).unwrap();
        assert_eq!(
            guest.files["/etc/systemd/network/10-persistent-net.link"],
            "[Match]\nOriginalName=eth0\n\n[Link]\nName=eth0\n"
        );
        assert!(guest.files["/etc/default/grub"].contains("net.ifnames=0"));
    }

    #[test]
    fn a_guest_matching_any_nic_needs_no_names() {
        // Azure Linux's default networkd file: any en* / eth* NIC by DHCP.
        let mut guest = files(&[
            (
                "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
                "",
            ),
            (
                "/etc/systemd/network/99-dhcp-en.network",
                "[Match]\nName=e*\n\n[Network]\nDHCP=yes\n",
            ),
        ]);
        let inspection = inspected(&mut guest);
        assert!(!Networkd.plan(&mut guest, &inspection).unwrap().is_needed());
        let names = InterfaceNames.plan(&mut guest, &inspection).unwrap();
        assert!(!names.is_needed());
        assert!(names.notes[0].starts_with("predictable names"), "{names:?}");
    }

    #[test]
    fn static_addresses_are_kept_and_noted() {
        let mut guest = files(&[(
            "/etc/network/interfaces",
            "auto eth0\niface eth0 inet static\n  address 10.0.0.4/24\n  hwaddress ether 00:0d:3a:5e:21:7c\n",
        )]);
        let plan = Ifupdown.plan(&mut guest, &debian()).unwrap();
        assert!(
            plan.notes[0].contains("keeps its static address 10.0.0.4/24"),
            "{plan:?}"
        );
        apply(&mut guest, &plan).unwrap();
        assert_eq!(
            guest.files["/etc/network/interfaces"],
            "auto eth0\niface eth0 inet static\n  address 10.0.0.4/24\n"
        );
    }
}
