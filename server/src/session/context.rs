//! Contexts: create, destroy, reset, synchronize.

use remora_protocol::messages::ReplyBody;
use remora_protocol::CuStatus;

use super::{invalid_handle, AllocKind, Ctx, Session};
use crate::backend::{CuError, CuResult};

impl Session {
    pub(super) fn ctx_create(&mut self, ctx: u64, device: u32) -> CuResult<ReplyBody> {
        if device >= self.device_count {
            return Err(CuError::new(
                CuStatus::INVALID_DEVICE,
                format!("no device {device}"),
            ));
        }
        if self.contexts.contains_key(&ctx) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("context {ctx:#x} already exists"),
            ));
        }
        self.contexts.insert(
            ctx,
            Ctx {
                device,
                sticky: None,
            },
        );
        Ok(ReplyBody::None)
    }

    pub(super) fn ctx_destroy(&mut self, ctx: u64) -> CuResult<ReplyBody> {
        self.contexts
            .get(&ctx)
            .ok_or_else(|| invalid_handle("context", ctx))?;
        self.release_context(ctx);
        self.contexts.remove(&ctx);
        Ok(ReplyBody::None)
    }

    pub(super) fn ctx_reset(&mut self, ctx: u64) -> CuResult<ReplyBody> {
        self.contexts
            .get(&ctx)
            .ok_or_else(|| invalid_handle("context", ctx))?;
        self.release_context(ctx);
        if let Some(c) = self.contexts.get_mut(&ctx) {
            c.sticky = None;
        }
        Ok(ReplyBody::None)
    }

    pub(super) fn ctx_synchronize(&mut self, ctx: u64) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        self.backend.synchronize()?;
        Ok(ReplyBody::None)
    }

    /// Frees everything a context owns.
    fn release_context(&mut self, ctx: u64) {
        let modules: Vec<u64> = self
            .modules
            .iter()
            .filter(|(_, m)| m.ctx == ctx)
            .map(|(&h, _)| h)
            .collect();
        for m in modules {
            let _ = self.unload_module(m);
        }
        let ptrs: Vec<u64> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.ctx == ctx && a.kind == AllocKind::User)
            .map(|(&p, _)| p)
            .collect();
        for p in ptrs {
            let _ = self.backend.free(p);
            if let Some(a) = self.allocs.remove(&p) {
                self.held -= a.size;
            }
        }
        self.streams.retain(|_, c| *c != ctx);
        self.events.retain(|_, e| e.ctx != ctx);
    }
}
