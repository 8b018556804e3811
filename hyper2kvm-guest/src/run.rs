//! Running the fix-ups on an image: configuration, one appliance, inspection, plans, report.

use std::path::Path;

use hyper2kvm_core::OsType;

use crate::fixups::{self, FixUp};
use crate::guestfish::{self, Guestfish, ImageFormat};
use crate::guestfs::GuestFs;
use crate::inspect::{self, Inspection};
use crate::report::{FixReport, FixUpResult, Outcome, Status};
use crate::{Error, ErrorKind, Result};

/// How to run the fix-ups (the `guest:` section of a run's configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConfig {
    /// Fix-ups not to run, by name (see [`fixups::names`]).
    pub skip: Vec<String>,
    /// Fail when fix-ups cannot run (libguestfs missing) instead of carrying on without them.
    pub require: bool,
    /// Inspect and plan only: the image is opened read-only and nothing changes.
    pub dry_run: bool,
}

impl GuestConfig {
    /// Checks that every skipped name is a fix-up.
    pub fn validate(&self) -> Result<()> {
        let names = fixups::names();
        for name in &self.skip {
            if !names.contains(&name.as_str()) {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "unknown fix-up {name:?} to skip; fix-ups are: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Inspects `image` (qcow2, raw or VHD) and applies the fix-ups it needs, in one libguestfs
/// appliance.
///
/// Without libguestfs this returns a report whose outcome is [`Outcome::Skipped`] (with the
/// notice to install it), or, if `config.require`, an [`ErrorKind::ToolMissing`] error. A
/// Windows guest is reported [`Outcome::NotFixed`]; its file systems are never mounted.
pub fn fix_image(image: &Path, config: &GuestConfig) -> Result<FixReport> {
    config.validate()?;
    let subject = image.display().to_string();
    if guestfish::find_guestfish().is_none() {
        if config.require {
            return Err(
                Error::new(ErrorKind::ToolMissing, guestfish::NOT_INSTALLED).with_subject(subject)
            );
        }
        return Ok(FixReport {
            image: subject,
            guest: None,
            network: Vec::new(),
            outcome: Outcome::Skipped(format!(
                "{}; skipping guest fix-ups",
                guestfish::NOT_INSTALLED
            )),
            fixups: Vec::new(),
        });
    }
    let format = ImageFormat::detect(image)?;
    // One appliance per image, writable unless this is a dry run. Inspection itself mounts
    // nothing writable, and a guest we do not fix (Windows) is never mounted at all.
    let mut gf = Guestfish::launch(image, format, config.dry_run)?;
    let inspection = inspect::inspect(&mut gf).map_err(|e| e.with_subject(subject.clone()))?;
    let report = report_for(&subject, &inspection, &mut gf, config);
    gf.close()?;
    Ok(report)
}

fn report_for(
    subject: &str,
    inspection: &Inspection,
    guest: &mut dyn GuestFs,
    config: &GuestConfig,
) -> FixReport {
    let guest_line = Some(inspection.summary());
    if inspection.os != OsType::Linux {
        return FixReport {
            image: subject.to_string(),
            guest: guest_line,
            network: Vec::new(),
            outcome: Outcome::NotFixed(format!(
                "{} guests are not fixed (virtio driver injection is future work)",
                inspection.os.as_str()
            )),
            fixups: Vec::new(),
        };
    }
    let (fixups, outcome) = fix_guest(guest, inspection, config, &fixups::all());
    FixReport {
        image: subject.to_string(),
        guest: guest_line,
        network: inspection.network.lines(),
        outcome,
        fixups,
    }
}

/// Plans, and unless `config.dry_run` applies, each fix-up in turn on a mounted Linux guest.
/// Stops applying at the first failure; the rest are reported as not run.
pub fn fix_guest(
    guest: &mut dyn GuestFs,
    inspection: &Inspection,
    config: &GuestConfig,
    all: &[Box<dyn FixUp>],
) -> (Vec<FixUpResult>, Outcome) {
    let mut results = Vec::new();
    let mut failure = None;
    let mut applied = false;
    for fixup in all {
        let name = fixup.name();
        let mut result = FixUpResult {
            name,
            status: Status::NotRun,
            changes: Vec::new(),
            notes: Vec::new(),
        };
        if failure.is_some() {
            results.push(result);
            continue;
        }
        if config.skip.iter().any(|s| s == name) {
            result.status = Status::Skipped;
            results.push(result);
            continue;
        }
        let outcome = fixup.plan(guest, inspection).and_then(|plan| {
            result.changes = plan.changes.clone();
            result.notes = plan.notes.clone();
            if !plan.is_needed() {
                Ok(Status::NotNeeded)
            } else if config.dry_run {
                Ok(Status::WouldApply)
            } else {
                fixups::apply(guest, &plan).map(|()| Status::Applied)
            }
        });
        result.status = match outcome {
            Ok(status) => status,
            Err(err) => {
                failure = Some(format!("{name}: {err}"));
                Status::Failed(err.to_string())
            }
        };
        applied |= result.status == Status::Applied;
        results.push(result);
    }
    let outcome = match failure {
        Some(why) => Outcome::Failed(why),
        None if config.dry_run => Outcome::DryRun,
        None if applied => Outcome::Fixed,
        None => Outcome::NothingToDo,
    };
    (results, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::testing::debian;
    use crate::guestfs::memory::MemoryGuest;

    /// A Debian 12 Azure guest's files, as the boot test's image has them.
    fn azure_debian() -> MemoryGuest {
        MemoryGuest::with(&[
            ("/etc/fstab", "/dev/sda1 / ext4 defaults 0 1\n/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,x-systemd.requires=cloud-init.service,_netdev,comment=cloudconfig\t0\t2\n"),
            ("/etc/default/grub", "GRUB_CMDLINE_LINUX=\"console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300\"\n"),
            ("/boot/grub/grub.cfg", "linux /boot/vmlinuz rootdelay=300\n"),
            ("/usr/sbin/update-grub", ""),
            ("/usr/sbin/update-initramfs", ""),
            ("/etc/initramfs-tools/modules", "hv_vmbus\n"),
            ("/etc/netplan/50-cloud-init.yaml", "network:\n    ethernets:\n        eth0:\n            dhcp4: true\n            match:\n                driver: hv_netvsc\n                macaddress: 00:0d:3a:5e:21:7c\n            set-name: eth0\n    version: 2\n"),
            ("/etc/cloud/cloud.cfg.d/90_dpkg.cfg", "datasource_list: [ Azure ]\n"),
            ("/etc/systemd/system/multi-user.target.wants/walinuxagent.service", ""),
            ("/etc/udev/rules.d/66-azure-storage.rules", ""),
        ])
    }

    #[test]
    fn every_fixup_applies_to_an_azure_debian_guest_then_none() {
        let mut guest = azure_debian();
        let config = GuestConfig::default();
        let (results, outcome) = fix_guest(&mut guest, &debian(), &config, &fixups::all());
        assert_eq!(outcome, Outcome::Fixed);
        let applied: Vec<&str> = results
            .iter()
            .filter(|r| r.status == Status::Applied)
            .map(|r| r.name)
            .collect();
        assert_eq!(
            applied,
            [
                "netplan",
                "cloud-init-network",
                "cloud-init-datasource",
                "azure-agent",
                "azure-udev-rules",
                "fstab",
                "initramfs",
                "grub"
            ]
        );
        // update-grub last: after the initramfs it lists.
        assert_eq!(
            guest.commands,
            [
                "systemctl disable walinuxagent.service",
                "update-initramfs -u -k all",
                "update-grub"
            ]
        );
        // The memory guest's grub.cfg is not regenerated by a real update-grub: do it here.
        guest
            .files
            .insert("/boot/grub/grub.cfg".into(), "linux /boot/vmlinuz\n".into());
        guest
            .files
            .remove("/etc/systemd/system/multi-user.target.wants/walinuxagent.service");
        let (_, again) = fix_guest(&mut guest, &debian(), &config, &fixups::all());
        assert_eq!(again, Outcome::NothingToDo);
    }

    #[test]
    fn dry_run_changes_nothing() {
        let mut guest = azure_debian();
        let before = guest.files.clone();
        let config = GuestConfig {
            dry_run: true,
            ..GuestConfig::default()
        };
        let (results, outcome) = fix_guest(&mut guest, &debian(), &config, &fixups::all());
        assert_eq!(outcome, Outcome::DryRun);
        assert!(results.iter().any(|r| r.status == Status::WouldApply));
        assert_eq!(guest.files, before);
        assert!(guest.commands.is_empty());
    }

    #[test]
    fn skipped_fixups_are_not_planned() {
        let mut guest = azure_debian();
        let config = GuestConfig {
            skip: vec!["netplan".into(), "initramfs".into()],
            ..GuestConfig::default()
        };
        let (results, _) = fix_guest(&mut guest, &debian(), &config, &fixups::all());
        assert_eq!(results[0].status, Status::Skipped);
        assert!(guest.files["/etc/netplan/50-cloud-init.yaml"].contains("hv_netvsc"));
        assert!(!guest.commands.iter().any(|c| c.contains("initramfs")));
    }

    #[test]
    fn a_failure_stops_the_later_fixups() {
        let mut guest = azure_debian();
        guest.failing.push("update-initramfs".into());
        let (results, outcome) = fix_guest(
            &mut guest,
            &debian(),
            &GuestConfig::default(),
            &fixups::all(),
        );
        assert!(matches!(outcome, Outcome::Failed(ref why) if why.starts_with("initramfs: ")));
        let grub = results.iter().find(|r| r.name == "grub").unwrap();
        assert_eq!(grub.status, Status::NotRun);
        assert!(!guest.commands.contains(&"update-grub".to_string()));
    }

    #[test]
    fn windows_is_reported_not_fixed_and_untouched() {
        let mut guest = azure_debian();
        let before = guest.files.clone();
        let mut windows = debian();
        windows.os = OsType::Windows;
        windows.distro = "windows".into();
        let report = report_for("win.qcow2", &windows, &mut guest, &GuestConfig::default());
        assert!(
            matches!(report.outcome, Outcome::NotFixed(ref why) if why.starts_with("windows guests are not fixed")),
            "{report}"
        );
        assert!(report.fixups.is_empty());
        assert!(!report.succeeded());
        assert_eq!(guest.files, before);
        assert!(guest.commands.is_empty());
    }

    #[test]
    fn unknown_skip_names_are_rejected() {
        let config = GuestConfig {
            skip: vec!["netplna".into()],
            ..GuestConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("netplan, cloud-init-network"));
    }
}
