//! Restore drills: a restore that is tested, not assumed.
//!
//! A drill picks a snapshot of a source (the newest complete one, or a random one), restores it
//! into a private scratch directory, reads every restored file back and compares each chunk with
//! the content hash recorded in the snapshot, and for a base backup starts PostgreSQL on the
//! restored data directory, lets it recover through the archived WAL and runs a query
//! ([`crate::pg::drill`]). The measured time (restore + verification + recovery) is the recovery
//! time objective actually achieved. Scratch is removed afterwards, whatever happened.
//!
//! Why re-read what restore just wrote: restore verifies blobs as it decrypts them, but a drill
//! is about what lands on disk (a full disk, a filesystem that drops writes, a bug in hole
//! punching or hard links); hashing the bytes read back is the only check of that.
//!
//! Scratch: a new directory with an unpredictable name (0700, created with `mkdtemp`, so nothing
//! planted in advance can stand in for it) under `--scratch DIR` or, by default, the repository's
//! cache directory (`scratch/` beside the index; `$TMPDIR` for a base backup that PostgreSQL
//! will recover, since the server's user must traverse the parents). It holds decrypted data, so it is root's alone
//! until the recovery server needs to enter it (then 0710 root:<server group>, as pg-at does).

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::restore::{restore, RestoreCounters, RestoreOptions};
use crate::snapshot::{Snapshot, SnapshotKind};
use crate::tree::{FileLayout, Node, NodeKind};

/// How to drill.
#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// Directory under which the scratch directory is made; default: the repository's cache.
    pub scratch: Option<PathBuf>,
    /// A random complete snapshot instead of the newest.
    pub random: bool,
    /// For base-backup snapshots: start PostgreSQL on the restored data directory and query it.
    /// None: restore and verify the files only.
    pub postgres: Option<crate::pg::drill::PgDrillOptions>,
}

/// What a drill found (`wayback drill --json` prints a list of these).
#[derive(Serialize, Clone, Debug, Default)]
pub struct DrillReport {
    /// Source drilled.
    pub source: String,
    /// Snapshot restored (full id).
    pub snapshot: String,
    /// Its time (RFC 3339).
    pub snapshot_time: String,
    /// Its kind (`files`, `stream`, `basebackup`).
    pub kind: String,
    /// When the drill started (RFC 3339).
    pub started: String,
    /// Everything restored, verified and (for a base backup) recovered and answered.
    pub ok: bool,
    /// Damaged or wrong data was found (exit 12) rather than another failure.
    pub damaged: bool,
    /// Seconds restoring.
    pub restore_s: f64,
    /// Seconds reading back and hashing.
    pub verify_s: f64,
    /// Seconds from starting PostgreSQL to the end of its recovery, for a base backup.
    pub recovery_s: Option<f64>,
    /// Total measured recovery time, seconds.
    pub duration_s: f64,
    /// Files restored and verified.
    pub files: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// The PostgreSQL part, for a base backup.
    pub postgres: Option<crate::pg::drill::PgOutcome>,
    /// Everything that went wrong (empty when ok).
    pub problems: Vec<String>,
}

impl DrillReport {
    /// The durable record of this drill (see [`crate::agent::state::DrillRecord`]).
    pub fn record(&self) -> crate::agent::state::DrillRecord {
        crate::agent::state::DrillRecord {
            source: self.source.clone(),
            snapshot: self.snapshot.clone(),
            snapshot_time: self.snapshot_time.clone(),
            time: self.started.clone(),
            ok: self.ok,
            duration_s: self.duration_s,
            files: self.files,
            bytes: self.bytes,
            error: self.problems.first().cloned(),
            last_success: None,
        }
    }
}

/// The snapshot a drill of `source` restores: the newest complete one, or a random one.
pub fn pick(snaps: &[Snapshot], source: &str, random: bool) -> Result<Snapshot> {
    let mut c: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.source == source && s.complete)
        .collect();
    c.sort_by_key(|s| s.time);
    let chosen = if random && !c.is_empty() {
        use rand::Rng;
        Some(c[rand::thread_rng().gen_range(0..c.len())])
    } else {
        c.last().copied()
    };
    chosen.cloned().ok_or_else(|| {
        Error::NotFound(format!(
            "no complete snapshot of source '{source}' to drill"
        ))
    })
}

/// The default parent of drill scratch directories: `scratch/` in the repository's cache
/// directory (beside its index).
pub fn default_scratch_parent(repo: &Repository) -> Result<PathBuf> {
    let idx = repo.index_path()?;
    Ok(idx
        .parent()
        .map(|p| p.join("scratch"))
        .unwrap_or_else(|| repo.home.join("scratch")))
}

