//! Prometheus metrics: `metrics = "127.0.0.1:9469"` in the agent's configuration serves
//! `GET /metrics` in the text exposition format (version 0.0.4) over plain HTTP/1.1.
//!
//! Why hand-written: one endpoint, one content type, no TLS (bind it to localhost or put a
//! proxy in front); a web framework would be most of the agent's dependencies. Each scrape
//! recomputes the gauges from the repository through [`health::report`] (the same figures as
//! `wayback status`); durations and byte counters come from the agent's own runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::agent::health::{self, Verdict};
use crate::repo::Repository;

/// Upper bounds of `wayback_backup_duration_seconds` (seconds).
pub const BUCKETS: [f64; 7] = [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];

/// One source's duration histogram and counters.
#[derive(Clone, Debug, Default)]
pub struct SourceCounters {
    /// Runs per bucket (not cumulative; made cumulative when rendered).
    pub buckets: [u64; BUCKETS.len()],
    /// Runs longer than the last bucket.
    pub over: u64,
    /// Sum of durations.
    pub sum: f64,
    /// Plain bytes added by successful runs.
    pub bytes_added: u64,
    /// Failed runs.
    pub failures: u64,
}

/// Counters the scheduler updates after each job.
#[derive(Default)]
pub struct Counters {
    /// Per source name.
    pub sources: Mutex<BTreeMap<String, SourceCounters>>,
}

impl Counters {
    /// Records one finished run.
    pub fn observe(&self, source: &str, seconds: f64, bytes_added: Option<u64>) {
        let mut m = self.sources.lock().expect("poisoned");
        let c = m.entry(source.to_string()).or_default();
        match BUCKETS.iter().position(|b| seconds <= *b) {
            Some(i) => c.buckets[i] += 1,
            None => c.over += 1,
        }
        c.sum += seconds;
        match bytes_added {
            Some(b) => c.bytes_added += b,
            None => c.failures += 1,
        }
    }
}

/// A label value escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric.
pub fn render(repo: &Repository, counters: &Counters, sources: &[String]) -> String {
    let mut out = String::new();
    let report = health::report(repo, chrono::Utc::now());
    head(
        &mut out,
        "wayback_up",
        "gauge",
        "1 when the repository could be read for this scrape.",
    );
    let _ = writeln!(out, "wayback_up {}", u8::from(report.is_ok()));
    if let Ok(r) = &report {
        head(
            &mut out,
            "wayback_snapshot_age_seconds",
            "gauge",
            "Age of the newest complete snapshot of each source.",
        );
        for s in &r.sources {
            if let Some(a) = s.age_s {
                let _ = writeln!(
                    out,
                    "wayback_snapshot_age_seconds{{source=\"{}\"}} {a}",
                    label(&s.name)
                );
            }
        }
        head(
            &mut out,
            "wayback_source_healthy",
            "gauge",
            "1 when the source is OK in `wayback status`, 0 when LATE or FAILING.",
        );
        for s in &r.sources {
            let _ = writeln!(
                out,
                "wayback_source_healthy{{source=\"{}\"}} {}",
                label(&s.name),
                u8::from(s.state == Verdict::Ok)
            );
        }
        head(
            &mut out,
            "wayback_wal_archive_lag_seconds",
            "gauge",
            "Seconds since the newest WAL file of each cluster was archived.",
        );
        for c in &r.clusters {
            if let Some(a) = c.newest_age_s {
                let _ = writeln!(
                    out,
                    "wayback_wal_archive_lag_seconds{{cluster=\"{}\"}} {a}",
                    label(&c.cluster)
                );
            }
        }
        head(
            &mut out,
            "wayback_repository_bytes",
            "gauge",
            "Bytes of all pack files.",
        );
        let _ = writeln!(out, "wayback_repository_bytes {}", r.repository.bytes);
        head(
            &mut out,
            "wayback_repository_free_bytes",
            "gauge",
            "Free bytes on the repository's filesystem.",
        );
        let _ = writeln!(
            out,
            "wayback_repository_free_bytes {}",
            r.repository.free_bytes
        );
        head(
            &mut out,
            "wayback_repository_fs_size_bytes",
            "gauge",
            "Size of the repository's filesystem.",
        );
        let _ = writeln!(
            out,
            "wayback_repository_fs_size_bytes {}",
            r.repository.fs_bytes
        );
        render_drills_and_check(&mut out, r);
    }
    let m = counters.sources.lock().expect("poisoned").clone();
    let get = |n: &str| m.get(n).cloned().unwrap_or_default();
    head(
        &mut out,
        "wayback_backup_duration_seconds",
        "histogram",
        "Duration of the agent's backup runs (successful or not).",
    );
    for n in sources {
        let c = get(n);
        let mut cum = 0;
        for (b, k) in BUCKETS.iter().zip(c.buckets) {
            cum += k;
            let _ = writeln!(
                out,
                "wayback_backup_duration_seconds_bucket{{source=\"{}\",le=\"{b}\"}} {cum}",
                label(n)
            );
        }
        let _ = writeln!(
            out,
            "wayback_backup_duration_seconds_bucket{{source=\"{}\",le=\"+Inf\"}} {}",
            label(n),
            cum + c.over
        );
        let _ = writeln!(
            out,
            "wayback_backup_duration_seconds_sum{{source=\"{}\"}} {}",
            label(n),
            c.sum
        );
        let _ = writeln!(
            out,
            "wayback_backup_duration_seconds_count{{source=\"{}\"}} {}",
            label(n),
            cum + c.over
        );
    }
    head(
        &mut out,
        "wayback_backup_bytes_added_total",
        "counter",
        "Plain bytes of new data the agent's backups added.",
    );
    for n in sources {
        let _ = writeln!(
            out,
            "wayback_backup_bytes_added_total{{source=\"{}\"}} {}",
            label(n),
            get(n).bytes_added
        );
    }
    head(
        &mut out,
        "wayback_backup_failures_total",
        "counter",
        "Failed backup runs.",
    );
    for n in sources {
        let _ = writeln!(
            out,
            "wayback_backup_failures_total{{source=\"{}\"}} {}",
            label(n),
            get(n).failures
        );
    }
    head(
        &mut out,
        "wayback_wal_push_failures_total",
        "counter",
        "WAL files the agent failed to archive.",
    );
    let _ = writeln!(
        out,
        "wayback_wal_push_failures_total {}",
        crate::agent::archive::failures().0
    );
    out
}

