//! The driver API as a trait, and its C entry points.
//!
//! Every function of the generated table ([`crate::generated`]) is a method of [`Driver`] that
//! defaults to "not supported"; [`crate::api::Shim`] overrides the implemented ones. Each
//! method has a generic `extern "C"` entry point in [`entry`] that stops panics at the
//! boundary; the crate root exports one instance per symbol, and [`symbol_address`] hands the
//! same instances to `cuGetProcAddress`, so one table decides both.
//!
//! This module knows nothing of the implementation: it is generic over the `Driver`, so the
//! implementation can name it (for `cuGetProcAddress`) without a cycle.

use std::ffi::c_void;

use crate::ffi;
use crate::generated::types::*;

macro_rules! declare_driver {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        /// The driver API: every function defaults to "not supported".
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

        /// One C entry point per driver function, generic over the implementation.
        pub mod entry {
            use super::*;
            $(
                /// # Safety
                /// Called from C with arguments as the CUDA driver API documents them.
                #[allow(clippy::too_many_arguments)]
                pub unsafe extern "C" fn $name<D: Driver>($($arg: $ty),*) -> CUresult {
                    // SAFETY: the caller passes arguments as the driver API documents; the
                    // implementation converts every pointer it dereferences, refusing nulls.
                    ffi::guard(stringify!($name), || unsafe { D::$name($($arg),*) })
                }
            )*
        }

        /// The address of the entry point of a driver symbol, for `cuGetProcAddress`.
        pub fn symbol_address<D: Driver>(symbol: &str) -> Option<*mut c_void> {
            match symbol {
                $(stringify!($name) => Some(entry::$name::<D> as *mut c_void),)*
                _ => None,
            }
        }
    };
}
crate::generated::driver_functions!(declare_driver);
