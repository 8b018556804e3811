//! File safety: what we read must be a disk, and what we write must never land somewhere else.
//!
//! * **Inputs** ([`open_input`]): a regular file, or a block device whose size comes from the
//!   `BLKGETSIZE64` ioctl (its `metadata().len()` is 0). Character devices (`/dev/zero`,
//!   `/dev/urandom`), FIFOs and sockets are refused before they are opened, and the open
//!   itself uses `O_NONBLOCK`, so a FIFO swapped in meanwhile cannot hang us; the opened file
//!   is checked again.
//! * **Outputs** ([`create_new`]): every file we create (`.part` images, journals, reports,
//!   temporary files) is created with `O_CREAT | O_EXCL | O_NOFOLLOW`, after removing
//!   whatever entry had the name (a symlink is removed, never followed), so no symlink can
//!   redirect a write to another file.
//! * **Source and destination** ([`check_distinct`]): the source must not be the destination,
//!   its `.part` file or its journal (compared by device and inode, so links and other
//!   spellings of a path are caught), and the destination must not be a directory.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// What kind of file a path is, in words, if it is not something we read as a disk.
fn refused_kind(m: &Metadata) -> Option<&'static str> {
    let t = m.file_type();
    if t.is_file() || t.is_block_device() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

fn refuse(path: &Path, kind: &str) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("is {kind}, not a disk image: give a disk image file or a block device"),
    )
    .with_path(path)
}

/// Opens `path` for reading as a disk: a regular file or a block device. Returns the file and
/// its size in bytes.
pub fn open_input(path: &Path) -> Result<(File, u64)> {
    let before =
        std::fs::metadata(path).map_err(|e| Error::io("cannot open", e).with_path(path))?;
    if let Some(kind) = refused_kind(&before) {
        return Err(refuse(path, kind));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("cannot open", e).with_path(path))?;
    let len = input_len(&file, path)?;
    Ok((file, len))
}

/// The size of an opened input: its length, or a block device's size; refuses anything that
/// is not a disk.
pub fn input_len(file: &File, path: &Path) -> Result<u64> {
    let m = file
        .metadata()
        .map_err(|e| Error::io("cannot stat", e).with_path(path))?;
    if let Some(kind) = refused_kind(&m) {
        return Err(refuse(path, kind));
    }
    if m.file_type().is_block_device() {
        return block_device_size(file).map_err(|e| {
            Error::io("cannot read the block device's size (BLKGETSIZE64)", e).with_path(path)
        });
    }
    Ok(m.len())
}

/// `_IOR(0x12, 114, size_t)` from `<linux/fs.h>`; the `libc` crate does not export it.
#[cfg(target_os = "linux")]
const BLKGETSIZE64: libc::c_ulong = {
    let size = std::mem::size_of::<libc::size_t>() as libc::c_ulong;
    // The ioctl direction bits differ on a few architectures.
    #[cfg(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc64"
    ))]
    let read: libc::c_ulong = 2 << 29;
    #[cfg(not(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc64"
    )))]
    let read: libc::c_ulong = 2 << 30;
    read | (size << 16) | (0x12 << 8) | 114
};

/// A block device's size in bytes.
pub fn block_device_size(file: &File) -> io::Result<u64> {
    use std::os::unix::io::AsRawFd;
    #[cfg(target_os = "linux")]
    {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to ours.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
        if r == 0 {
            return Ok(size);
        }
    }
    // Elsewhere (or if the ioctl is refused): the device's end.
    // SAFETY: lseek on a descriptor we own; the result is checked.
    let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
    if end < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(end as u64)
    }
}

/// Creates `path` for writing (and reading) as a new, empty file: whatever entry had the name
/// is removed first (a symlink is removed, not followed; a directory is an error), then the
/// file is created with `O_EXCL | O_NOFOLLOW`.
pub fn create_new(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
}

