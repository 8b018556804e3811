//! VMware virtual disks (VMDK), after VMware's "Virtual Disk Format 5.0".
//!
//! A VMDK is a [descriptor](descriptor::Descriptor) (text: the disk's type, its parent, its
//! extents) and one or more extents holding the data:
//!
//! * `monolithicSparse`: one hosted [sparse](sparse) file, the descriptor embedded after its
//!   header;
//! * `streamOptimized` (OVA / OVF exports): the same, grains deflated, tables possibly at the
//!   end behind a footer ([`stream`]);
//! * `monolithicFlat`, `vmfs`: a descriptor file and one raw `-flat.vmdk`;
//! * `twoGbMaxExtentSparse` / `twoGbMaxExtentFlat`: a descriptor file and several `-s001.vmdk`
//!   / `-f001.vmdk` extents of at most 2 GiB, concatenated ([`extent`]).
//!
//! A monolithic sparse or stream-optimized VMDK can also be read in place from a byte range of
//! a larger file ([`VmdkReader::open_region`]: the disk inside an OVA), through [`region`].
//!
//! Extent files are found relative to the descriptor's directory. Delta disks (a `parentCID`
//! other than `ffffffff`: snapshots, linked clones) need their parent chain and are refused,
//! as are ESXi's `vmfsSparse` / `seSparse` / raw-device extents; each error names the file and
//! what to do. Every count and offset in a header is checked against the file's length
//! before anything is allocated from it.

pub mod descriptor;
pub(crate) mod extent;
pub mod header;
pub(crate) mod region;
pub(crate) mod sparse;
pub(crate) mod stream;

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use descriptor::Descriptor;
pub use header::SparseHeader;

use crate::buffers::AlignedBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{blocking, check_within, file_identity, file_len, open_file, read_exact_at};
use crate::source::{BoxFuture, DiskReader};
use descriptor::{Access, ExtentKind, ExtentLine};
use extent::{Extent, ExtentData};
use header::{COWD_MAGIC, GD_AT_END, HEADER_LEN, MAGIC, SECTOR};
use region::Region;
use sparse::SparseExtent;

/// The largest descriptor we read: real ones are well under 4 KiB.
const MAX_DESCRIPTOR: u64 = 1 << 20;

/// `createType`s whose extents this reader handles.
const SUPPORTED_TYPES: &[&str] = &[
    "monolithicSparse",
    "streamOptimized",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "vmfs",
    "vmfsThin",
    "vmfsPreallocated",
    "vmfsEagerZeroedThick",
];

/// What the first bytes of a file say it is, as far as VMDK goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// Starts with a sparse extent header (`KDMV`).
    Sparse,
    /// Starts with an ESX 2 `COWD` header.
    Cowd,
    /// Looks like a text descriptor.
    Descriptor,
}

/// Recognises a VMDK from the first bytes of a file: the sparse magic, or a text descriptor
/// (its `# Disk DescriptorFile` line, or, as qemu accepts, comments and blank lines followed by
/// `version=1|2|3`).
pub(crate) fn sniff(head: &[u8]) -> Option<Sniff> {
    if head.starts_with(MAGIC) {
        return Some(Sniff::Sparse);
    }
    if head.starts_with(COWD_MAGIC) {
        return Some(Sniff::Cowd);
    }
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let end = head.iter().position(|&b| b == 0).unwrap_or(head.len());
    let text = String::from_utf8_lossy(&head[..end]);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("# Disk DescriptorFile") {
            return Some(Sniff::Descriptor);
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let version = line.strip_prefix("version=").map(str::trim);
        return matches!(version, Some("1" | "2" | "3")).then_some(Sniff::Descriptor);
    }
    None
}

fn cowd_error(path: &Path) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "is an ESX vmfsSparse (\"COWD\") extent, which this reader does not support; consolidate or clone the disk to a thick or monolithicSparse VMDK first",
    )
    .with_path(path)
}

/// Reads a VMDK of any supported kind as one disk.
#[derive(Debug)]
pub struct VmdkReader {
    path: PathBuf,
    size: u64,
    create_type: String,
    adapter_type: Option<String>,
    extents: Arc<Vec<Extent>>,
    identity: String,
}

impl VmdkReader {
    /// Opens the VMDK at `path`: a sparse file (monolithicSparse, streamOptimized, or one
    /// extent of a split disk on its own), or a descriptor file naming its extents.
    pub fn open(path: &Path) -> Result<Self> {
        let file = Arc::new(open_file(path)?);
        let len = file_len(&file, path)?;
        let head = read_exact_at(&file, path, vec![0; len.min(512) as usize], 0)?;
        VmdkReader::from_file(file, path, len, &head)
    }

