//! `hyper2kvm completions SHELL`: a completion script generated from the clap definitions, so
//! it always knows every subcommand, flag and value the binary takes.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
