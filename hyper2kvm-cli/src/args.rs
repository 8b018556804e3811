//! The command line, as clap sees it. Only parsing and validation of single values live
//! here; commands turn these into the library's options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::parse_size;

/// What `--help` and the man page say about exit codes (main.rs decides them).
const EXIT_CODES: &str = "Exit codes: 0 done; 1 failed; 2 usage or configuration error; \
    3 a run that completed some VMs but not all; 130 interrupted (Ctrl-C, SIGTERM).";

/// Move virtual machines from Azure to KVM.
///
/// `hyper2kvm -c config.yaml` migrates the VMs a config selects (`--dry-run` shows the plan,
/// `--list-only` lists them);
/// `hyper2kvm import SRC... --output-dir DIR` imports local VM exports (OVA, OVF, Hyper-V,
/// disk images); `hyper2kvm convert SRC DST` converts one disk image; `hyper2kvm sim` serves a simulated Azure.
#[derive(Debug, Parser)]
#[command(
    name = "hyper2kvm",
    version,
    propagate_version = true,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// The configuration file (YAML; see docs/config.md).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// List the selected VMs and their disks; change nothing.
    #[arg(long, requires = "config")]
    pub list_only: bool,
    /// With -c: show what a migration would do (VMs, disks, snapshots, outputs) and change
    /// nothing.
    #[arg(long, requires = "config", conflicts_with = "list_only")]
    pub dry_run: bool,
    /// How to print what goes to stdout: the VM list (--list-only), the plan (--dry-run) or
    /// a run's summary [default: output.list_format of the config, else table]. The image
    /// format is output.format, not this.
    #[arg(
        short = 'o',
        long,
        value_enum,
        value_name = "FORMAT",
        requires = "config"
    )]
    pub output: Option<OutputArg>,
    /// With -c and no --list-only / --dry-run (a migration run): no progress, only the
    /// summary table and errors.
    #[arg(long, short, requires = "config")]
    pub quiet: bool,
    /// With -c, a migration run: a selection that matches no VM is not an error (exit 0
    /// instead of 2).
    #[arg(long, requires = "config")]
    pub allow_empty: bool,
    /// With -c, a migration run: hash every image an earlier run finished and compare it
    /// with its report's SHA-256 (by default its size and header are checked).
    #[arg(long, requires = "config")]
    pub verify_images: bool,
    /// The ARM base URL, e.g. a simulator's (overrides azure.arm_endpoint).
    #[arg(long, value_name = "URL", requires = "config")]
    pub arm_endpoint: Option<String>,
    /// With -c and --shard, a migration run: the frozen plan (`hyper2kvm plan`) whose shard
    /// to migrate; each of its VMs is looked up again before anything is done.
    #[arg(long, value_name = "FILE", requires = "config", requires = "shard")]
    pub plan: Option<PathBuf>,
    /// With -c, a migration run: migrate one shard. I: shard I of --plan; I/N: the VMs
    /// whose id hashes to I of N (no plan); auto: I from JOB_COMPLETION_INDEX (Kubernetes
    /// Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm job array). See docs/fleet.md.
    #[arg(
        long,
        value_name = "I|I/N|auto",
        requires = "config",
        conflicts_with_all = ["list_only", "dry_run"]
    )]
    pub shard: Option<String>,
    /// With -c, a migration run: wait up to SECS for a VM another worker is migrating (its
    /// lock held) before skipping it as locked [default: 0, skip at once].
    #[arg(long, value_name = "SECS", requires = "config")]
    pub lock_wait: Option<u64>,
    /// More log output on stderr: -v info (retries, waits, steps), -vv debug, -vvv trace.
    /// RUST_LOG, when set, decides instead (e.g. RUST_LOG=hyper2kvm_azure=debug).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// How log lines look on stderr: text, or JSON (one object per line).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// `--output`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputArg {
    /// Aligned columns.
    Table,
    /// JSON (schemas in docs/config.md).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a disk image (fixed or dynamic VHD, or raw) into qcow2 or sparse raw.
    Convert(ConvertArgs),
    /// Import local VM exports (OVA, OVF, Hyper-V export folders, disk images) into KVM.
    Import(crate::import::ImportArgs),
    /// Make a migrated Azure Linux guest KVM-ready, in place (through libguestfs).
    Fix(crate::fix::FixArgs),
    /// Serve a simulated Azure (ARM compute subset) from a scenario file.
    Sim(SimArgs),
    /// With -c: discover the selected VMs once and write a frozen plan, split into shards
    /// balanced by bytes (`hyper2kvm -c config.yaml plan --shards 3 --output plan.json`).
    Plan(PlanArgs),
    /// Print where a fleet stands from its output directory: VMs done, failed, in
    /// progress, not started; bytes and time per shard; what is left to clean up.
    Report(ReportArgs),
    /// Print a shell completion script, e.g. `hyper2kvm completions bash >
    /// /etc/bash_completion.d/hyper2kvm`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `hyper2kvm man | man -l -`; or write every page to a
    /// folder.
    Man(ManArgs),
    /// Warm migration, step 1: copy running VMs' disks into working images (`<image>.warm`),
    /// in full the first time, then only what changed; run it as often as wanted.
    Sync(SyncArgs),
    /// Warm migration, step 2: stop each synced VM (running_vm: stop or deallocate), apply
    /// the last delta, then publish the images with fix-ups and the domain.
    Cutover(CutoverArgs),
}

