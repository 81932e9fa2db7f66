//! Round trips through the CLI: backup -> restore/cat/ls -> compare with the original, plus
//! snapshot selection, dedup and incremental accounting, streams, keys, excludes, and the
//! writer lock.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Hex of an id that JSON may render as a hex string or as an array of bytes.
fn id_hex(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a
            .iter()
            .map(|b| b.as_u64().map(|b| format!("{b:02x}")))
            .collect(),
        _ => None,
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds.
fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("valid time")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// What `wayback` should count for a directory backed up as a single path: regular-file
/// names, directories (including the root), other entries and the bytes of all file names.
fn expected_counts(root: &Path) -> (u64, u64, u64, u64) {
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    let (mut files, mut dirs, mut others, mut bytes) = (0, 1, 0, 0);
    for p in all {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_file() {
            files += 1;
            bytes += md.len();
        } else if md.is_dir() {
            dirs += 1;
        } else {
            others += 1;
        }
    }
    (files, dirs, others, bytes)
}

#[test]
fn roundtrip_every_file_kind() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_rich_tree(&src, &RichTree::default());
    let snap = r.backup_dir(&src, "rich");

    let (files, dirs, others, bytes) = expected_counts(&src);
    assert_eq!(u64_of(&snap, "/stats/files"), files, "{snap:#}");
    assert_eq!(u64_of(&snap, "/stats/dirs"), dirs, "{snap:#}");
    assert_eq!(u64_of(&snap, "/stats/others"), others, "{snap:#}");
    assert_eq!(u64_of(&snap, "/stats/total_bytes"), bytes, "{snap:#}");
    assert_eq!(u64_of(&snap, "/stats/bytes_read"), bytes, "{snap:#}");
    assert_eq!(str_of(&snap, "/source"), "rich");
    assert_eq!(str_of(&snap, "/kind"), "files");
    assert_eq!(snap["warnings"], Value::Array(vec![]), "{snap:#}");

    // By id prefix (short id), into a directory that does not exist yet: the root's own
    // metadata (mode, mtime, xattrs) comes back too.
    let dst = r.scratch("restored");
    r.restore(str_of(&snap, "/short_id"), &dst, &[]);
    assert_trees_equal(&src, &dst);

    // And by `latest` of the source.
    let dst2 = r.scratch("restored2");
    r.restore("latest", &dst2, &["--source", "rich"]);
    assert_trees_equal(&src, &dst2);
}

#[test]
fn several_paths_become_named_entries() {
    let r = Repo::new();
    let one = r.scratch("one");
    gen_small_tree(&one, 1);
    let two = r.scratch("two");
    gen_small_tree(&two, 2);
    let file = r.scratch("lone.txt");
    write_file(&file, b"a single file\n");
    set_mtime(&file, T0, 5);
    let snap = r.backup(&[s(&one), s(&two), s(&file), "--source", "multi"]);
    assert_eq!(u64_of(&snap, "/stats/files"), 11, "{snap:#}");
    let o = r.ok(&["ls", "latest", "--source", "multi", "--json"]);
    let mut names: Vec<String> = parse_ndjson(&o)
        .iter()
        .map(|v| str_of(v, "/path").to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["lone.txt", "one", "two"]);
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "multi"]);
    assert_trees_equal_opts(&one, &dst.join("one"), true);
    assert_trees_equal_opts(&two, &dst.join("two"), true);
    assert_diff_r_clean(&one, &dst.join("one"));
    let (ma, mb) = (
        fs::metadata(&file).unwrap(),
        fs::metadata(dst.join("lone.txt")).unwrap(),
    );
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec(), ma.mode()),
        (mb.mtime(), mb.mtime_nsec(), mb.mode())
    );
    assert_eq!(fs::read(dst.join("lone.txt")).unwrap(), b"a single file\n");

    // Two paths with the same final name are refused, nothing is written.
    let other = r.scratch("x/one");
    gen_small_tree(&other, 3);
    let o = r.wb(&["backup", s(&one), s(&other), "--source", "clash"]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(r.snapshots().len(), 1);
}

#[test]
fn sockets_are_listed_but_not_restored() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 6);
    let _listener = std::os::unix::net::UnixListener::bind(src.join("app.sock")).unwrap();
    let snap = r.backup_dir(&src, "s");
    assert_eq!(u64_of(&snap, "/stats/others"), 1, "{snap:#}");
    let o = r.ok(&["ls", "latest:/app.sock", "--source", "s", "--json"]);
    assert_eq!(str_of(&parse_ndjson(&o)[0], "/type"), "socket");
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "s"]);
    assert!(fs::symlink_metadata(dst.join("app.sock")).is_err());
    fs::remove_file(src.join("app.sock")).unwrap();
    assert_diff_r_clean(&src, &dst);
}

#[test]
fn restore_into_existing_directory_keeps_unrelated_files() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 12);
    r.backup_dir(&src, "s");
    let dst = r.mkdir("dst");
    write_file(&dst.join("mine.txt"), b"not from the backup");
    write_file(&dst.join("a/mine_too.txt"), b"also mine");
    r.restore("latest", &dst, &["--source", "s"]);
    assert_eq!(
        fs::read(dst.join("mine.txt")).unwrap(),
        b"not from the backup"
    );
    assert_eq!(fs::read(dst.join("a/mine_too.txt")).unwrap(), b"also mine");
    fs::remove_file(dst.join("mine.txt")).unwrap();
    fs::remove_file(dst.join("a/mine_too.txt")).unwrap();
    assert_diff_r_clean(&src, &dst);
}

#[test]
fn sparse_file_comes_back_sparse() {
    let r = Repo::new();
    let src = r.mkdir("src");
    let f = src.join("sparse.img");
    let size = 100 * MIB as u64;
    {
        let file = File::create(&f).unwrap();
        file.set_len(size).unwrap();
        file.write_all_at(b"in the middle", 50 * MIB as u64 + 12345)
            .unwrap();
        file.write_all_at(b"early", 3 * MIB as u64).unwrap();
        file.write_all_at(b"the very end", size - 12).unwrap();
    }
    let src_blocks = fs::metadata(&f).unwrap().blocks();
    assert!(
        src_blocks * 512 < MIB as u64,
        "precondition: source is sparse"
    );
    r.backup_dir(&src, "sparse");
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "sparse"]);
    let out = dst.join("sparse.img");
    let md = fs::metadata(&out).unwrap();
    assert_eq!(md.len(), size);
    assert_eq!(first_difference(&f, &out), None, "content differs");
    assert!(
        md.blocks() * 512 < MIB as u64,
        "restored file is not sparse: {} blocks of 512 bytes for {} bytes (source: {} blocks)",
        md.blocks(),
        size,
        src_blocks
    );
    assert_trees_equal(&src, &dst);
}

