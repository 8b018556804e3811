//! When a run starts each VM, and which disk reads next: the run's scheduler.
//!
//! A VM's migration is mostly waiting on its platform (power operations, snapshots, access
//! grants, revokes: seconds to minutes each in Azure) around a short burst of reading. If a
//! disk held its reading slot through its grant and revoke, and a VM its place in the run
//! through its power operation, the link would sit idle most of a fleet's run
//! (docs/BENCHMARKS.md, "Fleet scheduling against a link"). So:
//!
//! * **A reading slot only while data flows.** A disk takes one of the `parallel_disks` slots
//!   once it is exported and its written ranges are known, and gives it back before it is
//!   revoked. Waiting disks take free slots largest first (bytes still to read), so the run
//!   does not end on one long disk.
//! * **VMs start ahead, as far as the link needs.** VMs are started largest first (by their
//!   disks' sizes), at most `parallel_vms` at once. Below that cap, a migration starts the next
//!   VM only while the work already known would not keep the link busy until that VM could
//!   be read: the bytes left of exported disks plus those expected of disks still being
//!   prepared (at the mean so far), at the reading rate so far, against the time VMs have
//!   taken from their start to an exported disk (at least the age of the oldest still
//!   waiting). Before anything is known (the run's first minute), the number of disks in
//!   preparation may double every [`RAMP`] that nothing has been ready to read. So grants
//!   are not held open long before they are read, and VMs are not stopped long before the
//!   link can take their data.
//!
//! The same bookkeeping gives the run's progress ([`FleetProgress`]): bytes done and to do
//! from the written ranges, the rate, an ETA, and what each VM in flight is doing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::options::{FleetProgress, VmInFlight};

/// With nothing known yet, the disks in preparation may double every this long that no disk
/// has been ready to read.
pub(crate) const RAMP: Duration = Duration::from_secs(4);

/// How far back the rate in [`FleetProgress`] looks.
const RATE_WINDOW: Duration = Duration::from_secs(30);

/// How a VM's disk stands in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its VM started; not yet readable (power operation, snapshot, grant, ranges).
    Preparing,
    /// Readable, its bytes known; waiting for a reading slot.
    Ready,
    /// Being read.
    Reading,
    /// Read, failed, skipped, or done by an earlier run.
    Over,
}

#[derive(Debug)]
struct DiskState {
    phase: Phase,
    /// Bytes to read (written ranges), once known.
    bytes: Option<u64>,
    /// Bytes done, resumed ones included.
    done: u64,
    /// Bytes an earlier run had done (the first progress a disk reports).
    resumed: Option<u64>,
}

#[derive(Debug)]
struct VmState {
    name: String,
    started: Instant,
    phase: String,
    disks: usize,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    finished: usize,
    free_slots: usize,
    /// Disks waiting for a slot: (bytes to read, reversed; arrival).
    queue: BTreeSet<(std::cmp::Reverse<u64>, u64)>,
    arrivals: u64,
    vms: BTreeMap<usize, VmState>,
    disks: HashMap<(usize, usize), DiskState>,
    /// Disks known (ready once, or over), of all VMs.
    known_disks: usize,
    known_bytes: u64,
    /// Start-to-ready times, seconds.
    prep_sum: f64,
    prep_count: u32,
    /// Bytes read (not resumed) while some disk was reading, and for how long.
    busy_bytes: u64,
    busy: Duration,
    last: Instant,
    /// Every byte read so far, resumed ones included, and recent (time, bytes read) samples.
    done_bytes: u64,
    read_bytes: u64,
    samples: VecDeque<(Instant, u64)>,
}

