//! `libnvrtc.so.12` (and, built again as `remora-nvrtc13`, `libnvrtc.so.13`) for emulated GPUs:
//! NVIDIA's NVRTC, except that a program compiled for a machine architecture gets PTX.
//!
//! NVIDIA's cuda-python samples, and many programs, compile with NVRTC for the device's machine
//! architecture (`--gpu-architecture=sm_XY`), take the cubin (`nvrtcGetCUBIN`) and load it. A
//! cubin holds machine code (SASS), which the emulated GPU cannot run. `remora run` preloads
//! this library when the server's GPUs are emulated: it takes NVRTC's name, so programs linked
//! against NVRTC and loaders that ask for it by name (cuda-pathfinder, which cuda-bindings,
//! cuda-core, numba-cuda and CuPy use) get it, and it forwards every call to NVIDIA's NVRTC
//! (found by path: `real.rs`) with one change. In `nvrtcCompileProgram` a machine architecture
//! becomes the virtual one of the same number (`options.rs`), and the program is remembered as
//! having asked for a cubin; `nvrtcGetCUBINSize` and `nvrtcGetCUBIN` of such a program (compiled
//! successfully) hand out its PTX, NUL included, which the shim loads as PTX. A program compiled
//! for `compute_XY` behaves as with NVIDIA's NVRTC (its cubin is empty), as does everything
//! else. On real GPUs the library is never used.

mod options;
mod real;

use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use real::{real, ERROR_INTERNAL};

type Program = *mut c_void;
type Result = c_int;
const SUCCESS: Result = 0;
const ERROR_INVALID_OPTION: Result = 5;

/// Runs `f`, turning a panic into `NVRTC_ERROR_INTERNAL_ERROR`: nothing unwinds into C.
fn guard(f: impl FnOnce() -> std::result::Result<Result, Result>) -> Result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r) | Err(r)) => r,
        Err(_) => ERROR_INTERNAL,
    }
}

/// Programs whose last successful compilation asked for machine code: their cubin is their PTX.
static ASKED_FOR_CUBIN: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn asked_for_cubin(prog: Program) -> bool {
    let set = ASKED_FOR_CUBIN.lock().unwrap_or_else(|e| e.into_inner());
    set.as_ref().is_some_and(|s| s.contains(&(prog as usize)))
}

fn remember(prog: Program, cubin: bool) {
    let mut set = ASKED_FOR_CUBIN.lock().unwrap_or_else(|e| e.into_inner());
    let set = set.get_or_insert_with(HashSet::new);
    if cubin {
        set.insert(prog as usize);
    } else {
        set.remove(&(prog as usize));
    }
}

/// `s` (which ends in NUL) as a C string, at compile time.
const fn cstr(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("a function name without its NUL"),
    }
}

/// Calls NVIDIA's function `$name` (a `&CStr`), declared `fn($ty...) -> nvrtcResult`.
macro_rules! call {
    ($name:expr => fn($($ty:ty),*), $($arg:expr),*) => {{
        let r = real()?;
        // SAFETY: the signature is NVIDIA's header's.
        let f = unsafe { r.function::<unsafe extern "C" fn($($ty),*) -> Result>($name) }?;
        // SAFETY: the caller's arguments, passed on under the same contract.
        Ok::<Result, Result>(unsafe { f($($arg),*) })
    }};
}

/// Exports each function as a plain forward to NVIDIA's.
macro_rules! forward {
    ($($name:ident ($($arg:ident : $ty:ty),*);)*) => {$(
        /// Forwarded to NVIDIA's NVRTC unchanged.
        ///
        /// # Safety
        /// As NVIDIA's NVRTC documents it.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> Result {
            const NAME: &CStr = cstr(concat!(stringify!($name), "\0"));
            guard(|| call!(NAME => fn($($ty),*), $($arg),*))
        }
    )*};
}

forward! {
    nvrtcVersion(major: *mut c_int, minor: *mut c_int);
    nvrtcGetNumSupportedArchs(num: *mut c_int);
    nvrtcGetSupportedArchs(archs: *mut c_int);
    nvrtcCreateProgram(
        prog: *mut Program,
        src: *const c_char,
        name: *const c_char,
        num_headers: c_int,
        headers: *const *const c_char,
        include_names: *const *const c_char
    );
    nvrtcGetPTXSize(prog: Program, size: *mut usize);
    nvrtcGetPTX(prog: Program, ptx: *mut c_char);
    nvrtcGetNVVMSize(prog: Program, size: *mut usize);
    nvrtcGetNVVM(prog: Program, nvvm: *mut c_char);
    nvrtcGetLTOIRSize(prog: Program, size: *mut usize);
    nvrtcGetLTOIR(prog: Program, ltoir: *mut c_char);
    nvrtcGetOptiXIRSize(prog: Program, size: *mut usize);
    nvrtcGetOptiXIR(prog: Program, optixir: *mut c_char);
    nvrtcGetTileIRSize(prog: Program, size: *mut usize);
    nvrtcGetTileIR(prog: Program, tileir: *mut c_char);
    nvrtcGetProgramLogSize(prog: Program, size: *mut usize);
    nvrtcGetProgramLog(prog: Program, log: *mut c_char);
    nvrtcAddNameExpression(prog: Program, name_expression: *const c_char);
    nvrtcGetLoweredName(
        prog: Program,
        name_expression: *const c_char,
        lowered_name: *mut *const c_char
    );
    nvrtcGetPCHHeapSize(size: *mut usize);
    nvrtcSetPCHHeapSize(size: usize);
    nvrtcGetPCHCreateStatus(prog: Program);
    nvrtcGetPCHHeapSizeRequired(prog: Program, size: *mut usize);
    nvrtcSetFlowCallback(
        prog: Program,
        callback: Option<unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int>,
        payload: *mut c_void
    );
    nvrtcInstallBundledHeaders(install_path: *const c_char, flags: c_uint, error_log: *mut *const c_char);
    nvrtcGetBundledHeadersInfo(info: *mut c_void, error_log: *mut *const c_char);
    nvrtcRemoveBundledHeaders(install_path: *const c_char, error_log: *mut *const c_char);
}

