//! `wayback pg-at`: a PostgreSQL server on a point in time, in seconds, without a restore.
//!
//! The base backup at or before T is served read-only by a private wayback mount; the kernel's
//! overlayfs puts a scratch upper layer on it, so PostgreSQL sees a writable data directory
//! while only what recovery writes is stored anew. WAL comes from the same mount's `/wal`.
//! Relation files of 1 MiB or more are not left to overlayfs, which would copy each one up
//! whole on PostgreSQL's first `O_RDWR` open (even for a read): the upper layer gets a symlink
//! to a block-level copy-on-write file served by a second, writable wayback mount
//! ([`crate::fsview::cow`]), so scratch grows by the 8 KiB pages written, not by table sizes.
//! Recovery ends at T: the server promotes onto a new timeline of its own (its history file and
//! WAL stay in scratch; archiving is off) and runs with `default_transaction_read_only`, so every
//! table that existed at T answers, including one dropped just after T. (A server paused at T,
//! `--paused`, would keep the lock replay took for such a `DROP` and make the query wait
//! forever.) `--writable` promotes the same way and accepts writes (they go to scratch).
//! Ctrl-C (or `pg-at --stop --scratch DIR`) stops the server, unmounts both layers and removes
//! the scratch directory.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cli::common::RepoArgs;
use crate::error::Error;
use crate::fsview::{RepoView, ViewOptions};
use crate::pg::env::command;
use crate::repo::Access;
use crate::snapshot::SnapshotKind;
use crate::timespec::{format_time, now_ms, parse_time};

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

/// Files at least this big get a block-level copy-on-write file instead of overlayfs copy-up.
const COW_MIN_BYTES: u64 = 1 << 20;

fn sh(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(o)
}

fn as_user(uid: u32, args: &[&str]) -> Command {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "postgres".into());
    let mut c = command("runuser");
    c.args(["-u", &user, "--"]).args(args);
    c
}

