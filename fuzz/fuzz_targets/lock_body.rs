#![no_main]
//! Fuzz target `lock_body`: see `wayback::fuzzing::lock_body` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::lock_body(data));
