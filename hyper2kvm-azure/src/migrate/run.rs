//! A migration run: for every planned VM, export its disks (directly, or through snapshots,
//! stopping or deallocating it first if the policy says so), convert them into images, run the
//! guest fix-ups on the OS disk, write the libvirt domain and `report.json`; then a summary.
//!
//! * **Concurrency**: VMs run concurrently up to `parallel_vms`; disks, across all VMs, up to
//!   `parallel_disks`; reads, across all disks, up to the [`Limits`] (connections, bandwidth).
//!   One VM's failure is recorded in its report and does not stop the others.
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures_util::future::join_all;
use hyper2kvm_core::journal::journal_path;
use hyper2kvm_core::libvirt::{domain_xml, CpuMode, DomainDisk, DomainSpec, NetworkAttachment};
use hyper2kvm_core::{
    convert, BoxFuture, Cleanups, ConvertOptions, Disk, DiskRole, Limits, PowerState, Vm, VmSource,
};
use tokio::sync::{OnceCell, Semaphore};

use super::plan::{plan, DiskPlan, PlanOptions, VmAction, VmPlan};
use super::report::{
    write_atomic, write_json_atomic, DiskReport, DiskStatus, PowerRecord, ResourceRecord,
    RunSummary, VmReport, VmStatus, VmSummary,
};
use super::time::rfc3339;
use crate::arm::{ArmClient, LroOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::source::AzureSource;

/// What the guest fix-ups of an OS disk produced.
#[derive(Debug, Clone, Default)]
pub struct GuestOutcome {
    /// The fix-up report, as it goes into `report.json`.
    pub report: serde_json::Value,
    /// Not fatal: fix-ups skipped (libguestfs missing), a Windows guest left alone.
    pub warnings: Vec<String>,
    /// Fatal: the image was not fixed and must not be used as is.
    pub error: Option<String>,
}

/// Runs the guest fix-ups on an OS disk image (in place) and reports.
pub type GuestHook = Arc<dyn Fn(PathBuf) -> BoxFuture<'static, GuestOutcome> + Send + Sync>;

/// How a run runs.
#[derive(Clone)]
pub struct RunOptions {
    /// Which VMs and disks, how, and where (see [`plan`]).
    pub plan: PlanOptions,
    /// How each disk is converted; `resume` is always on in a run.
    pub convert: ConvertOptions,
    /// VMs in progress at once.
    pub parallel_vms: usize,
    /// Disks converting at once, across all VMs.
    pub parallel_disks: usize,
    /// Reads in flight and bandwidth, across all disks.
    pub limits: Limits,
    /// Keep the snapshots the run creates instead of deleting them.
    pub keep_snapshots: bool,
    /// Limits of snapshot, power and grant operations.
    pub lro: LroOptions,
    /// The domain's CPU mode.
    pub cpu: CpuMode,
    /// Where the domain's NIC goes.
    pub network: NetworkAttachment,
    /// Guest fix-ups for OS disks, if wanted.
    pub guest: Option<GuestHook>,
}

/// What happens during a run, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run starts: its plan is made.
    RunStarted {
        /// The run id.
        run_id: String,
        /// VMs selected.
        vms: usize,
        /// The output directory.
        dir: PathBuf,
    },
    /// The run starts on a VM.
    VmStarted {
        /// The VM's name.
        vm: String,
        /// What will be done.
        action: String,
    },
    /// A step of a VM: a power operation, snapshots, fix-ups, a disk skipped.
    Step {
        /// The VM's name.
        vm: String,
        /// What happens.
        message: String,
    },
    /// A disk's conversion starts.
    DiskStarted {
        /// The VM's name.
        vm: String,
        /// The disk's name.
        disk: String,
        /// The disk's size.
        size: u64,
    },
    /// Bytes of a disk's written ranges processed so far.
    DiskProgress {
        /// The VM's name.
        vm: String,
        /// The disk's name.
        disk: String,
        /// Bytes done.
        done: u64,
        /// Bytes to do.
        total: u64,
    },
    /// A disk is done, failed, or was already done.
    DiskFinished {
        /// The VM's name.
        vm: String,
        /// The disk's report.
        report: Box<DiskReport>,
    },
    /// A VM is finished.
    VmFinished {
        /// The VM's name.
        vm: String,
        /// How it ended.
        status: VmStatus,
    },
}

/// Receives [`RunEvent`]s; called from the run's tasks, so keep it quick.
pub type EventFn = Arc<dyn Fn(&RunEvent) + Send + Sync>;

