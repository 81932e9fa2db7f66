#![no_main]
//! Fuzz target `agent_push`: see `wayback::fuzzing::agent_push` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::agent_push(data));
