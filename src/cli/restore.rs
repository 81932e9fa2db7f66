//! `wayback restore`.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::cli::common::{human_bytes, progress_bar, RepoArgs};
use crate::cli::ls::resolve_spec;
use crate::repo::Access;
use crate::restore::{restore, RestoreCounters, RestoreOptions};
use crate::tree::reader::resolve_path;
use crate::tree::NodeKind;

/// Arguments of `restore`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// SNAP[:PATH].
    pub spec: String,
    /// Source for `latest` or a time.
    #[arg(long)]
    pub source: Option<String>,
    /// Directory to restore into (created if missing).
    #[arg(long)]
    pub target: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub overwrite: bool,
    /// JSON report: `{snapshot, source, time, target, files, dirs, bytes, seconds, failed:
    /// [{path, error}]}`.
    #[arg(long)]
    pub json: bool,
}

/// Restores and reports.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let (snap, path) = resolve_spec(&repo, &a.spec, a.source.as_deref())?;
    let node = resolve_path(&repo, &snap.root, &path)?;
    crate::audit::note(
        &repo,
        "restore",
        &format!(
            "snapshot {} ({} {}){} to {}",
            snap.id.short(),
            snap.source,
            snap.time_name(),
            if path.is_empty() || path == b"/" {
                String::new()
            } else {
                format!(" path {}", String::from_utf8_lossy(&path))
            },
            std::path::absolute(&a.target)
                .unwrap_or_else(|_| a.target.clone())
                .display()
        ),
    );
    let counters = RestoreCounters::default();
    let total = node.as_ref().map_or(snap.stats.total_bytes, |n| n.size);
    let pb = progress_bar(
        Some(total),
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    );
    let started = std::time::Instant::now();
    let opts = RestoreOptions {
        overwrite: a.overwrite,
    };
    let report = std::thread::scope(|s| {
        let h = s.spawn(|| match &node {
            None => restore(
                &repo,
                Some(&snap.root),
                None,
                snap.root_meta.as_ref(),
                &a.target,
                &opts,
                &counters,
            ),
            Some(n) if n.kind == NodeKind::Dir => restore(
                &repo,
                n.subtree.as_ref(),
                None,
                Some(n),
                &a.target,
                &opts,
                &counters,
            ),
            Some(n) => {
                if !crate::tree::is_normal_name(&n.name) {
                    return Err(crate::Error::Corrupt(format!(
                        "refusing to restore {:?}: not a plain file name",
                        n.name_lossy()
                    )));
                }
                let name = std::ffi::OsStr::from_bytes(&n.name);
                restore(
                    &repo,
                    None,
                    Some(n),
                    None,
                    &a.target.join(name),
                    &opts,
                    &counters,
                )
            }
        });
        while !h.is_finished() {
            pb.set_position(counters.bytes.load(Ordering::Relaxed));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        h.join().expect("restore thread panicked")
    })?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    if a.json {
        let v = serde_json::json!({
            "snapshot": snap.id.to_hex(),
            "source": snap.source,
            "time": snap.time_name(),
            "target": a.target,
            "files": report.files,
            "dirs": report.dirs,
            "bytes": report.bytes,
            "seconds": secs,
            "failed": report.failed.iter().map(|(p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if report.failed.is_empty() {
            0
        } else {
            crate::cli::EXIT_DAMAGED
        });
    }
    outln!(
        "restored {} files, {} dirs, {} from snapshot {} ({} {}) to {} in {:.2} s ({:.1} MB/s)",
        report.files,
        report.dirs,
        human_bytes(report.bytes),
        snap.id.short(),
        snap.source,
        snap.time_name(),
        a.target.display(),
        secs,
        report.bytes as f64 / 1e6 / secs
    );
    if !report.failed.is_empty() {
        eprintln!(
            "wayback: {} file(s) could not be restored (damaged data):",
            report.failed.len()
        );
        for (p, e) in &report.failed {
            eprintln!("  {}: {e}", p.display());
        }
        return Ok(crate::cli::EXIT_DAMAGED);
    }
    Ok(0)
}
