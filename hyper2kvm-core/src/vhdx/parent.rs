//! Finding a differencing disk's parent from its parent locator (MS-VHDX 2.6.2.6.1).
//!
//! The locator holds Windows paths: `relative_path` (to the child's directory),
//! `absolute_win32_path` (`C:\dir\parent.vhdx`) and `volume_path`
//! (`\\?\Volume{GUID}\dir\parent.vhdx`). On this side of a migration only the relative path
//! and the parent's file name mean anything, so candidates are the relative path resolved
//! against the child's directory, then the absolute and volume paths' file names in that
//! directory. The first that exists is the parent; its DataWriteGuid must be the locator's
//! `parent_linkage` (or `parent_linkage2`), else the parent changed after the child was made
//! and the merged disk would be garbage.

use std::path::{Path, PathBuf};

use super::guid::Guid;
use super::metadata::Metadata;
use crate::error::{Error, ErrorKind, Result};

/// The paths the parent may be at, best first, without duplicates.
pub(crate) fn candidates(child: &Path, meta: &Metadata) -> Vec<PathBuf> {
    let dir = child.parent().unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(rel) = meta.locator("relative_path") {
        let parts = windows_parts(rel);
        if !parts.is_empty() {
            let mut p = dir.to_path_buf();
            for part in parts {
                match part {
                    "." => {}
                    other => p.push(other),
                }
            }
            push(p);
        }
    }
    for key in ["absolute_win32_path", "volume_path"] {
        if let Some(name) = meta
            .locator(key)
            .and_then(|p| windows_parts(p).last().copied())
        {
            push(dir.join(name));
        }
    }
    out
}

/// The components of a Windows path, split on `\` and `/`, empty ones dropped.
fn windows_parts(path: &str) -> Vec<&str> {
    path.split(['\\', '/']).filter(|p| !p.is_empty()).collect()
}

/// The DataWriteGuids a parent may have: `parent_linkage` and `parent_linkage2`.
pub(crate) fn linkage(child: &Path, meta: &Metadata) -> Result<Vec<Guid>> {
    let mut ids = Vec::new();
    for key in ["parent_linkage", "parent_linkage2"] {
        if let Some(text) = meta.locator(key) {
            let id = Guid::parse(text).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidFormat,
                    format!("VHDX parent locator's {key} {text:?} is not a GUID"),
                )
                .with_path(child)
            })?;
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            "differencing VHDX has no parent_linkage in its parent locator",
        )
        .with_path(child));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(locator: &[(&str, &str)]) -> Metadata {
        Metadata {
            block_size: 1 << 20,
            leave_blocks_allocated: false,
            has_parent: true,
            virtual_size: 1 << 20,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            disk_id: Guid::default(),
            parent_locator: Some(
                locator
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn relative_first_then_file_names_in_the_childs_directory() {
        let m = meta(&[
            ("relative_path", r".\..\base\parent.vhdx"),
            ("absolute_win32_path", r"C:\VMs\base\parent.vhdx"),
            (
                "volume_path",
                r"\\?\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\VMs\old.vhdx",
            ),
        ]);
        assert_eq!(
            candidates(Path::new("/data/vm/child.vhdx"), &m),
            vec![
                PathBuf::from("/data/vm/../base/parent.vhdx"),
                PathBuf::from("/data/vm/parent.vhdx"),
                PathBuf::from("/data/vm/old.vhdx"),
            ]
        );
    }

    #[test]
    fn linkage_must_be_a_guid() {
        let id = "{83E3F8F6-3D10-4E1B-9A22-5D2B6B5E8F01}";
        let m = meta(&[("parent_linkage", id)]);
        assert_eq!(
            linkage(Path::new("c.vhdx"), &m).unwrap(),
            vec![Guid::parse(id).unwrap()]
        );
        let m = meta(&[("parent_linkage", "nope")]);
        assert!(linkage(Path::new("c.vhdx"), &m).is_err());
        let m = meta(&[("relative_path", "p.vhdx")]);
        assert!(linkage(Path::new("c.vhdx"), &m)
            .unwrap_err()
            .to_string()
            .contains("parent_linkage"));
    }
}
