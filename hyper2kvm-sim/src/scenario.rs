//! The scenario file: what the simulated Azure holds (subscriptions, resource groups, VMs and
//! their disks) and how it misbehaves (latency, throttling, page size, and per-disk faults).
//!
//! A scenario is YAML (JSON is YAML too). VMs are listed one by one, or produced by a
//! `generate` shorthand for fleets of thousands. [`Scenario::into_fleet`] checks the scenario
//! and flattens it into the [`Fleet`] the server answers from.
//!
//! ```yaml
//! settings: { page_size: 100, latency_ms: 0 }
//! subscriptions:
//!   - id: 00000000-0000-0000-0000-000000000001
//!     resource_groups:
//!       - name: rg-web
//!         location: westeurope
//!         vms:
//!           - name: web-01
//!             size: Standard_D2s_v5
//!             power_state: running
//!             generation: 2
//!             disks: [{ size_gb: 30 }, { size_gb: 128, fault: read_fails }]
//!     generate:
//!       - { count: 100, resource_groups: [rg-a, rg-b], prefix: app }
//! ```
//!
//! A disk's `fault` ([`DiskFault`]) makes exporting that disk fail every time, the same way,
//! so a test can have some VMs of a fleet fail: `grant_denied`, `snapshot_fails` or
//! `read_fails`. None of them is retryable, so a client gives up at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::content::{ContentSpec, DiskContent};
use crate::error::{Error, ErrorKind};

/// A whole scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Paging and fault settings.
    #[serde(default)]
    pub settings: Settings,
    /// The subscriptions and what they hold.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSpec>,
}

/// How the simulator pages and misbehaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Items per page of every list call; ARM pages are typically a few hundred items.
    pub page_size: usize,
    /// Delay added to every request, in milliseconds (a stand-in for the round trip to ARM).
    pub latency_ms: u64,
    /// When to answer 429 Too Many Requests.
    pub throttle: Throttle,
    /// When to answer with a server error.
    pub failures: Failures,
    /// How access grants, snapshots and power operations answer (long-running operations).
    pub operations: OperationSettings,
    /// Items per page of Get Page Ranges (`<NextMarker>` paging), unless the client asks for
    /// fewer with `maxresults`.
    pub page_list_size: usize,
    /// Faults of the blob data plane and of grants.
    pub blob_faults: BlobFaults,
    /// Azure's limits on incremental snapshots.
    pub incremental: crate::live::IncrementalLimits,
    /// The link rate of the blob data plane, in bytes per second: the bodies of all blob
    /// `GET`s together are served no faster (0: as fast as the machine can).
    pub blob_rate: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            page_size: 100,
            latency_ms: 0,
            throttle: Throttle::default(),
            failures: Failures::default(),
            operations: OperationSettings::default(),
            page_list_size: 200,
            blob_faults: BlobFaults::default(),
            incremental: crate::live::IncrementalLimits::default(),
            blob_rate: 0,
        }
    }
}

/// How ARM long-running operations (grant, revoke, snapshot, delete, power) answer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OperationSettings {
    /// Polls answered `202 Accepted` before the operation reports its result; with `0` and
    /// `immediate`, the first answer is the result.
    pub polls: u32,
    /// Answer `200` with the result at once instead of `202` + `Location`.
    pub immediate: bool,
    /// The `Retry-After` (seconds) sent with each `202`.
    pub retry_after_secs: u64,
    /// `[min, max]`: each operation takes a duration in that range, in seconds, instead of
    /// a number of polls; polls before then are answered `202` (with `Retry-After`:
    /// `retry_after_secs`, at least 1). The duration is a pure function of what the
    /// operation does to what ([`operation_duration`]), so runs are repeatable. `polls`
    /// and `immediate` are then ignored.
    pub seconds: Option<[u64; 2]>,
}

impl Default for OperationSettings {
    fn default() -> Self {
        OperationSettings {
            polls: 1,
            immediate: false,
            retry_after_secs: 0,
            seconds: None,
        }
    }
}

