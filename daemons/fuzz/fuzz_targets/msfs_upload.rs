//! Arbitrary forms and request paths through msfs's upload parser and name grammar.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_daemons_fuzz::run_msfs_upload(data));
