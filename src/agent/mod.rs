//! The agent: one long-running writer that runs every source on its schedule.
//!
//! It holds the repository's writer lock for its whole life (so CLI backups are refused while it
//! runs, with a message naming it), runs one job at a time, retries failures with exponential
//! backoff (30 s, 60 s, ... capped at 1 h and at the next regular run), and never leaves a
//! partial snapshot visible: a job that fails writes no manifest. A Unix control socket answers
//! `status` (JSON) and `run NAME` (run now). WAL does not pass through the agent: `wal-push`
//! writes its own packs without the writer lock, so archiving never waits for a backup.

pub mod archive;
pub mod config;
pub mod cron;
pub mod health;
pub mod hooks;
pub mod metrics;
pub mod offsite;
pub mod sock;
pub mod state;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use globset::{Glob, GlobSetBuilder};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::ingest::stream::{StreamBackup, StreamInput};
use crate::ingest::{fs, stream, Counters};
use crate::repo::{Access, Repository};
use crate::snapshot::SnapshotKind;
use config::{Config, Schedule, Source};

/// What the agent knows about one source (served by `status`).
#[derive(Serialize, Clone, Debug)]
pub struct SourceState {
    /// Source name.
    pub name: String,
    /// Source type.
    pub kind: String,
    /// Next run (UTC, RFC 3339), none for passive sources.
    pub next_run: Option<String>,
    /// Last successful snapshot (short id and time).
    pub last_snapshot: Option<String>,
    /// Last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Jobs run.
    pub runs: u64,
    /// Consecutive failures.
    pub failures: u64,
    /// When the last run started (RFC 3339).
    pub last_run: Option<String>,
    /// Duration of the last run, seconds.
    pub last_duration_s: Option<f64>,
    /// Bytes added by this agent's runs of the source.
    pub bytes_added: u64,
    #[serde(skip)]
    next: Option<DateTime<Utc>>,
}

struct Shared {
    states: Mutex<Vec<SourceState>>,
    wake: Notify,
    counters: Arc<metrics::Counters>,
}

pub(crate) fn next_regular(s: &Source, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match s.schedule() {
        Schedule::Every(d) => now.checked_add_signed(chrono::Duration::from_std(d).ok()?),
        Schedule::Cron(c) => c.next_after(now),
        Schedule::Passive => None,
    }
}

/// Forgets the source's snapshots its `keep` policy no longer keeps (and, for a base-backup
/// source, the WAL older than the oldest base backup left). A failure is logged, not fatal:
/// the new snapshot is safe, and the next run tries again.
pub fn apply_retention(repo: &Repository, s: &Source) {
    let Some(keep) = &s.keep else { return };
    let policy = match keep.policy() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(source = %s.name, error = %e, "retention policy invalid");
            return;
        }
    };
    let req = crate::maint::forget::Request::Policy {
        sources: vec![s.name.clone()],
        policy,
    };
    match crate::maint::forget::forget(repo, &req, &[], false) {
        Ok(out) => {
            let removed = out
                .snapshots
                .iter()
                .filter(|d| d.action == crate::maint::forget::Action::Remove)
                .count();
            let wal: usize = out.wal.iter().map(|w| w.remove.len()).sum();
            if removed + wal > 0 {
                crate::audit::note(
                    repo,
                    "forget",
                    &format!(
                        "agent retention of {}: removed {removed} snapshot(s) and {wal} WAL file(s)",
                        s.name
                    ),
                );
                tracing::info!(source = %s.name, snapshots = removed, wal_files = wal, "retention applied");
            }
        }
        Err(e) => {
            tracing::error!(source = %s.name, error = %e, "retention failed; nothing was forgotten")
        }
    }
}

/// Logs a warning when the repository's filesystem is [`FULL_WARNING`] full or more.
pub fn warn_if_full(repo: &Repository) {
    let Some(root) = repo.be.local_root() else {
        return;
    };
    if let Some(used) = crate::maint::stats::fs_used_fraction(root) {
        if used >= FULL_WARNING {
            tracing::warn!(
                used_percent = (used * 100.0).round() as u64,
                repo = %root.display(),
                "repository filesystem is over 80% full: forget and prune, or add space"
            );
        }
    }
}

