//! The mount, for real: a `wayback mount` process, FUSE, and ordinary tools (cp, diff, stat,
//! find, du, tar, dd, cmp, getfattr, pg_restore) reading through it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_code, s, Repo};

/// A running `wayback mount`; unmounted and reaped on drop (even when a test fails).
pub struct Mounted {
    child: Child,
    /// Mountpoint.
    pub mp: PathBuf,
    repo_path: PathBuf,
}

fn is_mounted(mp: &Path) -> bool {
    let want = fs::canonicalize(mp).unwrap_or(mp.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
}

impl Mounted {
    /// Mounts `repo` at `<tmp>/mnt` with extra arguments.
    pub fn new(repo: &Repo, extra: &[&str]) -> Mounted {
        let mp = repo.mkdir("mnt");
        let mut args = vec!["mount", s(&mp)];
        args.extend_from_slice(extra);
        let child = repo
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mount");
        let m = Mounted {
            child,
            mp: mp.clone(),
            repo_path: repo.path.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mp) {
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(30));
        }
        m
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mp.join(rel.trim_start_matches('/'))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.mp) {
            let _ = Command::new(crate::common::BIN)
                .args(["umount", s(&self.mp)])
                .env("WAYBACK_REPO", &self.repo_path)
                .status();
        }
    }
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/nginx/sites")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    for i in 0..50 {
        fs::write(
            root.join(format!("etc/nginx/sites/s{i}.conf")),
            format!("server {i};\n"),
        )
        .unwrap();
    }
    fs::write(root.join("big.bin"), pseudo_random(9 << 20, 7)).unwrap();
    fs::write(root.join("empty.txt"), b"").unwrap();
    fs::write(root.join("etc/secret"), b"key\n").unwrap();
    sh_ok(&format!(
        "chmod 0600 {0}/etc/secret && chown 1234:5678 {0}/etc/secret && chmod 4755 {0}/big.bin",
        s(root)
    ));
    std::os::unix::fs::symlink("nginx/sites/s1.conf", root.join("etc/link")).unwrap();
    fs::hard_link(root.join("etc/secret"), root.join("etc/secret.hl")).unwrap();
    sh_ok(&format!(
        "setfattr -n user.note -v hello {}/etc/nginx/sites/s0.conf",
        s(root)
    ));
    sh_ok(&format!("truncate -s 50M {0}/sparse && printf x | dd of={0}/sparse bs=1 seek=30000000 conv=notrunc status=none", s(root)));
    sh_ok(&format!(
        "touch -d '2020-01-02 03:04:05.123456789' {}/etc/nginx/sites/s3.conf",
        s(root)
    ));
}

