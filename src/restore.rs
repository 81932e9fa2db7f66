//! Restoring a snapshot (or a subtree of it) to a directory.
//!
//! Content is restored by worker threads chunk by chunk with positioned writes, so one large dump
//! uses every core; all-zero chunks become holes (sparse files come back sparse). Metadata goes
//! on last: owner before mode (chown clears setuid), mtime after content, directories after
//! their children. A file whose data is damaged is removed and reported, never left with wrong
//! bytes; everything else still restores and the run fails at the end.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;

use crate::error::{Error, Result};
use crate::id::{BlobKind, TreeId};
use crate::repo::Repository;
use crate::tree::{is_normal_name, FileLayout, Node, NodeKind};

/// Restore options.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Replace existing files instead of refusing.
    pub overwrite: bool,
}

/// Outcome counters.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Files that could not be restored, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// Live counters for a progress display.
#[derive(Default, Debug)]
pub struct RestoreCounters {
    /// Bytes written so far.
    pub bytes: AtomicU64,
    /// Files completed.
    pub files: AtomicU64,
}

struct FileState {
    path: PathBuf,
    node: Node,
    layout: FileLayout,
    file: File,
    remaining: AtomicUsize,
    failed: Mutex<Option<String>>,
}

struct Job {
    state: Arc<FileState>,
    /// Index of the chunk in `state.layout`.
    index: usize,
}

/// `base` joined with a snapshot-relative path, refusing any component that is not a single
/// normal name (defence in depth: tree decoding already refuses such names, and a restore run
/// as root must never be talked into writing outside its target).
fn path_of(base: &Path, rel: &[u8]) -> Result<PathBuf> {
    if rel.is_empty() {
        return Ok(base.to_path_buf());
    }
    if !rel.split(|&b| b == b'/').all(is_normal_name) {
        return Err(Error::Corrupt(format!(
            "refusing to restore {:?}: not a path of plain names",
            String::from_utf8_lossy(rel)
        )));
    }
    Ok(base.join(OsStr::from_bytes(rel)))
}

/// Applies owner, mode, xattrs and times to a restored entry.
pub fn apply_meta(path: &Path, n: &Node) -> std::io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::unistd::{fchownat, Gid, Uid};
    let is_link = n.kind == NodeKind::Symlink;
    if nix::unistd::geteuid().is_root() {
        fchownat(
            None,
            path,
            Some(Uid::from_raw(n.uid)),
            Some(Gid::from_raw(n.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)?;
    }
    if !is_link {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(n.mode))?;
        for (k, v) in &n.xattrs {
            if let Err(e) = xattr::set(path, OsStr::from_bytes(k), v) {
                tracing::warn!(path = %path.display(), xattr = %String::from_utf8_lossy(k), error = %e, "cannot restore extended attribute");
            }
        }
    }
    let mt = filetime::FileTime::from_unix_time(
        n.mtime_ns.div_euclid(1_000_000_000),
        n.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, mt, mt)
}

