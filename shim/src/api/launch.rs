//! Kernel launches and occupancy.
//!
//! A launch packs `kernelParams` (or the `extra` buffer) into one parameter buffer using the
//! layout the module load returned, and is queued: it never waits for the network. Its errors
//! arrive with the next synchronising call, as a real GPU's do.

use std::ffi::{c_int, c_uint, c_void};

use remora_protocol::messages::Request;
use remora_protocol::messages::{CtxId, ModuleId, StreamId};

use super::params::{check_geometry, pack, Geometry};
use super::{capture, context, device, module};
use crate::client;
use crate::ffi::{invalid, FromCuda, ShimResult};
use crate::generated::{CUlaunchConfig, CUoccupancyB2DSize};
use crate::registry::registry;

/// Threads per multiprocessor and blocks per multiprocessor of the devices Remora presents.
const THREADS_PER_SM: i32 = 2048;
const BLOCKS_PER_SM: i32 = 32;
const SHARED_PER_SM: usize = 167_936;

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
    // The fast path takes no lock of the registry: the function handle and a created stream
    // are read from append-only tables, and the parameter layout is borrowed, not copied.
    let func = module::function(f)?;
    check_geometry(func, &g)?;
    // SAFETY: forwarded contract.
    let buf = unsafe { pack(func, params, extra) }?;
    let (ctx, stream) = registry().stream(stream)?;
    if let Some(cap) = capture::of(stream)? {
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

/// `cuLaunchKernelEx`: the same launch from a `CUlaunchConfig`. Launch attributes (cluster
/// shape, priority, programmatic serialisation) are hints this GPU model does not need.
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
    // SAFETY: forwarded contract.
    unsafe { launch(f, g, c.stream as u64, params, extra) }
}

fn blocks_per_sm(block: i32, dynamic_shared: usize, static_shared: usize) -> i32 {
    if block <= 0 {
        return 0;
    }
    let warps = (block + 31) / 32 * 32;
    let by_threads = THREADS_PER_SM / warps;
    let shared = dynamic_shared + static_shared;
    let by_shared = SHARED_PER_SM
        .checked_div(shared)
        .map_or(BLOCKS_PER_SM, |b| b as i32);
    by_threads.min(by_shared).min(BLOCKS_PER_SM)
}

pub fn max_active_blocks(n: &mut c_int, f: u64, block: c_int, dynamic: usize) -> ShimResult<()> {
    let k = &module::function(f)?.kernel;
    *n = blocks_per_sm(block, dynamic, k.shared_bytes as usize);
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
    let k = &module::function(f)?.kernel;
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
        let occ = blocks_per_sm(b, dyn_b, k.shared_bytes as usize) * b;
        if occ > best_occ {
            best_occ = occ;
            best = b;
        }
        b -= 32;
    }
    *bs = best;
    *mg = blocks_per_sm(best, dynamic, k.shared_bytes as usize) * sms;
    Ok(())
}

pub fn available_dynamic_shared(
    size: &mut usize,
    f: u64,
    blocks: c_int,
    _block: c_int,
) -> ShimResult<()> {
    let k = &module::function(f)?.kernel;
    let per_block = SHARED_PER_SM / blocks.max(1) as usize;
    *size = per_block
        .min(166_912)
        .saturating_sub(k.shared_bytes as usize);
    Ok(())
}
