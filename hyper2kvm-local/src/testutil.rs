//! Helpers for this crate's unit tests.

use std::path::{Path, PathBuf};

/// A file in a temporary directory of its own, removed with the directory on drop (also
/// when the test fails).
pub(crate) struct ScratchFile(PathBuf);

impl ScratchFile {
    /// Writes `bytes` to `name` in a new directory named after `tag` and this process.
    pub(crate) fn new(tag: &str, name: &str, bytes: &[u8]) -> ScratchFile {
        let dir = std::env::temp_dir().join(format!("h2k-{tag}-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        ScratchFile(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
