//! Retention: which snapshots a policy keeps, and forgetting the rest.
//!
//! Why a separate, pure selection: the rules are easy to get subtly wrong (bucket edges, week
//! numbers across a year end, several snapshots in one bucket), and a mistake deletes backups.
//! [`select`] is a pure function over ([`Candidate`]: id, source, time, tags, complete), tested
//! against tables worked out by hand; [`forget`] only loads manifests, calls it, checks the WAL
//! chain (see `wal_retention`) and deletes.
//!
//! Rules (README "Retention"): per source, newest first. Every `--keep-<bucket> N` keeps the
//! newest snapshot of each of the N most recent UTC calendar buckets that hold a snapshot
//! (hour `2026-11-30T14`, day `2026-11-30`, ISO 8601 week `2026-W48` (the week starts on
//! Monday, week 1 holds the year's first Thursday, so 2024-12-30 is in `2025-W01`), month
//! `2026-11`, year `2026`). `--keep-last N` keeps the N newest. `--keep-within D` keeps every
//! snapshot not older than D before the newest snapshot of the source. `--keep-tag T` keeps
//! every snapshot tagged T. The rules are ORed. Incomplete snapshots (`complete = false`)
//! never count for `--keep-last` or any bucket, so a run of failing backups never pushes a
//! complete one out; only `--keep-within` and `--keep-tag` keep them. A policy never removes
//! every snapshot of a source: when no rule keeps any, the newest stays.
//!
//! Deleting `snapshots/<id>` is the commit point of forgetting (the backend fsyncs the
//! directory); the data stays in packs until `prune`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::timespec::{format_time, TimeMs};

use super::wal_retention::{self, WalPlan};

/// What selection needs to know about one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Source name; rules apply per source.
    pub source: String,
    /// Snapshot time, UTC ms.
    pub time: TimeMs,
    /// User tags (`--keep-tag`).
    pub tags: Vec<String>,
    /// False for snapshots with read problems: they never count towards a bucket.
    pub complete: bool,
}

impl From<&Snapshot> for Candidate {
    fn from(s: &Snapshot) -> Candidate {
        Candidate {
            id: s.id,
            source: s.source.clone(),
            time: s.time,
            tags: s.tags.clone(),
            complete: s.complete,
        }
    }
}

/// A retention policy (all rules ORed). Counts of 0 are the same as absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest complete snapshots.
    pub last: u32,
    /// Keep the newest complete snapshot of each of the N most recent hours that have one.
    pub hourly: u32,
    /// Same per UTC day.
    pub daily: u32,
    /// Same per ISO 8601 week.
    pub weekly: u32,
    /// Same per calendar month.
    pub monthly: u32,
    /// Same per calendar year.
    pub yearly: u32,
    /// Keep everything not older than this (ms) before the newest snapshot of the source.
    pub within_ms: Option<i64>,
    /// Keep every snapshot carrying one of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// True when the policy keeps nothing at all: forgetting with it would delete every
    /// snapshot, which is never what was meant (the CLI refuses it as a usage error).
    pub fn keeps_nothing(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within_ms.is_none()
            && self.tags.is_empty()
    }
}

/// Keep or remove, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Snapshot id (hex).
    pub id: String,
    /// Source.
    pub source: String,
    /// Snapshot time name (RFC 3339 UTC, exact to the ms).
    pub time: String,
    /// `keep` or `remove`.
    pub action: Action,
    /// Rules that keep it, e.g. `daily 2026-11-30`, `last 1`, `within 7days`, `tag release`;
    /// `named` for a snapshot removed by name.
    pub reasons: Vec<String>,
    /// Time in ms (not serialized; sorting and WAL retention).
    #[serde(skip)]
    pub time_ms: TimeMs,
    /// Id (not serialized).
    #[serde(skip)]
    pub snapshot: SnapshotId,
}

/// What happens to a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Stays.
    Keep,
    /// Its manifest is deleted.
    Remove,
}