fn unix_s(t: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// Restore drills and the last check, from the durable records (so drills run by hand count).
fn render_drills_and_check(out: &mut String, r: &health::Report) {
    head(
        out,
        "wayback_restore_drill_last_success_timestamp",
        "gauge",
        "Unix time of the newest passed restore drill of each source.",
    );
    for d in &r.drills {
        if let Some(t) = d.last_success.as_deref().and_then(unix_s) {
            let _ = writeln!(
                out,
                "wayback_restore_drill_last_success_timestamp{{source=\"{}\"}} {t}",
                label(&d.source)
            );
        }
    }
    head(
        out,
        "wayback_restore_drill_last_run_timestamp",
        "gauge",
        "Unix time of the last restore drill of each source.",
    );
    for d in &r.drills {
        if let Some(t) = unix_s(&d.time) {
            let _ = writeln!(
                out,
                "wayback_restore_drill_last_run_timestamp{{source=\"{}\"}} {t}",
                label(&d.source)
            );
        }
    }
    head(
        out,
        "wayback_restore_drill_success",
        "gauge",
        "1 when the last restore drill of the source passed, 0 when it failed.",
    );
    for d in &r.drills {
        let _ = writeln!(
            out,
            "wayback_restore_drill_success{{source=\"{}\"}} {}",
            label(&d.source),
            u8::from(d.state == Verdict::Ok)
        );
    }
    head(
        out,
        "wayback_restore_drill_duration_seconds",
        "gauge",
        "Measured recovery time of the last restore drill (restore, verification, PostgreSQL recovery).",
    );
    for d in &r.drills {
        let _ = writeln!(
            out,
            "wayback_restore_drill_duration_seconds{{source=\"{}\"}} {}",
            label(&d.source),
            d.duration_s
        );
    }
    if let Some(c) = &r.last_check {
        head(
            out,
            "wayback_check_last_run_timestamp",
            "gauge",
            "Unix time of the last repository check.",
        );
        if let Some(t) = unix_s(&c.time) {
            let _ = writeln!(out, "wayback_check_last_run_timestamp {t}");
        }
        head(
            out,
            "wayback_check_last_success_timestamp",
            "gauge",
            "Unix time of the newest check that found no problem.",
        );
        if let Some(t) = c.last_success.as_deref().and_then(unix_s) {
            let _ = writeln!(out, "wayback_check_last_success_timestamp {t}");
        }
        head(
            out,
            "wayback_check_success",
            "gauge",
            "1 when the last check found no problem.",
        );
        let _ = writeln!(
            out,
            "wayback_check_success {}",
            u8::from(c.state == Verdict::Ok)
        );
        head(
            out,
            "wayback_check_problems",
            "gauge",
            "Problems the last check found.",
        );
        let _ = writeln!(out, "wayback_check_problems {}", c.problems);
        head(
            out,
            "wayback_check_duration_seconds",
            "gauge",
            "Duration of the last check.",
        );
        let _ = writeln!(out, "wayback_check_duration_seconds {}", c.duration_s);
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    repo: Arc<Repository>,
    counters: Arc<Counters>,
    sources: Vec<String>,
) {
    let sources = Arc::new(sources);
    while let Ok((mut conn, _)) = listener.accept().await {
        let (repo, counters, sources) = (repo.clone(), counters.clone(), sources.clone());
        tokio::spawn(async move {
            // The request head only; bounded, and a slow client cannot hold it forever.
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    let k = conn.read(&mut buf[n..]).await.ok()?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Some(())
            };
            if tokio::time::timeout(std::time::Duration::from_secs(10), read)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let line = head.lines().next().unwrap_or("");
            let mut parts = line.split(' ');
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) = if method == "GET"
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                let body = tokio::task::spawn_blocking(move || render(&repo, &counters, &sources))
                    .await
                    .unwrap_or_default();
                ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
            } else {
                (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    "GET /metrics\n".to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
