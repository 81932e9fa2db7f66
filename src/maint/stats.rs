//! `wayback stats`: what the repository holds and what forgetting a snapshot would give back.
//!
//! Why unique bytes per snapshot: that is the number an admin needs before `forget` (restic
//! prints it only as a prune estimate, borg as "unique chunks" per archive). A blob is unique
//! to a snapshot when no other snapshot and no WAL record references it; its stored (sealed)
//! size is what a prune after forgetting that snapshot alone frees.
//!
//! Cost: every snapshot's trees are walked (each distinct tree once per snapshot) and the
//! index is read once; memory is one small map entry per live blob, like prune's mark phase.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::crypto::blob_ad;
use crate::error::Result;
use crate::id::BlobKind;
use crate::repo::Repository;

/// Owner marker of a blob used by more than one snapshot (or by WAL).
const SHARED: u32 = u32::MAX;

/// Per-snapshot figures.
#[derive(Serialize, Debug)]
pub struct SnapshotStats {
    /// Snapshot id (short).
    pub id: String,
    /// Source.
    pub source: String,
    /// Time (RFC 3339).
    pub time: String,
    /// Bytes of files in the snapshot (logical size).
    pub logical_bytes: u64,
    /// Stored bytes only this snapshot uses: what forgetting it (and a prune) frees.
    pub unique_bytes: u64,
}

/// Per-cluster WAL archive figures.
#[derive(Serialize, Debug)]
pub struct WalStats {
    /// Cluster.
    pub cluster: String,
    /// Archived files.
    pub files: usize,
    /// Their bytes (logical).
    pub logical_bytes: u64,
    /// Stored bytes of their chunks.
    pub stored_bytes: u64,
}

/// The whole report.
#[derive(Serialize, Debug)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: usize,
    /// Sum of the snapshots' logical sizes.
    pub logical_bytes: u64,
    /// Plain bytes of the distinct blobs snapshots and WAL use.
    pub unique_plain_bytes: u64,
    /// Stored (compressed, sealed) bytes of those blobs.
    pub live_stored_bytes: u64,
    /// All pack bytes (live and not yet pruned).
    pub pack_bytes: u64,
    /// Packs.
    pub packs: usize,
    /// logical / unique plain (how much deduplication saves).
    pub dedup_ratio: f64,
    /// unique plain / live stored (how much compression saves).
    pub compression_ratio: f64,
    /// Per snapshot (filtered by source when asked).
    pub per_snapshot: Vec<SnapshotStats>,
    /// WAL archive per cluster.
    pub wal: Vec<WalStats>,
    /// Free bytes on the repository's filesystem.
    pub fs_free_bytes: u64,
    /// Size of the repository's filesystem.
    pub fs_total_bytes: u64,
}

/// Computes the report; `sources` limits the per-snapshot list (empty: all).
pub fn stats(repo: &Repository, sources: &[String]) -> Result<Stats> {
    let snaps = repo.snapshots()?;
    // Owner of each blob: the one snapshot (index into `snaps`) using it, or SHARED.
    let mut owner: HashMap<[u8; 33], u32> = HashMap::new();
    let mut claim = |k: [u8; 33], who: u32| {
        owner
            .entry(k)
            .and_modify(|o| {
                if *o != who {
                    *o = SHARED
                }
            })
            .or_insert(who);
    };
    for (i, s) in snaps.iter().enumerate() {
        let mut seen = HashSet::new();
        let mut stack = vec![s.root];
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            claim(blob_ad(BlobKind::Tree, &t), i as u32);
            for n in &repo.read_tree(&t)?.nodes {
                for c in &n.content {
                    claim(blob_ad(BlobKind::Data, &c.id), i as u32);
                }
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
            }
        }
    }
    let mut wal_blobs: Vec<(String, HashSet<[u8; 33]>, usize, u64)> = Vec::new();
    for cluster in crate::wal::clusters(repo.be.as_ref())? {
        let mut set = HashSet::new();
        let (mut files, mut logical) = (0, 0);
        for name in crate::wal::list(repo.be.as_ref(), &cluster)? {
            let rec = crate::wal::read_record(repo, &cluster, &name)?;
            files += 1;
            logical += rec.size;
            for c in &rec.content {
                let k = blob_ad(BlobKind::Data, &c.id);
                claim(k, SHARED);
                set.insert(k);
            }
        }
        wal_blobs.push((cluster, set, files, logical));
    }
    let mut unique = vec![0u64; snaps.len()];
    let mut wal_stored: BTreeMap<String, u64> = BTreeMap::new();
    let (mut plain, mut stored) = (0u64, 0u64);
    repo.index.for_each_blob(|kind, id, loc| {
        let k = blob_ad(kind, id);
        let Some(&o) = owner.get(&k) else {
            return Ok(());
        };
        plain += loc.raw_length as u64;
        stored += loc.length as u64;
        if o != SHARED {
            unique[o as usize] += loc.length as u64;
        }
        for (c, set, _, _) in &wal_blobs {
            if set.contains(&k) {
                *wal_stored.entry(c.clone()).or_default() += loc.length as u64;
            }
        }
        Ok(())
    })?;
    let packs = repo.index.packs()?;
    let logical: u64 = snaps.iter().map(|s| s.stats.total_bytes).sum::<u64>()
        + wal_blobs.iter().map(|w| w.3).sum::<u64>();
    let per_snapshot = snaps
        .iter()
        .enumerate()
        .filter(|(_, s)| sources.is_empty() || sources.contains(&s.source))
        .map(|(i, s)| SnapshotStats {
            id: s.id.short(),
            source: s.source.clone(),
            time: s.time_name(),
            logical_bytes: s.stats.total_bytes,
            unique_bytes: unique[i],
        })
        .collect();
    let (fs_free_bytes, fs_total_bytes) = repo
        .be
        .local_root()
        .map(nix::sys::statvfs::statvfs)
        .unwrap_or(Err(nix::errno::Errno::ENOTSUP))
        .map(|v| {
            let f = v.fragment_size();
            (v.blocks_available() * f, v.blocks() * f)
        })
        .unwrap_or((0, 0));
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Ok(Stats {
        snapshots: snaps.len(),
        logical_bytes: logical,
        unique_plain_bytes: plain,
        live_stored_bytes: stored,
        pack_bytes: packs.iter().map(|(_, s)| s).sum(),
        packs: packs.len(),
        dedup_ratio: ratio(logical, plain),
        compression_ratio: ratio(plain, stored),
        per_snapshot,
        wal: wal_blobs
            .into_iter()
            .map(|(cluster, _, files, logical_bytes)| WalStats {
                stored_bytes: wal_stored.get(&cluster).copied().unwrap_or(0),
                cluster,
                files,
                logical_bytes,
            })
            .collect(),
        fs_free_bytes,
        fs_total_bytes,
    })
}

/// Fraction of the repository's filesystem in use (the agent warns above 80%).
pub fn fs_used_fraction(root: &std::path::Path) -> Option<f64> {
    let v = nix::sys::statvfs::statvfs(root).ok()?;
    let total = v.blocks() as f64;
    (total > 0.0).then(|| 1.0 - v.blocks_available() as f64 / total)
}
