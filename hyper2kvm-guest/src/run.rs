//! Running the fix-ups on an image: configuration, one appliance, inspection, plans, report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper2kvm_core::OsType;

use crate::fixups::{self, FixUp};
use crate::guestfish::{self, Guestfish, ImageFormat};
use crate::guestfs::GuestFs;
use crate::inspect::{self, Inspection};
use crate::report::{FixReport, FixUpResult, Outcome, Status};
use crate::windows::virtio_win::{self, GuestOs};
use crate::windows::{self as win, Staged, StagedDriver, StagedFile};
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
    /// virtio-win for Windows guests: the ISO or its unpacked tree. Without it a Windows
    /// guest is left unchanged and reported not fixed.
    pub virtio_win: Option<PathBuf>,
}

impl GuestConfig {
    /// Checks that every skipped name is a fix-up.
    pub fn validate(&self) -> Result<()> {
        if let Some(path) = &self.virtio_win {
            if !path.exists() {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "virtio-win {} does not exist (give the virtio-win ISO or its unpacked tree)",
                        path.display()
                    ),
                ));
            }
        }
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
    // A virtio-win ISO is a second, read-only drive of the same appliance: read through
    // libguestfs, never mounted on the host.
    let iso = config.virtio_win.as_deref().filter(|p| p.is_file());
    let extra: Vec<&Path> = iso.into_iter().collect();
    let mut gf = Guestfish::launch_with(image, format, config.dry_run, &extra)?;
    let inspection = inspect::inspect(&mut gf).map_err(|e| e.with_subject(subject.clone()))?;
    let report = if inspection.os == OsType::Windows && config.virtio_win.is_some() {
        fix_windows(&subject, &inspection, &mut gf, config)
    } else {
        report_for(&subject, &inspection, &mut gf, config)
    };
    gf.close()?;
    Ok(report)
}

/// A Windows guest with virtio-win given: drivers chosen and staged on the host, the system
/// volume mounted (read-write unless a dry run), the Windows fix-ups planned and applied.
fn fix_windows(
    subject: &str,
    inspection: &Inspection,
    gf: &mut Guestfish,
    config: &GuestConfig,
) -> FixReport {
    let mut report = FixReport {
        image: subject.to_string(),
        guest: Some(inspection.summary()),
        network: Vec::new(),
        outcome: Outcome::NothingToDo,
        fixups: Vec::new(),
    };
    let staged = match stage_windows(inspection, gf, config) {
        Ok(Ok(staged)) => staged,
        Ok(Err(not_fixed)) => {
            report.outcome = Outcome::NotFixed(not_fixed);
            return report;
        }
        Err(e) => {
            report.outcome = Outcome::Failed(e.to_string());
            return report;
        }
    };
    report.guest = Some(format!(
        "{}, drivers for {}",
        inspection.summary(),
        staged.guest
    ));
    // The appliance's kernel may mount a hibernated NTFS read-write where ntfs-3g would not
    // (ntfs3): ask ntfs-3g itself, and refuse what it refuses.
    if !config.dry_run {
        let probe = gf
            .call(&["vfs-type", &inspection.root])
            .map(|t| t.trim() == "ntfs")
            .and_then(|ntfs| {
                if ntfs {
                    gf.call(&["ntfs-3g-probe", "true", &inspection.root])
                        .map(|code| code.trim().parse::<i32>().unwrap_or(-1))
                } else {
                    Ok(0)
                }
            });
        match probe {
            Ok(0) => {}
            Ok(code) => {
                report.outcome =
                    Outcome::NotFixed(format!("{}: {}", inspection.root, ntfs_probe_refusal(code)));
                return report;
            }
            Err(e) => {
                report.outcome = Outcome::Failed(e.to_string());
                return report;
            }
        }
    }
    let mount = if config.dry_run { "mount-ro" } else { "mount" };
    if let Err(e) = gf.call(&[mount, &inspection.root, "/"]) {
        report.outcome = match ntfs_refusal(&e.to_string()) {
            Some(why) => Outcome::NotFixed(format!("{}: {why}", inspection.root)),
            None => Outcome::Failed(e.to_string()),
        };
        return report;
    }
    gf.forget_hives();
    let staged = Arc::new(staged);
    let mut all = win::all(staged.clone());
    if config.skip.iter().any(|s| s == "windows-drivers") {
        // The first-boot service installs what windows-drivers copies in: nothing, then.
        let nothing = Arc::new(Staged {
            drivers: Vec::new(),
            ..(*staged).clone()
        });
        for fixup in all.iter_mut() {
            if fixup.name() == "windows-firstboot" {
                *fixup = Box::new(win::Firstboot::new(nothing.clone()));
            }
        }
    }
    let (fixups, outcome) = fix_guest(gf, inspection, config, &all);
    report.fixups = fixups;
    report.outcome = outcome;
    report
}

const NTFS_HOW: &str = "start the VM in Azure, turn off hibernation and Fast Startup (`powercfg /h off`), shut it down fully (`shutdown /s /t 0`), then export it again";

