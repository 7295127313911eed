//! `scripts/fuzz.sh` runs this over emulator/tests/corpus/fatbin; the corpus also runs under
//! `cargo test` (emulator/tests/fuzz_corpus.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_emulator::fuzzing::fatbin(data));
