//! `on_failure = "command"`: tell a human when a job fails.
//!
//! The command runs through `sh -c` with `WAYBACK_JOB` (`backup`, `drill` or `check`),
//! `WAYBACK_SOURCE` (empty for `check`, which is about the whole repository), `WAYBACK_ERROR`
//! and `WAYBACK_SNAPSHOT` (the source's newest good snapshot, or the one a drill restored,
//! short id, empty if none) in its environment, stdin from /dev/null, output into the agent's log. A source's own hook replaces
//! the agent-wide one. Passphrases never reach it: they left the environment at process start
//! and are removed again here. A hook that hangs is killed after [`HOOK_TIMEOUT`]: the agent
//! must go on backing up.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::config::{Config, Source};

/// Longest a hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the failure hook of `src` (or the agent's) for a failed backup; logs what happened.
pub fn on_failure(cfg: &Config, src: &Source, error: &str, snapshot: Option<&str>) {
    let cmd = src.on_failure.as_deref().or(cfg.on_failure.as_deref());
    run(cmd, "backup", &src.name, error, snapshot);
}

/// Runs the failure hook of `src` (or the agent's) for a failed restore drill.
pub fn on_drill_failure(cfg: &Config, src: &Source, error: &str, snapshot: Option<&str>) {
    let cmd = src.on_failure.as_deref().or(cfg.on_failure.as_deref());
    run(cmd, "drill", &src.name, error, snapshot);
}

/// Runs the agent's failure hook for a scheduled check that found problems or failed.
pub fn on_check_failure(cfg: &Config, error: &str) {
    run(cfg.on_failure.as_deref(), "check", "", error, None);
}

/// Runs the agent's failure hook for a scheduled copy that failed or met a WAL conflict.
pub fn on_copy_failure(cfg: &Config, error: &str) {
    run(cfg.on_failure.as_deref(), "copy", "", error, None);
}

/// Runs `cmd` (if any) with the hook environment.
fn run(cmd: Option<&str>, job: &str, source: &str, error: &str, snapshot: Option<&str>) {
    let Some(cmd) = cmd else {
        return;
    };
    let src_name = if source.is_empty() { job } else { source };
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env("WAYBACK_JOB", job)
        .env("WAYBACK_SOURCE", source)
        .env("WAYBACK_ERROR", error)
        .env("WAYBACK_SNAPSHOT", snapshot.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in crate::ingest::stream::SECRET_ENV {
        c.env_remove(name);
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            tracing::error!(source = %src_name, error = %e, "on_failure hook could not start");
            return;
        }
    };
    let deadline = Instant::now() + HOOK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = child
        .wait_with_output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.chars().take(4096).collect::<String>()
        })
        .unwrap_or_default();
    match status {
        Some(st) if st.success() => {
            tracing::info!(source = %src_name, output = %out.trim(), "on_failure hook ran")
        }
        Some(st) => {
            tracing::error!(source = %src_name, status = %st, output = %out.trim(), "on_failure hook failed")
        }
        None => tracing::error!(
            source = %src_name,
            timeout_s = HOOK_TIMEOUT.as_secs(),
            "on_failure hook killed after its timeout"
        ),
    }
}