/// How long an operation takes with `operations.seconds: [min, max]`: `min` s plus
/// FNV-1a-64(`target`, lower-cased) modulo the range in milliseconds (`max - min` s + 1 ms).
/// `target` is the action and the resource's name, one space between:
/// `deallocate vm-01`, `powerOff vm-01`, `start vm-01`, `beginGetAccess vm-01_OsDisk_1`,
/// `endGetAccess vm-01_OsDisk_1` (disks and snapshots), `create snap-1`, `delete snap-1`
/// (snapshots). A benchmark computes the same numbers from the same names.
pub fn operation_duration(target: &str, [min, max]: [u64; 2]) -> std::time::Duration {
    let (lo, hi) = (min.min(max) * 1000, min.max(max) * 1000);
    let hash = target
        .to_ascii_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    std::time::Duration::from_millis(lo + hash % (hi - lo + 1))
}

/// Faults of the blob data plane (and of grants). "Every Nth" counts the blob requests of
/// that kind from 1 (0: never); all can be changed while running.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BlobFaults {
    /// Delay added to every blob request, in milliseconds.
    pub latency_ms: u64,
    /// Answer every Nth blob request `503 Server Busy`.
    pub error_every: u64,
    /// Answer every Nth blob request `429` with `Retry-After`.
    pub throttle_every: u64,
    /// The `Retry-After` of those 429s, in seconds.
    pub retry_after_secs: u64,
    /// Break the connection in the middle of every Nth ranged GET's body.
    pub reset_every: u64,
    /// Send fewer bytes than `Content-Length` in every Nth ranged GET, then close.
    pub truncate_every: u64,
    /// Send a wrong `Content-MD5` with every Nth ranged GET.
    pub bad_md5_every: u64,
    /// A SAS stops working after this many blob requests (0: never).
    pub sas_expire_after_requests: u64,
    /// A SAS stops working this many seconds after its grant (0: its `durationInSeconds`).
    pub sas_expire_after_secs: u64,
    /// Answer the next N `beginGetAccess` calls `409 Conflict`.
    pub grant_conflicts: u64,
}

/// Throttling: requests are numbered from 1 across all routes; request `n` is answered
/// `429` with `Retry-After` when `n <= first` or when `every > 0` and `n % every == 0`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Throttle {
    /// Throttle the first N requests.
    pub first: u64,
    /// Throttle every Nth request (0: never).
    pub every: u64,
    /// The `Retry-After` value sent with each 429, in seconds.
    pub retry_after_secs: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            first: 0,
            every: 0,
            retry_after_secs: 1,
        }
    }
}

/// Server errors: request `n` (numbered as for [`Throttle`]) is answered `status` without
/// `Retry-After` when `every > 0` and `n % every == 0` (throttling wins when both apply).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Failures {
    /// Fail every Nth request (0: never).
    pub every: u64,
    /// The HTTP status to answer, 500 to 599.
    pub status: u16,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            every: 0,
            status: 503,
        }
    }
}

/// One subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// The subscription id (a GUID in Azure; any path-safe string here).
    pub id: String,
    /// Resource groups listed by hand.
    #[serde(default)]
    pub resource_groups: Vec<ResourceGroupSpec>,
    /// Fleets generated from a shorthand.
    #[serde(default)]
    pub generate: Vec<GenerateSpec>,
}

/// One resource group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceGroupSpec {
    /// The resource group's name.
    pub name: String,
    /// The default location of its VMs.
    #[serde(default = "default_location")]
    pub location: String,
    /// Its VMs.
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// Managed disks attached to no VM (they appear in the disk list only).
    #[serde(default)]
    pub unattached_disks: Vec<DiskSpec>,
}

fn default_location() -> String {
    "westeurope".to_string()
}

/// One VM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The VM's name.
    pub name: String,
    /// The VM size, e.g. `Standard_D2s_v5`.
    #[serde(default = "default_size")]
    pub size: String,
    /// Overrides the resource group's location.
    #[serde(default)]
    pub location: Option<String>,
    /// `running`, `stopped`, `deallocated`, `starting`, `stopping`, `deallocating`, or any
    /// other word (served as `PowerState/<word>`).
    #[serde(default = "default_power_state")]
    pub power_state: String,
    /// `linux` or `windows`.
    #[serde(default = "default_os_type")]
    pub os_type: String,
    /// Hyper-V generation: 1 (BIOS) or 2 (UEFI).
    #[serde(default = "default_generation")]
    pub generation: u8,
    /// `trusted_launch` (UEFI secure boot and vTPM, Azure's default for generation 2) or
    /// `standard`; default: trusted launch for generation 2, standard for generation 1.
    #[serde(default)]
    pub security_type: Option<SecurityType>,
    /// How many NICs the VM has (default 1).
    #[serde(default = "default_nics")]
    pub nics: u32,
    /// Azure Disk Encryption (BitLocker or dm-crypt inside the guest): the VM gets the ADE
    /// extension and its disks `encryptionSettingsCollection.enabled`.
    #[serde(default)]
    pub disk_encryption: bool,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The disks: the first is the OS disk, the rest are data disks.
    pub disks: Vec<DiskSpec>,
}

