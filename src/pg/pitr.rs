//! A data directory ready to recover to a point in time (`wayback pitr`): the base backup
//! restored, recovery settings written; the user starts the server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::pg::settings::{target_time, RecoverySettings};
use crate::repo::Repository;
use crate::restore::{restore, RestoreCounters, RestoreOptions};
use crate::snapshot::Snapshot;
use crate::timespec::TimeMs;
use crate::wal;

/// Restores `base` into `target` (which must not exist or be empty) and appends recovery
/// settings: WAL through `restore_command`, stop at `t`, then promote (following the latest
/// timeline). Refuses first if the WAL the base backup itself needs is not in `cluster`, since
/// such a restore could never become consistent.
pub fn prepare(
    repo: &Repository,
    base: &Snapshot,
    cluster: &str,
    t: TimeMs,
    target: &Path,
    restore_command: &str,
) -> Result<()> {
    let db = base.db.clone().unwrap_or_default();
    if let (Some(start), Some(stop)) = (&db.wal_start, &db.wal_stop) {
        let have = wal::list(repo.be.as_ref(), cluster)?;
        let mut want = vec![start.clone()];
        if stop != start {
            want.push(stop.clone());
        }
        if let Some(missing) = want.iter().find(|w| !have.contains(w)) {
            return Err(Error::Invalid(format!(
                "WAL segment {missing} needed by base backup {} is not in archive '{cluster}'",
                base.id.short()
            )));
        }
    }
    let not_empty = |e| Error::io("listing restore target", target, e);
    if target.exists()
        && std::fs::read_dir(target)
            .map_err(not_empty)?
            .next()
            .is_some()
    {
        return Err(Error::Invalid(format!(
            "{} exists and is not empty",
            target.display()
        )));
    }
    let rep = restore(
        repo,
        Some(&base.root),
        None,
        base.root_meta.as_ref(),
        target,
        &RestoreOptions::default(),
        &RestoreCounters::default(),
    )?;
    if !rep.failed.is_empty() {
        return Err(Error::Invalid(format!(
            "{} file(s) of the base backup could not be restored (damaged data)",
            rep.failed.len()
        )));
    }
    // PostgreSQL refuses a data directory others can read.
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("chmod", target, e))?;
    let mut s = RecoverySettings::new(&format!(
        "added by wayback pitr (base backup {} of {})",
        base.id.short(),
        base.time_name()
    ));
    s.set("restore_command", restore_command)?
        .set("recovery_target_time", &target_time(t))?
        .set("recovery_target_action", "promote")?
        .set("recovery_target_timeline", "latest")?;
    s.append_to(target)?;
    let signal = target.join("recovery.signal");
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Not through a symlink: see RecoverySettings::append_to.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&signal)
            .map_err(|e| Error::io("creating", &signal, e))?;
    }
    if let Some(m) = &base.root_meta {
        for p in [target.join("postgresql.auto.conf"), signal] {
            let _ = crate::pg::scratch::chown(&p, m.uid, Some(m.gid));
        }
    }
    Ok(())
}
