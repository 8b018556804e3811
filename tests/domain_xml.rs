//! Every domain XML we write is held to libvirt's schema with `virt-xml-validate` (Debian
//! `libvirt-clients`, which needs `libxml2-utils`; `.ci/run` installs both).

mod support;

use std::process::Command;

use hyper2kvm::core::libvirt::{domain_xml, CpuMode, DomainDisk, DomainSpec, NetworkAttachment};
use hyper2kvm::core::{Firmware, OsType, OutputFormat};
use support::Scratch;

fn validate(xml: &str, dir: &Scratch, name: &str) {
    let path = dir.path(name);
    std::fs::write(&path, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&path)
        .arg("domain")
        .output()
        .expect("virt-xml-validate must be installed (Debian libvirt-clients + libxml2-utils)");
    assert!(
        out.status.success(),
        "{name} is not a valid libvirt domain:\n{}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_variant_validates() {
    let dir = Scratch::new("domain-xml");
    let disks = |n: usize, format| {
        (0..n)
            .map(|i| DomainDisk {
                path: format!("/srv/vm/disk-{i} & <x>.img").into(),
                format,
            })
            .collect::<Vec<_>>()
    };
    let mut n = 0;
    for (firmware, secure) in [
        (Firmware::Bios, false),
        (Firmware::Uefi, false),
        (Firmware::Uefi, true),
    ] {
        for os_type in [OsType::Linux, OsType::Windows, OsType::Unknown] {
            for cpu in [
                CpuMode::HostPassthrough,
                CpuMode::HostModel,
                CpuMode::Custom("EPYC".into()),
            ] {
                for (format, count) in [(OutputFormat::Qcow2, 1), (OutputFormat::Raw, 30)] {
                    for network in [
                        NetworkAttachment::Network("default".into()),
                        NetworkAttachment::Bridge("br0".into()),
                    ] {
                        let spec = DomainSpec {
                            name: format!("vm-{n}.prod_web"),
                            description: "Azure VM 'x' in rg <a&b>".into(),
                            vcpus: 4,
                            memory_mib: 16384,
                            firmware,
                            os_type,
                            cpu: cpu.clone(),
                            disks: disks(count, format),
                            network,
                            nics: count.min(3) as u32,
                            secure_boot: secure,
                            tpm: secure,
                        };
                        validate(&domain_xml(&spec), &dir, &format!("domain-{n}.xml"));
                        n += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n, 108);
}
