//! What is in the image: OS, distribution family, root file system, kernels, boot loader.
//!
//! libguestfs' inspection (`inspect-os`, `inspect-get-*`) finds the root file system and the
//! distribution and mounts the guest's file systems where its fstab says; the rest is read from
//! the mounted guest through [`GuestFs`], so it is tested without an appliance.

use std::collections::BTreeMap;
use std::fmt;

use hyper2kvm_core::{Firmware, OsType};

use crate::edits::kconfig;
use crate::guestfish::Guestfish;
use crate::guestfs::GuestFs;
use crate::network::{self, NetworkInspection};
use crate::windows::virtio_win::Variant;
use crate::windows::WindowsInspection;
use crate::{Error, ErrorKind, Result};

/// Families of Linux distributions that share tools and file layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistroFamily {
    /// Debian, Ubuntu: initramfs-tools, `update-grub`, netplan or ifupdown.
    Debian,
    /// RHEL, Alma, Rocky, CentOS, Oracle Linux, Fedora: dracut, `grub2-mkconfig`, ifcfg or
    /// NetworkManager keyfiles.
    RedHat,
    /// SLES, openSUSE: dracut, `grub2-mkconfig`, wicked's ifcfg.
    Suse,
    /// Anything else: only the distribution-neutral fix-ups apply.
    Other,
}

impl DistroFamily {
    /// The family of a libguestfs distribution name (`inspect-get-distro`).
    pub fn from_distro(distro: &str) -> DistroFamily {
        match distro {
            "debian" | "ubuntu" | "linuxmint" | "kalilinux" => DistroFamily::Debian,
            "rhel" | "centos" | "rocky" | "alma" | "almalinux" | "oraclelinux" | "fedora"
            | "redhat-based" | "circle" | "scientificlinux" | "mariner" => DistroFamily::RedHat,
            "sles" | "sled" | "opensuse" | "suse-based" => DistroFamily::Suse,
            _ => DistroFamily::Other,
        }
    }
}

/// An installed kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Its version, the name of its `/lib/modules` directory.
    pub version: String,
    /// The virtio drivers it does not build in (so its initramfs must carry them); all of
    /// them when its build configuration could not be found.
    pub virtio_modules: Vec<&'static str>,
}

/// The boot loader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLoader {
    /// GRUB 2's configuration files that a regeneration rewrites (`/boot/grub/grub.cfg`…).
    pub grub_configs: Vec<String>,
    /// Firmware the installed boot loader supports: BIOS (`i386-pc` modules), UEFI (an EFI
    /// system partition with boot files).
    pub firmware: Vec<Firmware>,
}

impl fmt::Display for BootLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.grub_configs.is_empty() {
            "unknown boot loader"
        } else {
            "grub2"
        };
        let firmware: Vec<&str> = self
            .firmware
            .iter()
            .map(|fw| match fw {
                Firmware::Bios => "BIOS",
                Firmware::Uefi => "UEFI",
            })
            .collect();
        if firmware.is_empty() {
            f.write_str(kind)
        } else {
            write!(f, "{kind} ({})", firmware.join(", "))
        }
    }
}

/// What the inspection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Linux, Windows, or unknown.
    pub os: OsType,
    /// libguestfs' distribution name (`debian`, `ubuntu`, `rhel`, `rocky`, `sles`…).
    pub distro: String,
    /// The distribution's family.
    pub family: DistroFamily,
    /// The product name (`Debian GNU/Linux 12 (bookworm)`).
    pub product: String,
    /// The root file system's device as libguestfs sees it (`/dev/sda1`).
    pub root: String,
    /// Mount points and their devices, from the guest's fstab.
    pub mountpoints: Vec<(String, String)>,
    /// File system UUIDs by device (`/dev/sda1` → UUID), for rewriting device names.
    pub uuid_by_device: BTreeMap<String, String>,
    /// Installed kernels.
    pub kernels: Vec<Kernel>,
    /// The boot loader.
    pub boot: BootLoader,
    /// The network: stacks, configuration files, naming.
    pub network: NetworkInspection,
    /// For a Windows guest: version, kind, system root, control set, hives.
    pub windows: Option<WindowsInspection>,
}

