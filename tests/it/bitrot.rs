//! Bit-rot trials: one repository (a files source with two snapshots, a stream source, WAL
//! segments in indexed and unindexed packs, two passphrases) is built once; each trial copies
//! it, applies one seeded random damage (flip bytes in, truncate or delete one pack, index
//! file, snapshot manifest, WAL record, key file or the config), and asserts:
//!
//! - `check --read-data` detects it (non-zero; 12 when the repository opens) and names every
//!   snapshot file and WAL segment that no longer restores;
//! - nothing is ever served as wrong bytes: every restore, `cat` and `wal-fetch` (and, for
//!   pack and WAL damage, every read through the mount) gives the original bytes or fails (a
//!   file missing from a restore, a non-zero exit, EIO);
//! - `repair index`, `repair packs`, `repair snapshots --forget` never make things worse:
//!   everything that restored before restores byte-identical after (from the snapshot or its
//!   repaired replacement), and `check` afterwards reports only what is really lost.
//!
//! Three damages cannot be told from a deliberate act and are counted apart: deleting a
//! manifest (= `forget`), a WAL record (= WAL retention) or a key file (= `key remove`).
//!
//! `WAYBACK_BITROT_TRIALS` (default 36, two of each damage kind), `WAYBACK_BITROT_SEED`
//! (trial i uses seed + i), `WAYBACK_BITROT_FROM` (first trial number, to replay one) and
//! `WAYBACK_BITROT_REPORT` (write counts and failures as JSON there) drive it;
//! `WAYBACK_BITROT_VERBOSE` prints a line per trial. `scripts/bitrot.sh N` runs N trials.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::common::*;

const SPARE_PASSWORD: &str = "a second passphrase for the bit-rot trials";
const CLUSTER: &str = "main";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Pack,
    Index,
    Manifest,
    Wal,
    Key,
    Config,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Flip,
    Truncate,
    Delete,
}

const TARGETS: [Target; 6] = [
    Target::Pack,
    Target::Index,
    Target::Manifest,
    Target::Wal,
    Target::Key,
    Target::Config,
];
const OPS: [Op; 3] = [Op::Flip, Op::Truncate, Op::Delete];

/// One snapshot of the pristine repository and its files' true bytes.
struct SnapTruth {
    id: String,
    short: String,
    /// Where the mount shows it: `snapshots/<source>/<time name>`.
    in_mount: String,
    files: BTreeMap<String, Vec<u8>>,
}

/// The repository every trial copies, and the truth to compare with.
struct Pristine {
    r: Repo,
    snaps: Vec<SnapTruth>,
    wal: Vec<(String, Vec<u8>)>,
}

/// Regular files under `root` as `/rel/path` -> bytes.
fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                out.insert(
                    format!("/{}", rel.to_string_lossy()),
                    fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    out
}

fn segment_bytes(seed: u64) -> Vec<u8> {
    // Two 1 MiB chunks and a tail; no long page header, so no system id to match.
    let mut b = random_bytes(2 * MIB + 100_000, seed);
    b[..64].fill(0);
    b
}

