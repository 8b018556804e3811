//! Every ARM request the binary sends maps to an Azure RBAC action of
//! `hyper2kvm_azure::arm::permissions` (the table docs/azure.md documents and builds its roles
//! from): a list, a dry run, and migrations under each `running_vm` policy against the
//! simulator, which notes every path it is asked for. List runs need only the reads.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::Command;

use hyper2kvm_azure::arm::permissions::{permission_for, Needed, PERMISSIONS};
use hyper2kvm_sim::{Scenario, Simulator};
use support::{s, Scratch};

const SUB: &str = "00000000-0000-0000-0000-0000000000bb";

/// A deallocated VM (its disks are granted directly) and a running one (the policy decides),
/// with small disks.
fn scenario() -> String {
    let disk = "{ size_bytes: 4194304, content: { seed: 1, scatter: { written_bytes: 262144, extent_size: 65536 } } }";
    format!(
        "settings: {{ operations: {{ polls: 1, retry_after_secs: 0 }} }}\nsubscriptions:\n  - id: {SUB}\n    resource_groups:\n      - name: rg\n        location: westeurope\n        vms:\n          - {{ name: off, size: Standard_B1s, power_state: deallocated, os_type: linux, generation: 2, disks: [ {disk} ] }}\n          - {{ name: on, size: Standard_B2s, power_state: running, os_type: linux, generation: 1, disks: [ {disk}, {disk} ] }}\n"
    )
}

/// Runs the binary with `extra` flags and `config` lines under `azure:` against a new
/// simulator; returns the ARM requests it received.
async fn requests(extra: &[&str], azure: &str) -> Vec<(String, String)> {
    let sim = Simulator::start(&Scenario::from_yaml(&scenario()).unwrap())
        .await
        .unwrap();
    let dir = Scratch::new("perms");
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "azure:\n  subscription: {SUB}\n  resource_groups: [rg]\n  auth: none\n{azure}output:\n  dir: {}\n",
            s(&dir.path("out"))
        ),
    )
    .unwrap();
    let mut args: Vec<String> = vec![
        "-c".into(),
        s(&config).into(),
        "--arm-endpoint".into(),
        sim.base_url(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = sim.counters().paths();
    sim.shutdown().await;
    // Blob paths (`/{account}/{container}/{blob}`) are read with the SAS, not a role.
    paths
        .into_iter()
        .filter(|(_, p)| p.starts_with("/subscriptions/"))
        .collect()
}

/// The actions behind `requests`; a request the table does not know fails the test.
fn actions(requests: &[(String, String)], list_only: bool) -> BTreeSet<&'static str> {
    let mut used = BTreeSet::new();
    for (method, path) in requests {
        let p = permission_for(method, path).unwrap_or_else(|| {
            panic!(
                "{method} {path} is not in hyper2kvm_azure::arm::permissions (nor docs/azure.md)"
            )
        });
        if list_only {
            assert_eq!(p.needed, Needed::Always, "{method} {path}: {}", p.action);
        }
        used.insert(p.action);
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_needs_a_documented_action() {
    let list = requests(&["--list-only"], "").await;
    let dry = requests(&["--dry-run"], "").await;
    let mut used = actions(&list, true);
    used.extend(actions(&dry, true));
    assert_eq!(
        used.iter().copied().collect::<Vec<_>>(),
        [
            "Microsoft.Compute/disks/read",
            "Microsoft.Compute/virtualMachines/read"
        ]
    );
    for policy in [
        "  running_vm: snapshot\n",
        "  running_vm: stop\n  restart_vms: true\n",
        "  running_vm: deallocate\n  restart_vms: true\n",
    ] {
        let run = requests(&[], policy).await;
        used.extend(actions(&run, false));
    }
    // The runs use the table's every entry but the snapshot read, which only a run that finds
    // an earlier run's snapshot sends.
    let unused: Vec<&str> = PERMISSIONS
        .iter()
        .map(|p| p.action)
        .filter(|a| !used.contains(a))
        .collect();
    assert_eq!(unused, ["Microsoft.Compute/snapshots/read"], "{used:?}");
}