/// What a successful job wrote.
#[derive(Clone, Debug)]
pub struct JobDone {
    /// Short id and time of the snapshot (`1a2b3c4d 2026-01-02T03:04:05Z`).
    pub desc: String,
    /// Short id alone (for hooks).
    pub id: String,
    /// Plain bytes of new blobs.
    pub bytes_added: u64,
}

/// Runs one source's job; returns what it wrote.
pub fn run_job(repo: &Repository, s: &Source) -> Result<JobDone> {
    let counters = Arc::new(Counters::default());
    let snap = match s.kind.as_str() {
        "paths" => {
            let mut gs = GlobSetBuilder::new();
            for e in &s.exclude {
                gs.add(Glob::new(e).map_err(|e| Error::Invalid(e.to_string()))?);
            }
            let parent = repo
                .snapshots()?
                .into_iter()
                .filter(|x| x.source == s.name && x.kind == SnapshotKind::Files)
                .max_by_key(|x| x.time);
            let opts = fs::FsBackup {
                source: s.name.clone(),
                paths: s.paths.clone(),
                tags: s.tags.clone(),
                excludes: gs.build().map_err(|e| Error::Invalid(e.to_string()))?,
                parent,
            };
            fs::backup(repo, &opts, counters)?
        }
        "command" => stream::backup(
            repo,
            &StreamBackup {
                source: s.name.clone(),
                name: s.file.clone().unwrap_or_else(|| "stdout".into()),
                tags: s.tags.clone(),
                input: StreamInput::Command(s.command.clone().unwrap_or_default()),
            },
            counters,
        )?,
        "basebackup" => stream::backup_basebackup(
            repo,
            &s.name,
            s.command.as_deref().unwrap_or_default(),
            &s.tags,
            s.cluster.clone(),
            counters,
        )?,
        other => return Err(Error::Invalid(format!("source type {other} has no job"))),
    };
    Ok(JobDone {
        desc: format!("{} {}", snap.id.short(), snap.time_name()),
        id: snap.id.short(),
        bytes_added: snap.stats.bytes_added,
    })
}

/// The durable record of the agent's view (see [`state`]).
fn snapshot_state(cfg: &Config, states: &[SourceState]) -> state::AgentState {
    let (wal_push_failures, wal_last_error) = archive::failures();
    state::AgentState {
        version: state::VERSION,
        wal_late_s: cfg.wal_late().map(|d| d.as_secs()),
        updated: Utc::now().to_rfc3339(),
        pid: std::process::id(),
        sources: cfg
            .sources
            .iter()
            .zip(states)
            .map(|(c, s)| state::SourceRecord {
                name: s.name.clone(),
                kind: s.kind.clone(),
                every: c.every.clone(),
                cron: c.cron.clone(),
                next_run: s.next_run.clone(),
                last_run: s.last_run.clone(),
                last_duration_s: s.last_duration_s,
                last_error: s.last_error.clone(),
                failures: s.failures,
                last_snapshot: s.last_snapshot.clone(),
                bytes_added: s.bytes_added,
            })
            .collect(),
        wal_push_failures,
        wal_last_error,
    }
}

/// Saves the state; a failure is logged (status then shows the previous state, and the next
/// job tries again), never fatal to the backups themselves.
fn save_state(repo: &Repository, st: &state::AgentState) {
    if let Err(e) = state::save(repo, st) {
        tracing::error!(error = %e, "could not save the agent state; `wayback status` shows an older one");
    }
}

/// Socket path for a configuration.
pub fn socket_path(cfg: &Config) -> PathBuf {
    cfg.socket
        .clone()
        .unwrap_or_else(|| config::repo_home(cfg).join("agent.sock"))
}

