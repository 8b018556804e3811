//! Warm migration's Azure surface in the simulator: incremental snapshots (`incremental:
//! true`, `sourceUniqueId`), Get Page Ranges with `x-ms-previous-snapshot-url` (written and
//! cleared ranges, `NextMarker` paging), a running VM's disk changed between snapshots, and
//! Azure's limits (7 incremental snapshots per disk per 5 minutes, 5 open SAS per snapshot
//! family, no diff across a recreated disk or the 4 TiB boundary).

#![allow(clippy::single_range_in_vec_init)] // a list of one range is what is meant

use std::ops::Range;

use hyper2kvm_sim::{IncrementalLimits, Scenario, SimHandle, Simulator};
use serde_json::{json, Value};

const SCENARIO: &str = r#"
settings: { operations: { polls: 0, immediate: true } }
subscriptions:
  - id: sub-1
    resource_groups:
      - name: rg
        vms:
          - name: web
            power_state: running
            disks:
              - size_bytes: 16777216
                content: { seed: 3, extents: [{ offset: 0, length: 4194304 }, { offset: 8388608, length: 2097152 }] }
              - size_bytes: 4398046511104
                content: { seed: 4, extents: [{ offset: 0, length: 1048576 }] }
"#;

const MIB: u64 = 1 << 20;

struct Az {
    sim: SimHandle,
    http: reqwest::Client,
    base: String,
}

impl Az {
    async fn start() -> Az {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = Simulator::start(&Scenario::from_yaml(SCENARIO).unwrap())
            .await
            .unwrap();
        let base = format!(
            "{}/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute",
            sim.base_url()
        );
        Az {
            sim,
            http: reqwest::Client::new(),
            base,
        }
    }

