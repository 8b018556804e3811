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
        }
    }
}

/// Looks up the hardware of VMs (for Azure: the VM sizes of the VM's location).
pub trait HardwareCatalog: Send + Sync {
    /// The hardware `vm` needs; an error when the source cannot tell (an unknown size).
    fn hardware<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<Hardware>>;
}
