//! The HTTP side: axum routes for the ARM compute subset, paging with absolute `nextLink`s,
//! and the faults (latency, 429 + `Retry-After`) applied before each answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::arm_json;
use crate::counters::{Counters, Route};
use crate::export::ExportState;
use crate::scenario::{BlobFaults, Failures, Fleet, OperationSettings, SimDisk, SimVm, Throttle};

/// Faults that can be changed while the server runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Faults {
    pub latency: Duration,
    pub throttle: Throttle,
    pub failures: Failures,
}

/// What every handler shares.
pub(crate) struct Shared {
    pub fleet: Fleet,
    pub counters: Arc<Counters>,
    pub faults: RwLock<Faults>,
    pub page_size: AtomicUsize,
    pub page_list_size: AtomicUsize,
    pub blob_faults: RwLock<BlobFaults>,
    pub operations: RwLock<OperationSettings>,
    pub incremental: RwLock<crate::live::IncrementalLimits>,
    pub export: Mutex<ExportState>,
    /// The blob data plane's link (`settings.blob_rate`).
    pub link: crate::link::Link,
}

impl Shared {
    pub fn blob_faults(&self) -> BlobFaults {
        *self.blob_faults.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn operations(&self) -> OperationSettings {
        *self.operations.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn incremental_limits(&self) -> crate::live::IncrementalLimits {
        *self.incremental.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A disk's ARM JSON as it is now: recreated (a new `uniqueId`) or resized.
    fn disk_json(&self, sub: &str, disk: &SimDisk, vm: Option<&SimVm>) -> Value {
        let mut body = arm_json::disk(sub, disk, vm.map(|v| self.current(v)).as_deref());
        let id = arm_json::disk_id(sub, &disk.resource_group, &disk.name).to_ascii_lowercase();
        let state = self.export.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = state.live.get(&id) {
            let p = &mut body["properties"];
            p["uniqueId"] = json!(crate::live::unique_id(&id, live.incarnation));
            p["diskSizeBytes"] = json!(live.size);
            p["diskSizeGB"] = json!(live.size >> 30);
        }
        body
    }

    /// The VM as it is now: with the power state power operations gave it.
    fn current<'a>(&self, vm: &'a SimVm) -> std::borrow::Cow<'a, SimVm> {
        let power = self.power_state(vm);
        if power == vm.power_state {
            std::borrow::Cow::Borrowed(vm)
        } else {
            std::borrow::Cow::Owned(SimVm {
                power_state: power,
                ..vm.clone()
            })
        }
    }
}

pub(crate) type Q = Query<HashMap<String, String>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    const VMS: &str = "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines";
    const DISKS: &str = "/subscriptions/{sub}/providers/Microsoft.Compute/disks";
    const RG_VMS: &str =
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines";
    const RG_DISKS: &str =
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks";
    Router::new()
        .route(VMS, get(list_vms))
        .route(DISKS, get(list_disks))
        .route(RG_VMS, get(list_vms_in_group))
        .route(&format!("{RG_VMS}/{{name}}"), get(get_vm))
        .route(RG_DISKS, get(list_disks_in_group))
        .route(&format!("{RG_DISKS}/{{name}}"), get(get_disk))
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/{kind}/{name}/{action}",
            post(crate::export::access),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{name}",
            get(crate::export::snapshot)
                .put(crate::export::snapshot)
                .delete(crate::export::snapshot),
        )
        .route(
            &format!("{RG_VMS}/{{name}}/{{action}}"),
            post(crate::export::power),
        )
        .route(
            "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/vmSizes",
            get(crate::export::vm_sizes),
        )
        .route(
            "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/{kind}/{id}",
            get(crate::export::poll),
        )
        .route(
            "/{account}/{container}/{blob}",
            get(crate::blob::serve).head(crate::blob::serve),
        )
        .route(
            "/_sim/disks/{name}/{action}",
            post(crate::live::control),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record_path,
        ))
        .with_state(shared)
}

/// Notes every request's method and path (fallback included) before it is routed.
async fn record_path(
    State(st): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    st.counters
        .record_path(request.method().as_str(), request.uri().path());
    next.run(request).await
}

