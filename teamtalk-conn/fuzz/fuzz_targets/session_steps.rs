//! Arbitrary inputs and application calls against client and server-peer sessions.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_conn::fuzzing::run_session_steps(data));
