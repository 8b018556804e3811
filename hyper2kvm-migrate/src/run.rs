//! A migration run: for every planned VM, export its disks (directly, or through snapshots,
//! stopping or deallocating it first if the policy says so), convert them into images, run the
//! guest fix-ups on the OS disk, write the libvirt domain and `report.json`; then a summary.
//!
//! * **Concurrency**: VMs run concurrently up to `parallel_vms`; disks, across all VMs, up to
//!   `parallel_disks`; reads, across all disks, up to the [`Limits`] (connections, bandwidth).
//!   One VM's failure is recorded in its report and does not stop the others.
//! * **Sources**: the run reads through core's traits ([`Source`]): VMs and disks,
//!   power control, point-in-time copies (snapshots), hardware, and the platform's name for
//!   the domain's description. It never names a platform itself.
//! * **Cleanup**: every grant is revoked and every snapshot deleted (unless kept) on success,
//!   on failure, and when the run's future is dropped (Ctrl-C): guards hand what is left to
//!   [`Cleanups`], which the program waits for before it exits. A VM stopped or deallocated
//!   with `restart` is started again in all those cases too.
//! * **Records**: a snapshot is written to `report.json` *before* it is created, so even a
//!   run killed with `kill -9` leaves a trace; the next run reuses it (its partial images then
//!   continue from the same point in time) and deletes it.
//! * **Resume**: an image under its final name is complete (images are renamed into place
//!   only when whole), so a second run skips it; partial images continue from their journal.
//!   With guest fix-ups, the OS disk is converted to `<image>.pre-fixup` and renamed once
//!   fixed, so a half-fixed image never looks finished.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use futures_util::future::join_all;
use hyper2kvm_core::{Cleanups, Error, ErrorKind, LockFile, PowerState, Result, Vm};
use tokio::sync::Semaphore;

use crate::options::{EventFn, RunEvent, RunOptions};
use crate::plan::{plan, safe_name, DiskPlan, VmAction, VmPlan};
use crate::report::{
    write_json_atomic, DiskReport, DiskStatus, PowerAction, RunSummary, VmReport, VmStatus,
    VmSummary,
};
use crate::source::Source;
use crate::time::rfc3339;
use crate::vm::VmRun;
/// A migration run over any [`Source`].
pub struct Migration {
    pub(crate) source: Source,
    pub(crate) cleanups: Cleanups,
    pub(crate) opts: RunOptions,
    pub(crate) events: Option<EventFn>,
}

impl Migration {
    /// A run reading through `source`; background cleanups go to `cleanups` (the same the
    /// source was made with), which the caller waits for before exiting.
    pub fn new(source: Source, cleanups: Cleanups, opts: RunOptions) -> Self {
        Migration {
            source,
            cleanups,
            opts,
            events: None,
        }
    }

    /// Calls `events` with the run's progress.
    pub fn with_events(mut self, events: EventFn) -> Self {
        self.events = Some(events);
        self
    }

    pub(crate) fn emit(&self, event: RunEvent) {
        if let Some(f) = &self.events {
            f(&event);
        }
    }

    /// Lists the VMs the source selects and migrates them: [`run`](Self::run) after
    /// discovery. A discovery failure keeps its kind (credential, throttled, …) and cause.
    pub async fn discover_and_run(&self) -> Result<RunSummary> {
        let vms = self.source.vms.list_vms().await?;
        self.run(&vms).await
    }

