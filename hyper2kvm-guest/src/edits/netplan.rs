//! netplan's YAML (`/etc/netplan/*.yaml`: Ubuntu, and Debian 12 cloud images).
//!
//! On Azure, cloud-init writes `50-cloud-init.yaml` with each NIC matched by the Hyper-V
//! driver and its MAC address and renamed with `set-name`:
//!
//! ```yaml
//! network:
//!     ethernets:
//!         eth0:
//!             dhcp4: true
//!             match:
//!                 driver: hv_netvsc
//!                 macaddress: 00:0d:3a:5e:21:7c
//!             set-name: eth0
//!     version: 2
//! ```
//!
//! On KVM the NIC is virtio-net with another MAC, nothing matches, and the guest has no
//! network. Azure NICs get their addresses by DHCP (static addresses are set in Azure, not in
//! the guest), so such a file is rewritten to DHCP on any ethernet NIC, matched by name
//! (`en*`: predictable names such as `enp1s0`; `eth*`: kernel names), with no MAC and no
//! `set-name`.
//!
//! There is no YAML parser here (the crate keeps to `std`): the file is read for its shape,
//! by indentation. Only the shape cloud-init writes — `network:` holding `version`, `renderer`
//! and `ethernets`, each ethernet holding only DHCP settings and its match — is rewritten. A
//! file that also defines bonds, bridges, VLANs or Wi-Fi refers to its ethernets by name, and
//! an ethernet with routes, addresses or nameservers has settings for one particular NIC:
//! those are left alone with the reason, for a person to review.

use super::Edit;

/// The result of looking at one netplan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing in the file pins the NIC to Hyper-V.
    Unchanged,
    /// The file pinned the NIC; here is the file that does DHCP on any NIC.
    Rewritten(Edit),
    /// The file pins the NIC but has more than this rewrite can keep; why.
    LeftAlone(String),
}

/// Looks at a netplan file and rewrites it if it pins the NIC to Hyper-V (see the module docs).
pub fn rewrite(text: &str) -> Rewrite {
    let lines: Vec<Line> = text.lines().filter_map(Line::parse).collect();
    let pins = pins(&lines);
    if pins.is_empty() {
        return Rewrite::Unchanged;
    }
    let Some(network) = lines
        .iter()
        .position(|l| l.indent == 0 && l.key == "network")
    else {
        return Rewrite::LeftAlone("no top-level network: key".into());
    };
    if !lines[network].value.is_empty() {
        return Rewrite::LeftAlone("network: is written inline (flow style)".into());
    }
    if let Some(other) = lines.iter().find(|l| l.indent == 0 && l.key != "network") {
        return Rewrite::LeftAlone(format!("unexpected top-level key {}:", other.key));
    }
    let body = &lines[network + 1..];
    let Some(child_indent) = body.first().map(|l| l.indent) else {
        return Rewrite::LeftAlone("network: is empty".into());
    };
    let mut renderer = None;
    let mut ethernets_at = None;
    for (i, line) in body.iter().enumerate() {
        if line.indent != child_indent {
            continue;
        }
        match line.key.as_str() {
            "version" => {}
            "renderer" => renderer = Some(line.value.clone()),
            "ethernets" => ethernets_at = Some(i),
            other => {
                return Rewrite::LeftAlone(format!(
                    "network: also defines {other}:, which may refer to the ethernets by name"
                ))
            }
        }
    }
    let Some(ethernets_at) = ethernets_at else {
        return Rewrite::LeftAlone("network: has no ethernets:".into());
    };
    let ethernets: Vec<&Line> = body[ethernets_at + 1..]
        .iter()
        .take_while(|l| l.indent > child_indent)
        .collect();
    let entry_indent = ethernets.first().map_or(0, |l| l.indent);
    let names: Vec<&str> = ethernets
        .iter()
        .filter(|l| l.indent == entry_indent)
        .map(|l| l.key.as_str())
        .collect();
    // Settings other than DHCP and the NIC's identity (routes, addresses, nameservers…) belong
    // to one particular NIC, and which KVM NIC that is cannot be told from the file.
    let mut entry = "";
    let mut setting_indent = None;
    for line in &ethernets {
        if line.indent == entry_indent {
            entry = &line.key;
            setting_indent = None;
            continue;
        }
        if *setting_indent.get_or_insert(line.indent) != line.indent {
            continue;
        }
        if !CLOUD_INIT_KEYS.contains(&line.key.as_str()) {
            return Rewrite::LeftAlone(format!(
                "{entry} has {}:, which belongs to one Azure NIC; say which KVM NIC gets it",
                line.key
            ));
        }
    }

    let mut text = String::from(
        "# Written by hyper2kvm: DHCP on any ethernet NIC. On Azure, cloud-init's file matched\n\
         # the Hyper-V NIC by driver and MAC address; on KVM the NIC is virtio-net.\n\
         network:\n    version: 2\n",
    );
    if let Some(renderer) = renderer {
        text.push_str(&format!("    renderer: {renderer}\n"));
    }
    text.push_str("    ethernets:\n");
    for (id, pattern) in [("all-en", "en*"), ("all-eth", "eth*")] {
        text.push_str(&format!(
            "        {id}:\n            match:\n                name: \"{pattern}\"\n            dhcp4: true\n"
        ));
    }
    Rewrite::Rewritten(Edit {
        text,
        changes: vec![
            format!("{}: dropped {}", names.join(", "), pins.join(", ")),
            "DHCP on any en*/eth* NIC".to_string(),
        ],
    })
}

