//! What brings the guest's network up: which stack is enabled, which files configure which NIC,
//! and how the guest names its NICs.
//!
//! Detect, don't assume: an Azure image may carry ifupdown, NetworkManager and
//! systemd-networkd at once with one of them enabled, and leftovers of another stack's files.
//! The inspection reads the systemd links (`*.wants/`) and init scripts that start each stack,
//! every configuration file of every stack, and the naming rules; the network fix-ups act on
//! what it found, and the report shows it as the guest's network plan.
//!
//! # Names
//!
//! On Azure the NIC is `hv_netvsc` on VMBus: it has no PCI path, so udev's predictable naming
//! leaves it the kernel's name, `eth0`, and every Azure guest's configuration says `eth0`. On
//! KVM it is virtio-net on PCI and becomes `enp1s0` (or `ens3`…) under predictable naming,
//! which no file names. When an enabled stack's configuration names `ethN` and the guest uses
//! predictable names, the `interface-names` fix-up adds `net.ifnames=0` to the kernel command
//! line, so the NICs keep the names the guest expects everywhere (network files, firewall
//! rules, services bound to `eth0`), in the order the kernel finds them, as on Azure.

use std::collections::BTreeMap;
use std::fmt;

use crate::edits::{grub_default, ifcfg, ifupdown, netplan, nm_keyfile, systemd_net, udev_net};
use crate::guestfs::GuestFs;
use crate::Result;

/// A network configuration system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stack {
    /// ifupdown: `/etc/network/interfaces`, `networking.service`.
    Ifupdown,
    /// netplan: `/etc/netplan/*.yaml`, rendered at boot for networkd or NetworkManager.
    Netplan,
    /// systemd-networkd: `/etc/systemd/network/*.network`.
    Networkd,
    /// NetworkManager: keyfiles, or ifcfg files through its ifcfg-rh plugin (RHEL 7–9).
    NetworkManager,
    /// SUSE's wicked: `/etc/sysconfig/network/ifcfg-*`.
    Wicked,
    /// RHEL's legacy `network` init script: `/etc/sysconfig/network-scripts/ifcfg-*`.
    NetworkScripts,
}

impl Stack {
    /// The stack's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Stack::Ifupdown => "ifupdown",
            Stack::Netplan => "netplan",
            Stack::Networkd => "systemd-networkd",
            Stack::NetworkManager => "NetworkManager",
            Stack::Wicked => "wicked",
            Stack::NetworkScripts => "network-scripts",
        }
    }
}

/// Whether a stack starts at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackState {
    /// It starts at boot; the evidence (the link or script found).
    Enabled(String),
    /// Installed, but nothing starts it.
    Installed,
    /// Not installed.
    Absent,
}

/// How the guest names NICs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// udev's predictable names (`enp1s0`): systemd's default.
    Predictable,
    /// The kernel's names (`eth0`); why (`net.ifnames=0 in /etc/default/grub`…).
    Kernel(String),
}

/// One NIC configuration found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    /// The file.
    pub file: String,
    /// The format and the stacks that read it.
    pub format: &'static str,
    /// What it applies to: `eth0`, `MAC 00:0d:3a:…`, `any ethernet`…
    pub applies_to: String,
    /// The interface name it needs to exist once the fix-ups are done (`eth0`), if any.
    pub needs_name: Option<String>,
    /// How it configures addresses: `dhcp`, `static 10.0.0.4/24`, `manual`…
    pub method: String,
    /// Whether it brings the NIC up at boot.
    pub at_boot: bool,
    /// Whether it is read by a stack that is enabled (or whose state could not be told).
    pub active: bool,
}

/// The network inspection's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInspection {
    /// Each stack's state.
    pub stacks: Vec<(Stack, StackState)>,
    /// Every NIC configuration found.
    pub configs: Vec<NicConfig>,
    /// How the guest names NICs.
    pub naming: Naming,
    /// MAC addresses pinned by the configuration, in the order found, with the name each NIC
    /// had on Azure where a file says it.
    pub pinned_macs: Vec<(String, Option<String>)>,
    /// Why the guest must keep kernel names (`net.ifnames=0`), if it must.
    pub kernel_names_needed: Option<String>,
}

impl Default for NetworkInspection {
    fn default() -> Self {
        NetworkInspection {
            stacks: Vec::new(),
            configs: Vec::new(),
            naming: Naming::Predictable,
            pinned_macs: Vec::new(),
            kernel_names_needed: None,
        }
    }
}

