//! Disk export over ARM: read access grants (`beginGetAccess` / `endGetAccess`) of disks and
//! snapshots, snapshots, VM power operations and VM sizes, answered with ARM's
//! long-running-operation shapes.
//!
//! An operation takes effect when it is accepted; what the client polls is only its answer:
//! `202 Accepted` with `Location`, `Azure-AsyncOperation` and `Retry-After`; the `Location`
//! answers `202` [`OperationSettings::polls`](crate::OperationSettings) times, then `200` with
//! the result; the `Azure-AsyncOperation` answers `{"status": "InProgress"}` likewise, then
//! `{"status": "Succeeded", "properties": {"output": …}}`. With `immediate`, the first answer
//! is `200` with the result.
//!
//! Azure's rules: a disk attached to a VM that is not deallocated (running *or* stopped)
//! cannot be granted (`409 OperationNotAllowed`); revoking without a grant succeeds; a
//! snapshot with an open grant cannot be deleted (`409`).
//!
//! A disk's [`DiskFault`] passes to its snapshots: `grant_denied` refuses `beginGetAccess`
//! with `403 AuthorizationFailed`, `snapshot_fails` refuses the snapshot's `PUT` with `409`,
//! and `read_fails` is carried by the grant to the blob data plane; `revoke_conflict` refuses
//! `endGetAccess` and `delete_conflict` a snapshot's `DELETE`, both with `409`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

use crate::arm_json;
use crate::content::DiskContent;
use crate::counters::Route;
use crate::scenario::{DiskFault, OperationSettings, SimDisk, SimVm};
use crate::server::{arm_error, gate, Shared, Q};

/// A read grant on a disk or snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The lower-cased resource id the grant belongs to.
    pub resource: String,
    pub sig: String,
    pub expires: SystemTime,
    /// Blob requests made with this grant's SAS.
    pub requests: u64,
    pub content: DiskContent,
    pub size: u64,
    /// The source disk's fault (the blob plane acts on `read_fails`).
    pub fault: Option<DiskFault>,
    /// For an incremental snapshot, its family: the source disk's `uniqueId`.
    pub family: Option<String>,
}

/// What a grant serves: a disk's or snapshot's content, size and fault, and the snapshot
/// family of an incremental snapshot.
pub(crate) struct BlobSource {
    pub content: DiskContent,
    pub size: u64,
    pub fault: Option<DiskFault>,
    pub family: Option<String>,
}

/// A snapshot, holding its source's content at creation time (the content is immutable, so
/// sharing it is the same).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub id: String,
    pub name: String,
    pub location: String,
    pub tags: Value,
    pub source_id: String,
    pub size: u64,
    pub content: DiskContent,
    pub os: Option<(String, u8)>,
    /// The fault of the disk it was taken from.
    pub fault: Option<DiskFault>,
    /// `properties.incremental`.
    pub incremental: bool,
    /// The `uniqueId` of the disk it was taken from (`creationData.sourceUniqueId`); for
    /// an incremental snapshot, its family.
    pub source_unique_id: String,
}

#[derive(Debug, Clone)]
struct Operation {
    polls_left: u32,
    /// With `operations.seconds`: when it is done (polls before are answered `202`).
    done_at: Option<Instant>,
    /// The final body of the `Location` poll (`None`: empty), and the async operation's output.
    result: Option<Value>,
}

/// Mutable state of grants, snapshots, operations and power states.
#[derive(Default)]
pub(crate) struct ExportState {
    /// Open grants by their blob container name.
    pub grants: HashMap<String, Grant>,
    pub snapshots: HashMap<String, Snapshot>,
    operations: HashMap<String, Operation>,
    /// Power states changed by power operations, by lower-cased VM id.
    pub power: HashMap<String, String>,
    /// Disks as they are now, when they changed or were snapshotted incrementally.
    pub live: crate::live::LiveDisks,
    next: u64,
    rng: u64,
    /// Every signature handed out, so tests can look for leaks.
    pub signatures: Vec<String>,
}

