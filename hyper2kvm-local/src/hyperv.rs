//! The exported configuration of a Hyper-V VM: `Virtual Machines/<GUID>.xml`.
//!
//! Hyper-V on Windows Server 2012 and 2012 R2 exports the VM's configuration as XML (UTF-16
//! with a byte-order mark, or UTF-8), every value an element with a `type` attribute:
//!
//! ```xml
//! <configuration>
//!   <properties>
//!     <name type="string">web01</name>
//!     <subtype type="integer">1</subtype>            <!-- generation - 1 -->
//!   </properties>
//!   <settings>
//!     <processors><count type="integer">2</count></processors>
//!     <memory><bank><size type="integer">4096</size></bank></memory>   <!-- startup MiB -->
//!   </settings>
//!   <_GUID_0_><Connection>…</Connection>…</_GUID_0_>   <!-- a NIC: it has a Connection -->
//!   <_GUID_><controller0><drive0><pathname type="string">C:\…\web01.vhdx</pathname>…
//! </configuration>
//! ```
//!
//! Windows Server 2016 and later write a binary `.vmcx` instead, whose format is not
//! published: for those exports the hardware comes from the flags, and the import says so.

use std::path::{Path, PathBuf};

use hyper2kvm_core::{Error, ErrorKind, Result};
use roxmltree::{Document, Node};

/// What an exported configuration says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HyperVConfig {
    /// The VM's name.
    pub name: Option<String>,
    /// Virtual processors.
    pub vcpus: Option<u32>,
    /// Startup memory in MiB.
    pub memory_mib: Option<u64>,
    /// 1 (BIOS) or 2 (UEFI).
    pub generation: Option<u8>,
    /// Whether secure boot is on (generation 2).
    pub secure_boot: Option<bool>,
    /// Network adapters.
    pub nics: u32,
    /// The file names (without folders) of the virtual disks, in document order: the boot
    /// controller's first.
    pub disk_files: Vec<String>,
}

/// Where an export keeps its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// `<GUID>.xml` (Windows Server 2012 / 2012 R2).
    Xml(PathBuf),
    /// `<GUID>.vmcx` (Windows Server 2016 and later): binary, not read.
    Vmcx(PathBuf),
}

/// The configuration file in `<export>/Virtual Machines/`, if any (an XML one first).
pub fn find_config(export: &Path) -> Option<ConfigFile> {
    let dir = export.join("Virtual Machines");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let ext = |p: &Path, want: &str| {
        p.extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(want))
    };
    if let Some(xml) = names.iter().find(|p| ext(p, "xml")) {
        return Some(ConfigFile::Xml(xml.clone()));
    }
    names
        .iter()
        .find(|p| ext(p, "vmcx"))
        .map(|p| ConfigFile::Vmcx(p.clone()))
}

/// Reads and parses an exported XML configuration.
pub fn read(path: &Path) -> Result<HyperVConfig> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", e).with_path(path))?;
    let text =
        decode(&bytes).map_err(|msg| Error::new(ErrorKind::InvalidFormat, msg).with_path(path))?;
    parse(&text).map_err(|msg| Error::new(ErrorKind::InvalidFormat, msg).with_path(path))
}

/// UTF-16 (either byte order, by its BOM) or UTF-8 text.
fn decode(bytes: &[u8]) -> std::result::Result<String, String> {
    let utf16 = |le: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|_| "invalid UTF-16 text".to_string())
    };
    match bytes {
        [0xff, 0xfe, ..] => utf16(true),
        [0xfe, 0xff, ..] => utf16(false),
        [0xef, 0xbb, 0xbf, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|_| "invalid UTF-8 text".into())
        }
        _ => String::from_utf8(bytes.to_vec())
            .map_err(|_| "neither UTF-16 with a byte-order mark nor UTF-8".into()),
    }
}

