//! libvirt domain definitions for migrated VMs.
//!
//! One function, [`domain_xml`], turns a [`DomainSpec`] into a `<domain type='kvm'>` that
//! boots the migrated disks on a modern KVM host:
//!
//! * machine `q35`; UEFI (`<os firmware='efi'>`, libvirt picks the OVMF build) for Azure
//!   Generation 2 VMs, SeaBIOS for Generation 1;
//! * every disk on virtio-blk, the OS disk first (`vda`, boot order 1), data disks after it
//!   in LUN order (`vdb`, `vdc`, …);
//! * a virtio NIC on a libvirt network or a bridge, a serial console (Azure images log to
//!   `ttyS0`), the QEMU guest agent channel, a virtio RNG and balloon, VNC on loopback;
//! * CPU `host-passthrough` unless configured; vCPUs and memory from the Azure VM size;
//! * Windows guests get a local-time clock and Hyper-V enlightenments;
//! * a VM that had UEFI secure boot (Azure Trusted Launch) keeps it: libvirt chooses a
//!   firmware with the `secure-boot` and `enrolled-keys` features (Microsoft's keys; on Debian
//!   `OVMF_CODE_4M.ms.fd` with `OVMF_VARS_4M.ms.fd` as the NVRAM template), with SMM on; a VM
//!   that had a vTPM gets an emulated TPM 2.0 (`swtpm`, CRB interface);
//! * one virtio NIC per NIC the source VM had.
//!
//! Tests hold the output to libvirt's own schema with `virt-xml-validate`.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::model::{Firmware, OsType};
use crate::pipeline::OutputFormat;

/// How the guest sees the host CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuMode {
    /// The host CPU as is: fastest, ties the guest to this CPU model for live migration.
    HostPassthrough,
    /// A named model close to the host's, portable across hosts of the same family.
    HostModel,
    /// A named CPU model, e.g. `Skylake-Server-IBRS`.
    Custom(String),
}

/// Where the NIC is plugged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkAttachment {
    /// A libvirt network, e.g. `default`.
    Network(String),
    /// A host bridge, e.g. `br0`.
    Bridge(String),
}

/// One disk of the domain, in boot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDisk {
    /// Absolute path of the image.
    pub path: PathBuf,
    /// Its format.
    pub format: OutputFormat,
}

/// Everything [`domain_xml`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// The domain name (the VM's name).
    pub name: String,
    /// A free-text description (e.g. where the VM came from).
    pub description: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// The guest OS family.
    pub os_type: OsType,
    /// CPU mode.
    pub cpu: CpuMode,
    /// Disks: the OS disk first, then data disks in LUN order.
    pub disks: Vec<DomainDisk>,
    /// Where the NICs go.
    pub network: NetworkAttachment,
    /// How many NICs (each a virtio NIC on `network`).
    pub nics: u32,
    /// UEFI secure boot with Microsoft's keys enrolled (ignored with BIOS firmware).
    pub secure_boot: bool,
    /// An emulated TPM 2.0.
    pub tpm: bool,
}

