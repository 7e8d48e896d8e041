//! login_server's App under arbitrary msg_servers, legacy clients and HTTP
//! requests.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| daemons::fuzzing::run_login_app(data));
