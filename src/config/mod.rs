//! `config.yaml`, the file the `hyper2kvm` command reads, as a library: its schema
//! ([`ConfigFile`] and its sections), and how it is read ([`load`], [`parse`]: unknown keys
//! and wrong types rejected with line and column, values checked), so that an embedding tool
//! reads the same file the command does.
//!
//! It lives in the facade because the file spans every library: Azure (subscriptions,
//! selection, retries, grants), the engine (policies, layout, parallelism) and the guest
//! fix-ups (`guest.skip` is checked against their names). Defaults are the libraries' own
//! (`RunOptions::default()`, `PlanOptions::default()`, `ExportOptions::default()`). How the
//! file and the command's flags become a run is the command's business (`hyper2kvm-cli`).
//!
//! The reference is `docs/config.md`. Secrets are never read from the file: credentials come
//! from the environment (see `hyper2kvm_azure::credential`).

use std::path::Path;

use hyper2kvm_core::{Error, ErrorKind, PowerState};

mod range;
mod schema;
mod size;

pub use schema::*;
pub use size::parse_size;

/// A file that cannot be read or does not hold a valid configuration; the message names the
/// file, and the line and column where it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<ConfigError> for Error {
    /// A configuration error is the caller's to fix: [`ErrorKind::InvalidArgument`].
    fn from(e: ConfigError) -> Self {
        Error::wrap(ErrorKind::InvalidArgument, e)
    }
}

/// Reads and checks `path`; a simulator scenario's path is made relative to the file's
/// directory.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
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
///
/// ```
/// let file = hyper2kvm::config::parse("azure:\n  subscription: s\n", "config.yaml")?;
/// assert_eq!(file.azure.subscription.as_deref(), Some("s"));
/// assert_eq!(file.download.parallel_vms, 32); // the engine's default
/// let err = hyper2kvm::config::parse("azure:\n  colour: red\n", "config.yaml").unwrap_err();
/// assert!(err.0.starts_with("config.yaml:2:"));
/// # Ok::<(), hyper2kvm::config::ConfigError>(())
/// ```
pub fn parse(text: &str, name: &str) -> Result<ConfigFile, ConfigError> {
    let file: ConfigFile = serde_saphyr::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{}:{}", l.line(), l.column()))
            .map(|lc| format!("{name}:{lc}"))
            .unwrap_or_else(|| name.to_string());
        ConfigError(format!("{at}: {}", first_line(&e.to_string())))
    })?;
    check(&file).map_err(|m| ConfigError(format!("{name}: {m}")))?;
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
    check_common(
        &file.download,
        &file.domain,
        &file.output,
        file.guest.as_ref(),
    )?;
    Ok(())
}

/// Reads and checks the sections of `path` that `hyper2kvm import -c` uses ([`ImportConfig`]):
/// the same file as a migration run's works, its `azure:` and `export:` sections ignored.
pub fn load_import(path: &Path) -> Result<ImportConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
    let name = path.display().to_string();
    let file: ImportConfig = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{name}:{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| name.clone());
        ConfigError(format!("{at}: {}", first_line(&e.to_string())))
    })?;
    check_common(
        &file.download,
        &file.domain,
        &file.output,
        file.guest.as_ref(),
    )
    .map_err(|m| ConfigError(format!("{name}: {m}")))?;
    Ok(file)
}

/// The checks of the sections every run reads: download, domain, guest.
fn check_common(
    download: &DownloadSection,
    domain: &DomainSection,
    output: &OutputSection,
    guest: Option<&GuestSection>,
) -> Result<(), String> {
    check_output(output)?;
    let file = Sections {
        download,
        domain,
        guest,
    };
    let chunk =
        parse_size(&file.download.chunk_size).map_err(|e| format!("download.chunk_size: {e}"))?;
    if !(4096..=64 << 20).contains(&chunk) {
        return Err(format!("download.chunk_size must be 4K–64M, got {chunk}"));
    }
    if let Some(b) = &file.download.bandwidth {
        let n = parse_size(b).map_err(|e| format!("download.bandwidth: {e}"))?;
        if n < 64 << 10 {
            return Err(format!(
                "download.bandwidth must be at least 64K (bytes per second), got {n}"
            ));
        }
    }
    if file.domain.network.is_some() && file.domain.bridge.is_some() {
        return Err("domain: give either `network` or `bridge`, not both".into());
    }
    if file.domain.cpu_mode.trim().is_empty() {
        return Err(
            "domain.cpu_mode: empty; use host-passthrough, host-model or a CPU model name".into(),
        );
    }
    if let Some(path) = file.guest.and_then(|g| g.windows.virtio_win.as_ref()) {
        if !path.exists() {
            return Err(format!(
                "guest.windows.virtio_win: {} does not exist (give the virtio-win ISO or its unpacked tree)",
                path.display()
            ));
        }
    }
    if let Some(g) = file.guest {
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
    Ok(())
}

/// `output.target` and `output.kubevirt`.
fn check_output(output: &OutputSection) -> Result<(), String> {
    let Some(k) = &output.kubevirt else {
        return Ok(());
    };
    if output.target != Some(TargetSetting::Kubevirt) {
        return Err("output.kubevirt is set, but output.target is not kubevirt".into());
    }
    if let Some(base) = &k.image_url_base {
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(format!(
                "output.kubevirt.image_url_base: {base:?} is not an http:// or https:// URL with a host"
            ));
        }
    }
    if let Some(ns) = &k.namespace {
        let label = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !label {
            return Err(format!(
                "output.kubevirt.namespace: {ns:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"
            ));
        }
    }
    Ok(())
}

/// The sections [`check_common`] looks at.
struct Sections<'a> {
    download: &'a DownloadSection,
    domain: &'a DomainSection,
    guest: Option<&'a GuestSection>,
}
