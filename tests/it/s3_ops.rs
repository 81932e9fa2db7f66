//! Operations on S3 repositories on a real 3-node Garage. `wayback copy` to and from S3: the
//! off-site copy of 3-2-1 where the off-site repository is a bucket. A local repository is copied into the bucket (snapshots and
//! WAL) with kills in between, the copy is checked with `--read-data` and restored byte for byte,
//! a second run sends nothing; then the bucket is copied back to a fresh local repository, as a
//! host that lost its disks would. `mount --daemon` with the S3 keys and the passphrase in the
//! environment (which both leave it at start: the daemon gets them on a pipe).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{
    assert_code, gen_small_tree, parse_json, run, s, u64_of, write_random, Repo, MIB,
};
use crate::copy::{assert_every_snapshot_restores_identically, check_read_data, wal_names};
use crate::s3::Garage;
use crate::wal::segment;

/// `wayback copy --to LOCATION --json --wal` run against `src`, with the S3 keys.
fn copy_to(src: &Repo, to: &str, g: &Garage) -> std::process::Command {
    let mut c = src.cmd(&["copy", "--to", to, "--json", "--wal"]);
    c.envs(g.env())
        .env("WAYBACK_TO_PASSWORD", crate::common::PASSWORD);
    c
}

#[test]
fn s3_copy_into_a_bucket_resumes_after_kills_verifies_and_copies_back() {
    let Some(g) = Garage::start() else { return };
    let local = Repo::new();
    let data = local.scratch("data");
    for i in 0..4u64 {
        gen_small_tree(&data, i);
        write_random(&data.join(format!("big{i}.bin")), 3 * MIB, 40 + i);
        local.backup_dir(&data, "files");
    }
    let wal = local.scratch("walsrc");
    std::fs::create_dir(&wal).unwrap();
    for (i, name) in ["000000010000000000000001", "000000010000000000000002"]
        .iter()
        .enumerate()
    {
        let p = segment(&wal, name, 7, i as u8 + 1);
        local.ok(&["wal-push", "--cluster", "main", s(&p)]);
    }
    let off = g.repo("offsite");
    let to = g.location("offsite");

    // Kill the first runs part way; each leaves no partial snapshot.
    let mut killed = 0;
    for delay_ms in [150u64, 400, 800] {
        let mut child = copy_to(&local, &to, &g)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let o = off.ok(&["check"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("no errors found"),
            "{o:?}"
        );
    }
    let t = Instant::now();
    let o = run(copy_to(&local, &to, &g));
    assert_code(&o, 0, "copy to s3");
    let first = parse_json(&o);
    eprintln!(
        "copy into the bucket after {killed} kills: {:?}, {first}",
        t.elapsed()
    );
    check_read_data(&off);
    assert_every_snapshot_restores_identically(&local, &off);
    assert_eq!(wal_names(&off), wal_names(&local));
    let again = parse_json(&run(copy_to(&local, &to, &g)));
    assert_eq!(u64_of(&again, "/blobs_sent"), 0, "{again:#}");
    assert_eq!(u64_of(&again, "/snapshots_copied"), 0, "{again:#}");
    assert_eq!(u64_of(&again, "/wal_copied"), 0, "{again:#}");
    // status of the source knows the bucket copy is current.
    let st = local.json(&["status", "--json"]);
    assert_eq!(st["copies"][0]["behind"], 0, "{st:#}");

    // A host that lost everything: copy the bucket back into a fresh local repository.
    let back = Repo::new();
    let mut c = off.cmd(&["copy", "--to", s(&back.path), "--json", "--wal"]);
    c.env("WAYBACK_TO_PASSWORD", crate::common::PASSWORD);
    let o = run(c);
    assert_code(&o, 0, "copy from s3");
    check_read_data(&back);
    assert_eq!(wal_names(&back), wal_names(&local));
    let a = local.scratch("a");
    let b = back.scratch("b");
    local.restore("latest", &a, &[]);
    back.restore("latest", &b, &[]);
    crate::common::assert_trees_equal(&a, &b);
}

#[test]
fn s3_mount_daemon_gets_the_keys_and_passphrase_through_a_pipe() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("daemon");
    let data = r.scratch("data");
    gen_small_tree(&data, 3);
    r.backup_dir(&data, "files");
    let mp = r.scratch("mnt");
    std::fs::create_dir(&mp).unwrap();
    let log = r.scratch("mount.log");
    let o = r.ok(&["mount", s(&mp), "--daemon", "--log-file", s(&log)]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("mounted at"),
        "{o:?}"
    );
    // The daemon's environment holds neither the keys nor the passphrase.
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let pid = out
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no pid in {out}"));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for (k, _) in g.env() {
        assert!(!environ.contains(&k), "{k} in the daemon's environment");
    }
    assert!(!environ.contains("WAYBACK_PASSWORD="), "{environ}");
    let diff = std::process::Command::new("diff")
        .args(["-r", s(&data), s(&mp.join("latest/files"))])
        .output()
        .unwrap();
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", s(&mp)])
        .status();
    assert!(diff.status.success(), "{diff:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains(&g.env()[1].1), "a key in the daemon's log");
}
