//! The ARM operations a migration run performs besides grants: snapshots (create, look up,
//! delete), VM power operations (power off, deallocate, start) and the VM sizes of a location.
//!
//! All of them are long-running operations answered as described in [`super::export`]; each
//! call returns once the operation has finished.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::api_version;
use super::client::ArmClient;
use super::export::LroOptions;
use crate::error::{Error, ErrorKind, Result};

/// One entry of `GET …/locations/{location}/vmSizes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSize {
    /// E.g. `Standard_D2s_v5`.
    pub name: String,
    /// vCPUs (every field but the name is optional in the API's schema).
    #[serde(default)]
    pub number_of_cores: Option<u32>,
    /// Memory in MiB.
    #[serde(rename = "memoryInMB", default)]
    pub memory_in_mb: Option<u64>,
    /// The most data disks the size takes.
    #[serde(default)]
    pub max_data_disk_count: Option<u32>,
}

/// What a snapshot is of, from its `properties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot's resource id.
    pub id: String,
    /// `creationData.sourceResourceId`: the disk it was taken from.
    pub source_resource_id: String,
    /// `creationData.sourceUniqueId`: that disk's `uniqueId` at the time (new when a disk is
    /// recreated under the same name).
    pub source_unique_id: String,
    /// `diskSizeBytes`.
    pub size_bytes: u64,
    /// `incremental`.
    pub incremental: bool,
}

