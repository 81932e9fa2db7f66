//! The repository: config, keys, locks, snapshots, and reading blobs.
//!
//! Layout on disk (see docs/format.md): `config`, `keys/`, `packs/`, `snapshots/`, `locks/`,
//! `index/` (RocksDB cache), `tmp/` (staging for atomic puts). A repository lives at a
//! [`Location`]: a local directory, or a bucket prefix on S3-compatible storage holding the
//! same objects, with the local parts (index, writer lock, sockets) in a cache directory
//! ([`Location::home`]).

pub mod backend;
pub mod beneath;
#[doc(hidden)]
pub mod fault;
pub mod keycache;
pub mod keys;
pub mod lease;
pub mod location;
pub mod lock;
pub mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, SnapshotId};
use crate::index::{rebuild, BlobLocation, Index};
use crate::pack::{open_blob, pack_path};
use crate::snapshot::{Snapshot, SNAPSHOT_AD, SNAPSHOT_VERSION};
use crate::tree::Tree;
use backend::{Backend, LocalBackend};
pub use location::Location;
use lock::WriterLock;

/// Repository format version written in `config` (never reuse; old versions refused clearly).
pub const REPO_VERSION: u32 = 1;
/// Magic at the start of `config`.
pub const CONFIG_MAGIC: [u8; 8] = *b"WAYBACK\0";

/// Repository-wide settings, sealed in `config`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Config {
    /// Format version (equals the plaintext header's).
    pub version: u32,
    /// Random repository id, hex.
    pub id: String,
    /// Chunker parameters (fixed for the repository's life).
    pub chunker: ChunkerParams,
    /// zstd level for new blobs.
    pub zstd_level: i32,
    /// Creation time, RFC 3339.
    pub created: String,
}

/// Snapshot manifests that could not be read: file name and why.
pub type DamagedManifests = Vec<(String, Error)>;

/// What a reader learnt from packs its index does not know, and when it last looked.
#[derive(Default)]
struct Unindexed {
    blobs: HashMap<[u8; 33], BlobLocation>,
    scanned: std::collections::HashSet<crate::id::PackId>,
    last_scan: Option<std::time::Instant>,
}

/// How often a reader may list `packs/` again after a lookup missed its index.
const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Where this process keeps the index of the repository at `root` with id `repo_id`.
///
/// Why not always `<root>/index`: RocksDB opens and creates its files by path, following
/// symlinks, so a root process must never run it in a directory another user can write. A root
/// process in a repository another user owns (the documented PostgreSQL setup: a root agent in
/// `postgres`' archive) therefore keeps its own index in a root-only cache directory,
/// `$WAYBACK_CACHE_DIR/<repo id>/index` (default `/var/cache/wayback`). The index is a cache:
/// it is rebuilt from pack headers when missing, and readers learn packs it lacks on a miss.
pub fn index_dir(root: &Path, repo_id: &str) -> Result<PathBuf> {
    if backend::foreign_owner(root).is_none() {
        return Ok(root.join("index"));
    }
    let base = std::env::var_os("WAYBACK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/wayback"));
    let dir = base.join(repo_id);
    private_dir(&base)?;
    private_dir(&dir)?;
    Ok(dir.join("index"))
}

/// Where the index of the repository at `loc` with id `repo_id` lives: [`index_dir`] for a
/// local repository, `index/` in the cache directory ([`Location::home`]) for S3.
pub fn index_path(loc: &Location, repo_id: &str) -> Result<PathBuf> {
    match loc {
        Location::Local(root) => index_dir(root, repo_id),
        Location::S3(_) => Ok(loc.home()?.join("index")),
    }
}

/// The storage of the repository at `loc`: the local directory, or the S3 bucket prefix with
/// credentials from the environment or a credentials file (see [`location`]).
pub fn open_backend(loc: &Location) -> Result<Arc<dyn Backend>> {
    match loc {
        Location::Local(root) => Ok(Arc::new(LocalBackend::new(root))),
        Location::S3(s) => Ok(Arc::new(s3::S3Backend::new(s, &s.credentials()?)?)),
    }
}

/// [`private_dir`] of `dir`, creating its missing parents first (with default modes: only
/// `dir` itself must be private; `~/.cache` may not exist yet).
pub(crate) fn private_dir_all(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create cache directory", parent, e))?;
        }
    }
    private_dir(dir)
}

/// Creates `dir` (0700) if missing and refuses it unless it is a real directory owned by this
/// user that nobody else can write.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create cache directory", dir, e)),
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        return Err(Error::Invalid(format!(
            "cache directory {} must be a directory owned by this user and writable by nobody else",
            dir.display()
        )));
    }
    Ok(())
}

/// Name prefix of an index being rebuilt beside the live one (see `rebuild_index_inner`).
const REBUILDING_PREFIX: &str = "index.rebuilding-";