    /// Opens the monolithic sparse or stream-optimized VMDK stored in `len` bytes of the file
    /// at `path` from byte `base`, in place: the disk of an OVA, which is a tar archive.
    /// `member` names it in messages and identities (`path(member)`); offsets in errors are
    /// relative to `base`.
    ///
    /// Only a single-file VMDK can live in a region: a text descriptor names extent files,
    /// which an archive member cannot point to.
    pub fn open_region(path: &Path, base: u64, len: u64, member: &str) -> Result<Self> {
        let file = open_file(path)?;
        let file_len = file_len(&file, path)?;
        let name = PathBuf::from(format!("{}({member})", path.display()));
        if base.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                format!(
                    "{len} bytes from byte {base} do not fit in the {file_len}-byte file (truncated?)"
                ),
            )
            .with_path(&name));
        }
        let region = Region::part(file, base, len);
        let head = region::read_exact_at(&region, &name, vec![0; len.min(512) as usize], 0)?;
        match sniff(&head) {
            Some(Sniff::Sparse) => VmdkReader::open_sparse(Arc::new(region), &name),
            Some(Sniff::Cowd) => Err(cowd_error(&name)),
            Some(Sniff::Descriptor) => Err(Error::new(
                ErrorKind::Unsupported,
                "is a VMDK text descriptor, whose extents are separate files; inside an archive only a monolithicSparse or streamOptimized VMDK can be read (unpack the archive and convert the descriptor file)",
            )
            .with_path(&name)),
            None => Err(not_a_vmdk(&name)),
        }
    }

    /// [`open`](Self::open) for a file already opened: `len` bytes, starting with `head`.
    pub(crate) fn from_file(file: Arc<File>, path: &Path, len: u64, head: &[u8]) -> Result<Self> {
        match sniff(head) {
            Some(Sniff::Sparse) => {
                let file = Arc::try_unwrap(file).or_else(|f| {
                    f.try_clone()
                        .map_err(|e| Error::io("cannot reopen", e).with_path(path))
                })?;
                VmdkReader::open_sparse(Arc::new(Region::whole(file, len)), path)
            }
            Some(Sniff::Descriptor) => VmdkReader::open_descriptor(&file, path, len),
            Some(Sniff::Cowd) => Err(cowd_error(path)),
            None => Err(not_a_vmdk(path)),
        }
    }

    /// The descriptor's `createType` (`monolithicSparse` for a sparse file without one).
    pub fn create_type(&self) -> &str {
        &self.create_type
    }

    /// The descriptor's `ddb.adapterType` (`ide`, `lsilogic`, `buslogic`, `pvscsi`, …), which
    /// says what controller the guest expects.
    pub fn adapter_type(&self) -> Option<&str> {
        self.adapter_type.as_deref()
    }

    /// A sparse file read as a whole disk: its embedded descriptor (if any) is consulted for
    /// the type and the parent, but the data is this one file, as qemu does.
    fn open_sparse(file: Arc<Region>, path: &Path) -> Result<Self> {
        let len = file.len();
        let (header, header_at) = read_sparse_header(&file, path, len)?;
        let descriptor = embedded_descriptor(&file, path, len, &header)?;
        if let Some(d) = &descriptor {
            refuse_delta(d, path)?;
        }
        let sparse = SparseExtent::open(file.clone(), path, len, &header, header_at)?;
        let size = sparse.size();
        let create_type = descriptor
            .as_ref()
            .and_then(|d| d.create_type.clone())
            .unwrap_or_else(|| {
                if header.compressed() {
                    "streamOptimized".into()
                } else {
                    "monolithicSparse".into()
                }
            });
        Ok(VmdkReader {
            path: path.to_owned(),
            size,
            create_type,
            adapter_type: descriptor.and_then(|d| d.adapter_type),
            extents: Arc::new(vec![Extent {
                start: 0,
                len: size,
                data: ExtentData::Sparse(sparse),
            }]),
            identity: region_identity(&file, path, size),
        })
    }

    /// A text descriptor and the extent files it names.
    fn open_descriptor(file: &File, path: &Path, len: u64) -> Result<Self> {
        if len > MAX_DESCRIPTOR {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                format!(
                    "starts like a VMDK descriptor but has {len} bytes; a descriptor is a small text file (at most {MAX_DESCRIPTOR} bytes)"
                ),
            )
            .with_path(path));
        }
        let text = read_exact_at(file, path, vec![0; len as usize], 0)?;
        let d = Descriptor::parse(&text).map_err(|e| e.with_path(path))?;
        refuse_delta(&d, path)?;
        let create_type = d.create_type.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidFormat,
                "VMDK descriptor has no createType line",
            )
            .with_path(path)
        })?;
        if !SUPPORTED_TYPES.contains(&create_type.as_str()) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "VMDK createType \"{create_type}\" is not supported (supported: {}); convert it with qemu-img or vmkfstools to one of those first",
                    SUPPORTED_TYPES.join(", ")
                ),
            )
            .with_path(path));
        }
        if d.extents.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                "VMDK descriptor names no extents (no \"RW <sectors> SPARSE|FLAT|ZERO ...\" lines)",
            )
            .with_path(path));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut extents = Vec::with_capacity(d.extents.len());
        let mut identity = file_identity(file, path, len);
        let mut start = 0u64;
        for line in &d.extents {
            let (extent, id) = open_extent(path, dir, line, start)?;
            if let Some(id) = id {
                identity.push_str("; ");
                identity.push_str(&id);
            }
            start = start.checked_add(extent.len).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidFormat,
                    format!(
                        "descriptor line {}: the extents' total size overflows",
                        line.line
                    ),
                )
                .with_path(path)
            })?;
            extents.push(extent);
        }
        Ok(VmdkReader {
            path: path.to_owned(),
            size: start,
            create_type,
            adapter_type: d.adapter_type,
            extents: Arc::new(extents),
            identity,
        })
    }
}

