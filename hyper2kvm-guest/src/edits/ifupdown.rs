//! ifupdown's `/etc/network/interfaces` (Debian, older Ubuntu) and the files it sources.
//!
//! The format, per interfaces(5): `auto IFACE…` and `allow-hotplug IFACE…` (or any
//! `allow-CLASS`) say which interfaces are brought up at boot (`auto` by `networking.service`,
//! `allow-hotplug` when udev reports the device); `iface IFACE FAMILY METHOD` opens a stanza
//! whose indented option lines (`address`, `gateway`, `hwaddress`…) follow; `source PATTERN`
//! and `source-directory DIR` include other files; `mapping` stanzas run scripts. Lines ending
//! in `\` continue on the next line, `#` starts a comment only at the start of a line.
//!
//! On Azure, cloud-init writes `/etc/network/interfaces.d/50-cloud-init` with `auto eth0` (or
//! `allow-hotplug eth0`) and `iface eth0 inet dhcp`: the Hyper-V NIC was always `eth0`, since
//! it has no PCI path to take a predictable name from. ifupdown matches interfaces by name
//! only, so the file needs no edit when the NIC keeps that name (the `interface-names` fix-up
//! sees to it); what must go is `hwaddress`, which would force the Azure NIC's MAC address onto
//! the new NIC.

use super::{lines_with_endings, Edit};

/// One `iface` stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// The interface (or logical interface) name.
    pub name: String,
    /// `inet`, `inet6`, …
    pub family: String,
    /// `dhcp`, `static`, `manual`, `loopback`, …
    pub method: String,
    /// `address` (with `netmask` folded in when given apart) for a static stanza.
    pub address: Option<String>,
}

/// What a file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// The `iface` stanzas, in order.
    pub stanzas: Vec<Stanza>,
    /// Interfaces brought up at boot, with the keyword that says so (`auto`, `allow-hotplug`).
    pub started: Vec<(String, String)>,
    /// `source` patterns (globs) and `source-directory` directories, in order.
    pub sources: Vec<Source>,
    /// Interface names that `mapping` stanzas map (through scripts we do not run).
    pub mappings: Vec<String>,
}

/// An include line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `source PATTERN`: files matching a shell glob.
    Glob(String),
    /// `source-directory DIR`: the files of a directory whose names are made of letters,
    /// digits, `_` and `-` only (as run-parts picks them).
    Directory(String),
}

impl Interfaces {
    /// Whether `name` is brought up at boot.
    pub fn is_started(&self, name: &str) -> bool {
        self.started.iter().any(|(n, _)| n == name)
    }
}

/// Logical lines: continuation lines joined, comments and blank lines dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        if pending.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                if !pending.trim().is_empty() {
                    out.push(std::mem::take(&mut pending));
                }
                pending.clear();
            }
        }
    }
    if !pending.trim().is_empty() {
        out.push(pending);
    }
    out
}

/// Parses one interfaces(5) file.
pub fn parse(text: &str) -> Interfaces {
    let mut parsed = Interfaces::default();
    let mut current: Option<Stanza> = None;
    let mut netmask: Option<String> = None;
    let finish = |stanza: Option<Stanza>, netmask: &mut Option<String>, out: &mut Vec<Stanza>| {
        if let Some(mut stanza) = stanza {
            if let (Some(address), Some(mask)) = (&stanza.address, netmask.take()) {
                if !address.contains('/') {
                    stanza.address = Some(format!("{address} netmask {mask}"));
                }
            }
            out.push(stanza);
        }
    };
    for line in logical_lines(text) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&keyword) = words.first() else {
            continue;
        };
        match keyword {
            "iface" => {
                finish(current.take(), &mut netmask, &mut parsed.stanzas);
                if words.len() >= 4 {
                    current = Some(Stanza {
                        name: words[1].to_string(),
                        family: words[2].to_string(),
                        method: words[3].to_string(),
                        address: None,
                    });
                }
            }
            "auto" | "allow-auto" => {
                finish(current.take(), &mut netmask, &mut parsed.stanzas);
                for name in &words[1..] {
                    parsed.started.push((name.to_string(), keyword.to_string()));
                }
            }
            k if k.starts_with("allow-") => {
                finish(current.take(), &mut netmask, &mut parsed.stanzas);
                for name in &words[1..] {
                    parsed.started.push((name.to_string(), keyword.to_string()));
                }
            }
            "source" => {
                finish(current.take(), &mut netmask, &mut parsed.stanzas);
                if let Some(pattern) = words.get(1) {
                    parsed.sources.push(Source::Glob(pattern.to_string()));
                }
            }
            "source-directory" => {
                finish(current.take(), &mut netmask, &mut parsed.stanzas);
                if let Some(dir) = words.get(1) {
                    parsed.sources.push(Source::Directory(dir.to_string()));
                }
            }
            "mapping" => {
                finish(current.take(), &mut netmask, &mut parsed.stanzas);
                parsed
                    .mappings
                    .extend(words[1..].iter().map(|w| w.to_string()));
            }
            "rename" | "no-auto-down" | "no-scripts" => {
                finish(current.take(), &mut netmask, &mut parsed.stanzas);
            }
            option => {
                if let Some(stanza) = current.as_mut() {
                    match option {
                        "address" => stanza.address = words.get(1).map(|a| a.to_string()),
                        "netmask" => netmask = words.get(1).map(|m| m.to_string()),
                        _ => {}
                    }
                }
            }
        }
    }
    finish(current.take(), &mut netmask, &mut parsed.stanzas);
    parsed
}

