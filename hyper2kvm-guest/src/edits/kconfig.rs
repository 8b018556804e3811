//! The kernel's build configuration (`/boot/config-VERSION`): are the virtio drivers built in?
//!
//! A driver built into the kernel (`CONFIG_VIRTIO_BLK=y`) needs no initramfs module; one built
//! as a module (`=m`) must be in the initramfs for the root disk to be found. Debian's and
//! RHEL's kernels build them as modules; some cloud kernels build them in.

/// The kernel option behind each of [`super::VIRTIO_DRIVERS`].
pub const VIRTIO_OPTIONS: [(&str, &str); 4] = [
    ("virtio_pci", "CONFIG_VIRTIO_PCI"),
    ("virtio_blk", "CONFIG_VIRTIO_BLK"),
    ("virtio_scsi", "CONFIG_SCSI_VIRTIO"),
    ("virtio_net", "CONFIG_VIRTIO_NET"),
];

/// The virtio drivers this kernel configuration does not build in (as modules or not at all),
/// in [`super::VIRTIO_DRIVERS`] order. Empty means the kernel needs nothing from its initramfs.
pub fn virtio_not_builtin(config: &str) -> Vec<&'static str> {
    VIRTIO_OPTIONS
        .iter()
        .filter(|(_, option)| !is_builtin(config, option))
        .map(|(driver, _)| *driver)
        .collect()
}

fn is_builtin(config: &str, option: &str) -> bool {
    config.lines().any(|line| {
        line.trim_end()
            .strip_prefix(option)
            .is_some_and(|rest| rest == "=y")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpt of Debian 12's /boot/config-6.1.0-*-cloud-amd64.
    const DEBIAN_CLOUD: &str = "\
CONFIG_VIRTIO_ANCHOR=y
CONFIG_VIRTIO=m
CONFIG_VIRTIO_PCI_LIB=m
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO_PCI=m
CONFIG_VIRTIO_PCI_LEGACY=y
CONFIG_VIRTIO_BLK=m
CONFIG_SCSI_VIRTIO=m
CONFIG_VIRTIO_NET=m
# CONFIG_VIRTIO_PMEM is not set
";

    #[test]
    fn debian_cloud_kernel_builds_virtio_as_modules() {
        assert_eq!(
            virtio_not_builtin(DEBIAN_CLOUD),
            VIRTIO_OPTIONS.map(|o| o.0)
        );
    }

    #[test]
    fn built_in_drivers_need_nothing() {
        let config =
            "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_SCSI_VIRTIO=y\nCONFIG_VIRTIO_NET=y\n";
        assert!(virtio_not_builtin(config).is_empty());
    }

    #[test]
    fn a_similar_option_name_is_not_the_option() {
        // CONFIG_VIRTIO_PCI_LEGACY=y must not count as CONFIG_VIRTIO_PCI=y.
        let config = "CONFIG_VIRTIO_PCI_LEGACY=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_SCSI_VIRTIO=y\nCONFIG_VIRTIO_NET=y\n# CONFIG_VIRTIO_PCI is not set\n";
        assert_eq!(virtio_not_builtin(config), vec!["virtio_pci"]);
    }
}