fn pristine() -> Pristine {
    let r = Repo::new();
    let mut c = r.cmd(&["key", "add"]);
    c.env("WAYBACK_NEW_PASSWORD", SPARE_PASSWORD);
    let o = run(c);
    assert_code(&o, exit::OK, "key add");

    let src = r.mkdir("src");
    write_random(&src.join("big.bin"), 1_500_000, 1);
    write_random(&src.join("d/mid.bin"), 300_000, 2);
    write_random(&src.join("d/e/f.bin"), 120_000, 3);
    write_file(&src.join("d/e/small.txt"), b"a small file deep down");
    write_file(&src.join("top.txt"), b"top");
    std::os::unix::fs::symlink("top.txt", src.join("link")).unwrap();
    r.backup_dir(&src, "files");

    let pg_wal = r.mkdir("pg_wal");
    let mut wal = Vec::new();
    let mut push = |n: u64| {
        let name = format!("00000001000000000000000{n}");
        let bytes = segment_bytes(100 + n);
        fs::write(pg_wal.join(&name), &bytes).unwrap();
        r.ok(&["wal-push", "--cluster", CLUSTER, s(&pg_wal.join(&name))]);
        wal.push((name, bytes));
    };
    push(1);
    push(2);
    // Changes a file and adds one; the WAL packs above get indexed by this writer.
    write_random(&src.join("d/mid.bin"), 300_000, 4);
    write_random(&src.join("new.bin"), 200_000, 5);
    r.backup_dir(&src, "files");
    let dump = r.scratch("dump.src");
    write_random(&dump, 500_000, 6);
    let cmd = format!("cat {}", dump.display());
    r.backup(&[
        "--command",
        &cmd,
        "--stdin-name",
        "dump.sql",
        "--source",
        "db",
    ]);
    // The last segment's pack stays unindexed (no writer ran after it).
    push(3);

    r.ok(&["check", "--read-data"]);
    let mut snaps = Vec::new();
    for v in r.snapshots() {
        let id = str_of(&v, "/id").to_string();
        let dst = r.scratch(&format!("truth-{id}"));
        r.restore(&id, &dst, &[]);
        snaps.push(SnapTruth {
            short: str_of(&v, "/short_id").to_string(),
            in_mount: format!(
                "snapshots/{}/{}",
                str_of(&v, "/source"),
                str_of(&v, "/time_name")
            ),
            files: files_under(&dst),
            id,
        });
    }
    assert_eq!(snaps.len(), 3);
    Pristine { r, snaps, wal }
}

/// Regular files of `dir` (recursively) whose name `keep` accepts, for picking a victim.
fn files_in(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let t = e.file_type().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && keep(&name) {
                out.push(e.path());
            }
        }
    }
    // Oldest first: pack and manifest names are random per run (keys are), their order of
    // creation is not, so a seed picks the same victim in every run.
    out.sort_by_key(|p| (fs::metadata(p).unwrap().modified().unwrap(), p.clone()));
    out
}

/// Applies one damage; returns a description.
fn damage(repo: &Path, target: Target, op: Op, rng: &mut Rng) -> String {
    let mut candidates = match target {
        Target::Pack => files_in(&repo.join("packs"), &|_| true),
        // The info logs and the lock file are not index data.
        Target::Index => files_in(&repo.join("index"), &|n| {
            n != "LOCK" && !n.starts_with("LOG")
        }),
        Target::Manifest => files_in(&repo.join("snapshots"), &|_| true),
        Target::Wal => files_in(&repo.join("wal").join(CLUSTER), &|n| !n.starts_with('.')),
        Target::Key => files_in(&repo.join("keys"), &|_| true),
        Target::Config => vec![repo.join("config")],
    };
    if op != Op::Delete {
        candidates.retain(|p| fs::metadata(p).unwrap().len() > 0);
    }
    assert!(!candidates.is_empty(), "nothing to damage for {target:?}");
    let victim = candidates[(rng.next_u64() % candidates.len() as u64) as usize].clone();
    let rel = victim.strip_prefix(repo).unwrap().display().to_string();
    match op {
        Op::Flip => {
            let mut b = fs::read(&victim).unwrap();
            let n = 1 + rng.next_u64() % 4;
            let mut at = Vec::new();
            for _ in 0..n {
                let i = (rng.next_u64() % b.len() as u64) as usize;
                b[i] ^= 1 << (rng.next_u64() % 8);
                at.push(i);
            }
            fs::write(&victim, &b).unwrap();
            format!("flip {rel} at {at:?}")
        }
        Op::Truncate => {
            let len = fs::metadata(&victim).unwrap().len();
            let to = rng.next_u64() % len;
            fs::OpenOptions::new()
                .write(true)
                .open(&victim)
                .unwrap()
                .set_len(to)
                .unwrap();
            format!("truncate {rel} from {len} to {to}")
        }
        Op::Delete => {
            fs::remove_file(&victim).unwrap();
            format!("delete {rel}")
        }
    }
}

/// What a repository serves, compared with the truth.
#[derive(Default, Debug)]
struct Observed {
    /// Exit code of `check --read-data` per passphrase (main first).
    check_codes: Vec<i32>,
    /// Its JSON report with the main passphrase, when it ran.
    check: Option<Value>,
    /// Per original snapshot id: files restored byte-identical, files that failed.
    restored: BTreeMap<String, BTreeSet<String>>,
    failed: BTreeMap<String, BTreeSet<String>>,
    /// WAL segments fetched byte-identical, and those that failed.
    wal_ok: BTreeSet<String>,
    wal_failed: BTreeSet<String>,
    /// Any `cat` that failed.
    cat_failed: bool,
    /// Wrong bytes served, or success claimed for an incomplete result: must stay empty.
    wrong: Vec<String>,
}