#[test]
fn restore_subtree_and_single_file() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 7);
    set_xattr(&src.join("a/b"), "user.x", b"subtree root attr");
    chmod(&src.join("a/b"), 0o710);
    set_mtime(&src.join("a/b"), T0, 42);
    r.backup_dir(&src, "s");

    let dst = r.scratch("sub");
    r.restore("latest:/a/b", &dst, &["--source", "s"]);
    assert_trees_equal(&src.join("a/b"), &dst);

    // A single file lands under its own name inside the target.
    let one = r.scratch("one");
    r.restore("latest:/a/b/two.bin", &one, &["--source", "s"]);
    let names: Vec<_> = fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["two.bin"]);
    assert_eq!(
        fs::read(one.join("two.bin")).unwrap(),
        fs::read(src.join("a/b/two.bin")).unwrap()
    );
    let (ma, mb) = (
        fs::metadata(src.join("a/b/two.bin")).unwrap(),
        fs::metadata(one.join("two.bin")).unwrap(),
    );
    assert_eq!(
        (ma.mode(), ma.mtime(), ma.mtime_nsec()),
        (mb.mode(), mb.mtime(), mb.mtime_nsec())
    );

    // A path that is not in the snapshot.
    let o = r.wb(&[
        "restore",
        "latest:/no/such",
        "--source",
        "s",
        "--target",
        s(&r.scratch("none")),
    ]);
    assert_code(&o, exit::NOT_FOUND, "restore of a missing path");
}

#[test]
fn restore_refuses_to_overwrite_without_flag() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 3);
    r.backup_dir(&src, "s");
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "s"]);
    assert_trees_equal(&src, &dst);

    // A local edit must survive a restore without --overwrite.
    fs::write(dst.join("top.txt"), b"local edit").unwrap();
    fs::remove_file(dst.join("a/one.bin")).unwrap();
    let o = r.wb(&["restore", "latest", "--source", "s", "--target", s(&dst)]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "restore over files must fail\n{}",
        describe(&o)
    );
    assert_stderr_contains(&o, "overwrite");
    assert_eq!(fs::read(dst.join("top.txt")).unwrap(), b"local edit");
    assert!(
        !dst.join("a/one.bin").exists(),
        "a refused restore must not write anything"
    );

    // With --overwrite everything comes back.
    r.restore("latest", &dst, &["--source", "s", "--overwrite"]);
    assert_trees_equal_opts(&src, &dst, false);
    assert_diff_r_clean(&src, &dst);

    // Single file too.
    fs::write(dst.join("top.txt"), b"edited again").unwrap();
    let o = r.wb(&[
        "restore",
        "latest:/top.txt",
        "--source",
        "s",
        "--target",
        s(&dst),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(fs::read(dst.join("top.txt")).unwrap(), b"edited again");
    r.restore("latest:/top.txt", &dst, &["--source", "s", "--overwrite"]);
    assert_eq!(
        fs::read(dst.join("top.txt")).unwrap(),
        fs::read(src.join("top.txt")).unwrap()
    );
}

#[test]
fn cat_returns_original_bytes() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 11);
    write_random(&src.join("multi_chunk.bin"), 5 * MIB + 333, 99);
    write_file(&src.join("empty"), b"");
    let snap = r.backup_dir(&src, "s");
    let short = str_of(&snap, "/short_id").to_string();
    for rel in [
        "top.txt",
        "a/one.bin",
        "a/b/two.bin",
        "a/b/c/three.bin",
        "multi_chunk.bin",
        "empty",
    ] {
        let want = fs::read(src.join(rel)).unwrap();
        let got = r.cat(&format!("latest:/{rel}"), &["--source", "s"]);
        assert!(got == want, "cat latest:/{rel} differs from the original");
        let got = r.cat(&format!("{short}:/{rel}"), &[]);
        assert!(got == want, "cat {short}:/{rel} differs from the original");
    }
    r.code(&["cat", "latest:/nope", "--source", "s"], exit::NOT_FOUND);
    let o = r.wb(&["cat", "latest:/a", "--source", "s"]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "cat of a directory\n{}",
        describe(&o)
    );
    assert!(o.stdout.is_empty());
    r.code(&["cat", "ffffffff:/top.txt"], exit::NOT_FOUND);
}