/// A migration run over Azure.
pub struct Migration {
    source: AzureSource,
    cleanups: Cleanups,
    opts: RunOptions,
    events: Option<EventFn>,
    sizes: Sizes,
}

impl Migration {
    /// A run reading through `source`; background cleanups go to `cleanups` (the same the
    /// source was made with), which the caller waits for before exiting.
    pub fn new(source: AzureSource, cleanups: Cleanups, opts: RunOptions) -> Self {
        Migration {
            source,
            cleanups,
            opts,
            events: None,
            sizes: Sizes::default(),
        }
    }

    /// Calls `events` with the run's progress.
    pub fn with_events(mut self, events: EventFn) -> Self {
        self.events = Some(events);
        self
    }

    fn emit(&self, event: RunEvent) {
        if let Some(f) = &self.events {
            f(&event);
        }
    }

    fn arm(&self) -> &ArmClient {
        self.source.arm()
    }

    /// Migrates `vms` (as discovered) and returns the summary, also written to
    /// `<output dir>/run-<run id>.json`. Fails only when the run cannot start (a plan error,
    /// an output directory that cannot be made); every VM's own failure is in its report.
    pub async fn run(&self, vms: &[Vm]) -> Result<RunSummary> {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let plan =
            plan(vms, &self.opts.plan).map_err(|e| Error::new(ErrorKind::InvalidArgument, e.0))?;
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
        write_json_atomic(&path, &summary).map_err(|e| {
            Error::new(
                ErrorKind::Status,
                format!("{}: cannot write the run summary", path.display()),
            )
            .with_source(e)
        })?;
        Ok(summary)
    }

    /// One VM, start to end. Never fails: what goes wrong is in the report.
    async fn migrate_vm(&self, vm: &Vm, vp: &VmPlan, disk_slots: &Semaphore) -> VmReport {
        let started = Instant::now();
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
            warnings: set_aside.into_iter().collect(),
            errors: Vec::new(),
        });
        self.emit(RunEvent::VmStarted {
            vm: vm.name.clone(),
            action: vp.action.to_string(),
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
        final_report
    }
}

/// Whether the run that wrote `prev` stopped or deallocated `vm`, which it had found running,
/// to start it again (`restart`), and was interrupted before it did.
fn owes_start(prev: Option<&VmReport>, restart: bool, vm: &Vm) -> bool {
    let Some(prev) = prev else {
        return false;
    };
    let last_ok = prev.power.iter().rev().find(|p| p.ok);
    restart
        && matches!(prev.power_state_before.as_str(), "running" | "starting")
        && matches!(
            vm.power_state,
            PowerState::Deallocated | PowerState::Stopped
        )
        && last_ok.is_some_and(|p| p.action == "deallocate" || p.action == "power_off")
}

fn pending_disk(d: &DiskPlan) -> DiskReport {
    DiskReport {
        name: d.name.clone(),
        id: d.id.clone(),
        role: d.role.to_string(),
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
        sha256: None,
        seconds: 0.0,
        error: None,
    }
}