/// Runs the agent until SIGINT/SIGTERM. `copy_pass`: the passphrase of the scheduled copy's
/// destination (`copy = {...}`), read once at start like `pass`.
pub fn run(cfg: Config, pass: Vec<u8>, copy_pass: Option<Vec<u8>>) -> Result<()> {
    let repo = Arc::new(Repository::open_at(
        &crate::repo::Location::parse(cfg.repo.as_os_str())?,
        &pass,
        Access::Write,
    )?);
    let now = Utc::now();
    // A restarted agent keeps reporting what failed before it stopped until the source's
    // next run says otherwise.
    let before = match state::load(&repo) {
        Ok(b) => b.map(|b| b.sources).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the previous agent state");
            Vec::new()
        }
    };
    let prev = |name: &str| {
        before
            .iter()
            .find(|r| r.name == name)
            .cloned()
            .unwrap_or_default()
    };
    let shared = Arc::new(Shared {
        states: Mutex::new(
            cfg.sources
                .iter()
                .map(|s| {
                    // Interval sources run at start; cron sources at their next match.
                    let next = match s.schedule() {
                        Schedule::Every(_) => Some(now),
                        _ => next_regular(s, now),
                    };
                    SourceState {
                        name: s.name.clone(),
                        kind: s.kind.clone(),
                        next_run: next.map(|t| t.to_rfc3339()),
                        last_snapshot: None,
                        last_error: prev(&s.name).last_error,
                        runs: 0,
                        failures: prev(&s.name).failures,
                        last_run: prev(&s.name).last_run,
                        last_duration_s: prev(&s.name).last_duration_s,
                        bytes_added: 0,
                        next,
                    }
                })
                .collect(),
        ),
        wake: Notify::new(),
        counters: Arc::new(metrics::Counters::default()),
    });
    {
        let st = shared.states.lock().expect("poisoned");
        save_state(&repo, &snapshot_state(&cfg, &st));
    }
    let sock = socket_path(&cfg);
    let wal_sock = archive::socket_path(&repo.home);
    let me = sock::Owner::current();
    // Only this user (and root) may ask the agent to run jobs or show its status.
    let control = sock::bind(&sock, 0o600, me)?;
    let wal_owner = match archive::serve(repo.clone()) {
        Ok(o) => o,
        Err(e) => {
            sock::remove_if_ours(&sock, me.uid);
            return Err(e);
        }
    };
    let mut metrics_listener =
        match cfg.metrics.as_deref().map(|a| {
            std::net::TcpListener::bind(a).and_then(|l| l.set_nonblocking(true).map(|()| l))
        }) {
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                sock::remove_if_ours(&sock, me.uid);
                sock::remove_if_ours(&wal_sock, wal_owner.uid);
                return Err(Error::Invalid(format!(
                    "metrics = \"{}\": cannot listen: {e}",
                    cfg.metrics.as_deref().unwrap_or_default()
                )));
            }
            None => None,
        };
    control
        .set_nonblocking(true)
        .map_err(|e| Error::io("set nonblocking", &sock, e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start runtime", &sock, e))?;
    rt.block_on(async move {
        let listener = UnixListener::from_std(control)
            .map_err(|e| Error::io("listen on control socket", &sock, e))?;
        tracing::info!(socket = %sock.display(), sources = cfg.sources.len(), "agent started");
        let server = tokio::spawn(serve(listener, shared.clone()));
        let metrics_task = match &cfg.metrics {
            Some(addr) => {
                let l = metrics_listener
                    .take()
                    .map(tokio::net::TcpListener::from_std)
                    .transpose()
                    .map_err(|e| Error::Invalid(format!("metrics = \"{addr}\": {e}")))?
                    .ok_or_else(|| Error::Invalid("metrics listener missing".into()))?;
                tracing::info!(address = %addr, "metrics at http://{addr}/metrics");
                let names = cfg
                    .sources
                    .iter()
                    .filter(|s| s.kind != "postgres-wal")
                    .map(|s| s.name.clone())
                    .collect();
                Some(tokio::spawn(metrics::serve(
                    l,
                    repo.clone(),
                    shared.counters.clone(),
                    names,
                )))
            }
            None => None,
        };
        let verifier = tokio::spawn(verify(cfg.clone(), repo.clone(), Arc::new(copy_pass)));
        let sched = tokio::spawn(schedule(cfg.clone(), repo, shared.clone()));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::io("signal", &sock, e))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("agent stopping");
        server.abort();
        sched.abort();
        verifier.abort();
        if let Some(m) = metrics_task {
            m.abort();
        }
        sock::remove_if_ours(&sock, me.uid);
        sock::remove_if_ours(&wal_sock, wal_owner.uid);
        Ok(())
    })
}

