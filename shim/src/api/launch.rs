//! Kernel launches and occupancy.
//!
//! A launch packs `kernelParams` (or the `extra` buffer) into one parameter buffer using the
//! kernel's layout (read from the image by the shim, or returned by the module load), and is
//! queued: it never waits for the network. Its errors arrive with the next synchronising call,
//! as a real GPU's do; a kernel whose module's posted load is known to have failed fails at
//! the call.

use std::ffi::{c_int, c_uint, c_void};

use remora_protocol::messages::Request;
use remora_protocol::messages::{CtxId, ModuleId, StreamId};
use remora_protocol::CuStatus;

use super::params::{check_geometry, pack, Geometry};
use super::{capture, context, device, module};
use crate::client;
use crate::ffi::{invalid, FromCuda, ShimError, ShimResult};
use crate::generated::{CUlaunchConfig, CUoccupancyB2DSize};
use crate::registry::{registry, Function};

/// Shared memory per multiprocessor of the devices Remora presents.
const SHARED_PER_SM: usize = 167_936;

/// `CU_LAUNCH_ATTRIBUTE_COOPERATIVE`, whose value is an `int` flag at the start of the value.
const LAUNCH_ATTRIBUTE_COOPERATIVE: c_uint = 2;

/// Packs the parameters and queues the launch; on a capturing stream it becomes a kernel node
/// of the capture's graph instead.
///
/// # Safety
/// `params` has one valid pointer per kernel parameter, or `extra` is a valid
/// `CU_LAUNCH_PARAM_*` list, as the driver API requires.
pub unsafe fn launch(
    f: u64,
    g: Geometry,
    stream: u64,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    unsafe { launch_as(f, g, stream, params, extra, false) }
}

/// `cuLaunchCooperativeKernel`: every block resident at once, so blocks may wait for each
/// other (grid sync). A grid larger than the device holds at once is refused here, as the
/// driver refuses it, with `CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE`.
///
/// # Safety
/// As for [`launch`].
pub unsafe fn launch_cooperative(
    f: u64,
    g: Geometry,
    stream: u64,
    params: *mut *mut c_void,
) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    unsafe { launch_as(f, g, stream, params, std::ptr::null_mut(), true) }
}

/// # Safety
/// As for [`launch`].
unsafe fn launch_as(
    f: u64,
    g: Geometry,
    stream: u64,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    cooperative: bool,
) -> ShimResult<()> {
    // The fast path takes no lock of the registry: the function handle and a created stream
    // are read from append-only tables, and the parameter layout is borrowed, not copied.
    let func = module::function(f)?;
    check_geometry(func, &g)?;
    // SAFETY: forwarded contract.
    let buf = unsafe { pack(func, params, extra) }?;
    let (ctx, stream) = registry().stream(stream)?;
    if cooperative {
        let desc = module::exact(func)?;
        let threads = g.block.iter().map(|&d| u64::from(d)).product::<u64>();
        let dev = registry().with_context(ctx, |c| c.device)?;
        let shared = u64::from(desc.shared_bytes) + u64::from(g.shared);
        let limit = device::device(dev)?.cooperative_blocks(threads as u32, shared);
        let blocks = g.grid.iter().map(|&d| u64::from(d)).product::<u64>();
        if blocks > limit {
            return Err(ShimError::new(
                CuStatus::COOPERATIVE_LAUNCH_TOO_LARGE,
                format!(
                    "a cooperative launch of {blocks} blocks of kernel {}; at most {limit} blocks \
                     of {threads} threads fit on the device at once",
                    desc.name
                ),
            ));
        }
    }
    if let Some(cap) = capture::of(stream)? {
        if cooperative {
            return Err(ShimError::new(
                CuStatus::NOT_SUPPORTED,
                "a cooperative launch cannot be captured into a graph here",
            ));
        }
        return cap.add(capture::Op::Kernel {
            func: f,
            grid: g.grid,
            block: g.block,
            shared: g.shared,
            params: buf,
        });
    }
    // The kernel may read any managed memory: the host's writes go first.
    super::managed::before_device_work()?;
    let req = Request::Launch {
        ctx: CtxId(ctx),
        stream: StreamId(stream),
        module: ModuleId(module::library_module(func, ctx)?),
        kernel: func.index,
        grid: g.grid,
        block: g.block,
        shared: g.shared,
        params: buf,
        cooperative,
    };
    client::client()?.post(&req, &[])
}

/// `CUlaunchConfig` as cuda.h lays it out (12.0 and later).
#[repr(C)]
pub struct LaunchConfig {
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared: c_uint,
    stream: *mut c_void,
    attrs: *mut c_void,
    num_attrs: c_uint,
}
const _: () = assert!(std::mem::size_of::<LaunchConfig>() == 56);