#[test]
fn ls_json_lists_every_entry_with_metadata() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 5);
    std::os::unix::fs::symlink("top.txt", src.join("link")).unwrap();
    write_file(&src.join("caf\u{e9}.txt"), b"utf8");
    let bad = OsStr::from_bytes(b"bad\xff\xfe");
    write_file(&src.join(bad), b"bytes");
    r.backup_dir(&src, "s");

    let o = r.ok(&["ls", "latest", "--source", "s", "-R", "--json"]);
    let lines = parse_ndjson(&o);
    let mut all = Vec::new();
    collect_paths(&src, &mut all);
    assert_eq!(
        lines.len(),
        all.len(),
        "one line per entry\n{}",
        describe(&o)
    );
    let by_path: std::collections::HashMap<String, &Value> = lines
        .iter()
        .map(|v| (str_of(v, "/path").to_string(), v))
        .collect();
    for p in &all {
        let rel = p.strip_prefix(&src).unwrap();
        let key = rel.to_string_lossy().into_owned();
        let v = by_path
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing from ls\n{}", describe(&o)));
        let md = fs::symlink_metadata(p).unwrap();
        let ty = if md.is_dir() {
            "dir"
        } else if md.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        assert_eq!(str_of(v, "/type"), ty, "{key}: {v}");
        assert_eq!(
            u64_of(v, "/mode"),
            (md.mode() & 0o7777) as u64,
            "{key}: {v}"
        );
        assert_eq!(u64_of(v, "/uid"), md.uid() as u64, "{key}: {v}");
        assert_eq!(u64_of(v, "/gid"), md.gid() as u64, "{key}: {v}");
        assert_eq!(
            v["mtime_ns"].as_i64(),
            Some(md.mtime() * 1_000_000_000 + md.mtime_nsec()),
            "{key}: {v}"
        );
        assert!(v["name"].is_string(), "{key}: {v}");
        assert!(v["mtime"].is_string(), "{key}: {v}");
        if ty == "file" {
            assert_eq!(u64_of(v, "/size"), md.len(), "{key}: {v}");
            assert!(v["digest"].is_string(), "{key}: {v}");
        }
        if ty == "symlink" {
            assert_eq!(str_of(v, "/link_target"), "top.txt");
        }
        if std::str::from_utf8(rel.as_os_str().as_bytes()).is_err() {
            assert_eq!(
                str_of(v, "/path_hex"),
                hex_lower(rel.as_os_str().as_bytes()),
                "{key}: {v}"
            );
        }
    }
    // Equal content, equal digest; different content, different digest.
    let d = |p: &str| str_of(by_path[p], "/digest").to_string();
    assert_ne!(d("a/one.bin"), d("a/b/two.bin"));

    // Non-recursive listing of a subdirectory: only its direct children.
    let o = r.ok(&["ls", "latest:/a", "--source", "s", "--json"]);
    let mut paths: Vec<String> = parse_ndjson(&o)
        .iter()
        .map(|v| str_of(v, "/path").to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, vec!["a/b", "a/one.bin"]);

    // Plain and long formats work and mention the files.
    let o = r.ok(&["ls", "latest", "--source", "s", "-R"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("a/b/c/three.bin"));
    let o = r.ok(&["ls", "latest", "--source", "s", "-l"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("link -> top.txt"));

    r.code(&["ls", "latest:/missing", "--source", "s"], exit::NOT_FOUND);
}

/// Lower-case hex of bytes.
fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn snapshots_json_lists_snapshots_oldest_first() {
    let r = Repo::new();
    assert!(r.snapshots().is_empty());
    let src = r.scratch("src");
    gen_small_tree(&src, 1);
    let a = r.backup(&[s(&src), "--source", "alpha", "--tag", "daily", "--tag", "x"]);
    let mut c = r.cmd(&[
        "backup",
        "--stdin",
        "--stdin-name",
        "d.bin",
        "--source",
        "beta",
        "--json",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"dump bytes")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 0, "backup --stdin");
    let b = parse_json(&o);

    let all = r.snapshots();
    assert_eq!(all.len(), 2);
    for (got, want) in all.iter().zip([&a, &b]) {
        for k in ["id", "short_id", "source", "time", "time_name", "kind"] {
            assert_eq!(got[k], want[k], "field {k}: {got:#} vs {want:#}");
        }
        let id = str_of(got, "/id");
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(id.starts_with(str_of(got, "/short_id")));
        assert!(got["stats"].is_object());
        assert_eq!(got["complete"], Value::Bool(true));
    }
    assert!(all[0]["time"].as_i64() <= all[1]["time"].as_i64());
    assert_eq!(str_of(&all[0], "/kind"), "files");
    assert_eq!(str_of(&all[1], "/kind"), "dump");
    assert_eq!(all[0]["tags"], serde_json::json!(["daily", "x"]));

    let only = r.json(&["snapshots", "--source", "beta", "--json"]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(str_of(&only[0], "/source"), "beta");
    let o = r.ok(&["snapshots"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 snapshot(s)"));
}

#[test]
fn time_based_selection() {
    let r = Repo::new();
    let src = r.mkdir("src");
    write_file(&src.join("f.txt"), b"one\n");
    let s1 = r.backup_dir(&src, "s");
    std::thread::sleep(Duration::from_millis(30));
    write_file(&src.join("f.txt"), b"two, longer\n");
    let s2 = r.backup_dir(&src, "s");
    // Another source in between must not be picked for source s.
    let t1 = s1["time"].as_i64().unwrap();
    let t2 = s2["time"].as_i64().unwrap();
    assert!(t2 > t1 + 2, "snapshot times {t1} and {t2} too close");
    let mid = rfc3339_ms((t1 + t2) / 2);

    assert_eq!(
        r.cat(&format!("{mid}:/f.txt"), &["--source", "s"]),
        b"one\n"
    );
    assert_eq!(r.cat(&format!("s@{mid}:/f.txt"), &[]), b"one\n");
    // Exact snapshot time names select that very snapshot.
    let n1 = str_of(&s1, "/time_name");
    let n2 = str_of(&s2, "/time_name");
    assert_eq!(r.cat(&format!("s@{n1}:/f.txt"), &[]), b"one\n");
    assert_eq!(r.cat(&format!("s@{n2}:/f.txt"), &[]), b"two, longer\n");
    assert_eq!(
        r.cat(&format!("{n2}:/f.txt"), &["--source", "s"]),
        b"two, longer\n"
    );
    // An RFC 3339 time with an offset, same instant as `mid`.
    let mid_offset = chrono::DateTime::from_timestamp_millis((t1 + t2) / 2)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string();
    assert_eq!(r.cat(&format!("s@{mid_offset}:/f.txt"), &[]), b"one\n");
    // A minute-precision time in the future selects the latest.
    let later = chrono::DateTime::from_timestamp_millis(t2 + 3_600_000)
        .unwrap()
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    assert_eq!(
        r.cat(&format!("{later}:/f.txt"), &["--source", "s"]),
        b"two, longer\n"
    );

    // Restore and ls accept the same forms (whole snapshot: TIME with --source, or
    // SOURCE@TIME:/; SOURCE@TIME without a path is covered by the ignored test below).
    let dst = r.scratch("dst");
    r.restore(&mid, &dst, &["--source", "s"]);
    assert_eq!(fs::read(dst.join("f.txt")).unwrap(), b"one\n");
    let dst = r.scratch("dst2");
    r.restore(&format!("s@{mid}:/"), &dst, &[]);
    assert_eq!(fs::read(dst.join("f.txt")).unwrap(), b"one\n");
    let o = r.ok(&["ls", &mid, "--source", "s", "--json"]);
    assert_eq!(u64_of(&parse_ndjson(&o)[0], "/size"), 4);
    let o = r.ok(&["ls", &format!("s@{mid}:/f.txt"), "--json"]);
    assert_eq!(u64_of(&parse_ndjson(&o)[0], "/size"), 4);

    // Before the first snapshot: not found.
    let before = rfc3339_ms(t1 - 1000);
    r.code(
        &["cat", &format!("{before}:/f.txt"), "--source", "s"],
        exit::NOT_FOUND,
    );
    r.code(&["cat", &format!("s@{before}:/f.txt")], exit::NOT_FOUND);
    r.code(&["ls", &before, "--source", "s"], exit::NOT_FOUND);
    r.code(
        &["ls", "2001-01-01T00:00", "--source", "s"],
        exit::NOT_FOUND,
    );
    r.code(&["ls", "s@2001-01-01"], exit::NOT_FOUND);
    // A source that does not exist.
    r.code(&["ls", &format!("nosuch@{mid}:/")], exit::NOT_FOUND);
    // A time without a source is refused with a hint.
    let o = r.wb(&["ls", &mid]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert_stderr_contains(&o, "source");
}

#[test]
fn source_at_time_without_path() {
    let r = Repo::new();
    let src = r.mkdir("src");
    write_file(&src.join("f.txt"), b"one\n");
    let s1 = r.backup_dir(&src, "s");
    let name = str_of(&s1, "/time_name").to_string();
    let t1 = s1["time"].as_i64().unwrap();
    // The exact time name of the snapshot (has seconds and milliseconds).
    let o = r.ok(&["ls", &format!("s@{name}"), "--json"]);
    assert_eq!(str_of(&parse_ndjson(&o)[0], "/path"), "f.txt");
    let dst = r.scratch("dst");
    r.restore(&format!("s@{name}"), &dst, &[]);
    assert_eq!(fs::read(dst.join("f.txt")).unwrap(), b"one\n");
    // Minute precision, in the future: the latest snapshot.
    let later = chrono::DateTime::from_timestamp_millis(t1 + 3_600_000)
        .unwrap()
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    r.ok(&["ls", &format!("s@{later}")]);
    // Before the snapshot: not found (and for the right reason).
    let before = rfc3339_ms(t1 - 1000);
    let o = r.code(&["ls", &format!("s@{before}")], exit::NOT_FOUND);
    assert_stderr_contains(&o, &before);
}

#[test]
fn dedup_across_sources() {
    let r = Repo::new();
    let src = r.mkdir("src");
    let size = 30 * MIB;
    write_random(&src.join("big.bin"), size, 0xdead);
    let a = r.backup_dir(&src, "A");
    assert!(u64_of(&a, "/stats/bytes_added") >= size as u64, "{a:#}");
    let before = r.stored_bytes();
    let b = r.backup_dir(&src, "B");
    let grown = r.stored_bytes() - before;
    assert_eq!(u64_of(&b, "/stats/bytes_read"), size as u64, "{b:#}");
    assert!(
        u64_of(&b, "/stats/bytes_added") < 100 * 1024,
        "second source re-added data: {b:#}"
    );
    assert!(
        u64_of(&b, "/stats/bytes_stored") < 100 * 1024,
        "second source re-stored data: {b:#}"
    );
    assert!(grown < MIB as u64, "repository grew by {grown} bytes");
    // Both restore.
    for source in ["A", "B"] {
        assert!(
            r.cat("latest:/big.bin", &["--source", source])
                == fs::read(src.join("big.bin")).unwrap()
        );
    }
}

#[test]
fn incremental_backup_reads_only_changed_files() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 21);
    write_random(&src.join("two_mib.bin"), 2 * MIB, 22);
    let (_, _, _, total) = expected_counts(&src);
    let s1 = r.backup_dir(&src, "s");
    assert_eq!(u64_of(&s1, "/stats/bytes_read"), total);

    // Nothing changed: nothing read, nothing added (trees dedup to the same ids).
    let s2 = r.backup_dir(&src, "s");
    assert_eq!(u64_of(&s2, "/stats/bytes_read"), 0, "{s2:#}");
    assert_eq!(u64_of(&s2, "/stats/bytes_added"), 0, "{s2:#}");
    assert_eq!(u64_of(&s2, "/stats/total_bytes"), total, "{s2:#}");
    assert_eq!(
        id_hex(&s2["parent"]).as_deref(),
        Some(str_of(&s1, "/id")),
        "parent of the second snapshot: {s2:#}"
    );
    assert_eq!(
        s1["root"], s2["root"],
        "unchanged tree must have the same root"
    );

    // One file changed: only it is read.
    write_random(&src.join("a/one.bin"), 12_345, 23);
    let s3 = r.backup_dir(&src, "s");
    assert_eq!(u64_of(&s3, "/stats/bytes_read"), 12_345, "{s3:#}");
    let added = u64_of(&s3, "/stats/bytes_added");
    assert!((12_345..12_345 + 64 * 1024).contains(&added), "{s3:#}");

    // --force reads everything again but adds nothing new.
    let s4 = r.backup(&[s(&src), "--source", "s", "--force"]);
    assert_eq!(
        u64_of(&s4, "/stats/bytes_read"),
        u64_of(&s4, "/stats/total_bytes")
    );
    assert_eq!(u64_of(&s4, "/stats/bytes_added"), 0, "{s4:#}");

    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "s"]);
    assert_trees_equal(&src, &dst);
    // The first snapshot still has the old content.
    let old = r.scratch("old");
    r.restore(str_of(&s1, "/id"), &old, &[]);
    assert_eq!(
        fs::read(old.join("a/one.bin")).unwrap(),
        random_bytes(10_000, 22)
    );
}

#[test]
fn same_size_same_mtime_change_is_detected() {
    let r = Repo::new();
    let src = r.mkdir("src");
    let f = src.join("f.bin");
    write_file(&f, &[b'A'; 100_000]);
    set_mtime(&f, T0, 500_000_000);
    let ino = fs::metadata(&f).unwrap().ino();
    r.backup_dir(&src, "s");

    // Same size, same inode, same mtime: only ctime tells.
    {
        let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        file.write_all_at(&[b'B'; 100_000], 0).unwrap();
    }
    let touch = std::process::Command::new("touch")
        .arg("-d")
        .arg(format!("@{T0}.5"))
        .arg(&f)
        .status()
        .unwrap();
    assert!(touch.success());
    let md = fs::metadata(&f).unwrap();
    assert_eq!(
        (md.ino(), md.len(), md.mtime(), md.mtime_nsec()),
        (ino, 100_000, T0, 500_000_000)
    );

    let s2 = r.backup_dir(&src, "s");
    assert_eq!(
        u64_of(&s2, "/stats/bytes_read"),
        100_000,
        "file not re-read: {s2:#}"
    );
    assert_eq!(
        r.cat("latest:/f.bin", &["--source", "s"]),
        vec![b'B'; 100_000]
    );
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "s"]);
    assert_trees_equal(&src, &dst);
}