    /// Migrates `vms` (as discovered) and returns the summary, also written to
    /// `<output dir>/run-<run id>.json`. Fails only when the run cannot start (a plan error,
    /// an output directory that cannot be made); every VM's own failure is in its report.
    pub async fn run(&self, vms: &[Vm]) -> Result<RunSummary> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        if vms.is_empty() && !self.opts.allow_empty {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the selection matched no VM, so nothing would be migrated; check the selection, or allow an empty run (--allow-empty)",
            ));
        }
        let plan = plan(vms, &self.opts.plan).map_err(|e| {
            Error::new(ErrorKind::InvalidArgument, "the plan cannot work").with_source(e)
        })?;
        std::fs::create_dir_all(&self.opts.plan.dir).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{}: cannot create the output directory",
                    self.opts.plan.dir.display()
                ),
            )
            .with_source(e)
        })?;
        self.emit(RunEvent::RunStarted {
            run_id: plan.run_id.clone(),
            vms: plan.vms.len(),
            dir: self.opts.plan.dir.clone(),
            bytes: plan.total_bytes(),
        });
        let vm_slots = Semaphore::new(self.opts.parallel_vms.max(1));
        let disk_slots = Semaphore::new(self.opts.parallel_disks.max(1));
        let work = plan.vms.iter().zip(vms).map(|(vp, vm)| {
            let (vm_slots, disk_slots) = (&vm_slots, &disk_slots);
            async move {
                let _slot = vm_slots.acquire().await.expect("never closed");
                self.migrate_vm(vm, vp, disk_slots).await
            }
        });
        let reports = join_all(work).await;
        let cleanup_errors: Vec<String> = self
            .cleanups
            .wait_all()
            .await
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        let lines: Vec<VmSummary> = plan
            .vms
            .iter()
            .zip(&reports)
            .map(|(vp, r)| VmSummary {
                name: r.name.clone(),
                resource_group: r.resource_group.clone(),
                status: r.status,
                disks_done: r.disks_done(),
                disks_total: r.disks.len(),
                bytes_downloaded: r.bytes_downloaded(),
                seconds: r.seconds,
                report: vp.report.clone(),
                error: r.errors.first().cloned(),
            })
            .collect();
        let mut exit_code = RunSummary::exit_code_for(&lines);
        if exit_code == 0 && !cleanup_errors.is_empty() {
            exit_code = 3;
        }
        let summary = RunSummary {
            run_id: plan.run_id.clone(),
            started_at: rfc3339(started_at),
            finished_at: rfc3339(SystemTime::now()),
            seconds: started.elapsed().as_secs_f64(),
            completed: lines
                .iter()
                .filter(|l| l.status == VmStatus::Completed)
                .count(),
            not_completed: lines
                .iter()
                .filter(|l| l.status != VmStatus::Completed)
                .count(),
            bytes_downloaded: lines.iter().map(|l| l.bytes_downloaded).sum(),
            vms: lines,
            cleanup_errors,
            exit_code,
        };
        let path = self.opts.plan.dir.join(format!("run-{}.json", plan.run_id));
        write_json_atomic(&path, &summary)
            .map_err(|e| Error::io("cannot write the run summary", e).with_path(&path))?;
        Ok(summary)
    }

    /// The VM's two locks: one for the VM itself in `<output.dir>/.locks/` (two runs must
    /// not export, snapshot or revoke the same disks, whatever folders they write to), one
    /// for its folder (two VMs of two runs may map to the same folder). A lock held by
    /// another run is an error naming it; a stale one is taken over with a warning.
    fn lock_vm(&self, vm: &Vm, vp: &VmPlan) -> std::result::Result<VmLocks, String> {
        let run_id = &self.opts.plan.run_id;
        let what = format!("migrating VM {}/{}", vm.resource_group, vm.name);
        let locks_dir = self.opts.plan.dir.join(".locks");
        std::fs::create_dir_all(&locks_dir)
            .and_then(|()| std::fs::create_dir_all(&vp.dir))
            .map_err(|e| format!("cannot create the lock folders: {e}"))?;
        let key = format!(
            "{}-{:016x}.lock",
            safe_name(&vm.name),
            fnv1a(vm.id.to_ascii_lowercase().as_bytes())
        );
        let vm_lock = LockFile::acquire(&locks_dir.join(key), run_id, &what)
            .map_err(|e| format!("skipped, another run is migrating this VM: {e}"))?;
        let dir_lock = LockFile::acquire(&vp.dir.join(".hyper2kvm.lock"), run_id, &what)
            .map_err(|e| format!("skipped, another run is writing this VM's folder: {e}"))?;
        let warnings = [&vm_lock, &dir_lock]
            .iter()
            .filter_map(|l| {
                l.taken_over()
                    .map(|h| format!("{}: took over a stale lock of {h}", l.path().display()))
            })
            .collect();
        Ok(VmLocks {
            _held: [vm_lock, dir_lock],
            warnings,
        })
    }

    /// The report of a VM another run holds: nothing of its folder is read or written.
    fn locked_report(&self, vm: &Vm, vp: &VmPlan, why: String) -> VmReport {
        self.emit(RunEvent::Step {
            vm: vm.name.clone(),
            message: why.clone(),
        });
        self.emit(RunEvent::VmFinished {
            vm: vm.name.clone(),
            status: VmStatus::Locked,
        });
        let now = rfc3339(SystemTime::now());
        VmReport {
            run_id: self.opts.plan.run_id.clone(),
            vm_id: vm.id.clone(),
            name: vm.name.clone(),
            resource_group: vm.resource_group.clone(),
            location: vm.location.clone(),
            vm_size: vm.vm_size.clone(),
            generation: vm.firmware.generation(),
            os_type: vm.os_type.as_str().to_string(),
            power_state_before: vm.power_state.to_string(),
            action: vp.action.to_string(),
            status: VmStatus::Locked,
            started_at: now.clone(),
            finished_at: Some(now),
            seconds: 0.0,
            disks: vp.disks.iter().map(pending_disk).collect(),
            domain_xml: None,
            vcpus: None,
            memory_mib: None,
            secure_boot: None,
            tpm: None,
            nics: None,
            resources: Vec::new(),
            power: Vec::new(),
            guest: None,
            warnings: Vec::new(),
            errors: vec![why],
        }
    }

    /// One VM, start to end. Never fails: what goes wrong is in the report.
    async fn migrate_vm(&self, vm: &Vm, vp: &VmPlan, disk_slots: &Semaphore) -> VmReport {
        let started = Instant::now();
        // Nothing of the VM is read or written before its locks are held.
        let locks = match self.lock_vm(vm, vp) {
            Ok(l) => l,
            Err(why) => return self.locked_report(vm, vp, why),
        };
        let previous = VmReport::load(&vp.report);
        // A report that exists but cannot be read may record snapshots a killed run left:
        // it is kept aside, not overwritten, and the run says so.
        let mut set_aside = None;
        if previous.is_none() && vp.report.exists() {
            let mut aside = vp.report.as_os_str().to_owned();
            aside.push(".unreadable");
            let aside = PathBuf::from(aside);
            set_aside = Some(match std::fs::rename(&vp.report, &aside) {
                Ok(()) => format!(
                    "{} could not be read; it was moved to {}: check it for snapshots an earlier run may have left",
                    vp.report.display(),
                    aside.display()
                ),
                Err(e) => format!("{} could not be read nor moved aside: {e}", vp.report.display()),
            });
        }
        let owed = owes_start(previous.as_ref(), self.opts.plan.restart, vm);
        let report = Mutex::new(VmReport {
            run_id: self.opts.plan.run_id.clone(),
            vm_id: vm.id.clone(),
            name: vm.name.clone(),
            resource_group: vm.resource_group.clone(),
            location: vm.location.clone(),
            vm_size: vm.vm_size.clone(),
            generation: vm.firmware.generation(),
            os_type: vm.os_type.as_str().to_string(),
            // A start an interrupted run still owes carries over, so that a run interrupted
            // again still knows.
            power_state_before: match previous.as_ref() {
                Some(p) if owed => p.power_state_before.clone(),
                _ => vm.power_state.to_string(),
            },
            action: vp.action.to_string(),
            status: VmStatus::Running,
            started_at: rfc3339(SystemTime::now()),
            finished_at: None,
            seconds: 0.0,
            disks: vp.disks.iter().map(pending_disk).collect(),
            domain_xml: None,
            vcpus: None,
            memory_mib: None,
            secure_boot: None,
            tpm: None,
            nics: None,
            // Snapshots an earlier run created and did not delete (it was killed): reused
            // or deleted below. Also those not confirmed created: a run killed while it
            // waited for the create leaves a snapshot that exists all the same.
            resources: previous
                .as_ref()
                .map(|p| {
                    p.resources
                        .iter()
                        .filter(|r| r.deleted_at.is_none() && !r.kept)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            power: match previous.as_ref() {
                Some(p) if owed => p.power.clone(),
                _ => Vec::new(),
            },
            guest: None,
            warnings: locks.warnings.iter().cloned().chain(set_aside).collect(),
            errors: Vec::new(),
        });
        self.emit(RunEvent::VmStarted {
            vm: vm.name.clone(),
            action: vp.action.to_string(),
            bytes: vp.disks.iter().map(|d| d.size_bytes).sum(),
        });
        let vm_run = VmRun {
            m: self,
            vm,
            vp,
            report: &report,
            previous: previous.as_ref(),
        };
        if let Err(e) = std::fs::create_dir_all(&vp.dir) {
            vm_run.update(|r| {
                r.errors.push(format!(
                    "{}: cannot create the folder: {e}",
                    vp.dir.display()
                ))
            });
        } else if let VmAction::Refused { reason } = &vp.action {
            // A refused VM gets a folder too, holding the report that says why.
            vm_run.update(|r| {
                r.status = VmStatus::Refused;
                r.warnings.push(reason.clone());
            });
        } else {
            vm_run.save();
            vm_run.migrate(disk_slots).await;
        }
        let mut final_report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        final_report.status = final_status(&final_report);
        final_report.finished_at = Some(rfc3339(SystemTime::now()));
        final_report.seconds = started.elapsed().as_secs_f64();
        if vp.dir.exists() {
            if let Err(e) = write_json_atomic(&vp.report, &final_report) {
                final_report.errors.push(format!(
                    "{}: cannot write the report: {e}",
                    vp.report.display()
                ));
            }
        }
        self.emit(RunEvent::VmFinished {
            vm: vm.name.clone(),
            status: final_report.status,
        });
        // Released only once the report is final.
        drop(locks);
        final_report
    }
}

/// The locks a VM's migration holds; released when dropped (also when the run is
/// cancelled).
struct VmLocks {
    _held: [LockFile; 2],
    warnings: Vec<String>,
}

/// FNV-1a: a short, stable name for a VM id in a lock file's name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether the run that wrote `prev` stopped or deallocated `vm`, which it had found running,
/// to start it again (`restart`), and was interrupted before it did.
pub(crate) fn owes_start(prev: Option<&VmReport>, restart: bool, vm: &Vm) -> bool {
    let Some(prev) = prev else {
        return false;
    };
    let last_ok = prev.power.iter().rev().find(|p| p.ok);
    let before: PowerState = prev
        .power_state_before
        .parse()
        .unwrap_or_else(|e| match e {});
    restart
        && matches!(before, PowerState::Running | PowerState::Starting)
        && matches!(
            vm.power_state,
            PowerState::Deallocated | PowerState::Stopped
        )
        && last_ok
            .is_some_and(|p| matches!(p.action, PowerAction::Deallocate | PowerAction::PowerOff))
}

fn pending_disk(d: &DiskPlan) -> DiskReport {
    DiskReport {
        name: d.name.clone(),
        id: d.id.clone(),
        role: d.role,
        lun: d.lun,
        output: d.output.clone(),
        status: DiskStatus::Pending,
        exported_from: None,
        virtual_size: d.size_bytes,
        bytes_downloaded: 0,
        bytes_skipped: 0,
        bytes_resumed: 0,
        bytes_zero: 0,
        image_bytes: 0,
        set_aside: None,
        sha256: None,
        seconds: 0.0,
        error: None,
    }
}

fn final_status(r: &VmReport) -> VmStatus {
    if matches!(r.status, VmStatus::Refused | VmStatus::Locked) {
        return r.status;
    }
    let done = r.disks_done();
    if done == r.disks.len() && r.errors.is_empty() {
        VmStatus::Completed
    } else if done > 0 {
        VmStatus::Partial
    } else {
        VmStatus::Failed
    }
}
