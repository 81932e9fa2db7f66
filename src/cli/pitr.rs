//! `wayback pitr`: a PostgreSQL data directory ready to recover to a point in time.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::cli::common::RepoArgs;
use crate::error::Error;
use crate::repo::Access;
use crate::restore::{restore, RestoreCounters, RestoreOptions};
use crate::snapshot::SnapshotKind;
use crate::timespec::{format_time, now_ms, parse_time};
use crate::wal;

/// Arguments of `pitr`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base-backup source.
    #[arg(long)]
    pub source: String,
    /// Recovery target time.
    #[arg(long)]
    pub to: String,
    /// New data directory (must not exist or be empty).
    #[arg(long)]
    pub target: PathBuf,
    /// WAL archive name (default: the one recorded with the base backup).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Read WAL from this wayback mount (`cp MOUNT/wal/<cluster>/%f`) instead of `wal-fetch`.
    #[arg(long)]
    pub mount: Option<PathBuf>,
}

/// Restores the base backup at or before the target and writes the recovery settings.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let t = parse_time(&a.to, now_ms()).with_context(|| format!("'{}' is not a time", a.to))?;
    let repo = ra.open(Access::Read)?;
    let snaps = repo.snapshots()?;
    let base = snaps
        .iter()
        .filter(|s| s.source == a.source && s.kind == SnapshotKind::Basebackup && s.time <= t)
        .max_by_key(|s| s.time)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no base backup of source '{}' at or before {}",
                a.source, a.to
            ))
        })?;
    let db = base.db.clone().unwrap_or_default();
    let cluster = a
        .cluster
        .clone()
        .or(db.cluster.clone())
        .context("the base backup names no WAL archive; give --cluster")?;
    // The WAL the base backup itself needs to become consistent must be archived.
    if let (Some(start), Some(stop)) = (&db.wal_start, &db.wal_stop) {
        let have = wal::list(repo.be.as_ref(), &cluster)?;
        let mut want = vec![start.clone()];
        if stop != start {
            want.push(stop.clone());
        }
        if let Some(missing) = want.iter().find(|w| !have.contains(w)) {
            bail!(
                "WAL segment {missing} needed by base backup {} is not in archive '{cluster}'",
                base.id.short()
            );
        }
    }
    if a.target.exists() && std::fs::read_dir(&a.target)?.next().is_some() {
        bail!("{} exists and is not empty", a.target.display());
    }
    let rep = restore(
        &repo,
        Some(&base.root),
        None,
        base.root_meta.as_ref(),
        &a.target,
        &RestoreOptions::default(),
        &RestoreCounters::default(),
    )?;
    if !rep.failed.is_empty() {
        bail!(
            "{} file(s) of the base backup could not be restored (damaged data)",
            rep.failed.len()
        );
    }
    std::fs::set_permissions(&a.target, std::fs::Permissions::from_mode(0o700))?;
    let restore_command = match &a.mount {
        Some(mp) => format!("cp {}/wal/{cluster}/%f \"%p\"", mp.display()),
        None => {
            let exe = std::env::current_exe()?;
            let repo_path = std::path::absolute(ra.path()?)?;
            let pw = ra
                .password_file
                .as_ref()
                .map(|p| {
                    std::path::absolute(p).map(|p| format!(" --password-file {}", p.display()))
                })
                .transpose()?
                .unwrap_or_default();
            format!(
                "{} --repo {}{pw} wal-fetch --cluster {cluster} %f \"%p\"",
                exe.display(),
                repo_path.display()
            )
        }
    };
    let target_time = format_time(t).replace('T', " ").replace('Z', "+00");
    let conf = a.target.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&conf)?;
    writeln!(
        f,
        "\n# added by wayback pitr (base backup {} of {})",
        base.id.short(),
        base.time_name()
    )?;
    writeln!(
        f,
        "restore_command = '{}'",
        restore_command.replace('\'', "''")
    )?;
    writeln!(f, "recovery_target_time = '{target_time}'")?;
    writeln!(f, "recovery_target_action = 'promote'")?;
    writeln!(f, "recovery_target_timeline = 'latest'")?;
    drop(f);
    std::fs::write(a.target.join("recovery.signal"), b"")?;
    if let Some(m) = &base.root_meta {
        for p in [conf, a.target.join("recovery.signal")] {
            let _ = nix::unistd::chown(
                &p,
                Some(nix::unistd::Uid::from_raw(m.uid)),
                Some(nix::unistd::Gid::from_raw(m.gid)),
            );
        }
    }
    println!(
        "restored base backup {} ({}) into {}; recovery to {} configured (WAL from archive '{cluster}').",
        base.id.short(),
        base.time_name(),
        a.target.display(),
        target_time
    );
    println!(
        "start it with: pg_ctl -D {} start   (as the data directory's owner)",
        a.target.display()
    );
    if a.mount.is_none() && ra.password_file.is_none() {
        println!(
            "note: the server must see WAYBACK_PASSWORD (or use --password-file) for wal-fetch"
        );
    }
    Ok(0)
}
