//! The one error type of the core crate, and of everything that reads through core's traits.
//!
//! An [`Error`] is a small matchable [`ErrorKind`] plus the context a user needs to act on it:
//! the file (or redacted URL) it concerns, the byte offset, and the underlying cause. `Display`
//! reads as one line: `disk.vhd: bad VHD footer checksum (stored 0x1234, computed 0x5678) at
//! offset 1073741824`.
//!
//! Sources (Azure, local files) report their failures in this type, with their own error as
//! the [`source`](std::error::Error::source) ([`Error::wrap`]), so an embedder can match on
//! the kind (retry on [`ErrorKind::Throttled`], ask for a login on
//! [`ErrorKind::Credential`]) and still walk the chain down to the HTTP layer.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, coarsely, so callers can choose an exit code or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is not in the format we expected (wrong magic, bad checksum, impossible field).
    InvalidFormat,
    /// The input uses a feature we do not handle (differencing VHD, …).
    Unsupported,
    /// A caller passed a value that cannot work (cluster size not a power of two, …).
    InvalidArgument,
    /// The operating system refused an I/O operation.
    Io,
    /// The destination file system is full.
    NoSpace,
    /// The operation was cancelled (Ctrl-C, a dropped future).
    Cancelled,
    /// No credential could be had, or the source refused it: log in again.
    Credential,
    /// The identity may not do this (e.g. HTTP 403): grant it a role.
    PermissionDenied,
    /// The VM, disk, snapshot or subscription does not exist.
    NotFound,
    /// The resource is busy with another operation or in a state that forbids this one
    /// (e.g. HTTP 409): try again later.
    Conflict,
    /// The source kept throttling until the retry budget ran out: try again later, or slower.
    Throttled,
    /// Connecting to or talking to the source failed (after retries).
    Network,
    /// The source did not answer in time (after retries).
    Timeout,
    /// Data did not match its checksum (after retries).
    Integrity,
    /// The source answered with an error no other kind describes.
    Remote,
    /// The guest fix-ups failed: the image was converted but must not be used as is.
    Guest,
}

impl ErrorKind {
    /// The kind as one snake_case word, as the JSON records write it (`no_space`,
    /// `permission_denied`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidFormat => "invalid_format",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Io => "io",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Credential => "credential",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Remote => "remote",
            ErrorKind::Guest => "guest",
        }
    }

    /// Every kind, for documentation and schema checks.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::InvalidFormat,
        ErrorKind::Unsupported,
        ErrorKind::InvalidArgument,
        ErrorKind::Io,
        ErrorKind::NoSpace,
        ErrorKind::Cancelled,
        ErrorKind::Credential,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Throttled,
        ErrorKind::Network,
        ErrorKind::Timeout,
        ErrorKind::Integrity,
        ErrorKind::Remote,
        ErrorKind::Guest,
    ];

    /// Whether trying the same thing again later may succeed (throttling, network, timeouts,
    /// conflicts with an operation still running).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::Network | ErrorKind::Timeout | ErrorKind::Conflict
        )
    }
}

/// An error with enough context to tell the user what failed and where.
#[derive(thiserror::Error)]
#[error("{}", self.line())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    subject: Option<String>,
    offset: Option<u64>,
    /// Boxed: most errors have none, and `Result<T, Error>` stays small.
    remote: Option<Box<Remote>>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// What a remote source answered, when the error is its answer, and what to do about it.
/// Sources fill these (the Azure crate from the HTTP status and ARM's error body); the
/// engine copies them into its JSON records without interpreting them.
#[derive(Debug, Clone, Default)]
struct Remote {
    status: Option<u16>,
    code: Option<String>,
    resource: Option<String>,
    summary: Option<String>,
    remedy: Option<String>,
}