pub(crate) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(arm_json::error(code, message))).into_response()
}

/// Counts the request, waits the injected latency, and answers 429 when the throttle says so.
pub(crate) async fn gate(st: &Shared, route: Route, headers: &HeaderMap) -> Option<Response> {
    let n = st
        .counters
        .record(route, headers.contains_key(header::AUTHORIZATION));
    let faults = *st.faults.read().unwrap_or_else(|e| e.into_inner());
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let t = faults.throttle;
    if n <= t.first || (t.every > 0 && n.is_multiple_of(t.every)) {
        st.counters.record_throttled(route);
        let mut resp = arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type - Read.",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(t.retry_after_secs));
        resp.headers_mut().insert(
            "x-ms-ratelimit-remaining-subscription-reads",
            HeaderValue::from_static("0"),
        );
        return Some(resp);
    }
    let f = faults.failures;
    if f.every > 0 && n.is_multiple_of(f.every) {
        st.counters.record_failed(route);
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Some(arm_error(
            status,
            "InternalServerError",
            "The simulator was told to fail this request.",
        ));
    }
    None
}

pub(crate) fn check_api_version(q: &HashMap<String, String>) -> Option<Response> {
    match q.get("api-version") {
        Some(v) if !v.is_empty() => None,
        _ => Some(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
    }
}

pub(crate) fn check_subscription(st: &Shared, sub: &str) -> Option<Response> {
    if st
        .fleet
        .subscriptions
        .iter()
        .any(|s| s.eq_ignore_ascii_case(sub))
    {
        return None;
    }
    Some(arm_error(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        &format!("The subscription '{sub}' could not be found."),
    ))
}

fn is_true(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// One page of `items` (rendered lazily: only the page is turned into JSON) with a
/// `nextLink` back to the same path when more follow.
fn page<T>(
    st: &Shared,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    uri: &Uri,
    items: &[T],
    render: impl Fn(&T) -> Value,
) -> Response {
    let start = match q.get("$skiptoken").map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidSkipToken",
                "The $skiptoken is not valid.",
            )
        }
    };
    let size = st.page_size.load(Ordering::Relaxed).max(1);
    let end = (start + size).min(items.len());
    let value: Vec<Value> = items
        .get(start..end)
        .unwrap_or(&[])
        .iter()
        .map(render)
        .collect();
    let mut body = json!({ "value": value });
    if end < items.len() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let mut query: Vec<String> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "$skiptoken")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        query.sort();
        query.push(format!("$skiptoken={end}"));
        body["nextLink"] = json!(format!("http://{host}{}?{}", uri.path(), query.join("&")));
    }
    Json(body).into_response()
}

fn vms_of<'a>(st: &'a Shared, sub: &str, rg: Option<&str>) -> Vec<&'a SimVm> {
    st.fleet
        .vms
        .iter()
        .filter(|vm| vm.subscription.eq_ignore_ascii_case(sub))
        .filter(|vm| rg.is_none_or(|rg| vm.resource_group.eq_ignore_ascii_case(rg)))
        .collect()
}

type DiskRow<'a> = (&'a str, &'a SimDisk, Option<&'a SimVm>);

fn disks_of<'a>(st: &'a Shared, sub: &str, rg: Option<&str>) -> Vec<DiskRow<'a>> {
    let attached = st
        .fleet
        .vms
        .iter()
        .filter(|vm| vm.subscription.eq_ignore_ascii_case(sub))
        .flat_map(|vm| {
            vm.disks
                .iter()
                .map(move |d| (vm.subscription.as_str(), d, Some(vm)))
        });
    let unattached = st
        .fleet
        .unattached
        .iter()
        .filter(|(s, _)| s.eq_ignore_ascii_case(sub))
        .map(|(s, d)| (s.as_str(), d, None));
    attached
        .chain(unattached)
        .filter(|(_, d, _)| rg.is_none_or(|rg| d.resource_group.eq_ignore_ascii_case(rg)))
        .collect()
}

