//! `hyper2kvm convert URL` against Microsoft's Azurite emulator: a fixed VHD uploaded as a
//! sparse page blob with the real Put Page API, read back through a SAS URL.
//!
//! `.ci/run` installs and starts Azurite and sets `H2K_AZURITE_BLOB` (the blob endpoint) and
//! `H2K_NODE_PATH` (where `@azure/storage-blob` is installed). Without them the tests say so
//! and return.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{assert_image_matches_as, make_raw, make_vhd, s, Fill, Scratch};

const MIB: u64 = 1 << 20;

/// The Azurite endpoint and Node module path, if CI provided them.
fn azurite() -> Option<(String, String)> {
    match (
        std::env::var("H2K_AZURITE_BLOB"),
        std::env::var("H2K_NODE_PATH"),
    ) {
        (Ok(endpoint), Ok(node_path)) => Some((endpoint, node_path)),
        _ => {
            eprintln!("skipped: H2K_AZURITE_BLOB / H2K_NODE_PATH not set (.ci/run sets them)");
            None
        }
    }
}

/// Uploads `vhd` as blob `name` and returns a read SAS URL for it.
fn upload(endpoint: &str, node_path: &str, vhd: &Path, name: &str, expired: bool) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/azurite/upload-page-blob.cjs"
    );
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", node_path)
        .args([script, endpoint, "hyper2kvm-tests", name, s(vhd)]);
    if expired {
        cmd.arg("--expired");
    }
    let out = cmd.output().expect("node must be installed");
    assert!(
        out.status.success(),
        "upload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn hyper2kvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(args)
        .output()
        .unwrap()
}

/// The signature of a SAS URL: what must never appear in output.
fn signature(sas: &str) -> String {
    let sig = sas
        .split(['?', '&'])
        .find(|p| p.starts_with("sig="))
        .expect("a SAS has sig=");
    sig["sig=".len()..].to_string()
}

fn assert_no_secret(out: &Output, sas: &str) {
    let sig = signature(sas);
    for text in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(text);
        assert!(
            !text.contains(&sig) && !text.contains("sig="),
            "SAS leaked: {text}"
        );
    }
}

#[test]
fn sparse_page_blob_converts_identically() {
    let Some((endpoint, node_path)) = azurite() else {
        return;
    };
    let dir = Scratch::new("azurite");
    let raw = dir.path("d.raw");
    make_raw(
        &raw,
        64 * MIB,
        &[
            (0, MIB, Fill::Text),
            (9 * MIB + 512, 3 * MIB, Fill::Noise(3)),
            (63 * MIB, MIB, Fill::Text),
        ],
    );
    let vhd = dir.path("d.vhd");
    make_vhd(&raw, &vhd, "fixed");
    let sas = upload(&endpoint, &node_path, &vhd, "sparse.vhd", false);

    let out = dir.path("out.qcow2");
    let run = hyper2kvm(&["convert", &sas, s(&out), "--compress", "zstd"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_no_secret(&run, &sas);
    let summary = String::from_utf8_lossy(&run.stdout);
    // Only the pages written by Put Page are read: about 5 of 64 MiB, not the whole blob.
    assert!(
        summary.contains("read 5.") || summary.contains("read 6."),
        "{summary}"
    );
    assert_image_matches_as(&out, "qcow2", &vhd, "vpc");

    let out_raw = dir.path("out.raw");
    let run = hyper2kvm(&["convert", &sas, s(&out_raw), "--format", "raw", "--quiet"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_image_matches_as(&out_raw, "raw", &vhd, "vpc");
    assert_eq!(dir.files(), vec!["d.raw", "d.vhd", "out.qcow2", "out.raw"]);
}

#[test]
fn expired_sas_fails_cleanly_without_showing_it() {
    let Some((endpoint, node_path)) = azurite() else {
        return;
    };
    let dir = Scratch::new("azurite-expired");
    let raw = dir.path("d.raw");
    make_raw(&raw, 4 * MIB, &[(0, MIB, Fill::Text)]);
    let vhd = dir.path("d.vhd");
    make_vhd(&raw, &vhd, "fixed");
    let sas = upload(&endpoint, &node_path, &vhd, "expired.vhd", true);
    let out = dir.path("out.qcow2");
    let run = hyper2kvm(&["convert", &sas, s(&out)]);
    assert_eq!(run.status.code(), Some(1));
    assert_no_secret(&run, &sas);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("expired"),
        "{stderr}"
    );
    assert_eq!(dir.files(), vec!["d.raw", "d.vhd"]);
}

#[test]
fn a_block_blob_is_refused() {
    let Some((endpoint, _)) = azurite() else {
        return;
    };
    // Not a SAS of ours, but HEAD on a missing blob must give a clean 404 message.
    let url = format!("{endpoint}/hyper2kvm-tests/missing.vhd?sv=2021-08-06&sig=bm90LWEtc2ln");
    let dir = Scratch::new("azurite-missing");
    let out = dir.path("out.qcow2");
    let run = hyper2kvm(&["convert", &url, s(&out)]);
    assert_eq!(run.status.code(), Some(1));
    assert_no_secret(&run, &url);
    assert!(dir.files().is_empty());
}
