//! `wayback status`: is every source backed up on time, is WAL arriving, is there space.
//!
//! Computed from the repository alone (snapshots, WAL records and the agent's sealed
//! [`state`](crate::agent::state)), so it answers the same whether or not the agent runs.
//! A source is LATE when its next regular run after the newest complete snapshot (or the run
//! the agent last planned) is overdue by more than one period (at most an hour) plus the last
//! run's duration; FAILING when its last run failed. Both make `ok` false.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::agent::config::parse_interval;
use crate::agent::cron::Cron;
use crate::agent::state::{self, AgentState, SourceRecord};
use crate::error::Result;
use crate::repo::Repository;

/// Verdict for one source or cluster.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// On schedule, last run succeeded.
    Ok,
    /// A scheduled run is overdue.
    Late,
    /// The last run failed.
    Failing,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "OK",
            Verdict::Late => "LATE",
            Verdict::Failing => "FAILING",
        })
    }
}

/// One source's line.
#[derive(Serialize, Clone, Debug)]
pub struct SourceHealth {
    /// Source name.
    pub name: String,
    /// Verdict.
    pub state: Verdict,
    /// `every 15m`, `cron 0 2 * * *`, or none (unscheduled: backed up by hand).
    pub schedule: Option<String>,
    /// Newest complete snapshot (short id).
    pub newest_snapshot: Option<String>,
    /// Its time (RFC 3339).
    pub newest_time: Option<String>,
    /// Its age, seconds.
    pub age_s: Option<f64>,
    /// When the next run is due (RFC 3339).
    pub due: Option<String>,
    /// Last error (cleared by a success).
    pub last_error: Option<String>,
    /// Consecutive failures.
    pub failures: u64,
    /// Duration of the last run, seconds.
    pub last_duration_s: Option<f64>,
}

/// One WAL cluster's line.
#[derive(Serialize, Clone, Debug)]
pub struct ClusterHealth {
    /// Cluster name.
    pub cluster: String,
    /// Verdict: FAILING when the agent's last push failed, LATE when the newest segment is
    /// older than the agent's `wal_late`.
    pub state: Verdict,
    /// Newest archived segment.
    pub newest_segment: Option<String>,
    /// Seconds since it was archived (the live RPO).
    pub newest_age_s: Option<f64>,
    /// PITR window start (RFC 3339) and end.
    pub pitr_from: Option<String>,
    /// PITR window end.
    pub pitr_to: Option<String>,
    /// Missing segment ranges.
    pub gaps: usize,
}

/// The repository line.
#[derive(Serialize, Clone, Debug)]
pub struct RepoHealth {
    /// Bytes of all packs.
    pub bytes: u64,
    /// Free bytes on its filesystem (for unprivileged users).
    pub free_bytes: u64,
    /// Size of its filesystem.
    pub fs_bytes: u64,
}

/// The last restore drill of one source.
#[derive(Serialize, Clone, Debug)]
pub struct DrillHealth {
    /// Source drilled.
    pub source: String,
    /// OK when the last drill passed, FAILING when not.
    pub state: Verdict,
    /// When it ran (RFC 3339).
    pub time: String,
    /// Its age, seconds.
    pub age_s: f64,
    /// Snapshot restored (short id).
    pub snapshot: String,
    /// Measured recovery time, seconds.
    pub duration_s: f64,
    /// The first problem of a failed drill.
    pub error: Option<String>,
    /// The newest passed drill (RFC 3339).
    pub last_success: Option<String>,
}

/// The last verification (`check`).
#[derive(Serialize, Clone, Debug)]
pub struct CheckHealth {
    /// OK when it found no problem.
    pub state: Verdict,
    /// When it ran (RFC 3339).
    pub time: String,
    /// Its age, seconds.
    pub age_s: f64,
    /// How long it took, seconds.
    pub duration_s: f64,
    /// Whether pack data was read, and which subset.
    pub read_data: bool,
    /// `n/m` when a subset of the packs was read.
    pub subset: Option<String>,
    /// Problems found.
    pub problems: u64,
    /// The first problem.
    pub error: Option<String>,
    /// The newest check without problems (RFC 3339).
    pub last_success: Option<String>,
}