impl Observed {
    fn lost_anything(&self) -> bool {
        self.failed.values().any(|f| !f.is_empty())
            || !self.wal_failed.is_empty()
            || self.cat_failed
    }
}

fn no_panic(o: &std::process::Output, what: &str, wrong: &mut Vec<String>) {
    let e = String::from_utf8_lossy(&o.stderr);
    if e.contains("panicked") || o.status.code().is_none_or(|c| c >= 100) {
        wrong.push(format!("{what} crashed: {}", describe(o)));
    }
}

/// Restores, cats and fetches everything; `replacement` maps an original snapshot id to the
/// snapshot that now stands for it (itself, its repaired copy, or none).
fn observe(
    r: &Repo,
    p: &Pristine,
    with_spare: bool,
    replacement: &dyn Fn(&str) -> Option<String>,
    rng: &mut Rng,
    tag: &str,
) -> Observed {
    let mut ob = Observed::default();
    let mut passwords = vec![r.password.clone()];
    if with_spare {
        passwords.push(SPARE_PASSWORD.to_string());
    }
    for (i, pw) in passwords.iter().enumerate() {
        let o = r.wb_pass(pw, &["check", "--read-data", "--json"]);
        no_panic(&o, "check", &mut ob.wrong);
        ob.check_codes.push(o.status.code().unwrap_or(-1));
        if i == 0 {
            ob.check = serde_json::from_slice(&o.stdout).ok();
        }
    }
    for t in &p.snaps {
        let mut ok = BTreeSet::new();
        let mut failed: BTreeSet<String> = t.files.keys().cloned().collect();
        if let Some(id) = replacement(&t.id) {
            let dst = r.scratch(&format!("{tag}-restore-{}", t.short));
            let o = r.wb(&["restore", &id, "--target", s(&dst)]);
            no_panic(&o, "restore", &mut ob.wrong);
            let got = files_under(&dst);
            for (path, bytes) in &got {
                match t.files.get(path) {
                    Some(b) if b == bytes => {
                        ok.insert(path.clone());
                        failed.remove(path);
                    }
                    Some(_) => ob
                        .wrong
                        .push(format!("restore of {id} gave wrong bytes for {path}")),
                    None => ob.wrong.push(format!("restore of {id} made up {path}")),
                }
            }
            let original = id == t.id;
            if o.status.success() && original && !failed.is_empty() {
                ob.wrong.push(format!(
                    "restore of {id} exited 0 without {failed:?}\n{}",
                    describe(&o)
                ));
            }
            // One file by `cat`: its output is the truth or a prefix of it with a failure.
            let files: Vec<&String> = t.files.keys().collect();
            let f = files[(rng.next_u64() % files.len() as u64) as usize];
            let o = r.wb(&["cat", &format!("{id}:{f}")]);
            no_panic(&o, "cat", &mut ob.wrong);
            let truth = &t.files[f];
            if o.status.success() {
                if &o.stdout != truth {
                    ob.wrong
                        .push(format!("cat {id}:{f} exited 0 with wrong bytes"));
                }
            } else {
                ob.cat_failed |= original || ok.contains(f);
                if !truth.starts_with(&o.stdout) {
                    ob.wrong.push(format!(
                        "cat {id}:{f} printed bytes that are not the file's"
                    ));
                }
            }
        }
        ob.restored.insert(t.id.clone(), ok);
        ob.failed.insert(t.id.clone(), failed);
    }
    for (name, truth) in &p.wal {
        let dst = r.scratch(&format!("{tag}-wal-{name}"));
        let o = r.wb(&["wal-fetch", "--cluster", CLUSTER, name, s(&dst)]);
        no_panic(&o, "wal-fetch", &mut ob.wrong);
        let got = fs::read(&dst).ok();
        match (o.status.success(), got) {
            (true, Some(b)) if &b == truth => {
                ob.wal_ok.insert(name.clone());
            }
            (true, _) => ob
                .wrong
                .push(format!("wal-fetch {name} exited 0 with wrong bytes")),
            (false, None) => {
                ob.wal_failed.insert(name.clone());
            }
            (false, Some(b)) if &b == truth => {
                ob.wal_failed.insert(name.clone());
            }
            (false, Some(_)) => ob
                .wrong
                .push(format!("wal-fetch {name} failed but left wrong bytes")),
        }
    }
    ob
}

