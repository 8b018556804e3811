//! The `hyper2kvm` binary: parse the command line, run the command, choose the exit code.
//!
//! Exit codes: 0 done, 1 failed, 2 usage or configuration error, 3 a migration run that
//! completed some VMs but not all, 130 interrupted.

mod args;
mod completions;
mod config;
mod convert;
mod fix;
mod fleet;
mod import;
mod list;
mod logging;
mod man;
mod migrate;
mod plan;
mod progress;
mod report;
mod signal;
mod sim;
mod tally;
mod units;
mod waiting;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use hyper2kvm::migrate::{SyncOptions, WarmMode};
use hyper2kvm_core::{redact, ErrorKind};

use crate::args::{Cli, Command};
use crate::config::UsageError;

/// What the command line asks for, once parsed and checked.
enum Mode {
    Convert(args::ConvertArgs),
    Sim(args::SimArgs),
    Fix(crate::fix::FixArgs),
    Import(crate::import::ImportArgs),
    Completions(args::CompletionsArgs),
    Man(args::ManArgs),
    List(Box<config::ListPlan>),
    DryRun(Box<config::ListPlan>),
    Migrate(Box<config::ListPlan>, migrate::Flags),
    Plan(Box<config::ListPlan>, args::PlanArgs),
    Report(args::ReportArgs),
}

/// Why no mode: a mistake the user must fix (exit code 2).
pub(crate) enum ModeError {
    /// In the arguments: the usage is shown with it.
    Arguments(UsageError),
    /// In the config file: the usage would not help, the message says where.
    Config(UsageError),
}

/// Turns the parsed flags (and the config file they name) into one mode.
fn mode(cli: Cli) -> Result<Mode, ModeError> {
    // `-c` goes with a migration, --list-only, --dry-run, and `plan`; every other
    // subcommand has its own options (`import -c` is import's).
    match (&cli.command, &cli.config) {
        (Some(Command::Plan(_)), None) => {
            return Err(ModeError::Arguments(UsageError(
                "plan needs the configuration: hyper2kvm -c config.yaml plan --shards N --output plan.json".into(),
            )))
        }
        (Some(Command::Plan(_)), Some(_))
            if cli.list_only
                || cli.dry_run
                || cli.output.is_some()
                || cli.shard.is_some()
                || cli.quiet
                || cli.allow_empty
                || cli.verify_images
                || cli.lock_wait.is_some() =>
        {
            return Err(ModeError::Arguments(UsageError(
                "plan takes only -c CONFIG and --arm-endpoint before it; its own options (--shards, --output FILE) after it".into(),
            )));
        }
        (Some(Command::Plan(_)), Some(_)) => {}
        (Some(Command::Sync(_) | Command::Cutover(_)), None) => {
            return Err(ModeError::Arguments(UsageError(
                "sync and cutover need the configuration: hyper2kvm -c config.yaml sync (or cutover)".into(),
            )))
        }
        (Some(Command::Sync(_) | Command::Cutover(_)), Some(_)) if cli.list_only || cli.dry_run => {
            return Err(ModeError::Arguments(UsageError(
                "sync and cutover do not go with --list-only or --dry-run".into(),
            )))
        }
        (Some(Command::Sync(_) | Command::Cutover(_)), Some(_)) => {}
        (Some(_), Some(_)) => {
            return Err(ModeError::Arguments(UsageError(
                "-c CONFIG goes with a migration run, --list-only, --dry-run or `plan`, not with another subcommand".into(),
            )))
        }
        _ => {}
    }
    let cli_rest = RunFlags {
        arm_endpoint: cli.arm_endpoint,
        output: cli.output,
        shard: cli.shard,
        plan: cli.plan,
        dry_run: cli.dry_run,
        list_only: cli.list_only,
        quiet: cli.quiet,
        allow_empty: cli.allow_empty,
        verify_images: cli.verify_images,
        lock_wait: cli.lock_wait,
    };
    match (cli.command, cli.config) {
        (Some(Command::Plan(a)), Some(path)) => {
            let file = config::load(&path).map_err(ModeError::Config)?;
            let overrides = config::Overrides {
                arm_endpoint: cli_rest.arm_endpoint,
                output: None,
            };
            Ok(Mode::Plan(Box::new(config::list_plan(file, overrides)), a))
        }
        (Some(Command::Plan(_)), None) => unreachable!("checked above"),
        (Some(c @ (Command::Sync(_) | Command::Cutover(_))), Some(path)) => {
            let warm = match c {
                Command::Sync(a) => {
                    let mut o = SyncOptions::default();
                    o.rounds = a.rounds;
                    o.until_delta = a.until_delta;
                    o.interval = std::time::Duration::from_secs(a.interval);
                    WarmMode::Sync(o)
                }
                _ => WarmMode::Cutover,
            };
            migrate_mode(cli_rest, path, Some(warm))
        }
        (Some(Command::Sync(_) | Command::Cutover(_)), None) => unreachable!("checked above"),
        (Some(Command::Report(a)), _) => Ok(Mode::Report(a)),
        (Some(Command::Convert(a)), _) => Ok(Mode::Convert(a)),
        (Some(Command::Sim(a)), _) => Ok(Mode::Sim(a)),
        (Some(Command::Fix(a)), _) => Ok(Mode::Fix(a)),
        (Some(Command::Import(a)), _) => Ok(Mode::Import(a)),
        (Some(Command::Completions(a)), _) => Ok(Mode::Completions(a)),
        (Some(Command::Man(a)), _) => Ok(Mode::Man(a)),
        (None, None) => Err(ModeError::Arguments(UsageError(
            "nothing to do: give -c CONFIG --list-only, or a subcommand (see --help)".into(),
        ))),
        (None, Some(path)) => migrate_mode(cli_rest, path, None),
    }
}

