//! `hyper2kvm fix IMAGE`: the guest fix-ups on any qcow2, raw or VHD image, in place.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::builder::PossibleValuesParser;
use clap::Args;
use hyper2kvm_guest::{fix_image, fixups, GuestConfig};

/// `hyper2kvm fix IMAGE [--dry-run] [--skip NAME ...] [--virtio-win PATH]`.
#[derive(Debug, Args)]
pub struct FixArgs {
    /// The image to fix, in place: qcow2, raw or VHD, holding the guest's OS disk.
    pub image: PathBuf,
    /// Inspect and show what would change; the image is opened read-only.
    #[arg(long)]
    pub dry_run: bool,
    /// A fix-up not to run (repeatable).
    #[arg(long, value_name = "NAME", value_parser = PossibleValuesParser::new(fixups::names()))]
    pub skip: Vec<String>,
    /// virtio-win for a Windows guest: the virtio-win ISO or its unpacked tree (read through
    /// libguestfs, never mounted on the host). Without it a Windows guest is not fixed.
    #[arg(long, value_name = "PATH")]
    pub virtio_win: Option<PathBuf>,
}

/// Runs the fix-ups and prints the report; fails (exit 1) unless the guest was fixed, needed
/// nothing, or this was a dry run.
pub async fn run(args: FixArgs) -> anyhow::Result<()> {
    let config = GuestConfig {
        skip: args.skip,
        // The user asked for fix-ups: without libguestfs that is a failure, not a notice.
        require: true,
        dry_run: args.dry_run,
        virtio_win: args.virtio_win,
    };
    eprintln!(
        "hyper2kvm: inspecting {} (libguestfs' appliance takes a minute or two to start without KVM)",
        args.image.display()
    );
    let image = args.image.clone();
    // guestfish calls block: keep them off the async runtime's workers.
    let report = tokio::task::spawn_blocking(move || fix_image(&image, &config))
        .await
        .context("the fix-up task panicked")?
        // The guest error's Display already ends with its cause; as a plain message, main's
        // `{:#}` does not print the cause a second time.
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{report}");
    if let Some(notice) = hyper2kvm_guest::accel::decided().and_then(|a| a.notice()) {
        eprintln!("hyper2kvm: note: {notice}");
    }
    if !report.succeeded() {
        bail!("{}: guest not fixed", args.image.display());
    }
    Ok(())
}
