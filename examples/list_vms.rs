//! Lists the VMs of a subscription with their disks: discovery as a library call.
//!
//! ```text
//! cargo run --example list_vms                       # the built-in simulator's example fleet
//! AZURE_SUBSCRIPTION_ID=… cargo run --example list_vms   # your Azure (credentials from the
//!                                                        # environment or `az login`)
//! ```

use hyper2kvm::azure::{
    build_http_client, discover, ArmClient, ArmCredential, AuthMethod, HttpOptions, Selection,
};
use hyper2kvm::core::DiskRole;
use hyper2kvm_sim::{Scenario, Simulator};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let http = build_http_client(&HttpOptions::default())?;
    let (arm, subscription, sim) = match std::env::var("AZURE_SUBSCRIPTION_ID") {
        Ok(sub) => {
            let credential = ArmCredential::from_env(AuthMethod::Default, &http)?;
            (
                ArmClient::builder(http).credential(credential).build()?,
                sub,
                None,
            )
        }
        Err(_) => {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sim-fleet.yaml");
            let sim = Simulator::start(&Scenario::from_file(path.as_ref())?).await?;
            let credential = ArmCredential::from_env(AuthMethod::None, &http)?;
            let arm = ArmClient::builder(http)
                .credential(credential)
                .endpoint(sim.base_url())
                .build()?;
            let sub = "00000000-0000-0000-0000-000000000000".to_string();
            (arm, sub, Some(sim))
        }
    };
    let vms = discover(&arm, &[subscription], &Selection::default()).await?;
    for vm in &vms {
        println!(
            "{}/{}: {} {} gen{} {}",
            vm.resource_group,
            vm.name,
            vm.vm_size,
            vm.power_state,
            vm.firmware.generation(),
            vm.os_type.as_str()
        );
        for d in &vm.disks {
            let role = match d.role {
                DiskRole::Os => "os".to_string(),
                DiskRole::Data { lun } => format!("lun{lun}"),
            };
            println!("  {role:<5} {:>6} GiB  {}", d.size_bytes >> 30, d.name);
        }
    }
    println!("{} VMs, {} ARM requests", vms.len(), arm.requests_sent());
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    Ok(())
}
