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
use crate::error::{ErrorKind, Result};

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
        let url = self.url(snapshot_id, api_version::DISKS, &[]);
        let body = json!({
            "location": location,
            "tags": tags,
            "properties": {
                "creationData": { "createOption": "Copy", "sourceResourceId": source_disk_id },
                "incremental": false,
            },
        });
        self.long_running(Method::PUT, &url, Some(&body), lro)
            .await
            .map(|_| ())
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
