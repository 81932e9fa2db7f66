//! File access confined to the repository directory, with the repository owner's rights.
//!
//! Why: the documented PostgreSQL setup runs a root agent or writer in a repository that the
//! `postgres` user owns. Everything in that directory is then hostile to root: its owner can
//! replace any file or directory with a symlink (`locks/writer -> /etc/shadow`) or a FIFO at any
//! moment, and a root process that follows it truncates, chowns or blocks on a file outside.
//! Two rules, each enough on its own against symlinks, together also against hard links:
//! - every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to a
//!   descriptor of the repository root, and renames and unlinks go through descriptors of the
//!   parent directories opened that way, so no component is ever a symlink;
//! - a root process in a repository another user owns does every one of these calls with that
//!   user's filesystem uid and gid (`setfsuid`, per thread, for the call only), so the kernel
//!   checks the owner's permissions, not root's, and new files belong to the owner from their
//!   first instant (nothing to chown afterwards, no window).
//!
//! The root path itself is the administrator's choice and may be a symlink.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

/// Mode of every file wayback creates in a repository: keys, config, packs and records are
/// nobody else's business (restic and borg do the same).
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory wayback creates in a repository.
pub const DIR_MODE: u32 = 0o700;

/// The repository root as a directory descriptor, plus whose rights to use inside it.
pub struct Beneath {
    root: PathBuf,
    fd: OnceLock<OwnedFd>,
    owner: OnceLock<Option<(u32, u32)>>,
}

/// The owner (uid, gid) of the directory `root` when this process runs as root and another user
/// owns it (PostgreSQL's archive, owned by `postgres`): whose rights a root process uses inside.
pub fn foreign_owner(root: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root).ok()?;
    (nix::unistd::geteuid().is_root() && m.uid() != 0).then_some((m.uid(), m.gid()))
}

/// Runs `f` with this thread's filesystem uid and gid set to `uid`/`gid` (Linux `setfsuid`, per
/// thread), so the kernel checks that user's permissions and files created belong to them.
/// `None` (and `f` not run) when the switch did not take; a thread whose identity cannot be
/// restored afterwards aborts the process rather than go on as another user.
pub fn as_fs_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> Option<T> {
    // setfsuid/setfsgid return the previous value; calling with -1 (invalid) reads the current
    // one, which is how success is checked.
    // SAFETY: these only change this thread's filesystem credentials.
    let (old_uid, old_gid, ok) = unsafe {
        let old_gid = libc::setfsgid(gid) as u32;
        let old_uid = libc::setfsuid(uid) as u32;
        let ok = libc::setfsuid(u32::MAX) as u32 == uid && libc::setfsgid(u32::MAX) as u32 == gid;
        (old_uid, old_gid, ok)
    };
    let out = ok.then(f);
    // SAFETY: as above; restores the previous filesystem credentials, uid first.
    let restored = unsafe {
        libc::setfsuid(old_uid);
        libc::setfsgid(old_gid);
        libc::setfsuid(u32::MAX) as u32 == old_uid && libc::setfsgid(u32::MAX) as u32 == old_gid
    };
    if !restored {
        std::process::abort();
    }
    out
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS
}

/// Splits `rel` into its parent (possibly empty) and final name, refusing anything that is not
/// a plain relative path of normal components.
fn split(rel: &str) -> io::Result<(&str, &str)> {
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'));
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a repository-relative path: {rel:?}"),
        ));
    }
    Ok(match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    })
}

impl Beneath {
    /// Confines access to `root` (opened on first use, so a missing root fails per call with
    /// `NotFound` instead of at construction).
    pub fn new(root: impl Into<PathBuf>) -> Beneath {
        Beneath {
            root: root.into(),
            fd: OnceLock::new(),
            owner: OnceLock::new(),
        }
    }

    /// The root path (for messages and for code that needs a path, e.g. RocksDB).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The foreign owner whose rights this process uses inside (see the module doc).
    pub fn owner(&self) -> Option<(u32, u32)> {
        *self.owner.get_or_init(|| foreign_owner(&self.root))
    }