/// One `ethernets:` entry, as far as the network inspection needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ethernet {
    /// The entry's id: the interface name, unless `match:` is given.
    pub id: String,
    /// Whether it has a `match:` (by MAC, driver or name pattern).
    pub matched: bool,
    /// `match: macaddress:`, lower-cased.
    pub mac: Option<String>,
    /// `set-name:`.
    pub set_name: Option<String>,
    /// `dhcp4: true`.
    pub dhcp4: bool,
    /// `addresses:` given (static).
    pub addresses: bool,
}

/// The `ethernets:` entries of a netplan file (block style; flow style yields none).
pub fn ethernets(text: &str) -> Vec<Ethernet> {
    let lines: Vec<Line> = text.lines().filter_map(Line::parse).collect();
    let mut out: Vec<Ethernet> = Vec::new();
    let mut ethernets_indent = None;
    let mut entry_indent = None;
    for line in &lines {
        if line.key == "ethernets" && line.value.is_empty() {
            ethernets_indent = Some(line.indent);
            entry_indent = None;
            continue;
        }
        let Some(base) = ethernets_indent else {
            continue;
        };
        if line.indent <= base {
            ethernets_indent = None;
            continue;
        }
        let indent = *entry_indent.get_or_insert(line.indent);
        if line.indent == indent {
            out.push(Ethernet {
                id: line.key.clone(),
                ..Ethernet::default()
            });
            continue;
        }
        let Some(entry) = out.last_mut() else {
            continue;
        };
        match line.key.as_str() {
            "match" => entry.matched = true,
            "macaddress" => entry.mac = Some(line.value.to_ascii_lowercase()),
            "set-name" => entry.set_name = Some(line.value.clone()),
            "dhcp4" => entry.dhcp4 = matches!(line.value.as_str(), "true" | "yes" | "on"),
            "addresses" => entry.addresses = true,
            _ => {}
        }
    }
    out
}

/// The settings cloud-init writes for an Azure NIC: DHCP and the NIC's identity, nothing a
/// rewrite to DHCP on any NIC loses.
const CLOUD_INIT_KEYS: [&str; 7] = [
    "dhcp4",
    "dhcp4-overrides",
    "dhcp6",
    "dhcp6-overrides",
    "match",
    "set-name",
    "optional",
];

/// What ties the file to the Hyper-V NIC, for the report.
fn pins(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| match l.key.as_str() {
            "macaddress" => Some(format!("MAC {}", l.value)),
            "set-name" => Some(format!("set-name {}", l.value)),
            "driver" if l.value.contains("hv_netvsc") => Some(format!("driver {}", l.value)),
            // Flow style (`{match: {macaddress: …}}`): pinned, but not for this rewrite to say how.
            _ if ["macaddress", "set-name", "hv_netvsc"]
                .iter()
                .any(|pin| l.value.contains(pin)) =>
            {
                Some(format!("{} (inline)", l.key))
            }
            _ => None,
        })
        .collect()
}

/// A significant YAML line: its indentation, key and inline value (comments dropped).
struct Line {
    indent: usize,
    key: String,
    value: String,
}

