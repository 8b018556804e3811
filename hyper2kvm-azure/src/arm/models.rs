//! Typed models of the ARM answers we read, holding only the fields we use. Unknown fields are
//! ignored (serde's default), and every field that ARM may omit is optional, so a new
//! api-version or an odd resource does not break a listing.
//!
//! Field names follow the Compute REST reference: `VirtualMachine`
//! (`properties.hardwareProfile.vmSize`, `properties.storageProfile.osDisk`,
//! `dataDisks[].lun`), `VirtualMachineInstanceView` (`statuses[].code` such as
//! `PowerState/deallocated`) and `Disk` (`properties.diskSizeBytes`, `hyperVGeneration`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// A VM from the VM list: its model, or (with `statusOnly=true`) its instance view.
#[derive(Debug, Clone, Deserialize)]
pub struct VirtualMachine {
    /// The ARM resource id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The region.
    #[serde(default)]
    pub location: String,
    /// Tags (absent when none).
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// The properties.
    #[serde(default)]
    pub properties: VmProperties,
    /// Child resources: the VM's extensions (read-only; some answers give only their ids).
    #[serde(default)]
    pub resources: Vec<ChildResource>,
}

/// One entry of a VM's `resources` (an extension).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChildResource {
    /// `…/virtualMachines/{vm}/extensions/{name}`.
    #[serde(default)]
    pub id: Option<String>,
    /// The extension's properties, when the answer has them.
    #[serde(default)]
    pub properties: Option<ExtensionProperties>,
}

/// `properties` of a VM extension.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProperties {
    /// The handler's publisher, e.g. `Microsoft.Azure.Security`.
    #[serde(default)]
    pub publisher: Option<String>,
    /// The handler, e.g. `AzureDiskEncryption`.
    #[serde(default, rename = "type")]
    pub handler: Option<String>,
}

/// The extension handlers of Azure Disk Encryption (BitLocker on Windows, dm-crypt on Linux).
const ADE_HANDLERS: [&str; 2] = ["AzureDiskEncryption", "AzureDiskEncryptionForLinux"];

impl ChildResource {
    /// The Azure Disk Encryption handler this extension runs, if it is one: by its
    /// properties' `type`, else by the extension's name (the portal and `az vm encryption
    /// enable` name it after the handler).
    pub fn disk_encryption_handler(&self) -> Option<&'static str> {
        let by_type = self.properties.as_ref().and_then(|p| p.handler.as_deref());
        let by_name = self
            .id
            .as_deref()
            .and_then(|id| id.rsplit_once("/extensions/"))
            .map(|(_, name)| name);
        [by_type, by_name].into_iter().flatten().find_map(|name| {
            ADE_HANDLERS
                .into_iter()
                .find(|h| h.eq_ignore_ascii_case(name))
        })
    }
}

/// `properties` of a VM.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmProperties {
    /// Size.
    #[serde(default)]
    pub hardware_profile: Option<HardwareProfile>,
    /// Disks (absent in instance views).
    #[serde(default)]
    pub storage_profile: Option<StorageProfile>,
    /// The instance view (only with `statusOnly=true` or `$expand=instanceView`).
    #[serde(default)]
    pub instance_view: Option<InstanceView>,
    /// Trusted launch: secure boot and vTPM.
    #[serde(default)]
    pub security_profile: Option<SecurityProfile>,
    /// NICs.
    #[serde(default)]
    pub network_profile: Option<NetworkProfile>,
}

/// `securityProfile`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityProfile {
    /// `TrustedLaunch`, `ConfidentialVM`, or absent.
    #[serde(default)]
    pub security_type: Option<String>,
    /// Secure boot and vTPM.
    #[serde(default)]
    pub uefi_settings: Option<UefiSettings>,
}

/// `securityProfile.uefiSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UefiSettings {
    /// Whether secure boot is on.
    #[serde(default)]
    pub secure_boot_enabled: Option<bool>,
    /// Whether the VM has a vTPM.
    #[serde(default, rename = "vTpmEnabled")]
    pub vtpm_enabled: Option<bool>,
}

/// `networkProfile`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    /// NIC references (ids only).
    #[serde(default)]
    pub network_interfaces: Vec<serde_json::Value>,
}

/// `hardwareProfile`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareProfile {
    /// The VM size, e.g. `Standard_D2s_v5`.
    #[serde(default)]
    pub vm_size: Option<String>,
}

