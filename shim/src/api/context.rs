//! Primary and created contexts, the per-thread context stack, limits.

use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};

use remora_protocol::messages::Request;
use remora_protocol::CuStatus;

use crate::client;
use crate::ffi::{invalid, put, ShimError, ShimResult};
use crate::state::{self, Context};

fn handle(ctx: *mut c_void) -> u64 {
    ctx as u64
}

/// The primary context of `dev`, created on the server on first use; not retained.
pub fn primary_handle(dev: c_int) -> ShimResult<u64> {
    super::device::device(dev)?;
    let (h, created) = state::with(|s| match s.primary.get(&dev) {
        Some(&h) => (h, false),
        None => {
            let h = state::mint();
            s.primary.insert(dev, h);
            let flags = s.primary_flags.get(&dev).copied().unwrap_or(0);
            s.contexts.insert(
                h,
                Context {
                    device: dev,
                    flags,
                    primary: true,
                    retained: 0,
                    limits: HashMap::new(),
                },
            );
            (h, true)
        }
    });
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
    state::with(|s| {
        if let Some(c) = s.contexts.get_mut(&h) {
            c.retained += 1;
        }
    });
    // SAFETY: checked non-null above.
    unsafe { put(pctx, h as *mut c_void) }
}

pub fn primary_release(dev: c_int) -> ShimResult<()> {
    super::device::device(dev)?;
    let released = state::with(|s| {
        let h = *s.primary.get(&dev)?;
        let c = s.contexts.get_mut(&h)?;
        if c.retained == 0 {
            return None;
        }
        c.retained -= 1;
        Some((h, c.retained == 0))
    });
    match released {
        None => Err(ShimError::new(
            CuStatus::INVALID_CONTEXT,
            format!("primary context of device {dev} is not retained"),
        )),
        Some((h, true)) => reset_context(h),
        Some((_, false)) => Ok(()),
    }
}

/// Frees everything a context holds, locally and on the server.
fn reset_context(h: u64) -> ShimResult<()> {
    state::with(|s| {
        s.allocs.retain(|_, a| a.ctx != h);
        s.streams.retain(|_, st| st.ctx != h);
        s.events.retain(|_, e| e.ctx != h);
    });
    super::module::forget_context(h);
    crate::export_tables::forget_context(h as *mut c_void);
    client::client()?.post(&Request::CtxReset { ctx: h }, &[])
}

pub fn primary_reset(dev: c_int) -> ShimResult<()> {
    super::device::device(dev)?;
    match state::with(|s| s.primary.get(&dev).copied()) {
        Some(h) => reset_context(h),
        None => Ok(()),
    }
}

pub fn primary_set_flags(dev: c_int, flags: c_uint) -> ShimResult<()> {
    super::device::device(dev)?;
    state::with(|s| {
        s.primary_flags.insert(dev, flags);
        if let Some(c) = s
            .primary
            .get(&dev)
            .copied()
            .and_then(|h| s.contexts.get_mut(&h))
        {
            c.flags = flags;
        }
    });
    Ok(())
}

