//! `hyper2kvm import SRC... --output-dir DIR`: local VM exports (OVA, OVF, Hyper-V export
//! folders, disk images) through the same library run as `hyper2kvm -c`, with the same
//! progress, summary and exit codes (0 all done, 3 partial, 1 none, 2 usage).

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, ValueEnum};
use hyper2kvm::config::{DomainSection, DownloadSection, ExportSection, GuestSection};
use hyper2kvm::core::{Cleanups, Firmware, Limits, OutputFormat};
use hyper2kvm::local::Defaults;
use hyper2kvm::migrate::{Interrupt, PlanOptions, RunOptions, Target};
use hyper2kvm_guest::fixups;

use crate::args::{CompressArg, FormatArg};
use crate::config::{run_settings, UsageError};
use crate::list::{print_stdout, render_plan};
use crate::migrate::{finish, render_summary, Display};
use crate::signal::run_interruptible;
use crate::units::{human_bytes, parse_size};

/// `hyper2kvm import SRC... --output-dir DIR`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What to import, one VM each: an .ova, an .ovf (its files beside it), a Hyper-V export
    /// folder (with "Virtual Hard Disks"), or a disk image (VHD, VHDX, VMDK, raw).
    #[arg(required = true, value_name = "SRC")]
    pub srcs: Vec<PathBuf>,
    /// Where the VMs go, one folder each [default: output.dir of -c, else ./out].
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Image format [default: output.format of -c, else qcow2].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Compress qcow2 clusters [default: output.compress of -c, else none].
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Show what would be written, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the guest fix-ups on each OS disk (through libguestfs), as `guest:` in a config.
    #[arg(long)]
    pub fix: bool,
    /// With --fix: fail the VM when the fix-ups cannot run (no libguestfs).
    #[arg(long, requires = "fix")]
    pub fix_require: bool,
    /// With --fix: a fix-up not to run (repeatable).
    #[arg(long, value_name = "NAME", requires = "fix", value_parser = PossibleValuesParser::new(fixups::names()))]
    pub skip_fixup: Vec<String>,
    /// With --fix: virtio-win (ISO or unpacked tree) for Windows guests.
    #[arg(long, value_name = "PATH", requires = "fix")]
    pub virtio_win: Option<std::path::PathBuf>,
    /// vCPUs of VMs without a descriptor (Hyper-V exports, disk images).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub vcpus: u32,
    /// Memory of VMs without a descriptor: MiB, or a size (4G, 2048M).
    #[arg(long, default_value = "4096", value_parser = parse_memory)]
    pub memory: u64,
    /// Firmware of VMs without a descriptor.
    #[arg(long, value_enum, default_value_t = FirmwareArg::Bios)]
    pub firmware: FirmwareArg,
    /// VMs converted at once, at most [default: download.parallel_vms of -c, else 32].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel_vms: Option<u16>,
    /// Disks converted at once per VM [default: download.parallel_disks of -c, else 4].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel_disks: Option<u16>,
    /// A config whose output:, domain:, download: and guest: sections to use (its azure: and
    /// export: sections are ignored).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// No progress, only the summary table and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--firmware`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FirmwareArg {
    /// Legacy BIOS (Hyper-V generation 1).
    Bios,
    /// UEFI (Hyper-V generation 2).
    Uefi,
}

fn parse_memory(text: &str) -> Result<u64, String> {
    let mib = match text.trim().parse::<u64>() {
        Ok(n) => n,
        Err(_) => parse_size(text)? >> 20,
    };
    if mib < 16 {
        return Err(format!("{mib} MiB is below 16 MiB"));
    }
    Ok(mib)
}

