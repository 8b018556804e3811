//! Azure as core's [`PowerControl`]: `powerOff`, `deallocate` and `start` through ARM, each
//! waited for.
//!
//! Starting first revokes any read grant on the VM's disks (a disk with an active SAS keeps
//! the VM from starting, and a failed or cancelled export may still be revoking in the
//! background), and retries a `409 Conflict` (a power operation still finishing, say one a
//! Ctrl-C interrupted) for about a minute.

use std::time::Duration;

use hyper2kvm_core::{BoxFuture, PowerControl, Vm};

use crate::error::{ErrorKind, Result};
use crate::source::AzureSource;

/// How often, and how far apart, a start refused with `409 Conflict` is tried again.
const START_CONFLICT_RETRIES: u32 = 12;
const START_CONFLICT_PAUSE: Duration = Duration::from_secs(5);

impl PowerControl for AzureSource {
    fn stop<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, hyper2kvm_core::Result<()>> {
        Box::pin(async move { Ok(self.arm().power_off(&vm.id, self.lro()).await?) })
    }

    fn deallocate<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, hyper2kvm_core::Result<()>> {
        Box::pin(async move { Ok(self.arm().deallocate(&vm.id, self.lro()).await?) })
    }

    fn start<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, hyper2kvm_core::Result<()>> {
        Box::pin(async move {
            self.start_vm(vm).await.map_err(|e| {
                hyper2kvm_core::Error::from(e)
                    .with_resource(&vm.id)
                    .with_remedy(format!("az vm start --ids {}", vm.id))
            })
        })
    }
}

impl AzureSource {
    async fn start_vm(&self, vm: &Vm) -> Result<()> {
        for disk in &vm.disks {
            match self.arm().end_get_access(&disk.id, self.lro()).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut attempts = 0;
        loop {
            match self.arm().start_vm(&vm.id, self.lro()).await {
                Err(e) if e.kind() == ErrorKind::Conflict && attempts < START_CONFLICT_RETRIES => {
                    crate::retry::log_retry(
                        attempts,
                        START_CONFLICT_RETRIES,
                        &format!("starting VM {}", vm.name),
                        &e.to_string(),
                        START_CONFLICT_PAUSE,
                    );
                    attempts += 1;
                    crate::retry::visible_sleep(START_CONFLICT_PAUSE, || {
                        format!("VM {} to accept a start (HTTP 409)", vm.name)
                    })
                    .await;
                }
                outcome => return outcome,
            }
        }
    }
}
