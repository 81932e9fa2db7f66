#![no_main]
//! Fuzz target `config`: see `wayback::fuzzing::config` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::config(data));
