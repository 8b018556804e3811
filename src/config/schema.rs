//! The schema of `config.yaml`: one struct per section, unknown keys rejected, defaults
//! from the libraries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hyper2kvm_azure::{ExportOptions, RetryConfig};
use hyper2kvm_migrate::{DiskChoice, Layout, PlanOptions, RunOptions, RunningVmPolicy};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where the VMs are and how to reach them.
    pub azure: AzureSection,
    /// How disks are exported (used from disk export on; validated now).
    #[serde(default)]
    pub export: ExportSection,
    /// How disks are downloaded (used from disk export on; validated now).
    #[serde(default)]
    pub download: DownloadSection,
    /// What is written where.
    #[serde(default)]
    pub output: OutputSection,
    /// The libvirt domain written for each VM.
    #[serde(default)]
    pub domain: DomainSection,
    /// Guest fix-ups on every migrated OS disk; present (even `guest: {}`) to run them.
    #[serde(default)]
    pub guest: Option<GuestSection>,
}

/// The sections `hyper2kvm import -c FILE` reads. The file may be a migration run's
/// config: its `azure:` and `export:` sections are accepted and ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Ignored by an import.
    #[serde(default)]
    pub azure: Option<serde::de::IgnoredAny>,
    /// Ignored by an import.
    #[serde(default)]
    pub export: Option<serde::de::IgnoredAny>,
    /// Parallelism and chunking.
    #[serde(default)]
    pub download: DownloadSection,
    /// What is written where.
    #[serde(default)]
    pub output: OutputSection,
    /// The libvirt domain written for each VM.
    #[serde(default)]
    pub domain: DomainSection,
    /// Guest fix-ups on every imported OS disk; present (even `guest: {}`) to run them.
    #[serde(default)]
    pub guest: Option<GuestSection>,
}

/// `domain:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainSection {
    /// `host-passthrough` (default), `host-model`, or a CPU model name such as
    /// `Skylake-Server-IBRS`.
    pub cpu_mode: String,
    /// The libvirt network the NIC joins (`default` when neither this nor `bridge` is set).
    pub network: Option<String>,
    /// A host bridge for the NIC instead of a libvirt network.
    pub bridge: Option<String>,
}

impl Default for DomainSection {
    fn default() -> Self {
        DomainSection {
            cpu_mode: "host-passthrough".into(),
            network: None,
            bridge: None,
        }
    }
}

/// `guest:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestSection {
    /// Fix-ups not to run, by name (see `hyper2kvm fix --help`).
    pub skip: Vec<String>,
    /// Fix-ups (libguestfs appliances) at once, across all VMs.
    #[serde(deserialize_with = "super::range::parallel_fixups")]
    pub parallel: u16,
    /// Fail the VM when the fix-ups cannot run (libguestfs missing) instead of carrying on.
    pub require: bool,
    /// Windows guests.
    pub windows: WindowsGuestSection,
}

impl Default for GuestSection {
    /// The library's defaults.
    fn default() -> Self {
        GuestSection {
            skip: Vec::new(),
            parallel: u16::try_from(RunOptions::default().parallel_fixups).unwrap_or(u16::MAX),
            require: false,
            windows: WindowsGuestSection::default(),
        }
    }
}

/// `guest.windows:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsGuestSection {
    /// virtio-win: the ISO or its unpacked tree. Without it Windows guests are not fixed.
    pub virtio_win: Option<std::path::PathBuf>,
}

/// `azure:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    /// Subscription ids.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// One subscription id (the same as a one-element `subscriptions`).
    #[serde(default)]
    pub subscription: Option<String>,
    /// Resource groups to list; all when absent.
    #[serde(default)]
    pub resource_groups: Vec<String>,
    /// The ARM base URL; Azure public cloud when absent.
    #[serde(default)]
    pub arm_endpoint: Option<String>,
    /// Which credentials to use (`default` when absent; `none` with a simulator).
    #[serde(default)]
    pub auth: Option<AuthSetting>,
    /// Serve this scenario in-process and list it instead of Azure.
    #[serde(default)]
    pub simulator: Option<SimulatorSection>,
    /// Which VMs to pick.
    #[serde(default)]
    pub selection: SelectionSection,
    /// How often to retry throttled or failed requests.
    #[serde(default)]
    pub retry: RetrySection,
    /// VMs that are not deallocated: `snapshot` (default), `deallocate`, `stop` or `refuse`.
    #[serde(default = "default_running_vm")]
    pub running_vm: RunningVmPolicy,
    /// Which disks to migrate: `all` (default), `os` or `data`.
    #[serde(default = "default_disks")]
    pub disks: DiskChoice,
    /// Start VMs again once their snapshots are taken (`stop`) or disks exported
    /// (`deallocate`).
    #[serde(default)]
    pub restart_vms: bool,
    /// Allow a migration without `resource_groups`, i.e. of every selected VM of the
    /// subscriptions. Off: naming the groups is a guard against migrating too much.
    #[serde(default)]
    pub allow_whole_subscription: bool,
}

fn default_running_vm() -> RunningVmPolicy {
    PlanOptions::default().running_vm
}

fn default_disks() -> DiskChoice {
    PlanOptions::default().disks
}

