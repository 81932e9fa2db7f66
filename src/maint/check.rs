//! `wayback check`: is every snapshot restorable, and (with `--read-data`) is every byte intact?
//!
//! Structure check: every snapshot's trees decrypt and decode, every referenced chunk is in the
//! index, every indexed pack exists with the recorded size. Data check: every pack (or a subset)
//! is read whole, its header authenticated, every blob decrypted and re-hashed; damaged blobs
//! are then mapped back to the files and snapshots that use them, so a person knows what is lost.
//!
//! WAL archive: every record must decrypt and name packs that exist; with `--read-data` every
//! archived file is reassembled and compared with the digest taken at push time, because a
//! point-in-time recovery needs every segment intact, not only the snapshots.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, PackId};
use crate::index::rebuild::list_pack_files;
use crate::pack::{
    decode_entries, decode_trailer, open_blob, pack_path, read_pack_header, HEADER_AD, TRAILER_LEN,
};
use crate::repo::Repository;
use crate::tree::NodeKind;

/// One problem found.
#[derive(Serialize, Debug, Clone)]
pub struct Problem {
    /// Which part is hurt, for scripts: `manifest`, `tree`, `blob`, `pack`, `wal`, `wal-gap`
    /// (segments missing inside a base backup's PITR window) or `key`.
    pub kind: &'static str,
    /// What is wrong.
    pub what: String,
    /// Pack concerned, if any.
    pub pack: Option<String>,
    /// Blob concerned, if any.
    pub blob: Option<String>,
    /// Files using the damaged blob, as `snapshot-id-prefix source time: path`.
    pub affected: Vec<String>,
}

/// Result of a check.
#[derive(Serialize, Debug, Default)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees checked.
    pub trees: usize,
    /// Packs whose data was read.
    pub packs_read: usize,
    /// Archived WAL files checked (records, and content with `--read-data`).
    pub wal_files: usize,
    /// Blobs whose data was verified.
    pub blobs_verified: usize,
    /// Everything wrong.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// The durable record of this check for `status` and the metrics.
    pub fn record(
        &self,
        opts: CheckOptions,
        started: chrono::DateTime<chrono::Utc>,
        seconds: f64,
    ) -> crate::agent::state::CheckRecord {
        crate::agent::state::CheckRecord {
            time: started.to_rfc3339(),
            ok: self.problems.is_empty(),
            duration_s: seconds,
            read_data: opts.read_data,
            subset: opts.subset.map(|(n, m)| format!("{n}/{m}")),
            packs_read: self.packs_read as u64,
            problems: self.problems.len() as u64,
            error: self.problems.first().map(|p| p.what.clone()),
            last_success: None,
        }
    }
}

/// Check options.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Read and verify pack data.
    pub read_data: bool,
    /// Only packs in subset `n` of `m` (1-based), by pack id.
    pub subset: Option<(u32, u32)>,
}

fn in_subset(p: &PackId, subset: Option<(u32, u32)>) -> bool {
    match subset {
        None => true,
        Some((n, m)) => (u32::from_le_bytes(p.0[..4].try_into().expect("4")) % m) + 1 == n,
    }
}

