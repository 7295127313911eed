//! A deliberately empty `libnvJitLink.so.12`.
//!
//! nvJitLink links device code into machine code (SASS), which the emulated GPU cannot run;
//! the CUDA driver's own linker (`cuLink*`, implemented by the shim) produces PTX, which it can.
//! numba-cuda and cuda-core use nvJitLink whenever they can load one that exports
//! `__nvJitLinkVersion`, and otherwise fall back to the driver's linker. `remora run` preloads
//! this library when the server's GPUs are emulated: it takes the name `libnvJitLink.so.12`,
//! so the real one is never loaded, and exports nothing, so the clients fall back. On real GPUs
//! it is never used.
