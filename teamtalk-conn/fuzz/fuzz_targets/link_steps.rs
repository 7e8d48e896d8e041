//! Arbitrary inputs and application calls against an outbound link.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_conn::fuzzing::run_link_steps(data));
