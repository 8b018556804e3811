//! The initramfs: virtio drivers in it for every installed kernel that does not build them in.

use super::{FixUp, Plan};
use crate::edits::{dracut, initramfs_tools, VIRTIO_DRIVERS};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::Result;

/// The initramfs fix-up: initramfs-tools' module list or a dracut drop-in, then a rebuild.
pub struct InitramfsVirtio;

impl FixUp for InitramfsVirtio {
    fn name(&self) -> &'static str {
        "initramfs"
    }
    fn description(&self) -> &'static str {
        "initramfs rebuilt with virtio_pci virtio_blk virtio_scsi virtio_net"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        let needing: Vec<&str> = inspection
            .kernels
            .iter()
            .filter(|k| !k.virtio_modules.is_empty())
            .map(|k| k.version.as_str())
            .collect();
        if inspection.kernels.is_empty() {
            // Nothing was looked at, so nothing can be said to be in order.
            plan.blockers.push(
                "no kernel found (as /boot/vmlinuz-<version> or /lib/modules/<version>/vmlinuz): \
                 whether the initramfs can find a virtio root disk was not checked"
                    .to_string(),
            );
            return Ok(plan);
        }
        if needing.is_empty() {
            plan.notes
                .push("every kernel has the virtio drivers built in".to_string());
            return Ok(plan);
        }
        let kernels = needing.join(", ");
        let initramfs_tools = guest.exists("/usr/sbin/update-initramfs")?
            || guest.exists("/sbin/update-initramfs")?;
        let has_dracut = guest.exists("/usr/bin/dracut")? || guest.exists("/usr/sbin/dracut")?;
        if initramfs_tools && modules_setting(guest)?.as_deref() == Some("most") {
            // initramfs-tools' default: every block, SCSI and network driver goes in, virtio's
            // among them, whatever the host the image was built on.
            plan.notes.push(format!(
                "initramfs-tools builds with MODULES=most, which takes the virtio drivers (kernels {kernels})"
            ));
        } else if initramfs_tools {
            let path = initramfs_tools::MODULES_PATH;
            let text = guest.read(path)?.unwrap_or_default();
            if let Some(edit) = initramfs_tools::add_modules(&text, &VIRTIO_DRIVERS) {
                plan.changes.extend(edit.changes);
                plan.write(path, edit.text);
                plan.run("update-initramfs -u -k all");
                plan.changes
                    .push(format!("update-initramfs -u -k all (kernels {kernels})"));
            }
        } else if has_dracut {
            let path = dracut::CONF_PATH;
            let want = dracut::conf(&VIRTIO_DRIVERS);
            if guest.read(path)?.as_deref() != Some(want.as_str()) {
                plan.write(path, want);
                plan.changes.push(format!("{path}: add_drivers virtio"));
                plan.run("dracut -f --regenerate-all");
                plan.changes
                    .push(format!("dracut -f --regenerate-all (kernels {kernels})"));
            }
        } else {
            plan.blockers.push(format!(
                "kernels {kernels} need virtio in their initramfs, but neither initramfs-tools \
                 nor dracut is installed: the root disk will not be found on a virtio disk"
            ));
        }
        Ok(plan)
    }
}