/// Removes what killed rebuilds left in `dir` (only called under the writer lock, so no
/// rebuild is running).
fn remove_stale_rebuilds(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(REBUILDING_PREFIX)
            && e.file_type().is_ok_and(|t| t.is_dir())
        {
            // remove_dir_all does not follow symlinks inside (std's fix for CVE-2022-21658).
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Puts the index built at `fresh` in place of `live`: atomically exchanged when `live`
/// exists (readers see the old index or the new one, never none), then the old one removed.
fn swap_in(fresh: &Path, live: &Path) -> Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    let r = if live.exists() {
        renameat2(None, fresh, None, live, RenameFlags::RENAME_EXCHANGE)
    } else {
        renameat2(None, fresh, None, live, RenameFlags::RENAME_NOREPLACE)
    };
    r.map_err(|e| Error::io("swap in the rebuilt index", live, std::io::Error::from(e)))?;
    if let Some(dir) = live.parent() {
        backend::fsync_dir(dir)?;
    }
    if fresh.exists() {
        std::fs::remove_dir_all(fresh).map_err(|e| Error::io("remove", fresh, e))?;
    }
    Ok(())
}

/// How a command uses the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only; may run beside a writer.
    Read,
    /// Writes; takes the writer lock.
    Write,
}

/// The zstd level of a new repository. Measured on this project's benchmark data (zstd CLI,
/// 1 MiB blocks, one core): a copy of system directories compresses 2.72:1 at 404 MB/s with
/// level 2 and 2.79:1 at 290 MB/s with level 3; dump-like text rows 3.08:1 at 369 MB/s with
/// level 2 and 2.94:1 at 200 MB/s with level 3. Compression is most of a first backup's CPU,
/// so level 2 buys 1.4-1.8x the speed for at most 2.5% more bytes.
pub const DEFAULT_ZSTD_LEVEL: i32 = 2;

/// The zstd levels `init --zstd-level` accepts: above 19 a level needs much memory per worker
/// for little gain; 0 would mean "zstd's default" and hide the choice.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

/// An open repository.
pub struct Repository {
    /// Storage.
    pub be: Arc<dyn Backend>,
    /// The unlocked master key.
    pub key: MasterKey,
    /// Settings.
    pub config: Config,
    /// Where the repository is.
    pub location: Location,
    /// The local directory this host keeps for it (writer lock, sockets, scratch): the
    /// repository root when local, the cache directory for S3 (see [`Location::home`]).
    pub home: PathBuf,
    /// Blob locations.
    pub index: Index,
    /// Id of the key file that opened the repository.
    pub key_id: String,
    snapshots: Mutex<HashMap<String, Snapshot>>,
    /// Locations of blobs not in the index (WAL chunks carry their own; see `wal`).
    hints: Mutex<HashMap<BlobId, BlobLocation>>,
    /// Blobs of packs this reader found on disk but not in its index (see `learn_packs`).
    unindexed: Mutex<Unindexed>,
    _lock: Option<WriterLock>,
    /// The lease of a writer of an S3 repository (see [`lease`]); replaced by
    /// [`Repository::ensure_lease`] once lost.
    lease: Mutex<Option<lease::Lease>>,
    /// Leases taken beside it ([`Repository::exclusive_lease`]), checked with it.
    watches: Mutex<Vec<lease::LeaseWatch>>,
}

/// Directories `init` creates, in the order it creates them.
const INIT_DIRS: [&str; 7] = ["keys", "packs", "snapshots", "locks", "tmp", "wal", "index"];

/// For an existing directory without `config`: `None` when empty, `Some(true)` when it holds
/// only what a killed `init` leaves (its directories, nothing else), `Some(false)` otherwise.
fn only_init_leftovers(root: &Path) -> Result<Option<bool>> {
    let rd = std::fs::read_dir(root).map_err(|e| Error::io("read", root, e))?;
    let mut any = false;
    for e in rd {
        let e = e.map_err(|e| Error::io("read", root, e))?;
        any = true;
        let name = e.file_name();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir || !INIT_DIRS.iter().any(|d| name == *d) {
            return Ok(Some(false));
        }
        // Only `keys/` may hold a file (the one key init wrote); data dirs must be empty.
        let p = e.path();
        let n = std::fs::read_dir(&p)
            .map_err(|e| Error::io("read", &p, e))?
            .count();
        if n > 0 && name != "keys" && name != "index" {
            return Ok(Some(false));
        }
    }
    Ok(any.then_some(true))
}

/// Modes for what wayback creates (see `repo::beneath`).
mod backend_mode {
    pub const DIR: u32 = super::beneath::DIR_MODE;
}

