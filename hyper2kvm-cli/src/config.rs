//! How `config.yaml` and the flags become one resolved [`ListPlan`]. The file's schema and
//! reader are the library's (`hyper2kvm::config`), so an embedding tool reads the same file.
//!
//! The reference is `docs/config.md`; keep the two in step.

use std::fmt;
use std::path::{Path, PathBuf};

use hyper2kvm::config::{
    parse_size, AuthSetting, CompressionSetting, ConfigFile, DomainSection, DownloadSection,
    ExportSection, GuestSection, ImageFormat, OutputSection, TargetSetting,
};
use hyper2kvm::migrate::{KubevirtOptions, PlanOptions, Target};
use hyper2kvm_azure::{AuthMethod, RetryConfig, Selection};
use hyper2kvm_core::libvirt::{CpuMode, NetworkAttachment};
use hyper2kvm_core::{Compression, OutputFormat};
use hyper2kvm_guest::GuestConfig;

pub use hyper2kvm::config::ListFormat;

use crate::args::OutputArg;

/// A mistake the user must fix in the command line or the config file: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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
    /// `guest.parallel` (the engine's default without `guest:`).
    pub parallel_fixups: usize,
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
    /// `output.target` with `output.kubevirt`.
    pub target: Target,
}

/// Reads and checks `path` ([`hyper2kvm::config::load`]); its mistakes are the user's.
pub fn load(path: &Path) -> Result<ConfigFile, UsageError> {
    hyper2kvm::config::load(path).map_err(|e| UsageError(e.0))
}

/// Parses config text ([`hyper2kvm::config::parse`]); `name` prefixes messages.
#[cfg(test)]
pub fn parse(text: &str, name: &str) -> Result<ConfigFile, UsageError> {
    hyper2kvm::config::parse(text, name).map_err(|e| UsageError(e.0))
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
            Some(&file.output),
            file.output.compress,
        ),
    }
}

pub(crate) fn run_settings(
    download: &DownloadSection,
    export: &ExportSection,
    domain: &DomainSection,
    guest: Option<&GuestSection>,
    output: Option<&OutputSection>,
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
        parallel_fixups: guest.map_or(
            hyper2kvm::migrate::RunOptions::default().parallel_fixups,
            |g| usize::from(g.parallel),
        ),
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
            virtio_win: g.windows.virtio_win.clone(),
        }),
        target: match output.and_then(|o| o.target) {
            Some(TargetSetting::Kubevirt) => {
                let k = output.and_then(|o| o.kubevirt.clone()).unwrap_or_default();
                let mut options = KubevirtOptions::new(k.image_url_base);
                options.namespace = k.namespace;
                options.storage_class = k.storage_class;
                Target::Kubevirt(options)
            }
            Some(TargetSetting::Libvirt) | None => Target::Libvirt,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper2kvm::migrate::{DiskChoice, Layout, RunOptions, RunningVmPolicy};
    use hyper2kvm_azure::ExportOptions;
    use hyper2kvm_core::PowerState;

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
    fn guest_windows_virtio_win_is_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("h2k-virtio-win-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("viostor")).unwrap();
        let text = format!(
            "azure:\n  subscription: s\nguest:\n  windows:\n    virtio_win: {}\n",
            dir.display()
        );
        let plan = list_plan(parse(&text, "c.yaml").unwrap(), Overrides::default());
        assert_eq!(plan.run.guest.unwrap().virtio_win, Some(dir.clone()));
        let missing = text.replace(&dir.display().to_string(), "/nonexistent/virtio-win.iso");
        let err = parse(&missing, "c.yaml").unwrap_err();
        assert!(
            err.0
                .contains("guest.windows.virtio_win: /nonexistent/virtio-win.iso does not exist"),
            "{}",
            err.0
        );
        let unknown = parse(
            "azure:\n  subscription: s\nguest:\n  windows:\n    virtio: x\n",
            "c.yaml",
        )
        .unwrap_err();
        assert!(unknown.0.starts_with("c.yaml:5:"), "{}", unknown.0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn kubevirt_target_is_read_and_checked() {
        let base = "azure:\n  subscription: s\noutput:\n";
        let plan = |text: &str| {
            list_plan(
                parse(&format!("{base}{text}"), "c.yaml").unwrap(),
                Overrides::default(),
            )
        };
        assert_eq!(plan("  dir: o\n").run.target, Target::Libvirt);
        let mut want = KubevirtOptions::new(Some("https://img.example/out".into()));
        want.namespace = Some("vms".into());
        want.storage_class = Some("ceph".into());
        assert_eq!(
            plan("  target: kubevirt\n  kubevirt: { image_url_base: \"https://img.example/out\", namespace: vms, storage_class: ceph }\n").run.target,
            Target::Kubevirt(want)
        );
        assert_eq!(
            plan("  target: kubevirt\n").run.target,
            Target::Kubevirt(KubevirtOptions::new(None))
        );
        for (text, says) in [
            (
                "  kubevirt: { namespace: vms }\n",
                "output.target is not kubevirt",
            ),
            (
                "  target: kubevirt\n  kubevirt: { image_url_base: \"ftp://x/\" }\n",
                "output.kubevirt.image_url_base: \"ftp://x/\"",
            ),
            (
                "  target: kubevirt\n  kubevirt: { image_url_base: \"https:///x\" }\n",
                "with a host",
            ),
            (
                "  target: kubevirt\n  kubevirt: { namespace: Prod_VMs }\n",
                "output.kubevirt.namespace: \"Prod_VMs\"",
            ),
            ("  target: kubernetes\n", "c.yaml:4:"),
        ] {
            let err = parse(&format!("{base}{text}"), "c.yaml").unwrap_err();
            assert!(err.0.contains(says), "{text}: {}", err.0);
        }
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
