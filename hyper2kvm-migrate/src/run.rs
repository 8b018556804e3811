//! A migration run: for every planned VM, export its disks (directly, or through snapshots,
//! stopping or deallocating it first if the policy says so), convert them into images, run the
//! guest fix-ups on the OS disk, write the libvirt domain and `report.json`; then a summary.
//!
//! * **Concurrency**: VMs start largest first, at most `parallel_vms` at once and only as far
//!   ahead as the link needs; disks, across all VMs, are read up to `parallel_disks` at once,
//!   holding their slot only while data flows; reads, across all disks, up to the [`Limits`]
//!   (connections, bandwidth). See docs/design-notes.md, "Fleet scheduling".
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use hyper2kvm_core::{Cleanups, Error, ErrorKind, LockFile, PowerState, Result, Vm};

use crate::guards::SharedReport;
use crate::interrupt::Interrupt;
use crate::options::{EventFn, RunEvent, RunOptions, WarmMode};
use crate::plan::{plan, safe_name, DiskPlan, VmAction, VmPlan};
use crate::records::Records;
use crate::report::{
    CleanupRecord, DiskReport, DiskStatus, ErrorRecord, PowerAction, RunStatus, RunSummary,
    VmReport, VmStatus, VmSummary, SCHEMA_VERSION, TOOL_VERSION,
};
use crate::sched::Scheduler;
use crate::shard::{PlanDeviation, ShardFilter, ShardRecord};
use crate::source::Source;
use crate::time::rfc3339;
use crate::vm::VmRun;
/// A migration run over any [`Source`].
pub struct Migration {
    pub(crate) source: Source,
    pub(crate) cleanups: Cleanups,
    pub(crate) opts: RunOptions,
    pub(crate) events: Option<EventFn>,
    pub(crate) interrupt: Interrupt,
    records: Mutex<Option<Arc<Records>>>,
}

