//! The crash matrix: every writer driven through every durability barrier by the
//! fault-injecting backend (`wayback::repo::fault`, whose module doc states the model).
//!
//! For each writer: count its barriers `N` on a copy of a prepared repository, then for every
//! `k` in `1..=N` (a bounded sample when `N` is large, all of them with
//! `WAYBACK_FAULT_LONG=1`), on a fresh copy:
//! - **power loss at `k`**: the writer must fail; then, reopened with the real backend as the
//!   next process after a reboot would: `check --read-data` finds nothing, every snapshot and
//!   WAL file acknowledged before restores byte-identical, and the same writer run again
//!   succeeds (and what it acknowledges restores too);
//! - **EIO at `k`**: the writer must fail with an error that names the I/O error, nothing
//!   acknowledged is lost, and the same writer run again *in the same process, on the same open
//!   repository* (the agent keeps it open) succeeds.
//!
//! Failures are collected, not panicked on, so one run reports every failing point; the test
//! prints a line per writer (`--nocapture` shows them) and fails when any point failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wayback::crypto::KdfParams;
use wayback::error::Error;
use wayback::id::BlobKind;
use wayback::ingest::fs::FsBackup;
use wayback::ingest::stream::{StreamBackup, StreamInput};
use wayback::ingest::Counters;
use wayback::maint::check::{check, CheckOptions, Problem};
use wayback::maint::prune::{prune, PruneOptions};
use wayback::repo::backend::Backend;
use wayback::repo::fault::{Barrier, Fault, FaultBackend, Reached};
use wayback::repo::{Access, Repository};
use wayback::restore::{restore, RestoreCounters, RestoreOptions};
use wayback::snapshot::Snapshot;

use crate::common::*;

/// Crash points tried per writer and kind unless `WAYBACK_FAULT_LONG=1`.
const SAMPLE: u64 = 24;

/// Something a writer acknowledged: it must survive every later crash.
#[derive(Clone, Debug)]
enum Ack {
    /// A snapshot (id hex) restoring to exactly this tree.
    Tree(String, PathBuf),
    /// A stream snapshot (id hex) holding one file `name` with these bytes (a file).
    Stream(String, String, PathBuf),
    /// An archived WAL file (cluster, name) with the bytes of this file.
    Wal(String, String, PathBuf),
    /// A passphrase that opens the repository.
    Pass(String),
    /// A passphrase that no longer opens it (`key passwd` replaced it).
    Retired(String),
    /// Damage being repaired: some snapshot of source `.0` (the damaged original or its
    /// repair) restores tree `.1` (the original minus the damaged file `.2`), byte-identical.
    Salvage(String, PathBuf, String),
}

/// Damage the template holds before the writer runs (the repair writers): problems about it
/// are expected after a crash in the middle of its repair, nothing else is.
#[derive(Clone, Debug)]
struct Damage {
    /// The damaged file's path in its snapshot (as `check` names it, after `: `).
    file: String,
    /// The damaged pack (hex).
    pack: String,
}

impl Damage {
    /// Whether `p` is about this damage only (its pack, or only the damaged file).
    fn explains(&self, p: &Problem) -> bool {
        p.pack.as_deref() == Some(self.pack.as_str())
            || (!p.affected.is_empty() && p.affected.iter().all(|a| a.ends_with(&self.file)))
    }
}

/// The world of one writer's matrix: a prepared repository and what it holds.
struct World {
    /// Scratch directory (sources, copies, restores).
    tmp: tempfile::TempDir,
    /// The prepared repository, copied for every run.
    template: PathBuf,
    /// What the template holds that must survive.
    acked: Vec<Ack>,
    /// Damage the template holds on purpose (repair writers).
    damage: Option<Damage>,
}

/// One writer: runs over `be`, opening what it needs; returns what it acknowledged.
/// `slot` keeps the open repository between a failed run and its retry (EIO variant).
type RunFn = dyn Fn(&Path, &Arc<dyn Backend>, &mut Option<Repository>, u32) -> Result<Vec<Ack>, Error>
    + Sync;

