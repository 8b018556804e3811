//! Edits of guest configuration files: pure functions from a file's text to its fixed text.
//!
//! One module per file format. Each function takes the file as it is and returns `None` when
//! nothing needs to change (so running a fix-up twice changes nothing the second time), or an
//! [`Edit`]: the new text and one line per change for the report. No I/O happens here: the
//! fix-ups in [`crate::fixups`] read and write the guest's files around these functions, which
//! keeps every rule unit-testable on the files' real formats.

pub mod cloud_init;
pub mod dracut;
pub mod fstab;
pub mod grub_default;
pub mod ifcfg;
pub mod ifupdown;
pub mod initramfs_tools;
pub mod kconfig;
pub mod netplan;
pub mod nm_keyfile;
pub mod systemd_net;
pub mod udev_net;

/// A file's new text and what changed, one line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The whole new content of the file.
    pub text: String,
    /// What changed, for the report (e.g. `removed rootdelay=300 from GRUB_CMDLINE_LINUX`).
    pub changes: Vec<String>,
}

/// The virtio drivers a KVM guest needs early: the PCI transport, the disk (virtio-blk and
/// virtio-scsi) and the NIC.
pub const VIRTIO_DRIVERS: [&str; 4] = ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"];

/// Splits `text` into lines that keep their line ending, so an edit can rewrite some lines and
/// leave every other byte alone.
pub(crate) fn lines_with_endings(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

/// Appends `line` (without its newline) to `out`, making sure `out` ends with a newline first.
pub(crate) fn push_line(out: &mut String, line: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
}
