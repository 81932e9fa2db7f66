//! `wayback pitr`: a PostgreSQL data directory ready to recover to a point in time. This file
//! parses and prints; the work is [`crate::pg::pitr::prepare`].

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::common::RepoArgs;
use crate::pg::base::{archive_of, base_backup_at};
use crate::pg::settings::{mount_restore_command, target_time, wal_fetch_restore_command};
use crate::repo::Access;
use crate::timespec::{now_ms, parse_time};

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
    /// S3 credentials file (0600, owned by the server's user) that `restore_command`'s
    /// `wal-fetch` uses: the recovered server runs as another user and gets no keys from this
    /// command's environment. Only for an `s3://` repository.
    #[arg(long, value_name = "FILE")]
    pub wal_credentials: Option<PathBuf>,
    /// JSON report: `{base_backup, base_time, target, recovery_target_time, cluster}`.
    #[arg(long)]
    pub json: bool,
}

/// Restores the base backup at or before the target and writes the recovery settings.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    if a.wal_credentials.is_some()
        && (a.mount.is_some() || !matches!(ra.location()?, crate::repo::Location::S3(_)))
    {
        anyhow::bail!("--wal-credentials is for wal-fetch from an s3:// repository");
    }
    let t = parse_time(&a.to, now_ms()).with_context(|| format!("'{}' is not a time", a.to))?;
    let repo = ra.open(Access::Read)?;
    let snaps = repo.snapshots()?;
    let base = base_backup_at(&snaps, &a.source, t, &a.to)?;
    let cluster = archive_of(base, a.cluster.as_deref())?;
    let restore_command = match &a.mount {
        Some(mp) => mount_restore_command(&std::path::absolute(mp)?, &cluster)?,
        None => {
            let pw = ra
                .password_file
                .as_ref()
                .map(std::path::absolute)
                .transpose()?;
            wal_fetch_restore_command(
                &std::env::current_exe()?,
                &match ra.location()? {
                    crate::repo::Location::Local(p) => std::path::absolute(p)?,
                    // An S3 URL is passed as written, or naming the server's credentials.
                    crate::repo::Location::S3(_) => match &a.wal_credentials {
                        Some(f) => PathBuf::from(crate::repo::location::with_credentials_file(
                            &ra.path()?.to_string_lossy(),
                            &std::path::absolute(f)?,
                        )?),
                        None => ra.path()?,
                    },
                },
                pw.as_deref(),
                &cluster,
            )?
        }
    };
    crate::audit::note(
        &repo,
        "pitr",
        &format!(
            "base backup {} of {} to {} into {}",
            base.id.short(),
            a.source,
            a.to,
            std::path::absolute(&a.target)
                .unwrap_or_else(|_| a.target.clone())
                .display()
        ),
    );
    crate::pg::pitr::prepare(&repo, base, &cluster, t, &a.target, &restore_command)?;
    if a.json {
        let v = serde_json::json!({
            "base_backup": base.id.to_hex(),
            "base_time": base.time_name(),
            "target": a.target,
            "recovery_target_time": target_time(t),
            "cluster": cluster,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    outln!(
        "restored base backup {} ({}) into {}; recovery to {} configured (WAL from archive '{cluster}').",
        base.id.short(),
        base.time_name(),
        a.target.display(),
        target_time(t)
    );
    outln!(
        "start it with: pg_ctl -D {} start   (as the data directory's owner)",
        a.target.display()
    );
    if a.mount.is_none() && ra.password_file.is_none() {
        outln!(
            "note: wal-fetch needs the passphrase: give --password-file (a file the server's user can read) so restore_command names it, or the server must see WAYBACK_PASSWORD"
        );
    }
    Ok(0)
}
