//! Property tests for the pack format: random blobs round-trip, and damaged packs are refused.

use super::*;
use crate::crypto::MasterKey;
use crate::pack::Sealer;
use crate::repo::backend::{Backend, LocalBackend};
use proptest::prelude::*;

fn build(key: &MasterKey, blobs: &[(bool, Vec<u8>)]) -> (PackId, Vec<u8>, Vec<BlobEntry>) {
    let mut w = PackWriter::new();
    for (is_tree, data) in blobs {
        let kind = if *is_tree {
            BlobKind::Tree
        } else {
            BlobKind::Data
        };
        w.add(&seal_blob(key, kind, key.blob_id(data), data, 3));
    }
    w.finish(key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_blobs_roundtrip(blobs in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..5000)), 1..12)) {
        let key = MasterKey::generate();
        let dir = tempfile::tempdir().unwrap();
        let be = LocalBackend::new(dir.path());
        let (id, image, entries) = build(&key, &blobs);
        be.put(&pack_path(&id), &image).unwrap();
        let header = read_pack_header(&be, &key, &id).unwrap();
        prop_assert_eq!(&header, &entries);
        for (e, (_, data)) in header.iter().zip(&blobs) {
            let sealed = &image[e.offset as usize..(e.offset + e.length) as usize];
            let got = open_blob(&key, e.kind, &e.id, e.raw_length, sealed, &|| "t".into()).unwrap();
            prop_assert_eq!(&got, data);
        }
    }

    #[test]
    fn any_flipped_byte_is_detected(data in prop::collection::vec(any::<u8>(), 1..3000), pos in any::<prop::sample::Index>()) {
        let key = MasterKey::generate();
        let (id, mut image, _) = build(&key, &[(false, data.clone())]);
        let p = pos.index(image.len());
        image[p] ^= 0x40;
        let dir = tempfile::tempdir().unwrap();
        let be = LocalBackend::new(dir.path());
        be.put(&pack_path(&id), &image).unwrap();
        // Either the header refuses, or the blob refuses: never the wrong bytes.
        if let Ok(h) = read_pack_header(&be, &key, &id) {
            let e = h[0];
            let sealed = &image[e.offset as usize..(e.offset + e.length) as usize];
            match open_blob(&key, e.kind, &e.id, e.raw_length, sealed, &|| "t".into()) {
                Ok(got) => prop_assert_eq!(got, data),
                Err(err) => prop_assert!(err.is_corrupt()),
            }
        }
    }

    #[test]
    fn header_decoder_never_panics(buf in prop::collection::vec(any::<u8>(), 0..400), end in any::<u64>()) {
        let _ = decode_entries(&PackId([0; 32]), &buf, end);
        let _ = decode_trailer(&PackId([0; 32]), &buf[..buf.len().min(16)]);
    }
}

#[test]
fn truncated_pack_is_refused() {
    let key = MasterKey::generate();
    let (id, image, _) = build(&key, &[(false, vec![7u8; 1000])]);
    let dir = tempfile::tempdir().unwrap();
    let be = LocalBackend::new(dir.path());
    be.put(&pack_path(&id), &image[..image.len() - 5]).unwrap();
    assert!(read_pack_header(&be, &key, &id).unwrap_err().is_corrupt());
}

