//! Mounting, serving and unmounting.
//!
//! Why this is more than a call to `fuser::mount2`: a FUSE mount outlives mistakes. A server
//! killed with SIGKILL leaves a *stale* mount behind ("Transport endpoint is not connected")
//! that breaks every later `stat` of the path, and a plain `umount` of a mount that a shell is
//! `cd`'d into fails with EBUSY. So mounting checks the mountpoint first and says what to do,
//! SIGINT/SIGTERM unmount cleanly (falling back to a lazy detach when busy), and [`unmount`]
//! works on stale mounts too.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{MountOption, Session};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use tracing::{debug, info, warn};

use crate::driver::{Driver, DEFAULT_WORKERS};
use crate::view::View;

/// How long [`MountHandle::unmount`] waits for the session to wind down after unmounting.
/// Only a lazily detached mount that is still in use takes longer.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(10);

/// How a mount is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Let users other than the mounting one access the mount (e.g. `postgres` reading a
    /// mount made by root). Non-root mounters need `user_allow_other` in /etc/fuse.conf.
    pub allow_other: bool,
    /// Source name shown by `mount` and `df` (commas are replaced, they separate options).
    pub fsname: String,
    /// Threads serving requests; 0 means the default (8).
    pub workers: usize,
    /// Have `fusermount3` unmount the filesystem when this process dies, even by SIGKILL, so
    /// no stale mount is left. Implies `allow_other` at the kernel level (fuser then enforces
    /// owner-only access itself unless `allow_other` is also set).
    pub auto_unmount: bool,
    /// Largest read request the kernel may send, in bytes (the `max_read` mount option);
    /// 0 leaves the kernel default.
    pub max_read: u32,
    /// Mount read-write (for a [`crate::View`] that is [`crate::View::writable`]); default
    /// read-only, which the kernel enforces before any request reaches the view.
    pub writable: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            fsname: "wayback".to_owned(),
            workers: DEFAULT_WORKERS,
            auto_unmount: false,
            max_read: 1024 * 1024,
            writable: false,
        }
    }
}

impl MountOptions {
    /// The fuser mount options these settings translate to.
    fn fuse_options(&self) -> Vec<MountOption> {
        let fsname = if self.fsname.is_empty() {
            "wayback".to_owned()
        } else {
            self.fsname.replace([',', '\\', ' ', '\t', '\n'], "_")
        };
        let mut o = vec![
            if self.writable {
                MountOption::RW
            } else {
                MountOption::RO
            },
            MountOption::FSName(fsname),
            MountOption::Subtype("wayback".to_owned()),
            MountOption::DefaultPermissions,
            // Backups hold setuid binaries and device nodes; neither may take effect here.
            MountOption::NoSuid,
            MountOption::NoDev,
        ];
        if self.allow_other {
            o.push(MountOption::AllowOther);
        }
        if self.auto_unmount {
            o.push(MountOption::AutoUnmount);
        }
        if self.max_read > 0 {
            o.push(MountOption::CUSTOM(format!("max_read={}", self.max_read)));
        }
        o
    }
}

/// Why mounting or unmounting failed. Messages are meant to be shown to a user as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// A FUSE mount whose server died is still attached at the path.
    #[error(
        "{mp}: stale FUSE mount (Transport endpoint is not connected); the process that served \
         it is gone. Run `wayback umount {mp}` or `fusermount3 -u {mp}`, then mount again",
        mp = .0.display()
    )]
    Stale(PathBuf),
    /// The mountpoint does not exist.
    #[error("mountpoint {} does not exist (create it with `mkdir -p`)", .0.display())]
    NotFound(PathBuf),
    /// The mountpoint is not a directory.
    #[error("mountpoint {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A FUSE filesystem is already mounted at the path.
    #[error(
        "a FUSE filesystem is already mounted at {mp}; unmount it first with `wayback umount {mp}`",
        mp = .0.display()
    )]
    AlreadyMounted(PathBuf),
    /// Nothing FUSE is mounted at the path, so there is nothing to unmount.
    #[error("no FUSE filesystem is mounted at {}", .0.display())]
    NotMounted(PathBuf),
    /// The kernel or fusermount3 refused the mount.
    #[error("cannot mount at {}: {source}{}", mountpoint.display(), mount_hint(source))]
    Mount {
        /// Where the mount was attempted.
        mountpoint: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Unmounting failed.
    #[error("cannot unmount {}: {reason}", mountpoint.display())]
    Unmount {
        /// The mount that stays.
        mountpoint: PathBuf,
        /// What the last attempt reported.
        reason: String,
    },
    /// The request loop ended with an error (the mount is gone).
    #[error("FUSE session at {} failed: {source}", mountpoint.display())]
    Session {
        /// The mount that was served.
        mountpoint: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Any other system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What failed.
        source: io::Error,
    },
}

