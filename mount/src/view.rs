//! The read-only view a FUSE mount serves.
//!
//! Why a trait: the FUSE driver must not know how bytes are stored. Anything that can answer
//! "what is under this inode" can be mounted: wayback's repository, or an in-memory tree in tests.
//! Implementations own inode numbering (stable for the life of the mount; hardlinks share one
//! inode) and decide the kernel cache lifetime of every answer, because only they know which
//! parts of the namespace are immutable (a snapshot) and which are live (`/latest`, `/wal`).

use std::ffi::{OsStr, OsString};
use std::time::{Duration, SystemTime};

/// Inode number as the kernel sees it. `ROOT_INO` is the mount root.
pub type Ino = u64;

/// The kernel's fixed inode number of the mount root.
pub const ROOT_INO: Ino = 1;

/// An errno to hand to the kernel. Views map their own errors onto these (corruption -> `EIO`,
/// not found -> `ENOENT`) so the driver never has to interpret them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// I/O error: the data exists but cannot be read correctly (damaged or missing storage).
    pub const EIO: Errno = Errno(libc::EIO);
    /// The mount is read-only.
    pub const EROFS: Errno = Errno(libc::EROFS);
    /// Not a directory.
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    /// Is a directory.
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    /// Invalid argument (e.g. readlink on a non-symlink).
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// Extended attribute not present.
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    /// Reply buffer too small.
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    /// Operation (here: an extended attribute namespace) not supported.
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
}

/// File type of an inode, mirroring the POSIX kinds a backup can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Unix socket.
    Socket,
}

/// Attributes of one inode, as `stat` will show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (also what `stat` prints).
    pub ino: Ino,
    /// Size in bytes (symlink: length of the target).
    pub size: u64,
    /// 512-byte blocks, as the original file had them (so `du` agrees with the source).
    pub blocks: u64,
    /// File type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub perm: u16,
    /// Link count; hardlinked files share one inode and report the group size.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Modification time (also reported as atime and ctime).
    pub mtime: SystemTime,
}

/// An answer together with how long the kernel may cache it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The attributes.
    pub attr: Attr,
    /// Attribute and entry cache lifetime. Long for immutable snapshot trees, short for live parts.
    pub ttl: Duration,
}

/// One directory entry for `readdir`.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Inode number the entry resolves to (must equal what `lookup` of the name returns).
    pub ino: Ino,
    /// File type.
    pub kind: Kind,
    /// Raw file name bytes (need not be UTF-8).
    pub name: OsString,
}

/// Per-open decisions a view makes about a regular file.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenFlags {
    /// Keep the kernel page cache across opens: true only for content that can never change.
    pub keep_cache: bool,
    /// Bypass the page cache entirely (for files whose size is not known in advance).
    pub direct_io: bool,
}

