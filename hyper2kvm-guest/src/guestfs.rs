//! The seam between fix-ups and a guest's file system: [`GuestFs`].
//!
//! Fix-ups only read files, write files, remove files and run commands inside the guest; the
//! Windows fix-ups also copy host files in (drivers) and read and edit registry hives. The
//! real implementation is [`crate::guestfish::Guestfish`] (libguestfs' appliance, the image's
//! file systems mounted); tests use an in-memory guest. Paths are absolute paths inside the
//! guest.

use std::path::Path;

use crate::registry::{KeyEdit, RegKey};
use crate::Result;

/// What a fix-up may do to a guest.
pub trait GuestFs {
    /// The content of a regular file (following symlinks), or `None` if there is none.
    fn read(&mut self, path: &str) -> Result<Option<String>>;
    /// Replaces (or creates, with its parent directories) a file. An existing file keeps its
    /// owner and mode.
    fn write(&mut self, path: &str, content: &str) -> Result<()>;
    /// Removes a file; no error if it does not exist.
    fn remove(&mut self, path: &str) -> Result<()>;
    /// The names in a directory, sorted; empty if it does not exist.
    fn list(&mut self, dir: &str) -> Result<Vec<String>>;
    /// Whether something (file, directory, symlink, even a dangling one) exists at `path`.
    fn exists(&mut self, path: &str) -> Result<bool>;
    /// Runs a shell command inside the guest (chrooted into its root) and returns its output.
    fn run(&mut self, command: &str) -> Result<String>;
    /// Copies a host file into the guest byte for byte (creating its parent directories).
    fn upload(&mut self, local: &Path, path: &str) -> Result<()>;
    /// The guest path that exists under another letter case (NTFS names are case-insensitive
    /// for Windows, not for libguestfs): `/windows/system32` → `/Windows/System32`. Missing
    /// trailing components are kept as given.
    fn case_path(&mut self, path: &str) -> Result<String>;
    /// One key of the registry hive file `hive`: its values and subkeys, or `None` if the key
    /// does not exist. `key` is `\`-separated from the hive's root (empty for the root).
    fn registry_key(&mut self, hive: &str, key: &str) -> Result<Option<RegKey>>;
    /// Creates keys (with their parents) and sets values in the hive file `hive`.
    fn registry_merge(&mut self, hive: &str, edits: &[KeyEdit]) -> Result<()>;
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory guest for unit tests of fix-ups and inspection.

    use std::collections::BTreeMap;
    use std::path::Path;

    use super::GuestFs;
    use crate::registry::{KeyEdit, RegKey};
    use crate::{Error, ErrorKind, Result};

    /// Files by path; directories exist implicitly. Commands are recorded, and answered from
    /// `failing` (an error) or with empty output. Hives are maps from key path (lower-cased,
    /// `\`-separated) to the key; keys' subkey lists are derived from the paths.
    #[derive(Debug, Default)]
    pub struct MemoryGuest {
        pub files: BTreeMap<String, String>,
        pub commands: Vec<String>,
        pub failing: Vec<String>,
        pub hives: BTreeMap<String, BTreeMap<String, (String, RegKey)>>,
    }

    impl MemoryGuest {
        pub fn with(files: &[(&str, &str)]) -> MemoryGuest {
            MemoryGuest {
                files: files
                    .iter()
                    .map(|(p, c)| (p.to_string(), c.to_string()))
                    .collect(),
                ..MemoryGuest::default()
            }
        }
    }