impl Inspection {
    /// One line for the report: `linux debian (Debian GNU/Linux 12 (bookworm)), root /dev/sda1, …`.
    pub fn summary(&self) -> String {
        if self.os == OsType::Windows {
            return format!("windows ({}), root {}", self.product, self.root);
        }
        let kernels: Vec<&str> = self.kernels.iter().map(|k| k.version.as_str()).collect();
        format!(
            "{} {} ({}), root {}, kernels [{}], {}",
            self.os.as_str(),
            self.distro,
            self.product,
            self.root,
            kernels.join(", "),
            self.boot
        )
    }
}

/// Inspects the image behind `gf` and, for a Linux guest, mounts its file systems (read-only
/// if the image was added read-only). Windows guests are inspected but not mounted.
pub fn inspect(gf: &mut Guestfish) -> Result<Inspection> {
    let roots = gf.lines(&["inspect-os"])?;
    let Some(root) = roots.first().cloned() else {
        // list-filesystems leaves out what blkid calls crypto (BitLocker): ask every device
        // and partition.
        let mut filesystems = parse_pairs(&gf.call(&["list-filesystems"])?);
        let mut devices = gf.lines(&["list-devices"])?;
        devices.extend(gf.lines(&["list-partitions"])?);
        for device in devices {
            if let Ok(kind) = gf.call(&["vfs-type", &device]) {
                filesystems.push((device, kind.trim().to_string()));
            }
        }
        if let Some(refusal) = encrypted_refusal(&filesystems) {
            return Err(Error::new(ErrorKind::Encrypted, refusal));
        }
        return Err(Error::new(
            ErrorKind::NoOperatingSystem,
            "no operating system found in the image (is it an OS disk?)",
        ));
    };
    let os = match gf.call(&["inspect-get-type", &root])?.trim() {
        "linux" => OsType::Linux,
        "windows" => OsType::Windows,
        _ => OsType::Unknown,
    };
    let distro = gf.call(&["inspect-get-distro", &root])?.trim().to_string();
    let product = gf
        .call(&["inspect-get-product-name", &root])?
        .trim()
        .to_string();
    let mountpoints = parse_pairs(&gf.call(&["inspect-get-mountpoints", &root])?);
    let mut uuid_by_device = BTreeMap::new();
    let filesystems = parse_pairs(&gf.call(&["list-filesystems"])?);
    for (device, fs_type) in &filesystems {
        if fs_type == "unknown" || fs_type.is_empty() {
            continue;
        }
        let uuid = gf.call(&["vfs-uuid", device])?.trim().to_string();
        if !uuid.is_empty() {
            uuid_by_device.insert(device.clone(), uuid);
        }
    }
    let mut inspection = Inspection {
        os,
        family: DistroFamily::from_distro(&distro),
        distro,
        product,
        root,
        mountpoints,
        uuid_by_device,
        kernels: Vec::new(),
        boot: BootLoader {
            grub_configs: Vec::new(),
            firmware: Vec::new(),
        },
        network: NetworkInspection::default(),
        windows: None,
    };
    if os == OsType::Windows {
        inspection.windows = Some(windows(gf, &inspection.root)?);
    }
    if os != OsType::Linux {
        return Ok(inspection);
    }
    // Parents before children: "/" before "/boot" before "/boot/efi". Only file systems on
    // this disk: the fstab also names the resource disk, data disks and network shares.
    let mut order: Vec<(String, String)> = inspection
        .mountpoints
        .iter()
        .filter(|(_, device)| filesystems.iter().any(|(fs, _)| fs == device))
        .cloned()
        .collect();
    order.sort_by_key(|(mountpoint, _)| mountpoint.len());
    let mount = if gf.readonly() { "mount-ro" } else { "mount" };
    for (mountpoint, device) in &order {
        gf.call(&[mount, device, mountpoint])?;
    }
    inspection.kernels = kernels(gf)?;
    inspection.boot = boot_loader(gf)?;
    inspection.network = network::inspect(gf)?;
    Ok(inspection)
}

