//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by the test that
//! replays their seed corpus (`tests/fuzz_corpus.rs`, over `tests/corpus/<target>/`).

use crate::Module;

/// Feeds arbitrary bytes to the PTX loader (parse and lower, for compute capability 8.0).
/// Any input may be rejected with an error; none may panic, hang or exhaust memory.
pub fn ptx(data: &[u8]) {
    if let Ok(module) = Module::load(data, 80) {
        for k in module.kernels() {
            let _ = k.params_size();
        }
        let _ = module.globals().len();
    }
}

/// Feeds arbitrary bytes to the fatbin reader: every member listed, decompressed (LZ4 and
/// Zstandard, bounded), and the PTX the loader would pick. None may panic, hang or exhaust
/// memory.
pub fn fatbin(data: &[u8]) {
    if let Ok(entries) = crate::loader::entries(data) {
        for e in entries {
            let _ = e.bytes();
        }
    }
    let _ = crate::loader::extract_ptx(data, 80);
}
