//! qcow2 version 3, as specified by qemu's `docs/interop/qcow2.rst`.
//!
//! A writer, [`Qcow2Writer`], turns chunks of guest data into an image in one pass, with
//! data written once and never moved; a patcher, [`Qcow2Patcher`], updates such an image in
//! place (warm migration's deltas). `qemu-img check` and `qemu-img compare` are
//! the oracle the tests hold it to.

pub mod compress;
pub mod header;
pub mod patch;
pub mod refcount;
pub mod table;
pub mod types;
pub mod writer;

use std::fmt;
use std::str::FromStr;

pub use patch::Qcow2Patcher;
pub use types::{Geometry, GuestOffset, HostOffset};
pub use writer::Qcow2Writer;

use crate::error::{Error, ErrorKind};

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// zstd (qcow2 compression type 1; qemu 5.1 and later read it). The default.
    Zstd,
    /// Raw deflate (compression type 0), readable by every qemu.
    Deflate,
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Ok(Compression::Zstd),
            "deflate" | "zlib" => Ok(Compression::Deflate),
            other => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("unknown compression {other:?}; expected zstd or deflate"),
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Deflate => "deflate",
        })
    }
}