impl ExportState {
    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// 32 random bytes, standard base64 (as Azure's `sig`).
    fn random_sig(&mut self) -> String {
        if self.rng == 0 {
            self.rng = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1;
        }
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn grant_of(&self, resource: &str) -> Option<&str> {
        self.grants
            .iter()
            .find(|(_, g)| g.resource == resource)
            .map(|(c, _)| c.as_str())
    }

    /// Opens (or replaces) the grant on `resource` and returns the SAS URL.
    pub fn grant(
        &mut self,
        st: &Shared,
        host: &str,
        resource: &str,
        source: BlobSource,
        duration: Duration,
    ) -> String {
        if let Some(old) = self.grant_of(resource).map(str::to_owned) {
            self.grants.remove(&old);
            st.counters.open_grants.fetch_sub(1, Ordering::SeqCst);
        }
        let faults = st.blob_faults();
        let duration = if faults.sas_expire_after_secs > 0 {
            Duration::from_secs(faults.sas_expire_after_secs)
        } else {
            duration
        };
        let container = format!("md-{:016x}", self.next_id() ^ 0x5bd1_e995_0000_0000);
        let sig = self.random_sig();
        let expires = SystemTime::now() + duration;
        let se = httpdate::fmt_http_date(expires);
        self.signatures.push(sig.clone());
        self.grants.insert(
            container.clone(),
            Grant {
                resource: resource.to_string(),
                sig: sig.clone(),
                expires,
                requests: 0,
                content: source.content,
                size: source.size,
                fault: source.fault,
                family: source.family,
            },
        );
        st.counters.open_grants.fetch_add(1, Ordering::SeqCst);
        st.counters.grants.fetch_add(1, Ordering::SeqCst);
        format!(
            "http://{host}/{BLOB_ACCOUNT}/{container}/abcd?sv=2018-03-28&sr=b&sig={}&se={}&sp=r",
            percent(&sig),
            percent(&se)
        )
    }

    /// Closes the grant on `resource`, if any.
    pub fn revoke(&mut self, st: &Shared, resource: &str) {
        if let Some(c) = self.grant_of(resource).map(str::to_owned) {
            self.grants.remove(&c);
            st.counters.open_grants.fetch_sub(1, Ordering::SeqCst);
        }
        st.counters.revokes.fetch_add(1, Ordering::SeqCst);
    }
}

/// The first path segment of a SAS URL. An IP-address URL is read path-style by Azure's
/// tools (AzCopy, the SDKs), as Azurite's: `http://IP:PORT/{account}/{container}/{blob}`, so
/// the simulator's URLs have an account segment, or AzCopy takes the container for the
/// account and lists the blob as a container.
pub(crate) const BLOB_ACCOUNT: &str = "mdsim";

/// Percent-encodes everything but unreserved characters, as a query value needs.
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string()
}

/// Starts a long-running operation whose result is `result` and answers as configured:
/// `200` with the result at once, or `202` with the polling headers. `target` (`deallocate
/// vm-01`, `beginGetAccess disk-1`, …) says what it does to what: it seeds its duration with
/// `operations.seconds`.
fn accepted(
    st: &Shared,
    headers: &HeaderMap,
    sub: &str,
    location: &str,
    target: &str,
    kind: &str,
    result: Option<Value>,
) -> Response {
    let ops = st.operations();
    let done_at = ops
        .seconds
        .map(|range| Instant::now() + crate::scenario::operation_duration(target, range));
    if done_at.is_none() && ops.immediate && ops.polls == 0 {
        return match result {
            Some(body) => (StatusCode::OK, Json(body)).into_response(),
            None => StatusCode::OK.into_response(),
        };
    }
    let mut state = st.export.lock().unwrap_or_else(|e| e.into_inner());
    let id = format!("{:08x}-0000-4000-8000-{:012x}", state.next_id(), state.next);
    state.operations.insert(
        id.clone(),
        Operation {
            polls_left: ops.polls,
            done_at,
            result,
        },
    );
    drop(state);
    let base = format!(
        "http://{}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/{kind}/{id}",
        host(headers)
    );
    let mut resp = StatusCode::ACCEPTED.into_response();
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(
        h,
        "location",
        format!("{base}?p=sim&monitor=true&api-version=2025-01-02"),
    );
    set(
        h,
        "azure-asyncoperation",
        format!("{base}?p=sim&api-version=2025-01-02"),
    );
    set(h, "retry-after", retry_after(&ops).to_string());
    resp
}

