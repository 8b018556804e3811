//! The bytes a sparse or stream-optimized VMDK is read from: a whole file, or a byte range of
//! a larger one — a disk inside an OVA (a tar archive), read in place rather than unpacked.
//!
//! Every offset the VMDK code uses, and every offset in its errors, is relative to the
//! region's start, as if the region were the file; a region's reader names it as
//! `archive.ova(disk.vmdk)` so the offset is read against the member. Reads past the region's
//! end fail as a truncated file would, instead of reading on into the next archive member.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// A file, or `len` bytes of it from byte `base`.
#[derive(Debug)]
pub(crate) struct Region {
    file: File,
    base: u64,
    len: u64,
}

impl Region {
    /// The whole of `file`, `len` bytes long.
    pub(crate) fn whole(file: File, len: u64) -> Self {
        Region { file, base: 0, len }
    }

    /// `len` bytes of `file` from byte `base`.
    pub(crate) fn part(file: File, base: u64, len: u64) -> Self {
        Region { file, base, len }
    }

    /// The region's length: what the VMDK code treats as the file's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Where the region starts in its file.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The underlying file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// Fills `buf` from the region at region-relative `offset`, as [`crate::raw::read_into`]
/// does for a file; errors carry the region-relative offset.
pub(crate) fn read_into(region: &Region, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    let end = offset.checked_add(buf.len() as u64);
    if end.is_none_or(|end| end > region.len) {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "file ends before the {} bytes expected here (truncated?)",
                buf.len()
            ),
        )
        .with_path(path)
        .at_offset(offset));
    }
    crate::raw::read_into(&region.file, path, buf, region.base + offset)
        .map_err(|e| e.at_offset(offset))
}

/// [`read_into`] for an owned buffer, given back filled.
pub(crate) fn read_exact_at(
    region: &Region,
    path: &Path,
    mut buf: Vec<u8>,
    offset: u64,
) -> Result<Vec<u8>> {
    read_into(region, path, &mut buf, offset)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn reads_are_relative_and_bounded() {
        let dir = TempDir::new("vmdk-region");
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let region = Region::part(File::open(&path).unwrap(), 1536, 1024);
        let mut buf = [0u8; 16];
        read_into(&region, &path, &mut buf, 100).unwrap();
        assert_eq!(buf[..], bytes[1636..1652]);
        // The last bytes of the region are readable, one more is not, even though the file
        // goes on.
        read_into(&region, &path, &mut buf, 1008).unwrap();
        let err = read_into(&region, &path, &mut buf, 1009).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(err.offset(), Some(1009));
    }
}
