//! The writer lock: one writer at a time, any number of readers.
//!
//! Why `flock` on a file rather than "create if absent": the kernel drops an flock when its holder
//! dies, so a `kill -9`'d backup never leaves a lock that needs manual cleanup; the owner line
//! written into the file (pid, host, time, operation) is only there to make the refusal readable.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::beneath::Beneath;
use crate::error::{Error, Result};

static OPERATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names what this process does (its subcommand) for the lock's owner line.
pub fn set_operation(name: &str) {
    let _ = OPERATION.set(name.to_string());
}

/// The operation set by [`set_operation`] (`"wayback"` when none was).
pub fn operation() -> &'static str {
    OPERATION.get().map(String::as_str).unwrap_or("wayback")
}

/// A held writer lock; released on drop.
pub struct WriterLock {
    file: File,
}

impl WriterLock {
    /// Takes the lock or says who holds it. `what` names the operation (`backup`, `agent`),
    /// never the command line: that may carry paths or secrets other users should not read.
    pub fn acquire(repo_root: &Path, what: &str) -> Result<WriterLock> {
        let fs = Beneath::new(repo_root);
        fs.make_dirs("locks")
            .map_err(|e| Error::io("create", repo_root.join("locks"), e))?;
        // Opened beneath the root without following symlinks, refused when hard-linked, and
        // (for a root writer in a repository another user owns) created and opened with that
        // user's rights: `ln -s /etc/shadow locks/writer` can no longer make root truncate it.
        let mut file = fs
            .open_rw("locks/writer")
            .map_err(|e| Error::io("open lock", repo_root.join("locks/writer"), e))?;
        // SAFETY: flock on a valid, owned fd has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut owner = String::new();
            let _ = (&mut file).take(4096).read_to_string(&mut owner);
            // The file is the repository owner's to write: show it without control characters.
            let owner: String = owner.trim().chars().filter(|c| !c.is_control()).collect();
            return Err(Error::Locked(if owner.is_empty() {
                "another wayback process".to_string()
            } else {
                owner.to_string()
            }));
        }
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let what: String = what
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || " -_".contains(*c))
            .take(64)
            .collect();
        let line = format!(
            "pid {} on {} since {} ({})\n",
            std::process::id(),
            host,
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
            what
        );
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(line.as_bytes());
        let _ = file.flush();
        Ok(WriterLock { file })
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // The flock is released when the file is closed.
    }
}
