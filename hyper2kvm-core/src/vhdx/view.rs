//! The VHDX file as its structures describe it: the bytes on disk with the replayed log laid
//! on top.
//!
//! We never write to the input, so a dirty log is replayed into an in-memory [`Overlay`] and
//! every later read — region tables, metadata, BAT, sector bitmaps and payload — goes through
//! [`FileView`], which consults the overlay after reading the file. A log may also extend the
//! file (its `LastFileOffset`); bytes past the physical end then read as zeros.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::raw::read_into;

/// The log sector size: every log write covers whole 4 KiB file sectors.
pub(crate) const LOG_SECTOR: u64 = 4096;

/// File bytes written by a replayed log: 4 KiB data sectors and zeroed ranges, disjoint.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// File offset (4 KiB aligned) -> the sector's 4096 bytes.
    data: BTreeMap<u64, Box<[u8]>>,
    /// start -> end of ranges the log zeroed; disjoint from `data` and from each other.
    zeros: BTreeMap<u64, u64>,
}

impl Overlay {
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty() && self.zeros.is_empty()
    }

    /// Applies a data descriptor: the 4 KiB sector at `offset` becomes `sector`.
    pub(crate) fn write_sector(&mut self, offset: u64, sector: Box<[u8]>) {
        debug_assert_eq!(sector.len() as u64, LOG_SECTOR);
        self.cut_zeros(offset, offset + LOG_SECTOR);
        self.data.insert(offset, sector);
    }

    /// Applies a zero descriptor: `len` bytes at `offset` become zeros.
    pub(crate) fn write_zeros(&mut self, offset: u64, len: u64) {
        let end = offset + len;
        let covered: Vec<u64> = self.data.range(offset..end).map(|(&k, _)| k).collect();
        for k in covered {
            self.data.remove(&k);
        }
        self.cut_zeros(offset, end);
        self.zeros.insert(offset, end);
    }

    /// Removes `start..end` from the zero ranges, splitting ranges that straddle it.
    fn cut_zeros(&mut self, start: u64, end: u64) {
        let hit: Vec<(u64, u64)> = self
            .zeros
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.zeros.remove(&s);
            if s < start {
                self.zeros.insert(s, start);
            }
            if e > end {
                self.zeros.insert(end, e);
            }
        }
    }

    /// Lays the overlay over `buf`, which holds the file's bytes at `offset`.
    fn apply(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (&s, &e) in self
            .zeros
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > offset)
        {
            let (a, b) = (s.max(offset), e.min(end));
            buf[(a - offset) as usize..(b - offset) as usize].fill(0);
        }
        let first = offset.saturating_sub(LOG_SECTOR - 1);
        for (&s, sector) in self.data.range(first..end) {
            let (a, b) = (s.max(offset), (s + LOG_SECTOR).min(end));
            if a < b {
                buf[(a - offset) as usize..(b - offset) as usize]
                    .copy_from_slice(&sector[(a - s) as usize..(b - s) as usize]);
            }
        }
    }

    /// The file ranges the overlay writes, sorted: they may hold data the file does not.
    pub(crate) fn ranges(&self) -> Vec<std::ops::Range<u64>> {
        let mut out: Vec<_> = self.data.keys().map(|&k| k..k + LOG_SECTOR).collect();
        out.extend(self.zeros.iter().map(|(&s, &e)| s..e));
        out.sort_by_key(|r| r.start);
        out
    }
}

/// Reads of a VHDX file through its replayed log.
#[derive(Debug)]
pub(crate) struct FileView {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    /// The file's length on disk.
    pub(crate) disk_len: u64,
    /// The length the structures may address: `disk_len`, or more if the log extended it.
    pub(crate) len: u64,
    pub(crate) overlay: Overlay,
}

impl FileView {
    pub(crate) fn new(file: Arc<File>, path: &Path, disk_len: u64) -> Self {
        FileView {
            file,
            path: path.to_owned(),
            disk_len,
            len: disk_len,
            overlay: Overlay::default(),
        }
    }

    /// An error about this file at `offset`.
    pub(crate) fn invalid(&self, offset: u64, msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidFormat, msg)
            .with_path(&self.path)
            .at_offset(offset)
    }

    /// Checks that `len` bytes at `offset` lie inside the file; `what` names the structure.
    pub(crate) fn check_range(&self, offset: u64, len: u64, what: &str) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.invalid(
                offset,
                format!(
                    "{what} ({len} bytes) lies past the end of the file ({} bytes; truncated?)",
                    self.len
                ),
            ));
        }
        Ok(())
    }

    /// Fills `buf` with the file's bytes at `offset`, as replayed.
    pub(crate) fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset + buf.len() as u64;
        let on_disk = end.min(self.disk_len).saturating_sub(offset) as usize;
        if on_disk > 0 {
            read_into(&self.file, &self.path, &mut buf[..on_disk], offset)?;
        }
        buf[on_disk..].fill(0);
        if !self.overlay.is_empty() {
            self.overlay.apply(offset, buf);
        }
        Ok(())
    }

    /// [`read_into`](Self::read_into) a new buffer of `len` bytes; `len` must have been
    /// bounded by the file's size (via [`check_range`](Self::check_range)) by the caller.
    pub(crate) fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_into(&mut buf, offset)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(o: &Overlay, offset: u64, len: usize, fill: u8) -> Vec<u8> {
        let mut buf = vec![fill; len];
        o.apply(offset, &mut buf);
        buf
    }

    #[test]
    fn later_writes_win_and_ranges_stay_disjoint() {
        let mut o = Overlay::default();
        o.write_zeros(0, 4 * LOG_SECTOR);
        o.write_sector(LOG_SECTOR, vec![7; 4096].into());
        // Zeros, then the data sector, then zeros again.
        let got = read(&o, 0, 4 * 4096, 0xff);
        assert!(got[..4096].iter().all(|&b| b == 0));
        assert!(got[4096..8192].iter().all(|&b| b == 7));
        assert!(got[8192..].iter().all(|&b| b == 0));
        // Zeroing over the data sector removes it; a read straddling the edges is clipped.
        o.write_zeros(LOG_SECTOR, LOG_SECTOR);
        let got = read(&o, 4096 - 10, 20, 0xff);
        assert_eq!(got, vec![0; 20]);
        let got = read(&o, 4 * 4096 - 2, 4, 0xff);
        assert_eq!(got, vec![0, 0, 0xff, 0xff]);
        assert_eq!(
            o.ranges(),
            vec![0..4096, 4096..8192, 8192..16384],
            "disjoint pieces"
        );
        // A data sector in the middle of a zero range splits it.
        o.write_sector(2 * LOG_SECTOR, vec![9; 4096].into());
        let got = read(&o, 2 * 4096 - 1, 4098, 0xff);
        assert_eq!(got[0], 0);
        assert!(got[1..4097].iter().all(|&b| b == 9));
        assert_eq!(got[4097], 0);
    }
}
