//! `config.yaml`: the file's schema, how it is read (unknown keys and wrong types rejected with
//! line and column), and how it and the flags become one resolved [`ListPlan`].
//!
//! The reference is `docs/config.md`; keep the two in step. Secrets are never read from the
//! file: credentials come from the environment (see `hyper2kvm_azure::credential`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hyper2kvm::migrate::{DiskChoice, Layout, PlanOptions, RunOptions, RunningVmPolicy};
use hyper2kvm_azure::{AuthMethod, ExportOptions, RetryConfig, Selection};
use hyper2kvm_core::libvirt::{CpuMode, NetworkAttachment};
use hyper2kvm_core::PowerState;
use hyper2kvm_core::{Compression, OutputFormat};
use hyper2kvm_guest::GuestConfig;
use serde::Deserialize;

use crate::args::OutputArg;
use crate::units::parse_size;

/// A mistake the user must fix in the command line or the config file: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestSection {
    /// Fix-ups not to run, by name (see `hyper2kvm fix --help`).
    pub skip: Vec<String>,
    /// Fail the VM when the fix-ups cannot run (libguestfs missing) instead of carrying on.
    pub require: bool,
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
    pub max_retries: u32,
    /// No retry starts later than this after the first attempt, in seconds.
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
    pub grant_duration_secs: u32,
    /// Keep the snapshots a run creates instead of deleting them after the export.
    pub keep_snapshots: bool,
    /// How long to wait for one long-running ARM operation (grant, snapshot, power), seconds.
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
    pub concurrency: u16,
    /// Bytes per read, e.g. `4M`.
    pub chunk_size: String,
    /// Disks converting at once, across all VMs.
    pub parallel_disks: u16,
    /// VMs in progress at once.
    pub parallel_vms: u16,
    /// Reads in flight at once across all disks (HTTP connections); no limit beyond
    /// `parallel_disks` × `concurrency` when absent.
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

/// Everything `--list-only` needs, resolved from the file and the flags.
#[derive(Debug)]
pub struct ListPlan {
    /// Subscriptions, in the order given, without duplicates.
    pub subscriptions: Vec<String>,
    /// The filters.
    pub selection: Selection,
    /// The ARM base URL, if not Azure public cloud.
    pub arm_endpoint: Option<String>,
    /// A scenario to serve in-process when no endpoint is given.
    pub simulator: Option<PathBuf>,
    /// Credentials.
    pub auth: AuthMethod,
    /// Table or JSON.
    pub format: ListFormat,
    /// Retries.
    pub retry: RetryConfig,
    /// How a migration of these VMs would go (for `--dry-run`).
    pub migration: PlanOptions,
    /// True when the config names no resource group (a whole-subscription migration).
    pub whole_subscription: bool,
    /// `azure.allow_whole_subscription`.
    pub allow_whole_subscription: bool,
    /// How a real run goes beyond the plan.
    pub run: RunSettings,
}

/// The settings of a migration run besides its plan, resolved.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// `output.compress`.
    pub compression: Option<Compression>,
    /// `download.concurrency`: reads in flight per disk.
    pub concurrency: usize,
    /// `download.chunk_size`.
    pub chunk_size: u32,
    /// `download.parallel_disks`.
    pub parallel_disks: usize,
    /// `download.parallel_vms`.
    pub parallel_vms: usize,
    /// `download.max_connections`.
    pub max_connections: Option<usize>,
    /// `download.bandwidth`, bytes per second.
    pub bandwidth: Option<u64>,
    /// `export.keep_snapshots`.
    pub keep_snapshots: bool,
    /// `export.grant_duration_secs`.
    pub grant_duration: std::time::Duration,
    /// `export.operation_timeout_secs`.
    pub operation_timeout: std::time::Duration,
    /// `domain.cpu_mode`.
    pub cpu: CpuMode,
    /// `domain.network` / `domain.bridge`.
    pub network: NetworkAttachment,
    /// `guest:`, when present.
    pub guest: Option<GuestConfig>,
}

