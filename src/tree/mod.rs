//! Trees: one blob per directory, so snapshots are Merkle trees.
//!
//! Why: an unchanged directory serializes to the same bytes, gets the same id and is stored once;
//! and two snapshots can be compared top-down by tree id, so a diff costs the size of the change.
//!
//! Encoding (version 1): `TREE_MAGIC` (4 bytes) then bincode 2 (`config::standard()`: little-
//! endian varints) of `Tree`. Entries are sorted by raw name bytes, so encoding is deterministic.

pub mod layout;
pub mod reader;

pub use layout::FileLayout;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BlobId, TreeId};

/// Tree blob prefix: format marker and version (never change; bump the last byte).
pub const TREE_MAGIC: [u8; 4] = *b"WBT\x01";

/// Kind of a directory entry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// Regular file (content in `Node::content`).
    File,
    /// Directory (entries in the tree `Node::subtree`).
    Dir,
    /// Symbolic link (target in `Node::link_target`).
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device (`Node::rdev`).
    CharDev,
    /// Block device (`Node::rdev`).
    BlockDev,
    /// Unix socket (recorded, not restored: sockets are recreated by their servers).
    Socket,
}

/// One content chunk of a file: its id and plaintext length (lengths allow binary search).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// Chunk id.
    pub id: BlobId,
    /// Length in bytes.
    pub len: u32,
}

/// One directory entry with everything restore and the mount need.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Raw name bytes (Unix names need not be UTF-8).
    pub name: Vec<u8>,
    /// Entry kind.
    pub kind: NodeKind,
    /// Full st_mode permission bits (mode & 0o7777).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Change time at backup (for change detection only; cannot be restored).
    pub ctime_ns: i64,
    /// Inode number at backup (for change detection only).
    pub inode: u64,
    /// Size in bytes (files), target length (symlinks), st_size (directories), 0 otherwise.
    pub size: u64,
    /// 512-byte blocks used at backup (sparse files use fewer than size/512).
    pub blocks: u64,
    /// Link count at backup.
    pub nlink: u32,
    /// Hardlink group: equal values within one snapshot are one inode (None when nlink == 1).
    pub link_group: Option<u64>,
    /// Device number for device nodes.
    pub rdev: u64,
    /// Symlink target bytes.
    pub link_target: Option<Vec<u8>>,
    /// Extended attributes (name, value), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// File content chunks, in order.
    pub content: Vec<ChunkRef>,
    /// Tree of a directory.
    pub subtree: Option<TreeId>,
}

impl Node {
    /// A node with the given name and kind and everything else empty.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: 0,
            blocks: 0,
            nlink: 1,
            link_group: None,
            rdev: 0,
            link_target: None,
            xattrs: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }

    /// Name as text for display (lossy for non-UTF-8 names).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Content digest for display and diff: a hash over the chunk ids (equal content, equal digest).
    pub fn content_digest(&self) -> Option<String> {
        if self.kind != NodeKind::File {
            return None;
        }
        let mut h = blake3::Hasher::new();
        for c in &self.content {
            h.update(&c.id.0);
            h.update(&c.len.to_le_bytes());
        }
        Some(h.finalize().to_hex()[..16].to_string())
    }
}

/// True when `name` is a single, normal path component: non-empty, not `.` or `..`, without
/// `/` or NUL. Only such names may be joined to a target directory.
pub fn is_normal_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// Total length of a chunk list; `None` if it overflows (only a hostile tree can get there).
pub fn content_len(content: &[ChunkRef]) -> Option<u64> {
    content
        .iter()
        .try_fold(0u64, |acc, c| acc.checked_add(c.len as u64))
}