fn not_a_vmdk(path: &Path) -> Error {
    Error::new(
        ErrorKind::InvalidFormat,
        "not a VMDK: neither a sparse extent header (\"KDMV\") nor a text descriptor (\"# Disk DescriptorFile\") at its start",
    )
    .with_path(path)
}

/// A file's identity, plus where the region lies in it when it is part of the file.
fn region_identity(region: &Region, path: &Path, size: u64) -> String {
    let mut id = file_identity(region.file(), path, size);
    if region.base() != 0 {
        id.push_str(&format!(" base={} region={}", region.base(), region.len()));
    }
    id
}

/// Reads the header of a sparse extent file, and, for a stream whose directory is at the
/// end, the footer that replaces it. Returns the header and where it was read.
fn read_sparse_header(file: &Region, path: &Path, len: u64) -> Result<(SparseHeader, u64)> {
    if len < HEADER_LEN as u64 {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!("VMDK sparse extent of {len} bytes is shorter than its 512-byte header"),
        )
        .with_path(path));
    }
    let bytes = region::read_exact_at(file, path, vec![0; HEADER_LEN], 0)?;
    if bytes.starts_with(COWD_MAGIC) {
        return Err(cowd_error(path));
    }
    let header = SparseHeader::parse(bytes.as_slice().try_into().unwrap(), 0)
        .map_err(|e| e.with_path(path))?;
    if header.gd_offset == GD_AT_END {
        return stream::read_footer(file, path, len);
    }
    Ok((header, 0))
}

/// The descriptor embedded in a sparse extent, if its header points to one with text in it.
fn embedded_descriptor(
    file: &Region,
    path: &Path,
    len: u64,
    header: &SparseHeader,
) -> Result<Option<Descriptor>> {
    if header.descriptor_offset == 0 || header.descriptor_size == 0 {
        return Ok(None);
    }
    let at = header.descriptor_offset.checked_mul(SECTOR);
    let size = header.descriptor_size.checked_mul(SECTOR);
    let (Some(at), Some(size)) = (at, size) else {
        return Err(bad_descriptor_place(path, header, len));
    };
    if size > MAX_DESCRIPTOR || at.checked_add(size).is_none_or(|end| end > len) {
        return Err(bad_descriptor_place(path, header, len));
    }
    let text = region::read_exact_at(file, path, vec![0; size as usize], at)?;
    let d = Descriptor::parse(&text).map_err(|e| e.with_path(path).at_offset(at))?;
    Ok((d.create_type.is_some() || !d.extents.is_empty()).then_some(d))
}

fn bad_descriptor_place(path: &Path, header: &SparseHeader, len: u64) -> Error {
    Error::new(
        ErrorKind::InvalidFormat,
        format!(
            "embedded descriptor ({} sectors at sector {}) does not fit in the {len}-byte file, or exceeds {MAX_DESCRIPTOR} bytes",
            header.descriptor_size, header.descriptor_offset
        ),
    )
    .with_path(path)
    .at_offset(SparseHeader::DESCRIPTOR_FIELD)
}

/// A delta disk holds only what changed since its parent: reading it alone gives a wrong disk.
fn refuse_delta(d: &Descriptor, path: &Path) -> Result<()> {
    let Some(parent) = d.parent() else {
        return Ok(());
    };
    let hint = d
        .parent_hint
        .as_deref()
        .map(|h| format!(", parent \"{h}\""))
        .unwrap_or_default();
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "is a delta VMDK (a snapshot or linked clone: parentCID={parent:08x}{hint}) that holds only the changes to its parent; consolidate the snapshots in VMware, or flatten the chain with `qemu-img convert -O vmdk` of this file, and convert the result"
        ),
    )
    .with_path(path))
}

