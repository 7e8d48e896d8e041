//! Arbitrary bytes into a TLS server wrapper around a client session.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_conn::fuzzing::run_tls_server_bytes(data));
