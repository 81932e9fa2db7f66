//! The archive contract under failure, with a real PostgreSQL 15: pushes killed with SIGKILL
//! at random moments are retried by PostgreSQL and nothing is lost (every archived segment is
//! byte-identical to PostgreSQL's own copy); and a promote after point-in-time recovery starts
//! timeline 2, whose `.history` file and segments are archived beside timeline 1 and followed
//! by a later recovery.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{s, KillOnDrop, Repo};
use crate::mount::Mounted;
use crate::pg::Pg;
use crate::pitr::{
    archived, chown_postgres, now_utc, psql_at, push_command, repo_for_postgres, start_server,
    stop_server, Archived,
};

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fetches every file PostgreSQL marked archived (`archive_status/*.done`) from cluster `main`
/// and asserts it equals PostgreSQL's copy in pg_wal; returns how many were compared.
fn assert_archive_matches_pg_wal(r: &Repo, pg: &Pg) -> usize {
    let pg_wal = pg.data.join("pg_wal");
    let fetched = r.mkdir("fetched");
    let mut compared = 0;
    for e in fs::read_dir(pg_wal.join("archive_status")).unwrap() {
        let f = e.unwrap().file_name().into_string().unwrap();
        let Some(name) = f.strip_suffix(".done") else {
            continue;
        };
        let dest = fetched.join(name);
        r.ok(&["wal-fetch", "--cluster", "main", name, s(&dest)]);
        assert!(
            fs::read(&dest).unwrap() == fs::read(pg_wal.join(name)).unwrap(),
            "{name} differs from PostgreSQL's copy"
        );
        compared += 1;
    }
    compared
}

#[test]
fn killed_pushes_are_retried_by_postgres_and_nothing_is_lost() {
    let r = Repo::new();
    let pwfile = repo_for_postgres(&r);
    let attempts = r.mkdir("attempts");
    chown_postgres(&attempts);
    // The first attempt at every file is killed with SIGKILL after 10..300 ms: before, during
    // or after its packs and record are written. PostgreSQL sees a failure and retries.
    let script = r.scratch("push.sh");
    let push = push_command(&r, &pwfile);
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nmark={}/$(basename \"$1\")\nif [ ! -e \"$mark\" ]; then\n  touch \"$mark\"\n  {push} \"$1\" &\n  pid=$!\n  sleep $(awk -v r=$(od -An -N2 -tu2 /dev/urandom) 'BEGIN{{printf \"%.3f\", 0.01 + (r % 290) / 1000}}')\n  kill -9 $pid 2>/dev/null\n  wait $pid\n  exit 1\nfi\nexec {push} \"$1\"\n",
            s(&attempts)
        ),
    )
    .unwrap();
    chown_postgres(&script);
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    let pg = Pg::start(&format!(
        "archive_mode = on\nwal_level = replica\nwal_keep_size = 1GB\narchive_command = '{} %p'\n",
        s(&script)
    ));
    pg.client("createdb").arg("app").status().unwrap();
    assert!(pg
        .client("pgbench")
        .args(["-i", "-s", "2", "-q", "app"])
        .output()
        .unwrap()
        .status
        .success());
    let mut last = String::new();
    for i in 0..4 {
        pg.sql(
            "app",
            &format!("CREATE TABLE t{i} AS SELECT generate_series(1, 20000) x"),
        );
        last = pg.sql("app", "SELECT pg_walfile_name(pg_current_wal_lsn())");
        pg.sql("app", "SELECT pg_switch_wal()");
    }
    wait_for(&format!("{last} archived"), 120, || {
        pg.sql(
            "app",
            "SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver"
                .replace("{last}", &last)
                .as_str(),
        ) == "t"
            && r.path.join(format!("wal/main/{last}")).exists()
    });
    let failed: u64 = pg
        .sql("app", "SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    let killed = fs::read_dir(&attempts).unwrap().count() as u64;
    assert!(
        failed >= 4 && killed >= 4,
        "failed {failed}, killed {killed}"
    );
    // Every segment PostgreSQL archived is in the repository, byte for byte, without gaps.
    let compared = assert_archive_matches_pg_wal(&r, &pg);
    assert!(compared >= 5, "only {compared} segments compared");
    let st = r.json(&["wal", "status", "--json"]);
    assert_eq!(st[0]["gaps"].as_array().unwrap().len(), 0, "{st:#}");
    let rep = r.json(&["check", "--read-data", "--json"]);
    assert_eq!(rep["problems"].as_array().unwrap().len(), 0, "{rep:#}");
    assert!(
        rep["wal_files"].as_u64().unwrap() >= compared as u64,
        "{rep:#}"
    );
}