/// Runs pg-at in the foreground.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    if a.stop {
        let scratch = a.scratch.clone().expect("required by clap");
        let pid: i32 = std::fs::read_to_string(scratch.join("pg-at.pid"))
            .with_context(|| format!("no pg-at running with scratch {}", scratch.display()))?
            .trim()
            .parse()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .with_context(|| format!("signalling pg-at pid {pid}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while scratch.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("stopped pg-at (pid {pid})");
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
    let base = snaps
        .iter()
        .filter(|s| s.source == source && s.kind == SnapshotKind::Basebackup && s.time <= t)
        .max_by_key(|s| s.time)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("no base backup of source '{source}' at or before {to} (T is before the first base backup)")))?;
    let cluster = a
        .cluster
        .clone()
        .or(base.db.as_ref().and_then(|d| d.cluster.clone()))
        .context("the base backup names no WAL archive; give --cluster")?;
    let owner = base.root_meta.as_ref().map_or(0, |m| m.uid);
    let scratch = private_scratch(a.scratch.as_deref(), server_gid(owner))?;
    let (mnt, upper, work, data, sock, cow, delta, cache) = (
        scratch.join("mnt"),
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("data"),
        scratch.join("sock"),
        scratch.join("cow"),
        scratch.join("cow-delta"),
        scratch.join("cow-cache"),
    );
    // From here on every exit, error or not, stops, unmounts and removes what exists.
    let mut guard = Cleanup {
        scratch: scratch.clone(),
        data: data.clone(),
        mnt: mnt.clone(),
        pg_bin: a.pg_bin.clone(),
        owner,
        cow: cow.clone(),
        fuse: None,
        cow_fuse: None,
        overlay: false,
        server: false,
    };
    for d in [&mnt, &upper, &work, &data, &sock, &cow, &delta, &cache] {
        private_dir(d)?;
    }
    for d in [&upper, &sock] {
        nix::unistd::chown(d, Some(nix::unistd::Uid::from_raw(owner)), None)?;
    }
    private_file(&scratch.join("pg-at.pid"))?.write_all(std::process::id().to_string().as_bytes())?;

    let view = RepoView::new(repo.clone(), ViewOptions::default());
    let opts = wayback_mount::MountOptions {
        allow_other: true,
        fsname: "wayback-pg-at".into(),
        ..Default::default()
    };
    guard.fuse = Some(
        wayback_mount::mount_background(view, &mnt, &opts).context("mounting the repository")?,
    );
    if !a.copy_up {
        let files = cow_files(&repo, &base.root, &upper, &cow)?;
        let n = files.len();
        let view = crate::fsview::cow::CowView::new(repo.clone(), files, &delta, &cache)
            .context("creating copy-on-write files")?;
        let opts = wayback_mount::MountOptions {
            allow_other: true,
            fsname: "wayback-pg-at-cow".into(),
            writable: true,
            ..Default::default()
        };
        guard.cow_fuse = Some(
            wayback_mount::mount_background(view, &cow, &opts)
                .context("mounting the copy-on-write files")?,
        );
        tracing::info!(files = n, "relation files served copy-on-write");
    }
    let lower = mnt.join("snapshots").join(&source).join(base.time_name());
    let o = sh(command("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            // Snapshot time names contain ':', overlayfs's lowerdir separator: escape it.
            lower.display().to_string().replace(':', "\\:"),
            upper.display(),
            work.display()
        ))
        .arg(&data))?;
    if !o.status.success() {
        bail!(
            "cannot mount an overlay on {} (need root and overlayfs): {}",
            data.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    guard.overlay = true;
    let target = format_time(t).replace('T', " ").replace('Z', "+00");
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(data.join("postgresql.auto.conf"))?;
    writeln!(conf, "\n# wayback pg-at {} at {}", base.id.short(), to)?;
    writeln!(
        conf,
        "restore_command = 'cp {}/wal/{cluster}/%f \"%p\"'",
        mnt.display()
    )?;
    writeln!(conf, "recovery_target_time = '{target}'")?;
    // Transactions committed exactly at T are part of "as of T".
    writeln!(conf, "recovery_target_inclusive = on")?;
    // Ending recovery (promote) releases the locks of transactions still open at T, so a table
    // dropped after T answers; the new timeline's history and WAL stay in scratch because
    // nothing is archived (archive_mode off, no command).
    writeln!(
        conf,
        "recovery_target_action = '{}'",
        if a.paused { "pause" } else { "promote" }
    )?;
    if !a.paused && !a.writable {
        // The past answers; it does not change. Autovacuum would only grow scratch.
        writeln!(conf, "default_transaction_read_only = on\nautovacuum = off")?;
    }
    writeln!(
        conf,
        "archive_mode = off\narchive_command = ''\nhot_standby = on\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700",
        sock.display()
    )?;
    // The scratch server is thrown away at stop, so durability buys nothing. And with fsync
    // on, starting from a base backup makes PostgreSQL fsync the whole data directory first,
    // opening every file read-write, which made overlayfs copy every small file into scratch
    // (measured: 10 s of a 12.7 s start, scratch = the data size).
    writeln!(conf, "fsync = off")?;
    writeln!(
        conf,
        "port = {}\nlisten_addresses = '{}'",
        a.port.unwrap_or(5432),
        if a.port.is_some() { "127.0.0.1" } else { "" }
    )?;
    drop(conf);
    std::fs::write(data.join("recovery.signal"), b"")?;
    for f in ["postgresql.auto.conf", "recovery.signal"] {
        nix::unistd::chown(&data.join(f), Some(nix::unistd::Uid::from_raw(owner)), None)?;
    }
    let log = scratch.join("postgres.log");
    private_file(&log)?;
    nix::unistd::chown(&log, Some(nix::unistd::Uid::from_raw(owner)), None)?;
    let started = Instant::now();
    let pg_ctl = a.pg_bin.join("pg_ctl");
    let o = sh(&mut as_user(
        owner,
        &[
            pg_ctl.to_str().unwrap_or("pg_ctl"),
            "-D",
            data.to_str().unwrap_or(""),
            "-l",
            log.to_str().unwrap_or(""),
            "-w",
            "-t",
            "600",
            "start",
        ],
    ))?;
    guard.server = true;
    if !o.status.success() {
        bail!(
            "{} {}",
            explain_failure(&log, &cluster),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    // Wait until recovery has reached T (paused) or ended (promoted).
    let psql = a.pg_bin.join("psql");
    let query = |q: &str| -> Option<String> {
        let o = command(&psql)
            .env("PGHOST", &sock)
            .env("PGPORT", a.port.unwrap_or(5432).to_string())
            .args([
                "-X", "-A", "-t", "-U", "postgres", "-d", "postgres", "-c", q,
            ])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let ready = if a.paused {
            query("SELECT pg_get_wal_replay_pause_state()").as_deref() == Some("paused")
        } else {
            query("SELECT pg_is_in_recovery()").as_deref() == Some("f")
        };
        if ready {
            break;
        }
        if !data.join("postmaster.pid").exists() || Instant::now() > deadline {
            guard.server = false;
            bail!("{}", explain_failure(&log, &cluster));
        }
        // Ctrl-C or SIGTERM while recovery runs: stop and clean up now, not once it is ready.
        if signalled_within(Duration::from_millis(100)) {
            eprintln!("interrupted before PostgreSQL was ready; stopping");
            drop(guard);
            return Ok(130);
        }
    }
    let written = du(&upper) + du(&delta);
    println!(
        "PostgreSQL at {} (base backup {} of {}) ready in {:.1} s; scratch holds {} KiB written and {} KiB of decrypted base backup",
        target,
        base.id.short(),
        base.time_name(),
        started.elapsed().as_secs_f64(),
        written / 1024,
        du(&cache) / 1024
    );
    println!(
        "connect: psql \"host={} port={} user=postgres dbname=postgres\"{}",
        sock.display(),
        a.port.unwrap_or(5432),
        a.port
            .map(|p| format!("  or  psql -h 127.0.0.1 -p {p} -U postgres"))
            .unwrap_or_default()
    );
    println!(
        "stop: Ctrl-C, or wayback pg-at --stop --scratch {}",
        scratch.display()
    );
    let _ = std::io::stdout().flush();
    wait_for_signal();
    drop(guard);
    Ok(0)
}

/// Creates the scratch directory. It holds decrypted database pages and the mounts (which are
/// `allow_other`, because the server runs as the database's owner, not root), so it is the gate:
/// 0710 root:`gid`, where only root lists it and only the server's group may traverse it to
/// reach the data directory, socket and mounts. The default name is unpredictable
/// ([`tempfile`]), so no directory or symlink planted in advance can stand in for it.
fn private_scratch(given: Option<&Path>, gid: u32) -> anyhow::Result<PathBuf> {
    let dir = match given {
        None => tempfile::Builder::new()
            .prefix("wayback-pg-at-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .context("creating a scratch directory")?
            .keep(),
        Some(d) => {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let m = std::fs::symlink_metadata(d)?;
                    if !m.is_dir() {
                        bail!("scratch {} exists and is not a directory", d.display());
                    }
                    if std::fs::read_dir(d)?.next().is_some() {
                        bail!("scratch directory {} is not empty", d.display());
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating scratch {}", d.display()))
                }
            }
            d.to_path_buf()
        }
    };
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))
        .with_context(|| format!("chown {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))?;
    Ok(dir)
}

/// The primary group of the user the server runs as (the group [`private_scratch`] lets in).
fn server_gid(uid: u32) -> u32 {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or(0, |u| u.gid.as_raw())
}

/// A new directory only its owner may enter (0700 from creation on, no window).
fn private_dir(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .with_context(|| format!("creating {}", p.display()))
}

/// A new file only its owner may read (0600 from creation on; refuses an existing name).
fn private_file(p: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .with_context(|| format!("creating {}", p.display()))
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

/// Finds the snapshot's files of at least [`COW_MIN_BYTES`] under `base/` and `global/`, and
/// puts a symlink to copy-on-write file `cow/<i>` at each one's path in the overlay's upper
/// layer (creating the directories on the way with the snapshot's owner and mode). Returns the
/// nodes in the order of their numbers.
fn cow_files(
    repo: &crate::repo::Repository,
    root: &crate::id::TreeId,
    upper: &Path,
    cow: &Path,
) -> anyhow::Result<Vec<crate::tree::Node>> {
    use crate::tree::NodeKind;
    use std::os::unix::ffi::OsStrExt;
    let mut dirs: std::collections::HashMap<Vec<u8>, crate::tree::Node> = Default::default();
    let mut files = Vec::new();
    crate::tree::reader::walk(repo, root, b"", &mut |path, n| {
        let relation_dir = path.starts_with(b"base/") || path.starts_with(b"global/");
        match n.kind {
            NodeKind::Dir => {
                dirs.insert(path.to_vec(), n.clone());
            }
            NodeKind::File if relation_dir && n.size >= COW_MIN_BYTES && n.link_group.is_none() => {
                files.push((path.to_vec(), n.clone()));
            }
            _ => {}
        }
        Ok(())
    })?;
    let mut made = std::collections::HashSet::new();
    for (i, (path, n)) in files.iter().enumerate() {
        let rel = Path::new(std::ffi::OsStr::from_bytes(path));
        let mut cur = PathBuf::new();
        for comp in rel.parent().into_iter().flat_map(|p| p.components()) {
            cur.push(comp);
            if !made.insert(cur.clone()) {
                continue;
            }
            let dir = upper.join(&cur);
            std::fs::create_dir_all(&dir)?;
            if let Some(d) = dirs.get(cur.as_os_str().as_bytes()) {
                nix::unistd::chown(
                    &dir,
                    Some(nix::unistd::Uid::from_raw(d.uid)),
                    Some(nix::unistd::Gid::from_raw(d.gid)),
                )?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(d.mode & 0o7777))?;
            }
        }
        let link = upper.join(rel);
        std::os::unix::fs::symlink(cow.join(i.to_string()), &link)
            .with_context(|| format!("symlink {}", link.display()))?;
        std::os::unix::fs::lchown(&link, Some(n.uid), Some(n.gid))?;
    }
    Ok(files.into_iter().map(|(_, n)| n).collect())
}

/// Bytes of the files under `p` (what recovery wrote to the upper layer).
pub fn du(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Turns a failed start into an actionable message: the first WAL segment recovery asked for
/// and did not find, or the server log's fatal line.
fn explain_failure(log: &Path, cluster: &str) -> String {
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

struct Cleanup {
    scratch: PathBuf,
    data: PathBuf,
    mnt: PathBuf,
    pg_bin: PathBuf,
    owner: u32,
    cow: PathBuf,
    fuse: Option<wayback_mount::MountHandle>,
    cow_fuse: Option<wayback_mount::MountHandle>,
    overlay: bool,
    server: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.server && self.data.join("postmaster.pid").exists() {
            let pg_ctl = self.pg_bin.join("pg_ctl");
            let _ = as_user(
                self.owner,
                &[
                    pg_ctl.to_str().unwrap_or("pg_ctl"),
                    "-D",
                    self.data.to_str().unwrap_or(""),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
            )
            .output();
        }
        if self.overlay {
            let _ = command("umount").arg(&self.data).output();
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
