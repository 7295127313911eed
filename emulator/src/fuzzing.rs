//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by the test that
//! replays their seed corpus (`tests/fuzz_corpus.rs`, over `tests/corpus/ptx/`).

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
