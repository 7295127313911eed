//! The emulated GPU.
//!
//! `remora-emulator` is a GPU that lives in the host CPU: device memory organised as one
//! address space per client ([`memory::AddressSpace`]) drawing on a shared per-device budget
//! ([`memory::DeviceMemory`]), and (in later modules) a loader for PTX and fatbins and a PTX
//! interpreter. It knows nothing of networks, sessions or the CUDA driver API: the server maps
//! driver calls onto it.
//!
//! Everything here is safe Rust: device memory is stored as atomic words so that racing kernel
//! threads (legal in CUDA) are not undefined behaviour on the host.
#![forbid(unsafe_code)]

pub mod memory;

pub use memory::{AddressSpace, DeviceMemory, MemError};
