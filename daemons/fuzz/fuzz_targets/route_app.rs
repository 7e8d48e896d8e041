//! route_server's App under arbitrary msg_servers connecting, leaving,
//! reporting presence, subscribing and relaying.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| daemons::fuzzing::run_route_app(data));
