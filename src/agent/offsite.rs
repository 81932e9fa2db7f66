//! The agent's scheduled off-site copy (`copy = { to = "...", cron = "..." }`): what `wayback
//! copy --to ... [--wal]` does, between backups (the scheduler runs one task at a time, so a
//! copy never reads a snapshot a prune of this agent is deleting).

use std::sync::Arc;
use std::time::Instant;

use crate::agent::config::Config;
use crate::agent::hooks;
use crate::copy::{self, WalCopied};
use crate::error::{Error, Result};
use crate::ingest::Counters;
use crate::repo::{Access, Repository};
use crate::wal::WalError;

/// Runs one scheduled copy of `repo` into `copy.to` with the destination's passphrase
/// `pass`; logs the outcome and runs the failure hook on an error or a WAL conflict.
pub fn run_copy(cfg: &Config, repo: &Repository, pass: Option<&[u8]>) {
    let Some(cc) = &cfg.copy else { return };
    let t = Instant::now();
    let started = chrono::Utc::now();
    tracing::info!(to = %cc.to.display(), "scheduled copy starting");
    let res = (|| -> Result<(copy::SnapshotsCopied, WalCopied)> {
        let pass = pass.ok_or_else(|| {
            Error::Invalid(
                "no passphrase for the copy's destination: set copy.password_file or start the agent with WAYBACK_TO_PASSWORD".into(),
            )
        })?;
        let dst = Repository::open(&cc.to, pass, Access::Write)?;
        // Sources without a snapshot yet (a fresh agent) are not an error here.
        let sources: Vec<String> = if cc.sources.is_empty() {
            Vec::new()
        } else {
            let have = repo.snapshots()?;
            let s: Vec<String> = cc
                .sources
                .iter()
                .filter(|n| have.iter().any(|s| &s.source == *n))
                .cloned()
                .collect();
            if s.is_empty() {
                return Ok(Default::default());
            }
            s
        };
        let plan = copy::plan(repo, &dst, &sources)?;
        let wal = if cc.wal {
            copy::copy_wal(repo, &dst, &[], &|_| {}).map_err(|e| match e {
                WalError::Repo(e) => e,
                e => Error::Invalid(e.to_string()),
            })?
        } else {
            WalCopied::default()
        };
        let snaps =
            copy::copy_snapshots(repo, &dst, plan, Arc::new(Counters::default()), &|_, _| {})?;
        Ok((snaps, wal))
    })();
    match res {
        Ok((s, w)) => {
            tracing::info!(
                to = %cc.to.display(),
                snapshots = s.copied.len(),
                skipped = s.skipped,
                blobs = s.blobs_sent,
                bytes = s.bytes_sent,
                wal_files = w.copied,
                seconds = t.elapsed().as_secs_f64(),
                "scheduled copy done"
            );
            copy::audit(repo, &cc.to, s.copied.len(), w.copied);
            copy::record(
                repo,
                &cc.to,
                &cc.sources,
                started,
                Some(&s.in_copy),
                w.conflicts.first().cloned(),
            );
            if let Some(c) = w.conflicts.first() {
                tracing::error!(conflicts = w.conflicts.len(), first = %c, "scheduled copy: WAL conflicts");
                hooks::on_copy_failure(cfg, &format!("copy: {c}"));
            }
        }
        Err(e) => {
            copy::record(
                repo,
                &cc.to,
                &cc.sources,
                started,
                None,
                Some(e.to_string()),
            );
            tracing::error!(to = %cc.to.display(), error = %e, "scheduled copy FAILED");
            hooks::on_copy_failure(cfg, &format!("copy to {} failed: {e}", cc.to.display()));
        }
    }
}