/// The `Retry-After` of a `202`: as configured, and at least 1 s for timed operations (so
/// that a client honouring it does not poll in a loop).
fn retry_after(ops: &OperationSettings) -> u64 {
    if ops.seconds.is_some() {
        ops.retry_after_secs.max(1)
    } else {
        ops.retry_after_secs
    }
}

/// `GET …/locations/{loc}/{DiskOperations|operations}/{id}`: the operation's status, as a
/// `Location` (with `monitor=true`) or as an `Azure-AsyncOperation`.
pub(crate) async fn poll(
    State(st): State<Arc<Shared>>,
    Path((_sub, _loc, _kind, id)): Path<(String, String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = gate(&st, Route::PollOperation, &headers).await {
        return r;
    }
    let monitor = q.get("monitor").is_some_and(|v| v == "true");
    let mut state = st.export.lock().unwrap_or_else(|e| e.into_inner());
    let Some(op) = state.operations.get_mut(&id) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The operation was not found.",
        );
    };
    let running = match op.done_at {
        Some(at) => Instant::now() < at,
        None => op.polls_left > 0,
    };
    if running && op.done_at.is_none() {
        op.polls_left -= 1;
    }
    let result = op.result.clone();
    drop(state);
    let retry_after = retry_after(&st.operations());
    if running {
        if monitor {
            let mut resp = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("http://{}{uri}", host(&headers))) {
                resp.headers_mut().insert("location", v);
            }
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            return resp;
        }
        let mut resp = Json(json!({
            "startTime": "2025-06-01T08:00:00.0000000+00:00",
            "status": "InProgress",
            "name": id
        }))
        .into_response();
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(retry_after));
        return resp;
    }
    if monitor {
        return match result {
            Some(body) => Json(body).into_response(),
            None => StatusCode::OK.into_response(),
        };
    }
    let mut body = json!({
        "startTime": "2025-06-01T08:00:00.0000000+00:00",
        "endTime": "2025-06-01T08:00:01.0000000+00:00",
        "status": "Succeeded",
        "name": id
    });
    if let Some(out) = result {
        body["properties"] = json!({ "output": out });
    }
    Json(body).into_response()
}

#[derive(serde::Deserialize)]
struct GrantRequest {
    #[serde(default)]
    access: String,
    #[serde(rename = "durationInSeconds", default)]
    duration_in_seconds: u64,
}

/// What can be granted: a disk (with the VM it is attached to) or a snapshot.
enum Target {
    Disk(SimDisk, Option<SimVm>),
    Snapshot(Snapshot),
}

/// The disk as it is now (after writes, trims, recreation and resizing), the VM it is
/// attached to, and its `uniqueId`.
fn find_disk(
    st: &Shared,
    sub: &str,
    rg: &str,
    name: &str,
) -> Option<(SimDisk, Option<SimVm>, String)> {
    let (mut disk, vm) = find_fleet_disk(st, sub, rg, name)?;
    let id = arm_json::disk_id(sub, &disk.resource_group, &disk.name);
    let live = st.live_disk(&id, &disk);
    disk.content = live.content;
    disk.size_bytes = live.size;
    Some((disk, vm, crate::live::unique_id(&id, live.incarnation)))
}

