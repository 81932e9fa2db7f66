//! Entry points of the fuzz targets (`fuzz/`, run with cargo-fuzz by `scripts/fuzz.sh`) and of
//! the stable test that replays their corpora (`tests/it/fuzz_corpus.rs`).
//!
//! Why here and not in `fuzz/`: one function per decoder of bytes from disk or a socket,
//! calling the decoder wayback itself uses (no copied logic), shared by the nightly fuzzer and
//! the stable regression test, so CI exercises every corpus and crash reproducer without
//! cargo-fuzz. Each function returns normally for any input; it panics only when an invariant
//! fails: the decoder panicked, or something it accepted does not survive
//! `decode(encode(x)) == x`, or a reader of what it accepted fails where it must not. Nothing
//! in wayback calls this module.
//!
//! Sealed objects (manifests, WAL records, config, pack headers) are authenticated before they
//! are parsed, and a fuzzer cannot forge a tag: their targets take the plaintext (and, where
//! the whole file has a plaintext part, the raw file too) and seal with [`test_key`] where the
//! reader needs a sealed object.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{blob_ad, unwrap_master, MasterKey};
use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, PackId, TreeId};
use crate::ingest::tar::{unpack_tar, BlobSink};
use crate::pack::{
    decode_entries, decode_trailer, encode_entries, encode_trailer, open_blob, pack_path,
    read_pack_header, seal_blob, HEADER_AD, PACK_VERSION,
};
use crate::repo::backend::Backend;
use crate::snapshot::Snapshot;
use crate::timespec::{format_time, parse_time, TimeMs};
use crate::tree::{FileLayout, NodeKind, Tree};
use crate::wal::names::{self, WalName};

mod seeds;
pub use seeds::seeds;

/// One fuzz target: its name (the cargo-fuzz target and the corpus directory) and its body.
pub struct Target {
    /// Name of the target, of `fuzz/fuzz_targets/<name>.rs` and of `fuzz/corpus/<name>/`.
    pub name: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "pack_trailer",
        run: pack_trailer,
    },
    Target {
        name: "pack_header",
        run: pack_header,
    },
    Target {
        name: "pack",
        run: pack,
    },
    Target {
        name: "blob_open",
        run: blob_open,
    },
    Target {
        name: "tree",
        run: tree,
    },
    Target {
        name: "snapshot",
        run: snapshot,
    },
    Target {
        name: "key_file",
        run: key_file,
    },
    Target {
        name: "config",
        run: config,
    },
    Target {
        name: "wal_record",
        run: wal_record,
    },
    Target {
        name: "wal_name",
        run: wal_name,
    },
    Target {
        name: "agent_control",
        run: agent_control,
    },
    Target {
        name: "agent_push",
        run: agent_push,
    },
    Target {
        name: "tar_stream",
        run: tar_stream,
    },
    Target {
        name: "timespec",
        run: timespec,
    },
    Target {
        name: "agent_config",
        run: agent_config,
    },
    Target {
        name: "lock_body",
        run: lock_body,
    },
    Target {
        name: "agent_state",
        run: agent_state,
    },
    Target {
        name: "copy_state",
        run: copy_state,
    },
    Target {
        name: "wal_system",
        run: wal_system,
    },
    Target {
        name: "location",
        run: location,
    },
    Target {
        name: "s3_credentials",
        run: s3_credentials,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The fixed master key the targets seal and open with.
pub fn test_key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut raw = [0u8; 64];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        MasterKey::from_bytes(&raw)
    })
}

/// "Now" for the targets that need one (2025-09-18T02:00:00Z), so a run is reproducible.
pub const NOW: TimeMs = 1_758_160_800_000;

/// Cluster and name the WAL record target decodes for.
pub const WAL_CLUSTER: &str = "main";
/// See [`WAL_CLUSTER`].
pub const WAL_NAME: &str = "000000010000000000000001";

/// Small chunks, so that short tar inputs cut files into several chunks.
pub const TAR_CHUNKER: ChunkerParams = ChunkerParams {
    min: 64,
    avg: 256,
    max: 1024,
};

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a[..b.len().min(4)].copy_from_slice(&b[..b.len().min(4)]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    u64::from_le_bytes(a)
}