/// What `ntfs-3g-probe true DEVICE` (ntfs-3g's read-write mount check) answered, in words a
/// user can act on: 14 hibernated (or shut down with Fast Startup), 15 not cleanly unmounted
/// (ntfs-3g's `NTFS_VOLUME_HIBERNATED`, `NTFS_VOLUME_UNCLEAN_UNMOUNT`).
pub fn ntfs_probe_refusal(code: i32) -> String {
    match code {
        14 => format!("Windows is hibernated (ntfs-3g refuses to mount it read-write); {NTFS_HOW}"),
        15 => format!(
            "the NTFS volume was not cleanly unmounted (ntfs-3g refuses to mount it read-write); {NTFS_HOW}"
        ),
        12 => "the NTFS volume is corrupt (ntfs-3g code 12): run `chkdsk /f` in the VM first".into(),
        13 => "the NTFS volume is locked by another process (ntfs-3g code 13)".into(),
        other => format!("ntfs-3g cannot mount the volume read-write (code {other})"),
    }
}

/// Why ntfs-3g refused a read-write mount, in words a user can act on, if that is what
/// happened: Windows hibernated (or shut down with Fast Startup), or its volume not cleanly
/// unmounted. Forcing it (`remove_hiberfile`, `ntfsfix`) would throw away what Windows kept
/// in memory, so the guest is reported instead.
pub fn ntfs_refusal(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    if m.contains("hibernat") {
        Some(ntfs_probe_refusal(14))
    } else if m.contains("unclean") || m.contains("metadata kept in windows cache") {
        Some(ntfs_probe_refusal(15))
    } else {
        None
    }
}

/// Lists virtio-win (tree or ISO), chooses the guest's directories and puts their files on the
/// host. `Ok(Err(why))` when the guest cannot be fixed with this virtio-win.
fn stage_windows(
    inspection: &Inspection,
    gf: &mut Guestfish,
    config: &GuestConfig,
) -> Result<std::result::Result<Staged, String>> {
    let source = config.virtio_win.clone().expect("virtio-win is given");
    let w = win::windows(inspection)?;
    // The build number is in the SOFTWARE hive: mount the system volume read-only to read it.
    gf.call(&["mount-ro", &inspection.root, "/"])?;
    let build = gf
        .registry_key(&w.software_hive, r"Microsoft\Windows NT\CurrentVersion")?
        .and_then(|k| {
            k.value("CurrentBuildNumber")
                .and_then(|v| v.as_str().map(String::from))
        })
        .and_then(|b| b.trim().parse().ok());
    gf.call(&["umount-all"])?;
    gf.forget_hives();
    let guest = GuestOs {
        major: w.major,
        minor: w.minor,
        variant: w.variant,
        build,
        product: inspection.product.clone(),
        arch: w.arch.clone(),
    };
    let iso_device = if source.is_file() {
        let device = gf
            .lines(&["list-devices"])?
            .pop()
            .ok_or_else(|| Error::new(ErrorKind::Guestfs, "no devices"))?;
        gf.call(&["mount-ro", &device, "/"])?;
        Some(device)
    } else {
        None
    };
    let files = match &iso_device {
        Some(_) => gf.lines(&["find", "/"])?,
        None => list_tree(&source)?,
    };
    let selection = virtio_win::choose(&files, &guest);
    let release = guest
        .release()
        .map(|r| r.dir)
        .unwrap_or("an unknown release");
    let shown_guest = format!("{guest}, virtio-win {release}");
    // The domain attaches the disks on virtio-blk (hyper2kvm-core's libvirt module), which
    // is viostor's: vioscsi alone would leave the guest unable to boot from them.
    if selection.driver("viostor").is_none() {
        if iso_device.is_some() {
            gf.call(&["umount-all"])?;
        }
        return Ok(Err(format!(
            "{} has no viostor driver for {shown_guest} (architecture directory {}); without it the guest cannot boot from the virtio-blk disk its domain gives it",
            source.display(),
            guest.arch_dir().unwrap_or("unknown")
        )));
    }
    let scratch = gf.scratch_dir("virtio-win")?;
    let fetch = |gf: &mut Guestfish, rel: &str| -> Result<StagedFile> {
        let name = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
        let local = match &iso_device {
            Some(_) => {
                let local = scratch.join(rel.replace('/', "_"));
                gf.download(&format!("/{rel}"), &local)?;
                local
            }
            None => source.join(rel),
        };
        Ok(StagedFile { name, local })
    };
    let mut drivers = Vec::new();
    for dir in &selection.drivers {
        let mut files = Vec::new();
        for rel in &dir.files {
            files.push(fetch(gf, rel)?);
        }
        drivers.push(StagedDriver {
            dir: dir.clone(),
            files,
        });
    }
    let guest_agent = match &selection.guest_agent {
        Some(rel) => Some(fetch(gf, rel)?),
        None => None,
    };
    if iso_device.is_some() {
        gf.call(&["umount-all"])?;
    }
    Ok(Ok(Staged {
        source: source.display().to_string(),
        guest: shown_guest,
        drivers,
        missing: selection.missing,
        guest_agent,
    }))
}

