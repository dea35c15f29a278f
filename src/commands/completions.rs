//! `cfimg completions SHELL` and `cfimg man --out DIR`: shell completions and man pages,
//! both generated from the same clap definitions as `--help`, so they cannot drift from it.

use std::io::Write;

use clap::CommandFactory;

use super::EXIT_OK;
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{Error, Result};

/// Prints the completion script for the shell.
pub fn completions(args: &CompletionsArgs) -> Result<i32> {
    // Generated into memory first: clap_complete panics on a write error, and a closed
    // stdout must end the command like any other printing command does.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "cfimg", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            path: "stdout".into(),
            source,
        })?;
    Ok(EXIT_OK)
}

/// Writes `cfimg.1` and one page per command (`cfimg-migrate.1`, `cfimg-ledger-rebuild.1`, ...)
/// into the folder, and names each page written.
pub fn man(args: &ManArgs) -> Result<i32> {
    let io = |e: std::io::Error| {
        Error::Usage(format!(
            "man --out {}: cannot write the pages there ({e}); choose a folder you can write to",
            args.out.display()
        ))
    };
    std::fs::create_dir_all(&args.out).map_err(io)?;
    clap_mangen::generate_to(Cli::command(), &args.out).map_err(io)?;
    let mut pages: Vec<_> = std::fs::read_dir(&args.out)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cfimg") && n.ends_with(".1"))
        .collect();
    pages.sort();
    let mut out = std::io::stdout().lock();
    for page in pages {
        writeln!(out, "{}", args.out.join(page).display()).map_err(|source| Error::Io {
            path: "stdout".into(),
            source,
        })?;
    }
    Ok(EXIT_OK)
}
