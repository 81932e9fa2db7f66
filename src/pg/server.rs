//! A PostgreSQL server recovered to a point in time over a copy-on-write view of a base backup
//! (`pg-at`), owning everything it set up.
//!
//! Why one type: a server at T is a stack of resources (private scratch, a FUSE mount of the
//! repository, a FUSE mount of copy-on-write files, an overlay, a running postmaster), and each
//! must be undone in reverse order on every exit: success, error half-way, Ctrl-C. Dropping a
//! [`RecoveryServer`] stops the server, unmounts the layers and removes scratch.
//!
//! How T is served: recovery ends at T (`recovery_target_action = promote`), so the server is on
//! a new timeline of its own whose history and WAL stay in scratch (archiving is off, and the
//! WAL comes from pg-at's own mount, so no passphrase is ever handed to the server). Ending
//! recovery releases the locks of transactions still open at T: a table dropped after T
//! answers. [`Mode::ReadOnly`] adds `default_transaction_read_only`; [`Mode::Paused`] keeps a
//! hot standby paused at T instead, where such a table waits for a lock that is never released.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fsview::{RepoView, ViewOptions};
use crate::pg::env::command;
use crate::pg::layers;
use crate::pg::scratch::{self, chown, du, private_dir, private_file};
use crate::pg::settings::{list_element, mount_restore_command, path_str, RecoverySettings};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::timespec::TimeMs;

/// What the server does once recovery reaches T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// End recovery at T and refuse writes by default (`default_transaction_read_only`).
    ReadOnly,
    /// End recovery at T and accept writes (they go to scratch only).
    Writable,
    /// Stay a hot standby paused at T (replayed locks of transactions open at T stay held).
    Paused,
}

/// How to start a [`RecoveryServer`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Directory of the PostgreSQL binaries (`pg_ctl`, `psql`).
    pub pg_bin: PathBuf,
    /// TCP port on 127.0.0.1 as well (None: unix socket only, port number 5432).
    pub port: Option<u16>,
    /// Behaviour at T.
    pub mode: Mode,
    /// Leave big relation files to overlayfs (whole-file copy-up) instead of copy-on-write.
    pub copy_up: bool,
    /// Scratch directory to use (must not exist or be empty); None: a private new one.
    pub scratch: Option<PathBuf>,
    /// The comment line above the recovery settings.
    pub label: String,
}

/// A running PostgreSQL server at T and everything under it; torn down on drop.
pub struct RecoveryServer {
    scratch: PathBuf,
    data: PathBuf,
    mnt: PathBuf,
    cow: PathBuf,
    upper: PathBuf,
    delta: PathBuf,
    cache: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    pg_bin: PathBuf,
    owner: u32,
    port: u16,
    mode: Mode,
    cluster: String,
    started: Instant,
    fuse: Option<wayback_mount::MountHandle>,
    cow_fuse: Option<wayback_mount::MountHandle>,
    overlay: bool,
    server: bool,
}

/// Name of the file in scratch holding the pg-at process id (for [`stop_running`]).
pub const PID_FILE: &str = "pg-at.pid";

impl RecoveryServer {
    /// Sets up scratch, the mounts and the overlay for `base`, writes the recovery settings for
    /// `t` (WAL from archive `cluster`) and starts the server (as the base backup's owner). It
    /// is not ready yet: see [`Self::wait_ready`].
    pub fn start(
        repo: Arc<Repository>,
        base: &Snapshot,
        cluster: &str,
        t: TimeMs,
        opts: &ServerOptions,
    ) -> Result<RecoveryServer> {
        let owner = base.root_meta.as_ref().map_or(0, |m| m.uid);
        let scratch = scratch::create(opts.scratch.as_deref(), server_gid(owner))?;
        let mut s = RecoveryServer {
            data: scratch.join("data"),
            mnt: scratch.join("mnt"),
            cow: scratch.join("cow"),
            upper: scratch.join("upper"),
            delta: scratch.join("cow-delta"),
            cache: scratch.join("cow-cache"),
            sock: scratch.join("sock"),
            log: scratch.join("postgres.log"),
            scratch,
            pg_bin: opts.pg_bin.clone(),
            owner,
            port: opts.port.unwrap_or(5432),
            mode: opts.mode,
            cluster: cluster.to_string(),
            started: Instant::now(),
            fuse: None,
            cow_fuse: None,
            overlay: false,
            server: false,
        };
        // From here on every exit, error or not, undoes what exists (Drop).
        let work = s.scratch.join("work");
        for d in [
            &s.mnt, &s.upper, &work, &s.data, &s.sock, &s.cow, &s.delta, &s.cache,
        ] {
            private_dir(d)?;
        }
        chown(&s.sock, owner, None)?;
        {
            use std::io::Write;
            let pid_file = s.scratch.join(PID_FILE);
            private_file(&pid_file)?
                .write_all(std::process::id().to_string().as_bytes())
                .map_err(|e| Error::io("writing", pid_file, e))?;
        }
        let lower = s
            .mnt
            .join("snapshots")
            .join(&base.source)
            .join(base.time_name());
        s.mount_repository(repo, base, opts.copy_up)?;
        // The upper layer is filled as root while it is still root's (0700), and only then
        // given to the server's user: root never writes where that user could have planted a
        // symlink (the overlay is theirs once mounted).
        s.write_settings(&lower, t, opts)?;
        chown(&s.upper, owner, None)?;
        layers::mount_overlay(&lower, &s.upper, &work, &s.data)?;
        s.overlay = true;
        s.start_postgres()?;
        Ok(s)
    }