fn final_status(r: &VmReport) -> VmStatus {
    if r.status == VmStatus::Refused {
        return VmStatus::Refused;
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

/// One VM's run: the pieces every step needs.
struct VmRun<'a> {
    m: &'a Migration,
    vm: &'a Vm,
    vp: &'a VmPlan,
    report: &'a Mutex<VmReport>,
    previous: Option<&'a VmReport>,
}

impl VmRun<'_> {
    fn update<T>(&self, f: impl FnOnce(&mut VmReport) -> T) -> T {
        f(&mut self.report.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes the report as it stands (best effort: the final write reports failures).
    fn save(&self) {
        let snapshot = self.update(|r| r.clone());
        let _ = write_json_atomic(&self.vp.report, &snapshot);
    }

    fn step(&self, message: String) {
        self.m.emit(RunEvent::Step {
            vm: self.vm.name.clone(),
            message,
        });
    }

    fn error(&self, message: String) {
        self.update(|r| r.errors.push(message));
    }

    fn warn(&self, message: String) {
        self.update(|r| r.warnings.push(message));
    }

    /// Whether an earlier run stopped or deallocated the VM and was interrupted before it
    /// started it again.
    fn owed_start(&self) -> bool {
        owes_start(self.previous, self.m.opts.plan.restart, self.vm)
    }

    /// Where disk `i` is converted to: the final name, or `.pre-fixup` for an OS disk whose
    /// fix-ups still have to run.
    fn staging(&self, i: usize) -> PathBuf {
        let d = &self.vp.disks[i];
        if self.m.opts.guest.is_some() && d.lun.is_none() {
            let mut p = d.output.as_os_str().to_owned();
            p.push(".pre-fixup");
            PathBuf::from(p)
        } else {
            d.output.clone()
        }
    }

    async fn migrate(&self, disk_slots: &Semaphore) {
        // 1. What earlier runs finished.
        let mut pending = Vec::new();
        let mut converted = Vec::new(); // staged, not yet fixed
        for (i, d) in self.vp.disks.iter().enumerate() {
            if d.output.exists() {
                if let Some(other) = self.previous.and_then(|p| {
                    p.disks
                        .iter()
                        .find(|x| x.output == d.output && !x.id.eq_ignore_ascii_case(&d.id))
                }) {
                    // Never overwrite, never pass off another disk's image as this one's.
                    self.fail_disks(
                        &[i],
                        &format!(
                            "{}: is the image of another disk ({}); move it away to migrate {}",
                            d.output.display(),
                            other.id,
                            d.id
                        ),
                    );
                    continue;
                }
                let unfixed =
                    self.staging(i) != d.output && self.previous.is_some_and(|p| p.guest.is_none());
                if unfixed && std::fs::rename(&d.output, self.staging(i)).is_ok() {
                    // Converted by a run without fix-ups; this one has them: fix it now.
                    converted.push(i);
                    continue;
                }
                self.already_done(i).await;
            } else if self.staging(i) != d.output && self.staging(i).exists() {
                converted.push(i);
            } else {
                pending.push(i);
            }
        }
        // 2. Export and convert what is missing.
        let mut power_back: Option<StartGuard> = None;
        let mut snapshots: Vec<SnapshotGuard> = Vec::new();
        if !pending.is_empty() {
            let exported = self
                .export_and_convert(&pending, &mut power_back, &mut snapshots, disk_slots)
                .await;
            converted.extend(exported);
        }
        // 3. Snapshots: deleted (unless kept), also those of killed runs we did not reuse.
        self.cleanup_snapshots(snapshots).await;
        // 4. A deallocated or stopped VM is started again if asked, also one an interrupted
        // run left deallocated or stopped.
        if power_back.is_none() && self.owed_start() {
            self.warn("an earlier run stopped or deallocated this VM and was interrupted before starting it again; starting it now".into());
            power_back = Some(StartGuard::new(
                self.m.arm(),
                self.vm,
                &self.m.opts.lro,
                &self.m.cleanups,
            ));
        }
        if let Some(guard) = power_back {
            self.step("starting the VM again".into());
            let at = rfc3339(SystemTime::now());
            let outcome = guard.start().await;
            self.record_power("start", at, &outcome);
        }
        // 5. Guest fix-ups on the OS disk, then its final name.
        for i in converted {
            self.fix_and_finish(i).await;
        }
        // 6. The domain, once every disk is an image.
        let all_done = self.update(|r| r.disks_done() == r.disks.len());
        if all_done {
            self.write_domain().await;
        }
    }

    /// Export (power operation and snapshots first, as the action says) and convert the
    /// `pending` disks; returns those converted to a staging name.
    async fn export_and_convert(
        &self,
        pending: &[usize],
        power_back: &mut Option<StartGuard>,
        snapshots: &mut Vec<SnapshotGuard>,
        disk_slots: &Semaphore,
    ) -> Vec<usize> {
        let arm = self.m.arm();
        let lro = &self.m.opts.lro;
        let (power, restart, through_snapshots) = match &self.vp.action {
            VmAction::ExportDisks => (None, false, false),
            VmAction::Snapshot => (None, false, true),
            VmAction::DeallocateThenExport { restart } => (Some("deallocate"), *restart, false),
            VmAction::StopThenSnapshot { restart } => (Some("power_off"), *restart, true),
            VmAction::Refused { .. } => return Vec::new(),
        };
        if let Some(action) = power {
            let guard = restart.then(|| StartGuard::new(arm, self.vm, lro, &self.m.cleanups));
            self.step(format!("{action} (waiting for it)"));
            let at = rfc3339(SystemTime::now());
            let outcome = if action == "deallocate" {
                arm.deallocate(&self.vm.id, lro).await
            } else {
                arm.power_off(&self.vm.id, lro).await
            };
            self.record_power(action, at, &outcome);
            *power_back = guard;
            if let Err(e) = outcome {
                self.fail_disks(pending, &format!("{action} failed: {e}"));
                return Vec::new();
            }
        }
        let mut sources: HashMap<usize, Disk> = HashMap::new();
        if through_snapshots {
            match self.take_snapshots(pending, snapshots).await {
                Ok(s) => sources = s,
                Err(e) => {
                    self.fail_disks(pending, &e);
                    return Vec::new();
                }
            }
            if power == Some("power_off") {
                if let Some(guard) = power_back.take() {
                    self.step("snapshots taken; starting the VM again".into());
                    let at = rfc3339(SystemTime::now());
                    let outcome = guard.start().await;
                    self.record_power("start", at, &outcome);
                }
            }
        } else {
            for &i in pending {
                let d = &self.vp.disks[i];
                sources.insert(
                    i,
                    Disk {
                        id: d.id.clone(),
                        name: d.name.clone(),
                        role: role_of(d),
                        size_bytes: d.size_bytes,
                    },
                );
            }
        }
        let work = pending.iter().map(|&i| {
            let source = sources.remove(&i).expect("a source per pending disk");
            async move {
                let ok = self.convert_disk(i, source, disk_slots).await;
                ok.then_some(i)
            }
        });
        join_all(work).await.into_iter().flatten().collect()
    }

    /// Snapshots of every pending disk, taken at once; snapshots a killed run left are reused
    /// (so its partial images continue from the same moment). Returns what to export.
    async fn take_snapshots(
        &self,
        pending: &[usize],
        guards: &mut Vec<SnapshotGuard>,
    ) -> std::result::Result<HashMap<usize, Disk>, String> {
        let arm = self.m.arm();
        let lro = &self.m.opts.lro;
        let run_id = &self.m.opts.plan.run_id;
        let mut sources = HashMap::new();
        let mut to_create = Vec::new();
        // Snapshots a killed run left are reused only where that run got somewhere with this
        // VM (a disk done, converted, or partly written): then the rest must come from the
        // same moment. Otherwise they are deleted and new ones taken, fresher.
        let progress = pending.len() < self.vp.disks.len()
            || pending
                .iter()
                .any(|&i| journal_path(&self.staging(i)).exists());
        for &i in pending {
            let d = &self.vp.disks[i];
            let leftover = self.update(|r| {
                r.resources
                    .iter()
                    .find(|x| {
                        x.kind == "snapshot"
                            && x.source.eq_ignore_ascii_case(&d.id)
                            && x.deleted_at.is_none()
                    })
                    .map(|x| x.id.clone())
            });
            let reusable = match leftover {
                Some(id) if progress => {
                    matches!(arm.snapshot_ready(&id).await, Ok(true)).then_some(id)
                }
                _ => None,
            };
            match reusable {
                Some(id) => {
                    self.step(format!(
                        "reusing snapshot {} of an earlier run",
                        last_segment(&id)
                    ));
                    // It exists: a record a killed run left unconfirmed is confirmed now.
                    self.update(|r| {
                        if let Some(x) = r.resources.iter_mut().find(|x| x.id == id) {
                            x.created = true;
                        }
                    });
                    guards.push(SnapshotGuard::new(arm, &id, lro, &self.m.cleanups));
                    sources.insert(i, snapshot_disk(d, &id));
                }
                None => to_create.push(i),
            }
        }
        // Disks done or converted by an earlier run are not pending.
        if !to_create.is_empty() && (!sources.is_empty() || pending.len() < self.vp.disks.len()) {
            self.warn("this VM's disks come from snapshots taken at different times (an earlier run finished some of them); disks that must be consistent with each other should be migrated again together".into());
        }
        if to_create.is_empty() {
            return Ok(sources);
        }
        // Record every snapshot before creating any, so a killed run leaves a trace.
        let mut planned = Vec::new();
        for &i in &to_create {
            let d = &self.vp.disks[i];
            let name = d
                .snapshot
                .clone()
                .unwrap_or_else(|| super::plan::snapshot_name(&d.name, run_id));
            let id = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/snapshots/{}",
                self.vm.subscription, self.vm.resource_group, name
            );
            self.update(|r| {
                r.resources.push(ResourceRecord {
                    kind: "snapshot".into(),
                    id: id.clone(),
                    source: d.id.clone(),
                    run_id: run_id.clone(),
                    requested_at: rfc3339(SystemTime::now()),
                    created: false,
                    deleted_at: None,
                    kept: false,
                })
            });
            planned.push((i, id));
        }
        self.save();
        self.step(format!("creating {} snapshot(s)", planned.len()));
        let mut tags = std::collections::BTreeMap::new();
        tags.insert("created-by".to_string(), "hyper2kvm".to_string());
        tags.insert("hyper2kvm-run".to_string(), run_id.clone());
        tags.insert("hyper2kvm-vm".to_string(), self.vm.name.clone());
        let creates = planned.iter().map(|(i, id)| {
            // Armed before the request: a create that times out may still have happened.
            let guard = SnapshotGuard::new(arm, id, lro, &self.m.cleanups);
            let source = &self.vp.disks[*i].id;
            let tags = &tags;
            async move {
                let outcome = arm
                    .create_snapshot(source, id, &self.vm.location, tags, lro)
                    .await;
                (guard, outcome)
            }
        });
        let results = join_all(creates).await;
        let mut failed = Vec::new();
        for ((i, id), (guard, outcome)) in planned.iter().zip(results) {
            guards.push(guard);
            match outcome {
                Ok(()) => {
                    self.update(|r| {
                        if let Some(x) = r.resources.iter_mut().find(|x| &x.id == id) {
                            x.created = true;
                        }
                    });
                    sources.insert(*i, snapshot_disk(&self.vp.disks[*i], id));
                }
                Err(e) => failed.push(format!("snapshot {}: {e}", last_segment(id))),
            }
        }
        self.save();
        if !failed.is_empty() {
            return Err(failed.join("; "));
        }
        Ok(sources)
    }

    /// Converts disk `i` from `source`; true when its image is complete (at its staging path).
    async fn convert_disk(&self, i: usize, source: Disk, disk_slots: &Semaphore) -> bool {
        let slot = disk_slots.acquire().await.expect("never closed");
        let d = &self.vp.disks[i];
        let started = Instant::now();
        let vm_name = self.vm.name.clone();
        self.m.emit(RunEvent::DiskStarted {
            vm: vm_name.clone(),
            disk: d.name.clone(),
            size: d.size_bytes,
        });
        let exported_from = source.id.clone();
        let outcome = async {
            let exported = self.m.source.export_disk(self.vm, &source).await?;
            let reader = self.m.opts.limits.wrap(exported.reader().clone());
            let progress: Option<hyper2kvm_core::ProgressFn> = self.m.events.clone().map(|f| {
                let (vm, disk) = (vm_name.clone(), d.name.clone());
                Arc::new(move |p: hyper2kvm_core::Progress| {
                    f(&RunEvent::DiskProgress {
                        vm: vm.clone(),
                        disk: disk.clone(),
                        done: p.done,
                        total: p.total,
                    })
                }) as hyper2kvm_core::ProgressFn
            });
            let opts = ConvertOptions {
                resume: true,
                ..self.m.opts.convert.clone()
            };
            let stats = convert(reader, &self.staging(i), &opts, progress).await;
            // Revoke now, whatever happened; a failed revoke is an error of its own.
            let revoked = exported.close().await;
            let stats = stats?;
            if let Err(e) = revoked {
                self.error(format!("{}: revoking access failed: {e}", d.name));
            }
            Ok::<_, hyper2kvm_core::Error>(stats)
        }
        .await;
        // The download is over: the checksum below does not hold up other disks.
        drop(slot);
        let ok = outcome.is_ok();
        let disk_report = self.update(|r| {
            let dr = &mut r.disks[i];
            dr.exported_from = Some(exported_from);
            dr.seconds = started.elapsed().as_secs_f64();
            match outcome {
                Ok(s) => {
                    dr.status = DiskStatus::Completed;
                    dr.bytes_downloaded = s.bytes_read;
                    dr.bytes_skipped = s.virtual_size.saturating_sub(s.bytes_read);
                    dr.bytes_resumed = s.resumed_bytes;
                    dr.bytes_zero = s.zero_bytes;
                    dr.image_bytes = s.bytes_written;
                }
                Err(e) => {
                    dr.status = DiskStatus::Failed;
                    dr.error = Some(e.to_string());
                    r.errors.push(format!("{}: {e}", d.name));
                }
            }
            r.disks[i].clone()
        });
        if ok {
            // The checksum is taken once the image has its final content (after fix-ups).
            if self.staging(i) == d.output {
                self.checksum(i).await;
            }
        } else {
            self.m.emit(RunEvent::DiskFinished {
                vm: self.vm.name.clone(),
                report: Box::new(disk_report),
            });
        }
        self.save();
        ok
    }

    /// Disk `i`'s image exists from an earlier run: record it, with its checksum.
    async fn already_done(&self, i: usize) {
        let d = &self.vp.disks[i];
        let earlier = self.previous.and_then(|p| {
            p.disks
                .iter()
                .find(|x| {
                    x.output == d.output && x.id.eq_ignore_ascii_case(&d.id) && x.sha256.is_some()
                })
                .cloned()
        });
        self.step(format!("{}: already converted by an earlier run", d.name));
        let size = std::fs::metadata(&d.output).map(|m| m.len()).unwrap_or(0);
        self.update(|r| {
            let dr = &mut r.disks[i];
            dr.status = DiskStatus::AlreadyDone;
            dr.bytes_skipped = d.size_bytes;
            dr.image_bytes = size;
            if let Some(e) = &earlier {
                dr.exported_from = e.exported_from.clone();
                // Trusted only if the file is the one that was measured.
                if e.image_bytes == size {
                    dr.sha256 = e.sha256.clone();
                }
            }
        });
        if self.update(|r| r.disks[i].sha256.is_none()) {
            self.checksum(i).await;
        } else {
            let report = self.update(|r| r.disks[i].clone());
            self.m.emit(RunEvent::DiskFinished {
                vm: self.vm.name.clone(),
                report: Box::new(report),
            });
        }
        if let Some(guest) = self.previous.and_then(|p| p.guest.clone()) {
            self.update(|r| r.guest = Some(guest));
        }
    }

    /// SHA-256 of disk `i`'s final image, into the report; then the disk is finished.
    async fn checksum(&self, i: usize) {
        let path = self.vp.disks[i].output.clone();
        let result = tokio::task::spawn_blocking(move || sha256_file(&path)).await;
        self.update(|r| match result {
            Ok(Ok((hex, len))) => {
                r.disks[i].sha256 = Some(hex);
                r.disks[i].image_bytes = len;
            }
            Ok(Err(e)) => r.warnings.push(format!(
                "{}: cannot compute its checksum: {e}",
                r.disks[i].output.display()
            )),
            Err(e) => r.warnings.push(format!("checksum task failed: {e}")),
        });
        let report = self.update(|r| r.disks[i].clone());
        self.m.emit(RunEvent::DiskFinished {
            vm: self.vm.name.clone(),
            report: Box::new(report),
        });
    }

    /// Fix-ups on the staged OS disk `i`, then its final name and checksum. Data disks and
    /// runs without fix-ups have nothing to do here.
    async fn fix_and_finish(&self, i: usize) {
        let staged = self.staging(i);
        let d = &self.vp.disks[i];
        if staged == d.output {
            return;
        }
        let Some(hook) = self.m.opts.guest.clone() else {
            return;
        };
        self.step(format!("{}: guest fix-ups", d.name));
        let outcome = hook(staged.clone()).await;
        for warning in &outcome.warnings {
            self.step(format!("{}: {warning}", d.name));
        }
        self.update(|r| {
            r.guest = Some(outcome.report.clone());
            r.warnings.extend(outcome.warnings.iter().cloned());
        });
        if let Some(e) = outcome.error {
            self.update(|r| {
                r.disks[i].status = DiskStatus::Failed;
                r.disks[i].error = Some(format!("guest fix-ups: {e}"));
                r.errors.push(format!(
                    "{}: guest fix-ups failed, the converted image is kept as {} and a new run retries them: {e}",
                    d.name,
                    staged.display()
                ));
            });
            return;
        }
        if let Err(e) = std::fs::rename(&staged, &d.output) {
            self.update(|r| {
                r.disks[i].status = DiskStatus::Failed;
                r.errors.push(format!(
                    "{}: cannot rename to its final name: {e}",
                    staged.display()
                ));
            });
            return;
        }
        self.update(|r| {
            if r.disks[i].status == DiskStatus::Pending {
                // Converted by an earlier run, fixed by this one.
                r.disks[i].status = DiskStatus::AlreadyDone;
                r.disks[i].bytes_skipped = d.size_bytes;
            }
        });
        self.checksum(i).await;
        self.save();
    }

    /// Deletes the run's snapshots (and those of killed runs), or records them as kept.
    async fn cleanup_snapshots(&self, mut guards: Vec<SnapshotGuard>) {
        // Snapshots of killed runs that were not reused: gone now too.
        let leftovers: Vec<String> = self.update(|r| {
            r.resources
                .iter()
                .filter(|x| x.deleted_at.is_none() && !guards.iter().any(|g| g.id == x.id))
                .map(|x| x.id.clone())
                .collect()
        });
        for id in leftovers {
            guards.push(SnapshotGuard::new(
                self.m.arm(),
                &id,
                &self.m.opts.lro,
                &self.m.cleanups,
            ));
        }
        if guards.is_empty() {
            return;
        }
        if self.m.opts.keep_snapshots {
            for g in guards {
                let id = g.keep();
                self.update(|r| {
                    if let Some(x) = r.resources.iter_mut().find(|x| x.id == id) {
                        x.kept = x.created;
                    }
                });
            }
            self.save();
            return;
        }
        self.step(format!("deleting {} snapshot(s)", guards.len()));
        let deletes = guards.into_iter().map(|g| async move {
            let id = g.id.clone();
            (id, g.delete().await)
        });
        for (id, outcome) in join_all(deletes).await {
            match outcome {
                Ok(()) => self.update(|r| {
                    if let Some(x) = r.resources.iter_mut().find(|x| x.id == id) {
                        x.deleted_at = Some(rfc3339(SystemTime::now()));
                    }
                }),
                Err(e) => self.error(format!(
                    "snapshot {id} was not deleted, delete it by hand: {e}"
                )),
            }
        }
        self.save();
    }

    fn record_power(&self, action: &str, at: String, outcome: &Result<()>) {
        self.update(|r| {
            r.power.push(PowerRecord {
                action: action.to_string(),
                at,
                ok: outcome.is_ok(),
            });
            if let Err(e) = outcome {
                r.errors.push(format!("{action}: {e}"));
            }
        });
        self.save();
    }

    fn fail_disks(&self, disks: &[usize], why: &str) {
        self.update(|r| {
            for &i in disks {
                r.disks[i].status = DiskStatus::Failed;
                r.disks[i].error = Some(why.to_string());
            }
            if !r.errors.iter().any(|e| e.contains(why)) {
                r.errors.push(why.to_string());
            }
        });
    }

    /// The libvirt domain: sizes from the VM size, disks in boot order.
    async fn write_domain(&self) {
        let disks: Vec<&DiskPlan> = self.vp.disks.iter().collect();
        if !disks.iter().any(|d| d.lun.is_none()) {
            self.warn(
                "no OS disk was migrated (azure.disks: data), so no domain XML was written".into(),
            );
            return;
        }
        let (vcpus, memory_mib) = match self.m.sizes.lookup(self.m.arm(), self.vm).await {
            Ok(s) => s,
            Err(e) => {
                self.warn(format!(
                    "VM size {} not found ({e}); the domain gets 2 vCPUs and 4096 MiB, adjust it",
                    self.vm.vm_size
                ));
                (2, 4096)
            }
        };
        let mut domain_disks = Vec::new();
        for d in &disks {
            let path = std::path::absolute(&d.output).unwrap_or_else(|_| d.output.clone());
            domain_disks.push(DomainDisk {
                path,
                format: self.m.opts.plan.format,
            });
        }
        let spec = DomainSpec {
            name: self.vm.name.clone(),
            description: format!(
                "Migrated from Azure by hyper2kvm (run {}): {} ({}, {})",
                self.m.opts.plan.run_id, self.vm.id, self.vm.vm_size, self.vm.location
            ),
            vcpus,
            memory_mib,
            firmware: self.vm.firmware,
            os_type: self.vm.os_type,
            cpu: self.m.opts.cpu.clone(),
            disks: domain_disks,
            network: self.m.opts.network.clone(),
        };
        let xml = domain_xml(&spec);
        match write_atomic(&self.vp.domain_xml, xml.as_bytes()) {
            Ok(()) => self.update(|r| {
                r.domain_xml = Some(self.vp.domain_xml.clone());
                r.vcpus = Some(vcpus);
                r.memory_mib = Some(memory_mib);
            }),
            Err(e) => self.error(format!(
                "{}: cannot write: {e}",
                self.vp.domain_xml.display()
            )),
        }
    }
}

fn role_of(d: &DiskPlan) -> DiskRole {
    match d.lun {
        None => DiskRole::Os,
        Some(lun) => DiskRole::Data { lun },
    }
}

/// The snapshot `id` of disk `d`, as something to export.
fn snapshot_disk(d: &DiskPlan, id: &str) -> Disk {
    Disk {
        id: id.to_string(),
        name: last_segment(id).to_string(),
        role: role_of(d),
        size_bytes: d.size_bytes,
    }
}

fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// SHA-256 of a file, hex, and its length.
fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let digest = hasher.finalize();
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, len))
}

