//! `hyper2kvm import` end to end: packages made with qemu-img and tar, images checked with
//! qemu-img (compare, check), domains with virt-xml-validate; bad inputs fail with one line
//! naming the file and the field or offset, and leave no image under a final name.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{assert_image_matches_as, make_raw, make_vhdx, qemu_img, s, Fill, Scratch};

const MIB: u64 = 1 << 20;

fn h2k(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn make_vmdk(raw: &Path, vmdk: &Path, subformat: &str) {
    let opts = format!("subformat={subformat}");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        &opts,
        s(raw),
        s(vmdk),
    ]);
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A VMware-style OVA in `dir`: two streamOptimized disks (64 and 32 MiB), the descriptor
/// first, a SHA256 manifest. `tweak` edits the descriptor and manifest text before packing.
struct Ova {
    ova: PathBuf,
    vmdks: [PathBuf; 2],
}

fn make_ova(dir: &Scratch, name: &str, tweak: impl Fn(&mut String, &mut String)) -> Ova {
    let work = dir.path(&format!("{name}-src"));
    std::fs::create_dir_all(&work).unwrap();
    let raws = [work.join("d1.raw"), work.join("d2.raw")];
    make_raw(
        &raws[0],
        64 * MIB,
        &[
            (0, MIB, Fill::Text),
            (20 * MIB + 512, 3 * MIB, Fill::Noise(1)),
            (64 * MIB - 4096, 4096, Fill::Noise(2)),
        ],
    );
    make_raw(&raws[1], 32 * MIB, &[(MIB, 2 * MIB, Fill::Noise(3))]);
    let vmdks = [work.join("web01-disk1.vmdk"), work.join("web01-disk2.vmdk")];
    for (raw, vmdk) in raws.iter().zip(&vmdks) {
        make_vmdk(raw, vmdk, "streamOptimized");
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len().to_string();
    let mut ovf = include_str!("../../hyper2kvm-local/testdata/vmware.ovf")
        .replace("@SIZE1@", &size(&vmdks[0]))
        .replace("@SIZE2@", &size(&vmdks[1]))
        .replace("@CAP1@", "64")
        .replace("@CAP2@", "32");
    std::fs::write(work.join("web01.ovf"), &ovf).unwrap();
    let mut mf = String::new();
    for f in ["web01.ovf", "web01-disk1.vmdk", "web01-disk2.vmdk"] {
        mf.push_str(&format!("SHA256({f})= {}\n", sha256(&work.join(f))));
    }
    tweak(&mut ovf, &mut mf);
    std::fs::write(work.join("web01.ovf"), &ovf).unwrap();
    std::fs::write(work.join("web01.mf"), &mf).unwrap();
    let ova = dir.path(&format!("{name}.ova"));
    let st = Command::new("tar")
        .args(["--format=ustar", "-C", s(&work), "-cf", s(&ova)])
        .args([
            "web01.ovf",
            "web01.mf",
            "web01-disk1.vmdk",
            "web01-disk2.vmdk",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    Ova { ova, vmdks }
}

/// `qemu-img check` clean, the same virtual size, and `qemu-img compare` identical to the
/// VMDK.
fn same_as_vmdk(image: &Path, vmdk: &Path) {
    let report = qemu_img(&["check", "-f", "qcow2", s(image)]);
    assert!(report.contains("No errors were found"), "{report}");
    let size = |p: &Path, f: &str| {
        let info: serde_json::Value =
            serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", f, s(p)])).unwrap();
        info["virtual-size"].as_u64().unwrap()
    };
    assert_eq!(size(image, "qcow2"), size(vmdk, "vmdk"));
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "vmdk",
        "-F",
        "qcow2",
        s(vmdk),
        s(image),
    ]);
}

fn validate(xml: &Path) {
    let out = Command::new("virt-xml-validate").arg(xml).output().unwrap();
    assert!(
        out.status.success(),
        "virt-xml-validate {}: {}{}",
        xml.display(),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// Files under `dir` (recursive), relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn images(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|f| f.ends_with(".qcow2") || f.ends_with(".raw") || f.ends_with(".xml"))
        .collect()
}

#[test]
fn an_ova_imports_with_its_hardware_and_resumes() {
    let dir = Scratch::new("import-ova");
    let p = make_ova(&dir, "web01", |_, _| {});
    let out = dir.path("out");
    let r = h2k(&["import", s(&p.ova), "--output-dir", s(&out)]);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let vm = out.join("web01");
    same_as_vmdk(&vm.join("web01-os.qcow2"), &p.vmdks[0]);
    same_as_vmdk(&vm.join("web01-data-lun0.qcow2"), &p.vmdks[1]);
    let xml_path = vm.join("web01.xml");
    validate(&xml_path);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    assert!(xml.contains("<vcpu placement='static'>2</vcpu>"), "{xml}");
    assert!(xml.contains("<memory unit='MiB'>4096</memory>"), "{xml}");
    assert!(xml.contains("<os firmware='efi'>"), "{xml}");
    // uefi.secureBoot.enabled and two Ethernet items in the descriptor.
    assert!(
        xml.contains("<feature enabled='yes' name='secure-boot'/>"),
        "{xml}"
    );
    assert_eq!(
        xml.matches("<interface type='network'>").count(),
        2,
        "{xml}"
    );
    assert!(
        !xml.contains("<tpm"),
        "the OVF says nothing of a vTPM: {xml}"
    );
    assert!(xml.contains("imported from OVA"), "{xml}");
    let os = xml.find("web01-os.qcow2").unwrap();
    let data = xml.find("web01-data-lun0.qcow2").unwrap();
    assert!(
        os < data && xml.matches("bus='virtio'").count() == 2,
        "{xml}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vm.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "completed", "{report}");
    // Again: every disk is already done.
    let r = h2k(&["import", s(&p.ova), "--output-dir", s(&out), "-q"]);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vm.join("report.json")).unwrap()).unwrap();
    let statuses: Vec<_> = report["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].clone())
        .collect();
    assert_eq!(statuses, ["already_done", "already_done"], "{report}");
}

#[test]
fn dry_run_writes_nothing() {
    let dir = Scratch::new("import-dry");
    let p = make_ova(&dir, "web01", |_, _| {});
    let out = dir.path("out");
    let r = h2k(&["import", s(&p.ova), "--output-dir", s(&out), "--dry-run"]);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let plan = String::from_utf8_lossy(&r.stdout);
    assert!(
        plan.contains("web01-os.qcow2") && plan.contains("web01-data-lun0.qcow2"),
        "{plan}"
    );
    assert!(!out.exists(), "{:?}", tree(&out));
}

#[test]
fn single_disks_and_a_hyperv_folder_import_identically() {
    let dir = Scratch::new("import-disks");
    let raw = dir.path("src.raw");
    make_raw(
        &raw,
        48 * MIB,
        &[
            (0, MIB, Fill::Text),
            (9 * MIB, 5 * MIB, Fill::Noise(7)),
            (48 * MIB - 512, 512, Fill::Text),
        ],
    );
    let hv = dir.path("hv");
    std::fs::create_dir_all(hv.join("Virtual Hard Disks")).unwrap();
    std::fs::create_dir_all(hv.join("Virtual Machines")).unwrap();
    // Windows Server 2016+ exports a binary .vmcx: not read, the flags give the hardware.
    std::fs::write(
        hv.join("Virtual Machines/4D4E1B7A-6A3C-4F0E-8B1D-2C3E5F7A9B11.vmcx"),
        b"\x01\x00\x00\x00binary",
    )
    .unwrap();
    make_vhdx(
        &raw,
        &hv.join("Virtual Hard Disks/hv.vhdx"),
        "dynamic",
        "1M",
    );
    let single_vhdx = dir.path("solo.vhdx");
    make_vhdx(&raw, &single_vhdx, "dynamic", "1M");
    let mut srcs = vec![hv.clone(), single_vhdx];
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
    ] {
        let vmdk = dir.path(&format!("{sub}.vmdk"));
        make_vmdk(&raw, &vmdk, sub);
        srcs.push(vmdk);
    }
    let out = dir.path("out");
    let mut args = vec![
        "import",
        "--output-dir",
        s(&out),
        "--firmware",
        "uefi",
        "--vcpus",
        "3",
        "--memory",
        "2G",
    ];
    args.extend(srcs.iter().map(|p| s(p)));
    let r = h2k(&args);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    for name in [
        "hv",
        "solo",
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
    ] {
        let vm = out.join(name);
        assert_image_matches_as(&vm.join(format!("{name}-os.qcow2")), "qcow2", &raw, "raw");
        let xml = vm.join(format!("{name}.xml"));
        validate(&xml);
        let xml = std::fs::read_to_string(&xml).unwrap();
        assert!(
            xml.contains("<vcpu placement='static'>3</vcpu>")
                && xml.contains("<memory unit='MiB'>2048</memory>")
                && xml.contains("firmware='efi'"),
            "{xml}"
        );
    }
}

/// A Windows Server 2012 R2 export: the configuration (`Virtual Machines/<GUID>.xml`,
/// UTF-16) names the VM, gives its hardware and says which disk boots.
#[test]
fn a_hyperv_2012_r2_export_takes_its_configuration() {
    let dir = Scratch::new("import-hv2012");
    let hv = dir.path("export");
    std::fs::create_dir_all(hv.join("Virtual Hard Disks")).unwrap();
    std::fs::create_dir_all(hv.join("Virtual Machines")).unwrap();
    let os_raw = dir.path("os.raw");
    let data_raw = dir.path("data.raw");
    make_raw(&os_raw, 16 * MIB, &[(0, MIB, Fill::Noise(1))]);
    make_raw(&data_raw, 8 * MIB, &[(MIB, MIB, Fill::Noise(2))]);
    // By name the data disk would come first; the configuration says otherwise.
    make_vhdx(
        &os_raw,
        &hv.join("Virtual Hard Disks/web01.vhdx"),
        "dynamic",
        "1M",
    );
    make_vhdx(
        &data_raw,
        &hv.join("Virtual Hard Disks/a-data.vhdx"),
        "dynamic",
        "1M",
    );
    let config = r#"<?xml version="1.0" encoding="UTF-16" standalone="yes"?>
<configuration>
  <_0C3A1F4B-2D5E-4A6B-8C7D-9E0F1A2B3C4D_>
    <controller0>
      <drive0><pathname type="string">E:\Export\web01\Virtual Hard Disks\web01.vhdx</pathname><type type="string">VHD</type></drive0>
      <drive1><pathname type="string">E:\Export\web01\Virtual Hard Disks\a-data.vhdx</pathname><type type="string">VHD</type></drive1>
    </controller0>
  </_0C3A1F4B-2D5E-4A6B-8C7D-9E0F1A2B3C4D_>
  <_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_0_><Connection><AltSwitchName type="string">External</AltSwitchName></Connection></_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_0_>
  <_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_1_><Connection><AltSwitchName type="string">Backup</AltSwitchName></Connection></_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_1_>
  <properties><name type="string">web01</name><subtype type="integer">1</subtype></properties>
  <settings>
    <memory><bank><dynamic_memory_enabled type="bool">False</dynamic_memory_enabled><size type="integer">3072</size></bank></memory>
    <processors><count type="integer">4</count></processors>
    <secure_boot_enabled type="bool">True</secure_boot_enabled>
  </settings>
</configuration>
"#;
    let mut utf16 = vec![0xff, 0xfe];
    for u in config.encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(
        hv.join("Virtual Machines/4D4E1B7A-6A3C-4F0E-8B1D-2C3E5F7A9B11.xml"),
        utf16,
    )
    .unwrap();
    let out = dir.path("out");
    let r = h2k(&["import", s(&hv), "--output-dir", s(&out), "-q"]);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let vm = out.join("web01");
    assert_image_matches_as(&vm.join("web01-os.qcow2"), "qcow2", &os_raw, "raw");
    assert_image_matches_as(&vm.join("web01-data-lun0.qcow2"), "qcow2", &data_raw, "raw");
    let xml_path = vm.join("web01.xml");
    validate(&xml_path);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    assert!(xml.contains("<vcpu placement='static'>4</vcpu>"), "{xml}");
    assert!(xml.contains("<memory unit='MiB'>3072</memory>"), "{xml}");
    assert!(xml.contains("<os firmware='efi'>"), "{xml}");
    assert!(xml.contains("name='secure-boot'"), "{xml}");
    assert_eq!(xml.matches("<interface ").count(), 2, "{xml}");

    // A configuration that cannot be read is an error naming it, not a silent fallback.
    let cfg = hv.join("Virtual Machines/4D4E1B7A-6A3C-4F0E-8B1D-2C3E5F7A9B11.xml");
    std::fs::write(&cfg, "<configuration><settings><processors><count>many</count></processors></settings></configuration>").unwrap();
    fails(
        &hv,
        &dir,
        &[
            "4D4E1B7A-6A3C-4F0E-8B1D-2C3E5F7A9B11.xml",
            "settings/processors/count",
        ],
    );
}

/// CRC-32C (Castagnoli, reflected), as VHDX checksums its headers.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Runs an import that must fail: exit 1, the error line naming `names` (file, field or
/// offset), no image or domain under the output folder.
fn fails(src: &Path, dir: &Scratch, names: &[&str]) {
    let out = dir.path(&format!(
        "out-{}",
        src.file_name().unwrap().to_string_lossy()
    ));
    let r = h2k(&["import", s(src), "--output-dir", s(&out)]);
    let err = stderr(&r);
    assert_eq!(r.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| names.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line naming {names:?} in:\n{err}"));
    assert!(!line.is_empty());
    // Partial files and journals may stay for a resume; no image or domain has its final name.
    assert_eq!(images(&out), Vec::<String>::new(), "{err}");
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let dir = Scratch::new("import-bad");
    // A truncated OVA.
    let p = make_ova(&dir, "good", |_, _| {});
    let bytes = std::fs::read(&p.ova).unwrap();
    let cut = dir.path("cut.ova");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails(
        &cut,
        &dir,
        &[
            "cut.ova",
            "truncated tar archive",
            "web01-disk",
            "at offset",
        ],
    );
    // An OVF naming a disk the archive does not hold.
    let p = make_ova(&dir, "missing", |ovf, _| {
        *ovf = ovf.replace("ovf:href=\"web01-disk2.vmdk\"", "ovf:href=\"gone.vmdk\"")
    });
    fails(
        &p.ova,
        &dir,
        &["missing.ova", "\"gone.vmdk\"", "File \"file2\""],
    );
    // A manifest mismatch.
    let p = make_ova(&dir, "mf", |_, mf| {
        let line = mf
            .lines()
            .find(|l| l.contains("disk2"))
            .unwrap()
            .to_string();
        let flipped = line
            .replace("= ", "= 0")
            .chars()
            .take(line.len())
            .collect::<String>();
        *mf = mf.replace(&line, &flipped);
    });
    fails(
        &p.ova,
        &dir,
        &[
            "mf.ova(web01-disk2.vmdk)",
            "SHA256 mismatch",
            "mf.ova(web01.mf)",
        ],
    );
    // A grain table entry past the end.
    let raw = dir.path("small.raw");
    make_raw(&raw, 4 * MIB, &[(0, 256 << 10, Fill::Noise(4))]);
    let vmdk = dir.path("gte.vmdk");
    make_vmdk(&raw, &vmdk, "monolithicSparse");
    let b = std::fs::read(&vmdk).unwrap();
    let gd = u64::from_le_bytes(b[56..64].try_into().unwrap()) * 512;
    let gt = u64::from(u32::from_le_bytes(
        b[gd as usize..gd as usize + 4].try_into().unwrap(),
    )) * 512;
    let entry = gt + 8;
    let mut b = b;
    b[entry as usize..entry as usize + 4].copy_from_slice(&0x00ff_0000u32.to_le_bytes());
    std::fs::write(&vmdk, &b).unwrap();
    fails(
        &vmdk,
        &dir,
        &[
            "gte.vmdk",
            "grain table entry 2",
            &format!("at offset {entry}"),
        ],
    );
    // A VHDX with a bad header checksum (both headers: no valid one left).
    let vhdx = dir.path("badsum.vhdx");
    make_vhdx(&raw, &vhdx, "dynamic", "1M");
    let mut b = std::fs::read(&vhdx).unwrap();
    b[64 * 1024 + 100] ^= 0xff;
    b[128 * 1024 + 100] ^= 0xff;
    std::fs::write(&vhdx, &b).unwrap();
    fails(&vhdx, &dir, &["badsum.vhdx", "checksum"]);
    // A VHDX whose log must be replayed but cannot be: a log GUID with a log version no
    // writer defines, in both headers (their CRC-32C recomputed, so only the log is wrong).
    let vhdx = dir.path("dirtylog.vhdx");
    make_vhdx(&raw, &vhdx, "dynamic", "1M");
    let mut b = std::fs::read(&vhdx).unwrap();
    for at in [64 * 1024, 128 * 1024] {
        let h = &mut b[at..at + 4096];
        h[48..64].copy_from_slice(&[0x5a; 16]); // LogGuid
        h[64..66].copy_from_slice(&7u16.to_le_bytes()); // LogVersion
        h[4..8].fill(0);
        let sum = crc32c(h);
        h[4..8].copy_from_slice(&sum.to_le_bytes());
    }
    std::fs::write(&vhdx, &b).unwrap();
    fails(
        &vhdx,
        &dir,
        &["dirtylog.vhdx", "VHDX log needs replay", "log version 7"],
    );
    // An unsupported variant: a VirtualSystemCollection.
    let p = make_ova(&dir, "coll", |ovf, _| {
        *ovf = ovf.replace("</Envelope>", "<VirtualSystemCollection><VirtualSystem ovf:id=\"a\"/><VirtualSystem ovf:id=\"b\"/></VirtualSystemCollection></Envelope>")
    });
    fails(
        &p.ova,
        &dir,
        &[
            "coll.ova(web01.ovf)",
            "unsupported OVF variant",
            "VirtualSystemCollection",
        ],
    );
}

#[test]
fn a_migration_config_gives_the_output_section() {
    let dir = Scratch::new("import-config");
    let raw = dir.path("disk.raw");
    make_raw(&raw, 8 * MIB, &[(MIB, MIB, Fill::Noise(5))]);
    let config = dir.path("config.yaml");
    let out = dir.path("out");
    std::fs::write(
        &config,
        format!(
            "azure:\n  subscriptions: [\"00000000-0000-0000-0000-000000000000\"]\noutput:\n  dir: {}\n  format: raw\n",
            out.display()
        ),
    )
    .unwrap();
    let r = h2k(&["import", "-c", s(&config), s(&raw), "-q"]);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert_image_matches_as(&out.join("disk/disk-os.raw"), "raw", &raw, "raw");
    // An unknown key is a usage error naming the file, line and column.
    std::fs::write(&config, "output:\n  colour: red\n").unwrap();
    let r = h2k(&["import", "-c", s(&config), s(&raw)]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("config.yaml:2:"), "{}", stderr(&r));
}
