//! Several writers on one S3 repository (a real 3-node Garage, see `s3.rs`): each "host" is a
//! process with its own `WAYBACK_CACHE_DIR`, so only the lease objects in the bucket
//! (`locks/`, see `src/repo/lease.rs`) coordinate them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    all_output, assert_code, parse_json, run, s, u64_of, wait_until, write_random, Repo,
};
use crate::s3::Garage;

/// `cmd` as it runs on host `host` (its own cache directory).
fn on_host(r: &Repo, host: &str, args: &[&str]) -> Command {
    let mut c = r.cmd(args);
    c.env("WAYBACK_CACHE_DIR", r.scratch(&format!("cache-{host}")));
    c
}

/// A backup of `dir` on `host` whose command sleeps `secs` first, so it holds its lease that
/// long: a base backup (a tar stream stored unpacked) restores as a directory tree.
fn slow_backup(r: &Repo, host: &str, dir: &Path, secs: u32, source: &str) -> Child {
    let cmd = format!("sleep {secs}; tar -C {} -cf - .", s(dir));
    on_host(
        r,
        host,
        &["backup", "--basebackup", &cmd, "--source", source, "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// Leases of `secs` seconds with a 1 s margin, so tests see them go stale quickly.
fn short_leases(r: &mut Repo, secs: u32) {
    r.env.push(("WAYBACK_LEASE_SECS".into(), secs.to_string()));
    r.env.push(("WAYBACK_LEASE_MARGIN_SECS".into(), "1".into()));
}

/// An agent on `host` with config `cfg`, logging at -v to the returned file; killed on drop.
fn agent_on(r: &Repo, host: &str, cfg: &Path) -> (crate::common::KillOnDrop, PathBuf) {
    let log = r.scratch("agent.log");
    let agent = crate::common::KillOnDrop(
        on_host(r, host, &["-v", "agent", "--config", s(cfg)])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    (agent, log)
}

/// `locks --json` on `host`.
fn locks(r: &Repo, host: &str) -> Vec<serde_json::Value> {
    let o = run(on_host(r, host, &["locks", "--json"]));
    assert_code(&o, 0, "locks --json");
    parse_json(&o).as_array().unwrap().clone()
}

fn fresh_shared(l: &[serde_json::Value]) -> usize {
    l.iter()
        .filter(|l| l["fresh"] == true && l["body"]["kind"] == "shared")
        .count()
}

fn diff_r(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .args(["-r", s(a), s(b)])
        .output()
        .unwrap();
    assert!(o.status.success(), "diff -r: {}", all_output(&o));
}

#[test]
fn s3_two_hosts_back_up_at_once_prune_refuses_meanwhile_then_runs_and_dedups() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("multi");
    // Overlapping sources: 6 MiB both hosts have, 2 MiB each of its own.
    let (a, b) = (r.mkdir("src-a"), r.mkdir("src-b"));
    for d in [&a, &b] {
        write_random(&d.join("shared.bin"), 6 << 20, 1);
    }
    write_random(&a.join("own-a.bin"), 2 << 20, 2);
    write_random(&b.join("own-b.bin"), 2 << 20, 3);
    fs::write(a.join("note.txt"), b"host a").unwrap();
    fs::write(b.join("note.txt"), b"host b").unwrap();
    // Host a backed up the shared part before; both writers deduplicate against it. (Two
    // writers do not see each other's packs while they run: each knows the packs published
    // before it started, so data new to both is stored by both.)
    let first = r.mkdir("src-first");
    write_random(&first.join("shared.bin"), 6 << 20, 1);
    let o = slow_backup(&r, "a", &first, 0, "first")
        .wait_with_output()
        .unwrap();
    assert_code(&o, 0, "first backup on host a");
    let mut wa = slow_backup(&r, "a", &a, 6, "host-a");
    let mut wb = slow_backup(&r, "b", &b, 6, "host-b");
    assert!(
        wait_until(Duration::from_secs(20), || fresh_shared(&locks(&r, "p"))
            == 2),
        "two shared leases never appeared: {:?}",
        locks(&r, "p")
    );
    // A prune on a third host meanwhile refuses, naming a holder, and leaves no lease behind.
    let o = run(on_host(&r, "p", &["prune", "--grace", "0"]));
    assert_code(&o, 11, "prune beside two writers");
    let err = all_output(&o);
    assert!(
        err.contains("shared lease") && err.contains("backup"),
        "{err}"
    );
    // With --wait it retries until the writers are done, then runs.
    let waiting = on_host(
        &r,
        "p",
        &["-v", "--wait", "40", "prune", "--grace", "0", "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    for w in [&mut wa, &mut wb] {
        let o = w.wait_with_output_ref();
        assert_code(&o, 0, "concurrent backup");
    }
    // Nothing is unused: both snapshots keep every pack.
    let o = waiting.wait_with_output().unwrap();
    assert_code(&o, 0, "prune --wait beside the writers");
    assert!(
        all_output(&o).contains("lease in the way; waiting"),
        "{}",
        all_output(&o)
    );
    assert!(
        locks(&r, "p").is_empty(),
        "leases left: {:?}",
        locks(&r, "p")
    );
    assert_eq!(u64_of(&parse_json(&o), "/packs_deleted"), 0);
    // Both snapshots restore byte-identical, on a fourth host.
    for (src, name) in [(&a, "host-a"), (&b, "host-b")] {
        let out = r.scratch(&format!("out-{name}"));
        let o = run(on_host(
            &r,
            "r",
            &["restore", "latest", "--source", name, "--target", s(&out)],
        ));
        assert_code(&o, 0, "restore");
        diff_r(src, &out);
    }
    // Deduplicated across hosts: the shared 6 MiB are stored once.
    let o = run(on_host(&r, "r", &["stats", "--json"]));
    assert_code(&o, 0, "stats");
    let st = parse_json(&o);
    let stored = u64_of(&st, "/pack_bytes");
    let inputs: u64 = (6 << 20) + 2 * (8 << 20);
    eprintln!("cross-host dedup: {stored} bytes stored for {inputs} bytes of input");
    assert!(
        stored < 11 << 20,
        "stored {stored} bytes for {inputs} bytes of input, 6 MiB of it in all three"
    );
}

#[test]
fn s3_a_killed_writers_lease_goes_stale_and_a_lost_lease_publishes_nothing() {
    let Some(g) = Garage::start() else { return };
    let mut r = g.repo("stale");
    short_leases(&mut r, 2);
    let src = r.mkdir("src");
    write_random(&src.join("f.bin"), 1 << 20, 5);
    // kill -9: the lease stays, fresh at first (prune refuses), stale after lease + margin.
    let mut w = slow_backup(&r, "a", &src, 15, "a");
    assert!(wait_until(Duration::from_secs(20), || fresh_shared(
        &locks(&r, "p")
    ) == 1));
    w.kill().unwrap();
    w.wait().unwrap();
    assert_code(
        &run(on_host(&r, "p", &["prune"])),
        11,
        "prune beside a fresh lease",
    );
    // status shows who holds it (so an admin sees why prune refused), then that it went stale.
    let o = run(on_host(&r, "p", &["status", "--json"]));
    let st = parse_json(&o);
    let leases = st["leases"].as_array().expect("status --json has leases");
    assert!(
        leases
            .iter()
            .any(|l| l["body"]["pid"] == w.id() && l["body"]["operation"] == "backup"),
        "{st:#}"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        let l = locks(&r, "p");
        l.len() == 1 && l[0]["fresh"] == false
    }));
    let o = run(on_host(&r, "p", &["status"]));
    assert!(
        all_output(&o).contains("stale    lease") && all_output(&o).contains("unlock --stale-only"),
        "{}",
        all_output(&o)
    );
    // A stale lease is ignored (this backup never waits) and removed by unlock --stale-only.
    r.backup_dir(&src, "b");
    let o = run(on_host(&r, "p", &["unlock", "--stale-only", "--json"]));
    assert_code(&o, 0, "unlock --stale-only");
    let gone = parse_json(&o);
    assert_eq!(gone.as_array().unwrap().len(), 1, "{gone:#}");
    assert_eq!(gone[0]["body"]["pid"], w.id());
    assert!(locks(&r, "p").is_empty());
    let o = run(on_host(&r, "p", &["unlock", "--stale-only"]));
    assert!(
        all_output(&o).contains("no lock objects removed"),
        "{}",
        all_output(&o)
    );
    // A second killed writer: the next prune ignores its stale lease and removes it.
    let mut w = slow_backup(&r, "a", &src, 15, "a");
    assert!(wait_until(Duration::from_secs(20), || fresh_shared(
        &locks(&r, "p")
    ) == 1));
    w.kill().unwrap();
    w.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_code(
        &run(on_host(&r, "p", &["prune"])),
        0,
        "prune beside a stale lease",
    );
    assert!(locks(&r, "p").is_empty(), "{:?}", locks(&r, "p"));
    // A writer whose lease is removed under it (`unlock` of all) loses it at its next
    // refresh and publishes no snapshot.
    let before = r.snapshots().len();
    let w = slow_backup(&r, "a", &src, 4, "lost");
    assert!(wait_until(Duration::from_secs(20), || fresh_shared(
        &locks(&r, "p")
    ) == 1));
    assert_code(&run(on_host(&r, "p", &["unlock"])), 0, "unlock");
    let o = w.wait_with_output().unwrap();
    assert_code(&o, 11, "backup whose lease was removed");
    assert!(all_output(&o).contains("lease"), "{}", all_output(&o));
    assert_eq!(r.snapshots().len(), before, "a snapshot was published");
}

#[test]
fn s3_a_skewed_clock_is_refused_and_local_repositories_have_no_leases() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("skew");
    let src = r.mkdir("src");
    fs::write(src.join("f"), b"x").unwrap();
    for args in [&["prune"][..], &["backup", s(&src), "--source", "f"][..]] {
        let mut c = on_host(&r, "a", args);
        c.env("WAYBACK_TEST_CLOCK_OFFSET_SECS", "3600");
        let o = run(c);
        assert_code(&o, 1, "a host an hour ahead");
        let err = all_output(&o);
        assert!(
            err.contains("clock skew") && err.contains("ahead of"),
            "{err}"
        );
    }
    let mut c = on_host(&r, "a", &["backup", s(&src), "--source", "f"]);
    c.env("WAYBACK_TEST_CLOCK_OFFSET_SECS", "-3600");
    let o = run(c);
    assert!(all_output(&o).contains("behind"), "{}", all_output(&o));
    // Nothing was left behind, and a sane clock works.
    assert!(locks(&r, "a").is_empty());
    r.backup_dir(&src, "f");
    // A local repository: flock only, `locks` says so.
    let l = Repo::new();
    assert_eq!(l.json(&["locks", "--json"]), serde_json::json!([]));
    assert!(all_output(&l.ok(&["unlock"])).contains("flock"));
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> std::process::Output;
}

impl WaitRef for Child {
    /// `wait_with_output` for a child borrowed mutably.
    fn wait_with_output_ref(&mut self) -> std::process::Output {
        use std::io::Read;
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut o) = self.stdout.take() {
            o.read_to_end(&mut out).unwrap();
        }
        if let Some(mut e) = self.stderr.take() {
            e.read_to_end(&mut err).unwrap();
        }
        let status = self.wait().unwrap();
        std::process::Output {
            status,
            stdout: out,
            stderr: err,
        }
    }
}

