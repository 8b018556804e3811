/*!
An Azure simulator for hyper2kvm: an HTTP server that speaks the subset of Azure Resource
Manager (ARM) that discovery and disk export use, with ARM's JSON shapes and paging, and the
page-blob data plane of exported disks, from a scenario file.
It is how tests, benchmarks and offline try-outs run without an Azure account.

# Design

* **Scenario** ([`Scenario`]): subscriptions → resource groups → VMs → disks, written by hand
  or generated (`generate: {count: 1000, …}`), plus settings (page size, latency, throttling).
  It is checked and flattened into a [`Fleet`] once, at start.
* **Routes** (ARM compute, any `api-version`):
  `GET /subscriptions/{s}/providers/Microsoft.Compute/virtualMachines` (models; with
  `statusOnly=true`, instance views with `PowerState/<x>` codes and no storage profile),
  the per-resource-group VM list, `GET …/virtualMachines/{name}` (with
  `$expand=instanceView`), `GET /subscriptions/{s}/providers/Microsoft.Compute/disks`, the
  per-resource-group disk list and `GET …/disks/{name}`. Lists are paged with an absolute
  `nextLink` (`$skiptoken` is an offset). Errors use ARM's `{"error": {"code", "message"}}`.
* **Disk export**: `POST …/disks/{d}/beginGetAccess` and `endGetAccess` (also on snapshots), `PUT` / `GET` / `DELETE …/snapshots/{s}`,
  `POST …/virtualMachines/{vm}/powerOff|deallocate|start` and
  `GET …/locations/{loc}/vmSizes`, answered with ARM's long-running-operation shapes
  (`202` + `Location` + `Azure-AsyncOperation` + `Retry-After`, polled
  [`OperationSettings::polls`] times, or for a duration of 5–30 s or any range,
  [`OperationSettings::seconds`], or `200` at once) and Azure's rules: no grant on the
  disk of a VM that is not deallocated (`409`), no delete of a snapshot with an open grant.
* **Warm migration**: `PUT …/snapshots/{s}` with
  `properties.incremental: true` makes an incremental snapshot; its `creationData` carries
  the disk's `sourceUniqueId`, which changes when the disk is recreated. Get Page Ranges with
  `x-ms-previous-snapshot-url` (the older snapshot's SAS URL; `x-ms-version` 2019-07-07 or
  later) lists the `<PageRange>`s written and `<ClearRange>`s trimmed between two incremental
  snapshots of one disk, paged like any page list. A running VM's disk is changed between
  snapshots with [`SimHandle::write_disk`], [`SimHandle::trim_disk`],
  [`SimHandle::recreate_disk`], [`SimHandle::resize_disk`], or over HTTP with
  `POST /_sim/disks/{name}/{write|trim|recreate|resize}`. Azure's limits hold
  ([`IncrementalLimits`]): 7 incremental snapshots per disk per 5 minutes (`429` +
  `Retry-After`), 5 open SAS per snapshot family (`409`), no diff across a recreated disk,
  from a full snapshot or across the 4 TiB boundary (`409
  PreviousSnapshotOperationNotSupported`), nor from a revoked or deleted one (`409
  PreviousSnapshotNotFound`).
* **Page blobs**: a grant's SAS URL (`http://HOST/mdsim/{container}/abcd?sv=…&sr=b&sig=…&se=…&sp=r`)
  serves the disk plus a fixed-VHD footer: `HEAD`, ranged `GET` (`206`, `Content-Range`,
  `Content-MD5` for ranges up to 4 MiB, `400` above) and `GET ?comp=pagelist` paged by
  `marker`. The signature is checked: revoked, expired or wrong is `403 AuthenticationFailed`.
  `settings.blob_rate` caps the bodies of all blob `GET`s together at a link rate (bytes
  per second), as one network link to storage would.
* **Disk content** ([`DiskContent`]): written extents listed or scattered, with bytes that
  are a pure function of `(seed, offset)` (noise, text and zero blocks), so a 1 TiB disk
  costs no memory; or a local raw file / fixed VHD. [`SimDisk::write_raw_reference`] writes
  the expected image for `qemu-img compare`.
* **Faults**: for ARM, a fixed latency per request, `429 Too Many Requests` with
  `Retry-After` for the first N requests or every Nth, and a 5xx for every Nth; for blobs
  ([`BlobFaults`]), latency, 5xx, 429, connection resets mid-body, truncated bodies, wrong
  `Content-MD5`, SAS expiry after N requests or seconds, and `409` on grants. All can be
  changed while running. Per disk, a [`DiskFault`] (`grant_denied`, `snapshot_fails`,
  `read_fails`) makes its export fail every time, so some VMs of a fleet fail for sure.
* **Counters** ([`Counters`]): requests received and throttled per [`Route`], so a test can
  assert that discovery made three paged list calls and nothing per VM; open grants,
  grants and revokes, snapshots alive, body bytes served and faults injected.

# Example

```
use hyper2kvm_sim::{Route, Scenario, Simulator};

# #[tokio::main(flavor = "current_thread")] async fn main() {
let scenario = Scenario::generated("sub-1", 250, &["rg-a", "rg-b"], 1);
let sim = Simulator::start(&scenario).await.unwrap();
let url = format!(
    "{}/subscriptions/sub-1/providers/Microsoft.Compute/virtualMachines?api-version=2025-04-01",
    sim.base_url()
);
// … point a client at `url` …
assert_eq!(sim.counters().received(Route::ListVms), 0);
sim.shutdown().await;
# }
```
*/
#![deny(missing_docs)]

