//! Damaged repositories: flipped bytes, truncated and missing packs, a lost index, and a
//! backup killed halfway. Damage must be found, named (pack, file, snapshot), never turned into
//! wrong bytes, and must not spread to data that is intact.

use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// A repository with two sources whose data sit in different packs:
/// source `A` (file `a.bin`) in one pack, source `B` (file `b.bin`, snapshot `snap_b`) in
/// data pack `pack_b`.
struct TwoSources {
    r: Repo,
    a_dir: PathBuf,
    b_dir: PathBuf,
    snap_b: Value,
    pack_b: PathBuf,
}

const FILE_SIZE: usize = 3 * MIB;

fn two_sources() -> TwoSources {
    let r = Repo::new();
    let a_dir = r.mkdir("a");
    write_random(&a_dir.join("a.bin"), FILE_SIZE, 0xa);
    r.backup_dir(&a_dir, "A");
    let packs_a = r.packs();
    assert!(!packs_a.is_empty());
    let b_dir = r.mkdir("b");
    write_random(&b_dir.join("b.bin"), FILE_SIZE, 0xb);
    let snap_b = r.backup_dir(&b_dir, "B");
    let pack_b = r.new_data_pack(&packs_a);
    TwoSources {
        r,
        a_dir,
        b_dir,
        snap_b,
        pack_b,
    }
}

fn pack_id(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

impl TwoSources {
    /// Source A must still restore byte for byte.
    #[track_caller]
    fn assert_a_restores(&self, name: &str) {
        let dst = self.r.scratch(name);
        self.r.restore("latest", &dst, &["--source", "A"]);
        assert_trees_equal(&self.a_dir, &dst);
        assert!(
            self.r.cat("latest:/a.bin", &["--source", "A"])
                == fs::read(self.a_dir.join("a.bin")).unwrap()
        );
    }
}

#[test]
fn flipped_byte_in_pack_is_found_and_contained() {
    let t = two_sources();
    let r = &t.r;
    let mut image = fs::read(&t.pack_b).unwrap();
    let mid = image.len() / 2;
    image[mid] ^= 0x40;
    fs::write(&t.pack_b, &image).unwrap();
    let pid = pack_id(&t.pack_b);

    // The structure check does not read data blobs; it may pass but must not crash.
    let o = r.wb(&["check"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(12)),
        "check\n{}",
        describe(&o)
    );

    // Reading the data finds it, and says which pack, which file, which snapshot.
    let o = r.code(&["check", "--read-data"], exit::DAMAGED);
    let out = all_output(&o);
    assert!(out.contains(&pid), "check must name pack {pid}\n{out}");
    assert!(
        out.contains("b.bin"),
        "check must name the affected file\n{out}"
    );
    assert!(
        out.contains(str_of(&t.snap_b, "/short_id")),
        "check must name the affected snapshot\n{out}"
    );
    assert!(!out.contains("a.bin"), "a.bin is intact\n{out}");

    let o = r.code(&["check", "--read-data", "--json"], exit::DAMAGED);
    let rep = parse_json(&o);
    let problems = rep["problems"].as_array().expect("problems array");
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p["pack"].as_str() == Some(pid.as_str())),
        "every problem is in the damaged pack: {rep:#}"
    );

    // Subsets partition the packs: exactly one half sees the damage.
    let halves: Vec<_> = ["1/2", "2/2"]
        .iter()
        .map(|n| r.wb(&["check", "--read-data", "--subset", n, "--json"]))
        .collect();
    let read: u64 = halves
        .iter()
        .map(|o| u64_of(&parse_json(o), "/packs_read"))
        .sum();
    assert_eq!(
        read,
        r.packs().len() as u64,
        "subsets must cover every pack once"
    );
    let damaged = halves
        .iter()
        .filter(|o| o.status.code() == Some(exit::DAMAGED))
        .count();
    assert_eq!(damaged, 1, "exactly one subset holds the damaged pack");

    // The other source is untouched.
    t.assert_a_restores("restore_a");

    // cat stops with exit 12 and never prints wrong bytes.
    let truth = fs::read(t.b_dir.join("b.bin")).unwrap();
    let o = r.wb(&["cat", "latest:/b.bin", "--source", "B"]);
    assert_code(&o, exit::DAMAGED, "cat of damaged file");
    let e = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        e.contains("corrupt") || e.contains("damaged"),
        "{}",
        describe(&o)
    );
    assert!(o.stdout.len() < truth.len(), "cat printed the whole file");
    assert!(
        truth.starts_with(&o.stdout),
        "cat printed {} bytes that are not a prefix of the true content",
        o.stdout.len()
    );

    // restore reports the file, exits 12 and leaves no wrong content behind.
    let dst = r.scratch("restore_b");
    let o = r.wb(&["restore", "latest", "--source", "B", "--target", s(&dst)]);
    assert_code(&o, exit::DAMAGED, "restore of damaged file");
    assert_stderr_contains(&o, "b.bin");
    let restored = dst.join("b.bin");
    if restored.exists() {
        assert!(
            fs::read(&restored).unwrap() == truth,
            "restore left a file with wrong content at {}",
            restored.display()
        );
    }
    // Same for restoring just that file.
    let dst1 = r.scratch("restore_b_file");
    let o = r.wb(&[
        "restore",
        "latest:/b.bin",
        "--source",
        "B",
        "--target",
        s(&dst1),
    ]);
    assert_code(&o, exit::DAMAGED, "restore of the damaged file alone");
    if dst1.join("b.bin").exists() {
        assert!(fs::read(dst1.join("b.bin")).unwrap() == truth);
    }
    // Listing still works: trees are intact.
    r.ok(&["ls", "latest", "--source", "B"]);
}