    fn dir(&self) -> io::Result<RawFd> {
        if let Some(fd) = self.fd.get() {
            return Ok(fd.as_raw_fd());
        }
        let fd = nix::fcntl::open(
            &self.root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        // SAFETY: `open` returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = self.fd.set(fd);
        Ok(self.fd.get().expect("just set").as_raw_fd())
    }

    /// Runs `f` with the owner's filesystem rights when there is a foreign owner (`EPERM` if
    /// they cannot be taken).
    pub fn as_owner<T>(&self, f: impl FnOnce() -> nix::Result<T>) -> nix::Result<T> {
        match self.owner() {
            Some((u, g)) => as_fs_user(u, g, f).unwrap_or(Err(Errno::EPERM)),
            None => f(),
        }
    }

    fn openat(&self, at: RawFd, rel: &str, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(resolve());
        let fd = self
            .as_owner(|| nix::fcntl::openat2(at, rel, how))
            .map_err(errno)?;
        // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A directory beneath the root (`""` is the root itself) as a descriptor.
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let root = self.dir()?;
        if rel.is_empty() {
            return self.openat(root, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0);
        }
        split(rel)?;
        self.openat(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
    }

    /// Opens a regular file for reading. A symlink, FIFO, device or directory in its place is
    /// refused (a FIFO would block a reader forever; `/dev/zero` would fill memory).
    pub fn open_read(&self, rel: &str) -> io::Result<File> {
        split(rel)?;
        let fd = self.openat(self.dir()?, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
        let f = File::from(fd);
        ensure_regular(&f, rel)?;
        Ok(f)
    }

    /// Opens (creating with [`FILE_MODE`] if absent) a regular file for reading and writing, for
    /// files that are rewritten in place (the writer lock). Refused unless it is a regular file
    /// with one link, so a hard link to a file elsewhere is never written.
    pub fn open_rw(&self, rel: &str) -> io::Result<File> {
        split(rel)?;
        let fd = self.openat(
            self.dir()?,
            rel,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NONBLOCK,
            FILE_MODE,
        )?;
        let f = File::from(fd);
        let st = ensure_regular(&f, rel)?;
        if st.st_nlink != 1 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{rel} has {} hard links; refusing to write it", st.st_nlink),
            ));
        }
        Ok(f)
    }

    /// Creates a new file (never an existing one) with [`FILE_MODE`].
    pub fn create_new(&self, rel: &str) -> io::Result<File> {
        split(rel)?;
        let fd = self.openat(
            self.dir()?,
            rel,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            FILE_MODE,
        )?;
        Ok(File::from(fd))
    }

    /// Creates `rel` and its missing parents with [`DIR_MODE`]; each new directory is fsynced
    /// in its parent before this returns, so nothing later put inside can be acknowledged and
    /// then lost with the directory entry. Returns whether anything was created.
    pub fn make_dirs(&self, rel: &str) -> io::Result<bool> {
        if rel.is_empty() {
            return Ok(false);
        }
        split(rel)?;
        let mut created = false;
        let mut parent = String::new();
        for comp in rel.split('/') {
            let pfd = self.open_dir(&parent)?;
            let r = self.as_owner(|| {
                nix::sys::stat::mkdirat(
                    Some(pfd.as_raw_fd()),
                    comp,
                    Mode::from_bits_truncate(DIR_MODE),
                )
            });
            match r {
                Ok(()) => {
                    created = true;
                    File::from(pfd).sync_all()?;
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno(e)),
            }
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
        }
        Ok(created)
    }

    /// Renames `from` to `to` (both beneath the root); with `noreplace` an existing `to` is an
    /// `AlreadyExists` error and is left untouched (`renameat2(RENAME_NOREPLACE)`).
    pub fn rename(&self, from: &str, to: &str, noreplace: bool) -> io::Result<()> {
        let (fp, fname) = split(from)?;
        let (tp, tname) = split(to)?;
        let fdir = self.open_dir(fp)?;
        let tdir = self.open_dir(tp)?;
        let flags = if noreplace {
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        } else {
            nix::fcntl::RenameFlags::empty()
        };
        self.as_owner(|| {
            nix::fcntl::renameat2(
                Some(fdir.as_raw_fd()),
                fname,
                Some(tdir.as_raw_fd()),
                tname,
                flags,
            )
        })
        .map_err(errno)
    }

