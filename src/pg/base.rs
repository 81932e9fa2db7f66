//! Which base backup and which WAL archive a recovery to T starts from (`pitr`, `pg-at`).

use crate::error::{Error, Result};
use crate::snapshot::{Snapshot, SnapshotKind};
use crate::timespec::TimeMs;

/// The newest base backup of `source` taken at or before `t`: recovery replays forward from
/// it, so a later one cannot serve. `to` is how the user wrote T, for the error.
pub fn base_backup_at<'a>(
    snaps: &'a [Snapshot],
    source: &str,
    t: TimeMs,
    to: &str,
) -> Result<&'a Snapshot> {
    snaps
        .iter()
        .filter(|s| s.source == source && s.kind == SnapshotKind::Basebackup && s.time <= t)
        .max_by_key(|s| s.time)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no base backup of source '{source}' at or before {to} (T is before the first base backup)"
            ))
        })
}

/// The WAL archive to recover from: the one given, else the one recorded with the base backup.
pub fn archive_of(base: &Snapshot, given: Option<&str>) -> Result<String> {
    given
        .map(str::to_string)
        .or_else(|| base.db.as_ref().and_then(|d| d.cluster.clone()))
        .ok_or_else(|| {
            Error::Invalid("the base backup names no WAL archive; give --cluster".into())
        })
}