fn find_fleet_disk(
    st: &Shared,
    sub: &str,
    rg: &str,
    name: &str,
) -> Option<(SimDisk, Option<SimVm>)> {
    let attached = st.fleet.vms.iter().find_map(|vm| {
        vm.disks
            .iter()
            .find(|d| {
                vm.subscription.eq_ignore_ascii_case(sub)
                    && d.resource_group.eq_ignore_ascii_case(rg)
                    && d.name.eq_ignore_ascii_case(name)
            })
            .map(|d| (d.clone(), Some(vm.clone())))
    });
    attached.or_else(|| {
        st.fleet
            .unattached
            .iter()
            .find(|(s, d)| {
                s.eq_ignore_ascii_case(sub)
                    && d.resource_group.eq_ignore_ascii_case(rg)
                    && d.name.eq_ignore_ascii_case(name)
            })
            .map(|(_, d)| (d.clone(), None))
    })
}

fn snapshot_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{name}")
}

fn not_found(kind: &str, rg: &str, name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The Resource 'Microsoft.Compute/{kind}/{name}' under resource group '{rg}' was not found."),
    )
}

/// `POST …/{disks|snapshots}/{name}/{beginGetAccess|endGetAccess}`.
pub(crate) async fn access(
    State(st): State<Arc<Shared>>,
    Path((sub, rg, kind, name, action)): Path<(String, String, String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let begin = action.eq_ignore_ascii_case("beginGetAccess");
    if !begin && !action.eq_ignore_ascii_case("endGetAccess") {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("No action {action}"),
        );
    }
    let route = if begin {
        Route::BeginGetAccess
    } else {
        Route::EndGetAccess
    };
    if let Some(r) = gate(&st, route, &headers).await {
        return r;
    }
    if let Some(r) = crate::server::check_api_version(&q) {
        return r;
    }
    let (target, id, location) = if kind.eq_ignore_ascii_case("disks") {
        match find_disk(&st, &sub, &rg, &name) {
            Some((d, vm, _)) => {
                let id = arm_json::disk_id(&sub, &d.resource_group, &d.name);
                let loc = vm
                    .as_ref()
                    .map_or("westeurope".to_string(), |v| v.location.clone());
                (Target::Disk(d, vm), id, loc)
            }
            None => return not_found("disks", &rg, &name),
        }
    } else if kind.eq_ignore_ascii_case("snapshots") {
        let id = snapshot_id(&sub, &rg, &name);
        let state = st.export.lock().unwrap_or_else(|e| e.into_inner());
        match state.snapshots.get(&id.to_ascii_lowercase()) {
            Some(s) => {
                let loc = s.location.clone();
                (Target::Snapshot(s.clone()), s.id.clone(), loc)
            }
            None => return not_found("snapshots", &rg, &name),
        }
    } else {
        return arm_error(StatusCode::NOT_FOUND, "NotFound", "Unknown resource type");
    };
    let key = id.to_ascii_lowercase();
    let fault = match &target {
        Target::Disk(d, _) => d.fault,
        Target::Snapshot(s) => s.fault,
    };
    if begin && fault == Some(DiskFault::GrantDenied) {
        // Azure checks the caller's role before anything else about the request.
        return arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            &format!("The client '00000000-0000-0000-0000-00000000a11c' with object id '00000000-0000-0000-0000-00000000a11c' does not have authorization to perform action 'Microsoft.Compute/{kind}/beginGetAccess/action' over scope '{id}' or the scope is invalid. If access was recently granted, please refresh your credentials. (injected by the simulator: fault grant_denied)"),
        );
    }
    if !begin && fault == Some(DiskFault::RevokeConflict) {
        st.counters.cleanup_conflicts.fetch_add(1, Ordering::SeqCst);
        return arm_error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            &format!("The operation 'endGetAccess' on '{name}' is not allowed: another operation on the resource is in progress. (injected by the simulator: fault revoke_conflict)"),
        );
    }
    if !begin {
        st.export
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoke(&st, &key);
        return accepted(
            &st,
            &headers,
            &sub,
            &location,
            &format!("endGetAccess {name}"),
            "DiskOperations",
            None,
        );
    }
    let request: GrantRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                &format!("The request content was invalid and could not be deserialized: {e}"),
            )
        }
    };
    if !request.access.eq_ignore_ascii_case("Read") || request.duration_in_seconds == 0 {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "access must be Read and durationInSeconds positive.",
        );
    }
    if st.take_grant_conflict() {
        return arm_error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            &format!("The operation 'beginGetAccess' on '{name}' conflicts with another operation in progress (injected by the simulator)."),
        );
    }
    let (content, size, family) = match target {
        Target::Disk(d, vm) => {
            if let Some(vm) = vm {
                let power = st.power_state(&vm);
                if power != "deallocated" {
                    st.counters.grant_conflicts.fetch_add(1, Ordering::SeqCst);
                    return arm_error(
                        StatusCode::CONFLICT,
                        "OperationNotAllowed",
                        &format!("Cannot perform 'beginGetAccess' on disk '{}' since it is attached to VM '{}' which is not deallocated (power state: {power}). Deallocate the VM or export a snapshot of the disk.", d.name, vm.name),
                    );
                }
            }
            (d.content, d.size_bytes, None)
        }
        Target::Snapshot(s) => {
            let family = s.incremental.then(|| s.source_unique_id.clone());
            if let Some(f) = &family {
                // Azure: SAS URIs for at most 5 snapshots of one snapshot family at a time.
                let limit = st.incremental_limits().open_grants_per_family as usize;
                let state = st.export.lock().unwrap_or_else(|e| e.into_inner());
                let open = state
                    .grants
                    .values()
                    .filter(|g| g.family.as_ref() == Some(f) && g.resource != key)
                    .count();
                if open >= limit {
                    st.counters.grant_conflicts.fetch_add(1, Ordering::SeqCst);
                    return arm_error(
                        StatusCode::CONFLICT,
                        "OperationNotAllowed",
                        &format!("Cannot grant access to snapshot '{name}': {open} incremental snapshots of the same disk already have an active SAS (at most {limit}). Revoke access to one of them (endGetAccess) first."),
                    );
                }
            }
            (s.content, s.size, family)
        }
    };
    let sas = st.export.lock().unwrap_or_else(|e| e.into_inner()).grant(
        &st,
        &host(&headers),
        &key,
        BlobSource {
            content,
            size,
            fault,
            family,
        },
        Duration::from_secs(request.duration_in_seconds),
    );
    accepted(
        &st,
        &headers,
        &sub,
        &location,
        &format!("beginGetAccess {name}"),
        "DiskOperations",
        Some(json!({ "accessSAS": sas })),
    )
}

