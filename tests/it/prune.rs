//! `wayback prune`: space really comes back, nothing live is ever deleted, and it is safe beside
//! the writers that take no lock (`wal-push`), beside an open mount, and when killed anywhere.
//! A snapshot is forgotten here by deleting its manifest, which is exactly forget's commit point.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::mount::Mounted;

/// Backs up `dir` as `source` and returns the snapshot id.
fn snap(r: &Repo, dir: &Path, source: &str) -> String {
    str_of(&r.backup_dir(dir, source), "/id").to_string()
}

fn forget(r: &Repo, id: &str) {
    fs::remove_file(r.path.join("snapshots").join(id)).unwrap();
}

fn prune_json(r: &Repo, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["prune", "--json"];
    a.extend_from_slice(extra);
    r.json(&a)
}

fn assert_restores(r: &Repo, id: &str, src: &Path) {
    let out = r.scratch(&format!("restore-{}-{}", &id[..8], rand_suffix()));
    r.restore(&id[..8], &out, &[]);
    assert_diff_r_clean(src, &out);
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Three sources of distinct random data sharing one file; returns (dirs, ids).
fn history(r: &Repo) -> (Vec<PathBuf>, Vec<String>) {
    let shared = random_bytes(2 * MIB, 99);
    let mut dirs = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let d = r.mkdir(&format!("src{i}"));
        write_file(&d.join("shared.bin"), &shared);
        write_random(&d.join("unique.bin"), 6 * MIB, 10 + i);
        write_random(&d.join("small.txt"), 3000, 20 + i);
        ids.push(snap(r, &d, &format!("s{i}")));
        dirs.push(d);
    }
    (dirs, ids)
}

#[test]
fn prune_frees_what_a_forgotten_snapshot_alone_used() {
    let r = Repo::new();
    let (dirs, ids) = history(&r);
    forget(&r, &ids[1]);
    let before = r.stored_bytes();
    // A dry run changes nothing.
    let dry = prune_json(&r, &["--grace", "0", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(r.stored_bytes(), before, "a dry run changed the repository");
    let rep = prune_json(&r, &["--grace", "0"]);
    let after = r.stored_bytes();
    let freed = before - after;
    // What only snapshot 1 used: its 6 MiB of random data (+ a small file, its trees).
    let unique = 6 * MIB as u64;
    assert!(
        (freed as f64) > unique as f64 * 0.95 && (freed as f64) < unique as f64 * 1.05,
        "freed {freed} bytes, expected ~{unique}: {rep:#}"
    );
    assert!(u64_of(&rep, "/bytes_after") < u64_of(&rep, "/bytes_before"));
    for i in [0, 2] {
        assert_restores(&r, &ids[i], &dirs[i]);
    }
    r.ok(&["check", "--read-data"]);
    // Nothing left to do: a second prune changes nothing.
    let again = prune_json(&r, &["--grace", "0"]);
    assert_eq!(u64_of(&again, "/packs_deleted"), 0, "{again:#}");
    assert_eq!(u64_of(&again, "/packs_repacked"), 0, "{again:#}");
}

#[test]
fn unused_packs_wait_out_the_grace_period_and_are_kept_when_needed_again() {
    let r = Repo::new();
    let d = r.mkdir("src");
    write_random(&d.join("data.bin"), 4 * MIB, 5);
    let a = snap(&r, &d, "s");
    let packs = r.packs();
    forget(&r, &a);
    // First prune: marks, deletes nothing (the default grace is 24 h).
    let p1 = prune_json(&r, &[]);
    assert!(u64_of(&p1, "/packs_marked") >= 1, "{p1:#}");
    assert_eq!(u64_of(&p1, "/packs_deleted"), 0, "{p1:#}");
    assert_eq!(
        r.packs(),
        packs,
        "a marked pack was deleted before its grace period"
    );
    let p2 = prune_json(&r, &[]);
    assert_eq!(u64_of(&p2, "/packs_deleted"), 0, "{p2:#}");
    assert!(u64_of(&p2, "/packs_waiting") >= 1, "{p2:#}");
    // A new backup of the same data deduplicates against the marked pack: it is needed again.
    let b = snap(&r, &d, "s");
    let p3 = prune_json(&r, &["--grace", "1s"]);
    assert!(u64_of(&p3, "/packs_unmarked") >= 1, "{p3:#}");
    assert_eq!(u64_of(&p3, "/packs_deleted"), 0, "{p3:#}");
    assert_restores(&r, &b, &d);
    // Forgotten again: marked, then deleted once the (short) grace has passed.
    forget(&r, &b);
    let p4 = prune_json(&r, &["--grace", "1s"]);
    assert!(u64_of(&p4, "/packs_marked") >= 1, "{p4:#}");
    std::thread::sleep(Duration::from_millis(1200));
    let p5 = prune_json(&r, &["--grace", "1s"]);
    assert!(u64_of(&p5, "/packs_deleted") >= 1, "{p5:#}");
    assert!(r.packs().is_empty(), "left: {:?}", r.packs());
    r.ok(&["check", "--read-data"]);
}

/// Writes `n` distinct random WAL segments under `dir`; returns their paths.
fn segments(dir: &Path, first: u32, n: u32) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    (first..first + n)
        .map(|i| {
            let p = dir.join(format!("0000000100000000{i:08X}"));
            let mut b = random_bytes(2 * MIB + 4096 * i as usize, 1000 + i as u64);
            // No WAL long page header: random bytes would name random database systems.
            b[..32].fill(0);
            write_file(&p, &b);
            p
        })
        .collect()
}

#[test]
fn wal_pushed_while_prune_runs_is_never_lost() {
    let r = Repo::new();
    let (_, ids) = history(&r);
    let segs = segments(&r.scratch("wal-src"), 1, 40);
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let pusher = sc.spawn(|| {
            let mut acked = Vec::new();
            for p in &segs {
                let o = r.wb(&["wal-push", "--cluster", "main", s(p)]);
                if o.status.success() {
                    acked.push(p.clone());
                } else {
                    eprintln!("push failed: {}", describe(&o));
                }
            }
            done.store(true, Ordering::SeqCst);
            acked
        });
        // Forget snapshots and prune with a short grace over and over while pushes run, so
        // in-flight pushes' packs (written before their records) are seen unused, marked, and
        // must not be deleted.
        let mut round = 0;
        while !done.load(Ordering::SeqCst) {
            if round < ids.len() {
                let _ = fs::remove_file(r.path.join("snapshots").join(&ids[round]));
            }
            let o = r.wb(&["prune", "--grace", "2s", "--max-unused", "0%"]);
            assert_code(&o, exit::OK, "prune beside wal-push");
            round += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        let acked = pusher.join().unwrap();
        assert_eq!(acked.len(), segs.len(), "every push was acknowledged");
        let o = r.wb(&["prune", "--grace", "2s"]);
        assert_code(&o, exit::OK, "final prune");
        for p in &acked {
            let name = p.file_name().unwrap().to_str().unwrap();
            let out = r.scratch(&format!("fetched-{name}"));
            r.ok(&["wal-fetch", "--cluster", "main", name, s(&out)]);
            assert!(
                fs::read(&out).unwrap() == fs::read(p).unwrap(),
                "{name} differs"
            );
        }
    });
    r.ok(&["check", "--read-data"]);
}

