//! The mount's inode table: deterministic, never reused, and O(directories) in memory.
//!
//! Why ranges: `ls -lR` of a million-file snapshot looks up every entry, and the kernel keeps
//! those inodes until memory pressure, so per-file bookkeeping is what bounds the mount's RSS.
//! Instead, the first time a snapshot directory's entries are needed it gets one contiguous
//! range of inode numbers, one per entry of its tree: entry `i` is `start + i`. A file inode
//! then costs nothing; a directory costs one range (about 64 bytes), so a 1M-file snapshot with
//! 10k directories needs well under a megabyte. Numbers come from one counter that only grows,
//! so they are never reused and stay stable for the life of the mount.
//!
//! A non-directory entry of a tree that shows in several places (an unchanged directory in
//! two snapshots) has one inode: the number from the first range given to that tree.
//!
//! Everything else (virtual directories, snapshot roots, WAL files, the versions of a file in
//! `/history`) is few and gets a single number, found again by (parent, name).

use std::collections::HashMap;

use wayback_mount::{Ino, ROOT_INO};

use crate::id::{SnapshotId, TreeId};
use crate::timespec::TimeMs;

/// Virtual directories that are not part of any snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Virt {
    /// The mount root.
    Root,
    /// `/at`.
    AtRoot,
    /// `/at/<T>`.
    AtTime(TimeMs),
    /// `/latest`.
    LatestRoot,
    /// `/snapshots`.
    SnapshotsRoot,
    /// `/snapshots/<source>`.
    SnapSource(String),
    /// `/history`.
    HistoryRoot,
    /// `/wal`.
    WalRoot,
    /// `/wal/<cluster>`.
    WalCluster(String),
    /// `/history/<source>/<path>`: a directory of the newest snapshot (`versions == false`), or
    /// the versions of the non-directory at `path` (`versions == true`).
    History {
        /// Source name.
        source: String,
        /// Path inside the source's snapshots.
        path: Vec<u8>,
        /// Whether this lists versions of one entry.
        versions: bool,
    },
}

/// What an inode stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InodeData {
    /// A virtual directory.
    Virt {
        /// Which one.
        virt: Virt,
    },
    /// The root directory of a snapshot.
    SnapRoot {
        /// The snapshot.
        snap: SnapshotId,
        /// Whether the mapping name -> snapshot may change (`/latest`, recent `/at/T`).
        live: bool,
    },
    /// One archived WAL file.
    Wal {
        /// Cluster.
        cluster: String,
        /// PostgreSQL file name.
        name: String,
    },
    /// Entry `index` of tree `tree`.
    Node {
        /// Tree holding the entry.
        tree: TreeId,
        /// Position in the tree.
        index: u32,
        /// Inherited from the snapshot root.
        live: bool,
    },
}

impl InodeData {
    /// A virtual directory.
    pub fn virt(v: Virt) -> Self {
        InodeData::Virt { virt: v }
    }
    /// A snapshot root.
    pub fn snap_root(s: &crate::snapshot::Snapshot, live: bool) -> Self {
        InodeData::SnapRoot { snap: s.id, live }
    }
}

/// A child about to be given an inode number.
#[derive(Clone, Debug)]
pub enum NewChild {
    /// Anything found again by its name in the parent (virtual entries, snapshot roots, WAL
    /// files, versions of a file). When the same name later stands for other data (`/latest/src`
    /// after a new backup), it gets a new number.
    Named(InodeData),
    /// Entry `index` of the `len` entries of the tree that is the parent directory's content.
    Entry {
        /// The parent directory's tree.
        tree: TreeId,
        /// Position in the tree.
        index: u32,
        /// Entries in the tree (the size of the parent's range).
        len: u32,
        /// Inherited from the snapshot root.
        live: bool,
        /// Hardlink group of a non-directory (shares one inode inside a snapshot).
        link_group: Option<u64>,
        /// Whether the entry is a directory (never shares its inode, see [`Inodes::child`]).
        dir: bool,
    },
}

/// One allocation: a single inode, or the entries of one directory.
enum Alloc {
    One {
        start: Ino,
        parent: Ino,
        /// Inode of the snapshot root this lives under (0 outside snapshots).
        root: Ino,
        name: Box<[u8]>,
        data: InodeData,
    },
    Entries {
        start: Ino,
        len: u32,
        /// The directory these are the entries of.
        parent: Ino,
        root: Ino,
        /// Interned tree id (index into `Inodes::trees`).
        tree: u32,
        live: bool,
    },
}

impl Alloc {
    fn start(&self) -> Ino {
        match self {
            Alloc::One { start, .. } | Alloc::Entries { start, .. } => *start,
        }
    }
    fn len(&self) -> Ino {
        match self {
            Alloc::One { .. } => 1,
            Alloc::Entries { len, .. } => (*len).max(1) as Ino,
        }
    }
    fn root(&self) -> Ino {
        match self {
            Alloc::One { root, .. } | Alloc::Entries { root, .. } => *root,
        }
    }
}

