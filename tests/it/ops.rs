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
