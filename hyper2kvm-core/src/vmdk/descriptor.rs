//! The VMDK descriptor: the text that says what kind of disk this is (`createType`), whether
//! it has a parent (`parentCID`), and which extent files hold its data, in order
//! ("Virtual Disk Format 5.0", section "The Descriptor File").
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=b591ae97
//! parentCID=ffffffff
//! createType="twoGbMaxExtentSparse"
//!
//! # Extent description
//! RW 4192256 SPARSE "disk-s001.vmdk"
//! RW 2101248 FLAT "disk-flat.vmdk" 0
//! RW 2048 ZERO
//!
//! ddb.adapterType = "lsilogic"
//! ```
//!
//! It is a separate small file, or embedded in a sparse extent (padded with NULs). Parsing is
//! pure; the caller resolves files and decides what it supports. Geometry (`ddb.geometry.*`)
//! is ignored: the disk's size is the sum of its extents.

use crate::error::{Error, ErrorKind, Result};

/// The `parentCID` of a disk without a parent.
pub const NO_PARENT: u32 = 0xffff_ffff;

/// Who may access an extent; we read all but `NOACCESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `RW`.
    ReadWrite,
    /// `RDONLY`.
    ReadOnly,
    /// `NOACCESS`.
    NoAccess,
}

/// What an extent line says holds the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentKind {
    /// Raw bytes at an offset of a file (`FLAT`, and `VMFS` on ESXi, which is the same).
    Flat,
    /// A hosted sparse extent (`SPARSE`): header, grain directory, grain tables, grains.
    Sparse,
    /// Reads as zeros, no file (`ZERO`).
    Zero,
    /// Anything else (`VMFSSPARSE`, `SESPARSE`, `VMFSRDM`, `VMFSRAW`, …), kept for the error.
    Other(String),
}