#[derive(Deserialize)]
struct SnapshotResource {
    #[serde(default)]
    id: Option<String>,
    properties: SnapshotProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotProperties {
    creation_data: CreationData,
    #[serde(default)]
    disk_size_bytes: u64,
    #[serde(default)]
    incremental: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreationData {
    #[serde(default)]
    source_resource_id: String,
    #[serde(default)]
    source_unique_id: String,
}

#[derive(Deserialize)]
struct VmSizeList {
    #[serde(default)]
    value: Vec<VmSize>,
}

impl ArmClient {
    /// Creates a full snapshot `snapshot_id` (`/subscriptions/…/snapshots/<name>`) of the
    /// managed disk `source_disk_id` in `location`, with `tags`, and waits until it exists.
    pub async fn create_snapshot(
        &self,
        source_disk_id: &str,
        snapshot_id: &str,
        location: &str,
        tags: &BTreeMap<String, String>,
        lro: &LroOptions,
    ) -> Result<()> {
        self.put_snapshot(source_disk_id, snapshot_id, location, tags, false, lro)
            .await
    }

    /// Creates an incremental snapshot `snapshot_id` of the managed disk `source_disk_id`
    /// (`properties.incremental: true`: only what changed since the disk's previous
    /// incremental snapshot is stored, and two of them can be diffed) and returns what it is
    /// of once it exists.
    ///
    /// Azure allows few incremental snapshots per disk in a window (7 per 5 minutes) and
    /// answers more with `429` and `Retry-After`; this waits for as long as
    /// `throttle_patience` allows rather than failing.
    ///
    /// <https://learn.microsoft.com/azure/virtual-machines/disks-incremental-snapshots>
    pub async fn create_incremental_snapshot(
        &self,
        source_disk_id: &str,
        snapshot_id: &str,
        location: &str,
        tags: &BTreeMap<String, String>,
        lro: &LroOptions,
        throttle_patience: std::time::Duration,
    ) -> Result<SnapshotInfo> {
        let started = std::time::Instant::now();
        loop {
            match self
                .put_snapshot(source_disk_id, snapshot_id, location, tags, true, lro)
                .await
            {
                Ok(()) => break,
                // The retry loop already waited out Retry-After as long as its budget let it.
                Err(e)
                    if e.kind() == ErrorKind::Throttled
                        && started.elapsed() < throttle_patience =>
                {
                    tracing::info!(
                        "{snapshot_id}: Azure limits incremental snapshots per disk; waiting"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.snapshot_info(snapshot_id).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("snapshot {snapshot_id} was created but cannot be found"),
            )
            .with_resource(snapshot_id)
        })
    }

    async fn put_snapshot(
        &self,
        source_disk_id: &str,
        snapshot_id: &str,
        location: &str,
        tags: &BTreeMap<String, String>,
        incremental: bool,
        lro: &LroOptions,
    ) -> Result<()> {
        let url = self.url(snapshot_id, api_version::DISKS, &[]);
        let body = json!({
            "location": location,
            "tags": tags,
            "properties": {
                "creationData": { "createOption": "Copy", "sourceResourceId": source_disk_id },
                "incremental": incremental,
            },
        });
        self.long_running(Method::PUT, &url, Some(&body), lro)
            .await
            .map(|_| ())
    }

    /// What the snapshot `snapshot_id` is of (`GET …/snapshots/{name}`), or `None` when it
    /// does not exist.
    pub async fn snapshot_info(&self, snapshot_id: &str) -> Result<Option<SnapshotInfo>> {
        let url = self.url(snapshot_id, api_version::DISKS, &[]);
        match self.get_json::<SnapshotResource>(url).await {
            Ok(s) => Ok(Some(SnapshotInfo {
                id: s.id.unwrap_or_else(|| snapshot_id.to_string()),
                source_resource_id: s.properties.creation_data.source_resource_id,
                source_unique_id: s.properties.creation_data.source_unique_id,
                size_bytes: s.properties.disk_size_bytes,
                incremental: s.properties.incremental,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the snapshot `snapshot_id` exists and is fully created (`provisioningState`
    /// `Succeeded`, or not said).
    pub async fn snapshot_ready(&self, snapshot_id: &str) -> Result<bool> {
        let url = self.url(snapshot_id, api_version::DISKS, &[]);
        match self.get_json::<serde_json::Value>(url).await {
            Ok(v) => Ok(v
                .pointer("/properties/provisioningState")
                .and_then(|s| s.as_str())
                .is_none_or(|s| s.eq_ignore_ascii_case("Succeeded"))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the snapshot `snapshot_id` and waits until it is gone. Deleting one that does
    /// not exist succeeds, so cleanup can always call it.
    pub async fn delete_snapshot(&self, snapshot_id: &str, lro: &LroOptions) -> Result<()> {
        let url = self.url(snapshot_id, api_version::DISKS, &[]);
        match self.long_running(Method::DELETE, &url, None, lro).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stops the VM `vm_id` (it stays allocated) and waits until it is stopped.
    pub async fn power_off(&self, vm_id: &str, lro: &LroOptions) -> Result<()> {
        self.vm_action(vm_id, "powerOff", lro).await
    }

    /// Deallocates the VM `vm_id` and waits until it is deallocated.
    pub async fn deallocate(&self, vm_id: &str, lro: &LroOptions) -> Result<()> {
        self.vm_action(vm_id, "deallocate", lro).await
    }

    /// Starts the VM `vm_id` and waits until the start has finished.
    pub async fn start_vm(&self, vm_id: &str, lro: &LroOptions) -> Result<()> {
        self.vm_action(vm_id, "start", lro).await
    }

    async fn vm_action(&self, vm_id: &str, action: &str, lro: &LroOptions) -> Result<()> {
        let url = self.url(&format!("{vm_id}/{action}"), api_version::COMPUTE, &[]);
        self.long_running(Method::POST, &url, None, lro)
            .await
            .map(|_| ())
    }

    /// The VM sizes available in `location` of `subscription`.
    pub async fn vm_sizes(&self, subscription: &str, location: &str) -> Result<Vec<VmSize>> {
        let url = self.url(
            &format!("/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{location}/vmSizes"),
            api_version::COMPUTE,
            &[],
        );
        Ok(self.get_json::<VmSizeList>(url).await?.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_sizes_parse_the_spec_example_shape() {
        // The shape of VirtualMachineSizes_List in azure-rest-api-specs (ComputeRP examples).
        let text = r#"{"value": [
            {"name": "Standard_A1_V2", "numberOfCores": 1, "osDiskSizeInMB": 1047552,
             "resourceDiskSizeInMB": 10240, "memoryInMB": 2048, "maxDataDiskCount": 2},
            {"name": "Standard_D2s_v5", "numberOfCores": 2, "osDiskSizeInMB": 1047552,
             "resourceDiskSizeInMB": 0, "memoryInMB": 8192, "maxDataDiskCount": 4}
        ]}"#;
        let list: VmSizeList = serde_json::from_str(text).unwrap();
        assert_eq!(list.value.len(), 2);
        assert_eq!(list.value[1].number_of_cores, Some(2));
        assert_eq!(list.value[1].memory_in_mb, Some(8192));
        let sparse: VmSizeList = serde_json::from_str(r#"{"value": [{"name": "X"}]}"#).unwrap();
        assert_eq!(sparse.value[0].memory_in_mb, None);
    }
}
