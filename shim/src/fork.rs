//! The driver's rule for `fork`: a child of a process that initialised CUDA cannot use it.
//!
//! The CUDA driver refuses every call in such a child with `CUDA_ERROR_NOT_INITIALIZED`,
//! `cuInit` included (NVIDIA's CUDA C Programming Guide, "fork"; numba's tests rely on it).
//! Here the reason is concrete: the child inherits a copy of the parent's connection state but
//! not its I/O thread, and anything it sent would go out on the parent's QUIC connection. So
//! the first `cuInit` registers a `pthread_atfork` child handler that marks the child, and
//! [`crate::ffi::guard`] refuses every call there but those a driver answers without
//! initialisation (versions, error strings, entry points, export tables).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static FORKED: AtomicBool = AtomicBool::new(false);

/// Calls the driver answers without being initialised, so a forked child may still make them.
const WITHOUT_INIT: &[&str] = &[
    "cuDriverGetVersion",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuGetProcAddress",
    "cuGetProcAddress_v2",
    "cuGetExportTable",
];

/// Records that this process initialised CUDA: its children, from now on, may not use it.
pub fn initialised() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `in_child` is an extern "C" fn without arguments that only stores to an
        // atomic, which is async-signal-safe as a child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

extern "C" fn in_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// Whether this process is a child forked after its parent initialised CUDA.
pub fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// Whether `name` must be refused here (a forked child) with `CUDA_ERROR_NOT_INITIALIZED`.
pub fn refused(name: &str) -> bool {
    forked() && !WITHOUT_INIT.contains(&name)
}
