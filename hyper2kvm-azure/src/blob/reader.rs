//! Reading an exported managed disk, a page blob holding a fixed VHD, by ranges.
//!
//! * `HEAD` gives the blob's length, which must be the disk's size plus the 512-byte VHD
//!   footer; the footer is fetched, checked and excluded from the disk.
//! * `Get Page Ranges` (paged by `marker`) says which pages were ever written: only those are
//!   read, so a 128 GiB disk with 9 GiB written moves 9 GiB.
//! * Every ranged `GET` is at most 4 MiB and asks for `x-ms-range-get-content-md5`; the
//!   returned `Content-MD5` is checked. The body streams straight into the caller's buffer,
//!   and is hashed while it arrives, side by side with the other reads' bodies in SIMD lanes
//!   ([`super::md5x`]), since one MD5 at a time took most of the CPU.
//! * Failures are retried per request: statuses and connection errors by the shared retry
//!   loop ([`crate::retry`]), then short bodies, broken bodies and MD5 mismatches here, each
//!   with backoff. A `403` (the SAS expired or was revoked) asks for a new grant when the
//!   reader has a way to get one (single-flight: one re-grant however many reads saw the
//!   403); a SAS the user gave cannot be renewed, so its `403` is retried a few times, then
//!   reported.
//! * For warm migration, `Get Page Ranges` with `x-ms-previous-snapshot-url` (the SAS URL of
//!   an older incremental snapshot of the same disk) says what changed since it: pages
//!   written (`PageRange`) and cleared (`ClearRange`) ([`PageBlobReader::changed_since`]).
//!   That URL is a secret like any SAS: it only travels in the header.
//! * No conditional headers (`If-Match`, …) are ever sent: `md-*` export hosts reject them.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::md5x::BodyHasher;
use base64::Engine;
use hyper2kvm_core::vhd::{DiskType, VhdFooter, FOOTER_LEN};
use hyper2kvm_core::{AlignedBuf, BoxFuture, ChangedRanges, Delta, DiskReader};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};

use super::pagelist::parse_page_list;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::{send_retry, Jitter, RetryConfig, SplitMix64};
use crate::sas::SasUrl;

/// The Blob service version we speak (sent as `x-ms-version`).
pub const STORAGE_API_VERSION: &str = "2021-08-06";
/// The largest range for which the service computes a `Content-MD5`.
pub const MAX_RANGE: usize = 4 << 20;
/// How often a `403` is retried when the SAS cannot be renewed: clock skew at the start of
/// a fresh grant can cause a short burst of them.
const FORBIDDEN_RETRIES: u32 = 3;

/// Gets a fresh SAS for the same blob (for an exported disk: `beginGetAccess` again).
pub type Regrant = Arc<dyn Fn() -> BoxFuture<'static, Result<SasUrl>> + Send + Sync>;

/// How a [`PageBlobReader`] behaves.
#[derive(Clone)]
pub struct BlobOptions {
    /// Retries of statuses (429, 5xx, 408), connection errors and timeouts per request.
    pub retry: RetryConfig,
    /// Attempts per range for failures the status line does not show: short or broken
    /// bodies, MD5 mismatches, `403`s.
    pub body_retries: u32,
    /// How to renew an expired SAS, if the reader can.
    pub regrant: Option<Regrant>,
    /// What messages call the disk; by default the URL without its query.
    pub name: Option<String>,
    /// What a resumed conversion compares; by default the name and size.
    pub identity: Option<String>,
    /// Backoff jitter; tests inject a seeded one.
    pub jitter: Option<Arc<dyn Jitter>>,
}

impl Default for BlobOptions {
    fn default() -> Self {
        BlobOptions {
            retry: RetryConfig::default(),
            body_retries: 10,
            regrant: None,
            name: None,
            identity: None,
            jitter: None,
        }
    }
}

/// Random access to a page blob that holds a fixed VHD; implements core's [`DiskReader`].
#[derive(Clone)]
pub struct PageBlobReader {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The current SAS and how many times it was renewed.
    sas: RwLock<(u64, SasUrl)>,
    regrant: Option<Regrant>,
    regrant_lock: tokio::sync::Mutex<()>,
    size: u64,
    name: String,
    identity: String,
    retry: RetryConfig,
    body_retries: u32,
    jitter: Arc<dyn Jitter>,
    requests: AtomicU64,
    received: AtomicU64,
}

