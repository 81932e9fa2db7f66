//! Archiving one file: PostgreSQL's `archive_command` path, where latency is the product.
//!
//! PostgreSQL's archiver runs one `archive_command` at a time, so a segment's push time bounds
//! how fast WAL can leave the machine (the live RPO) and, under a write-heavy load, whether
//! archiving keeps up at all. Every step here is chosen for that:
//! - fixed 1 MiB chunks (a WAL segment is never an edited copy of another, so content-defined
//!   cut points buy no deduplication and finding them cost ~8% of a push);
//! - worker threads each read a chunk and, while it is hot in their cache, compute its keyed
//!   id, its part of the unkeyed whole-file digest (a blake3 subtree; the parts merge into
//!   exactly what `b3sum` prints), and seal it (zstd level 1, AES); one thread only packs. The
//!   first version read and digested on one thread: under `pgbench -c 4` on 2 cores that thread
//!   was the bottleneck (median push 94 ms, now 77 ms; `scripts/bench-pg.sh`);
//! - buffers, zstd contexts and the pack image reused from one push to the next (fresh 1 MiB
//!   buffers cost page faults and zeroing: ~15% of a push's CPU in a profile);
//! - own packs, no index and no writer lock: archiving never waits for a running backup
//!   (`pg_basebackup -X none` itself waits for archiving, so waiting here could deadlock).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::names::{self, WalName};
use super::{read_record, record_ad, record_path, WalError, WalLocation, WalRecord};
use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind};
use crate::pack::{pack_path, PackWriter, Sealer, TARGET_PACK_SIZE};
use crate::repo::Repository;
use crate::timespec::now_ms;
use crate::tree::ChunkRef;

/// zstd level for WAL chunks: level 1 compresses pgbench WAL 10-14x at ~1 GB/s here, nearly as
/// well as 3 in about two thirds of the time.
const WAL_ZSTD_LEVEL: i32 = 1;

/// Chunk size for WAL files.
const WAL_CHUNK: usize = 1 << 20;

/// Outcome of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Newly archived.
    Stored,
    /// Already archived with identical content.
    AlreadyThere,
}

/// Archives one WAL file (see the module contract). The repository must be open for writing.
pub fn push(repo: &Repository, cluster: &str, path: &Path) -> Result<Pushed, WalError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WalError::BadName(path.display().to_string()))?
        .to_string();
    names::parse(&name).ok_or_else(|| WalError::BadName(name.clone()))?;
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    push_file(repo, cluster, &name, &f, path)
}

/// Archives the open file `f` under `name` (the agent receives files as descriptors, so it
/// reads exactly what the client could open, with the client's permissions).
pub fn push_file(
    repo: &Repository,
    cluster: &str,
    name: &str,
    f: &File,
    path: &Path,
) -> Result<Pushed, WalError> {
    push_with_origin(repo, cluster, name, f, path, None)
}

/// Where an archived file came from when it is not the file itself: `wayback copy` archives
/// another repository's copy, and the record keeps that copy's owner and push time (the
/// mount's modes, `wal status`'s age and the PITR window describe the original archiving,
/// not the copy run).
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// Owner, group and mode of the originally pushed file.
    pub owner: (u32, u32, u32),
    /// When it was originally archived (UTC ms).
    pub pushed: crate::timespec::TimeMs,
}

