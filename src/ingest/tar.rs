//! Unpacking a tar stream (pg_basebackup `-Ft -D -`) into a snapshot tree.
//!
//! The result is a directory with the archive's modes, owners, mtimes and symlinks, so
//! `cp -a /mnt/wb/at/<T>/<source> DIR` yields a usable PostgreSQL data directory. Memory holds
//! only the directory structure (names and chunk lists), never file contents.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use crate::chunker::{Chunker, ChunkerParams};
use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, TreeId};
use crate::ingest::Saver;
use crate::repo::Repository;
use crate::snapshot::SnapshotStats;
use crate::tree::{ChunkRef, Node, NodeKind, Tree};

/// Small files kept in memory while unpacking, for the caller to inspect (e.g. `backup_label`).
const KEEP: &[&str] = &["backup_label", "backup_manifest", "tablespace_map"];

#[derive(Default)]
struct Dir {
    meta: Option<Node>,
    entries: BTreeMap<Vec<u8>, Node>,
}

/// What unpacking produced.
pub struct Unpacked {
    /// Root tree.
    pub root: TreeId,
    /// Metadata of the archive's top directory.
    pub root_meta: Node,
    /// Counters.
    pub stats: SnapshotStats,
    /// Contents of the files named in `KEEP`, by name.
    pub kept: HashMap<String, Vec<u8>>,
}

/// The components of an entry's path, refusing absolute paths and `..`: a hostile stream must
/// not be able to name anything outside the data directory (restore and pg-at, run as root,
/// would write it there). Empty and `.` components are dropped (`./base/1` is `base/1`).
fn split(path: &[u8]) -> Result<Vec<Vec<u8>>> {
    let refuse = |why: &str| {
        Err(Error::Invalid(format!(
            "tar stream: entry {:?} {why}; refusing the stream (no snapshot was written)",
            String::from_utf8_lossy(path)
        )))
    };
    if path.first() == Some(&b'/') {
        return refuse("is an absolute path");
    }
    let comps: Vec<Vec<u8>> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| c.to_vec())
        .collect();
    if comps.iter().any(|c| c == b"..") {
        return refuse("has a '..' component");
    }
    if comps.iter().any(|c| !crate::tree::is_normal_name(c)) {
        return refuse("has a component that is not a plain name");
    }
    Ok(comps)
}

/// A directory node for a directory the archive implies but never lists (mode 0700, as
/// PostgreSQL requires of its data directory and creates its subdirectories).
fn dir_node(name: Vec<u8>) -> Node {
    let mut n = Node::new(name, NodeKind::Dir);
    n.mode = 0o700;
    n.nlink = 2;
    n
}

/// Reads a tar stream to its end and stores it as trees and chunks.
pub fn store_tar(repo: &Repository, saver: &Saver, reader: impl Read) -> Result<Unpacked> {
    unpack_tar(saver, repo.config.chunker, reader)
}

/// Where [`unpack_tar`] puts what it cuts: the backup pipeline's [`Saver`], or an in-memory
/// store in the fuzz target (a tar stream is bytes from a command's stdout).
pub trait BlobSink {
    /// Stores a blob; returns its id.
    fn save(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId>;
    /// Encodes and stores a tree; returns its id.
    fn save_tree(&self, tree: &mut Tree) -> Result<TreeId>;
}

impl BlobSink for Saver<'_> {
    fn save(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        Saver::save(self, kind, data)
    }
    fn save_tree(&self, tree: &mut Tree) -> Result<TreeId> {
        Saver::save_tree(self, tree)
    }
}

