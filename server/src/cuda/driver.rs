//! The driver entry points the backend calls, resolved once from the `libcuda` that cudarc
//! loads at run time, and the mapping of their results to [`CuError`].
//!
//! cudarc's `sys` bindings are not called directly: they return `CUresult` as a Rust enum and
//! take `CUdevice_attribute` as one, so a code or attribute newer than the bindings (a driver
//! newer than CUDA 12.8) would be undefined behaviour, and a symbol the driver lacks (e.g.
//! `cuFuncGetParamInfo` before 12.4) panics. Here every result is a plain `u32` (the same
//! numbers as [`CuStatus`]), attributes are plain integers, and entry points that only newer
//! drivers have are `Option`s.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use cudarc::driver::sys::{
    self, CUcontext, CUdeviceptr, CUfunction, CUmemAccessDesc, CUmemAllocationProp, CUmodule,
    CUstream,
};
use cudarc::driver::DriverError;
use remora_protocol::CuStatus;

use crate::backend::CuError;

/// A plain `CUresult`.
pub type Status = u32;
type Handle = u64;

const _: () = assert!(std::mem::size_of::<sys::CUresult>() == 4);
const _: () = assert!(std::mem::size_of::<CUdeviceptr>() == 8);
const _: () = assert!(std::mem::size_of::<sys::CUmemGenericAllocationHandle>() == 8);

macro_rules! driver_api {
    (
        required { $($name:ident($($arg:ty),*);)* }
        optional { $($oname:ident($($oarg:ty),*);)* }
    ) => {
        /// Entry points, named exactly as `libcuda` exports them.
        #[allow(non_snake_case)]
        pub struct Api {
            $(pub $name: unsafe extern "C" fn($($arg),*) -> Status,)*
            $(pub $oname: Option<unsafe extern "C" fn($($oarg),*) -> Status>,)*
        }

        impl Api {
            fn resolve() -> Result<Self, String> {
                // SAFETY: `is_culib_present` only tries to dlopen the candidate names; loading
                // the NVIDIA driver library runs no initialiser with preconditions of ours.
                if !unsafe { sys::is_culib_present() } {
                    return Err(format!("{MISSING_LIBRARY}: no NVIDIA driver on this machine"));
                }
                // SAFETY: the library was just found, so `culib` opens it instead of panicking.
                let lib = unsafe { sys::culib() };
                Ok(Self {
                    $(
                        // SAFETY: the type is the symbol's C signature in `cuda.h` (12.x ABI,
                        // the `_v2` names where the header maps to them), returning `CUresult`
                        // as its underlying `u32`. The library lives in a static for ever.
                        $name: *unsafe { lib.get::<unsafe extern "C" fn($($arg),*) -> Status>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        ) }
                        .map_err(|e| format!("the driver library lacks {}: {e}", stringify!($name)))?,
                    )*
                    $(
                        // SAFETY: as above; absence is allowed (older drivers).
                        $oname: unsafe { lib.get::<unsafe extern "C" fn($($oarg),*) -> Status>(
                            concat!(stringify!($oname), "\0").as_bytes(),
                        ) }
                        .ok()
                        .map(|s| *s),
                    )*
                })
            }
        }
    };
}

driver_api! {
    required {
        cuInit(c_uint);
        cuDriverGetVersion(*mut c_int);
        cuGetErrorName(Status, *mut *const c_char);
        cuDeviceGetCount(*mut c_int);
        cuDeviceGet(*mut c_int, c_int);
        cuDeviceGetName(*mut c_char, c_int, c_int);
        cuDeviceGetUuid(*mut [u8; 16], c_int);
        cuDeviceTotalMem_v2(*mut usize, c_int);
        cuDeviceGetAttribute(*mut c_int, c_int, c_int);
        cuCtxCreate_v2(*mut CUcontext, c_uint, c_int);
        cuCtxDestroy_v2(CUcontext);
        cuCtxSetCurrent(CUcontext);
        cuCtxSynchronize();
        cuMemGetInfo_v2(*mut usize, *mut usize);
        cuMemAddressReserve(*mut CUdeviceptr, usize, usize, CUdeviceptr, u64);
        cuMemAddressFree(CUdeviceptr, usize);
        cuMemGetAllocationGranularity(*mut usize, *const CUmemAllocationProp, c_uint);
        cuMemCreate(*mut Handle, usize, *const CUmemAllocationProp, u64);
        cuMemRelease(Handle);
        cuMemRetainAllocationHandle(*mut Handle, *mut c_void);
        cuMemMap(CUdeviceptr, usize, usize, Handle, u64);
        cuMemUnmap(CUdeviceptr, usize);
        cuMemSetAccess(CUdeviceptr, usize, *const CUmemAccessDesc, usize);
        cuMemcpyHtoD_v2(CUdeviceptr, *const c_void, usize);
        cuMemcpyDtoH_v2(*mut c_void, CUdeviceptr, usize);
        cuMemcpyDtoD_v2(CUdeviceptr, CUdeviceptr, usize);
        cuMemsetD8_v2(CUdeviceptr, u8, usize);
        cuMemsetD16_v2(CUdeviceptr, u16, usize);
        cuMemsetD32_v2(CUdeviceptr, u32, usize);
        cuMemsetD2D8_v2(CUdeviceptr, usize, u8, usize, usize);
        cuMemsetD2D16_v2(CUdeviceptr, usize, u16, usize, usize);
        cuMemsetD2D32_v2(CUdeviceptr, usize, u32, usize, usize);
        cuModuleLoadData(*mut CUmodule, *const c_void);
        cuModuleUnload(CUmodule);
        cuModuleGetFunction(*mut CUfunction, CUmodule, *const c_char);
        cuModuleGetGlobal_v2(*mut CUdeviceptr, *mut usize, CUmodule, *const c_char);
        cuFuncGetAttribute(*mut c_int, c_int, CUfunction);
        cuFuncSetAttribute(CUfunction, c_int, c_int);
        cuLaunchKernel(CUfunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CUstream, *mut *mut c_void, *mut *mut c_void);
    }
    optional {
        // 12.4+
        cuModuleGetFunctionCount(*mut c_uint, CUmodule);
        cuModuleEnumerateFunctions(*mut CUfunction, c_uint, CUmodule);
        cuFuncGetParamInfo(CUfunction, usize, *mut usize, *mut usize);
        // 12.3+
        cuFuncGetName(*mut *const c_char, CUfunction);
        // 12.0+: cooperative launches with a packed parameter buffer (`extra`), which
        // cuLaunchCooperativeKernel does not take.
        cuLaunchKernelEx(*const LaunchConfig, CUfunction, *mut *mut c_void, *mut *mut c_void);
    }
}