fn read_config_over(be: &dyn Backend, root: &Location, pass: &[u8]) -> Result<Config> {
    let sealed = read_config_header(be, root)?;
    let (_, key) = keys::unlock(be, pass)?;
    let plain = key.open(b"wayback-config", &sealed, &|| "config".into())?;
    decode_config(&plain)
}

/// True when `keys/` holds a file and `packs/` a pack directory (what `init` alone never
/// leaves: a killed `init` has no packs).
fn holds_repository_data(be: &dyn Backend) -> bool {
    let any = |d: &str| be.list(d).is_ok_and(|l| !l.is_empty());
    any("keys") && any("packs")
}

fn read_config_header(be: &dyn Backend, root: &Location) -> Result<Vec<u8>> {
    let raw = be.get("config").map_err(|e| match e {
        // Key files and packs without a config: a repository that lost its config, which is
        // damage (exit 12), not a directory that was never a repository.
        Error::NotFound(_) if holds_repository_data(be) => Error::Corrupt(format!(
            "{root}/config is missing, yet the directory holds key files and packs: the repository \
             is damaged"
        )),
        Error::NotFound(_) => Error::NotFound(format!(
            "{root} is not a wayback repository (no config; run `wayback init`)"
        )),
        e => e,
    })?;
    Ok(config_sealed_part(&raw, &format!("{root}/config"))?.to_vec())
}

/// The sealed part of the bytes of a `config` file (`what` names it in errors), after checking
/// the plaintext magic and format version.
///
/// Why public: this and [`decode_config`] are what see the config's bytes from disk; the fuzz
/// target and its corpus test drive them without a repository.
pub fn config_sealed_part<'a>(raw: &'a [u8], what: &str) -> Result<&'a [u8]> {
    if raw.len() < 12 || raw[..8] != CONFIG_MAGIC {
        return Err(Error::Corrupt(format!("{what}: not a wayback config")));
    }
    let ver = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
    if ver != REPO_VERSION {
        return Err(Error::Unsupported(format!(
            "repository format version {ver}; this wayback supports version {REPO_VERSION}"
        )));
    }
    Ok(&raw[12..])
}

/// Parses the decrypted JSON of `config` and checks what later code relies on: the chunker
/// parameters are within the bounds FastCDC accepts (it asserts on others).
pub fn decode_config(plain: &[u8]) -> Result<Config> {
    let config: Config =
        serde_json::from_slice(plain).map_err(|e| Error::Corrupt(format!("config: {e}")))?;
    if !config.chunker.validate() {
        return Err(Error::Corrupt(
            "config: chunker parameters out of range".into(),
        ));
    }
    Ok(config)
}

impl Repository {
    /// Creates a new repository at `root` (must be absent or empty) protected by `pass`.
    pub fn init(root: &Path, pass: &[u8]) -> Result<Repository> {
        Self::init_at(&Location::Local(root.to_path_buf()), pass)
    }

    /// Creates a new repository at `loc` (an absent or empty directory, or an empty bucket
    /// prefix) protected by `pass`.
    pub fn init_at(loc: &Location, pass: &[u8]) -> Result<Repository> {
        Self::init_at_level(loc, pass, DEFAULT_ZSTD_LEVEL)
    }

    /// [`Repository::init_at`] with the zstd level new blobs are compressed at (in
    /// [`ZSTD_LEVELS`]).
    pub fn init_at_level(loc: &Location, pass: &[u8], zstd_level: i32) -> Result<Repository> {
        if !ZSTD_LEVELS.contains(&zstd_level) {
            return Err(Error::Invalid(format!(
                "zstd level {zstd_level} is outside {}..={}",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )));
        }
        let be = match loc {
            Location::Local(root) => {
                Self::prepare_local_init(root)?;
                open_backend(loc)?
            }
            Location::S3(_) => {
                let be = open_backend(loc)?;
                Self::prepare_s3_init(be.as_ref(), loc)?;
                be
            }
        };
        let key = MasterKey::generate();
        keys::add_key(be.as_ref(), &key, pass)?;
        let config = Config {
            version: REPO_VERSION,
            id: hex::encode(rand::random::<[u8; 16]>()),
            chunker: ChunkerParams::DEFAULT,
            zstd_level,
            created: chrono::Utc::now().to_rfc3339(),
        };
        let mut raw = CONFIG_MAGIC.to_vec();
        raw.extend_from_slice(&REPO_VERSION.to_le_bytes());
        raw.extend_from_slice(&key.seal(
            b"wayback-config",
            &serde_json::to_vec(&config).expect("json"),
        ));
        if let Location::Local(root) = loc {
            let local = LocalBackend::new(root);
            for d in ["packs", "snapshots", "locks", "tmp", "wal"] {
                local
                    .beneath()
                    .make_dirs(d)
                    .map_err(|e| Error::io("create", root.join(d), e))?;
            }
        }
        // The index first, config last: config is what makes the directory a repository, so
        // an init killed before it can simply be run again (the directory then holds only
        // what init creates, see `only_init_leftovers`).
        drop(Index::open_writer(&index_path(loc, &config.id)?)?);
        be.put("config", &raw)?;
        if let Location::Local(root) = loc {
            backend::fsync_dir(root)?;
        }
        Self::open_at(loc, pass, Access::Read)
    }