/// The core crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message saying what is wrong.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            subject: None,
            offset: None,
            remote: None,
            source: None,
        }
    }

    /// `source`, a source's own error, as a core error of `kind`: its message is the
    /// source's, and it stays reachable through [`source`](std::error::Error::source) (and
    /// [`downcast_source`](Error::downcast_source)).
    pub fn wrap(kind: ErrorKind, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::new(kind, String::new()).with_source(source)
    }

    /// An I/O error while doing `what` (e.g. "reading 4 MiB"); the kind follows the OS error.
    pub fn io(what: impl Into<String>, err: io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            _ => ErrorKind::Io,
        };
        Error::new(kind, what).with_source(err)
    }

    /// Names the file this error concerns (shown first in `Display`).
    pub fn with_path(mut self, path: &Path) -> Self {
        // A mistyped SAS URL is a "path" too: its signature is never kept.
        self.subject = Some(crate::redact::redact(&path.display().to_string()).into_owned());
        self
    }

    /// Names what this error concerns when it is not a local path (a redacted URL, a disk name).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(crate::redact::redact(&subject.into()).into_owned());
        self
    }

    /// Records the byte offset in the subject where the problem is.
    pub fn at_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    fn remote_mut(&mut self) -> &mut Remote {
        self.remote.get_or_insert_with(Box::default)
    }

    /// Records the status code the source answered with (an HTTP status for Azure).
    pub fn with_status(mut self, status: u16) -> Self {
        self.remote_mut().status = Some(status);
        self
    }

    /// Records the source's own error code (ARM's `error.code`, e.g. `OperationNotAllowed`).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.remote_mut().code = Some(code.into());
        self
    }

    /// Records the id of the resource the error concerns (a disk, a snapshot, a VM).
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.remote_mut().resource = Some(crate::redact::redact(&resource.into()).into_owned());
        self
    }

    /// A short message for tables: what the source said, without the request it answered
    /// (the one-line [`Display`](std::fmt::Display) keeps the whole story).
    pub fn with_summary(mut self, summary: impl Into<String>) -> Self {
        self.remote_mut().summary = Some(crate::redact::redact(&summary.into()).into_owned());
        self
    }

    /// What a person can do to finish by hand what failed, e.g. the command that deletes a
    /// snapshot a run could not delete. Sources set it on the errors of their cleanups, so
    /// the engine can say it without knowing the platform.
    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remote_mut().remedy = Some(remedy.into());
        self
    }

    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Changes the kind (a wrapper that knows better, e.g. a cleanup that was cancelled).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The status code the source answered with (an HTTP status), if any.
    pub fn status(&self) -> Option<u16> {
        self.remote.as_ref()?.status
    }

    /// The source's error code (ARM's `error.code`), if any.
    pub fn code(&self) -> Option<&str> {
        self.remote.as_ref()?.code.as_deref()
    }

    /// The id of the resource the error concerns, if known.
    pub fn resource(&self) -> Option<&str> {
        self.remote.as_ref()?.resource.as_deref()
    }

    /// A short message without request details: the source's summary if it gave one, else
    /// the message, else the whole line.
    pub fn summary(&self) -> String {
        if let Some(s) = self.remote.as_ref().and_then(|r| r.summary.as_ref()) {
            return s.clone();
        }
        if !self.message.is_empty() {
            let mut out = String::new();
            if let Some(subject) = &self.subject {
                out.push_str(subject);
                out.push_str(": ");
            }
            out.push_str(&self.message);
            return out;
        }
        self.to_string()
    }

    /// What to do by hand about it, if the source said.
    pub fn remedy(&self) -> Option<&str> {
        self.remote.as_ref()?.remedy.as_deref()
    }

    /// The file or resource this error concerns, if known.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The byte offset this error concerns, if known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The direct cause, if it is a `T` (e.g. the Azure crate's error, to read its HTTP
    /// status).
    pub fn downcast_source<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.as_deref()?.downcast_ref::<T>()
    }

    /// The one-line message: subject, message, offset, then the cause.
    fn line(&self) -> String {
        let mut out = String::new();
        if let Some(subject) = &self.subject {
            out.push_str(subject);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        if let Some(offset) = self.offset {
            out.push_str(&format!(" at offset {offset}"));
        }
        if let Some(source) = &self.source {
            if !self.message.is_empty() || self.offset.is_some() {
                out.push_str(": ");
            }
            out.push_str(&source.to_string());
        }
        out
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug is what `unwrap()` and `?` in main print; keep it as readable as Display.
        write!(f, "{self} ({:?})", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_subject_offset_and_cause() {
        let err = Error::new(ErrorKind::InvalidFormat, "bad footer")
            .with_path(Path::new("disk.vhd"))
            .at_offset(512)
            .with_source(io::Error::other("boom"));
        assert_eq!(err.to_string(), "disk.vhd: bad footer at offset 512: boom");
    }

    #[test]
    fn wrapped_errors_keep_kind_message_and_chain() {
        let inner = io::Error::other("HTTP 429 after 10 retries");
        let err = Error::wrap(ErrorKind::Throttled, inner);
        assert_eq!(err.kind(), ErrorKind::Throttled);
        assert!(err.kind().is_transient());
        assert_eq!(err.to_string(), "HTTP 429 after 10 retries");
        let source = std::error::Error::source(&err).expect("the cause");
        assert_eq!(source.to_string(), "HTTP 429 after 10 retries");
        assert!(err.downcast_source::<io::Error>().is_some());
    }

    #[test]
    fn remote_details_are_kept_apart_from_the_line() {
        let err = Error::new(ErrorKind::Conflict, "DELETE https://h/x?sig=S: HTTP 409")
            .with_status(409)
            .with_code("OperationNotAllowed")
            .with_resource("/subscriptions/s/snapshots/x")
            .with_summary("the snapshot is being exported")
            .with_remedy("az snapshot delete --ids /subscriptions/s/snapshots/x");
        assert_eq!(err.to_string(), "DELETE https://h/x?sig=S: HTTP 409");
        assert_eq!(err.status(), Some(409));
        assert_eq!(err.code(), Some("OperationNotAllowed"));
        assert_eq!(err.resource(), Some("/subscriptions/s/snapshots/x"));
        assert_eq!(err.summary(), "the snapshot is being exported");
        assert!(err.remedy().unwrap().starts_with("az snapshot delete"));
        assert_eq!(ErrorKind::NoSpace.as_str(), "no_space");
        assert_eq!(ErrorKind::ALL.len(), 16);
        let plain = Error::new(ErrorKind::Io, "cannot write").with_path(Path::new("a/b"));
        assert_eq!(plain.summary(), "a/b: cannot write");
    }

    #[test]
    fn enospc_is_no_space() {
        let err = Error::io("writing", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(err.kind(), ErrorKind::NoSpace);
    }
}