fn snapshot_json(s: &Snapshot, granted: bool) -> Value {
    let mut properties = json!({
        "creationData": {
            "createOption": "Copy",
            "sourceResourceId": s.source_id,
            "sourceUniqueId": s.source_unique_id,
        },
        "diskSizeGB": s.size >> 30,
        "diskSizeBytes": s.size,
        "incremental": s.incremental,
        "encryption": { "type": "EncryptionAtRestWithPlatformKey" },
        "networkAccessPolicy": "AllowAll",
        "publicNetworkAccess": "Enabled",
        "timeCreated": "2025-06-01T08:00:00.0000000+00:00",
        "provisioningState": "Succeeded",
        "diskState": if granted { "ActiveSAS" } else { "Unattached" },
    });
    if let Some((os, generation)) = &s.os {
        properties["osType"] = json!(os);
        properties["hyperVGeneration"] = json!(format!("V{generation}"));
    }
    json!({
        "name": s.name,
        "id": s.id,
        "type": "Microsoft.Compute/snapshots",
        "location": s.location,
        "tags": s.tags,
        "sku": { "name": "Standard_LRS", "tier": "Standard" },
        "properties": properties
    })
}

/// `PUT`, `GET`, `DELETE …/snapshots/{name}`.
pub(crate) async fn snapshot(
    State(st): State<Arc<Shared>>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    Query(q): Q,
    method: axum::http::Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = gate(&st, Route::Snapshot, &headers).await {
        return r;
    }
    if let Some(r) = crate::server::check_api_version(&q) {
        return r;
    }
    let id = snapshot_id(&sub, &rg, &name);
    let key = id.to_ascii_lowercase();
    match method.as_str() {
        "GET" => {
            let state = st.export.lock().unwrap_or_else(|e| e.into_inner());
            match state.snapshots.get(&key) {
                Some(s) => Json(snapshot_json(s, state.grant_of(&key).is_some())).into_response(),
                None => not_found("snapshots", &rg, &name),
            }
        }
        "DELETE" => {
            let mut state = st.export.lock().unwrap_or_else(|e| e.into_inner());
            let Some(s) = state.snapshots.get(&key) else {
                return StatusCode::NO_CONTENT.into_response();
            };
            let location = s.location.clone();
            if s.fault == Some(DiskFault::DeleteConflict) {
                st.counters.cleanup_conflicts.fetch_add(1, Ordering::SeqCst);
                return arm_error(
                    StatusCode::CONFLICT,
                    "OperationNotAllowed",
                    &format!("The operation 'delete' on snapshot '{name}' is not allowed: another operation on the resource is in progress. (injected by the simulator: fault delete_conflict)"),
                );
            }
            if state.grant_of(&key).is_some() {
                return arm_error(
                    StatusCode::CONFLICT,
                    "OperationNotAllowed",
                    &format!("Snapshot {name} is currently being exported (it has an active SAS). Revoke access (endGetAccess) before deleting it."),
                );
            }
            state.snapshots.remove(&key);
            st.counters.snapshots_alive.fetch_sub(1, Ordering::SeqCst);
            drop(state);
            accepted(
                &st,
                &headers,
                &sub,
                &location,
                &format!("delete {name}"),
                "DiskOperations",
                None,
            )
        }
        "PUT" => {
            let request: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        &format!("The request content was invalid: {e}"),
                    )
                }
            };
            let create = &request["properties"]["creationData"];
            let option = create["createOption"].as_str().unwrap_or("");
            let Some(source) = create["sourceResourceId"].as_str() else {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "properties.creationData.sourceResourceId is required.",
                );
            };
            if !option.eq_ignore_ascii_case("Copy") {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "The simulator creates snapshots with createOption Copy only.",
                );
            }
            let Some(location) = request["location"].as_str().map(str::to_owned) else {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "LocationRequired",
                    "The location property is required for this definition.",
                );
            };
            let incremental = match request["properties"].get("incremental") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        "properties.incremental must be a boolean.",
                    )
                }
            };
            let Some(src) = st.source_of(source) else {
                return arm_error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    &format!("The source resource '{source}' was not found."),
                );
            };
            let Source {
                size,
                content,
                os,
                fault,
                unique_id,
                disk_key,
            } = src;
            if fault == Some(DiskFault::SnapshotFails) {
                return arm_error(
                    StatusCode::CONFLICT,
                    "OperationNotAllowed",
                    &format!("Snapshot {name} of '{source}' cannot be created: the source disk is in a state that does not allow snapshots (injected by the simulator: fault snapshot_fails)."),
                );
            }
            if incremental {
                let Some(disk_key) = &disk_key else {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        "The simulator creates incremental snapshots of managed disks only.",
                    );
                };
                let limits = st.incremental_limits();
                let Some(fleet_disk) = st.fleet_disk_by_id(disk_key) else {
                    return not_found("disks", &rg, source);
                };
                let mut state = st.export.lock().unwrap_or_else(|e| e.into_inner());
                let live = state
                    .live
                    .entry(disk_key.clone())
                    .or_insert_with(|| crate::live::LiveDisk::of(fleet_disk));
                if let Err(wait) = live.take_incremental(limits) {
                    drop(state);
                    st.counters.record_throttled(Route::Snapshot);
                    let mut resp = arm_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        &format!("At most {} incremental snapshots of disk '{source}' can be created in {} seconds; try again later.", limits.per_window, limits.window_secs),
                    );
                    resp.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
                    );
                    return resp;
                }
            }
            let snap = Snapshot {
                id: id.clone(),
                name: name.clone(),
                location: location.clone(),
                tags: request.get("tags").cloned().unwrap_or_else(|| json!({})),
                source_id: source.to_string(),
                size,
                content,
                os,
                fault,
                incremental,
                source_unique_id: unique_id,
            };
            let body = snapshot_json(&snap, false);
            let mut state = st.export.lock().unwrap_or_else(|e| e.into_inner());
            if state.snapshots.insert(key, snap).is_none() {
                st.counters.snapshots_alive.fetch_add(1, Ordering::SeqCst);
                st.counters.snapshots_created.fetch_add(1, Ordering::SeqCst);
            }
            drop(state);
            accepted(
                &st,
                &headers,
                &sub,
                &location,
                &format!("create {name}"),
                "DiskOperations",
                Some(body),
            )
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// `POST …/virtualMachines/{vm}/{powerOff|deallocate|start}`.
pub(crate) async fn power(
    State(st): State<Arc<Shared>>,
    Path((sub, rg, name, action)): Path<(String, String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&st, Route::PowerOperation, &headers).await {
        return r;
    }
    if let Some(r) = crate::server::check_api_version(&q) {
        return r;
    }
    let state_word = match action.as_str() {
        "powerOff" => "stopped",
        "deallocate" => "deallocated",
        "start" => "running",
        other => {
            return arm_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("No action {other}"),
            )
        }
    };
    let Some(vm) = st.fleet.vm(&sub, &rg, &name) else {
        return not_found("virtualMachines", &rg, &name);
    };
    st.export
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .power
        .insert(vm.id().to_ascii_lowercase(), state_word.to_string());
    let location = vm.location.clone();
    accepted(
        &st,
        &headers,
        &sub,
        &location,
        &format!("{action} {}", vm.name),
        "operations",
        None,
    )
}

