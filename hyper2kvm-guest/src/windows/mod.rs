//! Windows guests: virtio drivers injected offline, a first-boot service, Azure's leftovers.
//!
//! A Windows disk from Azure boots on KVM only if its storage driver starts at boot: without
//! `viostor` (virtio-blk) or `vioscsi` (virtio-scsi) as boot-start services it stops with
//! INACCESSIBLE_BOOT_DEVICE. The drivers come from the user's virtio-win (ISO or unpacked
//! tree, [`virtio_win`] chooses the directories); the fix-ups here write them in and edit the
//! registry hives offline, as virt-v2v does:
//!
//! * `windows-drivers` ([`VirtioDrivers`]): every chosen driver package (inf, cat, sys, dll…)
//!   into `%SystemRoot%\Drivers\VirtIO`, added to the SOFTWARE hive's `DevicePath` so Plug and
//!   Play finds the network, balloon, serial, rng and pvpanic drivers itself; `viostor.sys` and
//!   `vioscsi.sys` into `System32\drivers`, their services created (kernel driver, boot start,
//!   `SCSI miniport`), and the virtio block and SCSI PCI ids bound to them: in the
//!   `DriverDatabase` (Windows 8 / Server 2012 and later) or the `CriticalDeviceDatabase`
//!   (before).
//! * `windows-firstboot` ([`Firstboot`]): a service run once as LocalSystem at the next boot,
//!   before logon (Debian's `rhsrvany`, as virt-v2v uses it): `pnputil` for every injected
//!   package, the QEMU guest agent's MSI when virtio-win has one, a log under the system root,
//!   then it deletes itself.
//! * `windows-azure-agent`, `windows-pagefile`, `windows-san-policy` ([`leftovers`]): the
//!   Azure agent services disabled (not deleted), a page file on the Azure temporary disk
//!   moved to the system drive, a SAN policy that would keep data disks offline set to
//!   OnlineAll.
//!
//! Registry edits only ever create keys and set values in the current control set
//! (`Select\Current`) and the SOFTWARE hive; nothing is deleted.

pub mod firstboot;
pub mod inf;
pub mod leftovers;
pub mod virtio_win;

mod drivers;

use std::path::PathBuf;
use std::sync::Arc;

pub use drivers::VirtioDrivers;
pub use firstboot::Firstboot;
pub use leftovers::{AzureServices, PageFile, SanPolicy};

use crate::fixups::{Action, FixUp, Plan};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::registry::{KeyEdit, RegValue};
use crate::{Error, ErrorKind, Result};
use virtio_win::{DriverDir, Variant};

/// What libguestfs' inspection says about a Windows guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsInspection {
    /// NT major version (`inspect-get-major-version`): 6 for 2008 R2 / 7, 10 for 2016 and later.
    pub major: u32,
    /// NT minor version.
    pub minor: u32,
    /// Server or client (`inspect-get-product-variant`).
    pub variant: Variant,
    /// libguestfs' architecture (`x86_64`).
    pub arch: String,
    /// The system root in the guest's file system (`/Windows`).
    pub systemroot: String,
    /// The current control set (`ControlSet001`), from `Select\Current`.
    pub control_set: String,
    /// The SYSTEM hive's path (`/Windows/System32/config/SYSTEM`).
    pub system_hive: String,
    /// The SOFTWARE hive's path.
    pub software_hive: String,
}

impl WindowsInspection {
    /// Whether Plug and Play keeps its driver bindings in the SYSTEM hive's `DriverDatabase`
    /// (Windows 8 / Server 2012, NT 6.2, and later) rather than the `CriticalDeviceDatabase`.
    pub fn has_driver_database_version(&self) -> bool {
        (self.major, self.minor) >= (6, 2)
    }
}

/// A file of virtio-win ready to copy in: its name in the guest (lower-cased, as virt-v2v
/// names them) and where it is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// The file's name in the guest.
    pub name: String,
    /// The host file (in the unpacked tree, or copied out of the ISO through libguestfs).
    pub local: PathBuf,
}

/// One driver's chosen directory and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedDriver {
    /// The directory chosen.
    pub dir: DriverDir,
    /// Its files, on the host.
    pub files: Vec<StagedFile>,
}

