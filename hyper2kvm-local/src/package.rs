//! What one SRC of `hyper2kvm import` is, opened: an OVA, an OVF with its files beside it, a
//! Hyper-V export folder, or a single disk image — a VM with its disks (readers already
//! opened, so every structural problem is found before the run writes anything) and its
//! hardware.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper2kvm_core::{
    open_disk, DiskReader, Error, ErrorKind, Firmware, Hardware, InputFormat, OsType, Result,
    VmdkReader,
};

use crate::hyperv;
use crate::manifest::{Entry, Manifest};
use crate::ovf::{self, Descriptor};
use crate::tar::TarIndex;

/// Hardware for sources without a descriptor (a Hyper-V export, a disk image): the
/// `--vcpus`, `--memory` and `--firmware` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Virtual CPUs (default 2).
    pub vcpus: u32,
    /// Memory in MiB (default 4096).
    pub memory_mib: u64,
    /// Firmware (default BIOS).
    pub firmware: Firmware,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            vcpus: 2,
            memory_mib: 4096,
            firmware: Firmware::Bios,
        }
    }
}

/// What kind of package a SRC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tar archive holding an OVF descriptor and its disks.
    Ova,
    /// An OVF descriptor with its files in the same folder.
    Ovf,
    /// A Hyper-V export folder (`Virtual Hard Disks/`).
    HyperV,
    /// A single disk image (VHD, VHDX, VMDK, raw).
    Disk,
}

impl Kind {
    /// How reports name it: "an OVA", …
    pub fn what(self) -> &'static str {
        match self {
            Kind::Ova => "OVA",
            Kind::Ovf => "OVF",
            Kind::HyperV => "Hyper-V export",
            Kind::Disk => "disk image",
        }
    }
}

/// One disk of a package.
#[derive(Clone)]
pub struct PackageDisk {
    /// Its file (or archive member) name.
    pub name: String,
    /// How it is shown in messages: a path, or `archive.ova(member)`.
    pub shown: PathBuf,
    /// The opened reader.
    pub reader: Arc<dyn DiskReader>,
    /// The manifest's digest of it, to check before it is converted.
    pub digest: Option<Entry>,
    /// The bytes the digest covers: (file, offset, length).
    pub bytes: (PathBuf, u64, u64),
}

/// One opened SRC: one VM.
#[derive(Clone)]
pub struct Package {
    /// What it is.
    pub kind: Kind,
    /// The SRC as given.
    pub path: PathBuf,
    /// The VM's name.
    pub name: String,
    /// vCPUs, memory, firmware, secure boot and NIC count.
    pub hardware: Hardware,
    /// True when the hardware came from a descriptor, not from the flags.
    pub described: bool,
    /// The guest family, when known.
    pub os_type: OsType,
    /// Disks in boot order: the first is the OS disk.
    pub disks: Vec<PackageDisk>,
    /// The manifest's name, when the package has one.
    pub manifest: Option<String>,
}

/// Opens `src`: what it is follows from what it holds (a directory's contents, a file's tar
/// header or `.ovf` name), else it is read as a disk image.
pub fn open(src: &Path, defaults: &Defaults) -> Result<Package> {
    let meta = std::fs::metadata(src).map_err(|e| Error::io("cannot open", e).with_path(src))?;
    if meta.is_dir() {
        let ovfs = list(src, |n| n.ends_with(".ovf"))?;
        return match ovfs.as_slice() {
            [one] => open_ovf(one),
            [] if src.join("Virtual Hard Disks").is_dir() => open_hyperv(src, defaults),
            [] => Err(Error::new(
                ErrorKind::InvalidArgument,
                "is a folder with neither an .ovf descriptor nor a \"Virtual Hard Disks\" folder (a Hyper-V export): give an OVA, an OVF, a Hyper-V export folder or a disk image",
            )
            .with_path(src)),
            many => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("holds {} .ovf descriptors; name the one to import", many.len()),
            )
            .with_path(src)),
        };
    }
    let lower = src.to_string_lossy().to_ascii_lowercase();
    if lower.ends_with(".ovf") {
        return open_ovf(src);
    }
    if lower.ends_with(".ova") || is_tar(src)? {
        return open_ova(src);
    }
    open_single(src, defaults)
}

fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list", e).with_path(dir))?;
    for e in entries {
        let e = e.map_err(|e| Error::io("cannot list", e).with_path(dir))?;
        let name = e.file_name().to_string_lossy().to_ascii_lowercase();
        if keep(&name) && e.path().is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// A ustar or GNU tar header: "ustar" at byte 257.
fn is_tar(path: &Path) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).map_err(|e| Error::io("cannot open", e).with_path(path))?;
    let mut b = [0u8; 6];
    Ok(file.read_exact_at(&mut b, 257).is_ok() && &b[..5] == b"ustar")
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into())
}

