//! Migration runs: the plan (what a run would do, also shown by `--dry-run`).

pub mod plan;

pub use plan::{
    plan, snapshot_name, DiskChoice, DiskPlan, Layout, Plan, PlanError, PlanOptions,
    RunningVmPolicy, VmAction, VmPlan,
};
