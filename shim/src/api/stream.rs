//! Streams and events.
//!
//! Creating, recording, waiting and destroying are queued (handles are minted here); only
//! synchronise, query and elapsed time wait for the server.

use std::ffi::{c_int, c_uint, c_void};

use remora_protocol::messages::{CtxId, EventId, StreamId};
use remora_protocol::messages::{ReplyBody, Request};
use remora_protocol::CuStatus;

use super::capture;
use crate::client;
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::registry::{self, registry};

pub fn create(ph: &mut u64, flags: c_uint, priority: c_int) -> ShimResult<()> {
    if flags & !1 != 0 {
        return Err(invalid(format!("stream flags {flags:#x}")));
    }
    let ctx = registry::current_ctx()?;
    let c = client::client()?;
    // Priorities clamp to the device's range [-5, 0], as the driver does.
    let priority = priority.clamp(-5, 0);
    let s = registry().add_stream(ctx, flags, priority)?;
    let req = Request::StreamCreate {
        ctx: CtxId(ctx),
        stream: StreamId(s),
        flags,
        priority,
    };
    if let Err(e) = c.post(&req, &[]) {
        let _ = registry().remove_stream(s);
        return Err(e);
    }
    *ph = s;
    Ok(())
}

pub fn destroy(s: u64) -> ShimResult<()> {
    let ctx = registry().remove_stream(s)?;
    capture::forget_stream(s);
    client::client()?.post(
        &Request::StreamDestroy {
            ctx: CtxId(ctx),
            stream: StreamId(s),
        },
        &[],
    )
}

pub fn synchronize(stream: u64) -> ShimResult<()> {
    let (ctx, stream) = registry().stream(stream)?;
    capture::refuse_on(stream, "cuStreamSynchronize")?;
    let req = Request::StreamSynchronize {
        ctx: CtxId(ctx),
        stream: StreamId(stream),
    };
    super::managed::sync_call(client::client()?, &req)?;
    super::mempool::synchronized(Some(stream))
}

pub fn query(stream: u64) -> ShimResult<()> {
    let (ctx, stream) = registry().stream(stream)?;
    capture::refuse_on(stream, "cuStreamQuery")?;
    client::client()?
        .call(&Request::StreamQuery {
            ctx: CtxId(ctx),
            stream: StreamId(stream),
        })
        .map(|_| ())
}

/// `CU_EVENT_WAIT_EXTERNAL` and `CU_EVENT_RECORD_EXTERNAL`.
const EXTERNAL: c_uint = 1;

pub fn wait_event(stream: u64, event: u64, flags: c_uint) -> ShimResult<()> {
    if flags & !EXTERNAL != 0 {
        return Err(invalid(format!("stream wait flags {flags:#x}")));
    }
    registry().event_ctx(event)?;
    let (ctx, stream) = registry().stream(stream)?;
    // A capturing stream waiting for an event from outside the capture (or asked to treat it
    // as external) records a wait node; an event of the capture forks or joins instead.
    if let Some(cap) = capture::of(stream)? {
        if flags & EXTERNAL != 0 || !capture::in_a_capture(event) {
            return cap.add(capture::Op::EventWait { event });
        }
    }
    if capture::wait_event(stream, event)? {
        return Ok(());
    }
    client::client()?.post(
        &Request::StreamWaitEvent {
            ctx: CtxId(ctx),
            stream: StreamId(stream),
            event: EventId(event),
        },
        &[],
    )
}

/// A property of a created stream; the default streams' are 0.
fn stream_info<T: Default>(stream: u64, f: impl FnOnce(&registry::Stream) -> T) -> ShimResult<T> {
    match registry().stream(stream)? {
        (_, 0) => Ok(T::default()),
        (_, s) => registry().created_stream(s).map(f),
    }
}

pub fn get_flags(stream: u64, flags: &mut c_uint) -> ShimResult<()> {
    *flags = stream_info(stream, |s| s.flags)?;
    Ok(())
}

pub fn get_priority(stream: u64, priority: &mut c_int) -> ShimResult<()> {
    *priority = stream_info(stream, |s| s.priority)?;
    Ok(())
}

pub fn get_ctx(stream: u64, pctx: &mut u64) -> ShimResult<()> {
    *pctx = registry().stream(stream)?.0;
    Ok(())
}