/// Reads and checks `path`; a simulator scenario's path is made relative to the file's
/// directory.
pub fn load(path: &Path) -> Result<ConfigFile, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read config {}: {e}", path.display())))?;
    let mut file = parse(&text, &path.display().to_string())?;
    if let Some(sim) = &mut file.azure.simulator {
        if sim.scenario.is_relative() {
            let dir = path.parent().unwrap_or(Path::new(""));
            sim.scenario = dir.join(&sim.scenario);
        }
    }
    Ok(file)
}

/// Parses config text; `name` prefixes messages (`config.yaml:3:5: …`).
pub fn parse(text: &str, name: &str) -> Result<ConfigFile, UsageError> {
    let file: ConfigFile = serde_saphyr::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{}:{}", l.line(), l.column()))
            .map(|lc| format!("{name}:{lc}"))
            .unwrap_or_else(|| name.to_string());
        UsageError(format!("{at}: {}", first_line(&e.to_string())))
    })?;
    check(&file).map_err(|m| UsageError(format!("{name}: {m}")))?;
    Ok(file)
}

/// serde-saphyr renders a source snippet under its message and may start the message with
/// its own `line L column C:`; we show the message alone, after our `file:L:C:`.
fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim().trim_start_matches("error: ");
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message)) if position.contains(" column ") => message.to_string(),
        _ => line.to_string(),
    }
}

fn check(file: &ConfigFile) -> Result<(), String> {
    let a = &file.azure;
    if a.subscription.is_some() && !a.subscriptions.is_empty() {
        return Err("azure: give either `subscription` or `subscriptions`, not both".into());
    }
    if a.subscription.is_none() && a.subscriptions.is_empty() {
        return Err("azure.subscriptions: at least one subscription id is required".into());
    }
    if a.simulator.is_some() {
        if a.arm_endpoint.is_some() {
            return Err("azure: give either `simulator` or `arm_endpoint`, not both".into());
        }
        if a.auth.is_some_and(|auth| auth != AuthSetting::None) {
            return Err(
                "azure.auth: the simulator takes no credentials; use `auth: none` or leave it out"
                    .into(),
            );
        }
    }
    for p in &a.selection.power_states {
        if let PowerState::Unknown(word) = p.parse::<PowerState>().unwrap_or_else(|e| match e {}) {
            return Err(format!(
                "azure.selection.power_states: unknown power state {word:?} (use running, stopped, deallocated, starting, stopping or deallocating)"
            ));
        }
    }
    let chunk =
        parse_size(&file.download.chunk_size).map_err(|e| format!("download.chunk_size: {e}"))?;
    if !(4096..=64 << 20).contains(&chunk) {
        return Err(format!("download.chunk_size: {chunk} is outside 4K..64M"));
    }
    if file.download.concurrency == 0 {
        return Err("download.concurrency must be at least 1".into());
    }
    if file.download.parallel_disks == 0 || file.download.parallel_vms == 0 {
        return Err("download.parallel_disks and download.parallel_vms must be at least 1".into());
    }
    if file.download.max_connections == Some(0) {
        return Err("download.max_connections must be at least 1".into());
    }
    if let Some(b) = &file.download.bandwidth {
        let n = parse_size(b).map_err(|e| format!("download.bandwidth: {e}"))?;
        if n < 64 << 10 {
            return Err(format!("download.bandwidth: {n} bytes/s is below 64K"));
        }
    }
    if file.export.operation_timeout_secs < 10 {
        return Err("export.operation_timeout_secs must be at least 10".into());
    }
    if file.domain.network.is_some() && file.domain.bridge.is_some() {
        return Err("domain: give either `network` or `bridge`, not both".into());
    }
    if file.domain.cpu_mode.trim().is_empty() {
        return Err(
            "domain.cpu_mode: empty; use host-passthrough, host-model or a CPU model name".into(),
        );
    }
    if let Some(g) = &file.guest {
        let names = hyper2kvm_guest::fixups::names();
        for name in &g.skip {
            if !names.contains(&name.as_str()) {
                return Err(format!(
                    "guest.skip: unknown fix-up {name:?}; fix-ups are: {}",
                    names.join(", ")
                ));
            }
        }
    }
    if !(300..=86_400).contains(&file.export.grant_duration_secs) {
        return Err("export.grant_duration_secs must be between 300 and 86400".into());
    }
    Ok(())
}