/// Input: a pack trailer (16 bytes).
pub fn pack_trailer(data: &[u8]) {
    if let Ok((hlen, ver)) = decode_trailer(&PackId([0; 32]), data) {
        assert_eq!(ver, PACK_VERSION);
        assert_eq!(&encode_trailer(hlen)[..], data);
    }
}

/// Input: the end of the blob area (u64 LE, 8 bytes) and a decrypted pack header.
pub fn pack_header(data: &[u8]) {
    let end = le_u64(data);
    let buf = data.get(8..).unwrap_or(&[]);
    if let Ok(entries) = decode_entries(&PackId([0; 32]), buf, end) {
        for e in &entries {
            assert!(e.offset as u64 + e.length as u64 <= end, "{e:?} past {end}");
        }
        assert_eq!(encode_entries(&entries), buf);
    }
}

/// An in-memory [`Backend`] for the pack target (errors as `LocalBackend` gives them).
#[derive(Default)]
struct MemBackend {
    files: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemBackend {
    fn file(&self, path: &str) -> Result<Vec<u8>> {
        self.files
            .lock()
            .expect("poisoned")
            .get(path)
            .cloned()
            .ok_or_else(|| Error::NotFound(path.to_string()))
    }
}

impl Backend for MemBackend {
    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        self.files
            .lock()
            .expect("poisoned")
            .insert(path.to_string(), data.to_vec());
        Ok(())
    }
    fn put_new(&self, path: &str, data: &[u8]) -> Result<bool> {
        let mut f = self.files.lock().expect("poisoned");
        if f.contains_key(path) {
            return Ok(false);
        }
        f.insert(path.to_string(), data.to_vec());
        Ok(true)
    }
    fn get(&self, path: &str) -> Result<Vec<u8>> {
        self.file(path)
    }
    fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.file(path)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(len).and_then(|end| f.get(start..end)) {
            Some(b) => Ok(b.to_vec()),
            None => Err(Error::Corrupt(format!(
                "{path}: truncated (wanted {len} bytes at offset {offset})"
            ))),
        }
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut out: Vec<String> = self
            .files
            .lock()
            .expect("poisoned")
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|k| k.split('/').next().unwrap_or(k).to_string())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    fn size(&self, path: &str) -> Result<u64> {
        Ok(self.file(path)?.len() as u64)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.files.lock().expect("poisoned").remove(path);
        Ok(())
    }
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// Reads a pack the way `check`, `prune` and the index rebuild do: header, then every blob.
fn read_whole_pack(be: &MemBackend, id: &PackId) {
    let key = test_key();
    let Ok(entries) = read_pack_header(be, key, id) else {
        return;
    };
    for e in entries {
        // The header's bounds were checked against the pack's size: the range is there.
        let sealed = be
            .get_range(&pack_path(id), e.offset as u64, e.length as usize)
            .expect("an entry that passed the header's bounds check is readable");
        let _ = open_blob(key, e.kind, &e.id, e.raw_length, &sealed, &|| "fuzz".into());
    }
}

/// Input: a pack file; or a 2-byte (LE) blob area length, the blob area, and a decrypted
/// header, which the target seals and completes with a trailer (a fuzzer cannot forge the
/// header's tag, so only this way do its entries reach the blob reads).
pub fn pack(data: &[u8]) {
    let be = MemBackend::default();
    let id = PackId(*blake3::hash(data).as_bytes());
    be.put(&pack_path(&id), data).expect("in memory");
    read_whole_pack(&be, &id);

    let n = (le_u32(&data[..data.len().min(2)]) as usize).min(data.len().saturating_sub(2));
    let (blobs, header) = data.get(2..).unwrap_or(&[]).split_at(n);
    let mut image = blobs.to_vec();
    let sealed = test_key().seal(HEADER_AD, header);
    image.extend_from_slice(&sealed);
    image.extend_from_slice(&encode_trailer(sealed.len() as u32));
    let id = PackId(*blake3::hash(&image).as_bytes());
    be.put(&pack_path(&id), &image).expect("in memory");
    read_whole_pack(&be, &id);
}

