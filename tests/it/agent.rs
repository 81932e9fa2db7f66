//! The agent: configuration checks with line numbers, scheduled command sources appearing
//! under /at while mounted, failing jobs retried without partial snapshots, the writer lock.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{s, KillOnDrop, Repo};
use crate::mount::Mounted;
use crate::pitr::repo_for_postgres;

#[test]
fn check_config_names_the_line() {
    let r = Repo::new();
    let cfg = r.scratch("bad.toml");
    fs::write(&cfg, format!("repo = \"{}\"\n\n[[source]]\nname = \"db\"\ntype = \"command\"\ncommand = \"true\"\nfile = \"x\"\nevery = \"often\"\n", s(&r.path))).unwrap();
    let o = r.wb(&["agent", "--config", s(&cfg), "--check-config"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:4: source 'db'", s(&cfg))) && err.contains("every"),
        "{err}"
    );
    fs::write(&cfg, format!("repo = \"{}\"\n[[source]]\nname = \"db\"\ntype = \"command\"\ncommand = \"true\"\nfile = \"x\"\nevery = \"1h\"\n", s(&r.path))).unwrap();
    r.ok(&["agent", "--config", s(&cfg), "--check-config"]);
}

#[test]
fn scheduled_dumps_appear_in_the_mount_and_failures_leave_nothing() {
    let r = Repo::new();
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\n\n[[source]]\nname = \"dump\"\ntype = \"command\"\ncommand = \"date +%s%N; seq 1 50000\"\nfile = \"db.dump\"\nevery = \"2s\"\n\n[[source]]\nname = \"broken\"\ntype = \"command\"\ncommand = \"echo partial; exit 4\"\nfile = \"x\"\nevery = \"1h\"\n",
            s(&r.path)
        ),
    )
    .unwrap();
    // One snapshot first, so the mount has something to show.
    r.backup(&[
        "--command",
        "echo first",
        "--stdin-name",
        "db.dump",
        "--source",
        "dump",
    ]);
    let m = Mounted::new(&r, &[]);
    let agent = KillOnDrop(
        r.cmd(&["agent", "--config", s(&cfg)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = fs::read_dir(m.p("snapshots/dump"))
            .map(|d| d.count())
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scheduled snapshots did not appear under the mount ({n})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let latest = fs::read_to_string(m.p("at/now/dump/db.dump")).unwrap();
    assert!(latest.ends_with("50000\n"));
    // The writer lock is held by the agent.
    let o = r.wb(&[
        "backup",
        "--command",
        "true",
        "--stdin-name",
        "x",
        "--source",
        "cli",
    ]);
    assert_eq!(
        o.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Status over the control socket: the broken source failed, nothing of it is visible.
    let st = r.ok(&["agent", "--config", s(&cfg), "--status"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let broken = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "broken")
        .unwrap();
    assert!(broken["failures"].as_u64().unwrap() >= 1, "{st:#}");
    assert!(
        broken["last_error"].as_str().unwrap().contains("exit"),
        "{st:#}"
    );
    assert!(!m.p("latest/broken").exists());
    assert!(r.snapshots().iter().all(|s| s["source"] != "broken"));
    drop(agent);
}

/// A config whose only source is passive (no job runs), for the socket tests.
fn passive_config(r: &Repo) -> std::path::PathBuf {
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\n\n[[source]]\nname = \"main\"\ntype = \"postgres-wal\"\ncluster = \"main\"\n",
            s(&r.path)
        ),
    )
    .unwrap();
    cfg
}

/// Starts the agent with umask 0 (so a socket that took the umask's mode would be 0777).
fn spawn_agent(r: &Repo, cfg: &Path) -> KillOnDrop {
    use std::os::unix::process::CommandExt;
    let mut c = r.cmd(&["agent", "--config", s(cfg)]);
    c.stdout(Stdio::null())
        .stderr(fs::File::create(r.scratch("agent.log")).unwrap());
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    KillOnDrop(c.spawn().unwrap())
}

fn postgres_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

#[test]
fn sockets_have_their_final_mode_and_owner_the_moment_they_appear() {
    let r = Repo::new();
    repo_for_postgres(&r);
    let (pg_uid, pg_gid) = postgres_ids();
    let cfg = passive_config(&r);
    let wal = r.path.join("wal-push.sock");
    let ctl = r.path.join("agent.sock");
    let agent = spawn_agent(&r, &cfg);
    // Watch both paths as closely as we can: every sighting must already be final.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = [false, false];
    while !(seen[0] && seen[1]) {
        assert!(
            Instant::now() < deadline,
            "the agent's sockets did not appear"
        );
        for (i, (p, uid, gid)) in [(&wal, pg_uid, pg_gid), (&ctl, 0, 0)].iter().enumerate() {
            if let Ok(m) = fs::symlink_metadata(p) {
                assert!(m.file_type().is_socket(), "{}", p.display());
                assert_eq!(
                    (m.mode() & 0o7777, m.uid(), m.gid()),
                    (0o600, *uid, *gid),
                    "{} right after it appeared",
                    p.display()
                );
                seen[i] = true;
            }
        }
    }
    // The control socket works for root.
    let st = r.ok(&["agent", "--config", s(&cfg), "--status"]);
    assert!(String::from_utf8_lossy(&st.stdout).contains("\"main\""));
    drop(agent);
    assert!(!wal.exists() && !ctl.exists(), "sockets left after SIGTERM");
}

#[test]
fn a_symlink_planted_at_a_socket_path_is_never_followed() {
    let r = Repo::new();
    repo_for_postgres(&r);
    let cfg = passive_config(&r);
    let wal = r.path.join("wal-push.sock");
    // A root-owned file outside the repository, the owner's target.
    let target = r.scratch("shadow");
    fs::write(&target, "secret\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let untouched = |what: &str| {
        let m = fs::metadata(&target).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (0, 0, 0o644),
            "target touched: {what}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "secret\n");
    };
    // 1. Planted before the start (as the owner would): the agent refuses to replace it.
    for name in ["wal-push.sock", "agent.sock"] {
        let p = r.path.join(name);
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let mut agent = spawn_agent(&r, &cfg);
        let exited = crate::common::wait_until(Duration::from_secs(20), || {
            matches!(agent.0.try_wait(), Ok(Some(_)))
        });
        let err = fs::read_to_string(r.scratch("agent.log")).unwrap();
        assert!(
            exited,
            "{name}: the agent replaced the symlink and started: {err}"
        );
        assert!(err.contains("refusing to replace"), "{name}: {err}");
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        untouched(name);
        fs::remove_file(&p).unwrap();
        // A failed start leaves no socket behind.
        assert!(!wal.exists() && !r.path.join("agent.sock").exists());
    }
    // 2. Swapped in right after bind, racing the agent: whatever the agent did after bind
    // (today's main chowned and chmodded by path) must not reach the target.
    for round in 0..20 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let racer = {
            let (wal, target, stop) = (wal.clone(), target.clone(), stop.clone());
            let away = r.scratch("away.sock");
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if fs::rename(&wal, &away).is_ok() {
                        std::os::unix::fs::symlink(&target, &wal).unwrap();
                        return true;
                    }
                }
                false
            })
        };
        let mut agent = spawn_agent(&r, &cfg);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !racer.is_finished() {
            assert!(Instant::now() < deadline, "agent did not start");
            if let Ok(Some(st)) = agent.0.try_wait() {
                panic!(
                    "agent exited: {st}: {}",
                    fs::read_to_string(r.scratch("agent.log")).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Let the agent finish starting (its control socket comes up), then stop it.
        crate::common::wait_until(Duration::from_secs(30), || {
            r.path.join("agent.sock").exists()
        });
        assert!(
            racer.join().unwrap(),
            "round {round}: the socket never appeared"
        );
        drop(agent);
        untouched(&format!("round {round}"));
        // The symlink is left alone at shutdown, too.
        assert!(fs::symlink_metadata(&wal).unwrap().file_type().is_symlink());
        fs::remove_file(&wal).unwrap();
        let _ = fs::remove_file(r.scratch("away.sock"));
    }
}

/// What a command saw of the passphrase: the `WAYBACK_*PASSWORD` lines of its `env` output.
fn secrets_in(env: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(env);
    assert!(text.contains("PATH="), "not an environment listing: {text}");
    text.lines()
        .filter(|l| l.contains("PASSWORD=") || l.contains(crate::common::PASSWORD))
        .map(str::to_string)
        .collect()
}

#[test]
fn commands_run_for_backups_never_see_the_passphrase() {
    let r = Repo::new();
    // The CLI: --command (the backup itself opened the repository with WAYBACK_PASSWORD).
    let mut c = r.cmd(&[
        "backup",
        "--command",
        "env",
        "--stdin-name",
        "env.txt",
        "--source",
        "cmd",
    ]);
    c.env("WAYBACK_NEW_PASSWORD", "another secret phrase");
    let o = crate::common::run(c);
    crate::common::assert_code(&o, 0, "backup --command env");
    let env = r.cat("latest:/env.txt", &["--source", "cmd"]);
    assert_eq!(secrets_in(&env), Vec::<String>::new());
    // --basebackup: the command's tar stream carries its environment.
    let dir = r.mkdir("bb");
    let cmd = format!("env > {0}/env.txt && tar -cf - -C {0} env.txt", s(&dir));
    r.ok(&["backup", "--basebackup", &cmd, "--source", "bb"]);
    let env = r.cat("latest:/env.txt", &["--source", "bb"]);
    assert_eq!(secrets_in(&env), Vec::<String>::new());
    // The agent's command sources (the agent got the passphrase from WAYBACK_PASSWORD).
    let cfg = r.scratch("env.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\n\n[[source]]\nname = \"agent-env\"\ntype = \"command\"\ncommand = \"env\"\nfile = \"env.txt\"\nevery = \"1h\"\n",
            s(&r.path)
        ),
    )
    .unwrap();
    let agent = spawn_agent(&r, &cfg);
    assert!(
        crate::common::wait_until(Duration::from_secs(30), || r
            .snapshots()
            .iter()
            .any(|x| x["source"] == "agent-env")),
        "the agent's job did not run: {}",
        fs::read_to_string(r.scratch("agent.log")).unwrap_or_default()
    );
    drop(agent);
    let env = r.cat("latest:/env.txt", &["--source", "agent-env"]);
    assert_eq!(secrets_in(&env), Vec::<String>::new());
}