/// VM sizes, looked up once per subscription and location.
#[derive(Default)]
struct Sizes {
    cells: Mutex<HashMap<String, Arc<SizeCell>>>,
}

type SizeCell = OnceCell<HashMap<String, (u32, u64)>>;

impl Sizes {
    async fn lookup(&self, arm: &ArmClient, vm: &Vm) -> std::result::Result<(u32, u64), String> {
        let key = format!("{}/{}", vm.subscription, vm.location).to_ascii_lowercase();
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        // A failed list is not kept: the next VM of the location asks again.
        let sizes = cell
            .get_or_try_init(|| async {
                arm.vm_sizes(&vm.subscription, &vm.location)
                    .await
                    .map(|list| {
                        list.into_iter()
                            .filter_map(|s| {
                                Some((
                                    s.name.to_ascii_lowercase(),
                                    (s.number_of_cores?, s.memory_in_mb?),
                                ))
                            })
                            .collect::<HashMap<_, _>>()
                    })
                    .map_err(|e| e.to_string())
            })
            .await?;
        sizes
            .get(&vm.vm_size.to_ascii_lowercase())
            .copied()
            .ok_or_else(|| format!("not in the sizes of {}", vm.location))
    }
}

/// Deletes a snapshot (revoking any grant on it first: Azure refuses to delete a snapshot
/// being exported) in the background if dropped while armed.
struct SnapshotGuard {
    arm: ArmClient,
    id: String,
    lro: LroOptions,
    cleanups: Cleanups,
    armed: bool,
}

