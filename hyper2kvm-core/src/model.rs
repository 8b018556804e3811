//! The domain: virtual machines and their disks, as any source (Azure, a local file) describes
//! them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A virtual machine to list or migrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The source's unique id (for Azure, the ARM resource id).
    pub id: String,
    /// The VM's name.
    pub name: String,
    /// The subscription (or other top-level account) the VM lives in.
    pub subscription: String,
    /// The resource group (or folder) the VM lives in.
    pub resource_group: String,
    /// The region, e.g. `westeurope`.
    pub location: String,
    /// The source's size name, e.g. `Standard_D2s_v5`.
    pub vm_size: String,
    /// Tags, sorted by key.
    pub tags: BTreeMap<String, String>,
    /// Whether the VM runs now.
    pub power_state: PowerState,
    /// The guest OS family.
    pub os_type: OsType,
    /// BIOS or UEFI boot.
    pub firmware: Firmware,
    /// The VM's disks: the OS disk first, then data disks by LUN.
    pub disks: Vec<Disk>,
    /// Secure boot, vTPM and in-guest disk encryption, as far as the source can tell.
    pub security: Security,
    /// How many NICs the VM has, when the source says.
    pub nics: Option<u32>,
}

/// What a VM's source says about its boot security and its disks' encryption.
///
/// `None` means the source does not say, never "off".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Security {
    /// Whether UEFI secure boot is on (Azure: `securityProfile.uefiSettings.secureBootEnabled`).
    pub secure_boot: Option<bool>,
    /// Whether the VM has a virtual TPM (Azure: `securityProfile.uefiSettings.vTpmEnabled`).
    pub vtpm: Option<bool>,
    /// Why the disks are encrypted inside the guest (BitLocker or dm-crypt by Azure Disk
    /// Encryption), when they are: such a disk cannot be read or fixed without its key, so
    /// the engine refuses the VM before exporting anything.
    pub guest_encryption: Option<String>,
}

impl Security {
    /// Secure boot and vTPM as given; no guest encryption.
    pub fn new(secure_boot: Option<bool>, vtpm: Option<bool>) -> Self {
        Security {
            secure_boot,
            vtpm,
            guest_encryption: None,
        }
    }

    /// The same, with the guest encryption `why`.
    pub fn with_guest_encryption(mut self, why: Option<String>) -> Self {
        self.guest_encryption = why;
        self
    }
}

impl Vm {
    /// The sum of the sizes of all disks, in bytes.
    pub fn total_disk_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.size_bytes).sum()
    }
}

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The source's unique id (for Azure, the managed disk's resource id).
    pub id: String,
    /// The disk's name.
    pub name: String,
    /// OS disk or data disk at a LUN.
    pub role: DiskRole,
    /// The disk's size in bytes, as the guest sees it.
    pub size_bytes: u64,
}

/// The part a disk plays in its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskRole {
    /// The disk the VM boots from.
    Os,
    /// A data disk attached at a logical unit number.
    Data {
        /// The logical unit number, unique per VM.
        lun: u32,
    },
}

/// A VM's power state.
///
/// Parsed leniently from the spellings sources use: ARM instance-view codes
/// (`PowerState/running`), display strings (`VM deallocated`) and plain words (`stopped`).
/// Anything else is kept verbatim in [`PowerState::Unknown`], never rejected.
///
/// ```
/// use hyper2kvm_core::PowerState;
///
/// assert_eq!("PowerState/running".parse::<PowerState>().unwrap(), PowerState::Running);
/// assert_eq!("VM deallocated".parse::<PowerState>().unwrap(), PowerState::Deallocated);
/// assert_eq!("stopped".parse::<PowerState>().unwrap(), PowerState::Stopped);
/// assert_eq!(
///     "PowerState/hibernated".parse::<PowerState>().unwrap(),
///     PowerState::Unknown("hibernated".into()),
/// );
/// assert_eq!(PowerState::Deallocated.to_string(), "deallocated");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Running and billed.
    Running,
    /// Stopped from inside or by API but still allocated (and billed) on a host.
    Stopped,
    /// Stopped and released from its host.
    Deallocated,
    /// On its way to running.
    Starting,
    /// On its way to stopped.
    Stopping,
    /// On its way to deallocated.
    Deallocating,
    /// A state we do not know, as the source spelled it (without any `PowerState/` prefix).
    Unknown(String),
}

