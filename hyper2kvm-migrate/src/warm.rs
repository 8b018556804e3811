//! Warm migration: a running VM's disks copied ahead of its cutover, so the downtime is only
//! the last delta's.
//!
//! * **`sync`** ([`WarmMode::Sync`](crate::options::WarmMode::Sync)): per VM, an incremental copy of every disk at once
//!   (through core's [`IncrementalCopies`]); the first time, a full copy of each into a
//!   *working image* `<image>.warm` (uncompressed qcow2: the patcher refuses compressed
//!   clusters), never under the final name; on each later round, a new copy and only its
//!   delta against the last one applied (the *base*), patched in place with
//!   [`apply_delta`]. The older base is deleted once the new one is applied. Rounds repeat
//!   up to `rounds`, until a round's delta is at most `until_delta`, `interval` apart.
//! * **`cutover`** ([`WarmMode::Cutover`](crate::options::WarmMode::Cutover)): the power operation the policy says (stop or
//!   deallocate; the `snapshot` policy is refused: it would leave the VM writing after the
//!   last delta), a last round, then the working images renamed to their staging names, the
//!   guest fix-ups, the domain (the downtime ends there), the VM started again if asked
//!   alongside; only then the grants revoked, the chain's copies deleted and the checksums
//!   taken, which the KVM side does not wait for.
//!   A VM never synced is an error telling to run `sync` first: a silent cold migration
//!   would have a downtime nobody planned for.
//!
//! The chain's state is the `warm` section of the VM's `report.json` ([`WarmRecord`]). A
//! copy is recorded as `pending` *before* it is created, and stays so until it is applied:
//! a sync killed at any point leaves the base (still kept) and the pending copy, and the
//! next sync applies that same copy again (idempotent: [`apply_delta`]) or, for a full
//! copy, copies it again. When the source cannot diff the two copies
//! ([`Delta::BaseUnusable`]: the disk recreated, the base deleted) or the disk's identity
//! or size changed, the disk is copied in full again and the report's warnings say why.
//!
//! Grants are closed by the exports themselves (their cleanup runs in the background if a
//! sync is interrupted). Copies of the chain are kept between syncs by design (they are the
//! base), and deleted by the cutover; copies given up are listed in `retired` until deleted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::future::join_all;
use hyper2kvm_core::journal::journal_path;
use hyper2kvm_core::{
    apply_delta, convert, ConvertOptions, Delta, DiskReader, Error, ErrorKind, ExportedDisk,
    IncrementalCopies, OutputFormat,
};

use crate::guards::{record_cleanup_failure, StartGuard};
use crate::options::SyncOptions;
use crate::plan::{snapshot_name, DiskPlan, VmAction};
use crate::report::{
    CleanupAction, DiskStatus, ErrorRecord, PowerAction, WarmCopy, WarmDisk, WarmRecord,
};
use crate::time::rfc3339;
use crate::vm::{last_segment, source_disk, VmRun};

/// Where disk `d`'s working image goes: next to its final name, never under it.
pub fn working_image(d: &DiskPlan) -> PathBuf {
    let mut p = d.output.as_os_str().to_owned();
    p.push(".warm");
    PathBuf::from(p)
}

/// Exports a round read from, with the copy each is of: open until the caller closes them.
type OpenExports = std::sync::Mutex<Vec<(String, ExportedDisk)>>;

/// What one disk's application did, in bytes.
struct Applied {
    written: u64,
    cleared: u64,
    full: bool,
}

