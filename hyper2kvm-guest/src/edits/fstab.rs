//! `/etc/fstab` of a guest leaving Azure.
//!
//! Three problems, three rules:
//!
//! * **The resource disk.** Azure gives most VM sizes a temporary disk that cloud-init (or the
//!   agent) formats and mounts on `/mnt` (`/mnt/resource` on older images). cloud-init writes
//!   `/dev/disk/cloud/azure_resource-part1 /mnt auto defaults,nofail,...,comment=cloudconfig 0 2`;
//!   older images name it `/dev/sdb1`. KVM has no such disk: the line is commented out.
//! * **Device names.** `/dev/sda1` is the OS disk's first partition on Azure (SCSI), but on a
//!   virtio-blk disk it is `/dev/vda1`. A `/dev/sdX` name that the inspection found on the OS
//!   disk is replaced by the file system's `UUID=`, which holds on any bus.
//! * **Data disks.** Data disks (`/dev/sdc…`, Azure's `/dev/disk/azure/scsi1/lunN` links, or a
//!   `UUID=` that is not on the OS disk) may not be attached, or not yet, after the migration:
//!   they get `nofail` so a missing one does not drop the boot into emergency mode.

use std::collections::BTreeMap;

use super::{lines_with_endings, Edit};

/// Mount points the system cannot boot without: never marked `nofail`.
const SYSTEM_MOUNTS: [&str; 5] = ["/", "/boot", "/boot/efi", "/usr", "/var"];

/// What the inspection knows about the OS disk's file systems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsDisk {
    /// File system UUID by device name as the guest sees it on Azure (`/dev/sda1` → UUID).
    pub uuid_by_device: BTreeMap<String, String>,
}

impl OsDisk {
    fn has_uuid(&self, uuid: &str) -> bool {
        self.uuid_by_device
            .values()
            .any(|u| u.eq_ignore_ascii_case(uuid))
    }
}

/// Fixes `text` (an fstab) for KVM; `None` if it needs nothing.
pub fn fix(text: &str, os_disk: &OsDisk) -> Option<Edit> {
    let mut out = String::with_capacity(text.len() + 128);
    let mut changes = Vec::new();
    for line in lines_with_endings(text) {
        let (body, ending) = split_ending(line);
        let Some(entry) = Entry::parse(body) else {
            out.push_str(line);
            continue;
        };
        if entry.is_resource_disk() {
            out.push_str("# hyper2kvm: the Azure resource disk does not exist on KVM\n#");
            out.push_str(line);
            changes.push(format!(
                "commented out the Azure resource disk ({} on {})",
                entry.spec(),
                entry.file()
            ));
            continue;
        }
        let mut fields = entry.fields.clone();
        let mut changed = false;
        let spec = entry.spec().to_string();
        if is_scsi_device_name(&spec) {
            if let Some(uuid) = os_disk.uuid_by_device.get(&spec) {
                fields[0].0 = format!("UUID={uuid}");
                changes.push(format!("{}: {spec} → UUID={uuid}", entry.file()));
                changed = true;
            }
        }
        if !changed && entry.is_data_disk(os_disk) && !entry.has_option("nofail") {
            let options = if entry.fields.len() > 3 {
                format!("{},nofail", entry.fields[3].0)
            } else {
                "defaults,nofail".to_string()
            };
            if fields.len() > 3 {
                fields[3].0 = options;
            } else {
                // A line without options: add the options field (and keep dump/pass absent).
                while fields.len() < 3 {
                    fields.push((String::new(), " ".to_string()));
                }
                if fields[2].1.is_empty() {
                    fields[2].1 = " ".to_string();
                }
                fields.push((options, String::new()));
            }
            changes.push(format!(
                "{}: added nofail (data disk {spec} may be absent after migration)",
                entry.file()
            ));
            changed = true;
        }
        if changed {
            for (field, sep) in &fields {
                out.push_str(field);
                out.push_str(sep);
            }
            out.push_str(ending);
        } else {
            out.push_str(line);
        }
    }
    (!changes.is_empty()).then_some(Edit { text: out, changes })
}

fn split_ending(line: &str) -> (&str, &str) {
    match line.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (line, ""),
    }
}

/// `/dev/sda1`, `/dev/sdb`, `/dev/sdaa3`: names the SCSI disk driver gives, as on Azure.
fn is_scsi_device_name(spec: &str) -> bool {
    spec.strip_prefix("/dev/sd").is_some_and(|rest| {
        let letters = rest.trim_end_matches(|c: char| c.is_ascii_digit());
        !letters.is_empty() && letters.chars().all(|c| c.is_ascii_lowercase())
    })
}