impl PowerState {
    /// The lower-case word for this state, as used in JSON output and filters.
    pub fn as_str(&self) -> &str {
        match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Deallocated => "deallocated",
            PowerState::Starting => "starting",
            PowerState::Stopping => "stopping",
            PowerState::Deallocating => "deallocating",
            PowerState::Unknown(s) => s,
        }
    }
}

impl FromStr for PowerState {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let word = trimmed
            .strip_prefix("PowerState/")
            .or_else(|| trimmed.strip_prefix("VM "))
            .unwrap_or(trimmed);
        Ok(match word.to_ascii_lowercase().as_str() {
            "running" => PowerState::Running,
            "stopped" => PowerState::Stopped,
            "deallocated" => PowerState::Deallocated,
            "starting" => PowerState::Starting,
            "stopping" => PowerState::Stopping,
            "deallocating" => PowerState::Deallocating,
            _ => PowerState::Unknown(word.to_string()),
        })
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guest operating system family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OsType {
    /// A Linux guest.
    Linux,
    /// A Windows guest.
    Windows,
    /// The source did not say.
    Unknown,
}

impl OsType {
    /// The lower-case word for this OS type.
    pub fn as_str(&self) -> &'static str {
        match self {
            OsType::Linux => "linux",
            OsType::Windows => "windows",
            OsType::Unknown => "unknown",
        }
    }
}

impl FromStr for OsType {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "linux" => OsType::Linux,
            "windows" => OsType::Windows,
            _ => OsType::Unknown,
        })
    }
}

impl fmt::Display for OsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the VM boots: Azure's Generation 1 VMs boot with BIOS, Generation 2 with UEFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// Legacy BIOS (Azure hyperVGeneration `V1`).
    Bios,
    /// UEFI (Azure hyperVGeneration `V2`).
    Uefi,
}

impl Firmware {
    /// From Azure's `hyperVGeneration` (`V1` / `V2`); anything else (or nothing) is Gen 1, as in
    /// Azure, where a disk without the property is V1.
    pub fn from_hyperv_generation(generation: Option<&str>) -> Firmware {
        match generation.map(str::trim) {
            Some(g) if g.eq_ignore_ascii_case("v2") => Firmware::Uefi,
            _ => Firmware::Bios,
        }
    }

    /// The Azure generation number: 1 for BIOS, 2 for UEFI.
    pub fn generation(&self) -> u8 {
        match self {
            Firmware::Bios => 1,
            Firmware::Uefi => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_state_spellings() {
        let cases = [
            ("PowerState/deallocated", PowerState::Deallocated),
            ("PowerState/deallocating", PowerState::Deallocating),
            ("VM running", PowerState::Running),
            ("VM stopping", PowerState::Stopping),
            ("Starting", PowerState::Starting),
            ("  STOPPED ", PowerState::Stopped),
            ("PowerState/unknown", PowerState::Unknown("unknown".into())),
            ("weird", PowerState::Unknown("weird".into())),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<PowerState>().unwrap(), want, "{text}");
        }
    }

    #[test]
    fn firmware_from_generation() {
        assert_eq!(Firmware::from_hyperv_generation(Some("V2")), Firmware::Uefi);
        assert_eq!(Firmware::from_hyperv_generation(Some("V1")), Firmware::Bios);
        assert_eq!(Firmware::from_hyperv_generation(None), Firmware::Bios);
        assert_eq!(Firmware::Uefi.generation(), 2);
    }

    #[test]
    fn total_disk_bytes_sums() {
        let disk = |lun, size| Disk {
            id: format!("d{lun}"),
            name: format!("d{lun}"),
            role: DiskRole::Data { lun },
            size_bytes: size,
        };
        let vm = Vm {
            id: "vm".into(),
            name: "vm".into(),
            subscription: "s".into(),
            resource_group: "rg".into(),
            location: "westeurope".into(),
            vm_size: "Standard_B1s".into(),
            tags: BTreeMap::new(),
            power_state: PowerState::Running,
            os_type: OsType::Linux,
            firmware: Firmware::Bios,
            disks: vec![disk(0, 10), disk(1, 32)],
            security: Security::default(),
            nics: None,
        };
        assert_eq!(vm.total_disk_bytes(), 42);
    }
}
