//! The `hyper2kvm` binary: parse the command line, run the command, choose the exit code.
//!
//! Exit codes: 0 done, 1 failed, 2 usage or configuration error, 130 interrupted.

mod args;
mod convert;
mod fix;
mod progress;
mod signal;
mod units;

use std::process::ExitCode;

use clap::Parser;
use hyper2kvm_core::ErrorKind;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    // clap prints --help / --version and exits 0, and exits 2 on usage errors.
    let cli = Cli::parse();
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
        match cli.command {
            Command::Convert(args) => convert::run(args).await,
            Command::Fix(args) => fix::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hyper2kvm: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The exit code for an error: 2 for what the user must change in the command, 130 for an
/// interruption, 1 for everything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    match err
        .downcast_ref::<hyper2kvm_core::Error>()
        .map(|e| e.kind())
    {
        Some(ErrorKind::InvalidArgument) => 2,
        Some(ErrorKind::Cancelled) => 130,
        _ => 1,
    }
}
