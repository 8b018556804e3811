//! `/etc/fstab`: resource disk out, device names to UUIDs, data disks `nofail`.

use super::{FixUp, Plan};
use crate::edits::fstab::{self, OsDisk};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::Result;

/// The fstab fix-up (see [`crate::edits::fstab`]).
pub struct Fstab;

impl FixUp for Fstab {
    fn name(&self) -> &'static str {
        "fstab"
    }
    fn description(&self) -> &'static str {
        "fstab: resource disk commented out, /dev/sdX names to UUID=, data disks nofail"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        let Some(text) = guest.read("/etc/fstab")? else {
            return Ok(plan);
        };
        // libguestfs attaches only the OS disk, as /dev/sda: the same name it has on Azure.
        let os_disk = OsDisk {
            uuid_by_device: inspection.uuid_by_device.clone(),
        };
        if let Some(edit) = fstab::fix(&text, &os_disk) {
            plan.edit("/etc/fstab", edit);
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::testing::debian;
    use crate::guestfs::memory::MemoryGuest;

    #[test]
    fn root_by_device_name_and_resource_disk() {
        let mut guest = MemoryGuest::with(&[(
            "/etc/fstab",
            "/dev/sda1 / ext4 defaults 0 1\n/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,x-systemd.requires=cloud-init.service,_netdev,comment=cloudconfig\t0\t2\n",
        )]);
        let plan = Fstab.plan(&mut guest, &debian()).unwrap();
        assert_eq!(plan.changes.len(), 2);
        crate::fixups::apply(&mut guest, &plan).unwrap();
        assert!(guest.files["/etc/fstab"]
            .starts_with("UUID=5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d / ext4 defaults 0 1\n"));
        assert!(!Fstab.plan(&mut guest, &debian()).unwrap().is_needed());
    }
}