/// Calendar buckets, in the order their reasons are listed.
#[derive(Clone, Copy, Debug)]
enum Bucket {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }

    /// The bucket a time falls in, as its printed name (UTC).
    fn key(self, t: TimeMs) -> String {
        let dt = Utc.timestamp_millis_opt(t).single().unwrap_or_default();
        let f = match self {
            Bucket::Hourly => "%Y-%m-%dT%H",
            Bucket::Daily => "%Y-%m-%d",
            Bucket::Weekly => "%G-W%V",
            Bucket::Monthly => "%Y-%m",
            Bucket::Yearly => "%Y",
        };
        dt.format(f).to_string()
    }
}

/// Applies `policy` to every source among `snaps` separately. Returns one decision per
/// snapshot, grouped by source (sorted by name), newest first within a source. A source of
/// which no rule keeps anything keeps its newest snapshot ([`NEWEST_FALLBACK`]).
pub fn select(snaps: &[Candidate], policy: &Policy) -> Vec<Decision> {
    let mut by_source: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for s in snaps {
        by_source.entry(&s.source).or_default().push(s);
    }
    let mut out = Vec::with_capacity(snaps.len());
    for (_, mut list) in by_source {
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        out.extend(select_source(&list, policy));
    }
    out
}

fn select_source(newest_first: &[&Candidate], p: &Policy) -> Vec<Decision> {
    let buckets = [
        (Bucket::Hourly, p.hourly),
        (Bucket::Daily, p.daily),
        (Bucket::Weekly, p.weekly),
        (Bucket::Monthly, p.monthly),
        (Bucket::Yearly, p.yearly),
    ];
    let mut left: Vec<u32> = buckets.iter().map(|b| b.1).collect();
    let mut last_key: Vec<Option<String>> = vec![None; buckets.len()];
    let mut last_left = p.last;
    let newest = newest_first.first().map(|s| s.time);
    let within_label = p.within_ms.map(|ms| {
        humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
    });
    let mut out = Vec::with_capacity(newest_first.len());
    for s in newest_first {
        let mut reasons = Vec::new();
        if s.complete && last_left > 0 {
            reasons.push(format!("last {}", p.last - last_left + 1));
            last_left -= 1;
        }
        for (i, (b, _)) in buckets.iter().enumerate() {
            if !s.complete || left[i] == 0 {
                continue;
            }
            let key = b.key(s.time);
            if last_key[i].as_deref() != Some(key.as_str()) {
                reasons.push(format!("{} {key}", b.name()));
                left[i] -= 1;
                last_key[i] = Some(key);
            }
        }
        if let (Some(ms), Some(n), Some(label)) = (p.within_ms, newest, &within_label) {
            if s.time >= n.saturating_sub(ms) {
                reasons.push(format!("within {label}"));
            }
        }
        for t in &p.tags {
            if s.tags.iter().any(|x| x == t) {
                reasons.push(format!("tag {t}"));
            }
        }
        out.push(Decision {
            id: s.id.to_hex(),
            source: s.source.clone(),
            time: format_time(s.time),
            action: if reasons.is_empty() {
                Action::Remove
            } else {
                Action::Keep
            },
            reasons,
            time_ms: s.time,
            snapshot: s.id,
        });
    }
    // A policy never takes every snapshot of a source: when no rule keeps any (all of them
    // incomplete, say), the newest stays. Forget it by name if that is really meant.
    if out.iter().all(|d| d.action == Action::Remove) {
        if let Some(first) = out.first_mut() {
            first.action = Action::Keep;
            first.reasons.push(NEWEST_FALLBACK.to_string());
        }
    }
    out
}

/// Reason of the newest snapshot of a source that no rule kept (see [`select`]).
pub const NEWEST_FALLBACK: &str = "newest (no rule kept any snapshot of the source)";

/// What to forget.
#[derive(Clone, Debug)]
pub enum Request {
    /// Apply a policy to these sources (all sources when empty).
    Policy {
        /// Sources in scope.
        sources: Vec<String>,
        /// The rules.
        policy: Policy,
    },
    /// Remove exactly these snapshots.
    Named(Vec<SnapshotId>),
}

