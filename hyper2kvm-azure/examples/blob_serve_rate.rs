//! What a page-blob server can serve over the network: the written ranges of a blob fetched
//! as ranged GETs of at most 4 MiB with `x-ms-range-get-content-md5: true` (the requests
//! `hyper2kvm convert` sends), CONCURRENCY at a time, bodies thrown away. No MD5 check, no
//! image: the ceiling our export is compared with in `bench/export.sh`.
//!
//! `blob_serve_rate 'SAS URL' [CONCURRENCY]` prints `bytes seconds`.

use std::sync::Arc;
use std::time::Instant;

use hyper2kvm_azure::{build_http_client, BlobOptions, HttpOptions, PageBlobReader, SasUrl};
use tokio::sync::Semaphore;

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: blob_serve_rate 'SAS URL' [CONCURRENCY]");
    let concurrency: usize = std::env::args()
        .nth(2)
        .map(|c| c.parse().expect("a number"))
        .unwrap_or(16);
    let http = build_http_client(&HttpOptions::default()).expect("client");
    let sas = SasUrl::parse(&url).expect("a URL");
    let reader = PageBlobReader::open(http.clone(), sas, BlobOptions::default())
        .await
        .expect("open");
    let mut pieces = Vec::new();
    for r in reader.page_ranges().await.expect("page ranges") {
        let mut at = r.start;
        while at < r.end {
            let end = (at + (4 << 20)).min(r.end);
            pieces.push((at, end));
            at = end;
        }
    }
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (start, end) in pieces {
        let permit = gate.clone().acquire_owned().await.expect("open");
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let mut resp = http
                .get(&url)
                .header("x-ms-version", "2021-08-06")
                .header("x-ms-range", format!("bytes={start}-{}", end - 1))
                .header("x-ms-range-get-content-md5", "true")
                .send()
                .await
                .expect("GET");
            assert_eq!(resp.status().as_u16(), 206);
            let mut n = 0u64;
            while let Some(chunk) = resp.chunk().await.expect("body") {
                n += chunk.len() as u64;
            }
            n
        });
    }
    let mut bytes = 0;
    while let Some(n) = tasks.join_next().await {
        bytes += n.expect("task");
    }
    println!("{bytes} {:.3}", started.elapsed().as_secs_f64());
}
