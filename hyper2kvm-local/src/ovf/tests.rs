use super::*;

fn vmware() -> String {
    include_str!("../../testdata/vmware.ovf")
        .replace("@SIZE1@", "1000")
        .replace("@SIZE2@", "2000")
        .replace("@CAP1@", "64")
        .replace("@CAP2@", "32")
}

#[test]
fn vmware_descriptor() {
    let d = parse(&vmware(), "web01.ovf").unwrap();
    assert_eq!(d.name, "web01");
    assert_eq!(d.vcpus, Some(2));
    assert_eq!(d.memory_mib, Some(4096));
    assert_eq!(d.firmware, Firmware::Uefi);
    assert_eq!(d.secure_boot, Some(true));
    assert_eq!(d.nics, 2);
    assert_eq!(d.os_type, OsType::Linux);
    // Hard disk 2 comes first in the document; AddressOnParent puts disk 1 first.
    let ids: Vec<_> = d.disks.iter().map(|d| d.disk_id.as_str()).collect();
    assert_eq!(ids, ["vmdisk1", "vmdisk2"]);
    assert_eq!(d.disks[0].file.href, "web01-disk1.vmdk");
    assert_eq!(d.disks[0].file.size, Some(1000));
    assert_eq!(d.disks[0].capacity, Some(64 << 20));
    assert_eq!(d.disks[1].capacity, Some(32 << 20));
}

#[test]
fn virtualbox_ovf2_descriptor() {
    let d = parse(include_str!("../../testdata/virtualbox.ovf"), "box.ovf").unwrap();
    assert_eq!(d.version.as_deref(), Some("2.0"));
    assert_eq!(d.name, "box");
    assert_eq!((d.vcpus, d.memory_mib), (Some(1), Some(2048)));
    assert_eq!(d.firmware, Firmware::Uefi);
    assert_eq!(d.secure_boot, None);
    assert_eq!(d.nics, 1);
    assert_eq!(d.os_type, OsType::Linux);
    assert_eq!(d.disks.len(), 1);
    assert_eq!(d.disks[0].capacity, Some(10 << 30));
}

#[test]
fn bios_without_a_firmware_setting() {
    let text = vmware().replace("vmw:value=\"efi\"", "vmw:value=\"bios\"");
    assert_eq!(parse(&text, "x").unwrap().firmware, Firmware::Bios);
}

#[test]
fn units() {
    assert_eq!(allocation_units("byte * 2^20"), Some(1 << 20));
    assert_eq!(allocation_units("byte*2^30"), Some(1 << 30));
    assert_eq!(allocation_units("MegaBytes"), Some(1 << 20));
    assert_eq!(allocation_units("byte"), Some(1));
    assert_eq!(allocation_units("byte * 1024"), Some(1024));
    assert_eq!(allocation_units("hertz * 10^6"), None);
}

#[test]
fn errors_name_the_element_and_line() {
    let text = vmware().replace("ovf:fileRef=\"file2\"", "ovf:fileRef=\"file9\"");
    let err = parse(&text, "x.ova(web01.ovf)").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "x.ova(web01.ovf): line 11: Disk \"vmdisk2\": ovf:fileRef \"file9\" names no <File>"
        ),
        "{msg}"
    );
    let text = vmware().replace("ovf:/disk/vmdisk2", "ovf:/disk/nope");
    let msg = parse(&text, "x.ovf").unwrap_err().to_string();
    assert!(
        msg.contains("HostResource \"ovf:/disk/nope\" names no Disk"),
        "{msg}"
    );
    let text = vmware().replace("<rasd:VirtualQuantity>4096", "<rasd:VirtualQuantity>lots");
    let msg = parse(&text, "x.ovf").unwrap_err().to_string();
    assert!(msg.contains("memory VirtualQuantity \"lots\""), "{msg}");
    let msg = parse("<Envelope><oops></Envelope>", "x.ovf")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("x.ovf: not a valid OVF descriptor (XML)"),
        "{msg}"
    );
    let two = vmware().replace(
        "</Envelope>",
        "<VirtualSystemCollection><VirtualSystem ovf:id=\"a\"/><VirtualSystem ovf:id=\"b\"/></VirtualSystemCollection></Envelope>",
    );
    let err = parse(&two, "x.ovf").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("unsupported OVF variant"), "{err}");
}