#[test]
fn future_version_is_refused_clearly() {
    let key = MasterKey::generate();
    let (id, mut image, _) = build(&key, &[(false, vec![7u8; 10])]);
    let n = image.len();
    image[n - 12..n - 8].copy_from_slice(&2u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let be = LocalBackend::new(dir.path());
    be.put(&pack_path(&id), &image).unwrap();
    let err = read_pack_header(&be, &key, &id).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn one_sealer_reused_across_sizes_and_kinds_of_data_roundtrips(
        blobs in prop::collection::vec((0u8..3, 0usize..200_000, any::<u64>()), 1..8)
    ) {
        let key = MasterKey::generate();
        let mut sealer = Sealer::new(1);
        let mut out = Vec::new();
        for (pattern, len, seed) in blobs {
            // 0: noise (stored raw), 1: zeros, 2: a small alphabet (both compress).
            let mut x = seed | 1;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match pattern {
                        0 => x as u8,
                        1 => 0,
                        _ => b"ACGT"[(x % 4) as usize],
                    }
                })
                .collect();
            let id = key.blob_id(&data);
            sealer.seal_into(&key, BlobKind::Data, &id, &data, &mut out);
            let got = open_blob(&key, BlobKind::Data, &id, len as u32, &out, &|| "t".into()).unwrap();
            prop_assert_eq!(&got, &data);
            if pattern != 0 && len > 4096 {
                prop_assert!(out.len() < len / 2, "compressible data was stored raw");
            }
            prop_assert!(out.len() <= len + 1 + crate::crypto::SEAL_OVERHEAD);
        }
    }
}

#[test]
fn a_frame_longer_than_its_recorded_length_is_refused() {
    // A header entry that understates raw_length must not make the reader decode (and keep)
    // more than it said: the bulk decompressor gets exactly that much room.
    let key = MasterKey::generate();
    let data = vec![0u8; 100_000];
    let id = key.blob_id(&data);
    let mut out = Vec::new();
    Sealer::new(3).seal_into(&key, BlobKind::Data, &id, &data, &mut out);
    let err = open_blob(&key, BlobKind::Data, &id, 1000, &out, &|| "t".into()).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    let ok = open_blob(&key, BlobKind::Data, &id, 100_000, &out, &|| "t".into()).unwrap();
    assert_eq!(ok, data);
}

#[test]
fn a_recorded_length_no_frame_can_reach_is_refused_before_allocating() {
    // Found by the blob_open fuzz target (fuzz/regressions/blob_open/): a 20-byte frame with
    // raw_length 4 GiB allocated 4 GiB before zstd said no.
    let key = MasterKey::generate();
    let data = vec![1u8; 50_000];
    let id = key.blob_id(&data);
    let mut out = Vec::new();
    Sealer::new(3).seal_into(&key, BlobKind::Data, &id, &data, &mut out);
    let err = open_blob(&key, BlobKind::Data, &id, u32::MAX, &out, &|| "t".into()).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(err.to_string().contains("zstd frame can hold"), "{err}");
}

#[test]
fn the_most_compressible_chunks_still_fit_the_expansion_bound() {
    // All-equal bytes are zstd's best case; the bound must never refuse a real blob.
    let key = MasterKey::generate();
    for len in [1usize, 1000, 1 << 20, 8 << 20, 16 << 20] {
        let data = vec![0u8; len];
        let id = key.blob_id(&data);
        for level in [1, 3, 19] {
            let mut out = Vec::new();
            Sealer::new(level).seal_into(&key, BlobKind::Data, &id, &data, &mut out);
            let got = open_blob(&key, BlobKind::Data, &id, len as u32, &out, &|| "t".into());
            assert_eq!(got.unwrap().len(), len, "{len} bytes at level {level}");
        }
    }
}

#[test]
fn a_pack_of_tiny_blobs_is_full_at_max_pack_blobs_not_only_at_its_size() {
    let mut pw = PackWriter::new();
    for i in 0..MAX_PACK_BLOBS {
        assert!(!pw.is_full(), "full after {i} blobs of 8 bytes");
        let id = crate::id::BlobId(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes());
        pw.add_sealed(BlobKind::Data, id, 8, &[0u8; 8]);
    }
    assert!(pw.is_full());
    assert!(pw.len() < TARGET_PACK_SIZE);
    let mut big = PackWriter::new();
    big.add_sealed(
        BlobKind::Data,
        crate::id::BlobId([1; 32]),
        1,
        &vec![0u8; TARGET_PACK_SIZE],
    );
    assert!(big.is_full());
}