/// initramfs-tools' `MODULES=` setting: `initramfs.conf`, then `conf.d/*` in name order (the
/// last assignment wins, as mkinitramfs sources them); `most` when nothing sets it.
fn modules_setting(guest: &mut dyn GuestFs) -> Result<Option<String>> {
    let mut files = vec!["/etc/initramfs-tools/initramfs.conf".to_string()];
    files.extend(super::files_in(
        guest,
        "/etc/initramfs-tools/conf.d",
        |_| true,
    )?);
    let mut setting = None;
    let mut found_any = false;
    for path in files {
        let Some(text) = guest.read(&path)? else {
            continue;
        };
        found_any = true;
        for line in text.lines() {
            if let Some(value) = line.trim().strip_prefix("MODULES=") {
                setting = Some(
                    value
                        .trim()
                        .trim_matches(|c| c == '"' || c == '\'')
                        .to_string(),
                );
            }
        }
    }
    Ok(if found_any {
        Some(setting.unwrap_or_else(|| "most".to_string()))
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::testing::{debian, rhel};
    use crate::fixups::{apply, Action};
    use crate::guestfs::memory::MemoryGuest;
    use crate::inspect::Kernel;

    #[test]
    fn modules_most_needs_no_rebuild_but_list_does() {
        let mut guest = MemoryGuest::with(&[
            ("/usr/sbin/update-initramfs", "#!/bin/sh\n"),
            (
                "/etc/initramfs-tools/initramfs.conf",
                "# comment\nMODULES=most\nBUSYBOX=auto\n",
            ),
        ]);
        let plan = InitramfsVirtio.plan(&mut guest, &debian()).unwrap();
        assert!(!plan.is_needed());
        assert!(plan.notes[0].contains("MODULES=most"), "{plan:?}");
        // An Azure host-only build: MODULES=list in conf.d overrides it.
        guest.files.insert(
            "/etc/initramfs-tools/conf.d/azure-hostonly.conf".into(),
            "MODULES=list\n".into(),
        );
        assert!(InitramfsVirtio
            .plan(&mut guest, &debian())
            .unwrap()
            .is_needed());
    }

    #[test]
    fn debian_gets_modules_and_update_initramfs() {
        let mut guest = MemoryGuest::with(&[
            ("/usr/sbin/update-initramfs", "#!/bin/sh\n"),
            ("/etc/initramfs-tools/modules", "hv_vmbus\nhv_storvsc\n"),
        ]);
        let plan = InitramfsVirtio.plan(&mut guest, &debian()).unwrap();
        assert_eq!(
            plan.actions[1],
            Action::Run {
                command: "update-initramfs -u -k all".into()
            }
        );
        apply(&mut guest, &plan).unwrap();
        assert!(guest.files["/etc/initramfs-tools/modules"].ends_with("virtio_net\n"));
        assert_eq!(guest.commands, ["update-initramfs -u -k all"]);
        assert!(!InitramfsVirtio
            .plan(&mut guest, &debian())
            .unwrap()
            .is_needed());
    }

    #[test]
    fn rhel_gets_a_dracut_drop_in() {
        let mut guest = MemoryGuest::with(&[("/usr/bin/dracut", "#!/bin/bash\n")]);
        let plan = InitramfsVirtio.plan(&mut guest, &rhel()).unwrap();
        apply(&mut guest, &plan).unwrap();
        assert!(guest.files[dracut::CONF_PATH].contains("add_drivers+=\" virtio_pci"));
        assert_eq!(guest.commands, ["dracut -f --regenerate-all"]);
        assert!(!InitramfsVirtio
            .plan(&mut guest, &rhel())
            .unwrap()
            .is_needed());
    }

    #[test]
    fn built_in_virtio_needs_no_rebuild() {
        let mut inspection = debian();
        inspection.kernels = vec![Kernel {
            version: "6.8.0-1015-azure".into(),
            virtio_modules: Vec::new(),
        }];
        let mut guest = MemoryGuest::with(&[("/usr/sbin/update-initramfs", "")]);
        let plan = InitramfsVirtio.plan(&mut guest, &inspection).unwrap();
        assert!(!plan.is_needed());
        assert_eq!(plan.notes, ["every kernel has the virtio drivers built in"]);
        assert!(plan.blockers.is_empty());
    }

    /// Nothing found to look at is not "not needed".
    #[test]
    fn no_kernel_found_or_no_initramfs_tool_blocks() {
        let mut inspection = debian();
        inspection.kernels.clear();
        let mut guest = MemoryGuest::with(&[("/usr/sbin/update-initramfs", "")]);
        let plan = InitramfsVirtio.plan(&mut guest, &inspection).unwrap();
        assert!(!plan.is_needed());
        assert_eq!(plan.blockers.len(), 1, "{plan:?}");
        assert!(plan.blockers[0].starts_with("no kernel found"), "{plan:?}");

        let mut guest = MemoryGuest::with(&[]);
        let plan = InitramfsVirtio.plan(&mut guest, &debian()).unwrap();
        assert!(!plan.is_needed());
        assert_eq!(plan.blockers.len(), 1, "{plan:?}");
        assert!(
            plan.blockers[0].contains("neither initramfs-tools nor dracut"),
            "{plan:?}"
        );
    }
}
