//! wayback: a versioned, encrypted, deduplicated backup repository whose every moment is a
//! directory.
//!
//! Dependency direction (no cycles): `cli -> ingest/maint/restore/fsview -> snapshot/tree ->
//! index/pack -> repo/crypto`. See `../shared/design.md` and `docs/format.md`.
#![warn(missing_docs)]

pub mod agent;
pub mod audit;
pub mod chunker;
pub mod cli;
pub mod copy;
pub mod crypto;
pub mod diff;
pub mod error;
pub mod fsview;
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
pub mod index;
pub mod ingest;
pub mod maint;
pub mod pack;
pub mod pg;
pub mod repo;
pub mod restore;
pub mod secrets;
pub mod snapshot;
pub mod timespec;
pub mod tree;
pub mod wal;

pub use error::{Error, Result};
