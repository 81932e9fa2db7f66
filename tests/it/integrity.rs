//! What a repository may contain that wayback did not write, or left behind when killed: a
//! manifest copied to another name, staging files of killed writers, index scratch of killed
//! readers. Each must be refused or cleaned, never trusted.

use std::fs;
use std::time::{Duration, SystemTime};

use crate::common::*;

#[test]
fn a_manifest_copied_to_another_name_is_not_a_second_snapshot() {
    let r = Repo::new();
    let src = r.mkdir("src");
    write_file(&src.join("f"), b"one");
    r.backup_dir(&src, "s");
    let snaps: Vec<_> = fs::read_dir(r.path.join("snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(snaps.len(), 1);
    let name = snaps[0].file_name().into_string().unwrap();
    let forged = format!(
        "{}{}",
        if name.starts_with('0') { '1' } else { '0' },
        &name[1..]
    );
    fs::copy(snaps[0].path(), r.path.join("snapshots").join(&forged)).unwrap();
    let listed = r.snapshots();
    assert_eq!(listed.len(), 1, "the copy became a snapshot: {listed:?}");
    let o = r.code(&["check"], exit::DAMAGED);
    assert_stderr_contains_any(&o, &forged[..8]);
}

fn assert_stderr_contains_any(o: &std::process::Output, needle: &str) {
    let all = all_output(o);
    assert!(all.contains(needle), "{needle} not named: {all}");
}

#[test]
fn staging_files_of_killed_writers_are_removed_and_live_ones_kept() {
    let r = Repo::new();
    let old = r.path.join("tmp/4242.deadbeef.oldpack");
    let fresh = r.path.join("tmp/4243.cafebabe.freshpack");
    write_file(&old, b"left by a writer killed yesterday");
    write_file(&fresh, b"a live wal-push's staging file");
    let yesterday = SystemTime::now() - Duration::from_secs(86_400);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(yesterday)
        .unwrap();
    let src = r.mkdir("src");
    write_file(&src.join("f"), b"x");
    r.backup_dir(&src, "s");
    assert!(
        !old.exists(),
        "a day-old staging file survived a writer's start"
    );
    assert!(
        fresh.exists(),
        "a fresh staging file (maybe a live push's) was removed"
    );
}

#[test]
fn index_scratch_of_killed_readers_is_removed() {
    let r = Repo::new();
    let src = r.mkdir("src");
    write_file(&src.join("f"), b"x");
    r.backup_dir(&src, "s");
    // A reader killed with SIGKILL leaves its RocksDB secondary directory in TMPDIR (the test
    // environment points TMPDIR at the fixture's directory). Its pid no longer exists.
    let dead = r.tmp().join("wayback-index-reader-4194301-Xy12ab");
    fs::create_dir_all(dead.join("sub")).unwrap();
    write_file(&dead.join("sub/LOG"), b"old");
    assert_eq!(r.cat("latest:/f", &["--source", "s"]), b"x");
    assert!(!dead.exists(), "a dead reader's scratch survived");
    let left: Vec<_> = fs::read_dir(r.tmp())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("wayback-index-reader-")
        })
        .collect();
    assert!(left.is_empty(), "a finished reader left {left:?}");
}

#[test]
fn an_old_time_whose_answer_changes_is_not_cached_for_a_day() {
    use crate::mount::Mounted;
    let r = Repo::new();
    let src = r.mkdir("src");
    write_file(&src.join("f"), b"first");
    let now = chrono::Utc::now();
    let stamp = |h: i64| {
        (now - chrono::Duration::hours(h))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    r.ok(&["backup", s(&src), "--source", "s", "--time", &stamp(3)]);
    let m = Mounted::new(&r, &[]);
    // An hour ago: long enough past that the old code cached the answer for a day.
    let at = format!("at/{}/s/f", stamp(1));
    assert_eq!(fs::read(m.p(&at)).unwrap(), b"first");
    // A backup that started two hours ago commits only now (a long backup does exactly this).
    write_file(&src.join("f"), b"second");
    r.ok(&["backup", s(&src), "--source", "s", "--time", &stamp(2)]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fs::read(m.p(&at)).unwrap(),
        b"second",
        "the mount kept the old answer"
    );
}
