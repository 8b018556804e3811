//! `hyper2kvm -c config.yaml plan --shards N --output plan.json`: one discovery, frozen and
//! split into shards; and `--plan plan.json --shard I|I/N|auto`: which shard a run migrates.
//! The engine (`hyper2kvm_migrate::shard`) does the work; this is the glue.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hyper2kvm::migrate::{FrozenPlan, PlanOptions, ShardArg, ShardFilter};

use crate::args::PlanArgs;
use crate::config::{ListPlan, UsageError};
use crate::list::{fleet, print_stdout};
use crate::units::human_bytes;
use crate::ModeError;

/// Discovers, plans, balances and writes the plan; a table of the shards on stdout.
pub async fn run(plan: ListPlan, args: PlanArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (vms, requests) = fleet(&plan).await?;
    let frozen = FrozenPlan::freeze(&vms, &plan.migration, args.shards)
        .map_err(|e| UsageError(e.to_string()))?;
    frozen.write(&args.output)?;
    let mut out = format!(
        "{:<6} {:>6} {:>6} {:>12}\n",
        "SHARD", "VMS", "DISKS", "BYTES"
    );
    for t in &frozen.shard_totals {
        let disks: usize = frozen
            .vms
            .iter()
            .filter(|v| v.shard == t.shard)
            .map(|v| v.disks.len())
            .sum();
        out.push_str(&format!(
            "{:<6} {:>6} {:>6} {:>12}\n",
            t.shard,
            t.vms,
            disks,
            human_bytes(t.bytes)
        ));
    }
    print_stdout(&out, "writing the shards")?;
    eprintln!(
        "hyper2kvm: plan {}: {} VMs ({}) in {} shard(s) written to {}; {requests} ARM requests, {:.2}s, nothing changed",
        frozen.plan_id,
        frozen.vms.len(),
        human_bytes(frozen.vms.iter().map(|v| v.bytes).sum()),
        frozen.shards,
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    if vms.is_empty() {
        eprintln!(
            "hyper2kvm: note: the selection matched no VM; every shard of this plan is empty"
        );
    }
    Ok(())
}

/// `--shard` (and `--plan`) as the engine's filter, checked: the shard number against the
/// plan, the environment for `auto`, the config's policy against the plan's. Every mistake
/// is a usage error (exit 2) naming the file, flag or variable.
pub(crate) fn shard_filter(
    arg: &str,
    plan_path: Option<&Path>,
    opts: &PlanOptions,
) -> Result<ShardFilter, ModeError> {
    let arg: ShardArg = arg.parse().map_err(|e: hyper2kvm::migrate::ShardError| {
        ModeError::Arguments(UsageError(e.to_string()))
    })?;
    let config = |e: hyper2kvm::migrate::ShardError| ModeError::Config(UsageError(e.to_string()));
    let env = |var: &str| std::env::var(var).ok();
    match plan_path {
        Some(path) => {
            let plan = FrozenPlan::load(path).map_err(config)?;
            let (index, _) = arg
                .resolve(Some((path, plan.shards)), env)
                .map_err(config)?;
            plan.check_policy(path, opts).map_err(config)?;
            Ok(ShardFilter::Planned {
                plan: Arc::new(plan),
                path: path.to_owned(),
                index,
            })
        }
        None => {
            let (index, count) = arg.resolve(None, env).map_err(config)?;
            Ok(ShardFilter::Hashed { index, count })
        }
    }
}