    /// Mounts the repository and, unless `copy_up`, the copy-on-write files (with their symlinks
    /// in the upper layer).
    fn mount_repository(
        &mut self,
        repo: Arc<Repository>,
        base: &Snapshot,
        copy_up: bool,
    ) -> Result<()> {
        let mount_err = |what: &str, e: wayback_mount::MountError| {
            Error::Command(format!("mounting the {what}: {e}"))
        };
        let view = RepoView::new(repo.clone(), ViewOptions::default());
        // allow_other: the server's user reads WAL and the lower layer through it; scratch
        // (0710) keeps every other user out.
        let opts = wayback_mount::MountOptions {
            allow_other: true,
            fsname: "wayback-pg-at".into(),
            ..Default::default()
        };
        self.fuse = Some(
            wayback_mount::mount_background(view, &self.mnt, &opts)
                .map_err(|e| mount_err("repository", e))?,
        );
        if !copy_up {
            let files = layers::cow_files(&repo, &base.root, &self.upper, &self.cow)?;
            let n = files.len();
            let view = crate::fsview::cow::CowView::new(repo, files, &self.delta, &self.cache)
                .map_err(|e| Error::io("creating copy-on-write files", &self.delta, e))?;
            let opts = wayback_mount::MountOptions {
                allow_other: true,
                fsname: "wayback-pg-at-cow".into(),
                writable: true,
                ..Default::default()
            };
            self.cow_fuse = Some(
                wayback_mount::mount_background(view, &self.cow, &opts)
                    .map_err(|e| mount_err("copy-on-write files", e))?,
            );
            tracing::info!(files = n, "relation files served copy-on-write");
        }
        Ok(())
    }

