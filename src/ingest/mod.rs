//! The archiver pipeline: chunks in, packs out.
//!
//! ```text
//! walkers: read -> chunk -> keyed blake3 id -> dedup (pending set + index)
//!     -> new blobs -> N workers: zstd + AES-GCM-SIV -> packer: pack image
//!     -> flusher(s): put (fsync) -> index      (1 locally, 2 to an object store)
//! ```
//! Why this split: chunking and hashing are sequential per stream and fast; compression and
//! encryption are the CPU-heavy part and parallelize per blob, so they use every core. A file
//! tree is walked by a pool of threads (`fs`), one file per thread at a time; a stream has one
//! walker. Channels are bounded, so memory stays bounded whatever the input size. Any stage
//! that fails closes its channel, so the others stop instead of hanging; the snapshot manifest
//! is written only after `Saver` finished and every pack is durable and indexed.

pub mod fs;
pub mod stream;
pub mod tar;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind};
use crate::pack::{pack_path, seal_blob, PackWriter, SealedBlob};
use crate::repo::Repository;
use crate::tree::Tree;

/// Live counters of a running backup, read by the progress display.
#[derive(Default, Debug)]
pub struct Counters {
    /// Entries processed.
    pub entries: AtomicU64,
    /// Bytes read from the source.
    pub bytes_read: AtomicU64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: AtomicU64,
    /// Stored bytes of new blobs.
    pub bytes_stored: AtomicU64,
    /// Blobs found already stored.
    pub blobs_dedup: AtomicU64,
    /// New blobs.
    pub blobs_new: AtomicU64,
}

struct Job {
    kind: BlobKind,
    id: BlobId,
    data: Vec<u8>,
}

/// Hands blobs to the pipeline. Only valid inside [`with_saver`].
pub struct Saver<'r> {
    repo: &'r Repository,
    tx: Sender<Job>,
    pending: Arc<Mutex<HashSet<(BlobKind, BlobId)>>>,
    failed: Arc<AtomicBool>,
    /// Counters shared with the progress display.
    pub counters: Arc<Counters>,
}

impl Saver<'_> {
    /// Stores `data` unless a blob with the same id exists; returns the id.
    pub fn save(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = self.repo.key.blob_id(data);
        self.save_as(kind, id, || data.to_vec())
    }

    /// [`Saver::save`] of a buffer the caller no longer needs: a new blob is handed to the
    /// sealers without a copy (a small file is read into a buffer of its own).
    pub fn save_owned(&self, kind: BlobKind, data: Vec<u8>) -> Result<BlobId> {
        let id = self.repo.key.blob_id(&data);
        self.save_as(kind, id, || data)
    }

    /// Sends the blob `id` unless it is stored or pending. Walkers run in parallel, so the
    /// claim is the insert into `pending`: of two threads saving the same new blob one sends
    /// it, the other counts a dedup. `pending` is asked first: a flusher indexes a pack
    /// before it clears its blobs from `pending`, so a blob is always found in one of them.
    fn save_as(
        &self,
        kind: BlobKind,
        id: BlobId,
        data: impl FnOnce() -> Vec<u8>,
    ) -> Result<BlobId> {
        if self.is_pending(kind, &id)
            || self.repo.index.contains(kind, &id)?
            || !self.pending.lock().expect("poisoned").insert((kind, id))
        {
            self.counters.blobs_dedup.fetch_add(1, Ordering::Relaxed);
            return Ok(id);
        }
        self.send(kind, id, data())?;
        Ok(id)
    }

    /// Encodes and stores a tree.
    pub fn save_tree(&self, tree: &mut Tree) -> Result<BlobId> {
        let bytes = tree.encode();
        self.save(BlobKind::Tree, &bytes)
    }

    /// True when a blob with this id was handed to the pipeline and is not yet durable
    /// (`copy` checks ids it learnt from elsewhere before it references them).
    pub fn is_pending(&self, kind: BlobKind, id: &BlobId) -> bool {
        self.pending
            .lock()
            .expect("poisoned")
            .contains(&(kind, *id))
    }

    fn send(&self, kind: BlobKind, id: BlobId, data: Vec<u8>) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::Invalid(
                "storage pipeline stopped after an error".into(),
            ));
        }
        self.counters.blobs_new.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.tx
            .send(Job { kind, id, data })
            .map_err(|_| Error::Invalid("storage pipeline stopped after an error".into()))
    }
}

