//! Hostile input: names, tar streams, trees and key files crafted to make wayback panic, hang,
//! write outside its target or hand out wrong bytes. Each must end in a clear error instead.

use std::fs;
use std::sync::Arc;

use wayback::id::{BlobKind, TreeId};
use wayback::ingest::{with_saver, Counters, Saver};
use wayback::repo::{Access, Repository};
use wayback::snapshot::Snapshot;
use wayback::tree::{ChunkRef, Node, NodeKind, Tree};

use crate::common::{assert_code, describe, exit, s, Repo, PASSWORD};
use crate::mount::Mounted;

/// A 24-byte name whose multibyte character straddles the 8-byte field boundary of a segment
/// name: it used to panic `wal::names::parse` (string slicing before the ASCII check).
const MULTIBYTE_24: &str = "0000000\u{e9}000000000000000";

fn assert_no_panic(o: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && o.status.code().is_some_and(|c| c < 100),
        "{what} panicked or died: {}",
        describe(o)
    );
}

#[test]
fn multibyte_wal_names_are_refused_everywhere_without_a_panic() {
    assert_eq!(MULTIBYTE_24.len(), 24);
    let r = Repo::new();
    // wal-push's argv.
    let d = r.mkdir("pg_wal");
    let p = d.join(MULTIBYTE_24);
    fs::write(&p, b"not wal").unwrap();
    let o = r.wb(&["wal-push", "--cluster", "main", s(&p)]);
    assert_no_panic(&o, "wal-push");
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not a PostgreSQL WAL"),
        "{}",
        describe(&o)
    );
    // wal-fetch's argv.
    let o = r.wb(&[
        "wal-fetch",
        "--cluster",
        "main",
        MULTIBYTE_24,
        s(&r.scratch("out")),
    ]);
    assert_no_panic(&o, "wal-fetch");
    assert_code(&o, exit::ERROR, "wal-fetch of a non-WAL name");
    // A file planted in the archive directory reaches `wal::list` (check, status).
    let seg = d.join("000000010000000000000001");
    fs::write(&seg, vec![0u8; 1 << 20]).unwrap();
    r.ok(&["wal-push", "--cluster", "main", s(&seg)]);
    fs::write(r.path.join("wal/main").join(MULTIBYTE_24), b"junk").unwrap();
    for args in [&["wal", "status"][..], &["check"][..]] {
        let o = r.wb(args);
        assert_no_panic(&o, &args.join(" "));
        assert_code(&o, exit::OK, &args.join(" "));
    }
}

/// Commits a snapshot of source `source` whose root tree `build` makes with the library's own
/// saver, as a hostile or buggy writer holding the key could: trees and chunk references are
/// stored exactly as built, unchecked.
fn forge(r: &Repo, source: &str, build: impl FnOnce(&Saver) -> Tree) {
    let repo = Repository::open(&r.path, PASSWORD.as_bytes(), Access::Write).unwrap();
    let template = repo.snapshots().unwrap().pop().expect("a snapshot to copy");
    let root = with_saver(&repo, Arc::new(Counters::default()), |saver| {
        let mut t = build(saver);
        saver.save_tree(&mut t)
    })
    .unwrap();
    let mut snap = Snapshot {
        source: source.into(),
        root,
        time: template.time + 1000,
        ..template
    };
    repo.save_snapshot(&mut snap).unwrap();
}

fn file_node(name: &[u8], content: Vec<ChunkRef>) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.size = content.iter().map(|c| c.len as u64).sum();
    n.content = content;
    n.mode = 0o644;
    n
}

fn dir_node(name: &[u8], subtree: TreeId) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.subtree = Some(subtree);
    n.mode = 0o755;
    n
}

/// A repository with a normal snapshot (source `ok`) to copy manifests from.
fn repo_with_a_snapshot() -> Repo {
    let r = Repo::new();
    let d = r.mkdir("ok");
    fs::write(d.join("hello"), b"hello").unwrap();
    r.backup_dir(&d, "ok");
    r
}

