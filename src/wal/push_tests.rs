//! The push pipeline against whole files: every size around the chunk boundaries, repeated
//! chunks, a failed push followed by good ones (the reused scratch must not lose data), and
//! concurrent pushes (two scratch sets).

use super::*;
use crate::wal::{fetch, read_record};

fn repo(dir: &Path) -> Repository {
    Repository::init(&dir.join("repo"), b"pw").unwrap()
}

/// Deterministic bytes that compress a little (like WAL: records among noise).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 64 < 40 {
                (x & 0xff) as u8
            } else {
                (i / 64) as u8
            }
        })
        .collect()
}

/// Pushes `bytes` as `name`, fetches it back and checks bytes, size and digest (b3sum's).
fn round_trip(repo: &Repository, dir: &Path, name: &str, bytes: &[u8]) {
    let src = dir.join(name);
    std::fs::write(&src, bytes).unwrap();
    assert_eq!(push(repo, "c", &src).unwrap(), Pushed::Stored, "{name}");
    let rec = read_record(repo, "c", name).unwrap();
    assert_eq!(rec.size, bytes.len() as u64, "{name}");
    assert_eq!(rec.digest, blake3::hash(bytes).to_hex().as_str(), "{name}");
    assert_eq!(rec.content.len(), bytes.len().div_ceil(WAL_CHUNK), "{name}");
    let out = dir.join(format!("{name}.out"));
    fetch(repo, "c", name, &out).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == bytes,
        "{name}: fetched bytes differ"
    );
    // Same bytes again: idempotent.
    assert_eq!(
        push(repo, "c", &src).unwrap(),
        Pushed::AlreadyThere,
        "{name}"
    );
}

#[test]
fn every_size_around_chunk_boundaries_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let sizes = [
        0,
        1,
        WAL_CHUNK - 1,
        WAL_CHUNK,
        WAL_CHUNK + 1,
        7 * WAL_CHUNK + 12345, // more chunks than the scratch has slots
        13 * WAL_CHUNK,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        // History file names take any content (segments are checked for a system id).
        round_trip(
            &repo,
            dir.path(),
            &format!("{:08X}.history", i + 2),
            &data(len, i as u64),
        );
    }
}

#[test]
fn repeated_chunks_are_stored_once_and_read_back_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    // A switched segment: some WAL, then zeros to 16 MiB (the zero chunks are all one blob).
    let mut seg = data(3 * WAL_CHUNK + 999, 7);
    seg[2] = 0; // no long page header: no system id to check
    seg[3] = 0;
    seg.resize(16 * WAL_CHUNK, 0);
    round_trip(&repo, dir.path(), "000000010000000000000001", &seg);
    let rec = read_record(&repo, "c", "000000010000000000000001").unwrap();
    let zero = rec.content[4].id;
    assert!(rec.content[4..].iter().all(|c| c.id == zero));
    assert!(rec.locations[4..].iter().all(|l| *l == rec.locations[4]));
    let mut distinct: Vec<_> = rec.locations.iter().map(|l| (l.pack, l.offset)).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "four data chunks and one zero chunk");
}

#[test]
fn a_failed_push_does_not_shorten_the_next_ones() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    // A directory opens but fails on read: the push fails after taking a chunk slot.
    let d = File::open(dir.path()).unwrap();
    for _ in 0..20 {
        let err = push_file(&repo, "c", "00000009.history", &d, dir.path()).unwrap_err();
        assert!(err.to_string().contains("read"), "{err}");
    }
    assert!(!super::super::exists(repo.be.as_ref(), "c", "00000009.history").unwrap());
    round_trip(
        &repo,
        dir.path(),
        "0000000A.history",
        &data(9 * WAL_CHUNK + 5, 3),
    );
}

#[test]
fn a_file_whose_size_lies_is_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    // stat says 0 bytes, reading gives more: as if it grew while being archived.
    let p = Path::new("/proc/self/status");
    let err = push_file(&repo, "c", "0000000B.history", &File::open(p).unwrap(), p).unwrap_err();
    assert!(err.to_string().contains("changed size"), "{err}");
    assert!(!super::super::exists(repo.be.as_ref(), "c", "0000000B.history").unwrap());
}