/// Input: a sealed blob; also, after a kind byte and a raw length (u32 LE), the plaintext of
/// a blob (compression flag and payload), which the target seals for the payload's id.
pub fn blob_open(data: &[u8]) {
    let key = test_key();
    let what = || "fuzz".to_string();
    let r = open_blob(key, BlobKind::Data, &BlobId([0; 32]), u32::MAX, data, &what);
    assert!(r.is_err(), "a forged blob opened");
    if data.len() < 5 {
        return;
    }
    let kind = if data[0] & 1 == 0 {
        BlobKind::Data
    } else {
        BlobKind::Tree
    };
    let raw_length = le_u32(&data[1..5]);
    let plain = &data[5..];
    let id = key.blob_id(plain.get(1..).unwrap_or(&[]));
    let sealed = key.seal(&blob_ad(kind, &id), plain);
    match open_blob(key, kind, &id, raw_length, &sealed, &what) {
        Ok(d) => {
            assert_eq!(d.len(), raw_length as usize);
            assert_eq!(key.blob_id(&d), id);
        }
        Err(e) => assert!(e.is_corrupt(), "{e}"),
    }
    // Whatever the sealer does with these bytes (compress or not), they open unchanged.
    let s = seal_blob(key, kind, key.blob_id(plain), plain, 3);
    let back = open_blob(key, kind, &s.id, s.raw_length, &s.bytes, &what).expect("own blob");
    assert_eq!(back, plain);
}

/// Input: a tree blob (decrypted).
pub fn tree(data: &[u8]) {
    let id = BlobId([0; 32]);
    let Ok(t) = Tree::decode(data, &id) else {
        return;
    };
    let bytes = t.clone().encode();
    assert_eq!(Tree::decode(&bytes, &id).expect("re-encoded tree"), t);
    // What the readers do with every entry of a tree they decoded.
    for n in &t.nodes {
        assert!(std::ptr::eq(t.find(&n.name).expect("sorted"), n));
        let _ = n.content_digest();
        if n.kind == NodeKind::File {
            let l = FileLayout::new(n).expect("decode checked the chunk lengths");
            assert_eq!(l.size(), n.size);
            let half = n.size / 2;
            let got: u64 = l
                .pieces(half, n.size)
                .map(|p| (p.within.end - p.within.start) as u64)
                .sum();
            assert_eq!(got, n.size - half);
        }
    }
    let _ = t.approx_bytes();
}

/// Input: a decrypted snapshot manifest (decoded under the name its keyed hash gives it).
pub fn snapshot(data: &[u8]) {
    let key = test_key();
    let name = hex::encode(key.keyed_hash("snapshot", data));
    let Ok(s) = Snapshot::decode(key, &name, data) else {
        return;
    };
    // What the mount derives from every manifest.
    let _ = s.time_name();
    let _ = s.mtime_ns();
    let plain = serde_json::to_vec(&s).expect("serializes");
    let name2 = hex::encode(key.keyed_hash("snapshot", &plain));
    let mut s2 = Snapshot::decode(key, &name2, &plain).expect("re-encoded manifest");
    s2.id = s.id;
    assert_eq!(s2, s);
}

/// Input: a key file.
pub fn key_file(data: &[u8]) {
    let Ok(k) = crate::repo::keys::decode_key_file("keys/fuzz", data) else {
        return;
    };
    k.kdf.check().expect("checked by the decoder");
    let salt = hex::decode(&k.salt).expect("checked by the decoder");
    assert_eq!(salt.len(), 16);
    let wrapped = hex::decode(&k.wrapped).expect("checked by the decoder");
    assert_eq!(wrapped.len(), crate::crypto::SEAL_OVERHEAD + 64);
    // No KDF here (argon2 is slow by design, and its parameters were checked above).
    let _ = unwrap_master(&[0u8; 32], &wrapped);
    let json = serde_json::to_vec(&k).expect("serializes");
    let k2 = crate::repo::keys::decode_key_file("keys/fuzz", &json).expect("re-encoded key");
    assert_eq!(
        serde_json::to_value(&k2).expect("serializes"),
        serde_json::to_value(&k).expect("serializes")
    );
}

