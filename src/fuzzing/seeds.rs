//! Seed inputs for the fuzz targets, made with wayback's own encoders (a real pack, real
//! trees, manifests, records, key files, tar streams), so the fuzzer starts from what is valid.
//!
//! `tests/it/fuzz_corpus.rs` runs them through their targets and, with
//! `WAYBACK_WRITE_FUZZ_CORPUS=1`, writes them to `fuzz/corpus/<target>/seed-<n>`.

use crate::chunker::ChunkerParams;
use crate::crypto::{derive_wrapping_key, wrap_master, KdfParams};
use crate::id::{BlobId, BlobKind, PackId, SnapshotId};
use crate::pack::{encode_entries, encode_trailer, seal_blob, BlobEntry, PackWriter};
use crate::repo::keys::{KeyFile, KEY_VERSION};
use crate::repo::{Config, CONFIG_MAGIC, REPO_VERSION};
use crate::snapshot::{DbPoint, Snapshot, SnapshotKind, SnapshotStats, SNAPSHOT_VERSION};
use crate::tree::{ChunkRef, Node, NodeKind, Tree};
use crate::wal::{WalLocation, WalRecord, WAL_RECORD_VERSION};

use super::{test_key, NOW, WAL_CLUSTER, WAL_NAME};

fn file_node(name: &[u8], chunks: &[(u8, u32)]) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.uid = 1000;
    n.gid = 1000;
    n.mtime_ns = NOW * 1_000_000;
    n.content = chunks
        .iter()
        .map(|&(b, len)| ChunkRef {
            id: BlobId([b; 32]),
            len,
        })
        .collect();
    n.size = chunks.iter().map(|c| c.1 as u64).sum();
    n.blocks = n.size.div_ceil(512);
    n
}

fn trees() -> Vec<Tree> {
    let mut dir = Node::new(b"etc".to_vec(), NodeKind::Dir);
    dir.mode = 0o755;
    dir.nlink = 3;
    dir.subtree = Some(BlobId([9; 32]));
    let mut link = Node::new(b"link".to_vec(), NodeKind::Symlink);
    link.link_target = Some(b"../target".to_vec());
    link.size = 9;
    let mut with_xattrs = file_node(b"x", &[(1, 100)]);
    with_xattrs.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
    with_xattrs.link_group = Some(7);
    with_xattrs.nlink = 2;
    let mut dev = Node::new(b"null".to_vec(), NodeKind::CharDev);
    dev.rdev = 0x103;
    vec![
        Tree::default(),
        Tree {
            nodes: vec![file_node(b"a.txt", &[(1, 5), (2, 1000)])],
        },
        Tree {
            nodes: vec![
                file_node(b"empty", &[]),
                dir,
                link,
                dev,
                with_xattrs,
                Node::new(b"fifo".to_vec(), NodeKind::Fifo),
            ],
        },
    ]
}

fn pack_parts() -> (Vec<u8>, Vec<BlobEntry>, Vec<u8>) {
    let key = test_key();
    let mut w = PackWriter::new();
    let blobs: [(BlobKind, Vec<u8>); 3] = [
        (BlobKind::Data, b"hello, world".to_vec()),
        (BlobKind::Data, vec![b'z'; 3000]),
        (BlobKind::Tree, trees()[1].encode()),
    ];
    for (kind, data) in &blobs {
        w.add(&seal_blob(key, *kind, key.blob_id(data), data, 3));
    }
    let (_, image, entries) = w.finish(key);
    let data_end = entries.last().map_or(0, |e| (e.offset + e.length) as usize);
    (image[..data_end].to_vec(), entries, image)
}

fn snapshots() -> Vec<Snapshot> {
    let plain = Snapshot {
        id: SnapshotId([0; 32]),
        version: SNAPSHOT_VERSION,
        source: "etc".into(),
        time: NOW,
        host: "db1".into(),
        tags: vec!["nightly".into()],
        kind: SnapshotKind::Files,
        paths: vec!["/etc".into()],
        root: BlobId([3; 32]),
        root_meta: Some(Node::new(Vec::new(), NodeKind::Dir)),
        parent: Some(SnapshotId([4; 32])),
        stats: SnapshotStats {
            files: 10,
            dirs: 2,
            total_bytes: 12345,
            duration_ms: 17,
            ..Default::default()
        },
        warnings: vec!["a.txt changed while read".into()],
        complete: false,
        db: None,
        repaired_from: None,
        copied_from: None,
    };
    let mut base = plain.clone();
    base.kind = SnapshotKind::Basebackup;
    base.db = Some(DbPoint {
        cluster: Some(WAL_CLUSTER.into()),
        timeline: Some(1),
        wal_start: Some(WAL_NAME.into()),
        wal_stop: Some("000000010000000000000003".into()),
        start_lsn: Some("0/1000028".into()),
        stop_lsn: Some("0/3000100".into()),
    });
    vec![plain, base]
}

