//! Snapshot manifests and as-of resolution.
//!
//! A snapshot is committed by writing its manifest last, after every pack it needs is durable:
//! a manifest that exists is a snapshot that restores. Byte layout of `snapshots/<id>`:
//! `sealed(ad = "wayback-snapshot-v1", plaintext = JSON of Snapshot)`; the JSON carries
//! `"version": 1` and readers refuse other versions clearly.

use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{SnapshotId, TreeId};
use crate::timespec::{format_time, parse_time, TimeMs};
use crate::tree::Node;

/// Manifest format version (never reuse).
pub const SNAPSHOT_VERSION: u32 = 1;
/// Associated data of sealed manifests.
pub const SNAPSHOT_AD: &[u8] = b"wayback-snapshot-v1";

/// What produced a snapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Directory trees.
    Files,
    /// One stream (stdin or a command's stdout) stored as one file.
    Dump,
    /// A PostgreSQL base backup unpacked into a tree.
    Basebackup,
}

/// Counters of one backup run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Other entries (symlinks, devices, ...).
    pub others: u64,
    /// Total logical size of the files.
    pub total_bytes: u64,
    /// Bytes actually read from the source (unchanged files are not read).
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Bytes of new blobs as stored (compressed, encrypted).
    pub bytes_stored: u64,
    /// Wall time in ms.
    pub duration_ms: u64,
}

/// A PostgreSQL consistency point recorded with database snapshots.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DbPoint {
    /// WAL cluster name the snapshot belongs to.
    pub cluster: Option<String>,
    /// Timeline.
    pub timeline: Option<u32>,
    /// First WAL segment needed.
    pub wal_start: Option<String>,
    /// Last WAL segment needed for consistency.
    pub wal_stop: Option<String>,
    /// Start LSN.
    pub start_lsn: Option<String>,
    /// Stop LSN.
    pub stop_lsn: Option<String>,
}

/// A snapshot manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Content id (not serialized: derived from the manifest).
    #[serde(skip)]
    pub id: SnapshotId,
    /// Format version.
    pub version: u32,
    /// Source name (`/at/<T>/<source>`).
    pub source: String,
    /// Snapshot time, UTC ms.
    pub time: TimeMs,
    /// Host that took it.
    pub host: String,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Producer.
    pub kind: SnapshotKind,
    /// What was backed up (paths, command, stdin name).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Root tree.
    pub root: TreeId,
    /// Metadata of the backed-up directory itself (single-path backups).
    #[serde(default)]
    pub root_meta: Option<Node>,
    /// The snapshot whose tree was used to skip unchanged files.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// Run counters.
    #[serde(default)]
    pub stats: SnapshotStats,
    /// Files that changed or vanished while read, and other non-fatal problems.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// False when some entries could not be read consistently (see `warnings`).
    #[serde(default = "yes")]
    pub complete: bool,
    /// Database consistency point, for database sources.
    #[serde(default)]
    pub db: Option<DbPoint>,
    /// Set on a snapshot `wayback repair snapshots` wrote: the damaged snapshot it was made
    /// from (which stays unless repaired with `--forget`). Not written when absent, so
    /// manifests without it are byte-for-byte what they were before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_from: Option<SnapshotId>,
    /// For a snapshot written by `wayback copy`: its id in the repository it was copied from.
    /// Why recorded: the next copy skips what was already copied (and resumes after a kill)
    /// by this field alone. Absent (not `null`) on every other manifest, so manifests written
    /// before it existed keep their bytes and ids; older readers ignore it (unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<SnapshotId>,
}

fn yes() -> bool {
    true
}

impl Snapshot {
    /// Parses the decrypted manifest stored as `snapshots/<name>`: JSON of this version whose
    /// keyed hash is `name` (a manifest copied to another name would otherwise become a second
    /// snapshot). Anything else is `Corrupt` or `Unsupported`, never a panic.
    pub fn decode(key: &MasterKey, name: &str, plain: &[u8]) -> Result<Snapshot> {
        let v: serde_json::Value = serde_json::from_slice(plain)
            .map_err(|e| Error::Corrupt(format!("snapshot {name}: {e}")))?;
        let ver = v.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if ver != SNAPSHOT_VERSION as u64 {
            return Err(Error::Unsupported(format!(
                "snapshot {name} has version {ver}; this wayback reads {SNAPSHOT_VERSION}"
            )));
        }
        let mut s: Snapshot = serde_json::from_value(v)
            .map_err(|e| Error::Corrupt(format!("snapshot {name}: {e}")))?;
        s.id = SnapshotId::from_hex(name)
            .ok_or_else(|| Error::Corrupt(format!("snapshot file name {name} is not an id")))?;
        if key.keyed_hash("snapshot", plain) != s.id.0 {
            return Err(Error::Corrupt(format!(
                "snapshot {name}: file name does not match its content"
            )));
        }
        Ok(s)
    }

    /// The snapshot time in nanoseconds, as the mount shows it (saturating: the time comes from
    /// disk, and ms * 10^6 of a far-off time overflows).
    pub fn mtime_ns(&self) -> i64 {
        self.time.saturating_mul(1_000_000)
    }

    /// Exact time name used in `/snapshots/<source>/<name>` and listings.
    pub fn time_name(&self) -> String {
        format_time(self.time)
    }
}

