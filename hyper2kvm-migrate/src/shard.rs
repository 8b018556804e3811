//! Frozen plans and shards: one discovery, many workers.
//!
//! * **A frozen plan** ([`FrozenPlan`], `plan.json`): the selected VMs with their selected
//!   disks and sizes, the policy that decides how each is exported, and an assignment of the
//!   VMs to `N` shards. Written once ([`FrozenPlan::write`], atomically), read by every
//!   worker ([`FrozenPlan::load`]).
//! * **Balance**: VMs go to shards by provisioned bytes, largest first, each to the shard with
//!   the fewest bytes so far (ties: the lower shard); VMs of equal size are taken in order of
//!   their id. The result depends on the VMs alone, never on discovery order
//!   ([`balance`]).
//! * **A shard's work** ([`FrozenPlan::shard_work`]): the VMs of shard `I` as they are *now*
//!   (discovered again before anything is done). A planned VM that is gone, or whose
//!   selected disks changed, is not migrated but reported ([`PlanDeviation`]); one whose
//!   power state changed is migrated as its current state says, and reported too.
//! * **Without a plan**, `--shard I/N` takes the VMs whose id hashes to `I` ([`shard_of`]):
//!   a stable hash (FNV-1a of the lower-cased id), so independent discoveries agree.
//! * **Which shard am I** ([`ShardArg`]): a number, `I/N`, or `auto`, read from
//!   `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job) or `SLURM_ARRAY_TASK_ID` (a Slurm job
//!   array, `--array=0-(N-1)`) and checked against the plan's count.
//!
//! Nothing here names a platform: VM and disk ids are whatever the source says.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use hyper2kvm_core::{OutputFormat, Vm};
use serde::{Deserialize, Serialize};

use crate::plan::{plan, DiskChoice, Layout, PlanOptions, Role, RunningVmPolicy};
use crate::report::{write_json_atomic, SCHEMA_VERSION, TOOL_VERSION};
use crate::time::{new_run_id, rfc3339};

/// The most shards a plan may have.
pub const MAX_SHARDS: u32 = 10_000;

/// What goes wrong with plans and shard numbers; every message names the file or the
/// variable concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The plan file cannot be read.
    #[error("{}: cannot read the plan: {source}", path.display())]
    Read {
        /// The plan file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plan file is not a plan.
    #[error("{}: not a hyper2kvm plan: {source}", path.display())]
    Parse {
        /// The plan file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The plan file cannot be written.
    #[error("{}: cannot write the plan: {source}", path.display())]
    Write {
        /// The plan file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plan says something impossible.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The plan file.
        path: PathBuf,
        /// What is wrong, naming the field.
        what: String,
    },
    /// A plan cannot be made from these VMs.
    #[error("{0}")]
    Plan(String),
    /// A shard number outside the plan.
    #[error("shard {index} out of range 0–{} in {}", count.saturating_sub(1), plan.display())]
    OutOfRange {
        /// The shard asked for.
        index: u32,
        /// The plan's shards.
        count: u32,
        /// The plan file (or `--shard I/N` when there is none).
        plan: PathBuf,
    },
    /// `--shard I/N` with a plan of another count.
    #[error("--shard {index}/{given}: {} has {count} shards, not {given}", plan.display())]
    CountMismatch {
        /// The shard asked for.
        index: u32,
        /// The count given.
        given: u32,
        /// The plan's count.
        count: u32,
        /// The plan file.
        plan: PathBuf,
    },
    /// `--shard auto` without either variable.
    #[error("--shard auto: neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) nor SLURM_ARRAY_TASK_ID (a Slurm job array) is set; give the shard number instead")]
    NoIndexVariable,
    /// The variable is not a shard number.
    #[error("--shard auto: {var}={value:?} is not a shard number (0, 1, 2, …)")]
    NotANumber {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A shard given by number needs the count from somewhere.
    #[error(
        "--shard {0}: the number of shards is unknown; give --plan plan.json, or --shard {0}/N"
    )]
    NoCount(String),
    /// Not `I`, `I/N` or `auto`.
    #[error(
        "--shard {0:?}: expected a shard number I, I/N (shard I of N, without a plan) or auto"
    )]
    Syntax(String),
    /// The config's policy differs from the plan's.
    #[error("{}: the plan was made with {field}: {planned}, the config now says {now}; make a new plan, or run with the config it was made with", path.display())]
    PolicyMismatch {
        /// The plan file.
        path: PathBuf,
        /// The setting.
        field: &'static str,
        /// What the plan says.
        planned: String,
        /// What the config says.
        now: String,
    },
}