/// Opens the extent of descriptor line `line`, starting at disk byte `start`. Returns it and
/// the identity of its file, if it has one.
fn open_extent(
    descriptor: &Path,
    dir: &Path,
    line: &ExtentLine,
    start: u64,
) -> Result<(Extent, Option<String>)> {
    let at_line = |kind: ErrorKind, msg: String| {
        Error::new(kind, format!("descriptor line {}: {msg}", line.line)).with_path(descriptor)
    };
    if line.access == Access::NoAccess {
        return Err(at_line(
            ErrorKind::Unsupported,
            "a NOACCESS extent cannot be read".into(),
        ));
    }
    let len = line.sectors.checked_mul(SECTOR).ok_or_else(|| {
        at_line(
            ErrorKind::InvalidFormat,
            format!("extent size of {} sectors overflows", line.sectors),
        )
    })?;
    let open_named = |name: &str| -> Result<(File, PathBuf, u64)> {
        let full = dir.join(name);
        // The cause goes in the message, not as a source: the CLI prints sources again.
        // O_NONBLOCK: an extent that is a FIFO must not hang the open (file_len refuses it).
        let file = std::os::unix::fs::OpenOptionsExt::custom_flags(
            std::fs::OpenOptions::new().read(true),
            libc::O_NONBLOCK,
        )
        .open(&full)
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "descriptor line {}: extent file \"{name}\"{} cannot be opened: {e}",
                    line.line,
                    if full.as_os_str() == name {
                        String::new()
                    } else {
                        format!(" ({})", full.display())
                    }
                ),
            )
            .with_path(descriptor)
        })?;
        let file_len = file_len(&file, &full)?;
        Ok((file, full, file_len))
    };
    let name = line.file.as_deref().unwrap_or("");
    let (data, id) = match &line.kind {
        ExtentKind::Zero => (ExtentData::Zero, None),
        ExtentKind::Flat => {
            let (file, full, file_len) = open_named(name)?;
            let offset = line.offset.checked_mul(SECTOR).ok_or_else(|| {
                at_line(ErrorKind::InvalidFormat, "flat extent offset overflows".into())
            })?;
            if offset.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(Error::new(
                    ErrorKind::InvalidFormat,
                    format!(
                        "flat extent file has {file_len} bytes, but descriptor line {} of {} needs {len} bytes from byte {offset} (truncated?)",
                        line.line,
                        descriptor.display()
                    ),
                )
                .with_path(&full));
            }
            let id = file_identity(&file, &full, len);
            (
                ExtentData::Flat {
                    file: Arc::new(file),
                    path: full,
                    offset,
                },
                Some(id),
            )
        }
        ExtentKind::Sparse => {
            let (file, full, file_len) = open_named(name)?;
            let file = Region::whole(file, file_len);
            let (header, header_at) = read_sparse_header(&file, &full, file_len)?;
            if header.capacity != line.sectors {
                return Err(Error::new(
                    ErrorKind::InvalidFormat,
                    format!(
                        "sparse extent header says {} sectors, but descriptor line {} of {} says {}",
                        header.capacity,
                        line.line,
                        descriptor.display(),
                        line.sectors
                    ),
                )
                .with_path(&full)
                .at_offset(header_at + SparseHeader::CAPACITY_FIELD));
            }
            let id = file_identity(file.file(), &full, len);
            let sparse = SparseExtent::open(Arc::new(file), &full, file_len, &header, header_at)?;
            (ExtentData::Sparse(sparse), Some(id))
        }
        ExtentKind::Other(kind) => {
            return Err(at_line(
                ErrorKind::Unsupported,
                format!(
                    "extent type {kind} is not supported (only SPARSE, FLAT, VMFS and ZERO are); consolidate or clone the disk to a thick or monolithicSparse VMDK first"
                ),
            ))
        }
    };
    Ok((Extent { start, len, data }, id))
}

impl DiskReader for VmdkReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        let extents = self.extents.clone();
        Box::pin(async move { blocking(move || extent::allocated(&extents)).await })
    }

    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        let extents = self.extents.clone();
        let path = self.path.clone();
        let size = self.size;
        Box::pin(async move {
            check_within(offset, buf.len(), size, &path)?;
            blocking(move || {
                let mut buf = buf;
                extent::read(&extents, offset, &mut buf)?;
                Ok(buf)
            })
            .await
        })
    }
}