/// Input: a `config` file (magic, version, sealed JSON), and the same bytes as its decrypted
/// JSON.
pub fn config(data: &[u8]) {
    if let Ok(sealed) = crate::repo::config_sealed_part(data, "config") {
        // Only a config sealed with the test key opens (the seed made with it).
        if let Ok(plain) = test_key().open(b"wayback-config", sealed, &|| "config".into()) {
            let _ = crate::repo::decode_config(&plain);
        }
    }
    let Ok(c) = crate::repo::decode_config(data) else {
        return;
    };
    let json = serde_json::to_vec(&c).expect("serializes");
    let c2 = crate::repo::decode_config(&json).expect("re-encoded config");
    assert_eq!(
        serde_json::to_value(&c2).expect("serializes"),
        serde_json::to_value(&c).expect("serializes")
    );
    // Every backup cuts with these parameters: they must never make the chunker fail.
    let mut ch = Chunker::new(data, c.chunker);
    let mut total = 0u64;
    while let Some(chunk) = ch.next_chunk().expect("in-memory reader") {
        assert!(chunk.len() <= c.chunker.max as usize);
        total += chunk.len() as u64;
    }
    assert_eq!(total, data.len() as u64);
}

/// Input: a decrypted WAL record of [`WAL_CLUSTER`]/[`WAL_NAME`] (also: the first page of a
/// WAL segment, for its system identifier).
pub fn wal_record(data: &[u8]) {
    let _ = crate::wal::system_id(data);
    let Ok(r) = crate::wal::decode_record(data, WAL_CLUSTER, WAL_NAME) else {
        return;
    };
    assert_eq!(r.hints().len(), r.content.len());
    // The mount and restore show a record as a file node: one the tree rules accept.
    let node = r.to_node();
    Tree { nodes: vec![node] }
        .validate()
        .expect("a decoded record is a valid file");
    let json = serde_json::to_vec(&r).expect("serializes");
    let r2 = crate::wal::decode_record(&json, WAL_CLUSTER, WAL_NAME).expect("re-encoded record");
    assert_eq!(r2, r);
}

/// Input: a WAL file name (as `restore_command`'s argv, a socket or a listing give it).
pub fn wal_name(data: &[u8]) {
    let parsed = names::parse_bytes(data);
    let text = std::str::from_utf8(data).ok();
    if let Some(s) = text {
        assert_eq!(names::parse(s), parsed);
        if let Some(lsn) = names::parse_lsn(s) {
            let again = format!("{:X}/{:X}", lsn >> 32, lsn as u32);
            assert_eq!(names::parse_lsn(&again), Some(lsn));
        }
    }
    if let (Some(WalName::Segment { tli, log, seg }), Some(name)) = (parsed, text) {
        for size in (20..=30).map(|b| 1u64 << b) {
            let per = names::segs_per_log(size);
            if seg as u64 >= per {
                continue;
            }
            let lsn = (log as u64 * per + seg as u64) * size;
            assert_eq!(names::segment_name(tli, lsn, size), name);
            let found = names::segment_size_for(lsn, name).expect("this size fits");
            assert_eq!(names::segment_name(tli, lsn, found), name);
        }
    }
}

/// Input: what a client writes to the agent's control socket.
pub fn agent_control(data: &[u8]) {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
    }
    RT.with(|rt| {
        rt.block_on(async {
            let mut r = tokio::io::BufReader::new(data);
            let mut buf = Vec::new();
            while let Ok(Some(())) = crate::agent::read_line(&mut r, &mut buf).await {
                assert!(buf.len() <= crate::agent::MAX_LINE);
                let line = String::from_utf8_lossy(&buf);
                if let crate::agent::Command::Run(name) = crate::agent::parse_command(&line) {
                    // The reply echoes the name: one JSON line whatever the name holds.
                    let reply = crate::agent::error_reply(name);
                    assert!(!reply.contains('\n'));
                    let v: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
                    assert_eq!(v["error"].as_str(), Some(name));
                }
            }
        })
    });
}