fn parse(text: &str) -> std::result::Result<HyperVConfig, String> {
    // roxmltree refuses an encoding declaration that disagrees with the &str it gets, and the
    // text is decoded already: drop the declaration.
    let body = match text.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or("", |(_, b)| b),
        None => text,
    };
    let doc =
        Document::parse(body).map_err(|e| format!("not a Hyper-V configuration (XML): {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "configuration" {
        return Err(format!(
            "the root element is <{}>, not a Hyper-V <configuration>",
            root.tag_name().name()
        ));
    }
    let value = |path: &[&str]| -> Option<&str> {
        let mut node = root;
        for name in path {
            node = child(node, name)?;
        }
        node.text().map(str::trim)
    };
    let number = |path: &[&str]| -> std::result::Result<Option<u64>, String> {
        value(path)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{}: {v:?} is not a number", path.join("/")))
            })
            .transpose()
    };
    let vcpus = number(&["settings", "processors", "count"])?;
    let memory_mib = number(&["settings", "memory", "bank", "size"])?;
    let subtype = number(&["properties", "subtype"])?;
    let generation = match subtype {
        None => None,
        Some(0) => Some(1),
        Some(1) => Some(2),
        Some(n) => {
            return Err(format!(
                "properties/subtype: {n} is not a generation (0 or 1)"
            ))
        }
    };
    let secure_boot = root
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "secure_boot_enabled")
        .and_then(|n| n.text())
        .map(|t| t.trim().eq_ignore_ascii_case("true"));
    let nics = root
        .children()
        .filter(|n| n.is_element() && child(*n, "Connection").is_some())
        .count() as u32;
    // Generation 1 boots from the IDE controller: its drives first, then the SCSI
    // controllers' in document order (controllerN/driveM), which is how Generation 2 lists
    // its boot disk first.
    let mut disks: Vec<(bool, String)> = Vec::new();
    for section in root.children().filter(|n| n.is_element()) {
        let ide = section
            .tag_name()
            .name()
            .eq_ignore_ascii_case(IDE_CONTROLLER);
        for path in section
            .descendants()
            .filter(|n| n.is_element() && n.tag_name().name() == "pathname")
            .filter_map(|n| n.text())
        {
            let file = path.trim().rsplit(['\\', '/']).next().unwrap_or("");
            let lower = file.to_ascii_lowercase();
            if lower.ends_with(".vhdx") || lower.ends_with(".vhd") {
                disks.push((ide, file.to_string()));
            }
        }
    }
    disks.sort_by_key(|(ide, _)| !ide);
    let disk_files = disks.into_iter().map(|(_, f)| f).collect();
    Ok(HyperVConfig {
        name: value(&["properties", "name"])
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        vcpus: vcpus
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| format!("settings/processors/count: {v} is out of range"))
            })
            .transpose()?,
        memory_mib,
        generation,
        secure_boot,
        nics,
        disk_files,
    })
}

/// The element holding the emulated IDE controllers' drives.
const IDE_CONTROLLER: &str = "_83F8638B-8DCA-4152-9EDA-2CA8B33039B4_";

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a Windows Server 2012 R2 export (trimmed; GUIDs shortened).
    const GEN2: &str = r#"<?xml version="1.0" encoding="UTF-16" standalone="yes"?>
