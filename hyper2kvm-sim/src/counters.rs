//! Requests served, per route, so tests and benchmarks can assert how a client talks to ARM
//! ("three paged list calls, nothing per VM").

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Anything else (answered 404).
    Other,
}

impl Route {
    /// Every route, in a fixed order.
    pub const ALL: [Route; 8] = [
        Route::ListVms,
        Route::ListVmStatuses,
        Route::ListVmsInGroup,
        Route::GetVm,
        Route::ListDisks,
        Route::ListDisksInGroup,
        Route::GetDisk,
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

/// Counts of requests received and requests answered 429, per route.
#[derive(Debug, Default)]
pub struct Counters {
    received: [AtomicU64; 8],
    throttled: [AtomicU64; 8],
    failed: [AtomicU64; 8],
    sequence: AtomicU64,
    authorized: AtomicU64,
}

impl Counters {
    /// Counts a request on `route` and returns its number (from 1) across all routes.
    pub(crate) fn record(&self, route: Route, authorized: bool) -> u64 {
        self.received[route.index()].fetch_add(1, Ordering::SeqCst);
        if authorized {
            self.authorized.fetch_add(1, Ordering::SeqCst);
        }
        self.sequence.fetch_add(1, Ordering::SeqCst) + 1
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

    /// Sets every count back to zero (throttling restarts from request 1).
    pub fn reset(&self) {
        for c in self
            .received
            .iter()
            .chain(&self.throttled)
            .chain(&self.failed)
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
