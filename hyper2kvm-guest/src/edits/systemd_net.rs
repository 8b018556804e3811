//! systemd's network files: `.network` (systemd-networkd: Azure Linux / Mariner, Flatcar,
//! hand-made Debian setups) and `.link` (udev's interface naming, the modern replacement for
//! `70-persistent-net.rules`), under `/etc/systemd/network/`.
//!
//! Both are ini files whose `[Match]` section says which NIC they apply to: by `Name=`
//! (`OriginalName=` in a `.link`, the kernel's name before renaming), `MACAddress=`,
//! `PermanentMACAddress=`, `Driver=`, `Type=`, `Path=`… All given keys must match. A file that
//! matches the Hyper-V NIC by MAC address or by the `hv_netvsc` driver matches nothing on KVM.
//! [`repin`] drops those keys and, unless a name key remains, matches the name the NIC had on
//! Azure instead (`eth0`, which the `interface-names` fix-up makes sure the virtio NIC gets).

use super::{lines_with_endings, Edit};

/// What a file's `[Match]` section pins, and what it configures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matched {
    /// `MACAddress=` / `PermanentMACAddress=` values, lower-cased.
    pub macs: Vec<String>,
    /// Whether `Driver=` names `hv_netvsc`.
    pub hyperv_driver: bool,
    /// `Name=` (or, in a `.link`, `OriginalName=`) patterns.
    pub names: Vec<String>,
    /// A `.link`'s `[Link] Name=`: the name it gives the NIC.
    pub link_name: Option<String>,
    /// `[Network] DHCP=` (or `[Network]`/`[Address]` `Address=` for static addresses).
    pub dhcp: Option<String>,
    /// Static addresses (`Address=` in `[Network]` or `[Address]`).
    pub addresses: Vec<String>,
}

impl Matched {
    /// Whether the file is tied to the old NIC by something other than its name.
    pub fn pinned(&self) -> bool {
        !self.macs.is_empty() || self.hyperv_driver
    }
}

/// The key a file's name match uses: `Name` in a `.network`, `OriginalName` in a `.link`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `.network` file.
    Network,
    /// A `.link` file.
    Link,
}

impl Kind {
    /// The kind of a file by its name, if it is one of these.
    pub fn of(file_name: &str) -> Option<Kind> {
        if file_name.ends_with(".network") {
            Some(Kind::Network)
        } else if file_name.ends_with(".link") {
            Some(Kind::Link)
        } else {
            None
        }
    }

    fn name_key(self) -> &'static str {
        match self {
            Kind::Network => "Name",
            Kind::Link => "OriginalName",
        }
    }
}

/// An ini line: section header, `key=value`, or anything else.
enum Line<'a> {
    Section(&'a str),
    Pair(&'a str, &'a str),
    Other,
}

fn classify(line: &str) -> Line<'_> {
    let t = line.trim();
    if t.starts_with('[') && t.ends_with(']') {
        return Line::Section(&t[1..t.len() - 1]);
    }
    if t.starts_with('#') || t.starts_with(';') {
        return Line::Other;
    }
    match t.split_once('=') {
        Some((k, v)) => Line::Pair(k.trim(), v.trim()),
        None => Line::Other,
    }
}

/// Reads what the file matches and configures.
pub fn read(text: &str, kind: Kind) -> Matched {
    let mut m = Matched::default();
    let mut section = "";
    for line in text.lines() {
        match classify(line) {
            Line::Section(s) => section = s,
            Line::Pair(key, value) => match (section, key) {
                ("Match", "MACAddress" | "PermanentMACAddress") => m
                    .macs
                    .extend(value.split_whitespace().map(str::to_ascii_lowercase)),
                ("Match", "Driver") => {
                    m.hyperv_driver |= value.split_whitespace().any(|d| d == "hv_netvsc")
                }
                ("Match", k) if k == kind.name_key() => {
                    m.names.extend(value.split_whitespace().map(String::from))
                }
                ("Link", "Name") => m.link_name = Some(value.to_string()),
                ("Network", "DHCP") => m.dhcp = Some(value.to_string()),
                ("Network" | "Address", "Address") => m.addresses.push(value.to_string()),
                _ => {}
            },
            Line::Other => {}
        }
    }
    m
}