/// Runs the import and returns the exit code.
pub async fn run(args: ImportArgs) -> anyhow::Result<u8> {
    let file = match &args.config {
        Some(path) => Some(hyper2kvm::config::load_import(path).map_err(|e| UsageError(e.0))?),
        None => None,
    };
    let default_download = DownloadSection::default();
    let default_domain = DomainSection::default();
    let download = file.as_ref().map_or(&default_download, |f| &f.download);
    let domain = file.as_ref().map_or(&default_domain, |f| &f.domain);
    let flag_guest = GuestSection {
        skip: args.skip_fixup.clone(),
        require: args.fix_require,
        windows: hyper2kvm::config::WindowsGuestSection {
            virtio_win: args.virtio_win.clone(),
        },
        ..GuestSection::default()
    };
    let guest = if args.fix {
        Some(&flag_guest)
    } else {
        file.as_ref().and_then(|f| f.guest.as_ref())
    };
    let output = file.as_ref().map(|f| &f.output);
    let compress = match args.compress {
        Some(CompressArg::Zstd) => Some(hyper2kvm::config::CompressionSetting::Zstd),
        Some(CompressArg::Deflate) => Some(hyper2kvm::config::CompressionSetting::Deflate),
        None => output.and_then(|o| o.compress),
    };
    let r = run_settings(
        download,
        &ExportSection::default(),
        domain,
        guest,
        output,
        compress,
    );

    let mut plan = PlanOptions::default();
    if let Some(layout) = output.and_then(|o| o.layout) {
        plan.layout = layout;
    }
    plan.dir = args
        .output_dir
        .clone()
        .or_else(|| output.and_then(|o| o.dir.clone()))
        .unwrap_or_else(|| PathBuf::from("out"));
    plan.format = match (args.format, output.and_then(|o| o.format)) {
        (Some(FormatArg::Raw), _) => OutputFormat::Raw,
        (Some(FormatArg::Qcow2), _) => OutputFormat::Qcow2,
        (None, Some(hyper2kvm::config::ImageFormat::Raw)) => OutputFormat::Raw,
        (None, _) => OutputFormat::Qcow2,
    };
    if plan.format == OutputFormat::Raw && r.compression.is_some() {
        return Err(UsageError("--compress needs --format qcow2".into()).into());
    }
    let defaults = Defaults {
        vcpus: args.vcpus,
        memory_mib: args.memory,
        firmware: match args.firmware {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::Uefi,
        },
    };

    if args.dry_run {
        let p = hyper2kvm::import::dry_run(&args.srcs, &defaults, &plan).await?;
        print_stdout(
            &render_plan(&p, matches!(r.target, Target::Kubevirt(_))),
            "writing the plan",
        )?;
        eprintln!(
            "hyper2kvm: dry run: {} VMs, {} disks ({}), nothing written",
            p.vms.len(),
            p.vms.iter().map(|v| v.disks.len()).sum::<usize>(),
            human_bytes(p.total_bytes()),
        );
        return Ok(0);
    }

    let mut opts = RunOptions::default();
    opts.plan = plan.clone();
    opts.convert.compression = r.compression;
    opts.convert.chunk_size = r.chunk_size;
    opts.convert.concurrency = r.concurrency;
    // Local files: the page cache's write-behind beats O_DIRECT's one write at a time.
    opts.convert.direct_io = false;
    opts.parallel_vms = args.parallel_vms.map_or(r.parallel_vms, usize::from);
    opts.parallel_disks = args.parallel_disks.map_or(r.parallel_disks, usize::from);
    opts.parallel_fixups = r.parallel_fixups;
    opts.limits = Limits::new(r.max_connections, r.bandwidth);
    opts.cpu = r.cpu.clone();
    opts.network = r.network.clone();
    opts.target = r.target.clone();
    opts.guest = r.guest.clone().map(hyper2kvm::run::guest_hook);

    let cleanups = Cleanups::new();
    let display = Display::new(args.quiet);
    let ticker = crate::waiting::spawn(display.wait_sink());
    let interrupt = Interrupt::new();
    let work = hyper2kvm::import::import_until(
        &args.srcs,
        &defaults,
        cleanups.clone(),
        opts,
        Some(display.callback()),
        interrupt.clone(),
    );
    // A first signal stops the run, which still writes its records; a second leaves.
    let result = run_interruptible(
        work,
        &interrupt,
        |name| {
            display.note(&format!(
                "hyper2kvm: {name}: stopping, writing the records ({name} again to leave at once)…"
            ))
        },
        |again| display.note(&format!("hyper2kvm: {again}: leaving now")),
    )
    .await?;
    ticker.abort();
    display.finish();
    let Some(result) = result else {
        return Ok(130);
    };
    let summary = result?;
    Ok(finish(&render_summary(&summary), &summary))
}
