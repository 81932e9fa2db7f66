//! Integration tests of the `wayback` binary, built as one test binary: each module is one
//! area (shared fixtures in `common`).

mod agent;
mod archive;
mod common;
mod core;
mod damage;
mod diff;
mod hostile;
mod mount;
mod pg;
mod pgat;
mod pitr;
mod wal;
