//! Copying the WAL archive: every archived file the destination lacks, pushed there as
//! `wal-push` would (its own packs, a record committed without replacing anything).
//!
//! A name the destination already has is compared by the digests of the two records (no
//! content read): equal is done, different is a conflict that is reported and never
//! overwritten, as `wal-push` itself refuses one.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::wal::{self, Origin, Pushed, WalError};

/// Summary of the WAL part of a run.
#[derive(Serialize, Debug, Default, Clone)]
pub struct WalCopied {
    /// Files copied by this run.
    pub copied: u64,
    /// Files the destination already had with the same content.
    pub present: u64,
    /// Bytes of the copied files (their size, before compression).
    pub bytes: u64,
    /// Files the destination has with other content (left untouched), as messages.
    pub conflicts: Vec<String>,
}

/// Copies the archives of `clusters` (every cluster of the source when empty) from `src` to
/// `dst`; `each(done)` after every file. A conflict does not stop the run (the other files
/// still get their off-site copy); the caller reports [`WalCopied::conflicts`].
pub fn copy_wal(
    src: &Repository,
    dst: &Repository,
    clusters: &[String],
    each: &dyn Fn(u64),
) -> Result<WalCopied, WalError> {
    super::check_distinct(src, dst)?;
    let all = wal::clusters(src.be.as_ref())?;
    let clusters = if clusters.is_empty() {
        all
    } else {
        for c in clusters {
            if !all.contains(c) {
                return Err(
                    Error::NotFound(format!("no WAL archive '{c}' in {}", src.location)).into(),
                );
            }
        }
        clusters.to_vec()
    };
    let staging = staging_file()?;
    let mut out = WalCopied::default();
    for cluster in &clusters {
        let have: HashSet<String> = wal::list(dst.be.as_ref(), cluster)?.into_iter().collect();
        for name in wal::list(src.be.as_ref(), cluster)? {
            let rec = wal::read_record(src, cluster, &name)?;
            if have.contains(&name) {
                let old = wal::read_record(dst, cluster, &name)?;
                if old.digest == rec.digest {
                    out.present += 1;
                } else {
                    out.conflicts
                        .push(conflict(cluster, &name, &old.digest, &rec.digest));
                }
                each(out.copied + out.present);
                continue;
            }
            staging
                .set_len(0)
                .map_err(|e| Error::io("truncate", "WAL staging memfd", e))?;
            let mut at = 0u64;
            wal::reassemble(src, &rec, &mut |data| {
                staging
                    .write_all_at(data, at)
                    .map_err(|e| Error::io("write", "WAL staging memfd", e))?;
                at += data.len() as u64;
                Ok(())
            })?;
            let origin = Origin {
                owner: rec.owner,
                pushed: rec.pushed,
            };
            let what = format!("{cluster}/{name} of {}", src.location);
            match wal::push_with_origin(
                dst,
                cluster,
                &name,
                &staging,
                Path::new(&what),
                Some(origin),
            ) {
                Ok(Pushed::Stored) => {
                    out.copied += 1;
                    out.bytes += rec.size;
                }
                // Another writer archived it meanwhile, with the same bytes.
                Ok(Pushed::AlreadyThere) => out.present += 1,
                Err(WalError::Conflict {
                    cluster,
                    name,
                    archived,
                    new,
                }) => out
                    .conflicts
                    .push(conflict(&cluster, &name, &archived, &new)),
                Err(e) => return Err(e),
            }
            each(out.copied + out.present);
        }
    }
    Ok(out)
}

fn conflict(cluster: &str, name: &str, archived: &str, new: &str) -> String {
    format!(
        "{cluster}/{name} is in the destination with other content (destination digest \
         {archived}, source digest {new}); left untouched"
    )
}

/// An anonymous in-memory file the source copy of one WAL file is reassembled in before it is
/// pushed: `wal-push` reads a file, and this one has no name anyone could plant or read.
fn staging_file() -> Result<File> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let fd = memfd_create(c"wayback-copy-wal", MemFdCreateFlag::MFD_CLOEXEC)
        .map_err(|e| Error::io("memfd_create", "WAL staging", e.into()))?;
    Ok(File::from(fd))
}
