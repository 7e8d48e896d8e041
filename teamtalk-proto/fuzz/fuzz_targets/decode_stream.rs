//! Arbitrary bytes, in arbitrary chunks, through the streaming decoder and the typed decode.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamtalk_proto::fuzzing::decode_stream(data));
