//! Disk export over ARM: read access grants (`beginGetAccess` / `endGetAccess`) for managed
//! disks and snapshots, and the long-running-operation protocol they answer with.
//!
//! A grant answers `200` with `{"accessSAS": …}`, or `202 Accepted` with a `Location` (and
//! maybe `Azure-AsyncOperation`) to poll: `Location` answers `202` while the operation runs
//! and `200` with the final body when done; `Azure-AsyncOperation` answers
//! `{"status": "InProgress" | "Succeeded" | "Failed", "properties": {"output": …}}`.
//! `Retry-After` sets the polling pace; a time limit stops a poll that never ends.

use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::json;

use super::api_version;
use super::client::{resource_of, status_error, ArmClient};
use crate::error::{redact_url, Error, ErrorKind, Result};
use crate::retry::parse_retry_after;
use crate::sas::SasUrl;

/// How long to wait between polls when the service does not say (`Retry-After`).
const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// The longest pause between two polls, whatever `Retry-After` says.
const MAX_POLL: Duration = Duration::from_secs(30);

/// Limits for long-running operations.
#[derive(Debug, Clone)]
pub struct LroOptions {
    /// Give up polling after this long (15 minutes: snapshots of large disks take a while).
    pub timeout: Duration,
}

impl Default for LroOptions {
    fn default() -> Self {
        LroOptions {
            timeout: Duration::from_secs(900),
        }
    }
}

#[derive(Deserialize)]
struct AccessUri {
    #[serde(rename = "accessSAS")]
    access_sas: Option<String>,
}

#[derive(Deserialize)]
struct AsyncOperation {
    status: String,
    #[serde(default)]
    properties: Option<AsyncProperties>,
    #[serde(default)]
    error: Option<AsyncError>,
}

