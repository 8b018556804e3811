//! The one error type of the core crate.
//!
//! An [`Error`] is a small matchable [`ErrorKind`] plus the context a user needs to act on it:
//! the file (or redacted URL) it concerns, the byte offset, and the underlying cause. `Display`
//! reads as one line: `disk.vhd: bad VHD footer checksum (stored 0x1234, computed 0x5678) at
//! offset 1073741824`.

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
}

/// An error with enough context to tell the user what failed and where.
pub struct Error {
    kind: ErrorKind,
    message: String,
    subject: Option<String>,
    offset: Option<u64>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
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
            source: None,
        }
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
        self.subject = Some(path.display().to_string());
        self
    }

    /// Names what this error concerns when it is not a local path (a redacted URL, a disk name).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
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

    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file or resource this error concerns, if known.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The byte offset this error concerns, if known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(subject) = &self.subject {
            write!(f, "{subject}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug is what `unwrap()` and `?` in main print; keep it as readable as Display.
        write!(f, "{self} ({:?})", self.kind)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
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
    fn enospc_is_no_space() {
        let err = Error::io("writing", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(err.kind(), ErrorKind::NoSpace);
    }
}