mod arm_json;
mod blob;
mod content;
mod counters;
mod error;
mod export;
mod link;
mod live;
mod scenario;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use content::{Change, ContentSpec, DiskContent, ExtentSpec, ScatterSpec};
pub use counters::{Counters, Route};
pub use error::{Error, ErrorKind};
pub use live::IncrementalLimits;
pub use scenario::{
    operation_duration, BlobFaults, DiskFault, DiskSpec, Failures, Fleet, GenerateSpec,
    OperationSettings, ResourceGroupSpec, Scenario, Settings, SimDisk, SimVm, SubscriptionSpec,
    Throttle, VmSpec,
};

use export::ExportState;
use server::{Faults, Shared};

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Serves `scenario` on an ephemeral loopback port (`127.0.0.1:0`), as tests want.
    pub async fn start(scenario: &Scenario) -> Result<SimHandle, Error> {
        Simulator::start_on(scenario, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves `scenario` on `addr`.
    pub async fn start_on(scenario: &Scenario, addr: SocketAddr) -> Result<SimHandle, Error> {
        let fleet = scenario.into_fleet()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot listen on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read local address: {e}")))?;
        let shared = Arc::new(Shared {
            fleet,
            counters: Arc::new(Counters::default()),
            faults: RwLock::new(Faults {
                latency: Duration::from_millis(scenario.settings.latency_ms),
                throttle: scenario.settings.throttle,
                failures: scenario.settings.failures,
            }),
            page_size: AtomicUsize::new(scenario.settings.page_size),
            page_list_size: AtomicUsize::new(scenario.settings.page_list_size.max(1)),
            blob_faults: RwLock::new(scenario.settings.blob_faults),
            operations: RwLock::new(scenario.settings.operations),
            incremental: RwLock::new(scenario.settings.incremental),
            export: Mutex::new(ExportState::default()),
            link: link::Link::new(scenario.settings.blob_rate, blob::PIECE as u64),
        });
        let app = server::router(shared.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        Ok(SimHandle {
            addr,
            shared,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// The ARM base URL to point a client at, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.shared.counters
    }

    /// What the simulator serves.
    pub fn fleet(&self) -> &Fleet {
        &self.shared.fleet
    }

    /// Changes the latency added to each request.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .latency = latency;
    }

    /// Changes when requests are throttled. Requests keep their numbering; call
    /// [`Counters::reset`] to start again from 1.
    pub fn set_throttle(&self, throttle: Throttle) {
        self.shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .throttle = throttle;
    }

    /// Changes when requests fail with a server error.
    pub fn set_failures(&self, failures: Failures) {
        self.shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .failures = failures;
    }

    /// Changes the page size of every list.
    pub fn set_page_size(&self, page_size: usize) {
        self.shared
            .page_size
            .store(page_size.max(1), Ordering::Relaxed);
    }

    /// Changes the blob data plane's faults (and injected grant conflicts).
    pub fn set_blob_faults(&self, faults: BlobFaults) {
        *self
            .shared
            .blob_faults
            .write()
            .unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// The blob faults in force.
    pub fn blob_faults(&self) -> BlobFaults {
        self.shared.blob_faults()
    }

    /// Changes how long-running operations answer.
    pub fn set_operations(&self, operations: OperationSettings) {
        *self
            .shared
            .operations
            .write()
            .unwrap_or_else(|e| e.into_inner()) = operations;
    }

    /// Changes how many ranges a Get Page Ranges page holds at most.
    pub fn set_page_list_size(&self, size: usize) {
        self.shared
            .page_list_size
            .store(size.max(1), Ordering::Relaxed);
    }

    /// The disk named `name` (case-insensitive), attached or not, with what it holds.
    pub fn disk(&self, name: &str) -> Option<&SimDisk> {
        self.shared.fleet.disk_by_name(name).map(|(_, d, _)| d)
    }

    /// The disk named `name` as it is now: after [`write_disk`](Self::write_disk),
    /// [`trim_disk`](Self::trim_disk), [`recreate_disk`](Self::recreate_disk) and
    /// [`resize_disk`](Self::resize_disk). Its [`SimDisk::write_raw_reference`] is what a
    /// copy of the disk made now must equal.
    pub fn disk_now(&self, name: &str) -> Option<SimDisk> {
        let (_, disk, id) = self.shared.fleet.disk_by_name(name)?;
        let live = self.shared.live_disk(&id, disk);
        Some(SimDisk {
            content: live.content,
            size_bytes: live.size,
            ..disk.clone()
        })
    }

    /// Writes `length` bytes at `offset` of the disk `name` (a running VM writing), with
    /// bytes generated from `seed`. Both are multiples of 512 inside the disk.
    pub fn write_disk(&self, name: &str, offset: u64, length: u64, seed: u64) -> Result<(), Error> {
        self.shared.mutate(
            name,
            live::Mutation::Write {
                range: offset..offset.saturating_add(length),
                seed,
            },
        )
    }

    /// Trims `length` bytes at `offset` of the disk `name` (discard: zeros, not written).
    pub fn trim_disk(&self, name: &str, offset: u64, length: u64) -> Result<(), Error> {
        self.shared.mutate(
            name,
            live::Mutation::Trim(offset..offset.saturating_add(length)),
        )
    }

    /// Deletes the disk `name` and creates it again, empty, with a new `uniqueId`: its
    /// earlier incremental snapshots are of another disk now.
    pub fn recreate_disk(&self, name: &str) -> Result<(), Error> {
        self.shared.mutate(name, live::Mutation::Recreate)
    }

    /// Grows the disk `name` to `size_bytes` (a multiple of 1 MiB).
    pub fn resize_disk(&self, name: &str, size_bytes: u64) -> Result<(), Error> {
        self.shared.mutate(name, live::Mutation::Resize(size_bytes))
    }

    /// Changes the limits on incremental snapshots.
    pub fn set_incremental_limits(&self, limits: IncrementalLimits) {
        *self
            .shared
            .incremental
            .write()
            .unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Grants read access to the disk or snapshot `resource_id` as `beginGetAccess` would
    /// (same checks, counted the same) and returns the SAS URL: for tests and benchmarks
    /// that need a URL without going through ARM.
    pub fn grant_access(&self, resource_id: &str, duration: Duration) -> Option<String> {
        let source = self.shared.source_for_grant(resource_id)?;
        let mut state = self.shared.export.lock().unwrap_or_else(|e| e.into_inner());
        Some(state.grant(
            &self.shared,
            &self.addr.to_string(),
            &resource_id.to_ascii_lowercase(),
            source,
            duration,
        ))
    }

    /// Every SAS signature handed out so far: what must never appear in a client's output.
    pub fn signatures(&self) -> Vec<String> {
        self.shared
            .export
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signatures
            .clone()
    }

    /// The power state of a VM now (after power operations), e.g. `deallocated`.
    pub fn power_state(
        &self,
        subscription: &str,
        resource_group: &str,
        vm: &str,
    ) -> Option<String> {
        let vm = self.shared.fleet.vm(subscription, resource_group, vm)?;
        Some(self.shared.power_state(vm))
    }

    /// Stops the server and waits until it has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    async fn get(url: &str) -> (u16, Option<String>, Value) {
        // reqwest is built without a default TLS provider (see the workspace manifest).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resp = reqwest::get(url).await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            retry_after,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn list_url(sim: &SimHandle, what: &str, extra: &str) -> String {
        format!(
            "{}/subscriptions/sub-1/providers/Microsoft.Compute/{what}?api-version=2025-04-01{extra}",
            sim.base_url()
        )
    }

    /// Follows nextLinks and returns every item and the number of pages.
    async fn all_pages(first: String) -> (Vec<Value>, usize) {
        let (mut items, mut pages, mut next) = (Vec::new(), 0, Some(first));
        while let Some(url) = next {
            let (status, _, body) = get(&url).await;
            assert_eq!(status, 200, "{url}: {body}");
            pages += 1;
            items.extend(body["value"].as_array().unwrap().iter().cloned());
            next = body["nextLink"].as_str().map(String::from);
        }
        (items, pages)
    }

    #[tokio::test]
    async fn pages_lists_with_absolute_next_links() {
        let mut scenario = Scenario::generated("sub-1", 25, &["rg-a", "rg-b", "rg-c"], 2);
        scenario.settings.page_size = 10;
        let sim = Simulator::start(&scenario).await.unwrap();

        let (_, _, first) = get(&list_url(&sim, "virtualMachines", "")).await;
        let next = first["nextLink"].as_str().unwrap();
        assert!(next.starts_with(&sim.base_url()), "{next}");
        assert!(next.contains("$skiptoken=10"), "{next}");

        let (vms, pages) = all_pages(list_url(&sim, "virtualMachines", "")).await;
        assert_eq!((vms.len(), pages), (25, 3));
        let vm = &vms[0];
        assert_eq!(vm["name"], "vm-00000");
        let os_disk = &vm["properties"]["storageProfile"]["osDisk"];
        assert_eq!(os_disk["osType"], "Linux");
        // Disk references carry the resource group upper-cased, as Azure often does.
        assert!(os_disk["managedDisk"]["id"]
            .as_str()
            .unwrap()
            .contains("/resourceGroups/RG-A/"));
        let luns: Vec<_> = vm["properties"]["storageProfile"]["dataDisks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["lun"].as_u64().unwrap())
            .collect();
        assert_eq!(luns, [0, 1]);

        let (statuses, _) = all_pages(list_url(&sim, "virtualMachines", "&statusOnly=true")).await;
        assert_eq!(statuses.len(), 25);
        assert!(statuses[1]["properties"].get("storageProfile").is_none());
        assert_eq!(
            statuses[1]["properties"]["instanceView"]["statuses"][1]["code"],
            "PowerState/deallocated"
        );

        let (disks, pages) = all_pages(list_url(&sim, "disks", "")).await;
        assert_eq!((disks.len(), pages), (75, 8));
        let os = &disks[0]["properties"];
        assert_eq!(os["diskSizeBytes"], 30u64 << 30);
        assert_eq!(os["hyperVGeneration"], "V2");
        assert_eq!(disks[1]["properties"].get("osType"), None);

        let c = sim.counters();
        assert_eq!(c.received(Route::ListVms), 4);
        assert_eq!(c.received(Route::ListVmStatuses), 3);
        assert_eq!(c.received(Route::ListDisks), 8);
        assert_eq!(c.with_authorization(), 0);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn throttles_with_retry_after_and_counts_it() {
        let mut scenario = Scenario::generated("sub-1", 3, &["rg"], 0);
        scenario.settings.throttle = Throttle {
            first: 1,
            every: 3,
            retry_after_secs: 7,
        };
        let sim = Simulator::start(&scenario).await.unwrap();
        let url = list_url(&sim, "disks", "");
        let codes: Vec<_> = futures_sequential(&url, 4).await;
        assert_eq!(
            codes,
            [
                (429, Some("7".into())),
                (200, None),
                (429, Some("7".into())),
                (200, None)
            ]
        );
        assert_eq!(sim.counters().received(Route::ListDisks), 4);
        assert_eq!(sim.counters().throttled(Route::ListDisks), 2);
        assert_eq!(sim.counters().served(Route::ListDisks), 2);

        sim.set_throttle(Throttle::default());
        sim.set_failures(Failures {
            every: 2,
            status: 500,
        });
        sim.counters().reset();
        let codes = futures_sequential(&url, 4).await;
        assert_eq!(codes, [(200, None), (500, None), (200, None), (500, None)]);
        assert_eq!(sim.counters().failed(Route::ListDisks), 2);
        assert_eq!(sim.counters().served(Route::ListDisks), 2);
    }

    async fn futures_sequential(url: &str, n: usize) -> Vec<(u16, Option<String>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (status, retry_after, _) = get(url).await;
            out.push((status, retry_after));
        }
        out
    }

    #[tokio::test]
    async fn single_resources_and_errors() {
        let scenario = Scenario::generated("sub-1", 2, &["rg"], 1);
        let sim = Simulator::start(&scenario).await.unwrap();
        let base = format!(
            "{}/subscriptions/sub-1/resourceGroups/RG/providers/Microsoft.Compute",
            sim.base_url()
        );
        let (status, _, vm) = get(&format!(
            "{base}/virtualMachines/vm-00001?api-version=x&$expand=instanceView"
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            vm["properties"]["instanceView"]["statuses"][1]["code"],
            "PowerState/deallocated"
        );
        let (status, _, disk) =
            get(&format!("{base}/disks/vm-00001_DataDisk_0?api-version=x")).await;
        assert_eq!(status, 200);
        assert_eq!(disk["properties"]["diskState"], "Reserved");
        assert!(disk["managedBy"].as_str().unwrap().ends_with("/vm-00001"));

        let (in_group, _) = all_pages(format!("{base}/virtualMachines?api-version=x")).await;
        assert_eq!(in_group.len(), 2);
        assert!(in_group[0]["properties"]["storageProfile"].is_object());
        let (disks, _) = all_pages(format!("{base}/disks?api-version=x")).await;
        assert_eq!(disks.len(), 4);
        let other = base.replace("/RG/", "/rg-empty/");
        let (none, _) = all_pages(format!("{other}/virtualMachines?api-version=x")).await;
        assert!(none.is_empty());

        let (status, _, err) = get(&format!("{base}/disks/nope?api-version=x")).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (404, Some("ResourceNotFound"))
        );
        let (status, _, err) = get(&format!("{base}/virtualMachines")).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("MissingApiVersionParameter"))
        );
        let (status, _, _) = get(&format!(
            "{base}/virtualMachines?api-version=x&statusOnly=true"
        ))
        .await;
        assert_eq!(status, 400, "statusOnly is refused per resource group");
        let (status, _, err) = get(&format!(
            "{}/subscriptions/other/providers/Microsoft.Compute/disks?api-version=x",
            sim.base_url()
        ))
        .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (404, Some("SubscriptionNotFound"))
        );
        assert_eq!(sim.counters().received(Route::GetVm), 1);
        assert_eq!(sim.counters().received(Route::GetDisk), 2);
        assert_eq!(sim.counters().received(Route::ListVmsInGroup), 4);
        assert_eq!(sim.counters().received(Route::ListDisksInGroup), 1);
    }

    const EXPORT: &str = r#"
settings: { operations: { polls: 1, retry_after_secs: 0 }, page_list_size: 2 }
subscriptions:
  - id: sub-1
    resource_groups:
      - name: rg
        vms:
          - name: web
            power_state: running
            disks:
              - size_bytes: 16777216
                content:
                  seed: 1
                  extents: [{ offset: 0, length: 1024 }, { offset: 1048576, length: 6291456 }, { offset: 9437184, length: 512 }]
"#;

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    /// Follows a long-running operation's `Location` until it answers 200.
    async fn finish(http: &reqwest::Client, resp: reqwest::Response) -> (u16, Value) {
        let mut resp = resp;
        let mut polls = 0;
        if resp.status() == 202 {
            assert!(resp.headers().contains_key("azure-asyncoperation"));
        }
        while resp.status() == 202 {
            assert_eq!(resp.headers()["retry-after"], "0");
            let next = resp.headers()["location"].to_str().unwrap().to_string();
            resp = http.get(next).send().await.unwrap();
            polls += 1;
            assert!(polls < 10);
        }
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn timed_operations_answer_202_until_their_duration_has_passed() {
        let text = EXPORT.replace(
            "operations: { polls: 1, retry_after_secs: 0 }",
            "operations: { seconds: [2, 2] }",
        );
        let sim = Simulator::start(&Scenario::from_yaml(&text).unwrap())
            .await
            .unwrap();
        let http = client();
        let url = format!(
            "{}/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web/deallocate?api-version=2025-04-01",
            sim.base_url()
        );
        let started = std::time::Instant::now();
        let mut resp = http.post(url).send().await.unwrap();
        assert_eq!(resp.status(), 202);
        // Retry-After is at least 1 s with timed operations, whatever polls say.
        assert_eq!(resp.headers()["retry-after"], "1");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let mut polls = 0;
        while resp.status() == 202 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            resp = http.get(&location).send().await.unwrap();
            polls += 1;
            assert!(polls < 100);
        }
        // Done, and not before its 2 s (however slow the machine, never sooner).
        assert_eq!(resp.status(), 200);
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert!(polls > 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn grants_blobs_snapshots_and_power() {
        let sim = Simulator::start(&Scenario::from_yaml(EXPORT).unwrap())
            .await
            .unwrap();
        let http = client();
        let base = format!(
            "{}/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute",
            sim.base_url()
        );
        let grant_body = json!({"access": "Read", "durationInSeconds": 600, "fileFormat": "VHD"});
        let grant = |what: String| {
            let http = http.clone();
            let body = grant_body.clone();
            async move {
                let resp = http
                    .post(format!("{what}/beginGetAccess?api-version=2025-01-02"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                finish(&http, resp).await
            }
        };
        let disk = format!("{base}/disks/web_OsDisk_1");

        // A running VM's disk cannot be granted; a snapshot of it can.
        let (status, err) = grant(disk.clone()).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (409, Some("OperationNotAllowed"))
        );
        let snap = format!("{base}/snapshots/snap-1");
        let source =
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/disks/web_OsDisk_1";
        let put = http
            .put(format!("{snap}?api-version=2025-01-02"))
            .header("content-type", "application/json")
            .body(json!({"location": "westeurope", "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source}}, "tags": {"by": "test"}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 202);
        let (status, created) = finish(&http, put).await;
        assert_eq!(status, 200);
        assert_eq!(
            created["properties"]["creationData"]["sourceResourceId"],
            source
        );
        assert_eq!(created["properties"]["diskSizeBytes"], 16u64 << 20);
        assert_eq!(created["tags"]["by"], "test");
        assert_eq!(sim.counters().snapshots_alive(), 1);

        let (status, sas) = grant(snap.clone()).await;
        assert_eq!(status, 200);
        let sas = sas["accessSAS"].as_str().unwrap().to_string();
        assert!(
            sas.contains("sr=b") && sas.contains("sig=") && sas.contains("sp=r"),
            "{sas}"
        );
        assert_eq!(sim.counters().open_grants(), 1);

        // HEAD: the disk plus the footer.
        let head = http.head(&sas).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()["content-length"],
            ((16u64 << 20) + 512).to_string().as_str()
        );
        assert_eq!(head.headers()["x-ms-blob-type"], "PageBlob");
        // Path-style, as AzCopy reads an IP-address URL: account, container, blob. A
        // container listing is refused, never answered with the blob's bytes.
        assert!(sas.contains("/mdsim/"), "{sas}");
        let list = http
            .get(format!("{sas}&restype=container&comp=list"))
            .send()
            .await
            .unwrap();
        assert_eq!(list.status(), 400);

        // Ranged GET with MD5; the footer is a valid fixed VHD footer.
        let total = (16u64 << 20) + 512;
        let ranged = http
            .get(&sas)
            .header(
                "x-ms-range",
                format!("bytes={}-{}", total - 1024, total - 1),
            )
            .header("x-ms-range-get-content-md5", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(ranged.status(), 206);
        assert_eq!(
            ranged.headers()["content-range"],
            format!("bytes {}-{}/{total}", total - 1024, total - 1).as_str()
        );
        let md5 = ranged.headers()["content-md5"]
            .to_str()
            .unwrap()
            .to_string();
        let body = ranged.bytes().await.unwrap();
        use base64::Engine;
        use md5::Digest;
        assert_eq!(
            md5,
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body))
        );
        let footer = hyper2kvm_core::VhdFooter::parse(body[512..].try_into().unwrap(), 0).unwrap();
        assert_eq!(footer.current_size, 16 << 20);
        let mut want = vec![0u8; 512];
        sim.disk("web_OsDisk_1")
            .unwrap()
            .read_at((16 << 20) - 512, &mut want)
            .unwrap();
        assert_eq!(&body[..512], &want[..]);
        let too_big = http
            .get(&sas)
            .header("x-ms-range", "bytes=0-4194304")
            .header("x-ms-range-get-content-md5", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(too_big.status(), 400);

        // Page list: 2 ranges a page, then the footer's page.
        let mut marker = String::new();
        let mut ranges = Vec::new();
        loop {
            let url = format!("{sas}&comp=pagelist{marker}");
            let xml = http.get(url).send().await.unwrap().text().await.unwrap();
            assert!(
                xml.starts_with("<?xml") && xml.contains("<PageList>"),
                "{xml}"
            );
            ranges.extend(xml.matches("<PageRange>").map(|_| ()));
            match xml.split_once("<NextMarker>") {
                Some((_, rest)) => {
                    marker = format!(
                        "&marker={}",
                        rest.split_once('<').unwrap().0.replace('!', "%21")
                    )
                }
                None => break,
            }
        }
        assert_eq!(ranges.len(), 4);
        assert!(sim.counters().received(Route::BlobPageList) >= 2);

        // A snapshot with an open grant cannot be deleted; after the revoke the SAS is refused.
        let del = http
            .delete(format!("{snap}?api-version=2025-01-02"))
            .send()
            .await
            .unwrap();
        assert_eq!(del.status(), 409);
        let end = http
            .post(format!("{snap}/endGetAccess?api-version=2025-01-02"))
            .send()
            .await
            .unwrap();
        assert_eq!(finish(&http, end).await.0, 200);
        assert_eq!(sim.counters().open_grants(), 0);
        let refused = http.head(&sas).send().await.unwrap();
        assert_eq!(refused.status(), 403);
        let refused = http
            .get(&sas)
            .header("x-ms-range", "bytes=0-511")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.headers()["x-ms-error-code"], "AuthenticationFailed");
        let xml = refused.text().await.unwrap();
        assert!(xml.contains("<Code>AuthenticationFailed</Code>"), "{xml}");
        let sig = sas.split("sig=").nth(1).unwrap().split('&').next().unwrap();
        assert!(!xml.contains(sig));
        let del = http
            .delete(format!("{snap}?api-version=2025-01-02"))
            .send()
            .await
            .unwrap();
        assert_eq!(finish(&http, del).await.0, 200);
        assert_eq!(sim.counters().snapshots_alive(), 0);
        let gone = http
            .get(format!("{snap}?api-version=2025-01-02"))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404);

        // Deallocating the VM allows a grant on its disk; the instance view follows.
        let vm = format!("{base}/virtualMachines/web");
        for (action, word) in [("powerOff", "stopped"), ("deallocate", "deallocated")] {
            let resp = http
                .post(format!("{vm}/{action}?api-version=2025-04-01"))
                .send()
                .await
                .unwrap();
            assert_eq!(finish(&http, resp).await.0, 200);
            assert_eq!(sim.power_state("sub-1", "rg", "web").unwrap(), word);
        }
        let (_, _, model) = get(&format!("{vm}?api-version=x&$expand=instanceView")).await;
        assert_eq!(
            model["properties"]["instanceView"]["statuses"][1]["code"],
            "PowerState/deallocated"
        );
        let (status, _) = grant(disk.clone()).await;
        assert_eq!(status, 200);
        let c = sim.counters();
        assert_eq!((c.grants(), c.revokes(), c.open_grants()), (2, 1, 1));
        // Revoking twice is fine.
        for _ in 0..2 {
            let end = http
                .post(format!("{disk}/endGetAccess?api-version=2025-01-02"))
                .send()
                .await
                .unwrap();
            assert_eq!(finish(&http, end).await.0, 200);
        }
        assert_eq!(c.open_grants(), 0);

        // VM sizes with Azure's field names.
        let (status, _, sizes) = get(&format!(
            "{}/subscriptions/sub-1/providers/Microsoft.Compute/locations/westeurope/vmSizes?api-version=2025-04-01",
            sim.base_url()
        ))
        .await;
        assert_eq!(status, 200);
        let d2 = sizes["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "Standard_D2s_v5")
            .unwrap();
        assert_eq!(
            (d2["numberOfCores"].as_u64(), d2["memoryInMB"].as_u64()),
            (Some(2), Some(8192))
        );
        for field in ["maxDataDiskCount", "osDiskSizeInMB", "resourceDiskSizeInMB"] {
            assert!(d2[field].is_u64(), "{field}");
        }
    }

    const FAULTS: &str = r#"
settings: { operations: { polls: 0, immediate: true } }
subscriptions:
  - id: sub-1
    resource_groups:
      - name: rg
        vms:
          - name: a
            power_state: deallocated
            disks:
              - { size_bytes: 4194304, fault: grant_denied }
              - size_bytes: 4194304
                fault: read_fails
                content: { seed: 2, extents: [{ offset: 0, length: 65536 }] }
          - name: b
            power_state: running
            disks: [{ size_bytes: 4194304, fault: snapshot_fails }]
"#;

    #[tokio::test]
    async fn disk_faults_answer_as_azure() {
        let sim = Simulator::start(&Scenario::from_yaml(FAULTS).unwrap())
            .await
            .unwrap();
        let http = client();
        let base = format!(
            "{}/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute",
            sim.base_url()
        );
        let post = |url: String, body: Value| {
            let http = http.clone();
            async move {
                let resp = http
                    .post(format!("{url}?api-version=2025-01-02"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (
                    status,
                    serde_json::from_slice::<Value>(&resp.bytes().await.unwrap())
                        .unwrap_or(Value::Null),
                )
            }
        };
        let grant = json!({"access": "Read", "durationInSeconds": 600});
        let put_snapshot = |name: &str, disk: &str| {
            let source = format!(
                "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/disks/{disk}"
            );
            let req = http
                .put(format!("{base}/snapshots/{name}?api-version=2025-01-02"))
                .header("content-type", "application/json")
                .body(json!({"location": "westeurope", "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source}}}).to_string());
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                (
                    status,
                    serde_json::from_slice::<Value>(&resp.bytes().await.unwrap())
                        .unwrap_or(Value::Null),
                )
            }
        };

        // grant_denied: the disk and a snapshot of it (which is created) refuse grants.
        let (status, err) = post(
            format!("{base}/disks/a_OsDisk_1/beginGetAccess"),
            grant.clone(),
        )
        .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (403, Some("AuthorizationFailed"))
        );
        assert_eq!(put_snapshot("s-a", "a_OsDisk_1").await.0, 200);
        let (status, err) = post(
            format!("{base}/snapshots/s-a/beginGetAccess"),
            grant.clone(),
        )
        .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (403, Some("AuthorizationFailed"))
        );
        assert_eq!(sim.counters().open_grants(), 0);

        // snapshot_fails: 409, and nothing is created.
        let (status, err) = put_snapshot("s-b", "b_OsDisk_1").await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (409, Some("OperationNotAllowed"))
        );
        assert_eq!(sim.counters().snapshots_alive(), 1);
        assert_eq!(sim.counters().snapshots_created(), 1);

        // read_fails: granted, HEAD and the footer answer; the disk's bytes are 404.
        let (status, out) = post(
            format!("{base}/disks/a_DataDisk_0/beginGetAccess"),
            grant.clone(),
        )
        .await;
        assert_eq!(status, 200);
        let sas = out["accessSAS"].as_str().unwrap().to_string();
        assert_eq!(http.head(&sas).send().await.unwrap().status(), 200);
        let range = |r: &'static str| http.get(&sas).header("x-ms-range", r).send();
        let refused = range("bytes=0-511").await.unwrap();
        assert_eq!(refused.status(), 404);
        assert_eq!(refused.headers()["x-ms-error-code"], "BlobNotFound");
        let footer = range("bytes=4194304-4194815").await.unwrap();
        assert_eq!(footer.status(), 206);
        // A snapshot of it fails the same way.
        assert_eq!(put_snapshot("s-r", "a_DataDisk_0").await.0, 200);
        let (status, out) = post(format!("{base}/snapshots/s-r/beginGetAccess"), grant).await;
        assert_eq!(status, 200);
        let snap_sas = out["accessSAS"].as_str().unwrap().to_string();
        let refused = http
            .get(&snap_sas)
            .header("x-ms-range", "bytes=0-511")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 404);
    }
}
