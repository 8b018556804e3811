//! Batched discovery: per subscription, exactly three paged list calls, run concurrently —
//!
//! 1. `GET /subscriptions/{s}/providers/Microsoft.Compute/virtualMachines` (models: size,
//!    tags, storage profile),
//! 2. the same with `statusOnly=true` (instance views: power states),
//! 3. `GET /subscriptions/{s}/providers/Microsoft.Compute/disks` (sizes in bytes, OS type,
//!    Hyper-V generation) —
//!
//! joined on lower-cased resource ids. The number of requests is the number of pages, whatever
//! the number of VMs; nothing is fetched per VM or per disk. `statusOnly` exists only for the
//! subscription-wide list, so resource-group filters are applied here, client side, rather
//! than by listing per resource group.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use hyper2kvm_core::{Disk, DiskRole, Firmware, OsType, PowerState, Security, Vm};

use super::api_version;
use super::client::ArmClient;
use super::models::{self, VirtualMachine};
use crate::error::{Error, ErrorKind, Result};
use crate::selection::Selection;

/// Subscriptions listed at once; each runs three lists concurrently, so this bounds the
/// requests in flight to 3 × this (ARM throttles per subscription, not per client).
const SUBSCRIPTIONS_IN_FLIGHT: usize = 4;

/// Lists the VMs of `subscriptions` that `selection` selects, sorted by subscription, resource
/// group and name (case-insensitively). Subscriptions are listed concurrently (a few at a
/// time); the first failure ends the listing.
pub async fn discover(
    client: &ArmClient,
    subscriptions: &[String],
    selection: &Selection,
) -> Result<Vec<Vm>> {
    for sub in subscriptions {
        check_subscription_id(sub)?;
    }
    let gate = Arc::new(Semaphore::new(SUBSCRIPTIONS_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for (index, sub) in subscriptions.iter().enumerate() {
        let (client, selection, sub, gate) =
            (client.clone(), selection.clone(), sub.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (
                index,
                discover_subscription(&client, &sub, &selection).await,
            )
        });
    }
    let mut per_sub: Vec<(usize, Vec<Vm>)> = Vec::with_capacity(subscriptions.len());
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.map_err(|e| {
            Error::new(ErrorKind::InvalidResponse, "a discovery task failed").with_source(e)
        })?;
        per_sub.push((index, result?));
    }
    let mut vms: Vec<Vm> = per_sub.into_iter().flat_map(|(_, vms)| vms).collect();
    vms.sort_by_cached_key(|vm| {
        (
            vm.subscription.to_ascii_lowercase(),
            vm.resource_group.to_ascii_lowercase(),
            vm.name.to_ascii_lowercase(),
            vm.id.to_ascii_lowercase(),
        )
    });
    Ok(vms)
}

/// One subscription: its three lists, concurrently, joined.
async fn discover_subscription(
    client: &ArmClient,
    sub: &str,
    selection: &Selection,
) -> Result<Vec<Vm>> {
    let base = format!("/subscriptions/{sub}/providers/Microsoft.Compute");
    let models_url = client.url(
        &format!("{base}/virtualMachines"),
        api_version::COMPUTE,
        &[],
    );
    let status_url = client.url(
        &format!("{base}/virtualMachines"),
        api_version::COMPUTE,
        &[("statusOnly", "true")],
    );
    let disks_url = client.url(&format!("{base}/disks"), api_version::DISKS, &[]);
    let (models, statuses, disks) = tokio::try_join!(
        client.list::<VirtualMachine>(models_url),
        client.list::<VirtualMachine>(status_url),
        client.list::<models::Disk>(disks_url),
    )
    .map_err(|e| Error::new(e.kind(), format!("subscription {sub}: {e}")))?;
    Ok(join_subscription(sub, models, statuses, disks, selection))
}

/// Subscription ids go into URL paths: accept GUID-like ids only, so a typo cannot change the
/// request's path.
fn check_subscription_id(sub: &str) -> Result<()> {
    if !sub.is_empty() && sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("subscription id {sub:?} is not valid (expected a GUID)"),
        ))
    }
}

/// The resource group in an ARM id (`/subscriptions/s/resourceGroups/{rg}/…`), as spelled there.
fn resource_group_of(id: &str) -> Option<&str> {
    let mut parts = id.split('/');
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("resourceGroups") {
            return parts.next().filter(|rg| !rg.is_empty());
        }
    }
    None
}

