//! Helpers shared by the end-to-end tests: scratch directories, disk images with known
//! content, and `qemu-img` as the oracle.
//!
//! Included by the root package's tests (`mod support;`) and by hyper2kvm-cli's binary tests
//! (`#[path = "../../tests/support/mod.rs"]`), so both hold images to the same checks.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("h2k-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// Names of the files in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // `H2K_KEEP=1` keeps it, to look at what a guest test left.
        if std::env::var("H2K_KEEP").as_deref() != Ok("1") {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `bash SCRIPT DIR` once per version of the script (the first 16 hex digits of its
/// SHA-256 name the folder under `$H2K_GUEST_CACHE`, else `~/.cache/hyper2kvm-guest-images`)
/// unless the folder already holds `files`; returns the folder. The guest tests' images.
pub fn cached_images(script: &Path, files: &[&str]) -> Result<PathBuf, String> {
    let out = Command::new("sha256sum")
        .arg(script)
        .output()
        .map_err(|e| e.to_string())?;
    let hash: String = String::from_utf8_lossy(&out.stdout)
        .chars()
        .take(16)
        .collect();
    let cache = match std::env::var_os("H2K_GUEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?)
            .join(".cache/hyper2kvm-guest-images"),
    };
    let dir = cache.join(&hash);
    if files.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    let tmp = cache.join(format!("{hash}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(script)
        .arg(&tmp)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    eprintln!(
        "built {} in {} s:\n{}",
        script.display(),
        started.elapsed().as_secs(),
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// What to write into an extent of a test disk.
#[derive(Clone, Copy, Debug)]
pub enum Fill {
    /// Incompressible bytes from a seed.
    Noise(u64),
    /// Repeating text: compresses well, like file-system data.
    Text,
    /// Explicit zeros: allocated in the file, but all-zero clusters must still be dropped.
    Zeros,
}

/// Writes a sparse raw disk of `size` bytes with `extents` (offset, length, fill).
pub fn make_raw(path: &Path, size: u64, extents: &[(u64, u64, Fill)]) {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap();
    file.set_len(size).unwrap();
    for &(offset, len, fill) in extents {
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(1 << 20);
            let buf = fill_bytes(fill, offset + pos, n as usize);
            file.write_all_at(&buf, offset + pos).unwrap();
            pos += n;
        }
    }
    file.sync_all().unwrap();
}

fn fill_bytes(fill: Fill, at: u64, n: usize) -> Vec<u8> {
    match fill {
        Fill::Zeros => vec![0; n],
        Fill::Text => {
            let text = b"The quick brown fox migrates virtual machines to KVM. 0123456789\n";
            (0..n)
                .map(|i| text[((at as usize) + i) % text.len()])
                .collect()
        }
        Fill::Noise(seed) => {
            // splitmix64 keyed by position: any byte is reproducible without the others.
            (0..n)
                .map(|i| {
                    let mut z = seed ^ (at + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    (z ^ (z >> 31)) as u8
                })
                .collect()
        }
    }
}

/// Runs `qemu-img` with `args`; panics with its output unless it succeeds.
pub fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img must be installed (Debian qemu-utils); .ci/run installs it");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Turns a raw disk into a VHDX with qemu-img: `subformat` is `fixed` or `dynamic`,
/// `block_size` e.g. `1M` or `32M`.
pub fn make_vhdx(raw: &Path, vhdx: &Path, subformat: &str, block_size: &str) {
    let opts = format!("subformat={subformat},block_size={block_size},log_size=1M");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        &opts,
        s(raw),
        s(vhdx),
    ]);
}

/// Turns a raw disk into a VHD with qemu-img: `subformat` is `fixed` or `dynamic`.
pub fn make_vhd(raw: &Path, vhd: &Path, subformat: &str) {
    let opts = if subformat == "fixed" {
        "subformat=fixed,force_size=on".to_string()
    } else {
        format!("subformat={subformat}")
    };
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        &opts,
        s(raw),
        s(vhd),
    ]);
}

/// Asserts that `image` (qcow2 or raw) passes `qemu-img check` (qcow2 only) and reads back
/// identical to the raw disk `reference`, with the same virtual size.
pub fn assert_image_matches(image: &Path, format: &str, reference: &Path) {
    assert_image_matches_as(image, format, reference, "raw");
}

/// [`assert_image_matches`] against a reference in `ref_format` (`raw`, `vpc` or `vhdx`),
/// read by qemu-img's own driver.
pub fn assert_image_matches_as(image: &Path, format: &str, reference: &Path, ref_format: &str) {
    if format == "qcow2" {
        // Exit 0: no corruption and no leaked clusters.
        let report = qemu_img(&["check", "-f", "qcow2", s(image)]);
        assert!(report.contains("No errors were found"), "{report}");
    }
    let want = virtual_size(reference, ref_format);
    assert_eq!(
        virtual_size(image, format),
        want,
        "virtual size of {}",
        image.display()
    );
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        ref_format,
        "-F",
        format,
        s(reference),
        s(image),
    ]);
}

/// The guest size an image declares: the qcow2 header's `size` field, a VHD footer's
/// `current_size`, a VHDX's as `qemu-img info` reads it, or a raw file's length.
pub fn virtual_size(image: &Path, format: &str) -> u64 {
    if format == "vhdx" {
        // The first line of this form is the image's own: "virtual size: 96 MiB (100663296 bytes)".
        let info = qemu_img(&["info", "-f", "vhdx", s(image)]);
        let line = info
            .lines()
            .find(|l| l.starts_with("virtual size:"))
            .expect("virtual size in qemu-img info");
        let bytes = line.split('(').nth(1).and_then(|t| t.split(' ').next());
        return bytes.expect("(N bytes)").parse().unwrap();
    }
    let file = std::fs::File::open(image).unwrap();
    let len = file.metadata().unwrap().len();
    let be64_at = |offset: u64| {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, offset).unwrap();
        u64::from_be_bytes(b)
    };
    match format {
        "qcow2" => be64_at(24),
        "vpc" => be64_at(len - 512 + 48),
        _ => len,
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Output bytes as text, for assertion messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A JSON file, parsed; panics naming the file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// Every file under `dir`, recursively (none when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Waits (off the runtime) for `cond`, checking every 20 ms; panics after `limit`, which
/// is only a guard against a hang, never what a test measures.
pub async fn wait_for(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits for a child process off the async runtime.
pub async fn wait_child(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// Runs `bin` with `args` off the async runtime (the simulator a test started runs on it)
/// and returns what it printed and how it ended.
pub async fn output_of(bin: &str, args: Vec<String>) -> std::process::Output {
    let bin = bin.to_string();
    tokio::task::spawn_blocking(move || Command::new(bin).args(&args).output().unwrap())
        .await
        .unwrap()
}

/// `bin -c CFG ARGS...`, as [`output_of`].
pub async fn run_config(bin: &str, cfg: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["-c".to_string(), s(cfg).to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    output_of(bin, all).await
}