#[derive(Deserialize)]
struct AsyncProperties {
    #[serde(default)]
    output: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AsyncError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl ArmClient {
    /// Grants read access to the managed disk or snapshot `resource_id` for `duration` and
    /// returns the SAS URL of its VHD. The grant must be revoked with
    /// [`end_get_access`](Self::end_get_access).
    pub async fn begin_get_access(
        &self,
        resource_id: &str,
        duration: Duration,
        lro: &LroOptions,
    ) -> Result<SasUrl> {
        let url = self.url(
            &format!("{resource_id}/beginGetAccess"),
            api_version::DISKS,
            &[],
        );
        let body = json!({
            "access": "Read",
            "durationInSeconds": duration.as_secs().max(1),
            "fileFormat": "VHD",
        });
        let out = self
            .long_running(Method::POST, &url, Some(&body), lro)
            .await?;
        let sas = serde_json::from_slice::<AccessUri>(&out)
            .ok()
            .and_then(|a| a.access_sas)
            .or_else(|| {
                // The Azure-AsyncOperation form nests the result.
                serde_json::from_slice::<serde_json::Value>(&out)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/properties/output/accessSAS")?
                            .as_str()
                            .map(str::to_owned)
                    })
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidResponse,
                    format!("beginGetAccess on {resource_id} returned no accessSAS"),
                )
            })?;
        SasUrl::parse(&sas)
    }

    /// Revokes the read access granted to `resource_id`. Revoking when nothing is granted
    /// succeeds, so cleanup can always call it.
    pub async fn end_get_access(&self, resource_id: &str, lro: &LroOptions) -> Result<()> {
        let url = self.url(
            &format!("{resource_id}/endGetAccess"),
            api_version::DISKS,
            &[],
        );
        self.long_running(Method::POST, &url, None, lro)
            .await
            .map(|_| ())
    }

    /// Sends a request that may start a long-running operation and returns the final body
    /// (empty when the operation has none). Its errors name the resource the request is
    /// about, also when the failure came from polling.
    pub async fn long_running(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        lro: &LroOptions,
    ) -> Result<Vec<u8>> {
        let resource = resource_of(&redact_url(url));
        self.long_running_inner(method, url, body, lro)
            .await
            .map_err(|e| e.or_resource(resource))
    }

    async fn long_running_inner(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        lro: &LroOptions,
    ) -> Result<Vec<u8>> {
        let started = Instant::now();
        let what = format!("{method} {}", redact_url(url));
        let resp = self.send(method, url, body).await?;
        let status = resp.status();
        let location = header_url(&resp, "location")?;
        let async_op = header_url(&resp, "azure-asyncoperation")?;
        let mut wait = retry_after(&resp);
        let first = read_body(resp, &what).await?;
        if !status.is_success() {
            return Err(status_error(
                &what_method(&what),
                status,
                &redact_url(url),
                &first,
            ));
        }
        let polling = status == StatusCode::ACCEPTED
            || (status == StatusCode::CREATED && (location.is_some() || async_op.is_some()));
        if !polling {
            return Ok(first);
        }
        let (poll_url, by_location) = match (location, async_op) {
            (Some(l), _) => (l, true),
            (None, Some(a)) => (a, false),
            (None, None) if status == StatusCode::ACCEPTED => {
                return Err(Error::new(
                    ErrorKind::InvalidResponse,
                    format!(
                        "{what}: 202 Accepted without a Location or Azure-AsyncOperation to poll"
                    ),
                ))
            }
            (None, None) => return Ok(first),
        };
        // Shown on the progress line once it lasts (a deallocate takes minutes).
        let _waiting = hyper2kvm_core::waits::waiting(format!(
            "Azure to finish {} {}",
            what_method(&what),
            short_path(url)
        ));
        loop {
            let pause = wait.unwrap_or(DEFAULT_POLL).min(MAX_POLL);
            if started.elapsed() + pause > lro.timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{what}: still running after {:.0} s (limit {} s)",
                        started.elapsed().as_secs_f64(),
                        lro.timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            let resp = self.send(Method::GET, &poll_url, None).await?;
            let status = resp.status();
            wait = retry_after(&resp);
            let shown = redact_url(&poll_url);
            let body = read_body(resp, &what).await?;
            if !status.is_success() {
                return Err(status_error("GET", status, &shown, &body));
            }
            if by_location {
                if status == StatusCode::ACCEPTED {
                    continue;
                }
                return Ok(body);
            }
            let op: AsyncOperation = serde_json::from_slice(&body).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidResponse,
                    format!("{what}: unreadable operation status"),
                )
                .with_source(e)
            })?;
            match op.status.to_ascii_lowercase().as_str() {
                "succeeded" => {
                    let output = op.properties.and_then(|p| p.output);
                    return Ok(match output {
                        Some(out) => json!({ "properties": { "output": out } })
                            .to_string()
                            .into_bytes(),
                        None => Vec::new(),
                    });
                }
                "failed" | "canceled" | "cancelled" => {
                    let detail = op
                        .error
                        .as_ref()
                        .map(|e| format!(": {}: {}", e.code, e.message))
                        .unwrap_or_default();
                    let mut err = Error::new(
                        ErrorKind::Status,
                        format!("{what}: operation {}{detail}", op.status),
                    )
                    .with_summary(format!("operation {}{detail}", op.status));
                    if let Some(e) = op.error {
                        err = err.with_code(e.code);
                    }
                    return Err(err);
                }
                _ => continue,
            }
        }
    }
}

/// The last three segments of a URL's path (`disks/d1/beginGetAccess`): enough to say what
/// is being waited for on one line.
pub(crate) fn short_path(url: &Url) -> String {
    let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    segments[segments.len().saturating_sub(3)..].join("/")
}

fn what_method(what: &str) -> String {
    what.split(' ').next().unwrap_or("").to_string()
}

fn header_url(resp: &Response, name: &str) -> Result<Option<Url>> {
    let Some(value) = resp.headers().get(name) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        Error::new(
            ErrorKind::InvalidResponse,
            format!("{name} header is not text"),
        )
    })?;
    Url::parse(text.trim()).map(Some).map_err(|e| {
        Error::new(
            ErrorKind::InvalidResponse,
            format!("{name} header is not an absolute URL"),
        )
        .with_source(e)
    })
}

fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

async fn read_body(resp: Response, what: &str) -> Result<Vec<u8>> {
    resp.bytes().await.map(|b| b.to_vec()).map_err(|e| {
        Error::new(ErrorKind::Network, format!("{what}: reading the body"))
            .with_source(e.without_url())
    })
}