/// Peak resident memory of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn the_control_socket_bounds_lines_and_escapes_what_it_echoes() {
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixStream;
    let r = Repo::new();
    let cfg = passive_config(&r);
    let agent = spawn_agent(&r, &cfg);
    let ctl = r.path.join("agent.sock");
    assert!(crate::common::wait_until(Duration::from_secs(30), || ctl.exists()));
    let connect = || {
        let c = UnixStream::connect(&ctl).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    };
    // Echoed names come back JSON-escaped: no raw control characters, still the same text.
    let evil = "x\u{1b}[2J\u{7}\"}{\r\t\u{0}y";
    let mut c = connect();
    c.write_all(format!("run {evil}\n").as_bytes()).unwrap();
    let mut line = Vec::new();
    std::io::BufReader::new(&c)
        .read_until(b'\n', &mut line)
        .unwrap();
    assert_eq!(line.pop(), Some(b'\n'));
    assert!(
        line.iter().all(|&b| b >= 0x20 && b != 0x7f),
        "raw control bytes echoed: {:?}",
        String::from_utf8_lossy(&line)
    );
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains(evil), "{v}");
    // 100 MB without a newline: answered with an error after 64 KiB, memory stays flat.
    let pid = agent.0.id();
    let before = vm_hwm_kib(pid);
    let c = connect();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        while sent < 100 << 20 {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = w.shutdown(std::net::Shutdown::Write);
        sent
    });
    let mut reply = String::new();
    let _ = (&c).read_to_string(&mut reply);
    let sent = writer.join().unwrap();
    let after = vm_hwm_kib(pid);
    assert!(
        reply.contains("longer than 65536 bytes") && reply.contains("\"ok\":false"),
        "reply {reply:?} after {sent} bytes"
    );
    assert!(
        after < before + 16 * 1024,
        "agent peak memory grew from {before} KiB to {after} KiB"
    );
    // The agent still answers.
    let st = r.ok(&["agent", "--config", s(&cfg), "--status"]);
    assert!(String::from_utf8_lossy(&st.stdout).contains("\"main\""));
    drop(agent);
}