/// What Azure reports for the sizes scenarios use: `(name, cores, memory MiB, max data
/// disks, resource disk MiB)`; the OS disk limit is 1 TiB (1047552 MiB) for all.
const SIZES: &[(&str, u32, u32, u32, u32)] = &[
    ("Standard_B1s", 1, 1024, 2, 4096),
    ("Standard_B2s", 2, 4096, 4, 8192),
    ("Standard_B2ms", 2, 8192, 4, 16384),
    ("Standard_D2s_v3", 2, 8192, 4, 16384),
    ("Standard_D4s_v3", 4, 16384, 8, 32768),
    ("Standard_D2s_v5", 2, 8192, 4, 0),
    ("Standard_D4s_v5", 4, 16384, 8, 0),
    ("Standard_D8s_v5", 8, 32768, 16, 0),
    ("Standard_D2ds_v5", 2, 8192, 4, 76800),
    ("Standard_E4s_v5", 4, 32768, 8, 0),
    ("Standard_F2s_v2", 2, 4096, 4, 16384),
    ("Standard_DS1_v2", 1, 3584, 4, 7168),
];

fn size_json(name: &str) -> Value {
    let (cores, memory, disks, resource) = SIZES
        .iter()
        .find(|s| s.0.eq_ignore_ascii_case(name))
        .map(|s| (s.1, s.2, s.3, s.4))
        .unwrap_or_else(|| {
            // An unknown size: cores from the digits after the family letter
            // (Standard_D16s_v5 → 16), 4 GiB per core.
            let digits: String = name
                .trim_start_matches("Standard_")
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            let cores = digits.parse::<u32>().unwrap_or(2).max(1);
            (cores, cores * 4096, (cores * 2).min(64), 0)
        });
    json!({
        "name": name,
        "numberOfCores": cores,
        "osDiskSizeInMB": 1047552,
        "resourceDiskSizeInMB": resource,
        "memoryInMB": memory,
        "maxDataDiskCount": disks
    })
}

