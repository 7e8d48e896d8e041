//! msg_server's App under arbitrary client sessions, logins, client PDUs,
//! upstream links and their replies, route_server relays and ticks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| daemons::fuzzing::run_msg_app(data));
