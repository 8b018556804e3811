//! The Azure RBAC action behind every ARM request the client sends, and which runs need it:
//! the table `docs/azure.md` documents (with a least-privilege custom role built from it),
//! and how a `403` names what to grant.
//!
//! Tests keep the three in step: this table against the doc and its role definitions (below),
//! and every request a list, a dry run and migrations under each `running_vm` policy send to
//! the simulator against this table (`hyper2kvm-cli/tests/azure_permissions.rs`). A request
//! the table does not know is a test failure, so a new ARM call cannot ship undocumented.
//!
//! Blob reads need no ARM permission: the SAS a grant returns is the authorization.

/// The runs that need an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Every run, `--list-only` and `--dry-run` included: discovery.
    Always,
    /// Migration runs only.
    Migrate,
}

/// One ARM request shape and the action Azure checks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmPermission {
    /// The HTTP method.
    pub method: &'static str,
    /// The path, `{…}` standing for one segment; compared without regard to case, as ARM does.
    pub path: &'static str,
    /// The RBAC action, e.g. `Microsoft.Compute/disks/beginGetAccess/action`.
    pub action: &'static str,
    /// Which runs send it.
    pub needed: Needed,
    /// What it is for.
    pub why: &'static str,
}

const fn p(
    method: &'static str,
    path: &'static str,
    action: &'static str,
    needed: Needed,
    why: &'static str,
) -> ArmPermission {
    ArmPermission {
        method,
        path,
        action,
        needed,
        why,
    }
}

/// Every request the ARM client sends.
pub const PERMISSIONS: &[ArmPermission] = &[
    p(
        "GET",
        "/subscriptions/{s}/providers/Microsoft.Compute/virtualMachines",
        "Microsoft.Compute/virtualMachines/read",
        Needed::Always,
        "list the VMs, and their power states (statusOnly=true)",
    ),
    p(
        "GET",
        "/subscriptions/{s}/providers/Microsoft.Compute/disks",
        "Microsoft.Compute/disks/read",
        Needed::Always,
        "list the managed disks (sizes, OS type, generation); read the source of a snapshot",
    ),
    p(
        "GET",
        "/subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/vmSizes",
        "Microsoft.Compute/locations/vmSizes/read",
        Needed::Migrate,
        "vCPUs and memory of the VM sizes, for the libvirt domain",
    ),
    p(
        "POST",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{d}/beginGetAccess",
        "Microsoft.Compute/disks/beginGetAccess/action",
        Needed::Migrate,
        "read grant (SAS) on a disk of a deallocated VM",
    ),
    p(
        "POST",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{d}/endGetAccess",
        "Microsoft.Compute/disks/endGetAccess/action",
        Needed::Migrate,
        "revoke that grant",
    ),
    p(
        "PUT",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{n}",
        "Microsoft.Compute/snapshots/write",
        Needed::Migrate,
        "snapshot a disk of a running or stopped VM (running_vm: snapshot, the default)",
    ),
    p(
        "GET",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{n}",
        "Microsoft.Compute/snapshots/read",
        Needed::Migrate,
        "check a snapshot an interrupted run left",
    ),
    p(
        "DELETE",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{n}",
        "Microsoft.Compute/snapshots/delete",
        Needed::Migrate,
        "delete the run's snapshots (unless export.keep_snapshots)",
    ),
    p(
        "POST",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{n}/beginGetAccess",
        "Microsoft.Compute/snapshots/beginGetAccess/action",
        Needed::Migrate,
        "read grant (SAS) on a snapshot",
    ),
    p(
        "POST",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{n}/endGetAccess",
        "Microsoft.Compute/snapshots/endGetAccess/action",
        Needed::Migrate,
        "revoke it (also before deleting the snapshot)",
    ),
    p(
        "POST",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/powerOff",
        "Microsoft.Compute/virtualMachines/powerOff/action",
        Needed::Migrate,
        "running_vm: stop",
    ),
    p(
        "POST",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/deallocate",
        "Microsoft.Compute/virtualMachines/deallocate/action",
        Needed::Migrate,
        "running_vm: deallocate",
    ),
    p(
        "POST",
        "/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}/start",
        "Microsoft.Compute/virtualMachines/start/action",
        Needed::Migrate,
        "restart_vms: true (start the VMs a run stopped or deallocated)",
    ),
    p(
        "GET",
        "/subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/operations/{id}",
        "Microsoft.Compute/locations/operations/read",
        Needed::Migrate,
        "poll VM power operations",
    ),
    p(
        "GET",
        "/subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/DiskOperations/{id}",
        "Microsoft.Compute/locations/diskOperations/read",
        Needed::Migrate,
        "poll grants, revokes and snapshot operations",
    ),
];