/// How far an off-site copy (`wayback copy`, the agent's `copy = {...}`) is behind.
#[derive(Serialize, Clone, Debug)]
pub struct CopyHealth {
    /// Destination.
    pub to: String,
    /// OK when the last run had no error and no WAL conflict, FAILING when not.
    pub state: Verdict,
    /// When the last run started (RFC 3339), and its age in seconds.
    pub time: String,
    /// Age of the last run, seconds.
    pub age_s: f64,
    /// Source snapshots (of the sources it copies) not in the copy as of its last run.
    pub behind: usize,
    /// The oldest of them (`source@time`) and its age, seconds: how far behind the copy is.
    pub oldest_missing: Option<String>,
    /// Age of `oldest_missing`, seconds.
    pub oldest_missing_age_s: Option<f64>,
    /// The newest of them (`source@time`).
    pub newest_missing: Option<String>,
    /// The last run's error or first WAL conflict.
    pub error: Option<String>,
    /// The newest run without a problem (RFC 3339).
    pub last_success: Option<String>,
}

/// The whole report (`wayback status --json`).
#[derive(Serialize, Clone, Debug)]
pub struct Report {
    /// True when every source and cluster is OK.
    pub ok: bool,
    /// When this was computed (RFC 3339).
    pub now: String,
    /// When the agent last wrote its state; none if no agent ever ran.
    pub agent_updated: Option<String>,
    /// Sources (scheduled ones and any with snapshots), by name.
    pub sources: Vec<SourceHealth>,
    /// WAL clusters.
    pub clusters: Vec<ClusterHealth>,
    /// WAL files the agent failed to archive since it started.
    pub wal_push_failures: u64,
    /// The last such failure.
    pub wal_last_error: Option<String>,
    /// Space.
    pub repository: RepoHealth,
    /// The last restore drill of each drilled source; a failed one makes `ok` false.
    pub drills: Vec<DrillHealth>,
    /// The last check (by the agent or by hand); one that found problems makes `ok` false.
    pub last_check: Option<CheckHealth>,
    /// Off-site copies by destination; a failed last run makes `ok` false.
    pub copies: Vec<CopyHealth>,
    /// Lease objects of an S3 repository (empty for a local one, whose writers hold an
    /// `flock`): who is writing or pruning now from other hosts, and stale leases of writers
    /// that died. Neither changes `ok`: a stale lease is ignored by every taker.
    pub leases: Vec<crate::repo::lease::LockInfo>,
}