pub unsafe fn primary_get_state(
    dev: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> ShimResult<()> {
    super::device::device(dev)?;
    let (f, a) = state::with(|s| {
        let f = s.primary_flags.get(&dev).copied().unwrap_or(0);
        let a = s
            .primary
            .get(&dev)
            .and_then(|h| s.contexts.get(h))
            .is_some_and(|c| c.retained > 0);
        (f, a)
    });
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
    super::device::device(dev)?;
    let h = state::mint();
    client::client()?.post(
        &Request::CtxCreate {
            ctx: h,
            device: dev as u32,
            flags,
        },
        &[],
    )?;
    state::with(|s| {
        s.contexts.insert(
            h,
            Context {
                device: dev,
                flags,
                primary: false,
                retained: 0,
                limits: HashMap::new(),
            },
        )
    });
    state::push_current(h);
    // SAFETY: checked non-null above.
    unsafe { put(pctx, h as *mut c_void) }
}

pub fn destroy(ctx: *mut c_void) -> ShimResult<()> {
    let h = handle(ctx);
    let primary = state::with(|s| s.context(h).map(|c| c.primary))?;
    if primary {
        return Err(ShimError::new(
            CuStatus::INVALID_CONTEXT,
            "a primary context cannot be destroyed",
        ));
    }
    state::with(|s| {
        s.contexts.remove(&h);
        s.allocs.retain(|_, a| a.ctx != h);
        s.streams.retain(|_, st| st.ctx != h);
        s.events.retain(|_, e| e.ctx != h);
    });
    super::module::forget_context(h);
    crate::export_tables::forget_context(ctx);
    state::drop_from_stack(h);
    client::client()?.post(&Request::CtxDestroy { ctx: h }, &[])
}

fn check(ctx: u64) -> ShimResult<()> {
    state::with(|s| s.context(ctx).map(|_| ()))
}

pub fn push(ctx: *mut c_void) -> ShimResult<()> {
    check(handle(ctx))?;
    state::push_current(handle(ctx));
    Ok(())
}

pub unsafe fn pop(pctx: *mut *mut c_void) -> ShimResult<()> {
    let c = state::pop_current()
        .ok_or_else(|| ShimError::new(CuStatus::INVALID_CONTEXT, "no current context"))?;
    if !pctx.is_null() {
        // SAFETY: non-null out-pointer from C.
        unsafe { *pctx = c as *mut c_void };
    }
    Ok(())
}

pub fn set_current(ctx: *mut c_void) -> ShimResult<()> {
    if ctx.is_null() {
        state::set_current(None);
        return Ok(());
    }
    check(handle(ctx))?;
    state::set_current(Some(handle(ctx)));
    Ok(())
}

pub unsafe fn get_current(pctx: *mut *mut c_void) -> ShimResult<()> {
    let c = state::current().map_or(std::ptr::null_mut(), |c| c as *mut c_void);
    // SAFETY: out-pointer from C.
    unsafe { put(pctx, c) }
}

/// The context named, or the current one for NULL.
fn ctx_or_current(ctx: *mut c_void) -> ShimResult<u64> {
    let h = if ctx.is_null() {
        state::current_ctx()?
    } else {
        handle(ctx)
    };
    check(h)?;
    Ok(h)
}

/// The device of the current context.
pub fn current_device() -> ShimResult<c_int> {
    let h = state::current_ctx()?;
    state::with(|s| s.context(h).map(|c| c.device))
}

pub unsafe fn get_device(dev: *mut c_int, ctx: *mut c_void) -> ShimResult<()> {
    let h = ctx_or_current(ctx)?;
    let d = state::with(|s| s.context(h).map(|c| c.device))?;
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
    let h = state::current_ctx()?;
    let stored = state::with(|s| {
        s.contexts
            .get(&h)
            .and_then(|c| c.limits.get(&limit).copied())
    });
    let v = stored
        .or_else(|| default_limit(limit))
        .ok_or_else(|| ShimError::new(CuStatus(215), format!("limit {limit} is not supported")))?;
    // SAFETY: out-pointer from C.
    unsafe { put(value, v) }
}

pub fn set_limit(limit: c_uint, value: usize) -> ShimResult<()> {
    let h = state::current_ctx()?;
    default_limit(limit)
        .ok_or_else(|| ShimError::new(CuStatus(215), format!("limit {limit} is not supported")))?;
    state::with(|s| {
        if let Some(c) = s.contexts.get_mut(&h) {
            c.limits.insert(limit, value);
        }
    });
    Ok(())
}

pub unsafe fn get_api_version(ctx: *mut c_void, version: *mut c_uint) -> ShimResult<()> {
    ctx_or_current(ctx)?;
    // SAFETY: out-pointer from C. 3020 is what drivers report for contexts of the v2 API.
    unsafe { put(version, 3020) }
}

pub unsafe fn get_flags(flags: *mut c_uint) -> ShimResult<()> {
    let h = state::current_ctx()?;
    let f = state::with(|s| s.context(h).map(|c| c.flags))?;
    // SAFETY: out-pointer from C.
    unsafe { put(flags, f) }
}

pub fn set_flags(flags: c_uint) -> ShimResult<()> {
    let h = state::current_ctx()?;
    state::with(|s| {
        if let Some(c) = s.contexts.get_mut(&h) {
            c.flags = flags;
        }
    });
    Ok(())
}

/// Cache and shared-memory configuration are hints; the emulated and remote GPUs accept any.
pub unsafe fn get_config(out: *mut c_uint, value: c_uint) -> ShimResult<()> {
    state::current_ctx()?;
    // SAFETY: out-pointer from C.
    unsafe { put(out, value) }
}

pub fn set_config() -> ShimResult<()> {
    state::current_ctx().map(|_| ())
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
