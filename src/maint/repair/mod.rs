//! `wayback repair`: rebuild what can be rebuilt after damage, and never make things worse.
//!
//! Like restic's `repair index|packs|snapshots`, in that order:
//! - `index` rebuilds the index from pack headers (`Repository::repair_index`, the same work
//!   as `index rebuild`, keeping what the old index knew of packs whose header is damaged);
//! - [`packs`] salvages the intact blobs of damaged packs into new packs and moves the damaged
//!   ones to the quarantine directory `damaged/`;
//! - [`snapshots`] writes, for each snapshot that lost data, a snapshot without the damaged
//!   files, tagged `repaired`.
//!
//! Each writes new objects first (fsynced), then retires old ones, under the writer lock.

pub mod packs;
pub mod snapshots;