#[test]
fn truncated_pack_is_found() {
    let t = two_sources();
    let r = &t.r;
    let len = fs::metadata(&t.pack_b).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&t.pack_b)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let pid = pack_id(&t.pack_b);
    let o = r.code(&["check", "--read-data"], exit::DAMAGED);
    assert!(
        all_output(&o).contains(&pid),
        "check must name pack {pid}\n{}",
        describe(&o)
    );
    // The size no longer matches the index: the cheap check notices too.
    let o = r.code(&["check"], exit::DAMAGED);
    assert!(all_output(&o).contains(&pid), "{}", describe(&o));
    t.assert_a_restores("restore_a");
    // Whatever cat of B prints (the blobs themselves may be intact) is true content.
    let truth = fs::read(t.b_dir.join("b.bin")).unwrap();
    let o = r.wb(&["cat", "latest:/b.bin", "--source", "B"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(12)),
        "{}",
        describe(&o)
    );
    assert!(truth.starts_with(&o.stdout));
    if o.status.success() {
        assert_eq!(o.stdout.len(), truth.len());
    }

    // Rebuilding the index from packs reports the damaged pack and keeps the rest.
    fs::remove_dir_all(r.path.join("index")).unwrap();
    let o = r.code(&["index", "rebuild"], exit::DAMAGED);
    assert!(all_output(&o).contains(&pid), "{}", describe(&o));
    t.assert_a_restores("restore_a_after_rebuild");
    // B's blobs are now unknown: check says so and names the snapshot's data as missing.
    r.code(&["check"], exit::DAMAGED);
    let o = r.wb(&["cat", "latest:/b.bin", "--source", "B"]);
    assert_code(
        &o,
        exit::DAMAGED,
        "cat of a file whose pack could not be indexed",
    );
    assert!(o.stdout.is_empty() || truth.starts_with(&o.stdout));
}

#[test]
fn missing_pack_is_found() {
    let t = two_sources();
    let r = &t.r;
    fs::remove_file(&t.pack_b).unwrap();
    let pid = pack_id(&t.pack_b);
    let o = r.code(&["check"], exit::DAMAGED);
    let out = all_output(&o);
    assert!(out.contains("missing"), "check must say missing\n{out}");
    assert!(out.contains(&pid), "check must name pack {pid}\n{out}");
    let o = r.code(&["check", "--read-data"], exit::DAMAGED);
    assert!(all_output(&o).contains(&pid));
    t.assert_a_restores("restore_a");
    let o = r.wb(&["cat", "latest:/b.bin", "--source", "B"]);
    assert_code(&o, exit::DAMAGED, "cat with its pack gone");
    assert!(
        o.stdout.is_empty()
            || fs::read(t.b_dir.join("b.bin"))
                .unwrap()
                .starts_with(&o.stdout)
    );
    let dst = r.scratch("restore_b");
    let o = r.wb(&["restore", "latest", "--source", "B", "--target", s(&dst)]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    if dst.join("b.bin").exists() {
        assert!(fs::read(dst.join("b.bin")).unwrap() == fs::read(t.b_dir.join("b.bin")).unwrap());
    }
}

#[test]
fn deleted_index_is_rebuilt() {
    let t = two_sources();
    let r = &t.r;
    let rich = r.scratch("rich");
    gen_rich_tree(
        &rich,
        &RichTree {
            big: 2 * MIB,
            ..RichTree::default()
        },
    );
    r.backup_dir(&rich, "rich");
    r.backup(&[
        "--command",
        "printf dump-bytes",
        "--stdin-name",
        "d",
        "--source",
        "dump",
    ]);
    let snaps_before = r.snapshots();
    assert_eq!(snaps_before.len(), 4);

    fs::remove_dir_all(r.path.join("index")).unwrap();
    let o = r.ok(&["index", "rebuild"]);
    let n = r.packs().len();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{n} packs")),
        "rebuild should report {n} packs\n{}",
        describe(&o)
    );
    assert_eq!(r.snapshots(), snaps_before);

    for (source, dir) in [("A", &t.a_dir), ("B", &t.b_dir), ("rich", &rich)] {
        let dst = r.scratch(&format!("restore_{source}"));
        r.restore("latest", &dst, &["--source", source]);
        assert_trees_equal(dir, &dst);
    }
    assert_eq!(r.cat("latest:/d", &["--source", "dump"]), b"dump-bytes");
    r.ok(&["check", "--read-data"]);
    // And the repository is writable again, deduplicating against the rebuilt index.
    let again = r.backup_dir(&t.a_dir, "A2");
    assert!(
        u64_of(&again, "/stats/bytes_added") < 64 * 1024,
        "{again:#}"
    );
}

