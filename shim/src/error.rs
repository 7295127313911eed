//! Why a call failed, as the shim sees it, and the one conversion of that into a `CUresult`.
//!
//! The bottom of the crate: every other module may use it, it uses none of them.

use remora_protocol::CuStatus;

use crate::generated::types::CUresult;

/// Why a call failed, as the shim sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShimError {
    /// A CUDA error, from the server or from a local check, with an explanation for the log.
    #[error("{status}: {message}")]
    Cuda { status: CuStatus, message: String },
    /// The server cannot be reached (never was, or the connection died).
    #[error("{0}")]
    Unreachable(String),
}

impl ShimError {
    pub fn new(status: CuStatus, message: impl Into<String>) -> Self {
        Self::Cuda {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> CuStatus {
        match self {
            ShimError::Cuda { status, .. } => *status,
            // Like a GPU that fell off the bus: the device is gone for this process.
            ShimError::Unreachable(_) => CuStatus::DEVICE_UNAVAILABLE,
        }
    }
}

impl From<ShimError> for CUresult {
    fn from(e: ShimError) -> CUresult {
        e.status().0
    }
}

pub type ShimResult<T> = Result<T, ShimError>;

/// `CUDA_ERROR_INVALID_VALUE` with an explanation.
pub fn invalid(message: impl Into<String>) -> ShimError {
    ShimError::new(CuStatus::INVALID_VALUE, message)
}

/// `CUDA_ERROR_INVALID_HANDLE` for an unknown handle of the kind named.
pub fn invalid_handle(what: &str, h: u64) -> ShimError {
    ShimError::new(CuStatus::INVALID_HANDLE, format!("unknown {what} {h:#x}"))
}

/// `CUDA_ERROR_INVALID_CONTEXT` for an unknown context.
pub fn invalid_context(h: u64) -> ShimError {
    ShimError::new(CuStatus::INVALID_CONTEXT, format!("unknown context {h:#x}"))
}
