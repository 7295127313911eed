//! What the virtual GPU needs of the PTX tools: which kernels may be split (and their
//! footprints), and the guarded rewrite its members load.

pub use remora_emulator::footprint::{
    plan_in, split_dim, Analysis, KernelFootprint, RangeFootprint, Region,
};
pub use remora_emulator::guard::{guard_ptx, GUARD_PARAMS};

/// The kernels of PTX `text`, each with its analysis, by name; one unnamed entry saying why
/// when the text cannot be read.
pub fn analyze_ptx(text: &str) -> Vec<(String, Analysis)> {
    match remora_emulator::Module::from_ptx(text) {
        Ok(m) => m.footprints(),
        Err(e) => vec![(
            String::new(),
            Analysis::NotSplittable(format!("its PTX could not be read: {e}")),
        )],
    }
}
