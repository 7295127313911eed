//! `scripts/fuzz.sh` runs this over protocol/tests/corpus/handshake; the corpus also runs under
//! `cargo test` (protocol/tests/fuzz_corpus.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_protocol::fuzzing::handshake(data));
