//! `libnvJitLink.so.12` for emulated GPUs: links PTX into PTX, never into machine code.
//!
//! nvJitLink links device code into machine code (SASS), which the emulated GPU cannot run.
//! `remora run` preloads this library when the server's GPUs are emulated: it takes the name
//! `libnvJitLink.so.12`, so NVIDIA's is never loaded, and implements nvJitLink's API over PTX
//! only: PTX inputs are combined into one PTX module (as the shim's `cuLink*` does), handed out
//! as the "cubin" and as the linked PTX, which the shim loads as PTX. Machine code, LTO IR,
//! fatbins and libraries are refused with a reason in the error log. `-maxrregcount` becomes
//! `.maxnreg` in each kernel, where the emulated GPU reads it.
//!
//! The version it reports is what keeps the clients on that path. cuda-core uses nvJitLink when
//! `nvJitLinkVersion` exists (12.3 introduced it) and otherwise falls back to `cuLink*` with a
//! `RuntimeWarning` ("libnvJitLink.so* is too old"), which numba's tests treat as a failure; so
//! it exists. numba-cuda compiles to LTO IR, which cannot become PTX, when `nvJitLinkVersion`
//! reports 12.3 or later; so it reports 12.2, the API this linker offers (no LTO). On real GPUs
//! the library is never used.

mod link;

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use link::{Linker, ERROR_INTERNAL, ERROR_NULL_INPUT, SUCCESS};

/// What `nvJitLinkVersion` reports: see the crate documentation.
const VERSION: (u32, u32) = (12, 2);

type Handle = *mut Linker;

/// Runs `f`, turning a panic into `NVJITLINK_ERROR_INTERNAL`: nothing unwinds into C.
fn guard(f: impl FnOnce() -> Result<(), u32>) -> u32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => ERROR_INTERNAL,
    }
}

/// # Safety
/// `h` is NULL or a handle from `nvJitLinkCreate` not yet destroyed.
unsafe fn linker<'a>(h: Handle) -> Result<&'a mut Linker, u32> {
    // SAFETY: by the caller's contract, a non-NULL handle is a live `Box<Linker>`.
    unsafe { h.as_mut() }.ok_or(ERROR_NULL_INPUT)
}

/// Copies `bytes` to `out` (which the caller sized by the matching `...Size` call).
///
/// # Safety
/// `out` is NULL or writable for `bytes.len()` bytes.
unsafe fn copy_out(bytes: &[u8], out: *mut c_void) -> Result<(), u32> {
    if out.is_null() {
        return Err(ERROR_NULL_INPUT);
    }
    // SAFETY: writable for the length, by the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), bytes.len()) };
    Ok(())
}

/// # Safety
/// `size` is NULL or writable.
unsafe fn put_size(size: *mut usize, n: usize) -> Result<(), u32> {
    // SAFETY: a valid out-pointer or NULL, by the caller's contract.
    let size = unsafe { size.as_mut() }.ok_or(ERROR_NULL_INPUT)?;
    *size = n;
    Ok(())
}

