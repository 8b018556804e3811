//! What a page-blob server can serve over the network: the written ranges of a blob fetched
//! as ranged GETs of at most 4 MiB with `x-ms-range-get-content-md5: true`, CONCURRENCY at a
//! time, bodies thrown away. The ranges are cut as `hyper2kvm convert` cuts them (aligned to
//! 64 KiB clusters, chunks of `REMOTE_CHUNK_SIZE` on multiples of it), so the server sees the
//! same requests. No MD5 check, no image: the ceiling our export is compared with in
//! `bench/export.sh` and `bench/export-azurite.sh`.
//!
//! `blob_serve_rate 'SAS URL' [CONCURRENCY]` prints `bytes seconds`.

use std::sync::Arc;
use std::time::Instant;

use hyper2kvm_azure::{build_http_client, BlobOptions, HttpOptions, PageBlobReader, SasUrl};
use hyper2kvm_core::pipeline::REMOTE_CHUNK_SIZE;
use hyper2kvm_core::ranges::{align_and_merge, chunks};
use hyper2kvm_core::DiskReader;
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
    // As the pipeline does for qcow2 output with its default 64 KiB clusters.
    let ranges = align_and_merge(
        &reader.page_ranges().await.expect("page ranges"),
        64 << 10,
        reader.size(),
        0,
    );
    let pieces: Vec<(u64, u64)> = chunks(&ranges, u64::from(REMOTE_CHUNK_SIZE))
        .map(|r| (r.start, r.end))
        .collect();
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
