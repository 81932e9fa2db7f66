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
