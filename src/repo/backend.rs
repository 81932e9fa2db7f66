//! Storage backends: where repository files live.
//!
//! Durability contract (every implementation must keep it):
//! - `put` returns only when the object is durable under its final name: on the local filesystem
//!   that means written to a temporary name, fsynced, renamed, and the directory fsynced. A reader
//!   never sees a partial object under a final name.
//! - Content-addressed objects (packs) are never overwritten: `put` of an existing name with the
//!   same bytes is a no-op by construction, and callers never reuse a name for other bytes.
//! - `get`/`get_range` return `NotFound` for missing objects and short reads as `Corrupt`.
//!
//! Paths are relative, `/`-separated (`packs/ab/<hex>`), so an object store can plug in later
//! without touching pack, tree or snapshot code.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Object storage for a repository.
pub trait Backend: Send + Sync {
    /// Stores `data` durably under `path` (see the module contract).
    fn put(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Reads a whole object.
    fn get(&self, path: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`.
    fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Names (not paths) of the objects directly under `dir`, sorted. Missing dir = empty.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Size of an object.
    fn size(&self, path: &str) -> Result<u64>;
    /// Removes an object (prune, key remove). Missing is not an error.
    fn delete(&self, path: &str) -> Result<()>;
    /// Local path of the repository root, when the backend is a local directory.
    fn local_root(&self) -> Option<&Path>;
}

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
    /// Small cache of open pack files: the mount reads many ranges of few packs.
    open_files: Mutex<HashMap<String, Arc<File>>>,
    /// When running as root in a repository another user owns (the agent, `pg-at`, a root
    /// `wal-push` beside PostgreSQL's): that user, so new files and directories are theirs.
    /// Without this, a root agent left root-owned pack directories and `.system` files that
    /// PostgreSQL's own `wal-push` then could not write or read.
    owner: Option<(u32, u32)>,
}

const MAX_OPEN_FILES: usize = 64;

impl LocalBackend {
    /// A backend rooted at `root` (which must exist for anything but `put`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let owner = foreign_owner(&root);
        LocalBackend {
            root,
            open_files: Mutex::new(HashMap::new()),
            owner,
        }
    }

    /// Gives `p` to the repository's owner (see `owner`).
    fn own(&self, p: &Path) {
        if let Some((u, g)) = self.owner {
            let _ = std::os::unix::fs::chown(p, Some(u), Some(g));
        }
    }

    /// `create_dir_all` that hands every directory it creates to the repository's owner.
    fn make_dirs(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if parent.starts_with(&self.root) && parent != self.root {
                self.make_dirs(parent)?;
            }
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                self.own(dir);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("create directory", dir, e)),
        }
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn open_cached(&self, path: &str) -> Result<Arc<File>> {
        if let Some(f) = self.open_files.lock().expect("fd cache poisoned").get(path) {
            return Ok(f.clone());
        }
        let full = self.full(path);
        let f = File::open(&full).map_err(|e| not_found_or_io(e, "open", &full, path))?;
        let f = Arc::new(f);
        let mut cache = self.open_files.lock().expect("fd cache poisoned");
        if cache.len() >= MAX_OPEN_FILES {
            cache.clear();
        }
        cache.insert(path.to_string(), f.clone());
        Ok(f)
    }
}

fn not_found_or_io(e: std::io::Error, ctx: &'static str, full: &Path, path: &str) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::NotFound(format!("repository file {path}"))
    } else {
        Error::io(ctx, full, e)
    }
}

/// The owner (uid, gid) of the repository directory `root` when this process runs as root and
/// another user owns it (PostgreSQL's archive, owned by `postgres`): the user a root writer,
/// agent or lock must give the files it creates to, so that user's own commands keep working.
pub fn foreign_owner(root: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root).ok()?;
    (nix::unistd::geteuid().is_root() && m.uid() != 0).then_some((m.uid(), m.gid()))
}

/// Runs `f` with this thread's filesystem uid and gid set to `uid`/`gid` (Linux `setfsuid`,
/// per thread), so files it creates belong to that user from their first instant.
fn as_fs_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: setfsgid/setfsuid only change this thread's filesystem credentials; the
    // previous values they return are restored below, uid first while gid is still changed.
    unsafe {
        let old_gid = libc::setfsgid(gid);
        let old_uid = libc::setfsuid(uid);
        let r = f();
        libc::setfsuid(old_uid as libc::uid_t);
        libc::setfsgid(old_gid as libc::gid_t);
        r
    }
}

/// fsyncs a directory so a rename inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

impl Backend for LocalBackend {
    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        let full = self.full(path);
        let dir = full
            .parent()
            .expect("object paths have a parent")
            .to_path_buf();
        self.make_dirs(&dir)?;
        let tmp_dir = self.root.join("tmp");
        self.make_dirs(&tmp_dir)?;
        let tmp = tmp_dir.join(format!(
            "{}.{}.{}",
            std::process::id(),
            rand::random::<u64>(),
            full.file_name().and_then(|n| n.to_str()).unwrap_or("obj")
        ));
        let write = || -> std::io::Result<()> {
            let create = || OpenOptions::new().write(true).create_new(true).open(&tmp);
            // Created as the owner, not chowned after: a writer killed between the two left
            // root-owned temp files (found by the agent-kill test).
            let mut f = match self.owner {
                Some((u, g)) => as_fs_user(u, g, create)?,
                None => create()?,
            };
            f.write_all(data)?;
            f.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("write", &tmp, e));
        }
        fs::rename(&tmp, &full).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("rename into place", &full, e)
        })?;
        fsync_dir(&dir)
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let full = self.full(path);
        fs::read(&full).map_err(|e| not_found_or_io(e, "read", &full, path))
    }

    fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.open_cached(path)?;
        let mut buf = vec![0u8; len];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(Error::Corrupt(format!(
                "{path}: truncated (wanted {len} bytes at offset {offset})"
            ))),
            Err(e) => Err(Error::io("read", self.full(path), e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let full = self.full(dir);
        let rd = match fs::read_dir(&full) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &full, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("list", &full, e))?;
            if let Some(name) = ent.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn size(&self, path: &str) -> Result<u64> {
        let full = self.full(path);
        fs::metadata(&full)
            .map(|m| m.len())
            .map_err(|e| not_found_or_io(e, "stat", &full, path))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.open_files
            .lock()
            .expect("fd cache poisoned")
            .remove(path);
        let full = self.full(path);
        match fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", &full, e)),
        }
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}
