#![no_main]
//! Fuzz target `location`: see `wayback::fuzzing::location` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::location(data));