/// `storageProfile`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    /// The OS disk.
    #[serde(default)]
    pub os_disk: Option<OsDisk>,
    /// Data disks.
    #[serde(default)]
    pub data_disks: Vec<DataDisk>,
}

/// `storageProfile.osDisk`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsDisk {
    /// `Linux` or `Windows`.
    #[serde(default)]
    pub os_type: Option<String>,
    /// The disk's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The managed disk, if the disk is managed.
    #[serde(default)]
    pub managed_disk: Option<ManagedDiskRef>,
    /// An unmanaged disk's page blob.
    #[serde(default)]
    pub vhd: Option<VhdRef>,
    /// Size in GiB, as the VM model states it.
    #[serde(default, rename = "diskSizeGB")]
    pub disk_size_gb: Option<u64>,
    /// Azure Disk Encryption's first version (with Azure AD) records itself here.
    #[serde(default)]
    pub encryption_settings: Option<EncryptionSettingsFlag>,
}

/// Anything with an `enabled` flag: `osDisk.encryptionSettings`,
/// a disk's `encryptionSettingsCollection`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EncryptionSettingsFlag {
    /// Whether Azure Disk Encryption is on.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `storageProfile.dataDisks[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDisk {
    /// The logical unit number.
    pub lun: u32,
    /// The disk's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The managed disk, if the disk is managed.
    #[serde(default)]
    pub managed_disk: Option<ManagedDiskRef>,
    /// An unmanaged disk's page blob.
    #[serde(default)]
    pub vhd: Option<VhdRef>,
    /// Size in GiB, as the VM model states it.
    #[serde(default, rename = "diskSizeGB")]
    pub disk_size_gb: Option<u64>,
}

/// `managedDisk` of a VM's disk.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ManagedDiskRef {
    /// The disk's resource id (its case may differ from the disk list's).
    #[serde(default)]
    pub id: Option<String>,
}

/// `vhd` of an unmanaged disk.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VhdRef {
    /// The page blob's URL.
    #[serde(default)]
    pub uri: Option<String>,
}

/// `instanceView`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// Status entries: `ProvisioningState/…`, `PowerState/…`.
    #[serde(default)]
    pub statuses: Vec<InstanceViewStatus>,
    /// `V1` or `V2`.
    #[serde(default)]
    pub hyper_v_generation: Option<String>,
}

impl InstanceView {
    /// The `PowerState/<x>` code, if any.
    pub fn power_state_code(&self) -> Option<&str> {
        self.statuses
            .iter()
            .filter_map(|s| s.code.as_deref())
            .find(|c| c.starts_with("PowerState/"))
    }
}

/// One entry of `instanceView.statuses`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceViewStatus {
    /// E.g. `PowerState/running`.
    #[serde(default)]
    pub code: Option<String>,
    /// E.g. `VM running`.
    #[serde(default)]
    pub display_status: Option<String>,
}

/// A managed disk from the disk list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// The ARM resource id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The VM it is attached to.
    #[serde(default)]
    pub managed_by: Option<String>,
    /// The properties.
    #[serde(default)]
    pub properties: DiskProperties,
}

/// `properties` of a disk.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskProperties {
    /// The exact size in bytes.
    #[serde(default)]
    pub disk_size_bytes: Option<u64>,
    /// The size in GiB.
    #[serde(default, rename = "diskSizeGB")]
    pub disk_size_gb: Option<u64>,
    /// `Linux` or `Windows` (OS disks only).
    #[serde(default)]
    pub os_type: Option<String>,
    /// `V1` or `V2` (OS disks only).
    #[serde(default)]
    pub hyper_v_generation: Option<String>,
    /// `Attached`, `Reserved`, `Unattached`, `ActiveSAS`, …
    #[serde(default)]
    pub disk_state: Option<String>,
    /// Azure Disk Encryption's keys for this disk (`enabled: true` when ADE encrypted it).
    #[serde(default)]
    pub encryption_settings_collection: Option<EncryptionSettingsFlag>,
}

impl Disk {
    /// The size in bytes: `diskSizeBytes`, else `diskSizeGB` GiB.
    pub fn size_bytes(&self) -> Option<u64> {
        self.properties
            .disk_size_bytes
            .or(self.properties.disk_size_gb.map(|gb| gb << 30))
    }
}

