//! The `fuser::Filesystem` implementation over a [`View`].
//!
//! Why a worker pool: fuser 0.15 reads and dispatches kernel requests on a single thread. If a
//! method did its work inline, one slow `read` (a cold chunk being fetched and decrypted) would
//! stall every other process looking at the mount, including a plain `ls` in another terminal.
//! fuser's `Reply*` objects are `Send`, so every method that may touch the view hands the reply
//! to a bounded pool of worker threads and returns at once. The bound gives backpressure: when
//! all workers are busy and the queue is full, the session thread waits instead of queueing
//! without limit.
//!
//! Why the view never sees write operations: the mount is read-only by construction. Every
//! mutating request is answered `EROFS` here, so views need not think about it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use fuser::consts::{
    FOPEN_CACHE_DIR, FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FUSE_AUTO_INVAL_DATA, FUSE_CACHE_SYMLINKS,
    FUSE_DO_READDIRPLUS, FUSE_PARALLEL_DIROPS, FUSE_POSIX_ACL,
};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use libc::c_int;
use tracing::{debug, error, info, warn};

use crate::stats::{Op, Stats};
use crate::view::{Attr, DirEntry, Entry, Errno, Ino, Kind, OpenFlags, View, ROOT_INO};

/// Worker threads used when the caller asks for zero.
pub const DEFAULT_WORKERS: usize = 8;

/// Readahead we ask the kernel for. The kernel caps it at the backing device's readahead
/// (128 KiB unless raised in /sys/class/bdi), and we accept whatever cap it reports.
const WANTED_READAHEAD: u32 = 4 * 1024 * 1024;

/// Pending background requests (readahead) the kernel may queue before throttling.
const MAX_BACKGROUND: u16 = 64;

/// Background queue length at which the kernel considers the mount congested.
const CONGESTION_THRESHOLD: u16 = 48;

/// `st_blksize` reported for every inode: a hint to tools (stdio, cp) to read in large pieces,
/// since each FUSE request costs a context switch.
const BLKSIZE: u32 = 128 * 1024;

/// FOPEN_NOFLUSH (kernel 5.16, protocol 7.35; fuser 0.15 predates it): the kernel sends no
/// FLUSH on close. Why: `close` waits for that reply, one round trip per file for nothing in
/// a read-only file (`diff -r` of two snapshots closed 65k files). Older kernels ignore it.
const FOPEN_NOFLUSH: u32 = 1 << 5;

/// Entries of a listing checked for in-memory attributes before a readdirplus is answered on
/// the session thread: more than one reply page holds.
const READDIRPLUS_INLINE: usize = 64;

/// Block size reported by `statfs`.
const STATFS_BSIZE: u32 = 4096;

/// Longest file name component reported by `statfs`.
const NAME_MAX: u32 = 255;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A bounded pool of threads that run request handlers.
struct Pool {
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize) -> Pool {
        let threads = if threads == 0 {
            DEFAULT_WORKERS
        } else {
            threads
        };
        // A few queued jobs per worker smooth bursts (an `ls -l` fires many lookups at once)
        // while still bounding memory and applying backpressure to the session thread.
        let (tx, rx) = crossbeam_channel::bounded::<Job>(threads * 16);
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx: Receiver<Job> = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wayback-fuse-{i}"))
                .spawn(move || worker_loop(rx));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => error!("cannot spawn FUSE worker thread: {e}"),
            }
        }
        if workers.is_empty() {
            warn!("no FUSE worker threads; requests will be served on the session thread");
        }
        Pool {
            tx: Some(tx),
            workers,
        }
    }

    /// Runs `job` on a worker, or inline if no worker can take it (no threads could be
    /// spawned, or the pool is shutting down). Never drops a job: a dropped job would drop its
    /// reply, which fuser answers with a generic EIO.
    fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        if self.workers.is_empty() {
            run_guarded(job);
            return;
        }
        match &self.tx {
            Some(tx) => {
                if let Err(crossbeam_channel::SendError(job)) = tx.send(job) {
                    run_guarded(job);
                }
            }
            None => run_guarded(job),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel lets workers finish what is queued and exit; joining means no
        // worker touches the view after the session is gone.
        self.tx = None;
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                error!("a FUSE worker thread panicked");
            }
        }
    }
}

fn worker_loop(rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        run_guarded(job);
    }
}

/// Runs a job, containing any panic from the view. The reply owned by the job is dropped
/// during unwinding, and fuser answers a dropped reply with EIO, so the caller sees an I/O
/// error rather than a hung request.
fn run_guarded(job: Job) {
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        error!("panic while serving a FUSE request; replied EIO");
    }
}

/// A directory listing captured at `opendir`, served to every `readdir` on that handle.
struct Listing {
    /// Inode of the directory itself (for `.`).
    ino: Ino,
    /// Inode of its parent (for `..`).
    parent: Ino,
    /// Entries, without `.` and `..`.
    entries: Vec<DirEntry>,
}

