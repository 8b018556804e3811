//! The proof of the guest fix-ups: boot the guest.
//!
//! For Azure Gen1 (BIOS, MBR) and Gen2 (UEFI with OVMF, GPT): take a small Azure-like Debian
//! 12 disk (`guest/build-image.sh`: an initramfs with Hyper-V drivers only, netplan matching
//! `hv_netvsc` and a MAC, `rootdelay=300`, the resource-disk fstab line, an agent stand-in),
//! make it a fixed VHD as Azure exports it and the OS disk of a running VM in the simulator, and
//! migrate that VM with `hyper2kvm -c config.yaml` and a `guest:` section (snapshot, export,
//! conversion, fix-ups, domain XML); `hyper2kvm convert` the same VHD without fix-ups for the
//! other copy; `hyper2kvm fix` the migrated copy again (nothing left to fix) and `--dry-run`
//! the other (nothing changed); boot both copies under `qemu-system-x86_64` as the domain XML
//! says (software emulation, q35, UEFI or BIOS, virtio-blk disk, virtio-net NIC on user-mode
//! networking, serial console to a file). The
//! fixed copy must reach a login prompt and print a DHCP address (the image's
//! `h2k-report.service` writes `H2K-IP: <nic> <address>` to the console) within the time
//! limit; the unfixed copy, the same disk without the fix-ups, must not.
//!
//! Gate: runs when `H2K_BOOT_TEST=1` (CI sets it, after `.ci/guest-setup.sh`); then a missing
//! tool is a failure, not a skip. Base images are cached under
//! `~/.cache/hyper2kvm-guest-images/<hash of build-image.sh>/` (or `$H2K_GUEST_CACHE`).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{make_vhd, s, Scratch};

/// How long a boot may take to reach login and an address. A fixed guest needs about half a
/// minute alone on this kind of machine; four boots and a libguestfs appliance share 2 cores.
const DEFAULT_LIMIT_SECS: u64 = 180;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Gen {
    One,
    Two,
}

impl Gen {
    fn name(self) -> &'static str {
        match self {
            Gen::One => "gen1",
            Gen::Two => "gen2",
        }
    }
}

fn enabled() -> bool {
    match std::env::var("H2K_BOOT_TEST").as_deref() {
        Ok("1") => true,
        _ => {
            eprintln!("guest boot test not run: set H2K_BOOT_TEST=1 (see docs/guest.md)");
            false
        }
    }
}

#[test]
fn gen1_bios_mbr_boots_only_after_fixups() {
    if enabled() {
        boot_test(Gen::One);
    }
}

#[test]
fn gen2_uefi_gpt_boots_only_after_fixups() {
    if enabled() {
        boot_test(Gen::Two);
    }
}

/// Azure Trusted Launch: the domain keeps UEFI secure boot with Microsoft's keys, and a
/// guest with Debian's signed boot chain (shim signed by Microsoft, grub and the kernel by
/// Debian) boots under it after migration and fix-ups; the same firmware refuses the base
/// image's unsigned grub, so secure boot was enforced.
#[test]
fn gen2_trusted_launch_boots_under_secure_boot() {
    if enabled() {
        secure_boot_test();
    }
}

/// The network boot matrix (`tests/guest/build-netmatrix.sh`): Debian guests configured the
/// ways Azure fleets are, each pinned to the Hyper-V NIC by name or MAC.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    /// Debian 12, ifupdown, `allow-hotplug eth0`, a persistent-net rule on the Hyper-V MAC.
    D12Ifupdown,
    /// Debian 12, systemd-networkd, a `.network` file matching the Hyper-V MAC.
    D12Networkd,
    /// Debian 12, NetworkManager, a keyfile with `interface-name=eth0` and the Hyper-V MAC.
    D12NetworkManager,
    /// Debian 11, ifupdown, `auto eth0`, a `.link` file naming eth0 by the Hyper-V MAC.
    D11Ifupdown,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::D12Ifupdown,
        Variant::D12Networkd,
        Variant::D12NetworkManager,
        Variant::D11Ifupdown,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::D12Ifupdown => "d12-ifupdown",
            Variant::D12Networkd => "d12-networkd",
            Variant::D12NetworkManager => "d12-nm",
            Variant::D11Ifupdown => "d11-ifupdown",
        }
    }

    /// The stack the fix report must find enabled, and the fix-ups that must apply.
    fn expect(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Variant::D12Ifupdown => ("stack ifupdown: enabled", &["interface-names", "grub"]),
            Variant::D12Networkd => (
                "stack systemd-networkd: enabled",
                &["networkd", "interface-names", "grub"],
            ),
            Variant::D12NetworkManager => (
                "stack NetworkManager: enabled",
                &["nm-keyfile", "interface-names", "grub"],
            ),
            Variant::D11Ifupdown => ("stack ifupdown: enabled", &["interface-names", "grub"]),
        }
    }
}

