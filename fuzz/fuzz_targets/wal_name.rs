#![no_main]
//! Fuzz target `wal_name`: see `wayback::fuzzing::wal_name` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::wal_name(data));
