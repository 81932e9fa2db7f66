#![no_main]
//! Fuzz target `pack_trailer`: see `wayback::fuzzing::pack_trailer` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::pack_trailer(data));
