//! What the shim reads of a module image itself, so that a module load need not wait for the
//! server: each kernel's parameter layout and attributes, and the names of the module's
//! globals.
//!
//! The reading is the emulated GPU's own front end (`remora-ptx`: loader, parser, lowering,
//! and [`remora_ptx::kernels::read_image`], which the emulator builds its modules with), so for
//! an emulated device every number here is the one the server computes, and any image this
//! cannot read is one the server would refuse too (the load then waits, and the server's error
//! is reported at the call). On a real GPU the parameter layouts are PTX's and final, while
//! register, local and shared memory counts are the driver's to give.

use remora_protocol::messages::{DeviceInfo, KernelDesc, ParamDesc};
use remora_ptx::kernels::{read_image, KernelInfo};
use remora_ptx::PtxError;

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR` and `_MINOR`.
const CC_MAJOR: u32 = 75;
const CC_MINOR: u32 = 76;

/// PTX text larger than this is not read here. The front end reads about 30 MB/s, so 1 MiB is
/// some 30 ms: a round trip at the distances the saving is for, and more than a round trip
/// costs nearer.
pub const READ_AT_MOST: usize = 1 << 20;

/// An image as the shim read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// Its kernels, in the order the module defines them.
    pub kernels: Vec<KernelDesc>,
    /// Names of its `.global` and `.const` variables (their addresses are the server's).
    pub globals: Vec<String>,
}

/// Reads `image` as a device of compute capability `cc` (80 for 8.0) would load it: the PTX
/// of the highest architecture not above `cc` (PTX text itself, or a fatbin's member).
pub fn read(image: &[u8], cc: u32) -> Result<LocalImage, PtxError> {
    let m = read_image(image, cc)?;
    Ok(LocalImage {
        kernels: m.kernels.into_iter().map(desc).collect(),
        globals: m.globals.into_iter().map(|(name, _)| name).collect(),
    })
}

/// [`read`] for `device`, or `None` when the image is not one to read here: no PTX for it
/// (machine code only, or PTX for a newer architecture), PTX text over [`READ_AT_MOST`], or
/// PTX the front end does not take. The caller then loads it the way that waits for the
/// server.
pub fn read_for(image: &[u8], device: &DeviceInfo) -> Option<LocalImage> {
    let a = |x| device.attribute(x).unwrap_or(0).max(0) as u32;
    let cc = a(CC_MAJOR) * 10 + a(CC_MINOR);
    let text = remora_ptx::loader::extract_ptx(image, cc).ok()?;
    if text.len() > READ_AT_MOST {
        return None;
    }
    read(text.as_bytes(), cc).ok()
}

/// A kernel as the server's load reply describes it: the emulated backend maps the same
/// [`KernelInfo`] the same way.
fn desc(k: KernelInfo) -> KernelDesc {
    KernelDesc {
        params: k
            .params
            .iter()
            .map(|p| ParamDesc {
                offset: p.offset,
                size: p.size,
            })
            .collect(),
        shared_bytes: k.static_shared_bytes,
        local_bytes: k.local_bytes,
        num_regs: k.num_regs,
        max_threads: k.max_threads_per_block,
        const_bytes: k.const_bytes,
        name: k.name,
    }
}
