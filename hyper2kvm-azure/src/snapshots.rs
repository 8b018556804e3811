//! Azure as core's [`PointInTimeCopies`]: full snapshots (`Microsoft.Compute/snapshots`,
//! `createOption: Copy`) in the VM's resource group and location, tagged with the run.
//!
//! Deleting revokes any grant on the snapshot first: Azure refuses to delete a snapshot that
//! is being exported.

use std::collections::BTreeMap;

use hyper2kvm_core::{BoxFuture, Disk, PointInTimeCopies, Vm};

use crate::error::{ErrorKind, Result};
use crate::source::AzureSource;

impl PointInTimeCopies for AzureSource {
    fn copy_id(&self, vm: &Vm, _disk: &Disk, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/snapshots/{name}",
            vm.subscription, vm.resource_group
        )
    }

    fn create<'a>(
        &'a self,
        vm: &'a Vm,
        disk: &'a Disk,
        id: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, hyper2kvm_core::Result<()>> {
        Box::pin(async move {
            Ok(self
                .arm()
                .create_snapshot(&disk.id, id, &vm.location, labels, self.lro())
                .await?)
        })
    }

    fn is_ready<'a>(&'a self, id: &'a str) -> BoxFuture<'a, hyper2kvm_core::Result<bool>> {
        Box::pin(async move { Ok(self.arm().snapshot_ready(id).await?) })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, hyper2kvm_core::Result<()>> {
        Box::pin(async move {
            self.delete_snapshot(id).await.map_err(|e| {
                hyper2kvm_core::Error::from(e)
                    .with_resource(id)
                    .with_remedy(format!(
                        "az snapshot revoke-access --ids {id} && az snapshot delete --ids {id}"
                    ))
            })
        })
    }
}

impl AzureSource {
    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        match self.arm().end_get_access(id, self.lro()).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        self.arm().delete_snapshot(id, self.lro()).await
    }
}
