//! `wayback prune`: give back the space of forgotten snapshots and retired WAL.
//!
//! 1. Mark: every blob reachable from a snapshot manifest (trees walked once each) or named by
//!    a WAL record is live. A manifest, tree or record that cannot be read stops prune before
//!    anything is deleted: what it references is unknown, so nothing may be called unused.
//! 2. Sweep, per pack (by the index, which a writer reconciles with `packs/` when it opens):
//!    a pack with no live blob is unused; partly used packs are repacked (their live blobs
//!    copied, still sealed and verified, into new packs), the most wasteful first, until the
//!    unused bytes left in the repository are at most `--max-unused` of the live bytes. A global
//!    budget, as restic's: a per-pack threshold rewrote almost every pack of a daily history
//!    (186 of 201 in `scripts/bench-prune.sh`) to free the last few percent.
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
use crate::pack::{open_blob, pack_path, read_pack_header, BlobEntry, PackWriter};
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
    /// Unused bytes that may stay after prune, as a fraction (0..1) of the live bytes: partly
    /// used packs are repacked, most unused first, until no more than this is left.
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
    for p in packs.keys() {
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
                }
            }
            continue;
        }
        if pending.packs.remove(&hex).is_some() {
            rep.packs_unmarked += 1;
        }
        if u.dead_bytes > 0 {
            repack.push((*p, u));
        }
    }
    let repack = choose_repacks(repack, &packs, opts);
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

    // Repack: new packs and their index entries are durable before any old pack goes. A
    // flusher thread writes and fsyncs each new pack while the next old ones are read and
    // verified, so the two cores overlap I/O and decryption.
    let (tx, rx) = crossbeam_channel::bounded::<PackWriter>(1);
    let flushed = std::thread::scope(|s| -> Result<usize> {
        let flusher = s.spawn(move || -> Result<usize> {
            let mut n = 0;
            for pw in rx {
                flush(repo, pw)?;
                n += 1;
            }
            Ok(n)
        });
        let fed = feed_repacks(
            repo,
            &repack,
            &live,
            opts,
            now,
            &mut pending,
            &mut rep,
            progress,
            &tx,
        );
        drop(tx);
        // A flusher error first: feeding stops (`None`) when the flusher hung up.
        let mut n = flusher.join().expect("flusher panicked")?;
        for pw in fed?.into_iter().flatten().filter(|pw| !pw.is_empty()) {
            flush(repo, pw)?;
            n += 1;
        }
        Ok(n)
    })?;
    rep.packs_written = flushed;
    for (p, _) in &repack {
        if opts.grace.is_zero() && !rep.packs_damaged.contains(&p.to_hex()) {
            delete.push(*p);
        }
    }
    rep.packs_repacked -= rep.packs_damaged.len();
    if rep.packs_marked + rep.packs_unmarked > 0 {
        save_pending(repo, &pending)?;
    }
    progress(&format!("deleting {} packs", delete.len()));
    // A prune whose lease was lost (this host stalled past it) may now run beside a writer
    // that deduplicated against these packs: delete nothing.
    repo.check_lease()?;
    delete_packs(repo, &delete)?;
    for p in &delete {
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

/// Reads and verifies the live blobs of each pack to repack, sending full new packs to the
/// flusher; returns the last, partly filled ones (`None` if the flusher hung up: its error is
/// the one to report). Packs whose blobs fail to verify are listed as damaged and kept. Trees
/// and data go to packs of their own, as a backup writes them (see `ingest::run_packer`), so
/// repacking old mixed packs also separates them.
#[allow(clippy::too_many_arguments)]
fn feed_repacks(
    repo: &Repository,
    repack: &[(PackId, Usage)],
    live: &HashSet<[u8; 33]>,
    opts: &PruneOptions,
    now: i64,
    pending: &mut Pending,
    rep: &mut PruneReport,
    progress: &mut dyn FnMut(&str),
    tx: &crossbeam_channel::Sender<PackWriter>,
) -> Result<Option<[PackWriter; 2]>> {
    let mut pws = [PackWriter::new(), PackWriter::new()];
    for (i, (p, _)) in repack.iter().enumerate() {
        progress(&format!("repacking {}/{}", i + 1, repack.len()));
        match live_sealed_blobs(repo, p, live) {
            Ok(blobs) => {
                for (e, bytes) in blobs {
                    let pw = &mut pws[usize::from(e.kind == BlobKind::Tree)];
                    pw.add_sealed(e.kind, e.id, e.raw_length, &bytes);
                    if pw.is_full() && tx.send(std::mem::take(pw)).is_err() {
                        return Ok(None);
                    }
                }
                // Its live blobs now live elsewhere (once flushed): the old pack is unused.
                if !opts.grace.is_zero() {
                    pending.packs.insert(p.to_hex(), now);
                    rep.packs_marked += 1;
                }
            }
            Err(e) => {
                tracing::error!(pack = %p, error = %e, "not repacked: a live blob failed to verify");
                rep.packs_damaged.push(p.to_hex());
            }
        }
    }
    Ok(Some(pws))
}

/// The partly used packs worth repacking: by unused share, most first (ties by unused bytes,
/// then id, so plans are deterministic), until the unused bytes left fit in `max_unused` of
/// the live bytes; then cut to the `max_repack_bytes` budget.
fn choose_repacks(
    mut partly: Vec<(PackId, Usage)>,
    packs: &HashMap<PackId, u64>,
    opts: &PruneOptions,
) -> Vec<(PackId, Usage)> {
    let live: u64 = partly.iter().map(|(_, u)| u.live_bytes).sum();
    let mut left: u64 = partly.iter().map(|(_, u)| u.dead_bytes).sum();
    let allowed = (live as f64 * opts.max_unused) as u64;
    let share = |u: &Usage| u.dead_bytes as f64 / (u.live_bytes + u.dead_bytes).max(1) as f64;
    partly.sort_by(|a, b| {
        share(&b.1)
            .total_cmp(&share(&a.1))
            .then(b.1.dead_bytes.cmp(&a.1.dead_bytes))
            .then(a.0.cmp(&b.0))
    });
    let mut used = 0u64;
    let mut out = Vec::new();
    for (p, u) in partly {
        if left <= allowed {
            break;
        }
        let size = packs.get(&p).copied().unwrap_or(0);
        if opts.max_repack_bytes.is_some_and(|b| used + size > b) {
            continue;
        }
        used += size;
        left -= u.dead_bytes;
        out.push((p, u));
    }
    out
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

/// Removes packs: all their index entries first (one synced batch, so no writer dedups
/// against them), then the files (directories fsynced). Killed between the two, the packs are
/// still on disk and unindexed: the next writer indexes them again and the next prune finds
/// them unused.
fn delete_packs(repo: &Repository, packs: &[PackId]) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    repo.index.forget_packs(&packs.iter().copied().collect())?;
    let paths: Vec<String> = packs.iter().map(pack_path).collect();
    repo.be.delete_many(&paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(usage: &[(u8, u64, u64)], max_unused: f64, budget: Option<u64>) -> Vec<u8> {
        let partly: Vec<(PackId, Usage)> = usage
            .iter()
            .map(|&(n, live, dead)| {
                let u = Usage {
                    live_bytes: live,
                    dead_bytes: dead,
                    live_blobs: 1,
                };
                (PackId([n; 32]), u)
            })
            .collect();
        let sizes = partly
            .iter()
            .map(|(p, u)| (*p, u.live_bytes + u.dead_bytes))
            .collect();
        let opts = PruneOptions {
            max_unused,
            max_repack_bytes: budget,
            ..PruneOptions::default()
        };
        choose_repacks(partly, &sizes, &opts)
            .into_iter()
            .map(|(p, _)| p.0[0])
            .collect()
    }

    #[test]
    fn repacks_the_most_wasteful_packs_until_the_unused_bytes_fit_the_budget() {
        // live 100+50+90+49 = 289, unused 0+50+10+1 = 61 (pack 1 has no unused byte and is
        // never a candidate in practice, but the plan must not pick it first either).
        let packs = [(1, 100, 0), (2, 50, 50), (3, 90, 10), (4, 49, 1)];
        // 5% of 289 = 14: after pack 2 (50%) 11 are left, within budget.
        assert_eq!(plan(&packs, 0.05, None), vec![2]);
        // 1% of 289 = 2: pack 3 (10%) too; pack 4's single byte may stay.
        assert_eq!(plan(&packs, 0.01, None), vec![2, 3]);
        // 0%: every pack with an unused byte, most wasteful first.
        assert_eq!(plan(&packs, 0.0, None), vec![2, 3, 4]);
        // 100%: nothing.
        assert_eq!(plan(&packs, 1.0, None), Vec::<u8>::new());
        // A repack budget (pack sizes 100, 100, 50) skips what does not fit and goes on.
        assert_eq!(plan(&packs, 0.0, Some(120)), vec![2]);
        assert_eq!(plan(&packs, 0.0, Some(99)), vec![4]);
        // Equal shares: more unused bytes first, then the pack id.
        assert_eq!(
            plan(&[(9, 10, 10), (8, 20, 20), (7, 20, 20)], 0.0, None),
            vec![7, 8, 9]
        );
    }
}
