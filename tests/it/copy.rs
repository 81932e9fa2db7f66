//! `wayback copy`: snapshots and WAL into a second repository with another passphrase (so
//! other keys and other blob ids), incremental, resumable after SIGKILL, never replacing a
//! WAL file the destination has with other bytes.

use std::collections::BTreeMap;
use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    assert_code, assert_diff_r_clean, assert_trees_equal_opts, du, gen_rich_tree, gen_small_tree,
    parse_json, run, s, str_of, u64_of, write_random, Repo, RichTree, Rng, MIB,
};
use crate::wal::segment;

const OTHER_PASSWORD: &str = "another passphrase for the off-site copy";

/// `wayback copy --to DST EXTRA... --json` run against `src`, whatever its exit status.
fn copy_cmd(src: &Repo, dst: &Repo, extra: &[&str]) -> std::process::Command {
    let mut a = vec!["copy", "--to", s(&dst.path), "--json"];
    a.extend_from_slice(extra);
    let mut c = src.cmd(&a);
    c.env("WAYBACK_TO_PASSWORD", &dst.password);
    c
}

/// A copy that must succeed; its JSON summary.
fn copy_ok(src: &Repo, dst: &Repo, extra: &[&str]) -> Value {
    let o = run(copy_cmd(src, dst, extra));
    assert_code(&o, 0, "wayback copy");
    parse_json(&o)
}

/// Source snapshot id (hex) -> the destination's copy of it, from `snapshots --json`.
pub fn copies_of(dst: &Repo) -> BTreeMap<String, Value> {
    dst.snapshots()
        .into_iter()
        .map(|v| {
            let from = v["copied_from"]
                .as_array()
                .unwrap_or_else(|| panic!("a snapshot in the copy without copied_from: {v:#}"))
                .iter()
                .map(|b| format!("{:02x}", b.as_u64().expect("byte")))
                .collect::<String>();
            (from, v)
        })
        .collect()
}

/// Every snapshot of `src` has exactly one copy in `dst`, and each restores to the same tree
/// (content and metadata, plus `diff -r`) as the original.
pub fn assert_every_snapshot_restores_identically(src: &Repo, dst: &Repo) {
    let copies = copies_of(dst);
    let originals = src.snapshots();
    assert_eq!(copies.len(), originals.len(), "{copies:#?}");
    for (i, o) in originals.iter().enumerate() {
        let id = str_of(o, "/id");
        let c = copies
            .get(id)
            .unwrap_or_else(|| panic!("snapshot {id} not copied"));
        assert_eq!(c["source"], o["source"]);
        assert_eq!(c["time"], o["time"]);
        assert_eq!(c["kind"], o["kind"]);
        let a = src.scratch(&format!("orig-{i}"));
        let b = dst.scratch(&format!("copy-{i}"));
        src.restore(id, &a, &[]);
        dst.restore(str_of(c, "/id"), &b, &[]);
        // A stream snapshot has no metadata of its own root (the target is made at restore).
        assert_trees_equal_opts(&a, &b, !o["root_meta"].is_null());
        assert_diff_r_clean(&a, &b);
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }
}

/// The one copy destination in `status --json` of the source.
fn copy_status(src: &Repo) -> Value {
    let v = parse_json(&src.wb(&["status", "--json"]));
    let copies = v["copies"].as_array().expect("copies in status");
    assert_eq!(copies.len(), 1, "{v:#}");
    copies[0].clone()
}

pub fn check_read_data(r: &Repo) {
    let o = r.ok(&["check", "--read-data"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no errors found"),
        "{o:?}"
    );
}

pub fn wal_names(r: &Repo) -> Vec<(String, String, String)> {
    r.json(&["wal", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                str_of(v, "/name").to_string(),
                str_of(v, "/digest").to_string(),
                str_of(v, "/pushed").to_string(),
            )
        })
        .collect()
}

