//! The one error type of the PTX front end, with the CUDA error code each variant becomes.

/// What is wrong with an image or its PTX text. [`PtxError::cuda_code`] gives the `CUresult`
/// a driver reports for it; the emulator turns it into its own error with the same code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtxError {
    /// The PTX text does not parse or refers to undefined names; fix the source.
    #[error("invalid PTX at line {line}: {msg}")]
    InvalidPtx { line: u32, msg: String },
    /// A valid instruction or feature the front end does not accept (tensor cores, textures).
    #[error("not supported by the emulated GPU (line {line}): {what}")]
    NotSupported { line: u32, what: String },
    /// The image holds only SASS (or nothing usable): recompile with PTX embedded.
    #[error("no PTX for the emulated GPU in this image: {0}")]
    NoBinaryForGpu(String),
    /// The image is not PTX, a fatbin or an ELF file.
    #[error("invalid image: {0}")]
    InvalidImage(String),
}

impl PtxError {
    /// The `CUresult` value of this error.
    pub fn cuda_code(&self) -> u32 {
        match self {
            PtxError::InvalidPtx { .. } => 218,
            PtxError::NotSupported { .. } => 801,
            PtxError::NoBinaryForGpu(_) => 209,
            PtxError::InvalidImage(_) => 200,
        }
    }

    pub(crate) fn ptx(line: u32, msg: impl Into<String>) -> Self {
        PtxError::InvalidPtx {
            line,
            msg: msg.into(),
        }
    }

    pub(crate) fn unsupported(line: u32, what: impl Into<String>) -> Self {
        PtxError::NotSupported {
            line,
            what: what.into(),
        }
    }
}