/// A drill's scratch directory; removed on drop unless something is still mounted in it.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Makes a new private (0700) directory with an unpredictable name under `parent`, which
    /// must be a real directory (created 0711 when missing: others may traverse it to a
    /// recovery server's data directory, never list it; a symlink there is refused).
    pub fn new(parent: &Path) -> Result<Scratch> {
        match std::fs::DirBuilder::new()
            .mode(0o711)
            .recursive(true)
            .create(parent)
        {
            Ok(()) => {}
            Err(e) => return Err(Error::io("creating the scratch parent", parent, e)),
        }
        let m = std::fs::symlink_metadata(parent)
            .map_err(|e| Error::io("inspecting the scratch parent", parent, e))?;
        if !m.is_dir() {
            return Err(Error::Invalid(format!(
                "scratch parent {} is not a directory (a symlink is refused)",
                parent.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("wayback-drill-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| Error::io("creating the drill scratch directory", parent, e))?
            .keep();
        Ok(Scratch { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Never recurse into a mount (the recovery server's WAL view): one still there means
        // an unmount failed, and removing through it would be wrong; leave it for a human.
        let dev = std::fs::symlink_metadata(&self.dir).map(|m| m.dev()).ok();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let same = std::fs::symlink_metadata(e.path())
                    .map(|m| Some(m.dev()) == dev)
                    .unwrap_or(false);
                if !same {
                    tracing::error!(path = %e.path().display(), "still mounted; drill scratch left in place");
                    return;
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::error!(path = %self.dir.display(), error = %e, "could not remove drill scratch");
        }
    }
}

/// Drills one source. `Err` only when there is nothing to drill (`NotFound`) or no scratch
/// could be made; every failure of the drill itself is in the report (`ok` false), so that it
/// is recorded and alerted on.
pub fn drill(repo: &Arc<Repository>, source: &str, opts: &DrillOptions) -> Result<DrillReport> {
    let snaps = repo.snapshots()?;
    let snap = pick(&snaps, source, opts.random)?;
    let parent = match &opts.scratch {
        Some(p) => p.clone(),
        // The server runs as the data directory's owner and must traverse every parent, which
        // the private cache directory does not allow: like pg-at, $TMPDIR (the directory's
        // name is unpredictable and it is 0700 until the server is let in).
        None if snap.kind == SnapshotKind::Basebackup && opts.postgres.is_some() => {
            std::env::temp_dir()
        }
        None => default_scratch_parent(repo)?,
    };
    let scratch = Scratch::new(&parent)?;
    crate::audit::note(
        repo,
        "drill",
        &format!(
            "snapshot {} ({} {}) restored into {}",
            snap.id.short(),
            snap.source,
            snap.time_name(),
            scratch.path().display()
        ),
    );
    let mut rep = DrillReport {
        source: source.to_string(),
        snapshot: snap.id.to_hex(),
        snapshot_time: snap.time_name(),
        kind: format!("{:?}", snap.kind).to_lowercase(),
        started: chrono::Utc::now().to_rfc3339(),
        ..Default::default()
    };
    let clock = Instant::now();
    let target = scratch.path().join("data");
    let counters = RestoreCounters::default();
    match restore(
        repo,
        Some(&snap.root),
        None,
        snap.root_meta.as_ref(),
        &target,
        &RestoreOptions::default(),
        &counters,
    ) {
        Ok(r) => {
            for (p, e) in &r.failed {
                rep.damaged = true;
                rep.problems
                    .push(format!("{} not restored: {e}", rel(&target, p)));
            }
        }
        Err(e) => {
            rep.damaged |= e.is_corrupt();
            rep.problems.push(format!("restore failed: {e}"));
        }
    }
    rep.restore_s = clock.elapsed().as_secs_f64();
    if rep.problems.is_empty() {
        let t = Instant::now();
        match verify(repo, &snap, &target) {
            Ok((files, bytes, problems)) => {
                rep.files = files;
                rep.bytes = bytes;
                rep.damaged |= !problems.is_empty();
                rep.problems.extend(problems);
            }
            Err(e) => {
                rep.damaged |= e.is_corrupt();
                rep.problems.push(format!("verification failed: {e}"));
            }
        }
        rep.verify_s = t.elapsed().as_secs_f64();
    }
    if rep.problems.is_empty() && snap.kind == SnapshotKind::Basebackup {
        if let Some(pg) = &opts.postgres {
            let t = Instant::now();
            match crate::pg::drill::recover_and_query(repo.clone(), &snap, scratch.path(), pg) {
                Ok(out) => {
                    if let Some(want) = &pg.expect {
                        if out.result != *want {
                            rep.problems.push(format!(
                                "query {:?} answered {:?}, expected {:?}",
                                pg.query, out.result, want
                            ));
                        }
                    }
                    rep.postgres = Some(out);
                }
                Err(e) => rep.problems.push(format!("PostgreSQL drill failed: {e}")),
            }
            rep.recovery_s = Some(t.elapsed().as_secs_f64());
        }
    }
    rep.duration_s = clock.elapsed().as_secs_f64();
    rep.ok = rep.problems.is_empty();
    drop(scratch);
    Ok(rep)
}

fn rel(base: &Path, p: &Path) -> String {
    p.strip_prefix(base)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Longest list of problems one verification reports (the first ones say enough).
const MAX_PROBLEMS: usize = 100;

/// Reads back everything restored from `snap` at `target` and compares it with the snapshot:
/// kinds, sizes, symlink targets, and every chunk of every file against its recorded keyed
/// hash. Returns (files, bytes, problems). Nothing is followed: a restored symlink is read as a
/// link, files are opened with `O_NOFOLLOW`.
pub fn verify(
    repo: &Repository,
    snap: &Snapshot,
    target: &Path,
) -> Result<(u64, u64, Vec<String>)> {
    let (mut files, mut bytes, mut problems) = (0u64, 0u64, Vec::new());
    let mut buf = Vec::new();
    crate::tree::reader::walk(repo, &snap.root, b"", &mut |relp, n| {
        if problems.len() >= MAX_PROBLEMS {
            return Ok(());
        }
        let show = String::from_utf8_lossy(relp).into_owned();
        let p = target.join(std::ffi::OsStr::from_bytes(relp));
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) if n.kind == NodeKind::Socket => return Ok(()),
            Err(e) => {
                problems.push(format!("{show}: missing after restore ({e})"));
                return Ok(());
            }
        };
        let ft = md.file_type();
        let kind_ok = match n.kind {
            NodeKind::Dir => ft.is_dir(),
            NodeKind::File => ft.is_file(),
            NodeKind::Symlink => ft.is_symlink(),
            _ => !ft.is_dir() && !ft.is_file() && !ft.is_symlink(),
        };
        if !kind_ok {
            problems.push(format!("{show}: restored as another kind of file"));
            return Ok(());
        }
        match n.kind {
            NodeKind::File => match verify_file(repo, n, &p, &mut buf) {
                Ok(()) => {
                    files += 1;
                    bytes += n.size;
                }
                Err(why) => problems.push(format!("{show}: {why}")),
            },
            NodeKind::Symlink => {
                let t = std::fs::read_link(&p).map_err(|e| Error::io("readlink", &p, e))?;
                if t.as_os_str().as_bytes() != n.link_target.as_deref().unwrap_or_default() {
                    problems.push(format!("{show}: symlink target differs"));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((files, bytes, problems))
}

/// One file against its node: size, then each chunk's keyed hash.
fn verify_file(
    repo: &Repository,
    n: &Node,
    p: &Path,
    buf: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| format!("cannot open: {e}"))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    if size != n.size {
        return Err(format!("size {size}, the snapshot says {}", n.size));
    }
    let layout = FileLayout::new(n).map_err(|e| e.to_string())?;
    for (i, c) in layout.chunks().iter().enumerate() {
        let off = layout.start(i);
        buf.resize(c.len as usize, 0);
        f.read_exact_at(buf, off)
            .map_err(|e| format!("cannot read at offset {off}: {e}"))?;
        if repo.key.blob_id(buf) != c.id {
            return Err(format!(
                "content differs from the snapshot in the {} bytes at offset {off}",
                c.len
            ));
        }
    }
    Ok(())
}

/// Default time PostgreSQL may take to recover in a drill.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    /// What the drill adds over restore: bytes that changed on disk after a good restore are
    /// found, by file and offset, as are a wrong size and a wrong kind.
    #[test]
    fn verification_finds_bytes_changed_after_restore() {
        std::env::set_var("WAYBACK_INSECURE_FAST_KDF", "1");
        let dir = tempfile::tempdir().unwrap();
        Repository::init(&dir.path().join("repo"), b"pw").unwrap();
        let repo =
            Repository::open(&dir.path().join("repo"), b"pw", crate::repo::Access::Write).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(src.join("big.bin"), &big).unwrap();
        std::fs::write(src.join("small.txt"), b"hello\n").unwrap();
        std::fs::write(src.join("other.txt"), b"other\n").unwrap();
        let snap = crate::ingest::fs::backup(
            &repo,
            &crate::ingest::fs::FsBackup {
                source: "s".into(),
                paths: vec![src.clone()],
                tags: vec![],
                excludes: globset::GlobSetBuilder::new().build().unwrap(),
                parent: None,
            },
            Arc::new(crate::ingest::Counters::default()),
        )
        .unwrap();
        let target = dir.path().join("restored");
        restore(
            &repo,
            Some(&snap.root),
            None,
            snap.root_meta.as_ref(),
            &target,
            &RestoreOptions::default(),
            &RestoreCounters::default(),
        )
        .unwrap();
        let (files, bytes, problems) = verify(&repo, &snap, &target).unwrap();
        assert_eq!((files, problems.len()), (3, 0), "{problems:?}");
        assert_eq!(bytes, big.len() as u64 + 12);

        let mut changed = big.clone();
        changed[2_500_000] ^= 1;
        std::fs::write(target.join("big.bin"), &changed).unwrap();
        std::fs::write(target.join("small.txt"), b"hello").unwrap();
        std::fs::remove_file(target.join("other.txt")).unwrap();
        std::os::unix::fs::symlink("small.txt", target.join("other.txt")).unwrap();
        let (_, _, problems) = verify(&repo, &snap, &target).unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("big.bin: content differs") && p.contains("offset")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("small.txt: size 5")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("other.txt: restored as another kind")),
            "{problems:?}"
        );
    }
}
