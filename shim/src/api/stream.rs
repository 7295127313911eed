//! Streams and events.
//!
//! Creating, recording, waiting and destroying are queued (handles are minted here); only
//! synchronise, query and elapsed time wait for the server.

use std::ffi::{c_int, c_uint, c_void};

use remora_protocol::messages::{ReplyBody, Request};
use remora_protocol::CuStatus;

use crate::client;
use crate::ffi::{invalid, out, put, ShimError, ShimResult};
use crate::registry::{self, registry};

fn h(p: *mut c_void) -> u64 {
    p as u64
}

pub unsafe fn create(ph: *mut *mut c_void, flags: c_uint, priority: c_int) -> ShimResult<()> {
    // SAFETY: out-pointer from C.
    let ph = unsafe { out(ph) }?;
    if flags & !1 != 0 {
        return Err(invalid(format!("stream flags {flags:#x}")));
    }
    let ctx = registry::current_ctx()?;
    let c = client::client()?;
    // Priorities clamp to the device's range [-5, 0], as the driver does.
    let priority = priority.clamp(-5, 0);
    let s = registry().add_stream(ctx, flags, priority)?;
    let req = Request::StreamCreate {
        ctx,
        stream: s,
        flags,
        priority,
    };
    if let Err(e) = c.post(&req, &[]) {
        let _ = registry().remove_stream(s);
        return Err(e);
    }
    *ph = s as *mut c_void;
    Ok(())
}

pub fn destroy(stream: *mut c_void) -> ShimResult<()> {
    let s = h(stream);
    let ctx = registry().remove_stream(s)?;
    client::client()?.post(&Request::StreamDestroy { ctx, stream: s }, &[])
}

pub fn synchronize(stream: *mut c_void) -> ShimResult<()> {
    let (ctx, stream) = registry().stream(h(stream))?;
    client::client()?
        .call(&Request::StreamSynchronize { ctx, stream })
        .map(|_| ())
}

pub fn query(stream: *mut c_void) -> ShimResult<()> {
    let (ctx, stream) = registry().stream(h(stream))?;
    client::client()?
        .call(&Request::StreamQuery { ctx, stream })
        .map(|_| ())
}

pub fn wait_event(stream: *mut c_void, event: *mut c_void, _flags: c_uint) -> ShimResult<()> {
    registry().event_ctx(h(event))?;
    let (ctx, stream) = registry().stream(h(stream))?;
    client::client()?.post(
        &Request::StreamWaitEvent {
            ctx,
            stream,
            event: h(event),
        },
        &[],
    )
}

/// A property of a created stream; the default streams' are 0.
fn stream_info<T: Default>(
    stream: *mut c_void,
    f: impl FnOnce(&registry::Stream) -> T,
) -> ShimResult<T> {
    match registry().stream(h(stream))? {
        (_, 0) => Ok(T::default()),
        (_, s) => registry().created_stream(s).map(f),
    }
}

pub unsafe fn get_flags(stream: *mut c_void, flags: *mut c_uint) -> ShimResult<()> {
    let f = stream_info(stream, |s| s.flags)?;
    // SAFETY: out-pointer from C.
    unsafe { put(flags, f) }
}

pub unsafe fn get_priority(stream: *mut c_void, priority: *mut c_int) -> ShimResult<()> {
    let p = stream_info(stream, |s| s.priority)?;
    // SAFETY: out-pointer from C.
    unsafe { put(priority, p) }
}

pub unsafe fn get_ctx(stream: *mut c_void, pctx: *mut *mut c_void) -> ShimResult<()> {
    let (ctx, _) = registry().stream(h(stream))?;
    // SAFETY: out-pointer from C.
    unsafe { put(pctx, ctx as *mut c_void) }
}

pub unsafe fn get_id(stream: *mut c_void, id: *mut u64) -> ShimResult<()> {
    let (_, s) = registry().stream(h(stream))?;
    // SAFETY: out-pointer from C. Default streams report their well-known handle values.
    unsafe { put(id, if s == 0 { h(stream) } else { s }) }
}

pub unsafe fn event_create(ph: *mut *mut c_void, flags: c_uint) -> ShimResult<()> {
    // SAFETY: out-pointer from C.
    let ph = unsafe { out(ph) }?;
    if flags & !0xf != 0 {
        return Err(invalid(format!("event flags {flags:#x}")));
    }
    let ctx = registry::current_ctx()?;
    let c = client::client()?;
    let e = registry().add_event(ctx, flags)?;
    let req = Request::EventCreate {
        ctx,
        event: e,
        flags,
    };
    if let Err(err) = c.post(&req, &[]) {
        let _ = registry().remove_event(e);
        return Err(err);
    }
    *ph = e as *mut c_void;
    Ok(())
}

