//! The page-blob data plane of granted disks and snapshots: `HEAD`, ranged `GET` with
//! `Content-MD5`, and `Get Page Ranges` (`comp=pagelist`) with `<NextMarker>` paging.
//!
//! The blob is the disk followed by a 512-byte fixed-VHD footer, as Azure exports a managed
//! disk. Bodies are produced piece by piece while they are sent, so a whole-blob `GET` of a
//! 1 TiB disk allocates no more than one piece; a ranged `GET` with `Content-MD5` (at most
//! 4 MiB, as Azure allows) is produced first, since the digest goes in a header.
//!
//! The `sig` of the SAS is checked against the open grant of the blob's container: a
//! revoked, expired or wrong signature is answered `403 AuthenticationFailed` (the signature
//! never appears in an answer or a log). Faults ([`BlobFaults`](crate::BlobFaults)) break
//! bodies off, cut them short, spoil the MD5, throttle and fail.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper2kvm_core::vhd::{VhdFooter, FOOTER_LEN};
use md5::{Digest, Md5};

use std::ops::Range;

use crate::content::{intersect, subtract, DiskContent};
use crate::counters::Route;
use crate::scenario::DiskFault;
use crate::server::Shared;

/// The largest range Azure computes a `Content-MD5` for.
const MAX_MD5_RANGE: u64 = 4 << 20;
/// Bytes per piece of a streamed body.
pub(crate) const PIECE: usize = 1 << 20;

/// A granted blob: the disk's content and size, and its footer.
#[derive(Clone)]
struct Blob {
    content: DiskContent,
    size: u64,
    /// `read_fails`: ranged GETs of the disk's bytes answer 404.
    unreadable: bool,
    /// An incremental snapshot's family (its disk's `uniqueId`).
    family: Option<String>,
}

impl Blob {
    fn len(&self) -> u64 {
        self.size + FOOTER_LEN as u64
    }

    /// Fills `buf` with the blob's bytes at `offset`: the disk, then the footer.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let disk_part = self.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        if disk_part > 0 {
            self.content.read_at(offset, &mut buf[..disk_part])?;
        }
        if disk_part < buf.len() {
            let footer = VhdFooter::fixed(self.size).to_bytes();
            let from = (offset + disk_part as u64 - self.size) as usize;
            let n = buf.len() - disk_part;
            buf[disk_part..].copy_from_slice(&footer[from..from + n]);
        }
        Ok(())
    }
}

fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:00000000-0000-0000-0000-000000000000\nTime:{}</Message></Error>",
        httpdate::fmt_http_date(SystemTime::now())
    );
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        h.insert("x-ms-error-code", v);
    }
    resp
}

/// Azure's `403`: the reason goes in `<AuthenticationErrorDetail>`; never the signature.
fn auth_failed(detail: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.\nRequestId:00000000-0000-0000-0000-000000000000\nTime:{}</Message><AuthenticationErrorDetail>{detail}</AuthenticationErrorDetail></Error>",
        httpdate::fmt_http_date(SystemTime::now())
    );
    let mut resp = (StatusCode::FORBIDDEN, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    h.insert(
        "x-ms-error-code",
        HeaderValue::from_static("AuthenticationFailed"),
    );
    resp
}

/// Checks the SAS and returns the blob, or the `403`.
fn authorize(
    st: &Shared,
    container: &str,
    q: &HashMap<String, String>,
) -> Result<Blob, Box<Response>> {
    let faults = st.blob_faults();
    let mut state = st.export.lock().unwrap_or_else(|e| e.into_inner());
    let refused = |detail: &str| {
        st.counters.sas_refused.fetch_add(1, Ordering::SeqCst);
        Err(Box::new(auth_failed(detail)))
    };
    let Some(grant) = state.grants.get_mut(container) else {
        return refused("The access grant of this blob was revoked or never existed.");
    };
    match q.get("sig") {
        Some(sig) if *sig == grant.sig => {}
        _ => return refused("Signature did not match."),
    }
    if SystemTime::now() >= grant.expires {
        return refused("Signed expiry time has passed.");
    }
    grant.requests += 1;
    if faults.sas_expire_after_requests > 0 && grant.requests > faults.sas_expire_after_requests {
        return refused("Signed expiry time has passed (the simulator expired this SAS).");
    }
    Ok(Blob {
        content: grant.content.clone(),
        size: grant.size,
        unreadable: grant.fault == Some(DiskFault::ReadFails),
        family: grant.family.clone(),
    })
}

/// Latency, 429 and 5xx for blob request number `n`.
async fn blob_gate(st: &Shared, n: u64) -> Option<Response> {
    let f = st.blob_faults();
    if f.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
    }
    let every = |e: u64| e > 0 && n.is_multiple_of(e);
    if every(f.throttle_every) {
        let mut resp = storage_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ServerBusy",
            "The server is busy.",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(f.retry_after_secs));
        return Some(resp);
    }
    if every(f.error_every) {
        return Some(storage_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServerBusy",
            "Operations per second is over the account limit.",
        ));
    }
    None
}

