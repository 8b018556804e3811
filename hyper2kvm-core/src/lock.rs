//! Lock files: one writer per output, across processes and hosts sharing a file system.
//!
//! A lock is a small JSON file created with `O_CREAT | O_EXCL | O_NOFOLLOW` (so exactly one
//! process creates it, and never through a symlink):
//!
//! ```json
//! { "host": "build-7", "pid": 4242, "run_id": "h2k-20261126t083500z-1a2b",
//!   "what": "convert disk.qcow2", "started": 1795250100, "heartbeat": 1795250160 }
//! ```
//!
//! `started` and `heartbeat` are seconds since the Unix epoch. While the lock is held, a
//! thread rewrites the file every [`HEARTBEAT_EVERY`] with a fresh `heartbeat` (through a
//! temporary file and a rename, so a reader never sees half a file). A lock is **stale**, and
//! taken over with a warning, when its heartbeat is older than [`STALE_AFTER`] (the holder
//! died, or hangs), or when it was taken on this host by a process that no longer exists
//! (`kill -9`, a crash). A file that cannot be parsed counts as stale once its modification
//! time is older than [`STALE_AFTER`]. Taking over goes through `NAME.takeover`, itself
//! created with `O_EXCL`, so two processes cannot both take over the same stale lock.
//!
//! The lock is removed when the [`LockFile`] is dropped (on success, on error, and when a
//! cancelled future drops it on Ctrl-C), but only if the file is still ours.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// How often a held lock's heartbeat is refreshed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

/// A lock whose heartbeat is older than this is stale: its holder is gone or hung.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// What a lock file says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The host name of the holder.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its run id.
    pub run_id: String,
    /// What it locked it for.
    #[serde(default)]
    pub what: String,
    /// When it took the lock, seconds since the Unix epoch.
    pub started: u64,
    /// When it last said it is alive, seconds since the Unix epoch.
    pub heartbeat: u64,
    /// The hyper2kvm version of the holder (absent in locks of older versions).
    #[serde(default)]
    pub tool_version: String,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = now_secs().saturating_sub(self.heartbeat);
        write!(
            f,
            "run {} (pid {} on {}, {}; last heartbeat {age} s ago)",
            self.run_id,
            self.pid,
            self.host,
            if self.what.is_empty() {
                "no purpose given"
            } else {
                &self.what
            }
        )
    }
}

impl LockInfo {
    /// Whether this lock's holder is gone: no heartbeat for [`STALE_AFTER`], or a process of
    /// this host that no longer exists.
    pub fn is_stale(&self) -> bool {
        if now_secs().saturating_sub(self.heartbeat) > STALE_AFTER.as_secs() {
            return true;
        }
        self.host == host_name() && !process_exists(self.pid)
    }
}

/// A held lock; dropping it stops the heartbeat and removes the file.
#[derive(Debug)]
#[must_use = "the lock is released when dropped"]
pub struct LockFile {
    path: PathBuf,
    info: LockInfo,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
    /// Set when a stale lock was taken over: what it said.
    taken_over: Option<String>,
}