<configuration>
  <_2B7D0E7B-8C1B-4F44-A5C1-1B8D5F3E7A10_>
    <controller0>
      <drive0>
        <pathname type="string">D:\Exports\web01\Virtual Hard Disks\web01.vhdx</pathname>
        <type type="string">VHD</type>
      </drive0>
      <drive1>
        <pathname type="string">D:\Exports\web01\Virtual Hard Disks\web01-data.vhdx</pathname>
        <type type="string">VHD</type>
      </drive1>
    </controller0>
  </_2B7D0E7B-8C1B-4F44-A5C1-1B8D5F3E7A10_>
  <_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_0_>
    <ChannelInstanceGuid type="string">{c1a5}</ChannelInstanceGuid>
    <Connection>
      <AltPortName type="string">Dynamic Ethernet Switch Port</AltPortName>
      <AltSwitchName type="string">External</AltSwitchName>
    </Connection>
    <friendly_name type="string">Network Adapter</friendly_name>
    <is_connected type="bool">True</is_connected>
  </_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_0_>
  <_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_1_>
    <Connection><AltSwitchName type="string">Backup</AltSwitchName></Connection>
  </_8F2D1C54-3E0A-4B8C-9D63-0B5C2A1E9F20_1_>
  <properties>
    <creation_time type="bytes">AAAA</creation_time>
    <global_id type="string">4D4E1B7A-6A3C-4F0E-8B1D-2C3E5F7A9B11</global_id>
    <name type="string">web01</name>
    <subtype type="integer">1</subtype>
    <type_id type="string">Virtual Machines</type_id>
    <version type="integer">1280</version>
  </properties>
  <settings>
    <memory>
      <bank>
        <dynamic_memory_enabled type="bool">True</dynamic_memory_enabled>
        <limit type="integer">1048576</limit>
        <reservation type="integer">512</reservation>
        <size type="integer">2048</size>
      </bank>
    </memory>
    <processors>
      <count type="integer">4</count>
    </processors>
    <secure_boot_enabled type="bool">True</secure_boot_enabled>
  </settings>
</configuration>
"#;

    fn utf16le(text: &str) -> Vec<u8> {
        let mut out = vec![0xff, 0xfe];
        for u in text.encode_utf16() {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    }

    #[test]
    fn a_2012_r2_export_in_utf16() {
        let c = parse(&decode(&utf16le(GEN2)).unwrap()).unwrap();
        assert_eq!(c.name.as_deref(), Some("web01"));
        assert_eq!((c.vcpus, c.memory_mib), (Some(4), Some(2048)));
        assert_eq!(c.generation, Some(2));
        assert_eq!(c.secure_boot, Some(true));
        assert_eq!(c.nics, 2);
        assert_eq!(c.disk_files, ["web01.vhdx", "web01-data.vhdx"]);
    }

    #[test]
    fn gen1_boots_from_ide_whatever_the_document_order() {
        let text = r#"<configuration>
  <_AAAA_><controller0><drive0><pathname type="string">C:\x\data.vhdx</pathname></drive0></controller0></_AAAA_>
  <_83F8638B-8DCA-4152-9EDA-2CA8B33039B4_><controller0><drive0><pathname type="string">C:\x\os.vhd</pathname></drive0><drive1><pathname type="string">C:\x\dvd.iso</pathname></drive1></controller0></_83F8638B-8DCA-4152-9EDA-2CA8B33039B4_>
  <properties><subtype type="integer">0</subtype></properties>
</configuration>"#;
        let c = parse(text).unwrap();
        assert_eq!(c.generation, Some(1));
        assert_eq!(c.disk_files, ["os.vhd", "data.vhdx"]);
    }

    #[test]
    fn gen1_and_missing_values() {
        let text = "<configuration><properties><subtype type=\"integer\">0</subtype></properties></configuration>";
        let c = parse(&decode(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(c.generation, Some(1));
        assert_eq!((c.vcpus, c.memory_mib, c.secure_boot), (None, None, None));
        assert_eq!(c.nics, 0);
    }

    #[test]
    fn bad_values_name_the_element() {
        let e = parse("<configuration><settings><processors><count>two</count></processors></settings></configuration>").unwrap_err();
        assert!(
            e.contains("settings/processors/count") && e.contains("\"two\""),
            "{e}"
        );
        let e =
            parse("<configuration><properties><subtype>7</subtype></properties></configuration>")
                .unwrap_err();
        assert!(e.contains("properties/subtype: 7"), "{e}");
        let e = parse("<Envelope/>").unwrap_err();
        assert!(e.contains("not a Hyper-V <configuration>"), "{e}");
        assert!(
            decode(&[0xff, 0xfe, 0x00, 0xd8]).is_err(),
            "a lone surrogate"
        );
    }
}
