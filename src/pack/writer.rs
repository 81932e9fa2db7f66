//! Building packs in memory and sealing blobs.

use crate::crypto::{blob_ad, MasterKey};
use crate::id::{BlobId, BlobKind, PackId};
use crate::pack::{encode_entries, BlobEntry, HEADER_AD, PACK_MAGIC, PACK_VERSION};

/// A blob compressed and encrypted, ready to append to a pack.
pub struct SealedBlob {
    /// Data or tree.
    pub kind: BlobKind,
    /// Content id (of the plaintext).
    pub id: BlobId,
    /// Plaintext length.
    pub raw_length: u32,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
}

/// Compresses (when it helps) and seals one blob. CPU-heavy: run on worker threads.
pub fn seal_blob(
    key: &MasterKey,
    kind: BlobKind,
    id: BlobId,
    data: &[u8],
    level: i32,
) -> SealedBlob {
    let mut plain = Vec::with_capacity(data.len() / 2 + 64);
    plain.push(1u8);
    let compressed = zstd::stream::copy_encode(data, &mut plain, level).is_ok()
        && plain.len() < data.len() + 1 - data.len() / 64;
    if !compressed {
        plain.clear();
        plain.reserve(data.len() + 1);
        plain.push(0u8);
        plain.extend_from_slice(data);
    }
    SealedBlob {
        kind,
        id,
        raw_length: data.len() as u32,
        bytes: key.seal(&blob_ad(kind, &id), &plain),
    }
}

/// Accumulates sealed blobs into one pack image.
///
/// Why in memory: packs are bounded (~16 MiB), and building the whole image lets the backend
/// store it with one atomic put, which an object store needs anyway.
#[derive(Default)]
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, blob: &SealedBlob) {
        self.entries.push(BlobEntry {
            kind: blob.kind,
            id: blob.id,
            offset: self.buf.len() as u32,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
        });
        self.buf.extend_from_slice(&blob.bytes);
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals the header, appends the trailer and returns (pack id, image, entries).
    pub fn finish(self, key: &MasterKey) -> (PackId, Vec<u8>, Vec<BlobEntry>) {
        let PackWriter { mut buf, entries } = self;
        let header = key.seal(HEADER_AD, &encode_entries(&entries));
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        buf.extend_from_slice(&PACK_MAGIC);
        let id = PackId(*blake3::hash(&buf).as_bytes());
        (id, buf, entries)
    }
}
