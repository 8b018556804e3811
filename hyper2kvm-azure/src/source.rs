//! Azure as a core [`VmSource`]: VMs from batched discovery, disks exported through read
//! grants and read as page blobs. The same [`AzureSource`] is the run's power control
//! ([`crate::power`]), its point-in-time copies ([`crate::snapshots`]) and its hardware
//! catalog ([`crate::hardware`]).
//!
//! Every grant is revoked: the revoke is armed *before* `beginGetAccess` is sent (revoking a
//! disk that has no grant is harmless), so a failure, a dropped future or Ctrl-C at any
//! point still runs `endGetAccess`, through the [`ExportedDisk`] or through the guard.

use std::sync::Arc;
use std::time::Duration;

use hyper2kvm_core::{BoxFuture, Cleanups, Disk, ExportedDisk, Origin, Vm, VmSource};

use crate::arm::{discover, ArmClient, LroOptions};
use crate::blob::{BlobOptions, PageBlobReader, Regrant};
use crate::hardware::SizeCache;
use crate::selection::Selection;

/// How disks are exported.
#[derive(Clone)]
#[non_exhaustive]
pub struct ExportOptions {
    /// How long each SAS stays valid (1 hour: a SAS is a secret, and an expired one is
    /// renewed while reading).
    pub sas_duration: Duration,
    /// Limits of grant, revoke, snapshot and power operations.
    pub lro: LroOptions,
    /// How blobs are read; their retries are the ARM client's (see [`AzureSource::new`]).
    pub blob: BlobOptions,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            sas_duration: Duration::from_secs(3600),
            lro: LroOptions::default(),
            blob: BlobOptions::default(),
        }
    }
}

/// VMs and disks of one or more Azure subscriptions.
#[derive(Clone)]
pub struct AzureSource {
    arm: ArmClient,
    http: reqwest::Client,
    subscriptions: Vec<String>,
    selection: Selection,
    export: ExportOptions,
    cleanups: Cleanups,
    sizes: Arc<SizeCache>,
}

impl AzureSource {
    /// A source over `subscriptions`, filtered by `selection`. `http` is the process's one
    /// client (the blob reads share its pool with ARM); background cleanups are tracked in
    /// `cleanups` so the program can wait for them before it exits.
    ///
    /// One retry configuration for everything: blob reads retry as the ARM client does
    /// ([`ArmClient::retry_config`]), whatever `export.blob.retry` says.
    pub fn new(
        arm: ArmClient,
        http: reqwest::Client,
        subscriptions: Vec<String>,
        selection: Selection,
        mut export: ExportOptions,
        cleanups: Cleanups,
    ) -> Self {
        export.blob.retry = arm.retry_config().clone();
        AzureSource {
            arm,
            http,
            subscriptions,
            selection,
            export,
            cleanups,
            sizes: Arc::default(),
        }
    }

    /// The ARM client.
    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    /// Limits of long-running operations.
    pub(crate) fn lro(&self) -> &LroOptions {
        &self.export.lro
    }

    pub(crate) fn sizes(&self) -> &SizeCache {
        &self.sizes
    }

    async fn export(&self, disk: &Disk) -> hyper2kvm_core::Result<ExportedDisk> {
        let (reader, revoke) = self.open_reader(disk).await?;
        Ok(ExportedDisk::new(
            Arc::new(reader),
            self.cleanups.clone(),
            move || revoke.run(),
        ))
    }

    /// Grants read access to `disk` and opens it, with the revoke the caller must run (a
    /// failure before that revokes in the background).
    pub(crate) async fn open_reader(
        &self,
        disk: &Disk,
    ) -> hyper2kvm_core::Result<(PageBlobReader, Revoke)> {
        let revoke = Revoke {
            arm: self.arm.clone(),
            id: disk.id.clone(),
            lro: self.export.lro.clone(),
        };
        let guard = RevokeGuard {
            revoke: Some(revoke),
            cleanups: self.cleanups.clone(),
        };
        let sas = self
            .arm
            .begin_get_access(&disk.id, self.export.sas_duration, &self.export.lro)
            .await
            .map_err(hyper2kvm_core::Error::from)?;
        let regrant: Regrant = {
            let (arm, id, lro) = (self.arm.clone(), disk.id.clone(), self.export.lro.clone());
            let duration = self.export.sas_duration;
            Arc::new(move || {
                let (arm, id, lro) = (arm.clone(), id.clone(), lro.clone());
                Box::pin(async move { arm.begin_get_access(&id, duration, &lro).await })
            })
        };
        let opts = BlobOptions {
            regrant: Some(regrant),
            name: Some(disk.name.clone()),
            identity: Some(format!("{} ({} bytes)", disk.id, disk.size_bytes)),
            ..self.export.blob.clone()
        };
        let reader = PageBlobReader::open(self.http.clone(), sas, opts)
            .await
            .map_err(hyper2kvm_core::Error::from)?;
        Ok((reader, guard.disarm()))
    }

