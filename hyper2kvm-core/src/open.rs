//! Opening a local disk image, its format detected from its content.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::raw::{file_len, open_file, read_exact_at, RawFileReader};
use crate::source::DiskReader;
use crate::vhd::{self, VhdFooter, FOOTER_LEN};
use crate::vhdx::{self, VhdxReader};
use crate::vmdk::{self, VmdkReader};

/// The format of an input disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// Look at the content: a VMDK header or descriptor at the start means VMDK, a VHD
    /// footer in the last 512 bytes means VHD, else raw.
    #[default]
    Auto,
    /// A fixed or dynamic VHD; anything else is an error.
    Vhd,
    /// A VMDK: a sparse or stream-optimized file, or a descriptor naming its extents.
    Vmdk,
    /// Plain bytes, even if they happen to end in something that looks like a VHD footer.
    Raw,
    /// A fixed, dynamic or differencing VHDX (Hyper-V); anything else is an error.
    Vhdx,
}

impl FromStr for InputFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(InputFormat::Auto),
            "vhd" | "vpc" => Ok(InputFormat::Vhd),
            "vmdk" => Ok(InputFormat::Vmdk),
            "raw" | "img" => Ok(InputFormat::Raw),
            "vhdx" => Ok(InputFormat::Vhdx),
            other => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("unknown input format {other:?}; expected auto, vhd, vhdx, vmdk or raw"),
            )),
        }
    }
}

/// Opens the disk image at `path`.
///
/// With [`InputFormat::Auto`], a file that starts with `vhdxfile` is a VHDX; a file starting
/// with a VMDK sparse header (`KDMV`) or a VMDK text descriptor is a VMDK (its extents found
/// beside the descriptor); a file whose last 512 bytes are a VHD footer is a VHD; a file named
/// `*.vhd` without one is reported as not a VHD (or truncated) rather than
/// silently read as raw; anything else is raw. A qcow2 image is refused with a clear message.
///
/// ```no_run
/// use hyper2kvm_core::{open_disk, InputFormat};
///
/// let disk = open_disk("disk.vhd".as_ref(), InputFormat::Auto)?;
/// println!("{} is {} bytes", disk.describe(), disk.size());
/// # Ok::<(), hyper2kvm_core::Error>(())
/// ```
pub fn open_disk(path: &Path, format: InputFormat) -> Result<Arc<dyn DiskReader>> {
    let file = Arc::new(open_file(path)?);
    let len = file_len(&file, path)?;
    if format == InputFormat::Raw {
        return Ok(Arc::new(RawFileReader::open(path)?));
    }
    let head = read_exact_at(&file, path, vec![0; len.min(512) as usize], 0)?;
    if head.starts_with(b"QFI\xfb") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "is a qcow2 image; convert reads VHD (fixed or dynamic), VHDX, VMDK and raw disks",
        )
        .with_path(path));
    }
    // VHDX: identified by its first 8 bytes, whatever the name says.
    let named_vhdx = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vhdx"));
    if head.starts_with(vhdx::FILE_SIGNATURE) && format != InputFormat::Vhd {
        return Ok(Arc::new(VhdxReader::open(path)?));
    }
    if format == InputFormat::Vhdx || named_vhdx {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            "not a VHDX: no \"vhdxfile\" signature at its start; pass --input-format raw to read it as a raw disk",
        )
        .with_path(path)
        .at_offset(0));
    }
    // A VMDK announces itself at its start; a VHD at its end.
    if format == InputFormat::Vmdk || (format == InputFormat::Auto && vmdk::sniff(&head).is_some())
    {
        return Ok(Arc::new(VmdkReader::from_file(file, path, len, &head)?));
    }
    let named_vhd = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vhd"));
    let must_be_vhd = format == InputFormat::Vhd || named_vhd;
    if len >= FOOTER_LEN as u64 {
        let tail_offset = len - FOOTER_LEN as u64;
        let tail = read_exact_at(&file, path, vec![0; FOOTER_LEN], tail_offset)?;
        if tail.starts_with(vhd::footer::COOKIE) {
            let footer = VhdFooter::parse(tail.as_slice().try_into().unwrap(), tail_offset)
                .map_err(|e| e.with_path(path))?;
            return vhd::open_with_footer(file, path, &footer, len);
        }
        if head.starts_with(vhd::footer::COOKIE) {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                "starts like a dynamic VHD but has no footer in its last 512 bytes (truncated?)",
            )
            .with_path(path)
            .at_offset(tail_offset));
        }
    }
    if must_be_vhd {
        let why = if format == InputFormat::Vhd {
            ""
        } else {
            " (the name ends in .vhd)"
        };
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "not a VHD{why}: no \"conectix\" footer in the last 512 bytes of this {len}-byte file; it may be truncated, or pass --input-format raw to read it as a raw disk"
            ),
        )
        .with_path(path));
    }
    Ok(Arc::new(RawFileReader::open(path)?))
}