/// Fraction of the repository's filesystem in use above which the agent warns after each job.
pub const FULL_WARNING: f64 = 0.8;

/// Maintenance: prunes between backups ([`schedule`]), drills and checks beside them
/// ([`verify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    /// Prune (agent-wide).
    Prune,
    /// Restore drill of source `i`.
    Drill(usize),
    /// Scheduled check (agent-wide).
    Check,
    /// Scheduled off-site copy (agent-wide).
    Copy,
}

/// Next run of a task's schedule after `now` (intervals: one interval after `now`, so a drill
/// never runs before the first backup of a fresh agent).
fn next_of(s: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match s {
        Schedule::Every(d) => now.checked_add_signed(chrono::Duration::from_std(*d).ok()?),
        Schedule::Cron(c) => c.next_after(now),
        Schedule::Passive => None,
    }
}

fn task_next(cfg: &Config, task: Task, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match task {
        Task::Prune => cfg.next_prune(now),
        Task::Drill(i) => cfg.sources[i]
            .drill
            .as_deref()
            .and_then(|d| config::cron_or_interval(d).ok())
            .and_then(|s| next_of(&s, now)),
        Task::Check => cfg.check.as_ref().and_then(|c| next_of(&c.schedule(), now)),
        Task::Copy => cfg.copy.as_ref().and_then(|c| next_of(&c.schedule(), now)),
    }
}

/// Runs one restore drill of source `i` and records it; a failure runs the failure hook.
fn run_drill(cfg: &Config, repo: &Arc<Repository>, i: usize) {
    let src = &cfg.sources[i];
    let opts = crate::maint::drill::DrillOptions {
        scratch: cfg.drill_scratch.clone(),
        random: src.drill_random,
        postgres: Some(crate::pg::drill::PgDrillOptions {
            pg_bin: cfg
                .pg_bin
                .clone()
                .unwrap_or_else(|| crate::pg::drill::PgDrillOptions::default().pg_bin),
            query: src.drill_query.clone().unwrap_or_else(|| "SELECT 1".into()),
            expect: src.drill_expect.clone(),
            database: src
                .drill_database
                .clone()
                .unwrap_or_else(|| "postgres".into()),
            ..Default::default()
        }),
    };
    tracing::info!(source = %src.name, "restore drill starting");
    let rep = match crate::maint::drill::drill(repo, &src.name, &opts) {
        Ok(r) => r,
        Err(Error::NotFound(m)) => {
            // Nothing backed up yet: not a failed drill, the next one will find something.
            tracing::info!(source = %src.name, "no drill: {m}");
            return;
        }
        Err(e) => crate::maint::drill::DrillReport {
            source: src.name.clone(),
            started: Utc::now().to_rfc3339(),
            problems: vec![format!("drill could not start: {e}")],
            ..Default::default()
        },
    };
    if let Err(e) = state::record_drill(repo, rep.record()) {
        tracing::error!(source = %src.name, error = %e, "could not record the drill");
    }
    if rep.ok {
        tracing::info!(source = %src.name, snapshot = %rep.snapshot, seconds = rep.duration_s, files = rep.files, "restore drill passed");
    } else {
        let err = rep.problems.first().cloned().unwrap_or_default();
        tracing::error!(source = %src.name, snapshot = %rep.snapshot, error = %err, "restore drill FAILED");
        let short: String = rep.snapshot.chars().take(8).collect();
        hooks::on_drill_failure(
            cfg,
            src,
            &format!("restore drill failed: {err}"),
            (!short.is_empty()).then_some(short.as_str()),
        );
    }
}

