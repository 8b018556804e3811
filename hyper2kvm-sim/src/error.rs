//! The simulator's error type: a scenario that cannot be read or makes no sense, or a socket
//! that cannot be bound.

/// What went wrong, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The scenario file is not valid YAML/JSON for the scenario schema.
    InvalidScenario,
    /// The scenario parses but is inconsistent (duplicate names, a LUN used twice, …).
    InconsistentScenario,
    /// Reading the scenario file or binding the listening socket failed.
    Io,
    /// A disk to change (write, trim, recreate, resize) does not exist.
    UnknownDisk,
    /// A change does not fit the disk (unaligned, out of bounds, shrinking).
    InvalidChange,
}

/// An error of the simulator, one line when displayed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}