impl SnapshotGuard {
    fn new(arm: &ArmClient, id: &str, lro: &LroOptions, cleanups: &Cleanups) -> Self {
        SnapshotGuard {
            arm: arm.clone(),
            id: id.to_string(),
            lro: lro.clone(),
            cleanups: cleanups.clone(),
            armed: true,
        }
    }

    fn keep(mut self) -> String {
        self.armed = false;
        self.id.clone()
    }

    async fn delete(mut self) -> Result<()> {
        let outcome = delete_snapshot(self.arm.clone(), self.id.clone(), self.lro.clone()).await;
        // Disarmed only now: dropped mid-way, the guard still deletes in the background.
        self.armed = false;
        outcome
    }
}

async fn delete_snapshot(arm: ArmClient, id: String, lro: LroOptions) -> Result<()> {
    match arm.end_get_access(&id, &lro).await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    arm.delete_snapshot(&id, &lro).await
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        if self.armed {
            let (arm, id, lro) = (self.arm.clone(), self.id.clone(), self.lro.clone());
            self.cleanups.spawn(Box::pin(async move {
                delete_snapshot(arm, id, lro)
                    .await
                    .map_err(crate::blob::reader::to_core)
            }));
        }
    }
}

/// Starts a VM the run stopped or deallocated, in the background if dropped while armed
/// (also while the start itself was under way).
struct StartGuard {
    arm: ArmClient,
    vm_id: String,
    /// The VM's disks: their grants are revoked first (a disk with an active SAS keeps the VM
    /// from starting, and a failed or cancelled export may still be revoking in the
    /// background).
    disks: Vec<String>,
    lro: LroOptions,
    cleanups: Cleanups,
    armed: bool,
}