#[test]
fn a_mount_open_during_prune_keeps_serving_kept_snapshots() {
    let r = Repo::new();
    let (dirs, ids) = history(&r);
    let m = Mounted::new(&r, &[]);
    forget(&r, &ids[1]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) || reads < 3 {
                for (i, d) in [(0, &dirs[0]), (2, &dirs[2])] {
                    for f in ["shared.bin", "unique.bin", "small.txt"] {
                        let got = fs::read(m.p(&format!("latest/s{i}/{f}")))
                            .unwrap_or_else(|e| panic!("read of s{i}/{f} failed: {e}"));
                        assert!(got == fs::read(d.join(f)).unwrap(), "s{i}/{f} differs");
                        reads += 1;
                    }
                }
            }
            reads
        });
        // Repack everything with any unused byte and delete at once: the worst case for a
        // reader whose index still names the old packs.
        let rep = prune_json(&r, &["--grace", "0", "--max-unused", "0%"]);
        assert!(u64_of(&rep, "/packs_deleted") >= 1, "{rep:#}");
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let reads = reader.join().unwrap();
        assert!(reads >= 3);
    });
    drop(m);
}

#[test]
fn prune_killed_anywhere_leaves_a_repository_that_checks_restores_and_prunes() {
    let base = Repo::new();
    let (dirs, ids) = history(&base);
    forget(&base, &ids[1]);
    // Kill delays from "before anything" to "nearly done", measured on one full run.
    let probe = base.scratch("probe");
    copy_repo(&base.path, &probe);
    let t = Instant::now();
    let o = run(base.cmd(&[
        "--repo",
        s(&probe),
        "prune",
        "--grace",
        "0",
        "--max-unused",
        "0%",
    ]));
    assert_code(&o, exit::OK, "probe prune");
    let full = t.elapsed();
    let mut delays: Vec<Duration> = (0..12).map(|i| full * i / 12).collect();
    delays.push(Duration::from_millis(1));
    for (k, delay) in delays.iter().enumerate() {
        let repo = base.scratch(&format!("kill-{k}"));
        copy_repo(&base.path, &repo);
        let mut child = base
            .cmd(&[
                "--repo",
                s(&repo),
                "prune",
                "--grace",
                "0",
                "--max-unused",
                "0%",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(*delay);
        let _ = child.kill();
        let _ = child.wait();
        let ctx = format!("killed after {delay:?}");
        let o = run(base.cmd(&["--repo", s(&repo), "check", "--read-data"]));
        assert_code(&o, exit::OK, &format!("check, {ctx}"));
        for i in [0, 2] {
            let out = base.scratch(&format!("kill-{k}-restore-{i}"));
            let o = run(base.cmd(&[
                "--repo",
                s(&repo),
                "restore",
                &ids[i][..8],
                "--target",
                s(&out),
            ]));
            assert_code(&o, exit::OK, &format!("restore, {ctx}"));
            assert_diff_r_clean(&dirs[i], &out);
        }
        let o = run(base.cmd(&["--repo", s(&repo), "prune", "--grace", "0", "--json"]));
        assert_code(&o, exit::OK, &format!("second prune, {ctx}"));
        let o = run(base.cmd(&["--repo", s(&repo), "check", "--read-data"]));
        assert_code(
            &o,
            exit::OK,
            &format!("check after the second prune, {ctx}"),
        );
        fs::remove_dir_all(&repo).unwrap();
    }
}

fn copy_repo(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .args(["-a"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn stats_unique_bytes_are_what_forget_and_prune_free() {
    let r = Repo::new();
    let (_, ids) = history(&r);
    let seg = segments(&r.scratch("wal-src"), 1, 1).remove(0);
    r.ok(&["wal-push", "--cluster", "main", s(&seg)]);
    let st = r.json(&["stats", "--json"]);
    assert_eq!(u64_of(&st, "/snapshots"), 3);
    let per = st["per_snapshot"].as_array().unwrap();
    let one = per
        .iter()
        .find(|p| ids[1].starts_with(str_of(p, "/id")))
        .unwrap();
    let unique = u64_of(one, "/unique_bytes");
    assert!(unique > 6 * MIB as u64, "{st:#}");
    assert!(
        st["dedup_ratio"].as_f64().unwrap() > 1.2,
        "shared.bin is stored once: {st:#}"
    );
    assert_eq!(u64_of(&st, "/wal/0/files"), 1);
    assert_eq!(
        u64_of(&st, "/wal/0/logical_bytes"),
        fs::metadata(&seg).unwrap().len()
    );
    assert!(u64_of(&st, "/fs_free_bytes") > 0);
    let only = r.json(&["stats", "--json", "--source", "s2"]);
    assert_eq!(only["per_snapshot"].as_array().unwrap().len(), 1);
    forget(&r, &ids[1]);
    let before = r.stored_bytes();
    prune_json(&r, &["--grace", "0"]);
    let freed = before - r.stored_bytes();
    let diff = (freed as f64 - unique as f64).abs() / unique as f64;
    assert!(
        diff < 0.05,
        "stats said {unique} unique bytes, prune freed {freed}"
    );
}

#[test]
fn forget_with_prune_frees_the_space_in_one_command() {
    let r = Repo::new();
    let d = r.mkdir("src");
    write_random(&d.join("a.bin"), 3 * MIB, 1);
    snap(&r, &d, "s");
    write_random(&d.join("a.bin"), 3 * MIB, 2);
    let kept = snap(&r, &d, "s");
    let before = r.stored_bytes();
    let v = r.json(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0",
        "--json",
    ]);
    assert!(u64_of(&v, "/prune/packs_deleted") >= 1, "{v:#}");
    assert!(before - r.stored_bytes() > 3 * MIB as u64 * 95 / 100);
    assert_restores(&r, &kept, &d);
    // With the default grace, forget --prune only marks.
    write_random(&d.join("a.bin"), 3 * MIB, 3);
    snap(&r, &d, "s");
    let v = r.json(&["forget", "--keep-last", "1", "--prune", "--json"]);
    assert_eq!(u64_of(&v, "/prune/packs_deleted"), 0, "{v:#}");
    assert!(u64_of(&v, "/prune/packs_marked") >= 1, "{v:#}");
}

#[test]
fn repacking_keeps_trees_and_data_in_packs_of_their_own() {
    use wayback::id::BlobKind;
    use wayback::repo::{Access, Repository};
    let r = Repo::new();
    let src = r.mkdir("src");
    write_random(&src.join("keep/k.bin"), 400_000, 1);
    write_random(&src.join("gone/g.bin"), 400_000, 2);
    let first = snap(&r, &src, "s");
    fs::remove_dir_all(src.join("gone")).unwrap();
    snap(&r, &src, "s");
    // The first snapshot's data pack (k live, g dead) and tree pack (keep's tree live, the
    // root and gone's tree dead) are both partly used: prune repacks them together.
    forget(&r, &first);
    let rep = prune_json(&r, &["--grace", "0", "--max-unused", "0%"]);
    assert!(u64_of(&rep, "/packs_repacked") >= 2, "{rep:#}");
    let repo = Repository::open(&r.path, PASSWORD.as_bytes(), Access::Read).unwrap();
    let mut kinds: std::collections::HashMap<_, std::collections::BTreeSet<u8>> =
        Default::default();
    for (kind, _, loc) in repo.index.blobs().unwrap() {
        kinds
            .entry(loc.pack)
            .or_default()
            .insert(u8::from(kind == BlobKind::Tree));
    }
    assert!(
        kinds.values().all(|k| k.len() == 1),
        "a mixed pack: {kinds:?}"
    );
    drop(repo);
    r.ok(&["check", "--read-data"]);
    let out = r.scratch("out");
    r.restore("latest", &out, &["--source", "s"]);
    assert_trees_equal(&src, &out);
}