#[test]
fn copies_files_dumps_and_wal_then_sends_nothing_twice_and_only_new_blobs() {
    let r1 = Repo::new();
    let r2 = Repo::with_password(OTHER_PASSWORD);
    // Files (every kind of entry and metadata), twice with a change, and a dump.
    let data = r1.scratch("data");
    gen_rich_tree(
        &data,
        &RichTree {
            big: 6 * MIB,
            many: 300,
        },
    );
    r1.backup_dir(&data, "files");
    write_random(&data.join("sizes/600KiB"), 600 * 1024, 99);
    r1.backup_dir(&data, "files");
    let dump = r1.scratch("app.dump");
    write_random(&dump, 3 * MIB + 17, 5);
    r1.backup(&[
        "--command",
        &format!("cat {}", s(&dump)),
        "--stdin-name",
        "app.dump",
        "--source",
        "db",
    ]);
    // WAL: segments of one system, a history file.
    let pg_wal = r1.mkdir("pg_wal");
    let mut segs = Vec::new();
    for (i, name) in [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ]
    .iter()
    .enumerate()
    {
        let p = segment(&pg_wal, name, 77, i as u8 + 1);
        r1.ok(&["wal-push", "--cluster", "main", s(&p)]);
        segs.push(p);
    }
    let hist = pg_wal.join("00000002.history");
    fs::write(&hist, "1\t0/3000000\tno recovery target specified\n").unwrap();
    r1.ok(&["wal-push", "--cluster", "main", s(&hist)]);
    segs.push(hist);

    let first = copy_ok(&r1, &r2, &["--wal"]);
    assert_eq!(u64_of(&first, "/snapshots_copied"), 3, "{first:#}");
    assert_eq!(u64_of(&first, "/wal_copied"), 4, "{first:#}");
    assert!(u64_of(&first, "/blobs_sent") > 0);
    // The destination's key does not open with the source's passphrase: another key.
    assert_code(
        &r2.wb_pass(crate::common::PASSWORD, &["snapshots"]),
        10,
        "the copy opened with the source's passphrase",
    );
    check_read_data(&r2);
    assert_every_snapshot_restores_identically(&r1, &r2);
    // The latest copy is the data as it is now, and the dump is the dumped bytes.
    let now = r2.scratch("now");
    r2.restore("latest", &now, &["--source", "files"]);
    assert_trees_equal_opts(&data, &now, false);
    assert_eq!(
        r2.cat("latest:app.dump", &["--source", "db"]),
        fs::read(&dump).unwrap()
    );
    // WAL: the same names, digests and original push times; fetched byte-identical.
    assert_eq!(wal_names(&r1), wal_names(&r2));
    for p in &segs {
        let name = p.file_name().unwrap().to_str().unwrap();
        let out = r2.scratch(&format!("fetched-{name}"));
        r2.ok(&["wal-fetch", "--cluster", "main", name, s(&out)]);
        assert_eq!(fs::read(&out).unwrap(), fs::read(p).unwrap(), "{name}");
    }

    // The source's audit log says where its data went.
    let audit = r1.json(&["audit", "--json"]);
    let copies: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "copy")
        .collect();
    assert_eq!(copies.len(), 1, "{audit:#}");
    assert!(
        str_of(copies[0], "/what").contains(s(&r2.path)),
        "{audit:#}"
    );

    // Again: nothing new to send.
    let second = copy_ok(&r1, &r2, &["--wal"]);
    for (k, want) in [
        ("/snapshots_copied", 0),
        ("/snapshots_skipped", 3),
        ("/blobs_sent", 0),
        ("/bytes_sent", 0),
        ("/bytes_read", 0),
        ("/wal_copied", 0),
        ("/wal_present", 4),
    ] {
        assert_eq!(u64_of(&second, k), want, "{k} in {second:#}");
    }

    // One more small change: only its blobs go over.
    fs::write(data.join("one_byte"), b"y").unwrap();
    write_random(&data.join("sizes/4096"), 4096, 1234);
    r1.backup_dir(&data, "files");
    // `status` of the source says how far behind the copy is.
    let st = copy_status(&r1);
    assert_eq!(str_of(&st, "/state"), "OK", "{st:#}");
    assert_eq!(u64_of(&st, "/behind"), 1, "{st:#}");
    assert!(
        str_of(&st, "/oldest_missing").starts_with("files@"),
        "{st:#}"
    );
    let total = r2.stored_bytes();
    let third = copy_ok(&r1, &r2, &[]);
    assert_eq!(u64_of(&third, "/snapshots_copied"), 1, "{third:#}");
    let sent = u64_of(&third, "/bytes_sent");
    let read = u64_of(&third, "/bytes_read");
    assert!(
        sent > 0 && sent * 50 < total,
        "sent {sent} of {total}: {third:#}"
    );
    // The unchanged big file's chunks were not even read from the source again.
    assert!(
        read < 100 * 1024,
        "read {read} bytes for a 4 KiB change: {third:#}"
    );
    assert_eq!(u64_of(&copy_status(&r1), "/behind"), 0);
    check_read_data(&r2);
    let latest = r2.scratch("latest");
    r2.restore("latest", &latest, &["--source", "files"]);
    assert_trees_equal_opts(&data, &latest, false);
    // The copy's parent is the copy of the source's parent.
    let copies = copies_of(&r2);
    let newest = r1.snapshots().pop().unwrap();
    let c = &copies[str_of(&newest, "/id")];
    assert!(c["parent"].is_array(), "copy has no parent: {c:#}");
}