impl StagedDriver {
    /// The file named `name` (case-insensitive), if the package has it.
    pub fn file(&self, name: &str) -> Option<&StagedFile> {
        self.files
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

/// What virtio-win gives this guest, on the host, for the Windows fix-ups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staged {
    /// Where the drivers came from (the ISO or tree given).
    pub source: String,
    /// The guest's release as virtio-win names it, and the guest (for the report).
    pub guest: String,
    /// One entry per driver found for the guest.
    pub drivers: Vec<StagedDriver>,
    /// Drivers virtio-win has no directory for, for this guest.
    pub missing: Vec<&'static str>,
    /// The QEMU guest agent's installer, if virtio-win has one for the guest's architecture.
    pub guest_agent: Option<StagedFile>,
}

impl Staged {
    /// The staged driver `name` (case-insensitive), if any.
    pub fn driver(&self, name: &str) -> Option<&StagedDriver> {
        self.drivers
            .iter()
            .find(|d| d.dir.driver.eq_ignore_ascii_case(name))
    }
}

/// The folder under the system root that receives every driver package (virt-v2v's too).
pub const DRIVER_FOLDER: &str = "Drivers/VirtIO";

/// The Windows fix-ups, in the order they run: drivers before the first-boot service that
/// installs them.
pub fn all(staged: Arc<Staged>) -> Vec<Box<dyn FixUp>> {
    vec![
        Box::new(VirtioDrivers(staged.clone())),
        Box::new(Firstboot::new(staged)),
        Box::new(AzureServices),
        Box::new(PageFile),
        Box::new(SanPolicy),
    ]
}

/// The names of the Windows fix-ups.
pub fn names() -> Vec<&'static str> {
    all(Arc::default()).iter().map(|f| f.name()).collect()
}

/// The Windows part of an inspection, or an error saying a Windows fix-up ran on a guest
/// that is not Windows.
pub(crate) fn windows(inspection: &Inspection) -> Result<&WindowsInspection> {
    inspection.windows.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Guestfs,
            "a Windows fix-up ran on a guest inspection found no Windows in",
        )
    })
}

/// `HKLM\SYSTEM` / `HKLM\SOFTWARE` for the report, from the hive's file name.
fn hive_label(hive: &str) -> String {
    let name = hive.rsplit('/').next().unwrap_or(hive).to_ascii_uppercase();
    format!("HKLM\\{name}")
}

/// Adds to `plan` the part of `edits` the hive does not have yet: keys that are missing, and
/// values that are missing or differ. One change line per key.
pub(crate) fn plan_registry(
    guest: &mut dyn GuestFs,
    plan: &mut Plan,
    hive: &str,
    edits: Vec<KeyEdit>,
) -> Result<()> {
    let mut needed = Vec::new();
    for edit in edits {
        let current = guest.registry_key(hive, &edit.key)?;
        let values: Vec<(String, RegValue)> = edit
            .values
            .iter()
            .filter(|(name, value)| {
                current
                    .as_ref()
                    .and_then(|k| k.value(name))
                    .is_none_or(|v| v != value)
            })
            .cloned()
            .collect();
        if current.is_some() && values.is_empty() {
            continue;
        }
        let shown: Vec<String> = values
            .iter()
            .map(|(n, v)| format!("{}={v}", if n.is_empty() { "@" } else { n }))
            .collect();
        let verb = if current.is_some() { "set" } else { "created" };
        plan.changes.push(format!(
            "{}\\{}: {verb} {}",
            hive_label(hive),
            edit.key,
            shown.join(", ")
        ));
        needed.push(KeyEdit {
            key: edit.key,
            values,
        });
    }
    if !needed.is_empty() {
        plan.actions.push(Action::Registry {
            hive: hive.to_string(),
            edits: needed,
        });
    }
    Ok(())
}

/// Adds an upload of `local` to `path` unless the guest already has that content.
pub(crate) fn plan_upload(
    guest: &mut dyn GuestFs,
    plan: &mut Plan,
    local: &std::path::Path,
    path: &str,
    origin: &str,
) -> Result<()> {
    let bytes =
        std::fs::read(local).map_err(|e| Error::io(format!("reading {}", local.display()), e))?;
    if guest.read(path)?.as_deref() == Some(String::from_utf8_lossy(&bytes).as_ref()) {
        return Ok(());
    }
    plan.changes.push(format!("{path} (from {origin})"));
    plan.actions.push(Action::Upload {
        local: local.to_path_buf(),
        path: path.to_string(),
    });
    Ok(())
}

