//! Azure's leftovers in a Windows guest: the agent services, the page file on the temporary
//! disk, the SAN policy. Each is a registry edit in the current control set; nothing is
//! deleted, so moving the guest back to Azure needs only the values set back.

use super::{plan_registry, windows, windows_systemroot};
use crate::fixups::{FixUp, Plan};
use crate::guestfs::GuestFs;
use crate::inspect::Inspection;
use crate::registry::{KeyEdit, RegValue};
use crate::Result;

/// The Azure services: the guest agent, the RD agent (its older half) and the telemetry
/// service that older agents install.
pub const AZURE_SERVICES: [&str; 3] = [
    "WindowsAzureGuestAgent",
    "RdAgent",
    "WindowsAzureTelemetryService",
];

/// A service's `Start` value in words.
fn start_name(start: u32) -> &'static str {
    match start {
        0 => "boot",
        1 => "system",
        2 => "automatic",
        3 => "manual",
        4 => "disabled",
        _ => "unknown",
    }
}

/// `windows-azure-agent`: the Azure services disabled (`Start` = 4); they wait for Azure's
/// wire server, which KVM does not have.
pub struct AzureServices;

impl FixUp for AzureServices {
    fn name(&self) -> &'static str {
        "windows-azure-agent"
    }
    fn description(&self) -> &'static str {
        "Azure guest agent services (WindowsAzureGuestAgent, RdAgent, telemetry) disabled"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let win = windows(inspection)?;
        let mut plan = Plan::default();
        let mut edits = Vec::new();
        for service in AZURE_SERVICES {
            let key = format!(r"{}\Services\{service}", win.control_set);
            let Some(current) = guest.registry_key(&win.system_hive, &key)? else {
                continue;
            };
            let start = current.value("Start").and_then(RegValue::as_dword);
            if start == Some(4) {
                plan.notes.push(format!("{service} is already disabled"));
                continue;
            }
            if let Some(start) = start {
                plan.notes.push(format!(
                    "{service} was Start={start} ({})",
                    start_name(start)
                ));
            }
            edits.push(KeyEdit::new(key, vec![("Start", RegValue::Dword(4))]));
        }
        plan_registry(guest, &mut plan, &win.system_hive, edits)?;
        Ok(plan)
    }
}

/// `PagingFiles` entries moved off the Azure temporary disk: `D:\pagefile.sys [min max]` →
/// `<system drive>\pagefile.sys [min max]` (sizes kept; `0 0` is "system managed"), dropped
/// instead when the system drive has an entry already. `?:\pagefile.sys` (Windows picks
/// the drives) is kept: it works on any disk layout. Returns the new list and the changes,
/// or `None` if nothing is on D:.
pub fn move_paging_files(
    entries: &[String],
    system_drive: &str,
) -> Option<(Vec<String>, Vec<String>)> {
    let on = |entry: &str, drive: &str| {
        entry
            .get(..2)
            .is_some_and(|d| d.eq_ignore_ascii_case(drive))
    };
    if !entries.iter().any(|e| on(e, "D:")) || system_drive.eq_ignore_ascii_case("D:") {
        return None;
    }
    let has_system = entries.iter().any(|e| on(e, system_drive));
    let mut out = Vec::new();
    let mut changes = Vec::new();
    for entry in entries {
        if !on(entry, "D:") {
            out.push(entry.clone());
        } else if has_system {
            changes.push(format!(
                "removed {entry:?} (the system drive has a page file)"
            ));
        } else {
            let moved = format!("{system_drive}{}", &entry[2..]);
            changes.push(format!("\"{entry}\" → \"{moved}\""));
            out.push(moved);
        }
    }
    Some((out, changes))
}

/// `windows-pagefile`: a page file on Azure's temporary disk (`D:`) moved to the system
/// drive. On KVM there is no temporary disk: `D:` is a data disk, a CD-ROM or nothing, and
/// Windows then runs without a page file, or fills a data disk with one.
pub struct PageFile;

impl FixUp for PageFile {
    fn name(&self) -> &'static str {
        "windows-pagefile"
    }
    fn description(&self) -> &'static str {
        r"page file moved from the Azure temporary disk D:\ to the system drive"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let win = windows(inspection)?;
        let mut plan = Plan::default();
        let key = format!(
            r"{}\Control\Session Manager\Memory Management",
            win.control_set
        );
        let Some(current) = guest.registry_key(&win.system_hive, &key)? else {
            return Ok(plan);
        };
        let entries = match current.value("PagingFiles") {
            Some(RegValue::MultiSz(items)) => items.clone(),
            Some(RegValue::Sz(s)) => vec![s.clone()],
            _ => return Ok(plan),
        };
        let root = windows_systemroot(guest, win)?;
        let drive = root.get(..2).unwrap_or("C:").to_string();
        if let Some((moved, changes)) = move_paging_files(&entries, &drive) {
            plan.notes.extend(changes);
            plan_registry(
                guest,
                &mut plan,
                &win.system_hive,
                vec![KeyEdit::new(
                    key,
                    vec![("PagingFiles", RegValue::MultiSz(moved))],
                )],
            )?;
        }
        Ok(plan)
    }
}

/// `windows-san-policy`: data disks must come online on KVM. Azure's image preparation sets
/// `partmgr\Parameters\SanPolicy` to 1 (OnlineAll), which is kept. A policy that keeps new
/// disks offline — 2 (OfflineShared, the Server default when the value is set so), 3
/// (OfflineAll), 4 (OfflineInternal) — is set to 1: every data disk of the migrated VM is new
/// to Windows on KVM (another bus, another id), and would stay offline until someone brings
/// it online by hand. An absent value is left to Windows' default and noted.
pub struct SanPolicy;