/// How a user names a snapshot on the command line.
pub fn resolve<'a>(
    all: &'a [Snapshot],
    spec: &str,
    source: Option<&str>,
    now: TimeMs,
) -> Result<&'a Snapshot> {
    let in_source = |s: &&Snapshot| source.is_none_or(|src| s.source == src);
    if spec == "latest" {
        return all
            .iter()
            .filter(in_source)
            .max_by_key(|s| s.time)
            .ok_or_else(|| Error::NotFound(format!("no snapshots{}", for_source(source))));
    }
    let (source, spec) = match spec.split_once('@') {
        Some((src, t)) if source.is_none() => (Some(src), t),
        _ => (source, spec),
    };
    if let Some(t) = parse_time(spec, now) {
        let Some(src) = source else {
            return Err(Error::Invalid(format!(
                "'{spec}' is a time: say which source with --source NAME or NAME@{spec}"
            )));
        };
        return as_of(all, src, t).ok_or_else(|| {
            Error::NotFound(format!("no snapshot of source '{src}' at or before {spec}"))
        });
    }
    let spec_l = spec.to_ascii_lowercase();
    if spec_l.len() >= 4 && spec_l.chars().all(|c| c.is_ascii_hexdigit()) {
        let m: Vec<&Snapshot> = all
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&spec_l))
            .collect();
        return match m.len() {
            1 => Ok(m[0]),
            0 => Err(Error::NotFound(format!("no snapshot with id {spec}"))),
            n => Err(Error::Invalid(format!(
                "id prefix {spec} is ambiguous ({n} snapshots)"
            ))),
        };
    }
    Err(Error::Invalid(format!(
        "'{spec}' is neither a snapshot id, 'latest', nor a time like 2025-09-18T02:00"
    )))
}

fn for_source(s: Option<&str>) -> String {
    s.map(|s| format!(" of source '{s}'")).unwrap_or_default()
}

/// The latest snapshot of `source` at or before `t`.
pub fn as_of<'a>(all: &'a [Snapshot], source: &str, t: TimeMs) -> Option<&'a Snapshot> {
    all.iter()
        .filter(|s| s.source == source && s.time <= t)
        .max_by_key(|s| s.time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    fn snap(source: &str, time: TimeMs, b: u8) -> Snapshot {
        Snapshot {
            id: SnapshotId([b; 32]),
            version: 1,
            source: source.into(),
            time,
            host: "h".into(),
            tags: vec![],
            kind: SnapshotKind::Files,
            paths: vec![],
            root: BlobId([0; 32]),
            root_meta: None,
            parent: None,
            stats: Default::default(),
            warnings: vec![],
            complete: true,
            db: None,
            repaired_from: None,
            copied_from: None,
        }
    }

    #[test]
    fn copied_from_is_optional_and_absent_unless_set() {
        let key = MasterKey::generate();
        // A manifest written before the field existed reads as "not a copy".
        let mut old = serde_json::to_value(snap("a", 1, 1)).unwrap();
        old.as_object_mut().unwrap().remove("copied_from");
        let plain = serde_json::to_vec(&old).unwrap();
        let name = SnapshotId(key.keyed_hash("snapshot", &plain)).to_hex();
        assert_eq!(
            Snapshot::decode(&key, &name, &plain).unwrap().copied_from,
            None
        );
        // Not a copy: no field at all, so such manifests keep their bytes (and ids).
        let v = serde_json::to_value(snap("a", 1, 1)).unwrap();
        assert!(v.get("copied_from").is_none(), "{v}");
        // A copy round-trips its origin.
        let mut c = snap("a", 1, 1);
        c.copied_from = Some(SnapshotId([9; 32]));
        let plain = serde_json::to_vec(&c).unwrap();
        let name = SnapshotId(key.keyed_hash("snapshot", &plain)).to_hex();
        let back = Snapshot::decode(&key, &name, &plain).unwrap();
        assert_eq!(back.copied_from, Some(SnapshotId([9; 32])));
    }

    #[test]
    fn far_off_times_saturate_instead_of_overflowing() {
        assert_eq!(snap("a", i64::MAX, 1).mtime_ns(), i64::MAX);
        assert_eq!(snap("a", i64::MIN, 1).mtime_ns(), i64::MIN);
        assert_eq!(snap("a", 1_500, 1).mtime_ns(), 1_500_000_000);
        assert!(!snap("a", i64::MIN, 1).time_name().is_empty());
    }

    #[test]
    fn resolution() {
        let t0 = parse_time("2025-09-18T02:00", 0).unwrap();
        let all = vec![
            snap("a", t0, 0xaa),
            snap("a", t0 + 60_000, 0xab),
            snap("b", t0, 0xbb),
        ];
        assert_eq!(resolve(&all, "latest", Some("a"), 0).unwrap().id.0[0], 0xab);
        assert_eq!(
            resolve(&all, "2025-09-18T02:00", Some("a"), 0)
                .unwrap()
                .id
                .0[0],
            0xaa
        );
        assert_eq!(
            resolve(&all, "a@2025-09-18T02:00:30Z", None, 0)
                .unwrap()
                .id
                .0[0],
            0xaa
        );
        assert!(resolve(&all, "2025-09-18T01:00", Some("a"), 0)
            .unwrap_err()
            .is_not_found());
        assert_eq!(resolve(&all, "bbbb", None, 0).unwrap().source, "b");
        assert!(resolve(&all, "aaaa", None, 0).is_ok());
        assert!(resolve(&all, "2025-09-18", None, 0).is_err());
    }
}