/// [`store_tar`] with the chunker parameters given and any [`BlobSink`].
pub fn unpack_tar(
    saver: &dyn BlobSink,
    chunker: ChunkerParams,
    reader: impl Read,
) -> Result<Unpacked> {
    let mut ar = tar::Archive::new(reader);
    let mut dirs: HashMap<Vec<Vec<u8>>, Dir> = HashMap::new();
    dirs.insert(Vec::new(), Dir::default());
    let mut stats = SnapshotStats::default();
    let mut kept = HashMap::new();
    // pg_basebackup's tar has no entry for the top directory: give it the owner of the files.
    let mut owner: Option<(u32, u32, i64)> = None;
    let bad = |e: std::io::Error| Error::Invalid(format!("tar stream: {e}"));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path_bytes().into_owned();
        let comps = split(&path)?;
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => NodeKind::Dir,
            tar::EntryType::Symlink => NodeKind::Symlink,
            tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File,
            other => {
                tracing::warn!(path = %String::from_utf8_lossy(&path), kind = ?other, "tar entry type not stored");
                continue;
            }
        };
        let mut node = Node::new(comps.last().cloned().unwrap_or_default(), kind);
        node.mode = h.mode().map_err(bad)? & 0o7777;
        // Ids beyond 32 bits are refused, not truncated (2^32 would become root); a time
        // beyond the nanosecond range saturates (ustar's base-256 fields hold 64 bits).
        let id = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| {
                Error::Invalid(format!(
                    "tar stream: entry {:?} has {what} {v}, beyond 32 bits",
                    String::from_utf8_lossy(&path)
                ))
            })
        };
        node.uid = id(h.uid().map_err(bad)?, "uid")?;
        node.gid = id(h.gid().map_err(bad)?, "gid")?;
        node.mtime_ns = i64::try_from(h.mtime().map_err(bad)?)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000);
        node.ctime_ns = node.mtime_ns;
        // Every ancestor directory exists even if the archive never listed it.
        for depth in 0..comps.len() {
            dirs.entry(comps[..depth].to_vec()).or_default();
        }
        match kind {
            NodeKind::Dir => {
                node.nlink = 2;
                dirs.entry(comps.clone()).or_default().meta = Some(node);
                if !comps.is_empty() {
                    stats.dirs += 1;
                }
                continue;
            }
            NodeKind::Symlink => {
                let t = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                node.size = t.len() as u64;
                node.link_target = Some(t);
                stats.others += 1;
            }
            _ => {
                let keep =
                    comps.len() == 1 && KEEP.iter().any(|k| k.as_bytes() == comps[0].as_slice());
                let mut kept_bytes = Vec::new();
                let mut ch = Chunker::new(&mut entry, chunker);
                while let Some(c) = ch.next_chunk().map_err(bad)? {
                    let id = saver.save(BlobKind::Data, c)?;
                    node.content.push(ChunkRef {
                        id,
                        len: c.len() as u32,
                    });
                    if keep {
                        kept_bytes.extend_from_slice(c);
                    }
                }
                node.size = ch.consumed;
                node.blocks = node.size.div_ceil(512);
                stats.files += 1;
                stats.total_bytes += node.size;
                stats.bytes_read += node.size;
                if keep {
                    kept.insert(String::from_utf8_lossy(&comps[0]).into_owned(), kept_bytes);
                }
            }
        }
        if comps.is_empty() {
            continue;
        }
        if owner.is_none() {
            owner = Some((node.uid, node.gid, node.mtime_ns));
        }
        let parent = comps[..comps.len() - 1].to_vec();
        dirs.entry(parent)
            .or_default()
            .entries
            .insert(node.name.clone(), node);
    }
    // pg_basebackup adds files of its own (backup_manifest) with PostgreSQL's placeholder tar
    // owner 2048:1024; give them the data directory's owner, or a restore run as root leaves
    // a manifest the database user cannot read (pg_verifybackup fails).
    const PLACEHOLDER: (u32, u32) = (0o4000, 0o2000);
    if let (Some((uid, gid, _)), Some(top)) = (owner, dirs.get_mut(&Vec::new())) {
        if (uid, gid) != PLACEHOLDER {
            for n in top.entries.values_mut() {
                if (n.uid, n.gid) == PLACEHOLDER {
                    (n.uid, n.gid) = (uid, gid);
                }
            }
        }
    }
    // Trees bottom-up: deepest directories first, so every subtree id is known in time.
    let mut children: HashMap<Vec<Vec<u8>>, Vec<Vec<Vec<u8>>>> = HashMap::new();
    for p in dirs.keys().filter(|p| !p.is_empty()) {
        children
            .entry(p[..p.len() - 1].to_vec())
            .or_default()
            .push(p.clone());
    }
    let metas: HashMap<Vec<Vec<u8>>, Option<Node>> = dirs
        .iter()
        .map(|(k, d)| (k.clone(), d.meta.clone()))
        .collect();
    let mut paths: Vec<Vec<Vec<u8>>> = dirs.keys().cloned().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut ids: HashMap<Vec<Vec<u8>>, TreeId> = HashMap::new();
    for p in &paths {
        let mut entries = dirs.remove(p).expect("listed").entries;
        for cp in children.get(p).map(|v| v.as_slice()).unwrap_or(&[]) {
            let name = cp.last().expect("child paths are non-empty").clone();
            let mut n = metas
                .get(cp)
                .cloned()
                .flatten()
                .unwrap_or_else(|| dir_node(name.clone()));
            n.name = name.clone();
            n.kind = NodeKind::Dir;
            n.subtree = ids.get(cp).copied();
            entries.insert(name, n);
        }
        let mut tree = Tree {
            nodes: entries.into_values().collect(),
        };
        ids.insert(p.clone(), saver.save_tree(&mut tree)?);
    }
    let root = *ids
        .get(&Vec::new())
        .ok_or_else(|| Error::Invalid("empty tar stream".into()))?;
    let root_meta = metas
        .get(&Vec::new())
        .cloned()
        .flatten()
        .unwrap_or_else(|| {
            let mut n = dir_node(Vec::new());
            if let Some((uid, gid, mtime)) = owner {
                (n.uid, n.gid, n.mtime_ns, n.ctime_ns) = (uid, gid, mtime, mtime);
            }
            n
        });
    Ok(Unpacked {
        root,
        root_meta,
        stats,
        kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Mem(RefCell<Vec<Tree>>);

    impl BlobSink for Mem {
        fn save(&self, _: BlobKind, data: &[u8]) -> Result<BlobId> {
            Ok(BlobId(*blake3::hash(data).as_bytes()))
        }
        fn save_tree(&self, tree: &mut Tree) -> Result<TreeId> {
            let id = self.save(BlobKind::Tree, &tree.encode())?;
            self.0.borrow_mut().push(tree.clone());
            Ok(id)
        }
    }

    fn one_file(mtime: u64, uid: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_uid(uid);
        h.set_gid(0);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &[][..]).unwrap();
        b.into_inner().unwrap()
    }

    fn mtime_of(tar: &[u8]) -> Result<i64> {
        let sink = Mem::default();
        unpack_tar(&sink, crate::chunker::ChunkerParams::DEFAULT, tar)?;
        let trees = sink.0.borrow();
        Ok(trees.last().unwrap().find(b"f").unwrap().mtime_ns)
    }

    #[test]
    fn far_off_mtimes_saturate_and_wide_ids_are_refused() {
        // Found while writing the tar_stream fuzz target (fuzz/regressions/tar_stream/):
        // base-256 mtimes overflowed the seconds-to-nanoseconds multiplication.
        assert_eq!(mtime_of(&one_file(1 << 40, 0)).unwrap(), i64::MAX);
        assert_eq!(mtime_of(&one_file(u64::MAX, 0)).unwrap(), i64::MAX);
        assert_eq!(
            mtime_of(&one_file(1_758_160_800, 0)).unwrap(),
            1_758_160_800 * 1_000_000_000
        );
        let e = mtime_of(&one_file(0, 1 << 32)).unwrap_err().to_string();
        assert!(e.contains("beyond 32 bits"), "{e}");
    }
}