    /// Refuses a bucket prefix that holds anything but what a killed `init` leaves (key
    /// files, no config), and removes those.
    fn prepare_s3_init(be: &dyn Backend, loc: &Location) -> Result<()> {
        let top = be.list("")?;
        if top.iter().any(|n| n == "config") {
            return Err(Error::Invalid(format!("{loc} already holds a repository")));
        }
        if top.iter().any(|n| n != "keys") {
            return Err(Error::Invalid(format!(
                "{loc} is not empty; refusing to init there"
            )));
        }
        let stale: Vec<String> = be
            .list("keys")?
            .into_iter()
            .map(|k| format!("keys/{k}"))
            .collect();
        be.delete_many(&stale)
    }

    /// The checks and cleanup of `init` in a local directory.
    fn prepare_local_init(root: &Path) -> Result<()> {
        if root.join("config").exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a repository",
                root.display()
            )));
        }
        if root.exists() {
            let leftovers = only_init_leftovers(root)?;
            if let Some(false) = leftovers {
                return Err(Error::Invalid(format!(
                    "{} exists and is not empty; refusing to init there",
                    root.display()
                )));
            }
            if leftovers == Some(true) {
                // A killed init: no config was written, so nothing here is anyone's data.
                for d in ["keys", "packs", "snapshots", "locks", "tmp", "wal", "index"] {
                    let p = root.join(d);
                    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                        std::fs::remove_dir_all(&p).map_err(|e| Error::io("remove", &p, e))?;
                    }
                }
            }
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(backend_mode::DIR)
            .create(root)
            .map_err(|e| Error::io("create", root, e))
    }

    /// Opens an existing repository.
    pub fn open(root: &Path, pass: &[u8], access: Access) -> Result<Repository> {
        Self::open_at(&Location::Local(root.to_path_buf()), pass, access)
    }

    /// Opens an existing repository at `loc`.
    pub fn open_at(loc: &Location, pass: &[u8], access: Access) -> Result<Repository> {
        Self::open_unlocking(loc, &|| Ok(pass.to_vec()), access, false)
    }

    /// Opens with the key cached by `wayback key unlock` when there is one (skipping the KDF),
    /// else with the passphrase `ask` returns (called only then, so no prompt appears).
    pub fn open_cached(
        root: &Location,
        ask: &dyn Fn() -> Result<Vec<u8>>,
        access: Access,
    ) -> Result<Repository> {
        Self::open_unlocking(root, ask, access, true)
    }

    /// Opens the repository at `root` over `be` (a backend holding the same files, e.g. the
    /// fault-injecting one of the crash tests) instead of a fresh [`LocalBackend`]. The writer
    /// lock, `tmp/` cleanup and the index stay local to `root`; the index announces its synced
    /// writes to `be` ([`Backend::sync_point`]).
    pub fn open_with_backend(
        root: &Path,
        be: Arc<dyn Backend>,
        pass: &[u8],
        access: Access,
    ) -> Result<Repository> {
        let loc = Location::Local(root.to_path_buf());
        Self::open_inner(&loc, be, &|| Ok(pass.to_vec()), access, false, None)
    }

    fn open_unlocking(
        loc: &Location,
        ask: &dyn Fn() -> Result<Vec<u8>>,
        access: Access,
        use_cache: bool,
    ) -> Result<Repository> {
        Self::open_inner(loc, open_backend(loc)?, ask, access, use_cache, None)
    }

    /// `held`: the writer lock when the caller already took it (index rebuild).
    fn open_inner(
        loc: &Location,
        be: Arc<dyn Backend>,
        ask: &dyn Fn() -> Result<Vec<u8>>,
        access: Access,
        use_cache: bool,
        held: Option<WriterLock>,
    ) -> Result<Repository> {
        let sealed = read_config_header(be.as_ref(), loc)?;
        let open_config =
            |key: &MasterKey| key.open(b"wayback-config", &sealed, &|| "config".into());
        let cached = use_cache
            .then(|| keycache::load(&keycache::entry_name(&sealed)))
            .flatten()
            .and_then(|(id, key)| Some((id, open_config(&key).ok()?, key)));
        let (key_id, plain, key) = match cached {
            Some(c) => c,
            None => {
                let (id, key) = keys::unlock(be.as_ref(), &ask()?)?;
                (id, open_config(&key)?, key)
            }
        };
        let config = decode_config(&plain)?;
        let home = loc.home()?;
        let lock = match (access, held) {
            (Access::Write, Some(l)) => Some(l),
            (Access::Write, None) => Some(WriterLock::acquire(&home, lock::operation())?),
            (Access::Read, _) => None,
        };
        // A local repository's flock is seen by every process that opens it (on NFS too: Linux
        // maps flock to NFS byte-range locks); an S3 repository's flock lives in one host's
        // cache, so its writers also take a lease object in the bucket.
        let lease = match (access, loc) {
            (Access::Write, Location::S3(_)) => Some(lease::Lease::acquire_waiting(
                be.clone(),
                &key,
                lease::LeaseKind::for_operation(lock::operation()),
                lock::operation(),
            )?),
            _ => None,
        };
        if let (Access::Write, Location::Local(root)) = (access, loc) {
            // Staging files of killed writers (an hour is far beyond any live put's staging).
            match LocalBackend::new(root).clean_tmp(std::time::Duration::from_secs(3600)) {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "removed staging files of killed writers"),
                Err(e) => tracing::warn!(error = %e, "could not clean tmp/"),
            }
        }
        let index_path = index_path(loc, &config.id)?;
        // A reader whose index is private and missing (a root reader in another user's
        // repository; any host's first reader of an S3 repository) builds it first.
        let private = match loc {
            Location::Local(root) => backend::foreign_owner(root).is_some(),
            Location::S3(_) => true,
        };
        if access == Access::Read && private && !index_path.join("CURRENT").exists() {
            Self::bootstrap_index(be.as_ref(), &key, &index_path);
        }
        let index = match access {
            Access::Write => Index::open_writer(&index_path)?,
            Access::Read if private => Self::open_reader_when_ready(&index_path)?,
            Access::Read => Index::open_reader(&index_path)?,
        };
        index.set_barrier(be.clone());
        let repo = Repository {
            be,
            key,
            config,
            location: loc.clone(),
            home,
            index,
            key_id,
            snapshots: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
            unindexed: Mutex::new(Unindexed::default()),
            _lock: lock,
            lease: Mutex::new(lease),
            watches: Mutex::new(Vec::new()),
        };
        if access == Access::Write {
            // Packs a killed writer made durable but never indexed: record them, so their
            // chunks are reused instead of written again.
            let rep =
                rebuild::index_missing_packs(repo.be.as_ref(), &repo.key, &repo.index, |_, _| {})?;
            if rep.added > 0 {
                tracing::info!(
                    packs = rep.added,
                    "indexed packs left by an interrupted writer"
                );
            }
        }
        Ok(repo)
    }

    /// Creates a missing private index (a root reader in a repository another user owns, see
    /// [`index_dir`]) from pack headers. Best effort: if a writer races us to it, its index wins.
    ///
    /// Why built aside and renamed into place (`RENAME_NOREPLACE`): built in place, it held the
    /// index's lock while it read every pack header, so an agent starting meanwhile failed to
    /// open its index and exited, and a second reader found a half-created index ("column
    /// family not found"). Built aside, the writer never waits for a reader, and whoever comes
    /// second uses the first one's index.
    fn bootstrap_index(be: &dyn Backend, key: &MasterKey, path: &Path) {
        let Some(parent) = path.parent() else { return };
        let building = parent.join(format!(
            "index.building-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let r = Index::open_writer(&building).and_then(|idx| {
            rebuild::index_missing_packs(be, key, &idx, |_, _| {}).map(|rep| rep.added)
        });
        let r = r.and_then(|n| {
            nix::fcntl::renameat2(
                None,
                &building,
                None,
                path,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map(|()| n)
            .map_err(|e| Error::io("rename index", path, std::io::Error::from(e)))
        });
        match r {
            Ok(n) => tracing::info!(packs = n, index = %path.display(), "built a private index"),
            // A writer (or another reader) made it meanwhile: use theirs.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                tracing::debug!(index = %path.display(), "another process made the index first")
            }
            Err(e) => {
                tracing::warn!(error = %e, index = %path.display(), "could not build a private index")
            }
        }
        // remove_dir_all does not follow symlinks inside (std's fix for CVE-2022-21658), and
        // the directory is private to this user (see `private_dir`).
        let _ = std::fs::remove_dir_all(&building);
    }

    /// Opens the index at `path` as a reader once it is complete: a writer creating it (the
    /// agent's first start) makes its files and column families in steps.
    fn open_reader_when_ready(path: &Path) -> Result<Index> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = Index::open_reader(path).and_then(|idx| idx.probe().map(|()| idx));
            match r {
                Err(e @ (Error::NotFound(_) | Error::Index(_)))
                    if std::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "index not ready yet");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Decrypts only the config (no index, no lock): what `index rebuild` needs to find the
    /// index of a repository whose index it is about to throw away.
    pub fn read_config(root: &Path, pass: &[u8]) -> Result<Config> {
        let loc = Location::Local(root.to_path_buf());
        read_config_over(&LocalBackend::new(root), &loc, pass)
    }

    /// `wayback index rebuild` over `be`: under the writer lock (held throughout, so no writer
    /// slips in between the wipe and the rebuild), throws the index away and records every
    /// pack's header again. Returns the repository open for writing and what the scan found
    /// (damaged packs are reported, not indexed).
    pub fn rebuild_index(
        root: &Path,
        be: Arc<dyn Backend>,
        pass: &[u8],
    ) -> Result<(Repository, rebuild::ScanReport)> {
        Self::rebuild_index_inner(&Location::Local(root.to_path_buf()), be, pass, false)
            .map(|(r, s, _)| (r, s))
    }

    /// [`Repository::rebuild_index`] of the repository at `loc`.
    pub fn rebuild_index_at(
        loc: &Location,
        be: Arc<dyn Backend>,
        pass: &[u8],
    ) -> Result<(Repository, rebuild::ScanReport)> {
        Self::rebuild_index_inner(loc, be, pass, false).map(|(r, s, _)| (r, s))
    }

    /// `wayback repair index`: [`Repository::rebuild_index`], except that what the old index
    /// knew of packs whose header cannot be read is carried over into the new one. Why: such a
    /// pack's blobs can be found by no other means than the old index (their sealed lengths
    /// are nowhere else), and `repair packs` needs their locations to salvage the intact ones;
    /// a rebuild that forgot them would make things worse. Returns also how many packs were
    /// carried over. The old index is read only if it opens; otherwise nothing is carried.
    pub fn repair_index(
        root: &Path,
        be: Arc<dyn Backend>,
        pass: &[u8],
    ) -> Result<(Repository, rebuild::ScanReport, usize)> {
        Self::rebuild_index_inner(&Location::Local(root.to_path_buf()), be, pass, true)
    }

    fn rebuild_index_inner(
        root: &Location,
        be: Arc<dyn Backend>,
        pass: &[u8],
        keep_damaged: bool,
    ) -> Result<(Repository, rebuild::ScanReport, usize)> {
        let home = root.home()?;
        let lock = WriterLock::acquire(&home, "index rebuild")?;
        let config = read_config_over(be.as_ref(), root, pass)?;
        let idx = index_path(root, &config.id)?;
        let kept = match keep_damaged && idx.exists() {
            true => {
                let key = keys::unlock(be.as_ref(), pass)?.1;
                rebuild::entries_of_damaged_packs(be.as_ref(), &key, &idx)?
            }
            false => Vec::new(),
        };
        // Built aside and swapped in whole. Why: wiped first and rebuilt in place, a rebuild
        // killed in between left an index RocksDB had half created, which every reader then
        // refused ("column family not found", exit 1) until the next writer; found by the kill
        // matrix (tests/it/killmatrix.rs). Now a killed rebuild leaves the old index in place
        // and a `index.rebuilding-*` directory the next rebuild removes.
        let parent = idx.parent().map_or(home.clone(), Path::to_path_buf);
        remove_stale_rebuilds(&parent);
        let fresh = parent.join(format!(
            "{REBUILDING_PREFIX}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let key = keys::unlock(be.as_ref(), pass)?.1;
        let rep = {
            let built = Index::open_writer(&fresh)?;
            built.set_barrier(be.clone());
            let rep = rebuild::index_missing_packs(be.as_ref(), &key, &built, |_, _| {})?;
            for (p, size, entries) in &kept {
                built.add_pack(p, *size, entries)?;
            }
            rep
        };
        swap_in(&fresh, &idx)?;
        // Opening as the writer finds nothing left to index (the new index has every pack).
        let repo = Self::open_inner(
            root,
            be,
            &|| Ok(pass.to_vec()),
            Access::Write,
            false,
            Some(lock),
        )?;
        Ok((repo, rep, kept.len()))
    }

    /// Caches the unlocked key in the kernel keyring for `timeout` (`wayback key unlock`).
    pub fn cache_key(&self, timeout: std::time::Duration) -> Result<()> {
        let sealed = read_config_header(self.be.as_ref(), &self.location)?;
        keycache::store(
            &keycache::entry_name(&sealed),
            &self.key_id,
            &self.key,
            timeout,
        )
    }

    /// Drops this repository's cached key (`wayback key lock`); whether one was cached.
    pub fn forget_cached_key(root: &Location) -> Result<bool> {
        let be = open_backend(root)?;
        let sealed = read_config_header(be.as_ref(), root)?;
        Ok(keycache::forget(&keycache::entry_name(&sealed)))
    }

    /// Where this repository's index lives (see [`index_path`]).
    pub fn index_path(&self) -> Result<PathBuf> {
        index_path(&self.location, &self.config.id)
    }

    /// Reads, decrypts and verifies one blob. Damage anywhere is `Corrupt` naming the pack.
    pub fn read_blob(&self, kind: BlobKind, id: &BlobId) -> Result<Vec<u8>> {
        // A hint (from an authenticated WAL record) is tried before the index: `wal-fetch`
        // then never opens RocksDB, whose open and background threads cost more than the
        // segment itself. A stale hint cannot give wrong bytes (the blob's AEAD binds its id);
        // if it fails, the index gets its say.
        let hint = (kind == BlobKind::Data)
            .then(|| self.hints.lock().expect("poisoned").get(id).copied())
            .flatten();
        if let Some(loc) = hint {
            let first = self.read_blob_at(kind, id, loc);
            if first.is_ok() {
                return first;
            }
            return match self.index.get(kind, id)? {
                Some(l) if l != loc => self.read_blob_at(kind, id, l),
                _ => first,
            };
        }
        let loc = match self.index.get(kind, id)? {
            Some(l) => l,
            None => self.find_unindexed(kind, id)?.ok_or_else(|| {
                Error::Corrupt(format!(
                    "{kind:?} blob {} is not in the index (missing pack?)",
                    id.short()
                ))
            })?,
        };
        match self.read_blob_at(kind, id, loc) {
            Ok(b) => Ok(b),
            Err(e) => {
                // A prune may have repacked the blob and deleted the pack this reader's index
                // still names: catch up with the writer and read the new copy.
                self.index.refresh()?;
                match self.index.get(kind, id)? {
                    Some(l) if l != loc => self.read_blob_at(kind, id, l),
                    _ => Err(e),
                }
            }
        }
    }

    /// Looks a blob up among packs the index does not know (written by a writer with another
    /// index: a root process keeps its own, see [`index_dir`]; or by a killed writer), reading
    /// headers of packs not seen before, at most once per [`RESCAN_EVERY`].
    fn find_unindexed(&self, kind: BlobKind, id: &BlobId) -> Result<Option<BlobLocation>> {
        let k = crate::crypto::blob_ad(kind, id);
        let mut u = self.unindexed.lock().expect("poisoned");
        if let Some(l) = u.blobs.get(&k) {
            return Ok(Some(*l));
        }
        if u.last_scan.is_some_and(|t| t.elapsed() < RESCAN_EVERY) {
            return Ok(None);
        }
        u.last_scan = Some(std::time::Instant::now());
        for p in rebuild::list_pack_files(self.be.as_ref())? {
            if u.scanned.contains(&p) || self.index.has_pack(&p)? {
                continue;
            }
            u.scanned.insert(p);
            match crate::pack::read_pack_header(self.be.as_ref(), &self.key, &p) {
                Ok(entries) => {
                    for e in entries {
                        let loc = BlobLocation {
                            pack: p,
                            offset: e.offset,
                            length: e.length,
                            raw_length: e.raw_length,
                        };
                        u.blobs.insert(crate::crypto::blob_ad(e.kind, &e.id), loc);
                    }
                }
                Err(e) => tracing::warn!(pack = %p, error = %e, "unindexed pack header unreadable"),
            }
        }
        Ok(u.blobs.get(&k).copied())
    }

    fn read_blob_at(&self, kind: BlobKind, id: &BlobId, loc: BlobLocation) -> Result<Vec<u8>> {
        let path = pack_path(&loc.pack);
        let sealed = self
            .be
            .get_range(&path, loc.offset as u64, loc.length as usize)
            .map_err(|e| match e {
                Error::NotFound(_) => Error::Corrupt(format!("pack {} is missing", loc.pack)),
                Error::Corrupt(m) => Error::Corrupt(format!("pack {}: {m}", loc.pack)),
                e => e,
            })?;
        open_blob(&self.key, kind, id, loc.raw_length, &sealed, &|| {
            format!("pack {}", loc.pack)
        })
    }

    /// Teaches the reader where data blobs live that the index may not know yet (WAL chunks are
    /// written by `wal-push` without the index, and their records carry their locations).
    pub fn add_location_hints(&self, hints: impl IntoIterator<Item = (BlobId, BlobLocation)>) {
        self.hints.lock().expect("poisoned").extend(hints);
    }

    /// Loads and decodes a tree.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        Tree::decode(&self.read_blob(BlobKind::Tree, id)?, id)
    }

    /// `Ok` unless this writer's lease was lost (see [`lease::Lease::check`]): then it must not
    /// publish or delete anything, since an exclusive taker (a prune) may be running.
    pub fn check_lease(&self) -> Result<()> {
        if let Some(l) = &*self.lease.lock().expect("lease poisoned") {
            l.check()?;
        }
        let mut w = self.watches.lock().expect("lease poisoned");
        w.retain(|w| w.check().is_some());
        w.iter().try_for_each(|w| w.check().unwrap_or(Ok(())))
    }

    /// Takes a new lease of the same kind when the one held was lost (a long-running agent
    /// between its jobs; a job that ran while it was lost has already failed to publish).
    pub fn ensure_lease(&self) -> Result<()> {
        let mut g = self.lease.lock().expect("lease poisoned");
        let Some(l) = g.as_ref() else { return Ok(()) };
        if l.check().is_ok() {
            return Ok(());
        }
        let kind = lease::LeaseKind::for_operation(lock::operation());
        let fresh =
            lease::Lease::acquire(self.be.clone(), &self.key, kind, lock::operation(), None)?;
        tracing::info!(
            lock = fresh.name(),
            "took a new lease after losing the old one"
        );
        *g = Some(fresh);
        Ok(())
    }

    /// An exclusive lease for `operation` beside this process's shared one (the agent's own
    /// prune): `Locked` while another lease is fresh. `None` when there is nothing to take: a
    /// local repository (its flock already makes this writer the only one) or a process that
    /// already holds an exclusive lease.
    pub fn exclusive_lease(&self, operation: &str) -> Result<Option<lease::Lease>> {
        let g = self.lease.lock().expect("lease poisoned");
        let Some(own) = g.as_ref() else {
            return Ok(None);
        };
        if lease::LeaseKind::for_operation(lock::operation()) == lease::LeaseKind::Exclusive {
            return Ok(None);
        }
        own.check()?;
        let ex = lease::Lease::acquire(
            self.be.clone(),
            &self.key,
            lease::LeaseKind::Exclusive,
            operation,
            Some(own.name()),
        )?;
        self.watches
            .lock()
            .expect("lease poisoned")
            .push(ex.watch());
        Ok(Some(ex))
    }

    /// Stores a snapshot manifest (the commit point of a backup); fills in its id. Refused
    /// once this writer's lease is lost ([`Repository::check_lease`]).
    pub fn save_snapshot(&self, snap: &mut Snapshot) -> Result<SnapshotId> {
        self.check_lease()?;
        snap.version = SNAPSHOT_VERSION;
        let plain = serde_json::to_vec(snap).expect("snapshot serializes");
        let id = SnapshotId(self.key.keyed_hash("snapshot", &plain));
        snap.id = id;
        self.be.put(
            &format!("snapshots/{}", id.to_hex()),
            &self.key.seal(SNAPSHOT_AD, &plain),
        )?;
        self.snapshots
            .lock()
            .expect("snapshot cache poisoned")
            .insert(id.to_hex(), snap.clone());
        Ok(id)
    }

    fn load_snapshot(&self, name: &str) -> Result<Snapshot> {
        let sealed = self.be.get(&format!("snapshots/{name}"))?;
        let plain = self
            .key
            .open(SNAPSHOT_AD, &sealed, &|| format!("snapshot {name}"))?;
        Snapshot::decode(&self.key, name, &plain)
    }

    /// All snapshots, oldest first. Re-lists `snapshots/` each call (cheap), so long-running
    /// readers see new snapshots; decoded manifests are cached for the process's life.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.snapshots_and_damage()?.0)
    }

    /// Like [`Repository::snapshots`], also returning the manifests that could not be read
    /// (name and error), so `check` can report a lost snapshot instead of skipping it.
    pub fn snapshots_and_damage(&self) -> Result<(Vec<Snapshot>, DamagedManifests)> {
        let names = self.be.list("snapshots")?;
        let mut damaged = Vec::new();
        let mut out = Vec::with_capacity(names.len());
        let mut fresh = false;
        for name in names {
            if SnapshotId::from_hex(&name).is_none() {
                continue;
            }
            let cached = self.snapshots.lock().expect("poisoned").get(&name).cloned();
            let s = match cached {
                Some(s) => s,
                None => match self.load_snapshot(&name) {
                    Ok(s) => {
                        fresh = true;
                        self.snapshots
                            .lock()
                            .expect("poisoned")
                            .insert(name, s.clone());
                        s
                    }
                    Err(e) => {
                        tracing::error!(snapshot = %name, error = %e, "unreadable snapshot manifest skipped");
                        damaged.push((name, e));
                        continue;
                    }
                },
            };
            out.push(s);
        }
        if fresh {
            // A new snapshot may reference blobs a running writer just indexed.
            self.index.refresh()?;
        }
        out.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok((out, damaged))
    }
}