async fn list_vms(
    State(st): State<Arc<Shared>>,
    Path(sub): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let status_only = is_true(&q, "statusOnly");
    let route = if status_only {
        Route::ListVmStatuses
    } else {
        Route::ListVms
    };
    if let Some(r) = gate(&st, route, &headers).await {
        return r;
    }
    if let Some(r) = check_api_version(&q).or_else(|| check_subscription(&st, &sub)) {
        return r;
    }
    let vms = vms_of(&st, &sub, None);
    if status_only {
        page(&st, &q, &headers, &uri, &vms, |vm| {
            arm_json::vm_status(&st.current(vm))
        })
    } else {
        page(&st, &q, &headers, &uri, &vms, |vm| {
            arm_json::vm_model(&st.current(vm), false)
        })
    }
}

async fn list_vms_in_group(
    State(st): State<Arc<Shared>>,
    Path((sub, rg)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(r) = gate(&st, Route::ListVmsInGroup, &headers).await {
        return r;
    }
    if let Some(r) = check_api_version(&q).or_else(|| check_subscription(&st, &sub)) {
        return r;
    }
    // ARM offers statusOnly on the subscription-wide list only; the simulator refuses it here
    // so that a client relying on it fails in tests rather than in production.
    if q.contains_key("statusOnly") {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "The parameter statusOnly is only supported when listing all virtual machines in a subscription.",
        );
    }
    let vms = vms_of(&st, &sub, Some(&rg));
    page(&st, &q, &headers, &uri, &vms, |vm| {
        arm_json::vm_model(&st.current(vm), false)
    })
}

fn not_found_resource(kind: &str, rg: &str, name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The Resource 'Microsoft.Compute/{kind}/{name}' under resource group '{rg}' was not found."),
    )
}

async fn get_vm(
    State(st): State<Arc<Shared>>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&st, Route::GetVm, &headers).await {
        return r;
    }
    if let Some(r) = check_api_version(&q).or_else(|| check_subscription(&st, &sub)) {
        return r;
    }
    let expand = q
        .get("$expand")
        .is_some_and(|v| v.eq_ignore_ascii_case("instanceView"));
    match st.fleet.vm(&sub, &rg, &name) {
        Some(vm) => Json(arm_json::vm_model(&st.current(vm), expand)).into_response(),
        None => not_found_resource("virtualMachines", &rg, &name),
    }
}

async fn list_disks(
    State(st): State<Arc<Shared>>,
    Path(sub): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(r) = gate(&st, Route::ListDisks, &headers).await {
        return r;
    }
    if let Some(r) = check_api_version(&q).or_else(|| check_subscription(&st, &sub)) {
        return r;
    }
    let disks = disks_of(&st, &sub, None);
    page(&st, &q, &headers, &uri, &disks, |(s, d, vm)| {
        st.disk_json(s, d, *vm)
    })
}

async fn list_disks_in_group(
    State(st): State<Arc<Shared>>,
    Path((sub, rg)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(r) = gate(&st, Route::ListDisksInGroup, &headers).await {
        return r;
    }
    if let Some(r) = check_api_version(&q).or_else(|| check_subscription(&st, &sub)) {
        return r;
    }
    let disks = disks_of(&st, &sub, Some(&rg));
    page(&st, &q, &headers, &uri, &disks, |(s, d, vm)| {
        st.disk_json(s, d, *vm)
    })
}

async fn get_disk(
    State(st): State<Arc<Shared>>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&st, Route::GetDisk, &headers).await {
        return r;
    }
    if let Some(r) = check_api_version(&q).or_else(|| check_subscription(&st, &sub)) {
        return r;
    }
    let found = disks_of(&st, &sub, Some(&rg))
        .into_iter()
        .find(|(_, d, _)| d.name.eq_ignore_ascii_case(&name));
    match found {
        Some((s, d, vm)) => Json(st.disk_json(s, d, vm)).into_response(),
        None => not_found_resource("disks", &rg, &name),
    }
}

async fn not_found(State(st): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = gate(&st, Route::Other, &headers).await {
        return r;
    }
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("The simulator does not serve {}", uri.path()),
    )
}
