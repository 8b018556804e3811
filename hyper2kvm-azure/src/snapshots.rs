//! Azure as core's [`PointInTimeCopies`]: full snapshots (`Microsoft.Compute/snapshots`,
//! `createOption: Copy`) in the VM's resource group and location, tagged with the run; and
//! as core's [`IncrementalCopies`]: incremental snapshots, and what changed between two of
//! them (Get Page Ranges with `x-ms-previous-snapshot-url`).
//!
//! A delta needs a SAS on both snapshots at once; Azure allows at most 5 open per disk's
//! snapshot family, and a delta holds 2 until its export is closed. Both are granted at
//! once and revoked together when the export closes, so a cutover waits for one grant, not
//! two in a row, and for no revoke before its data (docs/design-notes.md, "Cutover").
//!
//! Deleting revokes any grant on the snapshot first: Azure refuses to delete a snapshot that
//! is being exported.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::Duration;

use hyper2kvm_core::{
    BoxFuture, CopyInfo, Delta, Disk, ExportedDisk, IncrementalCopies, PointInTimeCopies, Vm,
};

use crate::arm::SnapshotInfo;
use crate::error::{ErrorKind, Result};
use crate::source::{AzureSource, Revoke, RevokeGuard};

/// How long creating an incremental snapshot waits out Azure's limit of 7 per disk per 5
/// minutes before it fails.
const INCREMENTAL_PATIENCE: Duration = Duration::from_secs(15 * 60);

impl IncrementalCopies for AzureSource {
    fn create_incremental<'a>(
        &'a self,
        vm: &'a Vm,
        disk: &'a Disk,
        id: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, hyper2kvm_core::Result<CopyInfo>> {
        Box::pin(async move {
            let info = self
                .arm()
                .create_incremental_snapshot(
                    &disk.id,
                    id,
                    &vm.location,
                    labels,
                    self.lro(),
                    INCREMENTAL_PATIENCE,
                )
                .await?;
            Ok(copy_info(info))
        })
    }

    fn copy_info<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, hyper2kvm_core::Result<Option<CopyInfo>>> {
        Box::pin(async move { Ok(self.arm().snapshot_info(id).await?.map(copy_info)) })
    }

    fn export_delta<'a>(
        &'a self,
        _vm: &'a Vm,
        newer: &'a Disk,
        base_id: &'a str,
    ) -> BoxFuture<'a, hyper2kvm_core::Result<(ExportedDisk, Delta)>> {
        Box::pin(async move {
            let lro = self.lro().clone();
            let base_guard = RevokeGuard {
                revoke: Some(Revoke {
                    arm: self.arm().clone(),
                    id: base_id.to_string(),
                    lro: lro.clone(),
                }),
                cleanups: self.cleanups().clone(),
            };
            // Both grants at once: a cutover waits for them with the VM stopped.
            let base_grant = async {
                match self
                    .arm()
                    .begin_get_access(base_id, self.export_options().sas_duration, &lro)
                    .await
                {
                    Ok(sas) => Ok(Some(sas)),
                    // The base snapshot is gone: the caller copies in full.
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(hyper2kvm_core::Error::from(e).with_resource(base_id)),
                }
            };
            let (base_sas, opened) = tokio::join!(base_grant, self.open_reader(newer));
            // On an early return the guards revoke what was granted.
            let (reader, revoke) = opened?;
            let newer_guard = RevokeGuard {
                revoke: Some(revoke),
                cleanups: self.cleanups().clone(),
            };
            let base_sas = base_sas?;
            let delta = match &base_sas {
                Some(sas) => reader.changed_since(sas).await,
                None => Ok(Delta::BaseUnusable(format!(
                    "the base snapshot {base_id} no longer exists"
                ))),
            };
            // Both grants are closed with the export, together: not on the way to the data.
            let revoke_base = base_guard.disarm();
            let revoke_base = base_sas.is_some().then_some(revoke_base);
            let revoke = newer_guard.disarm();
            let exported =
                ExportedDisk::new(Arc::new(reader), self.cleanups().clone(), move || {
                    Box::pin(async move {
                        let (newer, base) = tokio::join!(revoke.run(), async move {
                            match revoke_base {
                                Some(r) => r.run().await,
                                None => Ok(()),
                            }
                        });
                        newer.and(base)
                    })
                });
            Ok((exported, delta?))
        })
    }
}

fn copy_info(s: SnapshotInfo) -> CopyInfo {
    CopyInfo {
        id: s.id,
        source_id: s.source_resource_id,
        source_identity: s.source_unique_id,
        size_bytes: s.size_bytes,
        incremental: s.incremental,
    }
}

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
