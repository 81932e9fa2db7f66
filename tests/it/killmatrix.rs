//! Real crashes (issue 16): every writer killed with SIGKILL at evenly spaced points of a
//! measured full run, each on a fresh copy of one repository. After each kill: `check
//! --read-data` passes, every snapshot acknowledged before restores byte-identical, the
//! passphrase (old or new, for `key passwd`) still opens it, and the same command run again
//! succeeds. `WAYBACK_KILL_POINTS` sets the points per writer (default 5; scripts/fault.sh
//! runs more). The fault-injecting backend (tests/it/fault.rs) covers every durability barrier
//! inside one process; this covers what only a real process death does (open descriptors,
//! locks, RocksDB's own files, half-written staging files).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

fn points() -> u32 {
    std::env::var("WAYBACK_KILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn copy_repo(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The command of one writer, on the repository at `repo`, as argument lists after `--repo`.
struct Writer {
    name: &'static str,
    args: Vec<String>,
    /// Extra environment (the new passphrase of `key passwd`).
    env: Vec<(&'static str, &'static str)>,
}

#[test]
fn every_writer_killed_anywhere_leaves_a_repository_that_checks_restores_and_runs_again() {
    let base = Repo::new();
    // History every kill must leave intact: two file snapshots and a stream.
    let a = base.scratch("a");
    gen_small_tree(&a, 71);
    write_random(&a.join("big.bin"), 6 * MIB, 72);
    let snap_a = base.backup_dir(&a, "a");
    let id_a = str_of(&snap_a, "/id").to_string();
    let b = base.scratch("b");
    gen_small_tree(&b, 73);
    let snap_b = base.backup_dir(&b, "b");
    let id_b = str_of(&snap_b, "/id").to_string();
    // What the killed writers write: a larger tree and a 40 MB stream.
    let c = base.scratch("c");
    gen_small_tree(&c, 74);
    for i in 0..6 {
        write_random(&c.join(format!("r{i}.bin")), 4 * MIB, 80 + i);
    }
    let writers = vec![
        Writer {
            name: "backup",
            args: vec!["backup".into(), s(&c).into(), "--source".into(), "c".into()],
            env: vec![],
        },
        Writer {
            name: "stream backup",
            args: vec![
                "backup".into(),
                "--source".into(),
                "dump".into(),
                "--command".into(),
                "head -c 40000000 /dev/urandom".into(),
                "--stdin-name".into(),
                "d.bin".into(),
            ],
            env: vec![],
        },
        Writer {
            name: "forget",
            args: vec!["forget".into(), "--keep-last".into(), "1".into()],
            env: vec![],
        },
        Writer {
            name: "index rebuild",
            args: vec!["index".into(), "rebuild".into()],
            env: vec![],
        },
        Writer {
            name: "repair index",
            args: vec!["repair".into(), "index".into()],
            env: vec![],
        },
        Writer {
            name: "key passwd",
            args: vec!["key".into(), "passwd".into()],
            env: vec![("WAYBACK_NEW_PASSWORD", "the new one")],
        },
    ];
    let mut tried = 0;
    for w in &writers {
        let cmd = |repo: &Path| {
            let mut args: Vec<&str> = vec!["--repo", s(repo)];
            args.extend(w.args.iter().map(String::as_str));
            let mut c = base.cmd(&args);
            for (k, v) in &w.env {
                c.env(k, v);
            }
            c
        };
        // A full run, to spread the kill points over it.
        let probe = base.scratch(&format!("probe-{}", w.name.replace(' ', "-")));
        copy_repo(&base.path, &probe);
        let t = Instant::now();
        let o = run(cmd(&probe));
        let full = t.elapsed();
        assert!(o.status.success(), "{}: {}", w.name, describe(&o));
        fs::remove_dir_all(&probe).unwrap();
        let n = points();
        for k in 0..n {
            let delay = (full * (k + 1) / (n + 1)).max(Duration::from_millis(1));
            let repo = base.scratch(&format!("kill-{}-{k}", w.name.replace(' ', "-")));
            copy_repo(&base.path, &repo);
            let mut child = cmd(&repo)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let _ = child.wait();
            tried += 1;
            let ctx = format!("{} killed after {delay:?} of {full:?}", w.name);
            // The passphrase that opens it: the new one once `key passwd` got that far.
            let pass = {
                let o = run(base.cmd_with_password(
                    &base.password,
                    &["--repo", s(&repo), "snapshots", "--json"],
                ));
                if o.status.success() {
                    base.password.clone()
                } else {
                    assert_eq!(w.name, "key passwd", "{ctx}: {}", describe(&o));
                    "the new one".to_string()
                }
            };
            let wb = |args: &[&str]| {
                let mut a = vec!["--repo", s(&repo)];
                a.extend_from_slice(args);
                run(base.cmd_with_password(&pass, &a))
            };
            let o = wb(&["check", "--read-data"]);
            assert_code(&o, exit::OK, &format!("check, {ctx}"));
            // Snapshots acknowledged before the kill restore byte-identical (forget may have
            // removed `a`: it was asked to, and it is the older one).
            let listed = wb(&["snapshots", "--json"]);
            let listed = String::from_utf8_lossy(&listed.stdout).to_string();
            for (id, dir) in [(&id_a, &a), (&id_b, &b)] {
                if w.name == "forget" && id == &id_a && !listed.contains(id.as_str()) {
                    continue;
                }
                assert!(listed.contains(id.as_str()), "{ctx}: {id} gone: {listed}");
                let out = base.scratch(&format!("r-{}-{k}-{}", w.name.replace(' ', "-"), &id[..8]));
                assert_code(
                    &wb(&["restore", &id[..8], "--target", s(&out)]),
                    exit::OK,
                    &format!("restore {id}, {ctx}"),
                );
                assert_diff_r_clean(dir, &out);
                fs::remove_dir_all(&out).unwrap();
            }
            // The same command again succeeds (key passwd: with the passphrase that opens it).
            let mut again = vec!["--repo", s(&repo)];
            again.extend(w.args.iter().map(String::as_str));
            let mut c = base.cmd_with_password(&pass, &again);
            for (k, v) in &w.env {
                c.env(k, v);
            }
            let o = run(c);
            assert!(o.status.success(), "{ctx}: run again: {}", describe(&o));
            let o = run(base.cmd_with_password(
                if w.name == "key passwd" {
                    "the new one"
                } else {
                    &pass
                },
                &["--repo", s(&repo), "check", "--read-data"],
            ));
            assert_code(&o, exit::OK, &format!("check after the rerun, {ctx}"));
            fs::remove_dir_all(&repo).unwrap();
        }
    }
    println!(
        "kill matrix: {tried} kills over {} writers, 0 failures",
        writers.len()
    );
}
