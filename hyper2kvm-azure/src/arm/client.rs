//! The ARM client: base URL, credential, retries and paging for `GET`s of JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::credential::ArmCredential;
use crate::error::{redact_url, Error, ErrorKind, Result};
use crate::pagination::{collect_pages, Page};
use crate::retry::{send_retry, Jitter, RetryConfig, SplitMix64};

/// Azure public cloud's ARM endpoint.
pub const PUBLIC_ARM_ENDPOINT: &str = "https://management.azure.com";

/// A client for Azure Resource Manager.
///
/// Cheap to clone (the reqwest client is a handle to one pool). Every request goes through
/// [`send_retry`](crate::retry), carries the credential's token if there is one, and is counted
/// (see [`ArmClient::requests_sent`]).
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    scope: String,
    credential: ArmCredential,
    retry: RetryConfig,
    jitter: Arc<dyn Jitter>,
    requests: AtomicU64,
}

/// Builds an [`ArmClient`].
pub struct ArmClientBuilder {
    http: reqwest::Client,
    base: String,
    credential: ArmCredential,
    retry: RetryConfig,
    jitter: Option<Arc<dyn Jitter>>,
}

impl ArmClientBuilder {
    /// The ARM base URL (default: Azure public cloud). A simulator's URL goes here.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.base = url.into();
        self
    }

    /// The credential (default: none).
    pub fn credential(mut self, credential: ArmCredential) -> Self {
        self.credential = credential;
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// The random numbers for backoff jitter (tests pass a seeded generator).
    pub fn jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Checks the endpoint and builds the client.
    pub fn build(self) -> Result<ArmClient> {
        let trimmed = self.base.trim().trim_end_matches('/');
        let base = Url::parse(trimmed).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("ARM endpoint {trimmed:?} is not a URL"),
            )
            .with_source(e)
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("ARM endpoint {trimmed:?} is not an http(s) URL"),
            ));
        }
        if base.query().is_some() || base.username() != "" || base.password().is_some() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "ARM endpoint must not carry a query string or credentials",
            ));
        }
        // The token audience is the public ARM resource for the public endpoint and for test
        // rigs; sovereign clouds use their own endpoint as the audience.
        let scope = if base.scheme() == "https" {
            format!("{trimmed}/.default")
        } else {
            format!("{PUBLIC_ARM_ENDPOINT}/.default")
        };
        Ok(ArmClient {
            inner: Arc::new(Inner {
                http: self.http,
                base,
                scope,
                credential: self.credential,
                retry: self.retry,
                jitter: self
                    .jitter
                    .unwrap_or_else(|| Arc::new(SplitMix64::from_clock())),
                requests: AtomicU64::new(0),
            }),
        })
    }
}

#[derive(Deserialize)]
struct ArmErrorBody {
    error: ArmErrorDetail,
}

#[derive(Deserialize)]
struct ArmErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl ArmClient {
    /// A builder that sends through `http`, the process's one client.
    pub fn builder(http: reqwest::Client) -> ArmClientBuilder {
        ArmClientBuilder {
            http,
            base: PUBLIC_ARM_ENDPOINT.to_string(),
            credential: ArmCredential::none(),
            retry: RetryConfig::default(),
            jitter: None,
        }
    }

    /// The ARM base URL.
    pub fn endpoint(&self) -> &Url {
        &self.inner.base
    }

