//! `wayback stats`: parse, run `maint::stats`, print.

use crate::cli::common::RepoArgs;
use crate::maint::stats::stats;
use crate::repo::Access;

/// Arguments of `stats`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only list snapshots of this source (repeatable; totals stay repository-wide).
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// JSON report.
    #[arg(long)]
    pub json: bool,
}

fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Prints the report.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let st = stats(&repo, &a.sources)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(0);
    }
    outln!(
        "{} snapshots, {} logical; {} distinct ({:.2}x dedup), {} stored ({:.2}x compression); packs {} in {}",
        st.snapshots,
        human(st.logical_bytes),
        human(st.unique_plain_bytes),
        st.dedup_ratio,
        human(st.live_stored_bytes),
        st.compression_ratio,
        human(st.pack_bytes),
        st.packs
    );
    for w in &st.wal {
        outln!(
            "WAL {}: {} files, {} logical, {} stored",
            w.cluster,
            w.files,
            human(w.logical_bytes),
            human(w.stored_bytes)
        );
    }
    if st.fs_total_bytes > 0 {
        outln!(
            "filesystem: {} free of {} ({:.0}% used)",
            human(st.fs_free_bytes),
            human(st.fs_total_bytes),
            100.0 * (1.0 - st.fs_free_bytes as f64 / st.fs_total_bytes as f64)
        );
    }
    outln!(
        "{:<10} {:<16} {:<26} {:>12} {:>12}",
        "id",
        "source",
        "time",
        "logical",
        "unique"
    );
    for s in &st.per_snapshot {
        outln!(
            "{:<10} {:<16} {:<26} {:>12} {:>12}",
            s.id,
            s.source,
            s.time,
            human(s.logical_bytes),
            human(s.unique_bytes)
        );
    }
    Ok(0)
}
