//! Azure as core's [`HardwareCatalog`]: vCPUs and memory from the VM size, looked up once per
//! subscription and location (`GET …/locations/{location}/vmSizes`), firmware from the
//! disks' Hyper-V generation, secure boot and vTPM from the VM's `securityProfile`, the NIC
//! count from its `networkProfile`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper2kvm_core::{BoxFuture, ErrorKind, Hardware, HardwareCatalog, Vm};
use tokio::sync::OnceCell;

use crate::arm::ArmClient;
use crate::source::AzureSource;

type Sizes = HashMap<String, (u32, u64)>;

/// VM sizes by lower-cased `subscription/location`, then lower-cased size name.
#[derive(Default)]
pub(crate) struct SizeCache {
    cells: Mutex<HashMap<String, Arc<OnceCell<Sizes>>>>,
}

impl SizeCache {
    /// `(vCPUs, MiB)` of `vm`'s size.
    async fn lookup(&self, arm: &ArmClient, vm: &Vm) -> hyper2kvm_core::Result<(u32, u64)> {
        let key = format!("{}/{}", vm.subscription, vm.location).to_ascii_lowercase();
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        // A failed list is not kept: the next VM of the location asks again.
        let sizes = cell
            .get_or_try_init(|| async {
                let list = arm.vm_sizes(&vm.subscription, &vm.location).await?;
                Ok::<_, hyper2kvm_core::Error>(
                    list.into_iter()
                        .filter_map(|s| {
                            Some((
                                s.name.to_ascii_lowercase(),
                                (s.number_of_cores?, s.memory_in_mb?),
                            ))
                        })
                        .collect(),
                )
            })
            .await?;
        sizes
            .get(&vm.vm_size.to_ascii_lowercase())
            .copied()
            .ok_or_else(|| {
                hyper2kvm_core::Error::new(
                    ErrorKind::NotFound,
                    format!("not in the sizes of {}", vm.location),
                )
            })
    }
}

impl HardwareCatalog for AzureSource {
    fn hardware<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, hyper2kvm_core::Result<Hardware>> {
        Box::pin(async move {
            let (vcpus, memory_mib) = self.sizes().lookup(self.arm(), vm).await?;
            Ok(Hardware::new(vcpus, memory_mib, vm.firmware).with_vm(vm))
        })
    }
}
