//! `wayback forget` and `backup --time` through the CLI: snapshots at chosen times, a GFS
//! policy that removes manifests while kept snapshots restore byte-identical and `check
//! --read-data` passes, dry runs, JSON, named forget, the writer lock, and WAL retention with
//! crafted segments and base-backup snapshots (tar streams carrying a `backup_label`).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    assert_code, assert_stderr_contains, exit, kill_child, random_bytes, s, str_of, wait_until,
    write_file, Repo,
};
use crate::wal::segment;

/// Backs up `dir` as `source` at time `t`, returning the snapshot JSON.
fn backup_at(r: &Repo, dir: &Path, source: &str, t: &str) -> Value {
    r.backup(&[s(dir), "--source", source, "--time", t])
}

fn manifests(r: &Repo) -> BTreeSet<String> {
    fs::read_dir(r.path.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn wal_files(r: &Repo, cluster: &str) -> BTreeSet<String> {
    fs::read_dir(r.path.join("wal").join(cluster))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.')) // `.system`: the cluster's identity
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn backup_time_sets_the_snapshot_time_even_before_the_newest() {
    let r = Repo::new();
    let src = r.mkdir("src");
    write_file(&src.join("f"), b"one");
    let a = backup_at(&r, &src, "s", "2026-01-02T03:04:05Z");
    assert_eq!(str_of(&a, "/time_name"), "2026-01-02T03:04:05Z");
    // Earlier than the newest, in another accepted syntax (UTC, offset).
    write_file(&src.join("f"), b"two");
    let b = backup_at(&r, &src, "s", "2025-06-01T1400+02:00");
    assert_eq!(str_of(&b, "/time_name"), "2025-06-01T12:00:00Z");
    let times: Vec<String> = r
        .snapshots()
        .iter()
        .map(|v| str_of(v, "/time_name").to_string())
        .collect();
    // Exactly the two re-timed snapshots: the ones written at "now" were replaced.
    assert_eq!(times, vec!["2025-06-01T12:00:00Z", "2026-01-02T03:04:05Z"]);
    assert_eq!(manifests(&r).len(), 2);
    // The time selects it, and it holds what was backed up then.
    assert_eq!(r.cat("s@2025-06-01T12:30:/f", &[]), b"two");
    assert_eq!(r.cat("s@2026-01-02T03:04:05Z:/f", &[]), b"one");
    let o = r.wb(&["backup", s(&src), "--source", "s", "--time", "last tuesday"]);
    assert_code(&o, exit::USAGE, "backup --time garbage");
    assert_stderr_contains(&o, "is not a time");
}

/// Six snapshots of one source over three days, each with its own content.
const TIMES: [&str; 6] = [
    "2026-11-28T10:00:00Z",
    "2026-11-29T08:00:00Z",
    "2026-11-29T23:59:59Z",
    "2026-11-30T00:00:00Z",
    "2026-11-30T06:00:00Z",
    "2026-11-30T12:00:00Z",
];

/// Backs up `TIMES` of source `s` (file `data` = random bytes seeded by the index, `big` the
/// same everywhere); returns the ids.
fn history(r: &Repo) -> Vec<String> {
    let src = r.mkdir("src");
    write_file(&src.join("big"), &random_bytes(3 << 20, 99));
    TIMES
        .iter()
        .enumerate()
        .map(|(i, t)| {
            write_file(&src.join("data"), &random_bytes(200_000 + i, i as u64));
            str_of(&backup_at(r, &src, "s", t), "/id").to_string()
        })
        .collect()
}

#[test]
fn forget_by_policy_removes_manifests_and_kept_snapshots_restore() {
    let r = Repo::new();
    let ids = history(&r);
    let other = r.mkdir("other");
    write_file(&other.join("x"), b"other source");
    let o_id = str_of(&backup_at(&r, &other, "o", "2020-01-01T00:00:00Z"), "/id").to_string();
    // keep-last 1 + keep-daily 2 on source s only: newest (last 1, daily 11-30) and the newest
    // of 11-29 (23:59:59); the rest goes. Source o is out of scope.
    let out = r.ok(&[
        "forget",
        "--source",
        "s",
        "--keep-last",
        "1",
        "--keep-daily",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last 1, daily 2026-11-30"), "{text}");
    assert!(text.contains("daily 2026-11-29"), "{text}");
    let want: BTreeSet<String> = [ids[2].clone(), ids[5].clone(), o_id.clone()].into();
    assert_eq!(manifests(&r), want);
    for (i, id) in ids.iter().enumerate() {
        if !want.contains(id) {
            continue;
        }
        let dst = r.scratch(&format!("restore-{i}"));
        r.restore(id, &dst, &[]);
        assert_eq!(
            fs::read(dst.join("data")).unwrap(),
            random_bytes(200_000 + i, i as u64)
        );
        assert_eq!(
            fs::read(dst.join("big")).unwrap(),
            random_bytes(3 << 20, 99)
        );
    }
    assert_eq!(r.cat(&format!("{o_id}:/x"), &[]), b"other source");
    r.ok(&["check", "--read-data"]);
}

#[test]
fn dry_run_deletes_nothing_and_json_has_one_object_per_snapshot() {
    let r = Repo::new();
    let ids = history(&r);
    let before = manifests(&r);
    let v = r.json(&[
        "forget",
        "--keep-daily",
        "1",
        "--keep-within",
        "6h",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(manifests(&r), before, "a dry run deleted something");
    assert_eq!(v["dry_run"], Value::Bool(true));
    let snaps = v["snapshots"].as_array().expect("snapshots array");
    assert_eq!(snaps.len(), 6);
    let by_id = |id: &str| {
        snaps
            .iter()
            .find(|x| x["id"] == id)
            .expect("every snapshot")
    };
    for o in snaps {
        let keys: BTreeSet<&str> = o.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            ["action", "id", "reasons", "source", "time"].into(),
            "{o}"
        );
        assert_eq!(o["source"], "s");
        assert!(o["reasons"].is_array());
    }
    // 12:00 newest: daily and within 6 h; 06:00 exactly 6 h before it: kept; 00:00 not.
    assert_eq!(
        by_id(&ids[5])["reasons"],
        serde_json::json!(["daily 2026-11-30", "within 6h"])
    );
    assert_eq!(by_id(&ids[5])["time"], "2026-11-30T12:00:00Z");
    assert_eq!(by_id(&ids[4])["reasons"], serde_json::json!(["within 6h"]));
    for id in &ids[..4] {
        assert_eq!(by_id(id)["action"], "remove");
        assert_eq!(by_id(id)["reasons"], serde_json::json!([]));
    }
    assert_eq!(by_id(&ids[4])["action"], "keep");
}

#[test]
fn a_policy_that_keeps_nothing_is_refused() {
    let r = Repo::new();
    let ids = history(&r);
    let before = manifests(&r);
    for args in [
        &["forget"][..],
        &["forget", "--source", "s"][..],
        &["forget", "--keep-daily", "0", "--keep-last", "0"][..],
        &["forget", &ids[0], "--keep-last", "1"][..],
    ] {
        let o = r.wb(args);
        assert_code(&o, exit::USAGE, &args.join(" "));
    }
    assert_stderr_contains(&r.wb(&["forget"]), "keeps nothing");
    assert_eq!(manifests(&r), before);
    // An unknown source is not found, not "everything".
    let o = r.wb(&["forget", "--source", "nope", "--keep-last", "1"]);
    assert_code(&o, exit::NOT_FOUND, "unknown source");
    assert_eq!(manifests(&r), before);
}

#[test]
fn forget_named_snapshots_by_id_and_short_id() {
    let r = Repo::new();
    let ids = history(&r);
    let v = r.json(&["forget", &ids[0], &ids[3][..8], "--json"]);
    let gone: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["action"], "remove");
            assert_eq!(o["reasons"], serde_json::json!(["named"]));
            o["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(gone, vec![ids[0].as_str(), ids[3].as_str()]);
    let left = manifests(&r);
    assert_eq!(left.len(), 4);
    assert!(!left.contains(&ids[0]) && !left.contains(&ids[3]));
    let o = r.wb(&["forget", "deadbeef"]);
    assert_code(&o, exit::NOT_FOUND, "unknown id");
    r.ok(&["check"]);
}

#[test]
fn forget_refuses_while_another_writer_holds_the_lock() {
    let r = Repo::new();
    let ids = history(&r);
    let mut c = r.cmd(&["backup", "--stdin", "--source", "held", "--json"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut holder = c.spawn().unwrap();
    let pid = holder.id();
    let lock = r.path.join("locks/writer");
    let held = wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&lock).is_ok_and(|s| s.contains(&format!("pid {pid}")))
    });
    let o = r.wb(&["forget", "--keep-last", "1"]);
    let named = r.wb(&["forget", &ids[0]]);
    // A dry run only reads: it works beside the writer.
    let dry = r.wb(&["forget", "--keep-last", "1", "--dry-run"]);
    kill_child(&mut holder);
    assert!(held, "the backup never took the writer lock");
    assert_code(&o, exit::LOCKED, "forget while locked");
    assert_stderr_contains(&o, "stop the agent");
    assert_stderr_contains(&o, &format!("pid {pid}"));
    assert_code(&named, exit::LOCKED, "named forget while locked");
    assert_code(&dry, exit::OK, "dry run while locked");
    assert_eq!(manifests(&r).len(), 6);
}

// ---- WAL retention with crafted segments and base backups ----

const SYSID: u64 = 0x5EED_0000_0001;

/// Archives segments `from..=to` of timeline 1 (16 MiB each, content by segment number).
fn push_segments(r: &Repo, cluster: &str, segs: impl IntoIterator<Item = u32>) {
    let d = r.mkdir("pg_wal");
    for n in segs {
        let name = format!("00000001{:08X}{:08X}", n >> 8, n & 0xff);
        let p = segment(&d, &name, SYSID, n as u8);
        r.ok(&["wal-push", "--cluster", cluster, s(&p)]);
        fs::remove_file(p).unwrap();
    }
}

/// A base-backup snapshot of `cluster` at time `t` whose WAL runs from segment `start` to
/// `stop` (tar stream with a `backup_label` and `backup_manifest` as pg_basebackup writes).
fn base_backup(r: &Repo, cluster: &str, start: u32, stop: u32, t: &str) -> String {
    let dir = r.mkdir(&format!("bb-{start}-{stop}-{}", t.replace(':', "")));
    let lsn = |seg: u32, off: u32| format!("{:X}/{:X}", seg >> 8, ((seg & 0xff) << 24) | off);
    let start_name = format!("00000001{:08X}{:08X}", start >> 8, start & 0xff);
    write_file(
        &dir.join("backup_label"),
        format!(
            "START WAL LOCATION: {} (file {start_name})\nCHECKPOINT LOCATION: {}\n\
             BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: {t}\n\
             LABEL: test\nSTART TIMELINE: 1\n",
            lsn(start, 0x28),
            lsn(start, 0x60)
        )
        .as_bytes(),
    );
    write_file(
        &dir.join("backup_manifest"),
        format!(
            "{{\"PostgreSQL-Backup-Manifest-Version\": 1, \"Files\": [], \"WAL-Ranges\": \
             [{{\"Timeline\": 1, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\"}}]}}",
            lsn(start, 0x28),
            lsn(stop, 0x100)
        )
        .as_bytes(),
    );
    write_file(&dir.join("PG_VERSION"), b"15\n");
    let cmd = format!(
        "tar -cf - -C {} backup_label backup_manifest PG_VERSION",
        s(&dir)
    );
    let v = r.backup(&[
        "--basebackup",
        &cmd,
        "--cluster",
        cluster,
        "--source",
        "db",
        "--time",
        t,
    ]);
    assert_eq!(str_of(&v, "/db/wal_start"), start_name, "{v:#}");
    str_of(&v, "/id").to_string()
}

fn seg(n: u32) -> String {
    format!("00000001{:08X}{:08X}", n >> 8, n & 0xff)
}

#[test]
fn wal_before_the_oldest_remaining_base_backup_goes_history_stays() {
    let r = Repo::new();
    // Segments 0/FD .. 1/04 cross a log boundary (0/FF -> 1/00).
    push_segments(&r, "main", 0xFD..=0x104);
    let d = r.mkdir("extra");
    write_file(
        &d.join("00000002.history"),
        b"1\t0/FE000000\tno recovery target\n",
    );
    write_file(
        &d.join("0000000100000000000000FE.00000028.backup"),
        b"label",
    );
    r.ok(&[
        "wal-push",
        "--cluster",
        "main",
        s(&d.join("00000002.history")),
    ]);
    r.ok(&[
        "wal-push",
        "--cluster",
        "main",
        s(&d.join("0000000100000000000000FE.00000028.backup")),
    ]);
    // A cluster without base backups keeps everything.
    push_segments(&r, "lonely", 1..=3);
    let b1 = base_backup(&r, "main", 0xFE, 0xFE, "2026-11-01T00:00:00Z");
    let b2 = base_backup(&r, "main", 0x101, 0x101, "2026-11-02T00:00:00Z");
    let b3 = base_backup(&r, "main", 0x103, 0x104, "2026-11-03T00:00:00Z");
    let st = r.json(&["wal", "status", "--json"]);
    let main = st
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == "main")
        .unwrap();
    assert_eq!(main["earliest_base_backup"], b1[..8]);
    assert!(
        str_of(main, "/earliest_recoverable").starts_with("2026-11-01T00:00:0"),
        "{main}"
    );
    assert!(main["latest_recoverable"].is_string(), "{main}");

    let before = wal_files(&r, "main");
    let dry = r.json(&[
        "forget",
        "--source",
        "db",
        "--keep-last",
        "2",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(wal_files(&r, "main"), before);
    let plan = &dry["wal"][0];
    assert_eq!(plan["cluster"], "main");
    assert_eq!(plan["keep_from"], seg(0x101));
    assert_eq!(plan["base_backup"], b2[..8]);
    let want_removed = vec![
        seg(0xFD),
        seg(0xFE),
        "0000000100000000000000FE.00000028.backup".to_string(),
        seg(0xFF),
        seg(0x100),
    ];
    assert_eq!(plan["remove"], serde_json::json!(want_removed));

    r.ok(&[
        "forget",
        "--source",
        "db",
        "--keep-last",
        "2",
        "--wal",
        "lonely",
    ]);
    let after = wal_files(&r, "main");
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|f| !want_removed.contains(f))
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert!(after.contains("00000002.history"));
    assert_eq!(wal_files(&r, "lonely").len(), 3);
    let left = manifests(&r);
    assert!(!left.contains(&b1) && left.contains(&b2) && left.contains(&b3));
    // Kept WAL still fetches byte-identical; removed WAL is absent (exit 1).
    let out = r.scratch("fetched");
    r.ok(&["wal-fetch", "--cluster", "main", &seg(0x101), s(&out)]);
    assert_eq!(
        fs::read(&out).unwrap(),
        fs::read(segment(&r.mkdir("cmp"), &seg(0x101), SYSID, 0x01)).unwrap()
    );
    let o = r.wb(&["wal-fetch", "--cluster", "main", &seg(0x100), s(&out)]);
    assert_code(&o, 1, "fetch of a removed segment");
    // The PITR window now starts at the oldest remaining base backup.
    let st = r.json(&["wal", "status", "--json"]);
    let main = st
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == "main")
        .unwrap();
    assert_eq!(main["earliest_base_backup"], b2[..8]);
    assert!(main["gaps"].as_array().unwrap().is_empty(), "{main}");
    let text = String::from_utf8_lossy(&r.ok(&["wal", "status"]).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "PITR window {}",
            str_of(main, "/earliest_recoverable")
        )) && text.contains(&format!("(from base backup {})", &b2[..8])),
        "{text}"
    );
    r.ok(&["check", "--read-data"]);
}

#[test]
fn forget_refuses_to_keep_a_base_backup_without_a_wal_chain() {
    let r = Repo::new();
    // 04 is missing: the base backup at 02 has no chain to the one at 06.
    push_segments(&r, "main", [1, 2, 3, 5, 6, 7]);
    let _b1 = base_backup(&r, "main", 1, 1, "2026-11-01T00:00:00Z");
    let b2 = base_backup(&r, "main", 2, 2, "2026-11-02T00:00:00Z");
    let b3 = base_backup(&r, "main", 6, 7, "2026-11-03T00:00:00Z");
    let snaps = manifests(&r);
    let wal = wal_files(&r, "main");
    let o = r.wb(&["forget", "--source", "db", "--keep-last", "2"]);
    assert_code(&o, exit::ERROR, "forget that would keep a broken chain");
    assert_stderr_contains(&o, "segment 000000010000000000000004 is not archived");
    assert_stderr_contains(&o, &format!("base backup {}", &b2[..8]));
    assert_stderr_contains(&o, "nothing was deleted");
    assert_eq!(manifests(&r), snaps);
    assert_eq!(wal_files(&r, "main"), wal);
    // Named forget of the oldest alone is refused the same way.
    let o = r.wb(&["forget", &_b1]);
    assert_code(&o, exit::ERROR, "named forget keeping a broken chain");
    assert_eq!(manifests(&r), snaps);
    // Keeping only the base backup after the gap is fine: 01, 02, 03, 05 go.
    r.ok(&["forget", "--source", "db", "--keep-last", "1"]);
    assert_eq!(manifests(&r), [b3.clone()].into());
    assert_eq!(wal_files(&r, "main"), [seg(6), seg(7)].into());
}

// ---- WAL retention with a real PostgreSQL 15 ----

#[test]
fn postgres_forget_oldest_base_backup_then_pitr_from_the_next_and_refuse_a_gap() {
    use crate::pitr::{archive_current_segment, archived, base_backup, now_utc, start_recovered};
    let r = Repo::new();
    // Base backup 1, then the states at T (100 rows) and T2 (250 rows, `keep` dropped).
    let a = archived(&r, 1);
    let b1 = base_backup_id(&r, 0);
    // Base backup 2, then 1000 more rows at T3, then base backup 3.
    let b2 = base_backup(&r, &a.pg, &a.pwfile);
    a.pg.sql("app", "INSERT INTO t SELECT generate_series(251, 1250)");
    std::thread::sleep(Duration::from_millis(1100));
    let t3 = now_utc(&a.pg);
    std::thread::sleep(Duration::from_millis(1100));
    a.pg.sql("app", "INSERT INTO t SELECT generate_series(1251, 1300)");
    archive_current_segment(&r, &a.pg);
    archive_current_segment(&r, &a.pg);
    let b3 = base_backup(&r, &a.pg, &a.pwfile);
    archive_current_segment(&r, &a.pg);
    let b2_start = str_of(&b2, "/db/wal_start").to_string();
    let b3_start = str_of(&b3, "/db/wal_start").to_string();

    let before = wal_files(&r, "main");
    let v = r.json(&["forget", "--source", "pgdata", "--keep-last", "2", "--json"]);
    let removed: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "remove")
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, vec![b1.as_str()]);
    assert_eq!(v["wal"][0]["keep_from"], b2_start.as_str(), "{v:#}");
    let after = wal_files(&r, "main");
    let segments = |set: &BTreeSet<String>| -> Vec<String> {
        set.iter().filter(|n| n.len() == 24).cloned().collect()
    };
    assert!(
        segments(&before).iter().any(|n| *n < b2_start),
        "nothing older than the second base backup was archived: {before:?}"
    );
    assert!(segments(&after).iter().all(|n| *n >= b2_start), "{after:?}");
    assert!(after.iter().any(|n| n.ends_with(".backup")), "{after:?}");
    let st = r.json(&["wal", "status", "--json"]);
    assert_eq!(
        st[0]["earliest_base_backup"],
        str_of(&b2, "/short_id"),
        "{st:#}"
    );

    // PITR to T3 (after the oldest remaining base backup) still works.
    let data = r.scratch("restore-t3");
    r.ok(&[
        "--password-file",
        s(&a.pwfile),
        "pitr",
        "--source",
        "pgdata",
        "--to",
        &t3,
        "--target",
        s(&data),
    ]);
    // t has 1250 rows; `keep` was dropped before T3 (its count query fails: empty).
    assert_eq!(
        start_recovered(&data, &r.scratch("sock-t3")),
        "1250||100000"
    );

    // A lost segment between base backups 2 and 3: keeping both is refused, nothing deleted.
    let lost = segments(&after)
        .into_iter()
        .find(|n| *n > b2_start && *n < b3_start)
        .expect("a segment between the base backups");
    fs::remove_file(r.path.join("wal/main").join(&lost)).unwrap();
    let snaps = manifests(&r);
    let wal = wal_files(&r, "main");
    let o = r.wb(&["forget", "--source", "pgdata", "--keep-last", "2"]);
    assert_code(
        &o,
        exit::ERROR,
        "forget keeping a base backup without its WAL chain",
    );
    assert_stderr_contains(&o, &format!("segment {lost} is not archived"));
    assert_eq!(manifests(&r), snaps);
    assert_eq!(wal_files(&r, "main"), wal);
    drop(a);
}

