//! The packages of one `hyper2kvm import` run as core's source traits: a [`VmSource`] (one
//! VM per SRC; exporting a disk checks its manifest digest and hands out the reader opened
//! with the package), its [`Origin`], and a [`HardwareCatalog`] answering from the descriptor
//! or the flags. Nothing to power off and nothing to snapshot: the files are the VM at rest.

use std::collections::BTreeMap;
use std::path::Path;

use hyper2kvm_core::{
    BoxFuture, Cleanups, Disk, DiskRole, Error, ErrorKind, ExportedDisk, Hardware, HardwareCatalog,
    Origin, PowerState, Result, Security, Vm, VmSource,
};

use tokio::sync::OnceCell;

use crate::manifest;
use crate::package::{Defaults, Package};

/// The opened SRCs of a run.
pub struct LocalSource {
    packages: Vec<Package>,
    /// Per package, once its first disk is exported: whether every manifest digest matched
    /// (or the error's kind and message).
    verified: Vec<OnceCell<std::result::Result<(), (ErrorKind, String)>>>,
    cleanups: Cleanups,
}

impl LocalSource {
    /// Opens every SRC (see [`crate::package::open`]); the first that cannot be opened is the
    /// error, so a run with a bad SRC stops before it writes anything.
    pub fn open(
        srcs: &[impl AsRef<Path>],
        defaults: &Defaults,
        cleanups: Cleanups,
    ) -> Result<Self> {
        let mut packages = Vec::with_capacity(srcs.len());
        for src in srcs {
            packages.push(crate::package::open(src.as_ref(), defaults)?);
        }
        let verified = packages.iter().map(|_| OnceCell::new()).collect();
        Ok(LocalSource {
            packages,
            verified,
            cleanups,
        })
    }

    /// The opened packages, in SRC order.
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    fn package(&self, vm: &Vm) -> Result<&Package> {
        self.packages
            .iter()
            .find(|p| vm_id(p) == vm.id)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no SRC is VM {}", vm.id)))
    }
}

/// Hashes every disk of `p` that its manifest lists, one after the other, off the runtime.
async fn verify_package(p: Package) -> std::result::Result<(), (ErrorKind, String)> {
    let Some(mf) = p.manifest.clone() else {
        return Ok(());
    };
    let check = move || -> Result<()> {
        for d in &p.disks {
            let Some(entry) = &d.digest else { continue };
            let (file, offset, len) = &d.bytes;
            let f = std::fs::File::open(file)
                .map_err(|e| Error::io("cannot open", e).with_path(file))?;
            manifest::verify(entry, &mf, &f, &d.shown, *offset, *len)?;
        }
        Ok(())
    };
    match tokio::task::spawn_blocking(check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err((e.kind(), e.to_string())),
        Err(e) => Err((
            ErrorKind::Cancelled,
            format!("the digest task did not finish: {e}"),
        )),
    }
}

fn vm_id(p: &Package) -> String {
    std::path::absolute(&p.path)
        .unwrap_or_else(|_| p.path.clone())
        .display()
        .to_string()
}

fn disk_id(p: &Package, i: usize) -> String {
    let d = &p.disks[i];
    std::path::absolute(&d.shown)
        .unwrap_or_else(|_| d.shown.clone())
        .display()
        .to_string()
}

fn vm_of(p: &Package) -> Vm {
    let disks = (0..p.disks.len())
        .map(|i| Disk {
            id: disk_id(p, i),
            name: p.disks[i].name.clone(),
            role: if i == 0 {
                DiskRole::Os
            } else {
                DiskRole::Data { lun: i as u32 - 1 }
            },
            size_bytes: p.disks[i].reader.size(),
        })
        .collect();
    let mut tags = BTreeMap::new();
    tags.insert("source".to_string(), p.kind.what().to_string());
    if let Some(m) = &p.manifest {
        tags.insert("manifest".to_string(), m.clone());
    }
    Vm {
        id: vm_id(p),
        name: p.name.clone(),
        subscription: String::new(),
        resource_group: "local".into(),
        location: "local".into(),
        vm_size: format!(
            "{} vCPU, {} MiB{}",
            p.hardware.vcpus,
            p.hardware.memory_mib,
            if p.described { "" } else { " (from flags)" }
        ),
        tags,
        // Files at rest: nothing to stop, nothing to snapshot, as a deallocated Azure VM.
        power_state: PowerState::Deallocated,
        os_type: p.os_type,
        firmware: p.hardware.firmware,
        disks,
        security: Security::new(p.hardware.secure_boot, p.hardware.vtpm),
        nics: p.hardware.nics,
    }
}

impl Origin for LocalSource {
    fn platform(&self) -> &str {
        "local files"
    }

    fn describe(&self, vm: &Vm) -> String {
        match self.package(vm) {
            Ok(p) => format!("imported from {} {}", p.kind.what(), p.path.display()),
            Err(_) => vm.id.clone(),
        }
    }
}

impl VmSource for LocalSource {
    fn list_vms(&self) -> BoxFuture<'_, Result<Vec<Vm>>> {
        Box::pin(async move { Ok(self.packages.iter().map(vm_of).collect()) })
    }

    fn export_disk<'a>(
        &'a self,
        vm: &'a Vm,
        disk: &'a Disk,
    ) -> BoxFuture<'a, Result<ExportedDisk>> {
        Box::pin(async move {
            let p = self.package(vm)?;
            let i = (0..p.disks.len())
                .find(|&i| disk_id(p, i) == disk.id)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("VM {} has no disk {}", vm.id, disk.id),
                    )
                })?;
            let d = p.disks[i].clone();
            // Every disk of the VM is checked before any is converted: a mismatch in one
            // fails them all, so no image of a damaged package gets its final name.
            let pi = self
                .packages
                .iter()
                .position(|q| std::ptr::eq(q, p))
                .unwrap_or(0);
            let verdict = self.verified[pi]
                .get_or_init(|| verify_package(p.clone()))
                .await;
            if let Err((kind, message)) = verdict {
                return Err(Error::new(*kind, message.clone()));
            }
            Ok(ExportedDisk::new(
                d.reader.clone(),
                self.cleanups.clone(),
                || Box::pin(async { Ok(()) }),
            ))
        })
    }
}

impl HardwareCatalog for LocalSource {
    fn hardware<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<Hardware>> {
        Box::pin(async move { Ok(self.package(vm)?.hardware.clone()) })
    }
}
