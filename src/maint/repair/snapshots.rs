//! `wayback repair snapshots`: for each snapshot that references lost data, a new snapshot
//! without the damaged files.
//!
//! Every tree of every snapshot is read, and every data chunk a file uses is read and verified
//! (as `check --read-data` does, because a chunk that is indexed may still be damaged). A file
//! with any chunk that fails is omitted (not truncated: a file with a hole in the middle is
//! wrong bytes in disguise); a directory whose tree is unreadable is omitted with everything
//! in it. Trees are rewritten bottom-up: a changed directory gets a new tree, so its parent
//! changes, up to a new root. Unchanged subtrees keep their ids (nothing is copied).
//!
//! The new snapshot is the old manifest with the new root, the tag `repaired`,
//! `repaired_from` naming the original, `complete: false` and one warning per omitted path,
//! stamped 1 ms after the original (the next free millisecond of its source: the mount names
//! snapshots by time, so both must stay reachable). The original stays unless `--forget`: then
//! its manifest is deleted only after the new one is durable. A snapshot whose manifest or
//! root tree is unreadable cannot be repaired (nothing is left to keep) and is reported.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::id::{BlobId, BlobKind, TreeId};
use crate::ingest::{with_saver, Counters, Saver};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};

/// The tag every repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// What `repair snapshots` found and did.
#[derive(Serialize, Debug, Default)]
pub struct SnapshotsReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots examined (readable manifests).
    pub snapshots: usize,
    /// Snapshots that lost data, and their replacements.
    pub repaired: Vec<Repaired>,
    /// Snapshots that cannot be repaired: unreadable manifest or root tree.
    pub unrepairable: Vec<Unrepairable>,
}

/// One damaged snapshot and its replacement.
#[derive(Serialize, Debug)]
pub struct Repaired {
    /// The damaged snapshot (hex id).
    pub original: String,
    /// Its source.
    pub source: String,
    /// Its time name.
    pub time: String,
    /// The new snapshot (hex id); `None` in a dry run or when an identical repair exists.
    pub new: Option<String>,
    /// An earlier repair with the same content already exists (hex id): nothing written.
    pub already: Option<String>,
    /// Paths left out, each with why.
    pub omitted: Vec<String>,
    /// The original's manifest was deleted (`--forget`).
    pub forgotten: bool,
}

/// A snapshot nothing can be salvaged from.
#[derive(Serialize, Debug)]
pub struct Unrepairable {
    /// Snapshot id (hex) or manifest file name.
    pub snapshot: String,
    /// Why.
    pub why: String,
}

impl SnapshotsReport {
    /// One line for the audit log.
    pub fn summary(&self) -> String {
        format!(
            "{} snapshot(s) repaired ({} path(s) omitted), {} unrepairable",
            self.repaired.len(),
            self.repaired.iter().map(|r| r.omitted.len()).sum::<usize>(),
            self.unrepairable.len()
        )
    }
}

/// What a tree became.
#[derive(Clone)]
enum Outcome {
    /// Every file in it is intact.
    Intact,
    /// Its own blob is unreadable.
    Lost(String),
    /// Rewritten without some paths (relative to it, with why) and files and bytes dropped.
    Changed {
        id: TreeId,
        omitted: Vec<String>,
        files: u64,
        bytes: u64,
    },
}

/// Walks and rewrites trees, remembering what each tree and chunk turned out to be (trees and
/// chunks are shared between snapshots; each is read once).
struct Rewriter<'a> {
    repo: &'a Repository,
    trees: HashMap<TreeId, Outcome>,
    chunks: HashMap<BlobId, bool>,
}

impl Rewriter<'_> {
    fn chunk_ok(&mut self, id: &BlobId) -> Result<bool> {
        if let Some(ok) = self.chunks.get(id) {
            return Ok(*ok);
        }
        let ok = match self.repo.read_blob(BlobKind::Data, id) {
            Ok(_) => true,
            Err(e) if e.is_corrupt() || e.is_not_found() => false,
            Err(e) => return Err(e),
        };
        self.chunks.insert(*id, ok);
        Ok(ok)
    }

    fn rewrite(
        &mut self,
        t: &TreeId,
        store: &mut dyn FnMut(&mut Tree) -> Result<TreeId>,
    ) -> Result<Outcome> {
        if let Some(o) = self.trees.get(t) {
            return Ok(o.clone());
        }
        let tree = match self.repo.read_tree(t) {
            Ok(tr) => tr,
            Err(e) if e.is_corrupt() || e.is_not_found() => {
                let o = Outcome::Lost(e.to_string());
                self.trees.insert(*t, o.clone());
                return Ok(o);
            }
            Err(e) => return Err(e),
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let (mut omitted, mut files, mut bytes) = (Vec::new(), 0u64, 0u64);
        let mut changed = false;
        for mut n in tree.nodes {
            let name = n.name_lossy();
            if n.kind == NodeKind::File {
                let mut ok = true;
                for c in &n.content {
                    ok &= self.chunk_ok(&c.id)?;
                }
                if !ok {
                    omitted.push(format!("{name} (damaged data)"));
                    files += 1;
                    bytes += n.size;
                    changed = true;
                    continue;
                }
            }
            if let Some(sub) = n.subtree {
                match self.rewrite(&sub, store)? {
                    Outcome::Intact => {}
                    Outcome::Lost(why) => {
                        omitted.push(format!("{name}/ (directory unreadable: {why})"));
                        changed = true;
                        continue;
                    }
                    Outcome::Changed {
                        id,
                        omitted: o,
                        files: f,
                        bytes: b,
                    } => {
                        n.subtree = Some(id);
                        omitted.extend(o.into_iter().map(|p| format!("{name}/{p}")));
                        files += f;
                        bytes += b;
                        changed = true;
                    }
                }
            }
            nodes.push(n);
        }
        let o = if changed {
            let id = store(&mut Tree { nodes })?;
            Outcome::Changed {
                id,
                omitted,
                files,
                bytes,
            }
        } else {
            Outcome::Intact
        };
        self.trees.insert(*t, o.clone());
        Ok(o)
    }
}

