//! Requests served, per route, so tests and benchmarks can assert how a client talks to ARM
//! ("three paged list calls, nothing per VM").

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The routes the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// `GET /subscriptions/{s}/providers/Microsoft.Compute/virtualMachines`
    ListVms,
    /// The same with `statusOnly=true`.
    ListVmStatuses,
    /// `GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines`
    ListVmsInGroup,
    /// `GET .../virtualMachines/{name}`
    GetVm,
    /// `GET /subscriptions/{s}/providers/Microsoft.Compute/disks`
    ListDisks,
    /// `GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/disks`
    ListDisksInGroup,
    /// `GET .../disks/{name}`
    GetDisk,
    /// `POST .../disks/{d}/beginGetAccess` and `.../snapshots/{s}/beginGetAccess`
    BeginGetAccess,
    /// `POST .../endGetAccess` of a disk or snapshot
    EndGetAccess,
    /// `PUT`, `GET` and `DELETE .../snapshots/{s}`
    Snapshot,
    /// Polls of a long-running operation (`Location` or `Azure-AsyncOperation`)
    PollOperation,
    /// `POST .../virtualMachines/{vm}/powerOff`, `/deallocate`, `/start`
    PowerOperation,
    /// `GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{loc}/vmSizes`
    ListVmSizes,
    /// `HEAD` of a granted blob
    BlobHead,
    /// `GET` of a granted blob's bytes (ranged or whole)
    BlobGet,
    /// `GET ?comp=pagelist` of a granted blob
    BlobPageList,
    /// Anything else (answered 404).
    Other,
}

impl Route {
    /// Every route, in a fixed order.
    pub const ALL: [Route; ROUTES] = [
        Route::ListVms,
        Route::ListVmStatuses,
        Route::ListVmsInGroup,
        Route::GetVm,
        Route::ListDisks,
        Route::ListDisksInGroup,
        Route::GetDisk,
        Route::BeginGetAccess,
        Route::EndGetAccess,
        Route::Snapshot,
        Route::PollOperation,
        Route::PowerOperation,
        Route::ListVmSizes,
        Route::BlobHead,
        Route::BlobGet,
        Route::BlobPageList,
        Route::Other,
    ];

    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ListVms => "list_vms",
            Route::ListVmStatuses => "list_vm_statuses",
            Route::ListVmsInGroup => "list_vms_in_group",
            Route::GetVm => "get_vm",
            Route::ListDisks => "list_disks",
            Route::ListDisksInGroup => "list_disks_in_group",
            Route::GetDisk => "get_disk",
            Route::BeginGetAccess => "begin_get_access",
            Route::EndGetAccess => "end_get_access",
            Route::Snapshot => "snapshot",
            Route::PollOperation => "poll_operation",
            Route::PowerOperation => "power_operation",
            Route::ListVmSizes => "list_vm_sizes",
            Route::BlobHead => "blob_head",
            Route::BlobGet => "blob_get",
            Route::BlobPageList => "blob_page_list",
            Route::Other => "other",
        }
    }

    fn index(self) -> usize {
        Route::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const ROUTES: usize = 17;

/// Counts of requests received and requests answered 429, per route; access grants,
/// snapshots, bytes served and injected blob faults.
#[derive(Debug, Default)]
pub struct Counters {
    received: [AtomicU64; ROUTES],
    throttled: [AtomicU64; ROUTES],
    failed: [AtomicU64; ROUTES],
    sequence: AtomicU64,
    authorized: AtomicU64,
    pub(crate) blob_sequence: AtomicU64,
    pub(crate) open_grants: AtomicU64,
    pub(crate) grants: AtomicU64,
    pub(crate) revokes: AtomicU64,
    pub(crate) snapshots_alive: AtomicU64,
    pub(crate) snapshots_created: AtomicU64,
    pub(crate) bytes_served: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) truncations: AtomicU64,
    pub(crate) bad_md5: AtomicU64,
    pub(crate) sas_refused: AtomicU64,
    pub(crate) grant_conflicts: AtomicU64,
    /// Every distinct `(method, path)` received (distinct, so a long benchmark's reads of
    /// one blob stay one entry).
    paths: Mutex<BTreeSet<(String, String)>>,
    pub(crate) cleanup_conflicts: AtomicU64,
}

impl Counters {
    /// Notes that `method` `path` was received, whatever the route.
    pub(crate) fn record_path(&self, method: &str, path: &str) {
        self.paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((method.to_string(), path.to_string()));
    }

    /// Every distinct method and path received so far (ARM and blob), sorted: what a client
    /// asked for, e.g. to check it against a list of the permissions it needs.
    pub fn paths(&self) -> Vec<(String, String)> {
        let paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        paths.iter().cloned().collect()
    }