fn age_of(t: &str, now: DateTime<Utc>) -> f64 {
    rfc(&Some(t.to_string()))
        .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// FAILING when the agent's last push of this cluster failed; LATE when its newest segment is
/// older than the agent's `wal_late` (an archiver that stopped calling, which PostgreSQL only
/// logs); OK otherwise.
fn cluster_verdict(
    cluster: &str,
    newest_age_s: Option<f64>,
    last_error: Option<&str>,
    late_after_s: Option<u64>,
) -> Verdict {
    if last_error.is_some_and(|e| e.starts_with(&format!("{cluster}:"))) {
        Verdict::Failing
    } else if late_after_s
        .zip(newest_age_s)
        .is_some_and(|(l, a)| a > l as f64)
    {
        Verdict::Late
    } else {
        Verdict::Ok
    }
}

fn verdict(ok: bool) -> Verdict {
    if ok {
        Verdict::Ok
    } else {
        Verdict::Failing
    }
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn rfc(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Next regular run after `t` and the allowed delay (one period, at most an hour).
fn due_after(rec: &SourceRecord, t: DateTime<Utc>) -> Option<(DateTime<Utc>, chrono::Duration)> {
    let cap = chrono::Duration::hours(1);
    if let Some(c) = rec.cron.as_deref().and_then(|c| Cron::parse(c).ok()) {
        let a = c.next_after(t)?;
        let b = c.next_after(a)?;
        return Some((a, (b - a).min(cap)));
    }
    let d = chrono::Duration::from_std(parse_interval(rec.every.as_deref()?).ok()?).ok()?;
    Some((t.checked_add_signed(d)?, d.min(cap)))
}

/// One source's health at `now` from its newest complete snapshot (time in ms, short id) and
/// the agent's record of it. Every figure of the record comes from disk: out-of-range ones
/// (a duration of 1e300 s, a time in the year 9999) must give an answer, never a panic.
pub fn source_health(
    name: String,
    newest: Option<(i64, String)>,
    rec: &SourceRecord,
    now: DateTime<Utc>,
) -> SourceHealth {
    let newest_t = newest.as_ref().map(|(t, _)| ms_time(*t));
    // Overdue: the next run after the newest snapshot, or the run the agent planned.
    let mut due = newest_t.and_then(|t| due_after(rec, t));
    if let (Some(planned), Some((_, grace))) = (rfc(&rec.next_run), due_after(rec, now)) {
        if due.is_none_or(|(d, _)| planned < d) {
            due = Some((planned, grace));
        }
    }
    // A run takes time before the next one is scheduled: allow the last one's duration
    // (bounded: a century is as good as forever here, and keeps the sums in range).
    let took_s = rec.last_duration_s.unwrap_or(0.0).clamp(0.0, 3.2e9);
    let took = chrono::Duration::milliseconds((took_s * 1000.0) as i64);
    let due = due.map(|(d, g)| (d, g + took));
    let state = if rec.failures > 0 || rec.last_error.is_some() {
        Verdict::Failing
    } else if due.is_some_and(|(d, g)| d.checked_add_signed(g).is_some_and(|end| now > end)) {
        Verdict::Late
    } else {
        Verdict::Ok
    };
    let schedule = match (&rec.every, &rec.cron) {
        (Some(e), _) => Some(format!("every {e}")),
        (_, Some(c)) => Some(format!("cron {c}")),
        _ => None,
    };
    SourceHealth {
        name,
        state,
        schedule,
        newest_snapshot: newest.map(|(_, id)| id),
        newest_time: newest_t.map(|t| t.to_rfc3339()),
        age_s: newest_t.map(|t| (now - t).num_milliseconds() as f64 / 1000.0),
        due: due.map(|(d, _)| d.to_rfc3339()),
        last_error: rec.last_error.clone(),
        failures: rec.failures,
        last_duration_s: rec.last_duration_s,
    }
}

/// Computes the report at `now`.
pub fn report(repo: &Repository, now: DateTime<Utc>) -> Result<Report> {
    let agent: Option<AgentState> = state::load(repo)?;
    let snaps = repo.snapshots()?;
    let mut names: Vec<String> = snaps.iter().map(|s| s.source.clone()).collect();
    let recs: Vec<SourceRecord> = agent
        .as_ref()
        .map(|a| a.sources.clone())
        .unwrap_or_default();
    names.extend(
        recs.iter()
            .filter(|r| r.kind != "postgres-wal")
            .map(|r| r.name.clone()),
    );
    names.sort();
    names.dedup();
    let mut sources = Vec::new();
    for name in names {
        let newest = snaps
            .iter()
            .filter(|s| s.source == name && s.complete)
            .max_by_key(|s| s.time);
        let rec = recs
            .iter()
            .find(|r| r.name == name)
            .cloned()
            .unwrap_or_default();
        sources.push(source_health(
            name,
            newest.map(|s| (s.time, s.id.short())),
            &rec,
            now,
        ));
    }
    let wal_error = agent.as_ref().and_then(|a| a.wal_last_error.as_deref());
    let wal_late = agent.as_ref().and_then(|a| a.wal_late_s);
    let clusters = crate::wal::status(repo)?
        .into_iter()
        .map(|c| ClusterHealth {
            state: cluster_verdict(&c.cluster, c.newest_age_s, wal_error, wal_late),
            gaps: c.gaps.len(),
            newest_segment: c.newest_segment,
            newest_age_s: c.newest_age_s,
            pitr_from: c.earliest_recoverable,
            pitr_to: c.latest_recoverable,
            cluster: c.cluster,
        })
        .collect::<Vec<_>>();
    let bytes: u64 = repo.index.packs()?.iter().map(|(_, s)| s).sum();
    // An object store reports no free space (0, 0: unknown).
    let (free_bytes, fs_bytes) = repo
        .be
        .local_root()
        .map(nix::sys::statvfs::statvfs)
        .unwrap_or(Err(nix::errno::Errno::ENOTSUP))
        .map(|v| {
            let f = v.fragment_size();
            (v.blocks_available() * f, v.blocks() * f)
        })
        .unwrap_or((0, 0));
    // Unreadable records are a problem to see, not a reason for status to fail to answer.
    let drills: Vec<DrillHealth> = state::load_drills(repo)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "drill records unreadable");
            Vec::new()
        })
        .into_iter()
        // A source whose snapshots are all forgotten cannot be drilled again: its last drill
        // would otherwise keep status FAILING forever.
        .filter(|d| snaps.iter().any(|s| s.source == d.source))
        .map(|d| DrillHealth {
            state: verdict(d.ok),
            age_s: age_of(&d.time, now),
            snapshot: d.snapshot.chars().take(8).collect(),
            source: d.source,
            time: d.time,
            duration_s: d.duration_s,
            error: d.error,
            last_success: d.last_success,
        })
        .collect();
    let last_check = state::load_check(repo)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "check record unreadable");
            None
        })
        .map(|c| CheckHealth {
            state: verdict(c.ok),
            age_s: age_of(&c.time, now),
            time: c.time,
            duration_s: c.duration_s,
            read_data: c.read_data,
            subset: c.subset,
            problems: c.problems,
            error: c.error,
            last_success: c.last_success,
        });
    let copies = copy_health(repo, &snaps, now);
    let leases = if repo.be.local_root().is_some() {
        Vec::new()
    } else {
        let cfg = crate::repo::lease::LeaseConfig::from_env();
        crate::repo::lease::list(repo.be.as_ref(), &repo.key, &cfg).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "lease objects unreadable");
            Vec::new()
        })
    };
    let ok = copies.iter().all(|c| c.state == Verdict::Ok)
        && sources.iter().all(|s| s.state == Verdict::Ok)
        && clusters.iter().all(|c| c.state == Verdict::Ok)
        && drills.iter().all(|d| d.state == Verdict::Ok)
        && last_check.as_ref().is_none_or(|c| c.state == Verdict::Ok);
    Ok(Report {
        ok,
        now: now.to_rfc3339(),
        agent_updated: agent.as_ref().map(|a| a.updated.clone()),
        sources,
        clusters,
        wal_push_failures: agent.as_ref().map_or(0, |a| a.wal_push_failures),
        wal_last_error: agent.and_then(|a| a.wal_last_error),
        repository: RepoHealth {
            bytes,
            free_bytes,
            fs_bytes,
        },
        drills,
        last_check,
        copies,
        leases,
    })
}