/// `hyper2kvm -c config.yaml sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// At most this many rounds in this invocation.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rounds: u32,
    /// Stop before --rounds once a round's delta (bytes read and cleared, per VM) is at most
    /// SIZE (e.g. 64M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub until_delta: Option<u64>,
    /// Seconds between rounds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub interval: u64,
}

/// `hyper2kvm -c config.yaml cutover`: the policy and restart come from the config file.
#[derive(Debug, Args)]
pub struct CutoverArgs {}

/// `hyper2kvm -c config.yaml plan --shards N --output plan.json`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// How many shards (workers) to split the VMs into.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shards: u32,
    /// The plan file to write (atomically: a temporary file beside it, then a rename).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

/// `hyper2kvm report DIR [--plan plan.json] [--output table|json]`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The output directory (`output.dir`) the runs wrote to.
    pub dir: PathBuf,
    /// The frozen plan the shards follow: its VMs without a folder are `not_started`.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// A table, or JSON (schema in docs/records.md).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT", default_value_t = OutputArg::Table)]
    pub output: OutputArg,
}

/// `hyper2kvm completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `hyper2kvm man [COMMAND] [--dir DIR]`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The page of this subcommand (hyper2kvm-COMMAND(1)) instead of hyper2kvm(1).
    #[arg(value_name = "COMMAND", conflicts_with = "dir")]
    pub command: Option<String>,
    /// Write hyper2kvm.1 and a page per subcommand into DIR instead (for packaging).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `hyper2kvm sim --scenario FILE [--listen ADDR]`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// The scenario (YAML or JSON; see docs/config.md).
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// The address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// `hyper2kvm convert SRC DST`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The source disk: a VHD (fixed or dynamic) or raw file, or the https URL (with its SAS
    /// query) of a page blob holding a fixed VHD, such as a managed disk's export.
    pub src: PathBuf,
    /// The image to write; it appears only once complete (written as DST.part first).
    pub dst: PathBuf,
    /// Output format.
    #[arg(long, short = 'O', value_enum, default_value_t = FormatArg::Qcow2)]
    pub format: FormatArg,
    /// Compress qcow2 clusters.
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Compression level: zstd -7 (fastest) to 19, default 1; deflate 1 to 9, default 6.
    #[arg(long, requires = "compress", allow_negative_numbers = true)]
    pub compress_level: Option<i32>,
    /// qcow2 cluster size: a power of two from 512 to 2M.
    #[arg(long, value_parser = parse_cluster_size, default_value = "64K")]
    pub cluster_size: u32,
    /// Reads in flight at once [default: 2 for files, 16 for URLs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: Option<u16>,
    /// Bytes per read, rounded up to whole clusters [default: 1M for files, 4M for URLs].
    #[arg(long, value_parser = parse_chunk_size)]
    pub chunk_size: Option<u32>,
    /// Source format; auto looks at the content (a VHDX signature, a VMDK header or
    /// descriptor, a VHD footer).
    #[arg(long, value_enum, default_value_t = InputFormatArg::Auto)]
    pub input_format: InputFormatArg,
    /// Keep DST.part and a journal if interrupted (even by kill -9) or failed, and continue
    /// from them when run again with the same source and options. Always on for URLs.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: bytes of data between checkpoints (each syncs the partial image).
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    pub checkpoint_every: u64,
    /// No progress bar and no summary line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// qcow2 version 3.
    Qcow2,
    /// Sparse raw.
    Raw,
}

/// `--compress`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    /// zstd (qemu 5.1+).
    Zstd,
    /// deflate (every qemu).
    Deflate,
}

/// `--input-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InputFormatArg {
    /// Detect from content.
    Auto,
    /// Fixed or dynamic VHD.
    Vhd,
    /// VMDK: monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtent*; give the
    /// descriptor (the small .vmdk) of a split or flat disk.
    Vmdk,
    /// Fixed, dynamic or differencing VHDX (Hyper-V).
    Vhdx,
    /// Raw bytes.
    Raw,
}

fn parse_cluster_size(text: &str) -> Result<u32, String> {
    let n = parse_size(text)?;
    if !(512..=2 << 20).contains(&n) || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two from 512 to 2M"));
    }
    Ok(n as u32)
}

fn parse_chunk_size(text: &str) -> Result<u32, String> {
    let n = parse_size(text)?;
    if !(4096..=64 << 20).contains(&n) {
        return Err(format!("{n} is outside 4K..64M"));
    }
    Ok(n as u32)
}
