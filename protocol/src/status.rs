//! CUDA status codes as an open newtype, so codes this build does not name survive a round trip.

use std::fmt;

/// A `CUresult` value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CuStatus(pub u32);

impl CuStatus {
    pub const SUCCESS: Self = Self(0);
    pub const INVALID_VALUE: Self = Self(1);
    pub const OUT_OF_MEMORY: Self = Self(2);
    pub const NOT_INITIALIZED: Self = Self(3);
    pub const DEINITIALIZED: Self = Self(4);
    pub const NO_DEVICE: Self = Self(100);
    pub const INVALID_DEVICE: Self = Self(101);
    pub const DEVICE_NOT_LICENSED: Self = Self(102);
    pub const INVALID_IMAGE: Self = Self(200);
    pub const INVALID_CONTEXT: Self = Self(201);
    pub const CONTEXT_ALREADY_CURRENT: Self = Self(202);
    pub const NO_BINARY_FOR_GPU: Self = Self(209);
    pub const INVALID_PTX: Self = Self(218);
    pub const INVALID_SOURCE: Self = Self(300);
    pub const FILE_NOT_FOUND: Self = Self(301);
    pub const INVALID_HANDLE: Self = Self(400);
    pub const ILLEGAL_STATE: Self = Self(401);
    pub const NOT_FOUND: Self = Self(500);
    pub const NOT_READY: Self = Self(600);
    pub const ILLEGAL_ADDRESS: Self = Self(700);
    pub const LAUNCH_OUT_OF_RESOURCES: Self = Self(701);
    pub const LAUNCH_TIMEOUT: Self = Self(702);
    pub const PEER_ACCESS_UNSUPPORTED: Self = Self(704);
    pub const CONTEXT_IS_DESTROYED: Self = Self(709);
    pub const ASSERT: Self = Self(710);
    pub const HOST_MEMORY_ALREADY_REGISTERED: Self = Self(712);
    pub const HOST_MEMORY_NOT_REGISTERED: Self = Self(713);
    pub const MISALIGNED_ADDRESS: Self = Self(716);
    pub const LAUNCH_FAILED: Self = Self(719);
    pub const COOPERATIVE_LAUNCH_TOO_LARGE: Self = Self(720);
    pub const NOT_PERMITTED: Self = Self(800);
    pub const NOT_SUPPORTED: Self = Self(801);
    pub const SYSTEM_NOT_READY: Self = Self(802);
    pub const STREAM_CAPTURE_UNSUPPORTED: Self = Self(900);
    pub const UNKNOWN: Self = Self(999);
    pub const DEVICE_UNAVAILABLE: Self = Self(46);

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// Errors after which the context is unusable, as on hardware (a faulting kernel).
    pub fn is_sticky(self) -> bool {
        matches!(self.0, 700 | 702 | 710 | 714 | 715 | 716 | 717 | 718 | 719)
    }

    /// The `CUDA_ERROR_*` name, as `cuGetErrorName` reports it.
    pub fn name(self) -> Option<&'static str> {
        ERRORS.iter().find(|e| e.0 == self.0).map(|e| e.1)
    }

    /// The description, as `cuGetErrorString` reports it.
    pub fn description(self) -> Option<&'static str> {
        ERRORS.iter().find(|e| e.0 == self.0).map(|e| e.2)
    }
}

impl fmt::Debug for CuStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "CuStatus({})", self.0),
        }
    }
}