    impl GuestFs for MemoryGuest {
        fn read(&mut self, path: &str) -> Result<Option<String>> {
            Ok(self.files.get(path).cloned())
        }
        fn write(&mut self, path: &str, content: &str) -> Result<()> {
            self.files.insert(path.to_string(), content.to_string());
            Ok(())
        }
        fn remove(&mut self, path: &str) -> Result<()> {
            self.files.remove(path);
            Ok(())
        }
        fn list(&mut self, dir: &str) -> Result<Vec<String>> {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            let mut names: Vec<String> = self
                .files
                .keys()
                .filter_map(|p| p.strip_prefix(&prefix))
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
                .collect();
            names.dedup();
            Ok(names)
        }
        fn exists(&mut self, path: &str) -> Result<bool> {
            let prefix = format!("{}/", path.trim_end_matches('/'));
            Ok(self.files.contains_key(path) || self.files.keys().any(|p| p.starts_with(&prefix)))
        }
        fn run(&mut self, command: &str) -> Result<String> {
            self.commands.push(command.to_string());
            if self.failing.iter().any(|f| command.contains(f.as_str())) {
                return Err(Error::new(
                    ErrorKind::Guestfs,
                    format!("`{command}` failed"),
                ));
            }
            Ok(String::new())
        }
        fn upload(&mut self, local: &Path, path: &str) -> Result<()> {
            let bytes = std::fs::read(local)
                .map_err(|e| Error::io(format!("reading {}", local.display()), e))?;
            self.files.insert(
                path.to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
            Ok(())
        }
        fn case_path(&mut self, path: &str) -> Result<String> {
            let lower = path.to_ascii_lowercase();
            for existing in self.files.keys() {
                let e = existing.to_ascii_lowercase();
                if e == lower || e.starts_with(&format!("{lower}/")) {
                    return Ok(existing[..path.len()].to_string());
                }
            }
            Ok(path.to_string())
        }
        fn registry_key(&mut self, hive: &str, key: &str) -> Result<Option<RegKey>> {
            let Some(keys) = self.hives.get(hive) else {
                return Err(Error::new(
                    ErrorKind::Guestfs,
                    format!("{hive}: no such hive"),
                ));
            };
            let wanted = key.to_ascii_lowercase();
            let Some((_, found)) = keys.get(&wanted) else {
                return Ok(None);
            };
            let mut found = found.clone();
            let prefix = if wanted.is_empty() {
                String::new()
            } else {
                format!("{wanted}\\")
            };
            for (path, (name, _)) in keys.iter() {
                if let Some(rest) = path.strip_prefix(&prefix) {
                    if !rest.is_empty() && !rest.contains('\\') {
                        found
                            .subkeys
                            .push(name.rsplit('\\').next().unwrap_or(name).to_string());
                    }
                }
            }
            Ok(Some(found))
        }
        fn registry_merge(&mut self, hive: &str, edits: &[KeyEdit]) -> Result<()> {
            let keys = self.hives.entry(hive.to_string()).or_default();
            for edit in edits {
                let parts: Vec<&str> = edit.key.split('\\').collect();
                for i in 1..=parts.len() {
                    let name = parts[..i].join("\\");
                    keys.entry(name.to_ascii_lowercase())
                        .or_insert_with(|| (name, RegKey::default()));
                }
                let (_, key) = keys.get_mut(&edit.key.to_ascii_lowercase()).unwrap();
                for (name, value) in &edit.values {
                    key.values.retain(|n, _| !n.eq_ignore_ascii_case(name));
                    key.values.insert(name.clone(), value.clone());
                }
            }
            Ok(())
        }
    }

    impl MemoryGuest {
        /// Adds a hive built from key edits (the root key always exists).
        pub fn with_hive(mut self, hive: &str, edits: &[KeyEdit]) -> MemoryGuest {
            self.hives
                .entry(hive.to_string())
                .or_default()
                .insert(String::new(), (String::new(), RegKey::default()));
            self.registry_merge(hive, edits).unwrap();
            self
        }

        /// A value read back, for assertions.
        pub fn reg_value(
            &self,
            hive: &str,
            key: &str,
            name: &str,
        ) -> Option<crate::registry::RegValue> {
            let (_, k) = self.hives.get(hive)?.get(&key.to_ascii_lowercase())?;
            k.value(name).cloned()
        }
    }
}