#[test]
fn stdin_stream_roundtrip() {
    let r = Repo::new();
    let data = Arc::new(random_bytes(25 * MIB, 0x57d1));
    let mut c = r.cmd(&[
        "backup",
        "--stdin",
        "--stdin-name",
        "app.dump",
        "--source",
        "db",
        "--json",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&d));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().expect("feeding stdin");
    assert_code(&o, 0, "backup --stdin");
    let snap = parse_json(&o);
    assert_eq!(str_of(&snap, "/kind"), "dump");
    assert_eq!(u64_of(&snap, "/stats/total_bytes"), data.len() as u64);
    let got = r.cat("latest:/app.dump", &["--source", "db"]);
    assert!(
        got == *data,
        "cat of the stdin dump differs ({} vs {} bytes)",
        got.len(),
        data.len()
    );
    let o = r.ok(&["ls", "latest", "--source", "db", "--json"]);
    let l = parse_ndjson(&o);
    assert_eq!(l.len(), 1);
    assert_eq!(str_of(&l[0], "/path"), "app.dump");
    assert_eq!(u64_of(&l[0], "/size"), data.len() as u64);
    // Restore too.
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "db"]);
    assert!(fs::read(dst.join("app.dump")).unwrap() == *data);

    // An empty stream is a valid, empty file.
    let mut c = r.cmd(&[
        "backup",
        "--stdin",
        "--stdin-name",
        "empty",
        "--source",
        "e",
        "--json",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 0, "backup of an empty stdin");
    assert_eq!(u64_of(&parse_json(&o), "/stats/total_bytes"), 0);
    assert!(r.cat("latest:/empty", &["--source", "e"]).is_empty());
}

