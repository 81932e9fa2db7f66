//! Running unattended: `wayback status` turning LATE when the agent stops and FAILING when a
//! job fails (exit code 16 either way, from the durable agent state, with no agent running),
//! the failure hook's environment, and the Prometheus endpoint checked by `promtool`.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{s, wait_until, KillOnDrop, Repo};

pub fn spawn_agent(r: &Repo, cfg: &Path) -> KillOnDrop {
    let mut c = r.cmd(&["agent", "--config", s(cfg)]);
    c.stdout(Stdio::null())
        .stderr(fs::File::create(r.scratch("agent.log")).unwrap());
    KillOnDrop(c.spawn().unwrap())
}

/// `status --json` and its exit code.
pub fn status(r: &Repo) -> (Value, i32) {
    let o = r.wb(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (v, o.status.code().unwrap())
}

fn find<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["sources"].as_array()?.iter().find(|s| s["name"] == name)
}

fn source<'a>(v: &'a Value, name: &str) -> &'a Value {
    find(v, name).unwrap_or_else(|| panic!("no source {name} in {v:#}"))
}

fn dump_source(name: &str) -> String {
    format!("\n[[source]]\nname = \"{name}\"\ntype = \"command\"\ncommand = \"date +%s%N; seq 1 1000\"\nfile = \"db.dump\"\nevery = \"2s\"\n")
}

#[test]
fn status_turns_late_when_the_agent_stops_and_failing_when_a_job_fails() {
    let r = Repo::new();
    // Nothing configured, nothing backed up: nothing is wrong.
    let o = r.code(&["status"], 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("no agent has run"));

    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!("repo = \"{}\"\n{}", s(&r.path), dump_source("dump")),
    )
    .unwrap();
    let agent = spawn_agent(&r, &cfg);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (v, code) = status(&r);
            code == 0 && find(&v, "dump").is_some_and(|d| d["newest_snapshot"].is_string())
        }),
        "no OK status with a snapshot: {:#}",
        status(&r).0
    );
    let (v, _) = status(&r);
    let d = source(&v, "dump");
    assert_eq!(d["state"], "OK", "{v:#}");
    assert_eq!(d["schedule"], "every 2s");
    assert!(d["last_duration_s"].as_f64().unwrap() >= 0.0);
    assert!(v["repository"]["bytes"].as_u64().unwrap() > 0, "{v:#}");
    assert!(v["repository"]["free_bytes"].as_u64().unwrap() > 0);
    drop(agent);

    // The agent is gone: two periods later the schedule is missed, and status says so from
    // the state the agent left in the repository.
    assert!(
        wait_until(Duration::from_secs(20), || status(&r).1 == 16),
        "never LATE: {:#}",
        status(&r).0
    );
    let (v, _) = status(&r);
    assert_eq!(source(&v, "dump")["state"], "LATE", "{v:#}");
    assert_eq!(v["ok"], false);
    let o = r.code(&["status"], 16);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("LATE     dump: newest "), "{text}");

    // A failing job: FAILING, exit 16, and the hook ran with the source, the error and the
    // last good snapshot, never the passphrase.
    let hook_out = r.scratch("hook.env");
    let cfg2 = r.scratch("agent2.toml");
    fs::write(
        &cfg2,
        format!(
            "repo = \"{}\"\non_failure = \"echo agent-wide > {out}.wrong\"\n{}\n[[source]]\nname = \"broken\"\ntype = \"command\"\ncommand = \"echo partial; exit 1\"\nfile = \"x\"\nevery = \"1h\"\non_failure = \"{{ env | grep ^WAYBACK_ | sort; echo pw=${{WAYBACK_PASSWORD:-none}}; }} > {out}\"\n",
            s(&r.path),
            dump_source("dump"),
            out = s(&hook_out)
        ),
    )
    .unwrap();
    let agent = spawn_agent(&r, &cfg2);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (v, code) = status(&r);
            code == 16
                && find(&v, "broken").is_some_and(|b| b["state"] == "FAILING")
                && find(&v, "dump").is_some_and(|d| d["state"] == "OK")
        }),
        "broken never FAILING beside an OK dump: {:#}",
        status(&r).0
    );
    let (v, _) = status(&r);
    let b = source(&v, "broken");
    assert!(b["failures"].as_u64().unwrap() >= 1);
    assert!(b["last_error"].as_str().unwrap().contains("exit"), "{v:#}");
    assert!(b["newest_snapshot"].is_null());
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&hook_out)
            .is_ok_and(|t| t.contains("pw="))),
        "the hook did not run"
    );
    let env = fs::read_to_string(&hook_out).unwrap();
    assert!(env.contains("WAYBACK_SOURCE=broken\n"), "{env}");
    assert!(
        env.lines()
            .any(|l| l.starts_with("WAYBACK_ERROR=") && l.contains("exit")),
        "{env}"
    );
    assert!(env.contains("WAYBACK_SNAPSHOT=\n"), "{env}");
    assert!(
        env.contains("pw=none"),
        "the passphrase reached the hook: {env}"
    );
    assert!(!env.contains(&r.password), "{env}");
    assert!(
        !Path::new(&format!("{}.wrong", s(&hook_out))).exists(),
        "the agent-wide hook ran although the source has its own"
    );
    drop(agent);
    // Still FAILING with the agent stopped: the state is durable.
    let (v, code) = status(&r);
    assert_eq!(code, 16);
    assert_eq!(source(&v, "broken")["state"], "FAILING");
    // The state object is sealed: the error text is not in it in clear.
    let raw = fs::read(r.path.join("state/agent")).unwrap();
    assert!(!raw.windows(7).any(|w| w == b"partial" || w == b"exit st"));
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(r.path.join("state/agent"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode & 0o777, 0o600);
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET; returns the status line and the body.
pub fn http_get(port: u16, path: &str) -> (String, String) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .parse()
        .unwrap()
}