/// A log with its NUL, as nvJitLink hands logs out.
fn c_log(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// # Safety
/// As nvJitLink documents: `handle` writable, `options` holds `n` C strings.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkCreate(
    handle: *mut Handle,
    n: u32,
    options: *const *const c_char,
) -> u32 {
    guard(|| {
        if handle.is_null() || (n > 0 && options.is_null()) {
            return Err(ERROR_NULL_INPUT);
        }
        let opts = (0..n as usize)
            .map(|i| {
                // SAFETY: `options` has `n` entries, each NULL or a C string.
                let p = unsafe { *options.add(i) };
                if p.is_null() {
                    return Err(ERROR_NULL_INPUT);
                }
                // SAFETY: as above.
                Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let l = Linker::new(&opts)?;
        // SAFETY: checked non-NULL above.
        unsafe { *handle = Box::into_raw(Box::new(l)) };
        Ok(())
    })
}

/// # Safety
/// `handle` is NULL or points to a handle from `nvJitLinkCreate` (or NULL).
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkDestroy(handle: *mut Handle) -> u32 {
    guard(|| {
        // SAFETY: a valid pointer to a handle or NULL, by the caller's contract.
        let h = unsafe { handle.as_mut() }.ok_or(ERROR_NULL_INPUT)?;
        if !h.is_null() {
            // SAFETY: made by `Box::into_raw` in `nvJitLinkCreate`; cleared so it is freed once.
            drop(unsafe { Box::from_raw(*h) });
            *h = std::ptr::null_mut();
        }
        Ok(())
    })
}

/// # Safety
/// `data` is readable for `size` bytes; `name` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkAddData(
    handle: Handle,
    kind: u32,
    data: *const c_void,
    size: usize,
    name: *const c_char,
) -> u32 {
    guard(|| {
        // SAFETY: forwarded contract.
        let l = unsafe { linker(handle) }?;
        if data.is_null() {
            return Err(ERROR_NULL_INPUT);
        }
        // SAFETY: readable for `size` bytes, by the caller's contract.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
        let name = if name.is_null() {
            "input".to_string()
        } else {
            // SAFETY: a C string.
            unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned()
        };
        l.add(kind, bytes, &name)
    })
}

/// # Safety
/// `path` is a C string.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkAddFile(handle: Handle, kind: u32, path: *const c_char) -> u32 {
    guard(|| {
        // SAFETY: forwarded contract.
        let l = unsafe { linker(handle) }?;
        if path.is_null() {
            return Err(ERROR_NULL_INPUT);
        }
        // SAFETY: a C string.
        let path = unsafe { CStr::from_ptr(path) }
            .to_string_lossy()
            .into_owned();
        match std::fs::read(&path) {
            Ok(bytes) => l.add(kind, &bytes, &path),
            Err(e) => {
                l.error_log.push_str(&format!("ERROR: {path}: {e}\n"));
                Err(link::ERROR_INVALID_INPUT)
            }
        }
    })
}

/// # Safety
/// `handle` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkComplete(handle: Handle) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { linker(handle) }?.complete())
}

/// The linked module, once complete.
///
/// # Safety
/// `handle` is a live handle.
unsafe fn linked<'a>(handle: Handle) -> Result<&'a [u8], u32> {
    // SAFETY: forwarded contract.
    let l = unsafe { linker(handle) }?;
    l.linked.as_deref().ok_or(link::ERROR_INVALID_INPUT)
}

/// # Safety
/// `size` writable.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetLinkedCubinSize(handle: Handle, size: *mut usize) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { put_size(size, linked(handle)?.len()) })
}

/// The "cubin" is the linked PTX, which the shim loads as PTX.
///
/// # Safety
/// `out` sized by `nvJitLinkGetLinkedCubinSize`.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetLinkedCubin(handle: Handle, out: *mut c_void) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { copy_out(linked(handle)?, out) })
}

/// # Safety
/// `size` writable.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetLinkedPtxSize(handle: Handle, size: *mut usize) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { put_size(size, linked(handle)?.len()) })
}

/// # Safety
/// `out` sized by `nvJitLinkGetLinkedPtxSize`.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetLinkedPtx(handle: Handle, out: *mut c_char) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { copy_out(linked(handle)?, out.cast()) })
}

/// # Safety
/// `size` writable.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetErrorLogSize(handle: Handle, size: *mut usize) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { put_size(size, c_log(&linker(handle)?.error_log).len()) })
}

/// # Safety
/// `out` sized by `nvJitLinkGetErrorLogSize`.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetErrorLog(handle: Handle, out: *mut c_char) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { copy_out(&c_log(&linker(handle)?.error_log), out.cast()) })
}

/// # Safety
/// `size` writable.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetInfoLogSize(handle: Handle, size: *mut usize) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { put_size(size, c_log(&linker(handle)?.info_log).len()) })
}

/// # Safety
/// `out` sized by `nvJitLinkGetInfoLogSize`.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkGetInfoLog(handle: Handle, out: *mut c_char) -> u32 {
    // SAFETY: forwarded contract.
    guard(|| unsafe { copy_out(&c_log(&linker(handle)?.info_log), out.cast()) })
}

/// # Safety
/// `major` and `minor` writable.
#[no_mangle]
pub unsafe extern "C" fn nvJitLinkVersion(major: *mut u32, minor: *mut u32) -> u32 {
    guard(|| {
        if major.is_null() || minor.is_null() {
            return Err(ERROR_NULL_INPUT);
        }
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe { (*major, *minor) = VERSION };
        Ok(())
    })
}
