//! An index of a tar archive (an OVA): each member's name, where its data starts and how long
//! it is, so members are read in place rather than unpacked.
//!
//! Formats: POSIX ustar and GNU tar, as OVA writers (VMware's ovftool, VirtualBox, GNU tar)
//! produce them. A header is one 512-byte block; data follows, padded to 512 bytes. Numbers are
//! octal text, or for GNU base-256 (the first byte's high bit set) when they do not fit; a GNU
//! `L` member holds the next member's long name and a pax `x` member may give `path` and
//! `size`. Two zero blocks end the archive. Each header's checksum is checked, and a member
//! whose data runs past the end of the file is an error naming it: a truncated download is
//! found before anything is converted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hyper2kvm_core::{Error, ErrorKind, Result};

const BLOCK: u64 = 512;
/// A long name or pax header bigger than this is damage, not a name.
const MAX_META: u64 = 1 << 20;

/// One regular file in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its path in the archive.
    pub name: String,
    /// Where its data starts in the archive file.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u64,
}

/// The regular files of a tar archive, in archive order.
#[derive(Debug, Clone)]
pub struct TarIndex {
    /// The archive.
    pub path: PathBuf,
    /// Its members.
    pub members: Vec<Member>,
}

impl TarIndex {
    /// Reads every header of the archive at `path`.
    pub fn open(path: &Path) -> Result<TarIndex> {
        let file = File::open(path).map_err(|e| Error::io("cannot open", e).with_path(path))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", e).with_path(path))?
            .len();
        let members = index(&file, path, len)?;
        Ok(TarIndex {
            path: path.to_owned(),
            members,
        })
    }

    /// The member named `name` (a leading `./` ignored on both sides).
    pub fn find(&self, name: &str) -> Option<&Member> {
        let want = name.trim_start_matches("./");
        self.members
            .iter()
            .find(|m| m.name.trim_start_matches("./") == want)
    }
}

fn bad(path: &Path, at: u64, msg: String) -> Error {
    Error::new(ErrorKind::InvalidFormat, msg)
        .with_path(path)
        .at_offset(at)
}

fn index(file: &File, path: &Path, len: u64) -> Result<Vec<Member>> {
    let mut members = Vec::new();
    let mut at = 0u64;
    let mut long_name: Option<String> = None;
    let mut pax: Pax = Pax::default();
    loop {
        if at == len {
            // No end-of-archive blocks: some writers omit them; every member is whole.
            break;
        }
        if at + BLOCK > len {
            return Err(bad(
                path,
                at,
                format!(
                    "truncated tar archive: {} bytes of a 512-byte header, then the file ends",
                    len - at
                ),
            ));
        }
        let mut h = [0u8; BLOCK as usize];
        read(file, path, &mut h, at)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name = header_name(&h);
        check_sum(&h, path, at, &name)?;
        let size = number(&h[124..136]).ok_or_else(|| {
            bad(
                path,
                at + 124,
                format!("tar header of \"{name}\": size field is not a number"),
            )
        })?;
        let size = pax.size.take().unwrap_or(size);
        let data = at + BLOCK;
        let end = data.checked_add(size).filter(|&e| e <= len);
        let name = pax.path.take().or(long_name.take()).unwrap_or(name);
        let Some(_) = end else {
            return Err(bad(
                path,
                at,
                format!(
                    "truncated tar archive: member \"{name}\" needs {size} bytes from byte {data}, but the file has only {len} bytes; member header"
                ),
            ));
        };
        let kind = h[156];
        match kind {
            b'L' => long_name = Some(meta_text(file, path, data, size, &name)?),
            b'x' => pax = Pax::parse(&meta_bytes(file, path, data, size, &name)?),
            // Regular files (and contiguous files, which are regular files).
            b'0' | 0 | b'7' => members.push(Member {
                name,
                offset: data,
                size,
            }),
            // Directories, links, global pax headers, GNU long link names: nothing to read.
            _ => {}
        }
        at = data + size.div_ceil(BLOCK) * BLOCK;
    }
    Ok(members)
}