/// Drops the MAC and `hv_netvsc` driver matches from `[Match]`; where no name match remains,
/// matches `name` instead. `None` if the file is not pinned.
pub fn repin(text: &str, kind: Kind, name: &str) -> Option<Edit> {
    let before = read(text, kind);
    if !before.pinned() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut changes = Vec::new();
    let mut section = String::new();
    let mut named = !before.names.is_empty();
    for line in lines_with_endings(text) {
        match classify(line) {
            Line::Section(s) => {
                section = s.to_string();
                out.push_str(line);
                if section == "Match" && !named {
                    let key = kind.name_key();
                    out.push_str(&format!("{key}={name}\n"));
                    changes.push(format!("matches {key}={name} (the NIC's name on Azure)"));
                    named = true;
                }
            }
            Line::Pair(key, value) if section == "Match" => match key {
                "MACAddress" | "PermanentMACAddress" => {
                    changes.push(format!("removed {key}={value}"));
                }
                "Driver" if value.split_whitespace().any(|d| d == "hv_netvsc") => {
                    let rest: Vec<&str> = value
                        .split_whitespace()
                        .filter(|d| *d != "hv_netvsc")
                        .collect();
                    changes.push(format!("removed hv_netvsc from Driver={value}"));
                    if !rest.is_empty() {
                        out.push_str(&format!("Driver={}\n", rest.join(" ")));
                    }
                }
                _ => out.push_str(line),
            },
            _ => out.push_str(line),
        }
    }
    Some(Edit { text: out, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A systemd-networkd file as the Azure Linux agent's docs show for a secondary NIC, and the
    // persistent-name .link file Debian's wiki gives in place of 70-persistent-net.rules.
    const NETWORK_BY_MAC: &str = "\
[Match]
MACAddress=00:0D:3A:5E:21:7C

[Network]
DHCP=ipv4
";
    const LINK_BY_MAC: &str = "\
[Match]
MACAddress=00:0d:3a:5e:21:7c

[Link]
Name=eth0
";

    #[test]
    fn network_pinned_by_mac_matches_the_name_instead() {
        let m = read(NETWORK_BY_MAC, Kind::Network);
        assert_eq!(m.macs, ["00:0d:3a:5e:21:7c"]);
        assert!(m.pinned());
        assert_eq!(m.dhcp.as_deref(), Some("ipv4"));
        let edit = repin(NETWORK_BY_MAC, Kind::Network, "eth0").unwrap();
        assert_eq!(edit.text, "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n");
        assert_eq!(
            edit.changes,
            [
                "matches Name=eth0 (the NIC's name on Azure)",
                "removed MACAddress=00:0D:3A:5E:21:7C"
            ]
        );
        assert_eq!(repin(&edit.text, Kind::Network, "eth0"), None, "idempotent");
    }

    #[test]
    fn link_pinned_by_mac_matches_the_kernel_name() {
        let m = read(LINK_BY_MAC, Kind::Link);
        assert_eq!(m.link_name.as_deref(), Some("eth0"));
        let edit = repin(LINK_BY_MAC, Kind::Link, "eth0").unwrap();
        assert_eq!(
            edit.text,
            "[Match]\nOriginalName=eth0\n\n[Link]\nName=eth0\n"
        );
    }

    #[test]
    fn driver_and_name_matches() {
        // Azure Linux 2.0's default: any eth* by name, and a file pinned to the driver too.
        let text = "[Match]\nName=eth0\nDriver=hv_netvsc\n\n[Network]\nAddress=10.0.0.4/24\nGateway=10.0.0.1\n";
        let m = read(text, Kind::Network);
        assert!(m.hyperv_driver);
        assert_eq!(m.names, ["eth0"]);
        assert_eq!(m.addresses, ["10.0.0.4/24"]);
        let edit = repin(text, Kind::Network, "eth9").unwrap();
        assert_eq!(
            edit.text,
            "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.0.4/24\nGateway=10.0.0.1\n"
        );
        assert_eq!(edit.changes, ["removed hv_netvsc from Driver=hv_netvsc"]);
        assert_eq!(
            repin(
                "[Match]\nName=e*\n[Network]\nDHCP=yes\n",
                Kind::Network,
                "eth0"
            ),
            None
        );
    }

    #[test]
    fn kinds_by_file_name() {
        assert_eq!(Kind::of("10-eth0.network"), Some(Kind::Network));
        assert_eq!(Kind::of("10-eth0.link"), Some(Kind::Link));
        assert_eq!(Kind::of("10-eth0.netdev"), None);
    }
}
