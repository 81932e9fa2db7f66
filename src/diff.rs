//! Comparing snapshots at the cost of the change.
//!
//! Trees are Merkle trees: two directories with equal tree ids are equal all the way down, so the
//! walk skips them without reading a byte. Only trees on paths to a change are read
//! (`DiffStats::trees_read` reports how many), and file contents are never read: chunk lists say
//! whether content changed.

use serde::Serialize;

use crate::error::Result;
use crate::id::TreeId;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind, Tree};

/// What happened to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// Content (or link target, or device number) differs.
    Modified,
    /// Only metadata differs (mode, owner, mtime, xattrs).
    Metadata,
    /// The entry changed type (file, directory, symlink, ...).
    Type,
}

impl ChangeKind {
    /// One-letter code for `--name-status` (git-like; `P` for metadata-only).
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Removed => 'D',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'P',
            ChangeKind::Type => 'T',
        }
    }
}

/// One difference.
#[derive(Clone, Debug)]
pub struct Change {
    /// Path relative to the snapshot root, `/`-joined raw bytes.
    pub path: Vec<u8>,
    /// What changed.
    pub kind: ChangeKind,
    /// Entry in the older snapshot.
    pub old: Option<Node>,
    /// Entry in the newer snapshot.
    pub new: Option<Node>,
}

/// Cost counters of a diff.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffStats {
    /// Tree blobs read (the cost of the diff).
    pub trees_read: u64,
    /// Subtrees skipped because their ids were equal.
    pub subtrees_skipped: u64,
}

/// Diff options.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Do not report metadata-only changes.
    pub ignore_meta: bool,
}

fn meta_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime_ns != b.mtime_ns
        || a.xattrs != b.xattrs
}

fn content_differs(a: &Node, b: &Node) -> bool {
    match a.kind {
        NodeKind::File => a.content != b.content || a.size != b.size,
        NodeKind::Symlink => a.link_target != b.link_target,
        NodeKind::CharDev | NodeKind::BlockDev => a.rdev != b.rdev,
        _ => false,
    }
}

struct Differ<'a> {
    repo: &'a Repository,
    opts: DiffOptions,
    stats: DiffStats,
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl<'a> Differ<'a> {
    fn new(repo: &'a Repository, opts: DiffOptions) -> Self {
        Differ {
            repo,
            opts,
            stats: DiffStats::default(),
        }
    }

    fn tree(&mut self, id: &TreeId) -> Result<Tree> {
        self.stats.trees_read += 1;
        self.repo.read_tree(id)
    }

    /// Reports `node` and, for a directory, everything under it, as `kind`.
    fn whole(
        &mut self,
        path: Vec<u8>,
        node: &Node,
        kind: ChangeKind,
        out: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        let sub = node.subtree.filter(|_| node.kind == NodeKind::Dir);
        let (old, new) = if kind == ChangeKind::Added {
            (None, Some(node.clone()))
        } else {
            (Some(node.clone()), None)
        };
        out(Change {
            path: path.clone(),
            kind,
            old,
            new,
        })?;
        if let Some(sub) = sub {
            let t = self.tree(&sub)?;
            for n in &t.nodes {
                self.whole(join(&path, &n.name), n, kind, out)?;
            }
        }
        Ok(())
    }

    fn trees(
        &mut self,
        a: Option<&TreeId>,
        b: Option<&TreeId>,
        prefix: &[u8],
        out: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        if a == b {
            self.stats.subtrees_skipped += 1;
            return Ok(());
        }
        let ta = match a {
            Some(id) => self.tree(id)?,
            None => Tree::default(),
        };
        let tb = match b {
            Some(id) => self.tree(id)?,
            None => Tree::default(),
        };
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let ord = match (ta.nodes.get(i), tb.nodes.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    let n = &ta.nodes[i];
                    self.whole(join(prefix, &n.name), n, ChangeKind::Removed, out)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let n = &tb.nodes[j];
                    self.whole(join(prefix, &n.name), n, ChangeKind::Added, out)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.nodes(
                        &ta.nodes[i],
                        &tb.nodes[j],
                        join(prefix, &ta.nodes[i].name),
                        out,
                    )?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn nodes(
        &mut self,
        x: &Node,
        y: &Node,
        path: Vec<u8>,
        out: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        let change = |kind| Change {
            path: path.clone(),
            kind,
            old: Some(x.clone()),
            new: Some(y.clone()),
        };
        if x.kind != y.kind {
            return out(change(ChangeKind::Type));
        }
        if x.kind == NodeKind::Dir {
            if !self.opts.ignore_meta && meta_differs(x, y) {
                out(change(ChangeKind::Metadata))?;
            }
            return self.trees(x.subtree.as_ref(), y.subtree.as_ref(), &path, out);
        }
        if content_differs(x, y) {
            out(change(ChangeKind::Modified))
        } else if !self.opts.ignore_meta && meta_differs(x, y) {
            out(change(ChangeKind::Metadata))
        } else {
            Ok(())
        }
    }
}

/// Diffs two trees (whole snapshots, or the subtrees at one path), calling `out` per change in
/// path order.
pub fn diff_trees(
    repo: &Repository,
    a: Option<&TreeId>,
    b: Option<&TreeId>,
    prefix: &[u8],
    opts: DiffOptions,
    out: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<DiffStats> {
    let mut d = Differ::new(repo, opts);
    d.trees(a, b, prefix, out)?;
    Ok(d.stats)
}

/// Diffs two single entries found at the same path (files, or a file against a directory).
pub fn diff_nodes(
    repo: &Repository,
    a: Option<&Node>,
    b: Option<&Node>,
    path: &[u8],
    opts: DiffOptions,
    out: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<DiffStats> {
    let mut d = Differ::new(repo, opts);
    match (a, b) {
        (Some(x), Some(y)) => d.nodes(x, y, path.to_vec(), out)?,
        (Some(x), None) => d.whole(path.to_vec(), x, ChangeKind::Removed, out)?,
        (None, Some(y)) => d.whole(path.to_vec(), y, ChangeKind::Added, out)?,
        (None, None) => {}
    }
    Ok(d.stats)
}