    /// Removes a file (never follows a symlink: the link itself would be removed).
    pub fn unlink(&self, rel: &str) -> io::Result<()> {
        let (p, name) = split(rel)?;
        let dir = self.open_dir(p)?;
        self.as_owner(|| {
            nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
        })
        .map_err(errno)
    }

    /// fsyncs a directory beneath the root (`""`: the root).
    pub fn fsync_dir(&self, rel: &str) -> io::Result<()> {
        File::from(self.open_dir(rel)?).sync_all()
    }

    /// Names directly under a directory, with whether each is a directory. Missing = empty.
    pub fn list(&self, rel: &str) -> io::Result<Vec<(OsString, bool)>> {
        let fd = match self.open_dir(rel) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut d = nix::dir::Dir::from_fd(fd.as_raw_fd()).map_err(errno)?;
        // Dir now owns the descriptor.
        std::mem::forget(fd);
        let mut out = Vec::new();
        for ent in d.iter() {
            let ent = ent.map_err(errno)?;
            let name = OsStr::from_bytes(ent.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = matches!(ent.file_type(), Some(nix::dir::Type::Directory));
            out.push((name.to_os_string(), is_dir));
        }
        Ok(out)
    }

    /// Size of a regular file.
    pub fn size(&self, rel: &str) -> io::Result<u64> {
        Ok(self.open_read(rel)?.metadata()?.len())
    }

    /// The path of `rel` for messages.
    pub fn display(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn ensure_regular(f: &File, rel: &str) -> io::Result<libc::stat> {
    let st = nix::sys::stat::fstat(f.as_fd().as_raw_fd()).map_err(errno)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{rel} is not a regular file"),
        ));
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_plain_and_relative() {
        for bad in ["", "/etc/passwd", "a/../b", "./a", "a//b", "a/", ".."] {
            assert!(split(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(split("packs/ab/cd").unwrap(), ("packs/ab", "cd"));
        assert_eq!(split("config").unwrap(), ("", "config"));
    }

    #[test]
    fn symlinks_fifos_and_hard_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"keep me").unwrap();
        std::os::unix::fs::symlink(&secret, d.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("dirlink")).unwrap();
        nix::unistd::mkfifo(&d.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::hard_link(&secret, d.path().join("hard")).unwrap();
        let b = Beneath::new(d.path());
        assert!(b.open_read("link").is_err());
        assert!(b.open_rw("link").is_err());
        assert!(b.open_read("dirlink/secret").is_err());
        assert!(b.create_new("dirlink/new").is_err());
        assert!(b.make_dirs("dirlink/x").is_err());
        assert!(b.rename("hard", "dirlink/moved", false).is_err());
        let t = std::time::Instant::now();
        assert!(b.open_read("fifo").is_err(), "a FIFO is not a file");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "no blocking"
        );
        assert!(b.open_rw("hard").is_err(), "two links: refused");
        b.unlink("link").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"keep me");
        assert!(!outside.path().join("x").exists() && !outside.path().join("new").exists());
    }

    #[test]
    fn noreplace_keeps_the_first_file() {
        let d = tempfile::tempdir().unwrap();
        let b = Beneath::new(d.path());
        b.make_dirs("a/b").unwrap();
        std::fs::write(d.path().join("a/b/x"), b"first").unwrap();
        std::fs::write(d.path().join("y"), b"second").unwrap();
        let e = b.rename("y", "a/b/x", true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(d.path().join("a/b/x")).unwrap(), b"first");
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(d.path().join("a/b"))
            .unwrap()
            .permissions();
        assert_eq!(m.mode() & 0o777, DIR_MODE);
        let f = b.create_new("a/f").unwrap();
        assert_eq!(
            f.metadata().unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
    }
}