/// Compiles with every machine architecture made virtual (see the crate documentation).
///
/// # Safety
/// As NVIDIA's NVRTC documents it: `options` holds `num_options` C strings.
#[no_mangle]
pub unsafe extern "C" fn nvrtcCompileProgram(
    prog: Program,
    num_options: c_int,
    options: *const *const c_char,
) -> Result {
    guard(|| {
        // Malformed arguments are NVIDIA's NVRTC's to judge: passed on as they are.
        let given: Option<Vec<&[u8]>> = match usize::try_from(num_options) {
            Ok(n) if n == 0 || !options.is_null() => (0..n)
                .map(|i| {
                    // SAFETY: `options` has `num_options` entries, by the caller's contract.
                    let p = unsafe { *options.add(i) };
                    // SAFETY: a C string, by the caller's contract.
                    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
                })
                .collect(),
            _ => None,
        };
        let Some(given) = given else {
            return call!(c"nvrtcCompileProgram" => fn(Program, c_int, *const *const c_char),
                prog, num_options, options);
        };
        let rewritten = options::rewrite(&given);
        let owned: Vec<std::ffi::CString> = rewritten
            .options
            .into_iter()
            // The bytes came from C strings: no NUL inside.
            .map(|o| std::ffi::CString::new(o).map_err(|_| ERROR_INVALID_OPTION))
            .collect::<std::result::Result<_, _>>()?;
        let pointers: Vec<*const c_char> = owned.iter().map(|o| o.as_ptr()).collect();
        let pointers_ptr = if pointers.is_empty() {
            options
        } else {
            pointers.as_ptr()
        };
        let r = call!(c"nvrtcCompileProgram" => fn(Program, c_int, *const *const c_char),
            prog, num_options, pointers_ptr)?;
        remember(prog, rewritten.asked_for_cubin && r == SUCCESS);
        Ok(r)
    })
}

/// # Safety
/// As NVIDIA's NVRTC documents it.
#[no_mangle]
pub unsafe extern "C" fn nvrtcDestroyProgram(prog: *mut Program) -> Result {
    guard(|| {
        // SAFETY: NULL or a pointer to a program handle, by the caller's contract.
        let handle = unsafe { prog.as_ref() }.copied();
        let r = call!(c"nvrtcDestroyProgram" => fn(*mut Program), prog)?;
        if let Some(h) = handle.filter(|_| r == SUCCESS) {
            remember(h, false);
        }
        Ok(r)
    })
}

/// The size of the cubin; of the PTX for a program that asked for machine code.
///
/// # Safety
/// As NVIDIA's NVRTC documents it.
#[no_mangle]
pub unsafe extern "C" fn nvrtcGetCUBINSize(prog: Program, size: *mut usize) -> Result {
    guard(|| {
        if asked_for_cubin(prog) {
            return call!(c"nvrtcGetPTXSize" => fn(Program, *mut usize), prog, size);
        }
        call!(c"nvrtcGetCUBINSize" => fn(Program, *mut usize), prog, size)
    })
}

/// The cubin; the PTX (NUL-terminated) for a program that asked for machine code.
///
/// # Safety
/// As NVIDIA's NVRTC documents it.
#[no_mangle]
pub unsafe extern "C" fn nvrtcGetCUBIN(prog: Program, cubin: *mut c_char) -> Result {
    guard(|| {
        if asked_for_cubin(prog) {
            return call!(c"nvrtcGetPTX" => fn(Program, *mut c_char), prog, cubin);
        }
        call!(c"nvrtcGetCUBIN" => fn(Program, *mut c_char), prog, cubin)
    })
}