/// The permission behind `method` on `path` (a URL's path; anything before `/subscriptions/`,
/// such as an endpoint's own path prefix, is ignored).
pub fn permission_for(method: &str, path: &str) -> Option<&'static ArmPermission> {
    let at = path.to_ascii_lowercase().find("/subscriptions/")?;
    let path = path[at..].trim_end_matches('/');
    PERMISSIONS
        .iter()
        .find(|p| p.method.eq_ignore_ascii_case(method) && matches(p.path, path))
}

/// The actions a run needs: discovery alone, or a migration's.
pub fn actions(migrate: bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = PERMISSIONS
        .iter()
        .filter(|p| migrate || p.needed == Needed::Always)
        .map(|p| p.action)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) => {
                let any = w.starts_with('{') && w.ends_with('}') && !h.is_empty();
                if !any && !w.eq_ignore_ascii_case(h) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_actions() {
        let disk = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/disks/d1/beginGetAccess";
        assert_eq!(
            permission_for("POST", disk).map(|p| p.action),
            Some("Microsoft.Compute/disks/beginGetAccess/action")
        );
        // Case does not matter to ARM; a prefix before /subscriptions/ is the endpoint's.
        let lower = "/arm/SUBSCRIPTIONS/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm/deallocate/";
        assert_eq!(
            permission_for("post", lower).map(|p| p.action),
            Some("Microsoft.Compute/virtualMachines/deallocate/action")
        );
        assert_eq!(
            permission_for("GET", "/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/DiskOperations/abc")
                .map(|p| p.action),
            Some("Microsoft.Compute/locations/diskOperations/read")
        );
        // The method counts, and so does every segment.
        assert_eq!(permission_for("GET", disk), None);
        assert_eq!(
            permission_for(
                "GET",
                "/subscriptions/s/providers/Microsoft.Compute/virtualMachines/extra"
            ),
            None
        );
        assert_eq!(permission_for("GET", "/providers/Microsoft.Compute"), None);
    }

    #[test]
    fn a_refusal_names_the_action_to_grant() {
        let url = "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/n?api-version=2025-01-02";
        let body = br#"{"error": {"code": "AuthorizationFailed", "message": "no"}}"#;
        let status = reqwest::StatusCode::FORBIDDEN;
        let err = super::super::client::status_error("PUT", status, url, body);
        assert_eq!(err.kind(), crate::ErrorKind::PermissionDenied);
        assert!(
            err.to_string().ends_with(
                "AuthorizationFailed: no; grant the identity Microsoft.Compute/snapshots/write (docs/azure.md lists what each run needs)"
            ),
            "{err}"
        );
        let other =
            super::super::client::status_error("PUT", reqwest::StatusCode::CONFLICT, url, body);
        assert!(!other.to_string().contains("grant"), "{other}");
    }

    #[test]
    fn list_runs_need_only_reads() {
        assert_eq!(
            actions(false),
            [
                "Microsoft.Compute/disks/read",
                "Microsoft.Compute/virtualMachines/read"
            ]
        );
        assert_eq!(actions(true).len(), PERMISSIONS.len());
    }

    /// `docs/azure.md` lists every action with its path, and its two role definitions hold
    /// exactly the actions of their runs.
    #[test]
    fn the_doc_and_its_roles_match_the_table() {
        let doc = include_str!("../../../docs/azure.md");
        for p in PERMISSIONS {
            let row = doc
                .lines()
                .find(|l| l.starts_with('|') && l.contains(&format!("`{}`", p.action)))
                .unwrap_or_else(|| panic!("docs/azure.md has no row for {}", p.action));
            let tail = p.path.rsplit("Microsoft.Compute").next().unwrap();
            assert!(
                row.contains(p.method) && row.contains(tail),
                "docs/azure.md's row for {} must show {} …{tail}: {row}",
                p.action,
                p.method
            );
        }
        let roles: Vec<serde_json::Value> = doc
            .split("```json")
            .skip(1)
            .map(|block| serde_json::from_str(block.split("```").next().unwrap()).unwrap())
            .filter(|v: &serde_json::Value| v.get("Actions").is_some())
            .collect();
        assert_eq!(roles.len(), 2, "a reader role and a migrator role");
        for role in roles {
            let name = role["Name"].as_str().unwrap();
            let mut listed: Vec<&str> = role["Actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            listed.sort_unstable();
            let migrate = name.contains("migrat");
            assert_eq!(listed, actions(migrate), "{name}");
            assert!(role["NotActions"].as_array().unwrap().is_empty());
        }
    }
}
