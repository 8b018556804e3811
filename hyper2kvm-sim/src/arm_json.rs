//! ARM's JSON shapes for VMs, VM instance views and managed disks, as the Compute REST API
//! (api-versions 2025-04-01 and 2025-01-02) returns them: the fields clients read, plus enough
//! of the others (provisioning state, image reference, network profile, …) that a client which
//! trips over unknown fields is caught.

use serde_json::{json, Value};

use crate::scenario::{SimDisk, SimVm};

/// The ARM resource id of a managed disk.
pub fn disk_id(subscription: &str, resource_group: &str, name: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/disks/{name}")
}

/// A deterministic GUID-shaped id from a name, for `vmId` and `uniqueId`.
pub(crate) fn fake_guid(seed: &str) -> String {
    // FNV-1a, twice with different offsets, is plenty for stable fake ids.
    let fnv = |basis: u64| {
        seed.bytes()
            .fold(basis, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    };
    let (a, b) = (fnv(0xcbf29ce484222325), fnv(0x84222325cbf29ce4));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn display_power_state(word: &str) -> String {
    format!("VM {word}")
}

/// Azure writes the resource group of a VM's disk references in whatever case the VM was
/// created with, often upper case, while the disk list has the disk's own spelling: clients
/// must compare ids case-insensitively. The simulator reproduces that.
fn managed_disk_ref(vm: &SimVm, disk: &SimDisk) -> String {
    disk_id(
        &vm.subscription,
        &disk.resource_group.to_ascii_uppercase(),
        &disk.name,
    )
}

fn instance_view(vm: &SimVm) -> Value {
    json!({
        "hyperVGeneration": format!("V{}", vm.generation),
        "statuses": [
            {
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "time": "2025-06-01T08:00:00.0000000+00:00"
            },
            {
                "code": format!("PowerState/{}", vm.power_state),
                "level": "Info",
                "displayStatus": display_power_state(&vm.power_state)
            }
        ]
    })
}

/// A VM model, as in `GET .../virtualMachines` (list) or `GET .../virtualMachines/{name}`;
/// with `with_instance_view` (`$expand=instanceView`) it carries the instance view too.
pub fn vm_model(vm: &SimVm, with_instance_view: bool) -> Value {
    let os = &vm.disks[0];
    let data_disks: Vec<Value> = vm.disks[1..]
        .iter()
        .map(|d| {
            json!({
                "lun": d.lun,
                "name": d.name,
                "createOption": "Attach",
                "caching": "None",
                "managedDisk": {
                    "storageAccountType": "Premium_LRS",
                    "id": managed_disk_ref(vm, d)
                },
                "deleteOption": "Detach",
                "diskSizeGB": d.size_bytes >> 30,
                "toBeDetached": false,
                "writeAcceleratorEnabled": false
            })
        })
        .collect();
    let os_config = if vm.os_type == "Windows" {
        json!({ "windowsConfiguration": { "provisionVMAgent": true, "enableAutomaticUpdates": true } })
    } else {
        json!({ "linuxConfiguration": { "disablePasswordAuthentication": true, "provisionVMAgent": true } })
    };
    let mut os_profile = json!({ "computerName": vm.name, "adminUsername": "azureuser", "secrets": [], "allowExtensionOperations": true });
    if let (Some(p), Some(c)) = (os_profile.as_object_mut(), os_config.as_object()) {
        p.extend(c.clone());
    }
    let mut properties = json!({
        "vmId": fake_guid(&vm.id()),
        "hardwareProfile": { "vmSize": vm.size },
        "storageProfile": {
            "imageReference": {
                "publisher": if vm.os_type == "Windows" { "MicrosoftWindowsServer" } else { "Canonical" },
                "offer": if vm.os_type == "Windows" { "WindowsServer" } else { "ubuntu-24_04-lts" },
                "sku": if vm.generation == 2 { "server" } else { "server-gen1" },
                "version": "latest",
                "exactVersion": "24.04.202505010"
            },
            "osDisk": {
                "osType": vm.os_type,
                "name": os.name,
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "managedDisk": {
                    "storageAccountType": "Premium_LRS",
                    "id": managed_disk_ref(vm, os)
                },
                "deleteOption": "Delete",
                "diskSizeGB": os.size_bytes >> 30
            },
            "dataDisks": data_disks,
            "diskControllerType": "SCSI"
        },
        "osProfile": os_profile,
        "securityProfile": if vm.trusted_launch {
            json!({ "uefiSettings": { "secureBootEnabled": true, "vTpmEnabled": true }, "securityType": "TrustedLaunch" })
        } else {
            json!({})
        },
        "networkProfile": {
            "networkInterfaces": (0..vm.nics).map(|i| {
                let suffix = if i == 0 { String::new() } else { format!("-{i}") };
                let mut nic = json!({
                    "id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}-nic{suffix}", vm.subscription, vm.resource_group, vm.name)
                });
                if vm.nics > 1 {
                    nic["properties"] = json!({ "primary": i == 0 });
                }
                nic
            }).collect::<Vec<_>>()
        },
        "diagnosticsProfile": { "bootDiagnostics": { "enabled": true } },
        "provisioningState": "Succeeded",
        "timeCreated": "2025-01-15T10:00:00.0000000+00:00"
    });
    if with_instance_view {
        properties["instanceView"] = instance_view(vm);
    }
    let mut model = json!({
        "name": vm.name,
        "id": vm.id(),
        "type": "Microsoft.Compute/virtualMachines",
        "location": vm.location,
        "tags": vm.tags,
        "properties": properties,
        "etag": "\"1\""
    });
    if vm.disk_encryption {
        // Azure Disk Encryption runs as a VM extension (the VM model's read-only `resources`).
        let handler = if vm.os_type == "Windows" {
            ("AzureDiskEncryption", "2.2")
        } else {
            ("AzureDiskEncryptionForLinux", "1.1")
        };
        model["resources"] = json!([{
            "name": handler.0,
            "id": format!("{}/extensions/{}", vm.id(), handler.0),
            "type": "Microsoft.Compute/virtualMachines/extensions",
            "location": vm.location,
            "properties": {
                "autoUpgradeMinorVersion": true,
                "provisioningState": "Succeeded",
                "publisher": "Microsoft.Azure.Security",
                "type": handler.0,
                "typeHandlerVersion": handler.1,
                "settings": { "EncryptionOperation": "EnableEncryption", "KeyVaultURL": "https://kv-sim.vault.azure.net/", "VolumeType": "All" }
            }
        }]);
    }
    model
}

/// A VM as in `GET .../virtualMachines?statusOnly=true`: the instance view only, no
/// storage profile.
pub fn vm_status(vm: &SimVm) -> Value {
    json!({
        "name": vm.name,
        "id": vm.id(),
        "type": "Microsoft.Compute/virtualMachines",
        "location": vm.location,
        "tags": vm.tags,
        "properties": {
            "vmId": fake_guid(&vm.id()),
            "instanceView": instance_view(vm)
        }
    })
}

/// A managed disk, as in `GET .../disks` or `GET .../disks/{name}`. `owner` is the VM it is
/// attached to, if any.
pub fn disk(subscription: &str, disk: &SimDisk, owner: Option<&SimVm>) -> Value {
    let id = disk_id(subscription, &disk.resource_group, &disk.name);
    let location = owner.map_or("westeurope", |vm| vm.location.as_str());
    // diskState: Attached to a VM that holds a host, Reserved for a deallocated VM's disk,
    // Unattached otherwise (the values of the DiskState enum).
    let state = match owner {
        None => "Unattached",
        Some(vm) if vm.power_state == "deallocated" => "Reserved",
        Some(_) => "Attached",
    };
    let mut properties = json!({
        "creationData": { "createOption": if disk.lun.is_none() && owner.is_some() { "FromImage" } else { "Empty" } },
        "diskSizeGB": disk.size_bytes >> 30,
        "diskSizeBytes": disk.size_bytes,
        "diskIOPSReadWrite": 500,
        "diskMBpsReadWrite": 100,
        "encryption": { "type": "EncryptionAtRestWithPlatformKey" },
        "networkAccessPolicy": "AllowAll",
        "publicNetworkAccess": "Enabled",
        "timeCreated": "2025-01-15T10:00:00.0000000+00:00",
        "provisioningState": "Succeeded",
        "diskState": state,
        "uniqueId": crate::live::unique_id(&id, 0),
        "tier": "P10"
    });
    if owner.is_some_and(|vm| vm.disk_encryption) {
        // What ADE (single pass, version 1.1) records on each disk it encrypted.
        properties["encryptionSettingsCollection"] = json!({
            "enabled": true,
            "encryptionSettings": [{
                "diskEncryptionKey": {
                    "sourceVault": { "id": format!("/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/kv-sim", disk.resource_group) },
                    "secretUrl": "https://kv-sim.vault.azure.net/secrets/ade-secret/00000000000000000000000000000000"
                }
            }],
            "encryptionSettingsVersion": "1.1"
        });
    }
    // Only OS disks carry an OS type and a Hyper-V generation.
    if let (None, Some(vm)) = (disk.lun, owner) {
        properties["osType"] = json!(vm.os_type);
        properties["hyperVGeneration"] = json!(format!("V{}", vm.generation));
    }
    let mut value = json!({
        "name": disk.name,
        "id": id,
        "type": "Microsoft.Compute/disks",
        "location": location,
        "tags": {},
        "sku": { "name": "Premium_LRS", "tier": "Premium" },
        "properties": properties
    });
    if let Some(vm) = owner {
        value["managedBy"] = json!(vm.id());
    }
    value
}

/// ARM's error body: `{"error": {"code": …, "message": …}}`.
pub fn error(code: &str, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message } })
}
