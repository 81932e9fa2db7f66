//! `wayback agent`: run, validate or query the scheduled writer.

use std::path::PathBuf;

use anyhow::Context;

use crate::agent::{self, config};
use crate::cli::common::RepoArgs;

/// Arguments of `agent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Only validate the configuration (errors name file and line).
    #[arg(long)]
    pub check_config: bool,
    /// Ask the running agent for its per-source status (JSON).
    #[arg(long, conflicts_with = "check_config")]
    pub status: bool,
    /// Ask the running agent to run this source now.
    #[arg(long, conflicts_with_all = ["check_config", "status"])]
    pub run: Option<String>,
}

/// Runs the agent subcommand.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let cfg = match config::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wayback agent: invalid configuration: {e}");
            return Ok(2);
        }
    };
    if a.check_config {
        outln!("{}: ok ({} sources)", a.config.display(), cfg.sources.len());
        return Ok(0);
    }
    let sock = agent::socket_path(&cfg);
    if a.status {
        outln!("{}", agent::ask(&sock, "status")?);
        return Ok(0);
    }
    if let Some(name) = a.run {
        let reply = agent::ask(&sock, &format!("run {name}"))?;
        outln!("{reply}");
        return Ok(if reply.contains("\"ok\":true") { 0 } else { 1 });
    }
    let pass = match &cfg.password_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .as_bytes()
            .to_vec(),
        None => ra.password(false)?,
    };
    // The scheduled copy's destination passphrase: its file, else $WAYBACK_TO_PASSWORD; asked
    // for now, so a missing one stops the agent at start rather than at the first copy.
    let copy_pass = match &cfg.copy {
        Some(c) => Some(crate::cli::common::passphrase(
            c.password_file.as_deref(),
            "WAYBACK_TO_PASSWORD",
            "copy.password_file",
            "copy destination passphrase: ",
            false,
        )?),
        None => None,
    };
    agent::run(cfg, pass, copy_pass)?;
    Ok(0)
}
