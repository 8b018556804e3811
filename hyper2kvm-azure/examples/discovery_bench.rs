//! Discovery benchmark: batched discovery against the per-VM request pattern of the Python
//! hyper2kvm (one VM list, then one VM show per VM and one disk show per disk), both against
//! the same in-process simulator with the same per-request latency.
//!
//! `cargo run --release -p hyper2kvm-azure --example discovery_bench -- [VMS] [LATENCY_MS]
//! [PAGE_SIZE] [PER_VM_CONCURRENCY...]` — defaults: 2000 VMs with 2 disks each, 30 ms,
//! page size 100, per-VM concurrency 1 (the Python tool's sequential loop) and 16.
//! `bench/discovery.sh` runs it and prints the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper2kvm_azure::arm::api_version;
use hyper2kvm_azure::arm::models::{Disk, VirtualMachine};
use hyper2kvm_azure::{build_http_client, discover, ArmClient, HttpOptions, Selection};
use hyper2kvm_sim::{Scenario, Simulator};
use tokio::sync::Semaphore;

const SUB: &str = "00000000-0000-0000-0000-0000000be0c4";

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|a| a.parse().expect("numeric argument"))
        .unwrap_or(default)
}

/// The Python tool's pattern: `az vm list`, then `az vm show -d` per VM and `az disk show`
/// per disk. Subprocess start-up (hundreds of ms per `az` call) is not modelled: these
/// numbers are a lower bound for that tool.
async fn per_vm_pattern(arm: &ArmClient, concurrency: usize) -> usize {
    let list = arm.url(
        &format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"),
        api_version::COMPUTE,
        &[],
    );
    let vms: Vec<VirtualMachine> = arm.list(list).await.expect("VM list");
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for vm in vms {
        let (arm, gate) = (arm.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let show = arm.url(&vm.id, api_version::COMPUTE, &[("$expand", "instanceView")]);
            let shown: VirtualMachine = arm.get_json(show).await.expect("VM show");
            let storage = shown.properties.storage_profile.unwrap_or_default();
            let ids = storage
                .os_disk
                .iter()
                .filter_map(|d| d.managed_disk.as_ref()?.id.clone())
                .chain(
                    storage
                        .data_disks
                        .iter()
                        .filter_map(|d| d.managed_disk.as_ref()?.id.clone()),
                )
                .collect::<Vec<_>>();
            for id in ids {
                let disk: Disk = arm
                    .get_json(arm.url(&id, api_version::DISKS, &[]))
                    .await
                    .expect("disk show");
                assert!(disk.size_bytes().is_some());
            }
            drop(_permit);
            1usize
        });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        n += r.unwrap();
    }
    n
}

#[tokio::main]
async fn main() {
    let vms = arg(1, 2000) as usize;
    let latency = Duration::from_millis(arg(2, 30));
    let page_size = arg(3, 100) as usize;
    let mut concurrencies: Vec<usize> = std::env::args()
        .skip(4)
        .map(|a| a.parse().expect("concurrency"))
        .collect();
    if concurrencies.is_empty() {
        concurrencies = vec![1, 16];
    }

    let mut scenario = Scenario::generated(SUB, vms, &["rg-a", "rg-b", "rg-c"], 1);
    scenario.settings.page_size = page_size;
    scenario.settings.latency_ms = latency.as_millis() as u64;
    let sim = Simulator::start(&scenario).await.expect("simulator");
    let http = build_http_client(&HttpOptions::default()).expect("client");
    let arm = || {
        ArmClient::builder(http.clone())
            .endpoint(sim.base_url())
            .build()
            .expect("ARM client")
    };
    println!(
        "fleet: {vms} VMs, {} disks, page size {page_size}, latency {} ms per request",
        sim.fleet().disk_count(),
        latency.as_millis()
    );
    println!("| pattern | requests | wall time (s) | VMs |");
    println!("| --- | ---: | ---: | ---: |");

    let client = arm();
    sim.counters().reset();
    let start = Instant::now();
    let found = discover(&client, &[SUB.to_string()], &Selection::default())
        .await
        .expect("discovery");
    let took = start.elapsed();
    println!(
        "| hyper2kvm batched (3 paged lists) | {} | {:.2} | {} |",
        sim.counters().total(),
        took.as_secs_f64(),
        found.len()
    );

    for c in concurrencies {
        let client = arm();
        sim.counters().reset();
        let start = Instant::now();
        let n = per_vm_pattern(&client, c).await;
        let took = start.elapsed();
        println!(
            "| per-VM pattern (list + show per VM + show per disk), {c} in flight | {} | {:.2} | {n} |",
            sim.counters().total(),
            took.as_secs_f64()
        );
    }
    sim.shutdown().await;
}
