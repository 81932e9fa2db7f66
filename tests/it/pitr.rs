//! End to end with a real PostgreSQL 15: continuous archiving with `wayback wal-push`, a base
//! backup snapshot, writes, a target time T, more writes and a dropped table; then recovery to
//! T straight from the mount (`cp -a /at/T/...`, restore_command = `cp <mnt>/wal/<cluster>/%f`)
//! and through `wayback pitr` with `wal-fetch`. Both must show exactly the data as of T.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{s, Repo, BIN, PASSWORD};
use crate::mount::Mounted;
use crate::pg::{bin, Pg};

pub fn chown_postgres(p: &Path) {
    assert!(Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status()
        .unwrap()
        .success());
}

pub fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap()
}

/// Lets PostgreSQL, running as `postgres`, use the repository of `r` for archiving: the
/// repository becomes theirs and a passphrase file they can read is returned.
pub fn repo_for_postgres(r: &Repo) -> PathBuf {
    Command::new("chmod")
        .arg("755")
        .arg(r.tmp())
        .status()
        .unwrap();
    chown_postgres(&r.path);
    let pwfile = r.scratch("pw");
    fs::write(&pwfile, PASSWORD).unwrap();
    chown_postgres(&pwfile);
    pwfile
}

/// `archive_command` (without `%p`) pushing into cluster `main` of `r`.
pub fn push_command(r: &Repo, pwfile: &Path) -> String {
    format!(
        "{BIN} --repo {} --password-file {} wal-push --cluster main",
        s(&r.path),
        s(pwfile)
    )
}