/// Joins one subscription's three lists into VMs and applies `selection`. Unsorted.
pub fn join_subscription(
    subscription: &str,
    models: Vec<VirtualMachine>,
    statuses: Vec<VirtualMachine>,
    disks: Vec<models::Disk>,
    selection: &Selection,
) -> Vec<Vm> {
    let power: HashMap<String, (PowerState, Option<String>)> = statuses
        .into_iter()
        .map(|s| {
            let view = s.properties.instance_view.unwrap_or_default();
            let state = match view.power_state_code() {
                Some(code) => code.parse().unwrap_or_else(|e| match e {}),
                None => PowerState::Unknown("unknown".into()),
            };
            (s.id.to_ascii_lowercase(), (state, view.hyper_v_generation))
        })
        .collect();
    let disks: HashMap<String, models::Disk> = disks
        .into_iter()
        .map(|d| (d.id.to_ascii_lowercase(), d))
        .collect();

    let mut out = Vec::new();
    for model in models {
        let resource_group = resource_group_of(&model.id).unwrap_or_default().to_string();
        if !selection.matches_resource_group(&resource_group) {
            continue;
        }
        let (power_state, view_generation) = power
            .get(&model.id.to_ascii_lowercase())
            .cloned()
            .unwrap_or((PowerState::Unknown("unknown".into()), None));
        let props = model.properties;
        let storage = props.storage_profile.unwrap_or_default();
        let mut vm_disks = Vec::new();
        let mut os_type = OsType::Unknown;
        let mut generation = view_generation;
        if let Some(os) = &storage.os_disk {
            let listed = lookup(&disks, os.managed_disk.as_ref());
            os_type = os
                .os_type
                .as_deref()
                .or(listed.and_then(|d| d.properties.os_type.as_deref()))
                .map(|t| t.parse().unwrap_or_else(|e| match e {}))
                .unwrap_or(OsType::Unknown);
            // The OS disk's hyperVGeneration is authoritative; the instance view's is a
            // fallback (ARM omits it for some VMs).
            if let Some(g) = listed.and_then(|d| d.properties.hyper_v_generation.clone()) {
                generation = Some(g);
            }
            vm_disks.push(disk(
                DiskRole::Os,
                os.name.as_deref(),
                os.managed_disk.as_ref(),
                os.vhd.as_ref(),
                os.disk_size_gb,
                listed,
            ));
        }
        let security = security_of(
            (&model.name, &model.resources),
            props.security_profile.as_ref(),
            &storage,
            &disks,
            &resource_group,
            os_type,
        );
        let mut data = storage.data_disks;
        data.sort_by_key(|d| d.lun);
        for d in &data {
            let listed = lookup(&disks, d.managed_disk.as_ref());
            vm_disks.push(disk(
                DiskRole::Data { lun: d.lun },
                d.name.as_deref(),
                d.managed_disk.as_ref(),
                d.vhd.as_ref(),
                d.disk_size_gb,
                listed,
            ));
        }
        // Every Azure VM has a NIC: an empty list (a VM described by
        // `networkInterfaceConfigurations` instead) means "not said", not "none".
        let nics = props
            .network_profile
            .as_ref()
            .map(|n| n.network_interfaces.len() as u32)
            .filter(|&n| n > 0);
        let vm = Vm {
            id: model.id,
            name: model.name,
            subscription: subscription.to_string(),
            resource_group,
            location: model.location,
            vm_size: props
                .hardware_profile
                .and_then(|h| h.vm_size)
                .unwrap_or_default(),
            tags: model.tags.unwrap_or_default(),
            power_state,
            os_type,
            firmware: Firmware::from_hyperv_generation(generation.as_deref()),
            disks: vm_disks,
            security,
            nics,
        };
        if selection.matches(&vm) {
            out.push(vm);
        }
    }
    out
}