fn mount_hint(e: &io::Error) -> &'static str {
    let msg = e.to_string();
    if msg.contains("user_allow_other") {
        " (add `user_allow_other` to /etc/fuse.conf, or mount as root)"
    } else if e.kind() == io::ErrorKind::PermissionDenied {
        " (mounting needs root, or fusermount3 and write access to the mountpoint)"
    } else {
        ""
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
    let context = context.into();
    move |source| MountError::Io { context, source }
}

/// Whether `path` is a FUSE mount whose server is gone (stat fails with ENOTCONN).
pub fn is_stale_mount(path: &Path) -> bool {
    matches!(
        std::fs::symlink_metadata(path),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)
    )
}

/// Whether a FUSE filesystem (live or stale) is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let path = absolute_no_follow(path);
    fuse_mounts().iter().any(|m| m.path == path)
}

/// Unmounts the FUSE filesystem at `mountpoint`, whether its server is alive, busy or dead.
///
/// Tries `fusermount3 -u` (works for non-root owners), then a lazy detach (`umount2` with
/// `MNT_DETACH`, or `fusermount3 -u -z`): the mount disappears from the namespace at once and
/// the kernel finishes the job when the last open file on it is closed.
pub fn unmount(mountpoint: &Path) -> Result<(), MountError> {
    let mp = absolute_no_follow(mountpoint);
    if !fuse_mounts().iter().any(|m| m.path == mp) {
        return Err(MountError::NotMounted(mp));
    }
    let first = match fusermount(&mp, false) {
        Ok(()) => return Ok(()),
        Err(reason) => reason,
    };
    debug!(mountpoint = %mp.display(), "fusermount3 -u failed ({first}); detaching lazily");
    match umount2(&mp, MntFlags::MNT_DETACH) {
        Ok(()) => {
            info!(mountpoint = %mp.display(), "mount detached lazily");
            return Ok(());
        }
        Err(e) => debug!(mountpoint = %mp.display(), "umount2(MNT_DETACH) failed: {e}"),
    }
    match fusermount(&mp, true) {
        Ok(()) => Ok(()),
        Err(reason) => Err(MountError::Unmount {
            mountpoint: mp,
            reason: format!("{first}; lazy unmount: {reason}"),
        }),
    }
}

/// Runs `fusermount3 -u [-z] -- mp`, returning its complaint on failure.
fn fusermount(mp: &Path, lazy: bool) -> Result<(), String> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    cmd.arg("--").arg(mp);
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(if msg.is_empty() {
                format!("fusermount3 exited with {}", out.status)
            } else {
                msg
            })
        }
        Err(e) => Err(format!("cannot run fusermount3: {e}")),
    }
}

