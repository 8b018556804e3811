//! `windows-firstboot`: a service that runs once, as LocalSystem, at the next boot.
//!
//! Debian's `rhsrvany` (`/usr/share/virt-tools/rhsrvany.exe`, the service wrapper virt-v2v
//! uses) runs any command line as a Windows service. The service is an automatic one, so it
//! starts at boot, before anyone logs on; its command is `firstboot.cmd` in
//! `%SystemRoot%\hyper2kvm`, which installs every injected driver package with `pnputil`,
//! installs the QEMU guest agent's MSI when virtio-win has one, logs to
//! `%SystemRoot%\hyper2kvm\firstboot.log`, leaves a `firstboot.done` marker (so a reboot in the
//! middle does not run it twice) and deletes its own service.

use std::path::PathBuf;
use std::sync::Arc;

use super::{plan_registry, plan_upload, windows, windows_systemroot, Staged, DRIVER_FOLDER};
use crate::fixups::{Action, FixUp, Plan};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::registry::{KeyEdit, RegValue};
use crate::{Error, ErrorKind, Result};

/// The service's name (and `rhsrvany -s NAME`).
pub const SERVICE: &str = "hyper2kvm-firstboot";

/// The folder under the system root holding the service, its script, the MSI and the logs.
pub const FOLDER: &str = "hyper2kvm";

/// Where `rhsrvany.exe` is looked for on the host: `$VIRT_TOOLS_DATA_DIR` (virt-v2v's
/// variable), else Debian's `/usr/share/virt-tools`.
pub fn rhsrvany_path() -> PathBuf {
    let dir = std::env::var_os("VIRT_TOOLS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/virt-tools"));
    dir.join("rhsrvany.exe")
}