fn from_descriptor(
    kind: Kind,
    path: &Path,
    d: &Descriptor,
    manifest: Option<&Manifest>,
    disks: Vec<PackageDisk>,
) -> Package {
    let mut hardware = Hardware::new(
        d.vcpus.unwrap_or(Defaults::default().vcpus),
        d.memory_mib.unwrap_or(Defaults::default().memory_mib),
        d.firmware,
    );
    hardware.secure_boot = d.secure_boot;
    hardware.nics = Some(d.nics);
    Package {
        kind,
        path: path.to_owned(),
        name: d.name.clone(),
        hardware,
        described: d.vcpus.is_some() && d.memory_mib.is_some(),
        os_type: d.os_type,
        disks,
        manifest: manifest.map(|m| m.name.clone()),
    }
}

fn open_ova(path: &Path) -> Result<Package> {
    let index = TarIndex::open(path)?;
    let shown = |member: &str| PathBuf::from(format!("{}({member})", path.display()));
    let ovfs: Vec<_> = index
        .members
        .iter()
        .filter(|m| m.name.to_ascii_lowercase().ends_with(".ovf"))
        .collect();
    let ovf_member = match ovfs.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                "is a tar archive without an .ovf descriptor: not an OVA",
            )
            .with_path(path))
        }
        many => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "unsupported OVA variant: {} .ovf descriptors in one archive",
                    many.len()
                ),
            )
            .with_path(path))
        }
    };
    let file = File::open(path).map_err(|e| Error::io("cannot open", e).with_path(path))?;
    let text = read_member(
        &file,
        path,
        ovf_member.offset,
        ovf_member.size,
        &ovf_member.name,
    )?;
    let d = ovf::parse(&text, &shown(&ovf_member.name).display().to_string())?;
    let manifest = match index
        .members
        .iter()
        .find(|m| m.name.to_ascii_lowercase().ends_with(".mf"))
    {
        Some(m) => {
            let name = shown(&m.name).display().to_string();
            Some(Manifest::parse(
                &read_member(&file, path, m.offset, m.size, &m.name)?,
                &name,
            )?)
        }
        None => None,
    };
    let mut disks = Vec::new();
    for disk in &d.disks {
        let href = &disk.file.href;
        let member = index.find(href).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "the descriptor {} names disk file \"{href}\" (File \"{}\", Disk \"{}\"), which the archive does not hold",
                    ovf_member.name, disk.file.id, disk.disk_id
                ),
            )
            .with_path(path)
        })?;
        check_size(&shown(href), disk.file.size, member.size)?;
        let reader = VmdkReader::open_region(path, member.offset, member.size, &member.name)?;
        disks.push(PackageDisk {
            name: member.name.clone(),
            shown: shown(&member.name),
            reader: Arc::new(reader),
            digest: manifest.as_ref().and_then(|m| m.get(href)).cloned(),
            bytes: (path.to_owned(), member.offset, member.size),
        });
    }
    Ok(from_descriptor(
        Kind::Ova,
        path,
        &d,
        manifest.as_ref(),
        disks,
    ))
}

fn check_size(shown: &Path, want: Option<u64>, have: u64) -> Result<()> {
    match want {
        Some(w) if w != have => Err(Error::new(
            ErrorKind::InvalidFormat,
            format!("the descriptor's ovf:size says {w} bytes, the file has {have} (truncated or replaced?)"),
        )
        .with_path(shown)),
        _ => Ok(()),
    }
}

fn read_member(file: &File, path: &Path, offset: u64, size: u64, name: &str) -> Result<String> {
    use std::os::unix::fs::FileExt;
    if size > 64 << 20 {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!("member \"{name}\" of {size} bytes is too big for a descriptor or manifest"),
        )
        .with_path(path));
    }
    let mut buf = vec![0u8; size as usize];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        Error::io(format!("reading member \"{name}\""), e)
            .with_path(path)
            .at_offset(offset)
    })?;
    String::from_utf8(buf).map_err(|e| {
        Error::new(
            ErrorKind::InvalidFormat,
            format!("member \"{name}\" is not UTF-8 text"),
        )
        .with_path(path)
        .at_offset(offset + e.utf8_error().valid_up_to() as u64)
    })
}