fn key_file() -> Vec<u8> {
    let kdf = KdfParams::INSECURE_FAST;
    let salt = [5u8; 16];
    let wk = derive_wrapping_key(b"correct horse", &salt, kdf).expect("fast KDF");
    let file = KeyFile {
        version: KEY_VERSION,
        created: "2025-09-18T02:00:00+00:00".into(),
        host: "db1".into(),
        user: "postgres".into(),
        kdf,
        salt: hex::encode(salt),
        wrapped: hex::encode(wrap_master(&wk, test_key())),
        check: None,
    };
    // As `key add` writes it now, with the checksum (the committed corpus keeps the older
    // form without one).
    let file = KeyFile {
        check: Some(crate::repo::keys::checksum(&file)),
        ..file
    };
    serde_json::to_vec_pretty(&file).expect("serializes")
}

fn config() -> Vec<Vec<u8>> {
    let c = Config {
        version: REPO_VERSION,
        id: "00112233445566778899aabbccddeeff".into(),
        chunker: ChunkerParams::DEFAULT,
        zstd_level: 3,
        created: "2025-09-18T02:00:00+00:00".into(),
    };
    let small = Config {
        chunker: ChunkerParams {
            min: 64,
            avg: 256,
            max: 1024,
        },
        ..c.clone()
    };
    let json = serde_json::to_vec(&c).expect("json");
    let mut file = CONFIG_MAGIC.to_vec();
    file.extend_from_slice(&REPO_VERSION.to_le_bytes());
    file.extend_from_slice(&test_key().seal(b"wayback-config", &json));
    vec![json, serde_json::to_vec(&small).expect("json"), file]
}

fn wal_records() -> Vec<Vec<u8>> {
    let chunks = [(1u8, 1 << 20), (2u8, 1 << 20)];
    let r = WalRecord {
        version: WAL_RECORD_VERSION,
        cluster: WAL_CLUSTER.into(),
        name: WAL_NAME.into(),
        size: 2 << 20,
        digest: blake3::hash(b"segment").to_hex().to_string(),
        content: chunks
            .iter()
            .map(|&(b, len)| ChunkRef {
                id: BlobId([b; 32]),
                len,
            })
            .collect(),
        locations: chunks
            .iter()
            .enumerate()
            .map(|(i, _)| WalLocation {
                pack: PackId([8; 32]),
                offset: i as u32 * 4096,
                length: 4096,
            })
            .collect(),
        pushed: NOW,
        owner: (999, 999, 0o600),
    };
    let mut empty = r.clone();
    (empty.size, empty.content, empty.locations) = (0, vec![], vec![]);
    // The first page of a segment: magic, info with XLP_LONG_HEADER, ..., system id at 24.
    let mut page = vec![0u8; 40];
    page[..2].copy_from_slice(&0xD10Du16.to_le_bytes());
    page[2..4].copy_from_slice(&2u16.to_le_bytes());
    page[24..32].copy_from_slice(&7_300_000_000_000_000_001u64.to_le_bytes());
    vec![
        serde_json::to_vec(&r).expect("json"),
        serde_json::to_vec(&empty).expect("json"),
        page,
    ]
}

