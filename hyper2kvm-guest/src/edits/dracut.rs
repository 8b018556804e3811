//! dracut's configuration drop-in (RHEL, Alma, Rocky, CentOS, SUSE).
//!
//! An image built on Azure is often "host-only": dracut put in only the drivers of the machine
//! it ran on (Hyper-V's). `add_drivers+=" … "` in a file under `/etc/dracut.conf.d/` makes
//! every later `dracut` run include the virtio drivers, including the one the fix-up runs
//! (`dracut -f --regenerate-all`) and those run by future kernel updates. The spaces inside the
//! quotes matter: dracut concatenates the values of every `add_drivers+=` it reads.

/// The drop-in hyper2kvm writes.
pub const CONF_PATH: &str = "/etc/dracut.conf.d/hyper2kvm-virtio.conf";

/// The drop-in's content for `drivers`.
pub fn conf(drivers: &[&str]) -> String {
    format!(
        "# Written by hyper2kvm: drivers for KVM's virtio disk and NIC in every initramfs.\n\
         add_drivers+=\" {} \"\n",
        drivers.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edits::VIRTIO_DRIVERS;

    #[test]
    fn lists_the_drivers_with_spaces_inside_the_quotes() {
        assert_eq!(
            conf(&VIRTIO_DRIVERS).lines().nth(1),
            Some("add_drivers+=\" virtio_pci virtio_blk virtio_scsi virtio_net \"")
        );
    }
}