#[test]
fn a_copy_killed_at_random_points_resumes_without_partial_snapshots_or_duplicate_data() {
    let r1 = Repo::new();
    let r2 = Repo::with_password(OTHER_PASSWORD);
    let data = r1.scratch("data");
    // Eight snapshots of 4 MiB new data each: a commit point every eighth of the copy.
    for i in 0..8u64 {
        gen_small_tree(&data, i);
        write_random(&data.join(format!("big{i}.bin")), 4 * MIB, 100 + i);
        r1.backup_dir(&data, "files");
    }
    let mut rng = Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    // How long an uninterrupted copy would take, measured on a throw-away destination.
    let probe = Repo::with_password(OTHER_PASSWORD);
    let t = Instant::now();
    copy_ok(&r1, &probe, &[]);
    let full = t.elapsed();
    let mut killed_midway = 0;
    let mut rounds = Vec::new();
    let mut more = 10u64;
    // SIGKILL after a random delay, at least five times while a copy runs; a round that
    // finished before its kill gets more work (another snapshot) for the next one.
    while killed_midway < 5 || du(&r2.path.join("packs")) == 0 {
        assert!(rounds.len() < 40, "copies keep finishing first: {rounds:?}");
        // Anywhere in the first half of what a whole copy takes: some rounds die before
        // their first pack is durable, others after some snapshots are committed.
        let span = (full.as_millis() as u64 / 2).max(40);
        let delay = Duration::from_millis(20 + rng.next_u64() % span);
        let mut child = copy_cmd(&r1, &r2, &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        rounds.push((delay, finished));
        // Whatever is listed is whole: the structure check finds every tree and blob.
        let o = r2.ok(&["check"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("no errors found"),
            "{o:?}"
        );
        let _ = copies_of(&r2);
        if finished {
            write_random(&data.join(format!("more{more}.bin")), 8 * MIB, more);
            more += 1;
            r1.backup_dir(&data, "files");
        } else {
            killed_midway += 1;
        }
    }
    // The killed rounds got somewhere, and the last run builds on it.
    let kept = du(&r2.path.join("packs"));
    let last = copy_ok(&r1, &r2, &[]);
    copy_ok(&r1, &probe, &[]);
    assert!(kept > 0, "no round left a durable pack ({rounds:?})");
    assert!(
        u64_of(&last, "/bytes_sent") + kept / 2 < du(&probe.path.join("packs")),
        "the last run sent again what killed rounds had stored: {last:#}"
    );
    eprintln!("kills (delay, had finished): {rounds:?}; full copy {full:?}; last run {last}");
    check_read_data(&r2);
    assert_every_snapshot_restores_identically(&r1, &r2);
    // Packs made durable before a kill were reused, not sent again: the copy holds about as
    // much as an uninterrupted one (a killed run loses at most the pack it was writing, which
    // never reached packs/).
    let (interrupted, clean) = (du(&r2.path.join("packs")), du(&probe.path.join("packs")));
    assert!(
        interrupted <= clean + clean / 20,
        "interrupted copy stores {interrupted} bytes, an uninterrupted one {clean}"
    );
    let again = copy_ok(&r1, &r2, &[]);
    assert_eq!(u64_of(&again, "/blobs_sent"), 0, "{again:#}");
}

#[test]
fn a_wal_file_the_copy_has_with_other_bytes_is_a_conflict_and_left_untouched() {
    let r1 = Repo::new();
    let r2 = Repo::with_password(OTHER_PASSWORD);
    let d1 = r1.mkdir("pg_wal");
    let d2 = r2.mkdir("pg_wal");
    let name = "000000010000000000000001";
    let ours = segment(&d1, name, 7, 1);
    let theirs = segment(&d2, name, 7, 2);
    r1.ok(&["wal-push", "--cluster", "main", s(&ours)]);
    r2.ok(&["wal-push", "--cluster", "main", s(&theirs)]);
    let next = segment(&d1, "000000010000000000000002", 7, 3);
    r1.ok(&["wal-push", "--cluster", "main", s(&next)]);
    let data = r1.scratch("data");
    gen_small_tree(&data, 1);
    r1.backup_dir(&data, "files");
    let before = fs::read(r2.path.join("wal/main").join(name)).unwrap();

    let o = run(copy_cmd(&r1, &r2, &["--wal"]));
    assert_code(&o, 14, "copy onto a conflicting WAL file");
    let sum = parse_json(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    let (h1, h2) = (
        blake3::hash(&fs::read(&ours).unwrap()).to_hex().to_string(),
        blake3::hash(&fs::read(&theirs).unwrap())
            .to_hex()
            .to_string(),
    );
    assert!(
        err.contains(name) && err.contains(&h1) && err.contains(&h2),
        "{err}"
    );
    // Untouched: the same record bytes, and it still fetches the destination's own segment.
    assert_eq!(
        fs::read(r2.path.join("wal/main").join(name)).unwrap(),
        before
    );
    let out = r2.scratch("fetched");
    r2.ok(&["wal-fetch", "--cluster", "main", name, s(&out)]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&theirs).unwrap());
    // The rest still got its copy.
    assert_eq!(u64_of(&sum, "/wal_copied"), 1, "{sum:#}");
    assert_eq!(u64_of(&sum, "/snapshots_copied"), 1, "{sum:#}");
    let out = r2.scratch("fetched2");
    r2.ok(&[
        "wal-fetch",
        "--cluster",
        "main",
        "000000010000000000000002",
        s(&out),
    ]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&next).unwrap());
    // And it stays a conflict on every run; `status` shows the copy FAILING (exit 16).
    assert_code(
        &run(copy_cmd(&r1, &r2, &["--wal", "--cluster", "main"])),
        14,
        "second copy",
    );
    let st = copy_status(&r1);
    assert_eq!(str_of(&st, "/state"), "FAILING", "{st:#}");
    assert!(str_of(&st, "/error").contains(name), "{st:#}");
    assert_eq!(u64_of(&st, "/behind"), 0, "{st:#}");
    assert_code(&r1.wb(&["status"]), 16, "status with a failing copy");
    // A cluster the source has no archive of is not found (13), not silently nothing.
    assert_code(
        &run(copy_cmd(&r1, &r2, &["--wal", "--cluster", "nosuch"])),
        13,
        "copy of a missing cluster",
    );
}

#[test]
fn copy_refuses_its_own_repository_and_a_wrong_destination_passphrase() {
    let r1 = Repo::new();
    let data = r1.scratch("data");
    gen_small_tree(&data, 3);
    r1.backup_dir(&data, "files");
    let mut same = r1.cmd(&["copy", "--to", s(&r1.path)]);
    same.env("WAYBACK_TO_PASSWORD", crate::common::PASSWORD);
    let o = run(same);
    assert_code(&o, 1, "copy into itself");
    assert!(all(&o).contains("same repository"), "{o:?}");
    let r2 = Repo::with_password(OTHER_PASSWORD);
    let mut wrong = r1.cmd(&["copy", "--to", s(&r2.path)]);
    wrong.env("WAYBACK_TO_PASSWORD", "not it");
    assert_code(&run(wrong), 10, "wrong destination passphrase");
    // The passphrase from a file, and only the chosen source.
    r1.backup(&["--command", "echo dump", "--source", "db"]);
    let pf = r1.scratch("to-pass");
    fs::write(&pf, format!("{OTHER_PASSWORD}\n")).unwrap();
    let o = run(r1.cmd(&[
        "copy",
        "--to",
        s(&r2.path),
        "--to-password-file",
        s(&pf),
        "--source",
        "db",
        "--json",
    ]));
    assert_code(&o, 0, "copy with --to-password-file");
    let v = parse_json(&o);
    assert_eq!(u64_of(&v, "/snapshots_copied"), 1, "{v:#}");
    assert_eq!(r2.snapshots()[0]["source"], "db");
    assert_eq!(r2.snapshots().len(), 1);
}

fn all(o: &Output) -> String {
    crate::common::all_output(o)
}

#[test]
fn the_agent_copies_on_its_schedule() {
    let r1 = Repo::new();
    let r2 = Repo::with_password(OTHER_PASSWORD);
    let data = r1.scratch("data");
    gen_small_tree(&data, 8);
    let pf = r1.scratch("offsite-pass");
    fs::write(&pf, format!("{OTHER_PASSWORD}\n")).unwrap();
    let cfg = r1.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\ncopy = {{ to = \"{}\", every = \"1s\", password_file = \"{}\" }}\n\n\
             [[source]]\nname = \"files\"\ntype = \"paths\"\npaths = [\"{}\"]\nevery = \"1h\"\n",
            s(&r1.path),
            s(&r2.path),
            s(&pf),
            s(&data)
        ),
    )
    .unwrap();
    r1.ok(&["agent", "--config", s(&cfg), "--check-config"]);
    let agent = crate::common::KillOnDrop(
        r1.cmd(&["agent", "--config", s(&cfg)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The agent backs up at start, then copies within a second or two.
    let appeared = crate::common::wait_until(Duration::from_secs(20), || {
        fs::read_dir(r2.path.join("snapshots")).is_ok_and(|d| d.count() > 0)
    });
    assert!(appeared, "the scheduled copy did not arrive");
    drop(agent);
    check_read_data(&r2);
    assert_every_snapshot_restores_identically(&r1, &r2);
    // A copy into the agent's own repository is refused when the config is read.
    fs::write(
        &cfg,
        format!(
            "repo = \"{0}\"\ncopy = {{ to = \"{0}\", cron = \"0 3 * * *\" }}\n",
            s(&r1.path)
        ),
    )
    .unwrap();
    let o = r1.wb(&["agent", "--config", s(&cfg), "--check-config"]);
    assert_code(&o, 2, "copy into the agent's own repository");
    assert!(all(&o).contains("own repository"), "{o:?}");
}
