//! The PostgreSQL WAL archive inside the repository.
//!
//! Each archived file is stored as chunks in packs (like any file) plus one small sealed record
//! `wal/<cluster>/<name>` naming its chunks, size, digest and push time. Records are the durable
//! catalog: they live beside the packs, not only in the index, so the archive survives index
//! loss. File names stay plaintext (they are PostgreSQL's names, not secrets) so a missing file
//! can be answered without unlocking the key: `restore_command` probes many names that do not
//! exist and must hear "no" fast.
//!
//! Contract of [`push`] (in `push.rs`; PostgreSQL's `archive_command`): returns only after packs and record
//! are durable; the same name with the same bytes again is success; the same name with other
//! bytes is [`WalError::Conflict`], naming both digests; a segment from another cluster
//! (different system identifier) is refused.

pub mod names;
mod push;

pub use push::{decode_system, push, push_file, push_with_origin, Origin, Pushed};

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::backend::Backend;
use crate::repo::Repository;
use crate::timespec::{now_ms, TimeMs};
use crate::tree::{ChunkRef, Node, NodeKind};
use names::WalName;

/// Record format version (never reuse).
pub const WAL_RECORD_VERSION: u32 = 1;

/// One archived file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// Format version.
    pub version: u32,
    /// Cluster (archive) name.
    pub cluster: String,
    /// PostgreSQL file name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 (unkeyed) of the content, hex: compare with `b3sum`.
    pub digest: String,
    /// Content chunks.
    pub content: Vec<ChunkRef>,
    /// Where each chunk is stored (same order as `content`): wal-push writes its own packs
    /// without the index, so readers find WAL without waiting for an index update.
    pub locations: Vec<WalLocation>,
    /// When it was archived (UTC ms).
    pub pushed: TimeMs,
    /// Owner, group and permission bits of the pushed file (the mount shows them, so the
    /// database user can read `/wal` through an `allow_other` mount).
    pub owner: (u32, u32, u32),
}

/// Pack position of one WAL chunk.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalLocation {
    /// Pack id.
    pub pack: crate::id::PackId,
    /// Offset of the sealed blob.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
}

impl WalRecord {
    /// Chunk locations in the form the repository's reader takes as hints.
    pub fn hints(&self) -> Vec<(crate::id::BlobId, crate::index::BlobLocation)> {
        self.content
            .iter()
            .zip(&self.locations)
            .map(|(c, l)| {
                (
                    c.id,
                    crate::index::BlobLocation {
                        pack: l.pack,
                        offset: l.offset,
                        length: l.length,
                        raw_length: c.len,
                    },
                )
            })
            .collect()
    }
}

impl WalRecord {
    /// The record as a read-only file node (for the mount and restore).
    pub fn to_node(&self) -> Node {
        let mut n = Node::new(self.name.as_bytes().to_vec(), NodeKind::File);
        (n.uid, n.gid, n.mode) = self.owner;
        n.size = self.size;
        n.blocks = self.size.div_ceil(512);
        // Saturating: `pushed` comes from disk, and ms * 10^6 of a far-off time overflows.
        n.mtime_ns = self.pushed.saturating_mul(1_000_000);
        n.ctime_ns = n.mtime_ns;
        n.content = self.content.clone();
        n
    }
}

/// WAL-specific failures (mapped to distinct exit codes by the CLI).
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Same name, different bytes: never overwrite an archived file.
    #[error("{cluster}/{name} is already archived with different content (archived digest {archived}, new digest {new}); refusing to overwrite")]
    Conflict {
        /// Cluster.
        cluster: String,
        /// File name.
        name: String,
        /// Digest in the archive.
        archived: String,
        /// Digest of the pushed file.
        new: String,
    },
    /// The file is not a WAL archive file name.
    #[error("'{0}' is not a PostgreSQL WAL, history, backup or partial file name")]
    BadName(String),
    /// The segment belongs to another database system than the archive.
    #[error("segment {name} belongs to database system {found}, but archive '{cluster}' holds system {expected}; two clusters never mix (use another --cluster)")]
    OtherCluster {
        /// Cluster.
        cluster: String,
        /// File name.
        name: String,
        /// System id the archive holds.
        expected: u64,
        /// System id in the segment.
        found: u64,
    },
    /// Any other failure.
    #[error(transparent)]
    Repo(#[from] Error),
}

pub(crate) fn check_cluster_name(cluster: &str) -> Result<()> {
    if cluster.is_empty()
        || cluster.starts_with('.')
        || !cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::Invalid(format!(
            "'{cluster}' is not a valid cluster name (letters, digits, - _ .)"
        )));
    }
    Ok(())
}

fn record_path(cluster: &str, name: &str) -> String {
    format!("wal/{cluster}/{name}")
}