/// Every file under `root`, as `/`-separated paths relative to it.
fn list_tree(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            let rel = rel.join(entry.file_name());
            let path = root.join(&rel);
            if path.is_dir() {
                stack.push(rel);
            } else if path.is_file() {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn report_for(
    subject: &str,
    inspection: &Inspection,
    guest: &mut dyn GuestFs,
    config: &GuestConfig,
) -> FixReport {
    let guest_line = Some(inspection.summary());
    if inspection.os != OsType::Linux {
        let why = if inspection.os == OsType::Windows {
            "no virtio-win given: Windows guests need its viostor / vioscsi drivers to boot from a virtio disk; give the virtio-win ISO or its unpacked tree (`guest.windows.virtio_win`, `hyper2kvm fix --virtio-win PATH`)".to_string()
        } else {
            format!("{} guests are not fixed", inspection.os.as_str())
        };
        return FixReport {
            image: subject.to_string(),
            guest: guest_line,
            network: Vec::new(),
            outcome: Outcome::NotFixed(why),
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
            let done = if !plan.is_needed() {
                Status::NotNeeded
            } else if config.dry_run {
                Status::WouldApply
            } else {
                fixups::apply(guest, &plan).map(|()| Status::Applied)?
            };
            // What it cannot fix outranks what it did: the guest is not ready either way.
            if plan.blockers.is_empty() {
                Ok(done)
            } else {
                Ok(Status::Incomplete(plan.blockers.join("; ")))
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
    let blocked: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.status {
            Status::Incomplete(why) => Some(format!("{}: {why}", r.name)),
            _ => None,
        })
        .collect();
    let outcome = match failure {
        Some(why) => Outcome::Failed(why),
        None if config.dry_run => Outcome::DryRun,
        None if !blocked.is_empty() => Outcome::Incomplete(blocked.join("; ")),
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

    /// A fix-up that finds what it cannot fix makes the guest "not ready", never "fixed" or
    /// "nothing to do", and the other fix-ups still apply.
    #[test]
    fn what_a_fixup_cannot_fix_makes_the_guest_not_ready() {
        let mut guest = azure_debian();
        guest.files.insert(
            "/etc/netplan/50-cloud-init.yaml".into(),
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      match:\n        macaddress: 00:0d:3a:5e:21:7c\n      addresses: [10.0.0.4/24]\n".into(),
        );
        let config = GuestConfig::default();
        let (results, outcome) = fix_guest(&mut guest, &debian(), &config, &fixups::all());
        let Outcome::Incomplete(why) = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            why.starts_with("netplan: /etc/netplan/50-cloud-init.yaml pins"),
            "{why}"
        );
        let netplan = results.iter().find(|r| r.name == "netplan").unwrap();
        assert!(
            matches!(netplan.status, Status::Incomplete(_)),
            "{netplan:?}"
        );
        // The rest of the guest was still fixed.
        assert!(results
            .iter()
            .any(|r| r.name == "fstab" && r.status == Status::Applied));
        // Again: still not ready, never "nothing to do".
        let (_, again) = fix_guest(&mut guest, &debian(), &config, &fixups::all());
        assert!(matches!(again, Outcome::Incomplete(_)), "{again:?}");
        // Skipping the fix-up accepts the guest as it is.
        let skip = GuestConfig {
            skip: vec!["netplan".into()],
            ..GuestConfig::default()
        };
        let (_, accepted) = fix_guest(&mut guest, &debian(), &skip, &fixups::all());
        assert!(!matches!(accepted, Outcome::Incomplete(_)), "{accepted:?}");
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
            matches!(report.outcome, Outcome::NotFixed(ref why) if why.starts_with("no virtio-win given")),
            "{report}"
        );
        assert!(report.fixups.is_empty());
        assert!(!report.succeeded());
        assert_eq!(guest.files, before);
        assert!(guest.commands.is_empty());
    }

    #[test]
    fn ntfs_refusals_say_what_to_do() {
        assert!(ntfs_probe_refusal(14).starts_with("Windows is hibernated"));
        assert!(ntfs_probe_refusal(14).contains("powercfg /h off"));
        assert!(ntfs_probe_refusal(15).contains("not cleanly unmounted"));
        assert!(ntfs_probe_refusal(99).contains("code 99"));
        let mount_error =
            "mount: /dev/sda2 on / (options: ''): Windows is hibernated, refused to mount.";
        assert_eq!(ntfs_refusal(mount_error), Some(ntfs_probe_refusal(14)));
        assert_eq!(
            ntfs_refusal("The disk contains an unclean file system (0, 0). Metadata kept in Windows cache, refused to mount."),
            Some(ntfs_probe_refusal(15))
        );
        assert_eq!(ntfs_refusal("mount: wrong fs type"), None);
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