impl Listing {
    /// Number of entries including `.` and `..`.
    fn len(&self) -> usize {
        self.entries.len() + 2
    }

    /// The entry at position `i`, counting `.` as 0 and `..` as 1.
    fn get(&self, i: usize) -> Option<(Ino, FileType, &OsStr)> {
        match i {
            0 => Some((self.ino, FileType::Directory, OsStr::new("."))),
            1 => Some((self.parent, FileType::Directory, OsStr::new(".."))),
            _ => self
                .entries
                .get(i - 2)
                .map(|e| (e.ino, file_type(e.kind), e.name.as_os_str())),
        }
    }
}

/// State shared between the session thread and the workers.
struct Shared<V> {
    view: V,
    /// Listings of open directory handles, keyed by the fh handed out by `opendir`.
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    /// Parent of every directory the kernel holds, only to fill in `..` in `readdir`; dropped
    /// when the kernel forgets the directory. The kernel resolves `..` itself, so this is
    /// cosmetic (`ls -ai`) and may be missing.
    parents: Mutex<HashMap<Ino, Ino>>,
    next_fh: AtomicU64,
    /// Requests served, per operation (logged at unmount).
    stats: Stats,
}

/// Result of a lookup as the kernel should see it.
enum Lookup {
    Found(Entry),
    /// The name does not exist and the kernel may remember that for this long.
    Negative(Duration),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps cannot leave it inconsistent (each update is a
    // single insert or remove), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<V: View> Shared<V> {
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Lookup, Errno> {
        self.found(parent, self.view.lookup(parent, name))
    }

    /// A lookup answered from memory on the session thread, if the view can.
    fn lookup_cached(&self, parent: Ino, name: &OsStr) -> Option<Result<Lookup, Errno>> {
        let r = self.view.lookup_cached(parent, name)?;
        Some(self.found(parent, r))
    }

    /// What the kernel is told about a lookup's result.
    fn found(&self, parent: Ino, r: Result<Entry, Errno>) -> Result<Lookup, Errno> {
        match r {
            Ok(entry) => {
                check_ino(entry.attr.ino)?;
                if entry.attr.kind == Kind::Dir {
                    lock(&self.parents).insert(entry.attr.ino, parent);
                }
                Ok(Lookup::Found(entry))
            }
            Err(Errno::ENOENT) => {
                let ttl = self.view.negative_ttl(parent);
                if ttl.is_zero() {
                    Err(Errno::ENOENT)
                } else {
                    Ok(Lookup::Negative(ttl))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The kernel evicted these inodes (it forgets an inode's whole count at once).
    fn forget(&self, nodes: &[(Ino, u64)]) {
        {
            let mut parents = lock(&self.parents);
            for (ino, _) in nodes {
                parents.remove(ino);
            }
        }
        for &(ino, n) in nodes {
            self.view.forget(ino, n);
        }
    }

    fn getattr(&self, ino: Ino) -> Result<Entry, Errno> {
        let entry = self.view.getattr(ino)?;
        check_ino(entry.attr.ino)?;
        Ok(entry)
    }

    fn getattr_cached(&self, ino: Ino) -> Option<Result<Entry, Errno>> {
        Some(self.view.getattr_cached(ino)?.and_then(|e| {
            check_ino(e.attr.ino)?;
            Ok(e)
        }))
    }

    fn opendir(&self, ino: Ino) -> Result<u64, Errno> {
        let listing = self.listing(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, Arc::new(listing));
        Ok(fh)
    }

    /// [`Self::opendir`] from memory, if the view can.
    fn opendir_cached(&self, ino: Ino) -> Option<Result<u64, Errno>> {
        let entries = match self.view.readdir_cached(ino)? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        let listing = self.listing_from(ino, entries);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, Arc::new(listing));
        Some(Ok(fh))
    }

    fn listing(&self, ino: Ino) -> Result<Listing, Errno> {
        let entries = self.view.readdir(ino)?;
        Ok(self.listing_from(ino, entries))
    }

    fn listing_from(&self, ino: Ino, entries: Vec<DirEntry>) -> Listing {
        let parent = if ino == ROOT_INO {
            ROOT_INO
        } else {
            lock(&self.parents).get(&ino).copied().unwrap_or(ino)
        };
        Listing {
            ino,
            parent,
            entries,
        }
    }

    /// The listing captured by `opendir` for handle `fh`.
    fn listing_of(&self, ino: Ino, fh: u64) -> Result<Arc<Listing>, Errno> {
        let cached = lock(&self.dirs).get(&fh).cloned();
        Ok(match cached {
            Some(l) if l.ino == ino => l,
            // No handle (the kernel should always send ours, but stay correct without it).
            _ => Arc::new(self.listing(ino)?),
        })
    }

    /// Fills `reply` from position `offset` on. Offsets handed to the kernel are "position of
    /// the next entry", so the kernel's next call resumes exactly after the last entry it got.
    fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: i64,
        reply: &mut ReplyDirectory,
    ) -> Result<(), Errno> {
        let start = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let listing = self.listing_of(ino, fh)?;
        for i in start..listing.len() {
            let Some((ino, kind, name)) = listing.get(i) else {
                break;
            };
            let next = i64::try_from(i + 1).map_err(|_| Errno::EINVAL)?;
            if reply.add(ino, next, kind, name) {
                break;
            }
        }
        Ok(())
    }

    /// [`Self::readdirplus`] on the session thread, when the handle's listing and every
    /// entry's attributes that may fit in the reply are in memory; else `None`, leaving
    /// `reply` untouched. Why: a cold walk sends two of these per directory, each a hand-off.
    fn readdirplus_cached(
        &self,
        ino: Ino,
        fh: u64,
        offset: i64,
        reply: &mut ReplyDirectoryPlus,
    ) -> Option<Result<(), Errno>> {
        let Ok(start) = usize::try_from(offset) else {
            return Some(Err(Errno::EINVAL));
        };
        let listing = lock(&self.dirs)
            .get(&fh)
            .cloned()
            .filter(|l| l.ino == ino)?;
        // More than a reply page can hold (a direntplus is over 150 bytes).
        let end = listing.len().min(start.saturating_add(READDIRPLUS_INLINE));
        let mut attrs = Vec::with_capacity(end.saturating_sub(start));
        for i in start..end {
            let (child, _, _) = listing.get(i)?;
            attrs.push(if i < 2 {
                None
            } else {
                match self.getattr_cached(child)? {
                    Ok(e) if e.attr.ino == child => Some(e),
                    Ok(_) | Err(_) => None,
                }
            });
        }
        for (k, entry) in attrs.into_iter().enumerate() {
            let i = start + k;
            let Some((child, kind, name)) = listing.get(i) else {
                break;
            };
            let Ok(next) = i64::try_from(i + 1) else {
                return Some(Err(Errno::EINVAL));
            };
            if self.add_plus(reply, ino, child, kind, name, next, entry) {
                return Some(Ok(()));
            }
        }
        // A page that did not fill is fine: the kernel asks again from the next offset, and
        // only an empty reply means the end.
        Some(Ok(()))
    }

    /// Adds one entry to a readdirplus reply; true when the reply is full.
    #[allow(clippy::too_many_arguments)]
    fn add_plus(
        &self,
        reply: &mut ReplyDirectoryPlus,
        dir: Ino,
        child: Ino,
        kind: FileType,
        name: &OsStr,
        next: i64,
        entry: Option<Entry>,
    ) -> bool {
        match entry {
            Some(e) => {
                if e.attr.kind == Kind::Dir {
                    lock(&self.parents).insert(child, dir);
                }
                reply.add(child, next, name, &e.ttl, &file_attr(&e.attr), 0)
            }
            None => {
                let attr = FileAttr {
                    ino: child,
                    kind,
                    ..negative_attr()
                };
                reply.add(child, next, name, &Duration::ZERO, &attr, 0)
            }
        }
    }

    /// `readdir` with each entry's attributes, which the kernel turns into cached lookups:
    /// a walk then sends no `lookup` per entry. An entry whose attributes cannot be read gets
    /// placeholder attributes valid for no time, so the kernel asks `lookup` for it at once
    /// and that reports the error.
    fn readdirplus(
        &self,
        ino: Ino,
        fh: u64,
        offset: i64,
        reply: &mut ReplyDirectoryPlus,
    ) -> Result<(), Errno> {
        let start = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let listing = self.listing_of(ino, fh)?;
        for i in start..listing.len() {
            let Some((child, kind, name)) = listing.get(i) else {
                break;
            };
            let next = i64::try_from(i + 1).map_err(|_| Errno::EINVAL)?;
            // The kernel links no dentry for `.` and `..`; their attributes are never used.
            let entry = if i < 2 {
                None
            } else {
                match self.getattr(child) {
                    Ok(e) if e.attr.ino == child => Some(e),
                    Ok(_) | Err(_) => None,
                }
            };
            if self.add_plus(reply, ino, child, kind, name, next, entry) {
                break;
            }
        }
        Ok(())
    }

    fn open(&self, ino: Ino, write: bool) -> Result<u32, Errno> {
        Ok(if write {
            open_flags(self.view.open_for_write(ino)?)
        } else {
            open_flags(self.view.open(ino)?) | FOPEN_NOFLUSH
        })
    }

    /// [`Self::read`] from memory, if the view can.
    fn read_cached(&self, ino: Ino, offset: i64, size: u32) -> Option<Result<Vec<u8>, Errno>> {
        let Ok(offset) = u64::try_from(offset) else {
            return Some(Err(Errno::EINVAL));
        };
        Some(self.view.read_cached(ino, offset, size)?.map(|mut data| {
            data.truncate(size as usize);
            data
        }))
    }

    fn read(&self, ino: Ino, offset: i64, size: u32) -> Result<Vec<u8>, Errno> {
        let offset = u64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let mut data = self.view.read(ino, offset, size)?;
        // The kernel trusts the length we send; never exceed what it asked for.
        data.truncate(size as usize);
        Ok(data)
    }

    fn getxattr(&self, ino: Ino, name: &OsStr, size: u32) -> Result<XattrReply, Errno> {
        let value = self.view.getxattr(ino, name)?;
        xattr_reply(value, size)
    }

    fn listxattr(&self, ino: Ino, size: u32) -> Result<XattrReply, Errno> {
        let names = self.view.listxattr(ino)?;
        let mut buf = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for name in names {
            let bytes = name.as_bytes();
            if bytes.is_empty() || bytes.contains(&0) {
                warn!(ino, ?name, "view listed an invalid xattr name; skipped");
                continue;
            }
            buf.extend_from_slice(bytes);
            buf.push(0);
        }
        xattr_reply(buf, size)
    }
}

fn reply_lookup(parent: Ino, r: Result<Lookup, Errno>, reply: ReplyEntry) {
    match r {
        Ok(Lookup::Found(e)) => reply.entry(&e.ttl, &file_attr(&e.attr), 0),
        Ok(Lookup::Negative(ttl)) => reply.entry(&ttl, &negative_attr(), 0),
        Err(e) => {
            log_err("lookup", parent, e);
            reply.error(code(e))
        }
    }
}

/// Replies that carry nothing but success or an error code (a listing's entries are added
/// to the reply before it is sent).
trait ReplyDone {
    fn done(self);
    fn fail(self, code: c_int);
}

macro_rules! reply_done {
    ($($t:ty),*) => {$(
        impl ReplyDone for $t {
            fn done(self) {
                self.ok()
            }
            fn fail(self, code: c_int) {
                self.error(code)
            }
        }
    )*};
}
reply_done!(ReplyEmpty, ReplyDirectory, ReplyDirectoryPlus);

/// Sends `r`'s outcome, logging an error under `op`.
fn reply_done(op: &str, ino: Ino, r: Result<(), Errno>, reply: impl ReplyDone) {
    match r {
        Ok(()) => reply.done(),
        Err(e) => {
            log_err(op, ino, e);
            reply.fail(code(e))
        }
    }
}

fn reply_attr(ino: Ino, r: Result<Entry, Errno>, reply: ReplyAttr) {
    match r {
        Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
        Err(e) => {
            log_err("getattr", ino, e);
            reply.error(code(e))
        }
    }
}

/// What a getxattr/listxattr call answers, following the size-probe protocol.
enum XattrReply {
    /// `size` was 0: the caller only wants to know how big a buffer to allocate.
    Size(u32),
    /// The value fits in the caller's buffer.
    Data(Vec<u8>),
}

fn xattr_reply(value: Vec<u8>, size: u32) -> Result<XattrReply, Errno> {
    let len = u32::try_from(value.len()).map_err(|_| Errno(libc::E2BIG))?;
    if size == 0 {
        Ok(XattrReply::Size(len))
    } else if len <= size {
        Ok(XattrReply::Data(value))
    } else {
        Err(Errno::ERANGE)
    }
}

fn check_ino(ino: Ino) -> Result<(), Errno> {
    if ino == 0 {
        // Inode 0 means "negative entry" to the kernel; a view must never return it.
        error!("view returned inode 0 for an existing entry; replying EIO");
        return Err(Errno::EIO);
    }
    Ok(())
}

/// The errno to send. fuser asserts a non-zero errno, and a view bug must not panic the
/// session, so anything non-positive becomes EIO.
fn code(e: Errno) -> c_int {
    if e.0 > 0 {
        e.0
    } else {
        error!(errno = e.0, "view returned an invalid errno; replying EIO");
        libc::EIO
    }
}

/// Logs a failed request at a level matching how surprising the error is.
fn log_err(op: &str, ino: Ino, e: Errno) {
    match e.0 {
        libc::ENOENT | libc::ENODATA | libc::ENOTSUP | libc::ERANGE => {}
        libc::EIO => warn!(op, ino, "I/O error"),
        _ => debug!(op, ino, errno = e.0, "request failed"),
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

/// Converts a view's attributes to what the kernel expects.
fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm & 0o7777,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// Attributes sent with a negative entry. The kernel ignores them (inode 0 means "no such
/// name"), but the reply format requires some.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: 0,
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// The FOPEN_* flags for a view's per-open decisions.
fn open_flags(f: OpenFlags) -> u32 {
    let mut flags = 0;
    if f.keep_cache {
        flags |= FOPEN_KEEP_CACHE;
    }
    if f.direct_io {
        flags |= FOPEN_DIRECT_IO;
    }
    flags
}

/// Whether `open` flags ask for any kind of write access.
fn wants_write(flags: i32) -> bool {
    (flags & libc::O_ACCMODE) != libc::O_RDONLY || flags & (libc::O_TRUNC | libc::O_APPEND) != 0
}

/// A read-only FUSE filesystem serving a [`View`].
///
/// Mount it with [`crate::mount_foreground`] or [`crate::mount_background`]; constructing it
/// directly is only needed to drive a `fuser::Session` by hand.
pub struct Driver<V: View> {
    shared: Arc<Shared<V>>,
    pool: Pool,
}

impl<V: View> std::fmt::Debug for Driver<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("workers", &self.pool.workers.len())
            .finish_non_exhaustive()
    }
}

/// Logs the request table when the session ends (fuser calls `destroy` only when the kernel
/// sends FUSE_DESTROY, which an external unmount does not; dropping always happens).
impl<V: View> Drop for Driver<V> {
    fn drop(&mut self) {
        debug!("FUSE requests served:\n{}", self.shared.stats.table());
    }
}

impl<V: View> Driver<V> {
    /// Wraps `view`, serving requests on `workers` threads (0 means [`DEFAULT_WORKERS`]).
    pub fn new(view: V, workers: usize) -> Driver<V> {
        Driver {
            shared: Arc::new(Shared {
                view,
                dirs: Mutex::new(HashMap::new()),
                parents: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                stats: Stats::default(),
            }),
            pool: Pool::new(workers),
        }
    }

    /// Runs `f` on a worker with a handle to the shared state.
    fn spawn(&self, f: impl FnOnce(&Shared<V>) + Send + 'static) {
        let shared = Arc::clone(&self.shared);
        self.pool.run(move || f(&shared));
    }

    /// [`Self::spawn`], counting the request as `op` once `f` has replied.
    fn spawn_op(&self, op: Op, f: impl FnOnce(&Shared<V>) + Send + 'static) {
        let t = Stats::start(op);
        self.spawn(move |s| {
            f(s);
            s.stats.done(t);
        });
    }

    /// The per-operation request table so far (what is logged at unmount).
    pub fn stats_table(&self) -> String {
        self.shared.stats.table()
    }
}

impl<V: View> Filesystem for Driver<V> {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), c_int> {
        let readahead = match config.set_max_readahead(WANTED_READAHEAD) {
            Ok(_) => WANTED_READAHEAD,
            Err(cap) => {
                // `cap` is the kernel's limit; setting it cannot fail.
                let _ = config.set_max_readahead(cap);
                cap
            }
        };
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(CONGESTION_THRESHOLD);
        // Parallel lookups/readdir in one directory; drop stale pages when a live file's
        // mtime or size changes. POSIX_ACL: the kernel asks us once per inode for
        // `system.posix_acl_*` and caches the answer (even "none"), instead of one round trip
        // per `ls -l` entry and name; it also makes the kernel enforce stored ACLs, which
        // `default_permissions` already implies for mode bits. CACHE_SYMLINKS: readlink
        // answers stay in the page cache (symlinks in snapshots never change; live ones are
        // invalidated with their attributes' TTL like any other page). All optional: an older
        // kernel simply lacks them.
        for (cap, name) in [
            (FUSE_PARALLEL_DIROPS, "parallel_dirops"),
            (FUSE_AUTO_INVAL_DATA, "auto_inval_data"),
            (FUSE_POSIX_ACL, "posix_acl"),
            (FUSE_CACHE_SYMLINKS, "cache_symlinks"),
            // READDIRPLUS: a listing carries each entry's attributes, so a walk (`ls -lR`,
            // `find`, `diff -r`) needs no lookup per entry. Not READDIRPLUS_AUTO: it sends
            // plus only for a listing's first page unless a stat came in between, and
            // `diff -r` reads a whole directory before it stats any entry, so every entry
            // past the first page cost a lookup round trip (53k in a diff of two 43k-file
            // snapshots). Attributes come from the decoded tree, so plus costs little more.
            (FUSE_DO_READDIRPLUS, "readdirplus"),
        ] {
            if config.add_capabilities(cap).is_err() {
                debug!("kernel lacks FUSE capability {name}");
            }
        }
        info!(max_readahead = readahead, "FUSE session initialised");
        Ok(())
    }

    fn destroy(&mut self) {
        debug!("FUSE session destroyed");
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let t = Stats::start(Op::Lookup);
        if let Some(r) = self.shared.lookup_cached(parent, name) {
            reply_lookup(parent, r, reply);
            self.shared.stats.done_inline(t);
            return;
        }
        let name = name.to_os_string();
        self.spawn(move |s| {
            reply_lookup(parent, s.lookup(parent, &name), reply);
            s.stats.done(t);
        });
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        // A map removal: cheaper here than a hand-off (a walk's inode evictions send tens of
        // thousands).
        let t = Stats::start(Op::Forget);
        self.shared.forget(&[(ino, nlookup)]);
        self.shared.stats.done_inline(t);
    }

    fn batch_forget(&mut self, _req: &Request<'_>, nodes: &[fuser::fuse_forget_one]) {
        let nodes: Vec<(u64, u64)> = nodes.iter().map(|n| (n.nodeid, n.nlookup)).collect();
        let t = Stats::start(Op::Forget);
        self.shared.forget(&nodes);
        self.shared.stats.done_inline(t);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let t = Stats::start(Op::Getattr);
        if let Some(r) = self.shared.getattr_cached(ino) {
            reply_attr(ino, r, reply);
            self.shared.stats.done_inline(t);
            return;
        }
        self.spawn(move |s| {
            reply_attr(ino, s.getattr(ino), reply);
            s.stats.done(t);
        });
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let t = Stats::start(Op::Readlink);
        if let Some(r) = self.shared.view.readlink_cached(ino) {
            match r {
                Ok(target) => reply.data(&target),
                Err(e) => {
                    log_err("readlink", ino, e);
                    reply.error(code(e))
                }
            }
            self.shared.stats.done_inline(t);
            return;
        }
        self.spawn_op(Op::Readlink, move |s| match s.view.readlink(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => {
                log_err("readlink", ino, e);
                reply.error(code(e))
            }
        });
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let write = wants_write(flags);
        if write && !self.shared.view.writable() {
            reply.error(libc::EROFS);
            return;
        }
        let t = Stats::start(Op::Open);
        if let Some(r) = (!write)
            .then(|| self.shared.view.open_cached(ino))
            .flatten()
        {
            match r {
                Ok(f) => reply.opened(0, open_flags(f) | FOPEN_NOFLUSH),
                Err(e) => {
                    log_err("open", ino, e);
                    reply.error(code(e))
                }
            }
            self.shared.stats.done_inline(t);
            return;
        }
        self.spawn_op(Op::Open, move |s| match s.open(ino, write) {
            Ok(open_flags) => reply.opened(0, open_flags),
            Err(e) => {
                log_err("open", ino, e);
                reply.error(code(e))
            }
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let t = Stats::start(Op::Read);
        if let Some(r) = self.shared.read_cached(ino, offset, size) {
            match r {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    log_err("read", ino, e);
                    reply.error(code(e))
                }
            }
            self.shared.stats.done_inline(t);
            return;
        }
        self.spawn_op(Op::Read, move |s| match s.read(ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                log_err("read", ino, e);
                reply.error(code(e))
            }
        });
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.stats.done_inline(Stats::start(Op::Other));
        reply.ok();
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        self.shared.stats.done_inline(Stats::start(Op::Other));
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        // Nothing is ever dirty in a read-only view; writable views make their writes durable.
        self.spawn_op(Op::Other, move |s| {
            reply_done("fsync", ino, s.view.fsync(ino), reply)
        });
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if wants_write(flags) {
            reply.error(libc::EROFS);
            return;
        }
        let t = Stats::start(Op::Opendir);
        if let Some(r) = self.shared.opendir_cached(ino) {
            match r {
                Ok(fh) if self.shared.view.cache_dir(ino) => {
                    reply.opened(fh, FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE)
                }
                Ok(fh) => reply.opened(fh, 0),
                Err(e) => {
                    log_err("opendir", ino, e);
                    reply.error(code(e))
                }
            }
            self.shared.stats.done_inline(t);
            return;
        }
        self.spawn_op(Op::Opendir, move |s| match s.opendir(ino) {
            // KEEP_CACHE too: without it every open would drop the cached listing.
            Ok(fh) if s.view.cache_dir(ino) => reply.opened(fh, FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE),
            Ok(fh) => reply.opened(fh, 0),
            Err(e) => {
                log_err("opendir", ino, e);
                reply.error(code(e))
            }
        });
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let t = Stats::start(Op::Readdirplus);
        if let Some(r) = self.shared.readdirplus_cached(ino, fh, offset, &mut reply) {
            reply_done("readdirplus", ino, r, reply);
            self.shared.stats.done_inline(t);
            return;
        }
        self.spawn_op(Op::Readdirplus, move |s| {
            let r = s.readdirplus(ino, fh, offset, &mut reply);
            reply_done("readdirplus", ino, r, reply)
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let t = Stats::start(Op::Readdir);
        if lock(&self.shared.dirs)
            .get(&fh)
            .is_some_and(|l| l.ino == ino)
        {
            // Names only, from the listing captured at opendir: no I/O.
            let r = self.shared.readdir(ino, fh, offset, &mut reply);
            reply_done("readdir", ino, r, reply);
            self.shared.stats.done_inline(t);
            return;
        }
        self.spawn_op(Op::Readdir, move |s| {
            let r = s.readdir(ino, fh, offset, &mut reply);
            reply_done("readdir", ino, r, reply)
        });
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        let t = Stats::start(Op::Releasedir);
        let listing = lock(&self.shared.dirs).remove(&fh);
        reply.ok();
        self.shared.stats.done_inline(t);
        // Freeing a huge listing can take a moment; do it off the session thread.
        if let Some(listing) = listing {
            self.pool.run(move || drop(listing));
        }
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        self.shared.stats.done_inline(Stats::start(Op::Other));
        // No meaningful capacity: report a full, read-only filesystem of nominal block size.
        reply.statfs(0, 0, 0, 0, 0, STATFS_BSIZE, NAME_MAX, STATFS_BSIZE);
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let t = Stats::start(Op::Getxattr);
        if let Some(found) = self.shared.view.getxattr_cached(ino, name) {
            match found.and_then(|v| xattr_reply(v, size)) {
                Ok(XattrReply::Size(n)) => reply.size(n),
                Ok(XattrReply::Data(d)) => reply.data(&d),
                Err(e) => {
                    log_err("getxattr", ino, e);
                    reply.error(code(e))
                }
            }
            self.shared.stats.done_inline(t);
            return;
        }
        let name = name.to_os_string();
        self.spawn_op(Op::Getxattr, move |s| match s.getxattr(ino, &name, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => {
                log_err("getxattr", ino, e);
                reply.error(code(e))
            }
        });
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.spawn_op(Op::Listxattr, move |s| match s.listxattr(ino, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => {
                log_err("listxattr", ino, e);
                reply.error(code(e))
            }
        });
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, mask: i32, reply: ReplyEmpty) {
        self.shared.stats.done_inline(Stats::start(Op::Other));
        // Only reached without `default_permissions`; the kernel checks modes otherwise.
        if mask & libc::W_OK != 0 && !self.shared.view.writable() {
            reply.error(libc::EROFS);
        } else {
            reply.ok();
        }
    }

    // Everything below would modify the filesystem.

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Writable views change sizes only; ownership and modes stay as backed up, and time
        // updates are accepted and dropped (the view reports its own mtime).
        if !self.shared.view.writable() || mode.is_some() || uid.is_some() || gid.is_some() {
            reply.error(libc::EROFS);
            return;
        }
        self.spawn(move |s| {
            let r = match size {
                Some(n) => s.view.set_size(ino, n),
                None => s.getattr(ino),
            };
            match r {
                Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
                Err(e) => {
                    log_err("setattr", ino, e);
                    reply.error(code(e))
                }
            }
        });
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EROFS);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EROFS);
    }

    fn unlink(&mut self, _req: &Request<'_>, _parent: u64, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn rmdir(&mut self, _req: &Request<'_>, _parent: u64, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EROFS);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _newparent: u64,
        _newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(libc::EROFS);
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _newparent: u64,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(libc::EROFS);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            reply.error(libc::EINVAL);
            return;
        };
        if !self.shared.view.writable() {
            reply.error(libc::EROFS);
            return;
        }
        let data = data.to_vec();
        self.spawn_op(Op::Other, move |s| match s.view.write(ino, offset, &data) {
            Ok(n) => reply.written(n),
            Err(e) => {
                log_err("write", ino, e);
                reply.error(code(e))
            }
        });
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(libc::EROFS);
    }