#[test]
fn huge_durations_are_refused_with_a_clear_error() {
    let r = Repo::new();
    let cfg = r.scratch("every.toml");
    let with_every = |every: &str| {
        fs::write(
            &cfg,
            format!("repo = \"{}\"\n\n[[source]]\nname = \"db\"\ntype = \"command\"\ncommand = \"true\"\nfile = \"x\"\nevery = \"{every}\"\n", s(&r.path)),
        )
        .unwrap();
        r.wb(&["agent", "--config", s(&cfg), "--check-config"])
    };
    // 213503982334602 days overflow u64 seconds; 10^6 years overflow the calendar.
    for huge in ["213503982334602d", "99999999999999999999s", "1000000y"] {
        let o = with_every(huge);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "every = {huge}: {err}");
        assert!(
            err.contains(&format!("{}:4: source 'db': every", s(&cfg))),
            "every = {huge}: {err}"
        );
    }
    for fine in ["90m", "1h 30m", "2d"] {
        let o = with_every(fine);
        assert_eq!(o.status.code(), Some(0), "every = {fine}: {o:?}");
    }
    for huge in ["213503982334602d", "99999999999999999999", "200y", "0"] {
        let o = r.wb(&["key", "unlock", "--timeout", huge]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--timeout {huge}: {err}");
        assert!(err.contains("--timeout"), "--timeout {huge}: {err}");
    }
    r.ok(&["key", "unlock", "--timeout", "90s"]);
    r.ok(&["key", "lock"]);
}