/// Id of the `n`th (oldest first) snapshot of source `pgdata`.
fn base_backup_id(r: &Repo, n: usize) -> String {
    let all: Vec<Value> = r
        .snapshots()
        .into_iter()
        .filter(|v| v["source"] == "pgdata")
        .collect();
    str_of(&all[n], "/id").to_string()
}

#[test]
fn base_backups_without_an_archive_forget_normally_and_an_unknown_wal_cluster_is_not_found() {
    let r = Repo::new();
    // Base backups of a cluster that never archived here: no chain to check, nothing to keep.
    let _old = base_backup(&r, "nowal", 1, 1, "2026-11-01T00:00:00Z");
    let new = base_backup(&r, "nowal", 3, 3, "2026-11-02T00:00:00Z");
    let o = r.code(&["forget", "--source", "db", "--keep-last", "1"], exit::OK);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("WAL nowal"),
        "{o:?}"
    );
    assert_eq!(manifests(&r), [new].into());
    let o = r.wb(&["forget", "--wal", "nosuch"]);
    assert_code(&o, exit::NOT_FOUND, "--wal of a cluster without an archive");
    // `--wal` alone runs retention against the snapshots as they are.
    push_segments(&r, "main", 1..=4);
    let _b = base_backup(&r, "main", 3, 3, "2026-11-03T00:00:00Z");
    let v = r.json(&["forget", "--wal", "main", "--json"]);
    assert_eq!(v["snapshots"], serde_json::json!([]));
    assert_eq!(v["wal"][0]["remove"], serde_json::json!([seg(1), seg(2)]));
    assert_eq!(wal_files(&r, "main"), [seg(3), seg(4)].into());
}

