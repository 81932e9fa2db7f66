//! A root writer in a repository another user owns (the documented PostgreSQL setup: a root
//! agent or backup in `postgres`' archive) must never let that owner reach a file outside: the
//! owner may replace any path in the repository with a symlink, and root must not follow it.
//! Also: what wayback creates in a repository is private (0600 files, 0700 directories), and
//! the lock file does not record the command line.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::pitr::chown_postgres;

/// The victim: a root-owned file outside the repository, and a root-owned directory.
struct Outside {
    file: std::path::PathBuf,
    dir: std::path::PathBuf,
}

const SECRET: &[u8] = b"root:$6$not-for-postgres:19000:0:99999:7:::\n";

impl Outside {
    fn new(r: &Repo) -> Outside {
        let dir = r.mkdir("outside-dir");
        let file = r.scratch("outside-file");
        fs::write(&file, SECRET).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        Outside { file, dir }
    }

    /// Panics when anything outside changed: content, owner, mode, or a new entry.
    fn assert_untouched(&self, what: &str) {
        let m = fs::metadata(&self.file).unwrap();
        assert_eq!(
            fs::read(&self.file).unwrap(),
            SECRET,
            "{what}: content changed"
        );
        assert_eq!((m.uid(), m.gid()), (0, 0), "{what}: file chowned");
        assert_eq!(m.mode() & 0o7777, 0o600, "{what}: file chmodded");
        let d = fs::metadata(&self.dir).unwrap();
        assert_eq!(
            (d.uid(), d.mode() & 0o7777),
            (0, 0o700),
            "{what}: dir changed"
        );
        let entries: Vec<_> = fs::read_dir(&self.dir).unwrap().flatten().collect();
        assert!(entries.is_empty(), "{what}: {entries:?} created outside");
    }
}

/// Replaces `p` (inside the repository) with a symlink to `target`, as the owner could.
fn plant(p: &Path, target: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).unwrap(),
        Ok(_) => fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, p).unwrap();
    let _ = Command::new("chown")
        .args(["-h", "postgres:postgres"])
        .arg(p)
        .status();
}

fn postgres_repo() -> Repo {
    let r = Repo::new();
    Command::new("chmod")
        .arg("755")
        .arg(r.tmp())
        .status()
        .unwrap();
    chown_postgres(&r.path);
    r
}

#[test]
fn a_root_writer_follows_no_symlink_the_owner_planted() {
    // Each case: which repository path the owner swaps, and for a file or a directory.
    let mut cases: Vec<(String, bool)> = vec![
        ("locks/writer".into(), false),
        ("locks".into(), true),
        ("tmp".into(), true),
        ("snapshots".into(), true),
        ("packs".into(), true),
        ("index".into(), true),
        ("keys".into(), true),
    ];
    // Every pack directory a backup may create.
    cases.push(("packs/*".into(), true));
    for (path, dir) in cases {
        let r = postgres_repo();
        let out = Outside::new(&r);
        let src = r.mkdir("src");
        write_random(&src.join("data"), 3 * MIB, 7);
        write_file(&src.join("small"), b"hello");
        let target = if dir { &out.dir } else { &out.file };
        if path == "packs/*" {
            for i in 0..256 {
                plant(&r.path.join(format!("packs/{i:02x}")), target);
            }
        } else {
            plant(&r.path.join(&path), target);
        }
        // The writer may fail (its directory is gone) or succeed; either way nothing outside
        // may change, and it must not crash or hang.
        let o = r.wb(&["backup", s(&src), "--source", "files"]);
        assert!(
            o.status.code().is_some(),
            "{path}: killed by a signal: {}",
            describe(&o)
        );
        out.assert_untouched(&path);
        // A reader too (its index scratch, the cache).
        let _ = r.wb(&["snapshots", "--json"]);
        out.assert_untouched(&path);
    }
}

#[test]
fn a_root_writer_leaves_files_to_the_owner_and_keeps_them_private() {
    let r = postgres_repo();
    let src = r.mkdir("src");
    write_random(&src.join("data"), MIB, 3);
    r.ok(&["backup", s(&src), "--source", "files"]);
    let owner = fs::metadata(&r.path).unwrap().uid();
    assert_ne!(owner, 0);
    let mut seen = 0;
    let mut stack = vec![r.path.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            if p.starts_with(r.path.join("index")) {
                continue; // the owner's index, untouched by root (root keeps its own)
            }
            assert_eq!(m.uid(), owner, "{} not the owner's", p.display());
            if m.is_dir() {
                assert_eq!(m.mode() & 0o077, 0, "{} open to others", p.display());
                stack.push(p);
            } else {
                assert_eq!(m.mode() & 0o077, 0, "{} open to others", p.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 4, "config, key, pack, snapshot: saw {seen}");
    // Root's own index is private and outside the repository.
    let cache = r.tmp().join("cache");
    let m = fs::metadata(&cache).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o700));
    // The owner's own commands still work after root wrote (they read, and write a snapshot).
    let pw = r.scratch("pw");
    fs::write(&pw, PASSWORD).unwrap();
    chown_postgres(&pw);
    let o = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            BIN,
            "--repo",
            s(&r.path),
            "--password-file",
            s(&pw),
        ])
        .args(["backup", s(&src), "--source", "as-owner"])
        .env("WAYBACK_INSECURE_FAST_KDF", "1")
        .env("TMPDIR", r.tmp())
        .output()
        .unwrap();
    assert_code(&o, exit::OK, "backup as the owner after a root backup");
    // And root reads the owner's snapshot although its private index never saw those packs.
    let o = r.ok(&["cat", "latest:/data", "--source", "as-owner"]);
    assert_eq!(o.stdout, fs::read(src.join("data")).unwrap());
}

