//! The one error type of the emulator, with the CUDA error code each variant becomes.

use remora_ptx::PtxError;

use crate::memory::MemError;

/// What went wrong loading or running a kernel. [`EmuError::cuda_code`] gives the `CUresult`
/// the server reports; errors raised by a launch are sticky on the context (the server's job).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmuError {
    /// The PTX text does not parse or refers to undefined names; fix the source.
    #[error("invalid PTX at line {line}: {msg}")]
    InvalidPtx { line: u32, msg: String },
    /// A valid instruction or feature the emulator does not implement (tensor cores, textures).
    #[error("not supported by the emulated GPU (line {line}): {what}")]
    NotSupported { line: u32, what: String },
    /// The image holds only SASS (or nothing usable): recompile with PTX embedded.
    #[error("no PTX for the emulated GPU in this image: {0}")]
    NoBinaryForGpu(String),
    /// The image is not PTX, a fatbin or an ELF file.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A kernel accessed memory outside any allocation.
    #[error("illegal address: {0}")]
    IllegalAddress(String),
    /// A kernel accessed memory at an address not aligned to the access size.
    #[error("misaligned address: {0}")]
    MisalignedAddress(String),
    /// A kernel jumped or called to an address that holds no code.
    #[error("invalid program counter: {0}")]
    InvalidPc(String),
    /// A device-side `assert` failed.
    #[error("device-side assert triggered")]
    Assert,
    /// The kernel executed `trap` or deadlocked.
    #[error("launch failed: {0}")]
    LaunchFailed(String),
    /// The kernel ran past the instruction budget of the launch.
    #[error("launch timed out after {0} warp instructions")]
    LaunchTimeout(u64),
    /// A bad launch configuration or parameter buffer.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// No kernel or global of that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// Allocating the module's globals failed.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
}

impl EmuError {
    /// The `CUresult` value of this error.
    pub fn cuda_code(&self) -> u32 {
        match self {
            EmuError::InvalidPtx { .. } => 218,
            EmuError::NotSupported { .. } => 801,
            EmuError::NoBinaryForGpu(_) => 209,
            EmuError::InvalidImage(_) => 200,
            EmuError::IllegalAddress(_) => 700,
            EmuError::MisalignedAddress(_) => 716,
            EmuError::InvalidPc(_) => 718,
            EmuError::Assert => 710,
            EmuError::LaunchFailed(_) => 719,
            EmuError::LaunchTimeout(_) => 702,
            EmuError::InvalidValue(_) => 1,
            EmuError::NotFound(_) => 500,
            EmuError::OutOfMemory(_) => 2,
        }
    }
}

impl From<MemError> for EmuError {
    fn from(e: MemError) -> Self {
        match e {
            MemError::OutOfMemory { .. } => EmuError::OutOfMemory(e.to_string()),
            MemError::Misaligned { .. } => EmuError::MisalignedAddress(e.to_string()),
            MemError::InvalidSize(_) => EmuError::InvalidValue(e.to_string()),
            MemError::NotAllocated(_) | MemError::OutOfBounds { .. } => {
                EmuError::IllegalAddress(e.to_string())
            }
        }
    }
}

impl From<PtxError> for EmuError {
    fn from(e: PtxError) -> Self {
        match e {
            PtxError::InvalidPtx { line, msg } => EmuError::InvalidPtx { line, msg },
            PtxError::NotSupported { line, what } => EmuError::NotSupported { line, what },
            PtxError::NoBinaryForGpu(s) => EmuError::NoBinaryForGpu(s),
            PtxError::InvalidImage(s) => EmuError::InvalidImage(s),
        }
    }
}
