//! Unix sockets that have their final mode and owner from the instant they exist.
//!
//! Why: a root agent binds its sockets in the repository directory, which the repository's
//! owner (often `postgres`) controls. Binding and then `chown`/`chmod` by path leaves a window
//! in which the socket has the umask's mode, and in which the owner can swap the path for a
//! symlink that the `chown` then follows (`ln -s /etc/shadow wal-push.sock` made the owner
//! root). So nothing here touches the socket by path after `bind`:
//!
//! - the mode is set on the socket descriptor before `bind` (Linux creates the filesystem
//!   node with the socket inode's mode, less the umask, which only removes bits);
//! - the owner is the caller's filesystem uid at `bind`: a root agent binds the socket of
//!   another owner with that owner's fsuid/fsgid on the binding thread only (`setfsuid` is
//!   per thread), so the owner gets exactly what they could have made themselves;
//! - the directory is opened once (not following a symlink) and everything else is relative
//!   to that descriptor (`/proc/self/fd/N/name` for `bind`), so a renamed or swapped parent
//!   does not redirect us;
//! - a stale socket is removed only if it is a socket owned by the expected uid: a symlink,
//!   file or directory planted at the path is an error, never followed or deleted.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::error::{Error, Result};

/// Who owns a socket: uid and gid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// This process's effective uid and gid.
    pub fn current() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

fn last_os(context: &'static str, path: &Path) -> Error {
    Error::io(context, path, std::io::Error::last_os_error())
}

fn split(path: &Path) -> Result<(&Path, CString)> {
    let name = path.file_name().ok_or_else(|| {
        Error::Invalid(format!("socket path {} has no file name", path.display()))
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = CString::new(name.as_bytes())
        .map_err(|_| Error::Invalid(format!("socket path {} contains NUL", path.display())))?;
    Ok((parent, name))
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("path {} contains NUL", dir.display())))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(last_os("open socket directory", dir));
    }
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `lstat` of `name` in `dir`: `None` when nothing is there.
fn stat_at(dir: &OwnedFd, name: &CString, path: &Path) -> Result<Option<libc::stat>> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name and a writable `stat`.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(Error::io("stat", path, e))
    }
}

/// Removes a socket `uid` left at `name`; refuses anything else that is there.
fn remove_stale(dir: &OwnedFd, name: &CString, path: &Path, uid: u32) -> Result<()> {
    let Some(st) = stat_at(dir, name, path)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_uid != uid {
        return Err(Error::Invalid(format!(
            "refusing to replace {}: it is not a socket owned by uid {uid} (mode {:o}, uid {}); \
             remove it if it is yours",
            path.display(),
            st.st_mode,
            st.st_uid
        )));
    }
    // SAFETY: valid descriptor and NUL-terminated name; unlinkat never follows the name.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        return Err(last_os("remove stale socket", path));
    }
    Ok(())
}

/// Removes the socket at `path` if it is still a socket owned by `uid` (shutdown): whatever
/// else was put there since is left alone.
pub fn remove_if_ours(path: &Path, uid: u32) {
    let Ok((parent, name)) = split(path) else {
        return;
    };
    if let Ok(dir) = open_dir(parent) {
        let _ = remove_stale(&dir, &name, path, uid);
    }
}

/// Runs `f` with the filesystem uid/gid of `owner` on this thread (root only), restoring them
/// afterwards even if `f` fails.
fn as_fs_owner<T>(owner: Owner, path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    let me = Owner::current();
    if owner == me {
        return Ok(f());
    }
    if me.uid != 0 {
        return Err(Error::Invalid(format!(
            "cannot create {} for uid {}: only root may create sockets for another user",
            path.display(),
            owner.uid
        )));
    }
    let out = crate::repo::beneath::as_fs_user(owner.uid, owner.gid, f);
    out.ok_or_else(|| {
        Error::Invalid(format!(
            "cannot take uid {} to create {}",
            owner.uid,
            path.display()
        ))
    })
}

/// Binds a listening Unix stream socket at `path` that has mode `mode` and belongs to `owner`
/// from the moment it appears (see the module documentation). A stale socket of `owner` is
/// replaced; anything else at `path` is an error.
pub fn bind(path: &Path, mode: u32, owner: Owner) -> Result<UnixListener> {
    let (parent, name) = split(path)?;
    let dir = open_dir(parent)?;
    remove_stale(&dir, &name, path, owner.uid)?;
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_os("create socket", path));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: valid descriptor. On Linux bind(2) creates the node with this mode (& ~umask).
    if unsafe { libc::fchmod(sock.as_raw_fd(), mode) } != 0 {
        return Err(last_os("set the mode of socket", path));
    }
    // Bind through the directory descriptor, so the directory cannot be swapped under us;
    // fall back to the path itself when the /proc form is too long for sun_path.
    let via_dir = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    let mut target = via_dir;
    target.extend_from_slice(name.as_bytes());
    // SAFETY: an all-zero sockaddr_un is valid (family set below).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if target.len() >= addr.sun_path.len() || !Path::new("/proc/self/fd").exists() {
        target = path.as_os_str().as_bytes().to_vec();
    }
    if target.len() >= addr.sun_path.len() {
        return Err(Error::Invalid(format!(
            "socket path {} is too long",
            path.display()
        )));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(&target) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + target.len() + 1) as libc::socklen_t;
    let bound = as_fs_owner(owner, path, || {
        // SAFETY: valid descriptor and a sockaddr_un of `len` initialised bytes.
        let r = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                len,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    })?;
    bound.map_err(|e| Error::io("bind", path, e))?;
    // SAFETY: valid, bound descriptor.
    if unsafe { libc::listen(sock.as_raw_fd(), 128) } != 0 {
        return Err(last_os("listen on", path));
    }
    Ok(UnixListener::from(sock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[test]
    fn created_with_its_mode_and_refuses_what_is_not_a_stale_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sock");
        let me = Owner::current();
        // A permissive umask does not matter: the mode is the socket's own.
        let old = unsafe { libc::umask(0) };
        let l = bind(&p, 0o600, me);
        unsafe { libc::umask(old) };
        drop(l.unwrap());
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!(m.uid(), me.uid);
        // A stale socket of ours is replaced.
        drop(bind(&p, 0o600, me).unwrap());
        // A symlink is neither followed nor removed.
        std::fs::remove_file(&p).unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "x").unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = bind(&p, 0o600, me).unwrap_err().to_string();
        assert!(e.contains("refusing to replace"), "{e}");
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
        remove_if_ours(&p, me.uid);
        assert!(std::fs::symlink_metadata(&p).is_ok());
    }
}