fn open_ovf(path: &Path) -> Result<Package> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", e).with_path(path))?;
    let d = ovf::parse(&text, &path.display().to_string())?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // The manifest is the descriptor's name with .mf.
    let mf = path.with_extension("mf");
    let manifest = if mf.is_file() {
        let text =
            std::fs::read_to_string(&mf).map_err(|e| Error::io("cannot read", e).with_path(&mf))?;
        Some(Manifest::parse(&text, &mf.display().to_string())?)
    } else {
        None
    };
    let mut disks = Vec::new();
    for disk in &d.disks {
        let href = &disk.file.href;
        let file = dir.join(href);
        let meta = std::fs::metadata(&file).map_err(|e| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "names disk file \"{href}\" (File \"{}\", Disk \"{}\"), which cannot be read: {e}",
                    disk.file.id, disk.disk_id
                ),
            )
            .with_path(path)
        })?;
        check_size(&file, disk.file.size, meta.len())?;
        let reader = open_disk(&file, InputFormat::Auto)?;
        disks.push(PackageDisk {
            name: href.clone(),
            shown: file.clone(),
            reader,
            digest: manifest.as_ref().and_then(|m| m.get(href)).cloned(),
            bytes: (file, 0, meta.len()),
        });
    }
    Ok(from_descriptor(
        Kind::Ovf,
        path,
        &d,
        manifest.as_ref(),
        disks,
    ))
}

fn open_hyperv(dir: &Path, defaults: &Defaults) -> Result<Package> {
    let vhd_dir = dir.join("Virtual Hard Disks");
    let checkpoints = list(&vhd_dir, |n| n.ends_with(".avhdx") || n.ends_with(".avhd"))?;
    if let Some(c) = checkpoints.first() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "unsupported Hyper-V export variant: the VM has checkpoints (differencing .avhdx disks); delete the checkpoints (merging them) in Hyper-V and export again",
        )
        .with_path(c));
    }
    let files = list(&vhd_dir, |n| n.ends_with(".vhdx") || n.ends_with(".vhd"))?;
    if files.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            "holds no .vhdx or .vhd disk: not a Hyper-V export",
        )
        .with_path(&vhd_dir));
    }
    let config = match hyperv::find_config(dir) {
        Some(hyperv::ConfigFile::Xml(path)) => Some(hyperv::read(&path)?),
        // Windows Server 2016+: a binary configuration whose format is not published.
        Some(hyperv::ConfigFile::Vmcx(_)) | None => None,
    };
    let mut files = files;
    if let Some(c) = &config {
        // The configuration's order (the boot disk first); disks it does not name, by name
        // after them.
        let rank = |f: &PathBuf| {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase());
            c.disk_files
                .iter()
                .position(|d| Some(d.to_ascii_lowercase()) == name)
                .unwrap_or(usize::MAX)
        };
        files.sort_by_key(rank);
    }
    let mut disks = Vec::new();
    for file in files {
        disks.push(single_disk(&file)?);
    }
    let mut package = undescribed(Kind::HyperV, dir, stem(dir), defaults, disks);
    if let Some(c) = config {
        if let Some(name) = c.name {
            package.name = name;
        }
        let h = &mut package.hardware;
        h.vcpus = c.vcpus.unwrap_or(h.vcpus);
        h.memory_mib = c.memory_mib.unwrap_or(h.memory_mib);
        if let Some(g) = c.generation {
            h.firmware = if g == 2 {
                Firmware::Uefi
            } else {
                Firmware::Bios
            };
        }
        h.secure_boot = c.secure_boot.filter(|_| h.firmware == Firmware::Uefi);
        h.nics = Some(c.nics);
        package.described = c.vcpus.is_some() && c.memory_mib.is_some();
    }
    Ok(package)
}

fn open_single(path: &Path, defaults: &Defaults) -> Result<Package> {
    let disk = single_disk(path)?;
    Ok(undescribed(
        Kind::Disk,
        path,
        stem(path),
        defaults,
        vec![disk],
    ))
}

fn single_disk(path: &Path) -> Result<PackageDisk> {
    let reader = open_disk(path, InputFormat::Auto)?;
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(PackageDisk {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        shown: path.to_owned(),
        reader,
        digest: None,
        bytes: (path.to_owned(), 0, len),
    })
}

fn undescribed(
    kind: Kind,
    path: &Path,
    name: String,
    d: &Defaults,
    disks: Vec<PackageDisk>,
) -> Package {
    Package {
        kind,
        path: path.to_owned(),
        name,
        hardware: Hardware::new(d.vcpus, d.memory_mib, d.firmware),
        described: false,
        os_type: OsType::Unknown,
        disks,
        manifest: None,
    }
}