    /// The export options (grant duration, LRO polling).
    pub(crate) fn export_options(&self) -> &ExportOptions {
        &self.export
    }

    /// The run's cleanups, for revokes that must run whatever happens.
    pub(crate) fn cleanups(&self) -> &Cleanups {
        &self.cleanups
    }
}

impl Origin for AzureSource {
    fn platform(&self) -> &str {
        "Azure"
    }
}

impl VmSource for AzureSource {
    fn list_vms(&self) -> BoxFuture<'_, hyper2kvm_core::Result<Vec<Vm>>> {
        Box::pin(async move {
            discover(&self.arm, &self.subscriptions, &self.selection)
                .await
                .map_err(hyper2kvm_core::Error::from)
        })
    }

    fn export_disk<'a>(
        &'a self,
        _vm: &'a Vm,
        disk: &'a Disk,
    ) -> BoxFuture<'a, hyper2kvm_core::Result<ExportedDisk>> {
        Box::pin(self.export(disk))
    }
}

/// `endGetAccess` for one disk. It has one owner at a time (the guard, then the
/// `ExportedDisk`), and `run` consumes it, so it runs at most once.
pub(crate) struct Revoke {
    pub(crate) arm: ArmClient,
    pub(crate) id: String,
    pub(crate) lro: LroOptions,
}

impl Revoke {
    pub(crate) fn run(self) -> BoxFuture<'static, hyper2kvm_core::Result<()>> {
        Box::pin(async move {
            self.arm
                .end_get_access(&self.id, &self.lro)
                .await
                .map_err(|e| revoke_failed(&self.id, e))
        })
    }
}

/// A revoke that failed, as core's error saying how to finish it by hand.
pub(crate) fn revoke_failed(id: &str, e: crate::Error) -> hyper2kvm_core::Error {
    let kind = if id.to_ascii_lowercase().contains("/snapshots/") {
        "snapshot"
    } else {
        "disk"
    };
    hyper2kvm_core::Error::from(e)
        .with_resource(id)
        .with_remedy(format!("az {kind} revoke-access --ids {id}"))
}

/// Revokes in the background if dropped before [`disarm`](RevokeGuard::disarm): the export
/// failed or was cancelled between the grant and the reader.
/// Revokes in the background when dropped armed: a failure or a dropped future between a
/// grant and its owner still revokes.
pub(crate) struct RevokeGuard {
    pub(crate) revoke: Option<Revoke>,
    pub(crate) cleanups: Cleanups,
}

impl RevokeGuard {
    pub(crate) fn disarm(mut self) -> Revoke {
        self.revoke.take().expect("disarmed once")
    }
}

impl Drop for RevokeGuard {
    fn drop(&mut self) {
        if let Some(revoke) = self.revoke.take() {
            self.cleanups.spawn(revoke.run());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryConfig;

    /// `azure.retry` applies to ARM calls and blob reads alike: one configuration.
    #[test]
    fn blob_reads_retry_as_the_arm_client_does() {
        let http = crate::http::build_http_client(&crate::http::HttpOptions::default()).unwrap();
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(7),
            ..RetryConfig::default()
        };
        let arm = ArmClient::builder(http.clone())
            .retry(retry)
            .build()
            .unwrap();
        let mut export = ExportOptions::default();
        export.blob.retry.max_retries = 99;
        let source = AzureSource::new(
            arm,
            http,
            Vec::new(),
            Selection::default(),
            export,
            Cleanups::new(),
        );
        assert_eq!(source.export.blob.retry.max_retries, 3);
        assert_eq!(
            source.export.blob.retry.retry_timeout,
            Duration::from_secs(7)
        );
    }
}