pub fn promtool(args: &[&str], stdin: Option<&str>) {
    let mut c = Command::new("promtool");
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ch = c
        .spawn()
        .expect("promtool missing: scripts/setup.sh installs the prometheus package");
    if let Some(t) = stdin {
        ch.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
    }
    let o = ch.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn metrics_endpoint_passes_promtool() {
    let r = Repo::new();
    let port = free_port();
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\nmetrics = \"127.0.0.1:{port}\"\n{}\n[[source]]\nname = \"bro\\\"ken\"\ntype = \"command\"\ncommand = \"exit 1\"\nfile = \"x\"\nevery = \"1h\"\n",
            s(&r.path),
            dump_source("dump")
        ),
    )
    .unwrap();
    let _agent = spawn_agent(&r, &cfg);
    assert!(
        wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && metric(
                    &http_get(port, "/metrics").1,
                    "wayback_backup_duration_seconds_count{source=\"dump\"}",
                ) >= 2.0
        }),
        "two dump runs never showed in the metrics: {}",
        fs::read_to_string(r.scratch("agent.log")).unwrap_or_default()
    );
    let (st, body) = http_get(port, "/metrics");
    assert_eq!(st, "HTTP/1.1 200 OK");
    promtool(&["check", "metrics"], Some(&body));
    assert_eq!(metric(&body, "wayback_up"), 1.0);
    let age = metric(&body, "wayback_snapshot_age_seconds{source=\"dump\"}");
    assert!((0.0..30.0).contains(&age), "{age}");
    assert!(metric(&body, "wayback_backup_bytes_added_total{source=\"dump\"}") > 0.0);
    assert_eq!(
        metric(
            &body,
            "wayback_backup_duration_seconds_bucket{source=\"dump\",le=\"60\"}"
        ),
        metric(
            &body,
            "wayback_backup_duration_seconds_count{source=\"dump\"}"
        )
    );
    // The label value with a quote is escaped, and its failure counted.
    assert!(
        metric(
            &body,
            "wayback_backup_failures_total{source=\"bro\\\"ken\"}"
        ) >= 1.0
    );
    assert_eq!(
        metric(&body, "wayback_source_healthy{source=\"bro\\\"ken\"}"),
        0.0
    );
    assert_eq!(
        metric(&body, "wayback_source_healthy{source=\"dump\"}"),
        1.0
    );
    assert!(metric(&body, "wayback_repository_bytes") > 0.0);
    assert!(metric(&body, "wayback_repository_free_bytes") > 0.0);
    assert_eq!(metric(&body, "wayback_wal_push_failures_total"), 0.0);
    assert_eq!(http_get(port, "/").0, "HTTP/1.1 404 Not Found");
    // The shipped alert rules are valid.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring/alerts.yml");
    promtool(&["check", "rules", s(&rules)], None);
    // Every panel of the example dashboard queries a metric the agent serves.
    let dash: Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                body.lines()
                    .filter_map(|l| l.strip_prefix("# TYPE "))
                    .filter_map(|l| l.split(' ').next())
                    .any(|name| expr.contains(name)),
                "dashboard query {expr} uses no served metric"
            );
        }
    }
}