/// A directory's entries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serializes (sorting first, so equal directories give equal bytes).
    pub fn encode(&mut self) -> Vec<u8> {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = TREE_MAGIC.to_vec();
        let body = bincode::serde::encode_to_vec(&*self, bincode::config::standard())
            .expect("tree serialization cannot fail");
        out.extend_from_slice(&body);
        out
    }

    /// Parses a tree blob; anything malformed is `Corrupt` (never a panic).
    pub fn decode(bytes: &[u8], id: &TreeId) -> Result<Tree> {
        if bytes.len() < 4 || bytes[..3] != TREE_MAGIC[..3] {
            return Err(Error::Corrupt(format!(
                "tree {}: not a tree blob",
                id.short()
            )));
        }
        if bytes[3] != TREE_MAGIC[3] {
            return Err(Error::Unsupported(format!(
                "tree {} has format version {}; this wayback reads {}",
                id.short(),
                bytes[3],
                TREE_MAGIC[3]
            )));
        }
        let cfg = bincode::config::standard().with_limit::<{ 1 << 30 }>();
        let (t, used): (Tree, usize) = bincode::serde::decode_from_slice(&bytes[4..], cfg)
            .map_err(|e| Error::Corrupt(format!("tree {}: {e}", id.short())))?;
        if used != bytes.len() - 4 {
            return Err(Error::Corrupt(format!(
                "tree {}: trailing bytes",
                id.short()
            )));
        }
        t.validate()
            .map_err(|why| Error::Corrupt(format!("tree {id}: {why}")))?;
        Ok(t)
    }

    /// Checks what every reader relies on: entries sorted by name and unique, each name one
    /// normal path component ([`is_normal_name`]), a file's chunk lengths adding up to its size,
    /// and no content on anything but a file.
    ///
    /// Why at decode: restore joins names into paths (as root, for pg-at too), the mount hands
    /// them to the kernel and binary-searches them, and every read path maps offsets through the
    /// chunk list; one check here means none of them can be handed a `..` or a short file.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (i, n) in self.nodes.iter().enumerate() {
            if !is_normal_name(&n.name) {
                return Err(format!(
                    "entry {i} has an invalid name {:?}",
                    n.name_lossy()
                ));
            }
            if i > 0 && self.nodes[i - 1].name >= n.name {
                return Err(format!(
                    "entries not sorted or not unique at {:?}",
                    n.name_lossy()
                ));
            }
            if n.kind == NodeKind::File {
                let sum = content_len(&n.content);
                if sum != Some(n.size) {
                    return Err(format!(
                        "{:?}: chunk lengths add up to {}, size is {}",
                        n.name_lossy(),
                        sum.map_or("more than 2^64".into(), |s| s.to_string()),
                        n.size
                    ));
                }
            } else if !n.content.is_empty() {
                return Err(format!(
                    "{:?}: a {:?} has content chunks",
                    n.name_lossy(),
                    n.kind
                ));
            }
        }
        Ok(())
    }

    /// Heap and inline bytes held by the decoded tree, so caches can be bounded by memory
    /// rather than by count (one directory of a million files weighs as much as 10k small ones).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Tree>()
            + self
                .nodes
                .iter()
                .map(|n| {
                    std::mem::size_of::<Node>()
                        + n.name.capacity()
                        + n.link_target.as_ref().map_or(0, |t| t.capacity())
                        + n.xattrs
                            .iter()
                            .map(|(k, v)| 48 + k.capacity() + v.capacity())
                            .sum::<usize>()
                        + n.content.capacity() * std::mem::size_of::<ChunkRef>()
                })
                .sum::<usize>()
    }

    /// Finds an entry by name (binary search; entries are sorted).
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_is_deterministic_and_roundtrips() {
        let mut a = Tree {
            nodes: vec![
                Node::new(b"b".to_vec(), NodeKind::File),
                Node::new(vec![0xff, 0x01], NodeKind::Dir),
            ],
        };
        let mut b = Tree {
            nodes: vec![a.nodes[1].clone(), a.nodes[0].clone()],
        };
        let ea = a.encode();
        assert_eq!(ea, b.encode());
        let id = BlobId([0; 32]);
        assert_eq!(Tree::decode(&ea, &id).unwrap(), a);
        assert!(a.find(b"b").is_some());
    }

    fn file(name: &[u8], lens: &[u32]) -> Node {
        let mut n = Node::new(name.to_vec(), NodeKind::File);
        n.content = lens
            .iter()
            .map(|&len| ChunkRef {
                id: BlobId([len as u8; 32]),
                len,
            })
            .collect();
        n.size = lens.iter().map(|&l| l as u64).sum();
        n
    }

    /// Bytes of a tree exactly as given (no sorting), as a hostile writer would store them.
    fn raw(t: &Tree) -> Vec<u8> {
        let mut out = TREE_MAGIC.to_vec();
        out.extend(bincode::serde::encode_to_vec(t, bincode::config::standard()).unwrap());
        out
    }

    fn refused(t: &Tree) -> String {
        let id = BlobId([9; 32]);
        match Tree::decode(&raw(t), &id) {
            Err(Error::Corrupt(m)) => {
                assert!(m.contains(&id.to_hex()), "{m}");
                m
            }
            other => panic!("{t:?} decoded as {other:?}"),
        }
    }

    #[test]
    fn hostile_trees_are_corrupt() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b", b"../../etc"] {
            refused(&Tree {
                nodes: vec![file(bad, &[3])],
            });
        }
        // Unsorted and duplicate names.
        refused(&Tree {
            nodes: vec![file(b"b", &[]), file(b"a", &[])],
        });
        refused(&Tree {
            nodes: vec![file(b"a", &[]), file(b"a", &[])],
        });
        // Sizes that the chunk list does not lay out.
        let mut n = file(b"f", &[10, 20]);
        n.size = 31;
        refused(&Tree { nodes: vec![n] });
        let mut n = file(b"f", &[u32::MAX; 3]);
        n.size = 5;
        refused(&Tree { nodes: vec![n] });
        // Content on a directory.
        let mut d = file(b"d", &[4]);
        d.kind = NodeKind::Dir;
        refused(&Tree { nodes: vec![d] });
        // A valid tree still decodes.
        let ok = Tree {
            nodes: vec![file(b"a", &[1, 2]), file(&[0xff, 1], &[])],
        };
        assert_eq!(Tree::decode(&raw(&ok), &BlobId([0; 32])).unwrap(), ok);
    }

    #[test]
    fn huge_counts_fail_without_allocating_them() {
        // A node count of 2^62 followed by nothing: must fail fast, not reserve 2^62 nodes.
        let mut b = TREE_MAGIC.to_vec();
        b.push(0xfd); // bincode varint: u64 follows
        b.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(Tree::decode(&b, &BlobId([0; 32])).unwrap_err().is_corrupt());
        // One node whose name claims 2^62 bytes.
        let mut b = TREE_MAGIC.to_vec();
        b.push(1);
        b.push(0xfd);
        b.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(Tree::decode(&b, &BlobId([0; 32])).unwrap_err().is_corrupt());
    }

    fn any_node() -> impl Strategy<Value = Node> {
        (
            prop::collection::vec(any::<u8>(), 0..4),
            prop::collection::vec(0u32..5, 0..3),
            0u64..12,
            any::<bool>(),
        )
            .prop_map(|(name, lens, size, dir)| {
                let mut n = file(&name, &lens);
                if size < 10 {
                    n.size = size;
                }
                if dir {
                    n.kind = NodeKind::Dir;
                }
                n
            })
    }

    proptest! {
        #[test]
        fn decode_accepts_exactly_the_valid_trees(nodes in prop::collection::vec(any_node(), 0..5)) {
            let t = Tree { nodes };
            let valid = t.nodes.iter().all(|n| is_normal_name(&n.name)
                && match n.kind {
                    NodeKind::File => n.content.iter().map(|c| c.len as u64).sum::<u64>() == n.size,
                    _ => n.content.is_empty(),
                })
                && t.nodes.windows(2).all(|w| w[0].name < w[1].name);
            let got = Tree::decode(&raw(&t), &BlobId([0; 32]));
            prop_assert_eq!(got.is_ok(), valid, "{:?}", got);
            if valid {
                prop_assert_eq!(got.unwrap(), t);
            }
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut b = TREE_MAGIC.to_vec();
            b.extend_from_slice(&bytes);
            let _ = Tree::decode(&b, &BlobId([0; 32]));
            let _ = Tree::decode(&bytes, &BlobId([0; 32]));
        }
    }
}
