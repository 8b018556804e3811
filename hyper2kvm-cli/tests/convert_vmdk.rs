//! `hyper2kvm convert` of VMDKs end to end: every subformat qemu-img writes becomes a qcow2
//! that `qemu-img check` finds clean and `qemu-img compare` finds identical to the VMDK as
//! qemu-img reads it; bad VMDKs fail with one line naming the file.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};

use support::{make_raw, qemu_img, s, Fill, Scratch};

const MIB: u64 = 1 << 20;

fn hyper2kvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_vmdk_subformat_converts_to_an_identical_qcow2() {
    let dir = Scratch::new("vmdk-e2e");
    let raw = dir.path("disk.raw");
    make_raw(
        &raw,
        40 * MIB,
        &[
            (0, 4096, Fill::Text),
            (MIB + 512, 3000, Fill::Noise(1)),
            (10 * MIB, 5 * MIB, Fill::Text),
            (17 * MIB, 2 * MIB, Fill::Zeros),
            (32 * MIB - 100, 200, Fill::Noise(2)),
            (40 * MIB - 512, 512, Fill::Text),
        ],
    );
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        let vmdk = dir.path(&format!("{sub}.vmdk"));
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&raw),
            s(&vmdk),
        ]);
        for extra in [&[][..], &["--compress", "zstd", "--cluster-size", "4K"][..]] {
            let out = dir.path("out.qcow2");
            let mut args = vec!["convert", "-q", s(&vmdk), s(&out)];
            args.extend_from_slice(extra);
            let run = hyper2kvm(&args);
            assert!(
                run.status.success(),
                "{sub} {extra:?}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let report = qemu_img(&["check", "-f", "qcow2", s(&out)]);
            assert!(report.contains("No errors were found"), "{sub}: {report}");
            // qemu-img made the VMDK from the raw disk, so it has the raw disk's size.
            assert_eq!(support::virtual_size(&out, "qcow2"), 40 * MIB, "{sub}");
            qemu_img(&[
                "compare",
                "-q",
                "-f",
                "vmdk",
                "-F",
                "qcow2",
                s(&vmdk),
                s(&out),
            ]);
            std::fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn bad_vmdks_fail_with_one_line_naming_the_file() {
    let dir = Scratch::new("vmdk-e2e-bad");
    let descriptor = dir.path("split.vmdk");
    std::fs::write(
        &descriptor,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\nRW 8 SPARSE \"split-s001.vmdk\"\n",
    )
    .unwrap();
    let delta = dir.path("delta.vmdk");
    std::fs::write(
        &delta,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\ncreateType=\"vmfsSparse\"\nRW 8 VMFSSPARSE \"delta-delta.vmdk\"\n",
    )
    .unwrap();
    let junk = dir.path("junk.img");
    std::fs::write(&junk, vec![5u8; 8192]).unwrap();
    for (src, extra, names) in [
        (
            &descriptor,
            &[][..],
            &["split.vmdk", "\"split-s001.vmdk\"", "cannot be opened"][..],
        ),
        (&delta, &[][..], &["delta.vmdk", "delta VMDK"][..]),
        (
            &junk,
            &["--input-format", "vmdk"][..],
            &["junk.img", "not a VMDK"][..],
        ),
    ] {
        let before = dir.files();
        let out = dir.path("out.qcow2");
        let mut args = vec!["convert", s(src), s(&out)];
        args.extend_from_slice(extra);
        let run = hyper2kvm(&args);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for name in names {
            assert!(stderr.contains(name), "{name:?} not in {stderr}");
        }
        assert_eq!(dir.files(), before, "convert left files behind");
    }
}