#[test]
fn command_stream_roundtrip() {
    let r = Repo::new();
    let copy = r.scratch("copy.bin");
    let cmd = format!("head -c 3000000 /dev/urandom | tee {}", s(&copy));
    let snap = r.backup(&[
        "--command",
        &cmd,
        "--stdin-name",
        "rand.bin",
        "--source",
        "cmd",
    ]);
    assert_eq!(u64_of(&snap, "/stats/total_bytes"), 3_000_000);
    let want = fs::read(&copy).unwrap();
    assert_eq!(want.len(), 3_000_000);
    assert!(r.cat("latest:/rand.bin", &["--source", "cmd"]) == want);
}

#[test]
fn failing_command_writes_no_snapshot() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 2);
    r.backup_dir(&src, "files");
    let before = r.snapshots();
    let o = r.wb(&[
        "backup",
        "--command",
        "echo partial; exit 3",
        "--stdin-name",
        "x.dump",
        "--source",
        "cmd",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert_ne!(o.status.code(), Some(exit::INCOMPLETE), "{}", describe(&o));
    assert_stderr_contains(&o, "exit");
    let after = r.snapshots();
    assert_eq!(before, after, "a failed command must not add a snapshot");
    r.code(&["ls", "latest", "--source", "cmd"], exit::NOT_FOUND);
    // The repository is still healthy and writable.
    r.ok(&["check"]);
    r.backup(&[
        "--command",
        "echo fine",
        "--stdin-name",
        "x.dump",
        "--source",
        "cmd",
    ]);
    assert_eq!(r.cat("latest:/x.dump", &["--source", "cmd"]), b"fine\n");
}

#[test]
fn wrong_passphrase_is_refused() {
    let r = Repo::new();
    for args in [&["snapshots"][..], &["check"][..], &["key", "list"][..]] {
        let o = r.wb_pass("not the passphrase", args);
        assert_code(&o, exit::WRONG_PASSWORD, "wrong passphrase");
        assert_stderr_contains(&o, "wrong passphrase");
    }
    let src = r.mkdir("src");
    let o = r.wb_pass("nope", &["backup", s(&src), "--source", "s"]);
    assert_code(&o, exit::WRONG_PASSWORD, "backup with wrong passphrase");
    // --password-file works, and takes its first line.
    let pf = r.scratch("pass");
    fs::write(&pf, format!("{PASSWORD}\nsecond line ignored\n")).unwrap();
    let mut c = r.cmd(&["--password-file", s(&pf), "snapshots"]);
    c.env_remove("WAYBACK_PASSWORD");
    assert_code(&run(c), 0, "--password-file");
}

#[test]
fn unlocked_key_is_cached_in_the_kernel_keyring_until_locked() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("a"), b"a").unwrap();
    r.backup_dir(&src, "s");
    // Unlock checks the passphrase: a wrong one caches nothing.
    let o = r.wb_pass("wrong", &["key", "unlock"]);
    assert_code(&o, exit::WRONG_PASSWORD, "unlock with a wrong passphrase");
    let no_pass = |args: &[&str]| {
        let mut c = r.cmd(args);
        c.env_remove("WAYBACK_PASSWORD");
        run(c)
    };
    let o = no_pass(&["snapshots"]);
    assert_code(&o, exit::ERROR, "no passphrase and no cached key");
    assert_stderr_contains(&o, "no passphrase");
    r.ok(&["key", "unlock", "--timeout", "5m"]);
    // Now reading commands need no passphrase at all, and writers work too.
    let o = no_pass(&["snapshots", "--json"]);
    assert_code(&o, 0, "snapshots with the cached key");
    assert_eq!(parse_json(&o).as_array().unwrap().len(), 1);
    assert_code(
        &no_pass(&["backup", s(&src), "--source", "s"]),
        0,
        "backup with the cached key",
    );
    // Changing keys still demands the passphrase.
    assert_code(
        &no_pass(&["key", "add"]),
        exit::ERROR,
        "key add without passphrase",
    );
    // Another repository is not opened by this one's cached key.
    let other = Repo::new();
    let mut c = other.cmd(&["snapshots"]);
    c.env_remove("WAYBACK_PASSWORD");
    assert_code(&run(c), exit::ERROR, "other repository");
    r.ok(&["key", "lock"]);
    assert_code(&no_pass(&["snapshots"]), exit::ERROR, "after lock");
    let o = r.wb_pass("wrong", &["snapshots"]);
    assert_code(
        &o,
        exit::WRONG_PASSWORD,
        "after lock, the passphrase is checked again",
    );
}

fn key_list(r: &Repo, pass: &str) -> Vec<Value> {
    let o = r.wb_pass(pass, &["key", "list", "--json"]);
    assert_code(&o, 0, "key list");
    parse_json(&o).as_array().unwrap().clone()
}

fn current_key(keys: &[Value]) -> String {
    let cur: Vec<_> = keys
        .iter()
        .filter(|k| k["current"] == Value::Bool(true))
        .collect();
    assert_eq!(cur.len(), 1, "exactly one current key: {keys:?}");
    str_of(cur[0], "/id").to_string()
}

#[test]
fn key_add_passwd_and_remove() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 9);
    r.backup_dir(&src, "s");
    let keys = key_list(&r, PASSWORD);
    assert_eq!(keys.len(), 1);
    let first = current_key(&keys);

    // A second passphrase opens the same repository.
    let mut c = r.cmd(&["key", "add"]);
    c.env("WAYBACK_NEW_PASSWORD", "second pass");
    assert_code(&run(c), 0, "key add");
    let keys = key_list(&r, "second pass");
    assert_eq!(keys.len(), 2);
    let second = current_key(&keys);
    assert_ne!(first, second);
    let o = r.wb_pass("second pass", &["cat", "latest:/top.txt", "--source", "s"]);
    assert_code(&o, 0, "cat with the second passphrase");
    assert_eq!(o.stdout, fs::read(src.join("top.txt")).unwrap());

    // The key in use cannot be removed.
    let o = r.wb_pass("second pass", &["key", "remove", &second]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "removing the key in use\n{}",
        describe(&o)
    );
    assert_stderr_contains(&o, "in use");
    assert_eq!(key_list(&r, "second pass").len(), 2);
    // An unknown key id.
    r.code(&["key", "remove", "0000000000000000"], exit::NOT_FOUND);

    // passwd replaces the key in use: old passphrase fails, new one works.
    let mut c = r.cmd(&["key", "passwd"]);
    c.env("WAYBACK_NEW_PASSWORD", "third pass");
    assert_code(&run(c), 0, "key passwd");
    let o = r.wb_pass(PASSWORD, &["snapshots"]);
    assert_code(&o, exit::WRONG_PASSWORD, "old passphrase after passwd");
    assert_stderr_contains(&o, "wrong passphrase");
    let keys = key_list(&r, "third pass");
    assert_eq!(keys.len(), 2);
    let third = current_key(&keys);
    assert!(
        !keys.iter().any(|k| str_of(k, "/id") == first),
        "old key still listed"
    );
    let o = r.wb_pass("third pass", &["cat", "latest:/top.txt", "--source", "s"]);
    assert_code(&o, 0, "cat with the new passphrase");
    assert_eq!(o.stdout, fs::read(src.join("top.txt")).unwrap());

    // Removing another (not in use) key works; then that passphrase fails.
    let o = r.wb_pass("third pass", &["key", "remove", &second]);
    assert_code(&o, 0, "remove the other key");
    let o = r.wb_pass("second pass", &["snapshots"]);
    assert_code(&o, exit::WRONG_PASSWORD, "passphrase of a removed key");
    // The last key cannot be removed (it is also the one in use).
    let o = r.wb_pass("third pass", &["key", "remove", &third]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(key_list(&r, "third pass").len(), 1);
}