/// The top-level flags a migration, `sync` or `cutover` reads.
struct RunFlags {
    arm_endpoint: Option<String>,
    output: Option<args::OutputArg>,
    shard: Option<String>,
    plan: Option<std::path::PathBuf>,
    dry_run: bool,
    list_only: bool,
    quiet: bool,
    allow_empty: bool,
    verify_images: bool,
    lock_wait: Option<u64>,
}

/// A migration run (or `--dry-run`, `--list-only`), or with `warm` a `sync` or `cutover`.
fn migrate_mode(
    cli: RunFlags,
    path: std::path::PathBuf,
    warm: Option<WarmMode>,
) -> Result<Mode, ModeError> {
    let file = config::load(&path).map_err(ModeError::Config)?;
    let overrides = config::Overrides {
        arm_endpoint: cli.arm_endpoint,
        output: cli.output,
    };
    let plan = Box::new(config::list_plan(file, overrides));
    let shard = match &cli.shard {
        Some(arg) => Some(plan::shard_filter(
            arg,
            cli.plan.as_deref(),
            &plan.migration,
        )?),
        None => None,
    };
    Ok(if cli.dry_run {
        Mode::DryRun(plan)
    } else if cli.list_only {
        Mode::List(plan)
    } else {
        Mode::Migrate(
            plan,
            migrate::Flags {
                quiet: cli.quiet,
                allow_empty: cli.allow_empty,
                verify_images: cli.verify_images,
                shard,
                lock_wait: std::time::Duration::from_secs(cli.lock_wait.unwrap_or(0)),
                warm,
            },
        )
    })
}

/// Buffers of 1 MiB and more (the 4 MiB reads of every disk) are mapped and unmapped on their
/// own. glibc's default threshold moves up to the size of the last such buffer freed, after
/// which they come from the heap, where the small allocations of a fleet's many VMs keep
/// the freed space from going back: 580 MiB of peak RSS for a 20-VM run where 382 MiB of it
/// were in use (docs/BENCHMARKS.md, "Fleet scheduling").
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    fixed_mmap_threshold();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: clap prints them on stdout and exits 0.
        Err(e) if !e.use_stderr() => e.exit(),
        // A usage error (exit 2). clap's message quotes the argument it could not place, and a
        // SAS URL given in the wrong position (`hyper2kvm 'https://…?sig=…' out.qcow2`,
        // without `convert`) would be printed whole: redacted like every other error.
        Err(e) => {
            eprint!("{}", redact(&e.render().to_string()));
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    logging::init(cli.verbose, cli.log_format);
    let mode = match mode(cli) {
        Ok(m) => m,
        Err(ModeError::Arguments(e)) => {
            eprintln!("hyper2kvm: error: {}", redact(&e.to_string()));
            eprintln!("{}", Cli::command().render_usage());
            return ExitCode::from(2);
        }
        Err(ModeError::Config(e)) => {
            eprintln!("hyper2kvm: error: {}", redact(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper2kvm: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match mode {
            Mode::Convert(args) => convert::run(args).await.map(|()| 0),
            Mode::Sim(args) => sim::run(args).await.map(|()| 0),
            Mode::Fix(args) => fix::run(args).await.map(|()| 0),
            Mode::Import(args) => import::run(args).await,
            Mode::List(plan) => list::run(*plan).await.map(|()| 0),
            Mode::DryRun(plan) => list::dry_run(*plan).await.map(|()| 0),
            Mode::Migrate(plan, flags) => migrate::run(*plan, flags).await,
            Mode::Plan(plan, args) => plan::run(*plan, args).await.map(|()| 0),
            Mode::Report(args) => report::run(args).map(|()| 0),
            Mode::Completions(args) => {
                list::print_stdout(&completions::script(args.shell), "writing the script")
                    .map(|()| 0)
            }
            Mode::Man(args) => match man::page(&args) {
                Ok(Some(roff)) => list::print_stdout(&roff, "writing the page").map(|()| 0),
                Ok(None) => Ok(0),
                Err(e) => Err(e),
            },
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // The last line of defence: whatever the error says, no signature is printed.
            eprintln!("hyper2kvm: error: {}", redact(&one_line(&err)));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The error and its causes on one line. Our libraries' messages already include their
/// causes (a core error wrapping an Azure error shows the Azure message, which shows the
/// HTTP client's), so a cause whose text is already there is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The exit code for an error: 2 for what the user must change in the command or config, 130
/// for an interruption, 1 for everything else (authentication, network, Azure's answers).
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        return 2;
    }
    if let Some(e) = err.downcast_ref::<hyper2kvm_azure::Error>() {
        return match e.kind() {
            hyper2kvm_azure::ErrorKind::InvalidArgument => 2,
            _ => 1,
        };
    }
    if let Some(e) = err.downcast_ref::<hyper2kvm_sim::Error>() {
        return match e.kind() {
            hyper2kvm_sim::ErrorKind::Io => 1,
            _ => 2,
        };
    }
    match err
        .downcast_ref::<hyper2kvm_core::Error>()
        .map(|e| e.kind())
    {
        Some(ErrorKind::InvalidArgument) => 2,
        Some(ErrorKind::Cancelled) => 130,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_shown_once() {
        let azure = hyper2kvm_azure::Error::new(hyper2kvm_azure::ErrorKind::Network, "GET x");
        let core: hyper2kvm_core::Error = azure.into();
        let err = anyhow::Error::new(core).context("listing VMs");
        assert_eq!(one_line(&err), "listing VMs: GET x");
        assert_eq!(
            exit_code(&anyhow::Error::new(hyper2kvm_core::Error::new(
                ErrorKind::InvalidArgument,
                "bad"
            ))),
            2
        );
    }
}
