//! `wayback copy`: snapshots and the WAL archive into a second repository (the off-site copy
//! of 3-2-1).
//!
//! The two repositories have different keys, so blob ids differ too (see [`trees`]): every
//! blob the destination lacks is read from the source and stored through the destination's
//! own pipeline, sealed under its key, and trees are rewritten bottom-up. Only the
//! `Repository`/`Backend` interfaces are used, so the destination may be on any backend.
//!
//! Incremental and resumable: a destination snapshot records the source snapshot it copies
//! (`copied_from`); the next run skips those. A snapshot's manifest is written only after every
//! pack it needs is durable (one [`with_saver`] per snapshot), so a copy killed at any point
//! leaves no partial snapshot; the packs it did make durable are indexed when the destination is
//! opened next, and the next run finds their blobs there instead of sending them again.

pub mod trees;
mod wal;

pub use wal::{copy_wal, WalCopied};

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ingest::{with_saver, Counters};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use trees::{Translator, TreePair};

/// What a copy run would do with the snapshots: decided before the WAL is copied, so that
/// every snapshot it copies has its WAL in the destination (a base backup's WAL is archived
/// before its manifest is written).
pub struct Plan {
    /// Source snapshots to copy, oldest first.
    pub todo: Vec<Snapshot>,
    /// Source snapshots that already have a copy.
    pub skipped: usize,
    /// Source snapshot id -> its copy in the destination.
    copies: HashMap<SnapshotId, Snapshot>,
    /// Every readable source snapshot, by id (for reference pairs).
    sources: HashMap<SnapshotId, Snapshot>,
}

/// One snapshot copied.
#[derive(Serialize, Debug, Clone)]
pub struct Copied {
    /// Source name.
    pub source: String,
    /// Snapshot time (RFC 3339, UTC).
    pub time: String,
    /// Id in the source repository.
    pub from: String,
    /// Id of the copy in the destination.
    pub to: String,
}

/// Summary of the snapshot part of a run.
#[derive(Serialize, Debug, Default, Clone)]
pub struct SnapshotsCopied {
    /// Snapshots copied by this run.
    pub copied: Vec<Copied>,
    /// Snapshots skipped because a copy already existed.
    pub skipped: usize,
    /// Blobs stored in the destination (those it lacked).
    pub blobs_sent: u64,
    /// Their plaintext bytes.
    pub plain_bytes_sent: u64,
    /// Bytes the destination stored for them (compressed, encrypted): what went over the wire.
    pub bytes_sent: u64,
    /// Chunk bytes read and decrypted from the source.
    pub bytes_read: u64,
    /// Every source snapshot the destination holds a copy of after the run (for `status`).
    #[serde(skip)]
    pub in_copy: Vec<SnapshotId>,
}

/// What `status` remembers of a run: `error` (a failure, or a WAL conflict) and, when it got
/// through the snapshots, which source snapshots the destination holds.
pub fn record(
    src: &Repository,
    to: &std::path::Path,
    sources: &[String],
    started: chrono::DateTime<chrono::Utc>,
    in_copy: Option<&[SnapshotId]>,
    error: Option<String>,
) {
    let copied = in_copy
        .map(|ids| ids.iter().map(|i| i.to_hex()).collect())
        .unwrap_or_default();
    let ok = error.is_none();
    let rec = crate::agent::state::CopyRecord {
        to: to.display().to_string(),
        time: started.to_rfc3339(),
        ok,
        duration_s: (chrono::Utc::now() - started).num_milliseconds() as f64 / 1000.0,
        sources: sources.to_vec(),
        copied,
        error,
        last_success: None,
    };
    if let Err(e) = crate::agent::state::record_copy(src, rec) {
        tracing::warn!(error = %e, "copy result not recorded for `status`");
    }
}

/// Notes in the source's audit log that its data went to `to` (only runs that copied
/// something: a scheduled copy with nothing new is not news).
pub fn audit(src: &Repository, to: &std::path::Path, snapshots: usize, wal_files: u64) {
    if snapshots > 0 || wal_files > 0 {
        crate::audit::note(
            src,
            "copy",
            &format!(
                "to {}: {snapshots} snapshot(s), {wal_files} WAL file(s)",
                to.display()
            ),
        );
    }
}