fn record_ad(cluster: &str, name: &str) -> Vec<u8> {
    format!("wayback-wal-v1\0{cluster}\0{name}").into_bytes()
}

/// True when `name` is archived for `cluster`; needs no key (file names are plaintext).
pub fn exists(be: &dyn Backend, cluster: &str, name: &str) -> Result<bool> {
    check_cluster_name(cluster)?;
    if names::parse(name).is_none() {
        return Ok(false);
    }
    match be.size(&record_path(cluster, name)) {
        Ok(_) => Ok(true),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads and authenticates one record.
///
/// `name` may come from `restore_command`'s argv: anything that is not a WAL name is
/// `NotFound` before it is joined into a path.
pub fn read_record(repo: &Repository, cluster: &str, name: &str) -> Result<WalRecord> {
    check_cluster_name(cluster)?;
    if names::parse(name).is_none() {
        return Err(Error::NotFound(format!(
            "WAL {cluster}/{name}: not a WAL archive file name"
        )));
    }
    let sealed = repo.be.get(&record_path(cluster, name))?;
    let plain = repo.key.open(&record_ad(cluster, name), &sealed, &|| {
        format!("WAL record {cluster}/{name}")
    })?;
    decode_record(&plain, cluster, name)
}

/// Parses and validates a decrypted record: version, that it describes `cluster/name`, one
/// location per chunk, non-empty chunks whose lengths add up to `size`, a blake3 hex digest.
///
/// Why validate what the key authenticated: a record is only as right as the wayback that
/// wrote it, and every reader (mount, wal-fetch, check) trusts `content` to lay out `size` bytes.
pub fn decode_record(plain: &[u8], cluster: &str, name: &str) -> Result<WalRecord> {
    let bad = |why: String| Error::Corrupt(format!("WAL record {cluster}/{name}: {why}"));
    let r: WalRecord = serde_json::from_slice(plain).map_err(|e| bad(e.to_string()))?;
    if r.version != WAL_RECORD_VERSION {
        return Err(Error::Unsupported(format!(
            "WAL record {cluster}/{name} has version {}; this wayback reads {WAL_RECORD_VERSION}",
            r.version
        )));
    }
    if r.cluster != cluster || r.name != name {
        return Err(bad(format!("describes {}/{}", r.cluster, r.name)));
    }
    if r.locations.len() != r.content.len() {
        return Err(bad(format!(
            "{} chunks but {} locations",
            r.content.len(),
            r.locations.len()
        )));
    }
    if r.content.iter().any(|c| c.len == 0) {
        return Err(bad("empty chunk".into()));
    }
    let sum = r
        .content
        .iter()
        .try_fold(0u64, |a, c| a.checked_add(c.len as u64));
    if sum != Some(r.size) {
        return Err(bad(format!(
            "chunk lengths add up to {sum:?}, size is {}",
            r.size
        )));
    }
    if r.digest.len() != 64
        || !r
            .digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad("digest is not blake3 hex".into()));
    }
    Ok(r)
}

/// Archived file names of a cluster, sorted (PostgreSQL names sort in WAL order per timeline).
pub fn list(be: &dyn Backend, cluster: &str) -> Result<Vec<String>> {
    check_cluster_name(cluster)?;
    Ok(be
        .list(&format!("wal/{cluster}"))?
        .into_iter()
        .filter(|n| names::parse(n).is_some())
        .collect())
}

/// Cluster names with an archive.
pub fn clusters(be: &dyn Backend) -> Result<Vec<String>> {
    Ok(be
        .list("wal")?
        .into_iter()
        .filter(|c| check_cluster_name(c).is_ok())
        .collect())
}

/// The database system identifier in a segment's first page header, if it has one.
pub fn system_id(first_page: &[u8]) -> Option<u64> {
    // XLogLongPageHeaderData: magic u16, info u16 (XLP_LONG_HEADER = 0x0002), tli u32,
    // pageaddr u64, rem_len u32, padding, sysid u64 at offset 24.
    if first_page.len() < 32 {
        return None;
    }
    let info = u16::from_le_bytes([first_page[2], first_page[3]]);
    if info & 0x0002 == 0 {
        return None;
    }
    Some(u64::from_le_bytes(first_page[24..32].try_into().ok()?))
}

/// Writes an archived file to `dest` (temp + rename, verified against its digest).
pub fn fetch(repo: &Repository, cluster: &str, name: &str, dest: &Path) -> Result<()> {
    let rec = read_record(repo, cluster, name)?;
    let tmp = dest.with_file_name(format!(
        ".{}.wayback-tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    let write = || -> Result<()> {
        // The destination directory may belong to someone else (a root `wal-fetch` into
        // PostgreSQL's pg_wal): never follow a planted symlink or reuse a planted file.
        // Unlinking a stale name removes the link itself, not its target.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        reassemble(repo, &rec, &mut |data| {
            std::io::Write::write_all(&mut out, data).map_err(|e| Error::io("write", &tmp, e))
        })?;
        out.sync_all().map_err(|e| Error::io("fsync", &tmp, e))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io("rename", dest, e))
}