/// The disk letters of a `/dev/sdX[N]` name (`/dev/sdc1` → `c`).
fn scsi_disk_letters(spec: &str) -> Option<&str> {
    is_scsi_device_name(spec)
        .then(|| spec["/dev/sd".len()..].trim_end_matches(|c: char| c.is_ascii_digit()))
}

/// One fstab entry, each field with the whitespace after it, so unchanged separators survive.
struct Entry {
    fields: Vec<(String, String)>,
}

impl Entry {
    fn parse(body: &str) -> Option<Entry> {
        let trimmed = body.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let mut fields = Vec::new();
        let mut rest = body;
        let lead = rest.len() - rest.trim_start().len();
        let (leading, after) = rest.split_at(lead);
        rest = after;
        while !rest.is_empty() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (field, after) = rest.split_at(end);
            let ws = after.len() - after.trim_start().len();
            let (sep, after) = after.split_at(ws);
            fields.push((field.to_string(), sep.to_string()));
            rest = after;
        }
        if fields.len() < 2 {
            return None;
        }
        fields[0].0.insert_str(0, leading);
        Some(Entry { fields })
    }

    fn spec(&self) -> &str {
        self.fields[0].0.trim_start()
    }

    fn file(&self) -> &str {
        &self.fields[1].0
    }

    fn fs_type(&self) -> &str {
        self.fields.get(2).map_or("", |f| f.0.as_str())
    }

    fn has_option(&self, option: &str) -> bool {
        self.fields
            .get(3)
            .is_some_and(|f| f.0.split(',').any(|o| o == option))
    }

    fn is_resource_disk(&self) -> bool {
        let spec = self.spec();
        if spec.starts_with("/dev/disk/cloud/azure_resource")
            || spec.starts_with("/dev/disk/azure/resource")
        {
            return true;
        }
        // Older images: the agent's /dev/sdb1 on /mnt or /mnt/resource.
        let on_mnt = matches!(self.file(), "/mnt" | "/mnt/resource");
        on_mnt && (scsi_disk_letters(spec) == Some("b") || self.has_option("comment=cloudconfig"))
    }

    fn is_data_disk(&self, os_disk: &OsDisk) -> bool {
        let spec = self.spec();
        if SYSTEM_MOUNTS.contains(&self.file()) {
            return false;
        }
        if matches!(
            self.fs_type(),
            "proc" | "sysfs" | "tmpfs" | "devpts" | "nfs" | "nfs4" | "cifs"
        ) {
            return false;
        }
        if spec.starts_with("/dev/disk/azure/scsi1/") {
            return true;
        }
        if let Some(letters) = scsi_disk_letters(spec) {
            // sda is the OS disk and sdb the resource disk on Azure; the rest are data disks.
            return !os_disk.uuid_by_device.contains_key(spec) && letters != "a";
        }
        if let Some(uuid) = spec.strip_prefix("UUID=") {
            return !os_disk.uuid_by_device.is_empty() && !os_disk.has_uuid(uuid.trim_matches('"'));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_disk() -> OsDisk {
        OsDisk {
            uuid_by_device: [
                (
                    "/dev/sda1".into(),
                    "5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d".into(),
                ),
                ("/dev/sda15".into(), "7A1B-2C3D".into()),
            ]
            .into(),
        }
    }

    // An Ubuntu 22.04 Azure image after first boot: cloud-init added the resource disk line.
    const UBUNTU_AZURE: &str = "\
LABEL=cloudimg-rootfs\t/\t ext4\tdiscard,errors=remount-ro\t0 1
LABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1
/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,x-systemd.requires=cloud-init.service,_netdev,comment=cloudconfig\t0\t2
";

    #[test]
    fn comments_out_cloud_init_resource_disk_line() {
        let edit = fix(UBUNTU_AZURE, &os_disk()).unwrap();
        let lines: Vec<&str> = edit.text.lines().collect();
        assert_eq!(
            lines[0],
            "LABEL=cloudimg-rootfs\t/\t ext4\tdiscard,errors=remount-ro\t0 1"
        );
        assert_eq!(lines[1], "LABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1");
        assert_eq!(
            lines[2],
            "# hyper2kvm: the Azure resource disk does not exist on KVM"
        );
        assert_eq!(lines[3], "#/dev/disk/cloud/azure_resource-part1\t/mnt\tauto\tdefaults,nofail,x-systemd.requires=cloud-init.service,_netdev,comment=cloudconfig\t0\t2");
        assert_eq!(
            edit.changes,
            ["commented out the Azure resource disk (/dev/disk/cloud/azure_resource-part1 on /mnt)"]
        );
        assert_eq!(fix(&edit.text, &os_disk()), None, "idempotent");
    }

    #[test]
    fn device_names_on_the_os_disk_become_uuids() {
        let text = "/dev/sda1 / ext4 defaults,discard 0 1\n/dev/sda15\t/boot/efi\tvfat\tumask=0077\t0\t1\n";
        let edit = fix(text, &os_disk()).unwrap();
        assert_eq!(
            edit.text,
            "UUID=5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d / ext4 defaults,discard 0 1\n\
             UUID=7A1B-2C3D\t/boot/efi\tvfat\tumask=0077\t0\t1\n"
        );
        assert_eq!(edit.changes.len(), 2);
        assert!(edit.changes[0].contains("/dev/sda1 → UUID=5f5e1c2d"));
    }

    #[test]
    fn older_agent_resource_disk_on_sdb1_is_commented_out() {
        let text = "UUID=5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d / xfs defaults 0 0\n/dev/sdb1 /mnt/resource ext4 defaults 0 0\n";
        let edit = fix(text, &os_disk()).unwrap();
        assert!(edit
            .text
            .contains("\n#/dev/sdb1 /mnt/resource ext4 defaults 0 0\n"));
    }

    #[test]
    fn data_disks_get_nofail() {
        let text = "\
UUID=5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d / xfs defaults 0 0
/dev/sdc1 /data ext4 defaults 0 2
/dev/disk/azure/scsi1/lun1-part1 /logs xfs defaults,noatime 0 2
UUID=0b7a3b0e-93c3-4a5c-8f9d-2d1c5e6f7a8b /backup ext4 defaults,nofail 0 2
UUID=11111111-2222-3333-4444-555555555555 /srv ext4 defaults 0 2
tmpfs /tmp tmpfs defaults 0 0
";
        let edit = fix(text, &os_disk()).unwrap();
        let lines: Vec<&str> = edit.text.lines().collect();
        assert_eq!(
            lines[0],
            "UUID=5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d / xfs defaults 0 0"
        );
        assert_eq!(lines[1], "/dev/sdc1 /data ext4 defaults,nofail 0 2");
        assert_eq!(
            lines[2],
            "/dev/disk/azure/scsi1/lun1-part1 /logs xfs defaults,noatime,nofail 0 2"
        );
        assert_eq!(
            lines[3],
            "UUID=0b7a3b0e-93c3-4a5c-8f9d-2d1c5e6f7a8b /backup ext4 defaults,nofail 0 2"
        );
        assert_eq!(
            lines[4],
            "UUID=11111111-2222-3333-4444-555555555555 /srv ext4 defaults,nofail 0 2"
        );
        assert_eq!(lines[5], "tmpfs /tmp tmpfs defaults 0 0");
        assert_eq!(edit.changes.len(), 3);
        assert_eq!(fix(&edit.text, &os_disk()), None, "idempotent");
    }

    #[test]
    fn a_line_without_options_gets_them() {
        let edit = fix("/dev/sdc1 /data ext4\n", &os_disk()).unwrap();
        assert_eq!(edit.text, "/dev/sdc1 /data ext4 defaults,nofail\n");
    }

    #[test]
    fn comments_blank_lines_and_a_clean_fstab_are_left_alone() {
        let text = "# /etc/fstab: static file system information.\n\nUUID=5f5e1c2d-4c0a-4d1b-9d8e-0e2f3a4b5c6d / ext4 errors=remount-ro 0 1\n";
        assert_eq!(fix(text, &os_disk()), None);
    }

    #[test]
    fn unknown_os_disk_device_is_left_for_the_root() {
        // /dev/sda2 is on the OS disk but inspection found no file system there: leave it.
        let text = "/dev/sda2 / ext4 defaults 0 1\n";
        assert_eq!(fix(text, &os_disk()), None);
    }

    #[test]
    fn only_sd_names_are_scsi_names() {
        assert!(is_scsi_device_name("/dev/sda1"));
        assert!(is_scsi_device_name("/dev/sdab"));
        assert!(!is_scsi_device_name("/dev/sd"));
        assert!(!is_scsi_device_name("/dev/sda1x"));
        assert!(!is_scsi_device_name("/dev/vda1"));
    }
}