/// What the rule that starts VMs looks at; see the module's documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Load {
    /// VMs started and not finished.
    pub in_flight: usize,
    /// Disks of those VMs still being prepared.
    pub preparing: usize,
    /// Disks ready and waiting for a slot.
    pub waiting: usize,
    /// Reading slots free.
    pub free_slots: usize,
    /// Bytes left to read of ready and reading disks.
    pub queued_bytes: u64,
    /// Mean bytes to read per disk so far.
    pub bytes_per_disk: Option<f64>,
    /// Reading rate (bytes per second of the time some disk was reading).
    pub rate: Option<f64>,
    /// Mean time from a VM's start to one of its disks being ready, seconds.
    pub prep: Option<f64>,
    /// Age of the oldest disk still being prepared, seconds.
    pub oldest_preparing: f64,
}

/// Whether the run may start another VM, at most `cap` at once, given `slots` reading slots.
pub(crate) fn may_start(load: &Load, cap: usize, slots: usize) -> bool {
    if load.in_flight >= cap {
        return false;
    }
    // A slot would sit idle even if every disk in preparation were ready now.
    if load.free_slots > load.waiting + load.preparing {
        return true;
    }
    match (load.rate, load.bytes_per_disk, load.prep) {
        (Some(rate), Some(per_disk), Some(prep)) if rate > 0.0 => {
            let expected = load.queued_bytes as f64 + load.preparing as f64 * per_disk;
            let lasts = expected / rate;
            let ready_in = prep.max(load.oldest_preparing);
            // A quarter more than the mean, and a second, for the spread of the operations.
            lasts < ready_in * 1.25 + 1.0
        }
        _ => {
            let doublings = (load.oldest_preparing / RAMP.as_secs_f64())
                .floor()
                .min(8.0);
            (load.preparing as f64) < slots.max(1) as f64 * 2f64.powf(doublings)
        }
    }
}

/// The run's scheduler: VM starts and reading slots (see the module's documentation).
pub(crate) struct Scheduler {
    /// Guest fix-ups at once.
    pub(crate) fixups: tokio::sync::Semaphore,
    cap: usize,
    slots: usize,
    /// Starts follow [`may_start`]; otherwise only the cap.
    adaptive: bool,
    /// Planned VMs and disks.
    vms_total: usize,
    disks_total: usize,
    state: Mutex<State>,
    changed: Notify,
}

