//! Reading pack headers and opening blobs.

use crate::crypto::{blob_ad, MasterKey};
use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, PackId};
use crate::pack::{decode_entries, decode_trailer, pack_path, BlobEntry, HEADER_AD, TRAILER_LEN};
use crate::repo::backend::Backend;

/// Reads and authenticates a pack's header (two range reads: trailer, then header).
pub fn read_pack_header(be: &dyn Backend, key: &MasterKey, id: &PackId) -> Result<Vec<BlobEntry>> {
    let path = pack_path(id);
    let size = be.size(&path)?;
    if size < TRAILER_LEN as u64 {
        return Err(Error::Corrupt(format!(
            "pack {id}: {size} bytes, shorter than a trailer"
        )));
    }
    let t = be.get_range(&path, size - TRAILER_LEN as u64, TRAILER_LEN)?;
    let (hlen, _) = decode_trailer(id, &t)?;
    let hlen = hlen as u64;
    if hlen + TRAILER_LEN as u64 > size {
        return Err(Error::Corrupt(format!(
            "pack {id}: header length {hlen} exceeds pack size"
        )));
    }
    let data_end = size - TRAILER_LEN as u64 - hlen;
    let sealed = be.get_range(&path, data_end, hlen as usize)?;
    let plain = key.open(HEADER_AD, &sealed, &|| format!("pack {id} header"))?;
    decode_entries(id, &plain, data_end)
}

thread_local! {
    /// One zstd decompression context per thread, reused: a fresh streaming decoder per blob
    /// allocated and initialised its window and tables for every chunk a reader opened.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Most bytes a zstd payload of `len` bytes can decode to: every block decodes to at most
/// 128 KiB and takes at least 4 bytes (a 3-byte block header and one byte of RLE, raw or
/// compressed content), so no payload expands more than 32768 times.
fn max_zstd_output(len: usize) -> u64 {
    (len as u64).saturating_mul(32 * 1024)
}

/// Decrypts, decompresses and verifies one sealed blob against its expected id.
///
/// Never returns wrong bytes: the AEAD tag covers kind and id, and the plaintext is re-hashed.
pub fn open_blob(
    key: &MasterKey,
    kind: BlobKind,
    id: &BlobId,
    raw_length: u32,
    sealed: &[u8],
    where_: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let plain = key.open(&blob_ad(kind, id), sealed, &|| {
        format!("blob {} ({})", id.short(), where_())
    })?;
    let (flag, payload) = plain
        .split_first()
        .ok_or_else(|| Error::Corrupt(format!("blob {} ({}): empty", id.short(), where_())))?;
    let data = match flag {
        0 => payload.to_vec(),
        1 => {
            // A length no frame of this size can decode to is damage: refuse it before
            // allocating that much room (raw_length comes from a pack header or the index,
            // and a damaged index said 4 GiB for a 20-byte blob).
            if raw_length as u64 > max_zstd_output(payload.len()) {
                return Err(Error::Corrupt(format!(
                    "blob {} ({}): recorded length {raw_length} is more than a {}-byte zstd \
                     frame can hold",
                    id.short(),
                    where_(),
                    payload.len()
                )));
            }
            // Exactly the recorded length of room: a frame that would decode to more is
            // refused by zstd itself (no decompression bomb), one that decodes to less fails
            // the length check below.
            let mut out = Vec::with_capacity(raw_length as usize);
            DECOMPRESSOR
                .with(|d| {
                    let mut d = d.borrow_mut();
                    let d = match d.as_mut() {
                        Some(d) => d,
                        None => d.insert(zstd::bulk::Decompressor::new()?),
                    };
                    d.decompress_to_buffer(payload, &mut out)
                })
                .map_err(|e| {
                    Error::Corrupt(format!("blob {} ({}): zstd: {e}", id.short(), where_()))
                })?;
            out
        }
        f => {
            return Err(Error::Corrupt(format!(
                "blob {} ({}): unknown compression flag {f}",
                id.short(),
                where_()
            )))
        }
    };
    if data.len() != raw_length as usize || key.blob_id(&data) != *id {
        return Err(Error::Corrupt(format!(
            "blob {} ({}): content does not match its id",
            id.short(),
            where_()
        )));
    }
    Ok(data)
}