/// One VM's outcome, before the run's cleanups are waited for: its report (still updated
/// by background cleanups), whether its folder holds a report of this run, and its locks
/// (released once the report is final).
struct VmOutcome {
    report: SharedReport,
    write: bool,
    started: Instant,
    locks: Option<VmLocks>,
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
            interrupt: Interrupt::new(),
            records: Mutex::new(None),
        }
    }

    /// Calls `events` with the run's progress.
    pub fn with_events(mut self, events: EventFn) -> Self {
        self.events = Some(events);
        self
    }

    /// Lets `interrupt` stop the run: the run then undoes what it started, records what
    /// happened (`interrupted`) and returns its summary with exit code 130; see
    /// [`Interrupt`].
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = interrupt;
        self
    }

    pub(crate) fn emit(&self, event: RunEvent) {
        if let Some(f) = &self.events {
            f(&event);
        }
    }

    /// The run's record writer (set when the run starts).
    pub(crate) fn records(&self) -> Arc<Records> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("records are set when the run starts")
    }

    /// Lists the VMs the source selects and migrates them: [`run`](Self::run) after
    /// discovery. A discovery failure keeps its kind (credential, throttled, …) and cause;
    /// an interruption during discovery is a `Cancelled` error (nothing was started).
    pub async fn discover_and_run(&self) -> Result<RunSummary> {
        let vms = tokio::select! {
            vms = self.source.vms.list_vms() => vms?,
            () = self.interrupt.interrupted() => {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    format!(
                        "interrupted ({}) while listing VMs; nothing was started",
                        self.interrupt.reason().unwrap_or_default()
                    ),
                ))
            }
        };
        match &self.opts.shard {
            None => self.run(&vms).await,
            Some(filter) => {
                // A hash shard of a selection that matched nothing is the same mistake as a
                // run without shards (exit 2, so that `… && decommission` stops); an empty
                // shard of a non-empty selection is not. A planned shard's selection is
                // the plan's, checked when it was made.
                if vms.is_empty()
                    && !self.opts.allow_empty
                    && matches!(filter, ShardFilter::Hashed { .. })
                {
                    return Err(empty_selection());
                }
                let work = filter.select(vms);
                for d in &work.deviations {
                    tracing::warn!("{}/{}: {}", d.resource_group, d.name, d.detail);
                }
                self.run_inner(&work.vms, Some(filter.record()), work.deviations)
                    .await
            }
        }
    }

    /// Migrates `vms` (as discovered) and returns the summary, also written to
    /// `<output dir>/run-<run id>.json`. Fails only when the run cannot start (a plan error,
    /// an output directory that cannot be made); every VM's own failure is in its report.
    /// Records that cannot be written (a read-only or full output directory) are listed in
    /// the summary's `records_not_written`, and the exit code is then not 0.
    pub async fn run(&self, vms: &[Vm]) -> Result<RunSummary> {
        self.run_inner(vms, None, Vec::new()).await
    }

    /// [`run`](Self::run), recording the shard and what changed since its plan. A shard
    /// may be empty (more shards than VMs, or every VM gone): that is not an error.
    async fn run_inner(
        &self,
        vms: &[Vm],
        shard: Option<ShardRecord>,
        plan_deviations: Vec<PlanDeviation>,
    ) -> Result<RunSummary> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        if vms.is_empty() && !self.opts.allow_empty && shard.is_none() {
            return Err(empty_selection());
        }
        // Records name absolute paths: they are read from elsewhere (scripts, other hosts).
        let mut plan_opts = self.opts.plan.clone();
        plan_opts.dir = std::path::absolute(&plan_opts.dir).map_err(|e| {
            Error::io("cannot resolve the output directory", e).with_path(&plan_opts.dir)
        })?;
        let plan = plan(vms, &plan_opts).map_err(|e| {
            Error::new(ErrorKind::InvalidArgument, "the plan cannot work").with_source(e)
        })?;
        std::fs::create_dir_all(&plan_opts.dir).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{}: cannot create the output directory",
                    plan_opts.dir.display()
                ),
            )
            .with_source(e)
        })?;
        let records = Arc::new(Records::new(&plan_opts.dir, &plan.run_id));
        *self.records.lock().unwrap_or_else(|e| e.into_inner()) = Some(records.clone());
        self.emit(RunEvent::RunStarted {
            run_id: plan.run_id.clone(),
            vms: plan.vms.len(),
            dir: plan_opts.dir.clone(),
            bytes: plan.total_bytes(),
        });
        // A cutover stops VMs: no more at once than can be fixed at once.
        let cap = match &self.opts.warm {
            Some(WarmMode::Cutover) => self.opts.parallel_fixups,
            _ => self.opts.parallel_vms,
        };
        let sched = Arc::new(Scheduler::new(
            cap,
            self.opts.parallel_disks,
            self.opts.parallel_fixups,
            self.opts.warm.is_none(),
            plan.vms.len(),
            plan.vms.iter().map(|v| v.disks.len()).sum(),
        ));
        // Largest first, so that the run does not end on one long VM.
        let mut by_size: Vec<usize> = (0..plan.vms.len()).collect();
        by_size.sort_by_key(|&i| {
            std::cmp::Reverse(plan.vms[i].disks.iter().map(|d| d.size_bytes).sum::<u64>())
        });
        // One task lets the VMs in, one after the other; each VM waits for its ticket.
        let (tickets, turns): (Vec<_>, Vec<_>) = (0..plan.vms.len())
            .map(|_| tokio::sync::oneshot::channel())
            .unzip();
        let admitter = async {
            let mut tickets: Vec<_> = tickets.into_iter().map(Some).collect();
            for &i in &by_size {
                if self.interrupt.reason().is_some() {
                    break;
                }
                let ticket = sched
                    .start(i, &plan.vms[i].name, plan.vms[i].disks.len())
                    .await;
                if let Some(Err(ticket)) = tickets[i].take().map(|t| t.send(ticket)) {
                    // The VM stopped waiting (interrupted): its place is free again.
                    drop(ticket);
                }
            }
            std::future::pending::<std::convert::Infallible>().await
        };
        let work = plan
            .vms
            .iter()
            .zip(vms)
            .zip(turns)
            .enumerate()
            .map(|(i, ((vp, vm), turn))| {
                let sched = &sched;
                async move {
                    let ticket = tokio::select! {
                        t = turn => t.ok(),
                        () = self.interrupt.interrupted() => None,
                    };
                    match ticket {
                        Some(ticket) => {
                            let outcome = self.migrate_vm(vm, vp, sched, i).await;
                            drop(ticket);
                            outcome
                        }
                        None => self.not_started(vm, vp),
                    }
                }
            });
        // The run's progress as a whole, every second, for those who listen.
        let ticker = async {
            if self.events.is_none() {
                return std::future::pending::<std::convert::Infallible>().await;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.emit(RunEvent::Fleet(sched.snapshot()));
            }
        };
        let outcomes = tokio::select! {
            outcomes = join_all(work) => outcomes,
            never = ticker => match never {},
            never = admitter => match never {},
        };
        if self.events.is_some() {
            self.emit(RunEvent::Fleet(sched.snapshot()));
        }
        let interrupted_by = self.interrupt.reason();
        if interrupted_by.is_some() {
            // Said now, in case the cleanups below never end (a second signal).
            for (vp, o) in plan.vms.iter().zip(&outcomes).filter(|(_, o)| o.write) {
                let report = o.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let _ = records.try_write(&vp.report, &report);
            }
        }
        // Background cleanups (guards dropped on failures and interruptions) record their
        // outcome in the VMs' reports; what fails without a VM to tell is the run's.
        let orphans: Vec<CleanupRecord> = self
            .cleanups
            .wait_all()
            .await
            .iter()
            .map(|e| {
                tracing::warn!("cleanup failed: {e}");
                CleanupRecord::of(None, None, None, e)
            })
            .collect();
        let mut reports = Vec::new();
        for (vp, o) in plan.vms.iter().zip(outcomes) {
            let mut report = o.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if report.finished_at.is_none() {
                report.finished_at = Some(rfc3339(SystemTime::now()));
                report.seconds = o.started.elapsed().as_secs_f64();
            }
            // Background cleanups may have failed since: a VM with a cleanup error is not
            // completed.
            report.status = final_status(&report);
            if o.write && vp.dir.exists() {
                if let Err(e) = records.write(&vp.report, &report) {
                    tracing::debug!("{}: cannot write the report: {e}", vp.report.display());
                }
            }
            // Released only once the report is final.
            drop(o.locks);
            reports.push(report);
        }
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
                error: r
                    .errors
                    .first()
                    .cloned()
                    .or_else(|| r.cleanup_errors.first().map(|c| c.error.clone())),
            })
            .collect();
        let cleanup_errors: Vec<CleanupRecord> = reports
            .iter()
            .flat_map(|r| r.cleanup_errors.iter().cloned())
            .chain(orphans)
            .collect();
        let path = plan_opts.dir.join(format!("run-{}.json", plan.run_id));
        let mut summary = RunSummary {
            tool_version: TOOL_VERSION.to_string(),
            schema_version: SCHEMA_VERSION,
            run_id: plan.run_id.clone(),
            status: RunStatus::Completed,
            interrupted_by: interrupted_by.clone(),
            output_dir: plan_opts.dir.clone(),
            summary: path.clone(),
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
            records_not_written: Vec::new(),
            shard,
            plan_deviations,
            exit_code: 0,
        };
        summary.records_not_written = records.unwritten();
        summary.settle();
        if let Err(e) = records.write(&path, &summary) {
            tracing::debug!("{}: cannot write the run summary: {e}", path.display());
            // The summary returned says so, though the file cannot.
            summary.records_not_written = records.unwritten();
            summary.settle();
        }
        Ok(summary)
    }

    /// A VM the run never started (interrupted first): nothing of its folder is touched.
    fn not_started(&self, vm: &Vm, vp: &VmPlan) -> VmOutcome {
        let why = format!(
            "not started: the run was interrupted ({}) first",
            self.interrupt.reason().unwrap_or_default()
        );
        let mut report = self.bare_report(vm, vp, VmStatus::Interrupted);
        report
            .errors
            .push(ErrorRecord::new(ErrorKind::Cancelled, why));
        VmOutcome {
            report: Arc::new(Mutex::new(report)),
            write: false,
            started: Instant::now(),
            locks: None,
        }
    }

    /// A finished report of `vm` that did nothing.
    fn bare_report(&self, vm: &Vm, vp: &VmPlan, status: VmStatus) -> VmReport {
        let now = rfc3339(SystemTime::now());
        VmReport {
            tool_version: TOOL_VERSION.to_string(),
            schema_version: SCHEMA_VERSION,
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
            status,
            started_at: now.clone(),
            finished_at: Some(now),
            seconds: 0.0,
            disks: vp.disks.iter().map(pending_disk).collect(),
            domain_xml: None,
            kubevirt_manifest: None,
            vcpus: None,
            memory_mib: None,
            secure_boot: None,
            tpm: None,
            nics: None,
            resources: Vec::new(),
            power: Vec::new(),
            guest: None,
            warnings: Vec::new(),
            errors: Vec::new(),
            cleanup_errors: Vec::new(),
            warm: None,
        }
    }

    /// The VM's two locks: one for the VM itself in `<output.dir>/.locks/` (two runs must
    /// not export, snapshot or revoke the same disks, whatever folders they write to), one
    /// for its folder (two VMs of two runs may map to the same folder). A lock held by
    /// another run is an error naming it; a stale one is taken over with a warning.
    fn lock_vm(
        &self,
        vm: &Vm,
        vp: &VmPlan,
    ) -> std::result::Result<VmLocks, (VmStatus, ErrorRecord)> {
        let run_id = &self.opts.plan.run_id;
        let what = format!("migrating VM {}/{}", vm.resource_group, vm.name);
        let locks_dir = self.opts.plan.dir.join(".locks");
        // Only a lock another run holds makes the VM `locked`; a lock that cannot be
        // written (a read-only or full output directory) fails it.
        let failed = |e: Error, context: &str| {
            let status = if e.kind() == ErrorKind::Conflict {
                VmStatus::Locked
            } else {
                VmStatus::Failed
            };
            (status, ErrorRecord::of(&e).context(context))
        };
        std::fs::create_dir_all(&locks_dir)
            .map_err(|e| Error::io("cannot create the lock folder", e).with_path(&locks_dir))
            .and_then(|()| {
                std::fs::create_dir_all(&vp.dir)
                    .map_err(|e| Error::io("cannot create the VM's folder", e).with_path(&vp.dir))
            })
            .map_err(|e| failed(e, "cannot lock the VM"))?;
        let key = format!(
            "{}-{:016x}.lock",
            safe_name(&vm.name),
            fnv1a(vm.id.to_ascii_lowercase().as_bytes())
        );
        let vm_lock = LockFile::acquire(&locks_dir.join(key), run_id, &what)
            .map_err(|e| failed(e, "skipped, another run is migrating this VM"))?;
        let dir_lock = LockFile::acquire(&vp.dir.join(".hyper2kvm.lock"), run_id, &what)
            .map_err(|e| failed(e, "skipped, another run is writing this VM's folder"))?;
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

    /// [`lock_vm`](Self::lock_vm), waiting up to `lock_wait` for a VM another run holds
    /// (a retried worker while the first still runs): tried again every few seconds, and
    /// said once a minute. The holder's heartbeat makes a dead holder's lock stale, so the
    /// wait ends when it finishes, dies, or the time is up.
    async fn lock_vm_waiting(
        &self,
        vm: &Vm,
        vp: &VmPlan,
    ) -> std::result::Result<VmLocks, (VmStatus, ErrorRecord)> {
        let deadline = Instant::now() + self.opts.lock_wait;
        let mut said: Option<Instant> = None;
        loop {
            match self.lock_vm(vm, vp) {
                Err((VmStatus::Locked, why)) if Instant::now() < deadline => {
                    if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                        self.emit(RunEvent::Step {
                            vm: vm.name.clone(),
                            message: format!(
                                "waiting up to {} s: {}",
                                self.opts.lock_wait.as_secs(),
                                why.message.trim_start_matches("skipped, ")
                            ),
                        });
                        said = Some(Instant::now());
                    }
                    let pause = LOCK_RETRY_EVERY.min(deadline - Instant::now());
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.interrupt.interrupted() => {
                            return Err((VmStatus::Locked, why));
                        }
                    }
                }
                Err((VmStatus::Locked, why)) if !self.opts.lock_wait.is_zero() => {
                    let message = format!(
                        "{} (waited {} s)",
                        why.message,
                        self.opts.lock_wait.as_secs()
                    );
                    return Err((VmStatus::Locked, ErrorRecord { message, ..why }));
                }
                other => return other,
            }
        }
    }

    /// The report of a VM another run holds: nothing of its folder is read or written.
    fn locked_report(&self, vm: &Vm, vp: &VmPlan, status: VmStatus, why: ErrorRecord) -> VmOutcome {
        self.emit(RunEvent::Step {
            vm: vm.name.clone(),
            message: why.message.clone(),
        });
        self.emit(RunEvent::VmFinished {
            vm: vm.name.clone(),
            status,
        });
        let mut report = self.bare_report(vm, vp, status);
        report.errors.push(why);
        VmOutcome {
            report: Arc::new(Mutex::new(report)),
            write: false,
            started: Instant::now(),
            locks: None,
        }
    }

    /// One VM, start to end. Never fails: what goes wrong is in the report.
    async fn migrate_vm(
        &self,
        vm: &Vm,
        vp: &VmPlan,
        sched: &Arc<Scheduler>,
        index: usize,
    ) -> VmOutcome {
        let started = Instant::now();
        // Nothing of the VM is read or written before its locks are held.
        let locks = match self.lock_vm_waiting(vm, vp).await {
            Ok(l) => l,
            Err((status, why)) => return self.locked_report(vm, vp, status, why),
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
        // The bare report, still running, with what an earlier run left to carry over.
        let mut fresh = self.bare_report(vm, vp, VmStatus::Running);
        fresh.finished_at = None;
        // A start an interrupted run still owes carries over, so that a run interrupted
        // again still knows.
        if let Some(p) = previous.as_ref().filter(|_| owed) {
            fresh.power_state_before = p.power_state_before.clone();
            fresh.power = p.power.clone();
        }
        // Snapshots an earlier run created and did not delete (it was killed): reused or
        // deleted below. Also those not confirmed created: a run killed while it waited for
        // the create leaves a snapshot that exists all the same.
        if let Some(p) = previous.as_ref() {
            fresh.resources = p
                .resources
                .iter()
                .filter(|r| r.deleted_at.is_none() && !r.kept)
                .cloned()
                .collect();
        }
        fresh.warnings = locks.warnings.iter().cloned().chain(set_aside).collect();
        // Warm migration's chain goes from report to report (a migration keeps it too: its
        // snapshots are still in the source).
        fresh.warm = previous.as_ref().and_then(|p| p.warm.clone());
        match &self.opts.warm {
            Some(WarmMode::Sync(_)) => fresh.action = "sync".into(),
            Some(WarmMode::Cutover) => fresh.action = format!("cutover ({})", vp.action),
            None => {}
        }
        let report = Arc::new(Mutex::new(fresh));
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
            sched,
            index,
        };
        let mut interrupted = false;
        if let Err(e) = std::fs::create_dir_all(&vp.dir) {
            vm_run.error(ErrorRecord::of(
                &Error::io("cannot create the VM's folder", e).with_path(&vp.dir),
            ));
        } else if let VmAction::Refused { reason } = &vp.action {
            // A refused VM gets a folder too, holding the report that says why.
            vm_run.update(|r| {
                r.status = VmStatus::Refused;
                r.warnings.push(reason.clone());
            });
        } else {
            vm_run.save();
            // Interrupted, the VM's work is dropped where it is: its guards hand their
            // cleanups to the background, and those record what they did in the report.
            let work = async {
                match &self.opts.warm {
                    None => vm_run.migrate().await,
                    Some(WarmMode::Sync(o)) => vm_run.sync(o).await,
                    Some(WarmMode::Cutover) => vm_run.cutover().await,
                }
            };
            interrupted = tokio::select! {
                () = work => false,
                () = self.interrupt.interrupted() => true,
            };
        }
        let status = vm_run.update(|r| {
            if interrupted {
                r.status = VmStatus::Interrupted;
                r.errors.push(ErrorRecord::new(
                    ErrorKind::Cancelled,
                    format!(
                        "interrupted ({}); partial images are kept for the next run",
                        self.interrupt.reason().unwrap_or_default()
                    ),
                ));
            } else {
                r.status = final_status(r);
            }
            r.finished_at = Some(rfc3339(SystemTime::now()));
            r.seconds = started.elapsed().as_secs_f64();
            r.status
        });
        self.emit(RunEvent::VmFinished {
            vm: vm.name.clone(),
            status,
        });
        VmOutcome {
            report,
            write: true,
            started,
            locks: Some(locks),
        }
    }
}

/// How often a run waiting for a VM's lock tries again.
const LOCK_RETRY_EVERY: Duration = Duration::from_secs(2);

/// The locks a VM's migration holds; released when dropped (also when the run is
/// cancelled).
struct VmLocks {
    _held: [LockFile; 2],
    warnings: Vec<String>,
}

/// The error of a run whose selection matched no VM (without `allow_empty`).
fn empty_selection() -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        "the selection matched no VM, so nothing would be migrated; check the selection, or allow an empty run (--allow-empty)",
    )
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
    if matches!(
        r.status,
        VmStatus::Refused | VmStatus::Locked | VmStatus::Interrupted
    ) {
        return r.status;
    }
    let done = r.disks_done();
    if done == r.disks.len() && r.errors.is_empty() && r.cleanup_errors.is_empty() {
        VmStatus::Completed
    } else if done > 0 {
        VmStatus::Partial
    } else {
        VmStatus::Failed
    }
}
