//! The PostgreSQL half of a restore drill ([`crate::maint::drill`]): start a server on the
//! restored (and verified) base backup, let it recover through every archived WAL segment, and
//! run a query.
//!
//! Why the restored copy and not pg-at's overlay of the mount: a drill proves that what a real
//! recovery would do works, and a real recovery restores the files first. WAL comes as in
//! pg-at, through a private `allow_other` mount of the repository in scratch
//! (`restore_command = cp <scratch>/mnt/wal/<cluster>/%f "%p"`): no passphrase or password-file
//! path ever reaches the server's command line, environment or configuration.
//!
//! Recovery has no target: it replays every archived segment and ends when `restore_command`
//! finds no next one, as a disaster recovery to "as late as possible" does; the drill then
//! reports the last replayed commit time. Safety: scratch stays 0700 root until the settings
//! are written and the mount is up, so the server's user cannot plant a symlink for root to
//! write through; only then is it opened to that user's group (0710), as for pg-at.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsview::{RepoView, ViewOptions};
use crate::pg::scratch::{chown, private_dir, private_file};
use crate::pg::server::{as_user, explain_failure, server_gid};
use crate::pg::settings::{list_element, mount_restore_command, path_str, RecoverySettings};
use crate::repo::Repository;
use crate::snapshot::Snapshot;

/// What to run once recovered.
#[derive(Clone, Debug)]
pub struct PgDrillOptions {
    /// Directory of `pg_ctl` and `psql`.
    pub pg_bin: PathBuf,
    /// Query run as `postgres` once recovery ended (`SELECT 1` when none is configured).
    pub query: String,
    /// The exact (trimmed, unaligned) output the query must give; None: any success.
    pub expect: Option<String>,
    /// Database the query runs in.
    pub database: String,
    /// How long recovery may take.
    pub timeout: Duration,
}

impl Default for PgDrillOptions {
    fn default() -> Self {
        PgDrillOptions {
            pg_bin: PathBuf::from("/usr/lib/postgresql/15/bin"),
            query: "SELECT 1".into(),
            expect: None,
            database: "postgres".into(),
            timeout: crate::maint::drill::RECOVERY_TIMEOUT,
        }
    }
}

/// What the server did.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PgOutcome {
    /// WAL archive recovered from.
    pub cluster: String,
    /// Seconds from `pg_ctl start` to the end of recovery.
    pub ready_s: f64,
    /// Commit time of the last transaction replayed (PostgreSQL's text), if any was.
    pub replayed_to: Option<String>,
    /// The query run.
    pub query: String,
    /// Its output (trimmed).
    pub result: String,
}

/// The running server and mount; stopped and unmounted on drop (scratch itself belongs to the
/// caller and is removed after this).
struct Running {
    data: PathBuf,
    mnt: PathBuf,
    pg_bin: PathBuf,
    owner: u32,
    fuse: Option<wayback_mount::MountHandle>,
    server: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.server {
            super::server::stop_server(self.owner, &self.pg_bin, &self.data, "immediate");
        }
        if let Some(h) = self.fuse.take() {
            let _ = h.unmount();
        }
        let _ = wayback_mount::unmount(&self.mnt);
    }
}