/// A VM's `securityProfile.securityType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityType {
    /// `TrustedLaunch`: UEFI secure boot and a vTPM.
    TrustedLaunch,
    /// No security profile.
    Standard,
}

fn default_nics() -> u32 {
    1
}

fn default_size() -> String {
    "Standard_D2s_v5".to_string()
}
fn default_power_state() -> String {
    "running".to_string()
}
fn default_os_type() -> String {
    "linux".to_string()
}
fn default_generation() -> u8 {
    2
}

/// One managed disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// The disk's name; derived from the VM's name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The size in GiB (Azure's `diskSizeGB`).
    #[serde(default)]
    pub size_gb: Option<u64>,
    /// The exact size in bytes (Azure's `diskSizeBytes`); wins over `size_gb`.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// The data disk's LUN; the data disk's position (0, 1, …) when absent. Ignored for the
    /// OS disk.
    #[serde(default)]
    pub lun: Option<u32>,
    /// What the disk holds: written extents (by hand and/or scattered) with generated bytes,
    /// or a local raw file / fixed VHD (`{file: path}`, which also gives the size). Nothing
    /// written when absent.
    #[serde(default)]
    pub content: Option<ContentSpec>,
    /// Make exporting this disk fail, every time.
    #[serde(default)]
    pub fault: Option<DiskFault>,
}

/// A permanent fault of one disk, for fleets where some VMs must fail deterministically.
/// Each answers as Azure does for that failure and with a status no client retries.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiskFault {
    /// `beginGetAccess` on the disk, and on every snapshot of it, answers
    /// `403 AuthorizationFailed` (the caller lacks `Microsoft.Compute/disks/beginGetAccess`).
    GrantDenied,
    /// Creating a snapshot of the disk answers `409 OperationNotAllowed`; nothing is created.
    /// Exporting the disk directly (its VM deallocated) works.
    SnapshotFails,
    /// Ranged `GET`s of the disk's bytes (of the disk, or of a snapshot of it) answer
    /// `404 BlobNotFound`, as when the export vanished mid-read; `HEAD`, the page list and the
    /// VHD footer still answer, so the failure comes during the conversion.
    ReadFails,
    /// `endGetAccess` on the disk, and on every snapshot of it, answers
    /// `409 OperationNotAllowed` (another operation on the resource is in progress); the
    /// grant stays open. For the cleanup path: a revoke that cannot be done.
    RevokeConflict,
    /// `DELETE` of every snapshot of the disk answers `409 OperationNotAllowed`; the
    /// snapshot stays. For the cleanup path: a snapshot that cannot be deleted.
    DeleteConflict,
}

impl DiskFault {
    /// The word the scenario uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFault::GrantDenied => "grant_denied",
            DiskFault::SnapshotFails => "snapshot_fails",
            DiskFault::ReadFails => "read_fails",
            DiskFault::RevokeConflict => "revoke_conflict",
            DiskFault::DeleteConflict => "delete_conflict",
        }
    }
}

/// A generated fleet: `count` VMs named `{prefix}-{i:05}`, spread round-robin over
/// `resource_groups`, with power states, OS types and generations cycling so that every
/// combination appears.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    /// How many VMs.
    pub count: usize,
    /// The resource groups to spread them over (created if not listed by hand).
    pub resource_groups: Vec<String>,
    /// Name prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Location of every generated VM.
    #[serde(default = "default_location")]
    pub location: String,
    /// VM size of every generated VM.
    #[serde(default = "default_size")]
    pub size: String,
    /// Data disks per VM (besides the OS disk).
    #[serde(default)]
    pub data_disks: u32,
    /// OS disk size in GiB.
    #[serde(default = "default_os_disk_gb")]
    pub os_disk_gb: u64,
    /// Data disk size in GiB.
    #[serde(default = "default_data_disk_gb")]
    pub data_disk_gb: u64,
    /// Power states to cycle through (VM `i` gets `power_states[i % len]`).
    #[serde(default = "default_power_cycle")]
    pub power_states: Vec<String>,
    /// Tags set on every generated VM.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_prefix() -> String {
    "vm".to_string()
}
fn default_os_disk_gb() -> u64 {
    30
}
fn default_data_disk_gb() -> u64 {
    64
}
fn default_power_cycle() -> Vec<String> {
    ["running", "deallocated", "stopped"]
        .map(String::from)
        .to_vec()
}