/// The first-boot script (CRLF line ends, for cmd.exe). `infs` are the packages' `.inf` names
/// in the driver folder; `msi` the guest agent's installer in the service's folder. Windows
/// 10 / Server 2016 and later (`major >= 10`) take `pnputil /add-driver … /install`; before,
/// `pnputil -i -a`.
pub fn script(major: u32, infs: &[String], msi: Option<&str>) -> String {
    let folder = format!(r"%SystemRoot%\{FOLDER}");
    let drivers = format!(r"%SystemRoot%\{}", DRIVER_FOLDER.replace('/', "\\"));
    let log = format!(r"{folder}\firstboot.log");
    let mut lines = vec![
        "@echo off".to_string(),
        "rem hyper2kvm: runs once at the first boot on KVM, then deletes its service.".to_string(),
        format!(r#"if exist "{folder}\firstboot.done" goto remove"#),
        format!(r#"echo %DATE% %TIME% hyper2kvm first boot >> "{log}""#),
    ];
    for inf in infs {
        let command = if major >= 10 {
            format!(r#"pnputil /add-driver "{drivers}\{inf}" /install"#)
        } else {
            format!(r#"pnputil -i -a "{drivers}\{inf}""#)
        };
        lines.push(format!(r#"echo ^> {command} >> "{log}""#));
        lines.push(format!(r#"{command} >> "{log}" 2>&1"#));
        lines.push(format!(r#"echo exit code %ERRORLEVEL% >> "{log}""#));
    }
    if let Some(msi) = msi {
        let command = format!(
            r#"msiexec /i "{folder}\{msi}" /qn /norestart /l*v "{folder}\qemu-ga-install.log""#
        );
        lines.push(format!(r#"echo ^> {command} >> "{log}""#));
        lines.push(format!(r#"{command} >> "{log}" 2>&1"#));
        lines.push(format!(r#"echo exit code %ERRORLEVEL% >> "{log}""#));
    }
    lines.extend([
        format!(r#"echo done > "{folder}\firstboot.done""#),
        ":remove".to_string(),
        format!(r#"echo %DATE% %TIME% removing the {SERVICE} service >> "{log}""#),
        format!(r#"sc delete {SERVICE} >> "{log}" 2>&1"#),
    ]);
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}

/// The service's registry keys: an automatic own-process service run as LocalSystem, and
/// rhsrvany's parameters (the command line and its working directory).
pub fn service_edits(control_set: &str, folder_win: &str) -> Vec<KeyEdit> {
    let key = format!(r"{control_set}\Services\{SERVICE}");
    vec![
        KeyEdit::new(
            key.clone(),
            vec![
                ("Type", RegValue::Dword(0x10)),
                ("Start", RegValue::Dword(2)),
                ("ErrorControl", RegValue::Dword(1)),
                (
                    "ImagePath",
                    RegValue::ExpandSz(format!(r"{folder_win}\rhsrvany.exe -s {SERVICE}")),
                ),
                ("DisplayName", RegValue::Sz("hyper2kvm first boot".into())),
                ("ObjectName", RegValue::Sz("LocalSystem".into())),
            ],
        ),
        KeyEdit::new(
            format!(r"{key}\Parameters"),
            vec![
                (
                    "CommandLine",
                    RegValue::Sz(format!(r#"cmd /c "{folder_win}\firstboot.cmd""#)),
                ),
                ("PWD", RegValue::Sz(folder_win.to_string())),
            ],
        ),
    ]
}

/// The `windows-firstboot` fix-up.
pub struct Firstboot {
    staged: Arc<Staged>,
    rhsrvany: PathBuf,
}

impl Firstboot {
    /// The fix-up for these drivers, with `rhsrvany.exe` from [`rhsrvany_path`].
    pub fn new(staged: Arc<Staged>) -> Firstboot {
        Firstboot::with_rhsrvany(staged, rhsrvany_path())
    }

    /// The fix-up with `rhsrvany.exe` from elsewhere.
    pub fn with_rhsrvany(staged: Arc<Staged>, rhsrvany: PathBuf) -> Firstboot {
        Firstboot { staged, rhsrvany }
    }
}

impl FixUp for Firstboot {
    fn name(&self) -> &'static str {
        "windows-firstboot"
    }
    fn description(&self) -> &'static str {
        "a run-once service installing the driver packages (pnputil) and the QEMU guest agent"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let win = windows(inspection)?;
        let mut plan = Plan::default();
        let mut infs: Vec<String> = self
            .staged
            .drivers
            .iter()
            .flat_map(|d| d.files.iter())
            .filter(|f| f.name.to_ascii_lowercase().ends_with(".inf"))
            .map(|f| f.name.clone())
            .collect();
        infs.sort();
        infs.dedup();
        if infs.is_empty() {
            return Ok(plan);
        }
        if !self.rhsrvany.is_file() {
            return Err(Error::new(
                ErrorKind::ToolMissing,
                format!(
                    "{} not found: install Debian's rhsrvany package (bookworm-backports), or set VIRT_TOOLS_DATA_DIR to a folder holding rhsrvany.exe",
                    self.rhsrvany.display()
                ),
            ));
        }
        let folder = guest.case_path(&format!("{}/{FOLDER}", win.systemroot))?;
        let folder_win = format!(r"{}\{FOLDER}", windows_systemroot(guest, win)?);
        plan_upload(
            guest,
            &mut plan,
            &self.rhsrvany,
            &format!("{folder}/rhsrvany.exe"),
            &self.rhsrvany.display().to_string(),
        )?;
        let msi = self.staged.guest_agent.as_ref();
        if let Some(msi) = msi {
            plan_upload(
                guest,
                &mut plan,
                &msi.local,
                &format!("{folder}/{}", msi.name),
                "virtio-win guest-agent",
            )?;
        } else {
            plan.notes
                .push("virtio-win has no QEMU guest agent installer for this guest".into());
        }
        let text = script(win.major, &infs, msi.map(|m| m.name.as_str()));
        let path = format!("{folder}/firstboot.cmd");
        if guest.read(&path)?.as_deref() != Some(text.as_str()) {
            plan.changes.push(format!(
                "{path}: pnputil for {}{}",
                infs.join(", "),
                if msi.is_some() {
                    ", the QEMU guest agent MSI"
                } else {
                    ""
                }
            ));
            plan.actions.push(Action::Write {
                path,
                content: text,
            });
        }
        plan_registry(
            guest,
            &mut plan,
            &win.system_hive,
            service_edits(&win.control_set, &folder_win),
        )?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::apply;
    use crate::windows::testing::{server2008r2, server2019, SYSTEM};
    use crate::windows::StagedFile;

    #[test]
    fn script_installs_each_package_then_the_agent_then_removes_itself() {
        let text = script(
            10,
            &["netkvm.inf".into(), "viostor.inf".into()],
            Some("qemu-ga-x86_64.msi"),
        );
        assert!(text.ends_with("\r\n") && !text.replace("\r\n", "").contains('\n'));
        let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert!(lines.contains(
            &r#"pnputil /add-driver "%SystemRoot%\Drivers\VirtIO\netkvm.inf" /install >> "%SystemRoot%\hyper2kvm\firstboot.log" 2>&1"#
        ));
        let pos = |needle: &str| lines.iter().position(|l| l.starts_with(needle)).unwrap();
        assert!(
            pos("pnputil /add-driver \"%SystemRoot%\\Drivers\\VirtIO\\viostor.inf\"")
                < pos("msiexec /i")
        );
        assert!(pos("msiexec /i") < pos("sc delete hyper2kvm-firstboot"));
        let old = script(6, &["viostor.inf".into()], None);
        assert!(old.contains(r#"pnputil -i -a "%SystemRoot%\Drivers\VirtIO\viostor.inf""#));
        assert!(!old.contains("msiexec"));
    }

    #[test]
    fn service_and_files_written_once() {
        let (mut guest, inspection) = server2019();
        let (staged, dir) = crate::windows::drivers::tests_support::staged("2k19");
        let mut staged = (*staged).clone();
        let msi = dir.join("qemu-ga-x86_64.msi");
        std::fs::write(&msi, "msi").unwrap();
        staged.guest_agent = Some(StagedFile {
            name: "qemu-ga-x86_64.msi".into(),
            local: msi,
        });
        let rhsrvany = dir.join("rhsrvany.exe");
        std::fs::write(&rhsrvany, "MZ rhsrvany").unwrap();
        let fixup = Firstboot::with_rhsrvany(Arc::new(staged), rhsrvany);
        let plan = fixup.plan(&mut guest, &inspection).unwrap();
        apply(&mut guest, &plan).unwrap();
        assert_eq!(
            guest.files["/Windows/hyper2kvm/rhsrvany.exe"],
            "MZ rhsrvany"
        );
        assert_eq!(guest.files["/Windows/hyper2kvm/qemu-ga-x86_64.msi"], "msi");
        let cmd = &guest.files["/Windows/hyper2kvm/firstboot.cmd"];
        for inf in ["viostor.inf", "vioscsi.inf", "netkvm.inf"] {
            assert!(cmd.contains(inf), "{cmd}");
        }
        let key = r"ControlSet001\Services\hyper2kvm-firstboot";
        assert_eq!(
            guest.reg_value(SYSTEM, key, "Start"),
            Some(RegValue::Dword(2))
        );
        assert_eq!(
            guest.reg_value(SYSTEM, key, "Type"),
            Some(RegValue::Dword(0x10))
        );
        assert_eq!(
            guest.reg_value(SYSTEM, key, "ObjectName"),
            Some(RegValue::Sz("LocalSystem".into()))
        );
        assert_eq!(
            guest.reg_value(SYSTEM, key, "ImagePath"),
            Some(RegValue::ExpandSz(
                r"C:\Windows\hyper2kvm\rhsrvany.exe -s hyper2kvm-firstboot".into()
            ))
        );
        assert_eq!(
            guest.reg_value(SYSTEM, &format!(r"{key}\Parameters"), "CommandLine"),
            Some(RegValue::Sz(
                r#"cmd /c "C:\Windows\hyper2kvm\firstboot.cmd""#.into()
            ))
        );
        assert!(!fixup.plan(&mut guest, &inspection).unwrap().is_needed());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_rhsrvany_is_a_clear_error() {
        let (mut guest, inspection) = server2008r2();
        let (staged, dir) = crate::windows::drivers::tests_support::staged("2k8R2");
        let fixup = Firstboot::with_rhsrvany(staged, dir.join("nope/rhsrvany.exe"));
        let err = fixup.plan(&mut guest, &inspection).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ToolMissing);
        assert!(
            err.to_string().contains("install Debian's rhsrvany"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
