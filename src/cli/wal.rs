//! `wayback wal-push`, `wayback wal-fetch`, `wayback wal status`: PostgreSQL's archive and
//! restore commands, and the archive's health.

use std::path::PathBuf;

use anyhow::Context;

use crate::agent::archive::AgentReply;
use crate::cli::common::RepoArgs;
use crate::repo::Access;
use crate::wal::{self, Pushed, WalError};

/// Exit status: the file is already archived with different content.
pub const EXIT_WAL_CONFLICT: i32 = 14;
/// Exit status: the segment belongs to another cluster.
pub const EXIT_WAL_OTHER_CLUSTER: i32 = 15;

/// Arguments of `wal-push` (`archive_command = 'wayback wal-push --cluster main %p'`).
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Path of the file to archive (PostgreSQL's %p, relative to the data directory).
    pub path: PathBuf,
    /// Archive name; default: the data directory's name.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Arguments of `wal-fetch` (`restore_command = 'wayback wal-fetch --cluster main %f %p'`).
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// File name wanted (%f).
    pub name: String,
    /// Where to write it (%p).
    pub dest: PathBuf,
    /// Archive name.
    #[arg(long)]
    pub cluster: String,
}

/// `wal` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum WalCmd {
    /// Per cluster: newest segment, its age (the live RPO), gaps, timelines.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Archived files (segments, history, backup labels), oldest name first.
    List {
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// JSON array: `[{cluster, name, size, digest, pushed}]` (`pushed` RFC 3339 UTC,
        /// `digest` unkeyed BLAKE3 of the content, as `b3sum` prints it).
        #[arg(long)]
        json: bool,
    },
}

fn default_cluster(path: &std::path::Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(path)?;
    // %p is pg_wal/<name> relative to the data directory.
    let data = abs
        .parent()
        .and_then(|p| p.parent())
        .context("cannot tell the cluster from the path; use --cluster")?;
    Ok(data
        .file_name()
        .and_then(|n| n.to_str())
        .context("use --cluster")?
        .to_string())
}

/// Archives one file; exit 0 only when durable.
pub fn run_push(ra: &RepoArgs, a: PushArgs) -> anyhow::Result<i32> {
    let cluster = match a.cluster {
        Some(c) => c,
        None => default_cluster(&a.path)?,
    };
    // A running agent has the key unlocked and the repository open: hand the file over.
    let home = ra.location()?.home()?;
    match crate::agent::archive::push_via_agent(&home, &cluster, &a.path) {
        Some(AgentReply::Archived) => return Ok(0),
        Some(AgentReply::Conflict(m)) => {
            eprintln!("wayback wal-push: {m}");
            return Ok(EXIT_WAL_CONFLICT);
        }
        Some(AgentReply::OtherCluster(m)) => {
            eprintln!("wayback wal-push: {m}");
            return Ok(EXIT_WAL_OTHER_CLUSTER);
        }
        Some(AgentReply::NoSpace(m)) => {
            eprintln!(
                "wayback wal-push: no space left for the repository (through the agent): {m}"
            );
            return Ok(crate::cli::EXIT_NO_SPACE);
        }
        Some(AgentReply::Failed(m)) => anyhow::bail!("pushing through the agent: {m}"),
        None => {}
    }
    // No agent: write directly. No writer lock: wal-push writes only its own packs and
    // records (see `wal`).
    let repo = ra.open(Access::Read)?;
    match wal::push(&repo, &cluster, &a.path) {
        Ok(Pushed::Stored) => Ok(0),
        Ok(Pushed::AlreadyThere) => {
            tracing::info!(file = %a.path.display(), "already archived with identical content");
            Ok(0)
        }
        Err(e @ WalError::Conflict { .. }) => {
            eprintln!("wayback wal-push: {e}");
            Ok(EXIT_WAL_CONFLICT)
        }
        Err(e @ WalError::OtherCluster { .. }) => {
            eprintln!("wayback wal-push: {e}");
            Ok(EXIT_WAL_OTHER_CLUSTER)
        }
        Err(WalError::Repo(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

/// Restores one file; exit 1 quickly and silently when it is not archived.
pub fn run_fetch(ra: &RepoArgs, a: FetchArgs) -> anyhow::Result<i32> {
    let be = crate::repo::open_backend(&ra.location()?)?;
    if !wal::exists(be.as_ref(), &a.cluster, &a.name)? {
        return Ok(1);
    }
    let repo = ra.open(Access::Read)?;
    wal::fetch(&repo, &a.cluster, &a.name, &a.dest)?;
    Ok(0)
}

/// Prints archive status.
pub fn run(ra: &RepoArgs, cmd: WalCmd) -> anyhow::Result<i32> {
    match cmd {
        WalCmd::Status { json } => {
            let repo = ra.open(Access::Read)?;
            let st = wal::status(&repo)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                for c in &st {
                    outln!(
                        "{}: {} files, newest segment {} ({}), timelines {:?}, {}",
                        c.cluster,
                        c.files,
                        c.newest_segment.as_deref().unwrap_or("-"),
                        c.newest_age_s
                            .map(|a| format!("archived {a:.0} s ago"))
                            .unwrap_or_else(|| "-".into()),
                        c.timelines,
                        if c.gaps.is_empty() {
                            "no gaps".to_string()
                        } else {
                            c.gaps
                                .iter()
                                .map(|(_, a, b)| format!("gap {a}..{b}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    );
                    outln!("  {}", pitr_window(c));
                }
                if st.is_empty() {
                    outln!("no WAL archived yet");
                }
            }
            Ok(0)
        }
        WalCmd::List { cluster, json } => {
            let repo = ra.open(Access::Read)?;
            let clusters = match cluster {
                Some(c) => vec![c],
                None => wal::clusters(repo.be.as_ref())?,
            };
            let mut rows = Vec::new();
            for c in &clusters {
                for name in wal::list(repo.be.as_ref(), c)? {
                    let rec = wal::read_record(&repo, c, &name)?;
                    rows.push(serde_json::json!({
                        "cluster": c,
                        "name": name,
                        "size": rec.size,
                        "digest": rec.digest,
                        "pushed": crate::timespec::format_time(rec.pushed),
                    }));
                }
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in &rows {
                    outln!(
                        "{}  {:<40} {:>10}  {}",
                        r["cluster"].as_str().unwrap_or(""),
                        r["name"].as_str().unwrap_or(""),
                        r["size"],
                        r["pushed"].as_str().unwrap_or("")
                    );
                }
                outln!("{} file(s)", rows.len());
            }
            Ok(0)
        }
    }
}

/// The PITR window line of `wal status`.
fn pitr_window(c: &wal::ClusterStatus) -> String {
    match (&c.earliest_recoverable, &c.latest_recoverable) {
        (Some(from), Some(to)) => format!(
            "PITR window {from} .. {to} (from base backup {})",
            c.earliest_base_backup.as_deref().unwrap_or("-")
        ),
        (None, _) => {
            "PITR window: none (no base backup of this cluster with archived start WAL)".to_string()
        }
        (Some(from), None) => format!("PITR window: from {from}, newest segment unreadable"),
    }
}