fn common_headers(resp: &mut Response, blob: &Blob) {
    let h = resp.headers_mut();
    h.insert("x-ms-blob-type", HeaderValue::from_static("PageBlob"));
    h.insert("x-ms-version", HeaderValue::from_static("2021-08-06"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        HeaderValue::from_static("\"0x8DD0000SIMBLOB\""),
    );
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static("Sun, 01 Jun 2025 08:00:00 GMT"),
    );
    h.insert("x-ms-blob-sequence-number", HeaderValue::from_static("0"));
    if let Ok(v) = HeaderValue::from_str(&blob.len().to_string()) {
        h.insert("x-ms-blob-content-length", v);
    }
}

/// `bytes=S-E` (E inclusive, optional) from `x-ms-range` or `Range`.
fn requested_range(headers: &HeaderMap) -> Option<Result<(u64, Option<u64>), ()>> {
    let value = headers
        .get("x-ms-range")
        .or_else(|| headers.get(header::RANGE))?;
    let text = value.to_str().map_err(|_| ()).ok()?;
    let spec = text.trim().strip_prefix("bytes=")?;
    let (s, e) = spec.split_once('-')?;
    let start = s.trim().parse::<u64>();
    let end = e.trim();
    Some(match (start, end.is_empty()) {
        (Ok(s), true) => Ok((s, None)),
        (Ok(s), false) => end.parse::<u64>().map(|e| (s, Some(e))).map_err(|_| ()),
        _ => Err(()),
    })
}

/// `HEAD`, `GET` and `GET ?comp=pagelist` of `/mdsim/{container}/abcd`.
pub(crate) async fn serve(
    State(st): State<Arc<Shared>>,
    Path((account, container, _blob)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let route = if method == Method::HEAD {
        Route::BlobHead
    } else if q.get("comp").is_some_and(|c| c == "pagelist") {
        Route::BlobPageList
    } else {
        Route::BlobGet
    };
    let n = st.counters.record_blob(route);
    if account != crate::export::BLOB_ACCOUNT {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "The requested URI does not represent any resource on the server.",
        );
    }
    // Only Get Page Ranges among the `comp` operations; anything else (a container listing,
    // blob properties by query) must not be answered with the blob's bytes.
    if q.contains_key("restype") || q.get("comp").is_some_and(|c| c != "pagelist") {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "UnsupportedQueryParameter",
            "The simulator serves HEAD, GET and Get Page Ranges of a blob only.",
        );
    }
    if let Some(r) = blob_gate(&st, n).await {
        return r;
    }
    let blob = match authorize(&st, &container, &q) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match route {
        Route::BlobHead => {
            let mut resp = StatusCode::OK.into_response();
            common_headers(&mut resp, &blob);
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.len()));
            resp
        }
        Route::BlobPageList => match headers.get("x-ms-previous-snapshot-url") {
            Some(prev) => match diff_ranges(&st, &blob, prev, &headers) {
                Ok(ranges) => page_list(&st, &blob, ranges, &q, &headers),
                Err(r) => *r,
            },
            None => {
                // The written extents, then the footer's page, which Azure reports as
                // written too.
                let footer = blob.size..blob.len();
                let ranges = blob
                    .content
                    .extents()
                    .iter()
                    .cloned()
                    .chain(std::iter::once(footer))
                    .map(|r| (r, Page::Written))
                    .collect();
                page_list(&st, &blob, ranges, &q, &headers)
            }
        },
        _ => get_data(st, blob, n, &headers).await,
    }
}

/// A range of a page list: written (`<PageRange>`) or, in a diff, cleared (`<ClearRange>`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Page {
    Written,
    Cleared,
}

