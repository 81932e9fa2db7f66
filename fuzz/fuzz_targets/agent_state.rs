#![no_main]
//! Fuzz target `agent_state`: see `wayback::fuzzing::agent_state` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::agent_state(data));
