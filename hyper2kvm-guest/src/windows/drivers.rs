//! `windows-drivers`: virtio-win's packages copied in, the storage drivers made boot-critical.

use std::sync::Arc;

use super::virtio_win::BOOT_DRIVERS;
use super::{inf, plan_registry, plan_upload, windows, Staged, WindowsInspection, DRIVER_FOLDER};
use crate::fixups::{FixUp, Plan};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::registry::{KeyEdit, RegValue};
use crate::{Error, ErrorKind, Result};

/// The SCSI adapter device class (`SCSIAdapter`), which both virtio storage drivers are in.
pub const SCSI_ADAPTER_CLASS: &str = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";

/// The PCI ids bound to each boot driver even when its `.inf` lists fewer: the transitional
/// (virtio 0.9, `DEV_1001` / `DEV_1004`, revision 0) and modern (virtio 1.0, `DEV_1042` /
/// `DEV_1048`, revision 1) devices, with QEMU's subsystem ids and without (the forms
/// virt-v2v writes, old and new).
pub fn pci_ids(driver: &str) -> &'static [&'static str] {
    match driver {
        "viostor" => &[
            "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
            "VEN_1AF4&DEV_1001&REV_00",
            "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01",
            "VEN_1AF4&DEV_1042&REV_01",
        ],
        "vioscsi" => &[
            "VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00",
            "VEN_1AF4&DEV_1004&REV_00",
            "VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01",
            "VEN_1AF4&DEV_1048&REV_01",
        ],
        _ => &[],
    }
}

/// The boot-start service of a storage driver (what its `.inf` would install).
pub fn service_edit(win: &WindowsInspection, driver: &str) -> KeyEdit {
    KeyEdit::new(
        format!(r"{}\Services\{driver}", win.control_set),
        vec![
            ("Type", RegValue::Dword(1)),
            ("Start", RegValue::Dword(0)),
            ("ErrorControl", RegValue::Dword(1)),
            ("Group", RegValue::Sz("SCSI miniport".into())),
            (
                "ImagePath",
                RegValue::ExpandSz(format!(r"system32\drivers\{driver}.sys")),
            ),
        ],
    )
}

/// Windows 8 / Server 2012 and later: the device ids bound to the driver in the SYSTEM hive's
/// `DriverDatabase`, through a driver package entry of our own (`h2k_viostor.inf`) whose
/// configuration names the service. Plug and Play reads these before any driver store
/// exists for the package; the first-boot `pnputil` then installs the real package.
pub fn driver_database_edits(driver: &str, ids: &[String]) -> Vec<KeyEdit> {
    let inf = format!("h2k_{driver}.inf");
    let package = format!("{inf}_tmp");
    let config = format!("h2k_{driver}_conf");
    // Version: the package's class GUID (SCSIAdapter) at offset 8, as Windows-Kernel-Pnp on
    // Windows 10 / Server 2016 requires (virt-v2v writes the same bytes).
    let mut version = vec![0x00, 0xff, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00];
    version.extend([
        0x7b, 0xe9, 0x36, 0x4d, 0x25, 0xe3, 0xce, 0x11, 0xbf, 0xc1, 0x08, 0x00, 0x2b, 0xe1, 0x03,
        0x18,
    ]);
    version.extend([0u8; 24]);
    let mut edits = vec![
        KeyEdit::new(
            format!(r"DriverDatabase\DriverInfFiles\{inf}"),
            vec![
                ("", RegValue::MultiSz(vec![package.clone()])),
                ("Active", RegValue::Sz(package.clone())),
                ("Configurations", RegValue::MultiSz(vec![config.clone()])),
            ],
        ),
        KeyEdit::new(
            format!(r"DriverDatabase\DriverPackages\{package}"),
            vec![("Version", RegValue::Binary(version))],
        ),
        KeyEdit::new(
            format!(r"DriverDatabase\DriverPackages\{package}\Configurations\{config}"),
            vec![
                ("ConfigFlags", RegValue::Dword(0)),
                ("Service", RegValue::Sz(driver.to_string())),
            ],
        ),
    ];
    for id in ids {
        edits.push(KeyEdit::new(
            format!(r"DriverDatabase\DeviceIds\PCI\{id}"),
            vec![(inf.as_str(), RegValue::Binary(vec![0x01, 0xff, 0x00, 0x00]))],
        ));
        edits.push(KeyEdit::new(
            format!(r"DriverDatabase\DriverPackages\{package}\Descriptors\PCI\{id}"),
            vec![("Configuration", RegValue::Sz(config.clone()))],
        ));
    }
    edits
}