/// Reassembles an archived file in memory-bounded steps and compares it with the digest
/// recorded at push time (`wayback check --read-data`).
pub fn verify(repo: &Repository, rec: &WalRecord) -> Result<()> {
    reassemble(repo, rec, &mut |_| Ok(()))
}

/// Reads an archived file's chunks in order, handing each to `each`; fails with `Corrupt`
/// when the whole does not match the size and digest recorded at push time (after `each`
/// saw every chunk: a caller that keeps the bytes must drop them on an error).
pub(crate) fn reassemble(
    repo: &Repository,
    rec: &WalRecord,
    each: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    repo.add_location_hints(rec.hints());
    let mut h = blake3::Hasher::new();
    let mut size = 0u64;
    for c in &rec.content {
        let data = repo.read_blob(crate::id::BlobKind::Data, &c.id)?;
        if data.len() != c.len as usize {
            return Err(Error::Corrupt(format!(
                "WAL {}/{}: chunk {} holds {} bytes, its reference says {}",
                rec.cluster,
                rec.name,
                c.id.short(),
                data.len(),
                c.len
            )));
        }
        size += data.len() as u64;
        h.update(&data);
        each(&data)?;
    }
    if size != rec.size || h.finalize().to_hex().as_str() != rec.digest {
        return Err(Error::Corrupt(format!(
            "WAL {}/{}: content does not match its digest",
            rec.cluster, rec.name
        )));
    }
    Ok(())
}

/// Per-cluster archive health: newest segment, its age, gaps, timelines.
#[derive(Serialize, Debug)]
pub struct ClusterStatus {
    /// Cluster name.
    pub cluster: String,
    /// Archived files.
    pub files: usize,
    /// Newest segment name.
    pub newest_segment: Option<String>,
    /// Seconds since the newest file was archived (the live RPO).
    pub newest_age_s: Option<f64>,
    /// Timelines seen (segments and history files).
    pub timelines: Vec<u32>,
    /// Missing segment ranges per timeline: (timeline, first missing, last missing).
    pub gaps: Vec<(u32, String, String)>,
    /// PITR window start: when the oldest complete base backup of this cluster whose start
    /// segment is archived finished (snapshot time + backup duration; recovery cannot stop
    /// before a base backup is consistent). `None` without such a base backup.
    pub earliest_recoverable: Option<String>,
    /// Short id of that base backup.
    pub earliest_base_backup: Option<String>,
    /// PITR window end: when the newest segment was archived. An upper bound: the last
    /// transaction in that segment committed at or before it.
    pub latest_recoverable: Option<String>,
}

/// A gap in a cluster's archive: (timeline, first missing segment, last missing segment).
pub type Gap = (u32, String, String);

/// Missing segment ranges per timeline in the archived file names `files` of a cluster whose
/// segments are `seg_size` bytes: between two archived segments of one timeline, every
/// segment in between should be there. A timeline that starts later (after a `.history`
/// switch) starts where its first segment is, so a switch is never a gap.
pub fn gaps(files: &[String], seg_size: u64) -> Vec<Gap> {
    let per = names::segs_per_log(seg_size);
    let mut segs: Vec<(u32, u64)> = files
        .iter()
        .filter_map(|f| match names::parse(f) {
            Some(WalName::Segment { tli, log, seg }) => Some((tli, log as u64 * per + seg as u64)),
            _ => None,
        })
        .collect();
    segs.sort_unstable();
    let mut out = Vec::new();
    for w in segs.windows(2) {
        let ((t0, a), (t1, b)) = (w[0], w[1]);
        if t0 == t1 && b > a + 1 {
            let name = |l: u64| format!("{t0:08X}{:08X}{:08X}", l / per, l % per);
            out.push((t0, name(a + 1), name(b - 1)));
        }
    }
    out
}