fn tar_streams() -> Vec<Vec<u8>> {
    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).expect("short path");
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(999);
        h.set_gid(999);
        h.set_mtime((NOW / 1000) as u64);
        h.set_cksum();
        h
    }
    let label = "START WAL LOCATION: 0/1000028 (file 000000010000000000000001)\n\
                 CHECKPOINT LOCATION: 0/1000060\nSTART TIMELINE: 1\n";
    let manifest = r#"{"PostgreSQL-Backup-Manifest-Version": 1, "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/1000028", "End-LSN": "0/1000100"}]}"#;
    let mut out = Vec::new();
    let mut b = tar::Builder::new(Vec::new());
    let files: [(&str, &[u8]); 4] = [
        ("backup_label", label.as_bytes()),
        ("backup_manifest", manifest.as_bytes()),
        ("PG_VERSION", b"17\n"),
        ("base/1/1259", &[0x42; 700]),
    ];
    b.append(
        &header("base/", tar::EntryType::Directory, 0, 0o700),
        &[][..],
    )
    .expect("in memory");
    for (path, data) in files {
        let h = header(path, tar::EntryType::Regular, data.len() as u64, 0o600);
        b.append(&h, data).expect("in memory");
    }
    let mut l = header("pg_tblspc/16384", tar::EntryType::Symlink, 0, 0o777);
    l.set_link_name("/srv/tblspc").expect("short link");
    l.set_cksum();
    b.append(&l, &[][..]).expect("in memory");
    out.push(b.into_inner().expect("in memory"));
    let mut b = tar::Builder::new(Vec::new());
    let h = header("./a/b/c.txt", tar::EntryType::Regular, 5, 0o640);
    b.append(&h, &b"hello"[..]).expect("in memory");
    out.push(b.into_inner().expect("in memory"));
    out
}

/// Seed inputs for every target: (target name, input). Every target has at least one.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let (blob_area, entries, image) = pack_parts();

    out.push(("pack_trailer", image[image.len() - 16..].to_vec()));
    out.push(("pack_trailer", encode_trailer(0).to_vec()));

    let mut h = (blob_area.len() as u64).to_le_bytes().to_vec();
    h.extend_from_slice(&encode_entries(&entries));
    out.push(("pack_header", h));
    out.push(("pack_header", encode_entries(&[]).to_vec()));

    out.push(("pack", image.clone()));
    let mut p = (blob_area.len() as u16).to_le_bytes().to_vec();
    p.extend_from_slice(&blob_area);
    p.extend_from_slice(&encode_entries(&entries));
    out.push(("pack", p));

    for (flag, payload) in [
        (0u8, b"plain bytes".to_vec()),
        (1u8, zstd::bulk::compress(&[b'a'; 2000], 3).expect("zstd")),
    ] {
        let raw_len: u32 = if flag == 0 {
            payload.len() as u32
        } else {
            2000
        };
        let mut b = vec![0u8];
        b.extend_from_slice(&raw_len.to_le_bytes());
        b.push(flag);
        b.extend_from_slice(&payload);
        out.push(("blob_open", b));
    }
    let e = entries[0];
    out.push((
        "blob_open",
        image[e.offset as usize..(e.offset + e.length) as usize].to_vec(),
    ));

    for mut t in trees() {
        out.push(("tree", t.encode()));
    }
    for s in snapshots() {
        out.push(("snapshot", serde_json::to_vec(&s).expect("json")));
    }
    out.push(("key_file", key_file()));
    for c in config() {
        out.push(("config", c));
    }
    for r in wal_records() {
        out.push(("wal_record", r));
    }
    for n in [
        WAL_NAME,
        "0000000200000001000000FF",
        "00000002.history",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000003.partial",
        "0/1000028",
        "16/B374D848",
    ] {
        out.push(("wal_name", n.as_bytes().to_vec()));
    }
    for c in [
        "status\n",
        "run etc\nstatus\n",
        "status",
        "bogus\nrun \"x\\n\"\n",
    ] {
        out.push(("agent_control", c.as_bytes().to_vec()));
    }
    for c in [
        "push main 000000010000000000000001\n",
        "push main 00000002.history",
        "stored\n",
        "conflict main/000000010000000000000001 is already archived\n",
    ] {
        out.push(("agent_push", c.as_bytes().to_vec()));
    }
    for t in tar_streams() {
        out.push(("tar_stream", t));
    }
    for t in [
        "2025-09-18",
        "2025-09-18T02:00",
        "2025-09-18T0200",
        "2025-09-18T02:00:00.123Z",
        "2025-09-18T04:00:00+02:00",
        "2025-09-18T0400+0200",
        "2025-09-18 02:00:00",
        "yesterday",
    ] {
        out.push(("timespec", t.as_bytes().to_vec()));
    }
    let agent = r#"repo = "/srv/wayback"
password_file = "/etc/wayback/pass"
prune = "0 4 * * *"
prune_grace = "24h"
metrics = "127.0.0.1:9469"

[[source]]
name = "etc"
type = "paths"
paths = ["/etc"]
exclude = ["*.swp"]
every = "1h"

[[source]]
name = "app-db"
type = "command"
command = "pg_dump -Fc -Z0 app"
file = "app.dump"
cron = "*/15 * * * *"
keep = { last = 4, daily = 7, weekly = 4, monthly = 12, within = "2d" }