#[test]
fn killed_backup_leaves_repository_usable() {
    let r = Repo::new();
    // An earlier snapshot that must survive.
    let small = r.scratch("small");
    gen_small_tree(&small, 31);
    r.backup_dir(&small, "small");
    let packs_before = r.packs();

    // A large tree, killed once at least one of its packs is on disk.
    let big = r.mkdir("big");
    const FILES: usize = 20;
    const EACH: usize = 10 * MIB;
    for i in 0..FILES {
        write_random(&big.join(format!("f{i:02}.bin")), EACH, 1000 + i as u64);
    }
    let mut c = r.cmd(&["backup", s(&big), "--source", "big"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let landed = wait_until(Duration::from_secs(60), || {
        r.packs().difference(&packs_before).next().is_some()
    });
    let finished_early = child.try_wait().unwrap();
    kill_child(&mut child);
    assert!(landed, "no pack appeared within 60 s");
    assert!(
        finished_early.is_none(),
        "backup finished before it could be killed ({finished_early:?}); make the tree larger"
    );
    let killed_packs = r.packs().len() - packs_before.len();
    assert!(killed_packs >= 1);

    // No snapshot for the killed run; the earlier one still lists and restores.
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    assert_eq!(str_of(&snaps[0], "/source"), "small");
    let dst = r.scratch("small_restored");
    r.restore("latest", &dst, &["--source", "small"]);
    assert_trees_equal(&small, &dst);

    // The next run succeeds and reuses what the killed run stored.
    let snap = r.backup_dir(&big, "big");
    let total = u64_of(&snap, "/stats/total_bytes");
    assert_eq!(total, (FILES * EACH) as u64);
    let added = u64_of(&snap, "/stats/bytes_added");
    let stored = u64_of(&snap, "/stats/bytes_stored");
    assert!(
        added < total && stored < total,
        "packs of the killed run were not reused: added {added}, stored {stored} of {total} \
         ({killed_packs} pack(s) had landed)"
    );
    r.ok(&["check", "--read-data"]);
    let dst = r.scratch("big_restored");
    r.restore("latest", &dst, &["--source", "big"]);
    assert_trees_equal(&big, &dst);
}

#[test]
fn damaged_hardlinked_file_leaves_no_name_with_wrong_content() {
    let r = Repo::new();
    let a_dir = r.mkdir("a");
    write_file(&a_dir.join("small.txt"), b"unrelated");
    r.backup_dir(&a_dir, "A");
    let before = r.packs();
    let src = r.mkdir("src");
    write_random(&src.join("h1"), FILE_SIZE, 0x41);
    fs::hard_link(src.join("h1"), src.join("h2")).unwrap();
    fs::create_dir(src.join("sub")).unwrap();
    fs::hard_link(src.join("h1"), src.join("sub/h3")).unwrap();
    write_file(&src.join("zz_after.txt"), b"after the links");
    r.backup_dir(&src, "L");
    let pack = r.new_data_pack(&before);
    let mut image = fs::read(&pack).unwrap();
    let mid = image.len() / 2;
    image[mid] ^= 0x01;
    fs::write(&pack, &image).unwrap();

    let truth = fs::read(src.join("h1")).unwrap();
    let dst = r.scratch("dst");
    let o = r.wb(&["restore", "latest", "--source", "L", "--target", s(&dst)]);
    assert_code(&o, exit::DAMAGED, "restore of damaged hardlinked file");
    for name in ["h1", "h2", "sub/h3"] {
        let p = dst.join(name);
        if p.exists() {
            assert!(
                fs::read(&p).unwrap() == truth,
                "restore left {name} with wrong content (a hardlink to the damaged file)\n{}",
                describe(&o)
            );
        }
    }
    assert_eq!(
        fs::read(dst.join("zz_after.txt")).unwrap(),
        b"after the links"
    );
}

/// Where in its pack the tree of directory `path` of snapshot `snap_id` is stored.
fn tree_offset(r: &Repo, snap_id: &str, path: &[u8]) -> usize {
    use wayback::id::BlobKind;
    use wayback::repo::{Access, Repository};
    let repo = Repository::open(&r.path, PASSWORD.as_bytes(), Access::Read).unwrap();
    let snap = repo
        .snapshots()
        .unwrap()
        .into_iter()
        .find(|s| s.id.to_hex() == snap_id)
        .expect("snapshot");
    let node = wayback::tree::reader::resolve_path(&repo, &snap.root, path)
        .unwrap()
        .expect("directory");
    let tree = node.subtree.expect("a directory has a tree");
    let loc = repo
        .index
        .get(BlobKind::Tree, &tree)
        .unwrap()
        .expect("indexed");
    loc.offset as usize
}

#[test]
fn damaged_tree_blob_is_found_and_contained() {
    let r = Repo::new();
    // Source "one" stores the file content; source "two" has the same content deeper down,
    // so it writes only a pack of tree blobs (the data deduplicates).
    let one = r.mkdir("one");
    write_random(&one.join("f.bin"), 200_000, 5);
    write_file(&one.join("top.txt"), b"top");
    r.backup_dir(&one, "one");
    let before = r.packs();
    let two = r.mkdir("two");
    fs::create_dir_all(two.join("d1/d2/d3")).unwrap();
    fs::copy(one.join("f.bin"), two.join("d1/d2/d3/f.bin")).unwrap();
    write_file(&two.join("top.txt"), b"top");
    let snap_two = r.backup_dir(&two, "two");
    assert!(
        u64_of(&snap_two, "/stats/bytes_added") < 10_000,
        "{snap_two:#}"
    );
    let new: Vec<_> = r.packs().difference(&before).cloned().collect();
    assert_eq!(new.len(), 1);
    // Damage the tree of d1/d2/d3 itself: where it sits in the pack is the index's to say
    // (sealing runs on several threads, so the order of trees in a pack is not fixed).
    let offset = tree_offset(&r, str_of(&snap_two, "/id"), b"d1/d2/d3");
    let mut image = fs::read(&new[0]).unwrap();
    image[offset] ^= 0x80;
    fs::write(&new[0], &image).unwrap();

    let o = r.code(&["check"], exit::DAMAGED);
    let out = all_output(&o);
    assert!(
        out.contains(str_of(&snap_two, "/short_id")),
        "check must name the snapshot\n{out}"
    );
    let o = r.code(&["check", "--read-data"], exit::DAMAGED);
    assert!(
        all_output(&o).contains(&pack_id(&new[0])),
        "{}",
        describe(&o)
    );
    // Reading the damaged part fails with 12; the intact part and the other source work.
    r.code(&["ls", "latest", "--source", "two", "-R"], exit::DAMAGED);
    r.code(
        &["cat", "latest:/d1/d2/d3/f.bin", "--source", "two"],
        exit::DAMAGED,
    );
    assert_eq!(r.cat("latest:/top.txt", &["--source", "two"]), b"top");
    let dst = r.scratch("dst_two");
    let o = r.wb(&["restore", "latest", "--source", "two", "--target", s(&dst)]);
    assert_code(&o, exit::DAMAGED, "restore through a damaged tree");
    // The damaged directory is reported, and everything intact beside it is restored.
    assert_stderr_contains(&o, "d1/d2/d3");
    assert_eq!(fs::read(dst.join("top.txt")).unwrap(), b"top");
    assert!(dst.join("d1/d2").is_dir());
    assert!(!dst.join("d1/d2/d3/f.bin").exists());
    let dst = r.scratch("dst_one");
    r.restore("latest", &dst, &["--source", "one"]);
    assert_trees_equal(&one, &dst);
}

#[test]
fn damaged_snapshot_manifest_is_reported_by_check() {
    let r = Repo::new();
    let src = r.scratch("src");
    gen_small_tree(&src, 1);
    let keep = r.backup_dir(&src, "keep");
    let lost = r.backup_dir(&src, "lost");
    let manifest = r.path.join("snapshots").join(str_of(&lost, "/id"));
    let mut raw = fs::read(&manifest).unwrap();
    let n = raw.len();
    raw[n / 2] ^= 0x01;
    fs::write(&manifest, &raw).unwrap();
    // The intact snapshot still lists and restores.
    let listed = r.snapshots();
    assert!(listed.iter().any(|s| s["id"] == keep["id"]));
    let dst = r.scratch("dst");
    r.restore("latest", &dst, &["--source", "keep"]);
    assert_trees_equal(&src, &dst);
    // check must not say all is well.
    for args in [&["check"][..], &["check", "--read-data"][..]] {
        let o = r.code(args, exit::DAMAGED);
        assert!(
            all_output(&o).contains(&str_of(&lost, "/id")[..8]),
            "check must name the damaged snapshot\n{}",
            describe(&o)
        );
    }
}