/// The scheduled check: structure, plus the next part of the packs when configured.
fn run_check(cfg: &Config, repo: &Repository) {
    let Some(cc) = &cfg.check else { return };
    let subset = cc.parts().map(|m| {
        // Rotate: the part after the one the last recorded check read (of the same split).
        let last = state::load_check(repo)
            .ok()
            .flatten()
            .and_then(|c| c.subset)
            .and_then(|s| {
                let (n, lm) = s.split_once('/')?;
                Some((n.parse::<u32>().ok()?, lm.parse::<u32>().ok()?))
            });
        match last {
            Some((n, lm)) if lm == m => (n % m + 1, m),
            _ => (1, m),
        }
    });
    let opts = crate::maint::check::CheckOptions {
        read_data: subset.is_some(),
        subset,
    };
    let started = Utc::now();
    let clock = std::time::Instant::now();
    tracing::info!(subset = ?subset, "scheduled check starting");
    let res = crate::maint::check::check(repo, opts, &|_, _, _| {});
    let rec = match &res {
        Ok(rep) => rep.record(opts, started, clock.elapsed().as_secs_f64()),
        Err(e) => state::CheckRecord {
            time: started.to_rfc3339(),
            ok: false,
            duration_s: clock.elapsed().as_secs_f64(),
            read_data: opts.read_data,
            subset: subset.map(|(n, m)| format!("{n}/{m}")),
            problems: 1,
            error: Some(format!("check failed: {e}")),
            ..Default::default()
        },
    };
    if let Err(e) = state::record_check(repo, rec.clone()) {
        tracing::error!(error = %e, "could not record the check");
    }
    if rec.ok {
        tracing::info!(
            seconds = rec.duration_s,
            packs_read = rec.packs_read,
            "scheduled check passed"
        );
    } else {
        let err = rec.error.clone().unwrap_or_default();
        tracing::error!(problems = rec.problems, error = %err, "scheduled check FAILED");
        hooks::on_check_failure(
            cfg,
            &format!("check found {} problem(s): {err}", rec.problems),
        );
    }
}

