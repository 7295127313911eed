//! What the virtual GPU needs of the PTX tools: which kernels may be split (and their
//! footprints), and the guarded rewrite its members load.

pub use remora_ptx::footprint::{
    analyze_ptx, plan_in, split_dim, Analysis, KernelFootprint, RangeFootprint, Region,
};
pub use remora_ptx::guard::{guard_ptx, GUARD_PARAMS};
pub use remora_ptx::loader::extract_ptx;