/// `mount --daemon` logs to a file (0600) instead of /dev/null, and a daemon that fails
/// before mounting shows the reason from that log.
#[test]
fn mount_daemon_logs_somewhere_visible() {
    let r = Repo::new();
    let log = r.tmp().join("logs/mount.log");
    let o = r.wb(&[
        "mount",
        s(&r.tmp().join("no-such-dir")),
        "--daemon",
        "--log-file",
        s(&log),
    ]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mount daemon exited"), "{err}");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("wayback: error"), "{text}");
    // The reason reached the user's terminal too, from the log.
    let last = text.lines().last().unwrap();
    assert!(err.contains(last), "{err} lacks {last}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(log.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // A daemon that mounts: with the passphrase from the environment, which the first
    // process took out of its own before starting the daemon.
    r.backup(&[
        "--command",
        "echo hello",
        "--stdin-name",
        "f",
        "--source",
        "s",
    ]);
    let mnt = r.mkdir("mnt");
    let o = r.ok(&["mount", s(&mnt), "--daemon", "--log-file", s(&log)]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("log: {}", s(&log))),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let content = fs::read_to_string(mnt.join("latest/s/f"));
    r.ok(&["umount", s(&mnt)]);
    assert_eq!(content.unwrap(), "hello\n");
}

/// Completions and man pages come from the clap definitions: every subcommand is in them.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let r = Repo::new();
    let o = r.ok(&["completions", "bash"]);
    let script = String::from_utf8(o.stdout).unwrap();
    assert!(
        script.contains("_wayback()") && script.contains("status"),
        "{script}"
    );
    let f = r.scratch("wayback.bash");
    fs::write(&f, &script).unwrap();
    let st = Command::new("bash").args(["-n", s(&f)]).status().unwrap();
    assert!(st.success(), "bash -n rejects the completion script");
    for sh in ["zsh", "fish"] {
        assert!(!r.ok(&["completions", sh]).stdout.is_empty());
    }
    let page = String::from_utf8(r.ok(&["man"]).stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH wayback"),
        "{page}"
    );
    let dir = r.mkdir("man1");
    r.ok(&["man", "--dir", s(&dir)]);
    for name in [
        "wayback.1",
        "wayback-status.1",
        "wayback-agent.1",
        "wayback-backup.1",
    ] {
        let t = fs::read_to_string(dir.join(name)).unwrap();
        assert!(t.contains(".TH"), "{name}: {t}");
    }
    let st = fs::read_to_string(dir.join("wayback-status.1")).unwrap();
    assert!(st.contains("LATE"), "{st}");
}

#[test]
fn a_cluster_whose_newest_wal_is_older_than_wal_late_is_late() {
    let r = Repo::new();
    let dir = r.scratch("wal");
    fs::create_dir_all(&dir).unwrap();
    let seg = crate::wal::segment(&dir, "000000010000000000000001", 7, 1);
    r.ok(&["wal-push", "--cluster", "main", s(&seg)]);
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\nwal_late = \"3s\"\n{}",
            s(&r.path),
            dump_source("dump")
        ),
    )
    .unwrap();
    let agent = spawn_agent(&r, &cfg);
    // The segment was just archived: OK, until it is older than 3 s with nothing newer.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (v, _) = status(&r);
            v["agent_updated"].is_string()
                && v["clusters"][0]["state"] == "LATE"
                && find(&v, "dump").is_some_and(|d| d["state"] == "OK")
        }),
        "cluster never LATE: {:#}",
        status(&r).0
    );
    let o = r.code(&["status"], 16);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("LATE     wal main: newest 000000010000000000000001"),
        "{text}"
    );
    // A new segment makes it OK again.
    let seg2 = crate::wal::segment(&dir, "000000010000000000000002", 7, 2);
    r.ok(&["wal-push", "--cluster", "main", s(&seg2)]);
    let (v, _) = status(&r);
    assert_eq!(v["clusters"][0]["state"], "OK", "{v:#}");
    drop(agent);
    // "off" never judges WAL age.
    fs::write(
        &cfg,
        format!("repo = \"{}\"\nwal_late = \"off\"\n", s(&r.path)),
    )
    .unwrap();
    let agent = spawn_agent(&r, &cfg);
    std::thread::sleep(Duration::from_secs(4));
    let (v, code) = status(&r);
    assert_eq!(v["clusters"][0]["state"], "OK", "{v:#}");
    assert_eq!(code, 0, "{v:#}");
    drop(agent);
    // A bad value is refused at load, naming the setting.
    fs::write(
        &cfg,
        format!("repo = \"{}\"\nwal_late = \"soon\"\n", s(&r.path)),
    )
    .unwrap();
    let o = r.wb(&["agent", "--config", s(&cfg)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("wal_late"));
}
