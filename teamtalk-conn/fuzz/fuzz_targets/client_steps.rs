//! Arbitrary server input and application calls against a client: no panic,
//! the driving contract holds, and every request ends exactly once.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_conn::fuzzing::run_client_steps(data));
