#![no_main]
//! Fuzz target `pack`: see `wayback::fuzzing::pack` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::pack(data));
