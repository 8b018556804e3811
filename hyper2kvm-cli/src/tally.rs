//! What a run has done and what it has left, from its events: VMs finished of those
//! selected, and bytes. The display's overall line until the engine's own progress
//! ([`hyper2kvm::migrate::FleetProgress`], [`crate::fleet`]) comes, and after that the bound
//! it gives while no disk is known ([`Tally::at_most`]).
//!
//! Only a disk's *written* bytes are read (its page ranges), and they are known only once the
//! disk is exported, so the total is an estimate: the written bytes of the disks whose ranges
//! are known, plus the sizes of the others scaled by the written share measured so far
//! (before any is measured, their sizes: an upper bound, and no ETA). A disk that ends counts
//! what was read of it (nothing when it was already done); a VM that ends takes its disks that
//! never started with it.

use std::collections::BTreeMap;

use hyper2kvm::migrate::DiskStatus;

use crate::units::{human_bytes, human_duration};

/// One disk the run has started or finished.
#[derive(Debug, Clone, Default)]
struct DiskTally {
    /// Its size.
    size: u64,
    /// Written bytes read.
    done: u64,
    /// Its written bytes, once its ranges are known.
    written: Option<u64>,
    /// Ended: nothing more will be read of it.
    ended: bool,
}

/// The run's counts.
#[derive(Debug, Default)]
pub struct Tally {
    vms_total: usize,
    vms_done: usize,
    /// Sizes of the disks of VMs that have not ended and that no event named yet.
    pending: u64,
    /// Per VM: the sizes of its planned disks, and of those seen, while the VM runs.
    vms: BTreeMap<String, (u64, u64)>,
    disks: BTreeMap<(String, String), DiskTally>,
}

impl Tally {
    /// The run starts with `vms` VMs whose disks' sizes sum to `bytes`.
    pub fn run_started(&mut self, vms: usize, bytes: u64) {
        self.vms_total = vms;
        self.pending = bytes;
    }

    /// VM `vm` starts; its disks' sizes sum to `bytes`.
    pub fn vm_started(&mut self, vm: &str, bytes: u64) {
        self.vms.insert(vm.to_string(), (bytes, 0));
    }

    /// Disk `disk` of `vm`, of `size` bytes, starts (its ranges are not known yet).
    pub fn disk_started(&mut self, vm: &str, disk: &str, size: u64) {
        self.see(vm, disk, size);
    }

    /// `done` of the `total` written bytes of a disk.
    pub fn disk_progress(&mut self, vm: &str, disk: &str, done: u64, total: u64) {
        let d = self.disks.entry(key(vm, disk)).or_default();
        d.done = done;
        d.written = Some(total);
    }

    /// A disk ends: what was not read of it leaves the total, whatever the outcome.
    pub fn disk_finished(&mut self, vm: &str, disk: &str, size: u64, status: DiskStatus) {
        self.see(vm, disk, size);
        let d = self.disks.get_mut(&key(vm, disk)).expect("seen");
        if status == DiskStatus::AlreadyDone {
            // Nothing was read for it in this run.
            d.done = 0;
        }
        d.ended = true;
    }

    /// A VM ends: its disks that never started will not.
    pub fn vm_finished(&mut self, vm: &str) {
        self.vms_done += 1;
        if let Some((planned, seen)) = self.vms.remove(vm) {
            self.pending = self.pending.saturating_sub(planned.saturating_sub(seen));
        }
    }

    /// Counts `disk` once: its size moves from the pending sizes to the disk.
    fn see(&mut self, vm: &str, disk: &str, size: u64) {
        let k = key(vm, disk);
        if self.disks.contains_key(&k) {
            return;
        }
        self.disks.insert(
            k,
            DiskTally {
                size,
                ..DiskTally::default()
            },
        );
        self.pending = self.pending.saturating_sub(size);
        if let Some((_, seen)) = self.vms.get_mut(vm) {
            *seen += size;
        }
    }

    /// Bytes read so far.
    pub fn done(&self) -> u64 {
        self.disks.values().map(|d| d.done).sum()
    }

    /// The estimated bytes of the whole run, and whether it is measured (some disk's ranges
    /// are known) rather than the disks' sizes.
    pub fn total(&self) -> (u64, bool) {
        // The written share of the disks whose ranges are known.
        let (written, sized) = self
            .disks
            .values()
            .filter_map(|d| d.written.map(|w| (w, d.size)))
            .fold((0u64, 0u64), |(w, s), (dw, ds)| (w + dw, s + ds));
        let share = (sized > 0).then(|| written as f64 / sized as f64);
        let guess = |size: u64| share.map_or(size, |s| (size as f64 * s) as u64);
        let mut total = guess(self.pending);
        for d in self.disks.values() {
            total += match (d.ended, d.written) {
                (true, _) => d.done,
                (false, Some(w)) => w,
                (false, None) => guess(d.size),
            };
        }
        (total, share.is_some())
    }

    /// A bound of the run's bytes that holds before any disk's ranges are known: what was
    /// read of the disks that ended, and the sizes of the others.
    pub fn at_most(&self) -> u64 {
        let disks: u64 = self
            .disks
            .values()
            .map(|d| if d.ended { d.done } else { d.size })
            .sum();
        self.pending + disks
    }

