//! `wayback pg-at`: PostgreSQL servers at two points in time side by side, on overlays of the
//! mounted base backup, answering with exactly the rows of their time; clean stop; clear errors.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{s, Repo};
use crate::pg::bin;
use crate::pitr::{archive_past_now, archived, now_utc, Archived};

struct PgAt {
    child: Child,
    sock: String,
    port: u16,
    /// The scratch directory pg-at reported (`--scratch` or the one it chose).
    scratch: PathBuf,
}

impl Drop for PgAt {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn start(r: &Repo, pwfile: &str, to: &str, scratch: &Path, port: u16) -> PgAt {
    start_with(r, pwfile, to, Some(scratch), port, &[])
}

/// Starts pg-at (with `--scratch` if given) and waits until it prints how to stop it.
fn start_with(
    r: &Repo,
    pwfile: &str,
    to: &str,
    scratch: Option<&Path>,
    port: u16,
    extra: &[&str],
) -> PgAt {
    let port_s = port.to_string();
    let mut args = vec![
        "--password-file",
        pwfile,
        "pg-at",
        "--source",
        "pgdata",
        "--to",
        to,
        "--port",
        &port_s,
    ];
    if let Some(d) = scratch {
        args.extend_from_slice(&["--scratch", s(d)]);
    }
    args.extend_from_slice(extra);
    let mut child = r
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("pg-at: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let reported = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(l) if l.starts_with("stop:") => {
                let dir = l
                    .split("--scratch ")
                    .nth(1)
                    .expect("stop line names the scratch");
                break PathBuf::from(dir.trim());
            }
            Ok(_) => {}
            Err(_) => {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("pg-at exited early: {st}");
                }
                assert!(Instant::now() < deadline, "pg-at not ready in time");
            }
        }
    };
    if let Some(d) = scratch {
        assert_eq!(d, reported);
    }
    PgAt {
        child,
        sock: s(&reported.join("sock")).to_string(),
        port,
        scratch: reported,
    }
}

/// Runs `sql` against database `app` of `p`; its output, or its error text. Every statement has
/// a timeout, so a query that would wait forever fails the test instead of hanging it.
fn query(p: &PgAt, sql: &str) -> Result<String, String> {
    query_with(p, sql, "-c statement_timeout=30s")
}

