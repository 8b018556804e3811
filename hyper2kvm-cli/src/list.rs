//! `hyper2kvm -c config.yaml --list-only`: discover the selected VMs and print them as a table
//! or as JSON. The JSON schema is documented in docs/config.md and kept stable.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use hyper2kvm::migrate;
use hyper2kvm_azure::{build_http_client, discover, ArmClient, ArmCredential, HttpOptions};
use hyper2kvm_core::{DiskRole, Vm};
use serde::Serialize;

use hyper2kvm_sim::{Scenario, SimHandle, Simulator};

use crate::config::{ListFormat, ListPlan, UsageError};
use crate::units::human_bytes;

/// Lists and prints; a one-line summary goes to stderr so stdout stays machine-readable.
pub async fn run(plan: ListPlan) -> anyhow::Result<()> {
    let started = Instant::now();
    let (vms, requests) = fleet(&plan).await?;
    let text = match plan.format {
        ListFormat::Table => render_table(&vms),
        ListFormat::Json => {
            let mut s = serde_json::to_string_pretty(&json_vms(&vms))?;
            s.push('\n');
            s
        }
    };
    print_stdout(&text, "writing the list")?;
    eprintln!(
        "hyper2kvm: {} VMs in {} subscription(s), {} ARM requests, {:.2}s",
        vms.len(),
        plan.subscriptions.len(),
        requests,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes `text` to stdout; a closed pipe (`hyper2kvm … | head`) is not a failure.
pub fn print_stdout(text: &str, what: &'static str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context(what),
        _ => Ok(()),
    }
}

/// An ARM client for the plan: the configured scenario served in-process unless an endpoint
/// is given (the simulator stops when the handle is dropped).
pub struct Connection {
    /// The in-process simulator, if any.
    pub sim: Option<SimHandle>,
    /// The process's one HTTP client.
    pub http: reqwest::Client,
    /// The ARM client.
    pub arm: ArmClient,
}

/// Connects as the plan says.
pub async fn connect(plan: &ListPlan) -> anyhow::Result<Connection> {
    // A scenario in the config is served in-process, unless an endpoint (the flag) wins.
    let sim = match (&plan.arm_endpoint, &plan.simulator) {
        (None, Some(path)) => {
            let scenario = Scenario::from_file(path).map_err(|e| UsageError(e.to_string()))?;
            Some(Simulator::start(&scenario).await?)
        }
        _ => None,
    };
    let endpoint = sim
        .as_ref()
        .map(SimHandle::base_url)
        .or(plan.arm_endpoint.clone());
    let http = build_http_client(&HttpOptions::default())?;
    let credential = ArmCredential::from_env(plan.auth, &http)?;
    let mut builder = ArmClient::builder(http.clone())
        .credential(credential)
        .retry(plan.retry.clone());
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint(endpoint);
    }
    let arm = builder.build()?;
    Ok(Connection { sim, http, arm })
}

/// Discovers the selected VMs. Returns the VMs and the requests it took. Long waits (a
/// `Retry-After`, a backoff) are said on stderr as they happen; stdout stays the output's.
pub(crate) async fn fleet(plan: &ListPlan) -> anyhow::Result<(Vec<Vm>, u64)> {
    let c = connect(plan).await?;
    let waits = crate::waiting::spawn(crate::waiting::lines());
    let vms = discover(&c.arm, &plan.subscriptions, &plan.selection).await;
    waits.abort();
    let vms = vms?;
    if let Some(sim) = c.sim {
        sim.shutdown().await;
    }
    Ok((vms, c.arm.requests_sent()))
}

/// The dry run's JSON: the plan with the versions every record carries.
#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    tool_version: &'a str,
    schema_version: u32,
    #[serde(flatten)]
    plan: &'a T,
}

