//! The writer lock: one writer at a time, any number of readers.
//!
//! Why `flock` on a file rather than "create if absent": the kernel drops an flock when its holder
//! dies, so a `kill -9`'d backup never leaves a lock that needs manual cleanup; the owner line
//! written into the file (pid, host, time, command) is only there to make the refusal readable.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// A held writer lock; released on drop.
pub struct WriterLock {
    file: File,
}

impl WriterLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(repo_root: &Path, what: &str) -> Result<WriterLock> {
        let dir = repo_root.join("locks");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = dir.join("writer");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock", &path, e))?;
        // A root writer in a repository another user owns leaves the lock file theirs.
        if let Some((u, g)) = super::backend::foreign_owner(repo_root) {
            let _ = std::os::unix::fs::chown(&dir, Some(u), Some(g));
            let _ = std::os::unix::fs::chown(&path, Some(u), Some(g));
        }
        // SAFETY: flock on a valid, owned fd has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
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