/// Whether a file name is one `source-directory` includes (run-parts' rule).
pub fn sourced_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `name` matches the shell glob `pattern` (`*`, `?`; no classes), as a file name.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    // A leading dot is never matched by a wildcard.
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Removes `hwaddress` options (they would put the Azure NIC's MAC address on the new NIC);
/// `None` if there are none.
pub fn fix(text: &str) -> Option<Edit> {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    let mut stanza = String::new();
    for line in lines_with_endings(text) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("iface") => stanza = words.get(1).copied().unwrap_or_default().to_string(),
            Some("hwaddress") if !stanza.is_empty() => {
                changes.push(format!(
                    "{stanza}: removed `{}` (the Azure NIC's MAC address)",
                    line.trim()
                ));
                continue;
            }
            _ => {}
        }
        out.push_str(line);
    }
    (!changes.is_empty()).then_some(Edit { text: out, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Debian 12's installer-written /etc/network/interfaces, and what cloud-init's ENI
    // renderer writes on an Azure Debian 10/11 image.
    const DEBIAN_INTERFACES: &str = "\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback
";
    const CLOUD_INIT_ENI: &str = "\
# This file is generated from information provided by the datasource.  Changes
# to it will not persist across an instance reboot.  To disable cloud-init's
# network configuration capabilities, write a file
# /etc/cloud/cloud.cfg.d/99-disable-network-config.cfg with the following:
# network: {config: disabled}
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
    hwaddress ether 00:0d:3a:5e:21:7c
";

    #[test]
    fn parses_sources_and_loopback() {
        let parsed = parse(DEBIAN_INTERFACES);
        assert_eq!(
            parsed.sources,
            [Source::Glob("/etc/network/interfaces.d/*".into())]
        );
        assert_eq!(parsed.started, [("lo".into(), "auto".into())]);
        assert_eq!(parsed.stanzas.len(), 1);
        assert_eq!(parsed.stanzas[0].method, "loopback");
    }

    #[test]
    fn parses_cloud_init_eni_and_removes_hwaddress() {
        let parsed = parse(CLOUD_INIT_ENI);
        assert!(parsed.is_started("eth0"));
        assert_eq!(parsed.stanzas[1].name, "eth0");
        assert_eq!(parsed.stanzas[1].method, "dhcp");
        let edit = fix(CLOUD_INIT_ENI).unwrap();
        assert!(!edit.text.contains("hwaddress"));
        assert!(edit.text.ends_with("auto eth0\niface eth0 inet dhcp\n"));
        assert_eq!(
            edit.changes,
            ["eth0: removed `hwaddress ether 00:0d:3a:5e:21:7c` (the Azure NIC's MAC address)"]
        );
        assert_eq!(fix(&edit.text), None, "idempotent");
    }

    #[test]
    fn static_stanzas_keep_their_address() {
        let text = "\
allow-hotplug eth0
iface eth0 inet static
    address 10.0.0.4
    netmask 255.255.255.0
    gateway 10.0.0.1
iface eth0 inet6 auto
allow-hotplug eth1
iface eth1 inet static
  address 10.1.0.5/24
source-directory /etc/network/interfaces.d
mapping eth2
  script /usr/local/sbin/map
";
        let parsed = parse(text);
        assert_eq!(
            parsed.stanzas[0].address.as_deref(),
            Some("10.0.0.4 netmask 255.255.255.0")
        );
        assert_eq!(parsed.stanzas[1].family, "inet6");
        assert_eq!(parsed.stanzas[2].address.as_deref(), Some("10.1.0.5/24"));
        assert_eq!(
            parsed.started,
            [
                ("eth0".into(), "allow-hotplug".into()),
                ("eth1".into(), "allow-hotplug".into())
            ]
        );
        assert_eq!(
            parsed.sources,
            [Source::Directory("/etc/network/interfaces.d".into())]
        );
        assert_eq!(parsed.mappings, ["eth2"]);
        assert_eq!(fix(text), None);
    }

    #[test]
    fn continuation_lines_and_multiple_auto_names() {
        let text = "auto lo \\\n  eth0\niface eth0 inet \\\n dhcp\n";
        let parsed = parse(text);
        assert!(parsed.is_started("eth0"));
        assert_eq!(parsed.stanzas[0].method, "dhcp");
    }

    #[test]
    fn globs_and_run_parts_names() {
        assert!(glob_matches("*", "50-cloud-init"));
        assert!(!glob_matches("*", ".hidden"));
        assert!(glob_matches("*.cfg", "eth0.cfg"));
        assert!(!glob_matches("*.cfg", "eth0.cfg.bak"));
        assert!(glob_matches("eth?", "eth1"));
        assert!(sourced_name("50-cloud-init"));
        assert!(!sourced_name("eth0.cfg"));
        assert!(!sourced_name("eth0~"));
    }
}