/// Starts PostgreSQL on the base backup `snap` restored at `<scratch>/data`, waits for the end
/// of recovery, runs the query; stops everything before returning.
pub fn recover_and_query(
    repo: Arc<Repository>,
    snap: &Snapshot,
    scratch: &Path,
    opts: &PgDrillOptions,
) -> Result<PgOutcome> {
    let cluster = crate::pg::base::archive_of(snap, None)?;
    let data = scratch.join("data");
    let owner = std::fs::symlink_metadata(&data).map_err(|e| Error::io("inspecting", &data, e))?;
    let owner = std::os::unix::fs::MetadataExt::uid(&owner);
    let (mnt, sock, log) = (
        scratch.join("mnt"),
        scratch.join("sock"),
        scratch.join("postgres.log"),
    );
    private_dir(&mnt)?;
    private_dir(&sock)?;
    chown(&sock, owner, None)?;
    private_file(&log)?;
    chown(&log, owner, None)?;
    let mut s = RecoverySettings::new(&format!("wayback drill of base backup {}", snap.id.short()));
    s.set("restore_command", &mount_restore_command(&mnt, &cluster)?)?
        .set("recovery_target_timeline", "latest")?
        // Nothing of the drill's new timeline may reach the repository.
        .set("archive_mode", "off")?
        .set("archive_command", "")?
        .set("unix_socket_directories", &list_element(path_str(&sock)?))?
        .set("unix_socket_permissions", "0700")?
        .set("listen_addresses", "")?
        .set("port", "5432")?
        // Thrown away afterwards: durability buys nothing, and fsync of every restored file at
        // start would dominate the measured time for nothing.
        .set("fsync", "off")?;
    s.append_to(&data)?;
    chown(&data.join("postgresql.auto.conf"), owner, None)?;
    let signal = data.join("recovery.signal");
    if std::fs::symlink_metadata(&signal).is_err() {
        private_file(&signal)?;
        chown(&signal, owner, None)?;
    }
    let mut run = Running {
        data: data.clone(),
        mnt: mnt.clone(),
        pg_bin: opts.pg_bin.clone(),
        owner,
        fuse: None,
        server: false,
    };
    let view = RepoView::new(repo, ViewOptions::default());
    let mopts = wayback_mount::MountOptions {
        allow_other: true,
        fsname: "wayback-drill".into(),
        ..Default::default()
    };
    run.fuse = Some(
        wayback_mount::mount_background(view, &mnt, &mopts)
            .map_err(|e| Error::Command(format!("mounting the repository for WAL: {e}")))?,
    );
    // Everything root writes is written: now let the server's user in.
    chown(scratch, 0, Some(server_gid(owner)))?;
    std::fs::set_permissions(scratch, std::os::unix::fs::PermissionsExt::from_mode(0o710))
        .map_err(|e| Error::io("chmod scratch", scratch, e))?;
    let started = Instant::now();
    let pg_ctl = opts.pg_bin.join("pg_ctl");
    let o = as_user(owner)
        .arg(&pg_ctl)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t"])
        .arg(opts.timeout.as_secs().max(1).to_string())
        .arg("start")
        .output()
        .map_err(|e| Error::io("running", &pg_ctl, e))?;
    run.server = true;
    if !o.status.success() {
        return Err(Error::Command(format!(
            "{} {}",
            explain_failure(&log, &cluster),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let psql = |q: &str, db: &str| -> std::result::Result<String, String> {
        let o = as_user(owner)
            .arg(opts.pg_bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&sock)
            .args(["-p", "5432", "-U", "postgres", "-d", db, "-c", q])
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    };
    let deadline = started + opts.timeout;
    loop {
        if psql("SELECT pg_is_in_recovery()", "postgres").as_deref() == Ok("f") {
            break;
        }
        if !data.join("postmaster.pid").exists() {
            return Err(Error::Command(explain_failure(&log, &cluster)));
        }
        if Instant::now() > deadline {
            return Err(Error::Command(format!(
                "recovery did not end within {} s (log: {})",
                opts.timeout.as_secs(),
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready_s = started.elapsed().as_secs_f64();
    let replayed_to = psql("SELECT pg_last_xact_replay_timestamp()", "postgres")
        .ok()
        .filter(|t| !t.is_empty());
    let result = psql(&opts.query, &opts.database)
        .map_err(|e| Error::Command(format!("query {:?} failed: {e}", opts.query)))?;
    drop(run);
    Ok(PgOutcome {
        cluster,
        ready_s,
        replayed_to,
        query: opts.query.clone(),
        result,
    })
}
