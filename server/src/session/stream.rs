//! Streams and events.
//!
//! Work runs in the order it arrives (see [`crate::backend::DeviceSession`]), so streams and
//! events need no backend state: a stream is a handle owned by a context, an event a handle
//! with the time it was last recorded.

use std::time::Instant;

use remora_protocol::messages::{CtxId, EventId, ReplyBody, StreamId};
use remora_protocol::CuStatus;

use super::{invalid_handle, Event, Session};
use crate::backend::{CuError, CuResult};

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 2;

impl Session {
    pub(super) fn stream_create(&mut self, ctx: CtxId, stream: StreamId) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        if stream == StreamId::DEFAULT {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                "stream handle 0 is the default stream",
            ));
        }
        if self.streams.contains_key(&stream) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("stream {stream:#x} already exists"),
            ));
        }
        self.streams.insert(stream, ctx);
        Ok(ReplyBody::None)
    }

    pub(super) fn stream_destroy(&mut self, ctx: CtxId, stream: StreamId) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        // The default stream (0) is in no table, so it cannot be destroyed.
        self.streams
            .remove(&stream)
            .ok_or_else(|| invalid_handle("stream", stream))?;
        Ok(ReplyBody::None)
    }

    /// `cuStreamSynchronize` and `cuStreamQuery` (work runs in order, so a query waits).
    pub(super) fn stream_synchronize(
        &mut self,
        ctx: CtxId,
        stream: StreamId,
    ) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        self.backend.synchronize()?;
        Ok(ReplyBody::None)
    }

    pub(super) fn stream_wait_event(
        &mut self,
        ctx: CtxId,
        stream: StreamId,
        event: EventId,
    ) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        // The event may belong to another context of this client: "The event may be from a
        // different context or device than the stream"
        // (https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__STREAM.html, cuStreamWaitEvent).
        self.events
            .get(&event)
            .ok_or_else(|| invalid_handle("event", event))?;
        // Work runs in arrival order, so the event has already completed.
        Ok(ReplyBody::None)
    }

    pub(super) fn event_create(
        &mut self,
        ctx: CtxId,
        event: EventId,
        flags: u32,
    ) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        if self.events.contains_key(&event) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("event {event:#x} already exists"),
            ));
        }
        self.events.insert(
            event,
            Event {
                ctx,
                timing: flags & EVENT_DISABLE_TIMING == 0,
                recorded: None,
            },
        );
        Ok(ReplyBody::None)
    }

    pub(super) fn event_record(
        &mut self,
        ctx: CtxId,
        event: EventId,
        stream: StreamId,
    ) -> CuResult<ReplyBody> {
        // The event and the stream must be of the same context, as cuEventRecord requires.
        self.stream(ctx, stream)?;
        self.event(ctx, event)?;
        if let Some(e) = self.events.get_mut(&event) {
            e.recorded = Some(Instant::now());
        }
        Ok(ReplyBody::None)
    }

    /// `cuEventSynchronize` and `cuEventQuery`.
    pub(super) fn event_synchronize(&mut self, ctx: CtxId, event: EventId) -> CuResult<ReplyBody> {
        self.event(ctx, event)?;
        self.backend.synchronize()?;
        Ok(ReplyBody::None)
    }

    /// Both events must be of `ctx`: times taken in different contexts (devices) are not
    /// comparable.
    pub(super) fn event_elapsed(
        &mut self,
        ctx: CtxId,
        start: EventId,
        end: EventId,
    ) -> CuResult<ReplyBody> {
        let (s, e) = (self.event(ctx, start)?, self.event(ctx, end)?);
        if !s.timing || !e.timing {
            return Err(CuError::new(
                CuStatus::INVALID_HANDLE,
                "event created with CU_EVENT_DISABLE_TIMING",
            ));
        }
        match (s.recorded, e.recorded) {
            (Some(a), Some(b)) => {
                let ms = if b >= a {
                    (b - a).as_secs_f64() * 1e3
                } else {
                    -((a - b).as_secs_f64() * 1e3)
                };
                Ok(ReplyBody::Elapsed { ms: ms as f32 })
            }
            _ => Err(CuError::new(
                CuStatus::INVALID_HANDLE,
                "event has not been recorded",
            )),
        }
    }

    pub(super) fn event_destroy(&mut self, ctx: CtxId, event: EventId) -> CuResult<ReplyBody> {
        self.event(ctx, event)?;
        self.events.remove(&event);
        Ok(ReplyBody::None)
    }
}
