//! The resume journal: what a resumable conversion has made durable, beside its `.part` file.
//!
//! `DST.part.journal` holds a header naming the source and the options (a resumed run must
//! read the same disk into the same kind of image), the guest ranges already written, and
//! the writer's own state (for qcow2: append position, tables not yet written, refcounts).
//! It is replaced atomically (written to a temporary file, synced, renamed) and only after
//! the `.part` file's data was synced, so whatever it says is on disk really is. A journal
//! that is missing, corrupt or for another source means starting over, never a wrong image.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::ranges::RangeSet;

const MAGIC: &[u8; 8] = b"H2KJRNL1";

/// The journal's path for an output `dst`.
pub fn journal_path(dst: &Path) -> PathBuf {
    let mut p = dst.as_os_str().to_owned();
    p.push(".part.journal");
    PathBuf::from(p)
}

/// A journal's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Identifies source and options; a resumed run must present the same.
    pub header: String,
    /// Guest ranges whose data is durably in the `.part` file.
    pub completed: RangeSet,
    /// The writer's state, in the writer's own encoding.
    pub sink_state: Vec<u8>,
}

impl Journal {
    /// Writes the journal to `path` atomically and durably.
    pub fn store(&self, path: &Path) -> Result<()> {
        let mut enc = Encoder::default();
        enc.bytes(self.header.as_bytes());
        enc.u64(self.completed.iter().count() as u64);
        for r in self.completed.iter() {
            enc.u64(r.start);
            enc.u64(r.end);
        }
        enc.bytes(&self.sink_state);
        let body = enc.into_inner();
        let mut file_bytes = Vec::with_capacity(body.len() + 16);
        file_bytes.extend_from_slice(MAGIC);
        file_bytes.extend_from_slice(&body);
        file_bytes.extend_from_slice(&fnv1a(&body).to_be_bytes());

        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |what: &str, e| Error::io(what.to_string(), e).with_path(&tmp);
        let mut f = crate::fsafe::create_new(&tmp)
            .map_err(|e| io("cannot create the resume journal", e))?;
        let written = f
            .write_all(&file_bytes)
            .map_err(|e| io("writing the resume journal", e))
            .and_then(|()| {
                f.sync_all()
                    .map_err(|e| io("syncing the resume journal", e))
            })
            .and_then(|()| {
                std::fs::rename(&tmp, path)
                    .map_err(|e| Error::io("renaming the resume journal", e).with_path(path))
            });
        if written.is_err() {
            // A full disk leaves no empty temporary file behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        sync_parent(path);
        Ok(())
    }

    /// Reads the journal at `path`: `Ok(None)` if there is none, an error if it is damaged.
    pub fn load(path: &Path) -> Result<Option<Journal>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read the resume journal", e).with_path(path)),
        };
        let corrupt = |why: &str| {
            Error::new(
                ErrorKind::InvalidFormat,
                format!("resume journal is damaged: {why}"),
            )
            .with_path(path)
        };
        if bytes.len() < MAGIC.len() + 8 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a hyper2kvm journal"));
        }
        let body = &bytes[8..bytes.len() - 8];
        let sum = u64::from_be_bytes(bytes[bytes.len() - 8..].try_into().unwrap());
        if fnv1a(body) != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut dec = Decoder::new(body);
        let parse = |dec: &mut Decoder| -> Option<Journal> {
            let header = String::from_utf8(dec.bytes()?.to_vec()).ok()?;
            let n = dec.u64()?;
            let mut completed = RangeSet::new();
            for _ in 0..n {
                let (s, e) = (dec.u64()?, dec.u64()?);
                completed.insert(s..e);
            }
            let sink_state = dec.bytes()?.to_vec();
            Some(Journal {
                header,
                completed,
                sink_state,
            })
        };
        parse(&mut dec)
            .map(Some)
            .ok_or_else(|| corrupt("truncated"))
    }

    /// Removes the journal at `path`, if any.
    pub fn remove(path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

/// Syncs the directory holding `path`, so a rename in it survives a crash.
pub(crate) fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// FNV-1a, 64-bit: enough to tell a damaged journal from a good one.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Big-endian encoding of the few shapes journals need.
#[derive(Debug, Default)]
pub struct Encoder(Vec<u8>);

impl Encoder {
    /// Appends a u16.
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a u64.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// The encoded bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

/// Reads what [`Encoder`] wrote; every getter returns `None` past the end.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Decodes `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// Reads a u16.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    /// Reads a u64.
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }

    /// True when everything was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = TempDir::new("journal");
        let path = journal_path(&dir.path().join("out.qcow2"));
        assert!(path.ends_with("out.qcow2.part.journal"));
        assert_eq!(Journal::load(&path).unwrap(), None);
        let journal = Journal {
            header: "disk.vhd 1073741824 qcow2".into(),
            completed: [(0..4096), (8192..16384)].into_iter().collect(),
            sink_state: vec![1, 2, 3],
        };
        journal.store(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), Some(journal));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Journal::load(&path).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        Journal::remove(&path);
        assert!(!path.exists());
    }
}