/// A VM as the server holds it: flattened, checked, with resource ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimVm {
    /// The subscription id.
    pub subscription: String,
    /// The resource group, as spelled in the scenario.
    pub resource_group: String,
    /// The VM's name.
    pub name: String,
    /// The location.
    pub location: String,
    /// The VM size.
    pub size: String,
    /// The power-state word (`running`, …).
    pub power_state: String,
    /// `Linux` or `Windows`, as ARM spells it.
    pub os_type: String,
    /// 1 or 2.
    pub generation: u8,
    /// Trusted launch (secure boot + vTPM).
    pub trusted_launch: bool,
    /// How many NICs.
    pub nics: u32,
    /// Whether Azure Disk Encryption is on.
    pub disk_encryption: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The OS disk first, then data disks.
    pub disks: Vec<SimDisk>,
}

/// A managed disk as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDisk {
    /// The disk's name.
    pub name: String,
    /// The resource group it lives in.
    pub resource_group: String,
    /// The size in bytes.
    pub size_bytes: u64,
    /// `None` for the OS disk, the LUN for a data disk.
    pub lun: Option<u32>,
    /// What the disk holds, served as a page blob once access is granted.
    pub content: DiskContent,
    /// How exporting it fails, if it does.
    pub fault: Option<DiskFault>,
}

impl SimDisk {
    /// Fills `buf` with the disk's bytes at `offset`: what a correct export must produce.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.content.read_at(offset, buf)
    }

    /// Writes the disk as a sparse raw file at `path` (only the written extents are
    /// written), the reference to compare an exported image with (`qemu-img compare`).
    pub fn write_raw_reference(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::create(path)?;
        file.set_len(self.size_bytes)?;
        let mut buf = vec![0u8; 4 << 20];
        for r in self.content.extents() {
            let mut at = r.start;
            while at < r.end {
                let n = ((r.end - at) as usize).min(buf.len());
                self.content.read_at(at, &mut buf[..n])?;
                file.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
        }
        file.sync_all()
    }
}

impl SimVm {
    /// The VM's ARM resource id.
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// Everything the simulator serves, flattened from a [`Scenario`].
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Every VM, in scenario order (ARM lists are not sorted either).
    pub vms: Vec<SimVm>,
    /// Disks attached to no VM, per subscription.
    pub unattached: Vec<(String, SimDisk)>,
    /// Every subscription id, including those without VMs.
    pub subscriptions: Vec<String>,
    by_name: HashMap<(String, String, String), usize>,
}

impl Fleet {
    /// The VM with this subscription, resource group and name (case-insensitive, as ARM).
    pub fn vm(&self, subscription: &str, resource_group: &str, name: &str) -> Option<&SimVm> {
        self.by_name
            .get(&key(subscription, resource_group, name))
            .map(|&i| &self.vms[i])
    }

    /// Every managed disk, attached or not, with its subscription.
    pub fn disks(&self) -> impl Iterator<Item = (&str, &SimDisk)> {
        self.vms
            .iter()
            .flat_map(|vm| vm.disks.iter().map(move |d| (vm.subscription.as_str(), d)))
            .chain(self.unattached.iter().map(|(s, d)| (s.as_str(), d)))
    }

    /// The disk named `name` (case-insensitive), with its subscription and ARM id.
    pub(crate) fn disk_by_name(&self, name: &str) -> Option<(&str, &SimDisk, String)> {
        self.disks()
            .find(|(_, d)| d.name.eq_ignore_ascii_case(name))
            .map(|(s, d)| {
                (
                    s,
                    d,
                    crate::arm_json::disk_id(s, &d.resource_group, &d.name),
                )
            })
    }

    /// Total number of managed disks, attached or not.
    pub fn disk_count(&self) -> usize {
        self.vms.iter().map(|vm| vm.disks.len()).sum::<usize>() + self.unattached.len()
    }
}

fn key(subscription: &str, resource_group: &str, name: &str) -> (String, String, String) {
    (
        subscription.to_ascii_lowercase(),
        resource_group.to_ascii_lowercase(),
        name.to_ascii_lowercase(),
    )
}

