//! libguestfs, driven through `guestfish --listen` / `guestfish --remote`.
//!
//! One appliance per image: [`Guestfish::launch`] starts a guestfish server
//! (`guestfish --listen`), adds the image and boots libguestfs' appliance once; every later
//! call is a short `guestfish --remote=PID -- CMD ARGS…` client process talking to it over its
//! Unix socket. Arguments go to guestfish as separate `argv` words, never through a shell.
//!
//! Two details of remote mode shape this module:
//!
//! * The server exits on the first failing command unless the command is prefixed with `-`,
//!   and then the client's exit status no longer says whether it failed. So every command is
//!   sent with `-`, and the server's standard error — where libguestfs prints
//!   `libguestfs: error: …` — goes to a file that is read after each command: anything new
//!   there is the command's error.
//! * File contents move through local temporary files (`download` / `upload`), byte for byte,
//!   so no quoting or encoding can change them; `upload` over an existing file keeps its owner
//!   and mode.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::collections::BTreeMap;

use crate::guestfs::GuestFs;
use crate::registry::{self, KeyEdit, RegKey};
use crate::{Error, ErrorKind, Result};

/// The notice given when libguestfs is not installed.
pub const NOT_INSTALLED: &str = "libguestfs (guestfish) not found: install libguestfs-tools";

/// The image formats libguestfs is told about (never left to guess: guessing a raw image's
/// format is what libguestfs warns against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// qcow2.
    Qcow2,
    /// A VHD (fixed or dynamic), qemu's `vpc`.
    Vpc,
    /// Raw bytes.
    Raw,
}

impl ImageFormat {
    /// Looks at the image's first bytes (qcow2 magic) and last 512 (a VHD footer).
    pub fn detect(path: &Path) -> Result<ImageFormat> {
        let io_err = |e| Error::io(format!("reading {}", path.display()), e);
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        let len = file.metadata().map_err(io_err)?.len();
        if len >= 4 {
            file.read_exact(&mut magic).map_err(io_err)?;
            if &magic == b"QFI\xfb" {
                return Ok(ImageFormat::Qcow2);
            }
        }
        if len >= 512 {
            let mut cookie = [0u8; 8];
            file.seek(SeekFrom::Start(len - 512)).map_err(io_err)?;
            file.read_exact(&mut cookie).map_err(io_err)?;
            if &cookie == b"conectix" {
                return Ok(ImageFormat::Vpc);
            }
        }
        Ok(ImageFormat::Raw)
    }

    /// libguestfs' (qemu's) name for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vpc => "vpc",
            ImageFormat::Raw => "raw",
        }
    }
}

/// Where `guestfish` is on `PATH`, if anywhere.
pub fn find_guestfish() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("guestfish"))
        .find(|p| p.is_file())
}

/// A running guestfish server with one image added and its appliance launched.
pub struct Guestfish {
    program: PathBuf,
    pid: u32,
    image: String,
    scratch: PathBuf,
    stderr_path: PathBuf,
    stderr_seen: u64,
    readonly: bool,
    closed: bool,
    /// Registry hives downloaded for reading and editing with hivex: guest path → host copy.
    hives: BTreeMap<String, PathBuf>,
}

impl Guestfish {
    /// Starts guestfish, adds `image` (read-only if `readonly`) and launches the appliance.
    /// This is the slow step: under software emulation, a minute or more.
    pub fn launch(image: &Path, format: ImageFormat, readonly: bool) -> Result<Guestfish> {
        Guestfish::launch_with(image, format, readonly, &[])
    }

