//! The local index: a RocksDB cache of where every blob lives.
//!
//! Why a cache and not the truth: everything here can be recomputed from pack headers
//! (`wayback index rebuild`), so losing it loses time, never data. Entries for a pack are written
//! only after the pack and its directory are fsynced.
//!
//! Column families and their byte layout (all little-endian):
//! ```text
//! blobs: key = kind: u8 | blob id: [u8; 32]
//!        val = pack id: [u8; 32] | offset: u32 | length: u32 | raw_length: u32
//! packs: key = pack id: [u8; 32]
//!        val = size: u64 | blob count: u32
//! meta:  key = b"version"  val = u32 (INDEX_VERSION)
//! ```
//! One process writes (the primary, under the repository writer lock); readers (mount, ls, diff)
//! open a RocksDB secondary instance and catch up with the primary when they miss, so they see
//! a running backup's new blobs without reopening.

pub mod rebuild;

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, PackId};
use crate::pack::BlobEntry;
use crate::repo::backend::Backend;

/// Index schema version (bump when the layout above changes; old indexes are rebuilt).
pub const INDEX_VERSION: u32 = 1;

/// Memtable size per column family (see `cfs`).
const MEMTABLE_BYTES: usize = 8 << 20;

const CF_BLOBS: &str = "blobs";
const CF_PACKS: &str = "packs";
const CF_META: &str = "meta";

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack holding it.
    pub pack: PackId,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// An open index, as writer (primary) or reader (secondary).
///
/// A reader opens RocksDB on first use, not at `open_reader`: commands that never look a blob
/// up (`wal-push` writes its own packs, `snapshots`, `wal status`) skip the ~20 ms open.
pub struct Index {
    db: std::sync::OnceLock<std::result::Result<DB, String>>,
    path: PathBuf,
    /// A reader's private RocksDB secondary directory (0700, removed on drop).
    secondary: Option<tempfile::TempDir>,
    /// Told before every synced write (see [`Backend::sync_point`]).
    barrier: std::sync::OnceLock<std::sync::Arc<dyn Backend>>,
}

/// Largest sealed or plain blob length an index entry may claim (a chunk is at most 16 MiB; a
/// tree of a huge directory can be large, never this large): a damaged entry must not make a
/// reader allocate gigabytes.
pub const MAX_BLOB_LEN: u32 = 512 << 20;

/// Prefix of reader scratch directories in the temporary directory; the pid follows, so
/// [`clean_stale_readers`] can tell a dead reader's directory from a live one.
const READER_PREFIX: &str = "wayback-index-reader-";

