//! The layers of a recovery server's data directory: overlayfs over the mounted base backup,
//! with big relation files replaced by block-level copy-on-write files.
//!
//! Why: PostgreSQL opens every relation file read-write, even to read it, and overlayfs copies a
//! file up whole on the first such open, so pg-at's start time and scratch grew with table
//! sizes, like a restore. Files of [`COW_MIN_BYTES`] or more under `base/` and `global/` get a
//! symlink in the upper layer to a file of a writable [`crate::fsview::cow::CowView`] mount
//! instead, which stores only the 8 KiB pages written.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::TreeId;
use crate::pg::env::command;
use crate::pg::scratch::chown;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};

/// Files at least this big get a block-level copy-on-write file instead of overlayfs copy-up.
pub const COW_MIN_BYTES: u64 = 1 << 20;

/// Finds the snapshot's files of at least [`COW_MIN_BYTES`] under `base/` and `global/`, and
/// puts a symlink to copy-on-write file `cow/<i>` at each one's path in the overlay's upper
/// layer (creating the directories on the way with the snapshot's owner and mode). Returns the
/// nodes in the order of their numbers.
pub fn cow_files(repo: &Repository, root: &TreeId, upper: &Path, cow: &Path) -> Result<Vec<Node>> {
    let mut dirs: std::collections::HashMap<Vec<u8>, Node> = Default::default();
    let mut files = Vec::new();
    crate::tree::reader::walk(repo, root, b"", &mut |path, n| {
        let relation_dir = path.starts_with(b"base/") || path.starts_with(b"global/");
        match n.kind {
            NodeKind::Dir => {
                dirs.insert(path.to_vec(), n.clone());
            }
            NodeKind::File if relation_dir && n.size >= COW_MIN_BYTES && n.link_group.is_none() => {
                files.push((path.to_vec(), n.clone()));
            }
            _ => {}
        }
        Ok(())
    })?;
    let mut made = std::collections::HashSet::new();
    for (i, (path, n)) in files.iter().enumerate() {
        let rel = plain_relative(path)?;
        let mut cur = PathBuf::new();
        for comp in rel.parent().into_iter().flat_map(|p| p.components()) {
            cur.push(comp);
            if !made.insert(cur.clone()) {
                continue;
            }
            let dir = upper.join(&cur);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating directory", &dir, e))?;
            if let Some(d) = dirs.get(cur.as_os_str().as_bytes()) {
                chown(&dir, d.uid, Some(d.gid))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(d.mode & 0o7777))
                    .map_err(|e| Error::io("chmod", &dir, e))?;
            }
        }
        let link = upper.join(rel);
        std::os::unix::fs::symlink(cow.join(i.to_string()), &link)
            .map_err(|e| Error::io("symlink", &link, e))?;
        chown(&link, n.uid, Some(n.gid))?;
    }
    Ok(files.into_iter().map(|(_, n)| n).collect())
}

/// `path` (from a snapshot's trees) as a relative path of plain names: root joins it to the
/// upper layer, so an empty, `.` or `..` component from a damaged or hostile tree must never
/// reach the file system (it would create directories and symlinks outside scratch).
fn plain_relative(path: &[u8]) -> Result<&Path> {
    if path
        .split(|b| *b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return Err(Error::Corrupt(format!(
            "snapshot path {:?} is not a relative path of plain names",
            String::from_utf8_lossy(path)
        )));
    }
    Ok(Path::new(std::ffi::OsStr::from_bytes(path)))
}

/// Mounts overlayfs on `data`: `lower` read-only below, `upper` (with `work`) taking writes.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, data: &Path) -> Result<()> {
    let o = command("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            // Snapshot time names contain ':', overlayfs's lowerdir separator: escape it.
            lower.display().to_string().replace(':', "\\:"),
            upper.display(),
            work.display()
        ))
        .arg(data)
        .output()
        .map_err(|e| Error::io("running mount", data, e))?;
    if !o.status.success() {
        return Err(Error::Command(format!(
            "cannot mount an overlay on {} (need root and overlayfs): {}",
            data.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// Unmounts the overlay on `data` (best effort: cleanup must go on). A server's last processes
/// can hold it for a moment after `pg_ctl stop` returns (seen under load: EBUSY, then scratch
/// could not be removed), so it retries for a few seconds, then detaches it lazily so that
/// removing scratch never walks through a live overlay.
pub fn unmount_overlay(data: &Path) {
    for _ in 0..50 {
        let ok = command("umount")
            .arg(data)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tracing::warn!(mountpoint = %data.display(), "overlay still busy; detaching it lazily");
    let _ = command("umount").arg("-l").arg(data).output();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_reach_the_upper_layer() {
        assert_eq!(
            plain_relative(b"base/16384/2619").unwrap(),
            Path::new("base/16384/2619")
        );
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"base/../../etc",
            b"..",
            b"base/./x",
            b"base//x",
            b"base/",
        ] {
            assert!(
                plain_relative(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