/// Computes [`ClusterStatus`] for every cluster (decrypts only the newest record of each).
pub fn status(repo: &Repository) -> Result<Vec<ClusterStatus>> {
    let mut out = Vec::new();
    let snaps = repo.snapshots()?;
    for cluster in clusters(repo.be.as_ref())? {
        let files = list(repo.be.as_ref(), &cluster)?;
        let base = crate::maint::wal_retention::oldest_usable(&snaps, &cluster, &files);
        let earliest_recoverable = base.map(|b| {
            crate::timespec::format_time(b.time.saturating_add(b.stats.duration_ms as i64))
        });
        let earliest_base_backup = base.map(|b| b.id.short());
        let mut segs: Vec<(u32, u64, String)> = Vec::new();
        let mut tlis = std::collections::BTreeSet::new();
        for f in &files {
            match names::parse(f) {
                Some(WalName::Segment { tli, log, seg }) => {
                    tlis.insert(tli);
                    segs.push((tli, ((log as u64) << 32) | seg as u64, f.clone()));
                }
                Some(WalName::History { tli }) => {
                    tlis.insert(tli);
                }
                _ => {}
            }
        }
        segs.sort();
        let newest = segs
            .iter()
            .max_by_key(|(t, n, _)| (*n, *t))
            .map(|s| s.2.clone());
        let mut age = None;
        if let Some(n) = &newest {
            if let Ok(r) = read_record(repo, &cluster, n) {
                age = Some((now_ms() - r.pushed) as f64 / 1000.0);
                let latest_recoverable = Some(crate::timespec::format_time(r.pushed));
                let gaps = gaps(&files, r.size);
                out.push(ClusterStatus {
                    cluster: cluster.clone(),
                    files: files.len(),
                    newest_segment: newest.clone(),
                    newest_age_s: age,
                    timelines: tlis.iter().copied().collect(),
                    gaps,
                    earliest_recoverable,
                    earliest_base_backup,
                    latest_recoverable,
                });
                continue;
            }
        }
        out.push(ClusterStatus {
            cluster,
            files: files.len(),
            newest_segment: newest,
            newest_age_s: age,
            timelines: tlis.into_iter().collect(),
            gaps: vec![],
            earliest_recoverable,
            earliest_base_backup,
            latest_recoverable: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use proptest::prelude::*;

    fn record(lens: &[u32]) -> WalRecord {
        WalRecord {
            version: WAL_RECORD_VERSION,
            cluster: "c".into(),
            name: "000000010000000000000001".into(),
            size: lens.iter().map(|&l| l as u64).sum(),
            digest: "ab".repeat(32),
            content: lens
                .iter()
                .map(|&len| ChunkRef {
                    id: crate::id::BlobId([7; 32]),
                    len,
                })
                .collect(),
            locations: lens
                .iter()
                .map(|_| WalLocation {
                    pack: crate::id::PackId([1; 32]),
                    offset: 0,
                    length: 40,
                })
                .collect(),
            pushed: 0,
            owner: (0, 0, 0o600),
        }
    }

    fn decode(r: &WalRecord) -> Result<WalRecord> {
        decode_record(
            &serde_json::to_vec(r).unwrap(),
            "c",
            "000000010000000000000001",
        )
    }

    #[test]
    fn a_push_time_beyond_the_nanosecond_range_is_a_node_not_a_panic() {
        // Found by the wal_record fuzz target (fuzz/regressions/wal_record/).
        for (pushed, ns) in [
            (175_892_160_800_000_000, i64::MAX),
            (i64::MAX, i64::MAX),
            (i64::MIN, i64::MIN),
            (1_758_160_800_000, 1_758_160_800_000_000_000),
        ] {
            let mut r = record(&[5]);
            r.pushed = pushed;
            let r = decode(&r).unwrap();
            assert_eq!(r.to_node().mtime_ns, ns);
        }
    }

    #[test]
    fn records_that_do_not_lay_out_their_size_are_corrupt() {
        let good = record(&[1 << 20, 5]);
        assert_eq!(decode(&good).unwrap(), good);
        let mut r = good.clone();
        r.size += 1;
        assert!(decode(&r).unwrap_err().is_corrupt());
        let mut r = good.clone();
        r.content[1].len = 0;
        r.size = 1 << 20;
        assert!(decode(&r).unwrap_err().is_corrupt());
        let mut r = good.clone();
        r.locations.pop();
        assert!(decode(&r).unwrap_err().is_corrupt());
        let mut r = good.clone();
        r.name = "000000010000000000000002".into();
        assert!(decode(&r).unwrap_err().is_corrupt());
        let mut r = good.clone();
        r.digest = "zz".repeat(32);
        assert!(decode(&r).unwrap_err().is_corrupt());
        let mut r = good.clone();
        r.content = vec![
            ChunkRef {
                id: crate::id::BlobId([7; 32]),
                len: u32::MAX
            };
            2
        ];
        r.locations = vec![r.locations[0]; 2];
        r.size = 1;
        assert!(decode(&r).unwrap_err().is_corrupt());
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_record(&bytes, "c", "000000010000000000000001");
        }

        #[test]
        fn decoder_accepts_exactly_consistent_records(
            lens in prop::collection::vec(0u32..3_000_000, 0..6),
            delta in -2i64..3,
        ) {
            let mut r = record(&lens);
            let sum = r.size;
            r.size = sum.saturating_add_signed(delta);
            let ok = r.size == sum && lens.iter().all(|&l| l > 0);
            prop_assert_eq!(decode(&r).is_ok(), ok);
        }
    }
}