/// Each recorded copy destination against the source's snapshots now.
fn copy_health(
    repo: &Repository,
    snaps: &[crate::snapshot::Snapshot],
    now: DateTime<Utc>,
) -> Vec<CopyHealth> {
    let records = state::load_copies(repo).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "copy records unreadable");
        Vec::new()
    });
    records
        .into_iter()
        .map(|c| {
            let have: std::collections::HashSet<&str> =
                c.copied.iter().map(String::as_str).collect();
            let mut missing: Vec<&crate::snapshot::Snapshot> = snaps
                .iter()
                .filter(|s| c.sources.is_empty() || c.sources.contains(&s.source))
                .filter(|s| !have.contains(s.id.to_hex().as_str()))
                .collect();
            missing.sort_by_key(|s| s.time);
            let name = |s: &crate::snapshot::Snapshot| format!("{}@{}", s.source, s.time_name());
            let now_ms = now.timestamp_millis();
            CopyHealth {
                state: verdict(c.ok),
                age_s: age_of(&c.time, now),
                behind: missing.len(),
                oldest_missing: missing.first().map(|s| name(s)),
                oldest_missing_age_s: missing
                    .first()
                    .map(|s| now_ms.saturating_sub(s.time) as f64 / 1000.0),
                newest_missing: missing.last().map(|s| name(s)),
                to: c.to,
                time: c.time,
                error: c.error,
                last_success: c.last_success,
            }
        })
        .collect()
}