#[test]
fn new_repositories_are_private_and_the_lock_names_no_command_line() {
    let r = Repo::new();
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&r.path), 0o700);
    assert_eq!(mode(&r.path.join("config")), 0o600);
    assert_eq!(mode(&r.path.join("keys")), 0o700);
    for k in fs::read_dir(r.path.join("keys")).unwrap().flatten() {
        assert_eq!(mode(&k.path()), 0o600, "{}", k.path().display());
    }
    // Hold the lock with a long-running backup (stdin never ends) and read its owner line.
    let secret_path = "/very/secret/path-in-argv";
    let mut c = r.cmd(&[
        "backup",
        "--stdin",
        "--stdin-name",
        secret_path,
        "--source",
        "x",
    ]);
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let lock = r.path.join("locks/writer");
    assert!(wait_until(std::time::Duration::from_secs(20), || {
        fs::read_to_string(&lock).is_ok_and(|l| l.contains("pid"))
    }));
    let line = fs::read_to_string(&lock).unwrap();
    kill_child(&mut child);
    assert!(!line.contains(secret_path), "lock line leaks argv: {line}");
    assert!(
        line.contains("(backup)"),
        "lock line names the operation: {line}"
    );
}

#[test]
fn an_init_killed_before_config_can_be_run_again() {
    let r = Repo::new();
    let again = r.scratch("again");
    // What a killed init leaves: its directories and a key, no config.
    for d in ["keys", "packs", "snapshots", "locks", "tmp", "wal"] {
        fs::create_dir_all(again.join(d)).unwrap();
    }
    fs::copy(
        fs::read_dir(r.path.join("keys"))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path(),
        again.join("keys/0123"),
    )
    .unwrap();
    let o = run(r.cmd(&["--repo", s(&again), "init"]));
    assert_code(&o, exit::OK, "init over a killed init's leftovers");
    let o = run(r.cmd(&["--repo", s(&again), "snapshots"]));
    assert_code(&o, exit::OK, "the new repository opens");
    // A directory with anything else in it is still refused.
    let other = r.mkdir("other");
    write_file(&other.join("precious"), b"data");
    let o = run(r.cmd(&["--repo", s(&other), "init"]));
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(fs::read(other.join("precious")).unwrap(), b"data");
}

#[test]
fn the_audit_script_finds_nothing() {
    // scripts/audit.sh as the README shows it: the symlink-swap attack on a root writer (5 s)
    // and the plaintext grep; it exits 0 only with zero findings.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/audit.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg("5")
        .env("WAYBACK_BIN", BIN)
        .output()
        .unwrap();
    assert_code(&o, exit::OK, "scripts/audit.sh 5");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("audit: 0 findings"), "{out}");
}

#[test]
fn wal_fetch_into_another_users_directory_follows_no_planted_symlink() {
    let r = Repo::new();
    let out = Outside::new(&r);
    let seg = r.scratch("000000010000000000000003");
    let mut body = random_bytes(3 * MIB, 31);
    body[..32].fill(0);
    write_file(&seg, &body);
    r.ok(&["wal-push", "--cluster", "main", s(&seg)]);
    // PostgreSQL's pg_wal, owned by its user, who planted the temporary name wal-fetch uses.
    let pg_wal = r.mkdir("pg_wal");
    std::os::unix::fs::symlink(&out.file, pg_wal.join(".RECOVERYXLOG.wayback-tmp")).unwrap();
    chown_postgres(&pg_wal);
    let dest = pg_wal.join("RECOVERYXLOG");
    r.ok(&[
        "wal-fetch",
        "--cluster",
        "main",
        "000000010000000000000003",
        s(&dest),
    ]);
    out.assert_untouched("wal-fetch temporary file");
    assert!(fs::read(&dest).unwrap() == body);
}

/// A root `status` started with the agent's first start on a postgres-owned repository (both
/// create the private index): the status answered "not found: index" or "column family not
/// found", or held the index's lock so that the agent failed to start. Both now succeed.
#[test]
fn root_readers_racing_the_agents_first_start_neither_fail_nor_stop_it() {
    for round in 0..4 {
        let r = postgres_repo();
        let cfg = r.scratch("agent.toml");
        std::fs::write(&cfg, format!("repo = \"{}\"\n", s(&r.path))).unwrap();
        let mut c = r.cmd(&["agent", "--config", s(&cfg)]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(r.scratch("agent.log")).unwrap());
        let mut agent = crate::common::KillOnDrop(c.spawn().unwrap());
        for i in 0..4 {
            let o = r.wb(&["status"]);
            assert!(
                o.status.success(),
                "round {round}, status {i}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "round {round}: the agent exited: {}",
            std::fs::read_to_string(r.scratch("agent.log")).unwrap_or_default()
        );
    }
}
