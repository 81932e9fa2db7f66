//! `wayback pg-at`: a PostgreSQL server on a point in time, in seconds, without a restore.
//!
//! The base backup at or before T is served read-only by a private wayback mount; the kernel's
//! overlayfs puts a scratch upper layer on it, so PostgreSQL sees a writable data directory
//! while only what recovery writes is stored anew. WAL comes from the same mount's `/wal`.
//! Relation files of 1 MiB or more are block-level copy-on-write files instead
//! ([`crate::pg::layers`]), so scratch grows by the 8 KiB pages written, not by table sizes.
//! Recovery ends at T on a private timeline, read-only by default, so every table that existed
//! at T answers ([`crate::pg::server`]); `--paused` keeps a hot standby paused at T instead.
//! Ctrl-C (or `pg-at --stop --scratch DIR`) stops the server, unmounts both layers and removes
//! the scratch directory. This file parses, handles signals and prints; the orchestration is
//! [`crate::pg::server::RecoveryServer`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::common::RepoArgs;
use crate::pg::base::{archive_of, base_backup_at};
use crate::pg::server::{stop_running, Mode, RecoveryServer, ServerOptions};
use crate::pg::settings::target_time;
use crate::repo::Access;
use crate::timespec::{now_ms, parse_time};

/// Arguments of `pg-at`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base-backup source.
    #[arg(long, required_unless_present = "stop")]
    pub source: Option<String>,
    /// Point in time.
    #[arg(long, required_unless_present = "stop")]
    pub to: Option<String>,
    /// TCP port to listen on as well (default: unix socket only, port number 5432).
    #[arg(long)]
    pub port: Option<u16>,
    /// Scratch directory (created, or empty; made 0710 root:<server group>; removed on stop).
    /// Default: a new directory with an unpredictable name under $TMPDIR or /tmp.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// WAL archive name (default: the one recorded with the base backup).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Accept writes after recovery ends at T (they go to scratch, never to the repository).
    #[arg(long, conflicts_with = "paused")]
    pub writable: bool,
    /// Pause recovery at T as a hot standby instead of ending it. Caveat: a table whose `DROP`
    /// (or other exclusive lock) was replayed but not yet committed at T cannot be read: the
    /// query waits for a lock that is never released while paused.
    #[arg(long)]
    pub paused: bool,
    /// PostgreSQL binaries directory.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
    /// Stop the pg-at running with --scratch DIR.
    #[arg(long, requires = "scratch")]
    pub stop: bool,
    /// Leave big relation files to overlayfs too (whole-file copy-up; for comparison).
    #[arg(long)]
    pub copy_up: bool,
}

/// Runs pg-at in the foreground.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    if a.stop {
        let scratch = a.scratch.clone().expect("required by clap");
        let pid = stop_running(&scratch, Duration::from_secs(60))?;
        outln!("stopped pg-at (pid {pid})");
        return Ok(0);
    }
    // Block SIGINT/SIGTERM before any thread exists, so every thread inherits the mask and the
    // signal reaches `wait_for_signal` (children get a clean mask from std::process).
    signals().thread_block()?;
    let (source, to) = (a.source.clone().expect("clap"), a.to.clone().expect("clap"));
    let t = parse_time(&to, now_ms()).with_context(|| format!("'{to}' is not a time"))?;
    if let Some(p) = a.port {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
            bail!("port {p} is in use; choose another with --port");
        }
    }
    let repo = Arc::new(ra.open(Access::Read)?);
    let snaps = repo.snapshots()?;
    let base = base_backup_at(&snaps, &source, t, &to)?;
    let cluster = archive_of(base, a.cluster.as_deref())?;
    crate::audit::note(
        &repo,
        "pg-at",
        &format!(
            "PostgreSQL at {to} from base backup {} of {} (WAL archive {cluster}){}",
            base.id.short(),
            source,
            if a.writable { ", writable" } else { "" }
        ),
    );
    let opts = ServerOptions {
        pg_bin: a.pg_bin.clone(),
        port: a.port,
        mode: if a.paused {
            Mode::Paused
        } else if a.writable {
            Mode::Writable
        } else {
            Mode::ReadOnly
        },
        copy_up: a.copy_up,
        scratch: a.scratch.clone(),
        label: format!("wayback pg-at {} at {}", base.id.short(), to),
    };
    let mut server = RecoveryServer::start(repo.clone(), base, &cluster, t, &opts)?;
    // Ctrl-C or SIGTERM while recovery runs: stop and clean up now, not once it is ready.
    let ready = server.wait_ready(Duration::from_secs(3600), &mut || {
        signalled_within(Duration::from_millis(100))
    })?;
    if !ready {
        eprintln!("interrupted before PostgreSQL was ready; stopping");
        drop(server);
        return Ok(130);
    }
    outln!(
        "PostgreSQL at {} (base backup {} of {}) ready in {:.1} s; scratch holds {} KiB written and {} KiB of decrypted base backup",
        target_time(t),
        base.id.short(),
        base.time_name(),
        server.started().elapsed().as_secs_f64(),
        server.written_bytes() / 1024,
        server.cached_bytes() / 1024
    );
    outln!(
        "connect: psql \"host={} port={} user=postgres dbname=postgres\"{}",
        server.socket_dir().display(),
        server.port(),
        a.port
            .map(|p| format!("  or  psql -h 127.0.0.1 -p {p} -U postgres"))
            .unwrap_or_default()
    );
    outln!(
        "stop: Ctrl-C, or wayback pg-at --stop --scratch {}",
        server.scratch().display()
    );
    let _ = std::io::stdout().flush();
    wait_for_signal();
    drop(server);
    Ok(0)
}

fn signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Waits up to `d` for SIGINT/SIGTERM (blocked in every thread); whether one arrived.
fn signalled_within(d: Duration) -> bool {
    let set = signals();
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and timespec are valid for the call; no siginfo is requested.
    unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) > 0 }
}

fn wait_for_signal() {
    let _ = signals().wait();
}