/// Detaches a mount this process serves, as a signal or [`MountHandle::unmount`] asks:
/// a clean unmount if possible, a lazy detach if something still uses it.
fn detach(mp: &Path) -> Result<(), MountError> {
    match umount2(mp, MntFlags::empty()) {
        Ok(()) => Ok(()),
        // Already gone (unmounted from outside in the meantime).
        Err(NixErrno::EINVAL) | Err(NixErrno::ENOENT) => Ok(()),
        Err(NixErrno::EBUSY) => {
            warn!(
                mountpoint = %mp.display(),
                "mount is busy; detaching lazily (it stays served until its last user leaves)"
            );
            umount2(mp, MntFlags::MNT_DETACH).map_err(|e| MountError::Unmount {
                mountpoint: mp.to_owned(),
                reason: e.to_string(),
            })
        }
        // Not root: only the setuid helper may unmount.
        Err(NixErrno::EPERM) => fusermount(mp, false)
            .or_else(|_| fusermount(mp, true))
            .map_err(|reason| MountError::Unmount {
                mountpoint: mp.to_owned(),
                reason,
            }),
        Err(e) => Err(MountError::Unmount {
            mountpoint: mp.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Checks that `mountpoint` can take a mount and returns its canonical path.
fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf, MountError> {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(MountError::Stale(absolute_no_follow(mountpoint)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::NotFound(mountpoint.to_owned()))
        }
        Err(e) => {
            return Err(MountError::Io {
                context: format!("cannot stat mountpoint {}", mountpoint.display()),
                source: e,
            })
        }
        Ok(m) if !m.is_dir() => return Err(MountError::NotADirectory(mountpoint.to_owned())),
        Ok(_) => {}
    }
    let mp = mountpoint.canonicalize().map_err(io_err(format!(
        "cannot resolve mountpoint {}",
        mountpoint.display()
    )))?;
    if fuse_mounts().iter().any(|m| m.path == mp) {
        return Err(MountError::AlreadyMounted(mp));
    }
    Ok(mp)
}

/// Mounts and returns the session, not yet serving.
fn new_session<V: View>(
    view: V,
    mp: &Path,
    opts: &MountOptions,
) -> Result<Session<Driver<V>>, MountError> {
    let driver = Driver::new(view, opts.workers);
    let options = opts.fuse_options();
    debug!(mountpoint = %mp.display(), ?options, "mounting");
    Session::new(driver, mp, &options).map_err(|source| MountError::Mount {
        mountpoint: mp.to_owned(),
        source,
    })
}

/// Spawns the request loop of `session` on its own thread; `on_exit` runs after the loop ends
/// and the session (with its worker pool) has been dropped.
fn serve<V: View>(
    session: Session<Driver<V>>,
    mp: &Path,
    on_exit: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<io::Result<()>>, MountError> {
    std::thread::Builder::new()
        .name("wayback-fuse".to_owned())
        .spawn(move || {
            let mut session = session;
            let res = session.run();
            drop(session);
            on_exit();
            res
        })
        .map_err(|source| {
            // The session moved into the failed closure and was dropped, which unmounted it.
            MountError::Io {
                context: format!("cannot start FUSE session thread for {}", mp.display()),
                source,
            }
        })
}

fn join_session(mp: &Path, thread: JoinHandle<io::Result<()>>) -> Result<(), MountError> {
    match thread.join() {
        Ok(Ok(())) => {
            info!(mountpoint = %mp.display(), "unmounted");
            Ok(())
        }
        // The kernel may end a detached mount's connection as aborted rather than gone once
        // its last user leaves (seen in CI after a lazy unmount): the unmount we asked for.
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            info!(mountpoint = %mp.display(), "unmounted (connection ended by the kernel)");
            Ok(())
        }
        Ok(Err(source)) => Err(MountError::Session {
            mountpoint: mp.to_owned(),
            source,
        }),
        Err(_) => Err(MountError::Session {
            mountpoint: mp.to_owned(),
            source: io::Error::other("session thread panicked"),
        }),
    }
}

/// Mounts `view` at `mountpoint` and serves it until SIGINT/SIGTERM (then unmounts) or until
/// it is unmounted from outside (`wayback umount`, `fusermount3 -u`), then returns.
///
/// A first signal unmounts, lazily if the mount is busy (open files keep working until
/// closed, and this keeps serving them); a second signal aborts the connection and returns at
/// once. Signal handlers are installed only while this runs and restored afterwards.
pub fn mount_foreground<V: View>(
    view: V,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<(), MountError> {
    let mp = check_mountpoint(mountpoint)?;
    let mut events = SignalEvents::register()?;
    let session = new_session(view, &mp, opts)?;
    let conn = fuse_mounts()
        .into_iter()
        .find(|m| m.path == mp)
        .map(|m| m.minor);
    let notify = events.notifier();
    let thread = serve(session, &mp, move || notify.send(EXIT_EVENT))?;
    info!(mountpoint = %mp.display(), "mounted; serving until unmounted or interrupted");

    let mut signals = 0;
    loop {
        let event = events.wait()?;
        if event == EXIT_EVENT {
            break;
        }
        signals += 1;
        if signals == 1 {
            info!(mountpoint = %mp.display(), signal = event, "unmounting on signal");
            if let Err(e) = detach(&mp) {
                warn!("{e}");
            }
        } else if conn.is_some_and(abort_connection) {
            warn!(mountpoint = %mp.display(), "second signal: connection aborted");
        } else {
            warn!(
                mountpoint = %mp.display(),
                "second signal: exiting while the detached mount is still in use"
            );
            return Ok(());
        }
    }
    join_session(&mp, thread)
}

/// Aborts a FUSE connection through fusectl, failing every pending and future request.
fn abort_connection(minor: u32) -> bool {
    let path = format!("/sys/fs/fuse/connections/{minor}/abort");
    std::fs::write(&path, b"1").is_ok()
}

/// Mounts `view` at `mountpoint` and serves it from background threads until the returned
/// handle is dropped or [`MountHandle::unmount`] is called.
pub fn mount_background<V: View>(
    view: V,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountHandle, MountError> {
    let mp = check_mountpoint(mountpoint)?;
    let session = new_session(view, &mp, opts)?;
    let thread = serve(session, &mp, || {})?;
    info!(mountpoint = %mp.display(), "mounted in background");
    Ok(MountHandle {
        mountpoint: mp,
        thread: Some(thread),
    })
}

/// A mount served by background threads. Dropping it unmounts.
#[derive(Debug)]
pub struct MountHandle {
    mountpoint: PathBuf,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl MountHandle {
    /// The canonical path the filesystem is mounted at.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session still serves requests (false once unmounted from outside).
    pub fn is_serving(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Blocks until the filesystem is unmounted by someone else (`wayback umount`,
    /// `fusermount3 -u`).
    ///
    /// No signal handling happens here: a SIGTERM kills the process and leaves a stale mount.
    /// A long-running server should use [`mount_foreground`] (or set
    /// [`MountOptions::auto_unmount`]).
    pub fn wait(mut self) -> Result<(), MountError> {
        match self.thread.take() {
            Some(t) => join_session(&self.mountpoint, t),
            None => Ok(()),
        }
    }

    /// Unmounts (lazily if busy) and waits for the session to end.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), MountError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if !thread.is_finished() {
            detach(&self.mountpoint)?;
        }
        let deadline = Instant::now() + SESSION_EXIT_WAIT;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                warn!(
                    mountpoint = %self.mountpoint.display(),
                    "mount detached but still in use; leaving its session running"
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        join_session(&self.mountpoint, thread)
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!("{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc/self/mountinfo

/// One FUSE mount in this process's mount namespace.
struct FuseMount {
    path: PathBuf,
    minor: u32,
}

/// All FUSE mounts (type `fuse` or `fuse.*`), in mountinfo order.
fn fuse_mounts() -> Vec<FuseMount> {
    let Ok(text) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.split(|&b| b == b'\n')
        .filter_map(parse_mountinfo_line)
        .filter(|(_, fstype, _)| fstype == b"fuse" || fstype.starts_with(b"fuse."))
        .map(|(path, _, minor)| FuseMount { path, minor })
        .collect()
}

/// Mount point, filesystem type and device minor of one mountinfo line.
fn parse_mountinfo_line(line: &[u8]) -> Option<(PathBuf, Vec<u8>, u32)> {
    let sep = line.windows(3).position(|w| w == b" - ")?;
    let (left, right) = (&line[..sep], &line[sep + 3..]);
    let mut fields = left.split(|&b| b == b' ');
    let dev = fields.nth(2)?;
    let mountpoint = fields.nth(1)?;
    let fstype = right.split(|&b| b == b' ').next()?;
    let minor = std::str::from_utf8(dev.split(|&b| b == b':').nth(1)?)
        .ok()?
        .parse()
        .ok()?;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(mountpoint)));
    Some((path, fstype.to_vec(), minor))
}

/// Undoes mountinfo's `\ooo` escaping of spaces, tabs, newlines and backslashes.
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let digits = s
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (s[i], digits) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// An absolute form of `path` that does not touch the last component, so it works on stale
/// mounts (where resolving the path itself fails with ENOTCONN).
fn absolute_no_follow(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

// ---------------------------------------------------------------------------------------------
// Signals, via a self-pipe: the handler only writes the signal number to a pipe, and the
// foreground loop reads it. This works whatever signal masks other threads of the process
// (a tokio runtime, the repository's workers) have, unlike sigwait on a blocked mask.

/// Byte sent when the session ends (no signal has number 0).
const EXIT_EVENT: u8 = 0;

/// Write ends of the pipes of all concurrent foreground mounts, -1 for a free slot.
static SIGNAL_FDS: [AtomicI32; 16] = [const { AtomicI32::new(-1) }; 16];

/// Handlers replaced while at least one foreground mount runs.
struct Installed {
    users: usize,
    previous: Vec<(Signal, SigAction)>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    users: 0,
    previous: Vec::new(),
});

const SIGNALS: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe calls here: atomics and write(2). errno is preserved for the
    // interrupted code.
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved = unsafe { *libc::__errno_location() };
    let byte = sig as u8;
    for slot in &SIGNAL_FDS {
        let fd = slot.load(Ordering::Acquire);
        if fd >= 0 {
            // SAFETY: writing one byte from a valid stack address; a failed write (full pipe,
            // fd just closed) only loses a duplicate notification.
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// One foreground mount's subscription to SIGINT/SIGTERM and to its session's end.
struct SignalEvents {
    slot: usize,
    read: File,
    write: Arc<OwnedFd>,
}

/// Sends events to a [`SignalEvents`] from another thread.
struct Notifier(Arc<OwnedFd>);

impl Notifier {
    fn send(&self, byte: u8) {
        if let Err(e) = nix::unistd::write(self.0.as_fd(), &[byte]) {
            warn!("cannot notify the foreground mount loop: {e}");
        }
    }
}

impl SignalEvents {
    fn register() -> Result<SignalEvents, MountError> {
        let nix_err = |context: &str| {
            let context = context.to_owned();
            move |e: NixErrno| MountError::Io {
                context,
                source: io::Error::from(e),
            }
        };
        let (read, write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err("cannot create signal pipe"))?;
        // The handler must never block.
        fcntl(write.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(nix_err("cannot configure signal pipe"))?;

        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let slot = SIGNAL_FDS
            .iter()
            .position(|s| {
                s.compare_exchange(-1, write.as_raw_fd(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .ok_or_else(|| MountError::Io {
                context: "too many foreground mounts in one process".to_owned(),
                source: io::Error::other("no free signal slot"),
            })?;
        if installed.users == 0 {
            let action = SigAction::new(
                SigHandler::Handler(on_signal),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            for sig in SIGNALS {
                // SAFETY: the handler only performs async-signal-safe operations.
                match unsafe { sigaction(sig, &action) } {
                    Ok(prev) => installed.previous.push((sig, prev)),
                    Err(e) => warn!("cannot install {sig} handler: {e}"),
                }
            }
        }
        installed.users += 1;
        Ok(SignalEvents {
            slot,
            read: File::from(read),
            write: Arc::new(write),
        })
    }

    fn notifier(&self) -> Notifier {
        Notifier(Arc::clone(&self.write))
    }

    /// Blocks until a signal arrives (its number) or the session ends ([`EXIT_EVENT`]).
    fn wait(&mut self) -> Result<u8, MountError> {
        let mut byte = [0u8];
        self.read
            .read_exact(&mut byte)
            .map_err(io_err("cannot read signal pipe"))?;
        Ok(byte[0])
    }
}

impl Drop for SignalEvents {
    fn drop(&mut self) {
        SIGNAL_FDS[self.slot].store(-1, Ordering::Release);
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        installed.users = installed.users.saturating_sub(1);
        if installed.users == 0 {
            for (sig, prev) in installed.previous.drain(..) {
                // SAFETY: restoring the handler that was in place before.
                if let Err(e) = unsafe { sigaction(sig, &prev) } {
                    warn!("cannot restore {sig} handler: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let line = b"36 35 0:52 / /tmp/a\\040b rw,nosuid,nodev,relatime - fuse.wayback wayback ro,user_id=0";
        let (path, fstype, minor) = parse_mountinfo_line(line).unwrap();
        assert_eq!(path, PathBuf::from("/tmp/a b"));
        assert_eq!(fstype, b"fuse.wayback");
        assert_eq!(minor, 52);
        assert!(parse_mountinfo_line(b"garbage").is_none());
    }

    #[test]
    fn options_are_read_only_and_sanitised() {
        let o = MountOptions {
            fsname: "a,b".into(),
            allow_other: true,
            ..MountOptions::default()
        }
        .fuse_options();
        assert!(o.contains(&MountOption::RO));
        assert!(o.contains(&MountOption::AllowOther));
        assert!(o.contains(&MountOption::FSName("a_b".into())));
        assert!(o.contains(&MountOption::CUSTOM("max_read=1048576".into())));
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let msg = MountError::Stale(PathBuf::from("/mnt/wb")).to_string();
        assert!(msg.contains("wayback umount /mnt/wb"), "{msg}");
        assert!(msg.contains("fusermount3 -u /mnt/wb"), "{msg}");
        assert!(msg.contains("Transport endpoint is not connected"), "{msg}");
    }
}