#[test]
fn exclude_globs_leave_files_out() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 4);
    write_file(&src.join("x.tmp"), b"tmp");
    write_file(&src.join("a/b/y.tmp"), b"tmp");
    write_file(&src.join("a/keep.tmpl"), b"keep");
    write_file(&src.join("cache/skip/deep.txt"), b"skip");
    write_file(
        &src.join("d/by_full_path.txt"),
        b"excluded by its absolute path",
    );
    let full = src.join("d/by_full_path.txt");
    let snap = r.backup(&[
        s(&src),
        "--source",
        "s",
        "--exclude",
        "*.tmp",
        "--exclude",
        "cache",
        "--exclude",
        s(&full),
    ]);
    let o = r.ok(&["ls", "latest", "--source", "s", "-R", "--json"]);
    let paths: Vec<String> = parse_ndjson(&o)
        .iter()
        .map(|v| str_of(v, "/path").to_string())
        .collect();
    for p in [
        "x.tmp",
        "a/b/y.tmp",
        "cache",
        "cache/skip/deep.txt",
        "d/by_full_path.txt",
    ] {
        assert!(
            !paths.contains(&p.to_string()),
            "{p} should be excluded: {paths:?}"
        );
    }
    for p in ["a/keep.tmpl", "top.txt", "a/b/c/three.bin", "e"] {
        assert!(
            paths.contains(&p.to_string()),
            "{p} should be kept: {paths:?}"
        );
    }
    assert_eq!(snap["warnings"], Value::Array(vec![]));
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "s"]);
    fs::remove_file(src.join("x.tmp")).unwrap();
    fs::remove_file(src.join("a/b/y.tmp")).unwrap();
    fs::remove_dir_all(src.join("cache")).unwrap();
    fs::remove_file(&full).unwrap();
    // Removing entries changed directory mtimes in src, so compare without metadata of dirs:
    // contents and names via diff -r.
    assert_diff_r_clean(&src, &dst);
}

#[test]
fn file_changed_while_being_read() {
    let r = Repo::new();
    let src = r.mkdir("src");
    let f = src.join("growing.log");
    write_random(&f, 24 * MIB, 77);
    write_file(&src.join("stable.txt"), b"stable");
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let stop = stop.clone();
        let f = f.clone();
        std::thread::spawn(move || {
            let mut file = fs::OpenOptions::new().append(true).open(&f).unwrap();
            let block = [b'z'; 4096];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                file.write_all(&block).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let o = r.wb(&["backup", s(&src), "--source", "s", "--json"]);
    stop.store(true, Ordering::Relaxed);
    let appended = appender.join().unwrap();
    assert!(appended > 0);
    let code = o.status.code();
    eprintln!("backup of a growing file exited {code:?}");
    assert!(
        matches!(code, Some(0) | Some(3)),
        "backup of a growing file\n{}",
        describe(&o)
    );
    let snap = parse_json(&o);
    if code == Some(3) {
        assert_eq!(snap["complete"], Value::Bool(false), "{snap:#}");
        let warnings = snap["warnings"].as_array().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap_or("").contains("growing.log")),
            "warnings must name the file: {snap:#}"
        );
        assert!(
            !warnings
                .iter()
                .any(|w| w.as_str().unwrap_or("").contains("stable.txt")),
            "{snap:#}"
        );
        assert_stderr_contains(&o, "growing.log");
        let listed = r.snapshots();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["complete"], Value::Bool(false));
    } else {
        assert_eq!(snap["complete"], Value::Bool(true), "{snap:#}");
    }
    // Whatever was stored is a consistent prefix of the (append-only) file.
    let got = r.cat("latest:/growing.log", &["--source", "s"]);
    let now = fs::read(&f).unwrap();
    assert!(got.len() >= 24 * MIB, "stored {} bytes", got.len());
    assert!(
        now.starts_with(&got),
        "stored bytes are not a prefix of the file"
    );
    let o = r.ok(&["ls", "latest:/growing.log", "--source", "s", "--json"]);
    assert_eq!(u64_of(&parse_ndjson(&o)[0], "/size"), got.len() as u64);
}

#[test]
fn writer_lock_excludes_second_writer() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 8);
    let mut c = r.cmd(&[
        "backup",
        "--stdin",
        "--stdin-name",
        "held.bin",
        "--source",
        "held",
        "--json",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut holder = c.spawn().unwrap();
    let pid = holder.id();
    let lock = r.path.join("locks/writer");
    let held = wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&lock).is_ok_and(|s| s.contains(&format!("pid {pid}")))
    });
    if !held {
        kill_child(&mut holder);
        panic!("the first backup never took the writer lock");
    }

    let o = r.wb(&["backup", s(&src), "--source", "other"]);
    let second_ok = o.status.code() == Some(exit::LOCKED)
        && String::from_utf8_lossy(&o.stderr).contains(&pid.to_string());
    // Readers still work beside a writer.
    let readers = r.wb(&["snapshots", "--json"]);
    if !second_ok || !readers.status.success() {
        kill_child(&mut holder);
    }
    assert_code(&o, exit::LOCKED, "second writer");
    assert_stderr_contains(&o, &format!("pid {pid}"));
    assert_code(&readers, 0, "reader beside a writer");

    // Other writers are refused too, and `index rebuild` must not touch the index.
    let o = r.wb(&["index", "rebuild"]);
    let rebuild_locked = o.status.code() == Some(exit::LOCKED);
    if !rebuild_locked {
        kill_child(&mut holder);
    }
    assert_code(&o, exit::LOCKED, "index rebuild while locked");
    assert!(r.path.join("index/CURRENT").exists());

    // Let the first finish; then writing works again.
    {
        let mut stdin = holder.stdin.take().unwrap();
        stdin.write_all(b"held data").unwrap();
    }
    let out = holder.wait_with_output().unwrap();
    assert_code(&out, 0, "the lock holder");
    assert_eq!(
        r.cat("latest:/held.bin", &["--source", "held"]),
        b"held data"
    );
    r.backup_dir(&src, "other");
    assert_eq!(r.snapshots().len(), 2);
}

