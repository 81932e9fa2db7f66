//! Typed 32-byte identifiers.
//!
//! Why newtypes: a chunk id, a tree id, a pack id and a snapshot id are all 32 bytes, and mixing
//! them up is a silent data-loss bug. Distinct types make the compiler refuse it.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lower-case hex, the form used in file names and output.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut b = [0u8; 32];
                hex::decode_to_slice(s, &mut b).ok()?;
                Some(Self(b))
            }
            /// Short form for humans (first 8 hex digits).
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// Keyed blake3 of a blob's plaintext: names chunks and trees without revealing content.
    BlobId
);
id_type!(
    /// Unkeyed blake3 of a pack file's bytes: its file name, so a pack can be verified alone.
    PackId
);
id_type!(
    /// Keyed blake3 of a snapshot manifest's plaintext.
    SnapshotId
);

/// A tree is a blob of kind `Tree`; the alias documents intent at call sites.
pub type TreeId = BlobId;
/// A data chunk is a blob of kind `Data`.
pub type ChunkId = BlobId;

/// What a blob holds. Part of the AEAD associated data, so a tree can never be read as data.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum BlobKind {
    /// File content chunk.
    Data,
    /// Serialized directory tree.
    Tree,
}

impl BlobKind {
    /// On-disk byte (never change).
    pub fn to_byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
    /// Decodes the on-disk byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}