pub fn get_id(stream: u64, id: &mut u64) -> ShimResult<()> {
    let (_, s) = registry().stream(stream)?;
    // Default streams report their well-known handle values.
    *id = if s == 0 { stream } else { s };
    Ok(())
}

pub fn event_create(ph: &mut u64, flags: c_uint) -> ShimResult<()> {
    if flags & !0xf != 0 {
        return Err(invalid(format!("event flags {flags:#x}")));
    }
    let ctx = registry::current_ctx()?;
    let c = client::client()?;
    let e = registry().add_event(ctx, flags)?;
    let req = Request::EventCreate {
        ctx: CtxId(ctx),
        event: EventId(e),
        flags,
    };
    if let Err(err) = c.post(&req, &[]) {
        let _ = registry().remove_event(e);
        return Err(err);
    }
    *ph = e;
    Ok(())
}

pub fn event_record(event: u64, stream: u64) -> ShimResult<()> {
    event_record_with_flags(event, stream, 0)
}

/// `cuEventRecordWithFlags`. During a capture a plain record marks the capture's position (for
/// forks and joins, as the driver does: no node); `CU_EVENT_RECORD_EXTERNAL` records an event
/// record node as well, so the event is recorded when the graph runs.
pub fn event_record_with_flags(event: u64, stream: u64, flags: c_uint) -> ShimResult<()> {
    if flags & !EXTERNAL != 0 {
        return Err(invalid(format!("event record flags {flags:#x}")));
    }
    registry().event_ctx(event)?;
    let (ctx, stream) = registry().stream(stream)?;
    if flags & EXTERNAL != 0 {
        if let Some(cap) = capture::of(stream)? {
            cap.add(capture::Op::EventRecord { event })?;
        }
    }
    if capture::record_event(event, stream)? {
        return Ok(());
    }
    client::client()?.post(
        &Request::EventRecord {
            ctx: CtxId(ctx),
            event: EventId(event),
            stream: StreamId(stream),
        },
        &[],
    )
}

pub fn event_synchronize(event: u64) -> ShimResult<()> {
    let ctx = registry().event_ctx(event)?;
    let req = Request::EventSynchronize {
        ctx: CtxId(ctx),
        event: EventId(event),
    };
    super::managed::sync_call(client::client()?, &req).map(|_| ())
}

pub fn event_query(event: u64) -> ShimResult<()> {
    let ctx = registry().event_ctx(event)?;
    client::client()?
        .call(&Request::EventQuery {
            ctx: CtxId(ctx),
            event: EventId(event),
        })
        .map(|_| ())
}

pub fn event_elapsed(ms: &mut f32, start: u64, end: u64) -> ShimResult<()> {
    let ctx = registry().event_ctx(start)?;
    registry().event_ctx(end)?;
    let reply = client::client()?.call(&Request::EventElapsed {
        ctx: CtxId(ctx),
        start: EventId(start),
        end: EventId(end),
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

pub fn event_destroy(event: u64) -> ShimResult<()> {
    let ctx = registry().remove_event(event)?;
    client::client()?.post(
        &Request::EventDestroy {
            ctx: CtxId(ctx),
            event: EventId(event),
        },
        &[],
    )
}

/// Host functions run on the client, in stream order: everything queued before them has
/// finished (one round trip), and nothing queued after them starts until they return. They run
/// on the calling thread, which a CUDA callback cannot tell apart from a driver thread.
///
/// # Safety
/// `f` may be called with `data`, as `cuLaunchHostFunc` specifies.
pub unsafe fn launch_host_func(
    stream: u64,
    f: crate::generated::CUhostFn,
    data: *mut c_void,
) -> ShimResult<()> {
    let f = f.ok_or_else(|| invalid("null host function"))?;
    // Captured: a host node, run when the graph runs.
    let (_, sid) = registry().stream(stream)?;
    if let Some(cap) = capture::of(sid)? {
        return cap.add(capture::Op::Host {
            func: f,
            data: data as usize,
        });
    }
    synchronize(stream)?;
    // SAFETY: the application's callback with its own user data, as cuLaunchHostFunc specifies.
    unsafe { f(data) };
    Ok(())
}

/// # Safety
/// `cb` may be called with the stream and `data`, as `cuStreamAddCallback` specifies.
pub unsafe fn add_callback(
    stream: u64,
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
    unsafe { cb(stream as *mut c_void, status, data) };
    Ok(())
}
