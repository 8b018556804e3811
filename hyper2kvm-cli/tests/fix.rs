//! `hyper2kvm fix`: usage errors and a missing libguestfs fail cleanly, with exit codes. The
//! fix-ups themselves are proven by booting a fixed image (`guest_boot.rs`).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};

use support::{make_raw, s, Fill, Scratch};

fn hyper2kvm(args: &[&str], path: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hyper2kvm"));
    cmd.args(args);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().unwrap()
}

#[test]
fn unknown_fixup_name_is_a_usage_error() {
    let out = hyper2kvm(&["fix", "disk.qcow2", "--skip", "netplna"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // clap lists the names that exist.
    assert!(
        stderr.contains("netplan") && stderr.contains("initramfs"),
        "{stderr}"
    );
}

#[test]
fn missing_libguestfs_is_a_clear_failure() {
    let dir = Scratch::new("fix-no-guestfish");
    let image = dir.path("disk.raw");
    make_raw(&image, 1 << 20, &[(0, 4096, Fill::Text)]);
    // A PATH without guestfish.
    let empty = dir.path("bin");
    std::fs::create_dir(&empty).unwrap();
    let out = hyper2kvm(&["fix", s(&image)], Some(s(&empty)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("libguestfs (guestfish) not found: install libguestfs-tools"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&image).unwrap()[..4096], support_text(4096));
}

#[test]
fn missing_image_fails() {
    let dir = Scratch::new("fix-missing");
    let out = hyper2kvm(&["fix", s(&dir.path("nope.qcow2"))], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nope.qcow2"), "{stderr}");
}

/// The bytes `Fill::Text` writes at offset 0.
fn support_text(n: usize) -> Vec<u8> {
    let dir = Scratch::new("fix-text");
    let path = dir.path("t");
    make_raw(&path, n as u64, &[(0, n as u64, Fill::Text)]);
    std::fs::read(path).unwrap()
}