/// serde-saphyr's message alone: its first line, without the `error: line L column C: ` it
/// may start with (the position is already said, once).
fn yaml_message(text: &str) -> &str {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim().trim_start_matches("error: ");
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message)) if position.contains(" column ") => message,
        _ => line,
    }
}

impl Scenario {
    /// Parses a scenario from YAML (or JSON) text.
    pub fn from_yaml(text: &str) -> Result<Scenario, Error> {
        serde_saphyr::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            Error::new(
                ErrorKind::InvalidScenario,
                format!("invalid scenario{at}: {}", yaml_message(&e.to_string())),
            )
        })
    }

    /// Reads and parses a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read scenario {}: {e}", path.display()),
            )
        })?;
        Scenario::from_yaml(&text)
            .map_err(|e| Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// A scenario with one subscription holding `count` generated VMs spread over
    /// `resource_groups`, each with an OS disk and `data_disks` data disks.
    pub fn generated(
        subscription: &str,
        count: usize,
        resource_groups: &[&str],
        data_disks: u32,
    ) -> Scenario {
        Scenario {
            settings: Settings::default(),
            subscriptions: vec![SubscriptionSpec {
                id: subscription.to_string(),
                resource_groups: vec![],
                generate: vec![GenerateSpec {
                    count,
                    resource_groups: resource_groups.iter().map(|s| s.to_string()).collect(),
                    prefix: default_prefix(),
                    location: default_location(),
                    size: default_size(),
                    data_disks,
                    os_disk_gb: default_os_disk_gb(),
                    data_disk_gb: default_data_disk_gb(),
                    power_states: default_power_cycle(),
                    tags: BTreeMap::new(),
                }],
            }],
        }
    }

    /// Checks the scenario and flattens it into what the server answers from.
    pub fn into_fleet(&self) -> Result<Fleet, Error> {
        let bad = |msg: String| Error::new(ErrorKind::InconsistentScenario, msg);
        if self.settings.page_size == 0 {
            return Err(bad("settings.page_size must be at least 1".into()));
        }
        if !(500..=599).contains(&self.settings.failures.status) {
            return Err(bad("settings.failures.status must be 500 to 599".into()));
        }
        let mut fleet = Fleet::default();
        let mut disk_names = HashSet::new();
        let mut seen_subs = HashSet::new();
        for sub in &self.subscriptions {
            if sub.id.is_empty() || sub.id.contains('/') {
                return Err(bad(format!("subscription id {:?} is not valid", sub.id)));
            }
            if !seen_subs.insert(sub.id.to_ascii_lowercase()) {
                return Err(bad(format!("subscription {} is listed twice", sub.id)));
            }
            fleet.subscriptions.push(sub.id.clone());
            let mut vms = Vec::new();
            for rg in &sub.resource_groups {
                for vm in &rg.vms {
                    vms.push(hand_written_vm(sub, rg, vm)?);
                }
                for (i, d) in rg.unattached_disks.iter().enumerate() {
                    let name = d
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}-unattached-{i}", rg.name));
                    let (size_bytes, content) = disk_size(d, 32)?;
                    let disk = SimDisk {
                        name,
                        resource_group: rg.name.clone(),
                        size_bytes,
                        lun: None,
                        content,
                        fault: d.fault,
                    };
                    fleet.unattached.push((sub.id.clone(), disk));
                }
            }
            for generate in &sub.generate {
                vms.extend(generated_vms(&sub.id, generate)?);
            }
            for vm in vms {
                for disk in &vm.disks {
                    let k = key(&vm.subscription, &disk.resource_group, &disk.name);
                    if !disk_names.insert(k) {
                        return Err(bad(format!(
                            "disk {} in resource group {} is used twice",
                            disk.name, disk.resource_group
                        )));
                    }
                }
                let k = key(&vm.subscription, &vm.resource_group, &vm.name);
                if fleet.by_name.insert(k, fleet.vms.len()).is_some() {
                    return Err(bad(format!(
                        "VM {} in resource group {} is listed twice",
                        vm.name, vm.resource_group
                    )));
                }
                fleet.vms.push(vm);
            }
        }
        for (sub, disk) in &fleet.unattached {
            if !disk_names.insert(key(sub, &disk.resource_group, &disk.name)) {
                return Err(bad(format!("disk {} is used twice", disk.name)));
            }
        }
        Ok(fleet)
    }
}