/// Inode number allocation and lookup.
pub struct Inodes {
    /// Sorted by start (numbers are handed out in increasing order).
    allocs: Vec<Alloc>,
    next: Ino,
    named: HashMap<(Ino, Box<[u8]>), Ino>,
    /// Directory inode -> index into `allocs` of its entries' range.
    entries_of: HashMap<Ino, usize>,
    /// (snapshot root inode, link group) -> the group's inode.
    links: HashMap<(Ino, u64), Ino>,
    trees: Vec<TreeId>,
    tree_ids: HashMap<TreeId, u32>,
    /// Interned tree -> start of the first range allocated for it: where its non-directory
    /// entries live, whichever directory (snapshot, path) shows that tree.
    first_range: HashMap<u32, Ino>,
}

impl Inodes {
    /// A table holding only the root.
    pub fn new() -> Self {
        Inodes {
            allocs: vec![Alloc::One {
                start: ROOT_INO,
                parent: ROOT_INO,
                root: 0,
                name: Box::from(&b""[..]),
                data: super::root_data(),
            }],
            next: ROOT_INO + 1,
            named: HashMap::new(),
            entries_of: HashMap::new(),
            links: HashMap::new(),
            trees: Vec::new(),
            tree_ids: HashMap::new(),
            first_range: HashMap::new(),
        }
    }

    fn find(&self, ino: Ino) -> Option<&Alloc> {
        let k = self.allocs.partition_point(|a| a.start() <= ino);
        let a = self.allocs.get(k.checked_sub(1)?)?;
        (ino < a.start() + a.len()).then_some(a)
    }

    /// What `ino` stands for.
    pub fn get(&self, ino: Ino) -> Option<InodeData> {
        Some(match self.find(ino)? {
            Alloc::One { data, .. } => data.clone(),
            Alloc::Entries {
                start, tree, live, ..
            } => InodeData::Node {
                tree: self.trees[*tree as usize],
                index: (ino - start) as u32,
                live: *live,
            },
        })
    }

    fn intern(&mut self, t: TreeId) -> u32 {
        if let Some(&i) = self.tree_ids.get(&t) {
            return i;
        }
        let i = self.trees.len() as u32;
        self.trees.push(t);
        self.tree_ids.insert(t, i);
        i
    }

    /// The inode of a child of `parent`, allocating the first time (or when a named child now
    /// stands for different data, e.g. `/latest/src` after a new backup).
    pub fn child(&mut self, parent: Ino, name: &[u8], child: NewChild) -> Ino {
        let proot = self.find(parent).map_or(0, Alloc::root);
        match child {
            NewChild::Named(data) => {
                let key = (parent, Box::<[u8]>::from(name));
                if let Some(&ino) = self.named.get(&key) {
                    if matches!(self.find(ino), Some(Alloc::One { data: d, .. }) if *d == data) {
                        return ino;
                    }
                }
                let ino = self.next;
                self.next += 1;
                let root = match data {
                    InodeData::SnapRoot { .. } => ino,
                    _ => proot,
                };
                self.allocs.push(Alloc::One {
                    start: ino,
                    parent,
                    root,
                    name: key.1.clone(),
                    data,
                });
                self.named.insert(key, ino);
                ino
            }
            NewChild::Entry {
                tree,
                index,
                len,
                live,
                link_group,
                dir,
            } => {
                let t = self.intern(tree);
                let range = match self.entries_of.get(&parent) {
                    Some(&k) if matches!(self.allocs[k], Alloc::Entries { tree, len: l, .. } if tree == t && l == len) => {
                        self.allocs[k].start()
                    }
                    _ => {
                        let start = self.next;
                        self.next += (len as Ino).max(1);
                        self.entries_of.insert(parent, self.allocs.len());
                        self.allocs.push(Alloc::Entries {
                            start,
                            len,
                            parent,
                            root: proot,
                            tree: t,
                            live,
                        });
                        self.first_range.entry(t).or_insert(start);
                        start
                    }
                };
                let ino = range + index as Ino;
                match link_group {
                    Some(g) => *self.links.entry((proot, g)).or_insert(ino),
                    // The same entry of the same (content-addressed, immutable) tree is the
                    // same file, metadata and content, wherever it shows: two snapshots of an
                    // unchanged directory, `/at/T1` and `/at/T2` naming one snapshot. One
                    // inode lets `diff -r` see "same file" from `stat` alone (it reads
                    // neither), and the kernel keep one copy of its pages. Directories cannot
                    // alias (the kernel forbids it), so they keep their own numbers.
                    None if !dir => self.first_range.get(&t).map_or(ino, |s| s + index as Ino),
                    None => ino,
                }
            }
        }
    }

    /// Parent inode.
    pub fn parent(&self, ino: Ino) -> Option<Ino> {
        self.find(ino).map(|a| match a {
            Alloc::One { parent, .. } | Alloc::Entries { parent, .. } => *parent,
        })
    }

