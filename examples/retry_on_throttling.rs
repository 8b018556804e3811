//! An embedding tool that matches on the kind of a run's error: it retries a run that Azure
//! throttled (after the library's own retries gave up), asks for a login when the
//! credential fails, and walks the cause chain down to the HTTP layer for its log.
//!
//! ```text
//! cargo run --example retry_on_throttling                  # the simulator's fleet
//! cargo run --example retry_on_throttling -- RG OUT_DIR    # with AZURE_SUBSCRIPTION_ID
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper2kvm::azure::{
    build_http_client, ArmClient, ArmCredential, AuthMethod, AzureSource, ExportOptions,
    HttpOptions, Selection,
};
use hyper2kvm::core::{Cleanups, Error, ErrorKind};
use hyper2kvm::migrate::{RunOptions, RunSummary, Source};
use hyper2kvm_sim::{Scenario, Simulator};

/// Runs again this many times when the source throttles or the network fails.
const ATTEMPTS: u32 = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (rg, out) = match args.as_slice() {
        [] => ("rg-web".to_string(), "out-retry-example".to_string()),
        [rg, out] => (rg.clone(), out.clone()),
        _ => {
            eprintln!("usage: retry_on_throttling [RESOURCE_GROUP OUT_DIR]");
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
            let arm = ArmClient::builder(http.clone())
                .credential(ArmCredential::from_env(AuthMethod::None, &http)?)
                .endpoint(s.base_url())
                .build()?;
            sim = Some(s);
            (arm, "00000000-0000-0000-0000-000000000000".to_string())
        }
    };
    let cleanups = Cleanups::new();
    let selection = Selection {
        resource_groups: vec![rg],
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
    let source = Source::full(Arc::new(azure));
    let mut opts = RunOptions::default();
    opts.plan.dir = PathBuf::from(out);

    let outcome = run_with_retries(&source, &cleanups, opts).await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    match outcome {
        Ok(summary) => {
            println!(
                "run {}: {} of {} VMs completed",
                summary.run_id,
                summary.completed,
                summary.vms.len()
            );
            std::process::exit(summary.exit_code.into());
        }
        Err(e) => {
            match e.kind() {
                ErrorKind::Credential => eprintln!("log in again (az login): {e}"),
                ErrorKind::PermissionDenied => eprintln!("the identity needs a role: {e}"),
                ErrorKind::InvalidArgument => eprintln!("fix the settings: {e}"),
                _ => eprintln!("the run did not start: {e}"),
            }
            print_chain(&e);
            std::process::exit(1);
        }
    }
}

/// The run, again after a pause while the error says trying later may help.
async fn run_with_retries(
    source: &Source,
    cleanups: &Cleanups,
    opts: RunOptions,
) -> Result<RunSummary, Error> {
    let mut attempt = 1;
    loop {
        match hyper2kvm::run::migrate(source, cleanups.clone(), opts.clone(), None).await {
            Err(e) if e.kind() == ErrorKind::Throttled && attempt < ATTEMPTS => {
                eprintln!("throttled (attempt {attempt}), waiting a minute: {e}");
            }
            Err(e) if e.kind().is_transient() && attempt < ATTEMPTS => {
                eprintln!("{:?} (attempt {attempt}), trying again: {e}", e.kind());
            }
            outcome => return outcome,
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Each cause, down to the HTTP client's; the Azure error also has the HTTP status.
fn print_chain(e: &Error) {
    if let Some(azure) = e.downcast_source::<hyper2kvm::azure::Error>() {
        eprintln!(
            "  Azure said: {:?}, HTTP status {:?}",
            azure.kind(),
            azure.status()
        );
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        eprintln!("  caused by: {c}");
        cause = c.source();
    }
}
