#![no_main]
//! Fuzz target `wal_system`: see `wayback::fuzzing::wal_system` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::wal_system(data));
