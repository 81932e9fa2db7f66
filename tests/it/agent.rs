//! The agent: configuration checks with line numbers, scheduled command sources appearing
//! under /at while mounted, failing jobs retried without partial snapshots, the writer lock.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{s, KillOnDrop, Repo};
use crate::mount::Mounted;

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