/// Starts a server on `data` with its own socket, archiving into cluster `main` of `r`.
fn start_archiving(r: &Repo, pwfile: &Path, data: &Path, sock: &Path) {
    let conf = format!(
        "archive_mode = on\narchive_command = '{} %p'",
        push_command(r, pwfile)
    );
    start_server(data, sock, &conf);
}

#[test]
fn promote_after_recovery_archives_timeline_2_and_recovery_follows_it() {
    let r = Repo::new();
    let Archived { pg, t, pwfile, .. } = archived(&r, 1);
    // Recover to T and promote: the new primary starts timeline 2 and archives into `main`.
    let data = r.scratch("tl2");
    r.ok(&[
        "--password-file",
        s(&pwfile),
        "pitr",
        "--source",
        "pgdata",
        "--to",
        &t,
        "--target",
        s(&data),
    ]);
    let sock = r.scratch("sock-tl2");
    start_archiving(&r, &pwfile, &data, &sock);
    wait_for("promotion", 120, || {
        psql_at(&sock, "SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(
        psql_at(&sock, "SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    psql_at(&sock, "INSERT INTO t SELECT generate_series(1001, 1007)");
    std::thread::sleep(Duration::from_millis(1100));
    let t3 = psql_at(
        &sock,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    psql_at(&sock, "INSERT INTO t SELECT generate_series(2001, 2050)");
    let mut seg = String::new();
    for _ in 0..2 {
        psql_at(
            &sock,
            "CREATE TABLE IF NOT EXISTS filler(x int); INSERT INTO filler VALUES (1)",
        );
        seg = psql_at(&sock, "SELECT pg_walfile_name(pg_current_wal_lsn())");
        psql_at(&sock, "SELECT pg_switch_wal()");
    }
    assert!(seg.starts_with("00000002"), "{seg}");
    wait_for(&format!("{seg} archived"), 120, || {
        r.path.join(format!("wal/main/{seg}")).exists()
    });
    stop_server(&data);
    // Both timelines are in one archive; the history file is served by wal-fetch and the mount.
    let st = r.json(&["wal", "status", "--json"]);
    let tlis: Vec<u64> = st[0]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(tlis, vec![1, 2], "{st:#}");
    let hist = fs::read(data.join("pg_wal/00000002.history")).unwrap();
    let got = r.scratch("00000002.history");
    r.ok(&[
        "wal-fetch",
        "--cluster",
        "main",
        "00000002.history",
        s(&got),
    ]);
    assert_eq!(fs::read(&got).unwrap(), hist);
    {
        let m = Mounted::new(&r, &[]);
        assert_eq!(fs::read(m.p("wal/main/00000002.history")).unwrap(), hist);
    }
    // A recovery to T3 starts from the timeline-1 base backup and follows timeline 2 (the
    // default recovery_target_timeline = 'latest' reads 00000002.history via wal-fetch).
    let data3 = r.scratch("tl2-again");
    r.ok(&[
        "--password-file",
        s(&pwfile),
        "pitr",
        "--source",
        "pgdata",
        "--to",
        &t3,
        "--target",
        s(&data3),
    ]);
    let sock3 = r.scratch("sock-tl2-again");
    start_archiving(&r, &pwfile, &data3, &sock3);
    wait_for("second promotion", 120, || {
        psql_at(&sock3, "SELECT pg_is_in_recovery()") == "f"
    });
    let rows = psql_at(&sock3, "SELECT count(*), max(id) FROM t");
    let keep = psql_at(&sock3, "SELECT count(*) FROM keep");
    stop_server(&data3);
    assert_eq!(rows, "107|1007", "rows at T3 on timeline 2");
    assert_eq!(keep, "3");
    // The original primary went on along timeline 1, untouched.
    assert_eq!(pg.sql("app", "SELECT count(*) FROM t"), "250");
    let _ = now_utc(&pg);
}

#[test]
fn pushes_go_through_the_agent_and_an_agent_killed_mid_push_loses_nothing() {
    let r = Repo::new();
    let pwfile = repo_for_postgres(&r);
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\n\n[[source]]\nname = \"main\"\ntype = \"postgres-wal\"\ncluster = \"main\"\n",
            s(&r.path)
        ),
    )
    .unwrap();
    let log = r.scratch("agent.log");
    let start_agent = || {
        let mut c = r.cmd(&[
            "--password-file",
            s(&pwfile),
            "-v",
            "agent",
            "--config",
            s(&cfg),
        ]);
        c.stderr(fs::File::create(&log).unwrap());
        let child = c.spawn().unwrap();
        // Its log, not the socket file: a killed agent's stale socket exists already.
        wait_for("the agent's wal-push socket", 30, || {
            fs::read_to_string(&log).is_ok_and(|l| l.contains("accepting wal-push"))
        });
        child
    };
    let mut agent = KillOnDrop(start_agent());
    let pg = Pg::start(&format!(
        "archive_mode = on\nwal_level = replica\nwal_keep_size = 1GB\narchive_command = '{} %p'\n",
        push_command(&r, &pwfile)
    ));
    pg.client("createdb").arg("app").status().unwrap();
    let switch = |i: u32| {
        pg.sql(
            "app",
            &format!("CREATE TABLE t{i} AS SELECT generate_series(1, 50000) x"),
        );
        let seg = pg.sql("app", "SELECT pg_walfile_name(pg_current_wal_lsn())");
        pg.sql("app", "SELECT pg_switch_wal()");
        seg
    };
    let first = switch(0);
    wait_for(&format!("{first} archived"), 60, || {
        r.path.join(format!("wal/main/{first}")).exists()
    });
    let agent_log = fs::read_to_string(&log).unwrap();
    assert!(
        agent_log.contains("archived") && agent_log.contains(&first),
        "the push did not go through the agent: {agent_log}"
    );
    // Kill the agent with SIGKILL while a push runs through it: switch segments, watch the
    // repository's tmp directory for the agent's pack being written, and kill it right then.
    // Rounds repeat (with a fresh agent) until PostgreSQL saw a failed attempt.
    let failed = || -> u64 {
        pg.sql("app", "SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap()
    };
    let mut last = String::new();
    let mut table = 1;
    for round in 0..10 {
        for _ in 0..3 {
            last = switch(table);
            table += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let busy = fs::read_dir(r.path.join("tmp"))
                .map(|d| d.count() > 0)
                .unwrap_or(false);
            if busy {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        agent.0.kill().unwrap();
        agent.0.wait().unwrap();
        // The client of the interrupted push fails; PostgreSQL retries after a second.
        std::thread::sleep(Duration::from_millis(1500));
        if failed() > 0 {
            eprintln!("agent killed mid-push in round {round}");
            break;
        }
        agent = KillOnDrop(start_agent());
    }
    for _ in 0..2 {
        last = switch(table);
        table += 1;
    }
    wait_for(
        &format!("{last} archived after the agent died"),
        120,
        || r.path.join(format!("wal/main/{last}")).exists(),
    );
    assert!(failed() > 0, "the agent was never killed mid-push");
    // A new agent takes over the stale socket; pushes go through it again.
    let agent2 = KillOnDrop(start_agent());
    last = switch(6);
    wait_for(&format!("{last} archived by the new agent"), 60, || {
        r.path.join(format!("wal/main/{last}")).exists()
    });
    let agent_log = fs::read_to_string(&log).unwrap();
    assert!(
        agent_log.contains(&last),
        "{last} not pushed through the new agent: {agent_log}"
    );
    // Everything PostgreSQL considers archived is in the repository, byte for byte.
    let compared = assert_archive_matches_pg_wal(&r, &pg);
    assert!(compared >= 7, "only {compared} files compared");
    let st = r.json(&["wal", "status", "--json"]);
    assert_eq!(st[0]["gaps"].as_array().unwrap().len(), 0, "{st:#}");
    drop(agent2);
    // The root agent left nothing in the repository that its owner (postgres) cannot write.
    let o = Command::new("find")
        .arg(&r.path)
        .args(["-not", "-user", "postgres"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "files not owned by postgres"
    );
}