/// The name field, with ustar's prefix (bytes 345..500) when the header is POSIX ustar (GNU
/// uses those bytes for other things).
fn header_name(h: &[u8; 512]) -> String {
    let name = cstr(&h[0..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The header checksum: the sum of its bytes with the checksum field read as spaces.
/// Historic writers summed signed bytes; either sum is accepted.
fn check_sum(h: &[u8; 512], path: &Path, at: u64, name: &str) -> Result<()> {
    let stored = number(&h[148..156]);
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    match stored {
        Some(s) if s == unsigned || s as i64 == signed => Ok(()),
        _ => Err(bad(
            path,
            at + 148,
            format!(
                "not a tar archive, or a damaged one: header checksum of \"{name}\" is {}, the header sums to {unsigned}",
                stored.map_or_else(|| "not a number".to_string(), |s| s.to_string())
            ),
        )),
    }
}

/// A numeric field: octal text (NUL or space terminated, leading spaces allowed), or GNU
/// base-256 when the first byte's high bit is set.
pub(crate) fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut n: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn read(file: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<()> {
    file.read_exact_at(buf, at).map_err(|e| {
        Error::io(format!("reading {} bytes", buf.len()), e)
            .with_path(path)
            .at_offset(at)
    })
}

fn meta_bytes(file: &File, path: &Path, at: u64, size: u64, name: &str) -> Result<Vec<u8>> {
    if size > MAX_META {
        return Err(bad(
            path,
            at,
            format!("tar member \"{name}\": a {size}-byte long-name or pax header is not credible"),
        ));
    }
    let mut buf = vec![0u8; size as usize];
    read(file, path, &mut buf, at)?;
    Ok(buf)
}

fn meta_text(file: &File, path: &Path, at: u64, size: u64, name: &str) -> Result<String> {
    Ok(cstr(&meta_bytes(file, path, at, size, name)?))
}

/// The records of a pax extended header that matter here: `<len> <key>=<value>\n`.
#[derive(Debug, Default)]
struct Pax {
    path: Option<String>,
    size: Option<u64>,
}

impl Pax {
    fn parse(bytes: &[u8]) -> Pax {
        let mut pax = Pax::default();
        let mut rest = bytes;
        while let Some(space) = rest.iter().position(|&b| b == b' ') {
            let Some(len) = std::str::from_utf8(&rest[..space])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&l| l > space && l <= rest.len())
            else {
                break;
            };
            let record = &rest[space + 1..len];
            let record = record.strip_suffix(b"\n").unwrap_or(record);
            if let Some(eq) = record.iter().position(|&b| b == b'=') {
                let (key, value) = (&record[..eq], &record[eq + 1..]);
                let value = String::from_utf8_lossy(value).into_owned();
                match key {
                    b"path" => pax.path = Some(value),
                    b"size" => pax.size = value.parse().ok(),
                    _ => {}
                }
            }
            rest = &rest[len..];
        }
        pax
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ScratchFile;

    /// A ustar header for `name` of `size` bytes, with its checksum.
    pub(crate) fn header(name: &str, size: u64, kind: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn archive(members: &[(&str, &[u8], u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data, kind) in members {
            out.extend_from_slice(&header(name, data.len() as u64, *kind));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(number(b"00000001750\0"), Some(1000));
        assert_eq!(number(b"     1750 \0\0"), Some(1000));
        let mut b = [0u8; 12];
        b[0] = 0x80;
        b[4..].copy_from_slice(&(10u64 << 30).to_be_bytes());
        assert_eq!(number(&b), Some(10 << 30));
        assert_eq!(number(b"12345678901x"), None);
    }

    #[test]
    fn indexes_members_long_names_and_pax() {
        let long = "a".repeat(150) + ".vmdk";
        let bytes = archive(&[
            ("x.ovf", b"<Envelope/>", b'0'),
            ("dir/", b"", b'5'),
            ("././@LongLink", format!("{long}\0").as_bytes(), b'L'),
            ("trunc", b"0123456789", b'0'),
            ("PaxHeaders/y", b"20 path=pax-name.mf\n", b'x'),
            ("y", b"hello", b'0'),
        ]);
        let file = ScratchFile::new("tar", "ok.ova", &bytes);
        let idx = TarIndex::open(file.path()).unwrap();
        let names: Vec<_> = idx.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["x.ovf", long.as_str(), "pax-name.mf"]);
        let m = idx.find(&long).unwrap();
        assert_eq!(m.size, 10);
        assert_eq!(
            &bytes[m.offset as usize..m.offset as usize + 10],
            b"0123456789"
        );
        assert_eq!(idx.members[0].offset, 512);
    }

    #[test]
    fn truncated_and_damaged_archives_name_the_member() {
        let bytes = archive(&[
            ("x.ovf", b"<Envelope/>", b'0'),
            ("disk1.vmdk", &[7u8; 3000], b'0'),
        ]);
        let cut = &bytes[..512 * 3 + 100];
        let err = TarIndex::open(ScratchFile::new("tar", "cut.ova", cut).path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cut.ova: truncated tar archive: member \"disk1.vmdk\" needs 3000 bytes from byte 1536"),
            "{msg}"
        );
        assert_eq!(err.offset(), Some(1024));
        let mut bad = bytes.clone();
        bad[1024 + 10] ^= 1; // a byte of the second header's name
        let err = TarIndex::open(ScratchFile::new("tar", "bad.ova", &bad).path()).unwrap_err();
        assert!(err.to_string().contains("header checksum"), "{err}");
        assert_eq!(err.offset(), Some(1024 + 148));
    }
}
