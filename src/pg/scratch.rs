//! The private scratch area of a recovery server (`pg-at`).
//!
//! Why so strict: scratch holds decrypted database pages (the copy-on-write cache, pages
//! copied up by overlayfs, restored WAL) and the mount points of `allow_other` mounts of the
//! repository, which must be reachable by the server's user (it is not root). So scratch is the
//! gate: 0710 root:<server group>, so only root lists it and only that group may traverse it
//! to the data directory, socket and mounts; everything in it is created 0700 / 0600 from the
//! start (no window), and the default name is unpredictable, so nothing planted in advance can
//! stand in for it.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Creates the scratch directory: `given` (created, or an existing empty directory), else a
/// new one with an unpredictable `wayback-pg-at-*` name under `$TMPDIR`; then 0710 root:`gid`.
pub fn create(given: Option<&Path>, gid: u32) -> Result<PathBuf> {
    let dir = match given {
        None => tempfile::Builder::new()
            .prefix("wayback-pg-at-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::io("creating a scratch directory", std::env::temp_dir(), e))?
            .keep(),
        Some(d) => {
            match std::fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let m = std::fs::symlink_metadata(d)
                        .map_err(|e| Error::io("inspecting scratch", d, e))?;
                    if !m.is_dir() {
                        return Err(Error::Invalid(format!(
                            "scratch {} exists and is not a directory",
                            d.display()
                        )));
                    }
                    let mut rd =
                        std::fs::read_dir(d).map_err(|e| Error::io("listing scratch", d, e))?;
                    if rd.next().is_some() {
                        return Err(Error::Invalid(format!(
                            "scratch directory {} is not empty",
                            d.display()
                        )));
                    }
                }
                Err(e) => return Err(Error::io("creating scratch", d, e)),
            }
            d.to_path_buf()
        }
    };
    chown(&dir, 0, Some(gid))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))
        .map_err(|e| Error::io("chmod scratch", &dir, e))?;
    Ok(dir)
}

/// A new directory only its owner may enter (0700 from creation on).
pub fn private_dir(p: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .map_err(|e| Error::io("creating directory", p, e))
}

/// A new file only its owner may read (0600 from creation on; an existing name is refused).
pub fn private_file(p: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| Error::io("creating file", p, e))
}

/// `chown` without following a final symlink.
pub fn chown(p: &Path, uid: u32, gid: Option<u32>) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), gid).map_err(|e| Error::io("chown", p, e))
}

/// Bytes allocated to the files under `p` (what recovery wrote, what the cache holds).
pub fn du(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_private_and_unpredictable() {
        let parent = tempfile::tempdir().unwrap();
        let gid = nix::unistd::getgid().as_raw();
        let given = parent.path().join("s");
        let d = create(Some(&given), gid).unwrap();
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o710);
        // A second use of the same, now non-empty, directory is refused.
        private_dir(&d.join("x")).unwrap();
        assert!(create(Some(&given), gid).is_err());
        // A file at the name is refused.
        std::fs::write(parent.path().join("f"), b"").unwrap();
        assert!(create(Some(&parent.path().join("f")), gid).is_err());
        let f = d.join("file");
        private_file(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        assert!(private_file(&f).is_err(), "an existing file is not reused");
        assert_eq!(
            std::fs::metadata(d.join("x")).unwrap().mode() & 0o777,
            0o700
        );
    }
}
