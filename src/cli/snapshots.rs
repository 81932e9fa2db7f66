//! `wayback snapshots`.

use crate::cli::backup::snapshot_json;
use crate::cli::common::{human_bytes, RepoArgs};
use crate::repo::Access;

/// Arguments of `snapshots`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Lists snapshots, oldest first.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| a.source.as_deref().is_none_or(|src| s.source == src))
        .collect();
    if a.json {
        let v: Vec<_> = snaps.iter().map(snapshot_json).collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    outln!(
        "{:<10} {:<26} {:<16} {:<10} {:>10}  TAGS",
        "ID",
        "TIME",
        "SOURCE",
        "KIND",
        "SIZE"
    );
    for s in &snaps {
        outln!(
            "{:<10} {:<26} {:<16} {:<10} {:>10}  {}{}",
            s.id.short(),
            s.time_name(),
            s.source,
            format!("{:?}", s.kind).to_lowercase(),
            human_bytes(s.stats.total_bytes),
            s.tags.join(","),
            if s.complete { "" } else { " (incomplete)" }
        );
    }
    outln!("{} snapshot(s)", snaps.len());
    Ok(0)
}
