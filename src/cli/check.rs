//! `wayback check`.

use anyhow::bail;

use crate::cli::common::{progress_bar, RepoArgs};
use crate::maint::check::{check, CheckOptions};
use crate::repo::Access;

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Decrypt and verify every blob (or a subset).
    #[arg(long)]
    pub read_data: bool,
    /// Only part N of M of the packs, e.g. 1/10 (rotate N for a full scrub over M runs).
    #[arg(long, requires = "read_data")]
    pub subset: Option<String>,
    /// JSON report.
    #[arg(long)]
    pub json: bool,
}

fn parse_subset(s: &str) -> anyhow::Result<(u32, u32)> {
    let Some((n, m)) = s.split_once('/') else {
        bail!("--subset wants N/M, e.g. 1/10");
    };
    let (n, m): (u32, u32) = (n.parse()?, m.parse()?);
    if m == 0 || n == 0 || n > m {
        bail!("--subset N/M needs 1 <= N <= M");
    }
    Ok((n, m))
}

/// Checks and reports; exit 12 when anything is damaged.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let subset = a.subset.as_deref().map(parse_subset).transpose()?;
    let pb = progress_bar(Some(0), "{prefix} {bar:40} {pos}/{len}");
    let opts = CheckOptions {
        read_data: a.read_data,
        subset,
    };
    let started = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let rep = check(&repo, opts, &|phase, done, total| {
        pb.set_prefix(phase.to_string());
        pb.set_length(total);
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    // Recorded for `status` and the metrics ("last check"); a repository this user may read
    // but not write is still checked.
    let rec = rep.record(opts, started, clock.elapsed().as_secs_f64());
    if let Err(e) = crate::agent::state::record_check(&repo, rec) {
        tracing::warn!(error = %e, "check result not recorded for `status`");
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        outln!(
            "checked {} snapshots, {} trees, {} WAL files{}",
            rep.snapshots,
            rep.trees,
            rep.wal_files,
            if a.read_data {
                format!(
                    ", {} packs read, {} blobs verified",
                    rep.packs_read, rep.blobs_verified
                )
            } else {
                String::new()
            }
        );
        for p in &rep.problems {
            outln!(
                "error: {}{}{}",
                p.what,
                p.pack
                    .as_ref()
                    .map(|x| format!(" [pack {x}]"))
                    .unwrap_or_default(),
                p.blob
                    .as_ref()
                    .map(|x| format!(" [blob {}]", &x[..16]))
                    .unwrap_or_default()
            );
            for f in &p.affected {
                outln!("  used by {f}");
            }
        }
        if rep.problems.is_empty() {
            outln!("no errors found");
        }
    }
    Ok(if rep.problems.is_empty() {
        0
    } else {
        crate::cli::EXIT_DAMAGED
    })
}