/// Runs the check, reporting progress as (done, total) of the current phase.
pub fn check(
    repo: &Repository,
    opts: CheckOptions,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<CheckReport> {
    let mut rep = CheckReport::default();
    let (snaps, bad_manifests) = repo.snapshots_and_damage()?;
    rep.snapshots = snaps.len() + bad_manifests.len();
    for (name, e) in bad_manifests {
        rep.problems.push(Problem {
            kind: "manifest",
            what: format!("snapshot manifest snapshots/{name} unreadable: {e}"),
            pack: None,
            blob: None,
            affected: vec![format!("snapshot {}", &name[..8.min(name.len())])],
        });
    }
    // Packs are listed after the manifests: a snapshot's packs are durable before it is.
    let on_disk: HashSet<PackId> = list_pack_files(repo.be.as_ref())?.into_iter().collect();
    let indexed = repo.index.packs()?;
    let unindexed = unindexed_packs(repo, &on_disk, &indexed, &mut rep)?;
    check_keys(repo, &mut rep)?;
    // Trees that cannot be read and data blobs no pack holds; named with the files they hurt
    // at the end, with the damaged blobs.
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let mut lost_trees: BTreeMap<BlobId, String> = BTreeMap::new();
    let mut missing: HashSet<(BlobKind, BlobId)> = HashSet::new();
    for (i, s) in snaps.iter().enumerate() {
        progress("trees", i as u64, snaps.len() as u64);
        let mut stack = vec![s.root];
        while let Some(t) = stack.pop() {
            if !seen_trees.insert(t) {
                continue;
            }
            let tree = match repo.read_tree(&t) {
                Ok(tr) => tr,
                Err(e) => {
                    lost_trees.insert(t, e.to_string());
                    continue;
                }
            };
            for n in &tree.nodes {
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
                if n.kind == NodeKind::File {
                    for c in &n.content {
                        if !missing.contains(&(BlobKind::Data, c.id))
                            && !unindexed.blobs.contains(&(BlobKind::Data, c.id))
                            && repo.index.get(BlobKind::Data, &c.id)?.is_none()
                        {
                            missing.insert((BlobKind::Data, c.id));
                        }
                    }
                }
            }
        }
    }
    rep.trees = seen_trees.len();
    for (p, size) in &indexed {
        if !on_disk.contains(p) {
            rep.problems.push(Problem {
                kind: "pack",
                what: "pack is missing".into(),
                pack: Some(p.to_hex()),
                blob: None,
                affected: vec![],
            });
        } else if opts.read_data {
            // Size mismatch is reported by the data read below.
        } else if repo.be.size(&pack_path(p))? != *size {
            rep.problems.push(Problem {
                kind: "pack",
                what: format!("pack size differs from the index (expected {size})"),
                pack: Some(p.to_hex()),
                blob: None,
                affected: vec![],
            });
        }
    }
    let mut damaged: HashMap<(BlobKind, BlobId), (PackId, String)> = HashMap::new();
    // Blobs whose pack is gone are damaged too.
    if indexed.iter().any(|(p, _)| !on_disk.contains(p)) {
        for (kind, id, loc) in repo.index.blobs()? {
            if !on_disk.contains(&loc.pack) {
                damaged.insert((kind, id), (loc.pack, "pack is missing".into()));
            }
        }
    }
    if opts.read_data {
        let chosen: Vec<&PackId> = indexed
            .iter()
            .map(|(p, _)| p)
            .filter(|p| on_disk.contains(p))
            .chain(unindexed.packs.iter())
            .filter(|p| in_subset(p, opts.subset))
            .collect();
        for (i, p) in chosen.iter().enumerate() {
            progress("packs", i as u64, chosen.len() as u64);
            rep.packs_read += 1;
            verify_pack(repo, p, &mut rep, &mut damaged)?;
        }
    }
    check_wal(repo, opts, &on_disk, &mut rep, progress)?;
    if damaged.is_empty() && missing.is_empty() && lost_trees.is_empty() {
        return Ok(rep);
    }
    let ids: HashSet<BlobId> = damaged
        .keys()
        .chain(missing.iter())
        .map(|(_, id)| *id)
        .chain(lost_trees.keys().copied())
        .collect();
    let affected = affected_files(repo, &snaps, &ids)?;
    let users = |id: &BlobId| affected.get(id).cloned().unwrap_or_default();
    for (t, why) in &lost_trees {
        rep.problems.push(Problem {
            kind: "tree",
            what: format!("tree unreadable: {why}"),
            pack: None,
            blob: Some(t.to_hex()),
            affected: users(t),
        });
    }
    let mut missing: Vec<_> = missing.into_iter().collect();
    missing.sort();
    for (kind, id) in &missing {
        rep.problems.push(Problem {
            kind: "blob",
            what: format!("{kind:?} blob referenced by a snapshot is in no pack"),
            pack: None,
            blob: Some(id.to_hex()),
            affected: users(id),
        });
    }
    let mut by_pack: BTreeMap<String, Vec<(BlobKind, BlobId, String)>> = BTreeMap::new();
    for ((k, id), (p, why)) in &damaged {
        by_pack
            .entry(p.to_hex())
            .or_default()
            .push((*k, *id, why.clone()));
    }
    for (p, mut blobs) in by_pack {
        blobs.sort();
        for (k, id, why) in blobs {
            // A tree already reported unreadable is not reported twice.
            if k == BlobKind::Tree && lost_trees.contains_key(&id) {
                continue;
            }
            rep.problems.push(Problem {
                kind: "blob",
                what: format!("damaged {k:?} blob: {why}"),
                pack: Some(p.clone()),
                blob: Some(id.to_hex()),
                affected: users(&id),
            });
        }
    }
    Ok(rep)
}

/// Packs on disk that the index does not know, and the blobs their headers list.
#[derive(Default)]
struct Unindexed {
    packs: Vec<PackId>,
    blobs: HashSet<(BlobKind, BlobId)>,
}

/// Reads the headers of packs the index lacks. Why: the index is a cache, and a reader's may
/// lag the packs (an interrupted `index rebuild`, a writer killed before it indexed its last
/// pack, WAL packs, another process's index); every read path finds such blobs by their pack
/// header, so `check` must too instead of calling them lost, and must verify those packs'
/// data as well. A header that cannot be read is damage.
fn unindexed_packs(
    repo: &Repository,
    on_disk: &HashSet<PackId>,
    indexed: &[(PackId, u64)],
    rep: &mut CheckReport,
) -> Result<Unindexed> {
    let known: HashSet<&PackId> = indexed.iter().map(|(p, _)| p).collect();
    let mut out = Unindexed::default();
    let mut missing: Vec<&PackId> = on_disk.iter().filter(|p| !known.contains(p)).collect();
    missing.sort();
    for p in missing {
        match read_pack_header(repo.be.as_ref(), &repo.key, p) {
            Ok(entries) => {
                out.blobs.extend(entries.iter().map(|e| (e.kind, e.id)));
                out.packs.push(*p);
            }
            // Deleted since the listing (a prune running beside this check).
            Err(Error::NotFound(_)) => {}
            Err(e) => rep.problems.push(Problem {
                kind: "pack",
                what: format!("pack header unreadable (pack not in the index): {e}"),
                pack: Some(p.to_hex()),
                blob: None,
                affected: vec![],
            }),
        }
    }
    Ok(out)
}

fn check_wal(
    repo: &Repository,
    opts: CheckOptions,
    on_disk: &HashSet<PackId>,
    rep: &mut CheckReport,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<()> {
    let snaps = repo.snapshots()?;
    for cluster in crate::wal::clusters(repo.be.as_ref())? {
        let names = crate::wal::list(repo.be.as_ref(), &cluster)?;
        // The segment size, from the first readable segment record.
        let mut seg_size = None;
        for (i, name) in names.iter().enumerate() {
            progress(&format!("wal {cluster}"), i as u64, names.len() as u64);
            rep.wal_files += 1;
            let affected = vec![format!("WAL {cluster}/{name}")];
            let rec = match crate::wal::read_record(repo, &cluster, name) {
                Ok(r) => r,
                Err(e) => {
                    rep.problems.push(Problem {
                        kind: "wal",
                        what: format!("WAL record unreadable: {e}"),
                        pack: None,
                        blob: None,
                        affected,
                    });
                    continue;
                }
            };
            if seg_size.is_none()
                && matches!(
                    crate::wal::names::parse(name),
                    Some(crate::wal::names::WalName::Segment { .. })
                )
            {
                seg_size = Some(rec.size);
            }
            // A chunk whose recorded pack is gone may live on elsewhere (`repair packs`
            // salvaged it into a new pack; readers find it through the index).
            let mut gone = Vec::new();
            for (c, l) in rec.content.iter().zip(&rec.locations) {
                if !on_disk.contains(&l.pack)
                    && !repo
                        .index
                        .get(BlobKind::Data, &c.id)?
                        .is_some_and(|x| on_disk.contains(&x.pack))
                    && !gone.contains(&l.pack)
                {
                    gone.push(l.pack);
                }
            }
            for p in &gone {
                rep.problems.push(Problem {
                    kind: "wal",
                    what: "pack holding archived WAL is missing".into(),
                    pack: Some(p.to_hex()),
                    blob: None,
                    affected: affected.clone(),
                });
            }
            let chosen = rec
                .locations
                .first()
                .is_none_or(|l| in_subset(&l.pack, opts.subset));
            if opts.read_data && gone.is_empty() && chosen {
                if let Err(e) = crate::wal::verify(repo, &rec) {
                    rep.problems.push(Problem {
                        kind: "wal",
                        what: format!("archived WAL content damaged: {e}"),
                        pack: None,
                        blob: None,
                        affected,
                    });
                }
            }
        }
        if let Some(size) = seg_size {
            wal_gaps(&cluster, &names, size, &snaps, rep);
        }
    }
    Ok(())
}

/// Gaps inside a PITR window: a segment missing after the start segment of a base backup of
/// the cluster (on its timeline or a later one) stops every recovery from that base backup
/// at the gap. Gaps wholly before the oldest base backup's start are not problems: nothing
/// replays through them (WAL retention deletes such segments on purpose, and a cluster
/// archived before its first base backup has WAL no recovery needs).
fn wal_gaps(
    cluster: &str,
    names: &[String],
    seg_size: u64,
    snaps: &[crate::snapshot::Snapshot],
    rep: &mut CheckReport,
) {
    use crate::maint::wal_retention::BaseBackup;
    let per = crate::wal::names::segs_per_log(seg_size);
    let lin = |name: &str| match crate::wal::names::parse(name) {
        Some(crate::wal::names::WalName::Segment { log, seg, .. }) => {
            Some(log as u64 * per + seg as u64)
        }
        _ => None,
    };
    let bases: Vec<BaseBackup> = snaps
        .iter()
        .filter_map(|s| BaseBackup::of(s, cluster))
        .collect();
    for (tli, first, last) in crate::wal::gaps(names, seg_size) {
        let Some(end) = lin(&last) else { continue };
        let hit: Vec<&BaseBackup> = bases
            .iter()
            .filter(|b| b.tli <= tli && b.start.0 as u64 * per + b.start.1 as u64 <= end)
            .collect();
        if hit.is_empty() {
            continue;
        }
        let range = if first == last {
            first.clone()
        } else {
            format!("{first}..{last}")
        };
        rep.problems.push(Problem {
            kind: "wal-gap",
            what: format!(
                "WAL gap in cluster {cluster}: segment(s) {range} of timeline {tli} missing; \
                 point-in-time recovery from base backup(s) {} cannot go past {first}",
                hit.iter()
                    .map(|b| b.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            pack: None,
            blob: None,
            affected: vec![format!("WAL {cluster}/{range}")],
        });
    }
}

fn verify_pack(
    repo: &Repository,
    p: &PackId,
    rep: &mut CheckReport,
    damaged: &mut HashMap<(BlobKind, BlobId), (PackId, String)>,
) -> Result<()> {
    let image = repo.be.get(&pack_path(p))?;
    let mark_all = |damaged: &mut HashMap<_, _>, why: &str| -> Result<()> {
        for (kind, id, loc) in repo.index.blobs()? {
            if loc.pack == *p {
                damaged.insert((kind, id), (*p, why.to_string()));
            }
        }
        Ok(())
    };
    if PackId(*blake3::hash(&image).as_bytes()) != *p {
        tracing::warn!(pack = %p, "pack content does not match its name; verifying blob by blob");
    }
    // Verify each indexed blob of this pack where the index says it is.
    let header = (|| -> Result<Vec<_>> {
        if image.len() < TRAILER_LEN {
            return Err(Error::Corrupt("shorter than a trailer".into()));
        }
        let (hlen, _) = decode_trailer(p, &image[image.len() - TRAILER_LEN..])?;
        let data_end = image
            .len()
            .checked_sub(TRAILER_LEN + hlen as usize)
            .ok_or_else(|| Error::Corrupt("header longer than pack".into()))?;
        let plain = repo.key.open(
            HEADER_AD,
            &image[data_end..image.len() - TRAILER_LEN],
            &|| format!("pack {p} header"),
        )?;
        decode_entries(p, &plain, data_end as u64)
    })();
    let entries = match header {
        Ok(e) => e,
        Err(e) => {
            rep.problems.push(Problem {
                kind: "pack",
                what: format!("pack header unreadable: {e}"),
                pack: Some(p.to_hex()),
                blob: None,
                affected: vec![],
            });
            // Fall back to the index's view of where blobs are.
            let mut es = Vec::new();
            for (kind, id, loc) in repo.index.blobs()? {
                if loc.pack == *p {
                    es.push(crate::pack::BlobEntry {
                        kind,
                        id,
                        offset: loc.offset,
                        length: loc.length,
                        raw_length: loc.raw_length,
                    });
                }
            }
            if es.is_empty() {
                mark_all(damaged, "pack header unreadable")?;
            }
            es
        }
    };
    for e in entries {
        let end = e.offset as usize + e.length as usize;
        let r = if end > image.len() {
            Err(Error::Corrupt(
                "blob extends past end of pack (truncated)".into(),
            ))
        } else {
            open_blob(
                &repo.key,
                e.kind,
                &e.id,
                e.raw_length,
                &image[e.offset as usize..end],
                &|| format!("pack {p}"),
            )
            .map(|_| ())
        };
        rep.blobs_verified += 1;
        if let Err(err) = r {
            damaged.insert((e.kind, e.id), (*p, err.to_string()));
        }
    }
    Ok(())
}

/// Every file, directory and snapshot root that uses one of `ids`, as
/// `short-id source time: path`. Walks every snapshot whole, past unreadable trees (their
/// subtrees are named by the directory entry that points to them), so one damaged directory
/// does not hide damage later in the same snapshot.
fn affected_files(
    repo: &Repository,
    snaps: &[crate::snapshot::Snapshot],
    ids: &HashSet<BlobId>,
) -> Result<HashMap<BlobId, Vec<String>>> {
    let mut out: HashMap<BlobId, Vec<String>> = HashMap::new();
    for s in snaps {
        let label = format!("{} {} {}", s.id.short(), s.source, s.time_name());
        if ids.contains(&s.root) {
            out.entry(s.root)
                .or_default()
                .push(format!("{label}: / (root tree)"));
        }
        let mut stack: Vec<(BlobId, String)> = vec![(s.root, String::new())];
        while let Some((t, dir)) = stack.pop() {
            let Ok(tree) = repo.read_tree(&t) else {
                continue;
            };
            for n in &tree.nodes {
                let p = format!("{dir}/{}", n.name_lossy());
                let mut hurt = false;
                for c in &n.content {
                    if ids.contains(&c.id) && !hurt {
                        out.entry(c.id).or_default().push(format!("{label}: {p}"));
                        hurt = true;
                    }
                }
                if let Some(sub) = n.subtree {
                    if ids.contains(&sub) {
                        out.entry(sub)
                            .or_default()
                            .push(format!("{label}: {p}/ (directory)"));
                    }
                    stack.push((sub, p));
                }
            }
        }
    }
    Ok(out)
}

/// Key files that are not well formed (unreadable, not JSON of this version, bounds, hex) or
/// whose checksum does not match (any flipped byte, the sealed key's too). A key file written
/// before the checksum existed has none: there a flipped byte inside the sealed key reads as
/// a wrong passphrase, found only when whoever holds that passphrase opens.
fn check_keys(repo: &Repository, rep: &mut CheckReport) -> Result<()> {
    for id in repo.be.list("keys")? {
        if let Err(e) = crate::repo::keys::read_key(repo.be.as_ref(), &id) {
            rep.problems.push(Problem {
                kind: "key",
                what: format!("key file unreadable: {e}"),
                pack: None,
                blob: None,
                affected: vec![format!("key file keys/{id}")],
            });
        }
    }
    Ok(())
}
