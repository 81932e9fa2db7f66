#![no_main]
//! Fuzz target `copy_state`: see `wayback::fuzzing::copy_state` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::copy_state(data));
