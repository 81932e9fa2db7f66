//! Operations: listings into pipes that close early, `--json` on every reporting command,
//! restore drills and the agent's scheduled checks.

use std::fs;
use std::process::Command;

use crate::common::{s, Repo, BIN, PASSWORD};

/// Runs `script` in bash with this repository's environment; returns (stdout, stderr, status).
fn sh(r: &Repo, script: &str) -> (String, String, i32) {
    let o = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("WB", BIN)
        .env("WAYBACK_REPO", &r.path)
        .env("WAYBACK_PASSWORD", PASSWORD)
        .env("WAYBACK_INSECURE_FAST_KDF", "1")
        .env("WAYBACK_CACHE_DIR", r.scratch("cache"))
        .env("TMPDIR", r.tmp())
        .env("T", r.tmp())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

/// The writer's exit status (`PIPESTATUS[0]`), printed by the scripts below as `rc=N`.
fn rc_of(stderr: &str) -> i32 {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("rc="))
        .unwrap_or_else(|| panic!("no rc= line in {stderr}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn listings_into_a_pipe_that_closes_early_exit_141_quietly() {
    let r = Repo::new();
    // A tree whose listing is far bigger than a pipe's buffer (64 KiB), so the writer is
    // certain to still be writing when `head` has its line and exits.
    let src = r.mkdir("src");
    for d in 0..20 {
        let dir = src.join(format!("directory-with-a-long-name-{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..150 {
            fs::write(
                dir.join(format!("file-with-a-rather-long-name-{f:05}.txt")),
                b"x",
            )
            .unwrap();
        }
    }
    fs::write(src.join("big.bin"), vec![7u8; 4 << 20]).unwrap();
    r.backup_dir(&src, "files");
    for i in 0..3 {
        r.backup(&["--stdin", "--source", &format!("s{i}")]);
    }
    for (what, script) in [
        ("ls | head -1", "\"$WB\" ls latest --source files -R | head -1"),
        ("ls -l --json | head -1", "\"$WB\" ls latest --source files -R --json | head -1"),
        ("cat | head -c 10", "\"$WB\" cat latest:big.bin --source files | head -c 10 >/dev/null"),
        // A reader that is gone before the first line: the writer waits for it to close its
        // end (fifo handshake), so the first write fails, every time.
        (
            "snapshots | closed reader",
            "mkfifo \"$T/go\"; { read -r _ < \"$T/go\"; exec \"$WB\" snapshots; } | { exec 0<&-; echo go > \"$T/go\"; }",
        ),
        (
            "snapshots --json | closed reader",
            "rm -f \"$T/go\"; mkfifo \"$T/go\"; { read -r _ < \"$T/go\"; exec \"$WB\" snapshots --json; } | { exec 0<&-; echo go > \"$T/go\"; }",
        ),
    ] {
        let (out, err, _) = sh(&r, &format!("{script}; echo rc=${{PIPESTATUS[0]}} >&2"));
        assert_eq!(rc_of(&err), 141, "{what}: writer's exit status\n{err}");
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{what}: the writer must stop quietly: {err}"
        );
        if what.starts_with("ls") {
            assert_eq!(out.lines().count(), 1, "{what}: {out}");
        }
    }
    // The same listing into a reader that reads everything still exits 0.
    let (out, err, _) = sh(&r, "\"$WB\" snapshots | cat; echo rc=${PIPESTATUS[0]} >&2");
    assert_eq!(rc_of(&err), 0, "{err}");
    assert!(out.contains("4 snapshot(s)"), "{out}");
    let _ = s(&r.path);
}

/// Runs `args` (which end in `--json`), asserting `code`, and parses stdout as one document.
fn json_of(r: &Repo, args: &[&str], code: i32) -> serde_json::Value {
    let o = r.code(args, code);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "wayback {}: not one JSON document: {e}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

#[test]
fn every_listing_and_report_has_json() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("a.txt"), b"one\n").unwrap();
    let first = r.backup_dir(&src, "files");
    fs::write(src.join("a.txt"), b"two\n").unwrap();
    fs::write(src.join("b.txt"), b"new\n").unwrap();
    let second = r.backup_dir(&src, "files");
    let (a, b) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let wal = r.mkdir("pg_wal");
    let seg = crate::wal::segment(&wal, "000000010000000000000001", 7, 3);
    r.ok(&["wal-push", "--cluster", "main", s(&seg)]);

    let v = json_of(&r, &["snapshots", "--json"], 0);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v:#}");
    // ls --json is one object per line (streams for big trees).
    let o = r.ok(&["ls", b, "-R", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["path"] == "b.txt"), "{lines:?}");
    // diff --json too: one change per line.
    let v = crate::common::parse_ndjson(&r.code(&["diff", a, b, "--json"], 1));
    assert!(
        v.iter()
            .any(|c| c["path"] == "b.txt" && c["change"] == "added"),
        "{v:?}"
    );
    let v = crate::common::parse_ndjson(&r.ok(&["log", "--source", "files", "/a.txt", "--json"]));
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["snapshot"], b, "newest first: {v:?}");
    let v = json_of(&r, &["stats", "--json"], 0);
    assert!(v.is_object(), "{v:#}");
    let v = json_of(&r, &["check", "--json"], 0);
    assert_eq!(v["problems"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["snapshots"], 2);
    let v = json_of(&r, &["key", "list", "--json"], 0);
    assert_eq!(v[0]["current"], true, "{v:#}");
    let v = json_of(&r, &["status", "--json"], 0);
    assert_eq!(v["ok"], true, "{v:#}");
    let v = json_of(&r, &["wal", "status", "--json"], 0);
    assert_eq!(v[0]["cluster"], "main", "{v:#}");
    let v = json_of(&r, &["wal", "list", "--json"], 0);
    assert_eq!(v[0]["name"], "000000010000000000000001", "{v:#}");
    assert_eq!(v[0]["size"], 16 << 20);
    assert_eq!(
        v[0]["digest"],
        blake3::hash(&fs::read(&seg).unwrap()).to_hex().to_string()
    );
    let v = json_of(&r, &["wal", "list", "--cluster", "none", "--json"], 0);
    assert_eq!(v, serde_json::json!([]));
    let target = r.scratch("restored");
    let v = json_of(&r, &["restore", b, "--target", s(&target), "--json"], 0);
    assert_eq!(v["files"], 2, "{v:#}");
    assert_eq!(v["snapshot"], b);
    assert_eq!(v["failed"], serde_json::json!([]));
    assert_eq!(fs::read(target.join("b.txt")).unwrap(), b"new\n");
    let v = json_of(
        &r,
        &["forget", "--keep-last", "1", "--dry-run", "--json"],
        0,
    );
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2, "{v:#}");
    let v = json_of(&r, &["prune", "--dry-run", "--json"], 0);
    assert!(v["packs_before"].as_u64().unwrap() > 0, "{v:#}");
    let v = json_of(&r, &["index", "rebuild", "--json"], 0);
    assert!(v["packs"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(v["damaged"], serde_json::json!([]));
}

/// Flips bytes in the middle of the biggest pack (the one holding the big file's data).
fn damage_biggest_pack(r: &Repo) {
    let p = r
        .packs()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a pack");
    let mut b = fs::read(&p).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + 64] {
        *x ^= 0x5a;
    }
    fs::write(&p, b).unwrap();
}

/// Entries of `dir` (none when it does not exist).
fn entries(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn drill_restores_and_verifies_every_file_and_a_damaged_pack_fails_loudly() {
    let r = Repo::new();
    let src = r.mkdir("src");
    crate::common::gen_small_tree(&src, 7);
    crate::common::write_random(&src.join("big.bin"), 3 << 20, 11);
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    r.backup_dir(&src, "files");
    r.backup(&["--stdin", "--source", "dump"]);
    let nfiles = {
        let mut v = Vec::new();
        crate::common::collect_paths(&src, &mut v);
        v.into_iter()
            .filter(|p| p.is_file() && !p.is_symlink())
            .count() as u64
    };

    // Every source, into the default scratch (the repository's cache): all pass, scratch gone.
    let v = json_of(&r, &["drill", "--json"], 0);
    let reps = v.as_array().unwrap();
    assert_eq!(reps.len(), 2, "{v:#}");
    let files = reps.iter().find(|d| d["source"] == "files").unwrap();
    assert_eq!(files["ok"], true, "{files:#}");
    assert_eq!(files["files"], nfiles, "{files:#}");
    assert!(files["bytes"].as_u64().unwrap() >= 3 << 20);
    assert!(files["duration_s"].as_f64().unwrap() > 0.0);
    assert_eq!(files["problems"], serde_json::json!([]));
    assert_eq!(entries(&r.path.join("scratch")), Vec::<String>::new());

    // --scratch: made 0711 when missing, the drill's own directory is removed again.
    let parent = r.scratch("drills");
    let o = r.ok(&["drill", "--source", "files", "--scratch", s(&parent)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("OK      drill files: snapshot"), "{out}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&parent).unwrap().mode() & 0o777, 0o711);
    assert_eq!(entries(&parent), Vec::<String>::new());
    // --random picks among the complete snapshots (here one of two).
    fs::write(src.join("later.txt"), b"later").unwrap();
    let second = r.backup_dir(&src, "files");
    let v = json_of(&r, &["drill", "--random", "--source", "files", "--json"], 0);
    assert_eq!(v[0]["ok"], true, "{v:#}");
    let picked = v[0]["snapshot"].as_str().unwrap();
    assert!(
        r.snapshots()
            .iter()
            .any(|s| s["id"] == picked && s["source"] == "files"),
        "{picked}"
    );
    let v = json_of(&r, &["drill", "--source", "files", "--json"], 0);
    assert_eq!(v[0]["snapshot"], second["id"], "the newest by default");
    assert_eq!(v[0]["files"], nfiles + 1);

    // status shows the last drill per source, and is OK.
    let (st, code) = crate::monitor::status(&r);
    assert_eq!(code, 0, "{st:#}");
    let d: Vec<_> = st["drills"].as_array().unwrap().iter().collect();
    assert_eq!(d.len(), 2, "{st:#}");
    assert!(d
        .iter()
        .all(|d| d["state"] == "OK" && d["age_s"].as_f64().unwrap() < 60.0));
    let ok_time = d.iter().find(|d| d["source"] == "files").unwrap()["time"].clone();

    // Damage: the drill fails with exit 12 naming the file, and status says FAILING (exit 16)
    // while remembering when the drill last passed.
    damage_biggest_pack(&r);
    let o = r.code(
        &[
            "drill",
            "--source",
            "files",
            "--scratch",
            s(&parent),
            "--json",
        ],
        12,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["ok"], false, "{v:#}");
    assert_eq!(v[0]["damaged"], true);
    assert!(
        v[0]["problems"].to_string().contains("big.bin"),
        "the damaged file is named: {v:#}"
    );
    assert_eq!(
        entries(&parent),
        Vec::<String>::new(),
        "scratch removed after a failure too"
    );
    let (st, code) = crate::monitor::status(&r);
    assert_eq!(code, 16, "{st:#}");
    assert_eq!(st["ok"], false);
    let f = st["drills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["source"] == "files")
        .unwrap();
    assert_eq!(f["state"], "FAILING", "{st:#}");
    assert!(f["error"].as_str().unwrap().contains("big.bin"), "{f:#}");
    assert_eq!(f["last_success"], ok_time);
    let text = String::from_utf8_lossy(&r.code(&["status"], 16).stdout).into_owned();
    assert!(text.contains("FAILING  drill files"), "{text}");
    // No snapshot of the source: 13.
    r.code(&["drill", "--source", "nothing"], 13);
    // Once every snapshot of the source is forgotten, its old drill no longer counts.
    let ids: Vec<String> = r
        .snapshots()
        .iter()
        .filter(|s| s["source"] == "files")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let mut args = vec!["forget"];
    args.extend(ids.iter().map(String::as_str));
    r.ok(&args);
    let (st, code) = crate::monitor::status(&r);
    assert_eq!(code, 0, "{st:#}");
    assert!(
        st["drills"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["source"] != "files"),
        "{st:#}"
    );
}

#[test]
fn the_agent_drills_and_checks_on_schedule_and_a_failed_check_runs_the_hook() {
    use crate::common::wait_until;
    use std::time::Duration;
    let r = Repo::new();
    let src = r.mkdir("src");
    crate::common::write_random(&src.join("big.bin"), 3 << 20, 5);
    let port = crate::monitor::free_port();
    let hook = r.scratch("hook.env");
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{repo}\"\nmetrics = \"127.0.0.1:{port}\"\ncheck = {{ every = \"1s\", read_data_subset = \"1/3\" }}\non_failure = \"{{ env | grep ^WAYBACK_ | sort; echo --; }} >> {hook}\"\n\n[[source]]\nname = \"files\"\ntype = \"paths\"\npaths = [\"{src}\"]\nevery = \"1h\"\ndrill = \"1s\"\n",
            repo = s(&r.path),
            hook = s(&hook),
            src = s(&src)
        ),
    )
    .unwrap();
    let agent = crate::monitor::spawn_agent(&r, &cfg);
    // A drill and three checks (one per part) pass.
    let mut seen = std::collections::BTreeSet::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (st, _) = crate::monitor::status(&r);
            if let Some(s) = st["last_check"]["subset"].as_str() {
                seen.insert(s.to_string());
            }
            seen.len() == 3 && st["drills"][0]["state"] == "OK" && st["last_check"]["state"] == "OK"
        }),
        "parts seen {seen:?}; status {:#}",
        crate::monitor::status(&r).0
    );
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["1/3", "2/3", "3/3"],
        "the check rotates through every part of the packs"
    );
    let (st, code) = crate::monitor::status(&r);
    assert_eq!(code, 0, "{st:#}");
    assert_eq!(st["drills"][0]["source"], "files");
    assert_eq!(st["last_check"]["read_data"], true);
    let (_, body) = crate::monitor::http_get(port, "/metrics");
    assert!(
        crate::monitor::metric(
            &body,
            "wayback_restore_drill_last_success_timestamp{source=\"files\"}"
        ) > 1.7e9
    );
    assert_eq!(
        crate::monitor::metric(&body, "wayback_restore_drill_success{source=\"files\"}"),
        1.0
    );
    assert!(
        crate::monitor::metric(
            &body,
            "wayback_restore_drill_duration_seconds{source=\"files\"}"
        ) > 0.0
    );
    assert_eq!(crate::monitor::metric(&body, "wayback_check_success"), 1.0);
    assert!(crate::monitor::metric(&body, "wayback_check_last_run_timestamp") > 1.7e9);
    crate::monitor::promtool(&["check", "metrics"], Some(&body));

    // Damage: a check reading the damaged part fails, status says so, the hook runs with the
    // job and the error; the drill fails too.
    damage_biggest_pack(&r);
    assert!(
        wait_until(Duration::from_secs(60), || fs::read_to_string(&hook)
            .is_ok_and(|e| e.contains("WAYBACK_JOB=check"))),
        "the check's hook did not run"
    );
    let all = fs::read_to_string(&hook).unwrap();
    let env = all
        .split("--\n")
        .find(|b| b.contains("WAYBACK_JOB=check"))
        .unwrap();
    assert!(env.contains("WAYBACK_SOURCE=\n"), "{env}");
    assert!(
        env.lines()
            .any(|l| l.starts_with("WAYBACK_ERROR=check found") && l.contains("damaged")),
        "{env}"
    );
    assert!(!all.contains("PASSWORD"), "{all}");
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (st, code) = crate::monitor::status(&r);
            code == 16 && st["drills"][0]["state"] == "FAILING"
        }),
        "{:#}",
        crate::monitor::status(&r).0
    );
    let (_, body) = crate::monitor::http_get(port, "/metrics");
    assert_eq!(
        crate::monitor::metric(&body, "wayback_restore_drill_success{source=\"files\"}"),
        0.0
    );
    assert!(
        wait_until(Duration::from_secs(30), || fs::read_to_string(&hook)
            .is_ok_and(|e| e.contains("WAYBACK_JOB=drill"))),
        "the drill's hook did not run: {}",
        fs::read_to_string(&hook).unwrap_or_default()
    );
    drop(agent);
}

