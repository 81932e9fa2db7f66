//! `wayback repair packs`: salvage the intact blobs of damaged packs, then retire them.
//!
//! A pack's file name is the unkeyed blake3 of its bytes, so a pack is damaged exactly when its
//! bytes no longer hash to its name (flipped, truncated or extended). For each damaged pack the
//! blobs are located by every source that knows them: its own header (if it still
//! authenticates), the index (which may still remember a pack whose header is gone), and WAL
//! records (which carry the locations of their chunks). Each located blob is decrypted and
//! re-hashed; those that verify are copied, still sealed, into new packs. Then, and only then,
//! the damaged pack moves to `damaged/<pack id>` (a quarantine: never deleted by wayback, so a
//! person or a future tool can still look at it) and the index forgets it.
//!
//! Order (each step durable before the next, so a crash anywhere loses nothing): new packs
//! (fsynced) and their index entries; the quarantine copy (fsynced); the index forgets the
//! damaged pack; the damaged pack's file goes.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind, PackId};
use crate::index::rebuild::list_pack_files;
use crate::pack::{
    decode_entries, decode_trailer, open_blob, pack_path, BlobEntry, PackWriter, HEADER_AD,
    TRAILER_LEN,
};
use crate::repo::Repository;

/// Directory damaged packs are moved to (optional; see docs/format.md).
pub const QUARANTINE_DIR: &str = "damaged";

/// What `repair packs` found and did.
#[derive(Serialize, Debug, Default)]
pub struct PacksReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Packs read and hashed.
    pub packs_read: usize,
    /// Packs whose bytes do not match their name, with what became of their blobs.
    pub damaged: Vec<DamagedPack>,
    /// New packs written with salvaged blobs.
    pub packs_written: usize,
}

impl PacksReport {
    /// Blobs that could not be salvaged from any damaged pack.
    pub fn lost_blobs(&self) -> usize {
        self.damaged.iter().map(|d| d.lost.len()).sum()
    }

    /// One line for the audit log.
    pub fn summary(&self) -> String {
        format!(
            "{} damaged pack(s) retired to {QUARANTINE_DIR}/, {} blob(s) salvaged into {} new \
             pack(s), {} lost",
            self.damaged.len(),
            self.damaged.iter().map(|d| d.salvaged).sum::<usize>(),
            self.packs_written,
            self.lost_blobs()
        )
    }
}

/// One damaged pack.
#[derive(Serialize, Debug)]
pub struct DamagedPack {
    /// Pack id (hex).
    pub pack: String,
    /// What is wrong with it (header unreadable, or only some blobs).
    pub why: String,
    /// Blobs located in it (by header, index or WAL records).
    pub located: usize,
    /// Blobs that verified and were copied to a new pack (or would be, in a dry run).
    pub salvaged: usize,
    /// Blobs that failed to verify: `kind:id` (hex).
    pub lost: Vec<String>,
    /// Where the damaged pack now is (`damaged/<id>`); `None` in a dry run.
    pub quarantined: Option<String>,
}