#[test]
fn cp_a_diff_stat_find_du_tar_through_the_mount() {
    let r = Repo::new();
    let src = r.mkdir("src");
    sample_tree(&src);
    r.backup_dir(&src, "files");
    let m = Mounted::new(&r, &[]);
    let snap = m.p("latest/files");
    // cp -a equals the original, content and metadata.
    let out = r.scratch("copy");
    sh_ok(&format!("cp -a {} {}", s(&snap), s(&out)));
    sh_ok(&format!("diff -r {} {}", s(&src), s(&out)));
    let st = |p: &Path| {
        sh_ok(&format!(
            "cd {} && find . -printf '%p %y %m %U %G %s %T@ %l\\n' | sort",
            s(p)
        ))
    };
    assert_eq!(st(&src), st(&out), "cp -a of the mount differs in metadata");
    assert_eq!(
        st(&src),
        st(&snap),
        "mount metadata differs from the source"
    );
    assert_eq!(
        sh_ok(&format!(
            "getfattr --only-values -n user.note {}/etc/nginx/sites/s0.conf",
            s(&snap)
        )),
        "hello"
    );
    // Hardlinks: one inode, nlink 2, inside one snapshot.
    let a = fs::metadata(snap.join("etc/secret")).unwrap();
    let b = fs::metadata(snap.join("etc/secret.hl")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(
        fs::read_link(snap.join("etc/link")).unwrap(),
        Path::new("nginx/sites/s1.conf")
    );
    // find, du, tar.
    let count = |p: &Path| sh_ok(&format!("find {} | wc -l", s(p)));
    assert_eq!(count(&src), count(&snap));
    let du = |p: &Path| sh_ok(&format!("du -s --apparent-size {} | cut -f1", s(p)));
    assert_eq!(du(&src), du(&snap));
    let blocks = sh_ok(&format!("stat -c %b {}/sparse", s(&snap)));
    assert_eq!(
        blocks,
        sh_ok(&format!("stat -c %b {}/sparse", s(&src))),
        "st_blocks of a sparse file"
    );
    sh_ok(&format!("tar cf - -C {} . | tar tf - | wc -l", s(&snap)));
    // Inode numbers are stable for the life of the mount.
    assert_eq!(
        fs::metadata(snap.join("etc/secret")).unwrap().ino(),
        a.ino()
    );
}

#[test]
fn random_offsets_read_correct_bytes_and_writes_are_refused() {
    let r = Repo::new();
    let src = r.mkdir("src");
    let data = pseudo_random(21 << 20, 99);
    fs::write(src.join("dump"), &data).unwrap();
    r.backup_dir(&src, "db");
    let m = Mounted::new(&r, &[]);
    let f = m.p("latest/db/dump");
    let mut x = 12345u64;
    for _ in 0..25 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let bs = [512usize, 4096, 65536, 1 << 20][(x >> 8) as usize % 4];
        let skip = (x >> 20) as usize % (data.len() / bs + 1);
        let count = 1 + (x >> 40) as usize % 3;
        let o = Command::new("dd")
            .args([
                format!("if={}", s(&f)),
                format!("bs={bs}"),
                format!("skip={skip}"),
                format!("count={count}"),
                "status=none".into(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        let start = (skip * bs).min(data.len());
        let end = (start + count * bs).min(data.len());
        assert_eq!(
            o.stdout,
            &data[start..end],
            "dd bs={bs} skip={skip} count={count}"
        );
    }
    sh_ok(&format!("cmp {} {}", s(&f), s(&src.join("dump"))));
    // Read-only everywhere.
    for cmd in [
        format!("touch {}/new", s(&m.p("latest/db"))),
        format!("echo x >> {}", s(&f)),
        format!("mkdir {}/d", s(&m.p("latest/db"))),
        format!("rm {}", s(&f)),
    ] {
        let o = sh(&cmd);
        assert!(!o.status.success(), "{cmd} succeeded");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn time_paths_resolve_and_bad_names_are_enoent() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("v"), b"one").unwrap();
    let s1 = r.backup_dir(&src, "app");
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(src.join("v"), b"two").unwrap();
    r.backup_dir(&src, "app");
    let m = Mounted::new(&r, &[]);
    let names = sh_ok(&format!("ls {}", s(&m.p("at"))));
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let t1 = s1["time_name"].as_str().unwrap();
    assert_eq!(names[0], t1);
    assert_eq!(fs::read(m.p(&format!("at/{t1}/app/v"))).unwrap(), b"one");
    assert_eq!(
        fs::read(m.p(&format!("at/{}/app/v", names[1]))).unwrap(),
        b"two"
    );
    assert_eq!(fs::read(m.p("at/now/app/v")).unwrap(), b"two");
    assert_eq!(fs::read(m.p("latest/app/v")).unwrap(), b"two");
    // Colon-less and offset forms name the same instant.
    let compact = t1.replace(':', "");
    assert_eq!(
        fs::read(m.p(&format!("at/{compact}/app/v"))).unwrap(),
        b"one"
    );
    let snaps = sh_ok(&format!("ls {}", s(&m.p("snapshots/app"))));
    assert_eq!(snaps.lines().count(), 2);
    for bad in [
        "at/not-a-time",
        "at/2025-13-45",
        "at/1999-01-01",
        "latest/nosuchsource",
        "at/now/nosuchsource",
    ] {
        let e = fs::metadata(m.p(bad)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{bad}: {e}");
    }
}

#[test]
fn snapshots_taken_while_mounted_appear() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("f"), b"old").unwrap();
    fs::create_dir(src.join("d")).unwrap();
    fs::write(src.join("d/g"), b"old").unwrap();
    r.backup_dir(&src, "live");
    let m = Mounted::new(&r, &[]);
    assert_eq!(fs::read(m.p("latest/live/f")).unwrap(), b"old");
    // Walked once, so the kernel holds the old tree's entries, attributes and listings
    // (immutable, cached for long) under the live `latest/live` root.
    sh_ok(&format!(
        "ls -lR {} >/dev/null",
        m.p("latest/live").display()
    ));
    assert_eq!(fs::read(m.p("latest/live/d/g")).unwrap(), b"old");
    fs::write(src.join("f"), b"new").unwrap();
    fs::write(src.join("d/g"), b"newer").unwrap();
    fs::write(src.join("d/h"), b"added").unwrap();
    r.backup_dir(&src, "live");
    r.backup_dir(&src, "other");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = fs::read_dir(m.p("snapshots/live"))
            .map(|d| d.count())
            .unwrap_or(0);
        let listed: Vec<String> = fs::read_dir(m.p("latest/live/d"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if n == 2
            && fs::read(m.p("latest/live/f")).ok().as_deref() == Some(b"new")
            && fs::read(m.p("latest/live/d/g")).ok().as_deref() == Some(b"newer")
            && listed.iter().any(|n| n == "h")
            && m.p("latest/other/f").exists()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new snapshot not visible after 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn corrupt_pack_gives_eio_for_that_file_only() {
    let r = Repo::new();
    let a = r.mkdir("a");
    fs::write(a.join("ok.bin"), pseudo_random(2 << 20, 1)).unwrap();
    r.backup_dir(&a, "a");
    let before = r.packs();
    let b = r.mkdir("b");
    fs::write(b.join("bad.bin"), pseudo_random(2 << 20, 2)).unwrap();
    r.backup_dir(&b, "b");
    let pack = r.new_data_pack(&before);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&pack, bytes).unwrap();
    let m = Mounted::new(&r, &[]);
    sh_ok(&format!(
        "cmp {} {}",
        s(&m.p("latest/a/ok.bin")),
        s(&a.join("ok.bin"))
    ));
    let o = sh(&format!("cat {} > /dev/null", s(&m.p("latest/b/bad.bin"))));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Listing still works; only reading the damaged content fails.
    assert!(m.p("latest/b/bad.bin").exists());
}

#[test]
fn pg_restore_straight_from_the_mount() {
    let pg = crate::pg::Pg::start("");
    pg.client("createdb").arg("app").status().unwrap();
    let o = pg
        .client("pgbench")
        .args(["-i", "-s", "3", "-q", "app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    pg.sql("app", "CREATE TABLE notes(id int primary key, body text); INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1,5000) g");
    let r = Repo::new();
    let cmd = format!(
        "{} {} -Fc -Z0 app",
        pg.env_prefix(),
        crate::pg::bin("pg_dump")
    );
    r.backup(&[
        "--command",
        &cmd,
        "--stdin-name",
        "app.dump",
        "--source",
        "app-db",
    ]);
    let m = Mounted::new(&r, &[]);
    let dump = m.p("at/now/app-db/app.dump");
    let list = pg
        .client("pg_restore")
        .arg("--list")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE public notes"));
    pg.client("createdb").arg("restored").status().unwrap();
    let o = pg
        .client("pg_restore")
        .args(["-d", "restored", "-j", "2"])
        .arg(&dump)
        .output()
        .unwrap();
    assert_code(&o, 0, "pg_restore from the mount");
    for q in [
        "SELECT count(*) FROM pgbench_accounts",
        "SELECT md5(string_agg(body, ',' ORDER BY id)) FROM notes",
    ] {
        assert_eq!(pg.sql("app", q), pg.sql("restored", q), "{q}");
    }
}

/// A POSIX ACL granting uid 1234 read (`setfacl -m u:1234:r`), as the kernel's xattr encoding.
const ACL_U1234_R: &str =
    "0x0200000001000600ffffffff02000400d204000004000400ffffffff10000400ffffffff20000400ffffffff";

/// `--daemon` with the passphrase in WAYBACK_PASSWORD (which leaves the environment at start,
/// so it must reach the daemon another way), a small `--cache-mib`, and the metadata the kernel
/// now caches (ACLs, symlinks) or the driver answers on its fast path (other xattrs): all
/// served as stored, twice, through `ls -l`, `getfattr`, `readlink` and a full read.
#[test]
fn daemon_mount_serves_acls_xattrs_symlinks_with_a_small_cache() {
    let r = Repo::new();
    let src = r.mkdir("src");
    sample_tree(&src);
    sh_ok(&format!(
        "setfattr -n system.posix_acl_access -v {ACL_U1234_R} {}/etc/secret",
        s(&src)
    ));
    // A stored SELinux label (root may set one on ext4/tmpfs without an LSM loaded).
    sh_ok(&format!(
        "setfattr -n security.selinux -v system_u:object_r:etc_t:s0 {}/etc/nginx/sites/s0.conf",
        s(&src)
    ));
    r.backup_dir(&src, "files");
    let mp = r.mkdir("mnt");
    let o = r.ok(&["mount", s(&mp), "--daemon", "--cache-mib", "2"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("mounted at"),
        "{}",
        crate::common::describe(&o)
    );
    let snap = mp.join("latest/files");
    let result = std::panic::catch_unwind(|| {
        for round in 0..2 {
            // ls -l marks the file with an ACL (and its hard link, one inode) with '+'.
            let ls = sh_ok(&format!("ls -l {}/etc", s(&snap)));
            let plus: Vec<&str> = ls
                .lines()
                .filter(|l| l.get(10..11) == Some("+"))
                .filter_map(|l| l.rsplit(' ').next())
                .collect();
            assert_eq!(plus, ["secret", "secret.hl"], "round {round}: {ls}");
            assert_eq!(
                sh_ok(&format!(
                    "getfattr -e hex --only-values -n system.posix_acl_access {}/etc/secret | od -An -tx1 | tr -d ' \\n'",
                    s(&snap)
                )),
                sh_ok(&format!(
                    "getfattr -e hex --only-values -n system.posix_acl_access {}/etc/secret | od -An -tx1 | tr -d ' \\n'",
                    s(&src)
                )),
                "round {round}: ACL differs"
            );
            let none = sh(&format!(
                "getfattr -n system.posix_acl_access {}/etc/nginx/sites/s2.conf",
                s(&snap)
            ));
            assert!(
                !none.status.success(),
                "round {round}: ACL on a file without one"
            );
            assert_eq!(
                sh_ok(&format!(
                    "getfattr --only-values -n user.note {}/etc/nginx/sites/s0.conf",
                    s(&snap)
                )),
                "hello",
                "round {round}"
            );
            assert!(
                !sh(&format!(
                    "getfattr -n user.note {}/etc/nginx/sites/s1.conf",
                    s(&snap)
                ))
                .status
                .success(),
                "round {round}: xattr on a file without it"
            );
            // The label is served as stored; a missing one is "not supported", which `ls -l`
            // remembers per device instead of asking every entry again.
            assert_eq!(
                sh_ok(&format!(
                    "getfattr --only-values -n security.selinux {}/etc/nginx/sites/s0.conf",
                    s(&snap)
                )),
                "system_u:object_r:etc_t:s0",
                "round {round}"
            );
            let unlabelled = sh(&format!(
                "getfattr -n security.selinux {}/etc/nginx/sites/s1.conf",
                s(&snap)
            ));
            assert!(
                !unlabelled.status.success()
                    && String::from_utf8_lossy(&unlabelled.stderr).contains("not supported"),
                "round {round}: {}",
                crate::common::describe(&unlabelled)
            );
            assert_eq!(
                fs::read_link(snap.join("etc/link")).unwrap(),
                Path::new("nginx/sites/s1.conf"),
                "round {round}"
            );
            assert_eq!(
                fs::read_to_string(snap.join("etc/link")).unwrap(),
                "server 1;\n"
            );
            // 9 MiB through a 2 MiB chunk cache.
            assert!(
                fs::read(snap.join("big.bin")).unwrap() == pseudo_random(9 << 20, 7),
                "round {round}: big.bin differs"
            );
        }
    });
    r.ok(&["umount", s(&mp)]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// An unchanged file is one inode in every snapshot that holds it (the same entry of the same
/// immutable tree), so `diff -rq` of two snapshots tells it equal from `stat` alone; a changed
/// file and every directory keep numbers of their own, and contents are served as stored.
#[test]
fn unchanged_files_share_one_inode_across_snapshots() {
    let r = Repo::new();
    let src = r.mkdir("src");
    sample_tree(&src);
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/a.txt"), b"same in both\n").unwrap();
    r.backup_dir(&src, "files");
    fs::write(src.join("etc/nginx/sites/s5.conf"), b"server 55;\n").unwrap();
    r.backup_dir(&src, "files");
    let mp = r.mkdir("mnt");
    r.ok(&["mount", s(&mp), "--daemon"]);
    let result = std::panic::catch_unwind(|| {
        let snaps = sh_ok(&format!("ls {}/snapshots/files", s(&mp)));
        let names: Vec<&str> = snaps.lines().collect();
        assert_eq!(names.len(), 2, "{snaps}");
        let a = mp.join("snapshots/files").join(names[0]);
        let b = mp.join("snapshots/files").join(names[1]);
        let ino = |p: &Path| sh_ok(&format!("stat -c %i {}", s(p))).trim().to_owned();
        assert_eq!(ino(&a.join("docs/a.txt")), ino(&b.join("docs/a.txt")));
        assert_eq!(
            ino(&b.join("docs/a.txt")),
            ino(&mp.join("latest/files/docs/a.txt"))
        );
        assert_ne!(
            ino(&a.join("docs")),
            ino(&b.join("docs")),
            "directories never alias"
        );
        let (old, new) = (
            a.join("etc/nginx/sites/s5.conf"),
            b.join("etc/nginx/sites/s5.conf"),
        );
        assert_ne!(ino(&old), ino(&new));
        assert_eq!(fs::read(&old).unwrap(), b"server 5;\n");
        assert_eq!(fs::read(&new).unwrap(), b"server 55;\n");
        assert_eq!(fs::read(a.join("docs/a.txt")).unwrap(), b"same in both\n");
        let d = sh(&format!("diff -rq {} {}", s(&a), s(&b)));
        let out = String::from_utf8_lossy(&d.stdout);
        let differ: Vec<&str> = out.lines().collect();
        assert_eq!(differ.len(), 1, "{out}");
        assert!(
            differ[0].contains("s5.conf") && differ[0].ends_with("differ"),
            "{out}"
        );
    });
    r.ok(&["umount", s(&mp)]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