#[test]
fn a_base_backup_drill_recovers_postgresql_and_runs_its_query() {
    let r = Repo::new();
    let a = crate::pitr::archived(&r, 1);
    // After archived(): 250 rows in t, table keep dropped, WAL past both archived.
    let drill_dirs = || {
        entries(r.tmp())
            .into_iter()
            .filter(|e| e.starts_with("wayback-drill-"))
            .collect::<Vec<_>>()
    };
    let o = r.code(
        &[
            "drill",
            "--source",
            "pgdata",
            "--query",
            "SELECT count(*) FROM t",
            "--database",
            "app",
            "--expect",
            "250",
            "--json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &v[0];
    assert_eq!(d["ok"], true, "{d:#}");
    assert_eq!(d["kind"], "basebackup");
    assert_eq!(
        d["postgres"]["result"], "250",
        "recovered through all archived WAL"
    );
    assert_eq!(d["postgres"]["cluster"], "main");
    assert!(d["postgres"]["replayed_to"].is_string(), "{d:#}");
    assert!(d["recovery_s"].as_f64().unwrap() > 0.0);
    assert!(d["files"].as_u64().unwrap() > 500, "{d:#}");
    eprintln!(
        "base-backup drill: {} files, {} bytes; restore {:.2} s, verify {:.2} s, PostgreSQL recovery {:.2} s, total {:.2} s",
        d["files"], d["bytes"],
        d["restore_s"].as_f64().unwrap(),
        d["verify_s"].as_f64().unwrap(),
        d["recovery_s"].as_f64().unwrap(),
        d["duration_s"].as_f64().unwrap()
    );
    // Scratch (under $TMPDIR for a base backup) is gone, nothing is left mounted.
    assert_eq!(drill_dirs(), Vec::<String>::new());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("wayback-drill"), "{mounts}");
    let (st, code) = crate::monitor::status(&r);
    assert_eq!(code, 0, "{st:#}");
    assert_eq!(st["drills"][0]["source"], "pgdata");

    // A wrong answer is a failed drill: exit 18, FAILING in status.
    let o = r.code(
        &[
            "drill",
            "--source",
            "pgdata",
            "--query",
            "SELECT count(*) FROM t",
            "--database",
            "app",
            "--expect",
            "100",
        ],
        18,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("answered \"250\", expected \"100\""), "{out}");
    let (st, code) = crate::monitor::status(&r);
    assert_eq!(code, 16, "{st:#}");
    assert_eq!(st["drills"][0]["state"], "FAILING");
    assert_eq!(drill_dirs(), Vec::<String>::new());
    // The original server is untouched.
    assert_eq!(a.pg.sql("app", "SELECT count(*) FROM t"), "250");
}

#[test]
fn the_audit_log_records_restores_mounts_forgets_prunes_and_key_changes() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("secret-plan.txt"), b"x").unwrap();
    let first = r.backup_dir(&src, "files");
    r.backup_dir(&src, "files");
    // Listing and backing up are not audited.
    r.ok(&["snapshots"]);
    assert_eq!(json_of(&r, &["audit", "--json"], 0), serde_json::json!([]));

    let target = r.scratch("restored-here");
    r.restore(first["id"].as_str().unwrap(), &target, &[]);
    {
        let m = crate::mount::Mounted::new(&r, &[]);
        assert!(m.p("latest/files/secret-plan.txt").exists());
    }
    r.ok(&["forget", "--keep-last", "1"]);
    r.ok(&["prune", "--grace", "0"]);
    let newpw = r.scratch("newpw");
    fs::write(&newpw, "a second passphrase").unwrap();
    r.ok(&["key", "add", "--new-password-file", s(&newpw)]);

    let v = json_of(&r, &["audit", "--json"], 0);
    let ops: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["restore", "mount", "forget", "prune", "key add"],
        "{v:#}"
    );
    let restore = &v[0];
    assert!(
        restore["what"].as_str().unwrap().contains(s(&target)),
        "{restore:#}"
    );
    assert!(restore["what"]
        .as_str()
        .unwrap()
        .contains(&first["short_id"].as_str().unwrap().to_string()));
    assert_eq!(restore["user"], "root");
    assert_eq!(restore["uid"], 0);
    assert!(!restore["host"].as_str().unwrap().is_empty());
    assert!(v[1]["what"].as_str().unwrap().contains("mnt"), "{v:#}");
    assert!(
        v[2]["what"]
            .as_str()
            .unwrap()
            .contains("removed 1 snapshot"),
        "{v:#}"
    );
    // Oldest first.
    let times: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    let only = json_of(&r, &["audit", "--op", "mount", "--json"], 0);
    assert_eq!(only.as_array().unwrap().len(), 1);
    let text = String::from_utf8_lossy(&r.ok(&["audit"]).stdout).into_owned();
    assert!(
        text.contains("restore") && text.contains("5 entries"),
        "{text}"
    );

    // Sealed: no entry shows the target path or the operation in clear.
    let dir = r.path.join("audit");
    let names = entries(&dir);
    assert_eq!(names.len(), 5);
    for n in &names {
        let b = fs::read(dir.join(n)).unwrap();
        let needle = b"restored-here";
        assert!(
            !b.windows(needle.len()).any(|w| w == needle),
            "{n} in clear"
        );
    }
    // An entry renamed (moved to another time) fails authentication: shown, exit 12.
    let mut sorted_names = names.clone();
    sorted_names.sort();
    fs::rename(
        dir.join(&sorted_names[0]),
        dir.join(format!("0000000000000001-{}", &sorted_names[0][17..])),
    )
    .unwrap();
    let o = r.code(&["audit", "--json"], 12);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["op"], "damaged", "{v:#}");
}

