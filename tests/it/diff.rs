//! `wayback diff` and `wayback log`: correctness on generated trees, cost proportional to the
//! change, and agreement with `diff -rq` run through the mount.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use crate::common::{s, Repo};
use crate::mount::Mounted;

fn tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let p = root.join(format!("l1-{}/l2-{}/d{d:03}", d % 3, d % 5));
        fs::create_dir_all(&p).unwrap();
        for f in 0..per_dir {
            fs::write(
                p.join(format!("f{f:03}.txt")),
                format!("dir {d} file {f}\n"),
            )
            .unwrap();
        }
    }
}

fn ids(r: &Repo) -> Vec<String> {
    r.snapshots()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

fn diff(r: &Repo, args: &[&str]) -> (i32, String) {
    let mut a = vec!["diff"];
    a.extend_from_slice(args);
    let o = r.wb(&a);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn trees_read(stat: &str) -> u64 {
    let i = stat.find(" tree blocks read").expect("stat line");
    stat[..i].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn identical_snapshots_exit_0_and_read_nothing() {
    let r = Repo::new();
    let src = r.mkdir("src");
    tree(&src, 30, 20);
    r.backup_dir(&src, "t");
    r.backup_dir(&src, "t");
    let v = ids(&r);
    let (code, out) = diff(&r, &[&v[0], &v[1], "--stat"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(trees_read(&out), 0, "{out}");
    let (code, out) = diff(&r, &[&v[0], &v[1]]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn one_deep_change_costs_its_path_only() {
    let r = Repo::new();
    let src = r.mkdir("src");
    tree(&src, 60, 30);
    r.backup_dir(&src, "t");
    fs::write(src.join("l1-1/l2-4/d049/f007.txt"), "changed\n").unwrap();
    r.backup_dir(&src, "t");
    let v = ids(&r);
    let (code, out) = diff(&r, &[&v[0], &v[1], "--name-status", "--ignore-meta"]);
    assert_eq!(code, 1);
    assert_eq!(out, "M\tl1-1/l2-4/d049/f007.txt\n");
    let (_, stat) = diff(&r, &[&v[0], &v[1], "--stat", "--ignore-meta"]);
    // root + l1-1 + l2-4 + d049, in both snapshots: 8 tree blocks, not ~70.
    assert_eq!(trees_read(&stat), 8, "{stat}");
    // Restricting to a path works too.
    let (code, out) = diff(&r, &[&v[0], &v[1], "l1-0", "--name-status"]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn added_removed_type_and_metadata_changes() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::create_dir_all(src.join("gone/sub")).unwrap();
    fs::write(src.join("gone/sub/x"), "x").unwrap();
    fs::write(src.join("f2l"), "file").unwrap();
    fs::write(src.join("f2d"), "file").unwrap();
    std::os::unix::fs::symlink("target", src.join("l2f")).unwrap();
    fs::write(src.join("perm"), "p").unwrap();
    let weird = std::ffi::OsStr::from_bytes(&[b'n', 0xff, 0xfe]);
    fs::write(src.join(weird), "v1").unwrap();
    r.backup_dir(&src, "t");
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::create_dir_all(src.join("new/deep")).unwrap();
    fs::write(src.join("new/deep/y"), "y").unwrap();
    fs::remove_file(src.join("f2l")).unwrap();
    std::os::unix::fs::symlink("elsewhere", src.join("f2l")).unwrap();
    fs::remove_file(src.join("f2d")).unwrap();
    fs::create_dir(src.join("f2d")).unwrap();
    fs::remove_file(src.join("l2f")).unwrap();
    fs::write(src.join("l2f"), "now a file").unwrap();
    Command::new("chmod")
        .arg("600")
        .arg(src.join("perm"))
        .status()
        .unwrap();
    fs::write(src.join(weird), "v2").unwrap();
    r.backup_dir(&src, "t");
    let v = ids(&r);
    let o = r.wb(&["diff", &v[0], &v[1], "--name-status", "-z", "--ignore-meta"]);
    assert_eq!(o.status.code(), Some(1));
    let got: BTreeSet<Vec<u8>> = o
        .stdout
        .split(|b| *b == 0)
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    let mut want: BTreeSet<Vec<u8>> = [
        "D\tgone",
        "D\tgone/sub",
        "D\tgone/sub/x",
        "A\tnew",
        "A\tnew/deep",
        "A\tnew/deep/y",
        "T\tf2l",
        "T\tf2d",
        "T\tl2f",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut m = b"M\tn".to_vec();
    m.extend_from_slice(&[0xff, 0xfe]);
    want.insert(m);
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&o.stdout));
    // Metadata-only changes are shown unless --ignore-meta.
    let (_, out) = diff(&r, &[&v[0], &v[1], "--name-status"]);
    assert!(out.lines().any(|l| l == "P\tperm"), "{out}");
    // JSON lines carry sizes, modes and digests.
    let (_, out) = diff(&r, &[&v[0], &v[1], "--json"]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let perm = lines
        .iter()
        .find(|l| l["path"] == "perm")
        .expect("perm change");
    assert_eq!(perm["change"], "metadata");
    assert_eq!(
        (perm["old"]["mode"].as_u64(), perm["new"]["mode"].as_u64()),
        (Some(0o644), Some(0o600))
    );
    assert!(
        lines.iter().any(|l| l["path_hex"].is_string()),
        "non-UTF-8 path carries path_hex"
    );
}

#[test]
fn name_status_agrees_with_diff_rq_through_the_mount() {
    let r = Repo::new();
    let src = r.mkdir("src");
    tree(&src, 12, 8);
    fs::create_dir_all(src.join("olddir/inner")).unwrap();
    fs::write(src.join("olddir/inner/a"), "a").unwrap();
    fs::write(src.join("kind"), "file").unwrap();
    r.backup_dir(&src, "t");
    fs::remove_dir_all(src.join("olddir")).unwrap();
    fs::create_dir_all(src.join("newdir/inner")).unwrap();
    fs::write(src.join("newdir/inner/b"), "b").unwrap();
    fs::remove_file(src.join("kind")).unwrap();
    fs::create_dir(src.join("kind")).unwrap();
    fs::write(src.join("l1-0/l2-0/d000/f001.txt"), "changed").unwrap();
    fs::remove_file(src.join("l1-2/l2-2/d002/f003.txt")).unwrap();
    r.backup_dir(&src, "t");
    let v = ids(&r);
    let (_, ours) = diff(&r, &[&v[0], &v[1], "--name-status", "--ignore-meta"]);
    let ours: Vec<(char, String)> = ours
        .lines()
        .map(|l| (l.chars().next().unwrap(), l[2..].to_string()))
        .collect();
    // diff -rq reports an added/removed directory once, not its contents.
    let top: BTreeSet<(char, String)> = ours
        .iter()
        .filter(|(k, p)| {
            !ours.iter().any(|(k2, q)| {
                k2 == k && (*k == 'A' || *k == 'D') && p.starts_with(&format!("{q}/"))
            })
        })
        .cloned()
        .collect();
    let m = Mounted::new(&r, &[]);
    let names: Vec<String> = fs::read_dir(m.p("snapshots/t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    let (a, b) = (
        m.p(&format!("snapshots/t/{}", names[0])),
        m.p(&format!("snapshots/t/{}", names[1])),
    );
    let o = Command::new("diff")
        .args(["-rq", "--no-dereference"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let rel = |p: &str, base: &Path| {
        p.strip_prefix(s(base))
            .unwrap()
            .trim_start_matches('/')
            .to_string()
    };
    let mut theirs = BTreeSet::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(rest) = l.strip_prefix("Only in ") {
            let (dir, name) = rest.split_once(": ").unwrap();
            let (kind, base) = if dir.starts_with(s(&a)) {
                ('D', &a)
            } else {
                ('A', &b)
            };
            let d = rel(dir, base);
            theirs.insert((
                kind,
                if d.is_empty() {
                    name.to_string()
                } else {
                    format!("{d}/{name}")
                },
            ));
        } else if let Some(rest) = l.strip_prefix("Files ") {
            let p = rest.split(" and ").next().unwrap();
            theirs.insert(('M', rel(p, &a)));
        } else if let Some(rest) = l.strip_prefix("File ") {
            let p = rest.split(" is a ").next().unwrap();
            theirs.insert(('T', rel(p, &a)));
        } else {
            panic!("unexpected diff -rq line: {l}");
        }
    }
    assert_eq!(top, theirs);
}

#[test]
fn log_lists_versions_newest_first() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("other"), "o").unwrap();
    r.backup_dir(&src, "t");
    fs::write(src.join("f"), "one").unwrap();
    r.backup_dir(&src, "t");
    r.backup_dir(&src, "t");
    fs::write(src.join("f"), "two!").unwrap();
    r.backup_dir(&src, "t");
    fs::remove_file(src.join("f")).unwrap();
    r.backup_dir(&src, "t");
    let o = r.ok(&["log", "--source", "t", "/f", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    // Newest first: removed, then "two!", then "one" (the path's absence before it first
    // appeared is not a version).
    assert_eq!(lines[0]["exists"], false);
    assert_eq!(lines[1]["node"]["size"], 4);
    assert_eq!(lines[2]["node"]["size"], 3);
}

#[test]
fn history_in_the_mount_shows_each_version_once() {
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/app.conf"), "v1\n").unwrap();
    let s1 = r.backup_dir(&src, "t");
    r.backup_dir(&src, "t"); // unchanged: no new version
    fs::write(src.join("etc/app.conf"), "version two\n").unwrap();
    let s3 = r.backup_dir(&src, "t");
    let m = Mounted::new(&r, &[]);
    let dir = m.p("history/t/etc/app.conf");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            s1["time_name"].as_str().unwrap().to_string(),
            s3["time_name"].as_str().unwrap().to_string()
        ]
    );
    assert_eq!(fs::read(dir.join(&names[0])).unwrap(), b"v1\n");
    assert_eq!(fs::read(dir.join(&names[1])).unwrap(), b"version two\n");
    assert!(m.p("history/t/etc").is_dir());
    assert!(!m.p("history/t/nope").exists());
}

/// `diff --content` hands diff(1) the two versions as private temporary files (0600, in a 0700
/// directory with an unpredictable name under $TMPDIR, removed afterwards) and no passphrase.
/// A `diff` first in PATH records what it was given, then runs the real one.
#[test]
fn content_diff_uses_private_files_and_passes_no_passphrase() {
    use std::os::unix::fs::PermissionsExt;
    let r = Repo::new();
    let src = r.mkdir("src");
    fs::write(src.join("secret.txt"), "password=one\n").unwrap();
    r.backup_dir(&src, "s");
    fs::write(src.join("secret.txt"), "password=two\n").unwrap();
    r.backup_dir(&src, "s");
    let ids = ids(&r);
    let bin = r.mkdir("bin");
    let log = r.scratch("diff.log");
    fs::write(
        bin.join("diff"),
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do prev=$last; last=$a; done\n{{ stat -c '%a %n' \"$(dirname \"$last\")\" \"$prev\" \"$last\"; env | cut -d= -f1 | sed 's/^/env /'; }} >> {}\nexec /usr/bin/diff \"$@\"\n",
            s(&log)
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("diff"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = r.cmd(&["diff", "--content", &ids[0], &ids[1]]);
    c.env(
        "PATH",
        format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default()),
    );
    let o = crate::common::run(c);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("-password=one") && out.contains("+password=two"),
        "{out}"
    );
    let rec = fs::read_to_string(&log).expect("diff(1) was not run");
    let stats: Vec<(&str, &Path)> = rec
        .lines()
        .filter(|l| !l.starts_with("env "))
        .map(|l| {
            let (mode, p) = l.split_once(' ').unwrap();
            (mode, Path::new(p))
        })
        .collect();
    assert_eq!(stats.len(), 3, "{rec}");
    let dir = stats[0].1;
    assert_eq!(stats[0].0, "700", "temporary directory {}", dir.display());
    assert_eq!(stats[1].0, "600", "old version {}", stats[1].1.display());
    assert_eq!(stats[2].0, "600", "new version {}", stats[2].1.display());
    assert!(
        dir.starts_with(r.tmp()),
        "{} is not under TMPDIR",
        dir.display()
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    let leaked: Vec<_> = rec
        .lines()
        .filter(|l| l.starts_with("env WAYBACK_PASS"))
        .collect();
    assert!(leaked.is_empty(), "diff(1) got {leaked:?}");
    assert!(rec.contains("env PATH"), "{rec}");
}