    fn removexattr(&mut self, _req: &Request<'_>, _ino: u64, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(libc::EROFS);
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _offset: i64,
        _length: i64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(libc::EROFS);
    }

    fn copy_file_range(
        &mut self,
        _req: &Request<'_>,
        _ino_in: u64,
        _fh_in: u64,
        _offset_in: i64,
        _ino_out: u64,
        _fh_out: u64,
        _offset_out: i64,
        _len: u64,
        _flags: u32,
        reply: ReplyWrite,
    ) {
        // Only the destination must be on this mount for the kernel to ask us, and nothing
        // here can be written.
        reply.error(libc::EROFS);
    }
}

/// Lets an `Arc` of a view (including `Arc<dyn View>`) be mounted while the caller keeps a
/// handle to it.
impl<T: View + ?Sized> View for Arc<T> {
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Errno> {
        (**self).lookup(parent, name)
    }
    fn getattr(&self, ino: Ino) -> Result<Entry, Errno> {
        (**self).getattr(ino)
    }
    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Errno> {
        (**self).readdir(ino)
    }
    fn open(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        (**self).open(ino)
    }
    fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        (**self).read(ino, offset, size)
    }
    fn readlink(&self, ino: Ino) -> Result<Vec<u8>, Errno> {
        (**self).readlink(ino)
    }
    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>, Errno> {
        (**self).listxattr(ino)
    }
    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>, Errno> {
        (**self).getxattr(ino, name)
    }
    fn getxattr_cached(&self, ino: Ino, name: &OsStr) -> Option<Result<Vec<u8>, Errno>> {
        (**self).getxattr_cached(ino, name)
    }
    fn lookup_cached(&self, parent: Ino, name: &OsStr) -> Option<Result<Entry, Errno>> {
        (**self).lookup_cached(parent, name)
    }
    fn getattr_cached(&self, ino: Ino) -> Option<Result<Entry, Errno>> {
        (**self).getattr_cached(ino)
    }
    fn open_cached(&self, ino: Ino) -> Option<Result<OpenFlags, Errno>> {
        (**self).open_cached(ino)
    }
    fn read_cached(&self, ino: Ino, offset: u64, size: u32) -> Option<Result<Vec<u8>, Errno>> {
        (**self).read_cached(ino, offset, size)
    }
    fn readlink_cached(&self, ino: Ino) -> Option<Result<Vec<u8>, Errno>> {
        (**self).readlink_cached(ino)
    }
    fn readdir_cached(&self, ino: Ino) -> Option<Result<Vec<DirEntry>, Errno>> {
        (**self).readdir_cached(ino)
    }
    fn cache_dir(&self, ino: Ino) -> bool {
        (**self).cache_dir(ino)
    }
    fn forget(&self, ino: Ino, nlookup: u64) {
        (**self).forget(ino, nlookup)
    }
    fn negative_ttl(&self, parent: Ino) -> Duration {
        (**self).negative_ttl(parent)
    }
}

