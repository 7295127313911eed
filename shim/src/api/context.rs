//! Primary and created contexts, the per-thread context stack, limits.

use std::ffi::{c_int, c_uint};

use remora_protocol::messages::CtxId;
use remora_protocol::messages::Request;
use remora_protocol::CuStatus;

use super::device;
use crate::client;
use crate::ffi::{ShimError, ShimResult};
use crate::registry::{self, registry, Context, Teardown};

/// The primary context of `dev`, created on the server on first use; not retained.
pub fn primary_handle(dev: c_int) -> ShimResult<u64> {
    device::device(dev)?;
    let (h, created) = registry().primary(dev);
    if created {
        client::client()?.post(
            &Request::CtxCreate {
                ctx: CtxId(h),
                device: dev as u32,
                flags: 0,
            },
            &[],
        )?;
    }
    Ok(h)
}

pub fn primary_retain(pctx: &mut u64, dev: c_int) -> ShimResult<()> {
    let h = primary_handle(dev)?;
    registry().with_context(h, |c| c.retained += 1)?;
    *pctx = h;
    Ok(())
}

pub fn primary_release(dev: c_int) -> ShimResult<()> {
    device::device(dev)?;
    let not_retained = || {
        ShimError::new(
            CuStatus::INVALID_CONTEXT,
            format!("primary context of device {dev} is not retained"),
        )
    };
    let h = registry().existing_primary(dev).ok_or_else(not_retained)?;
    let last = registry().with_context(h, |c| {
        if c.retained == 0 {
            return Err(not_retained());
        }
        c.retained -= 1;
        Ok(c.retained == 0)
    })??;
    if last {
        reset(h)?;
    }
    Ok(())
}

/// Frees everything a primary context holds, locally and on the server.
fn reset(h: u64) -> ShimResult<()> {
    registry().teardown(h, Teardown::Reset)?;
    client::client()?.post(&Request::CtxReset { ctx: CtxId(h) }, &[])
}

pub fn primary_reset(dev: c_int) -> ShimResult<()> {
    device::device(dev)?;
    match registry().existing_primary(dev) {
        Some(h) => reset(h),
        None => Ok(()),
    }
}

pub fn primary_set_flags(dev: c_int, flags: c_uint) -> ShimResult<()> {
    device::device(dev)?;
    registry().set_primary_flags(dev, flags);
    Ok(())
}

pub fn primary_get_state(dev: c_int, flags: &mut c_uint, active: &mut c_int) -> ShimResult<()> {
    device::device(dev)?;
    let (f, a) = registry().primary_state(dev);
    (*flags, *active) = (f, a as c_int);
    Ok(())
}

pub fn create(pctx: &mut u64, flags: c_uint, dev: c_int) -> ShimResult<()> {
    device::device(dev)?;
    let h = registry::mint();
    client::client()?.post(
        &Request::CtxCreate {
            ctx: CtxId(h),
            device: dev as u32,
            flags,
        },
        &[],
    )?;
    registry().add_context(h, Context::new(dev, flags, false));
    registry::push_current(h);
    *pctx = h;
    Ok(())
}

pub fn destroy(h: u64) -> ShimResult<()> {
    registry().teardown(h, Teardown::Destroy)?;
    client::client()?.post(&Request::CtxDestroy { ctx: CtxId(h) }, &[])
}

fn check(ctx: u64) -> ShimResult<()> {
    registry().with_context(ctx, |_| ())
}

pub fn push(ctx: u64) -> ShimResult<()> {
    check(ctx)?;
    registry::push_current(ctx);
    Ok(())
}

pub fn pop(pctx: Option<&mut u64>) -> ShimResult<()> {
    let c = registry::pop_current()
        .ok_or_else(|| ShimError::new(CuStatus::INVALID_CONTEXT, "no current context"))?;
    if let Some(p) = pctx {
        *p = c;
    }
    Ok(())
}

pub fn set_current(ctx: u64) -> ShimResult<()> {
    if ctx == 0 {
        registry::set_current(None);
        return Ok(());
    }
    check(ctx)?;
    registry::set_current(Some(ctx));
    Ok(())
}

pub fn get_current(pctx: &mut u64) -> ShimResult<()> {
    *pctx = registry::current().unwrap_or(0);
    Ok(())
}

/// The context named, or the current one for NULL.
fn ctx_or_current(ctx: u64) -> ShimResult<u64> {
    let h = if ctx == 0 {
        registry::current_ctx()?
    } else {
        ctx
    };
    check(h)?;
    Ok(h)
}

