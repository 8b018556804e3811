//! VHDX images (MS-VHDX 1.0), the format of Hyper-V disks: fixed, dynamic and differencing.
//!
//! Layout: the first MiB holds the file identifier, two headers (`header.rs`) and two region
//! tables (`region.rs`) pointing at the BAT (`bat.rs`) and the metadata (`metadata.rs`); the
//! log (`log.rs`) records metadata updates. A file opened after a crash may need its log
//! replayed: we replay it in memory (`view.rs`) and never write the input.
//!
//! [`VhdxReader`] reports as allocated only the payload blocks that hold data (and, in a
//! fixed disk's file, only its written extents), and reads a differencing disk through its
//! parent chain (`parent.rs`).
//!
//! Not supported: log versions other than 0, parent locators of types other than VHDX, and
//! parents found only by an absolute Windows path in another directory (the file name is
//! looked for beside the child).

mod bat;
mod crc32c;
mod fields;
mod guid;
mod header;
mod log;
mod metadata;
mod parent;
mod reader;
mod region;
mod view;

#[cfg(test)]
mod testimage;
#[cfg(test)]
mod tests;

pub use guid::Guid;
pub(crate) use header::FILE_SIGNATURE;
pub use reader::{VhdxReader, MAX_CHAIN_LEN};

/// VHDX aligns regions, blocks and the log to 1 MiB.
pub(crate) const MIB: u64 = 1 << 20;
