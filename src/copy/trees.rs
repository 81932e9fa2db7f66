//! Rewriting a snapshot's trees for another repository.
//!
//! Blob ids are keyed hashes (`blake3::keyed_hash(id key, plaintext)`), and every repository
//! has its own id key: the same chunk has another id in the destination. So a copy cannot
//! move blobs as they are; it reads each chunk's plaintext from the source, stores it in the
//! destination under the destination's id (the destination's [`Saver`] seals it under its own
//! key and skips what the destination already has), and rewrites the trees bottom-up, since
//! a tree names its children by id.
//!
//! What keeps an incremental copy cheap: a *reference* pair, a source snapshot that was
//! copied before and its copy. Where the new snapshot's tree is the reference's, the
//! reference copy's tree is taken as it is (no read below it); a file whose name matches
//! teaches the chunk ids of the reference copy, so its unchanged chunks are not read again.
//! The cost of copying a snapshot is then the size of its change, as for `diff`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, TreeId};
use crate::ingest::Saver;
use crate::repo::Repository;
use crate::tree::{Node, Tree};

/// A source tree with its copy in the destination (a tree of a snapshot copied before).
pub type TreePair = (TreeId, TreeId);

/// Source-to-destination ids learnt so far; kept across the snapshots of one run.
pub struct Translator<'r> {
    src: &'r Repository,
    dst: &'r Repository,
    /// Source tree id -> destination tree id (stored in, or pending to, the destination).
    trees: HashMap<TreeId, TreeId>,
    /// Source chunk id -> destination chunk id.
    chunks: HashMap<BlobId, BlobId>,
}

impl<'r> Translator<'r> {
    /// An empty translation from `src` to `dst`.
    pub fn new(src: &'r Repository, dst: &'r Repository) -> Self {
        Translator {
            src,
            dst,
            trees: HashMap::new(),
            chunks: HashMap::new(),
        }
    }

    /// The destination id of source tree `id`, storing whatever the destination lacks through
    /// `saver`. `reference`: the matching tree of a snapshot copied before, if any.
    pub fn tree(
        &mut self,
        saver: &Saver,
        id: &TreeId,
        reference: Option<TreePair>,
    ) -> Result<TreeId> {
        if let Some(d) = self.trees.get(id) {
            return Ok(*d);
        }
        if let Some((rs, rd)) = reference {
            if rs == *id && self.dst.index.contains(BlobKind::Tree, &rd)? {
                self.trees.insert(*id, rd);
                return Ok(rd);
            }
        }
        let mut tree = self.src.read_tree(id)?;
        let refs = match reference {
            Some(pair) => self.reference_nodes(pair)?,
            None => HashMap::new(),
        };
        for node in &mut tree.nodes {
            let r = refs.get(&node.name);
            if let Some((rs, rd)) = r {
                self.learn_chunks(rs, rd);
            }
            let sub = r.and_then(|(rs, rd)| Some((rs.subtree?, rd.subtree?)));
            self.node(saver, node, sub)?;
        }
        let d = saver.save_tree(&mut tree)?;
        self.trees.insert(*id, d);
        Ok(d)
    }

    /// Rewrites one node's chunk and subtree ids for the destination.
    pub fn node(&mut self, saver: &Saver, node: &mut Node, sub: Option<TreePair>) -> Result<()> {
        for c in &mut node.content {
            c.id = self.chunk(saver, &c.id, c.len)?;
        }
        if let Some(st) = node.subtree {
            node.subtree = Some(self.tree(saver, &st, sub)?);
        }
        saver.counters.entries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn chunk(&mut self, saver: &Saver, id: &BlobId, len: u32) -> Result<BlobId> {
        if let Some(d) = self.chunks.get(id) {
            // Learnt from a reference copy (or stored earlier in this run): still there?
            if self.dst.index.contains(BlobKind::Data, d)? || saver.is_pending(BlobKind::Data, d) {
                saver.counters.blobs_dedup.fetch_add(1, Ordering::Relaxed);
                return Ok(*d);
            }
        }
        let plain = self.src.read_blob(BlobKind::Data, id)?;
        if plain.len() != len as usize {
            return Err(Error::Corrupt(format!(
                "chunk {} holds {} bytes, its reference says {len}",
                id.short(),
                plain.len()
            )));
        }
        saver
            .counters
            .bytes_read
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        let d = saver.save(BlobKind::Data, &plain)?;
        self.chunks.insert(*id, d);
        Ok(d)
    }

    /// The nodes of a reference pair by name, when the copy lays out the source exactly (same
    /// names in the same order, same chunk lengths); anything else teaches nothing.
    fn reference_nodes(&self, (rs, rd): TreePair) -> Result<HashMap<Vec<u8>, (Node, Node)>> {
        let a = self.src.read_tree(&rs)?;
        let b = match self.dst.read_tree(&rd) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(tree = %rd.short(), error = %e, "reference copy unreadable; copying without it");
                return Ok(HashMap::new());
            }
        };
        if !same_layout(&a, &b) {
            return Ok(HashMap::new());
        }
        Ok(a.nodes
            .into_iter()
            .zip(b.nodes)
            .map(|(x, y)| (x.name.clone(), (x, y)))
            .collect())
    }

    fn learn_chunks(&mut self, src: &Node, dst: &Node) {
        for (a, b) in src.content.iter().zip(&dst.content) {
            self.chunks.entry(a.id).or_insert(b.id);
        }
    }
}

/// True when `b` can be the copy of `a`: the same entries in order, each with the same kind,
/// the same chunk lengths and a subtree exactly where `a` has one.
fn same_layout(a: &Tree, b: &Tree) -> bool {
    a.nodes.len() == b.nodes.len()
        && a.nodes.iter().zip(&b.nodes).all(|(x, y)| {
            x.name == y.name
                && x.kind == y.kind
                && x.size == y.size
                && x.subtree.is_some() == y.subtree.is_some()
                && x.content.len() == y.content.len()
                && x.content
                    .iter()
                    .zip(&y.content)
                    .all(|(p, q)| p.len == q.len)
        })
}
