#![no_main]
//! Fuzz target `snapshot`: see `wayback::fuzzing::snapshot` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::snapshot(data));