#[test]
fn the_digest_merged_from_chunk_parts_is_b3sum() {
    let mut sizes = vec![0, 1, 1024, 1025, WAL_CHUNK - 1, WAL_CHUNK, WAL_CHUNK + 1];
    for k in 2..=9 {
        sizes.extend([
            k * WAL_CHUNK - 1,
            k * WAL_CHUNK,
            k * WAL_CHUNK + 1024,
            k * WAL_CHUNK + 7,
        ]);
    }
    let all = data(9 * WAL_CHUNK + 1024, 42);
    for len in sizes {
        let bytes = &all[..len];
        let parts: Vec<[u8; 32]> = bytes
            .chunks(WAL_CHUNK)
            .enumerate()
            .map(|(i, c)| chunk_hash(c, (i * WAL_CHUNK) as u64, len as u64))
            .collect();
        assert_eq!(
            file_digest(&parts, len as u64),
            blake3::hash(bytes),
            "{len} bytes"
        );
    }
}

#[test]
fn concurrent_pushes_each_store_their_own_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    std::thread::scope(|s| {
        for i in 0..3u64 {
            let (repo, dir) = (&repo, dir.path());
            s.spawn(move || {
                let len = (5 + i as usize) * WAL_CHUNK + 77;
                round_trip(
                    repo,
                    dir,
                    &format!("{:08X}.history", 0x20 + i),
                    &data(len, 100 + i),
                );
            });
        }
    });
}

#[test]
fn racing_pushes_of_one_name_with_different_bytes_never_replace_an_acknowledged_copy() {
    // Two standbys promoting at once both push `00000002.history`, with different contents.
    // Exactly one push may succeed; the other must fail with a conflict, and what is archived
    // must be the winner's bytes. (Before the no-replace commit, both checks saw no record,
    // both renamed, both were acknowledged, and the later rename replaced the first copy.)
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    for round in 0..20u64 {
        let name = format!("{:08X}.history", 0x100 + round);
        let bodies = [
            data(3 * WAL_CHUNK + 5, round),
            data(3 * WAL_CHUNK + 5, round + 1000),
        ];
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = bodies
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    let (repo, dir, name) = (&repo, dir.path(), name.clone());
                    s.spawn(move || {
                        let sub = dir.join(format!("r{round}-{i}"));
                        std::fs::create_dir_all(&sub).unwrap();
                        let src = sub.join(&name);
                        std::fs::write(&src, body).unwrap();
                        push(repo, "c", &src)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        let other = 1 - won[0];
        assert!(
            matches!(results[other], Err(WalError::Conflict { .. })),
            "round {round}: {:?}",
            results[other]
        );
        let out = dir.path().join(format!("{name}.out"));
        fetch(&repo, "c", &name, &out).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == bodies[won[0]],
            "round {round}: wrong copy kept"
        );
    }
}

#[test]
fn a_stale_location_hint_falls_back_to_the_index_and_never_gives_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    drop(repo(dir.path()));
    // A writer: its index can take the packs below.
    let repo =
        Repository::open(&dir.path().join("repo"), b"pw", crate::repo::Access::Write).unwrap();
    let bytes = data(2 * WAL_CHUNK + 3, 9);
    let src = dir.path().join("0000000C.history");
    std::fs::write(&src, &bytes).unwrap();
    push(&repo, "c", &src).unwrap();
    let rec = read_record(&repo, "c", "0000000C.history").unwrap();
    let stale = |c: &ChunkRef| {
        let mut loc = rec.hints()[0].1;
        loc.pack = crate::id::PackId([7; 32]);
        (c.id, loc)
    };
    // Not indexed yet: a hint to a missing pack is an error naming it, never other bytes.
    repo.add_location_hints([stale(&rec.content[0])]);
    let err = repo
        .read_blob(BlobKind::Data, &rec.content[0].id)
        .unwrap_err();
    assert!(
        err.is_corrupt() && err.to_string().contains("missing"),
        "{err}"
    );
    // Once the index knows the pack (as after the next backup), the index answers.
    crate::index::rebuild::index_missing_packs(repo.be.as_ref(), &repo.key, &repo.index, |_, _| {})
        .unwrap();
    let got = repo.read_blob(BlobKind::Data, &rec.content[0].id).unwrap();
    assert!(got == bytes[..WAL_CHUNK], "chunk 0 read back wrong");
}
