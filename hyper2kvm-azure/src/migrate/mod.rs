//! Migration runs: the plan (what a run would do, also shown by `--dry-run`), the run itself,
//! and its reports.

pub mod plan;
pub mod report;
pub mod run;
mod time;

pub use plan::{
    plan, snapshot_name, DiskChoice, DiskPlan, Layout, Plan, PlanError, PlanOptions,
    RunningVmPolicy, VmAction, VmPlan,
};
pub use report::{
    DiskReport, DiskStatus, PowerRecord, ResourceRecord, RunSummary, VmReport, VmStatus, VmSummary,
};
pub use run::{EventFn, GuestHook, GuestOutcome, Migration, RunEvent, RunOptions};
pub use time::{new_run_id, rfc3339};