/// The guest's system root as Windows names it (`C:\Windows`), from the SOFTWARE hive's
/// `SystemRoot`, or `C:` and the inspected path.
pub(crate) fn windows_systemroot(
    guest: &mut dyn GuestFs,
    win: &WindowsInspection,
) -> Result<String> {
    let key = guest.registry_key(&win.software_hive, r"Microsoft\Windows NT\CurrentVersion")?;
    Ok(key
        .as_ref()
        .and_then(|k| k.value("SystemRoot"))
        .and_then(RegValue::as_str)
        .map(String::from)
        .unwrap_or_else(|| format!("C:{}", win.systemroot.replace('/', "\\"))))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Phony Windows guests in memory, as the image builder makes them on disk.

    use super::*;
    use crate::guestfs::memory::MemoryGuest;
    use crate::inspect::testing_windows;

    pub const SYSTEM: &str = "/Windows/System32/config/SYSTEM";
    pub const SOFTWARE: &str = "/Windows/System32/config/SOFTWARE";

    fn service(start: u32) -> Vec<(&'static str, RegValue)> {
        vec![
            ("Type", RegValue::Dword(0x10)),
            ("Start", RegValue::Dword(start)),
            (
                "ImagePath",
                RegValue::ExpandSz(r"C:\WindowsAzure\agent.exe".into()),
            ),
        ]
    }

    /// An Azure Windows Server 2019 guest: DriverDatabase, ControlSet001, the agent services,
    /// the page file on D:, SanPolicy 1.
    pub fn server2019() -> (MemoryGuest, Inspection) {
        let cs = "ControlSet001";
        let guest = MemoryGuest::with(&[
            ("/Windows/System32/cmd.exe", "MZ"),
            ("/Windows/System32/drivers/disk.sys", "disk"),
        ])
        .with_hive(
            SYSTEM,
            &[
                KeyEdit::new("Select", vec![("Current", RegValue::Dword(1))]),
                KeyEdit::new(
                    format!(r"{cs}\Control\Session Manager\Memory Management"),
                    vec![(
                        "PagingFiles",
                        RegValue::MultiSz(vec![r"D:\pagefile.sys".into()]),
                    )],
                ),
                KeyEdit::new(format!(r"{cs}\Services\WindowsAzureGuestAgent"), service(2)),
                KeyEdit::new(format!(r"{cs}\Services\RdAgent"), service(2)),
                KeyEdit::new(
                    format!(r"{cs}\Services\WindowsAzureTelemetryService"),
                    service(3),
                ),
                KeyEdit::new(
                    format!(r"{cs}\Services\partmgr\Parameters"),
                    vec![("SanPolicy", RegValue::Dword(1))],
                ),
                KeyEdit::new(r"DriverDatabase\DriverInfFiles\disk.inf", vec![]),
            ],
        )
        .with_hive(
            SOFTWARE,
            &[
                KeyEdit::new(
                    r"Microsoft\Windows NT\CurrentVersion",
                    vec![
                        ("SystemRoot", RegValue::Sz(r"C:\Windows".into())),
                        ("CurrentBuildNumber", RegValue::Sz("17763".into())),
                    ],
                ),
                KeyEdit::new(
                    r"Microsoft\Windows\CurrentVersion",
                    vec![("DevicePath", RegValue::ExpandSz(r"%SystemRoot%\inf".into()))],
                ),
            ],
        );
        (guest, testing_windows(10, 0, "ControlSet001"))
    }

    /// An Azure Windows Server 2008 R2 guest: no DriverDatabase, ControlSet002 current.
    pub fn server2008r2() -> (MemoryGuest, Inspection) {
        let cs = "ControlSet002";
        let guest = MemoryGuest::with(&[("/Windows/System32/drivers/disk.sys", "disk")])
            .with_hive(
                SYSTEM,
                &[
                    KeyEdit::new("Select", vec![("Current", RegValue::Dword(2))]),
                    KeyEdit::new(
                        format!(r"{cs}\Control\Session Manager\Memory Management"),
                        vec![(
                            "PagingFiles",
                            RegValue::MultiSz(vec![r"D:\pagefile.sys 0 0".into()]),
                        )],
                    ),
                    KeyEdit::new(format!(r"{cs}\Services\WindowsAzureGuestAgent"), service(2)),
                    KeyEdit::new(format!(r"{cs}\Services\RdAgent"), service(2)),
                    KeyEdit::new(
                        format!(r"{cs}\Services\partmgr\Parameters"),
                        vec![("SanPolicy", RegValue::Dword(2))],
                    ),
                    KeyEdit::new(r"ControlSet001\Services\WindowsAzureGuestAgent", service(2)),
                ],
            )
            .with_hive(
                SOFTWARE,
                &[KeyEdit::new(
                    r"Microsoft\Windows\CurrentVersion",
                    vec![("DevicePath", RegValue::ExpandSz(r"%SystemRoot%\inf".into()))],
                )],
            );
        (guest, testing_windows(6, 1, "ControlSet002"))
    }
}