/// Secure boot and vTPM from `securityProfile`; Azure Disk Encryption from the VM's
/// extensions, its OS disk's `encryptionSettings` and its disks'
/// `encryptionSettingsCollection`, with what to do about it.
fn security_of(
    (vm_name, extensions): (&str, &[models::ChildResource]),
    profile: Option<&models::SecurityProfile>,
    storage: &models::StorageProfile,
    disks: &HashMap<String, models::Disk>,
    resource_group: &str,
    os_type: OsType,
) -> Security {
    let uefi = profile.and_then(|p| p.uefi_settings.as_ref());
    let mut found = Vec::new();
    if let Some(handler) = extensions.iter().find_map(|r| r.disk_encryption_handler()) {
        found.push(format!("the VM has the {handler} extension"));
    }
    if let Some(os) = &storage.os_disk {
        if os.encryption_settings.as_ref().and_then(|e| e.enabled) == Some(true) {
            found.push("storageProfile.osDisk.encryptionSettings.enabled".into());
        }
    }
    let refs = storage
        .os_disk
        .iter()
        .map(|d| d.managed_disk.as_ref())
        .chain(storage.data_disks.iter().map(|d| d.managed_disk.as_ref()));
    for listed in refs.filter_map(|r| lookup(disks, r)) {
        if listed
            .properties
            .encryption_settings_collection
            .as_ref()
            .and_then(|e| e.enabled)
            == Some(true)
        {
            found.push(format!(
                "disk {} has encryptionSettingsCollection.enabled",
                listed.name
            ));
        }
    }
    let guest_encryption = (!found.is_empty()).then(|| {
        let how = match os_type {
            OsType::Linux => "decrypt the data volumes with `az vm encryption disable --resource-group {rg} --name {vm} --volume-type DATA`; an encrypted Linux OS disk cannot be decrypted in place: move its data to a new, unencrypted VM",
            _ => "decrypt it with `az vm encryption disable --resource-group {rg} --name {vm} --volume-type ALL` (BitLocker then decrypts inside the guest: wait until `manage-bde -status` says Fully Decrypted)",
        };
        format!(
            "Azure Disk Encryption ({}); {}, then migrate",
            found.join("; "),
            how.replace("{rg}", resource_group).replace("{vm}", vm_name)
        )
    });
    Security::new(
        uefi.and_then(|u| u.secure_boot_enabled),
        uefi.and_then(|u| u.vtpm_enabled),
    )
    .with_guest_encryption(guest_encryption)
}

fn lookup<'a>(
    disks: &'a HashMap<String, models::Disk>,
    managed: Option<&models::ManagedDiskRef>,
) -> Option<&'a models::Disk> {
    let id = managed?.id.as_deref()?;
    disks.get(&id.to_ascii_lowercase())
}