/// [`push_file`] with the record's owner and push time taken from `origin` when given (see
/// [`Origin`]); everything else (no-replace commit, conflict, other system) is the same.
pub fn push_with_origin(
    repo: &Repository,
    cluster: &str,
    name: &str,
    f: &File,
    path: &Path,
    origin: Option<Origin>,
) -> Result<Pushed, WalError> {
    super::check_cluster_name(cluster)?;
    let name = name.to_string();
    let kind = names::parse(&name).ok_or_else(|| WalError::BadName(name.clone()))?;
    if repo.be.size(&record_path(cluster, &name)).is_ok() {
        let (digest, _) = hash_file(f, path)?;
        return same_as_archived(repo, cluster, &name, digest);
    }
    if let WalName::Segment { .. } = kind {
        let mut page = [0u8; 40];
        if f.read_exact_at(&mut page, 0).is_ok() {
            if let Some(found) = super::system_id(&page) {
                check_system(repo, cluster, &name, found)?;
            }
        }
    }
    let level = repo.config.zstd_level.min(WAL_ZSTD_LEVEL);
    let mut scratch = Scratch::take(level);
    let stored = store_chunks(repo, f, path, &mut scratch);
    scratch.give_back();
    let mut s = stored?;
    let t = Instant::now();
    let rec = WalRecord {
        version: super::WAL_RECORD_VERSION,
        cluster: cluster.into(),
        name: name.clone(),
        size: s.size,
        digest: s.digest,
        content: s.content,
        locations: s.locations,
        pushed: origin.map_or_else(now_ms, |o| o.pushed),
        owner: match origin {
            Some(o) => o.owner,
            None => {
                use std::os::unix::fs::MetadataExt;
                let md = f.metadata().map_err(|e| Error::io("stat", path, e))?;
                (md.uid(), md.gid(), md.mode() & 0o7777)
            }
        },
    };
    let plain = serde_json::to_vec(&rec).expect("record serializes");
    // Committed without replacing: between the check above and here another push of the same
    // name may have won (two standbys promoting at once both push `00000002.history`). Its
    // acknowledged copy stays; ours is success only if it has the same bytes.
    let fresh = repo.be.put_new(
        &record_path(cluster, &name),
        &repo.key.seal(&record_ad(cluster, &name), &plain),
    )?;
    if !fresh {
        return same_as_archived(repo, cluster, &name, rec.digest);
    }
    s.times.record = t.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        cluster,
        name,
        seal_ms = ms(s.times.seal),
        store_ms = ms(s.times.store),
        record_ms = ms(s.times.record),
        "wal-push phases"
    );
    Ok(Pushed::Stored)
}

/// The answer for a name that is already archived: success when the archived copy has the
/// same content, a conflict (nothing replaced) when not.
fn same_as_archived(
    repo: &Repository,
    cluster: &str,
    name: &str,
    digest: String,
) -> Result<Pushed, WalError> {
    let old = read_record(repo, cluster, name)?;
    if old.digest == digest {
        Ok(Pushed::AlreadyThere)
    } else {
        Err(WalError::Conflict {
            cluster: cluster.into(),
            name: name.into(),
            archived: old.digest,
            new: digest,
        })
    }
}

/// Wall time per phase of one push, logged at debug level: the latency PostgreSQL's archiver
/// waits for is their sum, and which phase grows under load says what to optimize.
#[derive(Default)]
struct PushTimes {
    /// Reading, hashing and sealing chunks (workers), until the last is in the pack.
    seal: Duration,
    /// Writing packs (durable).
    store: Duration,
    /// Writing the record (durable).
    record: Duration,
}

/// A file's chunks, stored and durable, ready for its record.
struct Stored {
    size: u64,
    digest: String,
    content: Vec<ChunkRef>,
    locations: Vec<WalLocation>,
    times: PushTimes,
}

/// Buffers and zstd contexts kept between pushes (see the module notes).
struct Scratch {
    level: i32,
    /// Per worker: its zstd context and its plaintext chunk buffer.
    workers: Vec<(Sealer, Vec<u8>)>,
    /// Sealed-chunk buffers; as many as may be in flight.
    slots: Vec<Vec<u8>>,
    /// The last pack image, handed back for the next pack.
    pack: Vec<u8>,
}

/// Idle scratch sets; concurrent pushes (several clusters through one agent) take one each.
static SCRATCH: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());