#[test]
fn netmatrix_debian12_ifupdown_persistent_net_rule() {
    if enabled() {
        network_test(Variant::D12Ifupdown);
    }
}

#[test]
fn netmatrix_debian12_networkd_by_mac() {
    if enabled() {
        network_test(Variant::D12Networkd);
    }
}

#[test]
fn netmatrix_debian12_networkmanager_keyfile() {
    if enabled() {
        network_test(Variant::D12NetworkManager);
    }
}

#[test]
fn netmatrix_debian11_ifupdown_link_file() {
    if enabled() {
        network_test(Variant::D11Ifupdown);
    }
}

/// Converts the variant's disk, fixes one copy with `hyper2kvm fix`, and boots both on
/// virtio: both must boot (virtio is in their initramfs), the unfixed one without an address,
/// the fixed one with QEMU's DHCP address on eth0.
fn network_test(variant: Variant) {
    check_tools();
    let images = matrix_images();
    let dir = Scratch::new(&format!("net-{}", variant.name()));
    let started = Instant::now();
    let unfixed = dir.path("unfixed.qcow2");
    let fixed = dir.path("fixed.qcow2");
    let raw = images.join(format!("{}.raw", variant.name()));
    hyper2kvm(&["convert", "--quiet", s(&raw), s(&unfixed)]);
    hyper2kvm(&["convert", "--quiet", s(&raw), s(&fixed)]);
    let report = hyper2kvm(&["fix", s(&fixed)]);
    let fix_secs = started.elapsed().as_secs();
    let (stack, fixups) = variant.expect();
    assert!(report.contains(stack), "{report}");
    for fixup in fixups {
        assert!(
            report
                .lines()
                .any(|l| l.trim_start().starts_with(fixup) && l.ends_with(" applied")),
            "{fixup} not applied:\n{report}"
        );
    }
    assert!(report.contains("result: fixed for KVM"), "{report}");
    assert!(report.contains("kernel names kept"), "{report}");

    let domain = Domain {
        machine: "q35".into(),
        uefi: false,
        secure_boot: false,
        disk_device: "virtio-blk-pci",
        nic_device: "virtio-net-pci",
    };
    let limit = boot_limit();
    // The unfixed guest's proof is its own report of no address, after its 60 s wait; under
    // emulation with other guests booting that can take longer than a fixed guest's boot.
    let (fixed_boot, unfixed_boot) = std::thread::scope(|scope| {
        let a = scope.spawn(|| boot(&domain, &fixed, &dir.path("fixed.console"), &dir, limit));
        let b = scope.spawn(|| {
            boot(
                &domain,
                &unfixed,
                &dir.path("unfixed.console"),
                &dir,
                limit * 2,
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!(
        "{}: convert + fix {fix_secs} s, fixed boot {}, unfixed boot {}",
        variant.name(),
        fixed_boot.summary(),
        unfixed_boot.summary()
    );
    assert!(
        fixed_boot.succeeded(),
        "{}: the fixed guest did not get a DHCP address in {limit:?}: {}\n--- console ---\n{}\n--- fix report ---\n{report}",
        variant.name(),
        fixed_boot.summary(),
        fixed_boot.tail()
    );
    let ip = fixed_boot.marker("H2K-IP: ").unwrap_or_default();
    assert!(ip.starts_with("eth0 10.0.2."), "{ip}");
    assert!(
        fixed_boot
            .marker("H2K-CMDLINE: ")
            .unwrap_or_default()
            .contains("net.ifnames=0"),
        "{}",
        fixed_boot.tail()
    );
    // The unfixed guest boots (virtio is in its initramfs) and reports no address: the
    // network fix-ups, and nothing else, make the difference.
    assert!(
        unfixed_boot.login && unfixed_boot.marker("H2K-IP: ").as_deref() == Some("none"),
        "{}: the unfixed guest should boot without network: {}\n--- console ---\n{}",
        variant.name(),
        unfixed_boot.summary(),
        unfixed_boot.tail()
    );
    let nics = unfixed_boot.marker("H2K-NICS: ").unwrap_or_default();
    assert!(
        !nics.split_whitespace().any(|n| n == "eth0"),
        "unfixed NICs: {nics}"
    );
}

#[test]
fn a_disk_without_an_os_is_an_error_and_unchanged() {
    if !enabled() {
        return;
    }
    check_tools();
    let dir = Scratch::new("fix-no-os");
    let image = dir.path("data.raw");
    support::make_raw(&image, 64 << 20, &[(1 << 20, 1 << 20, support::Fill::Text)]);
    let before = sha256(&image);
    let out = Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(["fix", s(&image)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no operating system found"), "{stderr}");
    assert_eq!(sha256(&image), before);
}

fn boot_test(gen: Gen) {
    check_tools();
    let images = base_images();
    let dir = Scratch::new(&format!("boot-{}", gen.name()));
    let started = Instant::now();

    let vhd = dir.path("azure-os.vhd");
    make_vhd(&images.join(format!("{}.raw", gen.name())), &vhd, "fixed");
    // The unfixed copy: the same disk, converted only.
    let unfixed = dir.path("unfixed.qcow2");
    hyper2kvm(&["convert", "--quiet", s(&vhd), s(&unfixed)]);
    let convert_secs = started.elapsed().as_secs();

    // The fixed copy: a whole migration of a running Azure VM of this generation whose OS
    // disk is the VHD, through the simulator (snapshot, grant, page-blob download, revoke,
    // snapshot deleted), with the guest fix-ups and the domain XML.
    let fix_started = Instant::now();
    // A Gen2 VM with this custom image (its grub is not signed) runs without Trusted Launch
    // on Azure too; the Trusted Launch test has its own image.
    let (fixed, domain) = migrate(gen, false, &vhd, &dir);
    std::fs::remove_file(&vhd).unwrap();
    let fix_secs = fix_started.elapsed().as_secs();

    // Once fixed, nothing is left to fix.
    let checks_started = Instant::now();
    let again = hyper2kvm(&["fix", s(&fixed)]);
    assert!(again.contains("result: nothing to fix"), "{again}");
    // A dry run reports what it would do and leaves the image byte for byte as it was (the
    // unfixed copy then boots as the proof that the fix-ups matter).
    let before = sha256(&unfixed);
    let dry = hyper2kvm(&["fix", "--dry-run", s(&unfixed)]);
    assert!(dry.contains("result: dry run, nothing changed"), "{dry}");
    assert!(dry.contains("would apply"), "{dry}");
    assert_eq!(sha256(&unfixed), before, "--dry-run changed the image");
    let checks_secs = checks_started.elapsed().as_secs();

    let limit = boot_limit();
    // Both boots at once, as the domain XML says: the unfixed one runs out the whole limit.
    let (fixed_boot, unfixed_boot) = std::thread::scope(|scope| {
        let a = scope.spawn(|| boot(&domain, &fixed, &dir.path("fixed.console"), &dir, limit));
        let b = scope.spawn(|| boot(&domain, &unfixed, &dir.path("unfixed.console"), &dir, limit));
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!(
        "{}: convert {convert_secs} s, migrate with fix-ups {fix_secs} s, fix again + dry run {checks_secs} s, \
         fixed boot {}, unfixed boot {}",
        gen.name(),
        fixed_boot.summary(),
        unfixed_boot.summary()
    );

    assert!(
        fixed_boot.succeeded(),
        "{}: the fixed guest did not reach login with a DHCP address in {limit:?}: {}\n--- console ---\n{}",
        gen.name(),
        fixed_boot.summary(),
        fixed_boot.tail()
    );
    let address = fixed_boot.address.as_deref().unwrap();
    assert!(address.starts_with("10.0.2."), "not QEMU's DHCP: {address}");
    let cmdline = fixed_boot.marker("H2K-CMDLINE: ").unwrap_or_default();
    assert!(!cmdline.contains("rootdelay"), "{cmdline}");
    assert!(cmdline.contains("console=ttyS0"), "{cmdline}");
    assert!(
        !fixed_boot.console.contains("H2K-AGENT"),
        "the Azure agent stand-in still started"
    );

    assert!(
        !unfixed_boot.succeeded(),
        "{}: the guest booted to login with an address WITHOUT the fix-ups, so this test proves \
         nothing: {}\n--- console ---\n{}",
        gen.name(),
        unfixed_boot.summary(),
        unfixed_boot.tail()
    );
}

fn secure_boot_test() {
    check_tools();
    assert!(
        ovmf_secure_boot().is_some(),
        "H2K_BOOT_TEST=1 but OVMF's secure-boot build (Debian ovmf) is missing"
    );
    let base = base_images().join("gen2.raw");
    let signed = signed_loaders();
    let dir = Scratch::new("boot-gen2-sb");
    let started = Instant::now();

    // The Gen2 image with a secure-boot chain on its ESP, laid out as Debian installs it for
    // the removable path: shim as BOOTX64.EFI, grub beside it (shim loads grubx64.efi from its
    // own folder), and the stub Debian's signed grub reads from its built-in prefix
    // /EFI/debian. mtools edits the FAT file system in place at the ESP's offset (sector 2048).
    let raw = dir.path("sb.raw");
    let st = Command::new("cp")
        .args(["--sparse=always", s(&base), s(&raw)])
        .status()
        .unwrap();
    assert!(st.success());
    let stub = dir.path("grub.cfg");
    std::fs::write(
        &stub,
        "search --no-floppy --label cloudimg-rootfs --set=root\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n",
    )
    .unwrap();
    let esp = format!("{}@@1048576", s(&raw));
    let mtools = |tool: &str, args: &[&str]| {
        let out = Command::new(tool)
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &esp])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool} (Debian mtools): {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let shim = signed.join("shimx64.efi.signed");
    let grub = signed.join("grubx64.efi.signed");
    mtools("mcopy", &["-o", s(&shim), "::/EFI/BOOT/BOOTX64.EFI"]);
    mtools("mcopy", &["-o", s(&grub), "::/EFI/BOOT/grubx64.efi"]);
    mtools("mmd", &["::/EFI/debian"]);
    mtools("mcopy", &["-o", s(&stub), "::/EFI/debian/grub.cfg"]);
    let vhd = dir.path("azure-os.vhd");
    make_vhd(&raw, &vhd, "fixed");
    std::fs::remove_file(&raw).unwrap();

    let (fixed, domain) = migrate(Gen::Two, true, &vhd, &dir);
    std::fs::remove_file(&vhd).unwrap();
    let migrate_secs = started.elapsed().as_secs();

    // The control: the base image, whose EFI loader is an unsigned grub.
    let unsigned = dir.path("unsigned.qcow2");
    let st = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&base),
            s(&unsigned),
        ])
        .status()
        .unwrap();
    assert!(st.success());

    // Secure boot under emulation is slower (SMM, shim's and grub's signature checks), and
    // this limit costs nothing when the guest boots: a boot ends as soon as it succeeds, and
    // the control as soon as the firmware refuses it.
    let limit = boot_limit().max(Duration::from_secs(420));
    let (fixed_boot, control) = std::thread::scope(|scope| {
        let a = scope.spawn(|| boot(&domain, &fixed, &dir.path("fixed.console"), &dir, limit));
        let b = scope.spawn(|| {
            boot(
                &domain,
                &unsigned,
                &dir.path("unsigned.console"),
                &dir,
                limit,
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!(
        "gen2 trusted launch: migrate with fix-ups {migrate_secs} s, fixed boot under secure boot {}, unsigned control {}",
        fixed_boot.summary(),
        control.summary()
    );
    assert!(
        fixed_boot.succeeded(),
        "the fixed Trusted Launch guest did not reach login with a DHCP address under secure boot in {limit:?}: {}\n--- console ---\n{}",
        fixed_boot.summary(),
        fixed_boot.tail()
    );
    assert!(
        control.console.contains("Access Denied") && !control.login,
        "the firmware did not refuse an unsigned loader, so secure boot was not enforced: {}\n--- console ---\n{}",
        control.summary(),
        control.tail()
    );
}

/// Debian's signed shim and grub (`tests/guest/fetch-secureboot.sh`), fetched once per version
/// of the script.
fn signed_loaders() -> PathBuf {
    static FILES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            cached_images(
                "fetch-secureboot.sh",
                &["shimx64.efi.signed", "grubx64.efi.signed"],
            )
        })
        .clone()
        .unwrap()
}

/// The machine a domain XML describes, as qemu options.
struct Domain {
    machine: String,
    uefi: bool,
    /// UEFI secure boot with Microsoft's keys (Azure Trusted Launch).
    secure_boot: bool,
    disk_device: &'static str,
    nic_device: &'static str,
}

impl Domain {
    /// Reads what the boot needs from our domain XML, insisting on what a KVM host expects.
    fn from_xml(xml: &str) -> Domain {
        let machine = xml
            .split("machine='")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("a machine type")
            .to_string();
        let disk_bus = xml
            .split("<target dev='vda' bus='")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("the OS disk is vda");
        let nic_model = xml
            .split("<interface")
            .nth(1)
            .and_then(|rest| rest.split("<model type='").nth(1))
            .and_then(|rest| rest.split('\'').next())
            .expect("a NIC model");
        assert_eq!(disk_bus, "virtio", "{xml}");
        assert_eq!(nic_model, "virtio", "{xml}");
        assert!(xml.contains("<serial type='pty'>"), "{xml}");
        Domain {
            machine,
            uefi: xml.contains("<os firmware='efi'>"),
            secure_boot: xml.contains("<feature enabled='yes' name='secure-boot'/>")
                && xml.contains("<feature enabled='yes' name='enrolled-keys'/>")
                && xml.contains("<smm state='on'/>"),
            disk_device: "virtio-blk-pci",
            nic_device: "virtio-net-pci",
        }
    }
}

/// Migrates a running VM of generation `gen` whose OS disk is `vhd` through the simulator,
/// with the guest fix-ups; returns its OS image and its domain.
fn migrate(gen: Gen, trusted_launch: bool, vhd: &Path, dir: &Scratch) -> (PathBuf, Domain) {
    let vm = format!("boot-{}", gen.name());
    let generation = if gen == Gen::One { 1 } else { 2 };
    let security = if trusted_launch {
        "trusted_launch"
    } else {
        "standard"
    };
    let scenario = dir.path("scenario.yaml");
    std::fs::write(
        &scenario,
        format!(
            "subscriptions:\n  - id: 00000000-0000-0000-0000-000000000000\n    resource_groups:\n      - name: rg-boot\n        vms:\n          - name: {vm}\n            size: Standard_B2s\n            power_state: running\n            generation: {generation}\n            security_type: {security}\n            disks: [{{ content: {{ file: \"{}\" }} }}]\n",
            s(vhd)
        ),
    )
    .unwrap();
    let out = dir.path("out");
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "azure:\n  subscriptions: [\"00000000-0000-0000-0000-000000000000\"]\n  resource_groups: [rg-boot]\n  simulator: {{ scenario: \"{}\" }}\noutput: {{ dir: \"{}\", compress: zstd }}\nguest: {{ require: true }}\n",
            s(&scenario),
            s(&out)
        ),
    )
    .unwrap();
    let table = hyper2kvm(&["-c", s(&config), "--quiet"]);
    assert!(
        table.contains(&vm) && table.contains("completed"),
        "{table}"
    );
    let folder = out.join(&vm);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["guest"]["result"], "fixed", "{report:#}");
    let applied: Vec<&str> = report["guest"]["fixups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "applied")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for fixup in ["netplan", "initramfs", "grub", "fstab", "azure-agent"] {
        assert!(applied.contains(&fixup), "{fixup} not applied: {report:#}");
    }
    let snapshots = report["resources"].as_array().unwrap();
    assert_eq!(snapshots.len(), 1, "{report:#}");
    assert!(snapshots[0]["deleted_at"].is_string(), "{report:#}");
    // No staging name is left; the checksum is of the fixed image.
    let image = folder.join(format!("{vm}-os.qcow2"));
    assert!(!folder.join(format!("{vm}-os.qcow2.pre-fixup")).exists());
    assert_eq!(
        report["disks"][0]["sha256"].as_str(),
        Some(sha256(&image).as_str())
    );
    let xml_path = folder.join(format!("{vm}.xml"));
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let valid = Command::new("virt-xml-validate")
        .arg(&xml_path)
        .output()
        .expect("virt-xml-validate (Debian libvirt-clients) runs");
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    let domain = Domain::from_xml(&xml);
    assert_eq!(domain.machine, "q35");
    assert_eq!(domain.uefi, gen == Gen::Two, "{xml}");
    assert_eq!(domain.secure_boot, trusted_launch, "{xml}");
    assert_eq!(
        xml.contains("<tpm model='tpm-crb'>"),
        trusted_launch,
        "{xml}"
    );
    (image, domain)
}

/// Fails, naming what to install, when a tool the test needs is missing.
fn check_tools() {
    let mut missing = Vec::new();
    for tool in [
        "qemu-system-x86_64",
        "qemu-img",
        "guestfish",
        "debootstrap",
        "sha256sum",
        "virt-xml-validate",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(tool);
        }
    }
    if ovmf().is_none() {
        missing.push("OVMF (Debian ovmf)");
    }
    assert!(
        missing.is_empty(),
        "H2K_BOOT_TEST=1 but missing: {}; `. .ci/guest-setup.sh` installs them",
        missing.join(", ")
    );
}

/// OVMF's code and variable-store templates.
fn ovmf() -> Option<(PathBuf, PathBuf)> {
    [
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("OVMF_CODE.fd", "OVMF_VARS.fd"),
    ]
    .iter()
    .map(|(c, v)| {
        (
            Path::new("/usr/share/OVMF").join(c),
            Path::new("/usr/share/OVMF").join(v),
        )
    })
    .find(|(c, v)| c.is_file() && v.is_file())
}

/// OVMF's secure-boot build and the variable store with Microsoft's keys enrolled and secure
/// boot on (Debian `ovmf`).
fn ovmf_secure_boot() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new("/usr/share/OVMF");
    let (code, vars) = (
        dir.join("OVMF_CODE_4M.ms.fd"),
        dir.join("OVMF_VARS_4M.ms.fd"),
    );
    (code.is_file() && vars.is_file()).then_some((code, vars))
}

/// The directory holding gen1.raw and gen2.raw, built once per version of the build script.
fn base_images() -> PathBuf {
    static IMAGES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGES
        .get_or_init(|| cached_images("build-image.sh", &["gen1.raw", "gen2.raw"]))
        .clone()
        .unwrap()
}

/// The directory holding the network matrix's disks (`build-netmatrix.sh`).
fn matrix_images() -> PathBuf {
    static IMAGES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            let names: Vec<String> = Variant::ALL
                .iter()
                .map(|v| format!("{}.raw", v.name()))
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            cached_images("build-netmatrix.sh", &names)
        })
        .clone()
        .unwrap()
}

/// `tests/guest/<script> DIR`, run once per version of the script (see
/// `support::cached_images`).
fn cached_images(script: &str, files: &[&str]) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guest")
        .join(script);
    support::cached_images(&script, files)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs the binary; panics with its output unless it succeeds; returns its standard output.
fn hyper2kvm(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hyper2kvm {args:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What a boot showed on its serial console.
struct Boot {
    console: String,
    login: bool,
    address: Option<String>,
    elapsed: Duration,
}

impl Boot {
    fn succeeded(&self) -> bool {
        self.login && self.address.is_some()
    }

    fn marker(&self, prefix: &str) -> Option<String> {
        self.console.lines().find_map(|l| {
            l.find(prefix)
                .map(|i| l[i + prefix.len()..].trim().to_string())
        })
    }

    fn summary(&self) -> String {
        format!(
            "{} after {} s (login prompt: {}, address: {})",
            if self.succeeded() {
                "succeeded"
            } else {
                "failed"
            },
            self.elapsed.as_secs(),
            self.login,
            self.address.as_deref().unwrap_or("none")
        )
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// How long a boot may take (`H2K_BOOT_TIMEOUT`, seconds).
fn boot_limit() -> Duration {
    Duration::from_secs(
        std::env::var("H2K_BOOT_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_LIMIT_SECS),
    )
}

/// The accelerator `.ci/guest-setup.sh` found working (`H2K_ACCEL`: `kvm` only when a probe
/// boot under KVM finished; `/dev/kvm` alone proves nothing), else software emulation.
fn accel() -> String {
    match std::env::var("H2K_ACCEL").as_deref() {
        Ok("kvm") => "kvm".to_string(),
        _ => "tcg".to_string(),
    }
}

/// Boots `image` on the machine `domain` describes until the console shows a login prompt and
/// an address, or `limit` passes.
fn boot(domain: &Domain, image: &Path, console: &Path, dir: &Scratch, limit: Duration) -> Boot {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        &format!("{},accel={}", domain.machine, accel()),
        "-cpu",
        "max",
        "-m",
        "1024",
        "-smp",
        "1",
    ])
    .args(["-nodefaults", "-display", "none", "-no-reboot"])
    .arg("-drive")
    .arg(format!(
        "file={},format=qcow2,if=none,id=disk0,snapshot=on",
        s(image)
    ))
    .args([
        "-device",
        &format!("{},drive=disk0,bootindex=1", domain.disk_device),
    ])
    .args([
        "-netdev",
        "user,id=net0",
        "-device",
        &format!("{},netdev=net0", domain.nic_device),
    ])
    .arg("-serial")
    .arg(format!("file:{}", s(console)));
    if domain.secure_boot {
        // What libvirt picks for the domain's secure-boot + enrolled-keys features on Debian
        // (/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json): secure boot is on in
        // the variable store's template, which holds Microsoft's keys; the code needs SMM.
        let (code, vars_template) = ovmf_secure_boot().unwrap();
        let vars = dir.path(&format!(
            "{}.vars.fd",
            console.file_stem().unwrap().to_string_lossy()
        ));
        std::fs::copy(&vars_template, &vars).unwrap();
        cmd.args(["-machine", "smm=on"])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                s(&code)
            ))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=1,file={}", s(&vars)));
    } else if domain.uefi {
        let (code, vars_template) = ovmf().unwrap();
        let vars = dir.path(&format!(
            "{}.vars.fd",
            console.file_stem().unwrap().to_string_lossy()
        ));
        std::fs::copy(&vars_template, &vars).unwrap();
        cmd.arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                s(&code)
            ))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=1,file={}", s(&vars)));
    }
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let mut boot = Boot {
        console: String::new(),
        login: false,
        address: None,
        elapsed: Duration::ZERO,
    };
    loop {
        std::thread::sleep(Duration::from_secs(1));
        boot.console =
            String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).replace('\r', "");
        boot.login = boot.console.contains(" login:");
        boot.address = boot.marker("H2K-IP: ").and_then(|rest| {
            // "eth0 10.0.2.15/24", or "none" when the guest got no address.
            let address = rest.split_whitespace().nth(1)?;
            Some(address.split('/').next()?.to_string())
        });
        boot.elapsed = started.elapsed();
        let exited = child.try_wait().unwrap();
        // The guest reports once: an address, or "none" after its own wait.
        let reported = boot.marker("H2K-IP: ").is_some() && boot.login;
        // OVMF refused to start an unsigned loader under secure boot.
        let denied = boot.console.contains("Access Denied");
        if boot.succeeded() || reported || denied || boot.elapsed >= limit || exited.is_some() {
            break;
        }
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let qemu_stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        boot.elapsed >= limit
            || boot.succeeded()
            || boot.console.contains("Access Denied")
            || boot.marker("H2K-IP: ").is_some()
            || out.status.success(),
        "qemu-system-x86_64 failed ({}): {qemu_stderr}",
        out.status
    );
    boot
}
