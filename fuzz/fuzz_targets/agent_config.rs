#![no_main]
//! Fuzz target `agent_config`: see `wayback::fuzzing::agent_config` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::agent_config(data));
