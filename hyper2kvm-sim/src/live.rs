//! A running VM's disks change while a warm migration copies them: writes and trims between
//! snapshots, a disk deleted and recreated under the same name, a disk resized. This module
//! holds each disk's state *now* (the fleet holds it as the scenario started) and the control
//! endpoint tests and scripts change it with.
//!
//! Control endpoint (not Azure's; plain HTTP on the simulator's address, no authentication):
//!
//! ```text
//! POST /_sim/disks/{name}/write?offset=O&length=L&seed=S   L bytes at O written (bytes from S)
//! POST /_sim/disks/{name}/trim?offset=O&length=L           L bytes at O trimmed (zeros)
//! POST /_sim/disks/{name}/recreate                         deleted and created again, empty,
//!                                                          with a new uniqueId
//! POST /_sim/disks/{name}/resize?size_bytes=N              grown to N bytes
//! ```
//!
//! Offsets and lengths are multiples of 512 inside the disk; the answer is `204`, or `400` /
//! `404` with the reason as text. [`SimHandle`](crate::SimHandle) has the same as methods.
//!
//! Incremental snapshots are rate limited per disk ([`IncrementalLimits`]); the times of the
//! recent ones are kept here too.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::content::DiskContent;
use crate::error::{Error, ErrorKind};
use crate::scenario::SimDisk;
use crate::server::Shared;

/// Azure's limits on incremental snapshots, which the simulator enforces.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IncrementalLimits {
    /// Incremental snapshots of one disk allowed per window; more are answered `429` with
    /// `Retry-After` (Azure: 7 per 5 minutes).
    pub per_window: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Incremental snapshots of one disk (its snapshot family) that may have a SAS open at
    /// once; one more grant is answered `409` (Azure: 5).
    pub open_grants_per_family: u32,
}

impl Default for IncrementalLimits {
    fn default() -> Self {
        IncrementalLimits {
            per_window: 7,
            window_secs: 300,
            open_grants_per_family: 5,
        }
    }
}

/// A disk as it is now.
#[derive(Debug, Clone)]
pub(crate) struct LiveDisk {
    pub content: DiskContent,
    pub size: u64,
    /// Bumped when the disk is recreated; part of its `uniqueId`.
    pub incarnation: u32,
    /// When its recent incremental snapshots were created.
    pub recent_incrementals: Vec<Instant>,
}

impl LiveDisk {
    pub(crate) fn of(disk: &SimDisk) -> Self {
        LiveDisk {
            content: disk.content.clone(),
            size: disk.size_bytes,
            incarnation: 0,
            recent_incrementals: Vec::new(),
        }
    }

    /// Notes an incremental snapshot now, or says how long to wait before one is allowed.
    pub fn take_incremental(&mut self, limits: IncrementalLimits) -> Result<(), Duration> {
        let window = Duration::from_secs(limits.window_secs);
        let now = Instant::now();
        self.recent_incrementals
            .retain(|t| now.duration_since(*t) < window);
        if self.recent_incrementals.len() >= limits.per_window as usize {
            let oldest = self.recent_incrementals[0];
            return Err(window.saturating_sub(now.duration_since(oldest)));
        }
        self.recent_incrementals.push(now);
        Ok(())
    }
}

/// The `uniqueId` of the disk `id` in its `incarnation`: stable, and new when recreated.
pub(crate) fn unique_id(id: &str, incarnation: u32) -> String {
    let id = id.to_ascii_lowercase();
    match incarnation {
        0 => crate::arm_json::fake_guid(&id),
        n => crate::arm_json::fake_guid(&format!("{id}#{n}")),
    }
}

/// One change to a disk.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Write { range: Range<u64>, seed: u64 },
    Trim(Range<u64>),
    Recreate,
    Resize(u64),
}

impl Shared {
    /// The disk's state now; `id` is its ARM id (any case).
    pub(crate) fn live_disk(&self, id: &str, disk: &SimDisk) -> LiveDisk {
        let state = self.export.lock().unwrap_or_else(|e| e.into_inner());
        state
            .live
            .get(&id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| LiveDisk::of(disk))
    }

    /// Changes the disk `name` (case-insensitive).
    pub(crate) fn mutate(&self, name: &str, m: Mutation) -> Result<(), Error> {
        let (_, disk, id) = self
            .fleet
            .disk_by_name(name)
            .ok_or_else(|| Error::new(ErrorKind::UnknownDisk, format!("no disk named {name}")))?;
        let mut state = self.export.lock().unwrap_or_else(|e| e.into_inner());
        let live = state
            .live
            .entry(id.to_ascii_lowercase())
            .or_insert_with(|| LiveDisk::of(disk));
        let bad = |m: String| Err(Error::new(ErrorKind::InvalidChange, m));
        let fits = |r: &Range<u64>, size: u64| {
            r.start.is_multiple_of(512)
                && r.end.is_multiple_of(512)
                && r.start < r.end
                && r.end <= size
        };
        match m {
            Mutation::Write { range, seed } if fits(&range, live.size) => {
                live.content = live.content.write(range, seed);
            }
            Mutation::Trim(range) if fits(&range, live.size) => {
                live.content = live.content.trim(range);
            }
            Mutation::Write { range, .. } | Mutation::Trim(range) => {
                return bad(format!(
                    "{}..{} is not 512-aligned or does not fit the disk of {} bytes",
                    range.start, range.end, live.size
                ))
            }
            Mutation::Recreate => {
                live.content = DiskContent::empty();
                live.incarnation += 1;
                live.recent_incrementals.clear();
            }
            Mutation::Resize(size) if size >= live.size && size.is_multiple_of(1 << 20) => {
                live.size = size;
            }
            Mutation::Resize(size) => {
                return bad(format!(
                    "a disk can only grow, to a multiple of 1 MiB: {size} (now {})",
                    live.size
                ))
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
pub(crate) struct ControlQuery {
    offset: Option<u64>,
    length: Option<u64>,
    seed: Option<u64>,
    size_bytes: Option<u64>,
}

/// `POST /_sim/disks/{name}/{write|trim|recreate|resize}`.
pub(crate) async fn control(
    State(st): State<Arc<Shared>>,
    Path((name, action)): Path<(String, String)>,
    Query(q): Query<ControlQuery>,
) -> Response {
    let range = || match (q.offset, q.length) {
        (Some(o), Some(l)) => Ok(o..o.saturating_add(l)),
        _ => Err("offset and length are required"),
    };
    let m = match action.as_str() {
        "write" => range().map(|range| Mutation::Write {
            range,
            seed: q.seed.unwrap_or(1),
        }),
        "trim" => range().map(Mutation::Trim),
        "recreate" => Ok(Mutation::Recreate),
        "resize" => q
            .size_bytes
            .map(Mutation::Resize)
            .ok_or("size_bytes is required"),
        _ => Err("the actions are write, trim, recreate and resize"),
    };
    let m = match m {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    match st.mutate(&name, m) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.kind() == ErrorKind::UnknownDisk => {
            (StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// Live state by lower-cased disk id (only disks that changed or were snapshotted).
pub(crate) type LiveDisks = HashMap<String, LiveDisk>;
