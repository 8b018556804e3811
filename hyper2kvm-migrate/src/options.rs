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
    /// VMs in progress at once, at most (32). A migration starts VMs largest first, and below
    /// this only as far ahead as the link needs: while the bytes already exported would be
    /// read before a VM started now could be (docs/design-notes.md, "Fleet scheduling"). A
    /// warm `sync` starts up to this many, a `cutover` up to `parallel_fixups`.
    pub parallel_vms: usize,
    /// Disks being read at once, across all VMs (4). A disk holds its slot only while its
    /// data flows, not while it is exported or revoked.
    pub parallel_disks: usize,
    /// Guest fix-ups (each a libguestfs appliance) at once (4). A `cutover` also stops no
    /// more VMs at once than this, so that none waits, stopped, for a fix-up.
    pub parallel_fixups: usize,
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
                direct_io: true,
                ..ConvertOptions::default()
            },
            parallel_vms: 32,
            parallel_disks: 4,
            parallel_fixups: 4,
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
    /// The run as a whole: about once a second while it runs, and once at its end.
    Fleet(FleetProgress),
}

/// A migration run's progress as a whole ([`RunEvent::Fleet`]). Bytes are those of the disks'
/// written ranges (what is read), not their sizes: a disk's are known once it is exported;
/// until then they are expected at the mean of the disks known so far.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct FleetProgress {
    /// VMs in the run.
    pub vms: usize,
    /// VMs finished, whatever their status.
    pub vms_finished: usize,
    /// VMs started and not finished.
    pub vms_in_flight: usize,
    /// Disks in the run.
    pub disks: usize,
    /// Disks whose bytes to read are known (exported, or over).
    pub disks_known: usize,
    /// Bytes read so far, those an earlier run read included.
    pub bytes_done: u64,
    /// Bytes to read of the disks known.
    pub bytes_known: u64,
    /// `bytes_known` plus the bytes expected of the other disks.
    pub bytes_expected: u64,
    /// Bytes per second over the last 30 s, waits included (none in the first second).
    pub rate: Option<f64>,
    /// Seconds until `bytes_expected` are read at `rate` (the platform's operations still
    /// to come are not in it).
    pub eta_seconds: Option<f64>,
    /// The VMs in flight, in the plan's order.
    pub in_flight: Vec<VmInFlight>,
}

/// A VM in flight, in [`FleetProgress`].
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct VmInFlight {
    /// The VM's name.
    pub vm: String,
    /// What it is doing: its last step (`deallocating`, `creating 2 snapshot(s)`, …).
    pub phase: String,
    /// Seconds since it started.
    pub seconds: f64,
    /// Its disks.
    pub disks: usize,
    /// Disks being read.
    pub disks_reading: usize,
    /// Disks exported and waiting for a reading slot.
    pub disks_waiting: usize,
    /// Bytes read of its disks.
    pub bytes_done: u64,
    /// Bytes to read of its disks known so far.
    pub bytes_known: u64,
}

/// Receives [`RunEvent`]s; called from the run's tasks, so keep it quick.
pub type EventFn = Arc<dyn Fn(&RunEvent) + Send + Sync>;