impl StartGuard {
    fn new(arm: &ArmClient, vm: &Vm, lro: &LroOptions, cleanups: &Cleanups) -> Self {
        StartGuard {
            arm: arm.clone(),
            vm_id: vm.id.clone(),
            disks: vm.disks.iter().map(|d| d.id.clone()).collect(),
            lro: lro.clone(),
            cleanups: cleanups.clone(),
            armed: true,
        }
    }

    async fn start(mut self) -> Result<()> {
        let outcome = start_vm(&self.arm, &self.vm_id, &self.disks, &self.lro).await;
        // Disarmed only now: dropped mid-way, the guard still starts the VM.
        self.armed = false;
        outcome
    }
}

/// Revokes any grant on `disks`, then starts the VM; a `409 Conflict` (a power operation
/// still finishing, say one a Ctrl-C interrupted) is retried for about a minute.
async fn start_vm(arm: &ArmClient, vm_id: &str, disks: &[String], lro: &LroOptions) -> Result<()> {
    for disk in disks {
        match arm.end_get_access(disk, lro).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut attempts = 0;
    loop {
        match arm.start_vm(vm_id, lro).await {
            Err(e) if e.status() == Some(409) && attempts < 12 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            outcome => return outcome,
        }
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            let (arm, id, lro) = (self.arm.clone(), self.vm_id.clone(), self.lro.clone());
            let disks = std::mem::take(&mut self.disks);
            self.cleanups.spawn(Box::pin(async move {
                start_vm(&arm, &id, &disks, &lro)
                    .await
                    .map_err(crate::blob::reader::to_core)
            }));
        }
    }
}