    /// Writes `postgresql.auto.conf` (the base backup's, from `lower`, plus the recovery
    /// settings) and `recovery.signal` into the upper layer, where they hide the lower ones.
    fn write_settings(&self, lower: &Path, t: TimeMs, opts: &ServerOptions) -> Result<()> {
        let mut s = RecoverySettings::new(&opts.label);
        s.set(
            "restore_command",
            &mount_restore_command(&self.mnt, &self.cluster)?,
        )?
        .set("recovery_target_time", &crate::pg::settings::target_time(t))?
        // Transactions committed exactly at T are part of "as of T".
        .set("recovery_target_inclusive", "on")?
        .set(
            "recovery_target_action",
            if self.mode == Mode::Paused {
                "pause"
            } else {
                "promote"
            },
        )?;
        if self.mode == Mode::ReadOnly {
            // The past answers; it does not change. Autovacuum would only grow scratch.
            s.set("default_transaction_read_only", "on")?
                .set("autovacuum", "off")?;
        }
        // Nothing of the new timeline may reach the repository.
        s.set("archive_mode", "off")?
            .set("archive_command", "")?
            .set("hot_standby", "on")?
            .set(
                "unix_socket_directories",
                &list_element(path_str(&self.sock)?),
            )?
            .set("unix_socket_permissions", "0700")?
            // The scratch server is thrown away at stop, so durability buys nothing. And with
            // fsync on, starting from a base backup makes PostgreSQL fsync the whole data
            // directory first, opening every file read-write, which made overlayfs copy every
            // small file into scratch (measured: 10 s of a 12.7 s start, scratch = data size).
            .set("fsync", "off")?
            .set("port", &self.port.to_string())?
            .set(
                "listen_addresses",
                if opts.port.is_some() { "127.0.0.1" } else { "" },
            )?;
        let original = lower.join("postgresql.auto.conf");
        let mut text = match std::fs::read(&original) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("reading", original, e)),
        };
        text.extend_from_slice(s.render().as_bytes());
        for (name, content) in [
            ("postgresql.auto.conf", &text[..]),
            ("recovery.signal", &b""[..]),
        ] {
            use std::io::Write;
            let p = self.upper.join(name);
            private_file(&p)?
                .write_all(content)
                .map_err(|e| Error::io("writing", &p, e))?;
            chown(&p, self.owner, None)?;
        }
        Ok(())
    }

    fn start_postgres(&mut self) -> Result<()> {
        private_file(&self.log)?;
        chown(&self.log, self.owner, None)?;
        self.started = Instant::now();
        let pg_ctl = self.pg_bin.join("pg_ctl");
        let o = as_user(self.owner)
            .arg(&pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "600", "start"])
            .output()
            .map_err(|e| Error::io("running", pg_ctl, e))?;
        self.server = true;
        if !o.status.success() {
            return Err(Error::Command(format!(
                "{} {}",
                self.explain_failure(),
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Waits until recovery has reached T (paused) or ended (promoted), up to `timeout`.
    /// `interrupted` is asked between polls (it may block briefly, e.g. waiting for a signal);
    /// returns false if it said so, and the caller drops the server.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = if self.mode == Mode::Paused {
                self.query("SELECT pg_get_wal_replay_pause_state()")
                    .as_deref()
                    == Some("paused")
            } else {
                self.query("SELECT pg_is_in_recovery()").as_deref() == Some("f")
            };
            if ready {
                return Ok(true);
            }
            if !self.data.join("postmaster.pid").exists() || Instant::now() > deadline {
                self.server = false;
                return Err(Error::Command(self.explain_failure()));
            }
            if interrupted() {
                return Ok(false);
            }
        }
    }

    /// One query as `postgres` on the unix socket; its trimmed output if it succeeded.
    fn query(&self, q: &str) -> Option<String> {
        let o = command(self.pg_bin.join("psql"))
            .env("PGHOST", &self.sock)
            .env("PGPORT", self.port.to_string())
            .args([
                "-X", "-A", "-t", "-U", "postgres", "-d", "postgres", "-c", q,
            ])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// Turns a failed start into an actionable message: the first WAL segment recovery asked
    /// for and did not find, or the server log's fatal line.
    fn explain_failure(&self) -> String {
        explain_failure(&self.log, &self.cluster)
    }

    /// The scratch directory (removed on drop).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// The unix socket directory to connect to.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// The port number (of the socket file, and on 127.0.0.1 if asked for).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// When `pg_ctl start` was run.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Bytes written in scratch: the overlay's upper layer and the copy-on-write deltas.
    pub fn written_bytes(&self) -> u64 {
        du(&self.upper) + du(&self.delta)
    }

    /// Bytes of decrypted base backup in the copy-on-write cache.
    pub fn cached_bytes(&self) -> u64 {
        du(&self.cache)
    }
}

/// Stops the server on `data` if one runs (`pg_ctl -m MODE -w stop` as its owner); errors
/// are ignored, as on every teardown path that calls it.
pub(crate) fn stop_server(owner: u32, pg_bin: &Path, data: &Path, mode: &str) {
    if data.join("postmaster.pid").exists() {
        let _ = as_user(owner)
            .arg(pg_bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .args(["-m", mode, "-w", "stop"])
            .output();
    }
}

impl Drop for RecoveryServer {
    fn drop(&mut self) {
        if self.server {
            stop_server(self.owner, &self.pg_bin, &self.data, "fast");
        }
        if self.overlay {
            layers::unmount_overlay(&self.data);
        }
        for h in [self.cow_fuse.take(), self.fuse.take()]
            .into_iter()
            .flatten()
        {
            let _ = h.unmount();
        }
        let _ = wayback_mount::unmount(&self.cow);
        let _ = wayback_mount::unmount(&self.mnt);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Asks the pg-at whose scratch is `scratch` to stop (SIGTERM to the pid in [`PID_FILE`]) and
/// waits up to `timeout` for it to remove scratch; returns its pid.
pub fn stop_running(scratch: &Path, timeout: Duration) -> Result<i32> {
    let pid_file = scratch.join(PID_FILE);
    let text = std::fs::read_to_string(&pid_file).map_err(|e| {
        Error::Invalid(format!(
            "no pg-at running with scratch {}: {e}",
            scratch.display()
        ))
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("{} holds no pid", pid_file.display())))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| Error::io("signalling pg-at", pid_file, e.into()))?;
    let deadline = Instant::now() + timeout;
    while scratch.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(pid)
}

/// `runuser -u <user of uid> --`, without secrets in the environment: PostgreSQL refuses to run
/// as root, so the server runs as the base backup's owner.
pub(crate) fn as_user(uid: u32) -> std::process::Command {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "postgres".into());
    let mut c = command("runuser");
    c.args(["-u", &user, "--"]);
    c
}

/// The primary group of the user the server runs as (the group scratch lets in).
pub(crate) fn server_gid(uid: u32) -> u32 {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or(0, |u| u.gid.as_raw())
}

/// See [`RecoveryServer::explain_failure`].
pub(crate) fn explain_failure(log: &Path, cluster: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let missing = text
        .lines()
        .filter_map(|l| l.split(&format!("/wal/{cluster}/")).nth(1))
        .map(|rest| rest.split(['\'', ' ', ':']).next().unwrap_or(""))
        .find(|n| n.len() == 24);
    let fatal = text
        .lines()
        .rfind(|l| l.contains("FATAL"))
        .unwrap_or("")
        .to_string();
    match missing {
        Some(seg) if fatal.contains("recovery") || fatal.contains("checkpoint") => format!(
            "recovery could not reach the target: WAL segment {seg} is missing from archive '{cluster}' ({fatal})"
        ),
        _ => format!("PostgreSQL did not start: {fatal} (log: {})", log.display()),
    }
}