/// The ranges that changed between the snapshot whose SAS is `prev` and `blob`, sorted:
/// written ones, and cleared (trimmed) ones. Azure's rules: both are incremental snapshots
/// of one disk (`409 PreviousSnapshotOperationNotSupported` otherwise, and across the 4 TiB
/// boundary), the previous one exists and is readable (`409 PreviousSnapshotNotFound`) and
/// is the older (`400 PreviousSnapshotCannotBeNewer`); `x-ms-version` is 2019-07-07 or later.
#[allow(clippy::result_large_err)]
fn diff_ranges(
    st: &Shared,
    blob: &Blob,
    prev: &HeaderValue,
    headers: &HeaderMap,
) -> Result<Vec<(Range<u64>, Page)>, Box<Response>> {
    let err = |status, code: &str, msg: &str| Err(Box::new(storage_error(status, code, msg)));
    let version = headers
        .get("x-ms-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if version < "2019-07-07" {
        return err(
            StatusCode::BAD_REQUEST,
            "InvalidHeaderValue",
            "x-ms-previous-snapshot-url requires x-ms-version 2019-07-07 or later.",
        );
    }
    let Some(older) = prev.to_str().ok().and_then(|url| granted_blob(st, url)) else {
        return err(
            StatusCode::CONFLICT,
            "PreviousSnapshotNotFound",
            "The previous snapshot is not found (deleted, or its SAS is revoked, expired or wrong).",
        );
    };
    let not_supported = |why: &str| {
        err(
            StatusCode::CONFLICT,
            "PreviousSnapshotOperationNotSupported",
            &format!("The page ranges cannot be diffed: {why}."),
        )
    };
    match (&blob.family, &older.family) {
        (Some(a), Some(b)) if a == b => {}
        (Some(_), Some(_)) => return not_supported("the snapshots are of different disks"),
        _ => return not_supported("both must be incremental snapshots"),
    }
    const TIB4: u64 = 4 << 40;
    if (blob.size > TIB4) != (older.size > TIB4) {
        return not_supported("the disk was resized across 4 TiB between the snapshots");
    }
    let Some(changed) = blob.content.changed_since(&older.content) else {
        if older.content.changed_since(&blob.content).is_some() {
            return err(
                StatusCode::BAD_REQUEST,
                "PreviousSnapshotCannotBeNewer",
                "The previous snapshot is newer than the target.",
            );
        }
        return not_supported("the snapshots are of different disks");
    };
    let mut changed = changed;
    if blob.size != older.size {
        // The footer moved: the blob's tail is new.
        changed.push(older.size.min(blob.size)..blob.len());
    }
    let written = blob
        .content
        .extents()
        .iter()
        .cloned()
        .chain(std::iter::once(blob.size..blob.len()))
        .collect::<Vec<_>>();
    let mut out: Vec<_> = intersect(&changed, &written)
        .into_iter()
        .map(|r| (r, Page::Written))
        .chain(
            subtract(&changed, &written)
                .into_iter()
                .map(|r| (r, Page::Cleared)),
        )
        .collect();
    out.sort_by_key(|(r, _)| r.start);
    Ok(out)
}

/// The blob an open grant's SAS URL (`http://HOST/mdsim/{container}/abcd?…sig=…`) serves.
fn granted_blob(st: &Shared, url: &str) -> Option<Blob> {
    let (path, query) = url.split_once("://")?.1.split_once('?')?;
    let container = path.split('/').nth(2)?;
    let sig = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .and_then(percent_decode)?;
    let state = st.export.lock().unwrap_or_else(|e| e.into_inner());
    let g = state.grants.get(container)?;
    (g.sig == sig && SystemTime::now() < g.expires).then(|| Blob {
        content: g.content.clone(),
        size: g.size,
        unreadable: false,
        family: g.family.clone(),
    })
}

/// `%XX` decoded (a SAS query value); `None` if malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn page_list(
    st: &Shared,
    blob: &Blob,
    ranges: Vec<(Range<u64>, Page)>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let (from, to) = match requested_range(headers) {
        None => (0, blob.len()),
        Some(Ok((s, e))) => {
            let end = e.map_or(blob.len(), |e| (e + 1).min(blob.len()));
            if s % 512 != 0 || end % 512 != 0 || s >= end {
                return storage_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidPageRange",
                    "The page range specified is invalid.",
                );
            }
            (s, end)
        }
        Some(Err(())) => {
            return storage_error(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                "The value for one of the HTTP headers is not in the correct format.",
            )
        }
    };
    let from = match q.get("marker") {
        Some(m) => match m.strip_prefix("2!").and_then(|v| v.parse::<u64>().ok()) {
            Some(at) => at.max(from),
            None => return storage_error(
                StatusCode::BAD_REQUEST,
                "InvalidQueryParameterValue",
                "Value for one of the query parameters specified in the request URI is invalid.",
            ),
        },
        None => from,
    };
    let page = q
        .get("maxresults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(usize::MAX)
        .min(st.page_list_size.load(Ordering::Relaxed))
        .max(1);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><PageList>");
    let mut count = 0;
    let mut next = None;
    for (r, page_kind) in ranges {
        let (s, e) = (r.start.max(from), r.end.min(to));
        if s >= e {
            continue;
        }
        if count == page {
            next = Some(s);
            break;
        }
        let tag = match page_kind {
            Page::Written => "PageRange",
            Page::Cleared => "ClearRange",
        };
        xml.push_str(&format!(
            "<{tag}><Start>{s}</Start><End>{}</End></{tag}>",
            e - 1
        ));
        count += 1;
    }
    match next {
        Some(at) => xml.push_str(&format!("<NextMarker>2!{at}</NextMarker>")),
        None => xml.push_str("<NextMarker />"),
    }
    xml.push_str("</PageList>");
    let mut resp = (StatusCode::OK, xml).into_response();
    common_headers(&mut resp, blob);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

/// How a body is to be broken, if at all.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Break {
    None,
    Reset,
    Truncate,
}

