//! Primary and created contexts, the per-thread context stack, limits.

use std::ffi::{c_int, c_uint, c_void};

use remora_protocol::messages::Request;
use remora_protocol::CuStatus;

use super::device;
use crate::client;
use crate::ffi::{invalid, put, ShimError, ShimResult};
use crate::registry::{self, registry, Context, Teardown};

fn handle(ctx: *mut c_void) -> u64 {
    ctx as u64
}

/// The primary context of `dev`, created on the server on first use; not retained.
pub fn primary_handle(dev: c_int) -> ShimResult<u64> {
    device::device(dev)?;
    let (h, created) = registry().primary(dev);
    if created {
        client::client()?.post(
            &Request::CtxCreate {
                ctx: h,
                device: dev as u32,
                flags: 0,
            },
            &[],
        )?;
    }
    Ok(h)
}

pub unsafe fn primary_retain(pctx: *mut *mut c_void, dev: c_int) -> ShimResult<()> {
    if pctx.is_null() {
        return Err(invalid("null context pointer"));
    }
    let h = primary_handle(dev)?;
    registry().with_context(h, |c| c.retained += 1)?;
    // SAFETY: checked non-null above.
    unsafe { put(pctx, h as *mut c_void) }
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
    client::client()?.post(&Request::CtxReset { ctx: h }, &[])
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

pub unsafe fn primary_get_state(
    dev: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> ShimResult<()> {
    device::device(dev)?;
    let (f, a) = registry().primary_state(dev);
    // SAFETY: out-pointers from C.
    unsafe {
        put(flags, f)?;
        put(active, a as c_int)
    }
}

pub unsafe fn create(pctx: *mut *mut c_void, flags: c_uint, dev: c_int) -> ShimResult<()> {
    if pctx.is_null() {
        return Err(invalid("null context pointer"));
    }
    device::device(dev)?;
    let h = registry::mint();
    client::client()?.post(
        &Request::CtxCreate {
            ctx: h,
            device: dev as u32,
            flags,
        },
        &[],
    )?;
    registry().add_context(h, Context::new(dev, flags, false));
    registry::push_current(h);
    // SAFETY: checked non-null above.
    unsafe { put(pctx, h as *mut c_void) }
}

pub fn destroy(ctx: *mut c_void) -> ShimResult<()> {
    let h = handle(ctx);
    registry().teardown(h, Teardown::Destroy)?;
    client::client()?.post(&Request::CtxDestroy { ctx: h }, &[])
}

fn check(ctx: u64) -> ShimResult<()> {
    registry().with_context(ctx, |_| ())
}

pub fn push(ctx: *mut c_void) -> ShimResult<()> {
    check(handle(ctx))?;
    registry::push_current(handle(ctx));
    Ok(())
}

pub unsafe fn pop(pctx: *mut *mut c_void) -> ShimResult<()> {
    let c = registry::pop_current()
        .ok_or_else(|| ShimError::new(CuStatus::INVALID_CONTEXT, "no current context"))?;
    if !pctx.is_null() {
        // SAFETY: non-null out-pointer from C.
        unsafe { *pctx = c as *mut c_void };
    }
    Ok(())
}

pub fn set_current(ctx: *mut c_void) -> ShimResult<()> {
    if ctx.is_null() {
        registry::set_current(None);
        return Ok(());
    }
    check(handle(ctx))?;
    registry::set_current(Some(handle(ctx)));
    Ok(())
}

pub unsafe fn get_current(pctx: *mut *mut c_void) -> ShimResult<()> {
    let c = registry::current().map_or(std::ptr::null_mut(), |c| c as *mut c_void);
    // SAFETY: out-pointer from C.
    unsafe { put(pctx, c) }
}

/// The context named, or the current one for NULL.
fn ctx_or_current(ctx: *mut c_void) -> ShimResult<u64> {
    let h = if ctx.is_null() {
        registry::current_ctx()?
    } else {
        handle(ctx)
    };
    check(h)?;
    Ok(h)
}

/// The device of the current context.
pub fn current_device() -> ShimResult<c_int> {
    let h = registry::current_ctx()?;
    registry().with_context(h, |c| c.device)
}

pub unsafe fn get_device(dev: *mut c_int, ctx: *mut c_void) -> ShimResult<()> {
    let h = ctx_or_current(ctx)?;
    let d = registry().with_context(h, |c| c.device)?;
    // SAFETY: out-pointer from C.
    unsafe { put(dev, d) }
}

pub fn synchronize(ctx: *mut c_void) -> ShimResult<()> {
    let h = ctx_or_current(ctx)?;
    client::client()?
        .call(&Request::CtxSynchronize { ctx: h })
        .map(|_| ())
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

pub unsafe fn get_limit(value: *mut usize, limit: c_uint) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    let stored = registry()
        .with_context(h, |c| c.limits.get(&limit).copied())
        .ok()
        .flatten();
    let v = stored
        .or_else(|| default_limit(limit))
        .ok_or_else(|| ShimError::new(CuStatus(215), format!("limit {limit} is not supported")))?;
    // SAFETY: out-pointer from C.
    unsafe { put(value, v) }
}

pub fn set_limit(limit: c_uint, value: usize) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    default_limit(limit)
        .ok_or_else(|| ShimError::new(CuStatus(215), format!("limit {limit} is not supported")))?;
    // A context destroyed meanwhile has no limits to set.
    let _ = registry().with_context(h, |c| c.limits.insert(limit, value));
    Ok(())
}

pub unsafe fn get_api_version(ctx: *mut c_void, version: *mut c_uint) -> ShimResult<()> {
    ctx_or_current(ctx)?;
    // SAFETY: out-pointer from C. 3020 is what drivers report for contexts of the v2 API.
    unsafe { put(version, 3020) }
}

pub unsafe fn get_flags(flags: *mut c_uint) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    let f = registry().with_context(h, |c| c.flags)?;
    // SAFETY: out-pointer from C.
    unsafe { put(flags, f) }
}

pub fn set_flags(flags: c_uint) -> ShimResult<()> {
    let h = registry::current_ctx()?;
    let _ = registry().with_context(h, |c| c.flags = flags);
    Ok(())
}

/// Cache and shared-memory configuration are hints; the emulated and remote GPUs accept any.
pub unsafe fn get_config(out: *mut c_uint, value: c_uint) -> ShimResult<()> {
    registry::current_ctx()?;
    // SAFETY: out-pointer from C.
    unsafe { put(out, value) }
}

pub fn set_config() -> ShimResult<()> {
    registry::current_ctx().map(|_| ())
}

pub unsafe fn stream_priority_range(least: *mut c_int, greatest: *mut c_int) -> ShimResult<()> {
    // SAFETY: out-pointers from C; either may be NULL.
    unsafe {
        if !least.is_null() {
            *least = 0;
        }
        if !greatest.is_null() {
            *greatest = -5;
        }
    }
    Ok(())
}

pub unsafe fn get_id(ctx: *mut c_void, id: *mut u64) -> ShimResult<()> {
    let h = ctx_or_current(ctx)?;
    // SAFETY: out-pointer from C.
    unsafe { put(id, h) }
}
