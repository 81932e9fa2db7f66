//! PostgreSQL continuous archiving into an S3 repository on a real 3-node Garage, and a
//! point-in-time recovery from it: `archive_command` runs `wal-push` as `postgres` with a
//! credentials file of its own (0600, theirs), a base backup is taken as `postgres`, and root's
//! `wayback pitr --wal-credentials` prepares a data directory whose `restore_command`
//! (`wal-fetch` from the bucket) runs as the recovered server's user without root's keys.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{s, Repo, BIN, PASSWORD};
use crate::pg::{bin, Pg};
use crate::pitr::{as_postgres, chown_postgres, now_utc, start_recovered};
use crate::s3::Garage;

/// What `postgres` needs to use the bucket: a passphrase file, a credentials file, a private
/// cache directory, and the location naming the credentials file.
struct PgSide {
    pwfile: PathBuf,
    creds: PathBuf,
    cache: PathBuf,
    location: String,
}

fn pg_side(g: &Garage, r: &Repo, prefix: &str) -> PgSide {
    fs::set_permissions(r.tmp(), fs::Permissions::from_mode(0o755)).unwrap();
    let pwfile = r.scratch("pw");
    fs::write(&pwfile, PASSWORD).unwrap();
    chown_postgres(&pwfile);
    let creds = r.scratch("pg-credentials");
    let env = g.env();
    fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            env[0].1, env[1].1
        ),
    )
    .unwrap();
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
    chown_postgres(&creds);
    let cache = r.scratch("pg-cache");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
    chown_postgres(&cache);
    let location = format!("{}&credentials={}", g.location(prefix), s(&creds));
    PgSide {
        pwfile,
        creds,
        cache,
        location,
    }
}

/// `wayback` as `postgres` against the bucket: `env WAYBACK_CACHE_DIR=... wayback --repo LOC
/// --password-file PW <args>`.
fn wb_as_postgres(p: &PgSide, args: &[&str]) -> std::process::Output {
    let cache = format!("WAYBACK_CACHE_DIR={}", s(&p.cache));
    let mut all = vec![
        "env",
        &cache,
        "WAYBACK_INSECURE_FAST_KDF=1",
        BIN,
        "--repo",
        &p.location,
        "--password-file",
        s(&p.pwfile),
    ];
    all.extend_from_slice(args);
    as_postgres(&all)
}

/// Waits until `seg` is in archive `main` of the bucket (listed by root's `wal list`).
fn wait_archived(r: &Repo, seg: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = r.json(&["wal", "list", "--cluster", "main", "--json"]);
        if l.as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"].as_str() == Some(seg))
        {
            return;
        }
        assert!(Instant::now() < deadline, "segment {seg} was not archived");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn switch_and_wait(r: &Repo, pg: &Pg) {
    pg.sql(
        "app",
        "CREATE TABLE IF NOT EXISTS filler(x int); INSERT INTO filler VALUES (1)",
    );
    let seg = pg.sql("app", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("app", "SELECT pg_switch_wal()");
    wait_archived(r, &seg);
}

#[test]
fn s3_wal_archiving_as_postgres_and_point_in_time_recovery_with_wal_fetch() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("pitr");
    let p = pg_side(&g, &r, "pitr");
    let script = r.scratch("archive.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec env WAYBACK_CACHE_DIR='{}' '{BIN}' --repo '{}' --password-file '{}' wal-push --cluster main \"$1\"\n",
            s(&p.cache),
            p.location,
            s(&p.pwfile)
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let pg = Pg::start(&format!(
        "archive_mode = on\nwal_level = replica\narchive_command = '{} %p'\n",
        s(&script)
    ));
    pg.client("createdb").arg("app").status().unwrap();
    assert!(pg
        .client("pgbench")
        .args(["-i", "-s", "1", "-q", "app"])
        .output()
        .unwrap()
        .status
        .success());
    pg.sql(
        "app",
        "CREATE TABLE t(id int); CREATE TABLE keep(id int); INSERT INTO keep VALUES (1),(2),(3)",
    );
    let bb = format!(
        "{} -h {} -U postgres -D - -Ft -X none -c fast",
        bin("pg_basebackup"),
        s(&pg.sock)
    );
    let o = wb_as_postgres(
        &p,
        &[
            "backup",
            "--basebackup",
            &bb,
            "--source",
            "pgdata",
            "--cluster",
            "main",
            "--json",
        ],
    );
    assert!(
        o.status.success(),
        "basebackup: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    pg.sql("app", "INSERT INTO t SELECT generate_series(1, 100)");
    std::thread::sleep(Duration::from_millis(1100));
    let t = now_utc(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql("app", "INSERT INTO t SELECT generate_series(101, 250)");
    pg.sql("app", "DROP TABLE keep");
    switch_and_wait(&r, &pg);
    switch_and_wait(&r, &pg);

    // Root prepares the recovery with its environment keys; the server's wal-fetch gets the
    // credentials file instead, and none of root's keys.
    let data = r.scratch("restored");
    let o = r
        .cmd(&[
            "--password-file",
            s(&p.pwfile),
            "pitr",
            "--source",
            "pgdata",
        ])
        .args(["--to", &t, "--target", s(&data), "--wal-credentials"])
        .arg(&p.creds)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pitr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let conf = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("wal-fetch"), "{conf}");
    assert!(
        conf.contains(&format!("credentials={}", s(&p.creds))),
        "{conf}"
    );
    assert!(
        !conf.contains(&g.env()[1].1),
        "a key is in restore_command: {conf}"
    );
    // wal-fetch runs as postgres with its HOME's cache directory (~/.cache/wayback); what it
    // creates there is removed after the test (each run's bucket gets a cache of its own).
    let pg_cache = PathBuf::from("/var/lib/postgresql/.cache/wayback");
    let before = entries(&pg_cache);
    let _clean = RemoveNew(pg_cache, before);
    assert_eq!(start_recovered(&data, &r.scratch("sock2")), "100|3|100000");
    // The original cluster is untouched and has the later state.
    assert_eq!(pg.sql("app", "SELECT count(*) FROM t"), "250");

    // --wal-credentials only makes sense for wal-fetch from S3.
    let o = Command::new(BIN)
        .args([
            "--repo",
            "/nonexistent/repo",
            "pitr",
            "--source",
            "x",
            "--to",
            "now",
        ])
        .args(["--target", "/nonexistent/t", "--wal-credentials", "/c"])
        .env("WAYBACK_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("s3://"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn entries(dir: &std::path::Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Removes, when dropped, the entries of a directory that were not in it before.
struct RemoveNew(PathBuf, Vec<PathBuf>);

impl Drop for RemoveNew {
    fn drop(&mut self) {
        for e in entries(&self.0) {
            if !self.1.contains(&e) {
                let _ = fs::remove_dir_all(&e);
            }
        }
    }
}
