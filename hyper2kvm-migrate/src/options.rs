//! How a run runs ([`RunOptions`], one default per setting), the guest hook it calls on OS
//! disks, and the events it reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper2kvm_core::libvirt::{CpuMode, NetworkAttachment};
use hyper2kvm_core::pipeline::{REMOTE_CHUNK_SIZE, REMOTE_CONCURRENCY};
use hyper2kvm_core::{BoxFuture, ConvertOptions, Limits};

use crate::plan::PlanOptions;
use crate::report::{DiskReport, VmStatus};
use crate::shard::ShardFilter;

/// What the guest fix-ups of an OS disk produced.
#[derive(Debug, Clone, Default)]
pub struct GuestOutcome {
    /// The fix-up report, as it goes into `report.json`.
    pub report: serde_json::Value,
    /// Not fatal: fix-ups skipped (libguestfs missing), a Windows guest left alone.
    pub warnings: Vec<String>,
    /// Fatal: the image was not fixed and must not be used as is.
    pub error: Option<String>,
}

/// Runs the guest fix-ups on an OS disk image (in place) and reports.
pub type GuestHook = Arc<dyn Fn(PathBuf) -> BoxFuture<'static, GuestOutcome> + Send + Sync>;

/// How a run runs. Start from [`RunOptions::default`] and change what you need.
#[derive(Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Which VMs and disks, how, and where (see [`plan`](crate::plan::plan)).
    pub plan: PlanOptions,
    /// How each disk is converted. The run owns two of these: the format is
    /// `plan.format`, and `resume` is always on.
    pub convert: ConvertOptions,
    /// VMs in progress at once (4).
    pub parallel_vms: usize,
    /// Disks converting at once, across all VMs (4).
    pub parallel_disks: usize,
    /// Reads in flight and bandwidth, across all disks (no limits).
    pub limits: Limits,
    /// Keep the snapshots the run creates instead of deleting them (no).
    pub keep_snapshots: bool,
    /// The domain's CPU mode (`host-passthrough`).
    pub cpu: CpuMode,
    /// Where the domain's NIC goes (the libvirt network `default`).
    pub network: NetworkAttachment,
    /// What each VM is written for: a libvirt domain (default) or KubeVirt manifests.
    pub target: Target,
    /// Guest fix-ups for OS disks, if wanted (none).
    pub guest: Option<GuestHook>,
    /// A selection of no VM is an error of kind `InvalidArgument` unless this is set (no):
    /// a script's `migrate && decommission` must not go on after migrating nothing.
    pub allow_empty: bool,
    /// Hash an image an earlier run finished in full and compare it with its report's
    /// SHA-256, instead of the cheap check (size and format header) (no).
    pub verify_done_images: bool,
    /// Migrate only one shard of the discovery: of a frozen plan, or by a hash of the VM
    /// ids (none: every VM). See [`shard`](crate::shard).
    pub shard: Option<ShardFilter>,
    /// How long to wait for a VM another run holds before skipping it as `locked` (0: skip
    /// at once). Checked every few seconds.
    pub lock_wait: Duration,
    /// Warm migration instead of a migration: `sync` rounds or the `cutover` (none: a
    /// migration). See [`crate::warm`].
    pub warm: Option<WarmMode>,
}

/// What a warm migration run does to each VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarmMode {
    /// Copies the running VM's disks into working images: in full the first time, then
    /// only what changed.
    Sync(SyncOptions),
    /// Stops the VM (as the policy says), applies the last delta, and publishes the images,
    /// fixed, with the domain.
    Cutover,
}

/// How long one `sync` goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncOptions {
    /// At most this many rounds (1).
    pub rounds: u32,
    /// Stop before `rounds` once a round's delta (bytes read and cleared over the VM's
    /// disks) is at most this (none: do every round).
    pub until_delta: Option<u64>,
    /// Pause between rounds (none).
    pub interval: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            rounds: 1,
            until_delta: None,
            interval: Duration::ZERO,
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            plan: PlanOptions::default(),
            convert: ConvertOptions {
                concurrency: REMOTE_CONCURRENCY,
                chunk_size: REMOTE_CHUNK_SIZE,
                ..ConvertOptions::default()
            },
            parallel_vms: 4,
            parallel_disks: 4,
            limits: Limits::default(),
            keep_snapshots: false,
            cpu: CpuMode::HostPassthrough,
            network: NetworkAttachment::Network("default".into()),
            target: Target::Libvirt,
            guest: None,
            allow_empty: false,
            verify_done_images: false,
            shard: None,
            lock_wait: Duration::ZERO,
            warm: None,
        }
    }
}

/// What a migrated VM is written for, besides its images.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A libvirt domain XML, `<vm>.xml`.
    Libvirt,
    /// KubeVirt manifests, `<vm>.kubevirt.yaml`: a CDI DataVolume per disk and a
    /// VirtualMachine (see [`hyper2kvm_core::kubevirt`]).
    Kubevirt(KubevirtOptions),
}

/// How the KubeVirt manifests get their images and where they go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KubevirtOptions {
    /// The URL the output directory is served under: each DataVolume imports
    /// `<base>/<path of the image under the output directory>` over HTTP. Without it, the
    /// DataVolumes wait for `virtctl image-upload`.
    pub image_url_base: Option<String>,
    /// The namespace of every object (the one `kubectl` uses when absent).
    pub namespace: Option<String>,
    /// The DataVolumes' storage class (the cluster's default when absent).
    pub storage_class: Option<String>,
}

impl KubevirtOptions {
    /// Options with an HTTP URL base, or none for uploads.
    pub fn new(image_url_base: Option<String>) -> Self {
        KubevirtOptions {
            image_url_base,
            ..KubevirtOptions::default()
        }
    }
}

/// What happens during a run, for progress displays.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunEvent {
    /// The run starts: its plan is made.
    RunStarted {
        /// The run id.
        run_id: String,
        /// VMs selected.
        vms: usize,
        /// The output directory.
        dir: PathBuf,
        /// The sizes of the planned disks, summed (what is written of them is known only
        /// once each is exported: see [`RunEvent::DiskProgress`]).
        bytes: u64,
    },
    /// The run starts on a VM.
    VmStarted {
        /// The VM's name.
        vm: String,
        /// What will be done.
        action: String,
        /// The sizes of its planned disks, summed.
        bytes: u64,
    },
    /// A step of a VM: a power operation, snapshots, fix-ups, a disk skipped.
    Step {
        /// The VM's name.
        vm: String,
        /// What happens.
        message: String,
    },
    /// A disk's conversion starts.
    DiskStarted {
        /// The VM's name.
        vm: String,
        /// The disk's name.
        disk: String,
        /// The disk's size.
        size: u64,
    },
    /// Bytes of a disk's written ranges processed so far.
    DiskProgress {
        /// The VM's name.
        vm: String,
        /// The disk's name.
        disk: String,
        /// Bytes done.
        done: u64,
        /// Bytes to do.
        total: u64,
    },
    /// A disk is done, failed, or was already done.
    DiskFinished {
        /// The VM's name.
        vm: String,
        /// The disk's report.
        report: Box<DiskReport>,
    },
    /// A VM is finished.
    VmFinished {
        /// The VM's name.
        vm: String,
        /// How it ended.
        status: VmStatus,
    },
}

/// Receives [`RunEvent`]s; called from the run's tasks, so keep it quick.
pub type EventFn = Arc<dyn Fn(&RunEvent) + Send + Sync>;
