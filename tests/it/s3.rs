//! Repositories on S3, against a real 3-node Garage cluster (replication factor 3) on loopback
//! ports, started per test by `scripts/garage-cluster.sh` and stopped on drop. The tests skip,
//! saying so, only when `garage` is not installed (`scripts/setup.sh` installs it; CI runs it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    assert_code, assert_trees_equal, gen_small_tree, s, wait_until, write_random, Repo,
};
use crate::mount::Mounted;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/garage-cluster.sh");

/// A running 3-node Garage cluster.
pub struct Garage {
    dir: tempfile::TempDir,
    /// S3 endpoint of node 1.
    pub endpoint: String,
    /// Access key id and secret with read/write on `bucket`.
    pub key_id: String,
    secret: String,
    /// The bucket the script created.
    pub bucket: String,
}

impl Garage {
    /// Starts a cluster, or `None` (after printing why) when `garage` is not installed.
    pub fn start() -> Option<Garage> {
        let found = Command::new("sh")
            .args(["-c", "command -v garage"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("SKIPPED: garage is not installed (scripts/setup.sh installs it)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("wayback-garage-")
            .tempdir()
            .unwrap();
        // Nine free loopback ports (rpc, s3, admin per node); released just before use.
        let listeners: Vec<_> = (0..9)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port().to_string())
            .collect();
        drop(listeners);
        let o = Command::new("bash")
            .args([SCRIPT, "start", s(dir.path())])
            .env("GARAGE_PORTS", ports.join(" "))
            .output()
            .unwrap();
        let g = |out: &str, k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("garage-cluster.sh printed no {k}: {out}"))
                .to_string()
        };
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "garage-cluster.sh start failed: {}{out}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(Garage {
            endpoint: g(&out, "GARAGE_ENDPOINT"),
            key_id: g(&out, "GARAGE_KEY_ID"),
            secret: g(&out, "GARAGE_SECRET"),
            bucket: g(&out, "GARAGE_BUCKET"),
            dir,
        })
    }

    /// The location of a repository under `prefix`.
    pub fn location(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region=garage",
            self.bucket, self.endpoint
        )
    }

    /// The S3 keys as the environment gives them to wayback.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
        ]
    }

    /// A fresh repository under `prefix` (init run).
    pub fn repo(&self, prefix: &str) -> Repo {
        Repo::at(self.location(prefix), self.env())
    }

    /// SIGKILLs node `n` (1-3).
    pub fn kill(&self, n: u32) {
        let o = Command::new("bash")
            .args([SCRIPT, "kill", s(self.dir.path()), &n.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }

    /// Starts node `n` again with its data.
    pub fn restart(&self, n: u32) {
        let o = Command::new("bash")
            .args([SCRIPT, "restart", s(self.dir.path()), &n.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([SCRIPT, "stop", s(self.dir.path())])
            .output();
    }
}

/// Files under `dir`, for comparing trees byte for byte.
fn assert_diff_r(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .args(["-r", s(a), s(b)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "diff -r {} {}:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn s3_init_backup_restore_check_forget_prune() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("core");
    // A second init at the same prefix is refused; the bucket holds the same names as a
    // local repository (config, keys/, packs/, snapshots/).
    let o = r.wb(&["init"]);
    assert!(!o.status.success());
    let src = r.mkdir("src");
    gen_small_tree(&src, 7);
    write_random(&src.join("big.bin"), 3 << 20, 9);
    r.backup_dir(&src, "files");
    assert_eq!(r.snapshots().len(), 1);
    let out = r.scratch("out1");
    r.restore("latest", &out, &[]);
    assert_trees_equal(&src, &out);
    // Change, back up again, forget the first, prune: the second restores, check reads all.
    write_random(&src.join("big.bin"), 2 << 20, 10);
    fs::write(src.join("new.txt"), b"new file").unwrap();
    r.backup_dir(&src, "files");
    assert_eq!(r.snapshots().len(), 2);
    r.ok(&["forget", "--keep-last", "1"]);
    r.ok(&["prune"]);
    assert_eq!(r.snapshots().len(), 1);
    r.ok(&["check", "--read-data"]);
    // A new host (empty cache directory) reads it from the bucket alone.
    let fresh = r.scratch("other-host-cache");
    let mut c = r.cmd(&["restore", "latest", "--target", s(&r.scratch("out2"))]);
    c.env("WAYBACK_CACHE_DIR", &fresh);
    let o = crate::common::run(c);
    assert_code(&o, 0, "restore on a fresh host");
    assert_trees_equal(&src, &r.scratch("out2"));
}

#[test]
fn s3_mount_reads_through_fuse_and_keys_stay_out_of_children() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("mount");
    let src = r.mkdir("src");
    gen_small_tree(&src, 3);
    write_random(&src.join("data.bin"), 5 << 20, 4);
    r.backup_dir(&src, "files");
    // The S3 keys are not in a child's environment (a command source prints its own).
    r.ok(&[
        "backup",
        "--command",
        "env",
        "--stdin-name",
        "env.txt",
        "--source",
        "env",
    ]);
    let env = r.cat("latest:/env.txt", &["--source", "env"]);
    let env = String::from_utf8_lossy(&env);
    assert!(env.contains("WAYBACK_REPO="), "{env}");
    assert!(
        !env.contains("AWS_SECRET_ACCESS_KEY") && !env.contains(&g.key_id),
        "{env}"
    );
    let m = Mounted::new(&r, &[]);
    let snap = m.p("latest/files");
    assert_diff_r(&src, &snap);
    let copy = r.scratch("copy");
    let o = Command::new("cp")
        .args(["-a", s(&snap), s(&copy)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_diff_r(&src, &copy);
    assert_eq!(
        fs::read(snap.join("data.bin")).unwrap(),
        fs::read(src.join("data.bin")).unwrap()
    );
}

#[test]
fn s3_wal_push_is_idempotent_refuses_other_bytes_and_fetch_round_trips() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("wal");
    let d = r.mkdir("pg_wal");
    let p = crate::wal::segment(&d, "000000010000000000000001", 7, 3);
    r.ok(&["wal-push", "--cluster", "main", s(&p)]);
    r.ok(&["wal-push", "--cluster", "main", s(&p)]);
    let mut other = fs::read(&p).unwrap();
    other[5000] ^= 1;
    let d2 = r.mkdir("other");
    fs::write(d2.join("000000010000000000000001"), &other).unwrap();
    let o = r.wb(&[
        "wal-push",
        "--cluster",
        "main",
        s(&d2.join("000000010000000000000001")),
    ]);
    assert_code(&o, 14, "push of other bytes under an archived name");
    let out = r.scratch("fetched");
    r.ok(&[
        "wal-fetch",
        "--cluster",
        "main",
        "000000010000000000000001",
        s(&out),
    ]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&p).unwrap());
    let o = r.wb(&[
        "wal-fetch",
        "--cluster",
        "main",
        "000000010000000000000009",
        s(&r.scratch("x")),
    ]);
    assert_eq!(o.status.code(), Some(1), "not archived: exit 1");
}

#[test]
fn s3_credentials_file_must_be_private_and_never_in_the_location() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("credentials");
    fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.key_id, g.secret
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o644)).unwrap();
    let loc = format!("{}&credentials={}", g.location("creds"), s(&creds));
    let r = |loc: &str| {
        let mut c = Command::new(crate::common::BIN);
        c.args(["init"])
            .env("WAYBACK_REPO", loc)
            .env("WAYBACK_PASSWORD", "pw")
            .env("WAYBACK_INSECURE_FAST_KDF", "1")
            .env("WAYBACK_CACHE_DIR", tmp.path().join("cache"))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        crate::common::run(c)
    };
    let o = r(&loc);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("0600"), "{o:?}");
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
    assert_code(&r(&loc), 0, "init with a private credentials file");
    let o = r(&format!(
        "{}&secret_access_key={}",
        g.location("creds2"),
        g.secret
    ));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("never part of the location"),
        "{o:?}"
    );
}