/// Starts the server in `data` on its own socket directory `sock` (port 5432), with `conf`
/// lines appended to its `postgresql.auto.conf`.
pub fn start_server(data: &Path, sock: &Path, conf: &str) {
    fs::create_dir_all(sock).unwrap();
    chown_postgres(sock);
    let mut c = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
    c.push_str(&format!(
        "\nunix_socket_directories = '{}'\nport = 5432\n{conf}\n",
        s(sock)
    ));
    fs::write(data.join("postgresql.auto.conf"), c).unwrap();
    chown_postgres(data);
    let log = sock.join("server.log");
    let o = as_postgres(&[
        &bin("pg_ctl"),
        "-D",
        s(data),
        "-l",
        s(&log),
        "-w",
        "-t",
        "120",
        "start",
    ]);
    assert!(
        o.status.success(),
        "server did not start: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}

/// One query against database `app` of the server listening in `sock`; trimmed output.
pub fn psql_at(sock: &Path, q: &str) -> String {
    let o = Command::new(bin("psql"))
        .env("PGHOST", sock)
        .args(["-X", "-A", "-t", "-U", "postgres", "-d", "app", "-c", q])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Stops the server in `data` (fast shutdown), ignoring failure.
pub fn stop_server(data: &Path) {
    let _ = as_postgres(&[&bin("pg_ctl"), "-D", s(data), "-m", "fast", "-w", "stop"]);
}

/// Starts a recovered copy in `data` on its own socket and waits until it has promoted.
pub fn start_recovered(data: &Path, sock: &Path) -> String {
    start_server(data, sock, "archive_mode = off");
    let log = sock.join("server.log");
    let psql = |q: &str| psql_at(sock, q);
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql("SELECT pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "recovery did not finish: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = format!(
        "{}|{}|{}",
        psql("SELECT count(*) FROM t"),
        psql("SELECT count(*) FROM keep"),
        psql("SELECT count(*) FROM pgbench_accounts")
    );
    stop_server(data);
    r
}

/// A PostgreSQL cluster archived into `r` by `wal-push`, with a base backup snapshot (source
/// `pgdata`, archive `main`), then: 100 rows in `t` and table `keep` at T; 250 rows in `t` and
/// `keep` dropped at T2; WAL well past T2 archived.
pub struct Archived {
    /// The running original server.
    pub pg: Pg,
    /// Target time with the first state.
    pub t: String,
    /// Target time with the second state.
    pub t2: String,
    /// Passphrase file readable by postgres.
    pub pwfile: std::path::PathBuf,
}

pub fn now_utc(pg: &Pg) -> String {
    pg.sql(
        "app",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    )
}

/// A base-backup snapshot (source `pgdata`, archive `main`) of the running server, taken as
/// `postgres` with `pg_basebackup -X none`; returns the snapshot JSON.
pub fn base_backup(r: &Repo, pg: &Pg, pwfile: &Path) -> serde_json::Value {
    let bb = format!(
        "{} -h {} -U postgres -D - -Ft -X none -c fast",
        bin("pg_basebackup"),
        s(&pg.sock)
    );
    let o = as_postgres(&[
        BIN,
        "--repo",
        s(&r.path),
        "--password-file",
        s(pwfile),
        "backup",
        "--basebackup",
        &bb,
        "--source",
        "pgdata",
        "--cluster",
        "main",
        "--json",
    ]);
    assert!(
        o.status.success(),
        "basebackup: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snap["kind"], "basebackup");
    assert!(snap["db"]["wal_start"].is_string(), "{snap:#}");
    snap
}

/// Writes a little, switches to a new segment and waits until the old one is archived.
pub fn archive_current_segment(r: &Repo, pg: &Pg) {
    pg.sql(
        "app",
        "CREATE TABLE IF NOT EXISTS filler(x int); INSERT INTO filler VALUES (1)",
    );
    let seg = pg.sql("app", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("app", "SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !r.path.join(format!("wal/main/{seg}")).exists() {
        assert!(Instant::now() < deadline, "segment {seg} was not archived");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sets up [`Archived`] with a pgbench database of `scale`.
pub fn archived(r: &Repo, scale: u32) -> Archived {
    let pwfile = repo_for_postgres(r);
    let archive = format!(
        "archive_mode = on\nwal_level = replica\narchive_command = '{} %p'\n",
        push_command(r, &pwfile)
    );
    let started = Instant::now();
    let pg = Pg::start(&archive);
    pg.client("createdb").arg("app").status().unwrap();
    assert!(pg
        .client("pgbench")
        .args(["-i", "-s", &scale.to_string(), "-q", "app"])
        .output()
        .unwrap()
        .status
        .success());
    pg.sql(
        "app",
        "CREATE TABLE t(id int); CREATE TABLE keep(id int); INSERT INTO keep VALUES (1),(2),(3)",
    );
    base_backup(r, &pg, &pwfile);
    eprintln!("base backup done after {:?}", started.elapsed());
    pg.sql("app", "INSERT INTO t SELECT generate_series(1, 100)");
    std::thread::sleep(Duration::from_millis(1100));
    let t = now_utc(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    // Separate transactions: a paused standby keeps the AccessExclusiveLock of a DROP whose
    // commit lies after the target, so the DROP must not share the INSERT's transaction.
    pg.sql("app", "INSERT INTO t SELECT generate_series(101, 250)");
    pg.sql("app", "DROP TABLE keep");
    std::thread::sleep(Duration::from_millis(1100));
    let t2 = now_utc(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    archive_past_now(r, &pg);
    eprintln!("WAL past T2 archived after {:?}", started.elapsed());
    Archived { pg, t, t2, pwfile }
}

/// Switches WAL twice and waits until both segments are in archive `main` of `r`, so WAL well
/// past everything written so far is archived (PostgreSQL 13+ needs WAL beyond the target).
pub fn archive_past_now(r: &Repo, pg: &Pg) {
    for _ in 0..2 {
        archive_current_segment(r, pg);
    }
}

#[test]
fn point_in_time_recovery_from_the_mount_and_with_pitr() {
    let r = Repo::new();
    let Archived { pg, t, pwfile, .. } = archived(&r, 2);
    let st = r.json(&["wal", "status", "--json"]);
    assert!(st[0]["files"].as_u64().unwrap() >= 3, "{st:#}");

    // 1) Straight from the mount.
    let m = Mounted::new(&r, &["--allow-other"]);
    let data2 = r.scratch("restore-mount");
    let o = Command::new("cp")
        .arg("-a")
        .arg(m.p(&format!("at/{t}/pgdata")))
        .arg(&data2)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::write(data2.join("recovery.signal"), "").unwrap();
    let mut c = fs::read_to_string(data2.join("postgresql.auto.conf")).unwrap_or_default();
    c.push_str(&format!(
        "\nrestore_command = 'cp {}/wal/main/%f \"%p\"'\nrecovery_target_time = '{}'\nrecovery_target_action = 'promote'\n",
        s(&m.mp),
        t.replace('T', " ").replace('Z', "+00")
    ));
    fs::write(data2.join("postgresql.auto.conf"), c).unwrap();
    assert_eq!(start_recovered(&data2, &r.scratch("sock2")), "100|3|200000");

    // 2) Through `wayback pitr` (restore_command = wayback wal-fetch).
    let data3 = r.scratch("restore-pitr");
    r.ok(&[
        "--password-file",
        s(&pwfile),
        "pitr",
        "--source",
        "pgdata",
        "--to",
        &t,
        "--target",
        s(&data3),
    ]);
    assert!(data3.join("recovery.signal").exists());
    // Files pg_basebackup adds itself carry a placeholder owner in the tar; they are restored
    // with the data directory's owner, so pg_verifybackup can read the manifest.
    {
        use std::os::unix::fs::MetadataExt;
        let want = fs::metadata(data3.join("PG_VERSION")).unwrap().uid();
        assert_eq!(
            fs::metadata(data3.join("backup_manifest")).unwrap().uid(),
            want
        );
    }
    assert_eq!(start_recovered(&data3, &r.scratch("sock3")), "100|3|200000");
    // The original cluster is untouched and has the later state.
    assert_eq!(pg.sql("app", "SELECT count(*) FROM t"), "250");
}
