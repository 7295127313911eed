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
//!
//! Modules import one way only, from the bottom up:
//!
//! - [`generated`]: the C signatures and types; [`error`]: `ShimError`, the one way a call
//!   fails; [`fork`]: the rule for children forked after initialisation.
//! - [`registry`]: every client-side object (contexts and what they own, the address maps, the
//!   thread's context stack); lock-free reads for launches.
//! - [`ffi`]: the conversion layer (C arguments to references, errors to `CUresult`, panics
//!   stopped at the boundary).
//! - [`client`] (the connection), [`export_tables`] (cudart's private tables), [`driver`] (the
//!   `Driver` trait and its generic C entry points).
//! - [`api`]: the implementations and the table that binds them to driver symbols.
//! - this crate root: the exported symbols, one `driver` entry point each, and Remora's own
//!   entry points for its other client libraries ([`remora_device_usage`]).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![allow(non_snake_case, clippy::missing_safety_doc)]

pub mod api;
pub mod client;
pub mod devrt;
pub mod driver;
pub mod error;
pub mod export_tables;
pub mod ffi;
pub mod fork;
pub mod generated;
pub mod registry;

use generated::types::*;

macro_rules! export_driver_functions {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        /// The exported C symbols: each is the [`driver::entry`] point of [`api::Shim`].
        pub mod exports {
            use super::*;
            $(
                /// # Safety
                /// Called from C with arguments as the CUDA driver API documents them.
                #[cfg_attr(not(test), no_mangle)]
                #[allow(clippy::too_many_arguments)]
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
                    // SAFETY: forwarded from C unchanged.
                    unsafe { driver::entry::$name::<api::Shim>($($arg),*) }
                }
            )*
        }
    };
}
generated::driver_functions!(export_driver_functions);

/// A device's usage as Remora's NVML stand-in (`libnvidia-ml.so.1`) reports it.
#[repr(C)]
pub struct RemoraDeviceUsage {
    pub free: u64,
    pub total: u64,
    /// Percent of the last second the device ran kernels; -1 where the server cannot tell.
    pub utilization: i32,
}

/// Remora's own entry point, not CUDA's: the NVML stand-in asks the server through the
/// shim's one connection, so NVML and CUDA in a process see the same session's devices.
///
/// # Safety
/// `out` is NULL or points to a writable `RemoraDeviceUsage`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn remora_device_usage(dev: c_int, out: *mut RemoraDeviceUsage) -> CUresult {
    ffi::guard("remora_device_usage", || {
        // SAFETY: NULL or writable, by this function's contract.
        let Some(out) = (unsafe { out.as_mut() }) else {
            return remora_protocol::CuStatus::INVALID_VALUE.0;
        };
        let r = api::device::usage(dev).map(|(free, total, util)| {
            *out = RemoraDeviceUsage {
                free,
                total,
                utilization: util.map_or(-1, |u| u as i32),
            };
        });
        ffi::finish("remora_device_usage", r)
    })
}
