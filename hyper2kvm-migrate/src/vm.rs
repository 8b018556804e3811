//! One VM's run, step by step: what earlier runs finished, the power operation and the
//! snapshots the action needs, export and conversion of each disk, snapshot cleanup, the
//! start the VM is owed, guest fix-ups, checksums, and (in [`crate::domain`]) the domain.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::future::join_all;
use hyper2kvm_core::journal::journal_path;
use hyper2kvm_core::ranges::align_and_merge;
use hyper2kvm_core::{
    convert, AlignedBuf, BoxFuture, ConvertOptions, Disk, DiskReader, DiskRole, ErrorKind,
    OutputFormat, Vm,
};

use crate::checksum::sha256_file;
use crate::guards::{record_cleanup_failure, CopyGuard, SharedReport, StartGuard};
use crate::options::RunEvent;
use crate::plan::{snapshot_name, DiskPlan, VmAction, VmPlan};
use crate::report::{
    CleanupAction, DiskStatus, ErrorRecord, PowerAction, PowerRecord, ResourceKind, ResourceRecord,
    VmReport,
};
use crate::run::{owes_start, Migration};
use crate::sched::Scheduler;
use crate::time::rfc3339;

/// One VM's run: the pieces every step needs.
pub(crate) struct VmRun<'a> {
    pub(crate) m: &'a Migration,
    pub(crate) vm: &'a Vm,
    pub(crate) vp: &'a VmPlan,
    pub(crate) report: &'a SharedReport,
    pub(crate) previous: Option<&'a VmReport>,
    /// The run's scheduler, and this VM's place in it (its index in the plan).
    pub(crate) sched: &'a Arc<Scheduler>,
    pub(crate) index: usize,
}