impl NetworkInspection {
    /// The state of `stack`.
    pub fn state(&self, stack: Stack) -> &StackState {
        self.stacks
            .iter()
            .find(|(s, _)| *s == stack)
            .map(|(_, state)| state)
            .unwrap_or(&StackState::Absent)
    }

    /// Whether `stack` starts at boot.
    pub fn enabled(&self, stack: Stack) -> bool {
        matches!(self.state(stack), StackState::Enabled(_))
    }

    /// The kernel name (`eth0`, `eth1`…) the NIC with `mac` had on Azure: its position among
    /// the pinned MAC addresses, in the order the configuration lists them.
    pub fn kernel_name_for(&self, mac: &str) -> String {
        let index = self
            .pinned_macs
            .iter()
            .position(|(m, _)| m == mac)
            .unwrap_or(0);
        format!("eth{index}")
    }

    /// The name the NIC with `mac` had on Azure: the name a file gives it, else its kernel name.
    pub fn azure_name_for(&self, mac: &str) -> String {
        self.pinned_macs
            .iter()
            .find(|(m, _)| m == mac)
            .and_then(|(_, name)| name.clone())
            .unwrap_or_else(|| self.kernel_name_for(mac))
    }

    /// The plan, one line each, for the report.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (stack, state) in &self.stacks {
            let state = match state {
                StackState::Enabled(why) => format!("enabled ({why})"),
                StackState::Installed => "installed, not enabled".to_string(),
                StackState::Absent => continue,
            };
            lines.push(format!("stack {}: {state}", stack.as_str()));
        }
        if !self
            .stacks
            .iter()
            .any(|(_, s)| matches!(s, StackState::Enabled(_)))
        {
            lines.push("no network stack is enabled".to_string());
        }
        for config in &self.configs {
            lines.push(config.to_string());
        }
        if !self.configs.iter().any(|c| c.active && c.at_boot) {
            lines.push(
                "no enabled configuration brings a NIC up at boot: the guest will have no network"
                    .to_string(),
            );
        }
        lines.push(match (&self.naming, &self.kernel_names_needed) {
            (Naming::Kernel(why), _) => format!("naming: kernel names (eth0…): {why}"),
            (Naming::Predictable, Some(why)) => format!(
                "naming: predictable (the virtio NIC would be enp1s0), but {why}: kernel names kept with net.ifnames=0"
            ),
            (Naming::Predictable, None) => {
                "naming: predictable (enp1s0…); no enabled configuration needs eth names"
                    .to_string()
            }
        });
        lines
    }
}

impl fmt::Display for NicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {} {}{}{}",
            self.file,
            self.format,
            self.applies_to,
            self.method,
            if self.at_boot { "" } else { ", not at boot" },
            if self.active {
                ""
            } else {
                " [stack not enabled]"
            }
        )
    }
}

/// Where `systemctl enable` puts the links that start units at boot.
const WANTS_DIRS: [&str; 6] = [
    "/etc/systemd/system/multi-user.target.wants",
    "/etc/systemd/system/network-online.target.wants",
    "/etc/systemd/system/network.target.wants",
    "/etc/systemd/system/sockets.target.wants",
    "/etc/systemd/system/default.target.wants",
    "/etc/systemd/system/sysinit.target.wants",
];

