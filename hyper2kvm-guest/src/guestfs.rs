//! The seam between fix-ups and a guest's file system: [`GuestFs`].
//!
//! Fix-ups only read files, write files, remove files and run commands inside the guest. The
//! real implementation is [`crate::guestfish::Guestfish`] (libguestfs' appliance, the image's
//! file systems mounted); tests use an in-memory guest. Paths are absolute paths inside the
//! guest.

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
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory guest for unit tests of fix-ups and inspection.

    use std::collections::BTreeMap;

    use super::GuestFs;
    use crate::{Error, ErrorKind, Result};

    /// Files by path; directories exist implicitly. Commands are recorded, and answered from
    /// `failing` (an error) or with empty output.
    #[derive(Debug, Default)]
    pub struct MemoryGuest {
        pub files: BTreeMap<String, String>,
        pub commands: Vec<String>,
        pub failing: Vec<String>,
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
    }
}