/// `GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{loc}/vmSizes`: the sizes
/// the scenario's VMs in that location use, plus the well-known ones.
pub(crate) async fn vm_sizes(
    State(st): State<Arc<Shared>>,
    Path((sub, loc)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&st, Route::ListVmSizes, &headers).await {
        return r;
    }
    if let Some(r) = crate::server::check_api_version(&q)
        .or_else(|| crate::server::check_subscription(&st, &sub))
    {
        return r;
    }
    let mut names: Vec<String> = SIZES.iter().map(|s| s.0.to_string()).collect();
    for vm in &st.fleet.vms {
        if vm.location.eq_ignore_ascii_case(&loc)
            && !names.iter().any(|n| n.eq_ignore_ascii_case(&vm.size))
        {
            names.push(vm.size.clone());
        }
    }
    let value: Vec<Value> = names.iter().map(|n| size_json(n)).collect();
    Json(json!({ "value": value })).into_response()
}

/// What a snapshot or grant is made from: a disk as it is now, or a snapshot.
struct Source {
    size: u64,
    content: DiskContent,
    /// OS type and generation (OS disks only).
    os: Option<(String, u8)>,
    fault: Option<DiskFault>,
    /// The disk's `uniqueId` (a snapshot's `sourceUniqueId`).
    unique_id: String,
    /// The lower-cased id of a disk; `None` for a snapshot.
    disk_key: Option<String>,
}