async fn get_data(st: Arc<Shared>, blob: Blob, n: u64, headers: &HeaderMap) -> Response {
    let (start, end, partial) = match requested_range(headers) {
        None => (0, blob.len(), false),
        Some(Ok((s, e))) => {
            let end = e.map_or(blob.len(), |e| (e + 1).min(blob.len()));
            if s >= blob.len() || s >= end {
                let mut resp = storage_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The range specified is invalid for the current size of the resource.",
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", blob.len())) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
            (s, end, true)
        }
        Some(Err(())) => {
            return storage_error(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                "The value for one of the HTTP headers is not in the correct format.",
            )
        }
    };
    if blob.unreadable && start < blob.size {
        // Not 403 (a reader asks for a new grant) nor 5xx (it retries): it gives up at once.
        return storage_error(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist. (injected by the simulator: fault read_fails)",
        );
    }
    let len = end - start;
    let want_md5 = headers
        .get("x-ms-range-get-content-md5")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if want_md5 && (!partial || len > MAX_MD5_RANGE) {
        return storage_error(
            StatusCode::BAD_REQUEST,
            "OutOfRangeInput",
            "The specified range is larger than 4 MiB; Content-MD5 is only computed for ranges of at most 4 MiB.",
        );
    }
    let f = st.blob_faults();
    let every = |e: u64| e > 0 && n.is_multiple_of(e);
    let breaks = if every(f.reset_every) {
        st.counters.resets.fetch_add(1, Ordering::SeqCst);
        Break::Reset
    } else if every(f.truncate_every) {
        st.counters.truncations.fetch_add(1, Ordering::SeqCst);
        Break::Truncate
    } else {
        Break::None
    };
    // A ranged GET with MD5 is made whole first: the digest is a header.
    let mut md5 = None;
    let whole = if want_md5 {
        let b = blob.clone();
        let made = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            b.read_at(start, &mut buf).map(|()| {
                let digest = Md5::digest(&buf);
                (buf, digest)
            })
        })
        .await;
        match made {
            Ok(Ok((buf, digest))) => {
                let mut digest: [u8; 16] = digest.into();
                if every(f.bad_md5_every) {
                    st.counters.bad_md5.fetch_add(1, Ordering::SeqCst);
                    digest[0] ^= 0xff;
                }
                md5 = Some(base64::engine::general_purpose::STANDARD.encode(digest));
                Some(Bytes::from(buf))
            }
            _ => {
                return storage_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "The simulator could not read the disk.",
                )
            }
        }
    } else {
        None
    };
    let body = body_stream(st.clone(), blob.clone(), start, len, whole, breaks);
    let mut resp = Response::new(body);
    *resp.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    common_headers(&mut resp, &blob);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if partial {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, blob.len())) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if let Some(m) = md5.and_then(|m| HeaderValue::from_str(&m).ok()) {
        h.insert("content-md5", m);
    }
    resp
}

/// The body of `len` bytes at `start`: `whole` if made already, else produced a piece at a
/// time. A broken body stops halfway: with an error (the connection is reset) or without
/// (fewer bytes than `Content-Length`, then the connection closes).
fn body_stream(
    st: Arc<Shared>,
    blob: Blob,
    start: u64,
    len: u64,
    whole: Option<Bytes>,
    breaks: Break,
) -> Body {
    let stop_at = match breaks {
        Break::None => len,
        _ => len / 2,
    };
    let state = (0u64, st, blob, whole);
    let stream = futures_util::stream::unfold(state, move |(sent, st, blob, whole)| async move {
        if sent >= stop_at {
            return match breaks {
                Break::Reset if sent < len => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "the simulator reset the connection",
                    )),
                    (len, st, blob, whole),
                )),
                _ => None,
            };
        }
        let n = ((stop_at - sent) as usize).min(PIECE);
        st.link.send(n as u64).await;
        let piece = match &whole {
            Some(b) => Ok(b.slice(sent as usize..sent as usize + n)),
            None if blob.content.is_file() => {
                let b = blob.clone();
                let at = start + sent;
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    b.read_at(at, &mut buf).map(|()| Bytes::from(buf))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
            None => {
                let mut buf = vec![0u8; n];
                blob.read_at(start + sent, &mut buf)
                    .map(|()| Bytes::from(buf))
            }
        };
        match piece {
            Ok(bytes) => {
                st.counters
                    .bytes_served
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Some((Ok(bytes), (sent + n as u64, st, blob, whole)))
            }
            Err(e) => Some((Err(e), (len, st, blob, whole))),
        }
    });
    Body::from_stream(stream)
}