/// The disk's size and content: a backing file gives the size unless one is set.
fn disk_size(d: &DiskSpec, default_gb: u64) -> Result<(u64, DiskContent), Error> {
    let given = match (d.size_bytes, d.size_gb) {
        (Some(b), _) => Some(b),
        (None, Some(gb)) => Some(gb << 30),
        (None, None) => None,
    };
    let from_file = d.content.as_ref().is_some_and(|c| c.file.is_some());
    let (content, bytes) = match &d.content {
        Some(spec) => {
            let (content, size) = DiskContent::build(
                spec,
                if from_file {
                    None
                } else {
                    Some(given.unwrap_or(default_gb << 30))
                },
            )?;
            if from_file && given.is_some_and(|g| g != size) {
                return Err(Error::new(
                    ErrorKind::InconsistentScenario,
                    format!("a disk backed by a file has the file's size ({size} bytes); drop size_gb / size_bytes"),
                ));
            }
            (content, size)
        }
        None => (DiskContent::empty(), given.unwrap_or(default_gb << 30)),
    };
    if bytes == 0 || !bytes.is_multiple_of(512) {
        return Err(Error::new(
            ErrorKind::InconsistentScenario,
            format!("disk size {bytes} is not a positive multiple of 512"),
        ));
    }
    Ok((bytes, content))
}

fn arm_os_type(word: &str) -> Result<String, Error> {
    match word.to_ascii_lowercase().as_str() {
        "linux" => Ok("Linux".into()),
        "windows" => Ok("Windows".into()),
        other => Err(Error::new(
            ErrorKind::InconsistentScenario,
            format!("os_type {other:?} is neither linux nor windows"),
        )),
    }
}

fn hand_written_vm(
    sub: &SubscriptionSpec,
    rg: &ResourceGroupSpec,
    vm: &VmSpec,
) -> Result<SimVm, Error> {
    let bad = |msg: String| Error::new(ErrorKind::InconsistentScenario, msg);
    if vm.disks.is_empty() {
        return Err(bad(format!("VM {} needs at least its OS disk", vm.name)));
    }
    if !(1..=2).contains(&vm.generation) {
        return Err(bad(format!("VM {}: generation must be 1 or 2", vm.name)));
    }
    let trusted_launch = match vm.security_type {
        None => vm.generation == 2,
        Some(SecurityType::Standard) => false,
        Some(SecurityType::TrustedLaunch) if vm.generation == 2 => true,
        Some(SecurityType::TrustedLaunch) => {
            return Err(bad(format!(
                "VM {}: security_type trusted_launch needs generation 2 (UEFI)",
                vm.name
            )))
        }
    };
    let mut disks = Vec::with_capacity(vm.disks.len());
    let mut luns = HashSet::new();
    for (i, d) in vm.disks.iter().enumerate() {
        let lun = (i > 0).then(|| d.lun.unwrap_or(i as u32 - 1));
        if let Some(lun) = lun {
            if !luns.insert(lun) {
                return Err(bad(format!("VM {}: LUN {lun} is used twice", vm.name)));
            }
        }
        let name = d.name.clone().unwrap_or_else(|| match lun {
            None => format!("{}_OsDisk_1", vm.name),
            Some(lun) => format!("{}_DataDisk_{lun}", vm.name),
        });
        let default_gb = if lun.is_none() { 30 } else { 64 };
        let (size_bytes, content) = disk_size(d, default_gb)?;
        disks.push(SimDisk {
            name,
            resource_group: rg.name.clone(),
            size_bytes,
            lun,
            content,
            fault: d.fault,
        });
    }
    Ok(SimVm {
        subscription: sub.id.clone(),
        resource_group: rg.name.clone(),
        name: vm.name.clone(),
        location: vm.location.clone().unwrap_or_else(|| rg.location.clone()),
        size: vm.size.clone(),
        power_state: vm.power_state.to_ascii_lowercase(),
        os_type: arm_os_type(&vm.os_type)?,
        generation: vm.generation,
        trusted_launch,
        nics: vm.nics,
        disk_encryption: vm.disk_encryption,
        tags: vm.tags.clone(),
        disks,
    })
}