/// Writes `data` at `offset`, skipping 4 KiB blocks that are all zero so they stay holes.
fn write_sparse(f: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + BLOCK).min(data.len());
        let zero = data[pos..end].iter().all(|b| *b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                f.write_all_at(&data[s..pos], offset + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = run_start {
        f.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

fn worker(
    repo: &Repository,
    rx: crossbeam_channel::Receiver<Job>,
    counters: &RestoreCounters,
    report: &Mutex<RestoreReport>,
) {
    for job in rx {
        let st = &job.state;
        if st.failed.lock().expect("poisoned").is_none() {
            let chunk = st.layout.chunks()[job.index];
            let r = repo.read_blob(BlobKind::Data, &chunk.id).and_then(|data| {
                // A chunk of another length than its reference would shift or cut the
                // rest of the file: the file fails instead.
                st.layout.check(job.index, &data)?;
                write_sparse(&st.file, &data, st.layout.start(job.index))
                    .map_err(|e| Error::io("write", &st.path, e))?;
                counters
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(())
            });
            if let Err(e) = r {
                *st.failed.lock().expect("poisoned") = Some(e.to_string());
            }
        }
        // The worker that wrote a file's last chunk finishes it (length, owner, mode, times,
        // xattrs): on the walking thread these syscalls held back the whole restore.
        if st.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            finish_file(st, report, counters);
        }
    }
}

fn finish_file(st: &FileState, report: &Mutex<RestoreReport>, counters: &RestoreCounters) {
    let failed = st.failed.lock().expect("poisoned").clone();
    let r = match failed {
        Some(e) => Err(e),
        None => st
            .file
            .set_len(st.node.size)
            .and_then(|_| apply_meta(&st.path, &st.node))
            .map_err(|e| e.to_string()),
    };
    let mut rep = report.lock().expect("poisoned");
    match r {
        Ok(()) => {
            rep.files += 1;
            rep.bytes += st.node.size;
            counters.files.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::error!(path = %st.path.display(), error = %e, "file not restored");
            let _ = std::fs::remove_file(&st.path);
            rep.failed.push((st.path.clone(), e));
        }
    }
}

/// Restores `node` (a directory node with `subtree`, or any single entry) at `target`.
/// For a whole snapshot pass the root tree id and the snapshot's `root_meta`.
pub fn restore(
    repo: &Repository,
    root: Option<&TreeId>,
    single: Option<&Node>,
    root_meta: Option<&Node>,
    target: &Path,
    opts: &RestoreOptions,
    counters: &RestoreCounters,
) -> Result<RestoreReport> {
    let target_existed = target.exists();
    if !opts.overwrite {
        let mut conflicts = Vec::new();
        let mut check = |rel: &[u8], n: &Node| -> Result<()> {
            let p = path_of(target, rel)?;
            match std::fs::symlink_metadata(&p) {
                Ok(md) if n.kind != NodeKind::Dir || !md.is_dir() => conflicts.push(p),
                _ => {}
            }
            Ok(())
        };
        match (root, single) {
            // A damaged directory has nothing to conflict with; the restore reports it.
            (Some(r), _) => {
                crate::tree::reader::walk_past_damage(repo, r, b"", &mut check, &mut |_, _| {})?
            }
            (None, Some(n)) => check(b"", n)?,
            _ => {}
        }
        if let Some(p) = conflicts.first() {
            return Err(Error::Invalid(format!(
                "refusing to overwrite {} existing file(s), first {} (use --overwrite)",
                conflicts.len(),
                p.display()
            )));
        }
    }
    std::fs::create_dir_all(if single.is_some() {
        target.parent().unwrap_or(target)
    } else {
        target
    })
    .map_err(|e| Error::io("create", target, e))?;

    let report = Mutex::new(RestoreReport::default());
    // More workers were measured (4, 8 on 2 cores, local and on Garage): no faster.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let (tx, rx) = bounded::<Job>(workers * 4);
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut links: HashMap<u64, PathBuf> = HashMap::new();
    let mut extra_links: Vec<(u64, PathBuf)> = Vec::new();
    let mut lost_dirs: Vec<(Vec<u8>, String)> = Vec::new();

    std::thread::scope(|s| -> Result<()> {
        for _ in 0..workers {
            let rx = rx.clone();
            let report = &report;
            s.spawn(move || worker(repo, rx, counters, report));
        }
        drop(rx);
        let mut visit = |rel: &[u8], n: &Node| -> Result<()> {
            let p = if single.is_some() {
                target.to_path_buf()
            } else {
                path_of(target, rel)?
            };
            if let Ok(md) = std::fs::symlink_metadata(&p) {
                // Never write through a symlink in the target: replace it (only with
                // --overwrite; without it the conflict check above already refused).
                if !md.is_dir() && opts.overwrite {
                    std::fs::remove_file(&p).map_err(|e| Error::io("replace", &p, e))?;
                } else if md.is_dir() && n.kind != NodeKind::Dir && opts.overwrite {
                    std::fs::remove_dir_all(&p).map_err(|e| Error::io("replace", &p, e))?;
                }
            }
            match n.kind {
                NodeKind::Dir => {
                    match std::fs::create_dir(&p) {
                        Ok(()) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::AlreadyExists
                                && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) => {}
                        Err(e) => return Err(Error::io("create directory", &p, e)),
                    }
                    report.lock().expect("poisoned").dirs += 1;
                    dirs.push((p, n.clone()));
                }
                NodeKind::File => {
                    if let Some(g) = n.link_group {
                        if links.contains_key(&g) {
                            // Linked after every file is complete, and only to intact data.
                            extra_links.push((g, p));
                            return Ok(());
                        }
                        links.insert(g, p.clone());
                    }
                    let layout = FileLayout::new(n)?;
                    let f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&p)
                        .map_err(|e| Error::io("create", &p, e))?;
                    let st = Arc::new(FileState {
                        path: p,
                        node: Node {
                            content: Vec::new(),
                            ..n.clone()
                        },
                        layout,
                        file: f,
                        remaining: AtomicUsize::new(n.content.len()),
                        failed: Mutex::new(None),
                    });
                    if n.content.is_empty() {
                        finish_file(&st, &report, counters);
                        return Ok(());
                    }
                    for index in 0..n.content.len() {
                        tx.send(Job {
                            state: st.clone(),
                            index,
                        })
                        .map_err(|_| Error::Invalid("restore workers stopped".into()))?;
                    }
                }
                NodeKind::Symlink => {
                    let t = n.link_target.clone().unwrap_or_default();
                    std::os::unix::fs::symlink(OsStr::from_bytes(&t), &p)
                        .map_err(|e| Error::io("symlink", &p, e))?;
                    apply_meta(&p, n).map_err(|e| Error::io("set metadata", &p, e))?;
                }
                NodeKind::Fifo | NodeKind::CharDev | NodeKind::BlockDev => {
                    use nix::sys::stat::{mknod, Mode, SFlag};
                    let kind = match n.kind {
                        NodeKind::Fifo => SFlag::S_IFIFO,
                        NodeKind::CharDev => SFlag::S_IFCHR,
                        _ => SFlag::S_IFBLK,
                    };
                    mknod(&p, kind, Mode::from_bits_truncate(n.mode), n.rdev as _)
                        .map_err(|e| Error::io("mknod", &p, e.into()))?;
                    apply_meta(&p, n).map_err(|e| Error::io("set metadata", &p, e))?;
                }
                NodeKind::Socket => {
                    tracing::info!(path = %p.display(), "socket not restored (servers recreate them)");
                }
            }
            Ok(())
        };
        let r = match (root, single) {
            // Every intact file is restored; an unreadable directory is a failure of its own.
            (Some(r), _) => {
                crate::tree::reader::walk_past_damage(repo, r, b"", &mut visit, &mut |rel, e| {
                    lost_dirs.push((rel.to_vec(), e.to_string()))
                })
            }
            (None, Some(n)) => visit(b"", n),
            _ => Ok(()),
        };
        drop(tx);
        r
    })?;
    let mut report = report.into_inner().expect("poisoned");
    for (rel, why) in lost_dirs {
        let p = path_of(target, &rel)?;
        report.failed.push((
            p,
            format!("directory unreadable, nothing in it restored: {why}"),
        ));
    }
    for (g, p) in extra_links {
        let first = &links[&g];
        if let Some((_, why)) = report.failed.iter().find(|(f, _)| f == first) {
            let why = format!(
                "hard link to {} which could not be restored: {why}",
                first.display()
            );
            report.failed.push((p, why));
            continue;
        }
        std::fs::hard_link(first, &p).map_err(|e| Error::io("hard link", &p, e))?;
    }
    // Directories last, deepest first, so child writes do not bump their mtimes again.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, n) in &dirs {
        apply_meta(p, n).map_err(|e| Error::io("set metadata", p, e))?;
    }
    if let (Some(meta), true) = (root_meta, !target_existed) {
        apply_meta(target, meta).map_err(|e| Error::io("set metadata", target, e))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_target_are_refused() {
        let base = Path::new("/restore/here");
        assert_eq!(path_of(base, b"").unwrap(), base);
        assert_eq!(path_of(base, b"a/b").unwrap(), base.join("a/b"));
        for bad in [
            &b".."[..],
            b"a/../../etc",
            b"/etc/shadow",
            b"a//b",
            b"./a",
            b"a/.",
        ] {
            assert!(path_of(base, bad).unwrap_err().is_corrupt(), "{bad:?}");
        }
    }
}