/// The policy a plan was made with: how a worker exports each VM. A worker whose config
/// says otherwise refuses to start ([`FrozenPlan::check_policy`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPolicy {
    /// Running or stopped VMs: snapshot, deallocate, stop or refuse.
    pub running_vm: RunningVmPolicy,
    /// Which disks.
    pub disks: DiskChoice,
    /// Folder layout.
    pub layout: Layout,
    /// Image format, `qcow2` or `raw`.
    pub format: String,
    /// Start stopped or deallocated VMs again.
    pub restart: bool,
    /// The output directory the plan was made for (informative: workers may mount it
    /// elsewhere).
    pub output_dir: PathBuf,
}

impl PlanPolicy {
    fn of(opts: &PlanOptions) -> PlanPolicy {
        PlanPolicy {
            running_vm: opts.running_vm,
            disks: opts.disks,
            layout: opts.layout,
            format: format_name(opts.format).to_string(),
            restart: opts.restart,
            output_dir: opts.dir.clone(),
        }
    }
}

fn format_name(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::Qcow2 => "qcow2",
        OutputFormat::Raw => "raw",
    }
}

/// One planned disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenDisk {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `os` or `data`.
    pub role: Role,
    /// A data disk's LUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u32>,
    /// Provisioned size in bytes.
    pub size_bytes: u64,
}

/// One planned VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenVm {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its subscription (or the source's equivalent).
    pub subscription: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its power state when planned.
    pub power_state: String,
    /// What would be done with it, as planned (`snapshot, export snapshots`, …).
    pub action: String,
    /// Its shard.
    pub shard: u32,
    /// Provisioned bytes of its selected disks.
    pub bytes: u64,
    /// Its selected disks.
    pub disks: Vec<FrozenDisk>,
}

/// One shard's share of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardShare {
    /// The shard's index, from 0.
    pub shard: u32,
    /// VMs assigned to it.
    pub vms: usize,
    /// Their provisioned bytes.
    pub bytes: u64,
}

/// `plan.json`: a discovery frozen and split into shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenPlan {
    /// The hyper2kvm that wrote it.
    pub tool_version: String,
    /// The records' schema version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Identifies this plan; every shard run names it in its summary.
    pub plan_id: String,
    /// When it was made.
    pub created_at: String,
    /// How VMs are exported.
    pub policy: PlanPolicy,
    /// The number of shards.
    pub shards: u32,
    /// Each shard's VMs and bytes.
    pub shard_totals: Vec<ShardShare>,
    /// The VMs, in discovery order.
    pub vms: Vec<FrozenVm>,
}

/// Assigns items to `shards` shards balanced by weight: heaviest first, each to the
/// lightest shard so far (ties: the lower index); items of equal weight in order of their
/// key. Returns each item's shard, in the items' order.
pub fn balance(items: &[(&str, u64)], shards: u32) -> Vec<u32> {
    let shards = shards.max(1);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        items[b]
            .1
            .cmp(&items[a].1)
            .then_with(|| items[a].0.cmp(items[b].0))
    });
    let mut load: BinaryHeap<Reverse<(u64, u32)>> = (0..shards).map(|s| Reverse((0, s))).collect();
    let mut out = vec![0; items.len()];
    for i in order {
        let Reverse((bytes, shard)) = load.pop().expect("at least one shard");
        out[i] = shard;
        load.push(Reverse((bytes.saturating_add(items[i].1), shard)));
    }
    out
}

/// The shard of `id` among `count` by a stable hash (FNV-1a, 64 bits, of the lower-cased
/// id): the same on every host, in every build, whatever the discovery order.
pub fn shard_of(id: &str, count: u32) -> u32 {
    let h = id
        .to_ascii_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (h % u64::from(count.max(1))) as u32
}