impl<'a> FromCuda<'a, *const CUlaunchConfig> for &'a LaunchConfig {
    unsafe fn from_cuda(p: &'a *const CUlaunchConfig) -> ShimResult<&'a LaunchConfig> {
        // SAFETY: CUlaunchConfig has this layout in cuda.h; as for other inputs.
        unsafe { p.cast::<LaunchConfig>().as_ref() }.ok_or_else(|| invalid("null launch config"))
    }
}

/// `CUlaunchAttribute`: an id, padding, and a 64-byte value union.
#[repr(C)]
struct LaunchAttribute {
    id: c_uint,
    pad: [u8; 4],
    value: [u8; 64],
}
const _: () = assert!(std::mem::size_of::<LaunchAttribute>() == 72);

/// `cuLaunchKernelEx`: the same launch from a `CUlaunchConfig`. The cooperative attribute
/// makes it `cuLaunchCooperativeKernel`; other attributes (cluster shape, priority,
/// programmatic serialisation) are hints this GPU model does not need.
///
/// # Safety
/// As for [`launch`].
pub unsafe fn launch_ex(
    c: &LaunchConfig,
    f: u64,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> ShimResult<()> {
    let g = Geometry {
        grid: c.grid,
        block: c.block,
        shared: c.shared,
    };
    let attrs = if c.attrs.is_null() || c.num_attrs == 0 {
        &[][..]
    } else {
        // SAFETY: `attrs` holds `num_attrs` CUlaunchAttribute, by the driver API's contract.
        unsafe {
            std::slice::from_raw_parts(c.attrs.cast::<LaunchAttribute>(), c.num_attrs as usize)
        }
    };
    let cooperative = attrs.iter().any(|a| {
        a.id == LAUNCH_ATTRIBUTE_COOPERATIVE
            && i32::from_ne_bytes([a.value[0], a.value[1], a.value[2], a.value[3]]) != 0
    });
    // SAFETY: forwarded contract.
    unsafe { launch_as(f, g, c.stream as u64, params, extra, cooperative) }
}

/// Blocks per multiprocessor by the function's device's limits (see
/// `DeviceInfo::blocks_per_sm`): the grid limit a cooperative launch enforces is this times
/// the multiprocessor count, so the two agree.
fn blocks_per_sm(f: &Function, block: i32, dynamic_shared: usize) -> ShimResult<i32> {
    if block <= 0 {
        return Ok(0);
    }
    let dev = registry().with_context(f.ctx, |c| c.device)?;
    let shared = dynamic_shared as u64 + u64::from(module::exact(f)?.shared_bytes);
    Ok(device::device(dev)?.blocks_per_sm(block as u32, shared) as i32)
}

pub fn max_active_blocks(n: &mut c_int, f: u64, block: c_int, dynamic: usize) -> ShimResult<()> {
    *n = blocks_per_sm(module::function(f)?, block, dynamic)?;
    Ok(())
}

/// # Safety
/// `to_dynamic`, if given, is the application's `size_t (*)(int)`.
pub unsafe fn max_potential_block_size(
    mg: &mut c_int,
    bs: &mut c_int,
    f: u64,
    to_dynamic: CUoccupancyB2DSize,
    dynamic: usize,
    limit: c_int,
) -> ShimResult<()> {
    let func = module::function(f)?;
    let k = module::exact(func)?;
    let max =
        if limit > 0 { limit.min(1024) } else { 1024 }.min(k.max_threads.clamp(32, 1024) as i32);
    let sms = device::device(context::current_device()?)?
        .attribute(16)
        .unwrap_or(1);
    let (mut best, mut best_occ) = (32, -1);
    let mut b = max / 32 * 32;
    while b >= 32 {
        let dyn_b = match to_dynamic {
            // SAFETY: the callback is the application's `size_t (*)(int)`.
            Some(cb) => unsafe { cb(b) },
            None => dynamic,
        };
        let occ = blocks_per_sm(func, b, dyn_b)? * b;
        if occ > best_occ {
            best_occ = occ;
            best = b;
        }
        b -= 32;
    }
    *bs = best;
    *mg = blocks_per_sm(func, best, dynamic)? * sms;
    Ok(())
}

pub fn available_dynamic_shared(
    size: &mut usize,
    f: u64,
    blocks: c_int,
    _block: c_int,
) -> ShimResult<()> {
    let k = module::exact(module::function(f)?)?;
    let per_block = SHARED_PER_SM / blocks.max(1) as usize;
    *size = per_block
        .min(166_912)
        .saturating_sub(k.shared_bytes as usize);
    Ok(())
}