/// Refuses to copy a repository into itself (the same id: one repository, or a file-level
/// copy of one, whose keys are the same).
pub fn check_distinct(src: &Repository, dst: &Repository) -> Result<()> {
    if src.config.id == dst.config.id {
        return Err(Error::Invalid(format!(
            "{} and {} are the same repository (id {}); copy needs a second one (`wayback init`)",
            src.location, dst.location, src.config.id
        )));
    }
    Ok(())
}

/// Lists the source snapshots of `sources` (all when empty) that have no copy in `dst`.
pub fn plan(src: &Repository, dst: &Repository, sources: &[String]) -> Result<Plan> {
    check_distinct(src, dst)?;
    let all = src.snapshots()?;
    let copies: HashMap<SnapshotId, Snapshot> = dst
        .snapshots()?
        .into_iter()
        .filter_map(|s| Some((s.copied_from?, s)))
        .collect();
    let wanted = |s: &Snapshot| sources.is_empty() || sources.contains(&s.source);
    let (done, todo): (Vec<Snapshot>, Vec<Snapshot>) = all
        .iter()
        .filter(|s| wanted(s))
        .cloned()
        .partition(|s| copies.contains_key(&s.id));
    for name in sources {
        if !all.iter().any(|s| &s.source == name) {
            return Err(Error::NotFound(format!(
                "no snapshots of source '{name}' in {}",
                src.location
            )));
        }
    }
    Ok(Plan {
        todo,
        skipped: done.len(),
        copies,
        sources: all.into_iter().map(|s| (s.id, s)).collect(),
    })
}

/// Copies the planned snapshots, oldest first; `done(i, copied)` after each one's manifest is
/// written. `counters` are live for a progress display.
pub fn copy_snapshots(
    src: &Repository,
    dst: &Repository,
    mut plan: Plan,
    counters: Arc<Counters>,
    done: &dyn Fn(usize, &Copied),
) -> Result<SnapshotsCopied> {
    let mut tr = Translator::new(src, dst);
    let mut out = SnapshotsCopied {
        skipped: plan.skipped,
        ..Default::default()
    };
    for (i, s) in std::mem::take(&mut plan.todo).into_iter().enumerate() {
        let reference = reference_pair(&plan, &s);
        let mut copy = s.clone();
        with_saver(dst, counters.clone(), |saver| {
            copy.root = tr.tree(saver, &s.root, reference)?;
            if let Some(meta) = copy.root_meta.as_mut() {
                tr.node(saver, meta, None)?;
            }
            Ok(())
        })?;
        // Every pack is durable: the manifest is the commit point.
        copy.parent = s.parent.and_then(|p| plan.copies.get(&p)).map(|c| c.id);
        copy.copied_from = Some(s.id);
        dst.save_snapshot(&mut copy)?;
        let c = Copied {
            source: s.source.clone(),
            time: s.time_name(),
            from: s.id.to_hex(),
            to: copy.id.to_hex(),
        };
        tracing::info!(source = %s.source, from = %s.id.short(), to = %copy.id.short(), "snapshot copied");
        done(i, &c);
        out.copied.push(c);
        plan.copies.insert(s.id, copy);
    }
    out.blobs_sent = counters.blobs_new.load(Ordering::Relaxed);
    out.plain_bytes_sent = counters.bytes_added.load(Ordering::Relaxed);
    out.bytes_sent = counters.bytes_stored.load(Ordering::Relaxed);
    out.bytes_read = counters.bytes_read.load(Ordering::Relaxed);
    out.in_copy = plan.copies.into_keys().collect();
    Ok(out)
}

/// The root trees of a snapshot copied before that is most like `s`: the copy of its parent,
/// else the newest copied snapshot of its source not after it, else the oldest after it.
fn reference_pair(plan: &Plan, s: &Snapshot) -> Option<TreePair> {
    let pair = |src_id: &SnapshotId| -> Option<TreePair> {
        let copy = plan.copies.get(src_id)?;
        let orig = plan.sources.get(src_id)?;
        Some((orig.root, copy.root))
    };
    if let Some(p) = s.parent.as_ref().and_then(pair) {
        return Some(p);
    }
    let same_source = plan
        .copies
        .keys()
        .filter_map(|id| plan.sources.get(id))
        .filter(|o| o.source == s.source);
    let (before, after): (Vec<&Snapshot>, Vec<&Snapshot>) =
        same_source.partition(|o| o.time <= s.time);
    before
        .into_iter()
        .max_by_key(|o| (o.time, o.id))
        .or_else(|| after.into_iter().min_by_key(|o| (o.time, o.id)))
        .and_then(|o| pair(&o.id))
}