/// `--dry-run`: the migration plan for the selected VMs; only list requests are sent and no
/// file is written.
pub async fn dry_run(plan: ListPlan) -> anyhow::Result<()> {
    let (vms, requests) = fleet(&plan).await?;
    let migration = migrate::plan(&vms, &plan.migration).map_err(|e| UsageError(e.0))?;
    let text = match plan.format {
        ListFormat::Table => render_plan(
            &migration,
            matches!(plan.run.target, migrate::Target::Kubevirt(_)),
        ),
        ListFormat::Json => {
            let mut s = serde_json::to_string_pretty(&Versioned {
                tool_version: migrate::TOOL_VERSION,
                schema_version: migrate::SCHEMA_VERSION,
                plan: &migration,
            })?;
            s.push('\n');
            s
        }
    };
    print_stdout(&text, "writing the plan")?;
    if plan.whole_subscription && !plan.allow_whole_subscription {
        eprintln!(
            "hyper2kvm: note: no azure.resource_groups named: a real run over whole subscriptions is refused unless azure.allow_whole_subscription is true"
        );
    }
    eprintln!(
        "hyper2kvm: dry run: {} VMs, {} disks ({}), {} snapshots to create; {requests} ARM requests, nothing changed",
        migration.vms.len(),
        migration.vms.iter().map(|v| v.disks.len()).sum::<usize>(),
        human_bytes(migration.total_bytes()),
        migration.snapshot_count(),
    );
    Ok(())
}

/// One block per VM: its action, each disk with its size and output, and the VM's
/// definition (the domain XML, or the KubeVirt manifests with `kubevirt`).
pub(crate) fn render_plan(plan: &migrate::Plan, kubevirt: bool) -> String {
    let mut out = format!("run {}\n", plan.run_id);
    for vm in &plan.vms {
        out.push_str(&format!(
            "\n{} ({}, {}): {}\n",
            vm.name, vm.resource_group, vm.power_state, vm.action
        ));
        for d in &vm.disks {
            let via = d
                .snapshot
                .as_deref()
                .map(|s| format!(" via snapshot {s}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<5} {:>10}  {} -> {}{via}\n",
                d.lun
                    .map(|l| format!("lun{l}"))
                    .unwrap_or_else(|| "os".into()),
                human_bytes(d.size_bytes),
                d.name,
                d.output.display()
            ));
        }
        if kubevirt {
            out.push_str(&format!(
                "  kubevirt {}\n",
                vm.kubevirt_manifest().display()
            ));
        } else {
            out.push_str(&format!("  domain {}\n", vm.domain_xml.display()));
        }
    }
    out
}

/// One VM of the JSON output.
#[derive(Serialize)]
struct JsonVm<'a> {
    id: &'a str,
    name: &'a str,
    subscription: &'a str,
    resource_group: &'a str,
    location: &'a str,
    vm_size: &'a str,
    power_state: &'a str,
    os_type: &'a str,
    generation: u8,
    tags: &'a std::collections::BTreeMap<String, String>,
    /// Absent when the source does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    secure_boot: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vtpm: Option<bool>,
    /// Why the disks are encrypted inside the guest (such VMs are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    guest_encryption: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nics: Option<u32>,
    disks: Vec<JsonDisk<'a>>,
}

/// One disk of the JSON output.
#[derive(Serialize)]
struct JsonDisk<'a> {
    id: &'a str,
    name: &'a str,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lun: Option<u32>,
    size_bytes: u64,
}

fn json_vms(vms: &[Vm]) -> Vec<JsonVm<'_>> {
    vms.iter()
        .map(|vm| JsonVm {
            id: &vm.id,
            name: &vm.name,
            subscription: &vm.subscription,
            resource_group: &vm.resource_group,
            location: &vm.location,
            vm_size: &vm.vm_size,
            power_state: vm.power_state.as_str(),
            os_type: vm.os_type.as_str(),
            generation: vm.firmware.generation(),
            tags: &vm.tags,
            secure_boot: vm.security.secure_boot,
            vtpm: vm.security.vtpm,
            guest_encryption: vm.security.guest_encryption.as_deref(),
            nics: vm.nics,
            disks: vm
                .disks
                .iter()
                .map(|d| JsonDisk {
                    id: &d.id,
                    name: &d.name,
                    role: match d.role {
                        DiskRole::Os => "os",
                        DiskRole::Data { .. } => "data",
                    },
                    lun: match d.role {
                        DiskRole::Os => None,
                        DiskRole::Data { lun } => Some(lun),
                    },
                    size_bytes: d.size_bytes,
                })
                .collect(),
        })
        .collect()
}

