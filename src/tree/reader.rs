//! Reading files and paths out of snapshot trees.
//!
//! Random access is a binary search over chunk offsets (pg_restore seeks inside dumps); decrypted
//! chunks go through a bounded LRU cache so sequential reads in small pieces (FUSE, 128 KiB at a
//! time) decrypt each chunk once.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, TreeId};
use crate::repo::Repository;
use crate::tree::{FileLayout, Node, NodeKind, Tree};

/// LRU of decrypted chunks plus the bytes they hold.
type CacheInner = (LruCache<BlobId, Arc<Vec<u8>>>, usize);

/// Bounded cache of decrypted chunks, by total bytes.
///
/// Loads are serialized per chunk (striped locks): when the kernel sends several read-ahead
/// requests into the same uncached chunk at once, one thread decrypts it and the others wait
/// for the result instead of decrypting the same megabytes again.
pub struct ChunkCache {
    inner: Mutex<CacheInner>,
    budget: usize,
    loading: Vec<Mutex<()>>,
}

impl ChunkCache {
    /// A cache holding at most `budget` bytes of chunk data.
    pub fn new(budget: usize) -> Self {
        ChunkCache {
            inner: Mutex::new((LruCache::unbounded(), 0)),
            budget,
            loading: (0..64).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The chunk if it is in memory; never does I/O (the mount answers such reads on its
    /// session thread, without a hand-off to a worker).
    pub fn get_cached(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.inner.lock().expect("poisoned").0.get(id).cloned()
    }

    /// The chunk, from cache or the repository.
    pub fn get(&self, repo: &Repository, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.inner.lock().expect("poisoned").0.get(id) {
            return Ok(c.clone());
        }
        let _loading = self.loading[id.0[0] as usize % self.loading.len()]
            .lock()
            .expect("poisoned");
        if let Some(c) = self.inner.lock().expect("poisoned").0.get(id) {
            return Ok(c.clone());
        }
        let data = Arc::new(repo.read_blob(BlobKind::Data, id)?);
        let mut g = self.inner.lock().expect("poisoned");
        g.1 += data.len();
        g.0.put(*id, data.clone());
        while g.1 > self.budget {
            match g.0.pop_lru() {
                Some((_, v)) => g.1 -= v.len(),
                None => break,
            }
        }
        Ok(data)
    }
}

impl Default for ChunkCache {
    fn default() -> Self {
        ChunkCache::new(64 << 20)
    }
}

/// Reads `size` bytes at `offset` of a file node (fewer at end of file); a node whose chunks
/// do not lay out its size, or a chunk of another length than its reference, is `Corrupt`.
pub fn read_at(
    repo: &Repository,
    cache: &ChunkCache,
    node: &Node,
    offset: u64,
    size: usize,
) -> Result<Vec<u8>> {
    FileLayout::new(node)?.read(offset, size as u64, &mut |c| cache.get(repo, &c.id))
}

/// Splits a `/`-separated path into components (ignoring empty ones).
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// Resolves a path inside a snapshot: `None` = the root itself.
pub fn resolve_path(repo: &Repository, root: &TreeId, path: &[u8]) -> Result<Option<Node>> {
    let comps = components(path);
    let mut tree_id = *root;
    let mut node: Option<Node> = None;
    for (i, c) in comps.iter().enumerate() {
        let tree: Tree = repo.read_tree(&tree_id)?;
        let n = tree
            .find(c)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("path {}", String::from_utf8_lossy(path))))?;
        if i + 1 < comps.len() {
            tree_id = match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(t)) => t,
                _ => {
                    return Err(Error::NotFound(format!(
                        "path {}: {} is not a directory",
                        String::from_utf8_lossy(path),
                        n.name_lossy()
                    )))
                }
            };
        }
        node = Some(n);
    }
    Ok(node)
}

/// Visits every node under a tree depth-first with its path (relative, `/`-joined).
pub fn walk(
    repo: &Repository,
    root: &TreeId,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    let tree = repo.read_tree(root)?;
    for n in &tree.nodes {
        let mut p = prefix.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(&n.name);
        f(&p, n)?;
        if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
            walk(repo, &sub, &p, f)?;
        }
    }
    Ok(())
}

/// [`walk`] that goes on past damage: a subtree that cannot be read (`Corrupt`, e.g. its pack
/// is damaged or gone) is handed to `lost` with its path, and the walk continues with its
/// siblings. Why: restore must give back every intact file of a snapshot, not stop at the
/// first damaged directory. The root tree itself must be readable (there is nothing to walk
/// otherwise); other errors (I/O, the index, and whatever `f` returns) stop the walk.
pub fn walk_past_damage(
    repo: &Repository,
    root: &TreeId,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    lost: &mut dyn FnMut(&[u8], crate::error::Error),
) -> Result<()> {
    let tree = repo.read_tree(root)?;
    walk_tree_past_damage(repo, &tree, prefix, f, lost)
}

fn walk_tree_past_damage(
    repo: &Repository,
    tree: &crate::tree::Tree,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    lost: &mut dyn FnMut(&[u8], crate::error::Error),
) -> Result<()> {
    for n in &tree.nodes {
        let mut p = prefix.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(&n.name);
        f(&p, n)?;
        if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
            match repo.read_tree(&sub) {
                Ok(t) => walk_tree_past_damage(repo, &t, &p, f, lost)?,
                Err(e) if e.is_corrupt() => lost(&p, e),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
