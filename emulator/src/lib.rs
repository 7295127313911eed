//! The emulated GPU.
//!
//! `remora-emulator` is a GPU that lives in the host CPU: device memory organised as one
//! address space per client ([`memory::AddressSpace`]) drawing on a shared per-device budget
//! ([`memory::DeviceMemory`]), a loader for PTX text and fatbins, and a PTX interpreter that
//! runs warps of 32 lanes in lockstep. It knows nothing of networks, sessions or the CUDA
//! driver API: the server maps driver calls onto it. It does not run SASS, tensor-core,
//! texture or cluster instructions: those are rejected as `CUDA_ERROR_NOT_SUPPORTED`.
//!
//! Main types: [`Module`] (a parsed and lowered image, shareable), [`LoadedModule`] (a module
//! with its globals placed in one [`AddressSpace`]), [`LaunchConfig`], [`LaunchOutcome`] and
//! [`EmuError`].
//!
//! Everything here is safe Rust: device memory is stored as atomic words so that racing kernel
//! threads (legal in CUDA) are not undefined behaviour on the host.
#![forbid(unsafe_code)]

pub mod error;
pub mod exec;
pub mod float;
pub mod ir;
pub mod loader;
pub mod lower;
pub mod memory;
pub mod module;
pub mod parser;
pub mod printf;

pub use error::EmuError;
pub use memory::{AddressSpace, DeviceMemory, MemError};
pub use module::{
    GlobalInfo, GlobalSpace, KernelInfo, LaunchConfig, LaunchOptions, LaunchOutcome, LoadedModule,
    Module, ParamInfo,
};