fn generated_vms(subscription: &str, g: &GenerateSpec) -> Result<Vec<SimVm>, Error> {
    let bad = |msg: &str| Error::new(ErrorKind::InconsistentScenario, msg.to_string());
    if g.resource_groups.is_empty() {
        return Err(bad("generate: resource_groups must not be empty"));
    }
    if g.power_states.is_empty() {
        return Err(bad("generate: power_states must not be empty"));
    }
    let mut vms = Vec::with_capacity(g.count);
    for i in 0..g.count {
        let name = format!("{}-{i:05}", g.prefix);
        let rg = &g.resource_groups[i % g.resource_groups.len()];
        let mut disks = vec![SimDisk {
            name: format!("{name}_OsDisk_1"),
            resource_group: rg.clone(),
            size_bytes: g.os_disk_gb << 30,
            lun: None,
            content: DiskContent::empty(),
            fault: None,
        }];
        for lun in 0..g.data_disks {
            disks.push(SimDisk {
                name: format!("{name}_DataDisk_{lun}"),
                resource_group: rg.clone(),
                size_bytes: g.data_disk_gb << 30,
                lun: Some(lun),
                content: DiskContent::empty(),
                fault: None,
            });
        }
        let mut tags = g.tags.clone();
        tags.insert("index".into(), i.to_string());
        vms.push(SimVm {
            subscription: subscription.to_string(),
            resource_group: rg.clone(),
            name,
            location: g.location.clone(),
            size: g.size.clone(),
            power_state: g.power_states[i % g.power_states.len()].to_ascii_lowercase(),
            // Every fifth VM runs Windows; generations alternate, so filters and columns see
            // every combination.
            os_type: if i % 5 == 4 { "Windows" } else { "Linux" }.into(),
            generation: if i % 2 == 0 { 2 } else { 1 },
            trusted_launch: i % 2 == 0,
            nics: 1,
            disk_encryption: false,
            tags,
            disks,
        });
    }
    Ok(vms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
settings:
  page_size: 2
  throttle: { first: 1, retry_after_secs: 3 }
  failures: { every: 4, status: 502 }
subscriptions:
  - id: sub-1
    resource_groups:
      - name: rg-web
        location: northeurope
        vms:
          - name: web-01
            power_state: deallocated
            generation: 1
            os_type: windows
            tags: { env: prod }
            disks: [{ size_gb: 127 }, { size_gb: 10, lun: 3, fault: grant_denied }, { size_bytes: 1073741824 }]
        unattached_disks: [{ name: spare, size_gb: 8 }]
    generate:
      - { count: 4, resource_groups: [rg-a, rg-b], data_disks: 1 }
"#;

    #[test]
    fn parses_and_flattens() {
        let scenario = Scenario::from_yaml(SMALL).unwrap();
        assert_eq!(scenario.settings.page_size, 2);
        assert_eq!(scenario.settings.throttle.first, 1);
        assert_eq!(scenario.settings.throttle.retry_after_secs, 3);
        assert_eq!(
            scenario.settings.failures,
            Failures {
                every: 4,
                status: 502
            }
        );
        let fleet = scenario.into_fleet().unwrap();
        assert_eq!(fleet.vms.len(), 5);
        assert_eq!(fleet.disk_count(), 3 + 4 * 2 + 1);
        let web = fleet.vm("SUB-1", "RG-WEB", "Web-01").unwrap();
        assert_eq!(web.location, "northeurope");
        assert_eq!(web.os_type, "Windows");
        assert_eq!(web.disks[0].lun, None);
        assert_eq!(web.disks[0].size_bytes, 127 << 30);
        assert_eq!(web.disks[1].lun, Some(3));
        assert_eq!(web.disks[1].fault, Some(DiskFault::GrantDenied));
        assert_eq!(web.disks[0].fault, None);
        // The third disk has no LUN given: its position among data disks (1).
        assert_eq!(web.disks[2].lun, Some(1));
        assert_eq!(web.disks[2].name, "web-01_DataDisk_1");
        let gen: Vec<_> = fleet.vms[1..]
            .iter()
            .map(|v| v.resource_group.as_str())
            .collect();
        assert_eq!(gen, ["rg-a", "rg-b", "rg-a", "rg-b"]);
        assert_eq!(fleet.vms[2].power_state, "deallocated");
    }

    #[test]
    fn example_scenario_is_valid() {
        let text = include_str!("../../examples/sim-fleet.yaml");
        let fleet = Scenario::from_yaml(text).unwrap().into_fleet().unwrap();
        assert_eq!(fleet.vms.len(), 5);
        let db = fleet
            .vm("00000000-0000-0000-0000-000000000000", "rg-data", "db-01")
            .unwrap();
        let luns: Vec<_> = db.disks.iter().map(|d| d.lun).collect();
        assert_eq!(luns, [None, Some(0), Some(1), Some(4)]);
    }

    #[test]
    fn scenario_reference_in_the_docs_is_valid() {
        let doc = include_str!("../../docs/config.md");
        let start = doc.find("```yaml\nsettings:").expect("scenario block") + "```yaml\n".len();
        let len = doc[start..].find("```").unwrap();
        let fleet = Scenario::from_yaml(&doc[start..start + len])
            .unwrap()
            .into_fleet()
            .unwrap();
        assert_eq!(fleet.vms.len(), 1001);
        assert_eq!(fleet.vms[0].disks[1].name, "web-01-data");
        let written = fleet.vms[0].disks[1].content.written_bytes();
        assert!(
            (900 << 20..=(1 << 30) + (1 << 20)).contains(&written),
            "{written}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_a_location() {
        let err = Scenario::from_yaml("subscriptions:\n  - id: s\n    colour: red\n").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidScenario);
        assert!(err.to_string().contains("line 3"), "{err}");
        // The position once, the message once, one line.
        let err = Scenario::from_yaml("settings:\n  page_size: lots\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid scenario at line 2 column 14: invalid u64"
        );
    }

    #[test]
    fn unknown_faults_are_rejected() {
        let text = "subscriptions:\n  - id: s\n    resource_groups:\n      - name: rg\n        vms:\n          - {name: a, disks: [{fault: explodes}]}\n";
        let err = Scenario::from_yaml(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidScenario);
        assert!(err.to_string().contains("line 6"), "{err}");
    }

    #[test]
    fn duplicate_luns_and_vms_are_rejected() {
        let dup_lun = "subscriptions:\n  - id: s\n    resource_groups:\n      - name: rg\n        vms:\n          - name: a\n            disks: [{}, {lun: 1}, {lun: 1}]\n";
        let err = Scenario::from_yaml(dup_lun)
            .unwrap()
            .into_fleet()
            .unwrap_err();
        assert!(err.to_string().contains("LUN 1"), "{err}");
        let dup_vm = "subscriptions:\n  - id: s\n    resource_groups:\n      - name: rg\n        vms:\n          - {name: a, disks: [{}]}\n          - {name: A, disks: [{name: other}]}\n";
        let err = Scenario::from_yaml(dup_vm)
            .unwrap()
            .into_fleet()
            .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn link_rate_and_timed_operations_parse_and_default_off() {
        let s = Scenario::from_yaml(
            "settings: { blob_rate: 209715200, operations: { seconds: [5, 30], retry_after_secs: 2 } }\n",
        )
        .unwrap();
        assert_eq!(s.settings.blob_rate, 200 << 20);
        assert_eq!(s.settings.operations.seconds, Some([5, 30]));
        assert_eq!(s.settings.operations.retry_after_secs, 2);
        // Defaults unchanged: no cap, operations counted in polls.
        let d = Settings::default();
        assert_eq!((d.blob_rate, d.operations.seconds), (0, None));
        assert_eq!(d.operations.polls, 1);
        for bad in [
            "settings: { operations: { secs: [5, 30] } }\n",
            "settings: { operations: { seconds: [5] } }\n",
            "settings: { blob_rate: fast }\n",
        ] {
            let err = Scenario::from_yaml(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidScenario, "{bad}");
        }
    }

    #[test]
    fn operation_durations_are_repeatable_and_in_range() {
        let ms = |t: &str, r| operation_duration(t, r).as_millis();
        // Pinned: bench/fleet-link.sh computes the same numbers from the same formula.
        assert_eq!(ms("deallocate vm-01", [5, 30]), 5441);
        assert_eq!(ms("beginGetAccess vm-01_OsDisk_1", [5, 30]), 12527);
        assert_eq!(ms("endGetAccess vm-01_OsDisk_1", [5, 30]), 23937);
        // Case does not matter (ARM names do not), the order of the bounds neither.
        assert_eq!(ms("Deallocate VM-01", [30, 5]), 5441);
        assert_eq!(ms("anything", [7, 7]), 7000);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let d = ms(&format!("beginGetAccess vm-{i:02}_OsDisk_1"), [5, 30]);
            assert!((5000..=30000).contains(&d), "{d}");
            seen.insert(d / 1000);
        }
        // Spread over the range, not stuck at one end.
        assert!(seen.len() > 15, "{seen:?}");
    }
}