/// Reads every snapshot file and WAL segment through the mount: each read gives the true
/// bytes or fails (EIO); returns what was wrong.
fn mount_reads(r: &Repo, p: &Pristine) -> Vec<String> {
    let m = crate::mount::Mounted::new(r, &[]);
    let wal_dir = m.p("wal");
    let mut wrong = Vec::new();
    let mut served = 0;
    let mut check = |path: PathBuf, truth: &[u8]| match fs::read(&path) {
        Ok(b) if b == truth => served += 1,
        Ok(_) => wrong.push(format!(
            "the mount served wrong bytes for {}",
            path.display()
        )),
        // Damage is EIO; a WAL record that is gone or unreadable is simply not listed.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.starts_with(&wal_dir) => {}
        Err(e) => wrong.push(format!(
            "the mount failed {} with {e}, not EIO",
            path.display()
        )),
    };
    for t in &p.snaps {
        for (f, truth) in &t.files {
            check(m.p(&format!("{}{f}", t.in_mount)), truth);
        }
    }
    for (name, truth) in &p.wal {
        check(m.p(&format!("wal/{CLUSTER}/{name}")), truth);
    }
    // One pack or record is damaged: most of what the mount shows must still read.
    if served == 0 {
        wrong.push("the mount served nothing at all".to_string());
    }
    wrong
}

