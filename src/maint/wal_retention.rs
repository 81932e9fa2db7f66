//! WAL retention tied to base backups, per cluster.
//!
//! Why: point-in-time recovery needs a base backup plus every WAL segment from the backup's
//! start onwards. WAL older than the start of the oldest base backup that remains can never be
//! replayed by anything, so it is the only WAL that may go; everything from that start to now
//! stays, so PITR works to any moment between that backup and the newest archived segment.
//!
//! Rules: segments, `.partial` files and `.backup` labels whose segment lies before the WAL
//! start of the oldest remaining complete base backup of the cluster are removed; `.history`
//! files are kept forever (they are tiny and recovery to a later timeline reads all of them);
//! a cluster with no remaining base backup keeps all its WAL. Before anything is deleted, every
//! remaining base backup must have a continuous chain of archived segments from its start to
//! the next base backup's start (for the newest: to its own stop segment); otherwise the whole
//! forget is refused, so no run ever leaves a kept base backup that cannot be recovered.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::snapshot::{Snapshot, SnapshotKind};
use crate::timespec::{format_time, TimeMs};
use crate::wal::{self, names};

/// The cluster a snapshot is a base backup of, if it is one.
pub fn base_backup_cluster(s: &Snapshot) -> Option<&str> {
    if s.kind != SnapshotKind::Basebackup {
        return None;
    }
    s.db.as_ref()?.cluster.as_deref()
}

/// A base backup as retention sees it: where its WAL starts and stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBackup {
    /// Snapshot id (short), for messages.
    pub id: String,
    /// Snapshot time.
    pub time: TimeMs,
    /// Timeline of its start segment.
    pub tli: u32,
    /// Start segment (log, seg).
    pub start: (u32, u32),
    /// Stop segment (log, seg), when the backup recorded it.
    pub stop: Option<(u32, u32)>,
}

fn seg_of(name: &str) -> Option<(u32, u32, u32)> {
    match names::parse(name.get(..24)?)? {
        names::WalName::Segment { tli, log, seg } => Some((tli, log, seg)),
        _ => None,
    }
}

impl BaseBackup {
    /// The retention view of a complete base-backup snapshot of `cluster`; `None` for other
    /// snapshots and for base backups whose start segment is unknown (they cannot anchor WAL).
    pub fn of(s: &Snapshot, cluster: &str) -> Option<BaseBackup> {
        if !s.complete || base_backup_cluster(s) != Some(cluster) {
            return None;
        }
        let db = s.db.as_ref()?;
        let (tli, log, seg) = seg_of(db.wal_start.as_deref()?)?;
        let stop = db
            .wal_stop
            .as_deref()
            .and_then(seg_of)
            .map(|(_, l, s)| (l, s));
        Some(BaseBackup {
            id: s.id.short(),
            time: s.time,
            tli,
            start: (log, seg),
            stop,
        })
    }
}

/// What retention does to one cluster's archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// Cluster name.
    pub cluster: String,
    /// First segment kept: the WAL start of the oldest remaining base backup; `None` when no
    /// base backup of the cluster remains (then all WAL is kept).
    pub keep_from: Option<String>,
    /// Short id of that base backup.
    pub base_backup: Option<String>,
    /// Files removed (segments, `.partial`, `.backup`), in WAL order.
    pub remove: Vec<String>,
    /// Files that stay.
    pub kept: usize,
}

/// Plans retention of `cluster` given the snapshots that will remain. Errors (nothing is
/// deleted by the caller) when a remaining base backup lacks a continuous WAL chain.
pub fn plan(repo: &Repository, cluster: &str, remaining: &[&Snapshot]) -> Result<WalPlan> {
    let files = wal::list(repo.be.as_ref(), cluster)?;
    let bases: Vec<BaseBackup> = remaining
        .iter()
        .filter_map(|s| BaseBackup::of(s, cluster))
        .collect();
    let seg_size = remaining
        .iter()
        .filter(|s| BaseBackup::of(s, cluster).is_some())
        .filter_map(|s| s.db.as_ref())
        .find_map(|db| {
            let lsn = names::parse_lsn(db.start_lsn.as_deref()?)?;
            names::segment_size_for(lsn, db.wal_start.as_deref()?)
        });
    let seg_size = match seg_size {
        Some(s) => s,
        None => match files
            .iter()
            .find(|f| names::parse(f).is_some_and(is_segment))
        {
            Some(f) => wal::read_record(repo, cluster, f)?.size,
            None => 16 << 20,
        },
    };
    plan_names(cluster, &files, &bases, names::segs_per_log(seg_size))
}

