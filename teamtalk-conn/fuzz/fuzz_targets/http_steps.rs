//! Arbitrary bytes, requests, responses, backlogs and deadlines against an HTTP connection.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_conn::fuzzing::run_http_steps(data));