/// Drills, checks and off-site copies, in their own lane beside [`schedule`]'s: they only read
/// this repository, and a base-backup drill (a whole restore and a PostgreSQL recovery, an
/// hour for a large database) or a first copy run in the backup loop held every backup of every
/// source back that long, turning an RPO of minutes into one of hours. They read complete
/// snapshots, which backups never change, and prune's grace period protects them like any
/// other reader (the mount, `restore`).
async fn verify(cfg: Config, repo: Arc<Repository>, copy_pass: Arc<Option<Vec<u8>>>) {
    let start = Utc::now();
    let mut tasks: Vec<(Option<DateTime<Utc>>, Task)> = (0..cfg.sources.len())
        .map(Task::Drill)
        .chain([Task::Check, Task::Copy])
        .map(|t| (task_next(&cfg, t, start), t))
        .collect();
    loop {
        let Some((when, k)) = tasks
            .iter()
            .enumerate()
            .filter_map(|(k, (t, _))| t.map(|t| (t, k)))
            .min()
        else {
            return;
        };
        let wait = (when - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let task = tasks[k].1;
        let (c2, r2, p2) = (cfg.clone(), repo.clone(), copy_pass.clone());
        let res = tokio::task::spawn_blocking(move || match task {
            Task::Drill(i) => run_drill(&c2, &r2, i),
            Task::Copy => offsite::run_copy(&c2, &r2, (*p2).as_deref()),
            _ => run_check(&c2, &r2),
        })
        .await;
        if let Err(e) = res {
            tracing::error!(task = ?task, error = %e, "maintenance task panicked");
        }
        tasks[k].0 = task_next(&cfg, task, Utc::now());
    }
}

/// Jobs, retention and prunes run one at a time in this loop: a prune beside a backup of the
/// same process could delete a pack the backup just deduplicated against. Drills, checks and
/// copies run beside it ([`verify`]).
async fn schedule(cfg: Config, repo: Arc<Repository>, shared: Arc<Shared>) {
    let start = Utc::now();
    let mut prune_at = task_next(&cfg, Task::Prune, start);
    loop {
        let due = {
            let st = shared.states.lock().expect("poisoned");
            st.iter()
                .enumerate()
                .filter_map(|(i, s)| s.next.map(|t| (t, i)))
                .min()
        };
        if let Some(pt) = prune_at.filter(|pt| due.is_none_or(|(t, _)| *pt <= t)) {
            let wait = (pt - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.wake.notified() => continue,
                }
            }
            let (r2, grace) = (repo.clone(), cfg.prune_grace());
            let res = tokio::task::spawn_blocking(move || {
                let opts = crate::maint::prune::PruneOptions {
                    grace,
                    ..Default::default()
                };
                // On S3 the agent holds a shared lease; its prune needs an exclusive one,
                // which it gets only while no other host's lease is fresh. A shared lease lost
                // meanwhile (this host stalled past it) is taken again first: otherwise the
                // prune would be skipped as if another host were in the way.
                r2.ensure_lease()?;
                let _ex = r2.exclusive_lease("prune")?;
                let r = crate::maint::prune::prune(&r2, &opts, &mut |_| {});
                if let Ok(rep) = &r {
                    crate::audit::note(&r2, "prune", &format!("agent: {}", rep.summary()));
                }
                r
            })
            .await;
            match res {
                Ok(Ok(rep)) => tracing::info!(
                    deleted = rep.packs_deleted,
                    repacked = rep.packs_repacked,
                    marked = rep.packs_marked,
                    bytes_before = rep.bytes_before,
                    bytes_after = rep.bytes_after,
                    "prune done"
                ),
                Ok(Err(crate::error::Error::Locked(holder))) => tracing::warn!(
                    %holder,
                    "prune skipped: a lease is in the way; the next schedule retries"
                ),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "prune failed; nothing it had not finished was deleted")
                }
                Err(e) => tracing::error!(error = %e, "prune panicked"),
            }
            prune_at = task_next(&cfg, Task::Prune, Utc::now());
            continue;
        }
        let Some((when, i)) = due else {
            shared.wake.notified().await;
            continue;
        };
        let wait = (when - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shared.wake.notified() => continue,
            }
        }
        let src = cfg.sources[i].clone();
        let r2 = repo.clone();
        tracing::info!(source = %src.name, "job starting");
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let res = tokio::task::spawn_blocking(move || {
            // A lease lost meanwhile (S3: this host stalled past it) is taken again first.
            let r = r2.ensure_lease().and_then(|()| run_job(&r2, &src));
            if r.is_ok() {
                apply_retention(&r2, &src);
            }
            warn_if_full(&r2);
            r
        })
        .await
        .unwrap_or_else(|e| Err(Error::Invalid(format!("job panicked: {e}"))));
        let now = Utc::now();
        // The guard must be gone before the next await (the future moves between threads).
        let (snap, hook) = {
            let mut st = shared.states.lock().expect("poisoned");
            let s = &mut st[i];
            s.runs += 1;
            s.last_run = Some(started.to_rfc3339());
            s.last_duration_s = Some(clock.elapsed().as_secs_f64());
            shared.counters.observe(
                &s.name,
                clock.elapsed().as_secs_f64(),
                res.as_ref().ok().map(|d| d.bytes_added),
            );
            let regular = next_regular(&cfg.sources[i], now);
            let hook = match &res {
                Ok(_) => None,
                Err(e) => Some((
                    e.to_string(),
                    s.last_snapshot
                        .as_deref()
                        .and_then(|d| d.split(' ').next())
                        .map(str::to_string),
                )),
            };
            match res {
                Ok(done) => {
                    tracing::info!(source = %s.name, snapshot = %done.desc, "job done");
                    s.last_snapshot = Some(done.desc);
                    s.last_error = None;
                    s.failures = 0;
                    s.bytes_added += done.bytes_added;
                    s.next = regular;
                }
                Err(e) => {
                    s.failures += 1;
                    let backoff =
                        chrono::Duration::seconds((30i64 << (s.failures - 1).min(7)).min(3600));
                    let retry = now + backoff;
                    tracing::error!(source = %s.name, error = %e, retry_in_s = backoff.num_seconds(), "job failed; no snapshot written");
                    s.last_error = Some(e.to_string());
                    s.next = Some(match regular {
                        Some(r) if r < retry => r,
                        _ => retry,
                    });
                }
            }
            s.next_run = s.next.map(|t| t.to_rfc3339());
            (snapshot_state(&cfg, &st), hook)
        };
        let (r2, c2, src) = (repo.clone(), cfg.clone(), cfg.sources[i].clone());
        let _ = tokio::task::spawn_blocking(move || {
            save_state(&r2, &snap);
            if let Some((err, snap)) = hook {
                hooks::on_failure(&c2, &src, &err, snap.as_deref());
            }
        })
        .await;
    }
}