/// Input: a push request to the agent's WAL socket (and the same bytes as the agent's reply).
pub fn agent_push(data: &[u8]) {
    if let Ok((cluster, name)) = crate::agent::archive::parse_push_request(data) {
        assert!(!cluster.contains(' ') && !name.contains(' '));
        // What the agent checks before either names a path.
        let _ = crate::wal::check_cluster_name(&cluster);
        let _ = names::parse(&name);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::agent::archive::parse_reply(s);
    }
}

/// An in-memory [`BlobSink`] for the tar target.
#[derive(Default)]
struct MemSink {
    blobs: RefCell<HashMap<(BlobKind, BlobId), Vec<u8>>>,
}

impl BlobSink for MemSink {
    fn save(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = test_key().blob_id(data);
        self.blobs.borrow_mut().insert((kind, id), data.to_vec());
        Ok(id)
    }
    fn save_tree(&self, tree: &mut Tree) -> Result<TreeId> {
        let bytes = tree.encode();
        self.save(BlobKind::Tree, &bytes)
    }
}

/// Checks that the tree `id` and everything below it were stored and read back as valid.
fn walk(sink: &MemSink, id: &TreeId, depth: usize) {
    assert!(depth < 10_000, "tree deeper than its input could make it");
    let bytes = sink
        .blobs
        .borrow()
        .get(&(BlobKind::Tree, *id))
        .cloned()
        .expect("every tree id handed out was stored");
    let t = Tree::decode(&bytes, id).expect("the unpacker writes only valid trees");
    for n in &t.nodes {
        match n.kind {
            NodeKind::File => {
                for c in &n.content {
                    let b = sink.blobs.borrow();
                    let chunk = b.get(&(BlobKind::Data, c.id)).expect("chunk stored");
                    assert_eq!(chunk.len(), c.len as usize);
                }
            }
            NodeKind::Dir => walk(
                sink,
                n.subtree.as_ref().expect("dirs have a tree"),
                depth + 1,
            ),
            _ => {}
        }
    }
}

/// Input: a tar stream, as `pg_basebackup -Ft -D -` writes one.
pub fn tar_stream(data: &[u8]) {
    let sink = MemSink::default();
    let Ok(un) = unpack_tar(&sink, TAR_CHUNKER, data) else {
        return;
    };
    walk(&sink, &un.root, 0);
    let _ = crate::ingest::stream::db_point(&un.kept, Some(WAL_CLUSTER.into()));
}

/// Input: a time as users, scripts and mount paths write them.
pub fn timespec(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = parse_time(s, NOW) {
        // The canonical name of a time selects that very time (the mount lists and looks up
        // snapshot directories by it).
        let f = format_time(t);
        assert_eq!(parse_time(&f, NOW), Some(t), "{s:?} -> {t} -> {f:?}");
    }
}

/// Input: an agent configuration file (TOML).
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = crate::agent::config::parse(text) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp_millis(NOW).expect("valid");
    let _ = cfg.next_prune(now);
    let _ = cfg.prune_grace();
    for s in &cfg.sources {
        let _ = crate::agent::next_regular(s, now);
        if let Some(k) = &s.keep {
            k.policy().expect("parse checked the policy");
        }
    }
}

/// Target `lock_body`: the decrypted body of a lease object (`locks/*` of an S3 repository,
/// written by any host with the key) through [`crate::repo::lease::LockBody::decode`]. Never
/// panics; a body it accepts encodes and decodes to itself, and the freshness test and the
/// holder's description (shown in refusals) work on any times it holds.
pub fn lock_body(data: &[u8]) {
    use crate::repo::lease::LockBody;
    if let Ok(b) = LockBody::decode(data) {
        assert_eq!(LockBody::decode(&b.encode()).ok().as_ref(), Some(&b));
        let _ = b.fresh_at(i64::MIN, u64::MAX);
        let _ = b.fresh_at(i64::MAX, 0);
        assert!(!b.describe().chars().any(char::is_control));
    }
}

