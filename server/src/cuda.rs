//! The real-GPU backend (cudarc), loaded at run time so the same server binary starts on
//! machines without a driver.

use std::sync::Arc;

use crate::backend::Backend;

/// The real GPUs of this machine, or why there are none.
pub fn probe() -> Result<Arc<dyn Backend>, String> {
    Err("the CUDA backend is not built into this server yet".into())
}
