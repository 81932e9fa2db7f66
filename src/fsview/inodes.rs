//! The mount's inode table: deterministic, never reused, compact.

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
        /// Hardlink group.
        link_group: Option<u64>,
        /// Directories never share inodes.
        is_dir: bool,
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

#[derive(Hash, PartialEq, Eq)]
enum Key {
    Child(Ino, u32),
    Named(Ino, Box<[u8]>),
    Link(Ino, u64),
}

struct Slot {
    parent: Ino,
    /// Inode of the snapshot root this entry lives under (0 outside snapshots).
    root: Ino,
    data: InodeData,
}

/// Inode number allocation and lookup.
pub struct Inodes {
    slots: Vec<Slot>,
    by_key: HashMap<Key, Ino>,
    names: HashMap<Ino, Box<[u8]>>,
}

impl Inodes {
    /// A table holding only the root.
    pub fn new() -> Self {
        let mut t = Inodes {
            slots: Vec::new(),
            by_key: HashMap::new(),
            names: HashMap::new(),
        };
        t.slots.push(Slot {
            parent: ROOT_INO,
            root: 0,
            data: super::root_data(),
        });
        t
    }

    /// What `ino` stands for.
    pub fn get(&self, ino: Ino) -> Option<InodeData> {
        self.slots
            .get((ino as usize).checked_sub(1)?)
            .map(|s| s.data.clone())
    }

    /// The inode of `name` in `parent`, allocating one the first time (or when the object the
    /// name stands for changed, e.g. `/latest/src` after a new backup).
    pub fn child(&mut self, parent: Ino, name: &[u8], data: InodeData) -> Ino {
        let proot = self.slots.get(parent as usize - 1).map_or(0, |s| s.root);
        // Children of a versions directory come from different trees: key them by name.
        let versions_parent = matches!(
            self.slots.get(parent as usize - 1).map(|s| &s.data),
            Some(InodeData::Virt {
                virt: Virt::History { versions: true, .. }
            })
        );
        let key = match &data {
            _ if versions_parent => Key::Named(parent, name.into()),
            InodeData::Node {
                link_group: Some(g),
                is_dir: false,
                ..
            } => Key::Link(proot, *g),
            InodeData::Node { index, .. } => Key::Child(parent, *index),
            _ => Key::Named(parent, name.into()),
        };
        if let Some(&ino) = self.by_key.get(&key) {
            if self.slots[ino as usize - 1].data == data || matches!(key, Key::Link(..)) {
                return ino;
            }
        }
        let ino = self.slots.len() as Ino + 1;
        let root = match &data {
            InodeData::SnapRoot { .. } => ino,
            _ => proot,
        };
        if !matches!(data, InodeData::Node { .. }) {
            self.names.insert(ino, name.into());
        }
        self.slots.push(Slot { parent, root, data });
        self.by_key.insert(key, ino);
        ino
    }

    /// Parent inode.
    pub fn parent(&self, ino: Ino) -> Option<Ino> {
        self.slots
            .get((ino as usize).checked_sub(1)?)
            .map(|s| s.parent)
    }

    /// Stored name of a virtual or snapshot-root inode.
    pub fn name(&self, ino: Ino) -> Option<&[u8]> {
        self.names.get(&ino).map(|b| &b[..])
    }
}
