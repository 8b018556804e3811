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
pub struct Error {
    kind: ErrorKind,
    message: String,
    subject: Option<String>,
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(subject) = &self.subject {
            write!(f, "{subject}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    fn display_names_subject_and_cause() {
        let err = Error::new(ErrorKind::Guestfs, "guestfish `cat /etc/fstab` failed")
            .with_subject("disk.qcow2")
            .with_source(io::Error::other("no such file"));
        assert_eq!(
            err.to_string(),
            "disk.qcow2: guestfish `cat /etc/fstab` failed: no such file"
        );
        assert_eq!(err.kind(), ErrorKind::Guestfs);
    }
}