impl LockFile {
    /// Takes the lock at `path` for run `run_id` doing `what`. A lock held by someone else
    /// is an error of kind [`ErrorKind::Conflict`] naming the holder; a stale one is taken
    /// over (see [`LockFile::taken_over`]).
    pub fn acquire(path: &Path, run_id: &str, what: &str) -> Result<LockFile> {
        let now = now_secs();
        let info = LockInfo {
            host: host_name(),
            pid: std::process::id(),
            run_id: run_id.to_string(),
            what: what.to_string(),
            started: now,
            heartbeat: now,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let mut taken_over = None;
        // A few rounds: a takeover may race with another process's.
        for _ in 0..4 {
            match create_exclusive(path) {
                Ok(mut file) => {
                    let mut bytes = serde_json::to_vec(&info)
                        .map_err(io::Error::other)
                        .map_err(|e| Error::io("cannot write the lock file", e).with_path(path))?;
                    bytes.push(b'\n');
                    file.write_all(&bytes)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| Error::io("cannot write the lock file", e).with_path(path))?;
                    let (stop, heartbeat) = spawn_heartbeat(path.to_owned(), info.clone());
                    return Ok(LockFile {
                        path: path.to_owned(),
                        info,
                        stop: Some(stop),
                        heartbeat,
                        taken_over,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::io("cannot create the lock file", e).with_path(path));
                }
            }
            let (seen, holder) = match read_lock(path) {
                Ok(x) => x,
                // Released between our create and our read: try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("cannot read the lock file", e).with_path(path)),
            };
            let stale = match &holder {
                Some(h) => h.is_stale(),
                None => file_age(path).is_some_and(|age| age > STALE_AFTER),
            };
            if !stale {
                return Err(held(path, holder.as_ref()));
            }
            if take_over(path, &seen)
                .map_err(|e| Error::io("cannot take over a stale lock", e).with_path(path))?
            {
                taken_over = Some(match &holder {
                    Some(h) => h.to_string(),
                    None => "an unreadable lock file".to_string(),
                });
            }
        }
        let holder = read_lock(path).ok().and_then(|(_, h)| h);
        Err(held(path, holder.as_ref()))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What this lock says about us.
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// When a stale lock was taken over to get this one: its holder, to warn about.
    pub fn taken_over(&self) -> Option<&str> {
        self.taken_over.as_deref()
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // Only ours: a holder that hung past STALE_AFTER may have been replaced.
        if let Ok((_, Some(h))) = read_lock(&self.path) {
            if same_holder(&h, &self.info) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The error for a lock someone else holds.
fn held(path: &Path, holder: Option<&LockInfo>) -> Error {
    let who = match holder {
        Some(h) => h.to_string(),
        None => "another process (its lock file cannot be read yet)".to_string(),
    };
    Error::new(
        ErrorKind::Conflict,
        format!(
            "locked by {who}; wait for it to finish, or if it is gone, the lock is taken over once its heartbeat is {} s old",
            STALE_AFTER.as_secs()
        ),
    )
    .with_path(path)
}

fn same_holder(a: &LockInfo, b: &LockInfo) -> bool {
    a.host == b.host && a.pid == b.pid && a.run_id == b.run_id && a.started == b.started
}

/// Removes the stale lock at `path` if it still holds `seen`; serialised through
/// `path.takeover` so that two processes never both remove a lock, one of them a fresh one.
fn take_over(path: &Path, seen: &[u8]) -> io::Result<bool> {
    let mut guard = path.as_os_str().to_owned();
    guard.push(".takeover");
    let guard = PathBuf::from(guard);
    match create_exclusive(&guard) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A takeover that died half-way leaves its guard: old guards are cleared.
            if file_age(&guard).is_some_and(|age| age > Duration::from_secs(30)) {
                let _ = std::fs::remove_file(&guard);
            }
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    let outcome = match read_lock(path) {
        Ok((now, _)) if now == seen => std::fs::remove_file(path).map(|()| true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&guard);
    outcome
}

/// The lock file's bytes, and what they say if they parse.
fn read_lock(path: &Path) -> io::Result<(Vec<u8>, Option<LockInfo>)> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut bytes = Vec::new();
    Read::by_ref(&mut f)
        .take(64 << 10)
        .read_to_end(&mut bytes)?;
    let info = serde_json::from_slice(&bytes).ok();
    Ok((bytes, info))
}

/// Creates `path`, failing if anything (a file, a symlink) is there already.
fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
}

fn file_age(path: &Path) -> Option<Duration> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(m.mtime()).ok()?);
    SystemTime::now().duration_since(mtime).ok()
}

/// Refreshes the heartbeat until told to stop (or until the lock is no longer ours).
fn spawn_heartbeat(path: PathBuf, info: LockInfo) -> (mpsc::Sender<()>, Option<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("hyper2kvm-lock".into())
        .spawn(move || {
            let mut info = info;
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(HEARTBEAT_EVERY) {
                match read_lock(&path) {
                    Ok((_, Some(h))) if same_holder(&h, &info) => {}
                    _ => return, // taken over or removed: not ours to refresh
                }
                info.heartbeat = now_secs();
                let _ = rewrite(&path, &info);
            }
        })
        .ok();
    (tx, handle)
}

/// Replaces the lock file's content atomically (temporary file, rename).
fn rewrite(path: &Path, info: &LockInfo) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = create_exclusive(&tmp)?;
    let mut bytes = serde_json::to_vec(info).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let written = f
        .write_all(&bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        // A full disk must not collect empty temporary files every heartbeat.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This host's name (`gethostname`), or `localhost`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn second_holder_is_refused_and_named() {
        let dir = TempDir::new("lock");
        let path = dir.path().join("x.lock");
        let held = LockFile::acquire(&path, "run-a", "convert x").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let info: LockInfo = serde_json::from_str(&text).unwrap();
        assert_eq!(info.run_id, "run-a");
        assert_eq!(info.pid, std::process::id());
        let err = LockFile::acquire(&path, "run-b", "convert x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("run-a"), "{err}");
        drop(held);
        assert!(!path.exists(), "released on drop");
        let again = LockFile::acquire(&path, "run-b", "convert x").unwrap();
        assert!(again.taken_over().is_none());
    }

    #[test]
    fn stale_locks_are_taken_over() {
        let dir = TempDir::new("lock-stale");
        let path = dir.path().join("x.lock");
        // A dead process of this host.
        let dead = LockInfo {
            host: host_name(),
            pid: i32::MAX as u32,
            run_id: "dead".into(),
            what: String::new(),
            started: now_secs(),
            heartbeat: now_secs(),
            tool_version: String::new(),
        };
        std::fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
        let l = LockFile::acquire(&path, "run-c", "").unwrap();
        assert!(l.taken_over().unwrap().contains("dead"));
        drop(l);
        // Another host's lock with an old heartbeat.
        let old = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            heartbeat: now_secs() - STALE_AFTER.as_secs() - 5,
            ..dead.clone()
        };
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(LockFile::acquire(&path, "run-d", "").is_ok());
        // Another host's fresh lock is respected, whatever its pid.
        let fresh = LockInfo {
            host: "elsewhere".into(),
            pid: i32::MAX as u32,
            ..dead
        };
        std::fs::write(&path, serde_json::to_vec(&fresh).unwrap()).unwrap();
        assert!(LockFile::acquire(&path, "run-e", "").is_err());
    }

    #[test]
    fn a_symlink_is_not_a_lock_we_write_through() {
        let dir = TempDir::new("lock-link");
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        // Unparseable and young: held, never followed.
        assert!(LockFile::acquire(&path, "r", "").is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
