//! `cargo +nightly fuzz run frames -- protocol/tests/corpus/frames`
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_protocol::fuzzing::frames(data));