impl Line {
    fn parse(raw: &str) -> Option<Line> {
        let content = raw.trim_start();
        if content.is_empty() || content.starts_with('#') {
            return None;
        }
        let indent = raw.len() - content.len();
        let content = match content.find(" #") {
            Some(i) => &content[..i],
            None => content,
        };
        let (key, value) = content.split_once(':').unwrap_or((content, ""));
        Some(Line {
            indent,
            key: key
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string(),
            value: value
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // cloud-init's 50-cloud-init.yaml on an Ubuntu 22.04 / Debian 12 Azure VM.
    const AZURE: &str = "\
# This file is generated from information provided by the datasource.  Changes
# to it will not persist across an instance reboot.  To disable cloud-init's
# network configuration capabilities, write a file
# /etc/cloud/cloud.cfg.d/99-disable-network-config.cfg with the following:
# network: {config: disabled}
network:
    ethernets:
        eth0:
            dhcp4: true
            dhcp4-overrides:
                route-metric: 100
            dhcp6: false
            match:
                driver: hv_netvsc
                macaddress: 00:0d:3a:5e:21:7c
            set-name: eth0
    version: 2
";

    const EXPECTED: &str = "\
# Written by hyper2kvm: DHCP on any ethernet NIC. On Azure, cloud-init's file matched
# the Hyper-V NIC by driver and MAC address; on KVM the NIC is virtio-net.
network:
    version: 2
    ethernets:
        all-en:
            match:
                name: \"en*\"
            dhcp4: true
        all-eth:
            match:
                name: \"eth*\"
            dhcp4: true
";

    #[test]
    fn rewrites_cloud_init_azure_file_to_dhcp_on_any_nic() {
        let Rewrite::Rewritten(edit) = rewrite(AZURE) else {
            panic!("not rewritten: {:?}", rewrite(AZURE));
        };
        assert_eq!(edit.text, EXPECTED);
        assert_eq!(
            edit.changes,
            [
                "eth0: dropped driver hv_netvsc, MAC 00:0d:3a:5e:21:7c, set-name eth0",
                "DHCP on any en*/eth* NIC"
            ]
        );
        assert!(!edit.text.contains("macaddress") && !edit.text.contains("set-name"));
        assert_eq!(rewrite(&edit.text), Rewrite::Unchanged, "idempotent");
    }

    #[test]
    fn two_nics_with_renderer_and_two_space_indent() {
        // A VM with two NICs (accelerated networking off), as cloud-init renders it with an
        // explicit renderer, written with 2-space indentation.
        let text = "\
network:
  version: 2
  renderer: networkd
  ethernets:
    eth0:
      dhcp4: true
      match:
        macaddress: '00:0d:3a:5e:21:7c'
        driver: hv_netvsc
      set-name: eth0
    eth1:
      dhcp4: true
      match:
        macaddress: '00:0d:3a:5e:21:7d'
        driver: hv_netvsc
      set-name: eth1
";
        let Rewrite::Rewritten(edit) = rewrite(text) else {
            panic!("not rewritten");
        };
        assert!(edit
            .text
            .contains("    version: 2\n    renderer: networkd\n    ethernets:\n"));
        assert!(edit.changes[0].starts_with("eth0, eth1: dropped MAC 00:0d:3a:5e:21:7c"));
    }

    #[test]
    fn lists_ethernets() {
        let found = ethernets(AZURE);
        assert_eq!(
            found,
            [Ethernet {
                id: "eth0".into(),
                matched: true,
                mac: Some("00:0d:3a:5e:21:7c".into()),
                set_name: Some("eth0".into()),
                dhcp4: true,
                addresses: false,
            }]
        );
        let plain = ethernets("network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: yes\n    eth1:\n      addresses: [10.0.1.4/24]\n");
        assert_eq!(plain.len(), 2);
        assert!(!plain[0].matched && plain[0].dhcp4);
        assert!(plain[1].addresses);
    }

    #[test]
    fn a_file_without_pins_is_unchanged() {
        let text = "network:\n  version: 2\n  ethernets:\n    enp1s0:\n      dhcp4: true\n";
        assert_eq!(rewrite(text), Rewrite::Unchanged);
    }

    #[test]
    fn bridges_are_left_for_review() {
        let text = "\
network:
  version: 2
  ethernets:
    eth0:
      match:
        macaddress: 00:0d:3a:5e:21:7c
      set-name: eth0
  bridges:
    br0:
      interfaces: [eth0]
      dhcp4: true
";
        match rewrite(text) {
            Rewrite::LeftAlone(why) => assert!(why.contains("bridges"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn per_nic_routes_are_left_for_review() {
        // A second NIC to which the user added a static route, as Azure's docs for network
        // virtual appliances have users do in cloud-init's file.
        let text = "\
network:
    ethernets:
        eth0:
            dhcp4: true
            dhcp4-overrides:
                route-metric: 100
            dhcp6: false
            match:
                driver: hv_netvsc
                macaddress: 00:0d:3a:96:4a:15
            set-name: eth0
        eth1:
            dhcp4: true
            dhcp4-overrides:
                route-metric: 200
            dhcp6: false
            match:
                driver: hv_netvsc
                macaddress: 00:0d:3a:42:00:81
            set-name: eth1
            routes:
              - to: 10.0.1.64/27
                via: 10.0.1.1
    version: 2
";
        match rewrite(text) {
            Rewrite::LeftAlone(why) => assert!(why.starts_with("eth1 has routes:"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flow_style_is_left_for_review() {
        let text = "network: {version: 2, ethernets: {eth0: {match: {macaddress: '00:0d:3a:5e:21:7c'}, dhcp4: true}}}\n";
        assert!(matches!(rewrite(text), Rewrite::LeftAlone(_)));
    }
}