/// One disk of a VM: the disk list's id, name and exact size when the disk is there, else what
/// the VM model says (an unmanaged disk's blob URL without its query, `diskSizeGB`).
fn disk(
    role: DiskRole,
    name: Option<&str>,
    managed: Option<&models::ManagedDiskRef>,
    vhd: Option<&models::VhdRef>,
    size_gb: Option<u64>,
    listed: Option<&models::Disk>,
) -> Disk {
    match listed {
        Some(d) => Disk {
            id: d.id.clone(),
            name: d.name.clone(),
            role,
            size_bytes: d.size_bytes().or(size_gb.map(|gb| gb << 30)).unwrap_or(0),
        },
        None => {
            let id = managed
                .and_then(|m| m.id.clone())
                .or_else(|| {
                    vhd.and_then(|v| v.uri.as_deref())
                        .map(|u| u.split('?').next().unwrap_or(u).to_string())
                })
                .unwrap_or_default();
            let name = name
                .map(str::to_string)
                .unwrap_or_else(|| id.rsplit('/').next().unwrap_or("").to_string());
            Disk {
                id,
                name,
                role,
                size_bytes: size_gb.map(|gb| gb << 30).unwrap_or(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Vec<T> {
        serde_json::from_str(json).unwrap()
    }

    const MODELS: &str = r#"[
      {"id": "/subscriptions/s/resourceGroups/rg-b/providers/Microsoft.Compute/virtualMachines/zeta",
       "name": "zeta", "location": "westeurope", "tags": {"env": "prod"},
       "properties": {"hardwareProfile": {"vmSize": "Standard_D2s_v5"},
         "storageProfile": {
           "osDisk": {"osType": "Linux", "name": "zeta-os", "managedDisk": {"id": "/subscriptions/s/resourceGroups/RG-B/providers/Microsoft.Compute/disks/zeta-os"}, "diskSizeGB": 30},
           "dataDisks": [
             {"lun": 3, "name": "zeta-d3", "managedDisk": {"id": "/subscriptions/s/resourceGroups/RG-B/providers/Microsoft.Compute/disks/zeta-d3"}, "diskSizeGB": 8},
             {"lun": 0, "name": "zeta-d0", "managedDisk": {"id": "/subscriptions/s/resourceGroups/RG-B/providers/Microsoft.Compute/disks/zeta-d0"}, "diskSizeGB": 4}
           ]}}},
      {"id": "/subscriptions/s/resourceGroups/rg-a/providers/Microsoft.Compute/virtualMachines/alpha",
       "name": "alpha", "location": "northeurope",
       "properties": {"hardwareProfile": {"vmSize": "Standard_B1s"},
         "storageProfile": {
           "osDisk": {"name": "alpha-os", "vhd": {"uri": "https://acct.blob.core.windows.net/vhds/alpha.vhd?sig=secret"}, "diskSizeGB": 127, "osType": "Windows"},
           "dataDisks": []}}}
    ]"#;

    const STATUSES: &str = r#"[
      {"id": "/subscriptions/s/resourceGroups/RG-B/providers/Microsoft.Compute/virtualMachines/ZETA", "name": "zeta",
       "properties": {"instanceView": {"statuses": [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/deallocated"}]}}},
      {"id": "/subscriptions/s/resourceGroups/rg-a/providers/Microsoft.Compute/virtualMachines/alpha", "name": "alpha",
       "properties": {"instanceView": {"hyperVGeneration": "V2", "statuses": [{"code": "PowerState/running"}]}}}
    ]"#;

    const DISKS: &str = r#"[
      {"id": "/subscriptions/s/resourceGroups/rg-b/providers/Microsoft.Compute/disks/zeta-os", "name": "zeta-os",
       "properties": {"diskSizeBytes": 32213303296, "diskSizeGB": 30, "osType": "Linux", "hyperVGeneration": "V1"}},
      {"id": "/subscriptions/s/resourceGroups/rg-b/providers/Microsoft.Compute/disks/zeta-d0", "name": "zeta-d0",
       "properties": {"diskSizeBytes": 4294967296}},
      {"id": "/subscriptions/s/resourceGroups/rg-b/providers/Microsoft.Compute/disks/zeta-d3", "name": "zeta-d3",
       "properties": {"diskSizeGB": 8}},
      {"id": "/subscriptions/s/resourceGroups/rg-b/providers/Microsoft.Compute/disks/orphan", "name": "orphan",
       "properties": {"diskSizeGB": 1}}
    ]"#;

    fn joined(selection: &Selection) -> Vec<Vm> {
        join_subscription("s", parse(MODELS), parse(STATUSES), parse(DISKS), selection)
    }

    #[test]
    fn joins_on_lower_cased_ids() {
        let vms = joined(&Selection::default());
        assert_eq!(vms.len(), 2);
        let zeta = &vms[0];
        assert_eq!(zeta.resource_group, "rg-b");
        assert_eq!(zeta.power_state, PowerState::Deallocated);
        assert_eq!(zeta.os_type, OsType::Linux);
        assert_eq!(zeta.firmware, Firmware::Bios, "the OS disk's V1 wins");
        assert_eq!(zeta.vm_size, "Standard_D2s_v5");
        let roles: Vec<_> = zeta.disks.iter().map(|d| (d.role, d.size_bytes)).collect();
        assert_eq!(
            roles,
            [
                (DiskRole::Os, 32213303296),
                (DiskRole::Data { lun: 0 }, 4 << 30),
                (DiskRole::Data { lun: 3 }, 8 << 30)
            ]
        );
        // The disk list's spelling of the id wins over the VM model's upper-cased one.
        assert!(zeta.disks[0].id.contains("/resourceGroups/rg-b/"));
        assert_eq!(zeta.total_disk_bytes(), 32213303296 + (12 << 30));
    }

    /// Shapes from the Compute REST reference: `securityProfile` as in
    /// VirtualMachines_Create_WithUefiSettings, `resources` as the VM list gives them (ids
    /// only), `osDisk.encryptionSettings` of the first ADE version, a disk's
    /// `encryptionSettingsCollection` as ADE 1.1 writes it.
    #[test]
    fn trusted_launch_nics_and_disk_encryption() {
        let models = r#"[
          {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/tl", "name": "tl",
           "properties": {"hardwareProfile": {"vmSize": "Standard_D2s_v5"},
             "securityProfile": {"uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}, "securityType": "TrustedLaunch"},
             "networkProfile": {"networkInterfaces": [{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/a", "properties": {"primary": true}}, {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/b"}]},
             "storageProfile": {"osDisk": {"osType": "Windows", "name": "tl-os", "managedDisk": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/tl-os"}}}}},
          {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/ext", "name": "ext",
           "resources": [{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/ext/extensions/AzureDiskEncryptionForLinux"}],
           "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "name": "ext-os", "managedDisk": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/ext-os"}}}}},
          {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v0", "name": "v0",
           "properties": {"storageProfile": {"osDisk": {"osType": "Windows", "name": "v0-os",
             "encryptionSettings": {"enabled": true, "diskEncryptionKey": {"secretUrl": "https://kv.vault.azure.net/secrets/s/1", "sourceVault": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"}}},
             "managedDisk": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/v0-os"}}}}},
          {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/col", "name": "col",
           "resources": [{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/col/extensions/MicrosoftMonitoringAgent"}],
           "properties": {"storageProfile": {"osDisk": {"osType": "Windows", "name": "col-os", "managedDisk": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/col-os"}}}}}
        ]"#;
        let disks = r#"[
          {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/col-os", "name": "col-os",
           "properties": {"diskSizeGB": 127, "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
             "encryptionSettingsCollection": {"enabled": true, "encryptionSettings": [{"diskEncryptionKey": {"secretUrl": "https://kv.vault.azure.net/secrets/s/1", "sourceVault": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"}}}], "encryptionSettingsVersion": "1.1"}}},
          {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/tl-os", "name": "tl-os",
           "properties": {"diskSizeGB": 127, "encryption": {"type": "EncryptionAtRestWithPlatformKey"}}}
        ]"#;
        let vms = join_subscription(
            "s",
            parse(models),
            Vec::new(),
            parse(disks),
            &Selection::default(),
        );
        let by = |n: &str| vms.iter().find(|v| v.name == n).unwrap();
        let tl = by("tl");
        assert_eq!(tl.security, Security::new(Some(true), Some(true)));
        assert_eq!(tl.nics, Some(2));
        // Server-side encryption at rest is not guest encryption.
        assert!(tl.security.guest_encryption.is_none());
        let ext = by("ext").security.guest_encryption.as_deref().unwrap();
        assert!(
            ext.contains("AzureDiskEncryptionForLinux extension"),
            "{ext}"
        );
        assert!(
            ext.contains("--resource-group rg --name ext --volume-type DATA"),
            "{ext}"
        );
        let v0 = by("v0").security.guest_encryption.as_deref().unwrap();
        assert!(v0.contains("osDisk.encryptionSettings.enabled"), "{v0}");
        assert!(v0.contains("--volume-type ALL"), "{v0}");
        let col = by("col").security.guest_encryption.as_deref().unwrap();
        assert!(
            col.contains("disk col-os has encryptionSettingsCollection.enabled"),
            "{col}"
        );
        assert!(!col.contains("extension"), "{col}");
        assert_eq!(by("ext").security.secure_boot, None);
        assert_eq!(by("ext").nics, None);
        let empty = join_subscription(
            "s",
            parse(
                r#"[{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/flex", "name": "flex",
              "properties": {"networkProfile": {"networkInterfaces": [], "networkInterfaceConfigurations": [{"name": "nic"}]},
                "storageProfile": {"osDisk": {"osType": "Linux", "name": "flex-os"}}}}]"#,
            ),
            Vec::new(),
            Vec::new(),
            &Selection::default(),
        );
        assert_eq!(empty[0].nics, None, "an empty NIC list is not 'no NIC'");
    }

    #[test]
    fn unmanaged_disks_and_instance_view_generation() {
        let vms = joined(&Selection::default());
        let alpha = &vms[1];
        assert_eq!(alpha.power_state, PowerState::Running);
        assert_eq!(alpha.os_type, OsType::Windows);
        assert_eq!(alpha.firmware, Firmware::Uefi, "from the instance view");
        assert_eq!(alpha.disks.len(), 1);
        assert_eq!(alpha.disks[0].size_bytes, 127 << 30);
        assert_eq!(
            alpha.disks[0].id,
            "https://acct.blob.core.windows.net/vhds/alpha.vhd"
        );
        assert!(alpha.tags.is_empty());
    }

    #[test]
    fn missing_status_is_unknown_and_filters_apply() {
        let vms = join_subscription(
            "s",
            parse(MODELS),
            vec![],
            parse(DISKS),
            &Selection::default(),
        );
        assert!(vms
            .iter()
            .all(|v| v.power_state == PowerState::Unknown("unknown".into())));
        let rg = Selection {
            resource_groups: vec!["RG-A".into()],
            ..Default::default()
        };
        let names: Vec<_> = joined(&rg).into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["alpha"]);
    }

    #[test]
    fn resource_groups_and_subscription_ids() {
        assert_eq!(
            resource_group_of("/subscriptions/s/resourcegroups/My-RG/providers/x/y/z"),
            Some("My-RG")
        );
        assert_eq!(resource_group_of("/subscriptions/s"), None);
        assert!(check_subscription_id("00000000-0000-0000-0000-000000000000").is_ok());
        assert!(check_subscription_id("../x").is_err());
        assert!(check_subscription_id("").is_err());
    }
}