/// One extent line: `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// 1-based line number in the descriptor, for errors.
    pub line: usize,
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: Access,
    /// The extent's size in sectors.
    pub sectors: u64,
    /// What holds the data.
    pub kind: ExtentKind,
    /// The extent file, relative to the descriptor's directory unless absolute.
    pub file: Option<String>,
    /// For flat extents, where the data starts in the file, in sectors.
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType`, e.g. `monolithicSparse`.
    pub create_type: Option<String>,
    /// `CID`: changes whenever the disk is written.
    pub cid: Option<u32>,
    /// `parentCID`; [`NO_PARENT`] (or absent) for a disk without a parent.
    pub parent_cid: Option<u32>,
    /// `parentFileNameHint`: where the parent of a delta disk was.
    pub parent_hint: Option<String>,
    /// `ddb.adapterType`, e.g. `lsilogic`, `ide`.
    pub adapter_type: Option<String>,
    /// The extents, in disk order.
    pub extents: Vec<ExtentLine>,
}

impl Descriptor {
    /// Parses descriptor text; the text ends at the first NUL (embedded descriptors are padded
    /// with them). Errors name the line; the caller adds the file.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end]);
        let mut d = Descriptor::default();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_ascii_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                d.extents.push(parse_extent(line, line_no)?);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                // Unknown lines are ignored, as VMware and qemu do.
                continue;
            };
            let key = key.trim();
            let value = value.trim().trim_matches('"');
            match key {
                "createType" => d.create_type = Some(value.to_owned()),
                "CID" => d.cid = Some(parse_cid(value, key, line_no)?),
                "parentCID" => d.parent_cid = Some(parse_cid(value, key, line_no)?),
                "parentFileNameHint" => d.parent_hint = Some(value.to_owned()),
                "ddb.adapterType" => d.adapter_type = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(d)
    }

    /// The parent's CID if this is a delta (child) disk.
    pub fn parent(&self) -> Option<u32> {
        self.parent_cid.filter(|&cid| cid != NO_PARENT)
    }
}

fn parse_cid(value: &str, key: &str, line: usize) -> Result<u32> {
    u32::from_str_radix(value, 16).map_err(|_| {
        Error::new(
            ErrorKind::InvalidFormat,
            format!("descriptor line {line}: {key} {value:?} is not a hexadecimal number"),
        )
    })
}

fn parse_extent(line: &str, line_no: usize) -> Result<ExtentLine> {
    let bad = |why: &str| {
        Error::new(
            ErrorKind::InvalidFormat,
            format!("descriptor line {line_no}: extent line {line:?} {why}"),
        )
    };
    let mut rest = line;
    let mut word = || -> Option<&str> {
        let trimmed = rest.trim_start();
        let end = trimmed
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(trimmed.len());
        let (w, r) = trimmed.split_at(end);
        rest = r;
        (!w.is_empty()).then_some(w)
    };
    let access = match word() {
        Some("RW") => Access::ReadWrite,
        Some("RDONLY") => Access::ReadOnly,
        _ => Access::NoAccess,
    };
    let sectors = word()
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| bad("has no size in sectors after the access mode"))?;
    let kind = match word().ok_or_else(|| bad("has no extent type"))? {
        "FLAT" | "VMFS" => ExtentKind::Flat,
        "SPARSE" => ExtentKind::Sparse,
        "ZERO" => ExtentKind::Zero,
        other => ExtentKind::Other(other.to_owned()),
    };
    let after_type = rest.trim_start();
    let (file, tail) = if let Some(quoted) = after_type.strip_prefix('"') {
        let close = quoted
            .find('"')
            .ok_or_else(|| bad("has a file name without its closing quote"))?;
        (Some(quoted[..close].to_owned()), &quoted[close + 1..])
    } else {
        (None, after_type)
    };
    let tail = tail.trim();
    let offset = if tail.is_empty() {
        0
    } else {
        // Offset first; ESXi may add more fields (e.g. a device id) we do not need.
        let w = tail.split_ascii_whitespace().next().unwrap_or("");
        w.parse::<u64>()
            .map_err(|_| bad("has an offset that is not a number of sectors"))?
    };
    match kind {
        ExtentKind::Zero => {}
        _ if file.is_none() => return Err(bad("names no extent file")),
        _ => {}
    }
    Ok(ExtentLine {
        line: line_no,
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT: &str =
        "# Disk DescriptorFile\r\nversion=1\r\nCID=b591ae97\r\nparentCID=ffffffff\r\n\
createType=\"twoGbMaxExtentSparse\"\r\n\r\n# Extent description\r\n\
RW 4192256 SPARSE \"d-s001.vmdk\"\r\nRDONLY 2048 FLAT \"d with space-f002.vmdk\" 128\r\n\
RW 64 ZERO\r\n\r\nddb.adapterType = \"lsilogic\"\r\nddb.geometry.cylinders = \"4161\"\r\n";

    #[test]
    fn parses_header_extents_and_ddb() {
        let mut bytes = SPLIT.as_bytes().to_vec();
        bytes.extend_from_slice(&[0; 300]); // embedded descriptors are NUL-padded
        bytes.extend_from_slice(b"RW 1 FLAT \"after-the-nul\" 0\n");
        let d = Descriptor::parse(&bytes).unwrap();
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
        assert_eq!(d.cid, Some(0xb591ae97));
        assert_eq!(d.parent(), None);
        assert_eq!(d.adapter_type.as_deref(), Some("lsilogic"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(
            d.extents[0],
            ExtentLine {
                line: 8,
                access: Access::ReadWrite,
                sectors: 4192256,
                kind: ExtentKind::Sparse,
                file: Some("d-s001.vmdk".into()),
                offset: 0,
            }
        );
        assert_eq!(d.extents[1].access, Access::ReadOnly);
        assert_eq!(d.extents[1].file.as_deref(), Some("d with space-f002.vmdk"));
        assert_eq!(d.extents[1].offset, 128);
        assert_eq!(d.extents[2].kind, ExtentKind::Zero);
        assert_eq!(d.extents[2].file, None);
    }

    #[test]
    fn delta_disk_has_a_parent() {
        let d = Descriptor::parse(
            b"version=1\nCID=12345678\nparentCID=abcdef01\nparentFileNameHint=\"base.vmdk\"\n",
        )
        .unwrap();
        assert_eq!(d.parent(), Some(0xabcdef01));
        assert_eq!(d.parent_hint.as_deref(), Some("base.vmdk"));
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, want) in [
            ("version=1\nRW x SPARSE \"a\"\n", "line 2"),
            ("RW 10 FLAT \"a\" zz\n", "offset"),
            ("RW 10 FLAT \"a\n", "closing quote"),
            ("RW 10 SPARSE\n", "names no extent file"),
            ("CID=xyz\n", "CID"),
        ] {
            let err = Descriptor::parse(text.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(want), "{want:?} not in {err}");
        }
        let other = Descriptor::parse(b"RW 8 VMFSSPARSE \"d-delta.vmdk\"\n").unwrap();
        assert_eq!(
            other.extents[0].kind,
            ExtentKind::Other("VMFSSPARSE".into())
        );
    }
}