[[source]]
name = "pg"
type = "basebackup"
command = "pg_basebackup -D - -Ft -X none -c fast"
cluster = "main"
cron = "0 2 * * SUN"

[[source]]
name = "wal"
type = "postgres-wal"
cluster = "main"
"#;
    out.push(("agent_config", agent.as_bytes().to_vec()));
    let every = "repo = \"/r\"\nprune_every = \"6h\"\n[[source]]\nname = \"x\"\ntype = \"command\"\ncommand = \"true\"\nfile = \"f\"\nevery = \"1h 30m\"\n";
    out.push(("agent_config", every.as_bytes().to_vec()));
    let lock = crate::repo::lease::LockBody {
        version: crate::repo::lease::LOCK_VERSION,
        kind: crate::repo::lease::LeaseKind::Exclusive,
        host: "db-1.example".into(),
        pid: 4242,
        operation: "prune".into(),
        created: 1_764_000_000,
        refreshed: 1_764_000_100,
        lease_secs: 300,
    };
    out.push(("lock_body", lock.encode()));
    for s in agent_states() {
        out.push(("agent_state", s));
    }
    out.push(("copy_state", copy_states()));
    out.push((
        "wal_system",
        0x6a3c_11d2_9e07_0001u64.to_le_bytes().to_vec(),
    ));
    for l in [
        "/srv/wayback",
        "s3://backups/host-a?endpoint=http%3A%2F%2F127.0.0.1:3900&region=garage",
        "s3://my-bucket/a/b/?endpoint=https://s3.example.org/&cache-mib=8&credentials=/etc/wayback/s3",
        "s3://bkt",
    ] {
        out.push(("location", l.as_bytes().to_vec()));
    }
    for c in [
        "[default]\naws_access_key_id = GK31c2f218a2e44f485b94239e\naws_secret_access_key = b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835\n",
        "# comment\n[other]\naws_access_key_id=x\n\n[garage]\naws_access_key_id=AK\r\naws_secret_access_key=SK\naws_session_token=TOK\n",
    ] {
        out.push(("s3_credentials", c.as_bytes().to_vec()));
    }
    out
}

/// `state/agent` plaintexts as the agent writes them.
fn agent_states() -> Vec<Vec<u8>> {
    use crate::agent::state::{AgentState, SourceRecord, VERSION};
    let st = AgentState {
        version: VERSION,
        updated: "2025-09-18T01:59:00+00:00".into(),
        pid: 4242,
        sources: vec![
            SourceRecord {
                name: "etc".into(),
                kind: "paths".into(),
                every: Some("1h".into()),
                next_run: Some("2025-09-18T02:30:00+00:00".into()),
                last_duration_s: Some(1.25),
                last_snapshot: Some("0123abcd 2025-09-18T01:30:00Z".into()),
                bytes_added: 123_456,
                ..SourceRecord::default()
            },
            SourceRecord {
                name: "app-db".into(),
                kind: "command".into(),
                cron: Some("*/15 * * * *".into()),
                last_error: Some("pg_dump exited with 1".into()),
                failures: 2,
                ..SourceRecord::default()
            },
        ],
        wal_push_failures: 1,
        wal_last_error: Some("main: No space left on device".into()),
        wal_late_s: Some(900),
    };
    let mut old = serde_json::to_value(&st).expect("json");
    // A state written before `wal_late_s` existed.
    old.as_object_mut().expect("object").remove("wal_late_s");
    vec![
        serde_json::to_vec(&st).expect("json"),
        serde_json::to_vec(&old).expect("json"),
    ]
}

/// A `state/copies` plaintext as `copy` writes it.
fn copy_states() -> Vec<u8> {
    use crate::agent::state::{encode_copies, CopyRecord};
    encode_copies(vec![
        CopyRecord {
            to: "/mnt/offsite".into(),
            time: "2025-09-18T01:00:00+00:00".into(),
            ok: true,
            duration_s: 12.5,
            sources: vec![],
            copied: vec![hex::encode([7u8; 32])],
            error: None,
            last_success: Some("2025-09-18T01:00:00+00:00".into()),
        },
        CopyRecord {
            to: "s3://backups/host-a".into(),
            time: "2025-09-18T01:10:00+00:00".into(),
            ok: false,
            duration_s: 0.5,
            sources: vec!["etc".into()],
            copied: vec![],
            error: Some("destination passphrase: wrong".into()),
            last_success: None,
        },
    ])
}
