//! The virtual hardware a migrated VM needs, as its source knows it: vCPUs and memory (for
//! Azure, from the VM size), firmware, and secure boot and vTPM where the source can tell.

use crate::error::Result;
use crate::model::{Firmware, Vm};
use crate::source::BoxFuture;

/// What the domain of a migrated VM gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hardware {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// Whether UEFI secure boot was on; `None` when the source does not say.
    pub secure_boot: Option<bool>,
    /// Whether the VM had a virtual TPM; `None` when the source does not say.
    pub vtpm: Option<bool>,
    /// How many NICs the VM had; `None` when the source does not say (the domain gets one).
    pub nics: Option<u32>,
}

impl Hardware {
    /// `vcpus` and `memory_mib` with `firmware`; secure boot and vTPM unknown.
    pub fn new(vcpus: u32, memory_mib: u64, firmware: Firmware) -> Self {
        Hardware {
            vcpus,
            memory_mib,
            firmware,
            secure_boot: None,
            vtpm: None,
            nics: None,
        }
    }

    /// The same, with secure boot, vTPM and NIC count as `vm`'s source describes them.
    pub fn with_vm(mut self, vm: &Vm) -> Self {
        self.secure_boot = vm.security.secure_boot;
        self.vtpm = vm.security.vtpm;
        self.nics = vm.nics;
        self
    }
}

/// Looks up the hardware of VMs (for Azure: the VM sizes of the VM's location).
pub trait HardwareCatalog: Send + Sync {
    /// The hardware `vm` needs; an error when the source cannot tell (an unknown size).
    fn hardware<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<Hardware>>;
}
