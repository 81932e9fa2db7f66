#![no_main]
//! Fuzz target `key_file`: see `wayback::fuzzing::key_file` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::key_file(data));