#[test]
fn the_agent_drills_a_base_backup_source_with_postgresql_on_schedule() {
    use crate::common::wait_until;
    use std::time::Duration;
    let r = Repo::new();
    let _a = crate::pitr::archived(&r, 1);
    let cfg = r.scratch("agent.toml");
    // The base backup source never runs during the test (cron once a year); its drill does.
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\n\n[[source]]\nname = \"pgdata\"\ntype = \"basebackup\"\ncommand = \"false\"\ncluster = \"main\"\ncron = \"0 0 1 1 *\"\ndrill = \"2s\"\ndrill_query = \"SELECT count(*) FROM t, pg_sleep(4)\"\ndrill_database = \"app\"\ndrill_expect = \"250\"\n\n[[source]]\nname = \"dump\"\ntype = \"command\"\ncommand = \"date +%s%N\"\nfile = \"d\"\nevery = \"1s\"\n",
            s(&r.path)
        ),
    )
    .unwrap();
    // Info logging, to wait for "agent started" (and to see that no ERROR is logged).
    let mut c = r.cmd(&["agent", "--config", s(&cfg)]);
    c.env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(r.scratch("agent.log")).unwrap());
    let agent = crate::common::KillOnDrop(c.spawn().unwrap());
    let log = || fs::read_to_string(r.scratch("agent.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || log().contains("agent started")),
        "{}",
        log()
    );
    assert!(
        wait_until(Duration::from_secs(120), || {
            let (st, _) = crate::monitor::status(&r);
            st["drills"][0]["state"] == "OK"
        }),
        "{:#}\n{}",
        crate::monitor::status(&r).0,
        fs::read_to_string(r.scratch("agent.log")).unwrap_or_default()
    );
    let (st, code) = crate::monitor::status(&r);
    drop(agent);
    assert_eq!(code, 0, "{st:#}");
    let d = &st["drills"][0];
    assert_eq!(d["source"], "pgdata");
    eprintln!("agent base-backup drill: {} s", d["duration_s"]);
    let log = fs::read_to_string(r.scratch("agent.log")).unwrap();
    assert!(log.contains("restore drill passed"), "{log}");
    // fuser's redundant second unmount of the drill's mount is not an ERROR under RUST_LOG=info.
    assert!(!log.contains("ERROR"), "{log}");
    // The drill (its query sleeps 4 s) did not hold the other source's backups back: they
    // ran while it did.
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("restore drill starting"))
        .unwrap();
    let end = lines
        .iter()
        .position(|l| l.contains("restore drill passed"))
        .unwrap();
    let beside = lines[start..end]
        .iter()
        .filter(|l| l.contains("job done") && l.contains("dump"))
        .count();
    assert!(beside >= 2, "{beside} backups during the drill:\n{log}");
    let ops = json_of(&r, &["audit", "--op", "drill", "--json"], 0);
    assert!(!ops.as_array().unwrap().is_empty());
}