/// Input: the opened plaintext of `state/agent` (JSON), and what `status` derives from each
/// source's record (the sealed object is authenticated first; this is the parser behind it).
pub fn agent_state(data: &[u8]) {
    use crate::agent::state::decode_state;
    let Ok(st) = decode_state(data) else {
        return;
    };
    let json = serde_json::to_vec(&st).expect("serializes");
    let st2 = decode_state(&json).expect("re-encoded state");
    assert_eq!(
        serde_json::to_value(&st2).expect("serializes"),
        serde_json::to_value(&st).expect("serializes")
    );
    let now = chrono::DateTime::from_timestamp_millis(NOW).expect("valid");
    for r in &st.sources {
        for newest in [None, Some((NOW - 3_600_000, "0123abcd".to_string()))] {
            let _ = crate::agent::health::source_health(r.name.clone(), newest, r, now);
        }
    }
}

/// Input: the opened plaintext of `state/copies` (JSON), as `status` reads it.
pub fn copy_state(data: &[u8]) {
    use crate::agent::state::{decode_copies, encode_copies};
    let Ok(c) = decode_copies(data) else {
        return;
    };
    let c2 = decode_copies(&encode_copies(c.clone())).expect("re-encoded copy records");
    assert_eq!(c2, c);
}

/// Input: the opened plaintext of a cluster's `wal/<cluster>/.system` (its database system
/// identifier, which every later segment must match).
pub fn wal_system(data: &[u8]) {
    let Ok(id) = crate::wal::decode_system(data, "wal/main/.system") else {
        assert!(data.len() < 8, "8 bytes or more are an identifier");
        return;
    };
    assert_eq!(&id.to_le_bytes()[..], &data[..8]);
    assert_eq!(
        crate::wal::decode_system(&id.to_le_bytes(), "wal/main/.system").ok(),
        Some(id)
    );
}

/// `%XX` for every byte but the unreserved ones (what a user writes in a location query).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Input: a repository location (`--repo`, `WAYBACK_REPO`, the agent's `repo =`): a path or
/// an `s3://bucket/prefix?query` URL. What it accepts, written back canonically, parses to
/// the same location; its cache directory name never panics.
pub fn location(data: &[u8]) {
    use crate::repo::location::Location;
    use std::os::unix::ffi::OsStrExt;
    let Ok(loc) = Location::parse(std::ffi::OsStr::from_bytes(data)) else {
        return;
    };
    let Location::S3(s) = &loc else {
        assert_eq!(
            loc.local_path().expect("local").as_os_str().as_bytes(),
            data
        );
        return;
    };
    let _ = s.cache_name();
    assert!(!s.prefix.starts_with('/') && !s.prefix.ends_with('/'));
    let mut q = vec![
        format!("region={}", percent_encode(&s.region)),
        format!("cache-mib={}", s.cache_mib),
    ];
    if let Some(e) = &s.endpoint {
        q.push(format!("endpoint={}", percent_encode(e)));
    }
    if let Some(c) = &s.credentials_file {
        q.push(format!(
            "credentials={}",
            percent_encode(c.to_str().expect("decoded as UTF-8"))
        ));
    }
    let again = format!("s3://{}/{}?{}", s.bucket, s.prefix, q.join("&"));
    let loc2 = Location::parse(std::ffi::OsStr::new(&again))
        .unwrap_or_else(|e| panic!("{again:?} does not parse again: {e}"));
    assert_eq!(loc2, loc, "{again:?}");
}

/// Input: an AWS shared credentials file (INI). What it accepts, written back as a
/// `[default]` profile, gives the same keys.
pub fn s3_credentials(data: &[u8]) {
    use crate::repo::location::parse_credentials;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for profile in ["default", "garage"] {
        let Some(c) = parse_credentials(text, profile) else {
            continue;
        };
        let mut again = format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            c.key_id, *c.secret
        );
        if let Some(t) = &c.token {
            again.push_str(&format!("aws_session_token = {}\n", **t));
        }
        let c2 = parse_credentials(&again, "default").expect("re-encoded credentials");
        assert_eq!(c2.key_id, c.key_id);
        assert_eq!(*c2.secret, *c.secret);
        assert_eq!(
            c2.token.as_deref().map(|t| t.as_str()),
            c.token.as_deref().map(|t| t.as_str())
        );
    }
}
