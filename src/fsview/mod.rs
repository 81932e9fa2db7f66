//! The repository as a read-only namespace for `wayback-mount`.
//!
//! ```text
//! /at/<T>/<source>/...             each source as of T (its latest snapshot at or before T)
//! /snapshots/<source>/<time>/...   every snapshot by its exact time
//! /latest/<source>/...             newest snapshot of each source
//! ```
//! Inode numbers: directories get one inode per path in the mount (the kernel forbids directory
//! aliases, and `/at/T1/etc` and `/at/T2/etc` may be the same tree); a file's inode is keyed by
//! (tree, entry index), so an unchanged file is one inode in every snapshot that holds it
//! (`diff -r` of two snapshots then skips it from `stat` alone), hardlinked files by (snapshot
//! root inode, link group) so they share one inode inside a snapshot. Inodes are never reused for the life of the mount.
//! Snapshot trees are immutable, so their answers are cached by the kernel for a day; the
//! entries whose answer can change (`/latest/<source>`, `/at/<T>/<source>` for every T: a
//! long backup commits an old time late) get one-second TTLs.

pub mod cow;
mod inodes;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Sender};
use lru::LruCache;
use wayback_mount::{Attr, DirEntry, Entry, Errno, Ino, Kind, OpenFlags, View, ROOT_INO};

use crate::error::Error;
use crate::id::TreeId;
use crate::repo::Repository;
use crate::snapshot::{as_of, Snapshot};
use crate::timespec::{now_ms, parse_time};
use crate::tree::reader::ChunkCache;
use crate::tree::{FileLayout, Node, NodeKind, Tree};
use inodes::{InodeData, Inodes, NewChild, Virt};

/// Kernel cache lifetime for immutable snapshot content.
const TTL_IMMUTABLE: Duration = Duration::from_secs(86_400);
/// Kernel cache lifetime for parts that change as snapshots are added.
const TTL_LIVE: Duration = Duration::from_secs(1);
/// Chunks decrypted ahead of a sequential reader (and threads doing it).
const READ_AHEAD_CHUNKS: usize = 2;
/// Files after an opened one whose first chunk is decrypted ahead.
const SIBLINGS_AHEAD: usize = 4;
/// Subdirectory trees queued for decoding ahead, per listed directory and in all.
const TREE_PREFETCH_PER_DIR: usize = 256;
const TREE_PREFETCH_QUEUE: usize = 1024;
/// How long the snapshot list is reused before `snapshots/` is listed again.
const SNAPSHOT_REFRESH: Duration = Duration::from_millis(500);

/// Options of the view.
#[derive(Clone, Debug, Default)]
pub struct ViewOptions {
    /// Report every file as owned by this uid.
    pub uid: Option<u32>,
    /// Report every file as owned by this gid.
    pub gid: Option<u32>,
    /// Bytes of decrypted chunks kept in memory.
    pub cache_bytes: usize,
}

/// Decoded directory trees, bounded by their size in memory.
///
/// Why bytes and not a count: a walk of a million-file snapshot touches ten thousand trees of
/// ~30 KiB each; a count-bounded cache of 4096 held 120 MB of them (measured: mount RSS 335 MB).
struct TreeCache {
    lru: LruCache<TreeId, (Arc<Tree>, usize)>,
    bytes: usize,
}

/// Memory for decoded trees (lookups walk a directory's tree many times while it is listed).
const TREE_CACHE_BYTES: usize = 24 << 20;

impl TreeCache {
    fn put(&mut self, id: TreeId, t: Arc<Tree>) {
        let b = t.approx_bytes();
        if let Some((_, old)) = self.lru.put(id, (t, b)) {
            self.bytes -= old;
        }
        self.bytes += b;
        while self.bytes > TREE_CACHE_BYTES && self.lru.len() > 1 {
            match self.lru.pop_lru() {
                Some((_, (_, b))) => self.bytes -= b,
                None => break,
            }
        }
    }
}

struct SnapList {
    at: Instant,
    list: Arc<Vec<Snapshot>>,
}

/// The repository as a [`View`].
pub struct RepoView {
    repo: Arc<Repository>,
    opts: ViewOptions,
    inodes: Mutex<Inodes>,
    trees: Arc<Mutex<TreeCache>>,
    /// Directory trees to decode ahead of a walk (see [`RepoView::prefetch_subtrees`]).
    tree_prefetch: Sender<TreeId>,
    chunks: Arc<ChunkCache>,
    layouts: Mutex<LruCache<Ino, Arc<FileLayout>>>,
    wal: Mutex<LruCache<(String, String), Arc<Tree>>>,
    snaps: Mutex<SnapList>,
    prefetch: Sender<(Arc<Repository>, crate::id::BlobId)>,
    mounted_at: SystemTime,
}