impl fmt::Display for CuStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Names and descriptions as NVIDIA's driver reports them (cuda.h).
static ERRORS: &[(u32, &str, &str)] = &[
    (0, "CUDA_SUCCESS", "no error"),
    (1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"),
    (2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
    (3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"),
    (4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"),
    (
        5,
        "CUDA_ERROR_PROFILER_DISABLED",
        "profiler disabled while using an external profiling tool",
    ),
    (
        34,
        "CUDA_ERROR_STUB_LIBRARY",
        "CUDA driver is a stub library",
    ),
    (
        46,
        "CUDA_ERROR_DEVICE_UNAVAILABLE",
        "CUDA-capable device(s) is/are busy or unavailable",
    ),
    (
        100,
        "CUDA_ERROR_NO_DEVICE",
        "no CUDA-capable device is detected",
    ),
    (101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"),
    (
        102,
        "CUDA_ERROR_DEVICE_NOT_LICENSED",
        "device doesn't have valid Grid license",
    ),
    (
        200,
        "CUDA_ERROR_INVALID_IMAGE",
        "device kernel image is invalid",
    ),
    (201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"),
    (
        202,
        "CUDA_ERROR_CONTEXT_ALREADY_CURRENT",
        "context already current",
    ),
    (
        205,
        "CUDA_ERROR_MAP_FAILED",
        "mapping of buffer object failed",
    ),
    (
        206,
        "CUDA_ERROR_UNMAP_FAILED",
        "unmapping of buffer object failed",
    ),
    (207, "CUDA_ERROR_ARRAY_IS_MAPPED", "array is mapped"),
    (208, "CUDA_ERROR_ALREADY_MAPPED", "resource already mapped"),
    (
        209,
        "CUDA_ERROR_NO_BINARY_FOR_GPU",
        "no kernel image is available for execution on the device",
    ),
    (
        210,
        "CUDA_ERROR_ALREADY_ACQUIRED",
        "resource already acquired",
    ),
    (211, "CUDA_ERROR_NOT_MAPPED", "resource not mapped"),
    (
        214,
        "CUDA_ERROR_ECC_UNCORRECTABLE",
        "uncorrectable ECC error encountered",
    ),
    (
        215,
        "CUDA_ERROR_UNSUPPORTED_LIMIT",
        "limit is not supported on this architecture",
    ),
    (
        216,
        "CUDA_ERROR_CONTEXT_ALREADY_IN_USE",
        "exclusive-thread device already in use by a different thread",
    ),
    (
        217,
        "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED",
        "peer access is not supported between these two devices",
    ),
    (
        218,
        "CUDA_ERROR_INVALID_PTX",
        "a PTX JIT compilation failed",
    ),
    (
        219,
        "CUDA_ERROR_INVALID_GRAPHICS_CONTEXT",
        "invalid OpenGL or DirectX context",
    ),
    (
        220,
        "CUDA_ERROR_NVLINK_UNCORRECTABLE",
        "uncorrectable NVLink error detected during the execution",
    ),
    (
        221,
        "CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
        "PTX JIT compiler library not found",
    ),
    (
        222,
        "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        "the provided PTX was compiled with an unsupported toolchain.",
    ),
    (
        300,
        "CUDA_ERROR_INVALID_SOURCE",
        "device kernel image is invalid",
    ),
    (301, "CUDA_ERROR_FILE_NOT_FOUND", "file not found"),
    (
        302,
        "CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND",
        "shared object symbol not found",
    ),
    (
        303,
        "CUDA_ERROR_SHARED_OBJECT_INIT_FAILED",
        "shared object initialization failed",
    ),
    (
        304,
        "CUDA_ERROR_OPERATING_SYSTEM",
        "OS call failed or operation not supported on this OS",
    ),
    (400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"),
    (
        401,
        "CUDA_ERROR_ILLEGAL_STATE",
        "the operation cannot be performed in the present state",
    ),
    (500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"),
    (600, "CUDA_ERROR_NOT_READY", "device not ready"),
    (
        700,
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "an illegal memory access was encountered",
    ),
    (
        701,
        "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        "too many resources requested for launch",
    ),
    (
        702,
        "CUDA_ERROR_LAUNCH_TIMEOUT",
        "the launch timed out and was terminated",
    ),
    (
        703,
        "CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING",
        "launch uses incompatible texturing mode",
    ),
    (
        704,
        "CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED",
        "peer access is already enabled",
    ),
    (
        705,
        "CUDA_ERROR_PEER_ACCESS_NOT_ENABLED",
        "peer access has not been enabled",
    ),
    (
        708,
        "CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE",
        "cannot set while device is active in this process",
    ),
    (
        709,
        "CUDA_ERROR_CONTEXT_IS_DESTROYED",
        "context is destroyed",
    ),
    (710, "CUDA_ERROR_ASSERT", "device-side assert triggered"),
    (
        711,
        "CUDA_ERROR_TOO_MANY_PEERS",
        "peer mapping resources exhausted",
    ),
    (
        712,
        "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED",
        "part or all of the requested memory range is already mapped",
    ),
    (
        713,
        "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
        "pointer does not correspond to a registered memory region",
    ),
    (
        714,
        "CUDA_ERROR_HARDWARE_STACK_ERROR",
        "hardware stack error",
    ),
    (
        715,
        "CUDA_ERROR_ILLEGAL_INSTRUCTION",
        "an illegal instruction was encountered",
    ),
    (716, "CUDA_ERROR_MISALIGNED_ADDRESS", "misaligned address"),
    (
        717,
        "CUDA_ERROR_INVALID_ADDRESS_SPACE",
        "operation not supported on global/shared address space",
    ),
    (718, "CUDA_ERROR_INVALID_PC", "invalid program counter"),
    (
        719,
        "CUDA_ERROR_LAUNCH_FAILED",
        "unspecified launch failure",
    ),
    (
        720,
        "CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE",
        "too many blocks in cooperative launch",
    ),
    (800, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"),
    (801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"),
    (
        802,
        "CUDA_ERROR_SYSTEM_NOT_READY",
        "system not yet initialized",
    ),
    (
        803,
        "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
        "system has unsupported display driver / cuda driver combination",
    ),
    (
        900,
        "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        "operation not permitted when stream is capturing",
    ),
    (
        901,
        "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        "operation failed due to a previous error during capture",
    ),
    (
        905,
        "CUDA_ERROR_STREAM_CAPTURE_UNJOINED",
        "capture was not joined",
    ),
    (
        906,
        "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
        "operation not permitted on an event last recorded in a capturing stream",
    ),
    (999, "CUDA_ERROR_UNKNOWN", "unknown error"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown_codes() {
        assert_eq!(CuStatus(700).name(), Some("CUDA_ERROR_ILLEGAL_ADDRESS"));
        assert_eq!(CuStatus(12345).name(), None);
        assert_eq!(format!("{}", CuStatus(12345)), "CuStatus(12345)");
        assert!(CuStatus::ILLEGAL_ADDRESS.is_sticky());
        assert!(!CuStatus::INVALID_VALUE.is_sticky());
    }
}