/// The refusal for an image whose OS cannot be found because its volumes are encrypted,
/// saying how to decrypt first; `None` if no volume is.
pub fn encrypted_refusal(filesystems: &[(String, String)]) -> Option<String> {
    let devices = |kind: &str| {
        let mut found: Vec<&str> = filesystems
            .iter()
            .filter(|(_, t)| t.eq_ignore_ascii_case(kind))
            .map(|(d, _)| d.as_str())
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    };
    let bitlocker = devices("BitLocker");
    let luks = devices("crypto_LUKS");
    if !bitlocker.is_empty() {
        Some(format!(
            "{} BitLocker-encrypted: the guest cannot be inspected or fixed. Decrypt it first, in the running VM (`manage-bde -off C:` for each volume, until `manage-bde -status` says Fully Decrypted) or, for Azure Disk Encryption, with `az vm encryption disable --volume-type ALL` (or Disable-AzVMDiskEncryption); then export the disk again",
            is_are(&bitlocker)
        ))
    } else if !luks.is_empty() {
        Some(format!(
            "{} LUKS-encrypted (dm-crypt, as Azure Disk Encryption for Linux does it): the guest cannot be inspected or fixed. Decrypt it first (`az vm encryption disable --volume-type DATA` for data volumes; an ADE-encrypted Linux OS disk cannot be decrypted in place: copy its data to an unencrypted disk), then export again",
            is_are(&luks)
        ))
    } else {
        None
    }
}

fn is_are(devices: &[&str]) -> String {
    if devices.len() == 1 {
        format!("{} is", devices[0])
    } else {
        format!("{} are", devices.join(", "))
    }
}

/// What libguestfs knows of a Windows root (nothing is mounted for this).
fn windows(gf: &mut Guestfish, root: &str) -> Result<WindowsInspection> {
    let mut get = |what: &str| -> Result<String> {
        Ok(gf
            .call(&[&format!("inspect-get-{what}"), root])?
            .trim()
            .to_string())
    };
    let number = |text: String, what: &str| {
        text.parse::<u32>().map_err(|_| {
            Error::new(
                ErrorKind::Guestfs,
                format!("inspect-get-{what} said {text:?}, not a number"),
            )
        })
    };
    let major = number(get("major-version")?, "major-version")?;
    let minor = number(get("minor-version")?, "minor-version")?;
    let variant = if get("product-variant")?.eq_ignore_ascii_case("client") {
        Variant::Client
    } else {
        Variant::Server
    };
    Ok(WindowsInspection {
        major,
        minor,
        variant,
        arch: get("arch")?,
        systemroot: get("windows-systemroot")?,
        control_set: get("windows-current-control-set")?,
        system_hive: get("windows-system-hive")?,
        software_hive: get("windows-software-hive")?,
    })
}

/// `key: value` lines, as guestfish prints hashes (`/boot/efi: /dev/sda15`).
fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Kernels with modules under `/lib/modules` and an image in `/boot` (or, on newer Fedora and
/// RHEL, beside their modules); leftover module directories of removed kernels are skipped.
pub fn kernels(guest: &mut dyn GuestFs) -> Result<Vec<Kernel>> {
    let mut kernels = Vec::new();
    for version in guest.list("/lib/modules")? {
        let installed = guest.exists(&format!("/boot/vmlinuz-{version}"))?
            || guest.exists(&format!("/lib/modules/{version}/vmlinuz"))?;
        if !installed {
            continue;
        }
        let config = match guest.read(&format!("/boot/config-{version}"))? {
            Some(config) => Some(config),
            None => guest.read(&format!("/lib/modules/{version}/config"))?,
        };
        let virtio_modules = match config {
            Some(config) => kconfig::virtio_not_builtin(&config),
            None => crate::edits::VIRTIO_DRIVERS.to_vec(),
        };
        kernels.push(Kernel {
            version,
            virtio_modules,
        });
    }
    Ok(kernels)
}

/// GRUB 2's configuration files and the firmware its installed modules are for.
pub fn boot_loader(guest: &mut dyn GuestFs) -> Result<BootLoader> {
    let mut grub_configs = Vec::new();
    for path in ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"] {
        if guest.read(path)?.is_some() {
            grub_configs.push(path.to_string());
        }
    }
    let mut firmware = Vec::new();
    if guest.exists("/boot/grub/i386-pc")? || guest.exists("/boot/grub2/i386-pc")? {
        firmware.push(Firmware::Bios);
    }
    if !guest.list("/boot/efi/EFI")?.is_empty() {
        firmware.push(Firmware::Uefi);
    }
    Ok(BootLoader {
        grub_configs,
        firmware,
    })
}

