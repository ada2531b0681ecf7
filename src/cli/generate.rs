//! What packages install beside the binary, made from the command-line definition itself so they
//! never drift from `--help`: shell completions (`clap_complete`) and one man page per command
//! (`clap_mangen`: `bundlefs.1`, `bundlefs-mount.1`, …).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Prints the completion script of `shell` on standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "bundlefs", &mut out);
    super::output::outln!("{}", String::from_utf8_lossy(&out).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// Writes `bundlefs.1` and `bundlefs-COMMAND.1` for every command into `dir` (created).
pub fn manpages(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("{}: cannot write the man pages", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