/// The device of the current context.
pub fn current_device() -> ShimResult<c_int> {
    let h = registry::current_ctx()?;
    registry().with_context(h, |c| c.device)
}

pub fn get_device(dev: &mut c_int, ctx: u64) -> ShimResult<()> {
    let h = ctx_or_current(ctx)?;
    *dev = registry().with_context(h, |c| c.device)?;
    Ok(())
}

pub fn synchronize(ctx: u64) -> ShimResult<()> {
    let h = ctx_or_current(ctx)?;
    super::capture::forbid_unsafe_call("cuCtxSynchronize")?;
    super::managed::sync_call(
        client::client()?,
        &Request::CtxSynchronize { ctx: CtxId(h) },
    )?;
    super::mempool::synchronized(None)
}

/// `CUlimit` defaults of a compute capability 8.0 device.
fn default_limit(limit: u32) -> Option<usize> {
    Some(match limit {
        0 => 1024,    // STACK_SIZE
        1 => 1 << 20, // PRINTF_FIFO_SIZE
        2 => 8 << 20, // MALLOC_HEAP_SIZE
        3 => 2,       // DEV_RUNTIME_SYNC_DEPTH
        4 => 2048,    // DEV_RUNTIME_PENDING_LAUNCH_COUNT
        5 => 64,      // MAX_L2_FETCH_GRANULARITY
        6 => 0,       // PERSISTING_L2_CACHE_SIZE
        _ => return None,
    })
}

pub fn get_limit(value: &mut usize, limit: c_uint) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    let stored = registry()
        .with_context(h, |c| c.limits.get(&limit).copied())
        .ok()
        .flatten();
    *value = stored
        .or_else(|| default_limit(limit))
        .ok_or_else(|| ShimError::new(CuStatus(215), format!("limit {limit} is not supported")))?;
    Ok(())
}

pub fn set_limit(limit: c_uint, value: usize) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    default_limit(limit)
        .ok_or_else(|| ShimError::new(CuStatus(215), format!("limit {limit} is not supported")))?;
    // A context destroyed meanwhile has no limits to set.
    let _ = registry().with_context(h, |c| c.limits.insert(limit, value));
    Ok(())
}

pub fn get_api_version(ctx: u64, version: &mut c_uint) -> ShimResult<()> {
    ctx_or_current(ctx)?;
    // 3020 is what drivers report for contexts of the v2 API.
    *version = 3020;
    Ok(())
}

pub fn get_flags(flags: &mut c_uint) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    *flags = registry().with_context(h, |c| c.flags)?;
    Ok(())
}

pub fn set_flags(flags: c_uint) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    let _ = registry().with_context(h, |c| c.flags = flags);
    Ok(())
}

/// Cache and shared-memory configuration are hints; the emulated and remote GPUs accept any.
pub fn get_config(out: &mut c_uint, value: c_uint) -> ShimResult<()> {
    registry::current_ctx()?;
    *out = value;
    Ok(())
}

pub fn set_config() -> ShimResult<()> {
    registry::current_ctx().map(|_| ())
}

/// Either out-pointer may be NULL.
pub fn stream_priority_range(
    least: Option<&mut c_int>,
    greatest: Option<&mut c_int>,
) -> ShimResult<()> {
    if let Some(l) = least {
        *l = 0;
    }
    if let Some(g) = greatest {
        *g = -5;
    }
    Ok(())
}

pub fn get_id(ctx: u64, id: &mut u64) -> ShimResult<()> {
    *id = ctx_or_current(ctx)?;
    Ok(())
}

/// `cuProfilerStart`/`cuProfilerStop` only mark a range for a profiler attached to the process;
/// no profiler is, so there is nothing to do but what the driver checks: a current context.
pub fn profiler_range() -> ShimResult<()> {
    registry::current_ctx().map(|_| ())
}

/// `cuProfilerInitialize` is deprecated: since CUDA 12.0 the driver always answers
/// `CUDA_ERROR_NOT_SUPPORTED` (cudaProfiler.h, "Profiler Control [DEPRECATED]").
pub fn profiler_initialize() -> ShimResult<()> {
    Err(ShimError::new(
        CuStatus::NOT_SUPPORTED,
        "cuProfilerInitialize is deprecated (CUDA 12.0 and later answer NOT_SUPPORTED)",
    ))
}
