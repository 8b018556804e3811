//! The fix-ups: small units, each with a name, a check, an edit and a line for the report.
//!
//! A [`FixUp`] looks at the guest (through [`GuestFs`]) and returns a [`Plan`]: the files to
//! write or remove, the commands to run inside the guest, and what each changes. The check
//! ("does this guest need it?") *is* the plan being empty, so the check can never disagree with
//! the edit; a dry run prints plans without applying them. Plans are computed from the guest's
//! files by the pure functions in [`crate::edits`] and applied by [`apply`].
//!
//! [`all`] lists them in the order they run: file edits first, then the initramfs rebuild (which
//! reads the edited module lists), then the boot loader's regeneration (which lists the rebuilt
//! initramfs images).

mod azure;
mod fstab;
mod grub;
mod initramfs;
mod network;

use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::Result;

pub use azure::{AzureAgent, AzureUdevRules, CloudInitDatasource};
pub use fstab::Fstab;
pub use grub::GrubCmdline;
pub use initramfs::InitramfsVirtio;
pub use network::{
    CloudInitNetwork, Ifcfg, Ifupdown, InterfaceNames, NetplanDhcp, Networkd, NmKeyfile,
};

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replace (or create) a guest file.
    Write {
        /// Absolute path in the guest.
        path: String,
        /// The whole new content.
        content: String,
    },
    /// Remove a guest file.
    Remove {
        /// Absolute path in the guest.
        path: String,
    },
    /// Run a shell command inside the guest.
    Run {
        /// The command, for `/bin/sh -c`.
        command: String,
    },
    /// Copy a host file into the guest, byte for byte (drivers, installers).
    Upload {
        /// The host file.
        local: std::path::PathBuf,
        /// Absolute path in the guest.
        path: String,
    },
    /// Create registry keys and set values in a hive file of the guest.
    Registry {
        /// The hive's path in the guest (`/Windows/System32/config/SYSTEM`).
        hive: String,
        /// The keys and values.
        edits: Vec<crate::registry::KeyEdit>,
    },
}

/// What a fix-up would do to a guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps, in order.
    pub actions: Vec<Action>,
    /// What the steps change, one line each, for the report.
    pub changes: Vec<String>,
    /// What the fix-up saw but left alone, and why (for a person to review).
    pub notes: Vec<String>,
    /// What the fix-up found that keeps the guest from booting or reaching its network on KVM
    /// and that it cannot fix (for a person to do). Any makes its status
    /// [`Incomplete`](crate::report::Status::Incomplete), never "not needed".
    pub blockers: Vec<String>,
}

impl Plan {
    /// Whether the guest needs this fix-up.
    pub fn is_needed(&self) -> bool {
        !self.actions.is_empty()
    }

    fn write(&mut self, path: &str, content: String) {
        self.actions.push(Action::Write {
            path: path.to_string(),
            content,
        });
    }

    /// Writes an edited file, its changes listed under its path.
    fn edit(&mut self, path: &str, edit: crate::edits::Edit) {
        self.changes
            .extend(edit.changes.iter().map(|c| format!("{path}: {c}")));
        self.write(path, edit.text);
    }

    fn run(&mut self, command: impl Into<String>) {
        self.actions.push(Action::Run {
            command: command.into(),
        });
    }
}

/// A fix-up unit.
pub trait FixUp {
    /// The name used in configuration (`skip:`) and reports, e.g. `netplan`.
    fn name(&self) -> &'static str;
    /// What it does, in one line.
    fn description(&self) -> &'static str;
    /// Looks at the guest and says what it would change; empty if the guest does not need it.
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan>;
}

/// Every fix-up, in the order they run.
pub fn all() -> Vec<Box<dyn FixUp>> {
    vec![
        Box::new(NetplanDhcp),
        Box::new(CloudInitNetwork),
        Box::new(Ifupdown),
        Box::new(Ifcfg),
        Box::new(NmKeyfile),
        Box::new(Networkd),
        Box::new(InterfaceNames),
        Box::new(CloudInitDatasource),
        Box::new(AzureAgent),
        Box::new(AzureUdevRules),
        Box::new(Fstab),
        Box::new(InitramfsVirtio),
        Box::new(GrubCmdline),
    ]
}

/// The names of every fix-up: Linux ones ([`all`]) and Windows ones
/// ([`crate::windows::all`]), in the order they run.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = all().iter().map(|f| f.name()).collect();
    names.extend(crate::windows::names());
    names
}

/// Carries out a plan's actions in order; stops at the first that fails.
pub fn apply(guest: &mut dyn GuestFs, plan: &Plan) -> Result<()> {
    for action in &plan.actions {
        match action {
            Action::Write { path, content } => guest.write(path, content)?,
            Action::Remove { path } => guest.remove(path)?,
            Action::Run { command } => {
                guest.run(command)?;
            }
            Action::Upload { local, path } => guest.upload(local, path)?,
            Action::Registry { hive, edits } => guest.registry_merge(hive, edits)?,
        }
    }
    Ok(())
}

/// netplan's YAML files in `dir`.
pub(crate) fn yaml_files(guest: &mut dyn GuestFs, dir: &str) -> Result<Vec<String>> {
    files_in(guest, dir, |n| n.ends_with(".yaml") || n.ends_with(".yml"))
}

/// The files in `dir` whose names satisfy `keep`, as absolute paths.
fn files_in(
    guest: &mut dyn GuestFs,
    dir: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    Ok(guest
        .list(dir)?
        .into_iter()
        .filter(|name| keep(name))
        .map(|name| format!("{dir}/{name}"))
        .collect())
}

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use hyper2kvm_core::{Firmware, OsType};

    use crate::inspect::{BootLoader, DistroFamily, Inspection, Kernel};

    /// A Debian 12 Azure Gen1 guest as inspection sees it.
    pub fn debian() -> Inspection {
        Inspection {
            os: OsType::Linux,
            distro: "debian".into(),
            family: DistroFamily::Debian,
            product: "Debian GNU/Linux 12 (bookworm)".into(),
            root: "/dev/sda1".into(),
            mountpoints: vec![("/".into(), "/dev/sda1".into())],
            uuid_by_device: BTreeMap::from([(
                "/dev/sda1".to_string(),
                "5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d".to_string(),
            )]),
            kernels: vec![Kernel {
                version: "6.1.0-28-cloud-amd64".into(),
                virtio_modules: crate::edits::VIRTIO_DRIVERS.to_vec(),
            }],
            boot: BootLoader {
                grub_configs: vec!["/boot/grub/grub.cfg".into()],
                firmware: vec![Firmware::Bios],
            },
            network: crate::network::NetworkInspection::default(),
            windows: None,
        }
    }

    /// A RHEL 9 Azure Gen2 guest.
    pub fn rhel() -> Inspection {
        Inspection {
            distro: "rhel".into(),
            family: DistroFamily::RedHat,
            product: "Red Hat Enterprise Linux 9.4 (Plow)".into(),
            root: "/dev/sda4".into(),
            kernels: vec![Kernel {
                version: "5.14.0-427.el9.x86_64".into(),
                virtio_modules: vec!["virtio_blk", "virtio_scsi", "virtio_net"],
            }],
            boot: BootLoader {
                grub_configs: vec!["/boot/grub2/grub.cfg".into()],
                firmware: vec![Firmware::Bios, Firmware::Uefi],
            },
            ..debian()
        }
    }
}
