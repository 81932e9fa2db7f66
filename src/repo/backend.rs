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
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use super::beneath::foreign_owner;
use super::beneath::Beneath;
use crate::error::{Error, Result};

/// Largest object `get` reads whole (manifests, records, keys, config are kilobytes; packs are
/// read by range). A planted huge file or device gives an error, not an allocation.
pub const MAX_WHOLE_OBJECT: u64 = 256 << 20;

/// Object storage for a repository.
pub trait Backend: Send + Sync {
    /// Stores `data` durably under `path` (see the module contract).
    fn put(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Stores `data` durably under `path` unless something is already there, which is left
    /// untouched: `Ok(false)`. The commit of names that are not content addresses (WAL files:
    /// two standbys promoting at once both push `00000002.history`), where an existence check
    /// followed by a replacing rename would silently replace an acknowledged copy.
    fn put_new(&self, path: &str, data: &[u8]) -> Result<bool>;
    /// Reads a whole object.
    fn get(&self, path: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`.
    fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Names (not paths) of the objects directly under `dir`, sorted. Missing dir = empty.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Size of an object.
    fn size(&self, path: &str) -> Result<u64>;
    /// Removes an object (prune, key remove) durably (the directory is fsynced). Missing is not
    /// an error.
    fn delete(&self, path: &str) -> Result<()>;
    /// [`Backend::delete`] of many objects; all are gone durably when it returns. Backends
    /// that can overlap the deletions override it (prune removes hundreds of packs).
    fn delete_many(&self, paths: &[String]) -> Result<()> {
        paths.iter().try_for_each(|p| self.delete(p))
    }
    /// Local path of the repository root, when the backend is a local directory.
    fn local_root(&self) -> Option<&Path>;
    /// The store's time of the last write of `path`, Unix seconds (S3's `Last-Modified`, a
    /// file's mtime), or `None` when the backend cannot tell. Why: leases compare this host's
    /// clock with the store's (see `repo::lease`).
    fn modified(&self, _path: &str) -> Result<Option<i64>> {
        Ok(None)
    }
    /// Called by the local index (a RocksDB cache next to, not inside, the backend) before
    /// each of its synced writes. Why the backend hears of it: those writes are durability
    /// barriers too, and a fault-injecting backend ([`super::fault`]) must stop them at the
    /// same simulated crash as the objects. An error stops the write. Real backends: no-op.
    fn sync_point(&self, _what: &str) -> Result<()> {
        Ok(())
    }
}

/// A repository in a local directory. Every access goes through [`Beneath`]: no symlink is
/// followed below the root, and a root process in a repository another user owns acts with
/// that user's rights (see `repo::beneath`).
pub struct LocalBackend {
    root: PathBuf,
    fs: Beneath,
    /// Small cache of open pack files: the mount reads many ranges of few packs.
    open_files: Mutex<HashMap<String, Arc<File>>>,
}

const MAX_OPEN_FILES: usize = 64;

impl LocalBackend {
    /// A backend rooted at `root` (which must exist for anything but `put`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        LocalBackend {
            fs: Beneath::new(&root),
            root,
            open_files: Mutex::new(HashMap::new()),
        }
    }

    /// The confined view of the root, for local-only callers (locks, cleanup).
    pub fn beneath(&self) -> &Beneath {
        &self.fs
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn open_cached(&self, path: &str) -> Result<Arc<File>> {
        if let Some(f) = self.open_files.lock().expect("fd cache poisoned").get(path) {
            return Ok(f.clone());
        }
        let f = self
            .fs
            .open_read(path)
            .map_err(|e| not_found_or_io(e, "open", &self.full(path), path))?;
        let f = Arc::new(f);
        let mut cache = self.open_files.lock().expect("fd cache poisoned");
        if cache.len() >= MAX_OPEN_FILES {
            cache.clear();
        }
        cache.insert(path.to_string(), f.clone());
        Ok(f)
    }

    /// Writes `data` to a fresh temporary file in `tmp/`, fsynced; returns its relative name.
    fn stage(&self, path: &str, data: &[u8]) -> Result<String> {
        self.fs
            .make_dirs("tmp")
            .map_err(|e| Error::io("create directory", self.full("tmp"), e))?;
        let base = path.rsplit('/').next().unwrap_or("obj");
        let tmp = format!(
            "tmp/{}.{:016x}.{}",
            std::process::id(),
            rand::random::<u64>(),
            base
        );
        let write = || -> std::io::Result<()> {
            let mut f = self.fs.create_new(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = self.fs.unlink(&tmp);
            return Err(Error::io("write", self.full(&tmp), e));
        }
        Ok(tmp)
    }

    fn put_inner(&self, path: &str, data: &[u8], noreplace: bool) -> Result<bool> {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        self.fs
            .make_dirs(dir)
            .map_err(|e| Error::io("create directory", self.full(dir), e))?;
        let tmp = self.stage(path, data)?;
        match self.fs.rename(&tmp, path, noreplace) {
            Ok(()) => {}
            Err(e) => {
                let _ = self.fs.unlink(&tmp);
                if noreplace && e.kind() == ErrorKind::AlreadyExists {
                    return Ok(false);
                }
                return Err(Error::io("rename into place", self.full(path), e));
            }
        }
        self.fs
            .fsync_dir(dir)
            .map_err(|e| Error::io("fsync directory", self.full(dir), e))?;
        Ok(true)
    }

    /// Removes what killed writers left in `tmp/` more than `older_than` ago (a live writer's
    /// staging file is seconds old; a fresh one is never touched).
    pub fn clean_tmp(&self, older_than: std::time::Duration) -> Result<usize> {
        let mut n = 0;
        let now = std::time::SystemTime::now();
        for (name, is_dir) in self
            .fs
            .list("tmp")
            .map_err(|e| Error::io("list", self.full("tmp"), e))?
        {
            let Some(name) = name.to_str() else { continue };
            let rel = format!("tmp/{name}");
            if is_dir {
                continue;
            }
            let old = self
                .fs
                .open_read(&rel)
                .and_then(|f| f.metadata())
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > older_than)
                .unwrap_or(false);
            if old && self.fs.unlink(&rel).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn not_found_or_io(e: std::io::Error, ctx: &'static str, full: &Path, path: &str) -> Error {
    match e.kind() {
        ErrorKind::NotFound => Error::NotFound(format!("repository file {path}")),
        ErrorKind::InvalidData => Error::Corrupt(format!("{path}: {e}")),
        _ => Error::io(ctx, full, e),
    }
}

/// fsyncs a directory so a rename inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

impl Backend for LocalBackend {
    fn modified(&self, path: &str) -> Result<Option<i64>> {
        let full = self.full(path);
        let m = self
            .fs
            .open_read(path)
            .and_then(|f| f.metadata())
            .map_err(|e| not_found_or_io(e, "stat", &full, path))?;
        use std::os::unix::fs::MetadataExt;
        Ok(Some(m.mtime()))
    }

    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        self.put_inner(path, data, false).map(|_| ())
    }

    fn put_new(&self, path: &str, data: &[u8]) -> Result<bool> {
        self.put_inner(path, data, true)
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let full = self.full(path);
        let f = self
            .fs
            .open_read(path)
            .map_err(|e| not_found_or_io(e, "read", &full, path))?;
        let len = f.metadata().map_err(|e| Error::io("stat", &full, e))?.len();
        if len > MAX_WHOLE_OBJECT {
            return Err(Error::Corrupt(format!(
                "{path}: {len} bytes, larger than any object read whole"
            )));
        }
        let mut out = Vec::with_capacity(len as usize);
        f.take(MAX_WHOLE_OBJECT + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::io("read", &full, e))?;
        Ok(out)
    }

    fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.open_cached(path)?;
        // `len` comes from an index entry or pack header; a damaged one must not make us
        // allocate hundreds of MiB before the short read is noticed.
        let size = f
            .metadata()
            .map_err(|e| Error::io("stat", self.full(path), e))?
            .len();
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(Error::Corrupt(format!(
                "{path}: truncated (wanted {len} bytes at offset {offset}, the object has {size})"
            )));
        }
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
        let rel = dir.trim_end_matches('/');
        let mut out: Vec<String> = self
            .fs
            .list(rel)
            .map_err(|e| Error::io("list", self.full(dir), e))?
            .into_iter()
            .filter_map(|(n, _)| n.into_string().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    fn size(&self, path: &str) -> Result<u64> {
        let full = self.full(path);
        self.fs
            .size(path)
            .map_err(|e| not_found_or_io(e, "stat", &full, path))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.open_files
            .lock()
            .expect("fd cache poisoned")
            .remove(path);
        let full = self.full(path);
        match self.fs.unlink(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("delete", &full, e)),
        }
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        self.fs
            .fsync_dir(dir)
            .map_err(|e| Error::io("fsync directory", self.full(dir), e))
    }

    /// Unlinks on a few threads, then fsyncs each directory once. Why: on ext4 an unlink
    /// of a 6 MiB pack and its directory fsync cost ~3.5 ms each, one after the other 1.2 s
    /// of a 4 s prune; concurrent ones share journal commits.
    fn delete_many(&self, paths: &[String]) -> Result<()> {
        const THREADS: usize = 4;
        {
            let mut fds = self.open_files.lock().expect("fd cache poisoned");
            for p in paths {
                fds.remove(p);
            }
        }
        let unlink = |p: &String| match self.fs.unlink(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", self.full(p), e)),
        };
        let mut dirs: Vec<&str> = paths
            .iter()
            .map(|p| p.rsplit_once('/').map(|(d, _)| d).unwrap_or(""))
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        let fsync = |d: &&str| {
            self.fs
                .fsync_dir(d)
                .map_err(|e| Error::io("fsync directory", self.full(d), e))
        };
        in_parallel(paths, THREADS, unlink)?;
        in_parallel(&dirs, THREADS, fsync)
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Runs `f` on every item on up to `threads` threads; the first error wins.
fn in_parallel<T: Sync>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(());
                        };
                        f(item)?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("delete worker panicked"))
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_beyond_the_object_is_corrupt_before_any_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let be = LocalBackend::new(dir.path());
        be.put("packs/ab/x", &[7u8; 100]).unwrap();
        assert_eq!(be.get_range("packs/ab/x", 90, 10).unwrap(), vec![7u8; 10]);
        // A damaged index entry claiming 1 TiB: refused from the file size, not by trying to
        // allocate it (which would abort the process).
        for (offset, len) in [(50, 1usize << 40), (101, 0), (u64::MAX, 10), (0, 101)] {
            match be.get_range("packs/ab/x", offset, len) {
                Err(Error::Corrupt(m)) => assert!(m.contains("the object has 100"), "{m}"),
                other => panic!("{offset}+{len}: {other:?}"),
            }
        }
    }
}