impl VmRun<'_> {
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut VmReport) -> T) -> T {
        f(&mut self.report.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes the report as it stands (best effort: the final write reports failures). Never
    /// releases the records' reserve: other disks may still be converting.
    pub(crate) fn save(&self) {
        let snapshot = self.update(|r| r.clone());
        if let Err(e) = self.m.records().save(&self.vp.report, &snapshot) {
            tracing::debug!("{}: cannot write the report: {e}", self.vp.report.display());
        }
    }

    pub(crate) fn step(&self, message: String) {
        self.sched.phase(self.index, &message);
        self.m.emit(RunEvent::Step {
            vm: self.vm.name.clone(),
            message,
        });
    }

    pub(crate) fn error(&self, record: ErrorRecord) {
        self.update(|r| r.errors.push(record));
    }

    pub(crate) fn warn(&self, message: String) {
        self.update(|r| r.warnings.push(message));
    }

    /// Whether an earlier run stopped or deallocated the VM and was interrupted before it
    /// started it again.
    pub(crate) fn owed_start(&self) -> bool {
        owes_start(self.previous, self.m.opts.plan.restart, self.vm)
    }

    /// Where disk `i` is converted to: the final name, or `.pre-fixup` for an OS disk whose
    /// fix-ups still have to run.
    pub(crate) fn staging(&self, i: usize) -> PathBuf {
        let d = &self.vp.disks[i];
        if self.m.opts.guest.is_some() && d.lun.is_none() {
            let mut p = d.output.as_os_str().to_owned();
            p.push(".pre-fixup");
            PathBuf::from(p)
        } else {
            d.output.clone()
        }
    }

    pub(crate) async fn migrate(&self) {
        // 1. What earlier runs finished.
        let mut pending = Vec::new();
        let mut converted = Vec::new(); // staged, not yet fixed
        for (i, d) in self.vp.disks.iter().enumerate() {
            // Whatever is under the final name (a dangling symlink too) must prove itself.
            if std::fs::symlink_metadata(&d.output).is_ok() {
                if let Some(other) = self.previous.and_then(|p| {
                    p.disks
                        .iter()
                        .find(|x| x.output == d.output && !x.id.eq_ignore_ascii_case(&d.id))
                }) {
                    // Never overwrite, never pass off another disk's image as this one's.
                    self.fail_disks(
                        &[i],
                        ErrorRecord::new(
                            ErrorKind::InvalidArgument,
                            format!(
                                "{}: is the image of another disk ({}); move it away to migrate {}",
                                d.output.display(),
                                other.id,
                                d.id
                            ),
                        ),
                    );
                    continue;
                }
                if let Err(why) = self.proven_done(i).await {
                    // Not proven complete: moved aside (never deleted: it may be someone's
                    // data) and converted again.
                    let aside = suspect_path(&d.output);
                    match std::fs::rename(&d.output, &aside) {
                        Ok(()) => {
                            self.warn(format!(
                                "{}: {why}; it was moved to {} and the disk is converted again",
                                d.output.display(),
                                aside.display()
                            ));
                            self.update(|r| r.disks[i].set_aside = Some(aside.clone()));
                            pending.push(i);
                        }
                        Err(e) => self.fail_disks(
                            &[i],
                            ErrorRecord::of(&hyper2kvm_core::Error::io(
                                format!(
                                    "{why}, and it cannot be moved aside; move it away to migrate {}",
                                    d.id
                                ),
                                e,
                            ).with_path(&d.output)),
                        ),
                    }
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
        let mut snapshots: Vec<CopyGuard> = Vec::new();
        if !pending.is_empty() {
            let exported = self
                .export_and_convert(&pending, &mut power_back, &mut snapshots)
                .await;
            converted.extend(exported);
        }
        // Whatever became of them, no disk of this VM is read any more.
        for i in 0..self.vp.disks.len() {
            self.sched.over(self.index, i);
        }
        // 3. Snapshots: deleted (unless kept), also those of killed runs we did not reuse.
        self.cleanup_snapshots(snapshots).await;
        // 4. A deallocated or stopped VM is started again if asked, also one an interrupted
        // run left deallocated or stopped.
        if power_back.is_none() && self.owed_start() {
            match &self.m.source.power {
                Some(power) => {
                    self.warn("an earlier run stopped or deallocated this VM and was interrupted before starting it again; starting it now".into());
                    power_back = Some(StartGuard::new(power, self.vm, &self.m.cleanups, self.report));
                }
                None => self.warn("an earlier run stopped or deallocated this VM and was interrupted before starting it again; this source cannot start it: start it by hand".into()),
            }
        }
        if let Some(guard) = power_back {
            self.step("starting the VM again".into());
            // Recorded by the guard (power, and cleanup_errors if it fails).
            let _ = guard.start().await;
            self.save();
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
        snapshots: &mut Vec<CopyGuard>,
    ) -> Vec<usize> {
        let (power, restart, through_snapshots) = match &self.vp.action {
            VmAction::ExportDisks => (None, false, false),
            VmAction::Snapshot => (None, false, true),
            VmAction::DeallocateThenExport { restart } => {
                (Some(PowerAction::Deallocate), *restart, false)
            }
            VmAction::StopThenSnapshot { restart } => (Some(PowerAction::PowerOff), *restart, true),
            VmAction::Refused { .. } => return Vec::new(),
        };
        let platform = self.m.source.vms.platform();
        if power.is_some() && self.m.source.power.is_none() {
            self.fail_disks(pending, ErrorRecord::new(ErrorKind::Unsupported, format!("the VM is {}, and this source ({platform}) cannot stop or deallocate VMs: stop it by hand, or choose running_vm: snapshot or refuse", self.vm.power_state)));
            return Vec::new();
        }
        if through_snapshots && self.m.source.copies.is_none() {
            self.fail_disks(pending, ErrorRecord::new(ErrorKind::Unsupported, format!("the VM is {}, and this source ({platform}) cannot take snapshots: deallocate it first, or choose running_vm: deallocate or refuse", self.vm.power_state)));
            return Vec::new();
        }
        if let (Some(action), Some(control)) = (power, &self.m.source.power) {
            let guard =
                restart.then(|| StartGuard::new(control, self.vm, &self.m.cleanups, self.report));
            let outcome = self.power_off(control.as_ref(), action).await;
            *power_back = guard;
            if let Err(e) = outcome {
                self.fail_disks(pending, ErrorRecord::of(&e).context(action.as_str()));
                return Vec::new();
            }
        }
        let mut sources: HashMap<usize, Disk> = HashMap::new();
        if through_snapshots {
            match self.take_snapshots(pending, snapshots).await {
                Ok(s) => sources = s,
                Err(errors) => {
                    let first = errors[0].clone();
                    self.update(|r| r.errors.extend(errors));
                    self.fail_disks(pending, first);
                    return Vec::new();
                }
            }
            if power == Some(PowerAction::PowerOff) {
                if let Some(guard) = power_back.take() {
                    self.step("snapshots taken; starting the VM again".into());
                    let _ = guard.start().await;
                    self.save();
                }
            }
        } else {
            for &i in pending {
                sources.insert(i, source_disk(&self.vp.disks[i]));
            }
        }
        let work = pending.iter().map(|&i| {
            let source = sources.remove(&i).expect("a source per pending disk");
            async move {
                let ok = self.convert_disk(i, source).await;
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
        guards: &mut Vec<CopyGuard>,
    ) -> std::result::Result<HashMap<usize, Disk>, Vec<ErrorRecord>> {
        let copies = self
            .m
            .source
            .copies
            .as_ref()
            .expect("checked before the export");
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
                        x.kind == ResourceKind::Snapshot
                            && x.source.eq_ignore_ascii_case(&d.id)
                            && x.deleted_at.is_none()
                    })
                    .map(|x| x.id.clone())
            });
            let reusable = match leftover {
                Some(id) if progress => {
                    matches!(copies.is_ready(&id).await, Ok(true)).then_some(id)
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
                    guards.push(CopyGuard::new(copies, &id, &self.m.cleanups, self.report));
                    sources.insert(i, copies.as_disk(&source_disk(d), &id));
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
                .unwrap_or_else(|| snapshot_name(&d.name, run_id));
            let id = copies.copy_id(self.vm, &source_disk(d), &name);
            self.update(|r| {
                r.resources.push(ResourceRecord {
                    kind: ResourceKind::Snapshot,
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
        let mut tags = BTreeMap::new();
        tags.insert("created-by".to_string(), "hyper2kvm".to_string());
        tags.insert("hyper2kvm-run".to_string(), run_id.clone());
        tags.insert("hyper2kvm-vm".to_string(), self.vm.name.clone());
        let creates = planned.iter().map(|(i, id)| {
            // Armed before the request: a create that times out may still have happened.
            let guard = CopyGuard::new(copies, id, &self.m.cleanups, self.report);
            let disk = source_disk(&self.vp.disks[*i]);
            let tags = &tags;
            async move {
                let outcome = copies.create(self.vm, &disk, id, tags).await;
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
                    sources.insert(*i, copies.as_disk(&source_disk(&self.vp.disks[*i]), id));
                }
                Err(e) => failed
                    .push(ErrorRecord::of(&e).context(&format!("snapshot {}", last_segment(id)))),
            }
        }
        self.save();
        if !failed.is_empty() {
            return Err(failed);
        }
        Ok(sources)
    }

    /// Converts disk `i` from `source`; true when its image is complete (at its staging path).
    async fn convert_disk(&self, i: usize, source: Disk) -> bool {
        let d = &self.vp.disks[i];
        let started = Instant::now();
        let vm_name = self.vm.name.clone();
        let exported_from = source.id.clone();
        let outcome = async {
            self.sched
                .phase(self.index, &format!("{}: exporting", d.name));
            let exported = self.m.source.vms.export_disk(self.vm, &source).await?;
            let source_reader = exported.reader().clone();
            let stats = async {
                // The written ranges first: what is read, and how long the disk will hold
                // its slot, are known before it takes one.
                let ranges = source_reader.allocated_ranges().await?;
                let opts = ConvertOptions {
                    format: self.m.opts.plan.format,
                    resume: true,
                    ..self.m.opts.convert.clone()
                };
                // What the conversion will read: the ranges aligned to its granularity.
                let granularity = match opts.format {
                    OutputFormat::Qcow2 => u64::from(opts.cluster_size),
                    OutputFormat::Raw => 4096,
                };
                let bytes =
                    align_and_merge(&ranges, granularity, source_reader.size(), opts.merge_gap)
                        .iter()
                        .map(|r| r.end - r.start)
                        .sum();
                self.sched.ready(self.index, i, bytes);
                self.sched.phase(
                    self.index,
                    &format!("{}: waiting for a reading slot", d.name),
                );
                let reader = KnownRanges::wrap(source_reader, ranges);
                let reader = self.m.opts.limits.wrap(reader);
                // Held only while data flows: not through the grant before, nor the
                // revoke after.
                let _slot = self.sched.slot(Some((self.index, i)), bytes).await;
                self.sched
                    .phase(self.index, &format!("{}: reading", d.name));
                self.m.emit(RunEvent::DiskStarted {
                    vm: vm_name.clone(),
                    disk: d.name.clone(),
                    size: d.size_bytes,
                });
                let events = self.m.events.clone();
                let (sched, index) = (self.sched.clone(), self.index);
                let name = d.name.clone();
                let vm = vm_name.clone();
                // Progress goes to the scheduler (the run's totals) and to the listener.
                let progress = move |p: hyper2kvm_core::Progress| {
                    sched.progress(index, i, p.done, p.total);
                    if let Some(f) = &events {
                        f(&RunEvent::DiskProgress {
                            vm: vm.clone(),
                            disk: name.clone(),
                            done: p.done,
                            total: p.total,
                        });
                    }
                };
                convert(reader, &self.staging(i), &opts, Some(Arc::new(progress))).await
            }
            .await;
            self.sched.over(self.index, i);
            // Revoke now, whatever happened; a failed revoke is a cleanup error of its own.
            self.sched
                .phase(self.index, &format!("{}: revoking access", d.name));
            let revoked = exported.close().await;
            if let Err(e) = revoked {
                record_cleanup_failure(
                    self.report,
                    CleanupAction::RevokeAccess,
                    &exported_from,
                    &e,
                );
            }
            stats
        }
        .await;
        self.sched.over(self.index, i);
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
                    let record = ErrorRecord::of(&e);
                    dr.status = DiskStatus::Failed;
                    dr.error = Some(record.clone());
                    r.errors.push(record.context(&d.name));
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

    /// Whether the file under disk `i`'s final name is the complete image an earlier run
    /// made: its report must say so (completed, with a checksum) for this disk and this path,
    /// and the file must be a regular file of the recorded size with the format's header; with
    /// `verify_done_images`, its SHA-256 must match too. Why not, otherwise.
    async fn proven_done(&self, i: usize) -> std::result::Result<(), String> {
        let d = &self.vp.disks[i];
        let earlier = self
            .previous
            .and_then(|p| {
                p.disks.iter().find(|x| {
                    x.output == d.output
                        && x.id.eq_ignore_ascii_case(&d.id)
                        && matches!(x.status, DiskStatus::Completed | DiskStatus::AlreadyDone)
                })
            })
            .ok_or("no earlier report records it as a complete image of this disk")?;
        let Some(sha) = earlier.sha256.clone() else {
            return Err("its earlier report has no checksum for it".into());
        };
        let meta = std::fs::symlink_metadata(&d.output).map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("it is not a regular file".into());
        }
        if meta.len() != earlier.image_bytes {
            return Err(format!(
                "it is {} bytes, its report recorded {}",
                meta.len(),
                earlier.image_bytes
            ));
        }
        if self.m.opts.plan.format == OutputFormat::Qcow2 {
            let mut magic = [0u8; 4];
            let read = std::fs::File::open(&d.output)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
            if read.is_err() || &magic != b"QFI\xfb" {
                return Err("it does not start with a qcow2 header".into());
            }
        }
        if self.m.opts.verify_done_images {
            let path = d.output.clone();
            match tokio::task::spawn_blocking(move || sha256_file(&path)).await {
                Ok(Ok((hex, _))) if hex == sha => {}
                Ok(Ok(_)) => return Err("its SHA-256 differs from its report's".into()),
                Ok(Err(e)) => return Err(format!("cannot compute its checksum: {e}")),
                Err(e) => return Err(format!("checksum task failed: {e}")),
            }
        }
        Ok(())
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
    pub(crate) async fn checksum(&self, i: usize) {
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
    pub(crate) async fn fix_and_finish(&self, i: usize) {
        if self.staging(i) != self.vp.disks[i].output && self.fix_and_rename(i).await {
            self.checksum(i).await;
            self.save();
        }
    }

    /// Fix-ups on the staged OS disk `i`, then its final name: whether it has it now (a
    /// failure is recorded). Its checksum is the caller's.
    pub(crate) async fn fix_and_rename(&self, i: usize) -> bool {
        let staged = self.staging(i);
        let d = &self.vp.disks[i];
        let Some(hook) = self.m.opts.guest.clone() else {
            return false;
        };
        let outcome = {
            if self.sched.fixups.available_permits() == 0 {
                self.step(format!("{}: waiting for a guest fix-up slot", d.name));
            }
            let _slot = self.sched.fixups.acquire().await.expect("never closed");
            self.step(format!("{}: guest fix-ups", d.name));
            hook(staged.clone()).await
        };
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
                r.disks[i].error = Some(ErrorRecord::new(ErrorKind::Guest, format!("guest fix-ups: {e}")));
                r.errors.push(ErrorRecord::new(ErrorKind::Guest, format!(
                    "{}: guest fix-ups failed, the converted image is kept as {} and a new run retries them: {e}",
                    d.name,
                    staged.display()
                )));
            });
            return false;
        }
        if let Err(e) = std::fs::rename(&staged, &d.output) {
            let record = ErrorRecord::of(
                &hyper2kvm_core::Error::io("cannot rename to its final name", e).with_path(&staged),
            );
            self.update(|r| {
                r.disks[i].status = DiskStatus::Failed;
                r.disks[i].error = Some(record.clone());
                r.errors.push(record);
            });
            return false;
        }
        self.update(|r| {
            if r.disks[i].status == DiskStatus::Pending {
                // Converted by an earlier run, fixed by this one.
                r.disks[i].status = DiskStatus::AlreadyDone;
                r.disks[i].bytes_skipped = d.size_bytes;
            }
        });
        true
    }

    /// Deletes the run's snapshots (and those of killed runs), or records them as kept.
    async fn cleanup_snapshots(&self, mut guards: Vec<CopyGuard>) {
        // Snapshots of killed runs that were not reused: gone now too.
        let leftovers: Vec<String> = self.update(|r| {
            r.resources
                .iter()
                .filter(|x| x.deleted_at.is_none() && !guards.iter().any(|g| g.id == x.id))
                .map(|x| x.id.clone())
                .collect()
        });
        match &self.m.source.copies {
            Some(copies) => {
                for id in leftovers {
                    guards.push(CopyGuard::new(copies, &id, &self.m.cleanups, self.report));
                }
            }
            None => {
                for id in leftovers {
                    self.warn(format!(
                        "snapshot {id} of an earlier run is left: this source cannot delete it, delete it by hand"
                    ));
                }
            }
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
        // Each guard records its outcome: `deleted_at`, or a cleanup error saying what to do.
        join_all(guards.into_iter().map(CopyGuard::delete)).await;
        self.save();
    }

    /// Records `action` as sent, not yet answered; returns its index in `power`.
    /// Stops or deallocates the VM through `control` and waits for it. The operation is
    /// recorded before it is sent (interrupted before the answer, the report says it was
    /// sent and may have happened), and its answer after.
    pub(crate) async fn power_off(
        &self,
        control: &dyn hyper2kvm_core::PowerControl,
        action: PowerAction,
    ) -> hyper2kvm_core::Result<()> {
        self.step(format!("{action} (waiting for it)"));
        let index = self.pending_power(action);
        let outcome = if action == PowerAction::Deallocate {
            control.deallocate(self.vm).await
        } else {
            control.stop(self.vm).await
        };
        self.answered_power(index, &outcome);
        outcome
    }

    pub(crate) fn pending_power(&self, action: PowerAction) -> usize {
        let index = self.update(|r| {
            r.power.push(PowerRecord {
                action,
                at: rfc3339(SystemTime::now()),
                ok: false,
                error: Some(ErrorRecord::new(
                    ErrorKind::Cancelled,
                    "no answer yet: the run stopped while waiting, so it may have happened",
                )),
            });
            r.power.len() - 1
        });
        self.save();
        index
    }

    /// Records the answer to the power operation at `index`.
    pub(crate) fn answered_power(&self, index: usize, outcome: &hyper2kvm_core::Result<()>) {
        self.update(|r| {
            let p = &mut r.power[index];
            p.ok = outcome.is_ok();
            p.error = outcome.as_ref().err().map(ErrorRecord::of);
            if let Err(e) = outcome {
                r.errors.push(ErrorRecord::of(e).context(p.action.as_str()));
            }
        });
        self.save();
    }

    pub(crate) fn fail_disks(&self, disks: &[usize], why: ErrorRecord) {
        self.update(|r| {
            for &i in disks {
                r.disks[i].status = DiskStatus::Failed;
                r.disks[i].error = Some(why.clone());
            }
            if !r.errors.iter().any(|e| e.detail.contains(&why.detail)) {
                r.errors.push(why);
            }
        });
    }
}

fn role_of(d: &DiskPlan) -> DiskRole {
    match d.lun {
        None => DiskRole::Os,
        Some(lun) => DiskRole::Data { lun },
    }
}

/// The source disk of `d`, as the source described it.
pub(crate) fn source_disk(d: &DiskPlan) -> Disk {
    Disk {
        id: d.id.clone(),
        name: d.name.clone(),
        role: role_of(d),
        size_bytes: d.size_bytes,
    }
}

/// Where a file found under a final name without proof is moved: `NAME.suspect-<time>`.
fn suspect_path(output: &std::path::Path) -> PathBuf {
    let stamp = rfc3339(SystemTime::now()).replace(':', "");
    let mut p = output.as_os_str().to_owned();
    p.push(format!(".suspect-{stamp}"));
    let mut path = PathBuf::from(&p);
    let mut n = 1;
    while std::fs::symlink_metadata(&path).is_ok() {
        path = PathBuf::from(format!("{}.{n}", p.to_string_lossy()));
        n += 1;
    }
    path
}

pub(crate) fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// A reader whose written ranges were read already: the conversion does not ask the source
/// again.
struct KnownRanges {
    inner: Arc<dyn DiskReader>,
    ranges: Vec<Range<u64>>,
}

impl KnownRanges {
    fn wrap(inner: Arc<dyn DiskReader>, ranges: Vec<Range<u64>>) -> Arc<dyn DiskReader> {
        Arc::new(KnownRanges { inner, ranges })
    }
}

impl DiskReader for KnownRanges {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, hyper2kvm_core::Result<Vec<Range<u64>>>> {
        let ranges = self.ranges.clone();
        Box::pin(async move { Ok(ranges) })
    }

    fn read_at(
        &self,
        offset: u64,
        buf: AlignedBuf,
    ) -> BoxFuture<'_, hyper2kvm_core::Result<AlignedBuf>> {
        self.inner.read_at(offset, buf)
    }
}