    /// How requests are retried; blob reads of exports use the same.
    pub fn retry_config(&self) -> &RetryConfig {
        &self.inner.retry
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The URL of `path` (starting with `/subscriptions/…`) with `api-version` and `query`.
    pub fn url(&self, path: &str, api_version: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{path}"));
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", api_version);
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends one authenticated ARM request (JSON `body` if any) through the retry loop and
    /// returns the response, whatever its status. Requests go only to the endpoint's origin:
    /// a URL on another host (a poisoned `Location`, say) never receives our token.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response> {
        if url.origin() != self.inner.base.origin() {
            return Err(Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "refusing to send our token to {}, which is not the ARM endpoint",
                    redact_url(url)
                ),
            ));
        }
        let auth = self
            .inner
            .credential
            .authorization(&self.inner.scope)
            .await?;
        let body = body.map(|b| b.to_string());
        let make = || {
            let mut request = reqwest::Request::new(method.clone(), url.clone());
            let headers = request.headers_mut();
            headers.insert(
                reqwest::header::ACCEPT,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
            if let Some(auth) = &auth {
                if let Ok(mut value) = reqwest::header::HeaderValue::from_str(auth) {
                    value.set_sensitive(true);
                    headers.insert(reqwest::header::AUTHORIZATION, value);
                }
            }
            if let Some(body) = &body {
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    reqwest::header::HeaderValue::from_static("application/json"),
                );
                *request.body_mut() = Some(body.clone().into());
            } else if method == Method::POST || method == Method::PUT {
                headers.insert(
                    reqwest::header::CONTENT_LENGTH,
                    reqwest::header::HeaderValue::from_static("0"),
                );
            }
            request
        };
        let inner = &self.inner;
        send_retry(
            &inner.http,
            &inner.retry,
            inner.jitter.as_ref(),
            &inner.requests,
            make,
        )
        .await
    }

    /// `GET url` and decode the JSON body as `T`; error statuses become errors that carry
    /// ARM's error code and message.
    pub async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T> {
        let resp = self.send(Method::GET, &url, None).await?;
        let status = resp.status();
        let shown = redact_url(&url);
        let body = resp.bytes().await.map_err(|e| {
            Error::new(ErrorKind::Network, format!("GET {shown}: reading the body"))
                .with_source(e.without_url())
        })?;
        if !status.is_success() {
            return Err(status_error("GET", status, &shown, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorKind::InvalidResponse,
                format!("GET {shown}: unexpected JSON"),
            )
            .with_source(e)
        })
    }

    /// Every item of the paged list at `url`, following `nextLink`s.
    pub async fn list<T: DeserializeOwned>(&self, url: Url) -> Result<Vec<T>> {
        collect_pages(url, |page_url| self.get_json::<Page<T>>(page_url)).await
    }
}

pub(crate) fn status_error(method: &str, status: StatusCode, shown: &str, body: &[u8]) -> Error {
    let parsed = serde_json::from_slice::<ArmErrorBody>(body).ok();
    let detail = parsed
        .as_ref()
        .map(|b| format!(" {}: {}", b.error.code, b.error.message))
        .unwrap_or_default();
    let summary = match &parsed {
        Some(b) if !b.error.message.is_empty() => {
            format!("HTTP {}: {}", status.as_u16(), b.error.message)
        }
        _ => format!("HTTP {status}"),
    };
    let kind = match status {
        StatusCode::UNAUTHORIZED => ErrorKind::Credential,
        StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        _ => ErrorKind::Status,
    };
    // A refusal says what to grant (`shown` is an ARM URL: redaction keeps its path).
    let grant = match Url::parse(shown) {
        Ok(url) if status == StatusCode::FORBIDDEN => {
            super::permissions::permission_for(method, url.path())
                .map(|p| {
                    format!(
                        "; grant the identity {} (docs/azure.md lists what each run needs)",
                        p.action
                    )
                })
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let mut err = Error::new(
        kind,
        format!("{method} {shown}: HTTP {status}{detail}{grant}"),
    )
    .with_status(status.as_u16())
    .with_summary(summary);
    if let Some(b) = parsed {
        err = err.with_code(b.error.code);
    }
    if let Some(resource) = resource_of(shown) {
        err = err.with_resource(resource);
    }
    err
}

/// The ARM resource id a request URL is about: its path from `/subscriptions/` on, without a
/// trailing action (`beginGetAccess`, `deallocate`, …). Operation-status URLs have none.
pub(crate) fn resource_of(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let at = path.find("/subscriptions/")?;
    let mut id = path[at..].trim_end_matches('/').to_string();
    if id.contains("/operations/") || id.contains("/locations/") {
        return None;
    }
    const ACTIONS: [&str; 5] = [
        "/beginGetAccess",
        "/endGetAccess",
        "/powerOff",
        "/deallocate",
        "/start",
    ];
    for action in ACTIONS {
        if let Some(stripped) = id.strip_suffix(action) {
            id = stripped.to_string();
            break;
        }
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_carry_code_resource_and_summary() {
        let body = br#"{"error":{"code":"OperationNotAllowed","message":"The snapshot is being exported."}}"#;
        let err = status_error(
            "DELETE",
            StatusCode::CONFLICT,
            "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/n?api-version=2025-01-02",
            body,
        );
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(err.status(), Some(409));
        assert_eq!(err.code(), Some("OperationNotAllowed"));
        assert_eq!(
            err.resource(),
            Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/n")
        );
        assert_eq!(
            err.summary(),
            Some("HTTP 409: The snapshot is being exported.")
        );
        assert_eq!(
            resource_of("http://h/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d/endGetAccess?api-version=1").as_deref(),
            Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d")
        );
        assert_eq!(
            resource_of(
                "http://h/subscriptions/s/providers/Microsoft.Compute/locations/w/operations/1"
            ),
            None
        );
    }
}
