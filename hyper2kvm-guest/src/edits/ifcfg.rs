//! Red Hat style interface files: `/etc/sysconfig/network-scripts/ifcfg-*` (RHEL, Alma, Rocky,
//! CentOS) and `/etc/sysconfig/network/ifcfg-*` (SUSE).
//!
//! Shell-style `KEY=value` lines. `HWADDR=` binds the file to the NIC with that MAC address —
//! the Hyper-V NIC's, which the KVM guest does not have — and `MACADDR=` forces a MAC onto the
//! interface. Both are removed, so the file applies to whichever NIC takes the name.

use super::{lines_with_endings, Edit};

/// Removes `HWADDR=` and `MACADDR=` lines; `None` if there are none.
pub fn fix(text: &str) -> Option<Edit> {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    for line in lines_with_endings(text) {
        let trimmed = line.trim();
        let key = trimmed.split_once('=').map(|(k, _)| k.trim());
        match key {
            Some(key @ ("HWADDR" | "MACADDR")) => {
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

    #[test]
    fn a_file_without_pinning_is_unchanged() {
        assert_eq!(fix("DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n"), None);
    }
}