impl VmRun<'_> {
    /// The source's incremental copies, or the VM failed with why not.
    fn incremental(&self) -> Option<Arc<dyn IncrementalCopies>> {
        let inc = self.m.source.incremental.clone();
        if inc.is_none() {
            let all: Vec<usize> = (0..self.vp.disks.len()).collect();
            self.fail_disks(
                &all,
                ErrorRecord::new(
                    ErrorKind::Unsupported,
                    format!(
                        "this source ({}) cannot make incremental copies, so it cannot be migrated warm; migrate it cold instead",
                        self.m.source.vms.platform()
                    ),
                ),
            );
        }
        inc
    }

    /// `sync`: rounds of incremental copies applied to the working images.
    pub(crate) async fn sync(&self, o: &SyncOptions) {
        let Some(inc) = self.incremental() else {
            return;
        };
        let all: Vec<usize> = (0..self.vp.disks.len()).collect();
        let mut round = 0;
        loop {
            round += 1;
            let open = OpenExports::default();
            let bytes = self.sync_round(&inc, &all, &open).await;
            self.close_exports(&open).await;
            let entries: Vec<usize> = all.iter().map(|&i| self.warm_entry(i)).collect();
            // Older bases: no longer needed.
            self.delete_retired(&inc, &entries).await;
            let Some(bytes) = bytes else {
                return;
            };
            let small = o.until_delta.is_some_and(|max| bytes <= max);
            if round >= o.rounds.max(1) || small {
                if small {
                    self.step(format!(
                        "round {round}: {bytes} bytes changed, at most {}: in sync",
                        o.until_delta.unwrap_or_default()
                    ));
                }
                break;
            }
            self.step(format!(
                "round {round}: {bytes} bytes changed; next round in {} s",
                o.interval.as_secs()
            ));
            tokio::time::sleep(o.interval).await;
        }
        for i in all {
            let report = self.update(|r| {
                r.disks[i].status = DiskStatus::Completed;
                r.disks[i].clone()
            });
            self.m.emit(crate::options::RunEvent::DiskFinished {
                vm: self.vm.name.clone(),
                report: Box::new(report),
            });
        }
        self.save();
    }

    /// The VM's warm record with an entry for every planned disk (the index of disk `i`'s
    /// entry is found by id).
    fn warm_entry(&self, i: usize) -> usize {
        let d = &self.vp.disks[i];
        self.update(|r| {
            let w = r.warm.get_or_insert_with(WarmRecord::default);
            match w
                .disks
                .iter()
                .position(|x| x.disk_id.eq_ignore_ascii_case(&d.id))
            {
                Some(k) => k,
                None => {
                    w.disks.push(WarmDisk {
                        disk_id: d.id.clone(),
                        name: d.name.clone(),
                        image: working_image(d),
                        base: None,
                        pending: None,
                        retired: Vec::new(),
                        generation: 0,
                        full_copies: 0,
                        last_bytes_written: 0,
                        last_bytes_cleared: 0,
                        applied_at: None,
                    });
                    w.disks.len() - 1
                }
            }
        })
    }

    fn warm_disk(&self, k: usize) -> WarmDisk {
        self.update(|r| r.warm.as_ref().expect("made by warm_entry").disks[k].clone())
    }

    fn set_warm_disk(&self, k: usize, f: impl FnOnce(&mut WarmDisk)) {
        self.update(|r| f(&mut r.warm.as_mut().expect("made by warm_entry").disks[k]));
    }

    /// One round over disks `which`: new copies (or those a killed sync left pending), each
    /// applied. The bytes read and cleared, or `None` when a disk failed (recorded). The
    /// exports it read stay open in `open` and the bases it replaced listed in `retired`:
    /// the caller closes and deletes them when it can wait for that (a cutover: once the
    /// outputs are ready).
    async fn sync_round(
        &self,
        inc: &Arc<dyn IncrementalCopies>,
        which: &[usize],
        open: &OpenExports,
    ) -> Option<u64> {
        let entries: Vec<usize> = which.iter().map(|&i| self.warm_entry(i)).collect();
        // 1. The copies: a pending one a killed sync left is applied again if it exists.
        let mut to_create = Vec::new();
        for (&i, &k) in which.iter().zip(&entries) {
            let w = self.warm_disk(k);
            if let Some(p) = &w.pending {
                match inc.copy_info(&p.id).await {
                    Ok(Some(info)) => {
                        self.step(format!(
                            "{}: applying again copy {} a killed sync left",
                            w.name,
                            last_segment(&p.id)
                        ));
                        self.set_warm_disk(k, |x| {
                            if let Some(p) = x.pending.as_mut() {
                                p.created = true;
                                p.source_id = info.source_id.clone();
                                p.source_identity = info.source_identity.clone();
                                p.size_bytes = info.size_bytes;
                            }
                        });
                        continue;
                    }
                    Ok(None) => self.set_warm_disk(k, |x| x.pending = None),
                    Err(e) => {
                        self.fail_disks(
                            &[i],
                            ErrorRecord::of(&e).context(&format!("copy {}", last_segment(&p.id))),
                        );
                        self.save();
                        return None;
                    }
                }
            }
            to_create.push((i, k));
        }
        let run_id = &self.m.opts.plan.run_id;
        let mut planned = Vec::new();
        for &(i, k) in &to_create {
            let d = &self.vp.disks[i];
            let w = self.warm_disk(k);
            let name = snapshot_name(&d.name, &format!("{run_id}-w{}", w.generation + 1));
            let id = inc.copy_id(self.vm, &source_disk(d), &name);
            let full = w.base.is_none();
            self.set_warm_disk(k, |x| {
                x.pending = Some(WarmCopy {
                    id: id.clone(),
                    source_id: String::new(),
                    source_identity: String::new(),
                    size_bytes: 0,
                    requested_at: rfc3339(SystemTime::now()),
                    created: false,
                    full,
                })
            });
            planned.push((i, k, id));
        }
        // Recorded before any is created: a killed sync finds them.
        self.save();
        if !planned.is_empty() {
            self.step(format!("creating {} incremental copies", planned.len()));
        }
        let mut tags = BTreeMap::new();
        tags.insert("created-by".to_string(), "hyper2kvm".to_string());
        tags.insert("hyper2kvm-run".to_string(), run_id.clone());
        tags.insert("hyper2kvm-vm".to_string(), self.vm.name.clone());
        tags.insert("hyper2kvm-warm".to_string(), "chain".to_string());
        let creates = planned.iter().map(|(i, _, id)| {
            let disk = source_disk(&self.vp.disks[*i]);
            let tags = &tags;
            async move { inc.create_incremental(self.vm, &disk, id, tags).await }
        });
        let results = join_all(creates).await;
        let mut failed = false;
        for ((i, k, id), outcome) in planned.iter().zip(results) {
            match outcome {
                Ok(info) => self.set_warm_disk(*k, |x| {
                    if let Some(p) = x.pending.as_mut() {
                        p.created = true;
                        p.source_id = info.source_id;
                        p.source_identity = info.source_identity;
                        p.size_bytes = info.size_bytes;
                    }
                }),
                Err(e) => {
                    failed = true;
                    self.fail_disks(
                        &[*i],
                        ErrorRecord::of(&e).context(&format!("copy {}", last_segment(id))),
                    );
                }
            }
        }
        self.save();
        if failed {
            return None;
        }
        // 2. Each applied to its working image.
        let work = which.iter().zip(&entries).map(|(&i, &k)| async move {
            let slot = self.sched.slot(None, 0).await;
            let outcome = self.apply_one(inc, i, k, open).await;
            drop(slot);
            (i, k, outcome)
        });
        let mut total = 0;
        let mut ok = true;
        for (i, k, outcome) in join_all(work).await {
            match outcome {
                Ok(a) => {
                    total += a.written + a.cleared;
                    let now = rfc3339(SystemTime::now());
                    self.set_warm_disk(k, |x| {
                        if let Some(old) = x.base.take() {
                            x.retired.push(old.id);
                        }
                        x.base = x.pending.take().map(|mut p| {
                            p.full = a.full;
                            p
                        });
                        x.generation += 1;
                        x.full_copies += u32::from(a.full);
                        x.last_bytes_written = a.written;
                        x.last_bytes_cleared = a.cleared;
                        x.applied_at = Some(now);
                    });
                    self.update(|r| {
                        let dr = &mut r.disks[i];
                        dr.output = working_image(&self.vp.disks[i]);
                        dr.bytes_downloaded += a.written;
                        dr.exported_from = r
                            .warm
                            .as_ref()
                            .and_then(|w| w.disks[k].base.as_ref().map(|b| b.id.clone()));
                    });
                }
                Err(e) => {
                    ok = false;
                    self.fail_disks(&[i], ErrorRecord::of(&e).context(&self.vp.disks[i].name));
                }
            }
        }
        self.save();
        if !ok {
            return None;
        }
        self.update(|r| {
            let w = r.warm.get_or_insert_with(WarmRecord::default);
            w.rounds += 1;
            w.last_sync_at = Some(rfc3339(SystemTime::now()));
            w.last_delta_bytes = total;
        });
        self.save();
        Some(total)
    }

    /// Applies disk `i`'s pending copy (entry `k`) to its working image: its delta against
    /// the base, or the whole copy when there is no usable base.
    async fn apply_one(
        &self,
        inc: &Arc<dyn IncrementalCopies>,
        i: usize,
        k: usize,
        open: &OpenExports,
    ) -> hyper2kvm_core::Result<Applied> {
        let d = &self.vp.disks[i];
        let w = self.warm_disk(k);
        let pending = w.pending.clone().expect("set by sync_round");
        let newer = inc.as_disk(&source_disk(d), &pending.id);
        // Deltas only between copies of the same disk incarnation and size.
        let mut full_because = match &w.base {
            None => None,
            Some(_) if !w.image.exists() => Some(format!(
                "its working image {} is missing",
                w.image.display()
            )),
            Some(b) if b.source_identity != pending.source_identity => Some(
                "the disk was deleted and created again since the last sync (its identity changed)"
                    .to_string(),
            ),
            Some(b) if b.size_bytes != pending.size_bytes => Some(format!(
                "the disk was resized since the last sync ({} to {} bytes)",
                b.size_bytes, pending.size_bytes
            )),
            Some(_) => None,
        };
        let (exported, delta) = match (&w.base, &full_because) {
            (Some(base), None) => {
                let (e, delta) = inc.export_delta(self.vm, &newer, &base.id).await?;
                (e, Some(delta))
            }
            _ => (self.m.source.vms.export_disk(self.vm, &newer).await?, None),
        };
        let changes = match delta {
            Some(Delta::Changed(c)) => Some(c),
            Some(Delta::BaseUnusable(why)) => {
                full_because = Some(why);
                None
            }
            None => None,
        };
        if let (Some(why), Some(_)) = (&full_because, &w.base) {
            self.warn(format!("{}: copied in full again: {why}", d.name));
        }
        // The reader alone crosses the awaits: the export is not `Sync`.
        let reader = exported.reader().clone();
        open.lock()
            .expect("never poisoned")
            .push((pending.id.clone(), exported));
        self.apply_exported(reader, &w.image, changes).await
    }

    /// Closes the exports `open` holds, all at once; a failure is a cleanup error.
    async fn close_exports(&self, open: &OpenExports) {
        let open = std::mem::take(&mut *open.lock().expect("never poisoned"));
        let closes = open
            .into_iter()
            .map(|(id, exported)| async move { (id, exported.close().await) });
        for (id, outcome) in join_all(closes).await {
            if let Err(e) = outcome {
                record_cleanup_failure(self.report, CleanupAction::RevokeAccess, &id, &e);
            }
        }
        self.save();
    }

    async fn apply_exported(
        &self,
        reader: Arc<dyn DiskReader>,
        image: &std::path::Path,
        changes: Option<hyper2kvm_core::ChangedRanges>,
    ) -> hyper2kvm_core::Result<Applied> {
        let reader = self.m.opts.limits.wrap(reader);
        let concurrency = self.m.opts.convert.concurrency.max(1);
        let chunk = u64::from(self.m.opts.convert.chunk_size);
        match changes {
            Some(c) => {
                let s = apply_delta(reader, image, &c, concurrency, chunk).await?;
                Ok(Applied {
                    written: s.bytes_written,
                    cleared: s.bytes_cleared,
                    full: false,
                })
            }
            None => {
                // A full copy starts from nothing: what a killed one left is not resumed.
                for p in [image.to_path_buf(), journal_path(image)] {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(
                                Error::io("cannot remove the old working image", e).with_path(&p)
                            )
                        }
                    }
                }
                let opts = ConvertOptions {
                    format: OutputFormat::Qcow2,
                    compression: None,
                    resume: false,
                    ..self.m.opts.convert.clone()
                };
                let s = convert(reader, image, &opts, None).await?;
                Ok(Applied {
                    written: s.bytes_read,
                    cleared: 0,
                    full: true,
                })
            }
        }
    }

    /// Deletes the copies entries `entries` retired; those that cannot be are kept listed
    /// for the next run, with a warning.
    async fn delete_retired(&self, inc: &Arc<dyn IncrementalCopies>, entries: &[usize]) {
        for &k in entries {
            let retired = self.warm_disk(k).retired;
            for id in retired {
                match inc.delete(&id).await {
                    Ok(()) => self.set_warm_disk(k, |x| x.retired.retain(|r| r != &id)),
                    Err(e) => self.warn(format!(
                        "copy {} could not be deleted, the next sync or cutover tries again: {e}",
                        last_segment(&id)
                    )),
                }
            }
        }
        self.save();
    }

    /// `cutover`: stop, last delta, publish, fix, domain, start again; the chain deleted.
    pub(crate) async fn cutover(&self) {
        let Some(inc) = self.incremental() else {
            return;
        };
        let all: Vec<usize> = (0..self.vp.disks.len()).collect();
        let (power, restart) = match &self.vp.action {
            VmAction::ExportDisks => (None, false),
            VmAction::DeallocateThenExport { restart } => (Some(PowerAction::Deallocate), *restart),
            VmAction::StopThenSnapshot { restart } => (Some(PowerAction::PowerOff), *restart),
            VmAction::Snapshot => {
                self.fail_disks(&all, ErrorRecord::new(ErrorKind::InvalidArgument, format!(
                    "the VM is {} and the policy is running_vm: snapshot, which would leave it running (and writing) after the last delta; a cutover stops it: set running_vm: stop or deallocate",
                    self.vm.power_state
                )));
                return;
            }
            VmAction::Refused { .. } => return,
        };
        // Published disks (a killed cutover renamed them) need no more delta.
        let warm = self.update(|r| r.warm.clone()).unwrap_or_default();
        let mut to_apply = Vec::new();
        let mut never = Vec::new();
        for (i, d) in self.vp.disks.iter().enumerate() {
            let w = warm
                .disks
                .iter()
                .find(|x| x.disk_id.eq_ignore_ascii_case(&d.id));
            let published = warm.cutover_started_at.is_some()
                && !working_image(d).exists()
                && (self.staging(i).exists() || d.output.exists());
            match w {
                _ if published => {}
                Some(w) if w.base.is_some() && w.image.exists() => to_apply.push(i),
                _ => never.push(i),
            }
        }
        if !never.is_empty() {
            let names: Vec<&str> = never
                .iter()
                .map(|&i| self.vp.disks[i].name.as_str())
                .collect();
            self.fail_disks(&all, ErrorRecord::new(ErrorKind::InvalidArgument, format!(
                "never synced (disks {}): run `hyper2kvm -c CONFIG sync` first, then cutover; or migrate it cold with `hyper2kvm -c CONFIG`",
                names.join(", ")
            )));
            return;
        }
        let started = Instant::now();
        let first_try = warm.cutover_started_at.is_none();
        self.update(|r| {
            let w = r.warm.get_or_insert_with(WarmRecord::default);
            w.cutover_started_at
                .get_or_insert_with(|| rfc3339(SystemTime::now()));
        });
        self.save();
        // 1. The power operation.
        let mut power_back: Option<StartGuard> = None;
        if let Some(action) = power {
            let Some(control) = &self.m.source.power else {
                self.fail_disks(&all, ErrorRecord::new(ErrorKind::Unsupported, format!(
                    "the VM is {}, and this source ({}) cannot stop or deallocate VMs: stop it by hand, then cutover",
                    self.vm.power_state, self.m.source.vms.platform()
                )));
                return;
            };
            power_back =
                restart.then(|| StartGuard::new(control, self.vm, &self.m.cleanups, self.report));
            let outcome = self.power_off(control.as_ref(), action).await;
            if let Err(e) = outcome {
                self.fail_disks(&all, ErrorRecord::of(&e).context(action.as_str()));
                return;
            }
        }
        // 2. The last delta. Grants are closed and copies deleted only once the outputs are
        // ready: the downtime does not wait for them.
        let open = OpenExports::default();
        if !to_apply.is_empty() {
            self.step("applying the last delta".into());
            if self.sync_round(&inc, &to_apply, &open).await.is_none() {
                // The guard starts the VM again; the chain is kept for another cutover.
                self.close_exports(&open).await;
                return;
            }
        }
        // 3. The VM may run again (its disks are read) while the outputs are made.
        if power_back.is_none() && self.owed_start() {
            if let Some(control) = &self.m.source.power {
                self.warn("an earlier cutover stopped or deallocated this VM and was interrupted before starting it again; starting it now".into());
                power_back = Some(StartGuard::new(
                    control,
                    self.vm,
                    &self.m.cleanups,
                    self.report,
                ));
            }
        }
        let restart = async {
            if let Some(guard) = power_back {
                self.step("starting the VM again".into());
                let _ = guard.start().await;
            }
        };
        let (published, ()) = tokio::join!(self.publish(started, first_try), restart);
        self.save();
        // 4. What the downtime did not wait for: grants and the chain, and the checksums.
        let cleanup = async {
            self.close_exports(&open).await;
            self.delete_chain(&inc).await;
        };
        let checksums = async {
            for i in published {
                self.checksum(i).await;
            }
        };
        tokio::join!(cleanup, checksums);
        self.save();
    }

    /// The working images under their staging names, the guest fix-ups, their final names,
    /// the domain; the downtime recorded once all are there. The disks published (their
    /// checksums are still to be taken).
    async fn publish(&self, started: Instant, first_try: bool) -> Vec<usize> {
        let mut published = Vec::new();
        for (i, d) in self.vp.disks.iter().enumerate() {
            let from = working_image(d);
            if from.exists() {
                if let Err(e) = std::fs::rename(&from, self.staging(i)) {
                    self.fail_disks(
                        &[i],
                        ErrorRecord::of(
                            &Error::io("cannot rename the working image", e).with_path(&from),
                        ),
                    );
                    continue;
                }
            }
            self.update(|r| {
                r.disks[i].output = d.output.clone();
                r.disks[i].status = DiskStatus::Completed;
            });
            published.push(i);
        }
        self.save();
        let mut fixed = Vec::new();
        for i in published {
            let (staged, output) = (self.staging(i), &self.vp.disks[i].output);
            // Fixed and renamed by a killed cutover: only its checksum may be missing.
            let done = staged == *output || (!staged.exists() && output.exists());
            if done || self.fix_and_rename(i).await {
                fixed.push(i);
            }
        }
        self.save();
        let all_done = self.update(|r| r.disks_done() == r.disks.len());
        if all_done {
            self.write_domain().await;
            // From the stop request to the KVM-ready outputs; a resumed cutover counts only
            // its own part (the report says when the first began).
            let downtime = started.elapsed().as_secs_f64();
            self.update(|r| {
                if let Some(w) = r.warm.as_mut() {
                    w.downtime_seconds = Some(downtime);
                }
                if !first_try {
                    r.warnings.push("this cutover finished one an earlier run began (see warm.cutover_started_at); downtime_seconds counts only this run's part".into());
                }
            });
        }
        self.save();
        fixed
    }

    /// Deletes every copy of the VM's chain (bases, pending, retired); failures are cleanup
    /// errors with what to do by hand.
    async fn delete_chain(&self, inc: &Arc<dyn IncrementalCopies>) {
        let warm = self.update(|r| r.warm.clone()).unwrap_or_default();
        let deletes = warm.disks.iter().enumerate().flat_map(|(k, w)| {
            w.base
                .iter()
                .chain(w.pending.iter())
                .map(|c| c.id.clone())
                .chain(w.retired.iter().cloned())
                .map(move |id| async move {
                    let outcome = inc.delete(&id).await;
                    (k, id, outcome)
                })
        });
        // All at once: each is a revoke and a delete, two long-running operations.
        for (k, id, outcome) in join_all(deletes).await {
            match outcome {
                Ok(()) => self.set_warm_disk(k, |x| {
                    x.retired.retain(|r| r != &id);
                    if x.base.as_ref().is_some_and(|b| b.id == id) {
                        x.base = None;
                    }
                    if x.pending.as_ref().is_some_and(|b| b.id == id) {
                        x.pending = None;
                    }
                }),
                Err(e) => {
                    record_cleanup_failure(self.report, CleanupAction::DeleteSnapshot, &id, &e)
                }
            }
        }
        self.save();
    }
}