#[test]
fn trees_with_escaping_names_are_refused_and_nothing_lands_outside() {
    let r = repo_with_a_snapshot();
    // evil/<..>/pwned: a restore that joins names unchecked writes <target>/../pwned.
    forge(&r, "evil", |saver| {
        let data = b"written outside the target".to_vec();
        let id = saver.save(BlobKind::Data, &data).unwrap();
        let mut inner = Tree {
            nodes: vec![file_node(
                b"pwned",
                vec![ChunkRef {
                    id,
                    len: data.len() as u32,
                }],
            )],
        };
        let sub = saver.save_tree(&mut inner).unwrap();
        Tree {
            nodes: vec![dir_node(b"..", sub)],
        }
    });
    let base = r.mkdir("restore-base");
    let target = base.join("target");
    let o = r.wb(&[
        "restore",
        "latest",
        "--source",
        "evil",
        "--target",
        s(&target),
    ]);
    assert_no_panic(&o, "restore");
    assert_code(&o, exit::DAMAGED, "restore of a tree with a '..' entry");
    assert!(
        !base.join("pwned").exists(),
        "restore wrote outside its target"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid name"),
        "{}",
        describe(&o)
    );
    let o = r.wb(&["ls", "latest", "--source", "evil", "-R"]);
    assert_code(&o, exit::DAMAGED, "ls of a tree with a '..' entry");
    let o = r.wb(&["check"]);
    assert_no_panic(&o, "check");
    assert_code(&o, exit::DAMAGED, "check of a tree with a '..' entry");
    // The intact snapshot still reads.
    assert_eq!(r.cat("latest:/hello", &["--source", "ok"]), b"hello");
    // The mount lists nothing that escapes: the directory read fails with EIO.
    let m = Mounted::new(&r, &[]);
    let e = fs::read_dir(m.p("latest/evil"))
        .and_then(|mut d| d.try_fold(0, |n, e| e.map(|_| n + 1)))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(fs::read(m.p("latest/ok/hello")).unwrap(), b"hello");
}

#[test]
fn chunks_longer_or_shorter_than_their_reference_never_give_wrong_bytes() {
    let r = repo_with_a_snapshot();
    let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let b = vec![0xbbu8; 50_000];
    forge(&r, "lying", |saver| {
        let ida = saver.save(BlobKind::Data, &a).unwrap();
        let idb = saver.save(BlobKind::Data, &b).unwrap();
        let chunk = |id, len| ChunkRef { id, len };
        Tree {
            nodes: vec![
                // References shorter than the stored chunk: the rest of the file would shift.
                file_node(b"long", vec![chunk(ida, 60_000), chunk(idb, 50_000)]),
                // Longer than the stored chunk: a read would panic or come up short.
                file_node(b"short", vec![chunk(idb, 80_000), chunk(ida, 100_000)]),
                // Honest, for contrast.
                file_node(b"true", vec![chunk(ida, 100_000), chunk(idb, 50_000)]),
            ],
        }
    });
    let honest: Vec<u8> = [a.clone(), b.clone()].concat();
    assert_eq!(r.cat("latest:/true", &["--source", "lying"]), honest);
    for name in ["long", "short"] {
        let o = r.wb(&["cat", &format!("latest:/{name}"), "--source", "lying"]);
        assert_no_panic(&o, "cat");
        assert_code(&o, exit::DAMAGED, &format!("cat of {name}"));
        let dst = r.scratch(&format!("dst-{name}"));
        let o = r.wb(&[
            "restore",
            &format!("latest:/{name}"),
            "--source",
            "lying",
            "--target",
            s(&dst),
        ]);
        assert_no_panic(&o, "restore");
        assert_code(&o, exit::DAMAGED, &format!("restore of {name}"));
        assert!(!dst.join(name).exists(), "a damaged file was left behind");
    }
    let dst = r.scratch("dst-all");
    let o = r.wb(&[
        "restore",
        "latest",
        "--source",
        "lying",
        "--target",
        s(&dst),
    ]);
    assert_code(&o, exit::DAMAGED, "restore of the whole snapshot");
    assert_eq!(fs::read(dst.join("true")).unwrap(), honest);
    assert!(!dst.join("long").exists() && !dst.join("short").exists());
    // The mount: EIO for every read that touches a lying chunk, right bytes elsewhere.
    let m = Mounted::new(&r, &[]);
    assert_eq!(fs::read(m.p("latest/lying/true")).unwrap(), honest);
    for name in ["long", "short"] {
        let e = fs::read(m.p(&format!("latest/lying/{name}"))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}");
    }
}