impl Scheduler {
    /// At most `cap` VMs at once (`adaptive`: below it, as the link needs), `slots` disks
    /// reading at once and `fixups` guest fix-ups, for a run of `vms_total` VMs with
    /// `disks_total` disks.
    pub(crate) fn new(
        cap: usize,
        slots: usize,
        fixups: usize,
        adaptive: bool,
        vms_total: usize,
        disks_total: usize,
    ) -> Self {
        let now = Instant::now();
        Scheduler {
            fixups: tokio::sync::Semaphore::new(fixups.max(1)),
            cap: cap.max(1),
            slots: slots.max(1),
            adaptive,
            vms_total,
            disks_total,
            state: Mutex::new(State {
                in_flight: 0,
                finished: 0,
                free_slots: slots.max(1),
                queue: BTreeSet::new(),
                arrivals: 0,
                vms: BTreeMap::new(),
                disks: HashMap::new(),
                known_disks: 0,
                known_bytes: 0,
                prep_sum: 0.0,
                prep_count: 0,
                busy_bytes: 0,
                busy: Duration::ZERO,
                last: now,
                done_bytes: 0,
                read_bytes: 0,
                samples: VecDeque::new(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the next VM may start, and starts VM `vm` (`disks` disks). One caller
    /// starts the VMs one after the other, in the run's order; the VM is finished when the
    /// returned ticket is dropped.
    pub(crate) async fn start(&self, vm: usize, name: &str, disks: usize) -> VmTicket<'_> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                let now = Instant::now();
                if st.in_flight < self.cap
                    && (!self.adaptive || may_start(&self.load(&mut st, now), self.cap, self.slots))
                {
                    st.in_flight += 1;
                    st.vms.insert(
                        vm,
                        VmState {
                            name: name.to_string(),
                            started: now,
                            phase: "starting".into(),
                            disks,
                        },
                    );
                    for i in 0..disks {
                        st.disks.insert(
                            (vm, i),
                            DiskState {
                                phase: Phase::Preparing,
                                bytes: None,
                                done: 0,
                                resumed: None,
                            },
                        );
                    }
                    return VmTicket { sched: self, vm };
                }
            }
            // The rule also changes with time (the ramp, the oldest preparation's age).
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// What [`may_start`] looks at, now.
    fn load(&self, st: &mut State, now: Instant) -> Load {
        account(st, now);
        let mut load = Load {
            in_flight: st.in_flight,
            free_slots: st.free_slots,
            ..Load::default()
        };
        for (&(vm, _), d) in &st.disks {
            match d.phase {
                Phase::Preparing => {
                    load.preparing += 1;
                    if let Some(v) = st.vms.get(&vm) {
                        let age = now.duration_since(v.started).as_secs_f64();
                        load.oldest_preparing = load.oldest_preparing.max(age);
                    }
                }
                Phase::Ready | Phase::Reading => {
                    if d.phase == Phase::Ready {
                        load.waiting += 1;
                    }
                    load.queued_bytes += d.bytes.unwrap_or(0).saturating_sub(d.done);
                }
                Phase::Over => {}
            }
        }
        if st.known_disks > 0 {
            load.bytes_per_disk = Some(st.known_bytes as f64 / st.known_disks as f64);
        }
        if st.busy >= Duration::from_millis(500) && st.busy_bytes > 0 {
            load.rate = Some(st.busy_bytes as f64 / st.busy.as_secs_f64());
        }
        if st.prep_count > 0 {
            load.prep = Some(st.prep_sum / f64::from(st.prep_count));
        }
        load
    }

    /// Disk `i` of VM `vm` is readable, with `bytes` to read.
    pub(crate) fn ready(&self, vm: usize, i: usize, bytes: u64) {
        let mut st = self.lock();
        let now = Instant::now();
        let started = st.vms.get(&vm).map(|v| v.started);
        let Some(d) = st.disks.get_mut(&(vm, i)) else {
            return;
        };
        if d.phase != Phase::Preparing {
            return;
        }
        d.phase = Phase::Ready;
        d.bytes = Some(bytes);
        st.known_disks += 1;
        st.known_bytes += bytes;
        if let Some(started) = started {
            st.prep_sum += now.duration_since(started).as_secs_f64();
            st.prep_count += 1;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Disk `i` of VM `vm` is over: read, failed, or nothing to do.
    pub(crate) fn over(&self, vm: usize, i: usize) {
        let mut st = self.lock();
        account(&mut st, Instant::now());
        let Some(d) = st.disks.get_mut(&(vm, i)) else {
            drop(st);
            self.changed.notify_waiters();
            return;
        };
        let (phase, unread) = (d.phase, d.bytes.unwrap_or(0).saturating_sub(d.done));
        d.phase = Phase::Over;
        match phase {
            // Never ready: it counts as known, with nothing to read.
            Phase::Preparing => st.known_disks += 1,
            // Failed (or interrupted) before it was read in full: what it did not read is
            // not to do any more.
            Phase::Ready | Phase::Reading => st.known_bytes -= unread.min(st.known_bytes),
            Phase::Over => {}
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Disk `i` of VM `vm` has `done` of its bytes (a conversion's progress).
    pub(crate) fn progress(&self, vm: usize, i: usize, done: u64, total: u64) {
        let mut st = self.lock();
        let now = Instant::now();
        account(&mut st, now);
        let Some(d) = st.disks.get_mut(&(vm, i)) else {
            return;
        };
        // The conversion's total (ranges aligned to clusters) replaces the first count.
        let before = d.bytes.replace(total);
        let known = d.phase != Phase::Preparing;
        if known {
            st.known_bytes = (st.known_bytes + total).saturating_sub(before.unwrap_or(0));
        }
        let Some(d) = st.disks.get_mut(&(vm, i)) else {
            return;
        };
        let delta = done.saturating_sub(d.done);
        let resumed = d.resumed.is_none();
        if resumed {
            // The first report is what an earlier run did.
            d.resumed = Some(done);
        }
        d.done = d.done.max(done);
        st.done_bytes += delta;
        if !resumed {
            st.busy_bytes += delta;
            st.read_bytes += delta;
        }
    }

    /// What VM `vm` is doing now, for progress.
    pub(crate) fn phase(&self, vm: usize, phase: &str) {
        if let Some(v) = self.lock().vms.get_mut(&vm) {
            v.phase = phase.to_string();
        }
    }

    /// A reading slot for disk `i` of VM `vm` (`None`: a disk the scheduler does not track),
    /// with `bytes` to read: the largest waiting disk gets the next free slot.
    pub(crate) async fn slot(&self, disk: Option<(usize, usize)>, bytes: u64) -> Slot<'_> {
        let ticket = {
            let mut st = self.lock();
            st.arrivals += 1;
            let t = (std::cmp::Reverse(bytes), st.arrivals);
            st.queue.insert(t);
            t
        };
        let mut waiting = Waiting {
            sched: self,
            ticket: Some(ticket),
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if st.free_slots > 0 && st.queue.first() == Some(&ticket) {
                    st.queue.remove(&ticket);
                    waiting.ticket = None;
                    account(&mut st, Instant::now());
                    st.free_slots -= 1;
                    if let Some(d) = disk.and_then(|k| st.disks.get_mut(&k)) {
                        d.phase = Phase::Reading;
                    }
                    return Slot { sched: self, disk };
                }
            }
            notified.await;
        }
    }

    /// The run's progress now.
    pub(crate) fn snapshot(&self) -> FleetProgress {
        let mut st = self.lock();
        let now = Instant::now();
        let load = self.load(&mut st, now);
        // The recent rate, idle time included: what an ETA can count on.
        let read = st.read_bytes;
        st.samples.push_back((now, read));
        while st
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            st.samples.pop_front();
        }
        let rate = st.samples.front().and_then(|&(t, b)| {
            let secs = now.duration_since(t).as_secs_f64();
            (secs >= 1.0).then(|| (read - b) as f64 / secs)
        });
        let unknown = self.disks_total.saturating_sub(st.known_disks);
        let expected_unknown = load
            .bytes_per_disk
            .map_or(0, |b| (b * unknown as f64) as u64);
        let bytes_expected = st.known_bytes + expected_unknown;
        let left = bytes_expected.saturating_sub(st.done_bytes);
        let eta_seconds = rate.filter(|r| *r > 0.0).map(|r| left as f64 / r);
        let in_flight = st
            .vms
            .iter()
            .map(|(&vm, v)| {
                let mut line = VmInFlight {
                    vm: v.name.clone(),
                    phase: v.phase.clone(),
                    seconds: now.duration_since(v.started).as_secs_f64(),
                    disks: v.disks,
                    disks_reading: 0,
                    disks_waiting: 0,
                    bytes_done: 0,
                    bytes_known: 0,
                };
                for i in 0..v.disks {
                    if let Some(d) = st.disks.get(&(vm, i)) {
                        line.disks_reading += usize::from(d.phase == Phase::Reading);
                        line.disks_waiting += usize::from(d.phase == Phase::Ready);
                        line.bytes_done += d.done;
                        line.bytes_known += d.bytes.unwrap_or(0);
                    }
                }
                line
            })
            .collect();
        FleetProgress {
            vms: self.vms_total,
            vms_finished: st.finished,
            vms_in_flight: st.in_flight,
            disks: self.disks_total,
            disks_known: st.known_disks,
            bytes_done: st.done_bytes,
            bytes_known: st.known_bytes,
            bytes_expected,
            rate,
            eta_seconds,
            in_flight,
        }
    }
}

/// Time some disk spent reading counts toward the rate.
fn account(st: &mut State, now: Instant) {
    let reading = st.disks.values().any(|d| d.phase == Phase::Reading);
    if reading {
        st.busy += now.saturating_duration_since(st.last);
    }
    st.last = now;
}

/// A started VM; dropping it finishes the VM (its disks are over, its place is free).
pub(crate) struct VmTicket<'a> {
    sched: &'a Scheduler,
    vm: usize,
}

impl Drop for VmTicket<'_> {
    fn drop(&mut self) {
        let mut st = self.sched.lock();
        account(&mut st, Instant::now());
        st.in_flight -= 1;
        st.finished += 1;
        if let Some(v) = st.vms.remove(&self.vm) {
            for i in 0..v.disks {
                if let Some(d) = st.disks.remove(&(self.vm, i)) {
                    if d.phase == Phase::Preparing {
                        st.known_disks += 1;
                    }
                }
            }
        }
        drop(st);
        self.sched.changed.notify_waiters();
    }
}

/// A reading slot; given back when dropped.
pub(crate) struct Slot<'a> {
    sched: &'a Scheduler,
    disk: Option<(usize, usize)>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut st = self.sched.lock();
        account(&mut st, Instant::now());
        st.free_slots += 1;
        drop(st);
        match self.disk {
            Some((vm, i)) => self.sched.over(vm, i),
            None => self.sched.changed.notify_waiters(),
        }
    }
}

/// A place in the slot queue, left if the waiting is cancelled.
struct Waiting<'a> {
    sched: &'a Scheduler,
    ticket: Option<(std::cmp::Reverse<u64>, u64)>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.sched.lock().queue.remove(&t);
            // The next in line may take the slot this one would have.
            self.sched.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> Load {
        Load {
            in_flight: 4,
            preparing: 4,
            waiting: 2,
            free_slots: 0,
            queued_bytes: 400 << 20,
            bytes_per_disk: Some(100.0 * 1048576.0),
            rate: Some(100.0 * 1048576.0),
            prep: Some(30.0),
            oldest_preparing: 10.0,
        }
    }

    #[test]
    fn never_beyond_the_cap() {
        let l = Load {
            free_slots: 4,
            waiting: 0,
            preparing: 0,
            ..load()
        };
        assert!(may_start(&l, 5, 4));
        assert!(!may_start(&l, 4, 4));
    }

    #[test]
    fn starts_while_known_work_drains_before_a_new_vm_is_ready() {
        // 400 MiB queued + 4 × 100 MiB expected = 8 s at 100 MiB/s, against 30 s to ready.
        assert!(may_start(&load(), 64, 4));
        // 40 disks expected: 44 s of work, more than 30 × 1.25 + 1.
        let l = Load {
            preparing: 40,
            ..load()
        };
        assert!(!may_start(&l, 64, 4));
        // The oldest preparation has taken 60 s already: the operations are slower now.
        let l = Load {
            preparing: 40,
            oldest_preparing: 60.0,
            ..load()
        };
        assert!(may_start(&l, 64, 4));
    }

    #[test]
    fn slow_links_do_not_start_vms_ahead() {
        // 10 MiB/s: the queued 400 MiB alone last 40 s.
        let l = Load {
            rate: Some(10.0 * 1048576.0),
            preparing: 0,
            ..load()
        };
        assert!(!may_start(&l, 64, 4));
    }

    #[test]
    fn an_idle_slot_starts_a_vm() {
        let l = Load {
            free_slots: 4,
            waiting: 1,
            preparing: 2,
            rate: Some(1.0),
            ..load()
        };
        assert!(may_start(&l, 64, 4));
    }

    #[test]
    fn before_anything_is_known_preparation_doubles_while_nothing_is_ready() {
        let l = Load {
            rate: None,
            bytes_per_disk: None,
            prep: None,
            free_slots: 4,
            waiting: 0,
            queued_bytes: 0,
            preparing: 4,
            oldest_preparing: 0.0,
            in_flight: 2,
        };
        assert!(!may_start(&l, 64, 4));
        let later = Load {
            oldest_preparing: 4.5,
            ..l
        };
        assert!(may_start(&later, 64, 4));
        let l8 = Load {
            preparing: 8,
            ..later
        };
        assert!(!may_start(&l8, 64, 4));
        let much_later = Load {
            preparing: 8,
            oldest_preparing: 8.1,
            ..l
        };
        assert!(may_start(&much_later, 64, 4));
    }

    #[tokio::test]
    async fn the_largest_waiting_disk_gets_the_next_slot() {
        let s = std::sync::Arc::new(Scheduler::new(4, 1, 4, false, 0, 0));
        let first = s.slot(None, 1).await;
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for bytes in [10u64, 30, 20] {
            let (s, order) = (s.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = s.slot(None, bytes).await;
                order.lock().unwrap().push(bytes);
            }));
            // Queued in this order.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![30, 20, 10]);
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let s = Scheduler::new(4, 1, 4, false, 0, 0);
        let first = s.slot(None, 1).await;
        {
            let big = s.slot(None, 100);
            // Polled once (queued), then dropped.
            let _ = tokio::time::timeout(Duration::from_millis(10), big).await;
        }
        drop(first);
        let _next = tokio::time::timeout(Duration::from_secs(5), s.slot(None, 1))
            .await
            .expect("the cancelled waiter does not hold the slot");
    }