/// Backs up `src` in the background while node `kill` dies (and `kill2` too, if given).
fn backup_while_nodes_die(g: &Garage, r: &Repo, src: &Path, nodes: &[u32]) -> std::process::Output {
    let child = r
        .cmd(&["backup", s(src), "--source", "big", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    for n in nodes {
        g.kill(*n);
    }
    let o = child.wait_with_output().unwrap();
    eprintln!(
        "backup while nodes {nodes:?} died: exit {:?}, {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    o
}

fn big_source(r: &Repo) -> PathBuf {
    let src = r.mkdir("big");
    for i in 0..6 {
        write_random(&src.join(format!("f{i}")), 4 << 20, 100 + i);
    }
    src
}

#[test]
fn s3_one_node_killed_mid_backup_the_cluster_still_serves() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("kill1");
    let src = big_source(&r);
    let o = backup_while_nodes_die(&g, &r, &src, &[3]);
    // With 2 of 3 nodes a write quorum remains: the backup completes, or fails cleanly
    // (no panic, an error message) and the next run succeeds.
    if !o.status.success() {
        assert!(o.status.code().is_some_and(|c| c < 100), "{o:?}");
    }
    r.backup_dir(&src, "big");
    r.ok(&["check", "--read-data"]);
    let out = r.scratch("out");
    r.restore("latest", &out, &[]);
    assert_diff_r(&src, &out);
}

#[test]
fn s3_two_nodes_killed_mid_backup_fails_clearly_and_leaves_no_partial_snapshot() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("kill2");
    let src = big_source(&r);
    let o = backup_while_nodes_die(&g, &r, &src, &[2, 3]);
    let done_before = o.status.success();
    if !done_before {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.code().is_some_and(|c| c < 100), "{o:?}");
        assert!(err.contains("s3://"), "the error names the store: {err}");
    }
    g.restart(2);
    g.restart(3);
    assert!(
        wait_until(Duration::from_secs(20), || r
            .wb(&["snapshots"])
            .status
            .success()),
        "cluster back"
    );
    // Only a complete snapshot is ever visible: one if the backup finished first, else none.
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), usize::from(done_before), "{snaps:?}");
    r.backup_dir(&src, "big");
    r.ok(&["check", "--read-data"]);
    let out = r.scratch("out");
    r.restore("latest", &out, &[]);
    assert_diff_r(&src, &out);
}
