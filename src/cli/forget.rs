//! `wayback forget`: remove snapshots by retention policy or by name (the work is in
//! `maint::forget`; this parses and prints).

use crate::cli::common::RepoArgs;
use crate::id::SnapshotId;
use crate::maint::forget::{self, Action, Outcome, Policy, Request};
use crate::repo::Access;
use crate::timespec::now_ms;
use anyhow::Context;

/// Exit status of a usage error (clap's own).
const EXIT_USAGE: i32 = 2;

/// Arguments of `forget`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots to remove by id or short id (instead of a policy).
    pub snapshots: Vec<String>,
    /// Apply the policy to this source only (repeatable; default: every source).
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// Keep the N newest complete snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest complete snapshot of each of the last N UTC hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Same per UTC day.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Same per ISO 8601 week (Monday to Sunday, UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Same per calendar month (UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Same per calendar year (UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot within this duration (e.g. 7d, 36h, 2weeks) of the newest one of
    /// its source.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Also run WAL retention for this cluster (it runs anyway for the clusters of the base
    /// backups in scope; repeatable).
    #[arg(long = "wal", value_name = "CLUSTER")]
    pub wal: Vec<String>,
    /// Print the plan, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON output: `{"snapshots": [{id, source, time, action, reasons}], "wal": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// Prune afterwards (`wayback prune` with the given --grace): unused packs are marked, and
    /// deleted by a later prune once the grace period has passed.
    #[arg(long)]
    pub prune: bool,
    /// Grace period of --prune (see `wayback prune --grace`; 0 deletes at once and is safe only
    /// while nothing else writes).
    #[arg(long, default_value = "24h", requires = "prune")]
    pub grace: String,
}

impl Args {
    fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within_ms: self
                .keep_within
                .map(|d| d.as_millis().min(i64::MAX as u128) as i64),
            tags: self.keep_tags.clone(),
        }
    }
}

/// Runs `forget`.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let policy = a.policy();
    let named = !a.snapshots.is_empty();
    if named && !policy.keeps_nothing() {
        eprintln!("wayback forget: give snapshots to remove or a --keep-* policy, not both");
        return Ok(EXIT_USAGE);
    }
    if !named && policy.keeps_nothing() && a.wal.is_empty() {
        eprintln!(
            "wayback forget: refusing a policy that keeps nothing: give at least one of \
             --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, \
             --keep-yearly, --keep-within, --keep-tag (or name snapshots to remove)"
        );
        return Ok(EXIT_USAGE);
    }
    // A dry run changes nothing and may run beside a writer (an agent); forgetting takes the
    // writer lock (exit 11 while another writer holds it).
    let repo = ra
        .open(if a.dry_run {
            Access::Read
        } else {
            Access::Write
        })
        .map_err(|e| {
            let locked = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(crate::error::Error::Locked(_))));
            if locked {
                // TODO(issue 12): hand the request to a running agent over its control socket.
                e.context(
                    "forget needs the writer lock; if `wayback agent` holds it, stop the agent \
                     and run forget again (forget through the agent is not implemented yet)",
                )
            } else {
                e
            }
        })?;
    let req = if named {
        let all = repo.snapshots()?;
        let src = match a.sources.as_slice() {
            [] => None,
            [one] => Some(one.as_str()),
            _ => {
                eprintln!("wayback forget: at most one --source with named snapshots");
                return Ok(EXIT_USAGE);
            }
        };
        let ids: Vec<SnapshotId> = a
            .snapshots
            .iter()
            .map(|spec| crate::snapshot::resolve(&all, spec, src, now_ms()).map(|s| s.id))
            .collect::<Result<_, _>>()?;
        Request::Named(ids)
    } else if policy.keeps_nothing() {
        // Only `--wal CLUSTER`: WAL retention against the snapshots as they are.
        Request::Named(vec![])
    } else {
        Request::Policy {
            sources: a.sources.clone(),
            policy,
        }
    };
    let out = forget::forget(&repo, &req, &a.wal, a.dry_run)?;
    if !a.dry_run {
        crate::audit::note(&repo, "forget", &forget_summary(&out));
    }
    let pruned = if a.prune {
        let opts = crate::maint::prune::PruneOptions {
            dry_run: a.dry_run,
            grace: humantime::parse_duration(&a.grace).with_context(|| {
                format!("--grace {:?}: not a duration like 24h or 30m", a.grace)
            })?,
            ..Default::default()
        };
        Some(crate::maint::prune::prune(&repo, &opts, &mut |_| {})?)
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::to_value(&out)?;
        if let Some(p) = &pruned {
            v["prune"] = serde_json::to_value(p)?;
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_plan(&out)?;
        if let Some(p) = &pruned {
            crate::cli::prune::print_report(p)?;
        }
    }
    Ok(0)
}

/// What a forget removed, for the audit log.
pub fn forget_summary(out: &Outcome) -> String {
    let removed: Vec<String> = out
        .snapshots
        .iter()
        .filter(|d| d.action == Action::Remove)
        .map(|d| format!("{} {} {}", &d.id[..8.min(d.id.len())], d.source, d.time))
        .collect();
    let wal: usize = out.wal.iter().map(|w| w.remove.len()).sum();
    format!(
        "removed {} snapshot(s){}{} and {wal} WAL file(s)",
        removed.len(),
        if removed.is_empty() { "" } else { ": " },
        removed.join(", ")
    )
}

fn print_plan(out: &Outcome) -> std::io::Result<()> {
    let mut source: Option<&str> = None;
    for d in &out.snapshots {
        if source != Some(d.source.as_str()) {
            source = Some(&d.source);
            let n = out.snapshots.iter().filter(|x| x.source == d.source);
            let (keep, remove) = n.fold((0, 0), |(k, r), x| match x.action {
                Action::Keep => (k + 1, r),
                Action::Remove => (k, r + 1),
            });
            outln!("source {}: keep {keep}, remove {remove}", d.source);
            outln!("  {:<10} {:<26} {:<7} REASONS", "ID", "TIME", "ACTION");
        }
        outln!(
            "  {:<10} {:<26} {:<7} {}",
            &d.id[..8.min(d.id.len())],
            d.time,
            match d.action {
                Action::Keep => "keep",
                Action::Remove => "remove",
            },
            d.reasons.join(", ")
        );
    }
    for w in &out.wal {
        match &w.keep_from {
            Some(from) => outln!(
                "WAL {}: keep from {from} (WAL start of base backup {}): remove {} file(s), keep {}",
                w.cluster,
                w.base_backup.as_deref().unwrap_or("-"),
                w.remove.len(),
                w.kept
            ),
            None => outln!(
                "WAL {}: no base backup remains, all {} file(s) kept",
                w.cluster, w.kept
            ),
        }
    }
    let removed = out
        .snapshots
        .iter()
        .filter(|d| d.action == Action::Remove)
        .count();
    let wal: usize = out.wal.iter().map(|w| w.remove.len()).sum();
    if out.dry_run {
        outln!(
            "dry run: would remove {removed} snapshot(s) and {wal} WAL file(s); nothing deleted"
        );
    } else {
        outln!("removed {removed} snapshot(s) and {wal} WAL file(s); run `wayback prune` to free their space");
    }
    Ok(())
}
