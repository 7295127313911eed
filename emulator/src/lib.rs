//! The emulated GPU.
//!
//! `remora-emulator` is a GPU that lives in the host CPU: device memory organised as one
//! address space per client ([`memory::AddressSpace`]) drawing on a shared per-device budget
//! ([`memory::DeviceMemory`]), a loader for PTX text and fatbins, and a PTX interpreter that
//! runs real CUDA kernels. It knows nothing of networks, sessions or the CUDA driver API: the
//! server maps driver calls onto it, and keeps errors sticky per context. It does not run SASS
//! (an image with only SASS is `CUDA_ERROR_NO_BINARY_FOR_GPU`) nor tensor-core, texture,
//! surface, TMA or cluster instructions (`CUDA_ERROR_NOT_SUPPORTED`, naming the instruction).
//!
//! Main types: [`Module`] (a parsed and lowered image: immutable, shareable through `Arc`),
//! [`LoadedModule`] (a module with its globals placed in one [`AddressSpace`]; it launches
//! kernels), [`LaunchConfig`], [`LaunchOptions`], [`LaunchOutcome`] and [`EmuError`].
//!
//! The pipeline: the front end is the `remora-ptx` crate, re-exported here under its old
//! paths: [`loader`] finds the PTX in an image, [`parser`] turns text into a syntax tree with
//! typed opcodes and modifiers, [`lower`] decodes it once into the typed IR of [`ir`] (dense
//! registers, branch targets as indices, one operation per type and modifier set); its
//! [`PtxError`] becomes the [`EmuError`] with the same CUDA status code. [`exec`] runs the IR
//! (one file per instruction family under `exec/`): warps of 32 lanes in lockstep with
//! predicates as lane masks, divergence by splits that run lowest program counter first and
//! merge where they meet, barriers that count exited threads, and blocks handed to worker
//! threads in order and parked when they run long. [`float`] holds the
//! IEEE rounding modes, `.ftz` and `.sat`; [`printf`] the device `printf` formats.
//!
//! Everything here is safe Rust: device memory is stored as atomic words so that racing kernel
//! threads (legal in CUDA) are not undefined behaviour on the host, and no input (PTX text,
//! parameters, kernel behaviour) can make it panic.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod error;
pub mod exec;
pub mod float;
pub mod fuzzing;
pub mod memory;
pub mod module;
pub mod printf;

pub use remora_ptx::PtxError;
/// The PTX front end, from `remora-ptx`, under the paths it had when it lived here.
pub use remora_ptx::{footprint, guard, ir, loader, lower, parser};

pub use error::EmuError;
pub use memory::{AddressSpace, DeviceMemory, MemError};
pub use module::{
    GlobalInfo, GlobalSpace, KernelInfo, LaunchConfig, LaunchOptions, LaunchOutcome, LoadedModule,
    Module, ParamInfo,
};
