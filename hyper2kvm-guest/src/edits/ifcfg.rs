//! Red Hat style interface files: `/etc/sysconfig/network-scripts/ifcfg-*` (RHEL, Alma, Rocky,
//! CentOS) and `/etc/sysconfig/network/ifcfg-*` (SUSE).
//!
//! Shell-style `KEY=value` lines. `HWADDR=` binds the file to the NIC with that MAC address —
//! the Hyper-V NIC's, which the KVM guest does not have — and `MACADDR=` (RHEL) or `LLADDR=`
//! (SUSE's wicked) forces a MAC onto the interface. All three are removed, so the file applies
//! to whichever NIC takes the name: `DEVICE=`, or the file name's suffix (`ifcfg-eth0`).

use super::{lines_with_endings, Edit};

/// What an ifcfg file configures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ifcfg {
    /// `DEVICE=` (RHEL), else the name the file is for.
    pub device: Option<String>,
    /// `BOOTPROTO=`: `dhcp`, `dhcp4`, `static`, `none`…
    pub bootproto: Option<String>,
    /// `IPADDR=` (with `PREFIX=` or `NETMASK=`), for a static address.
    pub address: Option<String>,
    /// `HWADDR=`, lower-cased.
    pub hwaddr: Option<String>,
    /// `ONBOOT=` (RHEL) / `STARTMODE=` (SUSE): whether it comes up at boot.
    pub onboot: Option<String>,
}

fn unquote(value: &str) -> String {
    value
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_string()
}

/// Reads an ifcfg file.
pub fn read(text: &str) -> Ifcfg {
    let mut cfg = Ifcfg::default();
    let mut prefix = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value);
        match key.trim() {
            "DEVICE" => cfg.device = Some(value),
            "BOOTPROTO" => cfg.bootproto = Some(value.to_ascii_lowercase()),
            "IPADDR" | "IPADDR0" => cfg.address = Some(value),
            "PREFIX" | "PREFIX0" | "NETMASK" | "NETMASK0" => prefix = Some(value),
            "HWADDR" => cfg.hwaddr = Some(value.to_ascii_lowercase()),
            "ONBOOT" | "STARTMODE" => cfg.onboot = Some(value),
            _ => {}
        }
    }
    if let (Some(address), Some(prefix)) = (cfg.address.as_mut(), prefix) {
        if !address.contains('/') {
            address.push('/');
            address.push_str(&prefix);
        }
    }
    cfg
}

/// Removes `HWADDR=`, `MACADDR=` and `LLADDR=` lines; `None` if there are none.
pub fn fix(text: &str) -> Option<Edit> {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    for line in lines_with_endings(text) {
        let trimmed = line.trim();
        let key = trimmed.split_once('=').map(|(k, _)| k.trim());
        match key {
            Some(key @ ("HWADDR" | "MACADDR" | "LLADDR")) => {
                changes.push(format!("removed {key} ({trimmed})"));
            }
            _ => out.push_str(line),
        }
    }
    (!changes.is_empty()).then_some(Edit { text: out, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the Azure agent and cloud-init leave on a RHEL 7/8 image.
    const RHEL_AZURE: &str = "\
DEVICE=eth0
ONBOOT=yes
BOOTPROTO=dhcp
TYPE=Ethernet
USERCTL=no
PEERDNS=yes
IPV6INIT=no
NM_CONTROLLED=yes
HWADDR=00:0D:3A:5E:21:7C
PERSISTENT_DHCLIENT=yes
";

    #[test]
    fn removes_the_hardware_address() {
        let edit = fix(RHEL_AZURE).unwrap();
        assert!(!edit.text.contains("HWADDR"));
        assert_eq!(edit.text.lines().count(), RHEL_AZURE.lines().count() - 1);
        assert!(edit
            .text
            .contains("NM_CONTROLLED=yes\nPERSISTENT_DHCLIENT=yes\n"));
        assert_eq!(edit.changes, ["removed HWADDR (HWADDR=00:0D:3A:5E:21:7C)"]);
        assert_eq!(fix(&edit.text), None, "idempotent");
    }

    #[test]
    fn removes_quoted_macaddr_and_keeps_comments() {
        let text = "# Created by cloud-init\nBOOTPROTO='dhcp'\nMACADDR=\"00:0d:3a:5e:21:7c\"\n#HWADDR=00:0d:3a:5e:21:7c\n";
        let edit = fix(text).unwrap();
        assert_eq!(
            edit.text,
            "# Created by cloud-init\nBOOTPROTO='dhcp'\n#HWADDR=00:0d:3a:5e:21:7c\n"
        );
    }

    // What cloud-init's sysconfig renderer writes on a SLES 15 Azure image (wicked).
    const SLES_AZURE: &str = "\
# Created by cloud-init on instance boot automatically, do not edit.
#
BOOTPROTO=dhcp4
LLADDR=00:0d:3a:5e:21:7c
STARTMODE=auto
";

    #[test]
    fn suse_lladdr_removed_and_read() {
        let cfg = read(SLES_AZURE);
        assert_eq!(cfg.bootproto.as_deref(), Some("dhcp4"));
        assert_eq!(cfg.onboot.as_deref(), Some("auto"));
        assert_eq!(cfg.device, None);
        let edit = fix(SLES_AZURE).unwrap();
        assert_eq!(edit.changes, ["removed LLADDR (LLADDR=00:0d:3a:5e:21:7c)"]);
        assert!(edit.text.ends_with("BOOTPROTO=dhcp4\nSTARTMODE=auto\n"));
    }

    #[test]
    fn static_address_read_with_prefix() {
        let cfg = read(
            "DEVICE=eth1\nBOOTPROTO=none\nIPADDR=10.0.1.4\nPREFIX=24\nHWADDR=00:0D:3A:5E:21:7D\n",
        );
        assert_eq!(cfg.device.as_deref(), Some("eth1"));
        assert_eq!(cfg.address.as_deref(), Some("10.0.1.4/24"));
        assert_eq!(cfg.hwaddr.as_deref(), Some("00:0d:3a:5e:21:7d"));
        let rhel = read(RHEL_AZURE);
        assert_eq!(rhel.bootproto.as_deref(), Some("dhcp"));
        assert_eq!(rhel.onboot.as_deref(), Some("yes"));
    }

    #[test]
    fn a_file_without_pinning_is_unchanged() {
        assert_eq!(fix("DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n"), None);
    }
}
