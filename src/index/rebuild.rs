//! Recreating the index from packs alone.

use crate::crypto::MasterKey;
use crate::error::Result;
use crate::id::PackId;
use crate::index::Index;
use crate::pack::{pack_path, read_pack_header};
use crate::repo::backend::Backend;

/// Every pack file in the repository.
pub fn list_pack_files(be: &dyn Backend) -> Result<Vec<PackId>> {
    let mut out = Vec::new();
    for dir in be.list("packs")? {
        for name in be.list(&format!("packs/{dir}"))? {
            if let Some(id) = PackId::from_hex(&name) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// What indexing unknown packs found.
#[derive(Default, Debug)]
pub struct ScanReport {
    /// Packs newly recorded.
    pub added: usize,
    /// Packs whose header could not be read (damaged), with the reason.
    pub damaged: Vec<(PackId, String)>,
    /// Packs the index knew that are gone from `packs/` (deleted by a prune that ran with
    /// another index), now forgotten.
    pub dropped: usize,
}

/// Records every pack not yet in the index (all of them after a wipe), and forgets packs that
/// are gone. Used by `index rebuild` and at writer start: packs a killed writer finished are
/// reused instead of written again, and a writer never deduplicates against a pack a prune
/// deleted while this index was not looking (a root process keeps an index of its own).
pub fn index_missing_packs(
    be: &dyn Backend,
    key: &MasterKey,
    idx: &Index,
    mut progress: impl FnMut(usize, usize),
) -> Result<ScanReport> {
    let packs = list_pack_files(be)?;
    let mut rep = ScanReport::default();
    for (i, p) in packs.iter().enumerate() {
        progress(i, packs.len());
        if idx.has_pack(p)? {
            continue;
        }
        match read_pack_header(be, key, p) {
            Ok(entries) => {
                let size = be.size(&pack_path(p))?;
                idx.add_pack(p, size, &entries)?;
                rep.added += 1;
            }
            Err(e) => {
                tracing::warn!(pack = %p, error = %e, "pack header unreadable; not indexed");
                rep.damaged.push((*p, e.to_string()));
            }
        }
    }
    progress(packs.len(), packs.len());
    let on_disk: std::collections::HashSet<PackId> = packs.into_iter().collect();
    let vanished: std::collections::HashSet<PackId> = idx
        .packs()?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !on_disk.contains(p))
        .collect();
    if !vanished.is_empty() {
        idx.forget_packs(&vanished)?;
        tracing::info!(packs = vanished.len(), "forgot packs that were deleted");
        rep.dropped = vanished.len();
    }
    Ok(rep)
}

/// A pack with its size on disk and the blob entries an index holds for it.
pub type KeptPack = (PackId, u64, Vec<crate::pack::BlobEntry>);

/// The entries the index at `index_path` holds for packs on disk whose header cannot be read
/// (see `Repository::repair_index`). Best effort: an index that does not open (it may be what
/// is damaged) yields nothing, with a warning.
pub fn entries_of_damaged_packs(
    be: &dyn Backend,
    key: &MasterKey,
    index_path: &std::path::Path,
) -> Result<Vec<KeptPack>> {
    let mut damaged = std::collections::HashMap::new();
    for p in list_pack_files(be)? {
        match read_pack_header(be, key, &p) {
            Ok(_) | Err(crate::error::Error::NotFound(_)) => {}
            Err(_) => {
                damaged.insert(p, be.size(&pack_path(&p))?);
            }
        }
    }
    if damaged.is_empty() {
        return Ok(Vec::new());
    }
    let old = match Index::open_writer(index_path) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "old index does not open; nothing carried over");
            return Ok(Vec::new());
        }
    };
    let mut by_pack: std::collections::HashMap<PackId, Vec<crate::pack::BlobEntry>> =
        Default::default();
    let walked = old.for_each_blob(|kind, id, loc| {
        if damaged.contains_key(&loc.pack) {
            by_pack
                .entry(loc.pack)
                .or_default()
                .push(crate::pack::BlobEntry {
                    kind,
                    id: *id,
                    offset: loc.offset,
                    length: loc.length,
                    raw_length: loc.raw_length,
                });
        }
        Ok(())
    });
    if let Err(e) = walked {
        tracing::warn!(error = %e, "old index unreadable; nothing carried over");
        return Ok(Vec::new());
    }
    Ok(by_pack
        .into_iter()
        .map(|(p, es)| (p, damaged[&p], es))
        .collect())
}
