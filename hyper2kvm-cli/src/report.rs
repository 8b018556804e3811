//! `hyper2kvm report DIR [--plan plan.json] [--output table|json]`: where a fleet stands,
//! read from its output directory by the engine (`hyper2kvm_migrate::fleet`). Reads only;
//! works on a directory shared by many workers while they run, and on one machine's.

use hyper2kvm::migrate::{FleetReport, FrozenPlan, VmState};

use crate::args::{OutputArg, ReportArgs};
use crate::config::UsageError;
use crate::list::print_stdout;
use crate::units::human_bytes;

/// Reads the directory (and the plan) and prints the fleet.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        return Err(UsageError(format!(
            "{}: not a directory (give the output.dir the runs wrote to)",
            args.dir.display()
        ))
        .into());
    }
    let plan = match &args.plan {
        Some(p) => Some(FrozenPlan::load(p).map_err(|e| UsageError(e.to_string()))?),
        None => None,
    };
    let fleet = FleetReport::scan(&args.dir, args.plan.as_deref().zip(plan.as_ref()))
        .map_err(|e| anyhow::anyhow!("{}: cannot read the directory: {e}", args.dir.display()))?;
    let text = match args.output {
        OutputArg::Json => {
            let mut s = serde_json::to_string_pretty(&fleet)?;
            s.push('\n');
            s
        }
        OutputArg::Table => render(&fleet),
    };
    print_stdout(&text, "writing the report")?;
    for u in &fleet.unreadable {
        eprintln!("hyper2kvm: warning: cannot read {u}");
    }
    Ok(())
}

/// VMs that need a look first (failed, interrupted, changed), then the rest; the shards;
/// the leftovers; the totals.
fn render(f: &FleetReport) -> String {
    let mut out = String::new();
    let mut vms: Vec<_> = f.vms.iter().collect();
    vms.sort_by_key(|v| match v.state {
        VmState::Failed => 0,
        VmState::Changed => 1,
        VmState::Interrupted => 2,
        VmState::InProgress => 3,
        VmState::NotStarted => 4,
        VmState::Synced => 5,
        VmState::Completed => 6,
    });
    let rows: Vec<[String; 6]> = vms
        .iter()
        .map(|v| {
            [
                v.resource_group.clone(),
                v.name.clone(),
                v.state.as_str().to_string(),
                v.shard.map_or("-".into(), |s| s.to_string()),
                format!("{}/{}", v.disks_done, v.disks_total),
                v.error
                    .as_ref()
                    .map(|e| e.one_line(72))
                    .or_else(|| v.lock.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "RESOURCE GROUP",
            "VM",
            "STATE",
            "SHARD",
            "DISKS",
            "ERROR / HOLDER",
        ],
        &rows,
    );
    if !f.shards.is_empty() {
        out.push('\n');
        let rows: Vec<[String; 6]> = f
            .shards
            .iter()
            .map(|s| {
                [
                    s.shard.map_or("-".into(), |s| s.to_string()),
                    s.runs.to_string(),
                    format!("{}/{}", s.completed, s.vms),
                    human_bytes(s.bytes_downloaded),
                    format!("{:.1} s", s.seconds),
                    format!("{}/s", human_bytes(s.bytes_per_second as u64)),
                ]
            })
            .collect();
        table(
            &mut out,
            &["SHARD", "RUNS", "COMPLETED", "DOWNLOADED", "TIME", "RATE"],
            &rows,
        );
    }
    if !f.cleanup.is_empty() {
        out.push_str("\nleft to clean up:\n");
        for l in &f.cleanup {
            out.push_str(&format!(
                "  {}: {} {}{}{}\n",
                l.vm,
                l.kind,
                l.resource.as_deref().unwrap_or("?"),
                l.command
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                l.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
            ));
        }
    }
    let t = &f.totals;
    out.push_str(&format!(
        "\n{} VMs: {} completed, {}{} failed, {} interrupted, {} in progress, {} changed, {} not started; {}/{} disks, {} downloaded; {} grants and {} snapshots left\n",
        t.vms,
        t.completed,
        // Only fleets migrated warm have VMs between `sync` and `cutover`.
        if t.synced > 0 {
            format!("{} synced (cutover to come), ", t.synced)
        } else {
            String::new()
        },
        t.failed,
        t.interrupted,
        t.in_progress,
        t.changed,
        t.not_started,
        t.disks_done,
        t.disks_total,
        human_bytes(t.bytes_downloaded),
        t.grants_left,
        t.snapshots_left,
    ));
    out
}

fn table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