/// Appends one raw tar entry (type `typ`) with `name` stored exactly as given: `tar::Builder`
/// refuses `..` and absolute names, a hostile stream does not.
fn raw_tar_entry(out: &mut Vec<u8>, name: &[u8], typ: u8, data: &[u8]) {
    if name.len() > 100 {
        // GNU long name: a `././@LongLink` entry whose data is the name.
        let mut long = name.to_vec();
        long.push(0);
        raw_tar_entry(out, b"././@LongLink", b'L', &long);
        return raw_tar_entry(out, &name[..100], typ, data);
    }
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::new(typ));
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn tar_of(entries: &[(&[u8], u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, typ) in entries {
        let data: &[u8] = if *typ == b'0' { b"payload" } else { b"" };
        raw_tar_entry(&mut out, name, *typ, data);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn basebackup_streams_naming_paths_outside_the_data_directory_are_refused() {
    let r = Repo::new();
    let long_escape = [b"a/".repeat(60), b"../".repeat(70), b"evil".to_vec()].concat();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            tar_of(&[(b"PG_VERSION", b'0'), (b"../evil", b'0')]),
        ),
        ("absolute", tar_of(&[(b"/tmp/evil", b'0')])),
        (
            "inner",
            tar_of(&[(b"base/", b'5'), (b"base/../../evil", b'0')]),
        ),
        ("dir", tar_of(&[(b"..", b'5')])),
        ("symlink", tar_of(&[(b"../link", b'2')])),
        ("long", tar_of(&[(&long_escape, b'0')])),
    ];
    for (what, bytes) in &hostile {
        let f = r.scratch(&format!("{what}.tar"));
        fs::write(&f, bytes).unwrap();
        let o = r.wb(&[
            "backup",
            "--basebackup",
            &format!("cat {}", s(&f)),
            "--source",
            "pg",
        ]);
        assert_no_panic(&o, what);
        assert!(!o.status.success(), "{what}: {}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("refusing the stream"),
            "{what}: {}",
            describe(&o)
        );
    }
    assert!(r.snapshots().is_empty(), "a refused stream left a snapshot");
    // Harmless spellings are still accepted: `./x`, doubled slashes.
    let f = r.scratch("fine.tar");
    fs::write(
        &f,
        tar_of(&[
            (b"./PG_VERSION", b'0'),
            (b"base//1/", b'5'),
            (b"base//1/x", b'0'),
        ]),
    )
    .unwrap();
    r.ok(&[
        "backup",
        "--basebackup",
        &format!("cat {}", s(&f)),
        "--source",
        "pg",
    ]);
    assert_eq!(r.cat("latest:/base/1/x", &["--source", "pg"]), b"payload");
    assert_eq!(r.cat("latest:/PG_VERSION", &["--source", "pg"]), b"payload");
}

#[test]
fn broken_key_files_do_not_lock_out_the_good_ones() {
    let r = repo_with_a_snapshot();
    let mut add = r.cmd(&["key", "add"]);
    add.env("WAYBACK_NEW_PASSWORD", "second passphrase");
    assert_code(&crate::common::run(add), exit::OK, "key add");
    let keys = r.path.join("keys");
    let good: Vec<_> = fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(good.len(), 2);
    let template: serde_json::Value = serde_json::from_slice(&fs::read(&good[0]).unwrap()).unwrap();
    // Names sort before the real ids (16 hex digits), so they are met first.
    fs::write(keys.join("0000000000000001"), b"\x00garbage{").unwrap();
    fs::create_dir(keys.join("0000000000000002")).unwrap();
    nix::unistd::mkfifo(
        &keys.join("0000000000000003"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("/nonexistent", keys.join("0000000000000004")).unwrap();
    fs::write(keys.join("0000000000000005"), vec![b' '; 1 << 20]).unwrap();
    // Real key files with their KDF cost edited: argon2 would allocate 4 TiB (abort) or
    // run 4 billion passes (hang).
    for (id, field, value) in [
        ("0000000000000006", "m_cost", u32::MAX),
        ("0000000000000007", "t_cost", u32::MAX),
        ("0000000000000008", "p_cost", 0xFF_FFFF),
    ] {
        let mut k = template.clone();
        k["kdf"][field] = value.into();
        fs::write(keys.join(id), serde_json::to_vec(&k).unwrap()).unwrap();
    }
    let mut v2 = template.clone();
    v2["version"] = 2.into();
    fs::write(
        keys.join("0000000000000009"),
        serde_json::to_vec(&v2).unwrap(),
    )
    .unwrap();

    let started = std::time::Instant::now();
    for pass in [crate::common::PASSWORD, "second passphrase"] {
        let o = r.wb_pass(pass, &["snapshots"]);
        assert_no_panic(&o, "snapshots");
        assert_code(
            &o,
            exit::OK,
            &format!("open with {pass:?} next to broken key files"),
        );
    }
    let o = r.wb_pass("wrong", &["snapshots"]);
    assert_no_panic(&o, "snapshots with a wrong passphrase");
    assert_code(&o, exit::WRONG_PASSWORD, "wrong passphrase");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let o = r.ok(&["key", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        2,
        "{}",
        describe(&o)
    );
    // Only broken key files left: a clear damaged-repository error naming them, not a crash.
    for g in &good {
        fs::rename(g, r.scratch(&g.file_name().unwrap().to_string_lossy())).unwrap();
    }
    let o = r.wb(&["snapshots"]);
    assert_no_panic(&o, "snapshots without a usable key");
    assert_code(&o, exit::DAMAGED, "no usable key file");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("0000000000000006") && err.contains("out of range"),
        "{err}"
    );
}
