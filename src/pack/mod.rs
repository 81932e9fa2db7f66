//! Pack files: the only code that knows the pack byte layout.
//!
//! Layout (version 1; all integers little-endian; never change without a version bump):
//! ```text
//! blob 0 | blob 1 | ... | blob n-1 | header (sealed) | trailer (16 bytes)
//!
//! blob     = sealed(ad = kind byte | blob id, plaintext = flag byte | payload)
//!            flag 0: payload is the raw data; flag 1: payload is zstd-compressed
//! header   = sealed(ad = "wayback-pack-header-v1", plaintext = entries)
//! entries  = count: u32 | count x entry
//! entry    = kind: u8 | id: [u8; 32] | offset: u32 | length: u32 | raw_length: u32   (45 bytes)
//! trailer  = header_length: u32 | version: u32 (=1) | magic: b"WBPACK\0\x01"
//! ```
//! A pack alone is enough to rebuild its index entries; its file name is the unkeyed blake3 of
//! its bytes, so a pack can be verified without any key.

mod reader;
mod writer;

pub use reader::{open_blob, read_pack_header};
pub use writer::{seal_blob, PackWriter, SealedBlob, Sealer};

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, PackId};

/// Pack trailer magic (never change).
pub const PACK_MAGIC: [u8; 8] = *b"WBPACK\0\x01";
/// Current pack format version (never reuse a number).
pub const PACK_VERSION: u32 = 1;
/// Trailer length in bytes.
pub const TRAILER_LEN: usize = 16;
/// Header entry length in bytes.
pub const ENTRY_LEN: usize = 45;
/// Associated data of the sealed header.
pub const HEADER_AD: &[u8] = b"wayback-pack-header-v1";
/// A pack is closed once it reaches this many bytes.
pub const TARGET_PACK_SIZE: usize = 16 * 1024 * 1024;
/// ...or this many blobs. Why: a pack of tiny blobs (a tree of 1M small files: ~50 sealed bytes
/// each) reached 16 MiB only at ~330k blobs, and its header (45 bytes per blob, sealed in one
/// piece), the image it is appended to and its index batch were each tens of MB at once: the
/// 1M-file backup peaked at 169 MB RSS. 16k blobs keep a header under 1 MiB.
pub const MAX_PACK_BLOBS: usize = 16 * 1024;

/// Where one blob sits inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// Data or tree.
    pub kind: BlobKind,
    /// Content id.
    pub id: BlobId,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Length of the plaintext data (before compression).
    pub raw_length: u32,
}

/// Encodes header entries (plaintext, before sealing).
pub fn encode_entries(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.push(e.kind.to_byte());
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    out
}

/// Decodes header entries; `pack_len_without_trailer` bounds every entry.
pub fn decode_entries(pack: &PackId, buf: &[u8], data_end: u64) -> Result<Vec<BlobEntry>> {
    let bad = |why: &str| Error::Corrupt(format!("pack {pack}: header {why}"));
    if buf.len() < 4 {
        return Err(bad("too short"));
    }
    let count = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if buf.len() != 4 + count * ENTRY_LEN {
        return Err(bad("length does not match its entry count"));
    }
    let mut out = Vec::with_capacity(count);
    for chunk in buf[4..].chunks_exact(ENTRY_LEN) {
        let kind = BlobKind::from_byte(chunk[0]).ok_or_else(|| bad("has an unknown blob kind"))?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&chunk[1..33]);
        let u = |i: usize| u32::from_le_bytes(chunk[i..i + 4].try_into().expect("4 bytes"));
        let e = BlobEntry {
            kind,
            id: BlobId(id),
            offset: u(33),
            length: u(37),
            raw_length: u(41),
        };
        if e.offset as u64 + e.length as u64 > data_end {
            return Err(bad("points past the blob area"));
        }
        out.push(e);
    }
    Ok(out)
}

/// The trailer of a pack whose sealed header is `header_len` bytes (the inverse of
/// [`decode_trailer`], so the fuzz targets can check that they round-trip).
pub fn encode_trailer(header_len: u32) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..4].copy_from_slice(&header_len.to_le_bytes());
    t[4..8].copy_from_slice(&PACK_VERSION.to_le_bytes());
    t[8..].copy_from_slice(&PACK_MAGIC);
    t
}

/// Decodes a trailer into (header length, version), checking the magic.
pub fn decode_trailer(pack: &PackId, t: &[u8]) -> Result<(u32, u32)> {
    if t.len() != TRAILER_LEN || t[8..16] != PACK_MAGIC {
        return Err(Error::Corrupt(format!(
            "pack {pack}: bad trailer (truncated or not a pack)"
        )));
    }
    let hlen = u32::from_le_bytes(t[..4].try_into().expect("4 bytes"));
    let ver = u32::from_le_bytes(t[4..8].try_into().expect("4 bytes"));
    if ver != PACK_VERSION {
        return Err(Error::Unsupported(format!(
            "pack {pack} has format version {ver}; this wayback reads version {PACK_VERSION}"
        )));
    }
    Ok((hlen, ver))
}

/// Repository-relative path of a pack.
pub fn pack_path(id: &PackId) -> String {
    let h = id.to_hex();
    format!("packs/{}/{}", &h[..2], h)
}

#[cfg(test)]
mod tests;