/// Removes secondary directories left in the temporary directory by readers that were killed
/// (their pid no longer exists) and that belong to this user.
fn clean_stale_readers(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(READER_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() as i32
            || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let mine = std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if !alive && mine {
            // remove_dir_all does not follow symlinks inside (std's fix for CVE-2022-21658).
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn key(kind: BlobKind, id: &BlobId) -> [u8; 33] {
    crate::crypto::blob_ad(kind, id)
}

fn cfs() -> Vec<ColumnFamilyDescriptor> {
    [CF_BLOBS, CF_PACKS, CF_META]
        .iter()
        .map(|n| {
            let mut o = Options::default();
            // Small memtables: a reader (secondary) replays the writer's unflushed WAL into
            // memory on open, so this bounds every mount's and diff's index memory. With the
            // 64 MiB default a 1M-file backup left 80 MB of WAL, and each mount held it (measured:
            // 153 MB RSS right after mounting).
            o.set_write_buffer_size(MEMTABLE_BYTES);
            if *n == CF_BLOBS {
                let mut bo = rocksdb::BlockBasedOptions::default();
                bo.set_bloom_filter(10.0, false);
                o.set_block_based_table_factory(&bo);
            }
            ColumnFamilyDescriptor::new(*n, o)
        })
        .collect()
}

impl Index {
    /// Opens (creating if needed) the index as its single writer.
    pub fn open_writer(path: &Path) -> Result<Index> {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_keep_log_file_num(2);
        o.set_max_total_wal_size(64 << 20);
        let db = DB::open_cf_descriptors(&o, path, cfs())?;
        let idx = Index {
            db: Ok(db).into(),
            path: path.to_path_buf(),
            secondary: None,
            barrier: std::sync::OnceLock::new(),
        };
        let meta = idx.cf(CF_META)?;
        match idx.db()?.get_cf(meta, b"version")? {
            None => idx
                .db()?
                .put_cf(meta, b"version", INDEX_VERSION.to_le_bytes())?,
            Some(v) if v.as_slice() == INDEX_VERSION.to_le_bytes() => {}
            Some(_) => {
                return Err(Error::Unsupported(format!(
                    "index at {} has another schema version; run `wayback index rebuild`",
                    path.display()
                )))
            }
        }
        Ok(idx)
    }

    /// Opens the index read-only beside a possibly running writer.
    pub fn open_reader(path: &Path) -> Result<Index> {
        if !path.join("CURRENT").exists() {
            // A directory without RocksDB's CURRENT is an index that lost a file, not one that
            // was never built.
            if path.is_dir() {
                return Err(Error::Corrupt(format!(
                    "index {} is damaged (CURRENT is missing): `wayback repair index` rebuilds it",
                    path.display()
                )));
            }
            return Err(Error::NotFound(format!(
                "index {} (run `wayback index rebuild`)",
                path.display()
            )));
        }
        let tmp = std::env::temp_dir();
        clean_stale_readers(&tmp);
        // Unpredictable, created atomically with mode 0700 (the temporary directory is shared
        // with every other user).
        let sec = tempfile::Builder::new()
            .prefix(&format!("{READER_PREFIX}{}-", std::process::id()))
            .tempdir_in(&tmp)
            .map_err(|e| Error::io("create index scratch", &tmp, e))?;
        Ok(Index {
            db: std::sync::OnceLock::new(),
            path: path.to_path_buf(),
            secondary: Some(sec),
            barrier: std::sync::OnceLock::new(),
        })
    }

    fn db(&self) -> Result<&DB> {
        let r = self.db.get_or_init(|| {
            let sec = self
                .secondary
                .as_ref()
                .expect("writers open eagerly")
                .path()
                .to_path_buf();
            let mut o = Options::default();
            o.set_max_open_files(-1);
            DB::open_cf_descriptors_as_secondary(&o, &self.path, &sec, cfs())
                .map_err(|e| format!("opening index {}: {e}", self.path.display()))
        });
        r.as_ref().map_err(|e| Error::Index(e.clone()))
    }

    /// Opens the database now (a reader opens lazily) and fails unless it is complete: what a
    /// reader racing the writer that creates the index waits on.
    pub fn probe(&self) -> Result<()> {
        for name in [CF_BLOBS, CF_PACKS, CF_META] {
            self.cf(name)?;
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db()?
            .cf_handle(name)
            .ok_or_else(|| Error::Index(format!("column family {name} missing")))
    }

    /// Sees the writer's latest entries (no-op for the writer itself).
    pub fn refresh(&self) -> Result<()> {
        if self.secondary.is_some() {
            self.db()?.try_catch_up_with_primary()?;
        }
        Ok(())
    }

    /// Where a blob is, if known. Readers catch up with the writer once on a miss.
    pub fn get(&self, kind: BlobKind, id: &BlobId) -> Result<Option<BlobLocation>> {
        if let Some(l) = self.get_local(kind, id)? {
            return Ok(Some(l));
        }
        if self.secondary.is_some() {
            self.refresh()?;
            return self.get_local(kind, id);
        }
        Ok(None)
    }

    fn get_local(&self, kind: BlobKind, id: &BlobId) -> Result<Option<BlobLocation>> {
        let Some(v) = self
            .db()?
            .get_pinned_cf(self.cf(CF_BLOBS)?, key(kind, id))?
        else {
            return Ok(None);
        };
        decode_location(&v).map(Some)
    }

    /// True when the blob is already stored (the dedup question).
    pub fn contains(&self, kind: BlobKind, id: &BlobId) -> Result<bool> {
        Ok(self.get_local(kind, id)?.is_some())
    }

    /// Announces every later synced write to `be` first ([`Backend::sync_point`]): the
    /// repository's storage decides whether it may happen (fault injection). Set once.
    pub fn set_barrier(&self, be: std::sync::Arc<dyn Backend>) {
        let _ = self.barrier.set(be);
    }

    fn sync_point(&self, what: &str) -> Result<()> {
        match self.barrier.get() {
            Some(be) => be.sync_point(what),
            None => Ok(()),
        }
    }

    /// Records a durable pack and all its blobs in one synced batch.
    pub fn add_pack(&self, pack: &PackId, size: u64, entries: &[BlobEntry]) -> Result<()> {
        let blobs = self.cf(CF_BLOBS)?;
        let mut b = WriteBatch::default();
        for e in entries {
            let mut v = Vec::with_capacity(44);
            v.extend_from_slice(&pack.0);
            v.extend_from_slice(&e.offset.to_le_bytes());
            v.extend_from_slice(&e.length.to_le_bytes());
            v.extend_from_slice(&e.raw_length.to_le_bytes());
            b.put_cf(blobs, key(e.kind, &e.id), v);
        }
        let mut pv = Vec::with_capacity(12);
        pv.extend_from_slice(&size.to_le_bytes());
        pv.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        b.put_cf(self.cf(CF_PACKS)?, pack.0, pv);
        self.sync_point("index: add pack")?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db()?.write_opt(b, &wo)?;
        Ok(())
    }

    /// True when the pack's entries are recorded.
    pub fn has_pack(&self, pack: &PackId) -> Result<bool> {
        Ok(self
            .db()?
            .get_pinned_cf(self.cf(CF_PACKS)?, pack.0)?
            .is_some())
    }

    /// All recorded packs with their sizes.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        for item in self
            .db()?
            .iterator_cf(self.cf(CF_PACKS)?, rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            if k.len() != 32 || v.len() < 8 {
                return Err(Error::Index("malformed pack record".into()));
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&k);
            out.push((
                PackId(id),
                u64::from_le_bytes(v[..8].try_into().expect("8")),
            ));
        }
        Ok(out)
    }

    /// Calls `f` for every blob entry without collecting them (prune's usage pass: memory stays
    /// at the size of what `f` keeps).
    pub fn for_each_blob(
        &self,
        mut f: impl FnMut(BlobKind, &BlobId, BlobLocation) -> Result<()>,
    ) -> Result<()> {
        for item in self
            .db()?
            .iterator_cf(self.cf(CF_BLOBS)?, rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            if k.len() != 33 {
                return Err(Error::Index("malformed blob key".into()));
            }
            let kind = BlobKind::from_byte(k[0]).ok_or_else(|| Error::Index("bad kind".into()))?;
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[1..]);
            f(kind, &BlobId(id), decode_location(&v)?)?;
        }
        Ok(())
    }

    /// Forgets packs before their files are deleted (prune) or after they vanished (index
    /// rebuild): their records, and every blob entry that still points into them (entries
    /// that point to a newer copy elsewhere are kept). One synced batch: once this returns no
    /// writer dedups against the packs, so deleting the files next cannot lose a chunk a new
    /// snapshot relies on. One batch for all, because prune deletes hundreds of packs and a
    /// synced write each cost 3.5 ms of fdatasync (0.6 s of a 4 s prune).
    pub fn forget_packs(&self, packs: &std::collections::HashSet<PackId>) -> Result<()> {
        let blobs = self.cf(CF_BLOBS)?;
        let mut b = WriteBatch::default();
        for e in self.entries_in(packs)?.values().flatten() {
            b.delete_cf(blobs, key(e.kind, &e.id));
        }
        for pack in packs {
            b.delete_cf(self.cf(CF_PACKS)?, pack.0);
        }
        self.sync_point("index: remove packs")?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db()?.write_opt(b, &wo)?;
        Ok(())
    }

    /// Every blob entry (for `check`), as (kind, id, location).
    pub fn blobs(&self) -> Result<Vec<(BlobKind, BlobId, BlobLocation)>> {
        let mut out = Vec::new();
        self.for_each_blob(|kind, id, loc| {
            out.push((kind, *id, loc));
            Ok(())
        })?;
        Ok(out)
    }

    /// The entries the index holds for each of `packs` (one pass over the index): what
    /// [`Index::forget_packs`] removes.
    fn entries_in(
        &self,
        packs: &std::collections::HashSet<PackId>,
    ) -> Result<std::collections::HashMap<PackId, Vec<BlobEntry>>> {
        let mut out: std::collections::HashMap<PackId, Vec<BlobEntry>> = Default::default();
        self.for_each_blob(|kind, id, loc| {
            if packs.contains(&loc.pack) {
                out.entry(loc.pack).or_default().push(BlobEntry {
                    kind,
                    id: *id,
                    offset: loc.offset,
                    length: loc.length,
                    raw_length: loc.raw_length,
                });
            }
            Ok(())
        })?;
        Ok(out)
    }
}

fn decode_location(v: &[u8]) -> Result<BlobLocation> {
    if v.len() != 44 {
        return Err(Error::Index(format!(
            "malformed blob location ({} bytes)",
            v.len()
        )));
    }
    let mut pack = [0u8; 32];
    pack.copy_from_slice(&v[..32]);
    let u = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().expect("4 bytes"));
    let loc = BlobLocation {
        pack: PackId(pack),
        offset: u(32),
        length: u(36),
        raw_length: u(40),
    };
    if loc.length > MAX_BLOB_LEN || loc.raw_length > MAX_BLOB_LEN {
        return Err(Error::Index(format!(
            "blob location claims {} sealed / {} plain bytes (more than {MAX_BLOB_LEN})",
            loc.length, loc.raw_length
        )));
    }
    Ok(loc)
}

impl Drop for Index {
    fn drop(&mut self) {
        match &self.secondary {
            // The TempDir removes itself.
            Some(_) => {}
            // A closing writer flushes, so the next reader opens tables instead of replaying
            // the write-ahead log into memory.
            None => {
                for name in [CF_BLOBS, CF_PACKS, CF_META] {
                    let Some(Ok(db)) = self.db.get() else {
                        break;
                    };
                    let Some(cf) = db.cf_handle(name) else {
                        continue;
                    };
                    if let Err(e) = db.flush_cf(cf) {
                        tracing::warn!(error = %e, cf = name, "index flush at close failed (readers replay the log)");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u32) -> Vec<BlobEntry> {
        (0..n)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                BlobEntry {
                    kind: BlobKind::Data,
                    id: BlobId(id),
                    offset: i,
                    length: 1,
                    raw_length: 1,
                }
            })
            .collect()
    }

    fn log_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn a_location_claiming_gigabytes_is_refused_before_any_allocation() {
        let mut v = vec![0u8; 44];
        v[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_location(&v).is_err());
        let mut v = vec![0u8; 44];
        v[40..44].copy_from_slice(&(MAX_BLOB_LEN + 1).to_le_bytes());
        assert!(decode_location(&v).is_err());
        let mut v = vec![0u8; 44];
        v[36..40].copy_from_slice(&(16u32 << 20).to_le_bytes());
        assert!(decode_location(&v).is_ok());
        assert!(decode_location(&v[..43]).is_err());
    }

    #[test]
    fn a_closing_writer_leaves_readers_tables_not_a_log_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        {
            let w = Index::open_writer(&path).unwrap();
            w.add_pack(&PackId([1; 32]), 100, &entries(50_000)).unwrap();
            assert!(log_bytes(&path) > 1 << 20, "entries are in the log first");
        }
        assert!(
            log_bytes(&path) < 64 << 10,
            "log left: {}",
            log_bytes(&path)
        );
        let r = Index::open_reader(&path).unwrap();
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&49_999u32.to_le_bytes());
        assert_eq!(
            r.get(BlobKind::Data, &BlobId(id))
                .unwrap()
                .map(|l| l.offset),
            Some(49_999)
        );
    }
}
