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
        if needing.is_empty() {
            if !inspection.kernels.is_empty() {
                plan.notes
                    .push("every kernel has the virtio drivers built in".to_string());
            }
            return Ok(plan);
        }
        let kernels = needing.join(", ");
        let initramfs_tools = guest.exists("/usr/sbin/update-initramfs")?
            || guest.exists("/sbin/update-initramfs")?;
        let has_dracut = guest.exists("/usr/bin/dracut")? || guest.exists("/usr/sbin/dracut")?;
        if initramfs_tools {
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
            plan.notes.push(format!(
                "kernels {kernels} need virtio in their initramfs, but neither initramfs-tools \
                 nor dracut is installed"
            ));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::testing::{debian, rhel};
    use crate::fixups::{apply, Action};
    use crate::guestfs::memory::MemoryGuest;
    use crate::inspect::Kernel;

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
    }
}