/// Why an attempt failed, and so what to do next.
enum Failure {
    /// Worth another try after a pause.
    Retry(Error),
    /// The SAS was refused.
    Forbidden(Error),
    /// Retrying cannot help.
    Fatal(Error),
}

impl PageBlobReader {
    /// Opens the blob at `sas`: checks it is a page blob ending in a fixed-VHD footer whose
    /// size matches the blob's length.
    pub async fn open(http: reqwest::Client, sas: SasUrl, opts: BlobOptions) -> Result<Self> {
        let name = opts.name.clone().unwrap_or_else(|| sas.without_query());
        let mut inner = Inner {
            http,
            sas: RwLock::new((0, sas)),
            regrant: opts.regrant,
            regrant_lock: tokio::sync::Mutex::new(()),
            size: 0,
            identity: String::new(),
            name,
            retry: opts.retry,
            body_retries: opts.body_retries,
            jitter: opts
                .jitter
                .unwrap_or_else(|| Arc::new(SplitMix64::from_clock())),
            requests: AtomicU64::new(0),
            received: AtomicU64::new(0),
        };
        let blob_len = inner.head().await?;
        if blob_len < FOOTER_LEN as u64 || blob_len % 512 != 0 {
            return Err(Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "{}: blob length {blob_len} is not a whole number of 512-byte pages with a VHD footer",
                    inner.name
                ),
            ));
        }
        let footer_at = blob_len - FOOTER_LEN as u64;
        let footer: [u8; FOOTER_LEN] = inner
            .get_range(footer_at, AlignedBuf::zeroed(FOOTER_LEN), 0..FOOTER_LEN)
            .await?[..]
            .try_into()
            .expect("FOOTER_LEN bytes");
        let footer = VhdFooter::parse(&footer, footer_at).map_err(|e| {
            Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "{}: the blob does not end in a valid VHD footer: {e}",
                    inner.name
                ),
            )
        })?;
        if footer.disk_type != DiskType::Fixed || footer.current_size != footer_at {
            return Err(Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "{}: expected a fixed VHD of {footer_at} bytes before its footer, the footer says {:?} of {} bytes",
                    inner.name, footer.disk_type, footer.current_size
                ),
            ));
        }
        inner.size = footer_at;
        inner.identity = opts
            .identity
            .unwrap_or_else(|| format!("{} ({} bytes)", inner.name, inner.size));
        Ok(PageBlobReader {
            inner: Arc::new(inner),
        })
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Body bytes received so far (ranges, footer and page lists).
    pub fn bytes_received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// The written ranges of the disk, from `Get Page Ranges`, merged and sorted.
    pub async fn page_ranges(&self) -> Result<Vec<Range<u64>>> {
        self.inner.page_ranges().await
    }

    /// What changed in this blob (an incremental snapshot) since the older incremental
    /// snapshot of the same disk whose SAS URL is `previous`: Get Page Ranges with
    /// `x-ms-previous-snapshot-url`, every `NextMarker` page, clipped to the disk and merged.
    ///
    /// When Azure cannot diff the two (`409 PreviousSnapshotNotFound`: the older one is gone
    /// or its SAS revoked; `409 PreviousSnapshotOperationNotSupported`: not incremental, of
    /// another disk or across the 4 TiB boundary) the answer is [`Delta::BaseUnusable`] with
    /// the reason, so the caller copies the blob in full.
    ///
    /// <https://learn.microsoft.com/rest/api/storageservices/get-page-ranges>
    pub async fn changed_since(&self, previous: &SasUrl) -> Result<Delta> {
        let mut marker: Option<String> = None;
        let (mut written, mut cleared) = (Vec::new(), Vec::new());
        loop {
            let list = match self
                .inner
                .page_list_page(marker.as_deref(), Some(previous))
                .await?
            {
                Ok(list) => list,
                Err(why) => return Ok(Delta::BaseUnusable(why)),
            };
            written.extend(list.ranges);
            cleared.extend(list.cleared);
            match list.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        Ok(Delta::Changed(ChangedRanges {
            written: clip_merge(written, self.inner.size),
            cleared: clip_merge(cleared, self.inner.size),
        }))
    }
}

