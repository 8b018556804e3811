//! The OVF descriptor (DMTF DSP0243, OVF 1.x and 2.0, as VMware and VirtualBox write it):
//! the files of the package, its disks, and the one virtual system's hardware — vCPUs,
//! memory, firmware, NICs and the disks in controller order.
//!
//! Elements and attributes are matched by local name (OVF 1 and 2 differ in namespace URIs,
//! CIM item children come as `rasd:`, `sasd:` or `epasd:`), and every error names the element
//! and its line in the descriptor.

use hyper2kvm_core::{Error, ErrorKind, Firmware, OsType, Result};
use roxmltree::{Document, Node};

/// A `References/File`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: a path relative to the descriptor (or an archive member name).
    pub href: String,
    /// `ovf:size`, when given.
    pub size: Option<u64>,
}

/// A disk of the virtual system, in boot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDisk {
    /// `ovf:diskId` (or the file id for a disk given as `ovf:/file/<id>`).
    pub disk_id: String,
    /// The file holding it.
    pub file: FileRef,
    /// `ovf:capacity` × `ovf:capacityAllocationUnits`, in bytes.
    pub capacity: Option<u64>,
    /// `ovf:format`, e.g. `…/vmdk.html#streamOptimized`.
    pub format: Option<String>,
}

/// What the descriptor says about its one virtual system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `Envelope/@ovf:version` (`1.0`, `2.0`, …), when given.
    pub version: Option<String>,
    /// Every `References/File`.
    pub files: Vec<FileRef>,
    /// The virtual system's name (`Name`, else `ovf:id`).
    pub name: String,
    /// Resource type 3's `VirtualQuantity`.
    pub vcpus: Option<u32>,
    /// Resource type 4's `VirtualQuantity` × `AllocationUnits`, in MiB.
    pub memory_mib: Option<u64>,
    /// EFI when the descriptor says so (VMware's `firmware` config, VirtualBox's
    /// `Firmware type="EFI"`), else BIOS.
    pub firmware: Firmware,
    /// VMware's `uefi.secureBoot.enabled`, when present.
    pub secure_boot: Option<bool>,
    /// Resource type 10 items.
    pub nics: u32,
    /// The guest family, from `OperatingSystemSection`.
    pub os_type: OsType,
    /// Disks (resource type 17) by controller, then `AddressOnParent`.
    pub disks: Vec<OvfDisk>,
}

const RT_CPU: &str = "3";
const RT_MEMORY: &str = "4";
const RT_IDE: &str = "5";
const RT_SCSI: &str = "6";
const RT_ETHERNET: &str = "10";
const RT_DISK: &str = "17";
const RT_SATA: &str = "20";

/// Parses descriptor text; `name` (the file, or `archive.ova(x.ovf)`) prefixes errors.
pub fn parse(text: &str, name: &str) -> Result<Descriptor> {
    let doc = Document::parse(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidFormat,
            format!("not a valid OVF descriptor (XML): {e}"),
        )
        .with_subject(name)
    })?;
    let p = Parser { doc: &doc, name };
    p.descriptor()
}

struct Parser<'a, 'input> {
    doc: &'a Document<'input>,
    name: &'a str,
}

fn attr<'a>(node: Node<'a, '_>, local: &str) -> Option<&'a str> {
    node.attributes()
        .find(|a| a.name() == local)
        .map(|a| a.value())
}

fn children<'a, 'i>(node: Node<'a, 'i>, local: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == local)
}

fn child<'a, 'i>(node: Node<'a, 'i>, local: &'a str) -> Option<Node<'a, 'i>> {
    children(node, local).next()
}

fn child_text<'a>(node: Node<'a, '_>, local: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == local)
        .and_then(|c| c.text())
        .map(str::trim)
}

impl Parser<'_, '_> {
    fn error(&self, node: Node, msg: String) -> Error {
        let pos = self.doc.text_pos_at(node.range().start);
        Error::new(ErrorKind::InvalidFormat, format!("line {}: {msg}", pos.row))
            .with_subject(self.name)
    }

