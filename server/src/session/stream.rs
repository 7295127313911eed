//! Streams and events.
//!
//! Work runs in the order it arrives (see [`crate::backend::DeviceSession`]), so streams and
//! events need no backend state: a stream is a handle owned by a context, an event a handle
//! with the time it was last recorded.

use std::time::Instant;

use remora_protocol::messages::ReplyBody;
use remora_protocol::CuStatus;

use super::{invalid_handle, Event, Session};
use crate::backend::{CuError, CuResult};

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 2;

impl Session {
    pub(super) fn stream_create(&mut self, ctx: u64, stream: u64) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        if stream == 0 || self.streams.contains_key(&stream) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("stream {stream:#x} already exists"),
            ));
        }
        self.streams.insert(stream, ctx);
        Ok(ReplyBody::None)
    }

    pub(super) fn stream_destroy(&mut self, _ctx: u64, stream: u64) -> CuResult<ReplyBody> {
        self.streams
            .remove(&stream)
            .ok_or_else(|| invalid_handle("stream", stream))?;
        Ok(ReplyBody::None)
    }

    /// `cuStreamSynchronize` and `cuStreamQuery` (work runs in order, so a query waits).
    pub(super) fn stream_synchronize(&mut self, ctx: u64, stream: u64) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        self.backend.synchronize()?;
        Ok(ReplyBody::None)
    }

    pub(super) fn stream_wait_event(
        &mut self,
        ctx: u64,
        stream: u64,
        event: u64,
    ) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        self.events
            .get(&event)
            .ok_or_else(|| invalid_handle("event", event))?;
        // Work runs in arrival order, so the event has already completed.
        Ok(ReplyBody::None)
    }

    pub(super) fn event_create(&mut self, ctx: u64, event: u64, flags: u32) -> CuResult<ReplyBody> {
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
        ctx: u64,
        event: u64,
        stream: u64,
    ) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        let e = self
            .events
            .get_mut(&event)
            .ok_or_else(|| invalid_handle("event", event))?;
        e.recorded = Some(Instant::now());
        Ok(ReplyBody::None)
    }

    /// `cuEventSynchronize` and `cuEventQuery`.
    pub(super) fn event_synchronize(&mut self, _ctx: u64, event: u64) -> CuResult<ReplyBody> {
        let ctx = self
            .events
            .get(&event)
            .ok_or_else(|| invalid_handle("event", event))?
            .ctx;
        self.ctx(ctx)?;
        self.backend.synchronize()?;
        Ok(ReplyBody::None)
    }

    pub(super) fn event_elapsed(&mut self, _ctx: u64, start: u64, end: u64) -> CuResult<ReplyBody> {
        let (s, e) = (
            self.events
                .get(&start)
                .ok_or_else(|| invalid_handle("event", start))?,
            self.events
                .get(&end)
                .ok_or_else(|| invalid_handle("event", end))?,
        );
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

    pub(super) fn event_destroy(&mut self, _ctx: u64, event: u64) -> CuResult<ReplyBody> {
        self.events
            .remove(&event)
            .ok_or_else(|| invalid_handle("event", event))?;
        Ok(ReplyBody::None)
    }
}
