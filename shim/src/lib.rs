//! `libcuda.so.1` for Remora.
//!
//! Preloaded into an unmodified CUDA application (SONAME `libcuda.so.1`), this library exports
//! the whole CUDA driver API from one table generated from NVIDIA's headers
//! ([`generated`]). Each function is either implemented in [`api`] or answers
//! `CUDA_ERROR_NOT_SUPPORTED` and logs once. Implemented calls are answered locally (cached
//! device facts, handles minted here, error strings, cudart's export tables), queued without
//! waiting (stream-ordered work, whose errors surface at the next synchronising call), or sent
//! as one round trip to a Remora server ([`client`]).
//!
//! The shim knows nothing of backends: a server is a server, emulated or real.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![allow(non_snake_case, clippy::missing_safety_doc)]

pub mod api;
pub mod client;
pub mod export_tables;
pub mod ffi;
pub mod generated;
pub mod state;

use generated::types::*;

/// The driver API as a trait: every function defaults to "not supported"; [`api::Shim`]
/// overrides the implemented ones. The exports below call through it, so one table decides
/// both what is exported and what `cuGetProcAddress` hands out.
macro_rules! declare_driver_trait {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        #[allow(unused_variables, clippy::too_many_arguments)]
        pub trait Driver {
            $(
                /// # Safety
                /// Pointer arguments come from C and must be valid as the CUDA driver API
                /// documents them.
                unsafe fn $name($($arg: $ty),*) -> CUresult {
                    ffi::unsupported(stringify!($name))
                }
            )*
        }
    };
}
generated::driver_functions!(declare_driver_trait);

macro_rules! export_driver_functions {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        /// The exported C symbols.
        pub mod exports {
            use super::*;
            $(
                /// # Safety
                /// Called from C with arguments as the CUDA driver API documents them.
                #[cfg_attr(not(test), no_mangle)]
                #[allow(clippy::too_many_arguments)]
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
                    // SAFETY: the caller passes arguments as the driver API documents; the
                    // implementation checks every pointer it dereferences for null.
                    ffi::guard(stringify!($name), || unsafe { <api::Shim as Driver>::$name($($arg),*) })
                }
            )*

            /// The address of an exported symbol, for `cuGetProcAddress`.
            pub fn symbol_address(symbol: &str) -> Option<*mut c_void> {
                match symbol {
                    $(stringify!($name) => Some($name as *mut c_void),)*
                    _ => None,
                }
            }
        }
    };
}
generated::driver_functions!(export_driver_functions);
