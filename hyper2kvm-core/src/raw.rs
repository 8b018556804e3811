//! Raw disk files, and the byte region of a file that holds a disk (a fixed VHD's data).
//!
//! Allocated ranges come from the file system: `SEEK_DATA` / `SEEK_HOLE` find the written
//! extents of a sparse file, so a 2 TiB raw file with a few MiB written is read as a few MiB.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::buffers::AlignedBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{BoxFuture, DiskReader};

/// Reads a disk stored as plain bytes at the start of a file: a raw image, or the data part
/// of a fixed VHD (whose footer follows the data).
#[derive(Debug, Clone)]
pub struct RawFileReader {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    identity: String,
}

impl RawFileReader {
    /// Opens a raw disk image; its size is the file's length.
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_file(path)?;
        let size = file_len(&file, path)?;
        Ok(RawFileReader::from_region(Arc::new(file), path, size))
    }

    /// A reader of the first `size` bytes of an already opened `file`.
    pub(crate) fn from_region(file: Arc<File>, path: &Path, size: u64) -> Self {
        let identity = file_identity(&file, path, size);
        RawFileReader {
            file,
            path: path.to_owned(),
            size,
            identity,
        }
    }
}

impl DiskReader for RawFileReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        let file = self.file.clone();
        let size = self.size;
        let path = self.path.clone();
        Box::pin(async move {
            blocking(move || {
                data_ranges(&file, 0..size)
                    .map_err(|e| Error::io("finding the written extents", e).with_path(&path))
            })
            .await
        })
    }

    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        let file = self.file.clone();
        let path = self.path.clone();
        let size = self.size;
        Box::pin(async move {
            check_within(offset, buf.len(), size, &path)?;
            blocking(move || {
                let mut buf = buf;
                read_into(&file, &path, &mut buf, offset)?;
                Ok(buf)
            })
            .await
        })
    }
}

/// Opens `path` for reading, with an error that names it: a regular file or a block device,
/// never a character device, FIFO or socket (see [`crate::fsafe`]).
pub(crate) fn open_file(path: &Path) -> Result<File> {
    crate::fsafe::open_input(path).map(|(file, _)| file)
}

/// Path, disk size, file length and modification time: a file changed since an interrupted
/// conversion must not be resumed into the same image.
pub(crate) fn file_identity(file: &File, path: &Path, size: u64) -> String {
    use std::os::unix::fs::MetadataExt;
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    match file.metadata() {
        Ok(m) => format!(
            "{} size={size} len={} mtime={}.{:09} ino={}",
            path.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ),
        Err(_) => format!("{} size={size}", path.display()),
    }
}

/// The length of an open file, or the size of a block device (whose `len()` is 0).
pub(crate) fn file_len(file: &File, path: &Path) -> Result<u64> {
    crate::fsafe::input_len(file, path)
}

/// Fills `buf` from `file` at `offset`, naming the file and offset on failure; a file that
/// ends early is reported as truncated.
pub(crate) fn read_into(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "file ends before the {} bytes expected here (truncated?)",
                buf.len()
            ),
        )
        .with_path(path)
        .at_offset(offset)),
        Err(e) => Err(Error::io(format!("reading {} bytes", buf.len()), e)
            .with_path(path)
            .at_offset(offset)),
    }
}

/// [`read_into`] for an owned buffer, given back filled.
pub(crate) fn read_exact_at(
    file: &File,
    path: &Path,
    mut buf: Vec<u8>,
    offset: u64,
) -> Result<Vec<u8>> {
    read_into(file, path, &mut buf, offset)?;
    Ok(buf)
}

/// Rejects reads past the end of a disk: the pipeline never asks for them, so one is a bug.
pub(crate) fn check_within(offset: u64, len: usize, size: u64, path: &Path) -> Result<()> {
    if offset.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("read of {len} bytes past the end of the {size}-byte disk"),
        )
        .with_path(path)
        .at_offset(offset));
    }
    Ok(())
}

/// Runs blocking file work on Tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Error::new(
            ErrorKind::Cancelled,
            format!("a file I/O task did not finish: {e}"),
        )
    })?
}

/// The data extents of `file` within `range`, from `SEEK_DATA` / `SEEK_HOLE`. A file system
/// that does not support them reports the whole range as data.
pub(crate) fn data_ranges(file: &File, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let data = match lseek(fd, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            // ENXIO: no data at or after pos.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && out.is_empty() => {
                return Ok(vec![range]);
            }
            Err(e) => return Err(e),
        };
        if data >= range.end {
            break;
        }
        let hole = lseek(fd, data, libc::SEEK_HOLE)?.min(range.end);
        out.push(data..hole);
        pos = hole;
    }
    Ok(out)
}

fn lseek(fd: i32, offset: u64, whence: i32) -> io::Result<u64> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on a file descriptor we own (borrowed from a live File) has no memory
    // effects; the result is checked.
    let r = unsafe { libc::lseek(fd, offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn finds_data_extents_of_sparse_file() {
        let dir = TempDir::new("raw-extents");
        let path = dir.path().join("sparse.raw");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(&[1u8; 4096], 8 << 20).unwrap();
        file.write_all_at(&[2u8; 4096], 40 << 20).unwrap();
        let file = File::open(&path).unwrap();
        let ranges = data_ranges(&file, 0..64 << 20).unwrap();
        // File systems report extents at their own block granularity; each must cover the
        // written bytes and the total must be far below the file size.
        assert!(ranges
            .iter()
            .any(|r| r.start <= 8 << 20 && r.end >= (8 << 20) + 4096));
        assert!(ranges
            .iter()
            .any(|r| r.start <= 40 << 20 && r.end >= (40 << 20) + 4096));
        assert!(crate::ranges::total_len(&ranges) < 16 << 20, "{ranges:?}");
        // A window that excludes the data finds nothing; one that cuts an extent is clipped.
        assert!(data_ranges(&file, 0..(1 << 20)).unwrap().is_empty());
        let clipped = data_ranges(&file, ((8 << 20) + 100)..((8 << 20) + 200)).unwrap();
        assert_eq!(clipped, vec![((8 << 20) + 100)..((8 << 20) + 200)]);
    }

    #[tokio::test]
    async fn reads_and_rejects_out_of_range() {
        let dir = TempDir::new("raw-read");
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, (0..=255u8).cycle().take(8192).collect::<Vec<_>>()).unwrap();
        let reader = RawFileReader::open(&path).unwrap();
        assert_eq!(reader.size(), 8192);
        let buf = reader.read_at(256, AlignedBuf::zeroed(4)).await.unwrap();
        assert_eq!(buf, vec![0, 1, 2, 3]);
        let err = reader
            .read_at(8190, AlignedBuf::zeroed(4))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