/// Opens an existing file we wrote (a `.part` file to resume) for reading and writing,
/// refusing a symlink or anything but a regular file.
pub fn reopen_own(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Refuses a conversion from `src` into `dst` that would write over the source (the
/// destination, its `.part` file or its journal is the source file) or into a directory.
pub fn check_distinct(src: &Path, dst: &Path) -> Result<()> {
    check_destination(dst)?;
    let Ok(s) = std::fs::metadata(src) else {
        return Ok(()); // opening it reports why
    };
    let part = crate::output::part_path(dst);
    let journal = crate::journal::journal_path(dst);
    for (what, path) in [
        ("the destination", dst),
        ("the destination's partial file", &part),
        ("the destination's resume journal", &journal),
    ] {
        if let Ok(m) = std::fs::metadata(path) {
            if m.dev() == s.dev() && m.ino() == s.ino() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "is {what} too ({}): writing it would destroy the source; choose another destination",
                        path.display()
                    ),
                )
                .with_path(src));
            }
        }
    }
    Ok(())
}

/// Refuses a destination that is not an image file name: a directory (the final rename would
/// fail after all the work), or a device, FIFO or socket (the final rename would replace the
/// device node, e.g. `/dev/full`, with an image file).
pub fn check_destination(dst: &Path) -> Result<()> {
    if dst.as_os_str().is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "the destination is empty",
        ));
    }
    let Ok(m) = std::fs::symlink_metadata(dst) else {
        return Ok(());
    };
    let t = m.file_type();
    let kind = if t.is_file() || t.is_symlink() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else {
        "a socket"
    };
    Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("is {kind}: the destination must be an image file name (images are written to a new file and renamed into place, which would replace it)"),
    )
    .with_path(dst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn character_devices_fifos_and_directories_are_refused() {
        for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            let err = open_input(Path::new(dev)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.to_string().contains("character device"), "{err}");
        }
        let dir = TempDir::new("fsafe");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = open_input(&fifo).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = open_input(dir.path()).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn destinations_must_be_file_names() {
        for dev in ["/dev/full", "/dev/null"] {
            let err = check_destination(Path::new(dev)).unwrap_err();
            assert!(err.to_string().contains("is a character device"), "{err}");
        }
        let dir = TempDir::new("fsafe-dst");
        assert!(check_destination(dir.path())
            .unwrap_err()
            .to_string()
            .contains("is a directory"));
        assert!(check_destination(&dir.path().join("new.qcow2")).is_ok());
        let existing = dir.path().join("old.qcow2");
        std::fs::write(&existing, "x").unwrap();
        assert!(check_destination(&existing).is_ok());
        let link = dir.path().join("link.qcow2");
        std::os::unix::fs::symlink(&existing, &link).unwrap();
        assert!(
            check_destination(&link).is_ok(),
            "the rename replaces the link itself"
        );
    }

    #[test]
    fn create_new_removes_a_symlink_instead_of_following_it() {
        let dir = TempDir::new("fsafe-link");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let part = dir.path().join("out.part");
        std::os::unix::fs::symlink(&victim, &part).unwrap();
        use std::io::Write;
        create_new(&part).unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&part).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&part).unwrap().is_symlink());
    }

    #[test]
    fn source_and_its_destination_files_must_differ() {
        let dir = TempDir::new("fsafe-same");
        let src = dir.path().join("x.part");
        std::fs::write(&src, "data").unwrap();
        // convert x.part x: the source is the destination's partial file.
        let err = check_distinct(&src, &dir.path().join("x")).unwrap_err();
        assert!(err.to_string().contains("partial file"), "{err}");
        let err = check_distinct(&src, &src).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let link = dir.path().join("alias");
        std::fs::hard_link(&src, &link).unwrap();
        assert!(check_distinct(&src, &link).is_err());
        assert!(check_distinct(&src, &dir.path().join("y")).is_ok());
        assert!(check_distinct(&src, dir.path()).is_err());
    }
}
