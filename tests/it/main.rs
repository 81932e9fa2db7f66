//! Integration tests of the `wayback` binary, built as one test binary: each module is one
//! area (shared fixtures in `common`).

mod agent;
mod archive;
mod bitrot;
mod common;
mod copy;
mod core;
mod damage;
mod diff;
mod fault;
mod forget;
mod fuzz_corpus;
mod hostile;
mod integrity;
mod killmatrix;
mod monitor;
mod mount;
mod ops;
mod pg;
mod pgat;
mod pitr;
mod privilege;
mod prune;
mod repair;
mod s3;
mod s3_ops;
mod s3_pitr;
mod s3_writers;
mod wal;