/// The full plan and, unless it was a dry run, its result.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// One decision per snapshot in scope.
    pub snapshots: Vec<Decision>,
    /// WAL retention per cluster in scope.
    pub wal: Vec<WalPlan>,
    /// True when nothing was deleted because it was asked to only show the plan.
    pub dry_run: bool,
}

/// Plans and (unless `dry_run`) carries out a forget. `extra_clusters` are `--wal CLUSTER`s:
/// WAL retention also runs for them. Nothing is deleted when any cluster's WAL chain check
/// fails (see `wal_retention`): the whole plan is refused.
pub fn forget(
    repo: &Repository,
    req: &Request,
    extra_clusters: &[String],
    dry_run: bool,
) -> Result<Outcome> {
    let all = repo.snapshots()?;
    let decisions = match req {
        Request::Policy { sources, policy } => {
            if policy.keeps_nothing() {
                return Err(Error::Invalid(
                    "the policy keeps nothing; give at least one --keep-* option".into(),
                ));
            }
            for s in sources {
                if !all.iter().any(|x| &x.source == s) {
                    return Err(Error::NotFound(format!("no snapshots of source '{s}'")));
                }
            }
            let scope: Vec<Candidate> = all
                .iter()
                .filter(|s| sources.is_empty() || sources.contains(&s.source))
                .map(Candidate::from)
                .collect();
            select(&scope, policy)
        }
        Request::Named(ids) => named(&all, ids)?,
    };
    let removed: BTreeSet<SnapshotId> = decisions
        .iter()
        .filter(|d| d.action == Action::Remove)
        .map(|d| d.snapshot)
        .collect();
    // WAL retention for every cluster whose base backups were in scope, plus --wal ones.
    let in_scope: BTreeSet<SnapshotId> = decisions.iter().map(|d| d.snapshot).collect();
    let known = crate::wal::clusters(repo.be.as_ref())?;
    if let Some(c) = extra_clusters.iter().find(|c| !known.contains(c)) {
        return Err(Error::NotFound(format!("no WAL archive for cluster '{c}'")));
    }
    let mut clusters: BTreeSet<String> = extra_clusters.iter().cloned().collect();
    for s in all.iter().filter(|s| in_scope.contains(&s.id)) {
        // A cluster without a WAL archive here has nothing to retain (its base backups are
        // restorable without PITR); checking its chain would only block forgetting them.
        if let Some(c) =
            wal_retention::base_backup_cluster(s).filter(|c| known.iter().any(|k| k == c))
        {
            clusters.insert(c.to_string());
        }
    }
    let remaining: Vec<&Snapshot> = all.iter().filter(|s| !removed.contains(&s.id)).collect();
    let mut wal = Vec::new();
    for c in &clusters {
        wal.push(wal_retention::plan(repo, c, &remaining)?);
    }
    if !dry_run {
        // Manifests first: each delete is the durable commit of forgetting that snapshot. WAL
        // goes after, oldest first, so an interrupted run leaves a contiguous archive and the
        // next forget (which recomputes from what remains) finishes the job.
        for id in &removed {
            repo.be.delete(&format!("snapshots/{}", id.to_hex()))?;
        }
        for p in &wal {
            wal_retention::apply(repo, p)?;
        }
    }
    Ok(Outcome {
        snapshots: decisions,
        wal,
        dry_run,
    })
}

/// Decisions for `forget SNAP...`: the named snapshots, each removed for reason `named`.
fn named(all: &[Snapshot], ids: &[SnapshotId]) -> Result<Vec<Decision>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for id in ids {
        let s = all
            .iter()
            .find(|s| s.id == *id)
            .ok_or_else(|| Error::NotFound(format!("no snapshot with id {}", id.to_hex())))?;
        if !seen.insert(s.id) {
            continue;
        }
        out.push(Decision {
            id: s.id.to_hex(),
            source: s.source.clone(),
            time: s.time_name(),
            action: Action::Remove,
            reasons: vec!["named".into()],
            time_ms: s.time,
            snapshot: s.id,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "forget_tests.rs"]
mod tests;
