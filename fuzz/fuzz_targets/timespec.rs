#![no_main]
//! Fuzz target `timespec`: see `wayback::fuzzing::timespec` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::timespec(data));