/// [`query`] with other server options (`PGOPTIONS`).
fn query_with(p: &PgAt, sql: &str, options: &str) -> Result<String, String> {
    let o = Command::new(bin("psql"))
        .env("PGOPTIONS", options)
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            &p.sock,
            "-p",
            &p.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "app",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

fn q(p: &PgAt, sql: &str) -> String {
    query(p, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn mounts_under(dir: &std::path::Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(s(dir)))
        .count()
}

#[test]
fn two_points_in_time_side_by_side() {
    let r = Repo::new();
    let Archived { pg, t, t2, pwfile } = archived(&r, 4);
    let pw = s(&pwfile).to_string();
    // The base backup's top directory belongs to the database's owner, like its files.
    let snaps = r.snapshots();
    assert_ne!(snaps[0]["root_meta"]["uid"], 0, "{}", snaps[0]["root_meta"]);
    // Errors first: a time before the first base backup; a port in use.
    let o = r.wb(&[
        "--password-file",
        &pw,
        "pg-at",
        "--source",
        "pgdata",
        "--to",
        "2001-01-01",
        "--scratch",
        s(&r.scratch("never")),
    ]);
    assert_eq!(
        o.status.code(),
        Some(13),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let o = r.wb(&[
        "--password-file",
        &pw,
        "pg-at",
        "--source",
        "pgdata",
        "--to",
        &t,
        "--port",
        &busy_port,
        "--scratch",
        s(&r.scratch("never")),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(busy);
    // A failure after the mounts and the overlay are up (no pg_ctl) undoes all of them.
    let s0 = r.scratch("fails");
    let o = r.wb(&[
        "--password-file",
        &pw,
        "pg-at",
        "--source",
        "pgdata",
        "--to",
        &t,
        "--pg-bin",
        "/nonexistent",
        "--scratch",
        s(&s0),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!s0.exists(), "scratch left behind after a failed start");
    assert_eq!(
        mounts_under(r.tmp()),
        0,
        "mounts left behind after a failed start"
    );

    // A quote and a space in the path: the recovery settings and restore_command quote it.
    let (s1, s2) = (r.scratch("at-t1"), r.scratch("at-t2 it's"));
    let started = Instant::now();
    let a = start(&r, &pw, &t, &s1, 55431);
    eprintln!("first pg-at ready after {:?}", started.elapsed());
    let b = start(&r, &pw, &t2, &s2, 55432);
    assert_eq!(q(&a, "SELECT count(*) FROM t"), "100");
    assert_eq!(q(&a, "SELECT count(*) FROM keep"), "3");
    assert_eq!(q(&b, "SELECT count(*) FROM t"), "250");
    assert_eq!(q(&b, "SELECT to_regclass('keep') IS NULL"), "t");
    // The original is untouched; the scratch layer holds only what recovery wrote.
    assert_eq!(pg.sql("app", "SELECT count(*) FROM t"), "250");
    // Restored WAL segments land in pg_wal; the rest of the scratch area is small files
    // copied up by overlayfs and the 8 KiB pages written to copy-on-write relation files.
    let (du, dua) = (crate::common::du, crate::common::du_allocated);
    let scratch_bytes = |d: &std::path::Path| {
        dua(&d.join("upper")) - dua(&d.join("upper/pg_wal")) + dua(&d.join("cow-delta"))
    };
    let (data, data_wal) = (du(&pg.data), du(&pg.data.join("pg_wal")));
    let used = scratch_bytes(&s1);
    eprintln!(
        "scratch: {} KiB besides restored WAL, for a {} KiB data directory ({} KiB without pg_wal)",
        used / 1024,
        data / 1024,
        (data - data_wal) / 1024
    );
    assert!(
        used < (data - data_wal) / 4,
        "scratch {used} vs data {data}"
    );
    // PostgreSQL opens relation files read-write even to read them; overlayfs would copy the
    // whole 50 MB table up. The copy-on-write files keep only written pages.
    let accounts = pg.sql("app", "SELECT pg_relation_size('pgbench_accounts')");
    let accounts: u64 = accounts.parse().unwrap();
    assert!(
        fs::read_link(s1.join("upper/base")).is_err(),
        "base/ itself stays a directory"
    );
    assert_eq!(q(&a, "SELECT count(*) FROM pgbench_accounts"), "400000");
    let after = scratch_bytes(&s1);
    eprintln!(
        "after reading the {} KiB pgbench_accounts: {} KiB written in scratch, {} KiB of decrypted base backup cached",
        accounts / 1024,
        after / 1024,
        dua(&s1.join("cow-cache")) / 1024
    );
    assert!(
        after - used < accounts / 4,
        "reading grew scratch by {}",
        after - used
    );
    // A writable server at T2 writes through the copy-on-write files; its writes are visible
    // to it, cost pages, and never reach the repository or the original cluster.
    let s3 = r.scratch("at-t2-writable");
    let c = start_with(&r, &pw, &t2, Some(&s3), 55433, &["--writable"]);
    let before = scratch_bytes(&s3);
    q(
        &c,
        "UPDATE pgbench_accounts SET abalance = 4242 WHERE aid % 1000 = 0",
    );
    q(&c, "CHECKPOINT");
    assert_eq!(
        q(
            &c,
            "SELECT count(*), sum(abalance) FROM pgbench_accounts WHERE abalance = 4242"
        ),
        "400|1696800"
    );
    assert_eq!(q(&c, "SELECT count(*) FROM t"), "250");
    let grew = scratch_bytes(&s3) - before;
    eprintln!(
        "writable pg-at: UPDATE of 400 rows + CHECKPOINT added {} KiB to scratch",
        grew / 1024
    );
    assert!(grew < accounts / 2, "writes grew scratch by {grew}");
    drop(c);
    assert!(!s3.exists(), "scratch left behind");
    assert_eq!(
        pg.sql(
            "app",
            "SELECT count(*) FROM pgbench_accounts WHERE abalance = 4242"
        ),
        "0"
    );
    // Stop the first with --stop, the second with SIGTERM: no mounts, no scratch left.
    r.ok(&["pg-at", "--stop", "--scratch", s(&s1)]);
    assert!(!s1.exists());
    drop(a);
    drop(b);
    assert!(!s2.exists(), "scratch left behind");
    assert_eq!(mounts_under(r.tmp()), 0, "mounts left behind");
}

/// The most common reason to want the past: a table dropped one second after T. A server paused
/// at T waits forever for the lock replay took for the `DROP`; pg-at ends recovery at T instead,
/// read-only, on a timeline of its own that never reaches the archive.
#[test]
fn a_table_dropped_after_t_answers_at_t_read_only() {
    let r = Repo::new();
    let Archived { pg, pwfile, .. } = archived(&r, 1);
    pg.sql(
        "app",
        "CREATE TABLE gone(id int); INSERT INTO gone SELECT generate_series(1, 42)",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let t = now_utc(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql("app", "DROP TABLE gone");
    archive_past_now(&r, &pg);
    let p = start(&r, s(&pwfile), &t, &r.scratch("at-t"), 55441);
    assert_eq!(q(&p, "SELECT count(*), sum(id) FROM gone"), "42|903");
    let refused = query(&p, "INSERT INTO gone VALUES (43)").unwrap_err();
    assert!(refused.contains("read-only transaction"), "{refused}");
    assert_eq!(q(&p, "SELECT count(*) FROM gone"), "42");
    // Recovery ended on a new timeline; its history file stays in scratch.
    let tli = q(
        &p,
        "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
    );
    assert_ne!(tli, "00000001");
    assert!(p
        .scratch
        .join(format!("data/pg_wal/{tli}.history"))
        .exists());
    drop(p);
    let histories: Vec<_> = fs::read_dir(r.path.join("wal/main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".history"))
        .collect();
    assert!(histories.is_empty(), "pg-at archived {histories:?}");
    assert_eq!(pg.sql("app", "SELECT to_regclass('gone') IS NULL"), "t");
    // --paused is still there, with its documented caveat: the replayed DROP's lock is held.
    let paused = start_with(&r, s(&pwfile), &t, None, 55444, &["--paused"]);
    assert_eq!(q(&paused, "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(q(&paused, "SELECT count(*) FROM t"), "250");
    let waits = query_with(&paused, "SELECT count(*) FROM gone", "-c lock_timeout=1s").unwrap_err();
    assert!(waits.contains("lock timeout"), "{waits}");
}

/// Every directory and file on the scratch filesystem under `dir` (not descending into mounts),
/// with its mode; the mount points themselves are returned separately.
fn scratch_entries(dir: &Path, dev: u64, out: &mut Vec<(PathBuf, u32)>, mounts: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        if m.dev() != dev {
            mounts.push(p);
            continue;
        }
        out.push((p.clone(), m.mode()));
        if m.is_dir() {
            scratch_entries(&p, dev, out, mounts);
        }
    }
}

/// Whether user `nobody` can run `cmd` on `path` (e.g. `ls` a directory, `cat` a file).
fn nobody_can(cmd: &str, path: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "nobody", "--", cmd])
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

/// pg-at's scratch holds decrypted database pages and `allow_other` mounts of the repository:
/// its name is unpredictable, nothing in it is open to other users, and an unprivileged user
/// can read neither the data directory nor the mounts.
#[test]
fn scratch_is_private_to_root_and_the_server() {
    let r = Repo::new();
    let Archived { t, pwfile, .. } = archived(&r, 1);
    let p = start_with(&r, s(&pwfile), &t, None, 55442, &[]);
    assert_eq!(q(&p, "SELECT count(*) FROM keep"), "3");
    let scratch = p.scratch.clone();
    let pid = p.child.id();
    assert!(
        scratch.starts_with(r.tmp()),
        "{scratch:?} is not under TMPDIR"
    );
    for old in [
        r.tmp().join(format!("wayback-pg-at-{pid}")),
        PathBuf::from(format!("/tmp/wayback-pg-at-{pid}")),
    ] {
        assert_ne!(scratch, old, "predictable scratch name");
    }
    let top = fs::metadata(&scratch).unwrap();
    assert_eq!(top.mode() & 0o777, 0o710, "scratch mode {:o}", top.mode());
    assert_eq!(top.uid(), 0);
    let (mut entries, mut mounts) = (Vec::new(), Vec::new());
    scratch_entries(&scratch, top.dev(), &mut entries, &mut mounts);
    let open: Vec<_> = entries
        .iter()
        .filter(|(_, mode)| mode & 0o007 != 0)
        .map(|(p, mode)| format!("{} {:o}", p.display(), mode & 0o7777))
        .collect();
    assert!(open.is_empty(), "open to other users: {open:#?}");
    let cached: Vec<_> = fs::read_dir(scratch.join("cow-cache")).unwrap().collect();
    assert!(!cached.is_empty(), "no copy-on-write files to check");
    mounts.sort();
    assert_eq!(
        mounts,
        ["cow", "data", "mnt"].map(|m| scratch.join(m)).to_vec()
    );
    // nobody runs commands, but reaches nothing in scratch.
    assert!(nobody_can("ls", Path::new("/")));
    for (cmd, path) in [
        ("ls", scratch.clone()),
        ("ls", scratch.join("data")),
        ("cat", scratch.join("data/PG_VERSION")),
        ("ls", scratch.join("mnt")),
        ("ls", scratch.join("mnt/wal/main")),
        ("ls", scratch.join("cow")),
        ("cat", scratch.join("cow/0")),
        ("cat", scratch.join("cow-cache/0")),
    ] {
        assert!(
            !nobody_can(cmd, &path),
            "nobody can {cmd} {}",
            path.display()
        );
    }
    drop(p);
    assert!(!scratch.exists(), "scratch left behind");
}

/// Names of the environment variables of process `pid` (None once it has exited).
fn environ_names(pid: u32) -> Option<Vec<String>> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        env.split(|b| *b == 0)
            .filter_map(|kv| kv.split(|b| *b == b'=').next())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect(),
    )
}

/// pg-at runs with the passphrase in its environment; the PostgreSQL server it starts (and every
/// process of it) never sees it, and recovery works without it.
#[test]
fn the_server_never_sees_the_passphrase() {
    let r = Repo::new();
    let Archived { t, pwfile, .. } = archived(&r, 1);
    let p = start(&r, s(&pwfile), &t, &r.scratch("at-t"), 55443);
    assert_eq!(q(&p, "SELECT count(*) FROM t"), "100");
    assert!(
        environ_names(p.child.id())
            .unwrap()
            .contains(&"WAYBACK_PASSWORD".to_string()),
        "the test must give pg-at the passphrase in its environment"
    );
    let pidfile = fs::read_to_string(p.scratch.join("data/postmaster.pid")).unwrap();
    let postmaster: u32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
    let children = fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children"))
        .unwrap_or_default();
    let mut pids = vec![postmaster];
    pids.extend(
        children
            .split_whitespace()
            .map(|c| c.parse::<u32>().unwrap()),
    );
    assert!(pids.len() > 2, "postmaster {postmaster} has no children");
    for pid in pids {
        // A backend may exit between the listing and the read; the postmaster may not.
        let Some(names) = environ_names(pid) else {
            assert_ne!(pid, postmaster, "postmaster exited");
            continue;
        };
        assert!(names.len() > 2, "environ of {pid}: {names:?}");
        let leaked: Vec<_> = names
            .iter()
            .filter(|n| n.starts_with("WAYBACK_PASS"))
            .collect();
        assert!(leaked.is_empty(), "server process {pid} has {leaked:?}");
    }
}