impl Inner {
    fn current(&self) -> (u64, Url) {
        let guard = self.sas.read().unwrap();
        (guard.0, guard.1.expose().clone())
    }

    /// Sends one request through the shared retry loop (statuses, connections, timeouts).
    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
    ) -> Result<Response> {
        let make = || {
            let mut request = reqwest::Request::new(method.clone(), url.clone());
            let h = request.headers_mut();
            h.insert(
                "x-ms-version",
                HeaderValue::from_static(STORAGE_API_VERSION),
            );
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    h.insert(n, v);
                }
            }
            request
        };
        send_retry(
            &self.http,
            &self.retry,
            self.jitter.as_ref(),
            &self.requests,
            make,
        )
        .await
    }

    /// Classifies a response that is not the success we wanted.
    fn failed(&self, what: &str, status: StatusCode) -> Failure {
        let msg = format!("{}: {what}: HTTP {status}", self.name);
        match status {
            StatusCode::FORBIDDEN => Failure::Forbidden(
                Error::new(
                    ErrorKind::PermissionDenied,
                    format!("{msg} (the SAS expired or was revoked)"),
                )
                .with_status(403),
            ),
            StatusCode::NOT_FOUND => Failure::Fatal(
                Error::new(
                    ErrorKind::NotFound,
                    format!("{msg} (the blob does not exist)"),
                )
                .with_status(404),
            ),
            s => Failure::Fatal(Error::new(ErrorKind::Status, msg).with_status(s.as_u16())),
        }
    }

    /// After a failed attempt: pause, or renew the SAS, or give up with the error.
    async fn recover(&self, failures: &mut u32, failure: Failure, generation: u64) -> Result<()> {
        *failures += 1;
        let give_up = |e: Error, n: u32| {
            let status = e.status();
            let err = Error::new(e.kind(), format!("{e} (gave up after {n} attempts)"));
            match status {
                Some(s) => err.with_status(s),
                None => err,
            }
        };
        match failure {
            Failure::Fatal(e) => Err(e),
            Failure::Forbidden(e) => match &self.regrant {
                Some(_) if *failures <= self.body_retries => self.renew(generation).await,
                Some(_) => Err(give_up(e, *failures)),
                None if *failures <= FORBIDDEN_RETRIES => {
                    self.pause(*failures, FORBIDDEN_RETRIES, &e).await;
                    Ok(())
                }
                None => Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("{e}; grant access again and pass the new URL"),
                )
                .with_status(403)),
            },
            Failure::Retry(e) if *failures <= self.body_retries => {
                self.pause(*failures, self.body_retries, &e).await;
                Ok(())
            }
            Failure::Retry(e) => Err(give_up(e, *failures)),
        }
    }

    /// Waits before attempt `failures + 1` after `why`, saying so (see [`crate::retry`]).
    async fn pause(&self, failures: u32, max: u32, why: &Error) {
        let wait = self
            .retry
            .backoff
            .delay(failures.saturating_sub(1), self.jitter.next_f64())
            .min(Duration::from_secs(30));
        crate::retry::log_retry(
            failures.saturating_sub(1),
            max,
            &format!("a read of {}", self.name),
            &why.to_string(),
            wait,
        );
        crate::retry::visible_sleep(wait, || format!("a retry of a read of {}", self.name)).await;
    }

    /// Renews the SAS unless another reader already did since `seen` was current.
    async fn renew(&self, seen: u64) -> Result<()> {
        let regrant = self.regrant.as_ref().expect("renew needs a regrant");
        let _one_at_a_time = self.regrant_lock.lock().await;
        if self.sas.read().unwrap().0 != seen {
            return Ok(());
        }
        let fresh = regrant().await?;
        let mut guard = self.sas.write().unwrap();
        *guard = (seen + 1, fresh);
        Ok(())
    }

    /// The blob's length, from `HEAD`; refuses anything but a page blob.
    async fn head(&self) -> Result<u64> {
        let mut failures = 0;
        loop {
            let (generation, url) = self.current();
            let resp = self.send(Method::HEAD, &url, &[]).await?;
            let failure = if resp.status().is_success() {
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                if let Some(kind) = header("x-ms-blob-type") {
                    if kind != "PageBlob" {
                        return Err(Error::new(
                            ErrorKind::InvalidResponse,
                            format!("{}: is a {kind}, not a page blob; managed disks export as page blobs", self.name),
                        ));
                    }
                }
                match header("content-length").and_then(|v| v.parse::<u64>().ok()) {
                    Some(len) => return Ok(len),
                    None => Failure::Retry(Error::new(
                        ErrorKind::InvalidResponse,
                        format!("{}: HEAD gave no Content-Length", self.name),
                    )),
                }
            } else {
                self.failed("HEAD", resp.status())
            };
            self.recover(&mut failures, failure, generation).await?;
        }
    }

    /// Reads `buf[range]` (at most [`MAX_RANGE`] bytes) from `offset`, MD5-checked, and gives
    /// the buffer back.
    async fn get_range(
        &self,
        offset: u64,
        mut buf: AlignedBuf,
        range: Range<usize>,
    ) -> Result<AlignedBuf> {
        debug_assert!(!range.is_empty() && range.len() <= MAX_RANGE);
        let last = offset + range.len() as u64 - 1;
        let headers = [
            ("x-ms-range", format!("bytes={offset}-{last}")),
            ("x-ms-range-get-content-md5", "true".to_string()),
        ];
        let mut failures = 0;
        loop {
            let (generation, url) = self.current();
            // Before the request: the MD5 thread counts the bodies to come.
            let hasher = BodyHasher::new();
            let resp = self.send(Method::GET, &url, &headers).await?;
            let failure = match resp.status() {
                StatusCode::PARTIAL_CONTENT | StatusCode::OK => {
                    match self
                        .receive(resp, &mut buf[range.clone()], offset, hasher)
                        .await
                    {
                        Ok((expected, digest)) => {
                            let actual = base64::engine::general_purpose::STANDARD.encode(digest);
                            if actual == expected.trim() {
                                return Ok(buf);
                            }
                            Failure::Retry(Error::new(
                                ErrorKind::Integrity,
                                format!(
                                    "{}: range at {offset}: Content-MD5 mismatch (expected {expected}, got {actual})",
                                    self.name
                                ),
                            ))
                        }
                        Err(e) => Failure::Retry(e),
                    }
                }
                status => self.failed(&format!("GET bytes {offset}-{last}"), status),
            };
            self.recover(&mut failures, failure, generation).await?;
        }
    }

    /// Streams a range's body into `dest`, hashing it as it arrives, checks its length, and
    /// returns the `Content-MD5` to check and the body's MD5.
    async fn receive(
        &self,
        mut resp: Response,
        dest: &mut [u8],
        offset: u64,
        mut hasher: BodyHasher,
    ) -> Result<(String, [u8; 16])> {
        let what = |why: String| {
            Error::new(
                ErrorKind::Network,
                format!("{}: range at {offset}: {why}", self.name),
            )
        };
        let md5 = resp
            .headers()
            .get("content-md5")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut filled = 0usize;
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    let end = filled + bytes.len();
                    if end > dest.len() {
                        return Err(what(format!(
                            "body longer than the {} bytes asked for",
                            dest.len()
                        )));
                    }
                    dest[filled..end].copy_from_slice(&bytes);
                    self.received
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    filled = end;
                    hasher.push(bytes);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(what("the body broke off".into()).with_source(e.without_url()))
                }
            }
        }
        if filled != dest.len() {
            return Err(what(format!(
                "short body: {filled} of {} bytes",
                dest.len()
            )));
        }
        let md5 = md5.ok_or_else(|| what("no Content-MD5 although it was asked for".into()))?;
        Ok((md5, hasher.finish().await))
    }

    /// All written ranges, following `NextMarker`, clipped to the disk and merged.
    async fn page_ranges(&self) -> Result<Vec<Range<u64>>> {
        let mut marker: Option<String> = None;
        let mut ranges = Vec::new();
        loop {
            let list = self
                .page_list_page(marker.as_deref(), None)
                .await?
                .map_err(|why| Error::new(ErrorKind::InvalidResponse, why))?;
            ranges.extend(list.ranges);
            match list.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        Ok(clip_merge(ranges, self.size))
    }

    /// One page of Get Page Ranges, of a diff against `previous` if given. The inner `Err`
    /// says why Azure cannot diff against `previous`.
    async fn page_list_page(
        &self,
        marker: Option<&str>,
        previous: Option<&SasUrl>,
    ) -> Result<std::result::Result<super::pagelist::PageList, String>> {
        let mut headers = vec![("x-ms-range", format!("bytes=0-{}", self.size.max(1) - 1))];
        if let Some(p) = previous {
            headers.push((
                "x-ms-previous-snapshot-url",
                p.expose().as_str().to_string(),
            ));
        }
        let mut failures = 0;
        loop {
            let (generation, mut url) = self.current();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("comp", "pagelist");
                if let Some(m) = marker {
                    q.append_pair("marker", m);
                }
            }
            let resp = self.send(Method::GET, &url, &headers).await?;
            let failure = if resp.status() == StatusCode::OK {
                match resp.bytes().await {
                    Ok(body) => {
                        self.received
                            .fetch_add(body.len() as u64, Ordering::Relaxed);
                        match std::str::from_utf8(&body)
                            .map_err(|_| ())
                            .and_then(|t| parse_page_list(t).map_err(|_| ()))
                        {
                            Ok(list) => return Ok(Ok(list)),
                            Err(()) => Failure::Retry(Error::new(
                                ErrorKind::InvalidResponse,
                                format!(
                                    "{}: Get Page Ranges returned a malformed page list",
                                    self.name
                                ),
                            )),
                        }
                    }
                    Err(e) => Failure::Retry(
                        Error::new(
                            ErrorKind::Network,
                            format!("{}: page list body broke off", self.name),
                        )
                        .with_source(e.without_url()),
                    ),
                }
            } else if let Some(why) = previous.and_then(|_| base_unusable(&resp)) {
                return Ok(Err(format!("{}: {why}", self.name)));
            } else {
                self.failed("Get Page Ranges", resp.status())
            };
            self.recover(&mut failures, failure, generation).await?;
        }
    }
}

