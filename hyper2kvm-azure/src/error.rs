//! The Azure crate's error: a small matchable [`ErrorKind`], a one-line message that says what
//! failed (method, redacted URL, status, ARM's error code) and the underlying cause.
//!
//! Through core's traits it travels as a [`hyper2kvm_core::Error`] of the matching
//! [`hyper2kvm_core::ErrorKind`] that keeps this error as its source (`From`), so an
//! embedder matches on the kind and still reads the status (`downcast_source`).

use std::fmt;

/// What went wrong, coarsely, so a caller can choose an exit code or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No credential could produce a token, or ARM refused the token (401).
    Credential,
    /// ARM said the identity may not do this (403).
    PermissionDenied,
    /// The subscription or resource does not exist (404).
    NotFound,
    /// ARM kept answering 429 until the retry budget ran out.
    Throttled,
    /// Connecting or talking to the endpoint failed (after retries).
    Network,
    /// Requests timed out (after retries).
    Timeout,
    /// ARM refused the operation because of the resource's state or another operation in
    /// progress (409).
    Conflict,
    /// Data did not match its `Content-MD5` (after retries).
    Integrity,
    /// ARM answered with another error status.
    Status,
    /// ARM's answer could not be understood (bad JSON, a `nextLink` to another host).
    InvalidResponse,
    /// A caller passed a value that cannot work (a malformed endpoint URL, …).
    InvalidArgument,
}

/// An error with enough context to tell the user what failed. Never holds a secret: URLs are
/// shown without their query string.
#[derive(thiserror::Error)]
#[error("{}", self.line())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    code: Option<String>,
    resource: Option<String>,
    summary: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The Azure crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            status: None,
            code: None,
            resource: None,
            summary: None,
            source: None,
        }
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// ARM's error code (`error.code` of the body, e.g. `OperationNotAllowed`).
    pub(crate) fn with_code(mut self, code: impl Into<String>) -> Self {
        let code = code.into();
        if !code.is_empty() {
            self.code = Some(code);
        }
        self
    }

    /// The resource id the request was about.
    pub(crate) fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// The resource id, unless one is recorded already.
    pub(crate) fn or_resource(self, resource: Option<String>) -> Self {
        match (&self.resource, resource) {
            (None, Some(r)) => self.with_resource(r),
            _ => self,
        }
    }

    /// A short message without the request line (ARM's `error.message`, or the cause).
    pub(crate) fn with_summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = Some(summary.into());
        self
    }

    pub(crate) fn with_status_opt(self, status: Option<u16>) -> Self {
        match status {
            Some(s) => self.with_status(s),
            None => self,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status ARM answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// ARM's error code, if its answer had one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The resource id the failed request concerned, if known.
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// A short message without the request line, if there is one.
    pub fn summary(&self) -> Option<&str> {
        self.summary.as_deref()
    }
}

impl Error {
    /// The message and the cause chain on one line: reqwest's "error sending request" alone
    /// says nothing, its source ("connection refused") does.
    fn line(&self) -> String {
        let mut out = self.message.clone();
        let mut source = self.source.as_deref().map(|s| s as &dyn std::error::Error);
        while let Some(s) = source {
            out.push_str(&format!(": {s}"));
            source = s.source();
        }
        out
    }
}

impl From<Error> for hyper2kvm_core::Error {
    /// The core error of the matching kind, holding `e` as its source.
    fn from(e: Error) -> Self {
        use hyper2kvm_core::ErrorKind as Core;
        let kind = match e.kind() {
            ErrorKind::Credential => Core::Credential,
            ErrorKind::PermissionDenied => Core::PermissionDenied,
            ErrorKind::NotFound => Core::NotFound,
            ErrorKind::Throttled => Core::Throttled,
            ErrorKind::Network => Core::Network,
            ErrorKind::Timeout => Core::Timeout,
            ErrorKind::Conflict => Core::Conflict,
            ErrorKind::Integrity => Core::Integrity,
            ErrorKind::Status => Core::Remote,
            ErrorKind::InvalidResponse => Core::InvalidFormat,
            ErrorKind::InvalidArgument => Core::InvalidArgument,
        };
        let (status, code, resource, summary) = (
            e.status,
            e.code.clone(),
            e.resource.clone(),
            e.summary.clone(),
        );
        let mut core = hyper2kvm_core::Error::wrap(kind, e);
        if let Some(s) = status {
            core = core.with_status(s);
        }
        if let Some(c) = code {
            core = core.with_code(c);
        }
        if let Some(r) = resource {
            core = core.with_resource(r);
        }
        if let Some(s) = summary {
            core = core.with_summary(s);
        }
        core
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} ({:?})", self.kind)
    }
}

/// A URL as it may be shown: without a password, and without the query when it holds a SAS
/// signature (`sig=`) — a SAS is a secret. ARM queries (`api-version`, `$skiptoken`) stay,
/// they help when reading an error.
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let signed = shown
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("sig"));
    if signed {
        shown.set_query(Some("REDACTED"));
    }
    let _ = shown.set_password(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_query_and_password() {
        let url =
            reqwest::Url::parse("https://u:pw@md-x.blob.core.windows.net/a/b?sv=1&sig=secret")
                .unwrap();
        let shown = redact_url(&url);
        assert_eq!(shown, "https://u@md-x.blob.core.windows.net/a/b?REDACTED");
        let arm =
            reqwest::Url::parse("https://management.azure.com/x?api-version=2025-04-01").unwrap();
        assert_eq!(
            redact_url(&arm),
            "https://management.azure.com/x?api-version=2025-04-01"
        );
        let upper = reqwest::Url::parse("https://h/b?SIG=abc&sv=1").unwrap();
        assert_eq!(redact_url(&upper), "https://h/b?REDACTED");
    }

    #[test]
    fn core_errors_keep_the_kind_and_the_azure_error() {
        let err = Error::new(
            ErrorKind::Throttled,
            "GET https://management.azure.com/x: HTTP 429",
        )
        .with_status(429);
        let core: hyper2kvm_core::Error = err.into();
        assert_eq!(core.kind(), hyper2kvm_core::ErrorKind::Throttled);
        assert_eq!(
            core.to_string(),
            "GET https://management.azure.com/x: HTTP 429"
        );
        let azure = core.downcast_source::<Error>().expect("the Azure error");
        assert_eq!(azure.status(), Some(429));
        assert_eq!(core.status(), Some(429));
        let refused: hyper2kvm_core::Error = Error::new(ErrorKind::Conflict, "DELETE x: HTTP 409")
            .with_status(409)
            .with_code("OperationNotAllowed")
            .with_resource("/subscriptions/s/snapshots/n")
            .with_summary("HTTP 409: busy")
            .into();
        assert_eq!(refused.code(), Some("OperationNotAllowed"));
        assert_eq!(refused.resource(), Some("/subscriptions/s/snapshots/n"));
        assert_eq!(refused.summary(), "HTTP 409: busy");
        let conflict: hyper2kvm_core::Error = Error::new(ErrorKind::Conflict, "busy").into();
        assert_eq!(conflict.kind(), hyper2kvm_core::ErrorKind::Conflict);
    }

    #[test]
    fn display_walks_the_cause_chain() {
        let inner = std::io::Error::other("connection refused");
        let err = Error::new(ErrorKind::Network, "GET http://127.0.0.1:1/x").with_source(inner);
        assert_eq!(
            err.to_string(),
            "GET http://127.0.0.1:1/x: connection refused"
        );
    }
}