fn any_exists(guest: &mut dyn GuestFs, paths: &[&str]) -> Result<bool> {
    for path in paths {
        if guest.exists(path)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The wants link that enables one of `units`, as `dir/unit`.
fn wanted(guest: &mut dyn GuestFs, units: &[&str]) -> Result<Option<String>> {
    for dir in WANTS_DIRS {
        for unit in units {
            let path = format!("{dir}/{unit}");
            if guest.exists(&path)? {
                let target = dir.rsplit('/').next().unwrap_or(dir);
                return Ok(Some(format!(
                    "{unit} wanted by {}",
                    target.trim_end_matches(".wants")
                )));
            }
        }
    }
    Ok(None)
}

/// A SysV init script started in a runlevel (`/etc/rc3.d/S10network`).
fn sysv_started(guest: &mut dyn GuestFs, script: &str) -> Result<Option<String>> {
    for dir in ["/etc/rc.d/rc3.d", "/etc/rc3.d", "/etc/rc2.d", "/etc/rcS.d"] {
        for name in guest.list(dir)? {
            if name.starts_with('S')
                && name.trim_start_matches(|c: char| c == 'S' || c.is_ascii_digit()) == script
            {
                return Ok(Some(format!("{dir}/{name}")));
            }
        }
    }
    Ok(None)
}

fn state(installed: bool, enabled: Option<String>) -> StackState {
    match (enabled, installed) {
        (Some(why), _) => StackState::Enabled(why),
        (None, true) => StackState::Installed,
        (None, false) => StackState::Absent,
    }
}

fn stacks(guest: &mut dyn GuestFs) -> Result<Vec<(Stack, StackState)>> {
    let mut out = Vec::new();
    let ifup = any_exists(guest, &["/sbin/ifup", "/usr/sbin/ifup"])?;
    let mut enabled = wanted(guest, &["networking.service"])?;
    if enabled.is_none() {
        enabled = sysv_started(guest, "networking")?;
    }
    out.push((Stack::Ifupdown, state(ifup, enabled)));

    let netplan = any_exists(guest, &["/usr/sbin/netplan", "/sbin/netplan"])?;
    let yaml = !crate::fixups::yaml_files(guest, "/etc/netplan")?.is_empty();
    let enabled =
        (netplan && yaml).then(|| "its generator renders /etc/netplan at boot".to_string());
    out.push((Stack::Netplan, state(netplan, enabled)));

    let networkd = any_exists(
        guest,
        &[
            "/lib/systemd/systemd-networkd",
            "/usr/lib/systemd/systemd-networkd",
        ],
    )?;
    let enabled = wanted(
        guest,
        &["systemd-networkd.service", "systemd-networkd.socket"],
    )?;
    out.push((Stack::Networkd, state(networkd, enabled)));

    let nm = any_exists(guest, &["/usr/sbin/NetworkManager", "/sbin/NetworkManager"])?;
    let enabled = wanted(guest, &["NetworkManager.service"])?;
    out.push((Stack::NetworkManager, state(nm, enabled)));

    let wicked = any_exists(guest, &["/usr/sbin/wicked", "/sbin/wicked"])?;
    let mut enabled = wanted(guest, &["wicked.service"])?;
    if enabled.is_none()
        && guest
            .read("/etc/systemd/system/network.service")?
            .is_some_and(|unit| unit.contains("wicked"))
    {
        enabled = Some("network.service is wicked.service".to_string());
    }
    out.push((Stack::Wicked, state(wicked, enabled)));

    let scripts = any_exists(guest, &["/etc/rc.d/init.d/network", "/etc/init.d/network"])?;
    let enabled = match wanted(guest, &["network.service"])? {
        Some(why) if scripts => Some(why),
        _ => sysv_started(guest, "network")?,
    };
    out.push((Stack::NetworkScripts, state(scripts, enabled)));
    Ok(out)
}

/// Whether a file read by these stacks is in use: one of them is enabled, or none of them is
/// installed (so we could not tell, and assume it is).
fn active(stacks: &[(Stack, StackState)], readers: &[Stack]) -> bool {
    let states: Vec<&StackState> = stacks
        .iter()
        .filter(|(s, _)| readers.contains(s))
        .map(|(_, state)| state)
        .collect();
    states.iter().any(|s| matches!(s, StackState::Enabled(_)))
        || states.iter().all(|s| **s == StackState::Absent)
}

fn is_kernel_name(name: &str) -> bool {
    name.strip_prefix("eth")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The files `/etc/network/interfaces` brings in, itself first, following `source` lines.
pub fn ifupdown_files(guest: &mut dyn GuestFs) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let mut queue = vec!["/etc/network/interfaces".to_string()];
    while let Some(path) = queue.pop() {
        if files.len() >= 256 || files.iter().any(|(p, _)| *p == path) {
            continue;
        }
        let Some(text) = guest.read(&path)? else {
            continue;
        };
        let mut found = Vec::new();
        for source in ifupdown::parse(&text).sources {
            match source {
                ifupdown::Source::Glob(pattern) => {
                    let (dir, name) = match pattern.rsplit_once('/') {
                        Some((dir, name)) => (dir.to_string(), name.to_string()),
                        None => ("/etc/network".to_string(), pattern.clone()),
                    };
                    for entry in guest.list(&dir)? {
                        if ifupdown::glob_matches(&name, &entry) {
                            found.push(format!("{dir}/{entry}"));
                        }
                    }
                }
                ifupdown::Source::Directory(dir) => {
                    for entry in guest.list(&dir)? {
                        if ifupdown::sourced_name(&entry) {
                            found.push(format!("{dir}/{entry}"));
                        }
                    }
                }
            }
        }
        files.push((path, text));
        // Depth first, in order: reverse onto the stack.
        queue.extend(found.into_iter().rev());
    }
    Ok(files)
}

/// The systemd `.network` and `.link` files under `/etc/systemd/network`.
pub fn systemd_files(guest: &mut dyn GuestFs) -> Result<Vec<(String, systemd_net::Kind)>> {
    let mut out = Vec::new();
    for name in guest.list("/etc/systemd/network")? {
        if let Some(kind) = systemd_net::Kind::of(&name) {
            out.push((format!("/etc/systemd/network/{name}"), kind));
        }
    }
    Ok(out)
}

/// The ifcfg files of RHEL (`network-scripts`) and SUSE (`network`), `ifcfg-lo` left out.
pub fn ifcfg_files(guest: &mut dyn GuestFs) -> Result<Vec<(String, Stack)>> {
    let mut out = Vec::new();
    for (dir, stack) in [
        ("/etc/sysconfig/network-scripts", Stack::NetworkScripts),
        ("/etc/sysconfig/network", Stack::Wicked),
    ] {
        for name in guest.list(dir)? {
            if name.starts_with("ifcfg-") && name != "ifcfg-lo" && !name.ends_with('~') {
                out.push((format!("{dir}/{name}"), stack));
            }
        }
    }
    Ok(out)
}

/// The udev rules files under `/etc/udev/rules.d`.
pub fn udev_rule_files(guest: &mut dyn GuestFs) -> Result<Vec<String>> {
    Ok(guest
        .list("/etc/udev/rules.d")?
        .into_iter()
        .filter(|n| n.ends_with(".rules"))
        .map(|n| format!("/etc/udev/rules.d/{n}"))
        .collect())
}

/// Whether the file at `path` exists and is masked (a link to `/dev/null`: exists, but is not
/// a regular file, or is empty).
fn masked(guest: &mut dyn GuestFs, path: &str) -> Result<bool> {
    Ok(guest.exists(path)? && guest.read(path)?.is_none_or(|t| t.trim().is_empty()))
}

fn naming(guest: &mut dyn GuestFs) -> Result<Naming> {
    let off = |params: Vec<String>| params.iter().any(|p| p == "net.ifnames=0");
    if let Some(text) = guest.read(grub_default::PATH)? {
        if off(grub_default::cmdline_params(&text)) {
            return Ok(Naming::Kernel(format!(
                "net.ifnames=0 in {}",
                grub_default::PATH
            )));
        }
    }
    let mut cmdlines: Vec<String> = Vec::new();
    for name in guest.list("/etc/default/grub.d")? {
        if name.ends_with(".cfg") {
            cmdlines.push(format!("/etc/default/grub.d/{name}"));
        }
    }
    for path in cmdlines {
        if let Some(text) = guest.read(&path)? {
            if off(grub_default::cmdline_params(&text)) {
                return Ok(Naming::Kernel(format!("net.ifnames=0 in {path}")));
            }
        }
    }
    let mut others = vec!["/etc/kernel/cmdline".to_string()];
    for name in guest.list("/boot/loader/entries")? {
        if name.ends_with(".conf") {
            others.push(format!("/boot/loader/entries/{name}"));
        }
    }
    for path in others {
        if guest
            .read(&path)?
            .is_some_and(|t| t.split_whitespace().any(|w| w == "net.ifnames=0"))
        {
            return Ok(Naming::Kernel(format!("net.ifnames=0 in {path}")));
        }
    }
    for path in [
        "/etc/systemd/network/99-default.link",
        "/etc/udev/rules.d/80-net-setup-link.rules",
        "/etc/udev/rules.d/80-net-name-slot.rules",
    ] {
        if masked(guest, path)? {
            return Ok(Naming::Kernel(format!("{path} masks predictable naming")));
        }
    }
    if !any_exists(guest, &["/lib/udev", "/usr/lib/udev"])? {
        return Ok(Naming::Kernel("no udev to rename NICs".into()));
    }
    Ok(Naming::Predictable)
}

/// Inspects the guest's network (see the module docs).
pub fn inspect(guest: &mut dyn GuestFs) -> Result<NetworkInspection> {
    let stacks = stacks(guest)?;
    let mut configs = Vec::new();
    let mut pinned: Vec<(String, Option<String>)> = Vec::new();
    let mut pin = |mac: &str, name: Option<&str>| {
        let mac = mac.to_ascii_lowercase();
        match pinned.iter_mut().find(|(m, _)| *m == mac) {
            Some((_, known)) => {
                if known.is_none() {
                    *known = name.map(String::from);
                }
            }
            None => pinned.push((mac, name.map(String::from))),
        }
    };

    // Naming rules first: they say which name each pinned MAC had.
    let mut rule_names = Vec::new();
    for path in udev_rule_files(guest)? {
        let Some(text) = guest.read(&path)? else {
            continue;
        };
        for rule in udev_net::pinned_rules(&text) {
            if let Some(mac) = &rule.mac {
                pin(mac, Some(&rule.name));
            }
            rule_names.push((path.clone(), rule.name));
        }
    }
    let systemd = systemd_files(guest)?;
    let mut systemd_read = Vec::new();
    for (path, kind) in &systemd {
        let Some(text) = guest.read(path)? else {
            continue;
        };
        let matched = systemd_net::read(&text, *kind);
        for mac in &matched.macs {
            let name = match kind {
                systemd_net::Kind::Link => matched.link_name.as_deref(),
                systemd_net::Kind::Network => matched.names.first().map(String::as_str),
            };
            pin(mac, name);
        }
        systemd_read.push((path.clone(), *kind, matched));
    }
    let mut netplan_read = Vec::new();
    for path in crate::fixups::yaml_files(guest, "/etc/netplan")? {
        let Some(text) = guest.read(&path)? else {
            continue;
        };
        let found = netplan::ethernets(&text);
        for e in &found {
            if let Some(mac) = &e.mac {
                pin(mac, e.set_name.as_deref().or(Some(e.id.as_str())));
            }
        }
        netplan_read.push((path, found));
    }
    let mut ifcfg_read = Vec::new();
    for (path, stack) in ifcfg_files(guest)? {
        let Some(text) = guest.read(&path)? else {
            continue;
        };
        let cfg = ifcfg::read(&text);
        let device = cfg
            .device
            .clone()
            .or_else(|| path.rsplit_once("ifcfg-").map(|(_, n)| n.to_string()));
        if let Some(mac) = &cfg.hwaddr {
            pin(mac, device.as_deref());
        }
        ifcfg_read.push((path, stack, cfg, device));
    }
    let mut nm_read = Vec::new();
    for name in guest.list("/etc/NetworkManager/system-connections")? {
        let path = format!("/etc/NetworkManager/system-connections/{name}");
        let Some(text) = guest.read(&path)? else {
            continue;
        };
        let k = nm_keyfile::read(&text);
        if let Some(mac) = &k.mac {
            pin(mac, k.interface_name.as_deref());
        }
        nm_read.push((path, k));
    }

    let mut inspection = NetworkInspection {
        stacks,
        configs: Vec::new(),
        naming: naming(guest)?,
        pinned_macs: pinned,
        kernel_names_needed: None,
    };
    let stacks = &inspection.stacks;

    // ifupdown.
    let files = ifupdown_files(guest)?;
    let parsed: Vec<(String, ifupdown::Interfaces)> = files
        .iter()
        .map(|(p, t)| (p.clone(), ifupdown::parse(t)))
        .collect();
    let started: Vec<(String, String)> = parsed
        .iter()
        .flat_map(|(_, p)| p.started.iter().cloned())
        .collect();
    // ifupdown's own programs tell for sure whether it is there: without them its files are
    // leftovers that nothing reads (unlike the other stacks, no "could not tell" here).
    let ifupdown_active = inspection.enabled(Stack::Ifupdown)
        || (inspection.state(Stack::Ifupdown) != &StackState::Absent
            && started.iter().any(|(_, how)| how == "allow-hotplug")
            && any_exists(
                guest,
                &[
                    "/lib/udev/rules.d/80-ifupdown.rules",
                    "/usr/lib/udev/rules.d/80-ifupdown.rules",
                ],
            )?);
    for (path, p) in &parsed {
        for stanza in &p.stanzas {
            if stanza.method == "loopback" || stanza.name == "lo" {
                continue;
            }
            let how = started.iter().find(|(n, _)| *n == stanza.name);
            let method = match &stanza.address {
                Some(address) => format!("{} {address}", stanza.method),
                None => stanza.method.clone(),
            };
            configs.push(NicConfig {
                file: path.clone(),
                format: "ifupdown",
                applies_to: match how {
                    Some((_, how)) => format!("{} ({how})", stanza.name),
                    None => stanza.name.clone(),
                },
                needs_name: Some(stanza.name.clone()),
                method: format!("{} {method}", stanza.family),
                at_boot: how.is_some(),
                active: ifupdown_active,
            });
        }
    }

    // netplan.
    for (path, ethernets) in &netplan_read {
        for e in ethernets {
            let (applies_to, needs_name) = match (&e.mac, e.matched) {
                (Some(mac), _) => (
                    format!("MAC {mac} as {}", e.set_name.as_deref().unwrap_or(&e.id)),
                    None,
                ),
                (None, true) => (format!("{} (by match)", e.id), None),
                (None, false) => (e.id.clone(), Some(e.id.clone())),
            };
            configs.push(NicConfig {
                file: path.clone(),
                format: "netplan",
                applies_to,
                needs_name,
                method: if e.addresses {
                    "static".into()
                } else if e.dhcp4 {
                    "dhcp".into()
                } else {
                    "no address".into()
                },
                at_boot: true,
                active: active(stacks, &[Stack::Netplan]),
            });
        }
    }

    // systemd-networkd (.network; .link files name NICs, they configure nothing).
    for (path, kind, m) in &systemd_read {
        if *kind != systemd_net::Kind::Network {
            continue;
        }
        let needs_name = match m.names.first() {
            Some(name) => Some(name.clone()),
            None => m.macs.first().map(|mac| inspection.azure_name_for(mac)),
        };
        let mut applies_to = Vec::new();
        applies_to.extend(m.names.iter().cloned());
        applies_to.extend(m.macs.iter().map(|mac| format!("MAC {mac}")));
        if m.hyperv_driver {
            applies_to.push("driver hv_netvsc".into());
        }
        let method = if !m.addresses.is_empty() {
            format!("static {}", m.addresses.join(" "))
        } else if let Some(dhcp) = &m.dhcp {
            format!("DHCP={dhcp}")
        } else {
            "no address".into()
        };
        configs.push(NicConfig {
            file: path.clone(),
            format: "systemd-networkd",
            applies_to: if applies_to.is_empty() {
                "any NIC".into()
            } else {
                applies_to.join(", ")
            },
            needs_name,
            method,
            at_boot: true,
            active: active(stacks, &[Stack::Networkd]),
        });
    }

    // NetworkManager keyfiles.
    for (path, k) in &nm_read {
        if k.kind
            .as_deref()
            .is_some_and(|t| t != "ethernet" && t != "802-3-ethernet")
        {
            continue;
        }
        let applies_to = match (&k.interface_name, &k.mac) {
            (Some(name), Some(mac)) => format!("{name}, MAC {mac}"),
            (Some(name), None) => name.clone(),
            (None, Some(mac)) => format!("MAC {mac}"),
            (None, None) => "any ethernet".into(),
        };
        let method = match k.ipv4_method.as_deref() {
            Some("manual") => format!("static {}", k.addresses.join(" ")),
            Some("auto") | None => "dhcp".into(),
            Some(other) => other.to_string(),
        };
        configs.push(NicConfig {
            file: path.clone(),
            format: "NetworkManager keyfile",
            applies_to,
            needs_name: k.interface_name.clone(),
            method,
            at_boot: k.autoconnect,
            active: active(stacks, &[Stack::NetworkManager]),
        });
    }

    // ifcfg: RHEL's (NetworkManager's ifcfg-rh plugin or network-scripts), SUSE's (wicked).
    for (path, stack, cfg, device) in &ifcfg_read {
        let readers: &[Stack] = match stack {
            Stack::Wicked => &[Stack::Wicked],
            _ => &[Stack::NetworkManager, Stack::NetworkScripts],
        };
        let method = match (&cfg.bootproto, &cfg.address) {
            (_, Some(address)) => format!("static {address}"),
            (Some(proto), None) => proto.clone(),
            (None, None) => "none".into(),
        };
        let at_boot = cfg.onboot.as_deref().is_none_or(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "yes" | "auto" | "onboot" | "hotplug" | "nfsroot"
            )
        });
        configs.push(NicConfig {
            file: path.clone(),
            format: if *stack == Stack::Wicked {
                "ifcfg (wicked)"
            } else {
                "ifcfg"
            },
            applies_to: match (device, &cfg.hwaddr) {
                (Some(d), Some(mac)) => format!("{d}, MAC {mac}"),
                (Some(d), None) => d.clone(),
                (None, Some(mac)) => format!("MAC {mac}"),
                (None, None) => "unnamed".into(),
            },
            needs_name: device.clone(),
            method,
            at_boot,
            active: active(stacks, readers),
        });
    }

    // The names that must exist once the fix-ups are done.
    let mut needs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for config in &configs {
        if let Some(name) = &config.needs_name {
            if config.active && config.at_boot && is_kernel_name(name) {
                needs
                    .entry(name.clone())
                    .or_default()
                    .push(config.file.clone());
            }
        }
    }
    for (path, kind, m) in &systemd_read {
        if *kind == systemd_net::Kind::Link && m.pinned() {
            let name = inspection.kernel_name_for(&m.macs.first().cloned().unwrap_or_default());
            needs.entry(name).or_default().push(path.clone());
        }
    }
    for (path, name) in rule_names {
        if is_kernel_name(&name) {
            needs.entry(name).or_default().push(path);
        }
    }
    if inspection.naming == Naming::Predictable && !needs.is_empty() {
        let why: Vec<String> = needs
            .iter()
            .map(|(name, files)| {
                let mut files = files.clone();
                files.dedup();
                format!("{name} ({})", files.join(", "))
            })
            .collect();
        inspection.kernel_names_needed =
            Some(format!("the configuration names {}", why.join(", ")));
    }
    inspection.configs = configs;
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestfs::memory::MemoryGuest;

    const MAC: &str = "00:0d:3a:5e:21:7c";

    /// The boot matrix's Debian 12 ifupdown guest: all three stacks installed, ifupdown
    /// enabled, a persistent-net rule pinning eth0.
    pub(crate) fn debian_ifupdown() -> MemoryGuest {
        MemoryGuest::with(&[
            ("/sbin/ifup", ""),
            ("/usr/sbin/NetworkManager", ""),
            ("/lib/systemd/systemd-networkd", ""),
            ("/lib/udev/rules.d/80-ifupdown.rules", ""),
            ("/etc/systemd/system/multi-user.target.wants/networking.service", ""),
            ("/etc/network/interfaces", "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n"),
            ("/etc/network/interfaces.d/50-cloud-init", "allow-hotplug eth0\niface eth0 inet dhcp\n"),
            ("/etc/udev/rules.d/70-persistent-net.rules", "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:0d:3a:5e:21:7c\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n"),
            ("/etc/default/grub", "GRUB_CMDLINE_LINUX=\"console=ttyS0\"\n"),
        ])
    }

    #[test]
    fn ifupdown_guest_needs_kernel_names() {
        let mut guest = debian_ifupdown();
        let n = inspect(&mut guest).unwrap();
        assert!(
            matches!(n.state(Stack::Ifupdown), StackState::Enabled(why) if why == "networking.service wanted by multi-user.target")
        );
        assert_eq!(n.state(Stack::NetworkManager), &StackState::Installed);
        assert_eq!(n.state(Stack::Networkd), &StackState::Installed);
        assert_eq!(n.state(Stack::Wicked), &StackState::Absent);
        assert_eq!(n.configs.len(), 1);
        let c = &n.configs[0];
        assert_eq!(c.file, "/etc/network/interfaces.d/50-cloud-init");
        assert_eq!(c.applies_to, "eth0 (allow-hotplug)");
        assert!(c.active && c.at_boot);
        assert_eq!(n.pinned_macs, [(MAC.to_string(), Some("eth0".to_string()))]);
        assert_eq!(n.naming, Naming::Predictable);
        assert_eq!(
            n.kernel_names_needed.as_deref(),
            Some("the configuration names eth0 (/etc/network/interfaces.d/50-cloud-init, /etc/udev/rules.d/70-persistent-net.rules)")
        );
        let lines = n.lines();
        assert!(
            lines.contains(
                &"stack ifupdown: enabled (networking.service wanted by multi-user.target)"
                    .to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.last().unwrap().contains("net.ifnames=0"),
            "{lines:#?}"
        );
    }

    #[test]
    fn kernel_names_already() {
        let mut guest = debian_ifupdown();
        guest.files.insert(
            "/etc/default/grub".into(),
            "GRUB_CMDLINE_LINUX=\"console=ttyS0 net.ifnames=0\"\n".into(),
        );
        let n = inspect(&mut guest).unwrap();
        assert_eq!(
            n.naming,
            Naming::Kernel("net.ifnames=0 in /etc/default/grub".into())
        );
        assert_eq!(n.kernel_names_needed, None);
    }

    #[test]
    fn disabled_stacks_files_do_not_count() {
        // ifupdown installed but not enabled, its file names eth0; networkd enabled with a
        // DHCP file for any en* NIC: nothing needs eth names.
        let mut guest = debian_ifupdown();
        guest
            .files
            .remove("/etc/systemd/system/multi-user.target.wants/networking.service");
        guest
            .files
            .remove("/etc/udev/rules.d/70-persistent-net.rules");
        guest.files.insert(
            "/etc/network/interfaces.d/50-cloud-init".into(),
            "auto eth0\niface eth0 inet dhcp\n".into(),
        );
        guest.files.insert(
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service".into(),
            String::new(),
        );
        guest.files.insert(
            "/etc/systemd/network/99-dhcp-en.network".into(),
            "[Match]\nName=en*\n[Network]\nDHCP=yes\n".into(),
        );
        let n = inspect(&mut guest).unwrap();
        assert_eq!(n.kernel_names_needed, None, "{:#?}", n.lines());
        assert!(!n.configs[0].active);
        assert!(n.configs[1].active);
        assert!(n.lines().iter().any(|l| l.contains("[stack not enabled]")));
    }

    #[test]
    fn networkd_by_mac_and_link_files() {
        let mut guest = MemoryGuest::with(&[
            ("/lib/udev/rules.d/99-systemd.rules", ""),
            ("/lib/systemd/systemd-networkd", ""),
            (
                "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
                "",
            ),
            (
                "/etc/systemd/network/10-azure-eth0.network",
                "[Match]\nMACAddress=00:0d:3a:5e:21:7c\n\n[Network]\nDHCP=ipv4\n",
            ),
            (
                "/etc/systemd/network/10-eth1.link",
                "[Match]\nMACAddress=00:0d:3a:5e:21:7d\n[Link]\nName=lan1\n",
            ),
        ]);
        let n = inspect(&mut guest).unwrap();
        // Files are read in name order: the .network's MAC first.
        assert_eq!(n.kernel_name_for(MAC), "eth0");
        assert_eq!(n.kernel_name_for("00:0d:3a:5e:21:7d"), "eth1");
        assert_eq!(n.azure_name_for("00:0d:3a:5e:21:7d"), "lan1");
        assert_eq!(n.configs[0].method, "DHCP=ipv4");
        assert_eq!(
            n.kernel_names_needed.as_deref(),
            Some("the configuration names eth0 (/etc/systemd/network/10-azure-eth0.network), eth1 (/etc/systemd/network/10-eth1.link)")
        );
    }

    #[test]
    fn ifupdown_files_without_ifupdown_are_leftovers() {
        let mut guest = debian_ifupdown();
        guest.files.remove("/sbin/ifup");
        guest
            .files
            .remove("/etc/systemd/system/multi-user.target.wants/networking.service");
        guest
            .files
            .remove("/etc/udev/rules.d/70-persistent-net.rules");
        let n = inspect(&mut guest).unwrap();
        assert!(!n.configs[0].active, "{:#?}", n.lines());
        assert_eq!(n.kernel_names_needed, None);
    }

    #[test]
    fn no_network_is_said() {
        let mut guest = MemoryGuest::with(&[("/lib/udev/x", "")]);
        let lines = inspect(&mut guest).unwrap().lines();
        assert!(lines.contains(&"no network stack is enabled".to_string()));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("no enabled configuration brings a NIC up")));
    }

    #[test]
    fn rhel_ifcfg_and_suse_wicked() {
        let mut guest = MemoryGuest::with(&[
            ("/usr/lib/udev/rules.d/x", ""),
            ("/usr/sbin/NetworkManager", ""),
            (
                "/etc/systemd/system/multi-user.target.wants/NetworkManager.service",
                "",
            ),
            (
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\nHWADDR=00:0D:3A:5E:21:7C\n",
            ),
            ("/etc/sysconfig/network-scripts/ifcfg-lo", "DEVICE=lo\n"),
            (
                "/etc/sysconfig/network/ifcfg-eth1",
                "BOOTPROTO='static'\nIPADDR='10.0.1.4/24'\nSTARTMODE='auto'\n",
            ),
        ]);
        let n = inspect(&mut guest).unwrap();
        assert_eq!(n.configs.len(), 2);
        assert_eq!(n.configs[0].applies_to, "eth0, MAC 00:0d:3a:5e:21:7c");
        assert!(n.configs[0].active);
        assert_eq!(n.configs[1].method, "static 10.0.1.4/24");
        assert_eq!(n.configs[1].format, "ifcfg (wicked)");
        // wicked is not installed here: its file counts (we could not tell).
        assert!(n.configs[1].active);
        assert!(n.kernel_names_needed.as_deref().unwrap().contains("eth1"));
    }
}
