//! The conversion layer between C and the shim's safe Rust: errors to `CUresult` in one place,
//! raw pointers to references, panics stopped at the boundary, "not supported" logged once.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use remora_protocol::CuStatus;

pub use crate::error::{invalid, ShimError, ShimResult};
use crate::generated::types::CUresult;

/// Runs an implementation, stopping any panic at the C boundary.
pub fn guard(name: &str, f: impl FnOnce() -> CUresult) -> CUresult {
    let logged = || {
        // Logging needs thread-locals, which are gone in exit handlers (where cudart still
        // releases its contexts).
        if crate::registry::thread_alive() {
            init_logging();
            tracing::trace!("{name}");
        }
        f()
    };
    match catch_unwind(AssertUnwindSafe(logged)) {
        Ok(r) => r,
        Err(_) => {
            eprintln!("remora: internal error in {name}; returning CUDA_ERROR_UNKNOWN");
            CuStatus::UNKNOWN.0
        }
    }
}

/// Logs to stderr when `RUST_LOG` asks for it (`RUST_LOG=remora_shim=debug`).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// Turns a result into the `CUresult` C sees, logging failures at debug level.
pub fn finish(name: &str, r: ShimResult<()>) -> CUresult {
    match r {
        Ok(()) => 0,
        Err(e) => {
            if e.status() != CuStatus::NOT_READY {
                tracing::debug!("{name} failed: {e}");
            }
            e.into()
        }
    }
}

/// The default body of every function the shim does not implement.
pub fn unsupported(name: &'static str) -> CUresult {
    static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.get_or_insert_with(HashSet::new).insert(name) {
        eprintln!("remora: {name} is not supported; returning CUDA_ERROR_NOT_SUPPORTED");
    }
    CuStatus::NOT_SUPPORTED.0
}

/// A C out-pointer as a writable reference; null is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `p` is null or valid for writes of `T` for the duration of the call.
pub unsafe fn out<'a, T>(p: *mut T) -> ShimResult<&'a mut T> {
    // SAFETY: non-null pointers are valid for writes by the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| invalid("null output pointer"))
}

/// Writes through a C out-pointer; null is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// As for [`out`].
pub unsafe fn put<T>(p: *mut T, v: T) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    *unsafe { out(p) }? = v;
    Ok(())
}

/// A C input buffer as a slice; a null pointer is accepted only for zero bytes.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub unsafe fn bytes<'a>(p: *const std::ffi::c_void, len: usize) -> ShimResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid("null host pointer"));
    }
    // SAFETY: non-null and valid for `len` bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// A C output buffer as a mutable slice; a null pointer is accepted only for zero bytes.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
pub unsafe fn bytes_mut<'a>(p: *mut std::ffi::c_void, len: usize) -> ShimResult<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(invalid("null host pointer"));
    }
    // SAFETY: non-null and valid for `len` bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// A C string as `&str`.
///
/// # Safety
/// `p` is null or a NUL-terminated string.
pub unsafe fn c_str<'a>(p: *const std::ffi::c_char) -> ShimResult<&'a str> {
    if p.is_null() {
        return Err(invalid("null string"));
    }
    // SAFETY: NUL-terminated by the caller's contract.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid("string is not UTF-8"))
}
