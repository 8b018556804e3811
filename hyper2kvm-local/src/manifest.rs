//! The OVF manifest (`.mf`): one digest per file of the package, as `SHA256(name)= hex` (or
//! `SHA1`, `SHA512`; spaces around the parentheses and `=` vary between writers). When a
//! package has one, every disk is hashed before it is converted and a mismatch fails the VM:
//! the conversion reads a VMDK's grains out of order and skips its metadata, so the digest of
//! the file as written is taken by one sequential pass over its bytes instead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use hyper2kvm_core::{Error, ErrorKind, Result};
use sha2::Digest;

/// A digest algorithm a manifest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1 (OVF 1.x packages, ovftool's default before 4.x).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The file it covers, as written in the manifest.
    pub file: String,
    /// The expected digest, lower-case hex.
    pub digest: String,
}

/// A parsed manifest.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Its entries, in order.
    pub entries: Vec<Entry>,
    /// Its name, for messages.
    pub name: String,
}

impl Manifest {
    /// Parses manifest text; `name` (the file) prefixes errors.
    pub fn parse(text: &str, name: &str) -> Result<Manifest> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| {
                Error::new(
                    ErrorKind::InvalidFormat,
                    format!("manifest line {}: {why}: {line:?}", i + 1),
                )
                .with_subject(name)
            };
            let open = line
                .find('(')
                .ok_or_else(|| bad("expected ALGORITHM(file)= digest"))?;
            let close = line
                .rfind(')')
                .filter(|&c| c > open)
                .ok_or_else(|| bad("no closing parenthesis"))?;
            let algorithm = match line[..open].trim().to_ascii_uppercase().as_str() {
                "SHA1" => Algorithm::Sha1,
                "SHA256" => Algorithm::Sha256,
                "SHA512" => Algorithm::Sha512,
                other => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "manifest line {}: digest algorithm {other:?} is not supported (SHA1, SHA256, SHA512 are)",
                            i + 1
                        ),
                    )
                    .with_subject(name))
                }
            };
            let rest = line[close + 1..].trim_start();
            let digest = rest
                .strip_prefix('=')
                .ok_or_else(|| bad("no '=' after the file name"))?
                .trim();
            let want = match algorithm {
                Algorithm::Sha1 => 40,
                Algorithm::Sha256 => 64,
                Algorithm::Sha512 => 128,
            };
            if digest.len() != want || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!(
                    "a {} digest is {want} hex digits",
                    algorithm.name()
                )));
            }
            entries.push(Entry {
                algorithm,
                file: line[open + 1..close].trim().to_string(),
                digest: digest.to_ascii_lowercase(),
            });
        }
        Ok(Manifest {
            entries,
            name: name.to_string(),
        })
    }

    /// The entry for `file` (a leading `./` ignored).
    pub fn get(&self, file: &str) -> Option<&Entry> {
        let want = file.trim_start_matches("./");
        self.entries
            .iter()
            .find(|e| e.file.trim_start_matches("./") == want)
    }
}

/// Hashes `len` bytes of `file` from `offset` and compares them with `entry`; `shown` names
/// the file in the error (an Integrity error naming both digests).
pub fn verify(
    entry: &Entry,
    manifest: &str,
    file: &File,
    shown: &Path,
    offset: u64,
    len: u64,
) -> Result<()> {
    let got = match entry.algorithm {
        Algorithm::Sha1 => hash::<sha1::Sha1>(file, shown, offset, len)?,
        Algorithm::Sha256 => hash::<sha2::Sha256>(file, shown, offset, len)?,
        Algorithm::Sha512 => hash::<sha2::Sha512>(file, shown, offset, len)?,
    };
    if got != entry.digest {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "{} mismatch: the manifest {manifest} says {}, the file hashes to {got} (corrupt or incomplete copy)",
                entry.algorithm.name(),
                entry.digest
            ),
        )
        .with_path(shown));
    }
    Ok(())
}

fn hash<D: Digest>(file: &File, shown: &Path, offset: u64, len: u64) -> Result<String> {
    let mut d = D::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + pos)
            .map_err(|e| {
                Error::io(format!("reading {n} bytes to check its digest"), e)
                    .with_path(shown)
                    .at_offset(pos)
            })?;
        d.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(d.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ScratchFile;

    #[test]
    fn parses_spacing_variants_and_checks() {
        let text =
            "SHA256(web01.ovf)= 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
                    SHA1 (web01-disk1.vmdk) = 0123456789ABCDEF0123456789abcdef01234567\r\n\n";
        let m = Manifest::parse(text, "web01.mf").unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(
            m.get("./web01-disk1.vmdk").unwrap().algorithm,
            Algorithm::Sha1
        );
        assert_eq!(
            m.get("web01-disk1.vmdk").unwrap().digest,
            "0123456789abcdef0123456789abcdef01234567"
        );
        let err = Manifest::parse("MD5(x)= 00", "a.mf").unwrap_err();
        assert!(
            err.to_string().contains("\"MD5\" is not supported"),
            "{err}"
        );
        let err = Manifest::parse("SHA256(x)= 00", "a.mf").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 1: a SHA256 digest is 64 hex digits"),
            "{err}"
        );
    }

    #[test]
    fn verify_hashes_a_range() {
        let scratch = ScratchFile::new("mf", "f", b"xxabcxx");
        let path = scratch.path();
        let file = File::open(path).unwrap();
        // sha256("abc")
        let good = Entry {
            algorithm: Algorithm::Sha256,
            file: "f".into(),
            digest: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        };
        verify(&good, "m.mf", &file, path, 2, 3).unwrap();
        let sha1 = Entry {
            algorithm: Algorithm::Sha1,
            file: "f".into(),
            digest: "a9993e364706816aba3e25717850c26c9cd0d89d".into(),
        };
        verify(&sha1, "m.mf", &file, path, 2, 3).unwrap();
        let err = verify(&good, "m.mf", &file, path, 1, 3).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        let msg = err.to_string();
        assert!(
            msg.contains("SHA256 mismatch: the manifest m.mf says ba7816bf"),
            "{msg}"
        );
    }
}
