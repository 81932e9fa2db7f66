//! `wayback status [--json]`: the one screen an admin reads first; exit
//! [`EXIT_UNHEALTHY`] when anything is LATE or FAILING (for cron and nagios).

use crate::agent::health::{self, Verdict};
use crate::cli::common::RepoArgs;
use crate::repo::Access;

/// Exit status: a source or WAL cluster is LATE or FAILING, or the last drill or check failed.
pub const EXIT_UNHEALTHY: i32 = 16;

/// Arguments of `status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON report (schema in README, "Monitoring").
    #[arg(long)]
    pub json: bool,
}

fn age(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.max(0.0) as u64)).to_string()
}

fn gib(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut v, mut u) = (b as f64, 0);
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// Prints the report; exit 0 when everything is OK.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let r = health::report(&repo, chrono::Utc::now())?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        match &r.agent_updated {
            Some(t) => outln!("agent state written {t}"),
            None => outln!("no agent has run on this repository"),
        }
        for s in &r.sources {
            let newest = match (&s.newest_snapshot, s.age_s) {
                (Some(id), Some(a)) => format!("newest {id}, {} ago", age(a)),
                _ => "no complete snapshot".into(),
            };
            let mut line = format!(
                "{:<8} {}: {newest}, {}",
                s.state.to_string(),
                s.name,
                s.schedule.as_deref().unwrap_or("unscheduled")
            );
            if let Some(d) = s.last_duration_s {
                line.push_str(&format!(", last run {d:.1} s"));
            }
            if s.state == Verdict::Late {
                if let Some(d) = &s.due {
                    line.push_str(&format!(", due {d}"));
                }
            }
            outln!("{line}");
            if let Some(e) = &s.last_error {
                outln!("         last error ({} in a row): {e}", s.failures);
            }
        }
        for c in &r.clusters {
            outln!(
                "{:<8} wal {}: newest {} ({}), PITR {} .. {}{}",
                c.state.to_string(),
                c.cluster,
                c.newest_segment.as_deref().unwrap_or("-"),
                c.newest_age_s
                    .map(|a| format!("{} ago", age(a)))
                    .unwrap_or_else(|| "-".into()),
                c.pitr_from.as_deref().unwrap_or("-"),
                c.pitr_to.as_deref().unwrap_or("-"),
                if c.gaps > 0 {
                    format!(", {} gaps", c.gaps)
                } else {
                    String::new()
                }
            );
        }
        if r.wal_push_failures > 0 {
            outln!(
                "wal push failures through the agent: {}{}",
                r.wal_push_failures,
                r.wal_last_error
                    .as_deref()
                    .map(|e| format!(", last: {e}"))
                    .unwrap_or_default()
            );
        }
        for d in &r.drills {
            outln!(
                "{:<8} drill {}: snapshot {} {} ago, recovered in {:.1} s{}",
                d.state.to_string(),
                d.source,
                d.snapshot,
                age(d.age_s),
                d.duration_s,
                d.error
                    .as_deref()
                    .map(|e| format!(
                        "; error: {e}; last passed: {}",
                        d.last_success.as_deref().unwrap_or("never")
                    ))
                    .unwrap_or_default()
            );
        }
        match &r.last_check {
            Some(c) => outln!(
                "{:<8} check {} ago ({}), {:.1} s, {} problem(s){}",
                c.state.to_string(),
                age(c.age_s),
                match (&c.subset, c.read_data) {
                    (Some(s), _) => format!("structure and pack data subset {s}"),
                    (None, true) => "structure and all pack data".into(),
                    (None, false) => "structure".into(),
                },
                c.duration_s,
                c.problems,
                c.error
                    .as_deref()
                    .map(|e| format!("; first: {e}"))
                    .unwrap_or_default()
            ),
            None => outln!("no check recorded"),
        }
        for c in &r.copies {
            let behind = match (&c.oldest_missing, c.oldest_missing_age_s) {
                (Some(m), Some(a)) => format!(
                    "{} snapshot(s) behind, oldest missing {m} ({} old)",
                    c.behind,
                    age(a)
                ),
                _ => "up to date".into(),
            };
            outln!(
                "{:<8} copy to {}: last run {} ago, {behind}{}",
                c.state.to_string(),
                c.to,
                age(c.age_s),
                c.error
                    .as_deref()
                    .map(|e| format!(
                        "; error: {e}; last success: {}",
                        c.last_success.as_deref().unwrap_or("never")
                    ))
                    .unwrap_or_default()
            );
        }
        for l in &r.leases {
            let who = match &l.body {
                Some(b) => b.describe(),
                None => format!("unreadable: {}", l.error.as_deref().unwrap_or("")),
            };
            if l.fresh {
                outln!("lease    {who}");
            } else {
                outln!("stale    lease {who} (`wayback unlock --stale-only` removes it)");
            }
        }
        outln!(
            "repository {} in packs, {} free of {}",
            gib(r.repository.bytes),
            gib(r.repository.free_bytes),
            gib(r.repository.fs_bytes)
        );
    }
    Ok(if r.ok { 0 } else { EXIT_UNHEALTHY })
}
