#![no_main]
//! Fuzz target `blob_open`: see `wayback::fuzzing::blob_open` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::blob_open(data));