    fn descriptor(&self) -> Result<Descriptor> {
        let env = self.doc.root_element();
        if env.tag_name().name() != "Envelope" {
            return Err(self.error(
                env,
                format!(
                    "the root element is <{}>, not an OVF <Envelope>",
                    env.tag_name().name()
                ),
            ));
        }
        let files = self.files(env)?;
        let systems: Vec<Node> = env
            .descendants()
            .filter(|n| n.is_element() && n.tag_name().name() == "VirtualSystem")
            .collect();
        let system = match systems.as_slice() {
            [one] => *one,
            [] => {
                return Err(self.error(
                    env,
                    "the descriptor has no <VirtualSystem>: nothing to import".into(),
                ))
            }
            many => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported OVF variant: a VirtualSystemCollection of {} virtual systems; import takes one VM per OVF (export the VMs one by one)",
                        many.len()
                    ),
                )
                .with_subject(self.name))
            }
        };
        let disk_defs = self.disk_section(env, &files)?;
        let hw = child(system, "VirtualHardwareSection").ok_or_else(|| {
            self.error(
                system,
                "the VirtualSystem has no <VirtualHardwareSection>".into(),
            )
        })?;
        let name = child_text(system, "Name")
            .filter(|s| !s.is_empty())
            .or_else(|| attr(system, "id"))
            .unwrap_or("vm")
            .to_string();
        let (firmware, secure_boot) = self.firmware(system, hw);
        let mut d = Descriptor {
            version: attr(env, "version").map(str::to_string),
            files: files.clone(),
            name,
            vcpus: None,
            memory_mib: None,
            firmware,
            secure_boot,
            nics: 0,
            os_type: os_type(system),
            disks: Vec::new(),
        };
        // Controllers by InstanceID, in document order: disks sort by controller, then by
        // their address on it.
        let mut controllers: Vec<String> = Vec::new();
        let items: Vec<Node> = hw
            .children()
            .filter(|c| {
                c.is_element()
                    && matches!(
                        c.tag_name().name(),
                        "Item" | "StorageItem" | "EthernetPortItem"
                    )
            })
            .collect();
        for item in &items {
            let rt = child_text(*item, "ResourceType").unwrap_or("");
            if matches!(rt, RT_IDE | RT_SCSI | RT_SATA) {
                if let Some(id) = child_text(*item, "InstanceID") {
                    controllers.push(id.to_string());
                }
            }
        }
        let mut disks: Vec<((usize, u64, usize), OvfDisk)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let item = *item;
            let rt = child_text(item, "ResourceType").unwrap_or("");
            match rt {
                RT_CPU => {
                    let q = self.quantity(item, "CPU")?;
                    d.vcpus = Some(u32::try_from(q).map_err(|_| {
                        self.error(item, format!("CPU VirtualQuantity {q} is not a vCPU count"))
                    })?);
                }
                RT_MEMORY => {
                    let q = self.quantity(item, "memory")?;
                    let units = child_text(item, "AllocationUnits").unwrap_or("byte * 2^20");
                    let unit = allocation_units(units).ok_or_else(|| {
                        self.error(
                            item,
                            format!("memory AllocationUnits \"{units}\" is not a unit this reader knows (e.g. \"byte * 2^20\", \"MegaBytes\")"),
                        )
                    })?;
                    let bytes = q.checked_mul(unit).ok_or_else(|| {
                        self.error(item, format!("memory of {q} × {unit} bytes overflows"))
                    })?;
                    d.memory_mib = Some(bytes.div_ceil(1 << 20));
                }
                RT_ETHERNET => d.nics += 1,
                RT_DISK => {
                    let Some(host) = child_text(item, "HostResource") else {
                        return Err(self.error(item, "disk item without <HostResource>".into()));
                    };
                    let disk = self.resolve_disk(item, host, &disk_defs, &files)?;
                    let controller = child_text(item, "Parent")
                        .and_then(|p| controllers.iter().position(|c| c == p))
                        .unwrap_or(usize::MAX);
                    let address = child_text(item, "AddressOnParent")
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(u64::MAX);
                    disks.push(((controller, address, index), disk));
                }
                _ => {}
            }
        }
        disks.sort_by_key(|(k, _)| *k);
        d.disks = disks.into_iter().map(|(_, disk)| disk).collect();
        if d.disks.is_empty() {
            return Err(self.error(
                hw,
                "the virtual hardware has no disk (no item of ResourceType 17 with a HostResource): nothing to import".into(),
            ));
        }
        Ok(d)
    }

    fn files(&self, env: Node) -> Result<Vec<FileRef>> {
        let mut out = Vec::new();
        let Some(refs) = child(env, "References") else {
            return Ok(out);
        };
        for f in children(refs, "File") {
            let id = attr(f, "id").ok_or_else(|| self.error(f, "<File> without ovf:id".into()))?;
            let href = attr(f, "href")
                .ok_or_else(|| self.error(f, format!("<File ovf:id=\"{id}\"> without ovf:href")))?;
            let size = match attr(f, "size") {
                None => None,
                Some(s) => Some(s.trim().parse::<u64>().map_err(|_| {
                    self.error(
                        f,
                        format!("File \"{id}\": ovf:size \"{s}\" is not a number of bytes"),
                    )
                })?),
            };
            if attr(f, "compression").is_some_and(|c| c != "identity") {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported OVF variant: File \"{id}\" ({href}) is stored with ovf:compression=\"{}\"; unpack it (gunzip) and edit the descriptor, or re-export without compression",
                        attr(f, "compression").unwrap_or("")
                    ),
                )
                .with_subject(self.name));
            }
            if attr(f, "chunkSize").is_some() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("unsupported OVF variant: File \"{id}\" ({href}) is split into chunks (ovf:chunkSize); join the chunks first"),
                )
                .with_subject(self.name));
            }
            out.push(FileRef {
                id: id.to_string(),
                href: href.to_string(),
                size,
            });
        }
        Ok(out)
    }

    /// `DiskSection/Disk` by `ovf:diskId`.
    fn disk_section(&self, env: Node, files: &[FileRef]) -> Result<Vec<OvfDisk>> {
        let mut out = Vec::new();
        let Some(section) = child(env, "DiskSection") else {
            return Ok(out);
        };
        for disk in children(section, "Disk") {
            let id = attr(disk, "diskId")
                .ok_or_else(|| self.error(disk, "<Disk> without ovf:diskId".into()))?;
            let Some(file_ref) = attr(disk, "fileRef") else {
                // A disk with no file is an empty disk the importer would create.
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("unsupported OVF variant: Disk \"{id}\" has no ovf:fileRef (an empty disk to create); add it after the import"),
                )
                .with_subject(self.name));
            };
            let file = files.iter().find(|f| f.id == file_ref).ok_or_else(|| {
                self.error(
                    disk,
                    format!(
                        "Disk \"{id}\": ovf:fileRef \"{file_ref}\" names no <File> in <References>"
                    ),
                )
            })?;
            let capacity = match attr(disk, "capacity") {
                None => None,
                Some(c) => {
                    let units = attr(disk, "capacityAllocationUnits").unwrap_or("byte");
                    let unit = allocation_units(units).ok_or_else(|| {
                        self.error(disk, format!("Disk \"{id}\": ovf:capacityAllocationUnits \"{units}\" is not a unit this reader knows"))
                    })?;
                    let n: u64 = c.trim().parse().map_err(|_| {
                        self.error(
                            disk,
                            format!("Disk \"{id}\": ovf:capacity \"{c}\" is not a number"),
                        )
                    })?;
                    Some(n.checked_mul(unit).ok_or_else(|| {
                        self.error(
                            disk,
                            format!("Disk \"{id}\": capacity {n} × {unit} overflows"),
                        )
                    })?)
                }
            };
            out.push(OvfDisk {
                disk_id: id.to_string(),
                file: file.clone(),
                capacity,
                format: attr(disk, "format").map(str::to_string),
            });
        }
        Ok(out)
    }

    /// `ovf:/disk/<id>` (or `/disk/<id>`) names a DiskSection disk; `ovf:/file/<id>` a file.
    fn resolve_disk(
        &self,
        item: Node,
        host: &str,
        disks: &[OvfDisk],
        files: &[FileRef],
    ) -> Result<OvfDisk> {
        let rest = host.strip_prefix("ovf:").unwrap_or(host);
        if let Some(id) = rest.strip_prefix("/disk/") {
            return disks
                .iter()
                .find(|d| d.disk_id == id)
                .cloned()
                .ok_or_else(|| {
                    self.error(
                        item,
                        format!("HostResource \"{host}\" names no Disk in <DiskSection>"),
                    )
                });
        }
        if let Some(id) = rest.strip_prefix("/file/") {
            let file = files.iter().find(|f| f.id == id).ok_or_else(|| {
                self.error(
                    item,
                    format!("HostResource \"{host}\" names no <File> in <References>"),
                )
            })?;
            return Ok(OvfDisk {
                disk_id: id.to_string(),
                file: file.clone(),
                capacity: None,
                format: None,
            });
        }
        Err(self.error(
            item,
            format!("HostResource \"{host}\" is neither ovf:/disk/<id> nor ovf:/file/<id>"),
        ))
    }

    fn quantity(&self, item: Node, what: &str) -> Result<u64> {
        let q = child_text(item, "VirtualQuantity")
            .ok_or_else(|| self.error(item, format!("{what} item without <VirtualQuantity>")))?;
        q.parse().map_err(|_| {
            self.error(
                item,
                format!("{what} VirtualQuantity \"{q}\" is not a number"),
            )
        })
    }

    fn firmware(&self, system: Node, hw: Node) -> (Firmware, Option<bool>) {
        let mut firmware = Firmware::Bios;
        let mut secure_boot = None;
        for n in system.descendants().filter(|n| n.is_element()) {
            let tag = n.tag_name().name();
            // VMware: <vmw:Config vmw:key="firmware" vmw:value="efi"/>.
            if tag == "Config" || tag == "ExtraConfig" {
                match (attr(n, "key"), attr(n, "value")) {
                    (Some("firmware"), Some(v)) if v.eq_ignore_ascii_case("efi") => {
                        firmware = Firmware::Uefi
                    }
                    (Some("uefi.secureBoot.enabled"), Some(v)) => {
                        secure_boot = Some(v.eq_ignore_ascii_case("true"))
                    }
                    _ => {}
                }
            }
            // VirtualBox: <vbox:Machine><Hardware><Firmware type="EFI"/>.
            if tag == "Firmware"
                && attr(n, "type").is_some_and(|t| t.to_ascii_uppercase().starts_with("EFI"))
            {
                firmware = Firmware::Uefi;
            }
        }
        // An ovf:firmware attribute on the hardware section or the system, where a writer
        // puts one.
        for n in [hw, system] {
            if let Some(v) = attr(n, "firmware") {
                if v.eq_ignore_ascii_case("efi") || v.eq_ignore_ascii_case("uefi") {
                    firmware = Firmware::Uefi;
                }
            }
        }
        (firmware, secure_boot)
    }
}