/// Before Windows 8: the device ids bound to the driver's service in the current control
/// set's `CriticalDeviceDatabase`, which the boot loader consults for boot devices.
pub fn critical_device_edits(
    win: &WindowsInspection,
    driver: &str,
    ids: &[String],
) -> Vec<KeyEdit> {
    ids.iter()
        .map(|id| {
            KeyEdit::new(
                format!(
                    r"{}\Control\CriticalDeviceDatabase\PCI#{id}",
                    win.control_set
                ),
                vec![
                    ("Service", RegValue::Sz(driver.to_string())),
                    ("ClassGUID", RegValue::Sz(SCSI_ADAPTER_CLASS.to_string())),
                ],
            )
        })
        .collect()
}

/// `DevicePath` with `folder` added (`;`-separated), or `None` if it is there already.
pub fn device_path(current: Option<&str>, folder: &str) -> Option<String> {
    let current = current.unwrap_or(r"%SystemRoot%\inf");
    if current
        .split(';')
        .any(|p| p.trim().eq_ignore_ascii_case(folder))
    {
        return None;
    }
    Some(if current.is_empty() {
        folder.to_string()
    } else {
        format!("{current};{folder}")
    })
}

/// The ids for a boot driver: [`pci_ids`] and every PCI id its `.inf` names.
fn boot_ids(driver: &str, inf_text: Option<&str>) -> Vec<String> {
    let mut ids: Vec<String> = pci_ids(driver).iter().map(|s| s.to_string()).collect();
    for id in inf_text.map(inf::pci_ids).unwrap_or_default() {
        if !ids.iter().any(|i| i.eq_ignore_ascii_case(&id)) {
            ids.push(id);
        }
    }
    ids
}

/// The `windows-drivers` fix-up.
pub struct VirtioDrivers(pub Arc<Staged>);

