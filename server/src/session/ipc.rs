//! CUDA IPC: exporting an allocation under a handle, and opening another client's handle.
//! Opened memory is addressable like the client's own but counted where it was allocated; it
//! leaves with `IpcClose` (once per open, as CUDA counts them) or with its context.

use remora_protocol::messages::{CtxId, IpcHandle, ReplyBody};
use remora_protocol::CuStatus;

use super::{Alloc, AllocKind, Session};
use crate::backend::{CuError, CuResult};

impl Session {
    /// The token's owner, which scopes handles: another person's handle opens nothing.
    fn ipc_owner(&self) -> String {
        self.account
            .as_ref()
            .map_or(String::new(), |a| a.name.clone())
    }

    pub(super) fn ipc_export(&mut self, ctx: CtxId, ptr: u64) -> CuResult<ReplyBody> {
        let device = self.ctx(ctx)?.device;
        match self.allocs.get(&ptr) {
            Some(a) if matches!(a.kind, AllocKind::User | AllocKind::Leased) => {}
            _ => {
                return Err(CuError::new(
                    CuStatus::INVALID_VALUE,
                    format!("{ptr:#x} is not the start of a device allocation of this client"),
                ))
            }
        }
        let owner = self.ipc_owner();
        let handle = self.backend.ipc_export(device, ptr, &owner)?;
        Ok(ReplyBody::Ipc { handle })
    }

    pub(super) fn ipc_open(&mut self, ctx: CtxId, handle: IpcHandle) -> CuResult<ReplyBody> {
        let device = self.ctx(ctx)?.device;
        if let Some((ptr, opens)) = self.opened.get_mut(&handle) {
            *opens += 1;
            let ptr = *ptr;
            let size = self.allocs.get(&ptr).map_or(0, |a| a.size);
            return Ok(ReplyBody::Mapped { ptr, size });
        }
        let owner = self.ipc_owner();
        let (ptr, size) = self.backend.ipc_open(device, &handle, &owner)?;
        self.allocs.insert(
            ptr,
            Alloc {
                size,
                ctx,
                kind: AllocKind::Imported,
            },
        );
        self.opened.insert(handle, (ptr, 1));
        Ok(ReplyBody::Mapped { ptr, size })
    }

    pub(super) fn ipc_close(&mut self, ctx: CtxId, ptr: u64) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        let handle = match self.allocs.get(&ptr) {
            Some(a) if a.kind == AllocKind::Imported => self
                .opened
                .iter()
                .find(|(_, (p, _))| *p == ptr)
                .map(|(h, _)| *h),
            _ => None,
        }
        .ok_or_else(|| {
            CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{ptr:#x} is not memory this client opened with cuIpcOpenMemHandle"),
            )
        })?;
        let Some((_, opens)) = self.opened.get_mut(&handle) else {
            return Ok(ReplyBody::None);
        };
        *opens -= 1;
        if *opens == 0 {
            self.opened.remove(&handle);
            self.allocs.remove(&ptr);
            self.backend.ipc_close(ptr)?;
        }
        Ok(ReplyBody::None)
    }
}