/// `CUlaunchAttribute`: an id, padding, and a 64-byte value union.
#[repr(C)]
pub struct LaunchAttribute {
    pub id: c_uint,
    pub pad: [u8; 4],
    pub value: [u64; 8],
}

/// `CUlaunchAttributeID` `CU_LAUNCH_ATTRIBUTE_COOPERATIVE`; its value is an `int` flag.
pub const LAUNCH_ATTRIBUTE_COOPERATIVE: c_uint = 2;

/// `CUlaunchConfig` (cuda.h, 12.0 and later).
#[repr(C)]
pub struct LaunchConfig {
    pub grid: [c_uint; 3],
    pub block: [c_uint; 3],
    pub shared: c_uint,
    pub stream: CUstream,
    pub attrs: *mut LaunchAttribute,
    pub num_attrs: c_uint,
}

const _: () = assert!(std::mem::size_of::<LaunchAttribute>() == 72);
const _: () = assert!(std::mem::size_of::<LaunchConfig>() == 56);

/// The first words of the error when the driver library is absent.
pub const MISSING_LIBRARY: &str = "libcuda.so.1 not found";

/// The driver's entry points, resolved on first use (the library is loaded then, not at start).
pub fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        // cudarc panics where it cannot load a symbol or library; keep that from unwinding
        // into the server's start-up.
        std::panic::catch_unwind(Api::resolve).unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic while loading the driver".into());
            Err(format!("cannot load the CUDA driver library: {why}"))
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A driver result as the error the client sees: the same status number, the driver's name for
/// it where known, and what was being done. Pure, so it is testable without a driver.
pub fn map_status(code: Status, driver_name: Option<&str>, op: &str) -> CuError {
    let status = CuStatus(code);
    let name = driver_name
        .map(str::to_string)
        .or_else(|| status.name().map(str::to_string));
    let message = match name {
        Some(n) => format!("{op}: {n} ({code})"),
        None => format!("{op}: CUDA error {code}"),
    };
    CuError::new(status, message)
}

/// The same mapping for an error from cudarc's own wrappers.
pub fn map_driver_error(e: &DriverError, op: &str) -> CuError {
    map_status(e.0 as u32, None, op)
}

impl Api {
    /// `Ok` for `CUDA_SUCCESS`, else the mapped error with the driver's name for the code.
    pub fn check(&self, code: Status, op: &str) -> Result<(), CuError> {
        if code == 0 {
            return Ok(());
        }
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: `cuGetErrorName` writes a pointer to a static string (or leaves it alone and
        // fails, e.g. for an unknown code); the out-pointer is a valid local.
        let named = unsafe { (self.cuGetErrorName)(code, &mut p) } == 0 && !p.is_null();
        let name = if named {
            // SAFETY: on success `p` points to a NUL-terminated string with static lifetime.
            Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        } else {
            None
        };
        Err(map_status(code, name.as_deref(), op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_its_number_and_names_the_error() {
        let e = map_status(2, Some("CUDA_ERROR_OUT_OF_MEMORY"), "cuMemCreate");
        assert_eq!(e.status, CuStatus::OUT_OF_MEMORY);
        assert_eq!(e.message, "cuMemCreate: CUDA_ERROR_OUT_OF_MEMORY (2)");
    }

    #[test]
    fn status_without_a_driver_name_uses_the_table() {
        let e = map_status(700, None, "cuCtxSynchronize");
        assert_eq!(e.status, CuStatus::ILLEGAL_ADDRESS);
        assert!(e.status.is_sticky());
        assert!(
            e.message.contains("CUDA_ERROR_ILLEGAL_ADDRESS"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_codes_survive() {
        let e = map_status(12345, None, "cuSomethingNew");
        assert_eq!(e.status, CuStatus(12345));
        assert_eq!(e.message, "cuSomethingNew: CUDA error 12345");
    }

    #[test]
    fn cudarc_errors_map_to_the_same_number() {
        let e = map_driver_error(
            &DriverError(sys::CUresult::CUDA_ERROR_INVALID_PTX),
            "cuModuleLoadData",
        );
        assert_eq!(e.status, CuStatus::INVALID_PTX);
        assert!(
            e.message
                .starts_with("cuModuleLoadData: CUDA_ERROR_INVALID_PTX"),
            "{}",
            e.message
        );
    }
}