/// A read-only filesystem namespace. Every method may be called from several threads at once.
///
/// Contract: `lookup`/`readdir` must return the same inode number for the same object for the
/// life of the mount; `forget` says the kernel dropped `nlookup` references to `ino`, so views
/// may free per-inode state when the count reaches zero (never for `ROOT_INO`).
pub trait View: Send + Sync + 'static {
    /// Resolve `name` inside directory `parent`. Counts one kernel reference on success.
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Errno>;
    /// Attributes of a known inode.
    fn getattr(&self, ino: Ino) -> Result<Entry, Errno>;
    /// All entries of a directory, without `.` and `..` (the driver adds them).
    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Errno>;
    /// Called on open of a regular file; may refuse (e.g. EIO when the file is known damaged).
    fn open(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        let _ = ino;
        Ok(OpenFlags::default())
    }
    /// Up to `size` bytes at `offset`; fewer only at end of file.
    fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Errno>;
    /// The target of a symlink.
    fn readlink(&self, ino: Ino) -> Result<Vec<u8>, Errno>;
    /// Names of the extended attributes of `ino`.
    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>, Errno> {
        let _ = ino;
        Ok(Vec::new())
    }
    /// Value of one extended attribute (`ENODATA` when absent).
    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let _ = (ino, name);
        Err(Errno::ENODATA)
    }
    /// [`View::getxattr`] when it can be answered from memory without waiting on I/O, else
    /// `None`. Why: `ls -l` asks for `security.selinux` on every entry and the kernel caches
    /// no such answer, so each is a round trip; answered on the session thread it costs no
    /// hand-off to a worker (two context switches). Must never block on disk or network.
    fn getxattr_cached(&self, ino: Ino, name: &OsStr) -> Option<Result<Vec<u8>, Errno>> {
        let _ = (ino, name);
        None
    }
    /// [`View::lookup`] when the answer is in memory (the parent's directory already decoded),
    /// else `None`, in which case the driver asks `lookup` on a worker. Why: a cold `ls -lR`
    /// sends one lookup per entry right after listing the directory, so the data is always
    /// there; on a worker each costs a hand-off and two context switches, which profiles of
    /// the mount showed as most of its time. Must never block on disk or network, and must
    /// count the reference exactly as `lookup` does when it answers.
    fn lookup_cached(&self, parent: Ino, name: &OsStr) -> Option<Result<Entry, Errno>> {
        let _ = (parent, name);
        None
    }
    /// [`View::getattr`] from memory, else `None` (same rules as [`View::lookup_cached`]).
    fn getattr_cached(&self, ino: Ino) -> Option<Result<Entry, Errno>> {
        let _ = ino;
        None
    }
    /// [`View::open`] from memory, else `None` (same rules as [`View::lookup_cached`]). Why:
    /// `diff -r` and `cp -r` open every file; on the session thread an open costs no hand-off.
    fn open_cached(&self, ino: Ino) -> Option<Result<OpenFlags, Errno>> {
        let _ = ino;
        None
    }
    /// [`View::read`] when every byte asked for is already decrypted in memory, else `None`
    /// (the driver then reads on a worker, so a slow fetch never stalls other requests).
    fn read_cached(&self, ino: Ino, offset: u64, size: u32) -> Option<Result<Vec<u8>, Errno>> {
        let _ = (ino, offset, size);
        None
    }
    /// [`View::readlink`] from memory, else `None`.
    fn readlink_cached(&self, ino: Ino) -> Option<Result<Vec<u8>, Errno>> {
        let _ = ino;
        None
    }
    /// [`View::readdir`] from memory, else `None`. Must allocate inode numbers exactly as
    /// `readdir` does when it answers.
    fn readdir_cached(&self, ino: Ino) -> Option<Result<Vec<DirEntry>, Errno>> {
        let _ = ino;
        None
    }
    /// Whether the kernel may keep this directory's listing for the life of the mount
    /// (FOPEN_CACHE_DIR): true only for directories that can never change (snapshot trees).
    /// Why: a second walk then sends no `readdir` at all.
    fn cache_dir(&self, ino: Ino) -> bool {
        let _ = ino;
        false
    }
    /// Whether regular files of this view may be opened for writing. Read-only views (every
    /// backup view) keep the default, and the driver answers `EROFS` to every mutation; a
    /// writable view (the copy-on-write files under `pg-at`) serves `write`, `set_size` and
    /// `fsync` on existing files, never namespace changes.
    fn writable(&self) -> bool {
        false
    }
    /// Called on open of a regular file for writing (only when [`View::writable`]).
    fn open_for_write(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        let _ = ino;
        Err(Errno::EROFS)
    }
    /// Writes `data` at `offset`; returns the bytes written (all of them, or an error).
    fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let _ = (ino, offset, data);
        Err(Errno::EROFS)
    }
    /// Truncates or extends a file (`ftruncate`).
    fn set_size(&self, ino: Ino, size: u64) -> Result<Entry, Errno> {
        let _ = (ino, size);
        Err(Errno::EROFS)
    }
    /// Makes written data durable (`fsync`/`fdatasync`).
    fn fsync(&self, ino: Ino) -> Result<(), Errno> {
        let _ = ino;
        Ok(())
    }
    /// The kernel dropped `nlookup` references to `ino`. Called on the session thread: must
    /// be quick and never wait on I/O.
    fn forget(&self, ino: Ino, nlookup: u64) {
        let _ = (ino, nlookup);
    }
    /// Whether lookups that fail may be cached by the kernel (negative entries). Live parts of a
    /// namespace (a WAL archive that PostgreSQL probes for files that will appear) must say no.
    fn negative_ttl(&self, parent: Ino) -> Duration {
        let _ = parent;
        Duration::ZERO
    }
}