/// `azure.retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Retries per request after the first attempt.
    #[serde(deserialize_with = "super::range::max_retries")]
    pub max_retries: u32,
    /// No retry starts later than this after the first attempt, in seconds.
    #[serde(deserialize_with = "super::range::timeout_secs")]
    pub timeout_secs: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        let d = RetryConfig::default();
        RetrySection {
            max_retries: d.max_retries,
            timeout_secs: d.retry_timeout.as_secs(),
        }
    }
}

/// `azure.simulator`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    /// The scenario file, relative to the config file's directory.
    pub scenario: PathBuf,
}

/// `azure.auth`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthSetting {
    /// Send no token (simulator).
    None,
    /// The chain: client secret (env), workload identity, managed identity, Azure CLI.
    #[default]
    Default,
    /// Only the client secret from `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// Only workload identity.
    WorkloadIdentity,
    /// Only managed identity.
    ManagedIdentity,
    /// Only the Azure CLI.
    AzureCli,
}

/// `azure.selection`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionSection {
    /// VM names, exact or globs (`web-*`, `db-0?`).
    #[serde(default)]
    pub names: Vec<String>,
    /// Tags that must all match.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Power states (`running`, `stopped`, `deallocated`, …).
    #[serde(default)]
    pub power_states: Vec<String>,
    /// Locations.
    #[serde(default)]
    pub locations: Vec<String>,
}

/// `export:` (read by disk export; listed here so that configs can be written once).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// How long a read grant (SAS) stays valid, in seconds; an expired one is renewed.
    #[serde(deserialize_with = "super::range::grant_duration_secs")]
    pub grant_duration_secs: u32,
    /// Keep the snapshots a run creates instead of deleting them after the export.
    pub keep_snapshots: bool,
    /// How long to wait for one long-running ARM operation (grant, snapshot, power), seconds.
    #[serde(deserialize_with = "super::range::operation_timeout_secs")]
    pub operation_timeout_secs: u64,
}

impl Default for ExportSection {
    /// The library's defaults.
    fn default() -> Self {
        let export = ExportOptions::default();
        ExportSection {
            grant_duration_secs: u32::try_from(export.sas_duration.as_secs()).unwrap_or(u32::MAX),
            keep_snapshots: RunOptions::default().keep_snapshots,
            operation_timeout_secs: export.lro.timeout.as_secs(),
        }
    }
}

/// `download:` (read by disk export).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadSection {
    /// Ranged reads in flight per disk.
    #[serde(deserialize_with = "super::range::concurrency")]
    pub concurrency: u16,
    /// Bytes per read, e.g. `4M`.
    pub chunk_size: String,
    /// Disks converting at once, across all VMs.
    #[serde(deserialize_with = "super::range::parallel_disks")]
    pub parallel_disks: u16,
    /// VMs in progress at once.
    #[serde(deserialize_with = "super::range::parallel_vms")]
    pub parallel_vms: u16,
    /// Reads in flight at once across all disks (HTTP connections); no limit beyond
    /// `parallel_disks` × `concurrency` when absent.
    #[serde(deserialize_with = "super::range::max_connections")]
    pub max_connections: Option<u16>,
    /// A bandwidth cap for the whole run, bytes per second (`100M`); none when absent.
    pub bandwidth: Option<String>,
}

impl Default for DownloadSection {
    /// The library's defaults.
    fn default() -> Self {
        let run = RunOptions::default();
        let small = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        DownloadSection {
            concurrency: small(run.convert.concurrency),
            chunk_size: format!("{}K", run.convert.chunk_size >> 10),
            parallel_disks: small(run.parallel_disks),
            parallel_vms: small(run.parallel_vms),
            max_connections: None,
            bandwidth: None,
        }
    }
}

/// `output:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Where migrated VMs go, one folder per VM (`./out` when absent).
    pub dir: Option<PathBuf>,
    /// Image format: `qcow2` (default) or `raw`.
    pub format: Option<ImageFormat>,
    /// `zstd` or `deflate`; no compression when absent or `none`.
    pub compress: Option<CompressionSetting>,
    /// `vm` (default: `<dir>/<vm>/`) or `resource-group` (`<dir>/<rg>/<vm>/`).
    pub layout: Option<Layout>,
    /// `table` or `json` for `--list-only` and `--dry-run` (the `--output` flag wins).
    pub list_format: Option<ListFormat>,
    /// `libvirt` (default: a domain XML per VM) or `kubevirt` (KubeVirt manifests).
    pub target: Option<TargetSetting>,
    /// The KubeVirt manifests' settings, with `target: kubevirt`.
    pub kubevirt: Option<KubevirtSection>,
}

/// `output.target`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TargetSetting {
    /// A libvirt domain XML per VM.
    Libvirt,
    /// A CDI DataVolume per disk and a KubeVirt VirtualMachine per VM.
    Kubevirt,
}

/// `output.kubevirt:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubevirtSection {
    /// The `http://` or `https://` URL the output directory is served under; the
    /// DataVolumes import from it. Without it they wait for `virtctl image-upload`.
    pub image_url_base: Option<String>,
    /// The namespace of every object.
    pub namespace: Option<String>,
    /// The DataVolumes' storage class.
    pub storage_class: Option<String>,
}

/// `output.list_format`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListFormat {
    /// Aligned columns for people.
    Table,
    /// A JSON array for scripts.
    Json,
}

/// `output.format`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// qcow2 v3.
    Qcow2,
    /// Sparse raw.
    Raw,
}

/// `output.compress`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CompressionSetting {
    /// No compression.
    None,
    /// zstd.
    Zstd,
    /// deflate.
    Deflate,
}
