//! Building packs in memory and sealing blobs.

use crate::crypto::{blob_ad, MasterKey};
use crate::id::{BlobId, BlobKind, PackId};
use crate::pack::{encode_entries, encode_trailer, BlobEntry, HEADER_AD};

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
    thread_local! {
        static SEALER: std::cell::RefCell<Option<Sealer>> = const { std::cell::RefCell::new(None) };
    }
    let mut bytes = Vec::new();
    SEALER.with(|s| {
        let mut s = s.borrow_mut();
        let sealer = match s.as_mut() {
            Some(x) if x.level == level => x,
            _ => s.insert(Sealer::new(level)),
        };
        sealer.seal_into(key, kind, &id, data, &mut bytes);
    });
    SealedBlob {
        kind,
        id,
        raw_length: data.len() as u32,
        bytes,
    }
}

/// A reusable zstd context for sealing blobs one after another on one thread.
///
/// Why: a fresh streaming encoder per blob allocates and zeroes its tables and copies the input
/// through its window (and compresses in the slower "external dictionary" mode); a reused bulk
/// context compresses the blob in one call. With the output written in place (see
/// [`Sealer::seal_into`]) this cut wal-push's CPU per segment (numbers in `wal`).
pub struct Sealer {
    cctx: Option<zstd::bulk::Compressor<'static>>,
    level: i32,
}

impl Sealer {
    /// A sealer compressing at zstd `level`.
    pub fn new(level: i32) -> Self {
        Sealer {
            cctx: zstd::bulk::Compressor::new(level).ok(),
            level,
        }
    }

    /// Seals `data` into `out` (replacing its contents, keeping its allocation):
    /// `nonce | AEAD(flag | payload) | tag`, the layout [`seal_blob`] produces. The payload is
    /// zstd when that saves more than 1/64 of the size, else the raw bytes (flag 0).
    pub fn seal_into(
        &mut self,
        key: &MasterKey,
        kind: BlobKind,
        id: &BlobId,
        data: &[u8],
        out: &mut Vec<u8>,
    ) {
        // Room for nonce + flag, then a payload only worth keeping if it is this much smaller.
        const HEAD: usize = 12 + 1;
        let limit = data.len() - data.len() / 64;
        out.clear();
        out.reserve(HEAD + data.len() + crate::crypto::SEAL_OVERHEAD);
        out.extend_from_slice(&[0u8; 12]);
        out.push(1u8);
        let compressed = match self.cctx.as_mut() {
            Some(c) => {
                // Writes after nonce and flag; fails when the frame outgrows the buffer's room
                // (as big as the raw fallback), and then raw is better anyway.
                let mut cur = std::io::Cursor::new(&mut *out);
                cur.set_position(HEAD as u64);
                matches!(c.compress_to_buffer(data, &mut cur), Ok(n) if n < limit)
            }
            None => false,
        };
        if !compressed {
            out.truncate(12);
            out.push(0u8);
            out.extend_from_slice(data);
        }
        key.seal_in_place(&blob_ad(kind, id), out);
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

    /// An empty pack built in `buf`'s allocation (a finished image handed back for reuse:
    /// wal-push builds one pack per segment, and fresh 16 MiB buffers cost page faults).
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        PackWriter {
            buf,
            entries: Vec::new(),
        }
    }

    /// Appends a blob sealed by [`Sealer::seal_into`].
    pub fn add_sealed(&mut self, kind: BlobKind, id: BlobId, raw_length: u32, sealed: &[u8]) {
        self.entries.push(BlobEntry {
            kind,
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, blob: &SealedBlob) {
        self.add_sealed(blob.kind, blob.id, blob.raw_length, &blob.bytes);
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Blobs added so far.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// True once the pack should be closed: [`TARGET_PACK_SIZE`](super::TARGET_PACK_SIZE)
    /// bytes or [`MAX_PACK_BLOBS`](super::MAX_PACK_BLOBS) blobs.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= super::TARGET_PACK_SIZE || self.entries.len() >= super::MAX_PACK_BLOBS
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
        buf.extend_from_slice(&encode_trailer(header.len() as u32));
        let id = PackId(*blake3::hash(&buf).as_bytes());
        (id, buf, entries)
    }
}