/// Lines of the agent's log containing `needle`.
fn log_count(log: &Path, needle: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn the_agent_forgets_by_its_policy_and_prunes_on_its_schedule() {
    let r = Repo::new();
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\nprune_every = \"3s\"\nprune_grace = \"0s\"\n\n[[source]]\nname = \"rnd\"\ntype = \"command\"\ncommand = \"head -c 2097152 /dev/urandom\"\nfile = \"r.bin\"\nevery = \"1s\"\nkeep = {{ last = 2 }}\n",
            s(&r.path)
        ),
    )
    .unwrap();
    let log = r.scratch("agent.log");
    let agent = KillOnDrop(
        r.cmd(&["-v", "agent", "--config", s(&cfg)])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_count(&log, "job done") < 6 || log_count(&log, "prune done") < 2 {
        assert!(
            Instant::now() < deadline,
            "no runs and prunes: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    let all = fs::read_to_string(&log).unwrap();
    assert!(all.contains("retention applied"), "{all}");
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 2, "keep last = 2 left {}", snaps.len());
    // Six 2 MiB snapshots were written; at most the two kept and the two forgotten since the
    // last prune may still be stored.
    let stored = r.stored_bytes();
    assert!(
        stored < 9 * (1 << 20),
        "stored {stored} bytes after pruning"
    );
    r.ok(&["check", "--read-data"]);
}

#[test]
fn the_agent_warns_when_the_repository_filesystem_is_80_percent_full() {
    let r = Repo::new();
    let small = r.mkdir("small");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Umount(small.clone());
    let repo = small.join("repo");
    let o = crate::common::run(r.cmd(&["--repo", s(&repo), "init"]));
    assert!(o.status.success(), "{o:?}");
    fs::write(small.join("filler"), vec![7u8; 27 << 20]).unwrap();
    let cfg = r.scratch("full.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\n\n[[source]]\nname = \"tiny\"\ntype = \"command\"\ncommand = \"echo hi\"\nfile = \"t\"\nevery = \"1h\"\n",
            s(&repo)
        ),
    )
    .unwrap();
    let log = r.scratch("full.log");
    let agent = KillOnDrop(
        r.cmd(&["--repo", s(&repo), "agent", "--config", s(&cfg)])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_count(&log, "over 80% full") == 0 {
        assert!(
            Instant::now() < deadline,
            "no warning: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
}
