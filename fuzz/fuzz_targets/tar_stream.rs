#![no_main]
//! Fuzz target `tar_stream`: see `wayback::fuzzing::tar_stream` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::tar_stream(data));