impl Shared {
    /// The size, content and OS of the disk or snapshot with this id.
    fn source_of(&self, id: &str) -> Option<Source> {
        let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
        // subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/{kind}/{name}
        if parts.len() != 8 {
            return None;
        }
        let (sub, rg, kind, name) = (parts[1], parts[3], parts[6], parts[7]);
        if kind.eq_ignore_ascii_case("disks") {
            let (d, vm, unique_id) = find_disk(self, sub, rg, name)?;
            let os = match (d.lun, vm) {
                (None, Some(vm)) => Some((vm.os_type.clone(), vm.generation)),
                _ => None,
            };
            Some(Source {
                size: d.size_bytes,
                content: d.content,
                os,
                fault: d.fault,
                unique_id,
                disk_key: Some(
                    arm_json::disk_id(sub, &d.resource_group, &d.name).to_ascii_lowercase(),
                ),
            })
        } else if kind.eq_ignore_ascii_case("snapshots") {
            let state = self.export.lock().unwrap_or_else(|e| e.into_inner());
            let s = state.snapshots.get(&id.to_ascii_lowercase())?;
            Some(Source {
                size: s.size,
                content: s.content.clone(),
                os: s.os.clone(),
                fault: s.fault,
                unique_id: s.source_unique_id.clone(),
                disk_key: None,
            })
        } else {
            None
        }
    }

    /// The VM's power state word, after power operations.
    pub(crate) fn power_state(&self, vm: &SimVm) -> String {
        self.export
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .power
            .get(&vm.id().to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| vm.power_state.clone())
    }

    /// The content, size and fault of a disk or snapshot that may be granted, for
    /// [`SimHandle::grant_access`](crate::SimHandle::grant_access).
    pub(crate) fn source_for_grant(&self, id: &str) -> Option<BlobSource> {
        let key = id.to_ascii_lowercase();
        let family = {
            let state = self.export.lock().unwrap_or_else(|e| e.into_inner());
            state
                .snapshots
                .get(&key)
                .filter(|s| s.incremental)
                .map(|s| s.source_unique_id.clone())
        };
        self.source_of(id).map(|s| BlobSource {
            content: s.content,
            size: s.size,
            fault: s.fault,
            family,
        })
    }

    /// The fleet's disk with this lower-cased id.
    fn fleet_disk_by_id(&self, key: &str) -> Option<&SimDisk> {
        self.fleet
            .disks()
            .find(|(sub, d)| {
                arm_json::disk_id(sub, &d.resource_group, &d.name).eq_ignore_ascii_case(key)
            })
            .map(|(_, d)| d)
    }

    fn take_grant_conflict(&self) -> bool {
        let mut faults = self.blob_faults.write().unwrap_or_else(|e| e.into_inner());
        if faults.grant_conflicts > 0 {
            faults.grant_conflicts -= 1;
            self.counters.grant_conflicts.fetch_add(1, Ordering::SeqCst);
            true
        } else {
            false
        }
    }
}
