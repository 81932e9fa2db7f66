//! `wayback prune`: give back the space of forgotten snapshots and retired WAL.
//!
//! 1. Mark: every blob reachable from a snapshot manifest (trees walked once each) or named by
//!    a WAL record is live. A manifest, tree or record that cannot be read stops prune before
//!    anything is deleted: what it references is unknown, so nothing may be called unused.
//! 2. Sweep, per pack (by the index, which a writer reconciles with `packs/` when it opens):
//!    a pack with no live blob is unused; a pack whose unused bytes exceed `--max-unused` is
//!    repacked (its live blobs copied, still sealed and verified, into new packs).
//! 3. Two-phase deletion: an unused pack is first *marked* (`prune/pending`: pack -> time first
//!    found unused) and deleted only by a later prune, once the grace period has passed, if it
//!    is still unused; a marked pack that is needed again (a backup deduplicated against it) is
//!    unmarked. Why: `wal-push` takes no lock and writes its packs before the record naming
//!    them, so a pack nothing references yet may belong to a push in flight; killed writers and,
//!    later, writers on other hosts against object storage (no `flock`, no conditional PUT)
//!    leave the same state. The rule needs neither locks nor conditional writes.
//!
//! Crash safety (each step durable before the next): new packs and their index entries; the
//! marks; per deleted pack, its index entries (so no writer deduplicates against it) and then
//! the file. Killed anywhere, the repository keeps every live blob in a pack the index names,
//! and the next prune finishes the job.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::crypto::blob_ad;
use crate::error::{Error, Result};
use crate::id::{BlobKind, PackId};
use crate::pack::{
    open_blob, pack_path, read_pack_header, BlobEntry, PackWriter, TARGET_PACK_SIZE,
};
use crate::repo::Repository;
use crate::timespec::now_ms;

/// Where the marks of unused packs live (sealed).
const PENDING_PATH: &str = "prune/pending";
/// Associated data of the sealed marks.
const PENDING_AD: &[u8] = b"wayback-prune-pending-v1";

/// What prune may do.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Report the plan, change nothing.
    pub dry_run: bool,
    /// Repack a pack when this fraction (0..1) of its bytes is unused.
    pub max_unused: f64,
    /// Read at most this many bytes of packs to repack (None: no limit).
    pub max_repack_bytes: Option<u64>,
    /// How long a pack stays marked unused before it may be deleted. Zero deletes at once,
    /// which is safe only while nothing else writes (no `wal-push`, no other writer).
    pub grace: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused: 0.05,
            max_repack_bytes: None,
            grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// What prune found and did.
#[derive(Serialize, Debug, Default)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Live blobs (trees and chunks of snapshots, chunks of WAL records).
    pub live_blobs: usize,
    /// Packs and their bytes before.
    pub packs_before: usize,
    /// Bytes of packs before.
    pub bytes_before: u64,
    /// Packs and bytes after (projected for a dry run).
    pub packs_after: usize,
    /// Bytes of packs after.
    pub bytes_after: u64,
    /// Unused packs deleted (grace passed, or `--grace 0`).
    pub packs_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Partly used packs repacked.
    pub packs_repacked: usize,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Unused packs newly marked (deleted by a later prune after the grace period).
    pub packs_marked: usize,
    /// Marked packs still within their grace period.
    pub packs_waiting: usize,
    /// Marked packs that were needed again and unmarked.
    pub packs_unmarked: usize,
    /// Packs skipped because a live blob in them failed to verify (run `check --read-data`).
    pub packs_damaged: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
}

