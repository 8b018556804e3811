//! `hyper2kvm man`: the man pages, rendered (roff) by clap_mangen from the clap definitions, so
//! they say what `--help` says.

use clap::CommandFactory;

use crate::args::{Cli, ManArgs};
use crate::config::UsageError;

/// hyper2kvm(1), or `args.command`'s page; `None` when `--dir` asked for every page to be
/// written there instead.
pub fn page(args: &ManArgs) -> anyhow::Result<Option<String>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand its display name (`hyper2kvm-convert`), which names its
    // page and is how hyper2kvm(1) refers to it.
    cmd.build();
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", dir.display()))?;
        clap_mangen::generate_to(cmd, dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot write the pages: {e}", dir.display()))?;
        return Ok(None);
    }
    let page = match &args.command {
        None => cmd,
        Some(name) => {
            let found = cmd
                .get_subcommands()
                .find(|s| s.get_name() == name)
                .cloned();
            found.ok_or_else(|| {
                let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                UsageError(format!(
                    "no subcommand {name:?}; pages exist for: {}",
                    names.join(", ")
                ))
            })?
        }
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}