/// NVIDIA's text for `result`; this library's own (the same words) when NVIDIA's NVRTC cannot
/// be found, so that the error it returns then can be named.
///
/// # Safety
/// None beyond NVIDIA's.
#[no_mangle]
pub unsafe extern "C" fn nvrtcGetErrorString(result: Result) -> *const c_char {
    let forwarded = catch_unwind(|| {
        let r = real().ok()?;
        // SAFETY: the signature is NVIDIA's header's.
        let f = unsafe {
            r.function::<unsafe extern "C" fn(Result) -> *const c_char>(c"nvrtcGetErrorString")
        }
        .ok()?;
        // SAFETY: takes any value.
        Some(unsafe { f(result) })
    });
    match forwarded {
        Ok(Some(s)) => s,
        _ => error_string(result).as_ptr(),
    }
}

/// NVRTC's names for its results (NVRTC 13's), for when NVIDIA's NVRTC is not there.
fn error_string(result: Result) -> &'static CStr {
    match result {
        0 => c"NVRTC_SUCCESS",
        1 => c"NVRTC_ERROR_OUT_OF_MEMORY",
        2 => c"NVRTC_ERROR_PROGRAM_CREATION_FAILURE",
        3 => c"NVRTC_ERROR_INVALID_INPUT",
        4 => c"NVRTC_ERROR_INVALID_PROGRAM",
        5 => c"NVRTC_ERROR_INVALID_OPTION",
        6 => c"NVRTC_ERROR_COMPILATION",
        7 => c"NVRTC_ERROR_BUILTIN_OPERATION_FAILURE",
        8 => c"NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION",
        9 => c"NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION",
        10 => c"NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID",
        11 => c"NVRTC_ERROR_INTERNAL_ERROR",
        12 => c"NVRTC_ERROR_TIME_FILE_WRITE_FAILED",
        13 => c"NVRTC_ERROR_NO_PCH_CREATE_ATTEMPTED",
        14 => c"NVRTC_ERROR_PCH_CREATE_HEAP_EXHAUSTED",
        15 => c"NVRTC_ERROR_PCH_CREATE",
        16 => c"NVRTC_ERROR_CANCELLED",
        17 => c"NVRTC_ERROR_TIME_TRACE_FILE_WRITE_FAILED",
        18 => c"NVRTC_ERROR_BUSY",
        _ => c"NVRTC_ERROR unknown",
    }
}

/// NVRTC's undocumented entry points, forwarded as machine words: NVRTC 12.9's and 13's
/// `__nvrtcCPEx` take nine integer or pointer arguments (six in registers, three on the stack;
/// none in vector registers). Nothing is known to call it from outside NVRTC.
///
/// # Safety
/// As NVIDIA's NVRTC expects.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub unsafe extern "C" fn __nvrtcCPEx(
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
    a7: usize,
    a8: usize,
) -> usize {
    type F = unsafe extern "C" fn(
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
    ) -> usize;
    let r = catch_unwind(|| {
        let r = real()?;
        // SAFETY: nine machine words in, one out (see above).
        let f = unsafe { r.function::<F>(c"__nvrtcCPEx") }?;
        // SAFETY: the caller's arguments, passed on.
        Ok::<_, Result>(unsafe { f(a0, a1, a2, a3, a4, a5, a6, a7, a8) })
    });
    match r {
        Ok(Ok(v)) => v,
        _ => ERROR_INTERNAL as usize,
    }
}

/// NVRTC 13's `__nvrtcNvvmHandle`, undocumented (it jumps straight into NVRTC): forwarded with
/// the six argument registers.
///
/// # Safety
/// As NVIDIA's NVRTC expects.
#[no_mangle]
pub unsafe extern "C" fn __nvrtcNvvmHandle(
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) -> usize {
    type F = unsafe extern "C" fn(usize, usize, usize, usize, usize, usize) -> usize;
    let r = catch_unwind(|| {
        let r = real()?;
        // SAFETY: six machine words in, one out (see above).
        let f = unsafe { r.function::<F>(c"__nvrtcNvvmHandle") }?;
        // SAFETY: the caller's arguments, passed on.
        Ok::<_, Result>(unsafe { f(a0, a1, a2, a3, a4, a5) })
    });
    match r {
        Ok(Ok(v)) => v,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_remembered_until_compiled_otherwise() {
        let p = 0x1000 as Program;
        let q = 0x2000 as Program;
        assert!(!asked_for_cubin(p));
        remember(p, true);
        remember(q, false);
        assert!(asked_for_cubin(p) && !asked_for_cubin(q));
        remember(p, false);
        assert!(!asked_for_cubin(p));
    }

    #[test]
    fn error_names_are_nvrtcs() {
        assert_eq!(error_string(6).to_str().unwrap(), "NVRTC_ERROR_COMPILATION");
        assert_eq!(
            error_string(11).to_str().unwrap(),
            "NVRTC_ERROR_INTERNAL_ERROR"
        );
        assert_eq!(error_string(99).to_str().unwrap(), "NVRTC_ERROR unknown");
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        assert_eq!(guard(|| panic!("boom")), ERROR_INTERNAL);
        assert_eq!(guard(|| Err(ERROR_INVALID_OPTION)), ERROR_INVALID_OPTION);
        assert_eq!(guard(|| Ok(SUCCESS)), SUCCESS);
    }
}
