//! `wayback drill`: restore a snapshot into private scratch, verify every byte, and for a base
//! backup recover PostgreSQL on it and query it; record the outcome for `status` and /metrics.
//! The work is [`crate::maint::drill`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::agent::state;
use crate::cli::common::{human_bytes, RepoArgs};
use crate::maint::drill::{drill, DrillOptions, DrillReport};
use crate::pg::drill::PgDrillOptions;
use crate::repo::Access;

/// Exit status: a drill failed for another reason than damaged data (PostgreSQL did not
/// recover, the query failed or answered something else, scratch ran out of space, ...).
pub const EXIT_DRILL_FAILED: i32 = 18;

/// Arguments of `drill`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source to drill (repeatable); default: every source with a complete snapshot.
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// Restore a random complete snapshot instead of the newest.
    #[arg(long)]
    pub random: bool,
    /// Directory under which the private scratch directory is made (default: `scratch/` in
    /// the repository's cache directory). For a base backup the server's user must be able to
    /// traverse it.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Query run on a recovered base backup (as `postgres`).
    #[arg(long, default_value = "SELECT 1")]
    pub query: String,
    /// The exact output the query must give (psql -A -t, trimmed).
    #[arg(long)]
    pub expect: Option<String>,
    /// Database the query runs in.
    #[arg(long, default_value = "postgres")]
    pub database: String,
    /// PostgreSQL binaries directory.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
    /// Restore and verify base backups without starting PostgreSQL.
    #[arg(long)]
    pub no_postgres: bool,
    /// JSON array of reports (schema in README, "Restore drills").
    #[arg(long)]
    pub json: bool,
}

/// Runs the drills; exit 0 when all passed, 12 when data was damaged, 18 for another failure.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = Arc::new(ra.open(Access::Read)?);
    let sources = if a.sources.is_empty() {
        let mut s: Vec<String> = repo
            .snapshots()?
            .into_iter()
            .filter(|s| s.complete)
            .map(|s| s.source)
            .collect();
        s.sort();
        s.dedup();
        s
    } else {
        a.sources.clone()
    };
    let opts = DrillOptions {
        scratch: a.scratch.clone(),
        random: a.random,
        postgres: (!a.no_postgres).then(|| PgDrillOptions {
            pg_bin: a.pg_bin.clone(),
            query: a.query.clone(),
            expect: a.expect.clone(),
            database: a.database.clone(),
            ..Default::default()
        }),
    };
    let mut reports: Vec<DrillReport> = Vec::new();
    for s in &sources {
        let r = drill(&repo, s, &opts)?;
        if let Err(e) = state::record_drill(&repo, r.record()) {
            eprintln!("wayback drill: could not record the result for `status`: {e}");
        }
        reports.push(r);
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            outln!(
                "{} drill {}: snapshot {} ({}), {} files, {} verified in {:.2} s (restore {:.2} s, verify {:.2} s{})",
                if r.ok { "OK     " } else { "FAILED " },
                r.source,
                &r.snapshot[..8],
                r.snapshot_time,
                r.files,
                human_bytes(r.bytes),
                r.duration_s,
                r.restore_s,
                r.verify_s,
                r.recovery_s
                    .map(|s| format!(", PostgreSQL recovery {s:.2} s"))
                    .unwrap_or_default()
            );
            if let Some(pg) = &r.postgres {
                outln!(
                    "        PostgreSQL recovered archive '{}' to {}; {:?} answered {:?}",
                    pg.cluster,
                    pg.replayed_to.as_deref().unwrap_or("its base backup"),
                    pg.query,
                    pg.result
                );
            }
            for p in &r.problems {
                outln!("        error: {p}");
            }
        }
        if reports.is_empty() {
            outln!("no snapshot to drill");
        }
    }
    Ok(if reports.iter().any(|r| r.damaged) {
        crate::cli::EXIT_DAMAGED
    } else if reports.iter().any(|r| !r.ok) {
        EXIT_DRILL_FAILED
    } else {
        0
    })
}
