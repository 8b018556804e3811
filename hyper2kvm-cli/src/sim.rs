//! `hyper2kvm sim --scenario FILE [--listen ADDR]`: serve a simulated Azure until Ctrl-C.

use std::io::Write;

use hyper2kvm_sim::{Scenario, Simulator};

use crate::args::SimArgs;
use crate::config::UsageError;

/// Serves the scenario. The base URL is the first line on stdout (scripts read it when they
/// pass port 0); a description goes to stderr.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let scenario = Scenario::from_file(&args.scenario).map_err(|e| UsageError(e.to_string()))?;
    let sim = Simulator::start_on(&scenario, args.listen).await?;
    let fleet = sim.fleet();
    println!("{}", sim.base_url());
    let _ = std::io::stdout().flush();
    eprintln!(
        "hyper2kvm: simulating {} VMs and {} disks in {} subscription(s) on {} (page size {}); Ctrl-C stops",
        fleet.vms.len(),
        fleet.disk_count(),
        fleet.subscriptions.len(),
        sim.base_url(),
        scenario.settings.page_size
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let counters = sim.counters().clone();
    sim.shutdown().await;
    eprintln!(
        "hyper2kvm: simulator stopped after {} requests ({} throttled)",
        counters.total(),
        counters.total_throttled()
    );
    Ok(())
}
