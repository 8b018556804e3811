//! The libvirt domain of a migrated VM: hardware from the source's [`HardwareCatalog`]
//! (a default size, and a warning, when it cannot tell), disks in boot order, and a
//! description saying where the VM came from ([`Origin`]).
//!
//! [`HardwareCatalog`]: hyper2kvm_core::HardwareCatalog
//! [`Origin`]: hyper2kvm_core::Origin

use hyper2kvm_core::libvirt::{domain_xml, DomainDisk, DomainSpec};
use hyper2kvm_core::{Error, ErrorKind, Hardware};

use crate::plan::DiskPlan;
use crate::report::write_atomic;
use crate::vm::VmRun;

/// What the domain gets when the source cannot say: adjust it by hand.
const FALLBACK_VCPUS: u32 = 2;
const FALLBACK_MEMORY_MIB: u64 = 4096;

impl VmRun<'_> {
    /// Writes the domain XML, once every disk is an image.
    pub(crate) async fn write_domain(&self) {
        let disks: Vec<&DiskPlan> = self.vp.disks.iter().collect();
        if !disks.iter().any(|d| d.lun.is_none()) {
            self.warn("no OS disk was migrated (disks: data), so no domain XML was written".into());
            return;
        }
        let hardware = match &self.m.source.hardware {
            Some(catalog) => catalog.hardware(self.vm).await,
            None => Err(Error::new(
                ErrorKind::Unsupported,
                "the source has no hardware catalog",
            )),
        };
        let hardware = hardware.unwrap_or_else(|e| {
            self.warn(format!(
                "VM size {} not found ({e}); the domain gets {FALLBACK_VCPUS} vCPUs and {FALLBACK_MEMORY_MIB} MiB, adjust it",
                self.vm.vm_size
            ));
            Hardware::new(FALLBACK_VCPUS, FALLBACK_MEMORY_MIB, self.vm.firmware).with_vm(self.vm)
        });
        let secure_boot = hardware.secure_boot == Some(true);
        if secure_boot && hardware.firmware != hyper2kvm_core::Firmware::Uefi {
            self.warn("the source says secure boot, but the VM boots by BIOS: the domain has no secure boot".into());
        }
        let tpm = hardware.vtpm == Some(true);
        let domain_disks = disks
            .iter()
            .map(|d| DomainDisk {
                path: std::path::absolute(&d.output).unwrap_or_else(|_| d.output.clone()),
                format: self.m.opts.plan.format,
            })
            .collect();
        let origin = &self.m.source.vms;
        let spec = DomainSpec {
            name: self.vm.name.clone(),
            description: format!(
                "Migrated from {} by hyper2kvm (run {}): {}",
                origin.platform(),
                self.m.opts.plan.run_id,
                origin.describe(self.vm)
            ),
            vcpus: hardware.vcpus,
            memory_mib: hardware.memory_mib,
            firmware: hardware.firmware,
            os_type: self.vm.os_type,
            cpu: self.m.opts.cpu.clone(),
            disks: domain_disks,
            network: self.m.opts.network.clone(),
            nics: hardware.nics.unwrap_or(1),
            secure_boot,
            tpm,
        };
        let xml = domain_xml(&spec);
        match write_atomic(&self.vp.domain_xml, xml.as_bytes()) {
            Ok(()) => self.update(|r| {
                r.domain_xml = Some(self.vp.domain_xml.clone());
                r.vcpus = Some(hardware.vcpus);
                r.memory_mib = Some(hardware.memory_mib);
                r.secure_boot =
                    Some(secure_boot && hardware.firmware == hyper2kvm_core::Firmware::Uefi);
                r.tpm = Some(tpm);
                r.nics = Some(hardware.nics.unwrap_or(1));
            }),
            Err(e) => self.error(crate::report::ErrorRecord::of(
                &hyper2kvm_core::Error::io("cannot write the domain", e)
                    .with_path(&self.vp.domain_xml),
            )),
        }
    }
}
