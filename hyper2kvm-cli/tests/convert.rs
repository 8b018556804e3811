//! `hyper2kvm convert` end to end: every image it writes is held to `qemu-img check` and
//! `qemu-img compare` against the source, and every bad input must fail cleanly.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{
    assert_image_matches, assert_image_matches_as, make_raw, make_vhd, make_vhdx, s, Fill, Scratch,
};

const MIB: u64 = 1 << 20;

fn hyper2kvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(args)
        .output()
        .unwrap()
}

fn convert_ok(src: &Path, dst: &Path, extra: &[&str]) -> String {
    let mut args = vec!["convert", s(src), s(dst)];
    args.extend_from_slice(extra);
    let out = hyper2kvm(&args);
    assert!(
        out.status.success(),
        "convert {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a failing convert; checks the exit code, that stderr is one line naming `names`,
/// and that nothing was left under the destination name or as a .part file.
fn convert_fails(dir: &Scratch, src: &Path, dst: &Path, code: i32, names: &[&str]) -> String {
    let before = dir.files();
    let out = hyper2kvm(&["convert", s(src), s(dst)]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected:\n{stderr}"
    );
    for name in names {
        assert!(stderr.contains(name), "{name:?} not in: {stderr}");
    }
    assert_eq!(dir.files(), before, "convert left files behind");
    stderr
}

/// A 96 MiB disk whose data is scattered: text and noise, partial clusters, explicit zeros.
fn scattered(dir: &Scratch) -> std::path::PathBuf {
    let raw = dir.path("scattered.raw");
    make_raw(
        &raw,
        96 * MIB,
        &[
            (0, 4096, Fill::Text),                 // a boot sector's worth
            (MIB + 512, 3000, Fill::Noise(1)),     // straddles a 512-byte boundary
            (10 * MIB, 5 * MIB, Fill::Text),       // compressible run
            (17 * MIB, 2 * MIB, Fill::Zeros),      // written zeros: dropped
            (30 * MIB - 100, 200, Fill::Noise(2)), // crosses a 2 MiB and 64 KiB boundary
            (64 * MIB, 3 * MIB, Fill::Noise(3)),   // incompressible run
            (96 * MIB - 512, 512, Fill::Text),     // the last sector
        ],
    );
    raw
}

#[test]
fn matrix_of_sources_formats_clusters_and_compression() {
    let dir = Scratch::new("matrix");
    let raw = scattered(&dir);
    let fixed = dir.path("fixed.vhd");
    let dynamic = dir.path("dynamic.vhd");
    make_vhd(&raw, &fixed, "fixed");
    make_vhd(&raw, &dynamic, "dynamic");
    let variants: &[&[&str]] = &[
        &[],
        &["--compress", "zstd"],
        &["--compress", "deflate"],
        &["--cluster-size", "512"],
        &["--cluster-size", "4K", "--compress", "zstd"],
        &["--cluster-size", "4K", "--compress", "deflate"],
        &["--cluster-size", "2M"],
        &["--cluster-size", "2M", "--compress", "zstd"],
        &["--concurrency", "1", "--chunk-size", "64K"],
    ];
    // qemu-img rounds a dynamic VHD made without force_size up to its CHS geometry and
    // records that in current_size, so each output is compared with its source as qemu-img
    // reads it, and with the raw original.
    for (src, src_format) in [(&raw, "raw"), (&fixed, "vpc"), (&dynamic, "vpc")] {
        for extra in variants {
            let out = dir.path("out.qcow2");
            convert_ok(src, &out, extra);
            assert_image_matches_as(&out, "qcow2", src, src_format);
            support::qemu_img(&[
                "compare",
                "-q",
                "-f",
                "raw",
                "-F",
                "qcow2",
                s(&raw),
                s(&out),
            ]);
            std::fs::remove_file(&out).unwrap();
        }
        let out = dir.path("out.raw");
        convert_ok(src, &out, &["--format", "raw"]);
        assert_image_matches_as(&out, "raw", src, src_format);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn vhdx_sources_fixed_and_dynamic() {
    let dir = Scratch::new("vhdx");
    let raw = scattered(&dir);
    for (subformat, block) in [("dynamic", "1M"), ("dynamic", "32M"), ("fixed", "8M")] {
        let vhdx = dir.path(&format!("{subformat}-{block}.vhdx"));
        make_vhdx(&raw, &vhdx, subformat, block);
        for extra in [
            &[][..],
            &["--compress", "zstd"],
            &["--input-format", "vhdx"],
        ] {
            let out = dir.path("out.qcow2");
            let summary = convert_ok(&vhdx, &out, extra);
            // qemu-img check is clean and qemu-img compare finds the images identical.
            assert_image_matches_as(&out, "qcow2", &vhdx, "vhdx");
            assert_image_matches(&out, "qcow2", &raw);
            // Only the blocks that hold data are read, not the 96 MiB disk.
            assert!(!summary.contains("read 96"), "{summary}");
            std::fs::remove_file(&out).unwrap();
        }
        let out = dir.path("out.raw");
        convert_ok(&vhdx, &out, &["--format", "raw"]);
        assert_image_matches_as(&out, "raw", &vhdx, "vhdx");
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_file(&vhdx).unwrap();
    }
}

#[test]
fn bad_vhdx_inputs() {
    let dir = Scratch::new("badvhdx");
    let dst = dir.path("out.qcow2");
    // Named .vhdx but not one, and --input-format vhdx on a raw file.
    let fake = dir.path("fake.vhdx");
    make_raw(&fake, MIB, &[(0, MIB, Fill::Text)]);
    convert_fails(
        &dir,
        &fake,
        &dst,
        1,
        &["fake.vhdx", "not a VHDX", "offset 0"],
    );
    let raw = dir.path("d.raw");
    make_raw(&raw, 8 * MIB, &[(0, 2 * MIB, Fill::Noise(4))]);
    let out = hyper2kvm(&["convert", s(&raw), s(&dst), "--input-format", "vhdx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a VHDX"));
    // Both headers damaged.
    let vhdx = dir.path("d.vhdx");
    make_vhdx(&raw, &vhdx, "dynamic", "1M");
    flip_byte(&vhdx, 65536 + 200);
    flip_byte(&vhdx, 131072 + 200);
    let err = convert_fails(
        &dir,
        &vhdx,
        &dst,
        1,
        &["d.vhdx", "bad VHDX header checksum"],
    );
    assert!(
        err.contains("offset 65536") && err.contains("offset 131072"),
        "{err}"
    );
    // Truncated: a block lies past the end.
    make_vhdx(&raw, &vhdx, "dynamic", "1M");
    truncate_by(&vhdx, MIB);
    convert_fails(&dir, &vhdx, &dst, 1, &["d.vhdx", "BAT entry", "truncated"]);
}

#[test]
fn empty_disk_writes_only_metadata() {
    let dir = Scratch::new("empty");
    let raw = dir.path("empty.raw");
    make_raw(&raw, 64 * MIB, &[]);
    let out = dir.path("empty.qcow2");
    let summary = convert_ok(&raw, &out, &[]);
    assert!(summary.contains("read 0 B"), "{summary}");
    assert_image_matches(&out, "qcow2", &raw);
    // qemu-img writes zeros into a VHD's first block; they must not reach the image.
    let vhd = dir.path("empty.vhd");
    make_vhd(&raw, &vhd, "fixed");
    std::fs::remove_file(&out).unwrap();
    convert_ok(&vhd, &out, &["--compress", "zstd"]);
    assert_image_matches(&out, "qcow2", &raw);
    // Header, refcount block and table: three clusters; no L1 cluster holds an L2 table.
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 4 * 65536);
}

#[test]
fn dense_disk_and_odd_size() {
    let dir = Scratch::new("dense");
    // Every byte written, and a size that is not a multiple of any cluster size above 512.
    let size = 24 * MIB + 3 * 512;
    let raw = dir.path("dense.raw");
    make_raw(
        &raw,
        size,
        &[
            (0, 12 * MIB, Fill::Noise(7)),
            (12 * MIB, size - 12 * MIB, Fill::Text),
        ],
    );
    let fixed = dir.path("dense.vhd");
    make_vhd(&raw, &fixed, "fixed");
    for extra in [
        &[][..],
        &["--compress", "zstd"],
        &["--cluster-size", "2M", "--compress", "deflate"],
    ] {
        let out = dir.path("dense.qcow2");
        convert_ok(&fixed, &out, extra);
        assert_image_matches(&out, "qcow2", &raw);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn two_tib_disk_with_a_few_mib_written() {
    let dir = Scratch::new("2tib");
    let raw = dir.path("big.raw");
    let tib = 1u64 << 40;
    make_raw(
        &raw,
        2 * tib,
        &[
            (0, MIB, Fill::Text),
            (tib - 3 * MIB, 2 * MIB, Fill::Noise(9)),
            (2 * tib - MIB, MIB, Fill::Text),
        ],
    );
    let out = dir.path("big.qcow2");
    let summary = convert_ok(&raw, &out, &["--compress", "zstd"]);
    assert!(summary.contains("virtual size 2.00 TiB"), "{summary}");
    assert_image_matches(&out, "qcow2", &raw);
    assert!(std::fs::metadata(&out).unwrap().len() < 16 * MIB);
}

#[test]
fn not_a_vhd() {
    let dir = Scratch::new("notvhd");
    let src = dir.path("disk.vhd");
    make_raw(&src, MIB, &[(0, MIB, Fill::Text)]);
    let dst = dir.path("out.qcow2");
    convert_fails(
        &dir,
        &src,
        &dst,
        1,
        &["disk.vhd", "not a VHD", "--input-format raw"],
    );
}

#[test]
fn bad_footer_checksum() {
    let dir = Scratch::new("checksum");
    let raw = dir.path("d.raw");
    make_raw(&raw, 4 * MIB, &[(0, MIB, Fill::Text)]);
    let vhd = dir.path("d.vhd");
    make_vhd(&raw, &vhd, "fixed");
    let len = std::fs::metadata(&vhd).unwrap().len();
    flip_byte(&vhd, len - 512 + 48 + 5); // inside current_size
    let dst = dir.path("out.qcow2");
    let err = convert_fails(&dir, &vhd, &dst, 1, &["d.vhd", "checksum"]);
    assert!(err.contains(&format!("offset {}", len - 512)), "{err}");
}

#[test]
fn truncated_fixed_and_dynamic_vhds() {
    let dir = Scratch::new("truncated");
    let raw = dir.path("d.raw");
    make_raw(&raw, 8 * MIB, &[(0, 8 * MIB, Fill::Text)]);
    let fixed = dir.path("fixed.vhd");
    make_vhd(&raw, &fixed, "fixed");
    truncate_by(&fixed, MIB);
    let dst = dir.path("out.qcow2");
    convert_fails(&dir, &fixed, &dst, 1, &["fixed.vhd", "truncated"]);

    let dynamic = dir.path("dynamic.vhd");
    make_vhd(&raw, &dynamic, "dynamic");
    truncate_by(&dynamic, 3 * MIB);
    convert_fails(&dir, &dynamic, &dst, 1, &["dynamic.vhd", "truncated"]);
}

#[test]
fn dynamic_vhd_whose_bat_points_past_the_end() {
    let dir = Scratch::new("bat");
    let raw = dir.path("d.raw");
    make_raw(&raw, 8 * MIB, &[(0, MIB, Fill::Text)]);
    let vhd = dir.path("d.vhd");
    make_vhd(&raw, &vhd, "dynamic");
    // The dynamic header follows the footer copy at 512; its table offset is at +16.
    let bytes = std::fs::read(&vhd).unwrap();
    let table = u64::from_be_bytes(bytes[512 + 16..512 + 24].try_into().unwrap());
    let file = std::fs::OpenOptions::new().write(true).open(&vhd).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&0x0100_0000u32.to_be_bytes(), table)
        .unwrap(); // block 0 at 8 GiB
    let dst = dir.path("out.qcow2");
    let err = convert_fails(&dir, &vhd, &dst, 1, &["d.vhd", "BAT entry 0"]);
    assert!(err.contains(&format!("offset {table}")), "{err}");
}

#[test]
fn unwritable_destination() {
    let dir = Scratch::new("unwritable");
    let raw = dir.path("d.raw");
    make_raw(&raw, MIB, &[(0, 4096, Fill::Text)]);
    let dst = dir.path("missing-dir/out.qcow2");
    convert_fails(
        &dir,
        &raw,
        &dst,
        1,
        // The lock is the first file a conversion creates.
        &["missing-dir/out.qcow2.lock", "cannot create"],
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = Scratch::new("usage");
    let raw = dir.path("d.raw");
    make_raw(&raw, MIB, &[]);
    let dst = dir.path("out.qcow2");
    let out = hyper2kvm(&["convert", s(&raw), s(&dst), "--cluster-size", "3000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
    let out = hyper2kvm(&[
        "convert",
        s(&raw),
        s(&dst),
        "--format",
        "raw",
        "--compress",
        "zstd",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Writing over the source is a usage error (exit 2 since the trust issue).
    convert_fails(&dir, &raw, &raw, 2, &["is the destination too"]);
    assert_eq!(dir.files(), vec!["d.raw"]);
    // A URL is always a VHD page blob: another --input-format is a usage error, said at once
    // (one line, no bar or wait line first), with no request made (port 1 is closed).
    for format in ["raw", "vhdx", "vmdk"] {
        let url = "https://127.0.0.1:1/c/b?sv=1&sig=S3CR3T";
        let out = hyper2kvm(&["convert", url, s(&dst), "--input-format", format]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{format}: {stderr}");
        assert!(
            stderr.contains(&format!("--input-format {format}")),
            "{stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("S3CR3T"), "{stderr}");
    }
    assert_eq!(dir.files(), vec!["d.raw"]);
}

#[test]
fn disk_full_leaves_nothing_behind() {
    let dir = Scratch::new("enospc");
    let mnt = dir.path("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs", s(&mnt)])
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("skipped: mounting a 2 MiB tmpfs needs root (CI runs as root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let raw = dir.path("d.raw");
    make_raw(&raw, 16 * MIB, &[(0, 8 * MIB, Fill::Noise(5))]);
    let dst = mnt.join("out.qcow2");
    let out = hyper2kvm(&["convert", s(&raw), s(&dst)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("out.qcow2.part") && stderr.contains("No space left"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "files left on the full disk"
    );
}

#[test]
fn interrupted_conversion_removes_its_part_file() {
    let dir = Scratch::new("sigint");
    let raw = dir.path("d.raw");
    // Slow on purpose: 512-byte clusters, deflate, 256 MiB of data.
    make_raw(&raw, 256 * MIB, &[(0, 256 * MIB, Fill::Text)]);
    let dst = dir.path("out.qcow2");
    let part = dir.path("out.qcow2.part");
    let child = Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args([
            "convert",
            s(&raw),
            s(&dst),
            "--cluster-size",
            "512",
            "--compress",
            "deflate",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !part.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no .part file appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!part.exists() && !dst.exists(), "{:?}", dir.files());
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    file.write_all_at(&b, offset).unwrap();
}

fn truncate_by(path: &Path, bytes: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - bytes).unwrap();
}

#[test]
fn kill_9_at_several_points_then_resume_gives_the_same_image() {
    let dir = Scratch::new("kill9");
    let raw = dir.path("d.raw");
    make_raw(
        &raw,
        256 * MIB,
        &[
            (0, 96 * MIB, Fill::Text),
            (128 * MIB, 96 * MIB, Fill::Noise(4)),
        ],
    );
    let vhd = dir.path("d.vhd");
    make_vhd(&raw, &vhd, "fixed");
    std::fs::remove_file(&raw).unwrap();
    let dst = dir.path("out.qcow2");
    let journal = dir.path("out.qcow2.part.journal");
    // zstd's slowest level: slow enough to be killed mid-way several times.
    let args = [
        "convert",
        s(&vhd),
        s(&dst),
        "--resume",
        "--checkpoint-every",
        "2M",
        "--compress",
        "zstd",
        "--compress-level",
        "19",
    ];
    for (round, extra_ms) in [0u64, 150, 400].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let before = std::fs::metadata(&journal)
            .ok()
            .and_then(|m| m.modified().ok());
        // Wait for this run's first checkpoint, then a little more, then kill it hard.
        loop {
            let now = std::fs::metadata(&journal)
                .ok()
                .and_then(|m| m.modified().ok());
            if now.is_some() && now != before {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: finished ({status}) before it could be killed");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no checkpoint"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(extra_ms));
        child.kill().unwrap(); // SIGKILL: no cleanup code runs
        child.wait().unwrap();
        assert!(
            !dst.exists(),
            "round {round}: a killed run published the image"
        );
    }
    let summary = convert_ok(&vhd, &dst, &args[3..]);
    assert!(summary.contains("resumed:"), "{summary}");
    assert_image_matches_as(&dst, "qcow2", &vhd, "vpc");
    assert_eq!(dir.files(), vec!["d.vhd", "out.qcow2"]);
}

// ---- The "trust" issue: locks, safe files, secrets. ----

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `hyper2kvm convert SRC DST`, killing it if it is still running after `limit` (a hang
/// is the bug some of these tests are about).
fn convert_within(src: &str, dst: &Path, limit: std::time::Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(["convert", src, s(dst)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill of the child we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("convert {src} still running after {limit:?}");
        }
    }
}

/// Regression (trust issue): a second conversion to the same destination fails at once,
/// naming the holder, and leaves the holder's files alone; a dead holder's lock is taken over.
#[test]
fn trust_a_locked_destination_is_refused_naming_the_holder() {
    let dir = Scratch::new("lock");
    let raw = dir.path("d.raw");
    make_raw(&raw, 4 * MIB, &[(0, MIB, Fill::Noise(7))]);
    let dst = dir.path("out.qcow2");
    let lock = dir.path("out.qcow2.lock");
    // A live holder on this host: this test process.
    let live = format!(
        r#"{{"host":"{}","pid":{},"run_id":"convert-holder","what":"converting","started":{now},"heartbeat":{now}}}"#,
        host_name(),
        std::process::id(),
        now = now_secs()
    );
    std::fs::write(&lock, &live).unwrap();
    std::fs::write(dir.path("out.qcow2.part"), "the holder's partial image").unwrap();
    let out = convert_within(s(&raw), &dst, std::time::Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("convert-holder")
            && stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(!dst.exists());
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), live);
    assert_eq!(
        std::fs::read_to_string(dir.path("out.qcow2.part")).unwrap(),
        "the holder's partial image"
    );
    // A holder that is gone (no such process on this host): taken over.
    let dead = live.replace(
        &format!("\"pid\":{}", std::process::id()),
        "\"pid\":2147483646",
    );
    std::fs::write(&lock, dead).unwrap();
    convert_ok(&raw, &dst, &[]);
    assert_image_matches(&dst, "qcow2", &raw);
    assert!(!lock.exists(), "the lock is removed after the conversion");
}

/// Regression (trust issue): two conversions to one destination at once: one writes it, the
/// other fails naming it; the image is the winner's, whole.
#[test]
fn trust_two_concurrent_converts_to_one_destination() {
    let dir = Scratch::new("lock2");
    let a = dir.path("a.raw");
    let b = dir.path("b.raw");
    make_raw(&a, 256 * MIB, &[(0, 160 * MIB, Fill::Noise(1))]);
    make_raw(&b, 256 * MIB, &[(0, 160 * MIB, Fill::Noise(2))]);
    let dst = dir.path("out.qcow2");
    let spawn = |src: &Path| {
        Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
            .args(["convert", s(src), s(&dst), "--concurrency", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&a);
    // The first holds the lock once its lock file exists.
    let started = std::time::Instant::now();
    while !dir.path("out.qcow2.lock").exists() {
        assert!(
            started.elapsed().as_secs() < 30,
            "the first convert never locked"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = spawn(&b).wait_with_output().unwrap();
    let first = first.wait_with_output().unwrap();
    let first_err = String::from_utf8_lossy(&first.stderr);
    let second_err = String::from_utf8_lossy(&second.stderr);
    if first.status.success() && !second.status.success() {
        assert_eq!(second.status.code(), Some(1), "{second_err}");
        assert!(second_err.contains("locked by"), "{second_err}");
        assert_image_matches(&dst, "qcow2", &a);
    } else {
        // The first finished before the second started: both succeeded in turn.
        assert!(
            first.status.success() && second.status.success(),
            "{first_err}\n{second_err}"
        );
        assert_image_matches(&dst, "qcow2", &b);
    }
}

/// Regression (trust issue): character devices and FIFOs are refused up front, a FIFO
/// without hanging; a directory destination is refused before any work.
#[test]
fn trust_devices_fifos_and_directories_are_refused() {
    let dir = Scratch::new("devs");
    let dst = dir.path("out.qcow2");
    for dev in ["/dev/zero", "/dev/urandom"] {
        let out = convert_within(dev, &dst, std::time::Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dev}: {stderr}");
        assert!(stderr.contains("character device"), "{stderr}");
    }
    let fifo = dir.path("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = convert_within(s(&fifo), &dst, std::time::Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");
    assert!(!dst.exists());

    let raw = dir.path("d.raw");
    make_raw(&raw, MIB, &[(0, 4096, Fill::Text)]);
    std::fs::create_dir(dir.path("outdir")).unwrap();
    let out = convert_within(
        s(&raw),
        &dir.path("outdir"),
        std::time::Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a directory"), "{stderr}");
    assert!(!dir.path("outdir.part").exists() && !dir.path("outdir.lock").exists());

    // A FIFO or device as DST: the final rename would have replaced the node with an image
    // (`convert x /dev/full` as root did). A device node of our own, never /dev's.
    let mut nodes = vec![(fifo.clone(), "FIFO")];
    let full = dir.path("full");
    let c = std::ffi::CString::new(s(&full)).unwrap();
    // SAFETY: mknod with a valid path; as /dev/full (char 1:7). Needs root: skipped otherwise.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 7)) } == 0 {
        nodes.push((full, "character device"));
    }
    for (node, kind) in nodes {
        let out = convert_within(s(&raw), &node, std::time::Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("is a {kind}")), "{stderr}");
        let t = std::fs::symlink_metadata(&node).unwrap().file_type();
        use std::os::unix::fs::FileTypeExt;
        assert!(
            t.is_fifo() || t.is_char_device(),
            "{} was replaced",
            node.display()
        );
    }
}

/// Regression (trust issue): a block device is read with its real size (BLKGETSIZE64), not
/// as a 0-byte file. Needs a loop device (root and /dev/loop-control); skipped otherwise.
#[test]
fn trust_block_device_is_read_whole() {
    let dir = Scratch::new("blk");
    let raw = dir.path("d.raw");
    make_raw(
        &raw,
        8 * MIB,
        &[(0, MIB, Fill::Noise(3)), (7 * MIB, MIB, Fill::Text)],
    );
    let Ok(out) = Command::new("losetup")
        .args(["-f", "--show", s(&raw)])
        .output()
    else {
        eprintln!("skipped: no losetup");
        return;
    };
    if !out.status.success() {
        eprintln!("skipped: losetup: {}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    let dst = dir.path("out.qcow2");
    let out = convert_within(&dev, &dst, std::time::Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(support::virtual_size(&dst, "qcow2"), 8 * MIB);
    assert_image_matches(&dst, "qcow2", &raw);
}

/// Regression (trust issue): `convert X.part X` would truncate its own source; a `DST.part`
/// that is a symlink must not be followed.
#[test]
fn trust_source_is_never_overwritten_and_symlinks_are_not_followed() {
    let dir = Scratch::new("same");
    let src = dir.path("x.part");
    make_raw(&src, 4 * MIB, &[(0, MIB, Fill::Noise(5))]);
    let before = std::fs::read(&src).unwrap();
    let out = convert_within(s(&src), &dir.path("x"), std::time::Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("destroy the source"), "{stderr}");
    assert_eq!(
        std::fs::read(&src).unwrap(),
        before,
        "the source was changed"
    );

    let raw = dir.path("d.raw");
    make_raw(&raw, 4 * MIB, &[(0, MIB, Fill::Text)]);
    let victim = dir.path("victim");
    std::fs::write(&victim, "do not touch").unwrap();
    let dst = dir.path("out.qcow2");
    std::os::unix::fs::symlink(&victim, dir.path("out.qcow2.part")).unwrap();
    convert_ok(&raw, &dst, &[]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
    assert_image_matches(&dst, "qcow2", &raw);
}

/// Regression (trust issue): a dynamic VHD header claiming 2^62 bytes and 2^31 BAT entries of
/// 2 GiB blocks in an 8 KiB file: a clear error, exit 1, no allocation driven by the header.
#[test]
fn trust_header_driven_sizes_are_bounded_by_the_file() {
    fn checksum(b: &[u8]) -> u32 {
        !b.iter()
            .map(|&x| u32::from(x))
            .fold(0u32, u32::wrapping_add)
    }
    let mut footer = vec![0u8; 512];
    footer[0..8].copy_from_slice(b"conectix");
    footer[8..12].copy_from_slice(&2u32.to_be_bytes());
    footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    footer[16..24].copy_from_slice(&512u64.to_be_bytes());
    footer[40..48].copy_from_slice(&(1u64 << 62).to_be_bytes());
    footer[48..56].copy_from_slice(&(1u64 << 62).to_be_bytes());
    footer[56..60].copy_from_slice(&0xffff_10ffu32.to_be_bytes());
    footer[60..64].copy_from_slice(&3u32.to_be_bytes());
    let c = checksum(&footer);
    footer[64..68].copy_from_slice(&c.to_be_bytes());
    let mut header = vec![0u8; 1024];
    header[0..8].copy_from_slice(b"cxsparse");
    header[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    header[16..24].copy_from_slice(&1536u64.to_be_bytes());
    header[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    header[28..32].copy_from_slice(&(1u32 << 31).to_be_bytes());
    header[32..36].copy_from_slice(&(1u32 << 31).to_be_bytes());
    let c = checksum(&header);
    header[36..40].copy_from_slice(&c.to_be_bytes());
    let mut file = footer.clone();
    file.extend_from_slice(&header);
    file.resize(8192 - 512, 0xff);
    file.extend_from_slice(&footer);
    let dir = Scratch::new("huge");
    let vhd = dir.path("huge.vhd");
    std::fs::write(&vhd, file).unwrap();
    let err = convert_fails(&dir, &vhd, &dir.path("out.qcow2"), 1, &["huge.vhd"]);
    assert!(err.contains("past the end of the file"), "{err}");
}

/// Regression (trust issue): a SAS URL with a typo was printed whole. Whatever the shape, the
/// signature never reaches the output.
#[test]
fn trust_sas_typos_never_print_the_signature() {
    // A server that answers 404 to everything: a well-formed URL fails fast, after a request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let dir = Scratch::new("sas");
    let dst = dir.path("out.qcow2");
    let typos = [
        format!("HTTPS://127.0.0.1:{port}/c/b?sv=1&sig=S3CR3TSIG1"),
        "https//md-x.blob.core.windows.net/c/b?sv=1&sig=S3CR3TSIG2".to_string(),
        "ftp://md-x.blob.core.windows.net/c/b?sv=1&sig=S3CR3TSIG3".to_string(),
        format!("http://127.0.0.1:{port}/c/b?x=1;sig=S3CR3TSIG4"),
        format!("http://127.0.0.1:{port}/c/b?sig%3DS3CR3TSIG5%2B%3D"),
    ];
    // In parallel: a URL the client retries takes a while to give up.
    let handles: Vec<_> = typos
        .into_iter()
        .map(|url| {
            let dst = dst.clone();
            std::thread::spawn(move || {
                (
                    convert_within(&url, &dst, std::time::Duration::from_secs(240)),
                    url,
                )
            })
        })
        .collect();
    for h in handles {
        let (out, url) = h.join().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(matches!(out.status.code(), Some(1 | 2)), "{url}: {text}");
        assert!(
            !text.contains("S3CR3TSIG"),
            "{url}: the signature leaked: {text}"
        );
    }
}

/// Regression: a SAS URL that clap could not place (no `convert`, one argument too many, or
/// given as an option's value) came back whole in clap's usage error.
#[test]
fn usage_errors_never_print_the_signature() {
    let url = "https://md-x.blob.core.windows.net/c/b?sv=1&sig=S3CR3TSIG";
    let cases: [&[&str]; 4] = [
        &[url, "out.qcow2"],
        &["convert", "a.vhd", "b.qcow2", url],
        &["convert", "--input-format", url, "a.vhd", "b.qcow2"],
        &["convert", "--compress", url, "a.vhd", "b.qcow2"],
    ];
    for args in cases {
        let out = hyper2kvm(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("S3CR3TSIG")
                && !String::from_utf8_lossy(&out.stdout).contains("S3CR3TSIG"),
            "{args:?}: the signature leaked: {stderr}"
        );
        assert!(stderr.contains("sig=REDACTED"), "{args:?}: {stderr}");
    }
    // --help and --version still print on stdout and exit 0.
    for flag in ["--help", "--version"] {
        let out = hyper2kvm(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(!out.stdout.is_empty(), "{flag}");
    }
}