impl FrozenPlan {
    /// Plans `vms` as a run with `opts` would and splits them into `shards` shards.
    pub fn freeze(vms: &[Vm], opts: &PlanOptions, shards: u32) -> Result<FrozenPlan, ShardError> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(ShardError::Plan(format!(
                "--shards {shards}: between 1 and {MAX_SHARDS}"
            )));
        }
        // The same plan a run makes: the same folder checks, the same disk selection.
        let planned = plan(vms, opts).map_err(|e| ShardError::Plan(e.0))?;
        let weights: Vec<(&str, u64)> = planned
            .vms
            .iter()
            .map(|v| (v.id.as_str(), v.disks.iter().map(|d| d.size_bytes).sum()))
            .collect();
        let assigned = balance(&weights, shards);
        let mut totals: Vec<ShardShare> = (0..shards)
            .map(|shard| ShardShare {
                shard,
                vms: 0,
                bytes: 0,
            })
            .collect();
        let vms = planned
            .vms
            .iter()
            .zip(&assigned)
            .zip(&weights)
            .map(|((v, &shard), &(_, bytes))| {
                let t = &mut totals[shard as usize];
                t.vms += 1;
                t.bytes += bytes;
                FrozenVm {
                    id: v.id.clone(),
                    name: v.name.clone(),
                    subscription: v.subscription.clone(),
                    resource_group: v.resource_group.clone(),
                    power_state: v.power_state.clone(),
                    action: v.action.to_string(),
                    shard,
                    bytes,
                    disks: v
                        .disks
                        .iter()
                        .map(|d| FrozenDisk {
                            id: d.id.clone(),
                            name: d.name.clone(),
                            role: d.role,
                            lun: d.lun,
                            size_bytes: d.size_bytes,
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(FrozenPlan {
            tool_version: TOOL_VERSION.to_string(),
            schema_version: SCHEMA_VERSION,
            plan_id: new_run_id().replacen("h2k-", "plan-", 1),
            created_at: rfc3339(SystemTime::now()),
            policy: PlanPolicy::of(opts),
            shards,
            shard_totals: totals,
            vms,
        })
    }

    /// Writes the plan to `path` atomically: a temporary file in the same directory,
    /// synced, then renamed, so a worker never reads half a plan.
    pub fn write(&self, path: &Path) -> Result<(), ShardError> {
        write_json_atomic(path, self).map_err(|source| ShardError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads and checks a plan.
    pub fn load(path: &Path) -> Result<FrozenPlan, ShardError> {
        let bytes = std::fs::read(path).map_err(|source| ShardError::Read {
            path: path.to_owned(),
            source,
        })?;
        let plan: FrozenPlan =
            serde_json::from_slice(&bytes).map_err(|source| ShardError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let invalid = |what: String| ShardError::Invalid {
            path: path.to_owned(),
            what,
        };
        if plan.schema_version > SCHEMA_VERSION {
            return Err(invalid(format!(
                "schema_version {} is newer than this hyper2kvm reads ({SCHEMA_VERSION}); use hyper2kvm {} or later",
                plan.schema_version, plan.tool_version
            )));
        }
        if plan.shards == 0 || plan.shards > MAX_SHARDS {
            return Err(invalid(format!(
                "shards: {} is not between 1 and {MAX_SHARDS}",
                plan.shards
            )));
        }
        if let Some((i, v)) = plan
            .vms
            .iter()
            .enumerate()
            .find(|(_, v)| v.shard >= plan.shards)
        {
            return Err(invalid(format!(
                "vms[{i}].shard: {} is out of range 0–{} ({})",
                v.shard,
                plan.shards - 1,
                v.name
            )));
        }
        Ok(plan)
    }

    /// Fails when `opts` would export differently from what the plan says.
    pub fn check_policy(&self, path: &Path, opts: &PlanOptions) -> Result<(), ShardError> {
        let now = PlanPolicy::of(opts);
        let p = &self.policy;
        let fields: [(&'static str, String, String); 5] = [
            (
                "azure.running_vm",
                json_word(&p.running_vm),
                json_word(&now.running_vm),
            ),
            ("azure.disks", json_word(&p.disks), json_word(&now.disks)),
            (
                "output.layout",
                json_word(&p.layout),
                json_word(&now.layout),
            ),
            ("output.format", p.format.clone(), now.format.clone()),
            (
                "azure.restart_vms",
                p.restart.to_string(),
                now.restart.to_string(),
            ),
        ];
        for (field, planned, now) in fields {
            if planned != now {
                return Err(ShardError::PolicyMismatch {
                    path: path.to_owned(),
                    field,
                    planned,
                    now,
                });
            }
        }
        Ok(())
    }

    /// The VMs of `shard` as `current` (a discovery made now) shows them, and what changed
    /// since the plan. VMs discovered now but not in the plan are left out: the plan is
    /// frozen.
    pub fn shard_work(&self, shard: u32, current: Vec<Vm>) -> ShardWork {
        let mut now: HashMap<String, Vm> = current
            .into_iter()
            .map(|vm| (vm.id.to_ascii_lowercase(), vm))
            .collect();
        let mut work = ShardWork::default();
        for planned in self.vms.iter().filter(|v| v.shard == shard) {
            let deviation = |kind, detail: String, migrated| PlanDeviation {
                vm_id: planned.id.clone(),
                name: planned.name.clone(),
                resource_group: planned.resource_group.clone(),
                kind,
                detail,
                migrated,
            };
            let Some(vm) = now.remove(&planned.id.to_ascii_lowercase()) else {
                work.deviations.push(deviation(
                    DeviationKind::Gone,
                    "not found by the discovery made now: deleted, or no longer selected by the config".into(),
                    false,
                ));
                continue;
            };
            if let Some(what) = disks_changed(planned, &vm, self.policy.disks) {
                work.deviations
                    .push(deviation(DeviationKind::DisksChanged, what, false));
                continue;
            }
            let state = vm.power_state.to_string();
            if state != planned.power_state {
                work.deviations.push(deviation(
                    DeviationKind::PowerStateChanged,
                    format!(
                        "planned {}, now {state}: migrated as its current state says",
                        planned.power_state
                    ),
                    true,
                ));
            }
            work.vms.push(vm);
        }
        work
    }
}

/// `"snapshot"` for `RunningVmPolicy::Snapshot`: the word the config and the plan use.
fn json_word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What differs between the planned disks and the VM's current ones, if anything.
fn disks_changed(planned: &FrozenVm, vm: &Vm, choice: DiskChoice) -> Option<String> {
    use hyper2kvm_core::DiskRole;
    let now: BTreeMap<String, u64> = vm
        .disks
        .iter()
        .filter(|d| match choice {
            DiskChoice::All => true,
            DiskChoice::Os => d.role == DiskRole::Os,
            DiskChoice::Data => d.role != DiskRole::Os,
        })
        .map(|d| (d.id.to_ascii_lowercase(), d.size_bytes))
        .collect();
    let then: BTreeMap<String, u64> = planned
        .disks
        .iter()
        .map(|d| (d.id.to_ascii_lowercase(), d.size_bytes))
        .collect();
    let mut changes = Vec::new();
    for d in &planned.disks {
        match now.get(&d.id.to_ascii_lowercase()) {
            None => changes.push(format!("disk {} is gone", d.name)),
            Some(&size) if size != d.size_bytes => changes.push(format!(
                "disk {} was {} bytes, now {size}",
                d.name, d.size_bytes
            )),
            Some(_) => {}
        }
    }
    for d in &vm.disks {
        if now.contains_key(&d.id.to_ascii_lowercase())
            && !then.contains_key(&d.id.to_ascii_lowercase())
        {
            changes.push(format!("disk {} is new", d.name));
        }
    }
    (!changes.is_empty()).then(|| {
        format!(
            "its disks changed since the plan ({}): not migrated; make a new plan",
            changes.join(", ")
        )
    })
}

/// What a shard run does: the VMs to migrate, and the planned VMs it does not migrate (or
/// migrates differently) with why.
#[derive(Debug, Clone, Default)]
pub struct ShardWork {
    /// The VMs to migrate, as discovered now.
    pub vms: Vec<Vm>,
    /// What changed since the plan.
    pub deviations: Vec<PlanDeviation>,
}

/// How a planned VM differs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviationKind {
    /// Not found now: deleted, or no longer selected.
    Gone,
    /// A selected disk was added, removed or resized.
    DisksChanged,
    /// The power state changed (the VM is still migrated).
    PowerStateChanged,
}

/// A planned VM that is gone or changed, as a shard run found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDeviation {
    /// The VM's id.
    pub vm_id: String,
    /// Its name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// What changed.
    pub kind: DeviationKind,
    /// In words.
    pub detail: String,
    /// Whether the run migrated it all the same.
    pub migrated: bool,
}

/// A run's place in a sharded fleet, recorded in its summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// This shard, from 0.
    pub index: u32,
    /// Of how many.
    pub count: u32,
    /// The plan's id, when the run follows a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The plan file, when the run follows a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PathBuf>,
}

/// Which VMs of a discovery a run migrates ([`RunOptions::shard`](crate::RunOptions)).
#[derive(Debug, Clone)]
pub enum ShardFilter {
    /// Shard `index` of a frozen plan.
    Planned {
        /// The plan.
        plan: Arc<FrozenPlan>,
        /// Its file, for the records.
        path: PathBuf,
        /// The shard.
        index: u32,
    },
    /// The VMs whose id hashes to `index` of `count` ([`shard_of`]).
    Hashed {
        /// The shard.
        index: u32,
        /// Of how many.
        count: u32,
    },
}

impl ShardFilter {
    /// What the run's summary records.
    pub fn record(&self) -> ShardRecord {
        match self {
            ShardFilter::Planned { plan, path, index } => ShardRecord {
                index: *index,
                count: plan.shards,
                plan_id: Some(plan.plan_id.clone()),
                plan: Some(std::path::absolute(path).unwrap_or_else(|_| path.clone())),
            },
            ShardFilter::Hashed { index, count } => ShardRecord {
                index: *index,
                count: *count,
                plan_id: None,
                plan: None,
            },
        }
    }

    /// This shard's part of `vms` (a discovery made now).
    pub fn select(&self, vms: Vec<Vm>) -> ShardWork {
        match self {
            ShardFilter::Planned { plan, index, .. } => plan.shard_work(*index, vms),
            ShardFilter::Hashed { index, count } => ShardWork {
                vms: vms
                    .into_iter()
                    .filter(|vm| shard_of(&vm.id, *count) == *index)
                    .collect(),
                deviations: Vec::new(),
            },
        }
    }
}

/// `--shard`: `I`, `I/N`, `auto` or `auto/N`, before it is checked against a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// Shard `I` of the plan.
    Index(u32),
    /// Shard `I` of `N`.
    IndexOf(u32, u32),
    /// From the environment, of the plan's count (or of `N`).
    Auto(Option<u32>),
}

impl std::str::FromStr for ShardArg {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<ShardArg, ShardError> {
        let syntax = || ShardError::Syntax(s.to_string());
        let number = |t: &str| t.trim().parse::<u32>().map_err(|_| syntax());
        let (head, count) = match s.split_once('/') {
            Some((h, n)) => (h, Some(number(n)?)),
            None => (s, None),
        };
        if count == Some(0) {
            return Err(syntax());
        }
        if head.trim().eq_ignore_ascii_case("auto") {
            return Ok(ShardArg::Auto(count));
        }
        let index = number(head)?;
        Ok(match count {
            Some(n) => ShardArg::IndexOf(index, n),
            None => ShardArg::Index(index),
        })
    }
}

impl ShardArg {
    /// The shard index and count, checked: against the plan (`plan`: its file and shard
    /// count) when there is one; `env` reads the environment (for `auto`).
    pub fn resolve(
        self,
        plan: Option<(&Path, u32)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(u32, u32), ShardError> {
        let (index, given) = match self {
            ShardArg::Index(i) => (i, None),
            ShardArg::IndexOf(i, n) => (i, Some(n)),
            ShardArg::Auto(n) => (index_from_env(&env)?, n),
        };
        let shown = || match self {
            ShardArg::Auto(_) => "auto".to_string(),
            _ => index.to_string(),
        };
        let (count, file) = match (plan, given) {
            (Some((path, count)), Some(n)) if n != count => {
                return Err(ShardError::CountMismatch {
                    index,
                    given: n,
                    count,
                    plan: path.to_owned(),
                })
            }
            (Some((path, count)), _) => (count, path.to_owned()),
            (None, Some(n)) => (n, PathBuf::from(format!("--shard {index}/{n}"))),
            (None, None) => return Err(ShardError::NoCount(shown())),
        };
        if index >= count {
            return Err(ShardError::OutOfRange {
                index,
                count,
                plan: file,
            });
        }
        Ok((index, count))
    }
}

/// The shard index of an Indexed Job's pod or a job array's task.
fn index_from_env(env: &impl Fn(&str) -> Option<String>) -> Result<u32, ShardError> {
    let read = |var: &'static str| -> Result<Option<u32>, ShardError> {
        match env(var) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| ShardError::NotANumber { var, value: v }),
        }
    };
    if let Some(i) = read("JOB_COMPLETION_INDEX")? {
        return Ok(i);
    }
    // Taken as it is, not minus SLURM_ARRAY_TASK_MIN: a failed task run again alone
    // (`sbatch --array=1`) has MIN 1 and must still be shard 1. Arrays are `--array=0-(N-1)`.
    if let Some(i) = read("SLURM_ARRAY_TASK_ID")? {
        return Ok(i);
    }
    Err(ShardError::NoIndexVariable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper2kvm_core::{Disk, DiskRole, Firmware, OsType, PowerState};

    fn vm(name: &str, sizes_gib: &[u64]) -> Vm {
        Vm {
            id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"),
            name: name.into(),
            subscription: "s".into(),
            resource_group: "rg".into(),
            location: "westeurope".into(),
            vm_size: "Standard_B2s".into(),
            tags: Default::default(),
            power_state: PowerState::Deallocated,
            os_type: OsType::Linux,
            firmware: Firmware::Uefi,
            disks: sizes_gib
                .iter()
                .enumerate()
                .map(|(i, &g)| Disk {
                    id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/{name}-{i}"),
                    name: format!("{name}-{i}"),
                    role: if i == 0 { DiskRole::Os } else { DiskRole::Data { lun: i as u32 - 1 } },
                    size_bytes: g << 30,
                })
                .collect(),
            security: Default::default(),
            nics: None,
        }
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            dir: "/out".into(),
            ..PlanOptions::default()
        }
    }

    #[test]
    fn balance_spreads_the_largest_first_and_ignores_discovery_order() {
        let items = [("a", 100), ("b", 60), ("c", 50), ("d", 40), ("e", 10)];
        // 100 | 60 | 50, then 40 to the 50 (90), then 10 to the 60 (70).
        assert_eq!(balance(&items, 3), vec![0, 1, 2, 2, 1]);
        let mut reversed = items;
        reversed.reverse();
        let again = balance(&reversed, 3);
        let by_key = |out: &[u32], items: &[(&str, u64)]| -> BTreeMap<String, u32> {
            items
                .iter()
                .zip(out)
                .map(|((k, _), s)| (k.to_string(), *s))
                .collect()
        };
        assert_eq!(
            by_key(&again, &reversed),
            by_key(&balance(&items, 3), &items)
        );
        // Equal sizes: taken by key, round the shards.
        assert_eq!(balance(&[("y", 1), ("x", 1), ("z", 1)], 2), vec![1, 0, 0]);
        assert_eq!(balance(&[], 4), Vec::<u32>::new());
    }

    #[test]
    fn a_frozen_plan_is_balanced_and_round_trips() {
        let vms: Vec<Vm> = (0..30)
            .map(|i| vm(&format!("vm{i:02}"), &[30, (i % 7) * 16]))
            .collect();
        let plan = FrozenPlan::freeze(&vms, &opts(), 4).unwrap();
        assert_eq!(plan.vms.len(), 30);
        let total: u64 = plan.shard_totals.iter().map(|t| t.bytes).sum();
        assert_eq!(total, plan.vms.iter().map(|v| v.bytes).sum::<u64>());
        let (lo, hi) = plan.shard_totals.iter().fold((u64::MAX, 0), |(lo, hi), t| {
            (lo.min(t.bytes), hi.max(t.bytes))
        });
        let largest = plan.vms.iter().map(|v| v.bytes).max().unwrap();
        assert!(hi - lo <= largest, "{:?}", plan.shard_totals);
        let dir = std::env::temp_dir().join(format!("h2k-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.json");
        plan.write(&path).unwrap();
        assert_eq!(FrozenPlan::load(&path).unwrap(), plan);
        assert!(!dir.join("plan.json.tmp").exists());
        // A shard outside the plan is named with the field.
        let mut bad = plan.clone();
        bad.vms[3].shard = 4;
        bad.write(&path).unwrap();
        let err = FrozenPlan::load(&path).unwrap_err().to_string();
        assert!(err.contains("vms[3].shard: 4 is out of range 0–3"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shard_reads_the_vms_as_they_are_now() {
        let vms = vec![vm("a", &[30]), vm("b", &[30, 10]), vm("c", &[30])];
        let plan = FrozenPlan::freeze(&vms, &opts(), 1).unwrap();
        let mut now = vec![vm("b", &[30, 20]), vm("c", &[30])];
        now[1].power_state = PowerState::Running;
        let work = plan.shard_work(0, now);
        assert_eq!(
            work.vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        let kinds: Vec<_> = work
            .deviations
            .iter()
            .map(|d| (d.name.as_str(), d.kind, d.migrated))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", DeviationKind::Gone, false),
                ("b", DeviationKind::DisksChanged, false),
                ("c", DeviationKind::PowerStateChanged, true)
            ]
        );
        assert!(work.deviations[1]
            .detail
            .contains("b-1 was 10737418240 bytes, now 21474836480"));
    }

    #[test]
    fn hashed_shards_cover_every_vm_once() {
        let ids: Vec<String> = (0..500).map(|i| format!("/subs/x/vm/{i}")).collect();
        let mut seen = vec![0u32; 3];
        for id in &ids {
            let s = shard_of(id, 3);
            assert_eq!(s, shard_of(&id.to_uppercase(), 3), "case does not matter");
            seen[s as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 100), "{seen:?}");
    }

    #[test]
    fn shard_numbers_are_checked_and_auto_reads_the_scheduler() {
        let plan = Path::new("plan.json");
        let none = |_: &str| None;
        let parse = |s: &str| s.parse::<ShardArg>().unwrap();
        assert_eq!(parse("2").resolve(Some((plan, 3)), none).unwrap(), (2, 3));
        assert_eq!(
            parse("3")
                .resolve(Some((plan, 3)), none)
                .unwrap_err()
                .to_string(),
            "shard 3 out of range 0–2 in plan.json"
        );
        assert_eq!(parse("1/4").resolve(None, none).unwrap(), (1, 4));
        assert!(parse("1/4").resolve(Some((plan, 3)), none).is_err());
        assert!(parse("1").resolve(None, none).is_err());
        for bad in ["x", "1/0", "-1", "1/2/3", ""] {
            assert!(bad.parse::<ShardArg>().is_err(), "{bad}");
        }
        let k8s = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "1".to_string());
        assert_eq!(parse("auto").resolve(Some((plan, 3)), k8s).unwrap(), (1, 3));
        // A task run again alone (`sbatch --array=1`) has SLURM_ARRAY_TASK_MIN=1: still
        // shard 1.
        let slurm = |v: &str| match v {
            "SLURM_ARRAY_TASK_ID" => Some("1".to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
            _ => None,
        };
        assert_eq!(
            parse("auto").resolve(Some((plan, 3)), slurm).unwrap(),
            (1, 3)
        );
        let garbage = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "two".to_string());
        let err = parse("auto").resolve(Some((plan, 3)), garbage).unwrap_err();
        assert!(
            err.to_string().contains("JOB_COMPLETION_INDEX=\"two\""),
            "{err}"
        );
        let err = parse("auto").resolve(Some((plan, 3)), none).unwrap_err();
        assert!(matches!(err, ShardError::NoIndexVariable));
        let high = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "5".to_string());
        assert_eq!(
            parse("auto")
                .resolve(Some((plan, 3)), high)
                .unwrap_err()
                .to_string(),
            "shard 5 out of range 0–2 in plan.json"
        );
    }

    #[test]
    fn a_config_that_exports_differently_is_refused() {
        let plan = FrozenPlan::freeze(&[vm("a", &[1])], &opts(), 2).unwrap();
        let mut o = opts();
        plan.check_policy(Path::new("p.json"), &o).unwrap();
        o.running_vm = RunningVmPolicy::Deallocate;
        let err = plan.check_policy(Path::new("p.json"), &o).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.json: the plan was made with azure.running_vm: snapshot, the config now says deallocate; make a new plan, or run with the config it was made with"
        );
    }
}
