#![no_main]
//! Fuzz target `agent_control`: see `wayback::fuzzing::agent_control` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::agent_control(data));