    /// Counts a request on `route` and returns its number (from 1) across all routes.
    pub(crate) fn record(&self, route: Route, authorized: bool) -> u64 {
        self.received[route.index()].fetch_add(1, Ordering::SeqCst);
        if authorized {
            self.authorized.fetch_add(1, Ordering::SeqCst);
        }
        self.sequence.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Counts a blob request on `route` and returns its number among blob requests (from 1);
    /// blob requests do not advance the ARM numbering that [`Throttle`](crate::Throttle)
    /// and [`Failures`](crate::Failures) use.
    pub(crate) fn record_blob(&self, route: Route) -> u64 {
        self.received[route.index()].fetch_add(1, Ordering::SeqCst);
        self.blob_sequence.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Access grants open now (granted and not revoked), disks and snapshots.
    pub fn open_grants(&self) -> u64 {
        self.open_grants.load(Ordering::SeqCst)
    }

    /// `beginGetAccess` calls that granted access.
    pub fn grants(&self) -> u64 {
        self.grants.load(Ordering::SeqCst)
    }

    /// `endGetAccess` calls (with or without an open grant).
    pub fn revokes(&self) -> u64 {
        self.revokes.load(Ordering::SeqCst)
    }

    /// Snapshots that exist now.
    pub fn snapshots_alive(&self) -> u64 {
        self.snapshots_alive.load(Ordering::SeqCst)
    }

    /// Snapshots created.
    pub fn snapshots_created(&self) -> u64 {
        self.snapshots_created.load(Ordering::SeqCst)
    }

    /// Body bytes sent for blob `GET`s of data (ranged or whole), cut bodies included.
    pub fn bytes_served(&self) -> u64 {
        self.bytes_served.load(Ordering::SeqCst)
    }

    /// Bodies broken off by an injected connection reset.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::SeqCst)
    }

    /// Bodies cut short by an injected truncation.
    pub fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::SeqCst)
    }

    /// Ranged GETs sent with a wrong `Content-MD5` on purpose.
    pub fn bad_md5(&self) -> u64 {
        self.bad_md5.load(Ordering::SeqCst)
    }

    /// Blob requests refused `403` (wrong, expired or revoked SAS).
    pub fn sas_refused(&self) -> u64 {
        self.sas_refused.load(Ordering::SeqCst)
    }

    /// Grants refused `409` by an injected conflict.
    pub fn grant_conflicts(&self) -> u64 {
        self.grant_conflicts.load(Ordering::SeqCst)
    }

    /// Revokes and snapshot deletes refused `409` by a disk's `revoke_conflict` or
    /// `delete_conflict` fault.
    pub fn cleanup_conflicts(&self) -> u64 {
        self.cleanup_conflicts.load(Ordering::SeqCst)
    }

    pub(crate) fn record_throttled(&self, route: Route) {
        self.throttled[route.index()].fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn record_failed(&self, route: Route) {
        self.failed[route.index()].fetch_add(1, Ordering::SeqCst);
    }

    /// Requests on `route` answered with an injected server error.
    pub fn failed(&self, route: Route) -> u64 {
        self.failed[route.index()].load(Ordering::SeqCst)
    }

    /// Requests answered with an injected server error on all routes.
    pub fn total_failed(&self) -> u64 {
        Route::ALL.iter().map(|&r| self.failed(r)).sum()
    }

    /// Requests received on `route`, throttled and failed ones included.
    pub fn received(&self, route: Route) -> u64 {
        self.received[route.index()].load(Ordering::SeqCst)
    }

    /// Requests on `route` answered 429.
    pub fn throttled(&self, route: Route) -> u64 {
        self.throttled[route.index()].load(Ordering::SeqCst)
    }

    /// Requests on `route` answered normally (received minus throttled and failed).
    pub fn served(&self, route: Route) -> u64 {
        self.received(route) - self.throttled(route) - self.failed(route)
    }

    /// Requests received on all routes.
    pub fn total(&self) -> u64 {
        Route::ALL.iter().map(|&r| self.received(r)).sum()
    }

    /// Requests answered 429 on all routes.
    pub fn total_throttled(&self) -> u64 {
        Route::ALL.iter().map(|&r| self.throttled(r)).sum()
    }

    /// Requests that carried an `Authorization` header (the simulator ignores its value).
    pub fn with_authorization(&self) -> u64 {
        self.authorized.load(Ordering::SeqCst)
    }

    /// Sets every count back to zero (throttling restarts from request 1); the gauges (open
    /// grants, snapshots alive) keep their values.
    pub fn reset(&self) {
        for c in self
            .received
            .iter()
            .chain(&self.throttled)
            .chain(&self.failed)
            .chain([
                &self.blob_sequence,
                &self.grants,
                &self.revokes,
                &self.snapshots_created,
                &self.bytes_served,
                &self.resets,
                &self.truncations,
                &self.bad_md5,
                &self.sas_refused,
                &self.grant_conflicts,
                &self.cleanup_conflicts,
            ])
        {
            c.store(0, Ordering::SeqCst);
        }
        self.sequence.store(0, Ordering::SeqCst);
        self.authorized.store(0, Ordering::SeqCst);
    }

    /// `(route, received, throttled)` for every route that saw a request.
    pub fn snapshot(&self) -> Vec<(Route, u64, u64)> {
        Route::ALL
            .iter()
            .map(|&r| (r, self.received(r), self.throttled(r)))
            .filter(|&(_, n, _)| n > 0)
            .collect()
    }
}
