//! `wayback backup`: paths, `--stdin` or `--command`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::bail;
use globset::{Glob, GlobSetBuilder};

use crate::cli::common::{human_bytes, progress_bar, RepoArgs};
use crate::ingest::stream::{StreamBackup, StreamInput};
use crate::ingest::{fs, stream, Counters};
use crate::repo::Access;
use crate::repo::Repository;
use crate::snapshot::{Snapshot, SnapshotKind};
use crate::timespec::{now_ms, parse_time, TimeMs};

/// Arguments of `backup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Paths to back up (a single directory's contents become the snapshot root).
    pub paths: Vec<PathBuf>,
    /// Source name: the directory under /at/<T>/ in the mount.
    #[arg(long)]
    pub source: String,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Skip paths matching this glob (full path or file name; repeatable).
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Read one stream from standard input.
    #[arg(long, conflicts_with = "command")]
    pub stdin: bool,
    /// Store the stdout of this shell command (e.g. 'pg_dump -Fc app').
    #[arg(long)]
    pub command: Option<String>,
    /// Run a base-backup command whose stdout is a tar stream (e.g. 'pg_basebackup -D - -Ft -X none')
    /// and store it unpacked, so the snapshot is a data directory.
    #[arg(long, conflicts_with_all = ["stdin", "command"])]
    pub basebackup: Option<String>,
    /// WAL archive (cluster) name a base backup belongs to (recorded with its WAL range).
    #[arg(long)]
    pub cluster: Option<String>,
    /// File name for --stdin/--command content.
    #[arg(long)]
    pub stdin_name: Option<String>,
    /// Read every file even if unchanged since the previous snapshot.
    #[arg(long)]
    pub force: bool,
    /// Print the snapshot as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Record the snapshot at this time instead of now (RFC 3339 or any time the mount
    /// accepts, e.g. 2025-09-18T02:00; UTC when no zone): imports of old backups and
    /// retention tests. Earlier than the source's newest snapshot is allowed.
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    pub time: Option<TimeMs>,
}

fn parse_time_arg(s: &str) -> Result<TimeMs, String> {
    parse_time(s, now_ms()).ok_or_else(|| {
        format!("'{s}' is not a time (e.g. 2025-09-18T02:00:00Z, 2025-09-18T02:00, 2025-09-18)")
    })
}

/// Runs a backup.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Write)?;
    let counters = Arc::new(Counters::default());
    let pb = progress_bar(None, "{spinner} {elapsed} {msg}");
    let ticker = {
        let c = counters.clone();
        let pb = pb.clone();
        std::thread::spawn(move || {
            while !pb.is_finished() {
                pb.set_message(format!(
                    "{} entries, {} read, {} new",
                    c.entries.load(Ordering::Relaxed),
                    human_bytes(c.bytes_read.load(Ordering::Relaxed)),
                    human_bytes(c.bytes_added.load(Ordering::Relaxed))
                ));
                std::thread::sleep(std::time::Duration::from_millis(200));
                if pb.is_hidden() {
                    break;
                }
            }
        })
    };
    let snap = if let Some(cmd) = &a.basebackup {
        if !a.paths.is_empty() {
            bail!("give either paths or --basebackup, not both");
        }
        stream::backup_basebackup(
            &repo,
            &a.source,
            cmd,
            &a.tags,
            a.cluster.clone(),
            counters.clone(),
        )
    } else if a.stdin || a.command.is_some() {
        if !a.paths.is_empty() {
            bail!("give either paths or --stdin/--command, not both");
        }
        let input = match a.command {
            Some(c) => StreamInput::Command(c),
            None => StreamInput::Stdin,
        };
        let name = a.stdin_name.clone().unwrap_or_else(|| "stdin".into());
        stream::backup(
            &repo,
            &StreamBackup {
                source: a.source.clone(),
                name,
                tags: a.tags.clone(),
                input,
            },
            counters.clone(),
        )
    } else {
        let mut gs = GlobSetBuilder::new();
        for e in &a.excludes {
            gs.add(Glob::new(e)?);
        }
        let parent = if a.force {
            None
        } else {
            repo.snapshots()?
                .into_iter()
                .filter(|s| s.source == a.source && s.kind == SnapshotKind::Files)
                .max_by_key(|s| s.time)
        };
        fs::backup(
            &repo,
            &fs::FsBackup {
                source: a.source.clone(),
                paths: a.paths.clone(),
                tags: a.tags.clone(),
                excludes: gs.build()?,
                parent,
            },
            counters.clone(),
        )
    };
    pb.finish_and_clear();
    let _ = ticker.join();
    let mut snap = snap?;
    if let Some(t) = a.time {
        retime(&repo, &mut snap, t)?;
    }
    if a.json {
        outln!("{}", snapshot_json(&snap));
    } else {
        print_summary(&snap)?;
    }
    if !snap.complete {
        eprintln!(
            "wayback: warning: snapshot is incomplete ({} problem(s)):",
            snap.warnings.len()
        );
        for w in &snap.warnings {
            eprintln!("  {w}");
        }
        return Ok(3);
    }
    Ok(0)
}

/// Moves a just-written snapshot to time `t`. The manifest's id is the hash of its content,
/// time included, so this writes the re-timed manifest (its own commit point) and then deletes
/// the one the backup wrote; a crash between the two leaves both, each a valid snapshot of
/// the same tree, never none.
fn retime(repo: &Repository, snap: &mut Snapshot, t: TimeMs) -> anyhow::Result<()> {
    let old = snap.id;
    snap.time = t;
    let new = repo.save_snapshot(snap)?;
    if new != old {
        repo.be.delete(&format!("snapshots/{}", old.to_hex()))?;
    }
    Ok(())
}

/// The JSON form of a snapshot used by every listing.
pub fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["id"] = serde_json::Value::String(s.id.to_hex());
    v["short_id"] = serde_json::Value::String(s.id.short());
    v["time_name"] = serde_json::Value::String(s.time_name());
    if let Some(o) = s.repaired_from {
        // Hex, like `id`, so a script can find a repaired snapshot's original.
        v["repaired_from"] = serde_json::Value::String(o.to_hex());
    }
    v
}

fn print_summary(s: &Snapshot) -> std::io::Result<()> {
    outln!("{}", summary_line(s));
    Ok(())
}

/// The one-line summary of a backup. Why not one ratio and one rate always: an unchanged
/// backup adds nothing (a ratio total/added would read "infx") and reads nothing (unchanged
/// files are taken from the parent snapshot; "0.0 MB/s" would look like a stall).
fn summary_line(s: &Snapshot) -> String {
    let st = &s.stats;
    let secs = (st.duration_ms as f64 / 1000.0).max(0.001);
    let dedup = if st.bytes_added == 0 {
        "nothing new".to_string()
    } else {
        format!(
            "dedup {:.1}x",
            st.total_bytes as f64 / st.bytes_added as f64
        )
    };
    let rate = if st.bytes_read == 0 {
        "unchanged files not reread".to_string()
    } else {
        format!("{:.1} MB/s", st.bytes_read as f64 / 1e6 / secs)
    };
    format!(
        "snapshot {} of {} at {}: {} files, {} dirs, {} total, {} read, {} added ({} stored), {dedup}, {secs:.2} s, {rate}",
        s.id.short(),
        s.source,
        s.time_name(),
        st.files,
        st.dirs,
        human_bytes(st.total_bytes),
        human_bytes(st.bytes_read),
        human_bytes(st.bytes_added),
        human_bytes(st.bytes_stored),
    )
}
