#![no_main]
//! Fuzz target `tree`: see `wayback::fuzzing::tree` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::tree(data));
