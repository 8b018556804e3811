//! The guest crate's error type.
//!
//! As in `hyper2kvm-core`: a small matchable [`ErrorKind`] plus what the user needs to act on
//! it — the image or guest file it concerns and the underlying cause. `Display` is one line:
//! `disk.qcow2: guestfish `upload /etc/fstab` failed: libguestfs: error: …`.

use std::fmt;
use std::io;

/// What went wrong, coarsely, so a caller can choose an exit code or carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// libguestfs (`guestfish`) is not installed; nothing was inspected or changed.
    ToolMissing,
    /// A libguestfs command failed (appliance did not start, a guest file could not be read…).
    Guestfs,
    /// The image holds no operating system libguestfs recognises.
    NoOperatingSystem,
    /// The guest's volumes are encrypted (BitLocker, LUKS / Azure Disk Encryption): nothing
    /// can be inspected or fixed until they are decrypted.
    Encrypted,
    /// The configuration names something that does not exist (an unknown fix-up name…).
    InvalidConfig,
    /// A local I/O operation failed (temporary files for downloads and uploads).
    Io,
}

/// An error with the context needed to tell the user what failed and where.
#[derive(thiserror::Error)]
#[error("{}", self.line())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    subject: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The guest crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` saying what is wrong.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            subject: None,
            source: None,
        }
    }

    /// A local I/O error while doing `what`.
    pub fn io(what: impl Into<String>, err: io::Error) -> Self {
        Error::new(ErrorKind::Io, what).with_source(err)
    }

    /// Names the image or guest file this error concerns (shown first in `Display`).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
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

    /// The image or guest file this error concerns, if known.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
}

impl Error {
    /// One line: subject, message, cause.
    fn line(&self) -> String {
        let mut line = String::new();
        if let Some(subject) = &self.subject {
            line.push_str(subject);
            line.push_str(": ");
        }
        line.push_str(&self.message);
        if let Some(source) = &self.source {
            line.push_str(": ");
            line.push_str(&source.to_string());
        }
        line
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} ({:?})", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_subject_and_cause() {
        let err = Error::new(ErrorKind::Guestfs, "guestfish `cat /etc/fstab` failed")
            .with_subject("disk.qcow2")
            .with_source(io::Error::other("no such file"));
        assert_eq!(
            err.to_string(),
            "disk.qcow2: guestfish `cat /etc/fstab` failed: no such file"
        );
        assert_eq!(err.kind(), ErrorKind::Guestfs);
        let cause = std::error::Error::source(&err).expect("the cause is kept");
        assert_eq!(cause.to_string(), "no such file");
    }
}