fn count(log: &Path, needle: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn s3_the_agent_holds_a_shared_lease_and_prunes_only_when_no_other_host_writes() {
    let Some(g) = Garage::start() else { return };
    let r = g.repo("agent");
    let cfg = r.scratch("agent.toml");
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\nprune_every = \"2s\"\nprune_grace = \"0s\"\n\n[[source]]\nname = \"rnd\"\ntype = \"command\"\ncommand = \"head -c 262144 /dev/urandom\"\nfile = \"r.bin\"\nevery = \"1s\"\nkeep = {{ last = 2 }}\n",
            g.location("agent")
        ),
    )
    .unwrap();
    // Another host's backup holds its shared lease for 8 s from the start.
    let src = r.mkdir("src");
    write_random(&src.join("f.bin"), 1 << 20, 7);
    let other = slow_backup(&r, "b", &src, 8, "other");
    assert!(wait_until(Duration::from_secs(20), || fresh_shared(
        &locks(&r, "p")
    ) == 1));
    let (_agent, log) = agent_on(&r, "a", &cfg);
    assert!(
        wait_until(Duration::from_secs(30), || count(&log, "prune skipped")
            >= 1),
        "the agent pruned beside another host's lease: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(count(&log, "prune done"), 0);
    let l = locks(&r, "p");
    assert!(
        l.iter()
            .any(|l| l["body"]["operation"] == "agent" && l["fresh"] == true),
        "{l:?}"
    );
    let o = other.wait_with_output().unwrap();
    assert_code(&o, 0, "the other host's backup beside the agent");
    // Alone now: its next prune runs, beside its own shared lease.
    assert!(
        wait_until(Duration::from_secs(30), || count(&log, "prune done") >= 1),
        "no prune after the other host finished: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let snaps = r.snapshots();
    assert!(snaps.iter().any(|s| s["source"] == "other"), "{snaps:?}");
}

#[test]
fn s3_an_agent_whose_lease_was_removed_takes_a_new_one_for_its_prune() {
    let Some(g) = Garage::start() else { return };
    let mut r = g.repo("agent-lost");
    short_leases(&mut r, 3);
    let cfg = r.scratch("agent.toml");
    // One backup at the start, then none for an hour: only prunes run meanwhile.
    fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\nprune_every = \"2s\"\nprune_grace = \"0s\"\n\n[[source]]\nname = \"rnd\"\ntype = \"command\"\ncommand = \"head -c 65536 /dev/urandom\"\nfile = \"r.bin\"\nevery = \"1h\"\n",
            g.location("agent-lost")
        ),
    )
    .unwrap();
    let (_agent, log) = agent_on(&r, "a", &cfg);
    let text = || fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || count(&log, "prune done") >= 1),
        "{}",
        text()
    );
    // Its lease removed under it (`unlock` of every lease): the agent loses it at its next
    // refresh; its next prune takes a new shared lease first instead of skipping as if
    // another host were in the way.
    assert_code(&run(on_host(&r, "p", &["unlock"])), 0, "unlock");
    assert!(
        wait_until(Duration::from_secs(20), || count(&log, "lease lost") >= 1),
        "{}",
        text()
    );
    let done = count(&log, "prune done");
    assert!(
        wait_until(Duration::from_secs(20), || count(&log, "prune done") > done),
        "no prune after the lease was lost: {}",
        text()
    );
    assert!(text().contains("took a new lease"), "{}", text());
    assert_eq!(count(&log, "prune skipped"), 0, "{}", text());
}
