//! The PTX front end of the emulated GPU.
//!
//! `remora-ptx` turns a CUDA image into code an interpreter can run, and nothing more: it has
//! no device memory and runs nothing, so a crate that only needs to read kernels (the pool,
//! which splits them across machines) can use it without the interpreter.
//!
//! The pipeline: [`loader`] finds the PTX text in an image (PTX text, a fatbin with LZ4 or
//! Zstandard members, or an ELF file holding one), [`parser`] turns text into a syntax tree
//! whose instructions carry a typed [`parser::Opcode`] and decoded [`parser::Mods`], and
//! [`lower`] decodes that once into the typed IR of [`ir`]: dense registers, branch targets as
//! instruction indices, one operation per type and modifier set, kernel parameter and local
//! frame layouts computed with PTX's alignment rules.
//!
//! [`kernels`] describes each kernel as a launcher needs it (parameter layout, frame layout,
//! the attributes a driver reports): the emulated GPU and the client both use it, so the client
//! can read a module's kernels before the server has answered its load.
//!
//! The analyses other rooms need: [`footprint`] proves which kernels may be split by blocks
//! across devices (the global bytes each range of blocks reads and writes, as expressions of
//! the parameters evaluated at launch), and [`guard`] rewrites a module so that each kernel
//! runs only a range of its blocks.
//!
//! Every error is a [`PtxError`] whose [`PtxError::cuda_code`] is the `CUresult` a driver would
//! report: invalid PTX (with its line), an instruction the emulated GPU does not run (tensor
//! cores, textures, surfaces, TMA, clusters: `CUDA_ERROR_NOT_SUPPORTED`, naming the
//! instruction), an image with only SASS, or an image that is none of the above.
//!
//! Everything here is safe Rust and fuzz-safe: no input can make it panic, nesting depth and
//! variable sizes are bounded, and decompression is capped.
#![forbid(unsafe_code)]

pub mod error;
pub mod footprint;
pub mod guard;
pub mod ir;
pub mod isa;
pub mod kernels;
pub mod loader;
pub mod lower;
pub mod parser;

pub use error::PtxError;