/// Aligned columns; the last line counts VMs and bytes.
fn render_table(vms: &[Vm]) -> String {
    const HEADER: [&str; 9] = [
        "NAME",
        "RESOURCE GROUP",
        "LOCATION",
        "SIZE",
        "POWER STATE",
        "OS",
        "GEN",
        "DISKS",
        "DISK SIZE",
    ];
    let rows: Vec<[String; 9]> = vms
        .iter()
        .map(|vm| {
            [
                vm.name.clone(),
                vm.resource_group.clone(),
                vm.location.clone(),
                vm.vm_size.clone(),
                vm.power_state.to_string(),
                vm.os_type.to_string(),
                vm.firmware.generation().to_string(),
                vm.disks.len().to_string(),
                human_bytes(vm.total_disk_bytes()),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Numbers are right-aligned, words left-aligned.
    let right = [false, false, false, false, false, false, true, true, true];
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i] - cell.chars().count();
            if right[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&HEADER.map(String::from));
    for row in &rows {
        out.push_str(&line(row));
    }
    let total: u64 = vms.iter().map(Vm::total_disk_bytes).sum();
    let disks: usize = vms.iter().map(|v| v.disks.len()).sum();
    out.push_str(&format!(
        "{} VMs, {} disks, {}\n",
        vms.len(),
        disks,
        human_bytes(total)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper2kvm_core::{Disk, Firmware, OsType, PowerState};
    use std::collections::BTreeMap;

    fn vm() -> Vm {
        Vm {
            id:
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web"
                    .into(),
            name: "web".into(),
            subscription: "s".into(),
            resource_group: "rg".into(),
            location: "westeurope".into(),
            vm_size: "Standard_B1s".into(),
            tags: BTreeMap::from([("env".to_string(), "prod".to_string())]),
            power_state: PowerState::Deallocated,
            os_type: OsType::Linux,
            firmware: Firmware::Uefi,
            disks: vec![
                Disk {
                    id: "d0".into(),
                    name: "os".into(),
                    role: DiskRole::Os,
                    size_bytes: 30 << 30,
                },
                Disk {
                    id: "d1".into(),
                    name: "data".into(),
                    role: DiskRole::Data { lun: 2 },
                    size_bytes: 2 << 30,
                },
            ],
            security: Default::default(),
            nics: None,
        }
    }

    #[test]
    fn table_has_aligned_columns_and_a_total() {
        let text = render_table(&[vm()]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("NAME  RESOURCE GROUP  LOCATION    SIZE"),
            "{text}"
        );
        assert!(lines[1].contains("deallocated"), "{text}");
        assert!(lines[1].ends_with("  2      2   32.0 GiB"), "{text}");
        assert_eq!(lines[2], "1 VMs, 2 disks, 32.0 GiB");
    }

    #[test]
    fn json_follows_the_documented_schema() {
        let v = serde_json::to_value(json_vms(&[vm()])).unwrap();
        let vm = &v[0];
        assert_eq!(vm["power_state"], "deallocated");
        assert_eq!(vm["generation"], 2);
        assert_eq!(vm["os_type"], "linux");
        assert_eq!(vm["tags"]["env"], "prod");
        assert_eq!(vm["disks"][0]["role"], "os");
        assert!(vm["disks"][0].get("lun").is_none());
        assert_eq!(vm["disks"][1]["role"], "data");
        assert_eq!(vm["disks"][1]["lun"], 2);
        assert_eq!(vm["disks"][1]["size_bytes"], 2u64 << 30);
        let mut keys: Vec<_> = vm.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "disks",
                "generation",
                "id",
                "location",
                "name",
                "os_type",
                "power_state",
                "resource_group",
                "subscription",
                "tags",
                "vm_size"
            ]
        );
    }
}
