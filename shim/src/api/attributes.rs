//! Function and kernel attributes (`cuFuncGetAttribute`, `cuKernelGetAttribute`), answered
//! from each kernel's description: no round trip, but for the driver's own counts on a real GPU
//! before a posted load's reply was taken (see `module::exact`).

use std::ffi::{c_int, c_uint};

use super::module;
use crate::ffi::{invalid, ShimResult};

/// The largest block any kernel may have on the devices Remora presents.
pub const MAX_BLOCK_THREADS: u32 = 1024;

/// `CU_FUNC_ATTRIBUTE_*` of function (or kernel) handle `f`.
pub fn function_attribute(pi: &mut c_int, attrib: c_uint, f: u64) -> ShimResult<()> {
    let func = module::function(f)?;
    let (k, dynamic) = match attrib {
        0..=4 => (module::exact(func)?, func.max_dynamic_shared()),
        _ => (func.desc(), func.max_dynamic_shared()),
    };
    *pi = match attrib {
        0 => max_threads(k.max_threads) as c_int, // MAX_THREADS_PER_BLOCK (`.maxntid`)
        1 => k.shared_bytes as c_int,             // SHARED_SIZE_BYTES
        2 => k.const_bytes as c_int,              // CONST_SIZE_BYTES
        3 => k.local_bytes as c_int,              // LOCAL_SIZE_BYTES
        4 => k.num_regs as c_int,                 // NUM_REGS (within `.maxnreg`)
        5 | 6 => 80,                              // PTX_VERSION, BINARY_VERSION
        7 => 0,                                   // CACHE_MODE_CA
        8 => dynamic,                             // MAX_DYNAMIC_SHARED_SIZE_BYTES
        9 => -1,                                  // PREFERRED_SHARED_MEMORY_CARVEOUT
        10..=15 => 0,                             // cluster attributes
        _ => return Err(invalid(format!("function attribute {attrib}"))),
    };
    Ok(())
}

/// The most threads a block of a kernel declaring `declared` may have.
pub fn max_threads(declared: u32) -> u32 {
    declared.clamp(1, MAX_BLOCK_THREADS)
}