/// Lets a boxed view (including `Box<dyn View>`) be mounted.
impl<T: View + ?Sized> View for Box<T> {
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Errno> {
        (**self).lookup(parent, name)
    }
    fn getattr(&self, ino: Ino) -> Result<Entry, Errno> {
        (**self).getattr(ino)
    }
    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Errno> {
        (**self).readdir(ino)
    }
    fn open(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        (**self).open(ino)
    }
    fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        (**self).read(ino, offset, size)
    }
    fn readlink(&self, ino: Ino) -> Result<Vec<u8>, Errno> {
        (**self).readlink(ino)
    }
    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>, Errno> {
        (**self).listxattr(ino)
    }
    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>, Errno> {
        (**self).getxattr(ino, name)
    }
    fn getxattr_cached(&self, ino: Ino, name: &OsStr) -> Option<Result<Vec<u8>, Errno>> {
        (**self).getxattr_cached(ino, name)
    }
    fn lookup_cached(&self, parent: Ino, name: &OsStr) -> Option<Result<Entry, Errno>> {
        (**self).lookup_cached(parent, name)
    }
    fn getattr_cached(&self, ino: Ino) -> Option<Result<Entry, Errno>> {
        (**self).getattr_cached(ino)
    }
    fn open_cached(&self, ino: Ino) -> Option<Result<OpenFlags, Errno>> {
        (**self).open_cached(ino)
    }
    fn read_cached(&self, ino: Ino, offset: u64, size: u32) -> Option<Result<Vec<u8>, Errno>> {
        (**self).read_cached(ino, offset, size)
    }
    fn readlink_cached(&self, ino: Ino) -> Option<Result<Vec<u8>, Errno>> {
        (**self).readlink_cached(ino)
    }
    fn readdir_cached(&self, ino: Ino) -> Option<Result<Vec<DirEntry>, Errno>> {
        (**self).readdir_cached(ino)
    }
    fn cache_dir(&self, ino: Ino) -> bool {
        (**self).cache_dir(ino)
    }
    fn forget(&self, ino: Ino, nlookup: u64) {
        (**self).forget(ino, nlookup)
    }
    fn negative_ttl(&self, parent: Ino) -> Duration {
        (**self).negative_ttl(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_flags_are_detected() {
        assert!(!wants_write(libc::O_RDONLY));
        assert!(!wants_write(libc::O_RDONLY | libc::O_NOFOLLOW));
        assert!(wants_write(libc::O_WRONLY));
        assert!(wants_write(libc::O_RDWR));
        assert!(wants_write(libc::O_RDONLY | libc::O_TRUNC));
        assert!(wants_write(libc::O_RDONLY | libc::O_APPEND));
    }

    #[test]
    fn xattr_size_protocol() {
        assert!(matches!(
            xattr_reply(b"abc".to_vec(), 0),
            Ok(XattrReply::Size(3))
        ));
        assert!(matches!(
            xattr_reply(b"abc".to_vec(), 3),
            Ok(XattrReply::Data(_))
        ));
        assert!(matches!(
            xattr_reply(b"abc".to_vec(), 2),
            Err(Errno::ERANGE)
        ));
    }

    #[test]
    fn invalid_errno_becomes_eio() {
        assert_eq!(code(Errno(0)), libc::EIO);
        assert_eq!(code(Errno(-5)), libc::EIO);
        assert_eq!(code(Errno::ENOENT), libc::ENOENT);
    }

    #[test]
    fn listing_positions() {
        let l = Listing {
            ino: 7,
            parent: 1,
            entries: vec![DirEntry {
                ino: 9,
                kind: Kind::File,
                name: "a".into(),
            }],
        };
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(0).map(|e| e.0), Some(7));
        assert_eq!(l.get(1).map(|e| e.0), Some(1));
        assert_eq!(l.get(2).map(|e| e.2.to_owned()), Some("a".into()));
        assert!(l.get(3).is_none());
    }
}