/// Runs `repair packs`. The repository must be open for writing.
pub fn repair_packs(
    repo: &Repository,
    dry_run: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<PacksReport> {
    let mut rep = PacksReport {
        dry_run,
        ..PacksReport::default()
    };
    let packs = list_pack_files(repo.be.as_ref())?;
    // Filled on the first damaged pack: most runs find none and never pay for them.
    let mut known: Option<HashMap<PackId, Vec<BlobEntry>>> = None;
    for (i, p) in packs.iter().enumerate() {
        progress(&format!("reading pack {}/{}", i + 1, packs.len()));
        let image = match repo.be.get(&pack_path(p)) {
            Ok(b) => b,
            // Deleted since the listing (nothing else deletes under the writer lock, but a
            // listing is only a moment).
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        rep.packs_read += 1;
        if PackId(*blake3::hash(&image).as_bytes()) == *p {
            continue;
        }
        let known = match &mut known {
            Some(k) => k,
            None => known.insert(other_locations(repo)?),
        };
        let d = salvage(
            repo,
            p,
            &image,
            known.remove(p).unwrap_or_default(),
            dry_run,
        )?;
        rep.packs_written += d.1;
        rep.damaged.push(d.0);
    }
    Ok(rep)
}

/// Where the index and the WAL records say blobs are, per pack: what locates the blobs of a
/// pack whose own header is damaged.
fn other_locations(repo: &Repository) -> Result<HashMap<PackId, Vec<BlobEntry>>> {
    let mut out: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
    repo.index.for_each_blob(|kind, id, loc| {
        out.entry(loc.pack).or_default().push(BlobEntry {
            kind,
            id: *id,
            offset: loc.offset,
            length: loc.length,
            raw_length: loc.raw_length,
        });
        Ok(())
    })?;
    for cluster in crate::wal::clusters(repo.be.as_ref())? {
        for name in crate::wal::list(repo.be.as_ref(), &cluster)? {
            // A damaged record is check's to report; it locates nothing.
            let Ok(rec) = crate::wal::read_record(repo, &cluster, &name) else {
                continue;
            };
            for (c, l) in rec.content.iter().zip(&rec.locations) {
                out.entry(l.pack).or_default().push(BlobEntry {
                    kind: BlobKind::Data,
                    id: c.id,
                    offset: l.offset,
                    length: l.length,
                    raw_length: c.len,
                });
            }
        }
    }
    Ok(out)
}

/// The entries of a pack image's own header, or why they cannot be read.
fn own_header(repo: &Repository, p: &PackId, image: &[u8]) -> Result<Vec<BlobEntry>> {
    if image.len() < TRAILER_LEN {
        return Err(Error::Corrupt(format!(
            "pack {p}: {} bytes, shorter than a trailer",
            image.len()
        )));
    }
    let (hlen, _) = decode_trailer(p, &image[image.len() - TRAILER_LEN..])?;
    let data_end = image
        .len()
        .checked_sub(TRAILER_LEN + hlen as usize)
        .ok_or_else(|| Error::Corrupt(format!("pack {p}: header longer than the pack")))?;
    let plain = repo.key.open(
        HEADER_AD,
        &image[data_end..image.len() - TRAILER_LEN],
        &|| format!("pack {p} header"),
    )?;
    decode_entries(p, &plain, data_end as u64)
}

/// Salvages one damaged pack; returns its report and the number of new packs written.
fn salvage(
    repo: &Repository,
    p: &PackId,
    image: &[u8],
    others: Vec<BlobEntry>,
    dry_run: bool,
) -> Result<(DamagedPack, usize)> {
    let (mut candidates, why) = match own_header(repo, p, image) {
        Ok(es) => (es, "content does not match its name".to_string()),
        Err(e) => (Vec::new(), format!("header unreadable: {e}")),
    };
    candidates.extend(others);
    // Each blob once, however many sources located it; a blob located at two places is
    // salvaged from the first that verifies.
    let mut by_blob: BTreeMap<(u8, BlobId), Vec<BlobEntry>> = BTreeMap::new();
    let mut seen: HashSet<(u8, BlobId, u32, u32)> = HashSet::new();
    for e in candidates {
        if seen.insert((e.kind.to_byte(), e.id, e.offset, e.length)) {
            by_blob.entry((e.kind.to_byte(), e.id)).or_default().push(e);
        }
    }
    let mut pw = PackWriter::new();
    let mut written = 0;
    let mut salvaged = 0;
    let mut lost = Vec::new();
    for ((_, id), places) in &by_blob {
        let good = places.iter().find(|e| {
            let end = e.offset as usize + e.length as usize;
            end <= image.len()
                && open_blob(
                    &repo.key,
                    e.kind,
                    &e.id,
                    e.raw_length,
                    &image[e.offset as usize..end],
                    &|| format!("damaged pack {p}"),
                )
                .is_ok()
        });
        match good {
            Some(e) => {
                salvaged += 1;
                let sealed = &image[e.offset as usize..e.offset as usize + e.length as usize];
                pw.add_sealed(e.kind, e.id, e.raw_length, sealed);
                if !dry_run && pw.is_full() {
                    flush(repo, std::mem::take(&mut pw))?;
                    written += 1;
                }
            }
            None => lost.push(format!("{:?}:{}", places[0].kind, id.to_hex())),
        }
    }
    let mut d = DamagedPack {
        pack: p.to_hex(),
        why,
        located: by_blob.len(),
        salvaged,
        lost,
        quarantined: None,
    };
    if dry_run {
        return Ok((d, 0));
    }
    if !pw.is_empty() {
        flush(repo, pw)?;
        written += 1;
    }
    // The salvaged blobs are durable and indexed in their new packs: retire the damaged one.
    let q = format!("{QUARANTINE_DIR}/{}", p.to_hex());
    repo.be.put(&q, image)?;
    repo.index.forget_packs(&HashSet::from([*p]))?;
    repo.be.delete(&pack_path(p))?;
    tracing::warn!(pack = %p, quarantine = %q, salvaged, lost = d.lost.len(), "damaged pack retired");
    d.quarantined = Some(q);
    Ok((d, written))
}

fn flush(repo: &Repository, pw: PackWriter) -> Result<()> {
    let (id, image, entries) = pw.finish(&repo.key);
    repo.be.put(&pack_path(&id), &image)?;
    repo.index.add_pack(&id, image.len() as u64, &entries)
}