/// The flags that override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--arm-endpoint`.
    pub arm_endpoint: Option<String>,
    /// `--output`.
    pub output: Option<OutputArg>,
}

/// Resolves the file and the flags into the listing plan.
pub fn list_plan(file: ConfigFile, flags: Overrides) -> ListPlan {
    let a = file.azure;
    let mut subscriptions: Vec<String> = Vec::new();
    for s in a.subscription.into_iter().chain(a.subscriptions) {
        let s = s.trim().to_string();
        if !subscriptions.iter().any(|t| t.eq_ignore_ascii_case(&s)) {
            subscriptions.push(s);
        }
    }
    let whole_subscription = a.resource_groups.is_empty();
    let selection = Selection {
        resource_groups: a.resource_groups,
        names: a.selection.names,
        tags: a.selection.tags.into_iter().collect(),
        power_states: a
            .selection
            .power_states
            .iter()
            .map(|p| p.parse().unwrap_or_else(|e| match e {}))
            .collect(),
        locations: a.selection.locations,
    };
    let format = match flags.output {
        Some(OutputArg::Table) => ListFormat::Table,
        Some(OutputArg::Json) => ListFormat::Json,
        None => file.output.list_format.unwrap_or(ListFormat::Table),
    };
    let mut migration = PlanOptions::default();
    migration.running_vm = a.running_vm;
    migration.disks = a.disks;
    if let Some(layout) = file.output.layout {
        migration.layout = layout;
    }
    if let Some(dir) = file.output.dir.clone() {
        migration.dir = dir;
    }
    match file.output.format {
        Some(ImageFormat::Raw) => migration.format = OutputFormat::Raw,
        Some(ImageFormat::Qcow2) => migration.format = OutputFormat::Qcow2,
        None => {}
    }
    migration.restart = a.restart_vms;
    ListPlan {
        subscriptions,
        selection,
        arm_endpoint: flags.arm_endpoint.or(a.arm_endpoint),
        auth: match a.auth.unwrap_or(if a.simulator.is_some() {
            AuthSetting::None
        } else {
            AuthSetting::Default
        }) {
            AuthSetting::None => AuthMethod::None,
            AuthSetting::Default => AuthMethod::Default,
            AuthSetting::ClientSecret => AuthMethod::ClientSecret,
            AuthSetting::WorkloadIdentity => AuthMethod::WorkloadIdentity,
            AuthSetting::ManagedIdentity => AuthMethod::ManagedIdentity,
            AuthSetting::AzureCli => AuthMethod::AzureCli,
        },
        format,
        simulator: a.simulator.map(|s| s.scenario),
        retry: RetryConfig {
            max_retries: a.retry.max_retries,
            retry_timeout: std::time::Duration::from_secs(a.retry.timeout_secs),
            ..RetryConfig::default()
        },
        migration,
        whole_subscription,
        allow_whole_subscription: a.allow_whole_subscription,
        run: run_settings(
            &file.download,
            &file.export,
            &file.domain,
            file.guest.as_ref(),
            file.output.compress,
        ),
    }
}

