#![no_main]
//! Fuzz target `s3_credentials`: see `wayback::fuzzing::s3_credentials` for the input and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wayback::fuzzing::s3_credentials(data));