    async fn json(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn snapshot(&self, name: &str, disk: &str, incremental: bool) -> (u16, Value) {
        let source = format!(
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/disks/{disk}"
        );
        let body = json!({"location": "westeurope", "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source}, "incremental": incremental}});
        let resp = self
            .http
            .put(format!(
                "{}/snapshots/{name}?api-version=2025-01-02",
                self.base
            ))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let retry_after = resp.headers().get("retry-after").cloned();
        let (status, mut v) = Az::json(resp).await;
        if let Some(r) = retry_after {
            v["retry-after"] = json!(r.to_str().unwrap());
        }
        (status, v)
    }

    async fn grant(&self, name: &str) -> Result<String, (u16, Value)> {
        let resp = self
            .http
            .post(format!(
                "{}/snapshots/{name}/beginGetAccess?api-version=2025-01-02",
                self.base
            ))
            .header("content-type", "application/json")
            .body(json!({"access": "Read", "durationInSeconds": 600}).to_string())
            .send()
            .await
            .unwrap();
        match Az::json(resp).await {
            (200, v) => Ok(v["accessSAS"].as_str().unwrap().to_string()),
            other => Err(other),
        }
    }

    async fn revoke(&self, name: &str) {
        let resp = self
            .http
            .post(format!(
                "{}/snapshots/{name}/endGetAccess?api-version=2025-01-02",
                self.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// Every page of a (diff) page list: `(written, cleared, pages)`, or the error status
    /// and code.
    async fn diff(
        &self,
        sas: &str,
        prev: Option<&str>,
        version: Option<&str>,
    ) -> Result<(Vec<Range<u64>>, Vec<Range<u64>>, usize), (u16, String)> {
        let (mut written, mut cleared, mut pages) = (Vec::new(), Vec::new(), 0);
        let mut marker = String::new();
        loop {
            let mut req = self
                .http
                .get(format!("{sas}&comp=pagelist&maxresults=2{marker}"));
            if let Some(p) = prev {
                req = req.header("x-ms-previous-snapshot-url", p);
            }
            if let Some(v) = version {
                req = req.header("x-ms-version", v);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let code = resp
                .headers()
                .get("x-ms-error-code")
                .map(|v| v.to_str().unwrap().to_string());
            let xml = resp.text().await.unwrap();
            if status != 200 {
                return Err((status, code.unwrap_or_default()));
            }
            pages += 1;
            // Ranges in document order, each tagged.
            let mut rest = xml.as_str();
            while let Some(at) = rest.find("Range><Start>") {
                let tag_start = rest[..at].rfind('<').unwrap();
                let clear = rest[tag_start..at].contains("Clear");
                let body = &rest[at + "Range><Start>".len()..];
                let (s, body) = body.split_once("</Start><End>").unwrap();
                let (e, body) = body.split_once("</End>").unwrap();
                let r = s.parse::<u64>().unwrap()..e.parse::<u64>().unwrap() + 1;
                if clear {
                    cleared.push(r);
                } else {
                    written.push(r);
                }
                rest = body;
            }
            match xml.split_once("<NextMarker>") {
                Some((_, m)) => {
                    marker = format!(
                        "&marker={}",
                        m.split_once('<').unwrap().0.replace('!', "%21")
                    )
                }
                None => break,
            }
        }
        Ok((written, cleared, pages))
    }

    async fn read(&self, sas: &str, range: Range<u64>) -> Vec<u8> {
        let resp = self
            .http
            .get(sas)
            .header(
                "x-ms-range",
                format!("bytes={}-{}", range.start, range.end - 1),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        resp.bytes().await.unwrap().to_vec()
    }

    async fn disk_unique_id(&self, disk: &str) -> String {
        let resp = self
            .http
            .get(format!("{}/disks/{disk}?api-version=2025-01-02", self.base))
            .send()
            .await
            .unwrap();
        Az::json(resp).await.1["properties"]["uniqueId"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

const V: Option<&str> = Some("2021-08-06");

#[tokio::test]
async fn diff_reports_writes_and_trims_between_incremental_snapshots() {
    let az = Az::start().await;
    let disk = "web_OsDisk_1";
    let (status, s1) = az.snapshot("s1", disk, true).await;
    assert_eq!(status, 200, "{s1}");
    assert_eq!(s1["properties"]["incremental"], true);
    let unique = az.disk_unique_id(disk).await;
    assert_eq!(s1["properties"]["creationData"]["sourceUniqueId"], unique);

    let before = {
        let mut b = vec![0u8; MIB as usize];
        az.sim.disk_now(disk).unwrap().read_at(MIB, &mut b).unwrap();
        b
    };
    // The running VM writes inside a written extent and in a hole, and trims part of one,
    // one of them through the control endpoint.
    az.sim.write_disk(disk, MIB, MIB / 2, 77).unwrap();
    az.sim.write_disk(disk, 12 * MIB, MIB, 78).unwrap();
    let trim = az
        .http
        .post(format!(
            "{}/_sim/disks/{disk}/trim?offset={}&length={}",
            az.sim.base_url(),
            9 * MIB,
            MIB / 2
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(trim.status(), 204);
    let (status, _) = az.snapshot("s2", disk, true).await;
    assert_eq!(status, 200);

    let sas1 = az.grant("s1").await.unwrap();
    let sas2 = az.grant("s2").await.unwrap();
    let (written, cleared, pages) = az.diff(&sas2, Some(&sas1), V).await.unwrap();
    assert_eq!(written, [MIB..MIB + MIB / 2, 12 * MIB..13 * MIB]);
    assert_eq!(cleared, [9 * MIB..9 * MIB + MIB / 2]);
    assert_eq!(pages, 2, "three ranges, two a page");

    // The snapshots hold the disk as it was: s1 the old bytes, s2 the new ones.
    assert_eq!(az.read(&sas1, MIB..2 * MIB).await, before);
    let now = az.sim.disk_now(disk).unwrap();
    let mut want = vec![0u8; MIB as usize];
    now.read_at(MIB, &mut want).unwrap();
    assert_eq!(az.read(&sas2, MIB..2 * MIB).await, want);
    assert_ne!(want, before);
    assert!(az
        .read(&sas2, 9 * MIB..9 * MIB + 512)
        .await
        .iter()
        .all(|&b| b == 0));
    // A full page list of s2 is the disk's written ranges now, plus the footer.
    let (full, none, _) = az.diff(&sas2, None, V).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(
        full,
        [
            0..4 * MIB,
            8 * MIB..9 * MIB,
            9 * MIB + MIB / 2..10 * MIB,
            12 * MIB..13 * MIB,
            16 * MIB..16 * MIB + 512
        ]
    );

    // Azure's rules for the diff call.
    assert_eq!(
        az.diff(&sas2, Some(&sas1), None).await.unwrap_err(),
        (400, "InvalidHeaderValue".into())
    );
    assert_eq!(
        az.diff(&sas1, Some(&sas2), V).await.unwrap_err(),
        (400, "PreviousSnapshotCannotBeNewer".into())
    );
    // No change: an empty diff.
    assert_eq!(
        az.diff(&sas2, Some(&sas2), V).await.unwrap(),
        (vec![], vec![], 1)
    );
    az.revoke("s1").await;
    assert_eq!(
        az.diff(&sas2, Some(&sas1), V).await.unwrap_err(),
        (409, "PreviousSnapshotNotFound".into())
    );

    // A full snapshot cannot be diffed.
    assert_eq!(az.snapshot("full", disk, false).await.0, 200);
    let full_sas = az.grant("full").await.unwrap();
    assert_eq!(
        az.diff(&full_sas, Some(&sas2), V).await.unwrap_err(),
        (409, "PreviousSnapshotOperationNotSupported".into())
    );

    // A recreated disk has a new uniqueId; its snapshots are another family.
    az.sim.recreate_disk(disk).unwrap();
    let recreated = az.disk_unique_id(disk).await;
    assert_ne!(recreated, unique);
    let (_, s3) = az.snapshot("s3", disk, true).await;
    assert_eq!(
        s3["properties"]["creationData"]["sourceUniqueId"],
        recreated
    );
    let sas3 = az.grant("s3").await.unwrap();
    assert_eq!(
        az.diff(&sas3, Some(&sas2), V).await.unwrap_err(),
        (409, "PreviousSnapshotOperationNotSupported".into())
    );
    assert_eq!(
        az.diff(&sas3, None, V).await.unwrap().0,
        [16 * MIB..16 * MIB + 512]
    );
}

#[tokio::test]
async fn incremental_limits_rate_sas_and_4_tib() {
    let az = Az::start().await;
    let disk = "web_OsDisk_1";
    az.sim.set_incremental_limits(IncrementalLimits {
        per_window: 2,
        window_secs: 60,
        open_grants_per_family: 2,
    });
    for name in ["a", "b"] {
        assert_eq!(az.snapshot(name, disk, true).await.0, 200);
    }
    let (status, err) = az.snapshot("c", disk, true).await;
    assert_eq!(status, 429, "{err}");
    let wait: u64 = err["retry-after"].as_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Full snapshots are not limited.
    assert_eq!(az.snapshot("f", disk, false).await.0, 200);
    // Another disk has its own window.
    assert_eq!(az.snapshot("d", "web_DataDisk_0", true).await.0, 200);

    // Two snapshots of the family may have a SAS; a third waits for a revoke. Another
    // family and full snapshots do not count.
    az.sim.set_incremental_limits(IncrementalLimits {
        per_window: 100,
        window_secs: 60,
        open_grants_per_family: 2,
    });
    assert_eq!(az.snapshot("c", disk, true).await.0, 200);
    az.grant("a").await.unwrap();
    az.grant("b").await.unwrap();
    az.grant("f").await.unwrap();
    az.grant("d").await.unwrap();
    // Granting the same snapshot again replaces its grant.
    az.grant("b").await.unwrap();
    let (status, err) = az.grant("c").await.unwrap_err();
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("OperationNotAllowed"))
    );
    az.revoke("a").await;
    az.grant("c").await.unwrap();

    // Resized across 4 TiB: no diff.
    let big = "web_DataDisk_0";
    let sas_d = az.grant("d").await;
    let sas_d = sas_d.unwrap();
    az.sim.resize_disk(big, (4 << 40) + MIB).unwrap();
    az.sim.write_disk(big, 4 << 40, MIB, 5).unwrap();
    assert_eq!(az.snapshot("d2", big, true).await.0, 200);
    let sas_d2 = az.grant("d2").await.unwrap();
    assert_eq!(
        az.diff(&sas_d2, Some(&sas_d), V).await.unwrap_err(),
        (409, "PreviousSnapshotOperationNotSupported".into())
    );

    // The control endpoint refuses what makes no sense.
    let post = |path: String| {
        az.http
            .post(format!("{}/_sim/disks/{path}", az.sim.base_url()))
            .send()
    };
    assert_eq!(
        post("nope/write?offset=0&length=512".into())
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        post(format!("{disk}/write?offset=1&length=512"))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(format!("{disk}/resize?size_bytes=1048576"))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(format!("{disk}/frobnicate")).await.unwrap().status(),
        400
    );
}