impl FixUp for SanPolicy {
    fn name(&self) -> &'static str {
        "windows-san-policy"
    }
    fn description(&self) -> &'static str {
        "SAN policy OnlineAll, so data disks come online on KVM"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let win = windows(inspection)?;
        let mut plan = Plan::default();
        let key = format!(r"{}\Services\partmgr\Parameters", win.control_set);
        let current = guest
            .registry_key(&win.system_hive, &key)?
            .and_then(|k| k.value("SanPolicy").and_then(RegValue::as_dword));
        match current {
            Some(1) => plan
                .notes
                .push("SanPolicy is 1 (OnlineAll): data disks come online".into()),
            None => plan.notes.push(
                "SanPolicy not set: Windows' default applies (Server: OfflineShared; virtio disks are not on a shared bus)"
                    .into(),
            ),
            Some(policy) => {
                plan.notes.push(format!(
                    "SanPolicy was {policy} ({}), which keeps new disks offline",
                    match policy {
                        2 => "OfflineShared",
                        3 => "OfflineAll",
                        4 => "OfflineInternal",
                        _ => "unknown",
                    }
                ));
                plan_registry(
                    guest,
                    &mut plan,
                    &win.system_hive,
                    vec![KeyEdit::new(key, vec![("SanPolicy", RegValue::Dword(1))])],
                )?;
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::apply;
    use crate::windows::testing::{server2008r2, server2019, SYSTEM};

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paging_files_move_off_d() {
        let (moved, changes) = move_paging_files(&strings(&[r"D:\pagefile.sys"]), "C:").unwrap();
        assert_eq!(moved, [r"C:\pagefile.sys"]);
        assert_eq!(changes, [r#""D:\pagefile.sys" → "C:\pagefile.sys""#]);
        let (moved, _) = move_paging_files(&strings(&[r"d:\pagefile.sys 0 0"]), "C:").unwrap();
        assert_eq!(moved, [r"C:\pagefile.sys 0 0"]);
        // The system drive has one already: D:'s is dropped.
        let (moved, changes) = move_paging_files(
            &strings(&[r"C:\pagefile.sys 1024 4096", r"D:\pagefile.sys"]),
            "C:",
        )
        .unwrap();
        assert_eq!(moved, [r"C:\pagefile.sys 1024 4096"]);
        assert!(changes[0].starts_with("removed"));
        assert_eq!(
            move_paging_files(&strings(&[r"?:\pagefile.sys"]), "C:"),
            None
        );
        assert_eq!(
            move_paging_files(&strings(&[r"C:\pagefile.sys"]), "C:"),
            None
        );
        assert_eq!(move_paging_files(&strings(&[]), "C:"), None);
    }

    #[test]
    fn azure_services_disabled_where_present() {
        let (mut guest, inspection) = server2008r2();
        let plan = AzureServices.plan(&mut guest, &inspection).unwrap();
        // 2008 R2 has no telemetry service: two keys.
        assert_eq!(plan.changes.len(), 2, "{:?}", plan.changes);
        apply(&mut guest, &plan).unwrap();
        for s in ["WindowsAzureGuestAgent", "RdAgent"] {
            assert_eq!(
                guest.reg_value(SYSTEM, &format!(r"ControlSet002\Services\{s}"), "Start"),
                Some(RegValue::Dword(4))
            );
        }
        assert!(guest
            .reg_value(
                SYSTEM,
                r"ControlSet002\Services\WindowsAzureTelemetryService",
                "Start"
            )
            .is_none());
        // The stale control set is not touched; the image path stays (not deleted).
        assert_eq!(
            guest.reg_value(
                SYSTEM,
                r"ControlSet001\Services\WindowsAzureGuestAgent",
                "Start"
            ),
            Some(RegValue::Dword(2))
        );
        assert!(guest
            .reg_value(SYSTEM, r"ControlSet002\Services\RdAgent", "ImagePath")
            .is_some());
        assert!(!AzureServices
            .plan(&mut guest, &inspection)
            .unwrap()
            .is_needed());
    }

    #[test]
    fn pagefile_and_san_policy() {
        let (mut guest, inspection) = server2019();
        let plan = PageFile.plan(&mut guest, &inspection).unwrap();
        apply(&mut guest, &plan).unwrap();
        assert_eq!(
            guest.reg_value(
                SYSTEM,
                r"ControlSet001\Control\Session Manager\Memory Management",
                "PagingFiles"
            ),
            Some(RegValue::MultiSz(vec![r"C:\pagefile.sys".into()]))
        );
        assert!(!PageFile.plan(&mut guest, &inspection).unwrap().is_needed());
        // Azure's OnlineAll is kept.
        let san = SanPolicy.plan(&mut guest, &inspection).unwrap();
        assert!(!san.is_needed());
        assert!(san.notes[0].contains("OnlineAll"));

        let (mut guest, inspection) = server2008r2();
        let san = SanPolicy.plan(&mut guest, &inspection).unwrap();
        assert!(san.is_needed());
        apply(&mut guest, &san).unwrap();
        assert_eq!(
            guest.reg_value(
                SYSTEM,
                r"ControlSet002\Services\partmgr\Parameters",
                "SanPolicy"
            ),
            Some(RegValue::Dword(1))
        );
        let plan = PageFile.plan(&mut guest, &inspection).unwrap();
        apply(&mut guest, &plan).unwrap();
        assert_eq!(
            guest.reg_value(
                SYSTEM,
                r"ControlSet002\Control\Session Manager\Memory Management",
                "PagingFiles"
            ),
            Some(RegValue::MultiSz(vec![r"C:\pagefile.sys 0 0".into()]))
        );
    }
}