fn is_segment(n: names::WalName) -> bool {
    matches!(n, names::WalName::Segment { .. })
}

/// The pure part of [`plan`]: archived `files`, remaining complete `bases`, segments per log.
pub fn plan_names(
    cluster: &str,
    files: &[String],
    bases: &[BaseBackup],
    per_log: u64,
) -> Result<WalPlan> {
    let Some(oldest) = bases.iter().min_by_key(|b| (b.start, b.time)) else {
        return Ok(WalPlan {
            cluster: cluster.to_string(),
            keep_from: None,
            base_backup: None,
            remove: vec![],
            kept: files.len(),
        });
    };
    check_chain(cluster, files, bases, per_log)?;
    let mut remove: Vec<(u32, u32, u32, &String)> = files
        .iter()
        .filter(|f| !matches!(names::parse(f), Some(names::WalName::History { .. }) | None))
        .filter_map(|f| seg_of(f).map(|(t, l, s)| (l, s, t, f)))
        .filter(|(l, s, _, _)| (*l, *s) < oldest.start)
        .collect();
    remove.sort();
    Ok(WalPlan {
        cluster: cluster.to_string(),
        keep_from: Some(seg_name(oldest.tli, oldest.start.0, oldest.start.1)),
        base_backup: Some(oldest.id.clone()),
        kept: files.len() - remove.len(),
        remove: remove.into_iter().map(|r| r.3.clone()).collect(),
    })
}

fn seg_name(tli: u32, log: u32, seg: u32) -> String {
    format!("{tli:08X}{log:08X}{seg:08X}")
}

/// Every base backup needs each segment position from its start to the next base backup's
/// start (the newest: to its stop) on its own timeline or a later one (after a promotion the
/// chain continues on the new timeline).
fn check_chain(cluster: &str, files: &[String], bases: &[BaseBackup], per: u64) -> Result<()> {
    let lin = |(l, s): (u32, u32)| l as u64 * per + s as u64;
    let mut have: HashMap<u64, Vec<u32>> = HashMap::new();
    for f in files {
        if let Some(names::WalName::Segment { tli, log, seg }) = names::parse(f) {
            have.entry(lin((log, seg))).or_default().push(tli);
        }
    }
    let mut sorted: Vec<&BaseBackup> = bases.iter().collect();
    sorted.sort_by_key(|b| (b.start, b.time));
    for (i, b) in sorted.iter().enumerate() {
        let from = lin(b.start);
        let mut to = lin(b.stop.unwrap_or(b.start)).max(from);
        if let Some(next) = sorted.get(i + 1) {
            to = to.max(lin(next.start));
        }
        for p in from..=to {
            let ok = have
                .get(&p)
                .is_some_and(|ts| ts.iter().any(|&t| t >= b.tli));
            if !ok {
                let name = |p: u64| seg_name(b.tli, (p / per) as u32, (p % per) as u32);
                return Err(Error::Invalid(format!(
                    "refusing to forget: base backup {} ({}) of cluster '{cluster}' would be kept \
                     without a continuous WAL chain: segment {} is not archived (needed from {} \
                     to {}); nothing was deleted. Archive the missing WAL, or also forget that \
                     base backup and every older one of the cluster",
                    b.id,
                    format_time(b.time),
                    name(p),
                    name(from),
                    name(to)
                )));
            }
        }
    }
    Ok(())
}

/// Deletes the planned files, oldest first (each delete fsyncs the directory), so a run that
/// is interrupted leaves a contiguous archive.
pub fn apply(repo: &Repository, p: &WalPlan) -> Result<()> {
    for name in &p.remove {
        repo.be.delete(&format!("wal/{}/{name}", p.cluster))?;
    }
    Ok(())
}