#[test]
fn entries_that_change_kind_between_backups() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 13);
    write_file(&src.join("was_file"), b"file");
    fs::create_dir_all(src.join("was_dir/inner")).unwrap();
    write_file(&src.join("was_dir/inner/x"), b"x");
    std::os::unix::fs::symlink("top.txt", src.join("was_link")).unwrap();
    r.backup_dir(&src, "s");
    fs::remove_file(src.join("was_file")).unwrap();
    fs::create_dir(src.join("was_file")).unwrap();
    write_file(&src.join("was_file/now_inside"), b"inside");
    fs::remove_dir_all(src.join("was_dir")).unwrap();
    write_file(&src.join("was_dir"), b"now a file");
    fs::remove_file(src.join("was_link")).unwrap();
    write_file(&src.join("was_link"), b"now a file too");
    r.backup_dir(&src, "s");
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "s"]);
    assert_trees_equal(&src, &dst);
}

/// A restore must stay inside its target: a symlink already in the target where the snapshot
/// has a directory must not be followed.
#[test]
fn restore_does_not_follow_symlinks_in_target() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 14);
    chmod(&src.join("a"), 0o700);
    r.backup_dir(&src, "s");
    let outside = r.mkdir("outside");
    chmod(&outside, 0o755);
    let dst = r.mkdir("dst");
    std::os::unix::fs::symlink(&outside, dst.join("a")).unwrap();
    let o = r.wb(&["restore", "latest", "--source", "s", "--target", s(&dst)]);
    let leaked: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        leaked.is_empty(),
        "restore wrote outside its target: {leaked:?}\n{}",
        describe(&o)
    );
    assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn init_and_repository_location_errors() {
    let r = Repo::new();
    // A second init over an existing repository is refused and harms nothing.
    let o = r.wb(&["init"]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    r.ok(&["snapshots"]);
    // Init into a non-empty directory is refused.
    let full = r.mkdir("full");
    write_file(&full.join("something"), b"x");
    let mut c = r.cmd(&["init"]);
    c.env("WAYBACK_REPO", &full);
    let o = run(c);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(!full.join("config").exists());
    // Not a repository: not found.
    let empty = r.mkdir("not_a_repo");
    let mut c = r.cmd(&["snapshots"]);
    c.env("WAYBACK_REPO", &empty);
    assert_code(&run(c), exit::NOT_FOUND, "snapshots outside a repository");
    // --repo overrides the environment.
    let mut c = r.cmd(&["--repo", s(&r.path), "snapshots"]);
    c.env("WAYBACK_REPO", &empty);
    assert_code(&run(c), 0, "--repo");
    // No repository at all, and no passphrase at all: clear errors, no prompt (stdin is null).
    let mut c = r.cmd(&["snapshots"]);
    c.env_remove("WAYBACK_REPO");
    let o = run(c);
    assert_ne!(o.status.code(), Some(0));
    assert_stderr_contains(&o, "--repo");
    let mut c = r.cmd(&["snapshots"]);
    c.env_remove("WAYBACK_PASSWORD");
    let o = run(c);
    assert_ne!(o.status.code(), Some(0));
    assert_stderr_contains(&o, "passphrase");
    // Usage errors exit 2.
    r.code(&["backup"], exit::USAGE);
    r.code(&["no-such-command"], exit::USAGE);
}

/// The comparison every round trip relies on must notice each kind of difference.
#[test]
fn tree_comparison_notices_every_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    gen_rich_tree(&src, &RichTree { big: 0, many: 3 });
    let copy = |name: &str| {
        let dst = tmp.path().join(name);
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&dst)
            .status()
            .unwrap();
        assert!(st.success());
        dst
    };
    assert_trees_equal(&src, &copy("same"));

    type Change = fn(&Path);
    let changes: Vec<(&str, Change)> = vec![
        ("mtime nanoseconds", |d| {
            let md = fs::symlink_metadata(d.join("text.txt")).unwrap();
            set_mtime(&d.join("text.txt"), md.mtime(), md.mtime_nsec() as u32 + 1);
        }),
        ("symlink mtime", |d| {
            set_mtime(&d.join("links/dangling"), 1, 0)
        }),
        ("dir mtime", |d| set_mtime(&d.join("nest/l1"), 1, 0)),
        ("mode", |d| chmod(&d.join("modes/odd"), 0o750)),
        ("setuid bit", |d| chmod(&d.join("modes/setuid"), 0o755)),
        ("owner", |d| lchown(&d.join("owned"), 1234, 5679)),
        ("xattr value", |d| {
            set_xattr(&d.join("text.txt"), "user.comment", b"other")
        }),
        ("content, same size", |d| {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(d.join("sizes/4095"))
                .unwrap();
            f.write_all_at(b"!", 4000).unwrap();
        }),
        ("symlink target", |d| {
            fs::remove_file(d.join("links/relative")).unwrap();
            std::os::unix::fs::symlink("../other", d.join("links/relative")).unwrap();
        }),
        ("broken hardlink", |d| {
            let data = fs::read(d.join("hard/h2")).unwrap();
            fs::remove_file(d.join("hard/h2")).unwrap();
            fs::write(d.join("hard/h2"), data).unwrap();
        }),
        ("extra file", |d| write_file(&d.join("empty_dir/new"), b"")),
        ("missing fifo", |d| fs::remove_file(d.join("fifo")).unwrap()),
        ("root mode", |d| chmod(d, 0o755)),
    ];
    for (i, (what, change)) in changes.into_iter().enumerate() {
        let dst = copy(&format!("changed{i}"));
        change(&dst);
        let r = std::panic::catch_unwind(|| assert_trees_equal_opts(&src, &dst, true));
        assert!(r.is_err(), "comparison missed: {what}");
    }
}

/// An unchanged backup's summary says it added nothing, not "dedup infx" and "0.0 MB/s".
#[test]
fn unchanged_backup_summary_says_nothing_new() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("a"), vec![7u8; 100_000]).unwrap();
    let first = r.ok(&["backup", s(&src), "--source", "x"]);
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.contains("dedup ") && first.contains("MB/s"),
        "{first}"
    );
    let again = r.ok(&["backup", s(&src), "--source", "x"]);
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.contains("nothing new"), "{again}");
    assert!(
        !again.contains("inf") && !again.contains("0.0 MB/s"),
        "{again}"
    );
    assert!(again.contains("unchanged files not reread"), "{again}");
}