/// Runs `f` with a [`Saver`]; returns after every blob `f` saved is durable and indexed.
pub fn with_saver<T>(
    repo: &Repository,
    counters: Arc<Counters>,
    f: impl FnOnce(&Saver) -> Result<T>,
) -> Result<T> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(1);
    let (job_tx, job_rx) = bounded::<Job>(workers * 2);
    let (blob_tx, blob_rx) = bounded::<SealedBlob>(workers * 2);
    let pending = Arc::new(Mutex::new(HashSet::new()));
    let failed = Arc::new(AtomicBool::new(false));
    let level = repo.config.zstd_level;
    std::thread::scope(|s| {
        for _ in 0..workers {
            let rx = job_rx.clone();
            let tx = blob_tx.clone();
            let key = repo.key.clone();
            s.spawn(move || {
                for job in rx {
                    let sealed = seal_blob(&key, job.kind, job.id, &job.data, level);
                    if tx.send(sealed).is_err() {
                        break;
                    }
                }
            });
        }
        drop(job_rx);
        drop(blob_tx);
        let packer = {
            let pending = pending.clone();
            let failed = failed.clone();
            let counters = counters.clone();
            s.spawn(move || {
                let r = run_packer(repo, blob_rx, &pending, &counters);
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                r
            })
        };
        let saver = Saver {
            repo,
            tx: job_tx,
            pending: pending.clone(),
            failed: failed.clone(),
            counters,
        };
        let out = f(&saver);
        drop(saver);
        let packed = packer
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("packer thread panicked".into())));
        match (out, packed) {
            // Both failed: the packer's error is the cause (a full disk, an I/O error), the
            // walker's is almost always only "the pipeline stopped" that it then ran into.
            (Err(_), Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(v), Ok(())) => Ok(v),
        }
    })
}

/// Packs uploaded at once to a remote store: a PUT of a 16 MiB pack to a replicated object
/// store is a long round trip that a single flusher would serialize behind sealing; a local
/// put is a write and an fsync, one at a time beside the packer is enough.
const REMOTE_FLUSHERS: usize = 2;

fn run_packer(
    repo: &Repository,
    rx: Receiver<SealedBlob>,
    pending: &Mutex<HashSet<(BlobKind, BlobId)>>,
    counters: &Counters,
) -> Result<()> {
    let flushers = if repo.be.local_root().is_some() {
        1
    } else {
        REMOTE_FLUSHERS
    };
    // Sealing goes on while full packs are stored: before, the packer wrote each pack
    // itself and the workers stalled on the full channel for the whole put + fsync.
    let (pack_tx, pack_rx) = bounded::<PackWriter>(1);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..flushers)
            .map(|_| {
                let (pack_rx, failed) = (pack_rx.clone(), &failed);
                s.spawn(move || -> Result<()> {
                    for pw in pack_rx {
                        if let Err(e) = flush_pack(repo, pw, pending) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        drop(pack_rx);
        // Trees go into packs of their own (as restic's): a walk of a snapshot (ls -R, the
        // mount's ls -lR, restore's and diff's traversal) then reads a few compact tree packs
        // instead of one window of every data pack. Measured on Garage, a 22k-file tree: ls -R
        // made 177 window fetches in 2.05 s with trees beside the data.
        let mut data = PackWriter::new();
        let mut trees = PackWriter::new();
        for blob in rx {
            counters
                .bytes_stored
                .fetch_add(blob.bytes.len() as u64, Ordering::Relaxed);
            let pw = match blob.kind {
                BlobKind::Tree => &mut trees,
                BlobKind::Data => &mut data,
            };
            pw.add(&blob);
            if pw.is_full()
                && (failed.load(Ordering::Relaxed) || pack_tx.send(std::mem::take(pw)).is_err())
            {
                // A flusher failed: its error is returned below.
                break;
            }
        }
        for pw in [data, trees] {
            if !pw.is_empty() && !failed.load(Ordering::Relaxed) {
                let _ = pack_tx.send(pw);
            }
        }
        drop(pack_tx);
        let mut first = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("pack flusher thread panicked".into())));
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

fn flush_pack(
    repo: &Repository,
    pw: PackWriter,
    pending: &Mutex<HashSet<(BlobKind, BlobId)>>,
) -> Result<()> {
    let (id, image, entries) = pw.finish(&repo.key);
    repo.be.put(&pack_path(&id), &image)?;
    repo.index.add_pack(&id, image.len() as u64, &entries)?;
    tracing::debug!(pack = %id, blobs = entries.len(), bytes = image.len(), "pack stored");
    let mut p = pending.lock().expect("poisoned");
    for e in &entries {
        p.remove(&(e.kind, e.id));
    }
    Ok(())
}
