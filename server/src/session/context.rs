//! Contexts: create, destroy, reset, synchronize.

use remora_protocol::messages::{CtxId, ModuleId, ReplyBody};
use remora_protocol::CuStatus;

use super::{AllocKind, Ctx, Session};
use crate::backend::{CuError, CuResult};

impl Session {
    pub(super) fn ctx_create(&mut self, ctx: CtxId, device: u32) -> CuResult<ReplyBody> {
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

    /// Destroys a context and everything it owns, also after a fault. A backend failure while
    /// freeing is reported after everything else has been released.
    pub(super) fn ctx_destroy(&mut self, ctx: CtxId) -> CuResult<ReplyBody> {
        self.known_ctx(ctx)?;
        let released = self.release_context(ctx);
        self.contexts.remove(&ctx);
        released.map(|()| ReplyBody::None)
    }

    /// `cuDevicePrimaryCtxReset`: releases everything the context owns and clears its fault.
    pub(super) fn ctx_reset(&mut self, ctx: CtxId) -> CuResult<ReplyBody> {
        self.known_ctx(ctx)?;
        let released = self.release_context(ctx);
        if let Some(c) = self.contexts.get_mut(&ctx) {
            c.sticky = None;
        }
        released.map(|()| ReplyBody::None)
    }

    pub(super) fn ctx_synchronize(&mut self, ctx: CtxId) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        self.backend.synchronize()?;
        self.synced = true;
        Ok(ReplyBody::None)
    }

    /// A context of this client, faulted or not (destroy and reset work after a fault).
    fn known_ctx(&self, ctx: CtxId) -> CuResult<()> {
        if self.contexts.contains_key(&ctx) {
            Ok(())
        } else {
            Err(CuError::new(
                CuStatus::INVALID_CONTEXT,
                format!("unknown context {ctx:#x}"),
            ))
        }
    }

    /// Frees everything a context owns: its modules (and their globals), allocations, streams
    /// and events. Keeps going past a backend failure and returns the first one.
    fn release_context(&mut self, ctx: CtxId) -> CuResult<()> {
        let mut first = Ok(());
        let modules: Vec<ModuleId> = self
            .modules
            .iter()
            .filter(|(_, m)| m.ctx == ctx)
            .map(|(&h, _)| h)
            .collect();
        for m in modules {
            let r = self.unload_module(m);
            first = first.and(r);
        }
        self.failed_loads.retain(|_, (c, _)| *c != ctx);
        let ptrs: Vec<u64> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.ctx == ctx && a.kind != AllocKind::ModuleGlobal)
            .map(|(&p, _)| p)
            .collect();
        for p in ptrs {
            let r = match self.allocs.get(&p).map(|a| a.kind) {
                Some(AllocKind::Imported) => self.backend.ipc_close(p),
                _ => self.backend.free(p),
            };
            first = first.and(r);
            // Forgotten even when the backend failed: the client can no longer name it, and
            // the backend frees what it still holds when the session ends.
            if let Some(a) = self.allocs.remove(&p) {
                if a.kind == AllocKind::User {
                    self.unhold(a.size);
                }
            }
        }
        let allocs = &self.allocs;
        self.opened.retain(|_, (p, _)| allocs.contains_key(p));
        self.streams.retain(|_, c| *c != ctx);
        self.events.retain(|_, e| e.ctx != ctx);
        first
    }
}