/// The affected entries of every problem in a check report.
fn affected(check: &Value) -> Vec<String> {
    check["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["affected"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// Whether check's report names `path` of snapshot `short` (the file, a directory above it,
/// the root, or the snapshot as a whole).
fn names_file(aff: &[String], short: &str, path: &str) -> bool {
    aff.iter().any(|a| {
        if a == &format!("snapshot {short}") {
            return true;
        }
        let Some(rest) = a.strip_prefix(&format!("{short} ")) else {
            return false;
        };
        let Some((_, p)) = rest.split_once(": ") else {
            return false;
        };
        p == path
            || p == "/ (root tree)"
            || p.strip_suffix("/ (directory)")
                .is_some_and(|d| path.starts_with(&format!("{d}/")))
    })
}

#[derive(Default, Clone, serde::Serialize)]
struct Counts {
    trials: u32,
    detected: u32,
    detected_exit_12: u32,
    only_as_failed_unlock: u32,
    harmless: u32,
    undetectable_deletion: u32,
    repaired_clean: u32,
    repaired_only_real_loss_left: u32,
    wrong_bytes: u32,
    failures: u32,
}

/// One trial; returns its damage kind, what happened, and failures (empty when it held).
fn trial(p: &Pristine, i: u64, seed: u64) -> (String, Counts, Vec<String>) {
    let mut rng = Rng::new(seed);
    let target = TARGETS[(i % 6) as usize];
    let op = OPS[((i / 6) % 3) as usize];
    let kind = format!("{target:?}/{op:?}").to_lowercase();
    let r = p.r.copy();
    let what = damage(&r.path, target, op, &mut rng);
    let mut fails = Vec::new();
    let mut c = Counts {
        trials: 1,
        ..Counts::default()
    };
    let same = |id: &str| Some(id.to_string());
    let mut before = observe(&r, p, target == Target::Key, &same, &mut rng, "before");
    // The mount too, where the damage is to served data (a mount per trial costs ~0.3 s).
    if matches!(target, Target::Pack | Target::Wal) {
        before.wrong.extend(mount_reads(&r, p));
    }
    let detected = before.check_codes.iter().any(|&c| c != 0);
    let by_design =
        op == Op::Delete && matches!(target, Target::Manifest | Target::Wal | Target::Key);
    if detected {
        c.detected = 1;
        if before.check_codes.contains(&12) {
            c.detected_exit_12 = 1;
        } else if before.check_codes.contains(&10) {
            c.only_as_failed_unlock = 1;
        }
    } else if !before.lost_anything() {
        c.harmless = 1;
    } else if by_design {
        c.undetectable_deletion = 1;
    } else {
        fails.push(format!(
            "damage not detected, yet data was lost: {before:?}"
        ));
    }
    // Damage is exit 12; a damaged key file reads as a wrong passphrase (10) to its holder.
    for &code in &before.check_codes {
        if !(code == 0 || code == 12 || (code == 10 && target == Target::Key)) {
            fails.push(format!("check exited {code} on damage"));
        }
    }
    // Named: every file that no longer restores, every WAL segment that no longer fetches.
    if let Some(check) = &before.check {
        let aff = affected(check);
        for t in &p.snaps {
            for f in &before.failed[&t.id] {
                let deleted = by_design && target == Target::Manifest;
                if !deleted && !names_file(&aff, &t.short, f) {
                    fails.push(format!("check does not name {} {f}: {check:#}", t.short));
                }
            }
        }
        for w in &before.wal_failed {
            if !by_design && !aff.contains(&format!("WAL {CLUSTER}/{w}")) {
                fails.push(format!("check does not name WAL {w}: {check:#}"));
            }
        }
    }

    // Repair, in restic's order, then look again.
    let mut repair_out = Vec::new();
    for args in [
        &["repair", "index"][..],
        &["repair", "packs"][..],
        &["repair", "snapshots", "--forget", "--json"][..],
    ] {
        let o = r.wb(args);
        no_panic(&o, &args.join(" "), &mut fails);
        repair_out.push(o);
    }
    let repaired: Vec<Value> = match r.wb(&["snapshots", "--json"]) {
        o if o.status.success() => serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap(),
        _ => Vec::new(),
    };
    let now = |id: &str| -> Option<String> {
        let by = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str) == Some(id);
        repaired
            .iter()
            .find(|v| by(v, "/id"))
            .or_else(|| repaired.iter().find(|v| by(v, "/repaired_from")))
            .map(|v| str_of(v, "/id").to_string())
    };
    let after = observe(&r, p, target == Target::Key, &now, &mut rng, "after");
    for t in &p.snaps {
        let lost: Vec<_> = before.restored[&t.id]
            .difference(&after.restored[&t.id])
            .collect();
        if !lost.is_empty() {
            fails.push(format!("repair made {} {lost:?} unrestorable", t.short));
        }
    }
    let wal_lost: Vec<_> = before.wal_ok.difference(&after.wal_ok).collect();
    if !wal_lost.is_empty() {
        fails.push(format!("repair made WAL {wal_lost:?} unfetchable"));
    }
    // What check still reports must be really lost: manifests, WAL, keys, or snapshots
    // whose root is gone (`repair snapshots` could not write them anew).
    let unrepairable: Vec<String> = serde_json::from_slice::<Value>(&repair_out[2].stdout)
        .ok()
        .and_then(|v| v["unrepairable"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|u| {
            u["snapshot"]
                .as_str()
                .map(|s| s[..8.min(s.len())].to_string())
        })
        .collect();
    match (&after.check, after.check_codes[0]) {
        (_, 0) => c.repaired_clean = 1,
        // The index is a cache: nothing of it is ever really lost.
        (_, code) if target == Target::Index => {
            fails.push(format!("check after repair index exited {code}"))
        }
        (Some(check), 12) => {
            let mut real = true;
            for pr in check["problems"].as_array().into_iter().flatten() {
                let k = pr["kind"].as_str().unwrap_or("");
                let aff: Vec<&str> = pr["affected"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let of_unrepairable = !aff.is_empty()
                    && aff
                        .iter()
                        .all(|a| unrepairable.iter().any(|u| a.starts_with(u.as_str())));
                if !matches!(k, "manifest" | "wal" | "wal-gap" | "key") && !of_unrepairable {
                    real = false;
                    fails.push(format!("after repair check still reports {pr:#}"));
                }
            }
            if real {
                c.repaired_only_real_loss_left = 1;
            }
        }
        // The repository does not open (config or the main key): nothing to repair.
        (None, code) if matches!(target, Target::Config | Target::Key) && code != 0 => {
            c.repaired_only_real_loss_left = 1
        }
        (_, code) => fails.push(format!("check after repair exited {code}")),
    }
    if std::env::var_os("WAYBACK_BITROT_VERBOSE").is_some() {
        let kinds = |o: &Observed| -> Vec<String> {
            o.check.as_ref().map_or(vec![], |c| {
                c["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["kind"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
        };
        let lost = |o: &Observed| -> usize { o.failed.values().map(|f| f.len()).sum() };
        eprintln!(
            "trial {i} {what}: check {:?} {:?}, {} files and {:?} WAL lost; repair exits {:?}; \
             after: check {:?} {:?}, {} files and {:?} WAL lost",
            before.check_codes,
            kinds(&before),
            lost(&before),
            before.wal_failed,
            repair_out
                .iter()
                .map(|o| o.status.code())
                .collect::<Vec<_>>(),
            after.check_codes,
            kinds(&after),
            lost(&after),
            after.wal_failed,
        );
    }
    let wrong: Vec<String> = before.wrong.into_iter().chain(after.wrong).collect();
    c.wrong_bytes = wrong.len() as u32;
    fails.extend(wrong);
    if !fails.is_empty() {
        c.failures = 1;
        let outs: Vec<String> = repair_out.iter().map(describe).collect();
        fails.insert(
            0,
            format!(
                "trial {i} (seed {seed}): {what}\nrepair:\n{}",
                outs.join("\n")
            ),
        );
    }
    (kind, c, fails)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn bit_rot_trials_are_detected_never_served_and_repaired_without_harm() {
    let trials = env_u64("WAYBACK_BITROT_TRIALS", 36);
    let first = env_u64("WAYBACK_BITROT_SEED", 0x5eed);
    // Trial numbers from..from+trials (the number picks the damage kind, seed + number the
    // victim and bytes): `WAYBACK_BITROT_FROM=85 WAYBACK_BITROT_TRIALS=1` replays trial 85.
    let from = env_u64("WAYBACK_BITROT_FROM", 0);
    let p = pristine();
    let next = std::sync::atomic::AtomicU64::new(0);
    let results: Mutex<Vec<(String, Counts, Vec<String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = from + next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= from + trials {
                    break;
                }
                let out = trial(&p, i, first.wrapping_add(i));
                results.lock().unwrap().push(out);
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut by_kind: BTreeMap<String, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    let mut failures = Vec::new();
    for (kind, c, f) in results {
        for acc in [by_kind.entry(kind).or_default(), &mut total] {
            acc.trials += c.trials;
            acc.detected += c.detected;
            acc.detected_exit_12 += c.detected_exit_12;
            acc.only_as_failed_unlock += c.only_as_failed_unlock;
            acc.harmless += c.harmless;
            acc.undetectable_deletion += c.undetectable_deletion;
            acc.repaired_clean += c.repaired_clean;
            acc.repaired_only_real_loss_left += c.repaired_only_real_loss_left;
            acc.wrong_bytes += c.wrong_bytes;
            acc.failures += c.failures;
        }
        failures.extend(f);
    }
    let mut table = format!(
        "{:<18} {:>6} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8} {:>8} {:>6} {:>6}\n",
        "damage",
        "trials",
        "detected",
        "exit12",
        "unlock",
        "harmless",
        "deletion",
        "clean",
        "realloss",
        "wrong",
        "fail"
    );
    for (k, c) in by_kind.iter().chain([(&"total".to_string(), &total)]) {
        table += &format!(
            "{:<18} {:>6} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8} {:>8} {:>6} {:>6}\n",
            k,
            c.trials,
            c.detected,
            c.detected_exit_12,
            c.only_as_failed_unlock,
            c.harmless,
            c.undetectable_deletion,
            c.repaired_clean,
            c.repaired_only_real_loss_left,
            c.wrong_bytes,
            c.failures
        );
    }
    eprintln!("bit-rot trials (first seed {first}):\n{table}");
    if let Ok(path) = std::env::var("WAYBACK_BITROT_REPORT") {
        let v = serde_json::json!({
            "first_seed": first,
            "by_kind": by_kind,
            "total": total,
            "failures": failures,
        });
        fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    assert_eq!(total.trials as u64, trials);
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(total.wrong_bytes, 0);
}