fn run_settings(
    download: &DownloadSection,
    export: &ExportSection,
    domain: &DomainSection,
    guest: Option<&GuestSection>,
    compress: Option<CompressionSetting>,
) -> RunSettings {
    use std::time::Duration;
    // Checked by `check` when the file was parsed.
    let size = |text: &str| parse_size(text).unwrap_or(0);
    RunSettings {
        compression: match compress {
            Some(CompressionSetting::Zstd) => Some(Compression::Zstd),
            Some(CompressionSetting::Deflate) => Some(Compression::Deflate),
            Some(CompressionSetting::None) | None => None,
        },
        concurrency: usize::from(download.concurrency),
        chunk_size: size(&download.chunk_size) as u32,
        parallel_disks: usize::from(download.parallel_disks),
        parallel_vms: usize::from(download.parallel_vms),
        max_connections: download.max_connections.map(usize::from),
        bandwidth: download.bandwidth.as_deref().map(size),
        keep_snapshots: export.keep_snapshots,
        grant_duration: Duration::from_secs(u64::from(export.grant_duration_secs)),
        operation_timeout: Duration::from_secs(export.operation_timeout_secs),
        cpu: match domain.cpu_mode.trim() {
            "host-passthrough" => CpuMode::HostPassthrough,
            "host-model" => CpuMode::HostModel,
            model => CpuMode::Custom(model.to_string()),
        },
        network: match (&domain.bridge, &domain.network) {
            (Some(bridge), _) => NetworkAttachment::Bridge(bridge.clone()),
            (None, Some(net)) => NetworkAttachment::Network(net.clone()),
            (None, None) => NetworkAttachment::Network("default".into()),
        },
        guest: guest.map(|g| GuestConfig {
            skip: g.skip.clone(),
            require: g.require,
            dry_run: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_config_lists_with_defaults() {
        let file = parse(
            "azure:\n  subscriptions: [\"00000000-0000-0000-0000-000000000000\"]\n",
            "c.yaml",
        )
        .unwrap();
        let plan = list_plan(file, Overrides::default());
        assert_eq!(plan.subscriptions, ["00000000-0000-0000-0000-000000000000"]);
        assert_eq!(plan.selection, Selection::default());
        assert_eq!(plan.auth, AuthMethod::Default);
        assert_eq!(plan.format, ListFormat::Table);
        assert_eq!(plan.arm_endpoint, None);
        assert_eq!(plan.retry.max_retries, 10);
        assert_eq!(plan.migration.running_vm, RunningVmPolicy::Snapshot);
        assert_eq!(plan.migration.disks, DiskChoice::All);
        assert!(plan.whole_subscription && !plan.allow_whole_subscription);
    }

    #[test]
    fn migration_settings_are_read() {
        let file = parse(
            "azure:\n  subscription: s\n  resource_groups: [rg]\n  running_vm: stop\n  disks: os\n  restart_vms: true\noutput:\n  dir: /srv/kvm\n  format: raw\n  layout: resource-group\n",
            "c.yaml",
        )
        .unwrap();
        let plan = list_plan(file, Overrides::default());
        let m = &plan.migration;
        assert_eq!(
            (m.running_vm, m.disks, m.restart),
            (RunningVmPolicy::Stop, DiskChoice::Os, true)
        );
        assert_eq!(
            (m.format, m.layout),
            (OutputFormat::Raw, Layout::ResourceGroup)
        );
        assert_eq!(m.dir, PathBuf::from("/srv/kvm"));
        assert!(!plan.whole_subscription);
        let err = parse("azure:\n  subscription: s\n  running_vm: pause\n", "c.yaml").unwrap_err();
        assert!(err.0.starts_with("c.yaml:3:"), "{}", err.0);
    }

    #[test]
    fn full_config_and_flag_overrides() {
        let text = r#"
azure:
  subscriptions: [a, b, A]
  resource_groups: [rg-web]
  arm_endpoint: "http://127.0.0.1:8080"
  auth: none
  retry: { max_retries: 2, timeout_secs: 30 }
  selection:
    names: ["web-*"]
    tags: { env: prod }
    power_states: [running, deallocated]
    locations: [westeurope]
export: { grant_duration_secs: 7200, keep_snapshots: true }
download: { concurrency: 16, chunk_size: 8M }
output: { list_format: json, dir: ./out, format: qcow2, compress: zstd }
"#;
        let file = parse(text, "c.yaml").unwrap();
        assert!(file.export.keep_snapshots);
        assert_eq!(file.download.concurrency, 16);
        let plan = list_plan(
            file,
            Overrides {
                arm_endpoint: Some("http://127.0.0.1:9".into()),
                output: Some(OutputArg::Table),
            },
        );
        assert_eq!(plan.subscriptions, ["a", "b"]);
        assert_eq!(plan.arm_endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(plan.format, ListFormat::Table);
        assert_eq!(plan.auth, AuthMethod::None);
        assert_eq!(plan.retry.max_retries, 2);
        assert_eq!(plan.retry.retry_timeout.as_secs(), 30);
        assert_eq!(
            plan.selection.power_states,
            [PowerState::Running, PowerState::Deallocated]
        );
        assert_eq!(
            plan.selection.tags,
            [("env".to_string(), "prod".to_string())]
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_line_and_column() {
        let err = parse("azure:\n  subscriptions: [s]\n  colour: red\n", "c.yaml").unwrap_err();
        assert!(err.0.starts_with("c.yaml:3:"), "{err}");
        assert!(err.0.contains("colour"), "{err}");
        assert_eq!(err.0.lines().count(), 1, "{err}");
        assert!(
            !err.0.contains("line 3"),
            "the position is said once: {err}"
        );

        let err = parse(
            "azure:\n  subscriptions: [s]\ndownload:\n  concurrency: lots\n",
            "c.yaml",
        )
        .unwrap_err();
        assert!(err.0.starts_with("c.yaml:4:"), "{err}");

        let err = parse(
            "azure:\n  subscriptions: [s]\n  client_secret: hunter2\n",
            "c.yaml",
        )
        .unwrap_err();
        assert!(err.0.contains("client_secret"), "{err}");
        assert!(
            !err.0.contains("hunter2"),
            "the secret is not echoed: {err}"
        );
    }

    #[test]
    fn simulator_section() {
        let dir = std::env::temp_dir().join(format!("h2k-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "azure:\n  subscription: a\n  simulator: { scenario: fleet.yaml }\n",
        )
        .unwrap();
        let file = load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let plan = list_plan(file, Overrides::default());
        assert_eq!(plan.simulator, Some(dir.join("fleet.yaml")));
        assert_eq!(plan.auth, AuthMethod::None);
        assert_eq!(plan.arm_endpoint, None);

        let both =
            "azure:\n  subscription: a\n  arm_endpoint: http://x\n  simulator: { scenario: f }\n";
        assert!(parse(both, "c").unwrap_err().0.contains("not both"));
        let real_auth =
            "azure:\n  subscription: a\n  auth: azure_cli\n  simulator: { scenario: f }\n";
        assert!(parse(real_auth, "c").unwrap_err().0.contains("auth: none"));
    }

    #[test]
    fn semantic_errors() {
        let err = parse("azure: {}\n", "c.yaml").unwrap_err();
        assert!(err.0.contains("at least one subscription"), "{err}");
        let err = parse(
            "azure:\n  subscription: a\n  subscriptions: [b]\n",
            "c.yaml",
        )
        .unwrap_err();
        assert!(err.0.contains("not both"), "{err}");
        let err = parse(
            "azure:\n  subscription: a\n  selection: { power_states: [asleep] }\n",
            "c.yaml",
        )
        .unwrap_err();
        assert!(err.0.contains("asleep"), "{err}");
        let err = parse("azure: { subscription: a, auth: magic }\n", "c.yaml").unwrap_err();
        assert!(
            err.0.contains("magic") || err.0.contains("variant"),
            "{err}"
        );
    }

    #[test]
    fn file_defaults_are_the_library_defaults() {
        let run = RunOptions::default();
        let d = DownloadSection::default();
        assert_eq!(usize::from(d.concurrency), run.convert.concurrency);
        assert_eq!(
            parse_size(&d.chunk_size).unwrap(),
            u64::from(run.convert.chunk_size)
        );
        assert_eq!(usize::from(d.parallel_vms), run.parallel_vms);
        assert_eq!(usize::from(d.parallel_disks), run.parallel_disks);
        let e = ExportSection::default();
        let export = ExportOptions::default();
        assert_eq!(
            u64::from(e.grant_duration_secs),
            export.sas_duration.as_secs()
        );
        assert_eq!(e.operation_timeout_secs, export.lro.timeout.as_secs());
        let plan = list_plan(
            parse("azure:\n  subscription: s\n", "c.yaml").unwrap(),
            Overrides::default(),
        );
        let lib = PlanOptions::default();
        assert_eq!(
            (
                plan.migration.dir,
                plan.migration.format,
                plan.migration.layout
            ),
            (lib.dir, lib.format, lib.layout)
        );
    }

    #[test]
    fn example_configs_are_valid() {
        for (name, text) in [
            (
                "list-sim.yaml",
                include_str!("../../examples/list-sim.yaml"),
            ),
            ("config.yaml", include_str!("../../examples/config.yaml")),
        ] {
            parse(text, name).unwrap();
        }
    }
}
