//! What the Windows fix-ups read from a driver's `.inf` file: the PCI hardware ids it binds
//! to (for the boot-critical entries) and its version (for the report).
//!
//! An `.inf` is an INI-like text file, usually UTF-16LE with a BOM in virtio-win, sometimes
//! plain ASCII. The models sections list `%Desc% = install, PCI\VEN_1AF4&DEV_1001&SUBSYS_…,
//! PCI\VEN_1AF4&DEV_1001`; comments start with `;`.

/// The text of an `.inf` file's bytes: UTF-16LE (with a BOM, or detected by zero high bytes)
/// or UTF-8 / ASCII.
pub fn decode(bytes: &[u8]) -> String {
    let utf16 = bytes.starts_with(&[0xff, 0xfe])
        || (bytes.len() >= 4 && bytes[1] == 0 && bytes[3] == 0 && bytes[0] != 0);
    if utf16 {
        let body = bytes.strip_prefix(&[0xff, 0xfe]).unwrap_or(bytes);
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(bytes)
            .trim_start_matches('\u{feff}')
            .to_string()
    }
}

/// The PCI hardware ids an `.inf` names (`VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00`, without
/// the `PCI\` prefix), upper-cased, in order of appearance, without duplicates.
pub fn pci_ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default();
        let Some((_, rhs)) = line.split_once('=') else {
            continue;
        };
        for field in rhs.split(',') {
            let field = field.trim().trim_matches('"').to_ascii_uppercase();
            if let Some(id) = field.strip_prefix("PCI\\") {
                if id.starts_with("VEN_") && !ids.contains(&id.to_string()) {
                    ids.push(id.to_string());
                }
            }
        }
    }
    ids
}

/// The `DriverVer` of the `[Version]` section (`08/01/2023,100.94.104.24000`), if any.
pub fn driver_ver(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split(';').next().unwrap_or_default();
        let (key, value) = line.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("DriverVer")
            .then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts that matter of virtio-win's viostor.inf (2k19/amd64).
    const VIOSTOR: &str = "; Copyright (c) 2008-2023 Red Hat, Inc.\r\n\
[Version]\r\n\
Signature=\"$WINDOWS NT$\"\r\n\
Class=SCSIAdapter\r\n\
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}\r\n\
Provider=%RHEL%\r\n\
DriverVer = 08/01/2023,100.94.104.24000\r\n\
CatalogFile=viostor.cat\r\n\
\r\n\
[Manufacturer]\r\n\
%RHEL% = RHEL,NTamd64.10.0...16299\r\n\
\r\n\
[RHEL.NTamd64.10.0...16299]\r\n\
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_1001\r\n\
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01, PCI\\VEN_1AF4&DEV_1042 ; modern\r\n\
\r\n\
[rhelscsi_Service_Inst]\r\n\
ServiceBinary  = %12%\\viostor.sys\r\n";

    #[test]
    fn hardware_ids_and_version() {
        assert_eq!(
            pci_ids(VIOSTOR),
            [
                "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
                "VEN_1AF4&DEV_1001",
                "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01",
                "VEN_1AF4&DEV_1042"
            ]
        );
        assert_eq!(
            driver_ver(VIOSTOR).as_deref(),
            Some("08/01/2023,100.94.104.24000")
        );
    }

    #[test]
    fn decodes_utf16_with_and_without_bom() {
        let utf16: Vec<u8> = VIOSTOR.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(decode(&utf16), VIOSTOR);
        let mut bom = vec![0xff, 0xfe];
        bom.extend(&utf16);
        assert_eq!(pci_ids(&decode(&bom)).len(), 4);
        assert_eq!(decode(VIOSTOR.as_bytes()), VIOSTOR);
    }
}