    #[tokio::test]
    async fn vms_start_within_the_cap() {
        let s = std::sync::Arc::new(Scheduler::new(2, 4, 4, false, 3, 3));
        let a = s.start(0, "a", 1).await;
        let b = s.start(1, "b", 1).await;
        let s2 = s.clone();
        let third = tokio::spawn(async move {
            let _t = s2.start(2, "c", 1).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third VM waits for the cap");
        assert_eq!(s.snapshot().vms_in_flight, 2);
        drop(a);
        third.await.unwrap();
        drop(b);
        let p = s.snapshot();
        assert_eq!((p.vms_finished, p.vms_in_flight), (3, 0));
    }

    #[tokio::test]
    async fn progress_counts_bytes_from_the_ranges_and_resumed_apart() {
        let s = Scheduler::new(4, 4, 4, true, 2, 3);
        let t = s.start(0, "a", 2).await;
        s.ready(0, 0, 1000);
        s.over(0, 1);
        let slot = s.slot(Some((0, 0)), 1000).await;
        // An earlier run had done 300.
        s.progress(0, 0, 300, 1000);
        s.progress(0, 0, 800, 1000);
        let p = s.snapshot();
        assert_eq!(p.bytes_done, 800);
        assert_eq!(p.bytes_known, 1000);
        assert_eq!(p.disks_known, 2);
        // The third disk (of a VM not started) is expected at the mean of the known ones.
        assert_eq!(p.bytes_expected, 1500);
        assert_eq!(p.in_flight.len(), 1);
        assert_eq!(p.in_flight[0].disks_reading, 1);
        assert_eq!(s.lock().busy_bytes, 500);
        drop(slot);
        drop(t);
    }

    #[tokio::test]
    async fn a_disk_that_fails_leaves_what_it_did_not_read_out_of_the_bytes_to_do() {
        let s = Scheduler::new(4, 4, 4, true, 1, 1);
        let t = s.start(0, "a", 1).await;
        s.ready(0, 0, 1000);
        let slot = s.slot(Some((0, 0)), 1000).await;
        s.progress(0, 0, 0, 1000);
        s.progress(0, 0, 400, 1000);
        // The conversion fails: its slot is given back.
        drop(slot);
        let p = s.snapshot();
        assert_eq!(
            (p.bytes_done, p.bytes_known, p.bytes_expected),
            (400, 400, 400)
        );
        drop(t);
    }
}