    /// Stored name of a virtual or snapshot-root inode (entries of trees have theirs in the tree).
    pub fn name(&self, ino: Ino) -> Option<&[u8]> {
        match self.find(ino)? {
            Alloc::One { name, .. } if ino != ROOT_INO => Some(name),
            _ => None,
        }
    }

    /// Bytes of bookkeeping (tests bound it).
    #[cfg(test)]
    pub fn approx_bytes(&self) -> usize {
        self.allocs.capacity() * std::mem::size_of::<Alloc>()
            + self.named.capacity() * 64
            + self.entries_of.capacity() * 24
            + self.links.capacity() * 32
            + self.trees.capacity() * 32
            + self.tree_ids.capacity() * 40
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(b: u8) -> TreeId {
        crate::id::BlobId([b; 32])
    }

    fn entry(tree: TreeId, index: u32, len: u32, link_group: Option<u64>) -> NewChild {
        NewChild::Entry {
            tree,
            index,
            len,
            live: false,
            link_group,
            dir: false,
        }
    }

    #[test]
    fn entries_are_stable_and_dense() {
        let mut t = Inodes::new();
        let root = t.child(
            ROOT_INO,
            b"snap",
            NewChild::Named(InodeData::SnapRoot {
                snap: crate::id::SnapshotId([1; 32]),
                live: false,
            }),
        );
        let a = t.child(root, b"b", entry(tid(1), 1, 3, None));
        let b = t.child(root, b"a", entry(tid(1), 0, 3, None));
        assert_eq!(a, b + 1);
        assert_eq!(t.child(root, b"b", entry(tid(1), 1, 3, None)), a);
        assert_eq!(
            t.get(a),
            Some(InodeData::Node {
                tree: tid(1),
                index: 1,
                live: false
            })
        );
        assert_eq!(t.parent(a), Some(root));
        // A subdirectory's range comes after; numbers never overlap.
        let sub = t.child(a, b"x", entry(tid(2), 0, 2, None));
        assert!(sub > b + 2);
        assert_eq!(t.get(sub + 2), None);
        // Hardlinks share one inode under one snapshot root.
        let l1 = t.child(root, b"c", entry(tid(1), 2, 3, Some(7)));
        let l2 = t.child(sub, b"y", entry(tid(2), 1, 2, Some(7)));
        assert_eq!(l1, l2);
    }

    #[test]
    fn files_of_one_tree_share_inodes_across_directories() {
        let mut t = Inodes::new();
        let d1 = t.child(
            ROOT_INO,
            b"s1",
            NewChild::Named(InodeData::virt(Virt::AtTime(1))),
        );
        let d2 = t.child(
            ROOT_INO,
            b"s2",
            NewChild::Named(InodeData::virt(Virt::AtTime(2))),
        );
        let dir = |index| NewChild::Entry {
            tree: tid(1),
            index,
            len: 2,
            live: false,
            link_group: None,
            dir: true,
        };
        // Entry 0 a file, entry 1 a directory, in the same tree shown under d1 and d2.
        let f1 = t.child(d1, b"f", entry(tid(1), 0, 2, None));
        let f2 = t.child(d2, b"f", entry(tid(1), 0, 2, None));
        assert_eq!(f1, f2, "one file, one inode");
        let s1 = t.child(d1, b"sub", dir(1));
        let s2 = t.child(d2, b"sub", dir(1));
        assert_ne!(s1, s2, "directories never alias");
        assert_eq!(t.parent(s2), Some(d2));
        // Another tree's entry at the same index is another file.
        let g = t.child(s1, b"f", entry(tid(2), 0, 2, None));
        assert_ne!(g, f1);
        assert_eq!(
            t.get(f2),
            Some(InodeData::Node {
                tree: tid(1),
                index: 0,
                live: false
            })
        );
    }

    #[test]
    fn named_children_change_number_when_data_changes() {
        let mut t = Inodes::new();
        let d1 = InodeData::virt(Virt::AtTime(1));
        let d2 = InodeData::virt(Virt::AtTime(2));
        let a = t.child(ROOT_INO, b"x", NewChild::Named(d1.clone()));
        assert_eq!(t.child(ROOT_INO, b"x", NewChild::Named(d1)), a);
        let b = t.child(ROOT_INO, b"x", NewChild::Named(d2.clone()));
        assert_ne!(a, b);
        assert_eq!(t.get(b), Some(d2));
        assert_eq!(t.name(b), Some(&b"x"[..]));
    }

    #[test]
    fn million_entries_cost_no_per_file_memory() {
        let mut t = Inodes::new();
        let mut dir = ROOT_INO;
        for d in 0..10_000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&d.to_le_bytes());
            let tree = crate::id::BlobId(b);
            for i in 0..100 {
                let ino = t.child(dir, b"f", entry(tree, i, 101, None));
                assert_eq!(t.get(ino).map(|_| ()), Some(()));
            }
            dir = t.child(dir, b"d", entry(tree, 100, 101, None));
        }
        assert!(t.approx_bytes() < 8 << 20, "{} bytes", t.approx_bytes());
    }
}