fn event_ctx(event: *mut c_void) -> ShimResult<u64> {
    registry().event_ctx(h(event))
}

pub fn event_record(event: *mut c_void, stream: *mut c_void) -> ShimResult<()> {
    event_ctx(event)?;
    let (ctx, stream) = registry().stream(h(stream))?;
    client::client()?.post(
        &Request::EventRecord {
            ctx,
            event: h(event),
            stream,
        },
        &[],
    )
}

pub fn event_synchronize(event: *mut c_void) -> ShimResult<()> {
    let ctx = event_ctx(event)?;
    client::client()?
        .call(&Request::EventSynchronize {
            ctx,
            event: h(event),
        })
        .map(|_| ())
}

pub fn event_query(event: *mut c_void) -> ShimResult<()> {
    let ctx = event_ctx(event)?;
    client::client()?
        .call(&Request::EventQuery {
            ctx,
            event: h(event),
        })
        .map(|_| ())
}

pub unsafe fn event_elapsed(ms: *mut f32, start: *mut c_void, end: *mut c_void) -> ShimResult<()> {
    // SAFETY: out-pointer from C.
    let ms = unsafe { out(ms) }?;
    let ctx = event_ctx(start)?;
    event_ctx(end)?;
    let reply = client::client()?.call(&Request::EventElapsed {
        ctx,
        start: h(start),
        end: h(end),
    })?;
    match reply.body {
        ReplyBody::Elapsed { ms: v } => {
            *ms = v;
            Ok(())
        }
        _ => Err(ShimError::new(
            CuStatus::UNKNOWN,
            "server answered elapsed time without a value",
        )),
    }
}

pub fn event_destroy(event: *mut c_void) -> ShimResult<()> {
    let ctx = registry().remove_event(h(event))?;
    client::client()?.post(
        &Request::EventDestroy {
            ctx,
            event: h(event),
        },
        &[],
    )
}

/// Host functions run on the client, in stream order: everything queued before them has
/// finished (one round trip), and nothing queued after them starts until they return. They run
/// on the calling thread, which a CUDA callback cannot tell apart from a driver thread.
pub unsafe fn launch_host_func(
    stream: *mut c_void,
    f: crate::generated::CUhostFn,
    data: *mut c_void,
) -> ShimResult<()> {
    let f = f.ok_or_else(|| invalid("null host function"))?;
    synchronize(stream)?;
    // SAFETY: the application's callback with its own user data, as cuLaunchHostFunc specifies.
    unsafe { f(data) };
    Ok(())
}

pub unsafe fn add_callback(
    stream: *mut c_void,
    cb: crate::generated::CUstreamCallback,
    data: *mut c_void,
    flags: c_uint,
) -> ShimResult<()> {
    let cb = cb.ok_or_else(|| invalid("null stream callback"))?;
    if flags != 0 {
        return Err(invalid("stream callback flags must be 0"));
    }
    // The callback is told the stream's status: an error of earlier work is passed to it.
    let status = match synchronize(stream) {
        Ok(()) => 0,
        Err(e) if matches!(e, ShimError::Unreachable(_)) => return Err(e),
        Err(e) => e.status().0,
    };
    // SAFETY: the application's callback with its own user data, as cuStreamAddCallback specifies.
    unsafe { cb(stream, status, data) };
    Ok(())
}

/// Stream capture (graphs) is not offered: every stream reports "not capturing", which is the
/// truth, and `cuStreamBeginCapture` answers `NOT_SUPPORTED`.
pub unsafe fn capture_status(
    stream: *mut c_void,
    status: *mut c_uint,
    id: *mut u64,
) -> ShimResult<()> {
    registry().stream(h(stream))?;
    // SAFETY: out-pointers from C; the id may be NULL.
    unsafe {
        put(status, 0)?; // CU_STREAM_CAPTURE_STATUS_NONE
        if !id.is_null() {
            *id = 0;
        }
    }
    Ok(())
}

thread_local! {
    static CAPTURE_MODE: std::cell::Cell<c_uint> = const { std::cell::Cell::new(0) };
}

/// `cuThreadExchangeStreamCaptureMode`: swaps the calling thread's capture mode.
pub unsafe fn exchange_capture_mode(mode: *mut c_uint) -> ShimResult<()> {
    // SAFETY: in/out pointer from C.
    let m = unsafe { out(mode) }?;
    let old = CAPTURE_MODE.try_with(|c| c.replace(*m)).unwrap_or(0);
    *m = old;
    Ok(())
}