impl PruneReport {
    /// One line of what the prune did (the audit log's entry).
    pub fn summary(&self) -> String {
        format!(
            "deleted {} pack(s) ({} bytes), repacked {} into {}, marked {} unused",
            self.packs_deleted,
            self.bytes_deleted,
            self.packs_repacked,
            self.packs_written,
            self.packs_marked
        )
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Pending {
    version: u32,
    /// Pack id (hex) -> when it was first found unused (ms since epoch).
    packs: HashMap<String, i64>,
}

fn load_pending(repo: &Repository) -> Result<Pending> {
    match repo.be.get(PENDING_PATH) {
        Ok(sealed) => {
            let plain = repo
                .key
                .open(PENDING_AD, &sealed, &|| PENDING_PATH.to_string())?;
            let p: Pending = serde_json::from_slice(&plain)
                .map_err(|e| Error::Corrupt(format!("{PENDING_PATH}: {e}")))?;
            if p.version != 1 {
                return Err(Error::Unsupported(format!(
                    "{PENDING_PATH} has version {}",
                    p.version
                )));
            }
            Ok(p)
        }
        Err(Error::NotFound(_)) => Ok(Pending {
            version: 1,
            ..Pending::default()
        }),
        Err(e) => Err(e),
    }
}

fn save_pending(repo: &Repository, p: &Pending) -> Result<()> {
    let plain = serde_json::to_vec(p).expect("marks serialize");
    repo.be
        .put(PENDING_PATH, &repo.key.seal(PENDING_AD, &plain))
}

/// Every live blob as its index key (kind | id). Refuses when anything that references blobs
/// cannot be read.
pub fn live_blobs(repo: &Repository, progress: &mut dyn FnMut(&str)) -> Result<HashSet<[u8; 33]>> {
    let (snaps, damaged) = repo.snapshots_and_damage()?;
    if let Some((name, e)) = damaged.first() {
        return Err(Error::Corrupt(format!(
            "snapshot manifest {name} is unreadable ({e}); prune refuses to run because what it \
             references is unknown (run `wayback check`)"
        )));
    }
    let mut live: HashSet<[u8; 33]> = HashSet::new();
    for (i, s) in snaps.iter().enumerate() {
        progress(&format!("marking snapshot {}/{}", i + 1, snaps.len()));
        let mut stack = vec![s.root];
        while let Some(t) = stack.pop() {
            if !live.insert(blob_ad(BlobKind::Tree, &t)) {
                continue;
            }
            let tree = repo.read_tree(&t).map_err(|e| {
                Error::Corrupt(format!(
                    "tree {} of snapshot {} is unreadable ({e}); prune refuses to run",
                    t.short(),
                    s.id.short()
                ))
            })?;
            for n in &tree.nodes {
                for c in &n.content {
                    live.insert(blob_ad(BlobKind::Data, &c.id));
                }
                if let Some(sub) = n.subtree {
                    if !live.contains(&blob_ad(BlobKind::Tree, &sub)) {
                        stack.push(sub);
                    }
                }
            }
        }
    }
    for cluster in crate::wal::clusters(repo.be.as_ref())? {
        progress(&format!("marking WAL of {cluster}"));
        for name in crate::wal::list(repo.be.as_ref(), &cluster)? {
            let rec = crate::wal::read_record(repo, &cluster, &name).map_err(|e| {
                Error::Corrupt(format!(
                    "WAL record {cluster}/{name} is unreadable ({e}); prune refuses to run"
                ))
            })?;
            for c in &rec.content {
                live.insert(blob_ad(BlobKind::Data, &c.id));
            }
        }
    }
    Ok(live)
}

#[derive(Default, Clone, Copy)]
struct Usage {
    live_bytes: u64,
    dead_bytes: u64,
    live_blobs: u32,
}

/// Runs prune (see the module doc). The repository must be open for writing.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PruneReport> {
    let started = Instant::now();
    let live = live_blobs(repo, progress)?;
    let mut rep = PruneReport {
        dry_run: opts.dry_run,
        live_blobs: live.len(),
        ..PruneReport::default()
    };
    progress("reading the index");
    let packs: HashMap<PackId, u64> = repo.index.packs()?.into_iter().collect();
    rep.packs_before = packs.len();
    rep.bytes_before = packs.values().sum();
    let mut usage: HashMap<PackId, Usage> = packs.keys().map(|p| (*p, Usage::default())).collect();
    repo.index.for_each_blob(|kind, id, loc| {
        let u = usage.entry(loc.pack).or_default();
        if live.contains(&blob_ad(kind, id)) {
            u.live_bytes += loc.length as u64;
            u.live_blobs += 1;
        } else {
            u.dead_bytes += loc.length as u64;
        }
        Ok(())
    })?;

    let mut pending = load_pending(repo)?;
    let now = now_ms();
    let grace_ms = opts.grace.as_millis().min(i64::MAX as u128) as i64;
    let mut delete: Vec<PackId> = Vec::new();
    let mut repack: Vec<(PackId, Usage)> = Vec::new();
    let mut marks_changed = false;
    for (p, size) in &packs {
        let u = usage.get(p).copied().unwrap_or_default();
        let hex = p.to_hex();
        if u.live_blobs == 0 {
            match pending.packs.get(&hex) {
                _ if opts.grace.is_zero() => delete.push(*p),
                Some(t) if now.saturating_sub(*t) >= grace_ms => delete.push(*p),
                Some(_) => rep.packs_waiting += 1,
                None => {
                    pending.packs.insert(hex, now);
                    rep.packs_marked += 1;
                    marks_changed = true;
                }
            }
            continue;
        }
        if pending.packs.remove(&hex).is_some() {
            rep.packs_unmarked += 1;
            marks_changed = true;
        }
        let total = (u.live_bytes + u.dead_bytes).max(1);
        if u.dead_bytes > 0 && u.dead_bytes as f64 / total as f64 >= opts.max_unused {
            repack.push((*p, u));
        }
        let _ = size;
    }
    // The packs that free the most first, within the repack budget.
    repack.sort_by(|a, b| b.1.dead_bytes.cmp(&a.1.dead_bytes).then(a.0.cmp(&b.0)));
    if let Some(budget) = opts.max_repack_bytes {
        let mut used = 0u64;
        repack.retain(|(p, _)| {
            let s = packs.get(p).copied().unwrap_or(0);
            let ok = used + s <= budget;
            if ok {
                used += s;
            }
            ok
        });
    }
    rep.packs_repacked = repack.len();
    rep.packs_deleted = delete.len();
    rep.bytes_deleted = delete.iter().map(|p| packs[p]).sum();

    if opts.dry_run {
        let repacked_live: u64 = repack.iter().map(|(_, u)| u.live_bytes).sum();
        let repacked_size: u64 = repack.iter().map(|(p, _)| packs[p]).sum();
        rep.bytes_after = rep.bytes_before
            - rep.bytes_deleted
            - if opts.grace.is_zero() {
                repacked_size - repacked_live
            } else {
                0
            };
        rep.packs_after = rep.packs_before - rep.packs_deleted;
        rep.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(rep);
    }

    // Repack: new packs and their index entries are durable before any old pack goes.
    let mut pw = PackWriter::new();
    for (i, (p, _)) in repack.iter().enumerate() {
        progress(&format!("repacking {}/{}", i + 1, repack.len()));
        match live_sealed_blobs(repo, p, &live) {
            Ok(blobs) => {
                for (e, bytes) in blobs {
                    pw.add_sealed(e.kind, e.id, e.raw_length, &bytes);
                    if pw.len() >= TARGET_PACK_SIZE {
                        flush(repo, std::mem::take(&mut pw))?;
                        rep.packs_written += 1;
                    }
                }
                // Its live blobs now live elsewhere: the old pack is unused.
                if opts.grace.is_zero() {
                    delete.push(*p);
                } else {
                    pending.packs.insert(p.to_hex(), now);
                    rep.packs_marked += 1;
                    marks_changed = true;
                }
            }
            Err(e) => {
                tracing::error!(pack = %p, error = %e, "not repacked: a live blob failed to verify");
                rep.packs_damaged.push(p.to_hex());
            }
        }
    }
    if !pw.is_empty() {
        flush(repo, pw)?;
        rep.packs_written += 1;
    }
    rep.packs_repacked -= rep.packs_damaged.len();
    if marks_changed {
        save_pending(repo, &pending)?;
    }
    for (i, p) in delete.iter().enumerate() {
        progress(&format!("deleting {}/{}", i + 1, delete.len()));
        delete_pack(repo, p)?;
        pending.packs.remove(&p.to_hex());
    }
    rep.packs_deleted = delete.len();
    rep.bytes_deleted = delete
        .iter()
        .map(|p| packs.get(p).copied().unwrap_or(0))
        .sum();
    if !delete.is_empty() {
        save_pending(repo, &pending)?;
    }
    let after = repo.index.packs()?;
    rep.packs_after = after.len();
    rep.bytes_after = after.iter().map(|(_, s)| s).sum();
    rep.duration_ms = started.elapsed().as_millis() as u64;
    Ok(rep)
}

/// The live blobs of pack `p` whose index entry points into `p` (a copy elsewhere is the one
/// in use), each read sealed and verified by decrypting it: damage is never copied forward.
fn live_sealed_blobs(
    repo: &Repository,
    p: &PackId,
    live: &HashSet<[u8; 33]>,
) -> Result<Vec<(BlobEntry, Vec<u8>)>> {
    let path = pack_path(p);
    let mut out = Vec::new();
    for e in read_pack_header(repo.be.as_ref(), &repo.key, p)? {
        if !live.contains(&blob_ad(e.kind, &e.id)) {
            continue;
        }
        match repo.index.get(e.kind, &e.id)? {
            Some(l) if l.pack == *p && l.offset == e.offset => {}
            _ => continue,
        }
        let sealed = repo
            .be
            .get_range(&path, e.offset as u64, e.length as usize)?;
        open_blob(&repo.key, e.kind, &e.id, e.raw_length, &sealed, &|| {
            format!("pack {p}")
        })?;
        out.push((e, sealed));
    }
    Ok(out)
}

fn flush(repo: &Repository, pw: PackWriter) -> Result<()> {
    let (id, image, entries) = pw.finish(&repo.key);
    repo.be.put(&pack_path(&id), &image)?;
    repo.index.add_pack(&id, image.len() as u64, &entries)?;
    Ok(())
}

/// Removes a pack: its index entries first (synced), then the file (directory fsynced).
fn delete_pack(repo: &Repository, p: &PackId) -> Result<()> {
    let entries = match read_pack_header(repo.be.as_ref(), &repo.key, p) {
        Ok(e) => e,
        Err(Error::NotFound(_)) => Vec::new(),
        // Unreadable header: the entries as the index has them.
        Err(_) => repo
            .index
            .entries_in(&HashSet::from([*p]))?
            .remove(p)
            .unwrap_or_default(),
    };
    repo.index.remove_pack(p, &entries)?;
    repo.be.delete(&pack_path(p))
}
