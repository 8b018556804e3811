//! A whole migration run as a library call, for any source: discover the VMs the
//! [`Source`] selects, then migrate them with [`Migration`], guest fix-ups included,
//! reporting progress through a callback. The `hyper2kvm -c config.yaml` command is this call
//! over an [`AzureSource`](hyper2kvm_azure::AzureSource).

use std::sync::Arc;

use hyper2kvm_core::Cleanups;
use hyper2kvm_guest::report::{FixReport, Outcome, Status};
use hyper2kvm_guest::{fix_image, GuestConfig};
use hyper2kvm_migrate::{
    EventFn, GuestHook, GuestOutcome, Interrupt, Migration, Result, RunOptions, RunSummary, Source,
};
use serde_json::json;

/// Discovers the VMs `source` selects and migrates them. Progress goes to `events`;
/// background cleanups (grants, snapshots, VMs to start again) go to `cleanups`, which the
/// caller waits for ([`Cleanups::wait_all`]) if it stops the run early.
///
/// Fails only when the run cannot start; the error's [`kind`](hyper2kvm_core::Error::kind)
/// says why (a credential, throttling, a bad plan, …) and its `source()` chain reaches the
/// source's own error. Each VM's failures are in its report and the summary.
///
/// ```no_run
/// use std::sync::Arc;
/// use hyper2kvm::migrate::{RunEvent, RunOptions, Source};
/// # async fn run(azure: hyper2kvm::azure::AzureSource, cleanups: hyper2kvm::core::Cleanups)
/// #     -> hyper2kvm::core::Result<()> {
/// let events = Arc::new(|e: &RunEvent| {
///     if let RunEvent::VmFinished { vm, status } = e {
///         println!("{vm}: {}", status.as_str());
///     }
/// });
/// let source = Source::full(Arc::new(azure));
/// let summary = hyper2kvm::run::migrate(&source, cleanups, RunOptions::default(), Some(events)).await?;
/// std::process::exit(summary.exit_code.into());
/// # }
/// ```
pub async fn migrate(
    source: &Source,
    cleanups: Cleanups,
    opts: RunOptions,
    events: Option<EventFn>,
) -> Result<RunSummary> {
    migrate_until(source, cleanups, opts, events, Interrupt::new()).await
}

/// [`migrate`], stoppable through `interrupt` (pull it from a signal handler): the run then
/// stops its work, undoes what it started (grants, snapshots, VMs to start again), writes
/// `report.json` files and `run-<id>.json` that say `interrupted` and what was undone, and
/// returns that summary (exit code 130). Interrupted during discovery, it fails with
/// [`Cancelled`](hyper2kvm_core::ErrorKind::Cancelled): nothing was started.
pub async fn migrate_until(
    source: &Source,
    cleanups: Cleanups,
    opts: RunOptions,
    events: Option<EventFn>,
    interrupt: Interrupt,
) -> Result<RunSummary> {
    let mut migration = Migration::new(source.clone(), cleanups, opts).with_interrupt(interrupt);
    if let Some(events) = events {
        migration = migration.with_events(events);
    }
    migration.discover_and_run().await
}

/// The guest fix-ups of `hyper2kvm-guest` as a run's [`GuestHook`]: run on every migrated OS
/// disk before it gets its final name.
pub fn guest_hook(config: GuestConfig) -> GuestHook {
    Arc::new(move |image| {
        let config = config.clone();
        Box::pin(async move {
            let shown = image.display().to_string();
            // guestfish calls block: keep them off the runtime's workers.
            match tokio::task::spawn_blocking(move || fix_image(&image, &config)).await {
                Ok(Ok(report)) => {
                    let mut outcome = outcome(&report);
                    // Say so when the appliance had to run without KVM.
                    if let Some(notice) = hyper2kvm_guest::accel::decided().and_then(|a| a.notice())
                    {
                        outcome.warnings.push(notice);
                    }
                    outcome
                }
                Ok(Err(e)) => GuestOutcome {
                    report: json!({ "image": shown, "error": e.to_string() }),
                    warnings: Vec::new(),
                    error: Some(e.to_string()),
                },
                Err(e) => GuestOutcome {
                    report: json!({ "image": shown, "error": format!("the fix-up task failed: {e}") }),
                    warnings: Vec::new(),
                    error: Some(format!("the fix-up task failed: {e}")),
                },
            }
        })
    })
}

/// A fix report as `report.json`'s `guest` object, with what the run must know.
fn outcome(r: &FixReport) -> GuestOutcome {
    let (result, detail, warnings, error) = match &r.outcome {
        Outcome::Fixed => ("fixed", None, vec![], None),
        Outcome::NothingToDo => ("nothing_to_do", None, vec![], None),
        Outcome::DryRun => ("dry_run", None, vec![], None),
        Outcome::NotFixed(why) => (
            "not_fixed",
            Some(why.clone()),
            vec![format!("guest not fixed: {why}")],
            None,
        ),
        Outcome::Skipped(why) => (
            "skipped",
            Some(why.clone()),
            vec![format!("guest fix-ups skipped: {why}")],
            None,
        ),
        Outcome::Failed(why) => ("failed", Some(why.clone()), vec![], Some(why.clone())),
        // Fixed as far as it goes, but not bootable or not reachable on KVM as it is: the
        // image must not look finished (it stays `.pre-fixup`, and a new run tries again).
        Outcome::Incomplete(why) => (
            "incomplete",
            Some(why.clone()),
            vec![],
            Some(format!("the guest is not ready for KVM: {why}")),
        ),
    };
    let fixups: Vec<_> = r
        .fixups
        .iter()
        .map(|f| {
            let (status, why) = match &f.status {
                Status::Applied => ("applied", None),
                Status::WouldApply => ("would_apply", None),
                Status::NotNeeded => ("not_needed", None),
                Status::Skipped => ("skipped", None),
                Status::Failed(why) => ("failed", Some(why.clone())),
                Status::NotRun => ("not_run", None),
                Status::Incomplete(why) => ("incomplete", Some(why.clone())),
            };
            json!({ "name": f.name, "status": status, "error": why, "changes": f.changes, "notes": f.notes })
        })
        .collect();
    GuestOutcome {
        report: json!({
            "image": r.image,
            "guest": r.guest,
            "network": r.network,
            "result": result,
            "detail": detail,
            "fixups": fixups,
        }),
        warnings,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper2kvm_guest::FixUpResult;

    /// A guest not ready for KVM is an error for the run (the image keeps its `.pre-fixup`
    /// name), with each fix-up's reason in `report.json`.
    #[test]
    fn a_guest_not_ready_fails_its_disk_with_the_reason() {
        let report = FixReport {
            image: "vm-os.qcow2.pre-fixup".into(),
            guest: None,
            network: Vec::new(),
            outcome: Outcome::Incomplete("netplan: pins the NIC".into()),
            fixups: vec![FixUpResult {
                name: "netplan",
                status: Status::Incomplete("pins the NIC".into()),
                changes: Vec::new(),
                notes: Vec::new(),
            }],
        };
        let out = outcome(&report);
        assert_eq!(
            out.error.as_deref(),
            Some("the guest is not ready for KVM: netplan: pins the NIC")
        );
        assert_eq!(out.report["result"], "incomplete");
        assert_eq!(out.report["fixups"][0]["status"], "incomplete");
        assert_eq!(out.report["fixups"][0]["error"], "pins the NIC");
    }
}