#[cfg(test)]
mod tests {
    //! JSON written after the Compute REST reference's examples (VirtualMachines_ListAll,
    //! VirtualMachines_ListAll with statusOnly, Disks_List), trimmed and with extra fields
    //! left in to show they are ignored.
    use super::*;
    use crate::pagination::Page;

    const VM_LIST_PAGE: &str = r#"{
      "value": [{
        "name": "myVM",
        "id": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/virtualMachines/myVM",
        "type": "Microsoft.Compute/virtualMachines",
        "location": "westus",
        "tags": {"department": "finance"},
        "zones": ["1"],
        "properties": {
          "vmId": "0f47b100-583c-48e3-a4c0-aefc2c9bbcc1",
          "hardwareProfile": {"vmSize": "Standard_D2s_v3", "vmSizeProperties": {"vCPUsAvailable": 2}},
          "storageProfile": {
            "imageReference": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"},
            "osDisk": {
              "osType": "Linux",
              "name": "myVM_OsDisk_1_74cdaedcea50483d9833c96adefa100f",
              "createOption": "FromImage",
              "caching": "ReadWrite",
              "managedDisk": {
                "storageAccountType": "Premium_LRS",
                "id": "/subscriptions/{subscription-id}/resourceGroups/MYRESOURCEGROUP/providers/Microsoft.Compute/disks/myVM_OsDisk_1_74cdaedcea50483d9833c96adefa100f"
              },
              "deleteOption": "Delete",
              "diskSizeGB": 30
            },
            "dataDisks": [
              {"lun": 0, "name": "data0", "createOption": "Attach", "caching": "None",
               "managedDisk": {"storageAccountType": "Premium_LRS", "id": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/disks/data0"},
               "diskSizeGB": 1023, "toBeDetached": false},
              {"lun": 5, "name": "data5", "createOption": "Empty", "caching": "ReadOnly",
               "managedDisk": {"storageAccountType": "StandardSSD_LRS", "id": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/disks/data5"},
               "diskSizeGB": 512, "toBeDetached": false}
            ],
            "diskControllerType": "SCSI"
          },
          "osProfile": {"computerName": "myVM", "adminUsername": "azureuser", "linuxConfiguration": {"disablePasswordAuthentication": true}},
          "networkProfile": {"networkInterfaces": [{"id": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Network/networkInterfaces/myNic"}]},
          "provisioningState": "Succeeded",
          "timeCreated": "2021-06-27T01:02:38.3138469+00:00"
        }
      }],
      "nextLink": "https://management.azure.com/subscriptions/{subscription-id}/providers/Microsoft.Compute/virtualMachines?api-version=2025-04-01&$skiptoken=abc"
    }"#;

    const STATUS_PAGE: &str = r#"{
      "value": [{
        "name": "myVM",
        "id": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/virtualMachines/myVM",
        "type": "Microsoft.Compute/virtualMachines",
        "location": "westus",
        "properties": {
          "vmId": "0f47b100-583c-48e3-a4c0-aefc2c9bbcc1",
          "instanceView": {
            "computerName": "myVM",
            "osName": "ubuntu",
            "hyperVGeneration": "V2",
            "statuses": [
              {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": "2021-06-27T01:04:05.0000000+00:00"},
              {"code": "PowerState/deallocated", "level": "Info", "displayStatus": "VM deallocated"}
            ]
          }
        }
      }]
    }"#;

    const DISK_PAGE: &str = r#"{
      "value": [{
        "managedBy": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/virtualMachines/myVM",
        "sku": {"name": "Premium_LRS", "tier": "Premium"},
        "properties": {
          "osType": "Linux",
          "hyperVGeneration": "V2",
          "creationData": {"createOption": "FromImage", "imageReference": {"id": "/Subscriptions/{subscription-id}/Providers/Microsoft.Compute/Locations/westus/Publishers/Canonical/ArtifactTypes/VMImage/Offers/UbuntuServer/Skus/18.04-LTS/Versions/18.04.202106220"}},
          "diskSizeGB": 30,
          "diskSizeBytes": 32213303296,
          "uniqueId": "8e3a2ab1-6b25-4d1c-9a5b-2e5c3f7e9b10",
          "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
          "provisioningState": "Succeeded",
          "diskState": "Reserved",
          "timeCreated": "2021-06-27T01:02:38.3138469+00:00"
        },
        "type": "Microsoft.Compute/disks",
        "location": "westus",
        "tags": {},
        "id": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/disks/myVM_OsDisk_1_74cdaedcea50483d9833c96adefa100f",
        "name": "myVM_OsDisk_1_74cdaedcea50483d9833c96adefa100f"
      }, {
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 200, "provisioningState": "Succeeded", "diskState": "Unattached"},
        "type": "Microsoft.Compute/disks",
        "location": "westus",
        "id": "/subscriptions/{subscription-id}/resourceGroups/myResourceGroup/providers/Microsoft.Compute/disks/myManagedDisk2",
        "name": "myManagedDisk2"
      }],
      "nextLink": "http://disksvchost:99/subscriptions/{subscriptionId}/providers/Microsoft.Compute/disks?$skiptoken={token}"
    }"#;

    #[test]
    fn vm_with_managed_os_disk_and_data_disks_at_several_luns() {
        let page: Page<VirtualMachine> = serde_json::from_str(VM_LIST_PAGE).unwrap();
        assert!(page.next_link.unwrap().contains("$skiptoken=abc"));
        let vm = &page.value[0];
        assert_eq!(vm.name, "myVM");
        assert_eq!(vm.location, "westus");
        assert_eq!(vm.tags.as_ref().unwrap()["department"], "finance");
        let p = &vm.properties;
        assert_eq!(
            p.hardware_profile.as_ref().unwrap().vm_size.as_deref(),
            Some("Standard_D2s_v3")
        );
        let storage = p.storage_profile.as_ref().unwrap();
        let os = storage.os_disk.as_ref().unwrap();
        assert_eq!(os.os_type.as_deref(), Some("Linux"));
        assert_eq!(os.disk_size_gb, Some(30));
        assert!(os
            .managed_disk
            .as_ref()
            .unwrap()
            .id
            .as_deref()
            .unwrap()
            .contains("/resourceGroups/MYRESOURCEGROUP/"));
        let luns: Vec<_> = storage.data_disks.iter().map(|d| d.lun).collect();
        assert_eq!(luns, [0, 5]);
        assert_eq!(storage.data_disks[1].disk_size_gb, Some(512));
        assert!(p.instance_view.is_none());
    }

    #[test]
    fn instance_view_with_deallocated_power_state() {
        let page: Page<VirtualMachine> = serde_json::from_str(STATUS_PAGE).unwrap();
        assert!(page.next_link.is_none());
        let vm = &page.value[0];
        assert!(vm.tags.is_none());
        assert!(vm.properties.storage_profile.is_none());
        let view = vm.properties.instance_view.as_ref().unwrap();
        assert_eq!(view.power_state_code(), Some("PowerState/deallocated"));
        assert_eq!(view.hyper_v_generation.as_deref(), Some("V2"));
        assert_eq!(
            view.power_state_code()
                .unwrap()
                .parse::<hyper2kvm_core::PowerState>()
                .unwrap(),
            hyper2kvm_core::PowerState::Deallocated
        );
    }

    #[test]
    fn disks_with_and_without_size_bytes() {
        let page: Page<Disk> = serde_json::from_str(DISK_PAGE).unwrap();
        assert!(page
            .next_link
            .unwrap()
            .starts_with("http://disksvchost:99/"));
        let os = &page.value[0];
        assert_eq!(os.size_bytes(), Some(32213303296));
        assert_eq!(os.properties.os_type.as_deref(), Some("Linux"));
        assert_eq!(os.properties.hyper_v_generation.as_deref(), Some("V2"));
        assert_eq!(os.properties.disk_state.as_deref(), Some("Reserved"));
        assert!(os
            .managed_by
            .as_deref()
            .unwrap()
            .ends_with("/virtualMachines/myVM"));
        let bare = &page.value[1];
        assert_eq!(bare.size_bytes(), Some(200 << 30));
        assert!(bare.managed_by.is_none());
        assert!(bare.properties.os_type.is_none());
    }

    #[test]
    fn minimal_and_unknown_shapes_parse() {
        let vm: VirtualMachine = serde_json::from_str(
            r#"{"id": "/x", "name": "n", "brandNew": {"nested": [1, 2]}, "properties": {"futureField": true}}"#,
        )
        .unwrap();
        assert_eq!(vm.location, "");
        assert!(vm.properties.hardware_profile.is_none());
        let view: InstanceView =
            serde_json::from_str(r#"{"statuses": [{"code": "ProvisioningState/creating"}]}"#)
                .unwrap();
        assert_eq!(view.power_state_code(), None);
    }
}