struct Writer {
    name: &'static str,
    world: World,
    run: Box<RunFn>,
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn pass_of(acked: &[Ack]) -> String {
    acked
        .iter()
        .rev()
        .find_map(|a| match a {
            Ack::Pass(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_else(|| PASSWORD.to_string())
}

/// Opens (once) the repository over `be` for `access` with the newest acknowledged passphrase.
fn open<'a>(
    slot: &'a mut Option<Repository>,
    root: &Path,
    be: &Arc<dyn Backend>,
    pass: &str,
    access: Access,
) -> Result<&'a Repository, Error> {
    if slot.is_none() {
        *slot = Some(unlocked(|| {
            Repository::open_with_backend(root, be.clone(), pass.as_bytes(), access)
        })?);
    }
    Ok(slot.as_ref().expect("just opened"))
}

/// Runs `f` again while it finds the writer lock held, for up to 2 s. Why: this test binary
/// forks (`cp`, `tar`, `wayback`) from many threads, and a child holds a copy of every open
/// descriptor, the lock's too, from its fork until its exec closes it (O_CLOEXEC); a writer
/// that reopens right after dropping its lock can meet such a copy. One process with one
/// thread (the CLI) never does.
fn unlocked<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    for _ in 0..100 {
        match f() {
            Err(Error::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(20)),
            r => return r,
        }
    }
    f()
}

/// Differences between two trees (types, modes, bytes, link targets), as text.
fn tree_diff(a: &Path, b: &Path) -> Result<(), String> {
    let list = |d: &Path| -> Result<BTreeMap<String, fs::Metadata>, String> {
        let mut out = BTreeMap::new();
        let mut paths = Vec::new();
        collect_paths(d, &mut paths);
        for p in paths {
            let rel = p.strip_prefix(d).unwrap().to_string_lossy().to_string();
            if rel.is_empty() {
                continue;
            }
            let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            out.insert(rel, md);
        }
        Ok(out)
    };
    let (la, lb) = (list(a)?, list(b)?);
    let ka: Vec<_> = la.keys().collect();
    let kb: Vec<_> = lb.keys().collect();
    if ka != kb {
        return Err(format!("entries differ: {ka:?} vs {kb:?}"));
    }
    for (rel, ma) in &la {
        let mb = &lb[rel];
        if ma.file_type() != mb.file_type()
            || ma.permissions().mode() & 0o7777 != mb.permissions().mode() & 0o7777
        {
            return Err(format!("{rel}: type or mode differs"));
        }
        if ma.is_file() && fs::read(a.join(rel)).ok() != fs::read(b.join(rel)).ok() {
            return Err(format!("{rel}: content differs"));
        }
        if ma.file_type().is_symlink()
            && fs::read_link(a.join(rel)).ok() != fs::read_link(b.join(rel)).ok()
        {
            return Err(format!("{rel}: link target differs"));
        }
    }
    Ok(())
}

fn restore_snapshot(repo: &Repository, snap: &Snapshot, target: &Path) -> Result<(), String> {
    let rep = restore(
        repo,
        Some(&snap.root),
        None,
        snap.root_meta.as_ref(),
        target,
        &RestoreOptions::default(),
        &RestoreCounters::default(),
    )
    .map_err(|e| format!("restore {}: {e}", snap.id.short()))?;
    if !rep.failed.is_empty() {
        return Err(format!("restore {}: {:?}", snap.id.short(), rep.failed));
    }
    Ok(())
}

/// Everything that must hold of the repository at `root` (real backend) after a crash:
/// check --read-data is clean and every acknowledged thing is there, byte-identical.
/// `damage`: problems it explains are tolerated (a repair interrupted half-way); the final
/// state after a run that succeeded passes `None`.
fn verify(
    root: &Path,
    scratch: &Path,
    acked: &[Ack],
    damage: Option<&Damage>,
) -> Result<(), String> {
    let pass = pass_of(acked);
    for a in acked {
        let (p, must_open) = match a {
            Ack::Pass(p) => (p, true),
            Ack::Retired(p) => (p, false),
            _ => continue,
        };
        let opened = Repository::open(root, p.as_bytes(), Access::Read);
        match (opened, must_open) {
            (Ok(_), true) | (Err(Error::WrongPassword), false) => {}
            (Ok(_), false) => return Err(format!("retired passphrase {p} still opens")),
            (Err(e), _) => return Err(format!("passphrase {p}: {e}")),
        }
    }
    let repo = Repository::open(root, pass.as_bytes(), Access::Read)
        .map_err(|e| format!("reopen for reading: {e}"))?;
    let rep = check(
        &repo,
        CheckOptions {
            read_data: true,
            subset: None,
        },
        &|_, _, _| {},
    )
    .map_err(|e| format!("check: {e}"))?;
    let unexplained: Vec<&Problem> = rep
        .problems
        .iter()
        .filter(|p| !damage.is_some_and(|d| d.explains(p)))
        .collect();
    if !unexplained.is_empty() {
        return Err(format!("check --read-data: {unexplained:?}"));
    }
    let snaps = repo.snapshots().map_err(|e| format!("snapshots: {e}"))?;
    let find = |id: &str| {
        snaps
            .iter()
            .find(|s| s.id.to_hex() == id)
            .ok_or_else(|| format!("acknowledged snapshot {} is gone", &id[..8]))
    };
    for (i, a) in acked.iter().enumerate() {
        let target = scratch.join(format!("verify-{i}"));
        let _ = fs::remove_dir_all(&target);
        match a {
            Ack::Tree(id, src) => {
                restore_snapshot(&repo, find(id)?, &target)?;
                tree_diff(src, &target).map_err(|e| format!("snapshot {}: {e}", &id[..8]))?;
            }
            Ack::Stream(id, name, src) => {
                restore_snapshot(&repo, find(id)?, &target)?;
                if fs::read(target.join(name)).ok() != fs::read(src).ok() {
                    return Err(format!("stream snapshot {}: content differs", &id[..8]));
                }
            }
            Ack::Wal(cluster, name, src) => {
                fs::create_dir_all(&target).unwrap();
                let dest = target.join(name);
                wayback::wal::fetch(&repo, cluster, name, &dest)
                    .map_err(|e| format!("wal-fetch {cluster}/{name}: {e}"))?;
                if fs::read(&dest).ok() != fs::read(src).ok() {
                    return Err(format!("WAL {cluster}/{name}: content differs"));
                }
            }
            Ack::Salvage(source, expected, file) => {
                let mut ok = false;
                let mut why = Vec::new();
                for s in snaps.iter().filter(|s| &s.source == source) {
                    let _ = fs::remove_dir_all(&target);
                    // The damaged original restores all but its damaged file (and says so).
                    let _ = restore_snapshot(&repo, s, &target);
                    let _ = fs::remove_file(target.join(file));
                    match tree_diff(expected, &target) {
                        Ok(()) => ok = true,
                        Err(e) => why.push(format!("{}: {e}", s.id.short())),
                    }
                }
                if !ok {
                    return Err(format!(
                        "no snapshot of {source} restores the intact files any more: {why:?}"
                    ));
                }
            }
            Ack::Pass(_) | Ack::Retired(_) => {}
        }
        let _ = fs::remove_dir_all(&target);
    }
    Ok(())
}

/// The long version (`WAYBACK_FAULT_LONG=1`, `scripts/fault.sh`): more data, more history,
/// every crash point.
fn long() -> bool {
    std::env::var_os("WAYBACK_FAULT_LONG").is_some_and(|v| v == "1")
}

/// Which crash points to try of `n`.
fn points(n: u64) -> Vec<u64> {
    if long() || n <= SAMPLE {
        return (1..=n).collect();
    }
    // The first and last barriers (start and commit) and an even spread between.
    let mut v: Vec<u64> = (1..=4).chain(n - 3..=n).collect();
    let inner = SAMPLE - 8;
    for i in 1..=inner {
        v.push(4 + i * (n - 8) / (inner + 1));
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// What one matrix found.
#[derive(Default)]
struct Tally {
    barriers: u64,
    crash_tried: usize,
    eio_tried: usize,
    eio_after_tried: usize,
    enospc_tried: usize,
    failures: Vec<String>,
}

/// How a fault run ends and is followed up.
#[derive(Clone, Copy, PartialEq)]
enum After {
    /// The process died: reopen with the real backend, verify, run again, verify.
    Reboot,
    /// The process lives on: clear the fault, run again on the same open repository, verify.
    Retry,
}

/// One run of `w` on a fresh copy with `fault`; failures go to `t.failures`.
fn attempt(
    w: &Writer,
    dir: &Path,
    fault: Fault,
    needle: &str,
    after: After,
    ctx: &str,
    t: &mut Tally,
) {
    fs::create_dir_all(dir).unwrap();
    let root = dir.join("repo");
    copy_dir(&w.world.template, &root);
    let fb = Arc::new(FaultBackend::new(&root, fault));
    let be: Arc<dyn Backend> = fb.clone();
    let mut slot = None;
    let mut acked = w.world.acked.clone();
    match (w.run)(&root, &be, &mut slot, 1) {
        Ok(a) => {
            t.failures
                .push(format!("{ctx}: the writer reported success"));
            acked.extend(a);
        }
        Err(e) if !e.to_string().contains(needle) => {
            t.failures.push(format!(
                "{ctx}: the error does not say why (no '{needle}'): {e}"
            ));
        }
        Err(_) => {}
    }
    let (be, mut slot) = match after {
        After::Reboot => {
            drop(slot);
            if let Err(e) = verify(&root, dir, &acked, w.world.damage.as_ref()) {
                t.failures.push(format!("{ctx}: after the crash: {e}"));
            }
            let be: Arc<dyn Backend> = Arc::new(wayback::repo::backend::LocalBackend::new(&root));
            (be, None)
        }
        After::Retry => {
            fb.set_fault(Fault::None);
            (be, slot)
        }
    };
    match (w.run)(&root, &be, &mut slot, 2) {
        Ok(a) => acked.extend(a),
        Err(e) => t
            .failures
            .push(format!("{ctx}: running it again failed: {e}")),
    }
    drop(slot);
    if let Err(e) = verify(&root, dir, &acked, None) {
        t.failures
            .push(format!("{ctx}: after running it again: {e}"));
    }
    fs::remove_dir_all(dir).unwrap();
}

/// Disk-full budgets: each put in turn is the first that does not fit (a bounded sample).
fn budgets(log: &[Reached]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut before = 0u64;
    for r in log {
        if matches!(r.kind, Barrier::Put | Barrier::PutNew) {
            out.push((before, format!("{:?} {}", r.kind, r.path)));
            // Half of it would fit: the put itself must fail, not a later one.
            if r.bytes > 1 {
                out.push((
                    before + r.bytes / 2,
                    format!("{:?} {} (half fits)", r.kind, r.path),
                ));
            }
            before += r.bytes;
        }
    }
    let keep: Vec<u64> = points(out.len() as u64);
    keep.into_iter()
        .map(|i| out[i as usize - 1].clone())
        .collect()
}

fn matrix(w: &Writer) -> Tally {
    let mut t = Tally::default();
    let tmp = w.world.tmp.path();
    // Count.
    let dir = tmp.join("count");
    fs::create_dir_all(&dir).unwrap();
    let root = dir.join("repo");
    copy_dir(&w.world.template, &root);
    let fb = Arc::new(FaultBackend::new(&root, Fault::None));
    let be: Arc<dyn Backend> = fb.clone();
    let mut slot = None;
    let acked = match (w.run)(&root, &be, &mut slot, 0) {
        Ok(a) => a,
        Err(e) => panic!("{}: the writer fails without any fault: {e}", w.name),
    };
    drop(slot);
    t.barriers = fb.barriers();
    assert!(t.barriers > 0, "{}: no barrier at all", w.name);
    let all: Vec<Ack> = w.world.acked.iter().cloned().chain(acked).collect();
    if let Err(e) = verify(&root, &dir, &all, None) {
        panic!("{}: the fault-free run does not verify: {e}", w.name);
    }
    let log = fb.log();
    fs::remove_dir_all(&dir).unwrap();

    for k in points(t.barriers) {
        let at = &log[k as usize - 1];
        let what = format!("{:?} {}", at.kind, at.path);
        t.crash_tried += 1;
        let ctx = format!(
            "{}: power loss at barrier {k}/{} ({what})",
            w.name, t.barriers
        );
        let dir = tmp.join(format!("crash-{k}"));
        attempt(
            w,
            &dir,
            Fault::PowerLoss { at: k },
            "power loss",
            After::Reboot,
            &ctx,
            &mut t,
        );
        t.eio_tried += 1;
        let ctx = format!("{}: EIO at barrier {k}/{} ({what})", w.name, t.barriers);
        let dir = tmp.join(format!("eio-{k}"));
        attempt(
            w,
            &dir,
            Fault::FailNth { nth: k },
            "injected fault",
            After::Retry,
            &ctx,
            &mut t,
        );
        t.eio_after_tried += 1;
        let ctx = format!(
            "{}: EIO after barrier {k}/{} took effect ({what})",
            w.name, t.barriers
        );
        let dir = tmp.join(format!("eio-after-{k}"));
        let fault = Fault::FailAfterNth { nth: k };
        attempt(w, &dir, fault, "injected fault", After::Retry, &ctx, &mut t);
    }
    for (i, (budget, what)) in budgets(&log).into_iter().enumerate() {
        t.enospc_tried += 1;
        let ctx = format!("{}: disk full after {budget} bytes (at {what})", w.name);
        let dir = tmp.join(format!("enospc-{i}"));
        let fault = Fault::NoSpace {
            after_bytes: budget,
        };
        attempt(
            w,
            &dir,
            fault,
            "No space left on device",
            After::Retry,
            &ctx,
            &mut t,
        );
    }
    t
}

fn report(w: &Writer) {
    let started = std::time::Instant::now();
    let t = matrix(w);
    println!(
        "fault matrix: {:<16} barriers {:>3}  power-loss points {:>3}  EIO points {:>3} + {:>3} after  disk-full points {:>3}  failures {}  ({:.1} s)",
        w.name,
        t.barriers,
        t.crash_tried,
        t.eio_tried,
        t.eio_after_tried,
        t.enospc_tried,
        t.failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        t.failures.is_empty(),
        "{}: {} failing crash points:\n{}",
        w.name,
        t.failures.len(),
        t.failures.join("\n")
    );
}

/// A repository (made by the real binary) with one snapshot of `src1` as source `files`.
fn files_world() -> (World, Repo) {
    let r = Repo::new();
    let src = r.scratch("src1");
    gen_small_tree(&src, 1);
    let id = str_of(&r.backup_dir(&src, "files"), "/id").to_string();
    let tmp = tempfile::Builder::new()
        .prefix("wayback-fault-")
        .tempdir()
        .unwrap();
    let template = tmp.path().join("template");
    copy_dir(&r.path, &template);
    (
        World {
            tmp,
            template,
            acked: vec![Ack::Tree(id, src)],
            damage: None,
        },
        r,
    )
}

fn fs_backup(repo: &Repository, src: &Path, parent: Option<Snapshot>) -> Result<Snapshot, Error> {
    wayback::ingest::fs::backup(
        repo,
        &FsBackup {
            source: "files".into(),
            paths: vec![src.to_path_buf()],
            tags: vec![],
            excludes: globset::GlobSet::empty(),
            parent,
        },
        Arc::new(Counters::default()),
    )
}

#[test]
fn crash_matrix_backup() {
    let (world, r) = files_world();
    // The second backup: one file changed, one added, the rest deduplicated via the parent.
    let src2 = r.scratch("src2");
    gen_small_tree(&src2, 1);
    write_random(&src2.join("a/b/two.bin"), 90_000, 77);
    write_random(&src2.join("new.bin"), 300_000, 78);
    let _keep = r;
    let w = Writer {
        name: "backup",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Write)?;
            let parent = repo.snapshots()?.into_iter().last();
            let s = fs_backup(repo, &src2, parent)?;
            Ok(vec![Ack::Tree(s.id.to_hex(), src2.clone())])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_stream_backup() {
    let (world, r) = files_world();
    let dump = r.scratch("app.dump");
    write_random(&dump, 700_000, 5);
    let _keep = r;
    let w = Writer {
        name: "stream backup",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Write)?;
            let s = wayback::ingest::stream::backup(
                repo,
                &StreamBackup {
                    source: "db".into(),
                    name: "app.dump".into(),
                    tags: vec![],
                    input: StreamInput::Command(format!("cat '{}'", dump.display())),
                },
                Arc::new(Counters::default()),
            )?;
            Ok(vec![Ack::Stream(
                s.id.to_hex(),
                "app.dump".into(),
                dump.clone(),
            )])
        }),
    };
    report(&w);
}

/// A segment-like file of `len` bytes whose first page names system `sysid`.
fn segment(dir: &Path, name: &str, sysid: u64, len: usize, seed: u64) -> PathBuf {
    let mut b = random_bytes(len, seed);
    b[..40].fill(0);
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    let p = dir.join(name);
    fs::write(&p, b).unwrap();
    p
}

#[test]
fn crash_matrix_wal_push() {
    let (mut world, r) = files_world();
    let d = r.mkdir("pg_wal");
    let seg1 = segment(&d, "000000010000000000000001", 7, 3 * MIB + 5, 1);
    // A full 16 MiB segment in the long version (its chunks fill more than one pack).
    let len2 = if long() { 16 * MIB } else { 2 * MIB + 9 };
    let seg2 = segment(&d, "000000010000000000000002", 7, len2, 2);
    // The template gets segment 1 through the binary; the matrix pushes segment 2.
    let o = run(r.cmd(&[
        "--repo",
        s(&world.template),
        "wal-push",
        "--cluster",
        "main",
        s(&seg1),
    ]));
    assert_code(&o, exit::OK, "wal-push of the first segment");
    world.acked.push(Ack::Wal(
        "main".into(),
        "000000010000000000000001".into(),
        seg1,
    ));
    let _keep = r;
    let w = Writer {
        name: "wal-push",
        world,
        run: Box::new(move |root, be, slot, _| {
            // wal-push opens for reading: it takes no lock and writes only its own objects.
            let repo = open(slot, root, be, PASSWORD, Access::Read)?;
            match wayback::wal::push(repo, "main", &seg2) {
                Ok(_) => {}
                Err(wayback::wal::WalError::Repo(e)) => return Err(e),
                Err(e) => return Err(Error::Invalid(e.to_string())),
            }
            Ok(vec![Ack::Wal(
                "main".into(),
                "000000010000000000000002".into(),
                seg2.clone(),
            )])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_first_wal_push() {
    let (world, r) = files_world();
    let d = r.mkdir("pg_wal");
    let seg = segment(&d, "000000010000000000000001", 9, MIB + 3, 3);
    let _keep = r;
    let w = Writer {
        name: "first wal-push",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Read)?;
            match wayback::wal::push(repo, "main", &seg) {
                Ok(_) => {}
                Err(wayback::wal::WalError::Repo(e)) => return Err(e),
                Err(e) => return Err(Error::Invalid(e.to_string())),
            }
            Ok(vec![Ack::Wal(
                "main".into(),
                "000000010000000000000001".into(),
                seg.clone(),
            )])
        }),
    };
    report(&w);
}

/// Three snapshots where the second shares files with the third; the second is forgotten, so
/// prune deletes a pack and repacks another.
fn prune_world() -> (World, Repo) {
    let r = Repo::new();
    let a = r.scratch("a");
    gen_small_tree(&a, 10);
    let b = r.scratch("b");
    gen_small_tree(&b, 20);
    write_random(&b.join("shared.bin"), 400_000, 21);
    let c = r.scratch("c");
    gen_small_tree(&c, 30);
    fs::copy(b.join("shared.bin"), c.join("shared.bin")).unwrap();
    let ida = str_of(&r.backup_dir(&a, "a"), "/id").to_string();
    let idb = str_of(&r.backup_dir(&b, "b"), "/id").to_string();
    let idc = str_of(&r.backup_dir(&c, "c"), "/id").to_string();
    let mut acked = vec![Ack::Tree(ida, a), Ack::Tree(idc, c)];
    let mut forgotten = vec![idb];
    // Archived WAL: its packs are in no index until a writer opens, and nothing but the
    // record references them; prune must keep them.
    let d = r.mkdir("pg_wal");
    let seg = segment(&d, "000000010000000000000001", 7, MIB + 17, 22);
    r.ok(&["wal-push", "--cluster", "main", s(&seg)]);
    acked.push(Ack::Wal(
        "main".into(),
        "000000010000000000000001".into(),
        seg,
    ));
    if long() {
        // More history: every other snapshot of a chain sharing a growing file is forgotten.
        for i in 0..6u64 {
            let dir = r.scratch(&format!("h{i}"));
            gen_small_tree(&dir, 100 + i);
            write_random(&dir.join("grow.bin"), 300_000 * (i as usize + 1), 200);
            let id = str_of(&r.backup_dir(&dir, "h"), "/id").to_string();
            if i % 2 == 0 {
                forgotten.push(id);
            } else {
                acked.push(Ack::Tree(id, dir));
            }
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("wayback-fault-")
        .tempdir()
        .unwrap();
    let template = tmp.path().join("template");
    copy_dir(&r.path, &template);
    // Forgotten as `forget` does it: the manifest's delete is the commit.
    for id in forgotten {
        fs::remove_file(template.join("snapshots").join(&id)).unwrap();
    }
    (
        World {
            tmp,
            template,
            acked,
            damage: None,
        },
        r,
    )
}

#[test]
fn crash_matrix_prune() {
    let (world, r) = prune_world();
    let _keep = r;
    let w = Writer {
        name: "prune",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Write)?;
            prune(
                repo,
                &PruneOptions {
                    max_unused: 0.0,
                    grace: std::time::Duration::ZERO,
                    ..PruneOptions::default()
                },
                &mut |_| {},
            )?;
            Ok(vec![])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_prune_with_grace() {
    let (world, r) = prune_world();
    let _keep = r;
    let w = Writer {
        name: "prune (grace)",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Write)?;
            prune(
                repo,
                &PruneOptions {
                    max_unused: 0.0,
                    ..PruneOptions::default()
                },
                &mut |_| {},
            )?;
            Ok(vec![])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_index_rebuild() {
    let (world, r) = prune_world();
    let _keep = r;
    let w = Writer {
        name: "index rebuild",
        world,
        run: Box::new(move |root, be, slot, _| {
            // The rebuild takes the writer lock itself: a retry first closes the repository.
            *slot = None;
            let (repo, rep) =
                unlocked(|| Repository::rebuild_index(root, be.clone(), PASSWORD.as_bytes()))?;
            if !rep.damaged.is_empty() {
                return Err(Error::Corrupt(format!("{:?}", rep.damaged)));
            }
            *slot = Some(repo);
            Ok(vec![])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_key_add() {
    let (world, r) = files_world();
    let _keep = r;
    let w = Writer {
        name: "key add",
        world,
        run: Box::new(move |root, be, slot, attempt| {
            let repo = open(slot, root, be, PASSWORD, Access::Read)?;
            let pass = format!("added {attempt}");
            wayback::repo::keys::add_key_with_kdf(
                repo.be.as_ref(),
                &repo.key,
                pass.as_bytes(),
                KdfParams::INSECURE_FAST,
            )?;
            Ok(vec![Ack::Pass(PASSWORD.into()), Ack::Pass(pass)])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_key_passwd() {
    let (world, r) = files_world();
    let _keep = r;
    let w = Writer {
        name: "key passwd",
        world,
        run: Box::new(move |root, be, slot, attempt| {
            let repo = open(slot, root, be, PASSWORD, Access::Read)?;
            let pass = format!("changed {attempt}");
            wayback::repo::keys::change_passphrase(
                repo.be.as_ref(),
                &repo.key_id,
                &repo.key,
                pass.as_bytes(),
                KdfParams::INSECURE_FAST,
            )?;
            Ok(vec![Ack::Retired(PASSWORD.into()), Ack::Pass(pass)])
        }),
    };
    report(&w);
}

/// Regression: `check` (a reader) right after an `index rebuild` that lost power called every
/// chunk of the packs not yet re-indexed "not in the index" (exit 12) although every read path
/// finds them by their pack header; and `--read-data` skipped those packs.
#[test]
fn check_after_an_interrupted_index_rebuild_reports_no_damage() {
    let (world, r) = prune_world();
    let root = world.tmp.path().join("repo");
    copy_dir(&world.template, &root);
    let be: Arc<dyn Backend> = Arc::new(FaultBackend::new(&root, Fault::PowerLoss { at: 1 }));
    let e = Repository::rebuild_index(&root, be, PASSWORD.as_bytes())
        .err()
        .expect("the rebuild loses power");
    assert!(e.to_string().contains("power loss"), "{e}");
    let o = run(r.cmd(&["--repo", s(&root), "check", "--read-data"]));
    assert_code(&o, exit::OK, "check after the interrupted rebuild");
    let o = run(r.cmd(&["--repo", s(&root), "check", "--read-data", "--json"]));
    let v = parse_json(&o);
    assert!(
        u64_of(&v, "/packs_read") >= 3,
        "unindexed packs are read too: {v:#}"
    );
}

#[test]
fn crash_matrix_backup_of_several_packs() {
    // (5 packs in the long version.) A file larger than a pack, then more files: the packer flushes while the walker still
    // reads, so a failing put meets a pipeline that is still running.
    let (world, r) = files_world();
    let src = r.scratch("big");
    gen_small_tree(&src, 40);
    write_random(
        &src.join("a/big.bin"),
        if long() { 60 } else { 17 } * MIB,
        41,
    );
    write_random(&src.join("z/after.bin"), 2 * MIB, 42);
    let _keep = r;
    let w = Writer {
        name: "backup (packs)",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Write)?;
            let s = fs_backup(repo, &src, None)?;
            Ok(vec![Ack::Tree(s.id.to_hex(), src.clone())])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_forget() {
    let (mut world, r) = files_world();
    let src2 = r.scratch("src2");
    gen_small_tree(&src2, 2);
    let o = run(r.cmd(&[
        "--repo",
        s(&world.template),
        "backup",
        s(&src2),
        "--source",
        "files",
        "--json",
    ]));
    assert_code(&o, exit::OK, "second backup");
    let id2 = str_of(&parse_json(&o), "/id").to_string();
    // The older snapshot is what forget removes: only the newer must survive.
    world.acked = vec![Ack::Tree(id2, src2)];
    let _keep = r;
    let w = Writer {
        name: "forget",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Write)?;
            wayback::maint::forget::forget(
                repo,
                &wayback::maint::forget::Request::Policy {
                    sources: vec![],
                    policy: wayback::maint::forget::Policy {
                        last: 1,
                        ..Default::default()
                    },
                },
                &[],
                false,
            )?;
            if repo.snapshots()?.len() != 1 {
                return Err(Error::Invalid("forget kept more than the newest".into()));
            }
            Ok(vec![])
        }),
    };
    report(&w);
}

#[test]
fn crash_matrix_basebackup() {
    // The base-backup writer without a server: the command is anything that writes a tar of a
    // data directory to stdout (wayback runs `pg_basebackup -Ft -D -` the same way).
    let (world, r) = files_world();
    let data = r.scratch("pgdata");
    gen_small_tree(&data, 50);
    write_file(
        &data.join("backup_label"),
        b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n",
    );
    let cmd = format!("tar -cf - -C '{}' .", data.display());
    let _keep = r;
    let w = Writer {
        name: "basebackup",
        world,
        run: Box::new(move |root, be, slot, _| {
            let repo = open(slot, root, be, PASSWORD, Access::Write)?;
            let s = wayback::ingest::stream::backup_basebackup(
                repo,
                "pg",
                &cmd,
                &[],
                Some("main".into()),
                Arc::new(Counters::default()),
            )?;
            Ok(vec![Ack::Tree(s.id.to_hex(), data.clone())])
        }),
    };
    report(&w);
}

/// The destination's blobs, as (kind, id), from its index.
fn blob_set(repo: &Repository) -> Result<HashSet<(BlobKind, [u8; 32])>, Error> {
    let mut out = HashSet::new();
    repo.index.for_each_blob(|kind, id, _| {
        out.insert((kind, id.0));
        Ok(())
    })?;
    Ok(out)
}

fn wal_error(e: wayback::wal::WalError) -> Error {
    match e {
        wayback::wal::WalError::Repo(e) => e,
        e => Error::Invalid(e.to_string()),
    }
}

/// What one `wayback copy` run did (as `run_copy` does it: plan, WAL, then snapshots).
struct CopyRun {
    snapshots: usize,
    blobs_sent: u64,
    wal_copied: u64,
    /// The destination's blobs after the WAL part, before the snapshots.
    blobs_before_snapshots: HashSet<(BlobKind, [u8; 32])>,
}

fn copy_run(src: &Repository, dst: &Repository) -> Result<CopyRun, Error> {
    let plan = wayback::copy::plan(src, dst, &[])?;
    let w = wayback::copy::copy_wal(src, dst, &[], &|_| {}).map_err(wal_error)?;
    if !w.conflicts.is_empty() {
        return Err(Error::Invalid(format!("WAL conflicts: {:?}", w.conflicts)));
    }
    let blobs_before_snapshots = blob_set(dst)?;
    let out =
        wayback::copy::copy_snapshots(src, dst, plan, Arc::new(Counters::default()), &|_, _| {})?;
    Ok(CopyRun {
        snapshots: out.copied.len(),
        blobs_sent: out.blobs_sent,
        wal_copied: w.copied,
        blobs_before_snapshots,
    })
}

/// `wayback copy` into a destination on the fault backend (the source is read through the
/// real one). The destination already holds a copy of the source's first snapshot and WAL
/// file; the copy sends two new snapshots (one incremental, one of another source) and a WAL
/// file. Besides the matrix's assertions on the destination: the run after a crash sends
/// exactly the blobs the destination is missing (what the crashed run made durable is not
/// sent again), and a copy after it sends nothing.
#[test]
fn crash_matrix_copy() {
    const OTHER: &str = "the off-site copy's own passphrase";
    let src = Repo::new();
    let dst = Repo::with_password(OTHER);
    let mut trees: HashMap<String, PathBuf> = HashMap::new();
    let d1 = src.scratch("src1");
    gen_small_tree(&d1, 1);
    let first_from = str_of(&src.backup_dir(&d1, "files"), "/id").to_string();
    trees.insert(first_from.clone(), d1);
    let d = src.mkdir("pg_wal");
    let seg1 = segment(&d, "000000010000000000000001", 7, MIB + 5, 1);
    src.ok(&["wal-push", "--cluster", "main", s(&seg1)]);
    let mut c = src.cmd(&["copy", "--to", s(&dst.path), "--wal"]);
    c.env("WAYBACK_TO_PASSWORD", OTHER);
    assert_code(&run(c), exit::OK, "the first copy");
    let first_copy = dst.snapshots();
    assert_eq!(first_copy.len(), 1);
    let d2 = src.scratch("src2");
    gen_small_tree(&d2, 1);
    write_random(&d2.join("a/b/two.bin"), 90_000, 77);
    write_random(
        &d2.join("new.bin"),
        if long() { 20 * MIB } else { 300_000 },
        78,
    );
    trees.insert(str_of(&src.backup_dir(&d2, "files"), "/id").into(), d2);
    let d3 = src.scratch("src3");
    gen_small_tree(&d3, 3);
    trees.insert(str_of(&src.backup_dir(&d3, "other"), "/id").into(), d3);
    let seg2 = segment(&d, "000000010000000000000002", 7, 2 * MIB + 9, 2);
    src.ok(&["wal-push", "--cluster", "main", s(&seg2)]);
    let tmp = tempfile::Builder::new()
        .prefix("wayback-fault-")
        .tempdir()
        .unwrap();
    let template = tmp.path().join("template");
    copy_dir(&dst.path, &template);
    let first = str_of(&first_copy[0], "/id").to_string();
    let world = World {
        tmp,
        template,
        acked: vec![
            Ack::Pass(OTHER.into()),
            Ack::Tree(first, trees[&first_from].clone()),
            Ack::Wal("main".into(), "000000010000000000000001".into(), seg1),
        ],
        damage: None,
    };
    let src_root = src.path.clone();
    // The snapshots' blobs of the fault-free run (the count).
    let full: Mutex<HashSet<(BlobKind, [u8; 32])>> = Mutex::new(HashSet::new());
    let _keep = (src, dst);
    let w = Writer {
        name: "copy",
        world,
        run: Box::new(move |root, be, slot, round| {
            let src = Repository::open(&src_root, PASSWORD.as_bytes(), Access::Read)?;
            let dst = open(slot, root, be, OTHER, Access::Write)?;
            let r = copy_run(&src, dst)?;
            let sent: HashSet<_> = blob_set(dst)?
                .difference(&r.blobs_before_snapshots)
                .copied()
                .collect();
            match round {
                0 => {
                    if r.snapshots != 2 || r.wal_copied != 1 || r.blobs_sent != sent.len() as u64 {
                        return Err(Error::Invalid(format!(
                            "the fault-free copy: {} snapshots, {} WAL files, {} blobs sent, \
                             {} new in the index",
                            r.snapshots,
                            r.wal_copied,
                            r.blobs_sent,
                            sent.len()
                        )));
                    }
                    *full.lock().unwrap() = sent;
                }
                2 => {
                    // Resumed: exactly what the destination lacked of the full copy.
                    let full = full.lock().unwrap();
                    let missing = full.difference(&r.blobs_before_snapshots).count() as u64;
                    if r.blobs_sent != missing {
                        return Err(Error::Invalid(format!(
                            "the resumed copy sent {} blobs; the destination lacked {missing} \
                             of the {} a whole copy sends",
                            r.blobs_sent,
                            full.len()
                        )));
                    }
                    let again = copy_run(&src, dst)?;
                    if again.snapshots + again.wal_copied as usize + again.blobs_sent as usize != 0
                    {
                        return Err(Error::Invalid(format!(
                            "a second copy still copied {} snapshots, {} WAL files, {} blobs",
                            again.snapshots, again.wal_copied, again.blobs_sent
                        )));
                    }
                }
                _ => {}
            }
            // Every copy in the destination is acknowledged now, whichever run made it.
            let mut acks = vec![Ack::Wal(
                "main".into(),
                "000000010000000000000002".into(),
                seg2.clone(),
            )];
            for s in dst.snapshots()? {
                let from = s.copied_from.map(|f| f.to_hex()).unwrap_or_default();
                match trees.get(&from) {
                    Some(t) => acks.push(Ack::Tree(s.id.to_hex(), t.clone())),
                    None => return Err(Error::Invalid(format!("{} copies nothing", s.id))),
                }
            }
            Ok(acks)
        }),
    };
    report(&w);
}

/// A repository with an intact snapshot (source `keep`) and a snapshot of four files (source
/// `s`, one data pack of its own) whose data pack has one flipped byte inside a blob: one file is
/// damaged. The matrix runs `repair index`, `repair packs`, `repair snapshots --forget`.
fn repair_world() -> (World, Repo) {
    let r = Repo::new();
    let keep = r.scratch("keep");
    gen_small_tree(&keep, 5);
    let kept = str_of(&r.backup_dir(&keep, "keep"), "/id").to_string();
    let before = r.packs();
    let src = r.mkdir("four");
    for (i, n) in ["a.bin", "b.bin", "d/c.bin", "d/e.bin"].iter().enumerate() {
        write_random(&src.join(n), 300_000, 40 + i as u64);
    }
    r.backup_dir(&src, "s");
    let damaged = r.new_data_pack(&before);
    let mut image = fs::read(&damaged).unwrap();
    image[100] ^= 0x10; // inside the first blob
    fs::write(&damaged, &image).unwrap();
    let repo = Repository::open(&r.path, PASSWORD.as_bytes(), Access::Read).unwrap();
    let rep = check(
        &repo,
        CheckOptions {
            read_data: true,
            subset: None,
        },
        &|_, _, _| {},
    )
    .unwrap();
    drop(repo);
    let affected: Vec<&String> = rep.problems.iter().flat_map(|p| &p.affected).collect();
    assert_eq!(affected.len(), 1, "{:?}", rep.problems);
    let file = affected[0].rsplit(": ").next().unwrap().to_string();
    let rel = file.trim_start_matches('/').to_string();
    let expected = r.scratch("four-minus-damaged");
    copy_dir(&src, &expected);
    fs::remove_file(expected.join(&rel)).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("wayback-fault-")
        .tempdir()
        .unwrap();
    let template = tmp.path().join("template");
    copy_dir(&r.path, &template);
    let pack = damaged.file_name().unwrap().to_string_lossy().into_owned();
    (
        World {
            tmp,
            template,
            acked: vec![
                Ack::Tree(kept, keep),
                Ack::Salvage("s".into(), expected, rel),
            ],
            damage: Some(Damage { file, pack }),
        },
        r,
    )
}

/// `wayback repair index`, `repair packs`, `repair snapshots --forget` (the order the manual
/// gives) through every barrier. After a crash the damage may still be there, nothing else
/// may be (never worse), and every intact file still restores from some snapshot; after the
/// run that succeeds, `check --read-data` is clean and the repaired snapshot restores the
/// intact files.
#[test]
fn crash_matrix_repair() {
    let (world, r) = repair_world();
    let _keep = r;
    let w = Writer {
        name: "repair",
        world,
        run: Box::new(move |root, be, slot, _| {
            // repair index takes the writer lock itself: a retry first closes the repository.
            *slot = None;
            let (repo, _, _) =
                unlocked(|| Repository::repair_index(root, be.clone(), PASSWORD.as_bytes()))?;
            let repo = slot.insert(repo);
            wayback::maint::repair::packs::repair_packs(repo, false, &mut |_| {})?;
            wayback::maint::repair::snapshots::repair_snapshots(repo, false, true, &mut |_| {})?;
            let of_s: Vec<Snapshot> = repo
                .snapshots()?
                .into_iter()
                .filter(|s| s.source == "s")
                .collect();
            let repaired = wayback::maint::repair::snapshots::REPAIRED_TAG.to_string();
            if of_s.len() != 1 || !of_s[0].tags.contains(&repaired) {
                return Err(Error::Invalid(format!(
                    "after repair snapshots --forget: {} snapshots of s",
                    of_s.len()
                )));
            }
            Ok(vec![])
        }),
    };
    report(&w);
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    /// A `size` tmpfs at `dir`, or `None` (with a note) where mounting is not allowed.
    fn mount(dir: &Path, size: &str) -> Option<SmallFs> {
        fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .ok()?;
        if !o.status.success() {
            eprintln!(
                "skipping the disk-full test: cannot mount a tmpfs ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Some(SmallFs(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` with a file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = fs::File::create(&p).unwrap();
    let block = vec![0x5au8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    p
}

/// Disk full for real: a repository on a 20 MiB tmpfs. Backup, wal-push and prune fail with
/// exit 17 and say "No space left on device"; the repository stays consistent; wal-push never
/// exits 0 for a segment it could not store; freed space, every command succeeds again.
#[test]
fn a_full_disk_fails_clearly_keeps_the_repository_and_recovers_when_freed() {
    let r = Repo::new();
    let Some(small) = SmallFs::mount(&r.scratch("small"), "20m") else {
        return;
    };
    let repo = small.0.join("repo");
    let wb = |args: &[&str]| {
        let mut a = vec!["--repo", s(&repo)];
        a.extend_from_slice(args);
        run(r.cmd(&a))
    };
    assert_code(&wb(&["init"]), exit::OK, "init on the tmpfs");
    let a = r.scratch("a");
    gen_small_tree(&a, 60);
    let o = wb(&["backup", s(&a), "--source", "a", "--json"]);
    assert_code(&o, exit::OK, "first backup");
    let ida = str_of(&parse_json(&o), "/id").to_string();
    let d = r.mkdir("pg_wal");
    let seg1 = segment(&d, "000000010000000000000001", 7, MIB, 61);
    assert_code(
        &wb(&["wal-push", "--cluster", "main", s(&seg1)]),
        exit::OK,
        "first wal-push",
    );

    // Full: a backup larger than what is left.
    let big = r.scratch("big");
    gen_small_tree(&big, 62);
    write_random(&big.join("big.bin"), 24 * MIB, 63);
    let o = wb(&["backup", s(&big), "--source", "big"]);
    assert_code(&o, 17, "backup on a full disk");
    assert_stderr_contains(&o, "No space left on device");
    // An agent running beside the full disk: wal-push through it exits 17 as well (it
    // exited 1, "pushing through the agent: ...", which reads like a bug, not a full disk).
    let cfg = r.scratch("agent.toml");
    fs::write(&cfg, format!("repo = \"{}\"\n", s(&repo))).unwrap();
    let mut c = r.cmd(&["agent", "--config", s(&cfg)]);
    c.stdout(std::process::Stdio::null())
        .stderr(fs::File::create(r.scratch("agent.log")).unwrap());
    let agent = crate::common::KillOnDrop(c.spawn().unwrap());
    assert!(
        crate::common::wait_until(std::time::Duration::from_secs(30), || repo
            .join("wal-push.sock")
            .exists()),
        "the agent did not listen"
    );
    // Now really full, and a segment cannot be stored.
    let filler = fill(&small.0);
    let seg2 = segment(&d, "000000010000000000000002", 7, 2 * MIB, 64);
    let o = wb(&["wal-push", "--cluster", "main", s(&seg2)]);
    assert_code(&o, 17, "wal-push through the agent on a full disk");
    assert_stderr_contains(&o, "no space left");
    drop(agent);
    let _ = fs::remove_file(repo.join("wal-push.sock"));
    let o = wb(&["wal-push", "--cluster", "main", s(&seg2)]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "wal-push of an unstored segment: {}",
        describe(&o)
    );
    assert_code(&o, 17, "wal-push on a full disk");
    assert_stderr_contains(&o, "No space left on device");
    let fetched = r.scratch("fetched");
    assert_code(
        &wb(&[
            "wal-fetch",
            "--cluster",
            "main",
            "000000010000000000000002",
            s(&fetched),
        ]),
        1,
        "wal-fetch of the segment that was refused",
    );
    // Prune after a forget needs to write its marks: refused the same way, or done.
    fs::remove_file(repo.join("snapshots").join(&ida)).unwrap();
    let o = wb(&["prune"]);
    println!("disk full: prune exited {:?}", o.status.code());
    assert!(
        matches!(o.status.code(), Some(0) | Some(17)),
        "prune on a full disk: {}",
        describe(&o)
    );
    if o.status.code() == Some(17) {
        assert_stderr_contains(&o, "No space left on device");
    }
    let o = wb(&["check", "--read-data"]);
    assert_code(&o, exit::OK, "check on the full disk");
    let out = r.scratch("restore-wal1");
    fs::create_dir_all(&out).unwrap();
    let dest = out.join("seg1");
    assert_code(
        &wb(&[
            "wal-fetch",
            "--cluster",
            "main",
            "000000010000000000000001",
            s(&dest),
        ]),
        exit::OK,
        "wal-fetch of the acknowledged segment",
    );
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&seg1).unwrap());

    // Freed: everything that failed succeeds, and the result checks and restores. The failed
    // backup's first pack (16 MiB, it fitted) stays for the next backup to reuse, so only a
    // prune gives that space back: prune first.
    fs::remove_file(filler).unwrap();
    assert_code(
        &wb(&["prune", "--grace", "0"]),
        exit::OK,
        "prune after freeing space",
    );
    assert_code(
        &wb(&["wal-push", "--cluster", "main", s(&seg2)]),
        exit::OK,
        "wal-push after freeing space",
    );
    let small_tree = r.scratch("smalltree");
    gen_small_tree(&small_tree, 65);
    let o = wb(&["backup", s(&small_tree), "--source", "b", "--json"]);
    assert_code(&o, exit::OK, "backup after freeing space");
    let idb = str_of(&parse_json(&o), "/id").to_string();
    assert_code(
        &wb(&["check", "--read-data"]),
        exit::OK,
        "check after recovery",
    );
    let out = r.scratch("restore-b");
    assert_code(
        &wb(&["restore", &idb[..8], "--target", s(&out)]),
        exit::OK,
        "restore after recovery",
    );
    tree_diff(&small_tree, &out).unwrap();
    let dest = r.scratch("seg2");
    assert_code(
        &wb(&[
            "wal-fetch",
            "--cluster",
            "main",
            "000000010000000000000002",
            s(&dest),
        ]),
        exit::OK,
        "wal-fetch after recovery",
    );
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&seg2).unwrap());
}

/// Regression (found by the basebackup matrix's rerun): the tar reader stops at the
/// end-of-archive blocks and dropped the pipe while the command could still be writing
/// (GNU tar pads to 10 KiB; here, explicitly, after a pause), so a complete base backup
/// failed with "exited with exit status: 141" (SIGPIPE) and wrote no snapshot.
#[test]
fn a_basebackup_command_still_writing_after_the_tar_end_succeeds() {
    let r = Repo::new();
    let data = r.scratch("pgdata");
    gen_small_tree(&data, 70);
    let cmd = format!(
        "tar -cf - -C '{}' .; sleep 0.3; head -c 65536 /dev/zero",
        data.display()
    );
    let repo = Repository::open(&r.path, PASSWORD.as_bytes(), Access::Write).unwrap();
    let snap = wayback::ingest::stream::backup_basebackup(
        &repo,
        "pg",
        &cmd,
        &[],
        None,
        Arc::new(Counters::default()),
    )
    .unwrap();
    let out = r.scratch("out");
    restore_snapshot(&repo, &snap, &out).unwrap();
    tree_diff(&data, &out).unwrap();
}
