//! Virtual Hard Disk (VHD) images, the format Azure stores managed disks in.
//!
//! Azure exports a managed disk as a *fixed* VHD: the disk's bytes, then a 512-byte
//! [footer](footer::VhdFooter). Hyper-V and `qemu-img` also write *dynamic* VHDs, which only
//! store written blocks ([`DynamicVhdReader`]). Differencing VHDs need their parent and are
//! refused.

pub mod dynamic;
pub mod footer;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

pub use dynamic::DynamicVhdReader;
pub use footer::{DiskType, VhdFooter, FOOTER_LEN};

use crate::error::{Error, ErrorKind, Result};
use crate::raw::{read_exact_at, RawFileReader};
use crate::source::DiskReader;

/// Opens the VHD whose footer `footer` was read from the last 512 bytes of `file`.
pub(crate) fn open_with_footer(
    file: Arc<File>,
    path: &Path,
    footer: &VhdFooter,
    file_len: u64,
) -> Result<Arc<dyn DiskReader>> {
    match footer.disk_type {
        DiskType::Fixed => {
            let data_len = file_len - FOOTER_LEN as u64;
            if data_len < footer.current_size {
                return Err(Error::new(
                    ErrorKind::InvalidFormat,
                    format!(
                        "fixed VHD footer says the disk has {} bytes, but only {data_len} bytes precede the footer (truncated?)",
                        footer.current_size
                    ),
                )
                .with_path(path)
                .at_offset(data_len));
            }
            Ok(Arc::new(RawFileReader::from_region(
                file,
                path,
                footer.current_size,
            )))
        }
        DiskType::Dynamic => {
            // The copy at offset 0 must agree with the footer at the end; a mismatch means
            // the file was cut or spliced.
            let head = read_exact_at(&file, path, vec![0; FOOTER_LEN], 0)?;
            let head = VhdFooter::parse(head.as_slice().try_into().unwrap(), 0)
                .map_err(|e| e.with_path(path))?;
            if head != *footer {
                return Err(Error::new(
                    ErrorKind::InvalidFormat,
                    "the footer copy at the start of this dynamic VHD differs from the footer at its end",
                )
                .with_path(path));
            }
            Ok(Arc::new(DynamicVhdReader::open(
                file, path, footer, file_len,
            )?))
        }
        DiskType::Differencing => Err(Error::new(
            ErrorKind::Unsupported,
            "is a differencing VHD, which needs its parent; merge it into a full disk first",
        )
        .with_path(path)),
    }
}