    /// `3/10 VMs done, 2 in flight; 12.3 GiB of ~40.0 GiB, 85.3 MiB/s, ETA 5m` (`rate` in
    /// bytes per second); before any disk's ranges are known, `0/10 VMs done, 2 in flight; 0 B
    /// of at most 200 GiB`. The same words as the engine's progress
    /// ([`crate::fleet::overall_line`]), which replaces this line once it comes.
    pub fn line(&self, rate: Option<f64>) -> String {
        let vms = format!(
            "{}/{} VMs done, {} in flight",
            self.vms_done,
            self.vms_total,
            self.vms.len()
        );
        let done = self.done();
        let (total, measured) = self.total();
        if !measured {
            return format!(
                "{vms}; {} of at most {}",
                human_bytes(done),
                human_bytes(total)
            );
        }
        let mut line = format!(
            "{vms}; {} of ~{}",
            human_bytes(done),
            human_bytes(total.max(done))
        );
        if let Some(rate) = rate {
            line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
            if rate > 0.0 {
                let left = total.saturating_sub(done) as f64 / rate;
                line.push_str(&format!(", ETA {}", human_duration(left.ceil() as u64)));
            }
        }
        line
    }

    /// Whether the run has started.
    pub fn started(&self) -> bool {
        self.vms_total > 0
    }

    /// Whether every VM has ended.
    pub fn finished(&self) -> bool {
        self.vms_total > 0 && self.vms_done >= self.vms_total
    }
}

fn key(vm: &str, disk: &str) -> (String, String) {
    (vm.to_string(), disk.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn total_is_the_disk_sizes_until_ranges_are_known() {
        let mut t = Tally::default();
        t.run_started(2, 200 * GIB);
        assert_eq!(t.total(), (200 * GIB, false));
        assert_eq!(
            t.line(Some(1e6)),
            "0/2 VMs done, 0 in flight; 0 B of at most 200 GiB"
        );
        t.vm_started("a", 100 * GIB);
        t.disk_started("a", "a-os", 100 * GIB);
        assert_eq!(t.total(), (200 * GIB, false));
        assert_eq!(t.at_most(), 200 * GIB);
    }

    #[test]
    fn written_share_scales_the_disks_not_yet_exported() {
        let mut t = Tally::default();
        t.run_started(2, 200 * GIB);
        t.vm_started("a", 100 * GIB);
        t.disk_started("a", "a-os", 100 * GIB);
        // 10% of the first disk is written: the other 100 GiB likely hold 10 GiB.
        t.disk_progress("a", "a-os", 2 * GIB, 10 * GIB);
        assert_eq!(t.total(), (20 * GIB, true));
        assert_eq!(t.done(), 2 * GIB);
        // 18 GiB left at 1 GiB/s.
        assert_eq!(
            t.line(Some(GIB as f64)),
            "0/2 VMs done, 1 in flight; 2.00 GiB of ~20.0 GiB, 1.00 GiB/s, ETA 18s"
        );
        assert_eq!(
            t.line(None),
            "0/2 VMs done, 1 in flight; 2.00 GiB of ~20.0 GiB"
        );
    }

    #[test]
    fn ended_disks_and_vms_leave_the_total() {
        let mut t = Tally::default();
        t.run_started(3, 300 * GIB);
        t.vm_started("a", 100 * GIB);
        t.disk_started("a", "a-os", 100 * GIB);
        t.disk_progress("a", "a-os", 10 * GIB, 10 * GIB);
        t.disk_finished("a", "a-os", 100 * GIB, DiskStatus::Completed);
        t.vm_finished("a");
        // b fails after 1 of its 5 written GiB: the other 4 are not coming.
        t.vm_started("b", 100 * GIB);
        t.disk_started("b", "b-os", 100 * GIB);
        t.disk_progress("b", "b-os", GIB, 5 * GIB);
        t.disk_finished("b", "b-os", 100 * GIB, DiskStatus::Failed);
        t.vm_finished("b");
        assert_eq!(t.done(), 11 * GIB);
        // c (100 GiB, not started) is estimated at the written share measured: 15 of 200.
        let (total, measured) = t.total();
        assert!(measured);
        assert_eq!(total, 11 * GIB + (100.0 * GIB as f64 * 15.0 / 200.0) as u64);
        // c ends without starting its disks (refused, locked): nothing is left.
        t.vm_started("c", 100 * GIB);
        t.vm_finished("c");
        assert_eq!(t.total(), (11 * GIB, true));
        assert!(t.finished());
        assert_eq!(
            t.line(None),
            "3/3 VMs done, 0 in flight; 11.0 GiB of ~11.0 GiB"
        );
    }

    #[test]
    fn already_done_disks_count_for_nothing() {
        let mut t = Tally::default();
        t.run_started(1, 50 * GIB);
        t.vm_started("a", 50 * GIB);
        t.disk_finished("a", "a-os", 30 * GIB, DiskStatus::AlreadyDone);
        assert_eq!(t.total(), (20 * GIB, false));
        t.disk_started("a", "a-data", 20 * GIB);
        t.disk_progress("a", "a-data", GIB, 4 * GIB);
        assert_eq!(t.total(), (4 * GIB, true));
        // The bound: nothing read of the first, all 20 GiB of the second.
        assert_eq!(t.at_most(), 20 * GIB);
    }
}