/// The key files of `r`, by file name, as JSON.
fn key_files(r: &Repo) -> Vec<(std::path::PathBuf, Value)> {
    let mut out: Vec<_> = fs::read_dir(r.path.join("keys"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// One hex digit of `field` changed in the file at `p` (the JSON stays valid, the field
/// still hex of the right length: only a checksum can tell).
fn flip_hex_digit(p: &Path, field: &str) {
    let mut v: Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
    let mut s = v[field].as_str().unwrap().to_string();
    let i = s.len() / 2;
    let c = if &s[i..=i] == "0" { "1" } else { "0" };
    s.replace_range(i..=i, c);
    v[field] = s.into();
    fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A flipped byte in a key file is "damaged key file" (exit 12, naming it), a wrong passphrase
/// stays exit 10, a damaged file never hides a good one, `check` reports it; key files
/// written before the checksum existed (no `check` field) still open, and there a flipped
/// byte in the sealed key can only read as a wrong passphrase.
#[test]
fn a_damaged_key_file_is_damage_not_a_wrong_passphrase() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("f.txt"), b"data").unwrap();
    r.backup_dir(&src, "s");
    let keys = key_files(&r);
    assert_eq!(keys.len(), 1);
    let (first, v) = keys[0].clone();
    assert!(
        v["check"].is_string(),
        "a new key file has a checksum: {v:#}"
    );
    let intact = fs::read(&first).unwrap();
    let o = r.wb_pass("not the passphrase", &["snapshots"]);
    assert_code(
        &o,
        exit::WRONG_PASSWORD,
        "wrong passphrase, intact key file",
    );

    for field in ["wrapped", "salt", "host", "created"] {
        if field == "host" || field == "created" {
            let mut v = v.clone();
            v[field] = format!("{}x", v[field].as_str().unwrap()).into();
            fs::write(&first, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        } else {
            flip_hex_digit(&first, field);
        }
        let o = r.wb(&["snapshots"]);
        assert_code(
            &o,
            exit::DAMAGED,
            &format!("right passphrase, {field} damaged"),
        );
        assert_stderr_contains(&o, "damaged");
        assert_stderr_contains(&o, &first.file_name().unwrap().to_string_lossy());
        fs::write(&first, &intact).unwrap();
    }
    r.ok(&["snapshots"]);

    // A second key; the first damaged: the second opens, and check reports the first.
    let mut c = r.cmd(&["key", "add"]);
    c.env("WAYBACK_NEW_PASSWORD", "second pass");
    assert_code(&run(c), exit::OK, "key add");
    flip_hex_digit(&first, "wrapped");
    let o = r.wb_pass("second pass", &["cat", "latest:/f.txt", "--source", "s"]);
    assert_code(&o, exit::OK, "the good key opens next to a damaged one");
    assert_eq!(o.stdout, b"data");
    let o = r.wb_pass("second pass", &["check", "--json"]);
    assert_code(&o, exit::DAMAGED, "check with a damaged key file");
    let rep = parse_json(&o);
    assert_eq!(rep["problems"][0]["kind"], "key", "{rep:#}");
    let o = r.wb(&["snapshots"]);
    assert_code(&o, exit::DAMAGED, "the damaged key's passphrase");
    fs::write(&first, &intact).unwrap();

    // A key file written the old way (no checksum) opens as before.
    let mut old = v.clone();
    old.as_object_mut().unwrap().remove("check");
    fs::write(&first, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    r.ok(&["snapshots"]);
    let o = r.wb_pass("not the passphrase", &["snapshots"]);
    assert_code(&o, exit::WRONG_PASSWORD, "wrong passphrase, old key files");
    flip_hex_digit(&first, "wrapped");
    let o = r.wb(&["snapshots"]);
    assert_code(&o, exit::WRONG_PASSWORD, "old key file, sealed key damaged");
}

/// The source is walked by a pool of threads: whatever their number, the same tree gives the
/// same snapshot root, and content that recurs across files running in parallel is stored once
/// (two walkers that meet the same new blob must not both send it).
#[test]
fn parallel_walkers_store_each_blob_once_and_make_the_same_tree() {
    let r = Repo::new();
    let src = r.mkdir("src");
    let contents: Vec<Vec<u8>> = (0..5)
        .map(|i| random_bytes(20_000 + i * 1_000, 100 + i as u64))
        .collect();
    // All files of a directory alike: the walkers that split a directory meet the same new
    // blob at the same moment.
    for d in 0..10 {
        for f in 0..100 {
            write_file(
                &src.join(format!("d{d:02}/f{f:03}")),
                &contents[d % contents.len()],
            );
        }
    }
    let big = random_bytes(3 * MIB, 7);
    for d in 0..3 {
        write_file(&src.join(format!("d{d:02}/big.bin")), &big);
    }
    let unique: u64 = contents.iter().map(|c| c.len() as u64).sum::<u64>() + big.len() as u64;
    let backup = |walkers: &str, source: &str| {
        let mut c = r.cmd(&["backup", s(&src), "--source", source, "--json"]);
        c.env("WAYBACK_WALKERS", walkers);
        let o = run(c);
        assert_code(&o, exit::OK, "backup");
        parse_json(&o)
    };
    let eight = backup("8", "eight");
    let added = u64_of(&eight, "/stats/bytes_added");
    // The 1,003 files hold 6 distinct contents; the trees add well under 200 kB.
    assert!(
        added >= unique && added < unique + 200_000,
        "8 walkers stored {added} bytes for {unique} unique: {eight:#}"
    );
    assert_eq!(u64_of(&eight, "/stats/files"), 1_003);
    // Another source (no parent), one walker: the same trees, so the same root, nothing new.
    let one = backup("1", "one");
    assert_eq!(
        one["root"], eight["root"],
        "the walker count changed the tree"
    );
    assert_eq!(u64_of(&one, "/stats/bytes_added"), 0, "{one:#}");
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "eight"]);
    assert_trees_equal(&src, &dst);
}

/// The compression level is chosen at `init` and holds for the repository: a level outside
/// 1..=19 is refused as a usage error, a high one stores compressible data in fewer bytes
/// than the default, and both read back the same.
#[test]
fn init_zstd_level_is_checked_and_used() {
    let r = Repo::new();
    let src = r.mkdir("src");
    let mut text = Vec::new();
    for i in 0..200_000u32 {
        text.extend_from_slice(
            format!(
                "{i}\t{:08x}\tstatus=active\n",
                i.wrapping_mul(2_654_435_761)
            )
            .as_bytes(),
        );
    }
    write_file(&src.join("rows.txt"), &text);
    let other = r.scratch("repo19");
    for bad in ["0", "20", "-1"] {
        let o = r.wb(&["--repo", s(&other), "init", "--zstd-level", bad]);
        assert_code(&o, exit::USAGE, "init with a zstd level out of range");
        assert!(!other.join("config").exists());
    }
    r.ok(&["--repo", s(&other), "init", "--zstd-level", "19"]);
    let default = u64_of(&r.backup_dir(&src, "src"), "/stats/bytes_stored");
    let o = r.ok(&[
        "--repo",
        s(&other),
        "backup",
        s(&src),
        "--source",
        "src",
        "--json",
    ]);
    let high = u64_of(&parse_json(&o), "/stats/bytes_stored");
    assert!(
        high < default,
        "level 19 stored {high} bytes, the default level {default}"
    );
    let dst = r.scratch("dst");
    r.ok(&[
        "--repo",
        s(&other),
        "restore",
        "latest",
        "--target",
        s(&dst),
    ]);
    assert_trees_equal(&src, &dst);
}