/// The libvirt domain XML for `spec`.
///
/// ```
/// use hyper2kvm_core::libvirt::{domain_xml, CpuMode, DomainDisk, DomainSpec, NetworkAttachment};
/// use hyper2kvm_core::{Firmware, OsType, OutputFormat};
///
/// let xml = domain_xml(&DomainSpec {
///     name: "web-01".into(),
///     description: "migrated from Azure".into(),
///     vcpus: 2,
///     memory_mib: 8192,
///     firmware: Firmware::Uefi,
///     os_type: OsType::Linux,
///     cpu: CpuMode::HostPassthrough,
///     disks: vec![DomainDisk { path: "/srv/web-01/web-01-os.qcow2".into(), format: OutputFormat::Qcow2 }],
///     network: NetworkAttachment::Network("default".into()),
///     nics: 1,
///     secure_boot: true,
///     tpm: true,
/// });
/// assert!(xml.contains("<os firmware='efi'>"));
/// assert!(xml.contains("<feature enabled='yes' name='secure-boot'/>"));
/// assert!(xml.contains("<backend type='emulator' version='2.0'/>"));
/// assert!(xml.contains("<target dev='vda' bus='virtio'/>"));
/// ```
pub fn domain_xml(spec: &DomainSpec) -> String {
    let mut x = String::new();
    let w = &mut x;
    let _ = writeln!(w, "<domain type='kvm'>");
    let _ = writeln!(w, "  <name>{}</name>", esc(&spec.name));
    let _ = writeln!(w, "  <description>{}</description>", esc(&spec.description));
    let _ = writeln!(w, "  <memory unit='MiB'>{}</memory>", spec.memory_mib);
    let _ = writeln!(
        w,
        "  <currentMemory unit='MiB'>{}</currentMemory>",
        spec.memory_mib
    );
    let _ = writeln!(w, "  <vcpu placement='static'>{}</vcpu>", spec.vcpus.max(1));
    match spec.firmware {
        Firmware::Uefi => {
            let _ = writeln!(w, "  <os firmware='efi'>");
        }
        Firmware::Bios => {
            let _ = writeln!(w, "  <os>");
        }
    }
    let _ = writeln!(w, "    <type arch='x86_64' machine='q35'>hvm</type>");
    let secure_boot = spec.secure_boot && spec.firmware == Firmware::Uefi;
    if secure_boot {
        // Firmware auto-selection by feature rather than a path: the descriptors in
        // /usr/share/qemu/firmware name each distribution's own files.
        let _ = writeln!(w, "    <firmware>");
        let _ = writeln!(w, "      <feature enabled='yes' name='enrolled-keys'/>");
        let _ = writeln!(w, "      <feature enabled='yes' name='secure-boot'/>");
        let _ = writeln!(w, "    </firmware>");
        let _ = writeln!(w, "    <loader secure='yes'/>");
    }
    let _ = writeln!(w, "  </os>");
    let _ = writeln!(w, "  <features>");
    let _ = writeln!(w, "    <acpi/>");
    let _ = writeln!(w, "    <apic/>");
    if spec.os_type == OsType::Windows {
        let _ = writeln!(w, "    <hyperv mode='custom'>");
        for feature in ["relaxed", "vapic", "vpindex", "synic", "stimer"] {
            let _ = writeln!(w, "      <{feature} state='on'/>");
        }
        let _ = writeln!(w, "      <spinlocks state='on' retries='8191'/>");
        let _ = writeln!(w, "    </hyperv>");
    }
    if secure_boot {
        // OVMF's secure-boot builds need SMM to protect their variable store.
        let _ = writeln!(w, "    <smm state='on'/>");
    }
    let _ = writeln!(w, "  </features>");
    match &spec.cpu {
        CpuMode::HostPassthrough => {
            let _ = writeln!(
                w,
                "  <cpu mode='host-passthrough' check='none' migratable='on'/>"
            );
        }
        CpuMode::HostModel => {
            let _ = writeln!(w, "  <cpu mode='host-model' check='partial'/>");
        }
        CpuMode::Custom(model) => {
            let _ = writeln!(w, "  <cpu mode='custom' match='exact' check='partial'>");
            let _ = writeln!(w, "    <model fallback='allow'>{}</model>", esc(model));
            let _ = writeln!(w, "  </cpu>");
        }
    }
    if spec.os_type == OsType::Windows {
        let _ = writeln!(w, "  <clock offset='localtime'>");
        let _ = writeln!(w, "    <timer name='hypervclock' present='yes'/>");
        let _ = writeln!(w, "  </clock>");
    } else {
        let _ = writeln!(w, "  <clock offset='utc'>");
        let _ = writeln!(w, "    <timer name='rtc' tickpolicy='catchup'/>");
        let _ = writeln!(w, "    <timer name='pit' tickpolicy='delay'/>");
        let _ = writeln!(w, "    <timer name='hpet' present='no'/>");
        let _ = writeln!(w, "  </clock>");
    }
    let _ = writeln!(w, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(w, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(w, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(w, "  <devices>");
    for (i, disk) in spec.disks.iter().enumerate() {
        let format = match disk.format {
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Raw => "raw",
        };
        let _ = writeln!(w, "    <disk type='file' device='disk'>");
        let _ = writeln!(
            w,
            "      <driver name='qemu' type='{format}' discard='unmap'/>"
        );
        let _ = writeln!(
            w,
            "      <source file='{}'/>",
            esc(&disk.path.to_string_lossy())
        );
        let _ = writeln!(w, "      <target dev='{}' bus='virtio'/>", virtio_dev(i));
        if i == 0 {
            let _ = writeln!(w, "      <boot order='1'/>");
        }
        let _ = writeln!(w, "    </disk>");
    }
    for _ in 0..spec.nics {
        match &spec.network {
            NetworkAttachment::Network(name) => {
                let _ = writeln!(w, "    <interface type='network'>");
                let _ = writeln!(w, "      <source network='{}'/>", esc(name));
            }
            NetworkAttachment::Bridge(name) => {
                let _ = writeln!(w, "    <interface type='bridge'>");
                let _ = writeln!(w, "      <source bridge='{}'/>", esc(name));
            }
        }
        let _ = writeln!(w, "      <model type='virtio'/>");
        let _ = writeln!(w, "    </interface>");
    }
    let _ = writeln!(w, "    <serial type='pty'>");
    let _ = writeln!(w, "      <target type='isa-serial' port='0'/>");
    let _ = writeln!(w, "    </serial>");
    let _ = writeln!(w, "    <console type='pty'>");
    let _ = writeln!(w, "      <target type='serial' port='0'/>");
    let _ = writeln!(w, "    </console>");
    let _ = writeln!(w, "    <channel type='unix'>");
    let _ = writeln!(
        w,
        "      <target type='virtio' name='org.qemu.guest_agent.0'/>"
    );
    let _ = writeln!(w, "    </channel>");
    let _ = writeln!(
        w,
        "    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>"
    );
    let _ = writeln!(w, "    <video>");
    let _ = writeln!(w, "      <model type='virtio' heads='1' primary='yes'/>");
    let _ = writeln!(w, "    </video>");
    if spec.tpm {
        let _ = writeln!(w, "    <tpm model='tpm-crb'>");
        let _ = writeln!(w, "      <backend type='emulator' version='2.0'/>");
        let _ = writeln!(w, "    </tpm>");
    }
    let _ = writeln!(w, "    <memballoon model='virtio'/>");
    let _ = writeln!(w, "    <rng model='virtio'>");
    let _ = writeln!(w, "      <backend model='random'>/dev/urandom</backend>");
    let _ = writeln!(w, "    </rng>");
    let _ = writeln!(w, "  </devices>");
    let _ = writeln!(w, "</domain>");
    x
}

/// `vda`, `vdb`, … `vdz`, `vdaa`, …: the virtio-blk device name of the `i`-th disk.
pub fn virtio_dev(i: usize) -> String {
    let mut n = i;
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("vd{}", String::from_utf8(letters).unwrap())
}

/// Escapes text for XML content and single-quoted attributes.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "db-01".into(),
            description: "Azure VM db-01 <rg-data> & co".into(),
            vcpus: 8,
            memory_mib: 65536,
            firmware: Firmware::Bios,
            os_type: OsType::Linux,
            cpu: CpuMode::HostPassthrough,
            disks: vec![
                DomainDisk {
                    path: "/srv/db-01/db-01-os.qcow2".into(),
                    format: OutputFormat::Qcow2,
                },
                DomainDisk {
                    path: "/srv/db-01/db-01-data-lun0.qcow2".into(),
                    format: OutputFormat::Qcow2,
                },
            ],
            network: NetworkAttachment::Bridge("br0".into()),
            nics: 1,
            secure_boot: false,
            tpm: false,
        }
    }

    #[test]
    fn device_names() {
        assert_eq!(virtio_dev(0), "vda");
        assert_eq!(virtio_dev(25), "vdz");
        assert_eq!(virtio_dev(26), "vdaa");
        assert_eq!(virtio_dev(27), "vdab");
    }

    #[test]
    fn bios_linux_domain() {
        let xml = domain_xml(&spec());
        assert!(xml.contains("<os>\n    <type arch='x86_64' machine='q35'>hvm</type>"));
        assert!(!xml.contains("firmware="));
        assert!(xml.contains("<description>Azure VM db-01 &lt;rg-data&gt; &amp; co</description>"));
        let vda = xml.find("db-01-os.qcow2").unwrap();
        let vdb = xml.find("db-01-data-lun0.qcow2").unwrap();
        assert!(vda < vdb);
        assert_eq!(xml.matches("<boot order='1'/>").count(), 1);
        assert!(xml.contains("<source bridge='br0'/>"));
        assert!(!xml.contains("hyperv"));
        assert!(!xml.contains("<tpm") && !xml.contains("secure"));
    }

    #[test]
    fn trusted_launch_keeps_secure_boot_and_tpm() {
        let mut s = spec();
        s.firmware = Firmware::Uefi;
        s.secure_boot = true;
        s.tpm = true;
        let xml = domain_xml(&s);
        assert!(xml.contains("<feature enabled='yes' name='secure-boot'/>"));
        assert!(xml.contains("<feature enabled='yes' name='enrolled-keys'/>"));
        assert!(xml.contains("<loader secure='yes'/>"));
        assert!(xml.contains("<smm state='on'/>"));
        assert!(xml.contains("<tpm model='tpm-crb'>"));
        // Secure boot needs UEFI: with BIOS it is not asked for (the TPM still is).
        s.firmware = Firmware::Bios;
        let xml = domain_xml(&s);
        assert!(!xml.contains("secure") && !xml.contains("<smm"));
        assert!(xml.contains("<tpm model='tpm-crb'>"));
    }

    #[test]
    fn one_interface_per_nic() {
        let mut s = spec();
        for nics in [0, 1, 3] {
            s.nics = nics;
            let xml = domain_xml(&s);
            assert_eq!(
                xml.matches("<interface type='bridge'>").count(),
                nics as usize
            );
        }
    }

    #[test]
    fn uefi_windows_domain() {
        let mut s = spec();
        s.firmware = Firmware::Uefi;
        s.os_type = OsType::Windows;
        s.cpu = CpuMode::Custom("Skylake-Server".into());
        let xml = domain_xml(&s);
        assert!(xml.contains("<os firmware='efi'>"));
        assert!(xml.contains("<hyperv mode='custom'>"));
        assert!(xml.contains("<clock offset='localtime'>"));
        assert!(xml.contains("<model fallback='allow'>Skylake-Server</model>"));
    }
}
