//! `CUmemPoolProps`, the properties of a memory pool (and of a graph's memory allocation
//! node), as cuda.h lays them out.

use std::ffi::{c_int, c_uint, c_void};

use crate::ffi::{invalid, FromCuda, ShimResult};
use crate::generated::CUmemPoolProps;

/// `CUmemPoolProps` as cuda.h lays it out.
#[repr(C)]
pub struct PoolProps {
    pub(crate) alloc_type: c_uint,
    pub(crate) handle_types: c_uint,
    pub(crate) location_type: c_uint,
    pub(crate) location_id: c_int,
    _win32: *mut c_void,
    pub(crate) max_size: usize,
    _usage: u16,
    _reserved: [u8; 54],
}
const _: () = assert!(std::mem::size_of::<PoolProps>() == 88);

impl PoolProps {
    /// Pinned memory on device `device`, no handle types, no limit.
    pub fn device_pinned(device: c_int) -> Self {
        Self {
            alloc_type: 1,
            handle_types: 0,
            location_type: 1,
            location_id: device,
            _win32: std::ptr::null_mut(),
            max_size: 0,
            _usage: 0,
            _reserved: [0; 54],
        }
    }
}

impl<'a> FromCuda<'a, *const CUmemPoolProps> for &'a PoolProps {
    unsafe fn from_cuda(p: &'a *const CUmemPoolProps) -> ShimResult<&'a PoolProps> {
        // SAFETY: PoolProps mirrors cuda.h's layout; a valid input.
        unsafe { p.cast::<PoolProps>().as_ref() }.ok_or_else(|| invalid("null pool properties"))
    }
}
