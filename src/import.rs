//! `hyper2kvm import`: local VM exports (OVA, OVF, Hyper-V export folders, disk images)
//! migrated through the same engine as an Azure run — same images, domain XML, reports,
//! guest fix-ups and resume — with [`hyper2kvm_local`] as the source.

use std::path::PathBuf;
use std::sync::Arc;

use hyper2kvm_core::{Cleanups, Result};
use hyper2kvm_local::{Defaults, LocalSource};
use hyper2kvm_migrate::{
    plan, EventFn, Interrupt, Plan, PlanOptions, RunOptions, RunSummary, Source,
};

/// Opens every SRC (one VM each) as a [`Source`] with hardware from the descriptors or
/// `defaults`. Fails on the first SRC that cannot be opened, before anything is written.
pub fn source(srcs: &[PathBuf], defaults: &Defaults, cleanups: &Cleanups) -> Result<Source> {
    let local = Arc::new(LocalSource::open(srcs, defaults, cleanups.clone())?);
    Ok(Source::new(local.clone()).with_hardware(local))
}

/// Imports `srcs`: opens them ([`source`]) and runs the migration ([`crate::run::migrate`]).
///
/// ```no_run
/// use std::path::PathBuf;
/// use hyper2kvm::core::Cleanups;
/// use hyper2kvm::local::Defaults;
/// use hyper2kvm::migrate::RunOptions;
/// # async fn run() -> hyper2kvm::core::Result<()> {
/// let mut opts = RunOptions::default();
/// opts.plan.dir = PathBuf::from("out");
/// let srcs = [PathBuf::from("web01.ova")];
/// let summary = hyper2kvm::import::import(&srcs, &Defaults::default(), Cleanups::new(), opts, None).await?;
/// std::process::exit(summary.exit_code.into());
/// # }
/// ```
pub async fn import(
    srcs: &[PathBuf],
    defaults: &Defaults,
    cleanups: Cleanups,
    opts: RunOptions,
    events: Option<EventFn>,
) -> Result<RunSummary> {
    import_until(srcs, defaults, cleanups, opts, events, Interrupt::new()).await
}

/// [`import`], stoppable through `interrupt`: the run then stops, writes records that say
/// `interrupted` and returns its summary (see [`crate::run::migrate_until`]).
pub async fn import_until(
    srcs: &[PathBuf],
    defaults: &Defaults,
    cleanups: Cleanups,
    opts: RunOptions,
    events: Option<EventFn>,
    interrupt: Interrupt,
) -> Result<RunSummary> {
    let source = source(srcs, defaults, &cleanups)?;
    crate::run::migrate_until(&source, cleanups, opts, events, interrupt).await
}

/// What importing `srcs` would do, writing nothing (`--dry-run`).
pub async fn dry_run(srcs: &[PathBuf], defaults: &Defaults, opts: &PlanOptions) -> Result<Plan> {
    let source = source(srcs, defaults, &Cleanups::new())?;
    let vms = source.vms().list_vms().await?;
    plan(&vms, opts)
        .map_err(|e| hyper2kvm_core::Error::new(hyper2kvm_core::ErrorKind::InvalidArgument, e.0))
}
