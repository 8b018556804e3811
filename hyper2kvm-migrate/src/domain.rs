//! The libvirt domain (or the KubeVirt manifests) of a migrated VM: hardware from the source's [`HardwareCatalog`]
//! (a default size, and a warning, when it cannot tell), disks in boot order, and a
//! description saying where the VM came from ([`Origin`]).
//!
//! [`HardwareCatalog`]: hyper2kvm_core::HardwareCatalog
//! [`Origin`]: hyper2kvm_core::Origin

use std::path::{Path, PathBuf};

use hyper2kvm_core::kubevirt::{manifests, to_yaml, ImageSource, KubevirtDisk, KubevirtSpec};
use hyper2kvm_core::libvirt::{domain_xml, DomainDisk, DomainSpec};
use hyper2kvm_core::{Error, ErrorKind, Hardware};

use crate::options::{KubevirtOptions, Target};

use crate::plan::{DiskPlan, VmPlan};
use crate::report::write_atomic;
use crate::vm::VmRun;

/// What the domain gets when the source cannot say: adjust it by hand.
const FALLBACK_VCPUS: u32 = 2;
const FALLBACK_MEMORY_MIB: u64 = 4096;

impl VmRun<'_> {
    /// Writes the domain XML or the KubeVirt manifests, once every disk is an image.
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
        let written = match &self.m.opts.target {
            Target::Libvirt => write_atomic(&self.vp.domain_xml, domain_xml(&spec).as_bytes())
                .map(|()| self.vp.domain_xml.clone())
                .map_err(|e| (self.vp.domain_xml.clone(), e)),
            Target::Kubevirt(options) => self.write_kubevirt(&spec, &disks, options),
        };
        match written {
            Ok(path) => self.update(|r| {
                match self.m.opts.target {
                    Target::Kubevirt(_) => r.kubevirt_manifest = Some(path.clone()),
                    _ => r.domain_xml = Some(path.clone()),
                }
                r.vcpus = Some(hardware.vcpus);
                r.memory_mib = Some(hardware.memory_mib);
                r.secure_boot =
                    Some(secure_boot && hardware.firmware == hyper2kvm_core::Firmware::Uefi);
                r.tpm = Some(tpm);
                r.nics = Some(spec.nics);
            }),
            Err((path, e)) => self.error(crate::report::ErrorRecord::of(
                &hyper2kvm_core::Error::io("cannot write the VM's definition", e).with_path(&path),
            )),
        }
    }

    /// Writes `<vm>.kubevirt.yaml` next to the images: a DataVolume per disk, then the
    /// VirtualMachine. The pod network takes one NIC: a VM that had more is told so.
    fn write_kubevirt(
        &self,
        spec: &DomainSpec,
        disks: &[&DiskPlan],
        options: &KubevirtOptions,
    ) -> Result<PathBuf, (PathBuf, std::io::Error)> {
        if spec.nics > 1 {
            self.warn(format!(
                "the VM had {} NICs; its VirtualMachine gets one, on the pod network (attach the others through Multus networks)",
                spec.nics
            ));
        }
        let kubevirt = KubevirtSpec {
            disks: disks
                .iter()
                .map(|d| KubevirtDisk {
                    volume: match d.lun {
                        None => "os".to_string(),
                        Some(lun) => format!("lun{lun}"),
                    },
                    virtual_size: d.size_bytes,
                    source: match &options.image_url_base {
                        Some(base) => {
                            ImageSource::Http(image_url(base, &self.m.opts.plan.dir, &d.output))
                        }
                        None => ImageSource::Upload,
                    },
                })
                .collect(),
            namespace: options.namespace.clone(),
            storage_class: options.storage_class.clone(),
        };
        let yaml = to_yaml(&manifests(spec, &kubevirt));
        let path = self.vp.kubevirt_manifest();
        write_atomic(&path, yaml.as_bytes())
            .map(|()| path.clone())
            .map_err(|e| (path, e))
    }
}

impl VmPlan {
    /// Where `output.target: kubevirt` writes this VM's manifests: `<vm>.kubevirt.yaml`
    /// next to its domain XML's place.
    pub fn kubevirt_manifest(&self) -> PathBuf {
        self.domain_xml.with_extension("kubevirt.yaml")
    }
}

/// The URL of `image` under `base`, which serves the output directory `dir`: each path
/// segment percent-encoded (outside RFC 3986's unreserved characters).
fn image_url(base: &str, dir: &Path, image: &Path) -> String {
    let relative = image.strip_prefix(dir).unwrap_or(image);
    let mut url = base.trim_end_matches('/').to_string();
    for segment in relative.iter() {
        url.push('/');
        for b in segment.to_string_lossy().bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls_are_relative_to_the_output_dir_and_encoded() {
        assert_eq!(
            image_url(
                "http://h/images/",
                Path::new("/out"),
                Path::new("/out/rg 1/vm/os.qcow2")
            ),
            "http://h/images/rg%201/vm/os.qcow2"
        );
        assert_eq!(
            image_url(
                "https://h",
                Path::new("out"),
                Path::new("out/web/web-lun0.qcow2")
            ),
            "https://h/web/web-lun0.qcow2"
        );
    }
}