impl FixUp for VirtioDrivers {
    fn name(&self) -> &'static str {
        "windows-drivers"
    }
    fn description(&self) -> &'static str {
        "virtio-win drivers copied in; viostor and vioscsi made boot-start services"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let win = windows(inspection)?;
        let staged = &self.0;
        let mut plan = Plan::default();
        plan.notes.push(format!(
            "drivers for {} from {}",
            staged.guest, staged.source
        ));
        for driver in &staged.drivers {
            plan.notes.push(format!("virtio-win {}", driver.dir));
        }
        if !staged.missing.is_empty() {
            plan.notes.push(format!(
                "virtio-win has no directory for this guest for: {}",
                staged.missing.join(", ")
            ));
        }
        // The domain's NIC is virtio-net: without NetKVM the guest boots with no network.
        if staged.missing.contains(&"NetKVM") {
            plan.blockers.push(format!(
                "{} has no NetKVM driver for {}: the guest will have no network on its \
                 virtio NIC; use a virtio-win release that supports this Windows",
                staged.source, staged.guest
            ));
        }
        let folder = guest.case_path(&format!("{}/{DRIVER_FOLDER}", win.systemroot))?;
        for driver in &staged.drivers {
            for file in &driver.files {
                let origin = format!("{}/{}", driver.dir.dir, file.name);
                plan_upload(
                    guest,
                    &mut plan,
                    &file.local,
                    &format!("{folder}/{}", file.name),
                    &origin,
                )?;
            }
        }
        let sys_drivers = guest.case_path(&format!("{}/System32/drivers", win.systemroot))?;
        let driver_database = guest
            .registry_key(&win.system_hive, "")?
            .is_some_and(|root| root.has_subkey("DriverDatabase"));
        let mut system = Vec::new();
        for name in BOOT_DRIVERS {
            let Some(driver) = staged.driver(name) else {
                continue;
            };
            let sys = driver.file(&format!("{name}.sys")).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("virtio-win {} has no {name}.sys", driver.dir.dir),
                )
            })?;
            plan_upload(
                guest,
                &mut plan,
                &sys.local,
                &format!("{sys_drivers}/{name}.sys"),
                &format!("{}/{}", driver.dir.dir, sys.name),
            )?;
            let inf_text = match driver.file(&format!("{name}.inf")) {
                Some(f) => {
                    Some(inf::decode(&std::fs::read(&f.local).map_err(|e| {
                        Error::io(format!("reading {}", f.local.display()), e)
                    })?))
                }
                None => None,
            };
            let ids = boot_ids(name, inf_text.as_deref());
            system.push(service_edit(win, name));
            if driver_database {
                system.extend(driver_database_edits(name, &ids));
            } else {
                system.extend(critical_device_edits(win, name, &ids));
            }
        }
        // The domain's disks are virtio-blk: viostor's (staging refuses a virtio-win without it).
        if staged.driver("viostor").is_none() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "{} has no viostor for {}: the guest could not boot from its virtio-blk disk",
                    staged.source, staged.guest
                ),
            ));
        }
        plan.notes.push(if driver_database {
            "boot drivers bound in the SYSTEM hive's DriverDatabase (Windows 8 / 2012 and later)"
                .to_string()
        } else {
            "boot drivers bound in the CriticalDeviceDatabase (before Windows 8 / 2012)".to_string()
        });
        plan_registry(guest, &mut plan, &win.system_hive, system)?;
        let key = r"Microsoft\Windows\CurrentVersion";
        let current = guest.registry_key(&win.software_hive, key)?;
        let current = current
            .as_ref()
            .and_then(|k| k.value("DevicePath"))
            .and_then(RegValue::as_str);
        let folder_win = format!(r"%SystemRoot%\{}", DRIVER_FOLDER.replace('/', "\\"));
        if let Some(path) = device_path(current, &folder_win) {
            plan_registry(
                guest,
                &mut plan,
                &win.software_hive,
                vec![KeyEdit::new(
                    key,
                    vec![("DevicePath", RegValue::ExpandSz(path))],
                )],
            )?;
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::staged;
    use super::*;
    use crate::fixups::{apply, Action};
    use crate::windows::testing::{server2008r2, server2019, SOFTWARE, SYSTEM};

    #[test]
    fn server_2019_gets_driver_database_entries_files_and_device_path() {
        let (mut guest, inspection) = server2019();
        let (staged, dir) = staged("2k19");
        let plan = VirtioDrivers(staged.clone())
            .plan(&mut guest, &inspection)
            .unwrap();
        assert!(plan.is_needed());
        assert!(plan
            .notes
            .contains(&"virtio-win viostor: viostor/2k19/amd64".to_string()));
        apply(&mut guest, &plan).unwrap();
        assert_eq!(
            guest.files["/Windows/Drivers/VirtIO/netkvmco.dll"],
            "NetKVM/2k19/amd64/netkvmco.dll\n"
        );
        assert_eq!(
            guest.files["/Windows/System32/drivers/viostor.sys"],
            "viostor/2k19/amd64/viostor.sys\n"
        );
        assert_eq!(
            guest.files["/Windows/System32/drivers/vioscsi.sys"],
            "vioscsi/2k19/amd64/vioscsi.sys\n"
        );
        let v = |key: &str, name: &str| guest.reg_value(SYSTEM, key, name);
        assert_eq!(
            v(r"ControlSet001\Services\viostor", "Start"),
            Some(RegValue::Dword(0))
        );
        assert_eq!(
            v(r"ControlSet001\Services\viostor", "Type"),
            Some(RegValue::Dword(1))
        );
        assert_eq!(
            v(r"ControlSet001\Services\vioscsi", "ImagePath"),
            Some(RegValue::ExpandSz(r"system32\drivers\vioscsi.sys".into()))
        );
        assert_eq!(
            v(r"ControlSet001\Services\viostor", "Group"),
            Some(RegValue::Sz("SCSI miniport".into()))
        );
        for id in [
            "VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
            "VEN_1AF4&DEV_1042&REV_01",
            // from the .inf
            "VEN_1AF4&DEV_10FF&SUBSYS_00FF1AF4&REV_00",
        ] {
            assert_eq!(
                v(
                    &format!(r"DriverDatabase\DeviceIds\PCI\{id}"),
                    "h2k_viostor.inf"
                ),
                Some(RegValue::Binary(vec![1, 0xff, 0, 0])),
                "{id}"
            );
        }
        assert_eq!(
            v(
                r"DriverDatabase\DeviceIds\PCI\VEN_1AF4&DEV_1048&REV_01",
                "h2k_vioscsi.inf"
            ),
            Some(RegValue::Binary(vec![1, 0xff, 0, 0]))
        );
        assert_eq!(
            v(
                r"DriverDatabase\DriverPackages\h2k_vioscsi.inf_tmp\Configurations\h2k_vioscsi_conf",
                "Service"
            ),
            Some(RegValue::Sz("vioscsi".into()))
        );
        assert!(v(
            r"ControlSet001\Control\CriticalDeviceDatabase\PCI#VEN_1AF4&DEV_1001&REV_00",
            "Service"
        )
        .is_none());
        assert_eq!(
            guest.reg_value(SOFTWARE, r"Microsoft\Windows\CurrentVersion", "DevicePath"),
            Some(RegValue::ExpandSz(
                r"%SystemRoot%\inf;%SystemRoot%\Drivers\VirtIO".into()
            ))
        );
        // Applied: nothing more to do.
        let again = VirtioDrivers(staged).plan(&mut guest, &inspection).unwrap();
        assert!(!again.is_needed(), "{:?}", again.changes);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn server_2008_r2_gets_critical_device_database_entries_in_its_current_control_set() {
        let (mut guest, inspection) = server2008r2();
        let (staged, dir) = staged("2k8R2");
        let plan = VirtioDrivers(staged).plan(&mut guest, &inspection).unwrap();
        // One registry action per hive: SYSTEM, then SOFTWARE.
        let hives: Vec<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Registry { hive, .. } => Some(hive.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(hives, [SYSTEM, SOFTWARE]);
        apply(&mut guest, &plan).unwrap();
        let cdb = r"ControlSet002\Control\CriticalDeviceDatabase";
        for (id, service) in [
            ("VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "viostor"),
            ("VEN_1AF4&DEV_1042&REV_01", "viostor"),
            ("VEN_1AF4&DEV_1004&REV_00", "vioscsi"),
            ("VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01", "vioscsi"),
        ] {
            let key = format!(r"{cdb}\PCI#{id}");
            assert_eq!(
                guest.reg_value(SYSTEM, &key, "Service"),
                Some(RegValue::Sz(service.into()))
            );
            assert_eq!(
                guest.reg_value(SYSTEM, &key, "ClassGUID"),
                Some(RegValue::Sz(SCSI_ADAPTER_CLASS.into()))
            );
        }
        assert_eq!(
            guest.reg_value(SYSTEM, r"ControlSet002\Services\viostor", "Start"),
            Some(RegValue::Dword(0))
        );
        // The stale control set and the DriverDatabase are left alone.
        assert!(guest
            .reg_value(SYSTEM, r"ControlSet001\Services\viostor", "Start")
            .is_none());
        assert!(!guest.hives[SYSTEM]
            .keys()
            .any(|k| k.starts_with("driverdatabase")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_storage_driver_is_an_error() {
        let (mut guest, inspection) = server2019();
        let staged = Staged {
            source: "virtio-win".into(),
            guest: "Windows Server 2019".into(),
            ..Staged::default()
        };
        let err = VirtioDrivers(Arc::new(staged))
            .plan(&mut guest, &inspection)
            .unwrap_err();
        assert!(err.to_string().contains("has no viostor"), "{err}");
    }

    /// Without NetKVM the guest boots with no network: not "applied", however much else is.
    #[test]
    fn no_netkvm_for_the_guest_blocks() {
        let (mut guest, inspection) = server2019();
        let (staged, dir) = staged("2k19");
        let mut without = (*staged).clone();
        without.drivers.retain(|d| d.dir.driver != "NetKVM");
        without.missing.push("NetKVM");
        let plan = VirtioDrivers(Arc::new(without))
            .plan(&mut guest, &inspection)
            .unwrap();
        assert!(plan.is_needed());
        assert_eq!(plan.blockers.len(), 1, "{:?}", plan.blockers);
        assert!(
            plan.blockers[0].contains("no NetKVM driver"),
            "{:?}",
            plan.blockers
        );
        let with = VirtioDrivers(staged).plan(&mut guest, &inspection).unwrap();
        assert!(with.blockers.is_empty(), "{:?}", with.blockers);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn device_path_added_once() {
        let f = r"%SystemRoot%\Drivers\VirtIO";
        assert_eq!(
            device_path(Some(r"%SystemRoot%\inf"), f).as_deref(),
            Some(r"%SystemRoot%\inf;%SystemRoot%\Drivers\VirtIO")
        );
        assert_eq!(
            device_path(Some(r"%SystemRoot%\inf;%systemroot%\drivers\virtio"), f),
            None
        );
        assert_eq!(
            device_path(None, f).as_deref(),
            Some(r"%SystemRoot%\inf;%SystemRoot%\Drivers\VirtIO")
        );
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Arc;

    use crate::windows::virtio_win::DriverDir;
    use crate::windows::{Staged, StagedDriver, StagedFile};

    /// A staged virtio-win with viostor, vioscsi and NetKVM in a temporary directory.
    pub fn staged(release: &str) -> (Arc<Staged>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "h2k-staged-{release}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut drivers = Vec::new();
        for (name, files) in [
            (
                "viostor",
                &["viostor.inf", "viostor.cat", "viostor.sys"][..],
            ),
            (
                "vioscsi",
                &["vioscsi.inf", "vioscsi.cat", "vioscsi.sys"][..],
            ),
            (
                "NetKVM",
                &["netkvm.inf", "netkvm.cat", "netkvm.sys", "netkvmco.dll"][..],
            ),
        ] {
            let mut staged_files = Vec::new();
            for f in files {
                let local = dir.join(f);
                let content = if f.ends_with(".inf") {
                    format!("[Models]\n%D% = inst, PCI\\VEN_1AF4&DEV_10FF&SUBSYS_00FF1AF4&REV_00 ; {name}\n")
                } else {
                    format!("{name}/{release}/amd64/{f}\n")
                };
                std::fs::write(&local, content).unwrap();
                staged_files.push(StagedFile {
                    name: f.to_string(),
                    local,
                });
            }
            drivers.push(StagedDriver {
                dir: DriverDir {
                    driver: name.into(),
                    dir: format!("{name}/{release}/amd64"),
                    exact: true,
                    files: vec![],
                },
                files: staged_files,
            });
        }
        let staged = Staged {
            source: "virtio-win.iso".into(),
            guest: "Windows Server".into(),
            drivers,
            missing: vec!["Balloon"],
            guest_agent: None,
        };
        (Arc::new(staged), dir)
    }
}
