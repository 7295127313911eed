//! The conversion layer between C and the shim's safe Rust: errors to `CUresult` in one place,
//! raw pointers to references, panics stopped at the boundary, "not supported" logged once.
//!
//! Every argument of an implemented driver function passes through [`FromCuda`] on its way in
//! (the `implement!` table in [`crate::api`] applies it to each): an out-pointer becomes
//! `&mut T` (NULL is `CUDA_ERROR_INVALID_VALUE`, here and nowhere else), an optional one
//! `Option<&mut T>`, an input struct `&T`, a C string `&str`, an opaque handle its `u64`
//! value, and plain values pass unchanged. Implementations are then safe functions over
//! references; the few that still take raw pointers (buffers whose length is another
//! argument, arrays, callbacks' user data) say so by being `unsafe fn`.

use std::collections::HashSet;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use remora_protocol::CuStatus;

pub use crate::error::{invalid, ShimError, ShimResult};
use crate::generated::types::{
    c_int, c_uint, CUdevprop_v1, CUhostFn, CUipcMemHandle_v1, CUoccupancyB2DSize, CUresult,
    CUstreamCallback, CUuuid,
};

/// Runs an implementation, stopping any panic at the C boundary.
pub fn guard(name: &str, f: impl FnOnce() -> CUresult) -> CUresult {
    if crate::fork::refused(name) {
        return CuStatus::NOT_INITIALIZED.0;
    }
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

/// One C argument as a safe implementation takes it. The target type is inferred from the
/// implementation's parameter, so one C type converts to whichever form the implementation asks
/// for.
pub trait FromCuda<'a, T>: Sized {
    /// # Safety
    /// `t` is valid as the driver API documents this argument: a non-null pointer points to a
    /// `T` that may be read (or written, for out-pointers) for the duration of the call.
    unsafe fn from_cuda(t: &'a T) -> ShimResult<Self>;
}

/// Plain values (integers, enums, device pointers, callbacks) pass as they are.
macro_rules! from_cuda_as_is {
    ($($t:ty),* $(,)?) => {
        $(
            impl<'a> FromCuda<'a, $t> for $t {
                unsafe fn from_cuda(t: &'a $t) -> ShimResult<$t> {
                    Ok(*t)
                }
            }
        )*
    };
}
from_cuda_as_is!(
    i32,
    u32,
    u64,
    usize,
    u8,
    u16,
    CUhostFn,
    CUstreamCallback,
    CUoccupancyB2DSize,
);

/// Raw pointers an implementation asks for as they are: buffers whose length is another
/// argument, arrays, user data. Such implementations are `unsafe fn`.
impl<'a, T> FromCuda<'a, *mut T> for *mut T {
    unsafe fn from_cuda(t: &'a *mut T) -> ShimResult<*mut T> {
        Ok(*t)
    }
}

impl<'a, T> FromCuda<'a, *const T> for *const T {
    unsafe fn from_cuda(t: &'a *const T) -> ShimResult<*const T> {
        Ok(*t)
    }
}

/// A C `T *` the implementation only reads through.
impl<'a, T> FromCuda<'a, *mut T> for *const T {
    unsafe fn from_cuda(t: &'a *mut T) -> ShimResult<*const T> {
        Ok(t.cast_const())
    }
}

/// An argument the implementation ignores (JIT options it does not need, a device argument
/// that the handle already implies).
pub struct Ignored;

impl<'a, T> FromCuda<'a, T> for Ignored {
    unsafe fn from_cuda(_: &'a T) -> ShimResult<Ignored> {
        Ok(Ignored)
    }
}

/// Opaque handles (`CUcontext`, `CUstream`, `CUmodule`, ...) by value.
impl<'a> FromCuda<'a, *mut c_void> for u64 {
    unsafe fn from_cuda(t: &'a *mut c_void) -> ShimResult<u64> {
        Ok(*t as u64)
    }
}

/// Out-pointers to handles, written as their `u64` value: NULL is `CUDA_ERROR_INVALID_VALUE`.
impl<'a> FromCuda<'a, *mut *mut c_void> for &'a mut u64 {
    unsafe fn from_cuda(t: &'a *mut *mut c_void) -> ShimResult<&'a mut u64> {
        const _: () = assert!(size_of::<*mut c_void>() == size_of::<u64>());
        const _: () = assert!(align_of::<*mut c_void>() == align_of::<u64>());
        // SAFETY: a handle is a pointer-sized word, and u64 has its size and alignment here.
        unsafe { out(t.cast::<u64>()) }
    }
}

/// Optional out-pointers to handles.
impl<'a> FromCuda<'a, *mut *mut c_void> for Option<&'a mut u64> {
    unsafe fn from_cuda(t: &'a *mut *mut c_void) -> ShimResult<Option<&'a mut u64>> {
        // SAFETY: as above.
        Ok(unsafe { t.cast::<u64>().as_mut() })
    }
}

/// Out-pointers: NULL is `CUDA_ERROR_INVALID_VALUE`.
impl<'a, T> FromCuda<'a, *mut T> for &'a mut T {
    unsafe fn from_cuda(t: &'a *mut T) -> ShimResult<&'a mut T> {
        // SAFETY: non-null out-pointers are valid for writes by the caller's contract.
        unsafe { out(*t) }
    }
}

/// Out-pointers the driver API lets the caller leave NULL.
impl<'a, T> FromCuda<'a, *mut T> for Option<&'a mut T> {
    unsafe fn from_cuda(t: &'a *mut T) -> ShimResult<Option<&'a mut T>> {
        // SAFETY: as above.
        Ok(unsafe { t.as_mut() })
    }
}

/// Input structs: NULL is `CUDA_ERROR_INVALID_VALUE`.
impl<'a, T> FromCuda<'a, *const T> for &'a T {
    unsafe fn from_cuda(t: &'a *const T) -> ShimResult<&'a T> {
        // SAFETY: non-null inputs are valid for reads by the caller's contract.
        unsafe { t.as_ref() }.ok_or_else(|| invalid("null input pointer"))
    }
}

/// C strings: NULL or invalid UTF-8 is `CUDA_ERROR_INVALID_VALUE`.
impl<'a> FromCuda<'a, *const c_char> for &'a str {
    unsafe fn from_cuda(t: &'a *const c_char) -> ShimResult<&'a str> {
        // SAFETY: a NUL-terminated string by the caller's contract.
        unsafe { c_str(*t) }
    }
}

/// C strings the caller may leave NULL, as they are (for names that need not be UTF-8).
impl<'a> FromCuda<'a, *const c_char> for Option<&'a CStr> {
    unsafe fn from_cuda(t: &'a *const c_char) -> ShimResult<Option<&'a CStr>> {
        // SAFETY: NULL or a NUL-terminated string by the caller's contract.
        Ok((!t.is_null()).then(|| unsafe { CStr::from_ptr(*t) }))
    }
}

/// C strings the caller may leave NULL.
impl<'a> FromCuda<'a, *const c_char> for Option<&'a str> {
    unsafe fn from_cuda(t: &'a *const c_char) -> ShimResult<Option<&'a str>> {
        if t.is_null() {
            return Ok(None);
        }
        // SAFETY: as above.
        unsafe { c_str(*t) }.map(Some)
    }
}

/// `CUuuid` out-pointers as the 16 bytes they hold.
impl<'a> FromCuda<'a, *mut CUuuid> for &'a mut [u8; 16] {
    unsafe fn from_cuda(t: &'a *mut CUuuid) -> ShimResult<&'a mut [u8; 16]> {
        // SAFETY: CUuuid is 16 bytes of alignment 1 in cuda.h; as for other out-pointers.
        unsafe { out(t.cast::<[u8; 16]>()) }
    }
}

/// `CUuuid` inputs as their 16 bytes.
impl<'a> FromCuda<'a, *const CUuuid> for &'a [u8; 16] {
    unsafe fn from_cuda(t: &'a *const CUuuid) -> ShimResult<&'a [u8; 16]> {
        // SAFETY: CUuuid is 16 bytes of alignment 1 in cuda.h; as for other inputs.
        unsafe { t.cast::<[u8; 16]>().as_ref() }.ok_or_else(|| invalid("null uuid"))
    }
}

/// `CUipcMemHandle` out-pointers as its 64 bytes.
impl<'a> FromCuda<'a, *mut CUipcMemHandle_v1> for &'a mut [u8; 64] {
    unsafe fn from_cuda(t: &'a *mut CUipcMemHandle_v1) -> ShimResult<&'a mut [u8; 64]> {
        // SAFETY: CUipcMemHandle is 64 bytes of alignment 1 (checked in the generated types);
        // as for other out-pointers.
        unsafe { out(t.cast::<[u8; 64]>()) }
    }
}

/// A `CUipcMemHandle` passed by value, as its 64 bytes.
impl<'a> FromCuda<'a, CUipcMemHandle_v1> for [u8; 64] {
    unsafe fn from_cuda(t: &'a CUipcMemHandle_v1) -> ShimResult<[u8; 64]> {
        Ok(t.words)
    }
}

/// The legacy `CUdevprop` out-pointer as the 14 ints it holds.
impl<'a> FromCuda<'a, *mut CUdevprop_v1> for &'a mut [c_int; 14] {
    unsafe fn from_cuda(t: &'a *mut CUdevprop_v1) -> ShimResult<&'a mut [c_int; 14]> {
        // SAFETY: CUdevprop is 14 ints in cuda.h; as for other out-pointers.
        unsafe { out(t.cast::<[c_int; 14]>()) }
    }
}

/// A C buffer of `len` bytes to write a string into; NULL or empty is
/// `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
pub unsafe fn c_buffer<'a>(p: *mut c_char, len: c_int) -> ShimResult<&'a mut [u8]> {
    if p.is_null() || len <= 0 {
        return Err(invalid("null or empty string buffer"));
    }
    // SAFETY: non-null and valid for `len` bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len as usize) })
}

/// Copies `s` into a C string buffer, truncating and always NUL-terminating.
pub fn write_c_string(buf: &mut [u8], s: &str) -> ShimResult<()> {
    let n = s.len().min(buf.len().saturating_sub(1));
    let (text, rest) = buf.split_at_mut(n);
    text.copy_from_slice(&s.as_bytes()[..n]);
    *rest
        .first_mut()
        .ok_or_else(|| invalid("empty string buffer"))? = 0;
    Ok(())
}

/// Sets an out-parameter (for table entries that answer a constant).
pub fn set<T>(out: &mut T, v: T) -> ShimResult<()> {
    *out = v;
    Ok(())
}

/// A C array of `n` entries as a mutable slice; NULL is accepted only for zero entries.
///
/// # Safety
/// `p` is valid for reads and writes of `n` entries.
pub unsafe fn slice_mut<'a, T>(p: *mut T, n: c_uint) -> ShimResult<&'a mut [T]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(invalid("null array"));
    }
    // SAFETY: non-null and valid for `n` entries by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n as usize) })
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
