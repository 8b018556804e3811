//! Guards for what a run must undo even when it fails or is cancelled: a snapshot to delete
//! ([`CopyGuard`]) and a VM to start again ([`StartGuard`]). Dropped while armed, each hands
//! its work to [`Cleanups`], which the program waits for before it exits; that background
//! work records its outcome in the VM's report (a snapshot's `deleted_at`, the start in
//! `power`, a failure in `cleanup_errors`), so an interrupted run's records say what was
//! actually undone.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hyper2kvm_core::{Cleanups, Error, PointInTimeCopies, PowerControl, Vm};

use crate::report::{
    CleanupAction, CleanupRecord, ErrorRecord, PowerAction, PowerRecord, VmReport,
};
use crate::time::rfc3339;

/// A VM's report, shared with the cleanups that may outlive the VM's task.
pub(crate) type SharedReport = Arc<Mutex<VmReport>>;

fn update<T>(report: &SharedReport, f: impl FnOnce(&mut VmReport) -> T) -> T {
    f(&mut report.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Records a snapshot as deleted now.
pub(crate) fn record_deleted(report: &SharedReport, id: &str) {
    update(report, |r| {
        if let Some(x) = r.resources.iter_mut().find(|x| x.id == id) {
            x.deleted_at = Some(rfc3339(SystemTime::now()));
        }
    });
}

/// Records a cleanup that failed, with what the source says to do by hand.
pub(crate) fn record_cleanup_failure(
    report: &SharedReport,
    action: CleanupAction,
    resource: &str,
    e: &Error,
) {
    tracing::warn!("{} {resource} failed: {e}", action.as_str());
    update(report, |r| {
        let record = CleanupRecord::of(Some(action), Some(&r.name), Some(resource), e);
        r.cleanup_errors.push(record);
    });
}

/// Records a power operation sent at `at` with its outcome.
pub(crate) fn record_power(
    report: &SharedReport,
    action: PowerAction,
    at: String,
    outcome: &hyper2kvm_core::Result<()>,
) {
    update(report, |r| {
        r.power.push(PowerRecord {
            action,
            at,
            ok: outcome.is_ok(),
            error: outcome.as_ref().err().map(ErrorRecord::of),
        })
    });
}

/// Deletes a point-in-time copy, in the background if dropped while armed.
pub(crate) struct CopyGuard {
    copies: Arc<dyn PointInTimeCopies>,
    pub(crate) id: String,
    cleanups: Cleanups,
    report: SharedReport,
    armed: bool,
}

impl CopyGuard {
    pub(crate) fn new(
        copies: &Arc<dyn PointInTimeCopies>,
        id: &str,
        cleanups: &Cleanups,
        report: &SharedReport,
    ) -> Self {
        CopyGuard {
            copies: copies.clone(),
            id: id.to_string(),
            cleanups: cleanups.clone(),
            report: report.clone(),
            armed: true,
        }
    }

    /// Leaves the copy in place; returns its id.
    pub(crate) fn keep(mut self) -> String {
        self.armed = false;
        self.id.clone()
    }

    /// Deletes the copy now and records the outcome; true if it is gone.
    pub(crate) async fn delete(mut self) -> bool {
        let outcome = self.copies.delete(&self.id).await;
        // Disarmed only now: dropped mid-way, the guard still deletes in the background.
        self.armed = false;
        record_delete(&self.report, &self.id, &outcome);
        outcome.is_ok()
    }
}

fn record_delete(report: &SharedReport, id: &str, outcome: &hyper2kvm_core::Result<()>) {
    match outcome {
        Ok(()) => record_deleted(report, id),
        Err(e) => record_cleanup_failure(report, CleanupAction::DeleteSnapshot, id, e),
    }
}

impl Drop for CopyGuard {
    fn drop(&mut self) {
        if self.armed {
            let (copies, id, report) = (self.copies.clone(), self.id.clone(), self.report.clone());
            self.cleanups.spawn(Box::pin(async move {
                let outcome = copies.delete(&id).await;
                record_delete(&report, &id, &outcome);
                // Recorded in the VM's report, which reaches the run's summary.
                Ok(())
            }));
        }
    }
}

/// Starts a VM the run stopped or deallocated, in the background if dropped while armed
/// (also while the start itself was under way).
pub(crate) struct StartGuard {
    power: Arc<dyn PowerControl>,
    vm: Vm,
    cleanups: Cleanups,
    report: SharedReport,
    armed: bool,
}

impl StartGuard {
    pub(crate) fn new(
        power: &Arc<dyn PowerControl>,
        vm: &Vm,
        cleanups: &Cleanups,
        report: &SharedReport,
    ) -> Self {
        StartGuard {
            power: power.clone(),
            vm: vm.clone(),
            cleanups: cleanups.clone(),
            report: report.clone(),
            armed: true,
        }
    }

    /// Starts the VM now and records it.
    pub(crate) async fn start(mut self) -> hyper2kvm_core::Result<()> {
        let at = rfc3339(SystemTime::now());
        let outcome = self.power.start(&self.vm).await;
        // Disarmed only now: dropped mid-way, the guard still starts the VM.
        self.armed = false;
        record_start(&self.report, &self.vm, at, &outcome);
        outcome
    }
}

fn record_start(report: &SharedReport, vm: &Vm, at: String, outcome: &hyper2kvm_core::Result<()>) {
    record_power(report, PowerAction::Start, at, outcome);
    if let Err(e) = outcome {
        record_cleanup_failure(report, CleanupAction::StartVm, &vm.id, e);
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            let (power, vm, report) = (self.power.clone(), self.vm.clone(), self.report.clone());
            self.cleanups.spawn(Box::pin(async move {
                let at = rfc3339(SystemTime::now());
                let outcome = power.start(&vm).await;
                record_start(&report, &vm, at, &outcome);
                Ok(())
            }));
        }
    }
}
