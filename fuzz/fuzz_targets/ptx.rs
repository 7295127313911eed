//! PTX loader fuzz target: `cargo +nightly fuzz run ptx -- emulator/tests/corpus/ptx` (from the
//! repository root). The seed corpus also runs under `cargo test` (emulator/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_emulator::fuzzing::ptx(data));