/// The guest family from `OperatingSystemSection`: VMware's `vmw:osType`, the description,
/// or CIM's id 36 (LINUX).
fn os_type(system: Node) -> OsType {
    let Some(os) = child(system, "OperatingSystemSection") else {
        return OsType::Unknown;
    };
    let text = format!(
        "{} {}",
        attr(os, "osType").unwrap_or(""),
        child_text(os, "Description").unwrap_or("")
    )
    .to_ascii_lowercase();
    if text.contains("windows") || text.trim_start().starts_with("win") {
        return OsType::Windows;
    }
    const LINUX: &[&str] = &[
        "linux", "ubuntu", "debian", "centos", "rhel", "red hat", "suse", "sles", "fedora",
        "oracle", "alma", "rocky", "photon", "coreos",
    ];
    if LINUX.iter().any(|w| text.contains(w)) || attr(os, "id") == Some("36") {
        return OsType::Linux;
    }
    OsType::Unknown
}

/// Bytes per unit of a DSP0004 programmatic unit (`byte * 2^20`, `byte*2^30`) or the
/// spelled-out units exporters use (`MegaBytes`, `MB`, `GigaBytes`).
pub fn allocation_units(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "byte" | "bytes" | "b" => return Some(1),
        "kilobytes" | "kb" | "kib" => return Some(1 << 10),
        "megabytes" | "mb" | "mib" => return Some(1 << 20),
        "gigabytes" | "gb" | "gib" => return Some(1 << 30),
        "terabytes" | "tb" | "tib" => return Some(1 << 40),
        _ => {}
    }
    let mut parts = t.split('*').map(str::trim);
    let base = parts.next()?;
    if !base.eq_ignore_ascii_case("byte") && !base.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut n: u64 = 1;
    for factor in parts {
        let f = match factor.split_once('^') {
            Some((b, e)) => {
                let b: u64 = b.trim().parse().ok()?;
                let e: u32 = e.trim().parse().ok()?;
                b.checked_pow(e)?
            }
            None => factor.parse().ok()?,
        };
        n = n.checked_mul(f)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests;