/// Longest command line the control socket accepts: commands are `status` and `run NAME`, so
/// anything longer is not a command, and reading it whole would let any client grow the
/// agent's memory without bound.
pub const MAX_LINE: usize = 64 << 10;

/// Reads one line of at most [`MAX_LINE`] bytes: `Ok(None)` at end of stream, `Err(())` when
/// the line is longer (the caller answers and hangs up).
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::result::Result<Option<()>, ()> {
    use tokio::io::AsyncReadExt;
    buf.clear();
    let n = r
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .await
        .map_err(|_| ())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        Ok(Some(()))
    } else if buf.len() > MAX_LINE {
        Err(())
    } else {
        // The last line, without a newline.
        Ok(Some(()))
    }
}

async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                let reply = match read_line(&mut r, &mut buf).await {
                    Ok(Some(())) => handle(&shared, String::from_utf8_lossy(&buf).trim()),
                    Ok(None) => break,
                    Err(()) => {
                        let reply =
                            error_reply(&format!("command line longer than {MAX_LINE} bytes"));
                        let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
                        break;
                    }
                };
                if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// `{"ok":false,"error":...}` with the message JSON-escaped: whatever a client sent and we
/// echo (quotes, newlines, terminal escapes) arrives as `\"`, `\n`, `\u001b`, never raw.
pub(crate) fn error_reply(msg: &str) -> String {
    serde_json::json!({"ok": false, "error": msg}).to_string()
}

/// A command line of the control socket, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `status`: the sources' states as JSON.
    Status,
    /// `run NAME`: run a source now.
    Run(&'a str),
    /// Anything else.
    Unknown,
}

/// Parses one command line as the control socket reads it (any bytes: the socket is open to
/// its owner's processes, which need not be wayback).
pub fn parse_command(line: &str) -> Command<'_> {
    let mut parts = line.trim().splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some("status"), None) => Command::Status,
        (Some("run"), Some(name)) => Command::Run(name),
        _ => Command::Unknown,
    }
}

fn handle(shared: &Shared, cmd: &str) -> String {
    match parse_command(cmd) {
        Command::Status => {
            let st = shared.states.lock().expect("poisoned").clone();
            serde_json::to_string(&st).unwrap_or_else(|_| "[]".into())
        }
        Command::Run(name) => {
            let mut st = shared.states.lock().expect("poisoned");
            match st
                .iter_mut()
                .find(|s| s.name == name && s.kind != "postgres-wal")
            {
                Some(s) => {
                    s.next = Some(Utc::now());
                    s.next_run = s.next.map(|t| t.to_rfc3339());
                    drop(st);
                    shared.wake.notify_one();
                    serde_json::json!({"ok": true}).to_string()
                }
                None => error_reply(&format!("no runnable source named {name}")),
            }
        }
        Command::Unknown => error_reply("commands: status | run NAME"),
    }
}

/// Sends one command to a running agent and returns its reply line.
pub fn ask(sock: &std::path::Path, cmd: &str) -> Result<String> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| Error::io("connect to agent (is it running?)", sock, e))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    writeln!(s, "{cmd}").map_err(|e| Error::io("write", sock, e))?;
    // The reply is one JSON line; bounded all the same (status lists every source).
    let mut line = Vec::new();
    std::io::Read::take(std::io::BufReader::new(&s), 64 << 20)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::io("read", sock, e))?;
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}
