//! Arbitrary steps against a client session behind a TLS server wrapper,
//! with an honest TLS client joining at `Connected` steps.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_conn::fuzzing::run_tls_session_steps(data));