/// The `wal-gap` problems of `check --json` (exit 12 when there is one, 0 when none).
fn wal_gaps(r: &Repo) -> Vec<Value> {
    let o = r.wb(&["check", "--json"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    let gaps: Vec<Value> = rep["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "wal-gap")
        .cloned()
        .collect();
    assert_eq!(
        rep["problems"].as_array().unwrap().len(),
        gaps.len(),
        "{rep:#}"
    );
    let want = if gaps.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    };
    assert_code(&o, want, "check");
    gaps
}

/// `check` reports a segment missing inside a base backup's PITR window (kind `wal-gap`, the
/// cluster, the missing range, the base backups it cuts short; exit 12), not one before the
/// oldest base backup's start (what WAL retention deletes), not a timeline switch, and does
/// report a gap on the later timeline.
#[test]
fn check_reports_wal_gaps_inside_a_pitr_window_only() {
    let r = Repo::new();
    // Timeline 1: 0/10 .. 0/16 without 0/13.
    push_segments(&r, "main", (0x10..=0x16).filter(|&n| n != 0x13));
    assert!(wal_gaps(&r).is_empty(), "no base backup: no PITR window");
    // A base backup after the gap: nothing replays through it.
    base_backup(&r, "main", 0x15, 0x15, "2026-11-02T00:00:00Z");
    assert!(
        wal_gaps(&r).is_empty(),
        "a gap before the oldest base backup"
    );
    // One before it: its recovery stops at the gap.
    let early = base_backup(&r, "main", 0x11, 0x11, "2026-11-01T00:00:00Z");
    let gaps = wal_gaps(&r);
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    let what = gaps[0]["what"].as_str().unwrap();
    assert!(what.contains("cluster main"), "{what}");
    assert!(what.contains("000000010000000000000013"), "{what}");
    assert!(what.contains(&early[..8]), "{what}");
    assert_eq!(
        gaps[0]["affected"][0], "WAL main/000000010000000000000013",
        "{gaps:#?}"
    );
    // A switch to timeline 2 at 0/17 (its history file, then its segments): no new gap.
    let d = r.mkdir("tl2");
    write_file(
        &d.join("00000002.history"),
        b"1\t0/17000000\tno recovery target\n",
    );
    r.ok(&[
        "wal-push",
        "--cluster",
        "main",
        s(&d.join("00000002.history")),
    ]);
    for n in [0x17u32, 0x18, 0x1B, 0x1C] {
        let name = format!("00000002{:08X}{:08X}", n >> 8, n & 0xff);
        let p = segment(&d, &name, SYSID, n as u8);
        r.ok(&["wal-push", "--cluster", "main", s(&p)]);
        fs::remove_file(p).unwrap();
    }
    // ... but 0/19..0/1A of timeline 2 are missing: a second gap, named as a range.
    let gaps = wal_gaps(&r);
    assert_eq!(gaps.len(), 2, "{gaps:#?}");
    assert_eq!(
        gaps[1]["affected"][0], "WAL main/000000020000000000000019..00000002000000000000001A",
        "{gaps:#?}"
    );
    assert!(gaps[1]["what"].as_str().unwrap().contains("timeline 2"));
    // Forgetting the early base backup closes its window: the timeline 1 gap is no problem.
    r.ok(&["forget", &early]);
    assert_eq!(wal_gaps(&r).len(), 1);
}