/// Why Azure cannot diff against the previous snapshot, from a diff's error answer.
fn base_unusable(resp: &Response) -> Option<String> {
    if resp.status() != StatusCode::CONFLICT {
        return None;
    }
    let code = resp.headers().get("x-ms-error-code")?.to_str().ok()?;
    match code {
        "PreviousSnapshotNotFound" => Some(
            "the base snapshot is gone or no longer readable (PreviousSnapshotNotFound)".into(),
        ),
        "PreviousSnapshotOperationNotSupported" => Some(
            "Azure cannot diff against the base snapshot: not incremental, of another disk, or \
             the disk was resized across 4 TiB (PreviousSnapshotOperationNotSupported)"
                .into(),
        ),
        _ => None,
    }
}

/// `ranges` inside `0..size`, sorted and merged.
fn clip_merge(mut ranges: Vec<Range<u64>>, size: u64) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < size);
    for r in &mut ranges {
        r.end = r.end.min(size);
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

impl DiskReader for PageBlobReader {
    fn size(&self) -> u64 {
        self.inner.size
    }

    fn describe(&self) -> String {
        self.inner.name.clone()
    }

    fn identity(&self) -> String {
        self.inner.identity.clone()
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, hyper2kvm_core::Result<Vec<Range<u64>>>> {
        Box::pin(async move {
            self.inner
                .page_ranges()
                .await
                .map_err(hyper2kvm_core::Error::from)
        })
    }

    fn read_at(
        &self,
        offset: u64,
        mut buf: AlignedBuf,
    ) -> BoxFuture<'_, hyper2kvm_core::Result<AlignedBuf>> {
        Box::pin(async move {
            if offset
                .checked_add(buf.len() as u64)
                .is_none_or(|end| end > self.inner.size)
            {
                return Err(hyper2kvm_core::Error::new(
                    hyper2kvm_core::ErrorKind::InvalidArgument,
                    format!(
                        "read of {} bytes at {offset} past the end of the disk",
                        buf.len()
                    ),
                )
                .with_subject(self.inner.name.clone()));
            }
            let mut done = 0;
            while done < buf.len() {
                let n = (buf.len() - done).min(MAX_RANGE);
                buf = self
                    .inner
                    .get_range(offset + done as u64, buf, done..done + n)
                    .await
                    .map_err(hyper2kvm_core::Error::from)?;
                done += n;
            }
            Ok(buf)
        })
    }
}