/// A planned replacement: the original, the new manifest (not yet saved), what it omits.
struct Plan {
    original: Snapshot,
    new: Snapshot,
    omitted: Vec<String>,
}

/// Runs `repair snapshots`. The repository must be open for writing unless `dry_run`.
pub fn repair_snapshots(
    repo: &Repository,
    dry_run: bool,
    forget: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<SnapshotsReport> {
    let (snaps, bad) = repo.snapshots_and_damage()?;
    let mut rep = SnapshotsReport {
        dry_run,
        snapshots: snaps.len(),
        ..SnapshotsReport::default()
    };
    for (name, e) in bad {
        rep.unrepairable.push(Unrepairable {
            snapshot: name,
            why: format!("manifest unreadable ({e}); a manifest cannot be rebuilt"),
        });
    }
    let mut rw = Rewriter {
        repo,
        trees: HashMap::new(),
        chunks: HashMap::new(),
    };
    let mut plan = |rw: &mut Rewriter,
                    rep: &mut SnapshotsReport,
                    store: &mut dyn FnMut(&mut Tree) -> Result<TreeId>|
     -> Result<Vec<Plan>> {
        let mut plans = Vec::new();
        for (i, s) in snaps.iter().enumerate() {
            progress(&format!("reading snapshot {}/{}", i + 1, snaps.len()));
            match rw.rewrite(&s.root, store)? {
                Outcome::Intact => {}
                Outcome::Lost(why) => rep.unrepairable.push(Unrepairable {
                    snapshot: s.id.to_hex(),
                    why: format!("root tree unreadable ({why}): nothing left to keep"),
                }),
                Outcome::Changed {
                    id,
                    omitted,
                    files,
                    bytes,
                } => plans.push(Plan {
                    original: s.clone(),
                    new: replacement(s, id, &omitted, files, bytes),
                    omitted,
                }),
            }
        }
        Ok(plans)
    };
    let plans = if dry_run {
        // The ids the trees would get, without storing anything.
        plan(&mut rw, &mut rep, &mut |t: &mut Tree| {
            Ok(repo.key.blob_id(&t.encode()))
        })?
    } else {
        // Every new tree is durable and indexed when `with_saver` returns, before any manifest
        // that references it is written.
        with_saver(repo, Arc::new(Counters::default()), |saver: &Saver| {
            plan(&mut rw, &mut rep, &mut |t: &mut Tree| saver.save_tree(t))
        })?
    };
    let mut taken: HashSet<(String, i64)> =
        snaps.iter().map(|s| (s.source.clone(), s.time)).collect();
    for mut p in plans {
        let earlier = snaps
            .iter()
            .find(|s| s.repaired_from == Some(p.original.id) && s.root == p.new.root);
        let mut r = Repaired {
            original: p.original.id.to_hex(),
            source: p.original.source.clone(),
            time: p.original.time_name(),
            new: None,
            already: earlier.map(|s| s.id.to_hex()),
            omitted: p.omitted,
            forgotten: false,
        };
        if !dry_run {
            if earlier.is_none() {
                while !taken.insert((p.new.source.clone(), p.new.time)) {
                    p.new.time = p.new.time.saturating_add(1);
                }
                r.new = Some(repo.save_snapshot(&mut p.new)?.to_hex());
            }
            if forget {
                // The replacement is durable (`save_snapshot` fsyncs it): now the original goes.
                repo.be
                    .delete(&format!("snapshots/{}", p.original.id.to_hex()))?;
                r.forgotten = true;
            }
        }
        rep.repaired.push(r);
    }
    Ok(rep)
}

/// The manifest of the repaired snapshot of `s` whose root is `root`.
fn replacement(s: &Snapshot, root: TreeId, omitted: &[String], files: u64, bytes: u64) -> Snapshot {
    let mut n = s.clone();
    n.root = root;
    if !n.tags.iter().any(|t| t == REPAIRED_TAG) {
        n.tags.push(REPAIRED_TAG.to_string());
    }
    n.repaired_from = Some(s.id);
    n.complete = false;
    n.time = s.time.saturating_add(1);
    n.stats.files = n.stats.files.saturating_sub(files);
    n.stats.total_bytes = n.stats.total_bytes.saturating_sub(bytes);
    n.warnings.extend(
        omitted
            .iter()
            .map(|p| format!("omitted by repair of snapshot {}: /{p}", s.id.short())),
    );
    n
}