fn kind_of(k: NodeKind) -> Kind {
    match k {
        NodeKind::File => Kind::File,
        NodeKind::Dir => Kind::Dir,
        NodeKind::Symlink => Kind::Symlink,
        NodeKind::Fifo => Kind::Fifo,
        NodeKind::CharDev => Kind::CharDev,
        NodeKind::BlockDev => Kind::BlockDev,
        NodeKind::Socket => Kind::Socket,
    }
}

pub(crate) fn systime_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn errno(e: &Error, what: &dyn Fn() -> String) -> Errno {
    if e.is_not_found() && !e.to_string().contains("pack") {
        Errno::ENOENT
    } else {
        tracing::error!(error = %e, "{}", what());
        Errno::EIO
    }
}

impl RepoView {
    /// A view over an open repository.
    pub fn new(repo: Arc<Repository>, mut opts: ViewOptions) -> RepoView {
        if opts.cache_bytes == 0 {
            opts.cache_bytes = 16 << 20;
        }
        let chunks = Arc::new(ChunkCache::new(opts.cache_bytes));
        // Two threads decrypt the next two chunks of a sequential reader while the kernel
        // copies the current one out, so reads overlap with decryption and decompression.
        let (tx, rx) = bounded::<(Arc<Repository>, crate::id::BlobId)>(16);
        for _ in 0..READ_AHEAD_CHUNKS {
            let chunks = chunks.clone();
            let rx = rx.clone();
            std::thread::Builder::new()
                .name("wayback-readahead".into())
                .spawn(move || {
                    for (repo, id) in rx {
                        let _ = chunks.get(&repo, &id);
                    }
                })
                .expect("spawn read-ahead thread");
        }
        let trees = Arc::new(Mutex::new(TreeCache {
            lru: LruCache::unbounded(),
            bytes: 0,
        }));
        // One thread decodes the subdirectories of each listed directory while the walker
        // looks at its entries, so its next opendir finds the tree in memory and is answered
        // on the session thread. Errors are left for the walker's own request to report.
        let (tree_tx, tree_rx) = bounded::<TreeId>(TREE_PREFETCH_QUEUE);
        {
            let trees = trees.clone();
            let repo = repo.clone();
            std::thread::Builder::new()
                .name("wayback-treeahead".into())
                .spawn(move || {
                    for id in tree_rx {
                        if trees.lock().expect("poisoned").lru.contains(&id) {
                            continue;
                        }
                        if let Ok(t) = repo.read_tree(&id) {
                            trees.lock().expect("poisoned").put(id, Arc::new(t));
                        }
                    }
                })
                .expect("spawn tree prefetch thread");
        }
        RepoView {
            repo,
            opts,
            inodes: Mutex::new(Inodes::new()),
            trees,
            tree_prefetch: tree_tx,
            chunks,
            layouts: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(1024).expect("nonzero"),
            )),
            wal: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(4096).expect("nonzero"),
            )),
            snaps: Mutex::new(SnapList {
                at: Instant::now() - SNAPSHOT_REFRESH * 2,
                list: Arc::new(Vec::new()),
            }),
            prefetch: tx,
            mounted_at: SystemTime::now(),
        }
    }

    fn snapshots(&self) -> Result<Arc<Vec<Snapshot>>, Errno> {
        let mut g = self.snaps.lock().expect("poisoned");
        if g.at.elapsed() >= SNAPSHOT_REFRESH {
            match self.repo.snapshots() {
                Ok(l) => {
                    g.list = Arc::new(l);
                    g.at = Instant::now();
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot list snapshots");
                    return Err(Errno::EIO);
                }
            }
        }
        Ok(g.list.clone())
    }

    /// A decoded tree if it is in memory; never does I/O (the session thread's fast paths).
    fn cached_tree(&self, id: &TreeId) -> Option<Arc<Tree>> {
        Some(self.trees.lock().expect("poisoned").lru.get(id)?.0.clone())
    }

    fn tree(&self, id: &TreeId) -> Result<Arc<Tree>, Errno> {
        if let Some(t) = self.cached_tree(id) {
            return Ok(t);
        }
        let t = Arc::new(
            self.repo
                .read_tree(id)
                .map_err(|e| errno(&e, &|| format!("tree {} unreadable", id.short())))?,
        );
        self.trees.lock().expect("poisoned").put(*id, t.clone());
        Ok(t)
    }

    /// Queues the trees of `dir`'s subdirectories that are not in memory for decoding in the
    /// background (bounded: a full queue drops the rest, which are then read on demand).
    fn prefetch_subtrees(&self, dir: &Tree) {
        let mut queued = 0;
        for n in &dir.nodes {
            let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) else {
                continue;
            };
            if self.trees.lock().expect("poisoned").lru.contains(&sub) {
                continue;
            }
            if self.tree_prefetch.try_send(sub).is_err() || queued >= TREE_PREFETCH_PER_DIR {
                break;
            }
            queued += 1;
        }
    }

    fn node(&self, tree: &TreeId, index: u32) -> Result<(Arc<Tree>, usize), Errno> {
        let t = self.tree(tree)?;
        if index as usize >= t.nodes.len() {
            return Err(Errno::EIO);
        }
        Ok((t, index as usize))
    }

    fn virt_attr(&self, ino: Ino, mtime: SystemTime) -> Attr {
        Attr {
            ino,
            size: 0,
            blocks: 0,
            kind: Kind::Dir,
            perm: 0o555,
            nlink: 2,
            uid: self.opts.uid.unwrap_or(0),
            gid: self.opts.gid.unwrap_or(0),
            rdev: 0,
            mtime,
        }
    }

    fn node_attr(&self, ino: Ino, n: &Node) -> Attr {
        Attr {
            ino,
            size: n.size,
            blocks: n.blocks,
            kind: kind_of(n.kind),
            perm: (n.mode & 0o7777) as u16,
            nlink: n.nlink.max(1),
            uid: self.opts.uid.unwrap_or(n.uid),
            gid: self.opts.gid.unwrap_or(n.gid),
            rdev: n.rdev as u32,
            mtime: systime_ns(n.mtime_ns),
        }
    }

    /// A tree node's answer: immutable, so cached for long even under a live root (a node
    /// inode stands for one entry of one immutable tree; when `latest/src` names a newer
    /// snapshot, the root's lookup, with its short TTL, yields a new inode and the kernel
    /// walks the new tree from there).
    fn node_entry(&self, ino: Ino, n: &Node) -> Entry {
        Entry {
            attr: self.node_attr(ino, n),
            ttl: TTL_IMMUTABLE,
        }
    }

    fn snap_root_attr(&self, ino: Ino, s: &Snapshot) -> Attr {
        match &s.root_meta {
            Some(m) => Attr {
                kind: Kind::Dir,
                ..self.node_attr(ino, m)
            },
            None => self.virt_attr(ino, systime_ns(s.mtime_ns())),
        }
    }

    fn attr_of(&self, ino: Ino) -> Result<Entry, Errno> {
        let data = self
            .inodes
            .lock()
            .expect("poisoned")
            .get(ino)
            .ok_or(Errno::ENOENT)?;
        Ok(match data {
            InodeData::Virt { virt, .. } => {
                let ttl = self.virt_ttl(&virt);
                Entry {
                    attr: self.virt_attr(ino, self.mounted_at),
                    ttl,
                }
            }
            InodeData::SnapRoot { snap, live, .. } => {
                let s = self.snapshot_by_idx(snap)?;
                Entry {
                    attr: self.snap_root_attr(ino, &s),
                    ttl: if live { TTL_LIVE } else { TTL_IMMUTABLE },
                }
            }
            InodeData::Wal { .. } => {
                let (t, i) = self.file_node(ino)?;
                Entry {
                    attr: self.node_attr(ino, &t.nodes[i]),
                    ttl: TTL_LIVE,
                }
            }
            InodeData::Node { tree, index, .. } => {
                let (t, i) = self.node(&tree, index)?;
                self.node_entry(ino, &t.nodes[i])
            }
        })
    }

    fn virt_ttl(&self, v: &Virt) -> Duration {
        match v {
            Virt::AtTime(t) if *t < now_ms() - 3_600_000 => TTL_IMMUTABLE,
            _ => TTL_LIVE,
        }
    }

    fn snapshot_by_idx(&self, id: crate::id::SnapshotId) -> Result<Snapshot, Errno> {
        let l = self.snapshots()?;
        l.iter().find(|s| s.id == id).cloned().ok_or(Errno::ENOENT)
    }

    /// The children of a directory inode as (name, child inode data).
    fn children(&self, ino: Ino) -> Result<Vec<(OsString, NewChild, Kind)>, Errno> {
        let data = self
            .inodes
            .lock()
            .expect("poisoned")
            .get(ino)
            .ok_or(Errno::ENOENT)?;
        let snaps = self.snapshots()?;
        let mut out = Vec::new();
        match data {
            InodeData::Virt { virt, .. } => match virt {
                Virt::Root => {
                    for (n, v) in [
                        ("at", Virt::AtRoot),
                        ("latest", Virt::LatestRoot),
                        ("snapshots", Virt::SnapshotsRoot),
                        ("history", Virt::HistoryRoot),
                        ("wal", Virt::WalRoot),
                    ] {
                        out.push((
                            OsString::from(n),
                            NewChild::Named(InodeData::virt(v)),
                            Kind::Dir,
                        ));
                    }
                }
                Virt::AtRoot => {
                    let mut names: Vec<String> = snaps.iter().map(|s| s.time_name()).collect();
                    names.dedup();
                    for n in names {
                        if let Some(t) = parse_time(&n, now_ms()) {
                            out.push((
                                OsString::from(n),
                                NewChild::Named(InodeData::virt(Virt::AtTime(t))),
                                Kind::Dir,
                            ));
                        }
                    }
                }
                Virt::AtTime(t) => {
                    for src in sources(&snaps) {
                        if let Some(s) = as_of(&snaps, &src, t) {
                            // Which snapshot answers `/at/T/src` can change for any T: a
                            // backup's time is its start, so one running for hours commits an
                            // answer for an old T late (as do `backup --time` and forget).
                            let live = true;
                            out.push((
                                OsString::from(src),
                                NewChild::Named(InodeData::snap_root(s, live)),
                                Kind::Dir,
                            ));
                        }
                    }
                }
                Virt::LatestRoot => {
                    for src in sources(&snaps) {
                        if let Some(s) = as_of(&snaps, &src, i64::MAX) {
                            out.push((
                                OsString::from(src),
                                NewChild::Named(InodeData::snap_root(s, true)),
                                Kind::Dir,
                            ));
                        }
                    }
                }
                Virt::SnapshotsRoot => {
                    for src in sources(&snaps) {
                        out.push((
                            OsString::from(src.clone()),
                            NewChild::Named(InodeData::virt(Virt::SnapSource(src))),
                            Kind::Dir,
                        ));
                    }
                }
                Virt::WalRoot => {
                    let cs = crate::wal::clusters(self.repo.be.as_ref())
                        .map_err(|e| errno(&e, &|| "listing /wal".into()))?;
                    for c in cs {
                        out.push((
                            OsString::from(c.clone()),
                            NewChild::Named(InodeData::virt(Virt::WalCluster(c))),
                            Kind::Dir,
                        ));
                    }
                }
                Virt::WalCluster(c) => {
                    let names = crate::wal::list(self.repo.be.as_ref(), &c)
                        .map_err(|e| errno(&e, &|| format!("listing /wal/{c}")))?;
                    for n in names {
                        out.push((
                            OsString::from(n.clone()),
                            NewChild::Named(InodeData::Wal {
                                cluster: c.clone(),
                                name: n,
                            }),
                            Kind::File,
                        ));
                    }
                }
                Virt::HistoryRoot => {
                    for src in sources(&snaps) {
                        let v = Virt::History {
                            source: src.clone(),
                            path: Vec::new(),
                            versions: false,
                        };
                        out.push((
                            OsString::from(src),
                            NewChild::Named(InodeData::virt(v)),
                            Kind::Dir,
                        ));
                    }
                }
                Virt::History {
                    source,
                    path,
                    versions: false,
                } => {
                    let s = as_of(&snaps, &source, i64::MAX).ok_or(Errno::ENOENT)?;
                    let tree = match self.locate(&s.root, &path)? {
                        None if path.is_empty() => s.root,
                        None => return Err(Errno::ENOENT),
                        Some((t, i)) => {
                            let t = self.tree(&t)?;
                            match (t.nodes[i].kind, t.nodes[i].subtree) {
                                (NodeKind::Dir, Some(sub)) => sub,
                                _ => return Err(Errno::ENOTDIR),
                            }
                        }
                    };
                    for n in &self.tree(&tree)?.nodes {
                        let mut p = path.clone();
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(&n.name);
                        let v = Virt::History {
                            source: source.clone(),
                            path: p,
                            versions: n.kind != NodeKind::Dir,
                        };
                        out.push((
                            OsString::from_vec(n.name.clone()),
                            NewChild::Named(InodeData::virt(v)),
                            Kind::Dir,
                        ));
                    }
                }
                Virt::History {
                    source,
                    path,
                    versions: true,
                } => {
                    // One entry per distinct version, named by the time it first appeared.
                    let mut last: Option<(Vec<crate::tree::ChunkRef>, NodeKind, Option<Vec<u8>>)> =
                        None;
                    for s in snaps.iter().filter(|s| s.source == source) {
                        let Some((t, i)) = self.locate(&s.root, &path)? else {
                            last = None;
                            continue;
                        };
                        let tree = self.tree(&t)?;
                        let n = &tree.nodes[i];
                        let sig = (n.content.clone(), n.kind, n.link_target.clone());
                        if last.as_ref() != Some(&sig) && n.kind != NodeKind::Dir {
                            let data = InodeData::Node {
                                tree: t,
                                index: i as u32,
                                live: false,
                            };
                            out.push((
                                OsString::from(s.time_name()),
                                NewChild::Named(data),
                                kind_of(n.kind),
                            ));
                        }
                        last = Some(sig);
                    }
                }
                Virt::SnapSource(src) => {
                    for s in snaps.iter().filter(|s| s.source == src) {
                        out.push((
                            OsString::from(s.time_name()),
                            NewChild::Named(InodeData::snap_root(s, false)),
                            Kind::Dir,
                        ));
                    }
                }
            },
            InodeData::SnapRoot { snap, .. } => {
                // Inside a snapshot nothing changes (a new answer for `/latest/src` or
                // `/at/T/src` is a new snapshot-root inode), so its entries cache long.
                let s = self.snapshot_by_idx(snap)?;
                self.tree_children(&s.root, false, &mut out)?;
            }
            InodeData::Node {
                tree, index, live, ..
            } => {
                let (t, i) = self.node(&tree, index)?;
                let n = &t.nodes[i];
                match (n.kind, n.subtree) {
                    (NodeKind::Dir, Some(sub)) => self.tree_children(&sub, live, &mut out)?,
                    _ => return Err(Errno::ENOTDIR),
                }
            }
            InodeData::Wal { .. } => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }

    fn tree_children(
        &self,
        id: &TreeId,
        live: bool,
        out: &mut Vec<(OsString, NewChild, Kind)>,
    ) -> Result<(), Errno> {
        let t = self.tree(id)?;
        for (i, n) in t.nodes.iter().enumerate() {
            out.push((
                OsString::from_vec(n.name.clone()),
                node_child(id, i, t.nodes.len(), n, live),
                kind_of(n.kind),
            ));
        }
        self.prefetch_subtrees(&t);
        Ok(())
    }

    /// The tree holding the entry at `path` under `root`, and its index there; `None` when the
    /// path does not exist in that snapshot (or is empty: the root has no containing tree).
    fn locate(&self, root: &TreeId, path: &[u8]) -> Result<Option<(TreeId, usize)>, Errno> {
        let comps = crate::tree::reader::components(path);
        let mut tree = *root;
        let mut found = None;
        for (k, c) in comps.iter().enumerate() {
            let t = self.tree(&tree)?;
            let Ok(i) = t.nodes.binary_search_by(|n| n.name.as_slice().cmp(c)) else {
                return Ok(None);
            };
            found = Some((tree, i));
            if k + 1 < comps.len() {
                match (t.nodes[i].kind, t.nodes[i].subtree) {
                    (NodeKind::Dir, Some(sub)) => tree = sub,
                    _ => return Ok(None),
                }
            }
        }
        Ok(found)
    }

    /// Looks `name` up in a snapshot directory by binary search (directories can be huge).
    fn find_in_tree(&self, id: &TreeId, name: &OsStr, live: bool) -> Result<NewChild, Errno> {
        let t = self.tree(id)?;
        let i = t
            .nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name.as_bytes()))
            .map_err(|_| Errno::ENOENT)?;
        Ok(node_child(id, i, t.nodes.len(), &t.nodes[i], live))
    }

    fn file_node(&self, ino: Ino) -> Result<(Arc<Tree>, usize), Errno> {
        let data = self
            .inodes
            .lock()
            .expect("poisoned")
            .get(ino)
            .ok_or(Errno::ENOENT)?;
        match data {
            InodeData::Node { tree, index, .. } => self.node(&tree, index),
            InodeData::Wal { cluster, name } => {
                let key = (cluster, name);
                if let Some(t) = self.wal.lock().expect("poisoned").get(&key) {
                    return Ok((t.clone(), 0));
                }
                let rec = crate::wal::read_record(&self.repo, &key.0, &key.1).map_err(|e| {
                    errno(&e, &|| format!("WAL record {}/{} unreadable", key.0, key.1))
                })?;
                self.repo.add_location_hints(rec.hints());
                let t = Arc::new(Tree {
                    nodes: vec![rec.to_node()],
                });
                self.wal.lock().expect("poisoned").put(key, t.clone());
                Ok((t, 0))
            }
            _ => Err(Errno::EISDIR),
        }
    }

    /// The tree entry an inode stands for, if its tree is in memory (never does I/O).
    fn cached_node(&self, ino: Ino) -> Option<(Arc<Tree>, usize)> {
        let InodeData::Node { tree, index, .. } = self.inodes.lock().expect("poisoned").get(ino)?
        else {
            return None;
        };
        let t = self.cached_tree(&tree)?;
        let i = index as usize;
        (i < t.nodes.len()).then_some((t, i))
    }

    /// The chunk layout of file `n` (inode `ino`), kept for the file's next reads.
    fn layout(&self, ino: Ino, n: &Node) -> Result<Arc<FileLayout>, Errno> {
        if let Some(l) = self.layouts.lock().expect("poisoned").get(&ino).cloned() {
            return Ok(l);
        }
        let l = Arc::new(
            FileLayout::new(n)
                .map_err(|e| errno(&e, &|| format!("{} is damaged", self.path_of(ino))))?,
        );
        self.layouts.lock().expect("poisoned").put(ino, l.clone());
        Ok(l)
    }

    /// A file `i` of directory `dir` is being opened: decrypt the first chunk of the next few
    /// files in the background. Why: `diff -r`, `cp -r`, `tar` and `grep -r` open a
    /// directory's files one after the other in name order, each first read a cold chunk
    /// (a pack read and a decryption on the reader's critical path); done ahead on the other
    /// core, those reads are answered from memory on the session thread. Bounded: a few
    /// chunks per open, dropped when the read-ahead queue is full.
    fn prefetch_siblings(&self, dir: &Tree, i: usize) {
        let next = dir
            .nodes
            .iter()
            .skip(i + 1)
            .filter(|n| n.kind == NodeKind::File);
        for n in next.take(SIBLINGS_AHEAD) {
            let Some(c) = n.content.first() else {
                continue;
            };
            if self.chunks.get_cached(&c.id).is_none()
                && self.prefetch.try_send((self.repo.clone(), c.id)).is_err()
            {
                break;
            }
        }
    }

    /// A sequential reader past half of a chunk: fetch the next ones in the background.
    fn read_ahead(&self, layout: &FileLayout, p: &crate::tree::layout::Piece, chunk_len: usize) {
        if p.within.end > chunk_len / 2 {
            for next in layout
                .chunks()
                .iter()
                .skip(p.index + 1)
                .take(READ_AHEAD_CHUNKS)
            {
                let _ = self.prefetch.try_send((self.repo.clone(), next.id));
            }
        }
    }

    /// Path of an inode inside the mount, for log lines about damage.
    fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let (data, name, parent) = {
                let g = self.inodes.lock().expect("poisoned");
                (g.get(cur), g.name(cur).map(|n| n.to_vec()), g.parent(cur))
            };
            let part = match (name, data) {
                (Some(n), _) => String::from_utf8_lossy(&n).into_owned(),
                (None, Some(InodeData::Node { tree, index, .. })) => {
                    match self.node(&tree, index) {
                        Ok((t, i)) => t.nodes[i].name_lossy(),
                        Err(_) => format!("#{index}"),
                    }
                }
                _ => "?".into(),
            };
            parts.push(part);
            match parent {
                Some(p) if p != cur => cur = p,
                _ => break,
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

fn node_child(tree: &TreeId, i: usize, len: usize, n: &Node, live: bool) -> NewChild {
    NewChild::Entry {
        tree: *tree,
        index: i as u32,
        len: len as u32,
        live,
        // Directories never share inodes (the kernel forbids directory aliases).
        link_group: n.link_group.filter(|_| n.kind != NodeKind::Dir),
        dir: n.kind == NodeKind::Dir,
    }
}

/// The SELinux label, which `ls -l` asks for on every entry (coreutils' `lgetfilecon`).
const SELINUX_XATTR: &[u8] = b"security.selinux";

/// The error for an extended attribute an entry does not have.
///
/// Why ENOTSUP for a missing SELinux label: `ls -l` asks every entry for `security.selinux`,
/// the kernel caches no xattr answer, so a walk of 50k entries cost 50k FUSE round trips
/// (measured: 1.2 s of a 6.4 s cold `ls -lR`, and all of the warm one's requests). ls
/// (coreutils `getfilecon_cache`) remembers ENOTSUP per device and stops asking; ENODATA it
/// asks again. A label that was backed up is still served as stored, to any caller naming it;
/// only `ls -Z`'s display of a tree labelled partially differs (entries after the first
/// unlabelled one show `?`). Every other name, ACLs included, answers ENODATA: the kernel
/// turns an ACL error into a failed permission check, and caches "no ACL" itself.
fn missing_xattr(name: &OsStr) -> Errno {
    if name.as_bytes() == SELINUX_XATTR {
        Errno::ENOTSUP
    } else {
        Errno::ENODATA
    }
}

fn sources(snaps: &[Snapshot]) -> Vec<String> {
    let mut v: Vec<String> = snaps.iter().map(|s| s.source.clone()).collect();
    v.sort();
    v.dedup();
    v
}

impl View for RepoView {
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Errno> {
        let pdata = self
            .inodes
            .lock()
            .expect("poisoned")
            .get(parent)
            .ok_or(Errno::ENOENT)?;
        // /at/<T> accepts any spelling of a time, not only the listed ones.
        let child = match pdata {
            InodeData::Virt { virt: Virt::AtRoot } => {
                let t = name
                    .to_str()
                    .and_then(|s| parse_time(s, now_ms()))
                    .ok_or(Errno::ENOENT)?;
                let snaps = self.snapshots()?;
                if !snaps.iter().any(|s| s.time <= t) {
                    return Err(Errno::ENOENT);
                }
                NewChild::Named(InodeData::virt(Virt::AtTime(t)))
            }
            InodeData::SnapRoot { snap, .. } => {
                let s = self.snapshot_by_idx(snap)?;
                self.find_in_tree(&s.root, name, false)?
            }
            InodeData::Node {
                tree, index, live, ..
            } => {
                let (t, i) = self.node(&tree, index)?;
                match (t.nodes[i].kind, t.nodes[i].subtree) {
                    (NodeKind::Dir, Some(sub)) => self.find_in_tree(&sub, name, live)?,
                    _ => return Err(Errno::ENOTDIR),
                }
            }
            InodeData::Wal { .. } => return Err(Errno::ENOTDIR),
            InodeData::Virt { .. } => self
                .children(parent)?
                .into_iter()
                .find(|(n, _, _)| n.as_os_str() == name)
                .map(|(_, d, _)| d)
                .ok_or(Errno::ENOENT)?,
        };
        let ino = self
            .inodes
            .lock()
            .expect("poisoned")
            .child(parent, name.as_bytes(), child);
        self.attr_of(ino)
    }

    fn getattr(&self, ino: Ino) -> Result<Entry, Errno> {
        self.attr_of(ino)
    }

    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Errno> {
        let kids = self.children(ino)?;
        let mut inodes = self.inodes.lock().expect("poisoned");
        let mut out = Vec::with_capacity(kids.len());
        for (name, data, kind) in kids {
            let ino = inodes.child(ino, name.as_bytes(), data);
            out.push(DirEntry { ino, kind, name });
        }
        Ok(out)
    }

    fn open(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        let (t, i) = self.file_node(ino)?;
        self.prefetch_siblings(&t, i);
        if t.nodes[i].kind != NodeKind::File {
            return Err(Errno::EINVAL);
        }
        Ok(OpenFlags {
            keep_cache: true,
            direct_io: false,
        })
    }

    fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (t, i) = self.file_node(ino)?;
        let n = &t.nodes[i];
        if offset >= n.size {
            return Ok(Vec::new());
        }
        let layout = self.layout(ino, n)?;
        let mut out = Vec::with_capacity((size as u64).min(n.size - offset) as usize);
        for p in layout.pieces(offset, size as u64) {
            let pos = p.start + p.within.start as u64;
            let what = || format!("read of {} at offset {pos} failed", self.path_of(ino));
            let c = &layout.chunks()[p.index];
            let data = self
                .chunks
                .get(&self.repo, &c.id)
                .map_err(|e| errno(&e, &what))?;
            out.extend_from_slice(layout.slice(&p, &data).map_err(|e| errno(&e, &what))?);
            self.read_ahead(&layout, &p, data.len());
        }
        Ok(out)
    }

    fn open_cached(&self, ino: Ino) -> Option<Result<OpenFlags, Errno>> {
        let (t, i) = self.cached_node(ino)?;
        self.prefetch_siblings(&t, i);
        Some(if t.nodes[i].kind == NodeKind::File {
            Ok(OpenFlags {
                keep_cache: true,
                direct_io: false,
            })
        } else {
            Err(Errno::EINVAL)
        })
    }

    fn read_cached(&self, ino: Ino, offset: u64, size: u32) -> Option<Result<Vec<u8>, Errno>> {
        let (t, i) = self.cached_node(ino)?;
        let n = &t.nodes[i];
        if offset >= n.size {
            return Some(Ok(Vec::new()));
        }
        // A damaged layout or chunk is left to `read`, which logs it with the file's path.
        let layout = self.layout(ino, n).ok()?;
        let mut out = Vec::with_capacity((size as u64).min(n.size - offset) as usize);
        for p in layout.pieces(offset, size as u64) {
            let data = self.chunks.get_cached(&layout.chunks()[p.index].id)?;
            out.extend_from_slice(layout.slice(&p, &data).ok()?);
            self.read_ahead(&layout, &p, data.len());
        }
        Some(Ok(out))
    }

    fn readlink_cached(&self, ino: Ino) -> Option<Result<Vec<u8>, Errno>> {
        let (t, i) = self.cached_node(ino)?;
        Some(t.nodes[i].link_target.clone().ok_or(Errno::EINVAL))
    }

    fn readdir_cached(&self, ino: Ino) -> Option<Result<Vec<DirEntry>, Errno>> {
        let InodeData::Node { live, .. } = self.inodes.lock().expect("poisoned").get(ino)? else {
            return None;
        };
        let (t, i) = self.cached_node(ino)?;
        let sub = match (t.nodes[i].kind, t.nodes[i].subtree) {
            (NodeKind::Dir, Some(sub)) => sub,
            _ => return Some(Err(Errno::ENOTDIR)),
        };
        let dir = self.cached_tree(&sub)?;
        let mut out = Vec::with_capacity(dir.nodes.len());
        {
            let mut inodes = self.inodes.lock().expect("poisoned");
            for (k, n) in dir.nodes.iter().enumerate() {
                let child = node_child(&sub, k, dir.nodes.len(), n, live);
                out.push(DirEntry {
                    ino: inodes.child(ino, &n.name, child),
                    kind: kind_of(n.kind),
                    name: OsString::from_vec(n.name.clone()),
                });
            }
        }
        self.prefetch_subtrees(&dir);
        Some(Ok(out))
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>, Errno> {
        let (t, i) = self.file_node(ino)?;
        t.nodes[i].link_target.clone().ok_or(Errno::EINVAL)
    }

    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>, Errno> {
        match self.file_node(ino) {
            Ok((t, i)) => Ok(t.nodes[i]
                .xattrs
                .iter()
                .map(|(k, _)| OsString::from_vec(k.clone()))
                .collect()),
            Err(_) => Ok(Vec::new()),
        }
    }

    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let (t, i) = self.file_node(ino).map_err(|_| missing_xattr(name))?;
        t.nodes[i]
            .xattrs
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| missing_xattr(name))
    }

    fn getxattr_cached(&self, ino: Ino, name: &OsStr) -> Option<Result<Vec<u8>, Errno>> {
        let data = self.inodes.lock().expect("poisoned").get(ino)?;
        let (tree, index) = match data {
            InodeData::Node { tree, index, .. } => (tree, index as usize),
            // WAL records may need a read; the worker path handles them.
            InodeData::Wal { .. } => return None,
            // Directories and virtual entries carry no xattrs (as in `getxattr`).
            _ => return Some(Err(missing_xattr(name))),
        };
        let t = self.cached_tree(&tree)?;
        let node = t.nodes.get(index)?;
        Some(
            node.xattrs
                .iter()
                .find(|(k, _)| k.as_slice() == name.as_bytes())
                .map(|(_, v)| v.clone())
                .ok_or_else(|| missing_xattr(name)),
        )
    }

    fn lookup_cached(&self, parent: Ino, name: &OsStr) -> Option<Result<Entry, Errno>> {
        // Only directories inside snapshot trees: virtual directories may list snapshots and
        // snapshot roots may need the manifest, both I/O.
        let InodeData::Node {
            tree, index, live, ..
        } = self.inodes.lock().expect("poisoned").get(parent)?
        else {
            return None;
        };
        let t = self.cached_tree(&tree)?;
        let n = t.nodes.get(index as usize)?;
        let (sub, dir) = match (n.kind, n.subtree) {
            (NodeKind::Dir, Some(sub)) => (sub, self.cached_tree(&sub)?),
            _ => return Some(Err(Errno::ENOTDIR)),
        };
        let Ok(i) = dir
            .nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name.as_bytes()))
        else {
            return Some(Err(Errno::ENOENT));
        };
        let node = &dir.nodes[i];
        let child = node_child(&sub, i, dir.nodes.len(), node, live);
        let ino = self
            .inodes
            .lock()
            .expect("poisoned")
            .child(parent, name.as_bytes(), child);
        // A hardlink may resolve to the inode of an earlier path of its group: the same file,
        // so the same attributes as this node's.
        Some(Ok(self.node_entry(ino, node)))
    }

    fn getattr_cached(&self, ino: Ino) -> Option<Result<Entry, Errno>> {
        let InodeData::Node { tree, index, .. } = self.inodes.lock().expect("poisoned").get(ino)?
        else {
            return None;
        };
        let t = self.cached_tree(&tree)?;
        Some(Ok(self.node_entry(ino, t.nodes.get(index as usize)?)))
    }

    fn cache_dir(&self, ino: Ino) -> bool {
        // Trees are immutable (see `attr_of`); only a live snapshot root (`latest/src`,
        // `at/T/src`) may name another tree later.
        matches!(
            self.inodes.lock().expect("poisoned").get(ino),
            Some(InodeData::Node { .. } | InodeData::SnapRoot { live: false, .. })
        )
    }

    fn negative_ttl(&self, _parent: Ino) -> Duration {
        Duration::ZERO
    }
}

/// Root inode data (used by the inode table's constructor).
pub(crate) fn root_data() -> InodeData {
    InodeData::virt(Virt::Root)
}