/// The oldest remaining complete base backup of `cluster` whose start segment is archived:
/// the earliest point PITR can start from (`wal status`).
pub fn oldest_usable<'a>(
    snaps: &'a [Snapshot],
    cluster: &str,
    files: &[String],
) -> Option<&'a Snapshot> {
    snaps
        .iter()
        .filter(|s| {
            BaseBackup::of(s, cluster).is_some()
                && s.db
                    .as_ref()
                    .and_then(|d| d.wal_start.as_ref())
                    .is_some_and(|w| files.contains(w))
        })
        .min_by_key(|s| s.time)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER16: u64 = 256; // 16 MiB segments: 0x100 per log

    fn bb(id: &str, tli: u32, start: (u32, u32), stop: Option<(u32, u32)>) -> BaseBackup {
        BaseBackup {
            id: id.into(),
            time: start.1 as i64,
            tli,
            start,
            stop,
        }
    }

    fn files(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    fn segs(tli: u32, from: (u32, u32), n: u32) -> Vec<String> {
        let mut out = Vec::new();
        let (mut l, mut s) = from;
        for _ in 0..n {
            out.push(seg_name(tli, l, s));
            s += 1;
            if s as u64 == PER16 {
                s = 0;
                l += 1;
            }
        }
        out
    }

    #[test]
    fn no_base_backup_keeps_everything() {
        let f = files(&["000000010000000000000001", "000000010000000000000002"]);
        let p = plan_names("c", &f, &[], PER16).unwrap();
        assert_eq!(p.keep_from, None);
        assert!(p.remove.is_empty());
        assert_eq!(p.kept, 2);
    }

    #[test]
    fn removes_before_the_oldest_start_keeps_history_and_its_label() {
        let mut f = segs(1, (0, 1), 8); // 01..08
        f.extend(files(&[
            "00000001.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000005.00000060.backup",
            "000000010000000000000003.partial",
        ]));
        f.sort();
        let bases = [bb("b", 1, (0, 5), Some((0, 5))), bb("c", 1, (0, 7), None)];
        let p = plan_names("c", &f, &bases, PER16).unwrap();
        assert_eq!(p.keep_from.as_deref(), Some("000000010000000000000005"));
        assert_eq!(p.base_backup.as_deref(), Some("b"));
        assert_eq!(
            p.remove,
            vec![
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003",
                "000000010000000000000003.partial",
                "000000010000000000000004",
            ]
        );
        assert_eq!(p.kept, f.len() - 6);
    }

    #[test]
    fn chain_crosses_a_log_boundary_and_a_timeline_switch() {
        // 0/FE, 0/FF on tli 1, then 1/00.. on tli 2 (promotion): continuous.
        let mut f = segs(1, (0, 0xFE), 2);
        f.extend(segs(2, (1, 0), 3));
        f.push("00000002.history".into());
        f.sort();
        let bases = [bb("a", 1, (0, 0xFE), None), bb("b", 2, (1, 2), None)];
        let p = plan_names("c", &f, &bases, PER16).unwrap();
        assert!(p.remove.is_empty());
        // A base backup on tli 2 is not served by tli-1 segments.
        let f1 = segs(1, (0, 0xFE), 5);
        let e = plan_names("c", &f1, &[bb("b", 2, (1, 0), None)], PER16).unwrap_err();
        assert!(e.to_string().contains("000000020000000100000000"), "{e}");
    }

    #[test]
    fn a_gap_between_kept_base_backups_refuses() {
        let mut f = segs(1, (0, 1), 3); // 01..03
        f.extend(segs(1, (0, 5), 3)); // 05..07, 04 missing
        f.sort();
        let bases = [bb("a", 1, (0, 2), Some((0, 2))), bb("b", 1, (0, 6), None)];
        let e = plan_names("c", &f, &bases, PER16).unwrap_err().to_string();
        assert!(
            e.contains("segment 000000010000000000000004 is not archived"),
            "{e}"
        );
        assert!(e.contains("base backup a"), "{e}");
        // Missing stop segment of the newest base backup refuses too.
        let e = plan_names("c", &f, &[bb("b", 1, (0, 6), Some((0, 8)))], PER16).unwrap_err();
        assert!(e.to_string().contains("000000010000000000000008"), "{e}");
        // Once the base backup before the gap is gone, the rest is fine.
        let p = plan_names("c", &f, &[bb("b", 1, (0, 6), None)], PER16).unwrap();
        assert_eq!(p.remove.len(), 4); // 01, 02, 03, 05
    }
}