impl Scratch {
    fn take(level: i32) -> Scratch {
        let idle = SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut s = idle.filter(|s| s.level == level).unwrap_or_else(|| {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
            Scratch {
                level,
                workers: (0..workers)
                    .map(|_| (Sealer::new(level), Vec::new()))
                    .collect(),
                slots: Vec::new(),
                pack: Vec::new(),
            }
        });
        // Enough sealed chunks in flight that no worker waits for this thread to put the
        // previous ones into the pack (a push that failed midway lost the ones it had out).
        let slots = 2 * s.workers.len() + 2;
        s.slots.resize_with(slots, Vec::new);
        s
    }

    /// Keeps at most two idle sets (~16 MB each with a typical pack image).
    fn give_back(self) {
        let mut idle = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 2 {
            idle.push(self);
        }
    }
}

/// One sealed chunk, from a worker to the packing thread.
struct Sealed {
    index: usize,
    id: BlobId,
    len: usize,
    /// The chunk's blake3 chaining value (the whole file's digest is merged from these), or,
    /// for a file of one chunk, the file's digest itself.
    hash: [u8; 32],
    bytes: Vec<u8>,
}

/// Stores the file's chunks in new packs (durable on return) and computes its digest.
///
/// Workers each claim the next chunk, read it, and while it is hot in their core's cache hash
/// it twice (keyed id; its part of the unkeyed whole-file digest, as a blake3 subtree) and seal
/// it. This thread only puts sealed chunks into the pack in file order and merges the digest.
/// No batch barriers: under a CPU-bound database load a barrier waits for the unluckiest worker.
/// The file must keep its size while it is read (PostgreSQL never changes an archived file);
/// one that does not is refused, so the archiver retries, rather than stored half old, half new.
fn store_chunks(repo: &Repository, f: &File, path: &Path, sc: &mut Scratch) -> Result<Stored> {
    let started = Instant::now();
    let mut times = PushTimes::default();
    let size = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let chunks = size.div_ceil(WAL_CHUNK as u64) as usize;
    let mut content: Vec<ChunkRef> = Vec::with_capacity(chunks);
    let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(chunks);
    // Per chunk: its index in `stored`. A chunk repeated within the file (zeroed tails of
    // switched segments) is stored once and its repeats point there.
    let mut slot: Vec<usize> = Vec::with_capacity(chunks);
    let mut stored_at: std::collections::HashMap<BlobId, usize> = Default::default();
    let mut stored: Vec<WalLocation> = Vec::new();
    let mut pw = PackWriter::with_buffer(std::mem::take(&mut sc.pack));
    let (free_tx, free_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
    for b in sc.slots.drain(..) {
        free_tx.send(b).expect("receiver alive");
    }
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<Sealed>>();
    let claim = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Buffers the workers took but had no chunk for.
    let spare: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let outcome = std::thread::scope(|s| -> Result<()> {
        for (sealer, plain) in sc.workers.iter_mut() {
            let (free, done) = (free_rx.clone(), done_tx.clone());
            let (claim, stop, spare) = (&claim, &stop, &spare);
            s.spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                // A buffer first, then a chunk: the lowest unfinished chunk is always with a
                // worker that can finish it, so buffers held for later chunks never deadlock.
                for mut out in free {
                    let i = claim.fetch_add(1, Relaxed);
                    if i >= chunks || stop.load(Relaxed) {
                        spare.lock().unwrap_or_else(|e| e.into_inner()).push(out);
                        break;
                    }
                    let r = seal_chunk(repo, f, path, size, i, sealer, plain, &mut out).map(
                        |(id, len, hash)| Sealed {
                            index: i,
                            id,
                            len,
                            hash,
                            bytes: out,
                        },
                    );
                    if r.is_err() {
                        stop.store(true, Relaxed);
                    }
                    if done.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Every way out of here ends the workers: no more buffers, and stop.
        let free_tx = free_tx;
        let _stop_on_exit = StopOnDrop(&stop);
        // Sealed chunks waiting for an earlier one, by index.
        let mut waiting: std::collections::BTreeMap<usize, Sealed> = Default::default();
        let mut next = 0usize;
        while next < chunks {
            let c = done_rx
                .recv()
                .map_err(|_| Error::Invalid("wal-push: sealing workers stopped".into()))??;
            waiting.insert(c.index, c);
            while let Some(c) = waiting.remove(&next) {
                next += 1;
                content.push(ChunkRef {
                    id: c.id,
                    len: c.len as u32,
                });
                hashes.push(c.hash);
                if let Some(&at) = stored_at.get(&c.id) {
                    slot.push(at);
                } else {
                    if !pw.is_empty() && pw.len() + c.bytes.len() > TARGET_PACK_SIZE {
                        let t = Instant::now();
                        let full = std::mem::replace(&mut pw, PackWriter::new());
                        pw = PackWriter::with_buffer(flush_pack(repo, full, &mut stored)?);
                        times.store += t.elapsed();
                    }
                    let at = stored.len() + pw.count();
                    stored_at.insert(c.id, at);
                    slot.push(at);
                    pw.add_sealed(BlobKind::Data, c.id, c.len as u32, &c.bytes);
                }
                let _ = free_tx.send(c.bytes);
            }
        }
        Ok(())
    });
    // Buffers back for the next push (those out when an error stopped it are dropped; the next
    // push tops them up).
    sc.slots.extend(free_rx.try_iter());
    sc.slots
        .extend(spare.into_inner().unwrap_or_else(|e| e.into_inner()));
    outcome?;
    // Grown since the size was taken: refuse rather than archive a prefix.
    let mut probe = [0u8; 1];
    if f.read_at(&mut probe, size)
        .map_err(|e| Error::io("read", path, e))?
        != 0
    {
        return Err(changed(path, size));
    }
    times.seal = started.elapsed().saturating_sub(times.store);
    let t = Instant::now();
    if !pw.is_empty() {
        sc.pack = flush_pack(repo, pw, &mut stored)?;
    }
    times.store += t.elapsed();
    let locations = slot.iter().map(|&i| stored[i]).collect();
    Ok(Stored {
        size,
        digest: file_digest(&hashes, size).to_hex().to_string(),
        content,
        locations,
        times,
    })
}

/// Tells the workers to stop claiming chunks when the packing thread leaves, however it leaves.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn changed(path: &Path, size: u64) -> Error {
    Error::Invalid(format!(
        "{} changed size while being archived (it had {size} bytes); not archived, retry",
        path.display()
    ))
}

/// Reads chunk `i` of a file of `size` bytes into `plain` and seals it into `out`; returns its
/// id, length and blake3 hash part (see [`Sealed::hash`]).
#[allow(clippy::too_many_arguments)]
fn seal_chunk(
    repo: &Repository,
    f: &File,
    path: &Path,
    size: u64,
    i: usize,
    sealer: &mut Sealer,
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(BlobId, usize, [u8; 32])> {
    let offset = i as u64 * WAL_CHUNK as u64;
    let len = (size - offset).min(WAL_CHUNK as u64) as usize;
    plain.resize(len, 0);
    let mut n = 0;
    while n < len {
        // pread at the chunk's position, whatever a shared descriptor's offset.
        match f.read_at(&mut plain[n..], offset + n as u64) {
            Ok(0) => return Err(changed(path, size)),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    let hash = chunk_hash(plain, offset, size);
    let id = repo.key.blob_id(plain);
    sealer.seal_into(&repo.key, BlobKind::Data, &id, plain, out);
    Ok((id, len, hash))
}

/// A chunk's part of the whole-file digest: its blake3 chaining value as the subtree at
/// `offset`, or, when it is the whole file, the file's blake3 itself.
fn chunk_hash(chunk: &[u8], offset: u64, size: u64) -> [u8; 32] {
    use blake3::hazmat::HasherExt;
    if size <= WAL_CHUNK as u64 {
        *blake3::hash(chunk).as_bytes()
    } else {
        blake3::Hasher::new()
            .set_input_offset(offset)
            .update(chunk)
            .finalize_non_root()
    }
}

/// The unkeyed blake3 of a whole file (what `b3sum` prints) from its chunks' hash parts: the
/// chunks are blake3 subtrees (1 MiB, a power of two, each starting at a multiple of its size),
/// merged in blake3's left-balanced tree shape.
fn file_digest(parts: &[[u8; 32]], size: u64) -> blake3::Hash {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, Mode};
    // The two children of a node over `len` bytes (more than one chunk).
    fn halves(parts: &[[u8; 32]], len: u64) -> ([u8; 32], [u8; 32]) {
        let left = left_subtree_len(len);
        let n = (left / WAL_CHUNK as u64) as usize;
        (subtree(&parts[..n], left), subtree(&parts[n..], len - left))
    }
    fn subtree(parts: &[[u8; 32]], len: u64) -> [u8; 32] {
        if let [one] = parts {
            return *one;
        }
        let (l, r) = halves(parts, len);
        merge_subtrees_non_root(&l, &r, Mode::Hash)
    }
    match parts {
        [] => blake3::hash(b""),
        [whole] => blake3::Hash::from_bytes(*whole),
        _ => {
            let (l, r) = halves(parts, size);
            merge_subtrees_root(&l, &r, Mode::Hash)
        }
    }
}

/// Writes a finished pack (durable on return), appends its blobs' locations, and hands back the
/// image buffer for reuse.
fn flush_pack(
    repo: &Repository,
    pw: PackWriter,
    locations: &mut Vec<WalLocation>,
) -> Result<Vec<u8>> {
    let (id, image, entries) = pw.finish(&repo.key);
    repo.be.put(&pack_path(&id), &image)?;
    locations.extend(entries.iter().map(|e| WalLocation {
        pack: id,
        offset: e.offset,
        length: e.length,
    }));
    Ok(image)
}

/// Digest and size of a file (to compare a repeated push with the archived copy).
fn hash_file(f: &File, path: &Path) -> Result<(String, u64)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read_at(&mut buf, n)
            .map_err(|e| Error::io("read", path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().to_hex().to_string(), n))
}

/// Associated data of a cluster's sealed `.system` object.
const SYSTEM_AD: &[u8] = b"wayback-wal-system-v1";

/// The database system id in the opened plaintext of `wal/<cluster>/.system` at `path` (its
/// first 8 bytes, little-endian; see docs/format.md). Public for the fuzz target.
pub fn decode_system(plain: &[u8], path: &str) -> Result<u64> {
    plain
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| Error::Corrupt(format!("{path}: short")))
}

/// Records the cluster's database system id on its first segment and refuses segments of any
/// other system afterwards.
fn check_system(repo: &Repository, cluster: &str, name: &str, found: u64) -> Result<(), WalError> {
    let p = format!("wal/{cluster}/.system");
    match repo.be.get(&p) {
        Ok(raw) => {
            let plain = repo.key.open(SYSTEM_AD, &raw, &|| p.to_string())?;
            let expected = decode_system(&plain, &p)?;
            if expected != found {
                return Err(WalError::OtherCluster {
                    cluster: cluster.into(),
                    name: name.into(),
                    expected,
                    found,
                });
            }
            Ok(())
        }
        Err(Error::NotFound(_)) => {
            let fresh = repo
                .be
                .put_new(&p, &repo.key.seal(SYSTEM_AD, &found.to_le_bytes()))?;
            if fresh {
                Ok(())
            } else {
                // Another first segment won the race: check against what it recorded.
                check_system(repo, cluster, name, found)
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[path = "push_tests.rs"]
mod tests;