    /// [`Guestfish::launch`] with more drives added read-only after the image (raw: a
    /// virtio-win ISO), so one appliance reads both. They are the last devices
    /// (`list-devices`).
    pub fn launch_with(
        image: &Path,
        format: ImageFormat,
        readonly: bool,
        extra_readonly: &[&Path],
    ) -> Result<Guestfish> {
        let program =
            find_guestfish().ok_or_else(|| Error::new(ErrorKind::ToolMissing, NOT_INSTALLED))?;
        let subject = image.display().to_string();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let scratch = std::env::temp_dir().join(format!(
            "hyper2kvm-guestfish-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
        let stderr_path = scratch.join("server.stderr");
        let stderr = File::create(&stderr_path)
            .map_err(|e| Error::io(format!("creating {}", stderr_path.display()), e))?;
        let mut server = Command::new(&program);
        if let Some((key, value)) = crate::accel::appliance_accel(&program).env() {
            server.env(key, value);
        }
        let out = server
            .arg("--listen")
            .stdin(Stdio::null())
            .stderr(stderr)
            .output()
            .map_err(|e| Error::io("starting guestfish --listen", e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // "GUESTFISH_PID=1234; export GUESTFISH_PID"
        let pid = stdout
            .trim()
            .strip_prefix("GUESTFISH_PID=")
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.parse().ok());
        let Some(pid) = pid.filter(|_| out.status.success()) else {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(Error::new(
                ErrorKind::Guestfs,
                format!(
                    "guestfish --listen did not start ({}): {}",
                    out.status,
                    stdout.trim()
                ),
            )
            .with_subject(subject));
        };
        let mut gf = Guestfish {
            program,
            pid,
            image: subject,
            scratch,
            stderr_path,
            stderr_seen: 0,
            readonly,
            closed: false,
            hives: BTreeMap::new(),
        };
        let image_arg = image
            .to_str()
            .ok_or_else(|| Error::new(ErrorKind::Guestfs, "image path is not UTF-8"))?;
        let readonly_arg = format!("readonly:{readonly}");
        let format_arg = format!("format:{}", format.as_str());
        gf.call(&["add-drive", image_arg, &format_arg, &readonly_arg])?;
        for extra in extra_readonly {
            let extra = extra
                .to_str()
                .ok_or_else(|| Error::new(ErrorKind::Guestfs, "drive path is not UTF-8"))?;
            gf.call(&["add-drive", extra, "format:raw", "readonly:true"])?;
        }
        gf.call(&["run"])?;
        Ok(gf)
    }

    /// Whether the image was added read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Runs one guestfish command and returns its standard output.
    pub fn call(&mut self, args: &[&str]) -> Result<String> {
        let what = || format!("guestfish `{}`", args.join(" "));
        let mut words = vec![format!("-{}", args[0])];
        words.extend(args[1..].iter().map(|a| a.to_string()));
        let out = Command::new(&self.program)
            .arg(format!("--remote={}", self.pid))
            .arg("--")
            .args(&words)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {}", what()), e))?;
        let server_said = self.new_stderr()?;
        if !out.status.success() || !server_said.trim().is_empty() {
            let mut message = server_said.trim().to_string();
            let client = String::from_utf8_lossy(&out.stderr);
            if !client.trim().is_empty() {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                message.push_str(client.trim());
            }
            return Err(
                Error::new(ErrorKind::Guestfs, format!("{} failed: {message}", what()))
                    .with_subject(self.image.clone()),
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's standard error since the last look (its error messages).
    fn new_stderr(&mut self) -> Result<String> {
        let mut file = File::open(&self.stderr_path)
            .map_err(|e| Error::io("reading guestfish's error output", e))?;
        file.seek(SeekFrom::Start(self.stderr_seen))
            .map_err(|e| Error::io("reading guestfish's error output", e))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .map_err(|e| Error::io("reading guestfish's error output", e))?;
        self.stderr_seen += text.len() as u64;
        let text = String::from_utf8_lossy(&text);
        // Warnings are not failures; keep only what says it is an error.
        Ok(text
            .lines()
            .filter(|l| !l.contains("libguestfs: warning:"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// A command's output as lines, blank ones dropped.
    pub fn lines(&mut self, args: &[&str]) -> Result<Vec<String>> {
        Ok(self
            .call(args)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// A `true`/`false` answer.
    pub fn boolean(&mut self, args: &[&str]) -> Result<bool> {
        Ok(self.call(args)?.trim() == "true")
    }

    /// Unmounts everything, flushes, and stops the server and its appliance.
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        let result = self
            .call(&["umount-all"])
            .and_then(|_| self.call(&["shutdown"]))
            .map(drop);
        let _ = self.call(&["exit"]);
        result
    }

    fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// A scratch directory of this session on the host (removed with it).
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.scratch.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    /// Copies a guest file to a host path, byte for byte.
    pub fn download(&mut self, path: &str, local: &Path) -> Result<()> {
        let local = local
            .to_str()
            .ok_or_else(|| Error::new(ErrorKind::Guestfs, "scratch path is not UTF-8"))?;
        self.call(&["download", path, local]).map(drop)
    }

    /// Forgets downloaded hives (after the file system they came from is unmounted, or before
    /// another is mounted at the same place).
    pub fn forget_hives(&mut self) {
        self.hives.clear();
    }

    /// The host copy of a guest hive, downloaded on first use.
    fn hive(&mut self, hive: &str) -> Result<PathBuf> {
        if let Some(local) = self.hives.get(hive) {
            return Ok(local.clone());
        }
        let local = self.scratch_file(&format!("hive-{}", self.hives.len()));
        self.download(hive, &local)?;
        self.hives.insert(hive.to_string(), local.clone());
        Ok(local)
    }
}

/// Runs `hivexsh` on a local hive with a script; `Ok(None)` when it says a key is not found.
fn hivexsh(hive: &Path, script: &str, what: &str) -> Result<Option<String>> {
    let out = Command::new("hivexsh")
        .arg(hive)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(ErrorKind::ToolMissing, HIVEX_NOT_INSTALLED)
            } else {
                Error::io("running hivexsh", e)
            }
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("not found") {
        return Ok(None);
    }
    if !out.status.success() || !stderr.trim().is_empty() {
        return Err(Error::new(
            ErrorKind::Guestfs,
            format!("hivexsh {what} failed: {}", stderr.trim()),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The notice given when hivex's tools are not installed.
pub const HIVEX_NOT_INSTALLED: &str =
    "hivexsh / hivexregedit not found: install libhivex-bin and libwin-hivex-perl";

impl Drop for Guestfish {
    fn drop(&mut self) {
        if !self.closed {
            let _ = Command::new(&self.program)
                .arg(format!("--remote={}", self.pid))
                .args(["--", "exit"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

impl GuestFs for Guestfish {
    fn read(&mut self, path: &str) -> Result<Option<String>> {
        if !self.boolean(&["is-file", path, "followsymlinks:true"])? {
            return Ok(None);
        }
        let local = self.scratch_file("download");
        let local_str = local.to_string_lossy().into_owned();
        self.call(&["download", path, &local_str])?;
        let bytes =
            std::fs::read(&local).map_err(|e| Error::io(format!("reading {local_str}"), e))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn write(&mut self, path: &str, content: &str) -> Result<()> {
        let local = self.scratch_file("upload");
        std::fs::write(&local, content)
            .map_err(|e| Error::io(format!("writing {}", local.display()), e))?;
        if let Some(parent) = Path::new(path).parent().and_then(Path::to_str) {
            if !parent.is_empty() && parent != "/" {
                self.call(&["mkdir-p", parent])?;
            }
        }
        self.call(&["upload", &local.to_string_lossy(), path])?;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        self.call(&["rm-f", path]).map(drop)
    }

    fn list(&mut self, dir: &str) -> Result<Vec<String>> {
        if !self.boolean(&["is-dir", dir, "followsymlinks:true"])? {
            return Ok(Vec::new());
        }
        let mut names = self.lines(&["ls", dir])?;
        names.sort();
        Ok(names)
    }

    fn exists(&mut self, path: &str) -> Result<bool> {
        // `exists` follows symlinks; a dangling link (a disabled unit's target removed) counts.
        Ok(self.boolean(&["exists", path])? || self.boolean(&["is-symlink", path])?)
    }

    fn run(&mut self, command: &str) -> Result<String> {
        self.call(&["sh", command])
    }

    fn upload(&mut self, local: &Path, path: &str) -> Result<()> {
        if let Some(parent) = Path::new(path).parent().and_then(Path::to_str) {
            if !parent.is_empty() && parent != "/" {
                self.call(&["mkdir-p", parent])?;
            }
        }
        self.call(&["upload", &local.to_string_lossy(), path])
            .map(drop)
    }

    fn case_path(&mut self, path: &str) -> Result<String> {
        // case-sensitive-path resolves every component and tolerates only the last one
        // missing: resolve the longest prefix it accepts, keep the rest as given.
        let mut missing: Vec<&str> = Vec::new();
        let mut prefix = path.trim_end_matches('/');
        loop {
            if prefix.is_empty() {
                return Ok(path.to_string());
            }
            if let Ok(found) = self.call(&["case-sensitive-path", prefix]) {
                let mut resolved = found.trim().trim_end_matches('/').to_string();
                for part in missing.iter().rev() {
                    resolved.push('/');
                    resolved.push_str(part);
                }
                return Ok(resolved);
            }
            let (parent, last) = prefix.rsplit_once('/').unwrap_or(("", prefix));
            missing.push(last);
            prefix = parent;
        }
    }

    // hivex, on a host copy of the hive that libguestfs downloaded: guestfish's own
    // `hivex-node-set-value` takes its value as a command-line word, which cannot carry the
    // NUL bytes of UTF-16 strings, so edits go through hivexregedit and an upload instead.
    fn registry_key(&mut self, hive: &str, key: &str) -> Result<Option<RegKey>> {
        let local = self.hive(hive)?;
        let what = format!("{hive} \\{key}");
        let cd = format!("cd \\{key}\n");
        let Some(subkeys) = hivexsh(&local, &format!("{cd}ls\n"), &what)? else {
            return Ok(None);
        };
        let values = hivexsh(&local, &format!("{cd}lsval\n"), &what)?.unwrap_or_default();
        let values = registry::parse_lsval(&values).map_err(|e| {
            Error::new(ErrorKind::Guestfs, format!("reading {what}: {e}"))
                .with_subject(self.image.clone())
        })?;
        Ok(Some(RegKey {
            values,
            subkeys: subkeys
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        }))
    }

    fn registry_merge(&mut self, hive: &str, edits: &[KeyEdit]) -> Result<()> {
        let local = self.hive(hive)?;
        let reg = self.scratch_file("edits.reg");
        std::fs::write(&reg, registry::reg_file(edits))
            .map_err(|e| Error::io(format!("writing {}", reg.display()), e))?;
        let out = Command::new("hivexregedit")
            .arg("--merge")
            .arg(&local)
            .arg(&reg)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::new(ErrorKind::ToolMissing, HIVEX_NOT_INSTALLED)
                } else {
                    Error::io("running hivexregedit", e)
                }
            })?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Guestfs,
                format!(
                    "hivexregedit --merge into {hive} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
            .with_subject(self.image.clone()));
        }
        self.call(&["upload", &local.to_string_lossy(), hive])
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_from_content() {
        let dir = std::env::temp_dir().join(format!("h2k-guest-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let qcow2 = dir.join("a");
        std::fs::write(&qcow2, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(ImageFormat::detect(&qcow2).unwrap(), ImageFormat::Qcow2);
        let vhd = dir.join("b");
        let mut bytes = vec![0u8; 1024];
        bytes[512..520].copy_from_slice(b"conectix");
        std::fs::write(&vhd, &bytes).unwrap();
        assert_eq!(ImageFormat::detect(&vhd).unwrap(), ImageFormat::Vpc);
        let raw = dir.join("c");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        assert_eq!(ImageFormat::detect(&raw).unwrap(), ImageFormat::Raw);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
