//! initramfs-tools' module list, `/etc/initramfs-tools/modules` (Debian, Ubuntu).
//!
//! One module per line, optionally followed by arguments; `#` starts a comment. Whatever the
//! `MODULES=` policy (`most`, `dep`, `list`), modules listed here are always put in the
//! initramfs and loaded at boot, so listing the virtio drivers here makes a host-only initramfs
//! boot on KVM once `update-initramfs -u -k all` has rebuilt it.

use super::{push_line, Edit};

/// Where initramfs-tools reads the list.
pub const MODULES_PATH: &str = "/etc/initramfs-tools/modules";

/// Adds each of `modules` that the list does not already name, one line each, at the end.
pub fn add_modules(text: &str, modules: &[&str]) -> Option<Edit> {
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| !word.starts_with('#'))
        .collect();
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| !listed.contains(m))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut out = text.to_string();
    push_line(
        &mut out,
        "# Added by hyper2kvm: drivers for KVM's virtio disk and NIC.",
    );
    for module in &missing {
        push_line(&mut out, module);
    }
    Some(Edit {
        text: out,
        changes: vec![format!("{MODULES_PATH}: added {}", missing.join(" "))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edits::VIRTIO_DRIVERS;

    // Debian's shipped file, as left by a Hyper-V host-only setup.
    const AZURE: &str = "\
# List of modules that you want to include in your initramfs.
# They will be loaded at boot time in the order below.
#
# Syntax:  module_name [args ...]
#
# You must run update-initramfs(8) to effect this change.
#
# Examples:
#
# raid1
# sd_mod
hv_vmbus
hv_storvsc
hv_netvsc";

    #[test]
    fn adds_the_virtio_drivers_after_the_existing_lines() {
        let edit = add_modules(AZURE, &VIRTIO_DRIVERS).unwrap();
        assert!(edit.text.starts_with(AZURE));
        assert!(edit.text.ends_with(
            "hv_netvsc\n# Added by hyper2kvm: drivers for KVM's virtio disk and NIC.\n\
             virtio_pci\nvirtio_blk\nvirtio_scsi\nvirtio_net\n"
        ));
        assert_eq!(
            edit.changes,
            ["/etc/initramfs-tools/modules: added virtio_pci virtio_blk virtio_scsi virtio_net"]
        );
    }

    #[test]
    fn is_idempotent() {
        let once = add_modules(AZURE, &VIRTIO_DRIVERS).unwrap();
        assert_eq!(add_modules(&once.text, &VIRTIO_DRIVERS), None);
    }

    #[test]
    fn adds_only_what_is_missing_and_ignores_commented_names() {
        let text = "virtio_blk\n# virtio_net\nvirtio_pci force_legacy=1\n";
        let edit = add_modules(text, &VIRTIO_DRIVERS).unwrap();
        assert_eq!(
            edit.changes,
            ["/etc/initramfs-tools/modules: added virtio_scsi virtio_net"]
        );
    }

    #[test]
    fn an_empty_file_gets_the_list() {
        let edit = add_modules("", &VIRTIO_DRIVERS).unwrap();
        assert!(edit.text.starts_with("# Added by hyper2kvm"));
        assert_eq!(edit.text.lines().count(), 5);
    }
}
