//! Arbitrary bytes as the body of every known command.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_proto::fuzzing::decode_bodies(data));
