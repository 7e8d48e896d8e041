//! Arbitrary bytes through the reader of the SQLite store's message log (what recovery reads after a crash).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| daemons::fuzzing::run_message_log(data));
