//! Migrates one VM into a folder (qcow2 images, libvirt domain XML, report.json) with a
//! progress callback: the whole run as a library call.
//!
//! ```text
//! cargo run --release --example migrate_one_vm                  # web-01 of the simulator
//! cargo run --release --example migrate_one_vm -- RG VM OUT_DIR # with AZURE_SUBSCRIPTION_ID
//! ```
//! Against Azure, credentials come from the environment or `az login`; a running VM is
//! snapshotted (the snapshots are deleted afterwards).

use std::path::PathBuf;
use std::sync::Arc;

use hyper2kvm::azure::{
    build_http_client, ArmClient, ArmCredential, AuthMethod, AzureSource, ExportOptions,
    HttpOptions, Selection,
};
use hyper2kvm::core::{Cleanups, Compression};
use hyper2kvm::migrate::{RunEvent, RunOptions, RunningVmPolicy, Source};
use hyper2kvm_sim::{Scenario, Simulator};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (rg, vm, out) = match args.as_slice() {
        [] => ("rg-web", "web-01", "out-example"),
        [rg, vm, out] => (rg.as_str(), vm.as_str(), out.as_str()),
        _ => {
            eprintln!("usage: migrate_one_vm [RESOURCE_GROUP VM OUT_DIR]");
            std::process::exit(2);
        }
    };
    let http = build_http_client(&HttpOptions::default())?;
    let mut sim = None;
    let (arm, subscription) = match std::env::var("AZURE_SUBSCRIPTION_ID") {
        Ok(sub) => {
            let credential = ArmCredential::from_env(AuthMethod::Default, &http)?;
            (
                ArmClient::builder(http.clone())
                    .credential(credential)
                    .build()?,
                sub,
            )
        }
        Err(_) => {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sim-fleet.yaml");
            let s = Simulator::start(&Scenario::from_file(path.as_ref())?).await?;
            let credential = ArmCredential::from_env(AuthMethod::None, &http)?;
            let arm = ArmClient::builder(http.clone())
                .credential(credential)
                .endpoint(s.base_url())
                .build()?;
            sim = Some(s);
            (arm, "00000000-0000-0000-0000-000000000000".to_string())
        }
    };
    let cleanups = Cleanups::new();
    let selection = Selection {
        resource_groups: vec![rg.to_string()],
        names: vec![vm.to_string()],
        ..Selection::default()
    };
    let azure = AzureSource::new(
        arm,
        http,
        vec![subscription],
        selection,
        ExportOptions::default(),
        cleanups.clone(),
    );
    // Azure implements every trait the engine reads through (VMs and disks, power,
    // snapshots, hardware); another source could implement fewer.
    let source = Source::full(Arc::new(azure));
    let mut opts = RunOptions::default();
    opts.plan.running_vm = RunningVmPolicy::Snapshot;
    opts.plan.dir = PathBuf::from(out);
    opts.convert.compression = Some(Compression::Zstd);
    opts.parallel_vms = 1;
    // opts.guest = Some(hyper2kvm::run::guest_hook(GuestConfig::default())) to fix the guest
    let events = Arc::new(|e: &RunEvent| match e {
        RunEvent::DiskProgress { .. } => {}
        RunEvent::DiskFinished { vm, report } => println!(
            "{vm}: {} {:?}, {} bytes downloaded -> {}",
            report.name,
            report.status,
            report.bytes_downloaded,
            report.output.display()
        ),
        other => println!("{other:?}"),
    });
    let summary = hyper2kvm::run::migrate(&source, cleanups, opts, Some(events)).await?;
    for v in &summary.vms {
        println!(
            "{}: {} (report {})",
            v.name,
            v.status.as_str(),
            v.report.display()
        );
    }
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    std::process::exit(summary.exit_code.into());
}