/// A Windows inspection for unit tests (the phony guests' hives at Windows' paths).
#[cfg(test)]
pub(crate) fn testing_windows(major: u32, minor: u32, control_set: &str) -> Inspection {
    Inspection {
        os: OsType::Windows,
        distro: "windows".into(),
        family: DistroFamily::Other,
        product: "Windows Server".into(),
        root: "/dev/sda3".into(),
        mountpoints: vec![("/".into(), "/dev/sda3".into())],
        uuid_by_device: BTreeMap::new(),
        kernels: Vec::new(),
        boot: BootLoader {
            grub_configs: Vec::new(),
            firmware: Vec::new(),
        },
        network: NetworkInspection::default(),
        windows: Some(WindowsInspection {
            major,
            minor,
            variant: Variant::Server,
            arch: "x86_64".into(),
            systemroot: "/Windows".into(),
            control_set: control_set.into(),
            system_hive: "/Windows/System32/config/SYSTEM".into(),
            software_hive: "/Windows/System32/config/SOFTWARE".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestfs::memory::MemoryGuest;

    #[test]
    fn encrypted_volumes_are_refused_with_how_to_decrypt() {
        let fs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(d, t)| (d.to_string(), t.to_string()))
                .collect()
        };
        let why =
            encrypted_refusal(&fs(&[("/dev/sda1", "ntfs"), ("/dev/sda2", "BitLocker")])).unwrap();
        assert!(why.starts_with("/dev/sda2 is BitLocker-encrypted"), "{why}");
        assert!(why.contains("manage-bde -off"), "{why}");
        let why =
            encrypted_refusal(&fs(&[("/dev/sda1", "ext4"), ("/dev/sda2", "crypto_LUKS")])).unwrap();
        assert!(why.contains("LUKS-encrypted"), "{why}");
        assert_eq!(encrypted_refusal(&fs(&[("/dev/sda1", "ntfs")])), None);
    }

    #[test]
    fn families() {
        assert_eq!(DistroFamily::from_distro("ubuntu"), DistroFamily::Debian);
        assert_eq!(DistroFamily::from_distro("rocky"), DistroFamily::RedHat);
        assert_eq!(DistroFamily::from_distro("sles"), DistroFamily::Suse);
        assert_eq!(DistroFamily::from_distro("archlinux"), DistroFamily::Other);
    }

    #[test]
    fn parses_guestfish_hashes() {
        assert_eq!(
            parse_pairs("/: /dev/sda1\n/boot/efi: /dev/sda15\n"),
            [
                ("/".to_string(), "/dev/sda1".to_string()),
                ("/boot/efi".to_string(), "/dev/sda15".to_string())
            ]
        );
    }

    #[test]
    fn kernels_with_their_virtio_needs() {
        let mut guest = MemoryGuest::with(&[
            ("/lib/modules/6.1.0-28-cloud-amd64/modules.dep", ""),
            ("/boot/vmlinuz-6.1.0-28-cloud-amd64", "kernel"),
            ("/boot/config-6.1.0-28-cloud-amd64", "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_SCSI_VIRTIO=m\nCONFIG_VIRTIO_NET=y\n"),
            // RHEL 9 keeps the image and config beside the modules.
            ("/lib/modules/5.14.0-427.el9.x86_64/vmlinuz", "kernel"),
            ("/lib/modules/5.14.0-427.el9.x86_64/config", "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_SCSI_VIRTIO=y\nCONFIG_VIRTIO_NET=y\n"),
            // A removed kernel's leftover modules.
            ("/lib/modules/6.1.0-10-cloud-amd64/extra/x.ko", ""),
        ]);
        let found = kernels(&mut guest).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].version, "5.14.0-427.el9.x86_64");
        assert!(found[0].virtio_modules.is_empty());
        assert_eq!(found[1].virtio_modules, ["virtio_blk", "virtio_scsi"]);
    }

    #[test]
    fn grub_for_bios_and_uefi() {
        let mut guest = MemoryGuest::with(&[
            ("/boot/grub/grub.cfg", "menuentry"),
            ("/boot/grub/i386-pc/normal.mod", ""),
            ("/boot/efi/EFI/debian/grubx64.efi", ""),
        ]);
        let boot = boot_loader(&mut guest).unwrap();
        assert_eq!(boot.grub_configs, ["/boot/grub/grub.cfg"]);
        assert_eq!(boot.firmware, [Firmware::Bios, Firmware::Uefi]);
        assert_eq!(boot.to_string(), "grub2 (BIOS, UEFI)");
    }
}
