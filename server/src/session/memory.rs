//! Device memory: allocation, free, copies and memsets, and memory info.

use remora_protocol::messages::{CtxId, ReplyBody, StreamId};
use remora_protocol::CuStatus;

use super::{Alloc, AllocKind, Session};
use crate::backend::{CuError, CuResult, DeviceSession};

impl Session {
    /// Validates a host-to-device copy before its bytes are read off the wire.
    pub fn begin_write(&self, ctx: CtxId, stream: StreamId, dst: u64, len: u64) -> CuResult<()> {
        self.stream(ctx, stream)?;
        self.check_range(dst, len)
    }

    pub fn write_chunk(&mut self, dst: u64, data: &[u8]) -> CuResult<()> {
        self.backend.write(dst, data)
    }

    pub fn begin_read(&self, ctx: CtxId, stream: StreamId, src: u64, len: u64) -> CuResult<()> {
        self.stream(ctx, stream)?;
        self.check_range(src, len)
    }

    pub fn read_chunk(&mut self, src: u64, out: &mut [u8]) -> CuResult<()> {
        self.backend.read(src, out)
    }

    pub(super) fn mem_info(&mut self, device: u32) -> CuResult<ReplyBody> {
        if device >= self.device_count {
            return Err(CuError::new(
                CuStatus::INVALID_DEVICE,
                format!("no device {device}"),
            ));
        }
        let (free, total) = self.backend.mem_info(device)?;
        Ok(ReplyBody::MemInfo {
            free,
            total,
            utilization: self.backend.utilization(device),
        })
    }

    pub(super) fn mem_alloc(&mut self, ctx: CtxId, size: u64) -> CuResult<ReplyBody> {
        let ptr = self.alloc_user(ctx, size, |b, device| b.alloc(device, size))?;
        Ok(ReplyBody::Ptr { ptr })
    }

    /// An allocation at an address another device chose (the pool's virtual GPU places each
    /// allocation at one address on all of its members); counted against the quota.
    pub(super) fn mem_alloc_fixed(
        &mut self,
        ctx: CtxId,
        ptr: u64,
        size: u64,
    ) -> CuResult<ReplyBody> {
        self.alloc_user(ctx, size, |b, device| {
            b.alloc_fixed(device, ptr, size).map(|()| ptr)
        })?;
        Ok(ReplyBody::None)
    }

    /// An allocation of `size` bytes in `ctx`, held against the quota, placed by `place`.
    fn alloc_user(
        &mut self,
        ctx: CtxId,
        size: u64,
        place: impl FnOnce(&mut dyn DeviceSession, u32) -> CuResult<u64>,
    ) -> CuResult<u64> {
        let device = self.ctx(ctx)?.device;
        if size == 0 {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                "allocation of 0 bytes",
            ));
        }
        self.hold(size)?;
        let ptr = match place(self.backend.as_mut(), device) {
            Ok(p) => p,
            Err(e) => {
                self.unhold(size);
                return Err(e);
            }
        };
        self.allocs.insert(
            ptr,
            Alloc {
                size,
                ctx,
                kind: AllocKind::User,
            },
        );
        Ok(ptr)
    }

    /// Frees an allocation `ctx` made. Module globals go with their module only.
    pub(super) fn mem_free(&mut self, ctx: CtxId, ptr: u64) -> CuResult<ReplyBody> {
        self.ctx(ctx)?;
        let refuse = |why: String| Err(CuError::new(CuStatus::INVALID_VALUE, why));
        match self.allocs.get(&ptr) {
            None => return refuse(format!("{ptr:#x} is not an allocation of this client")),
            Some(a) if a.kind == AllocKind::ModuleGlobal => {
                return refuse(format!(
                    "{ptr:#x} is a module global: it is freed when its module is unloaded"
                ))
            }
            Some(a) if a.kind == AllocKind::Imported => {
                return refuse(format!(
                    "{ptr:#x} is another process's memory opened by IPC: close it with \
                     cuIpcCloseMemHandle"
                ))
            }
            Some(a) if a.ctx != ctx => {
                return refuse(format!(
                    "{ptr:#x} belongs to context {:#x}, not to context {ctx:#x} named in the call",
                    a.ctx
                ))
            }
            Some(_) => {}
        }
        self.backend.free(ptr)?;
        if let Some(a) = self.allocs.remove(&ptr) {
            if a.kind == AllocKind::User {
                self.unhold(a.size);
            }
        }
        Ok(ReplyBody::None)
    }

    /// An allocation the client placed itself inside its lease (the backend checks the place
    /// and the lease's bytes; the quota counted the whole lease when it was granted).
    pub(super) fn mem_alloc_at(&mut self, ctx: CtxId, ptr: u64, size: u64) -> CuResult<ReplyBody> {
        let device = self.ctx(ctx)?.device;
        if self.lease == 0 {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                "this session has no memory lease to allocate in",
            ));
        }
        self.backend.alloc_at(device, ptr, size)?;
        self.allocs.insert(
            ptr,
            Alloc {
                size,
                ctx,
                kind: AllocKind::Leased,
            },
        );
        Ok(ReplyBody::None)
    }

    pub(super) fn memcpy_dtod(
        &mut self,
        ctx: CtxId,
        stream: StreamId,
        dst: u64,
        src: u64,
        size: u64,
    ) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        self.check_range(src, size)?;
        self.check_range(dst, size)?;
        if size > 0 {
            self.backend.copy(dst, src, size)?;
        }
        Ok(ReplyBody::None)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn memset(
        &mut self,
        ctx: CtxId,
        stream: StreamId,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
    ) -> CuResult<ReplyBody> {
        self.stream(ctx, stream)?;
        if !matches!(elem, 1 | 2 | 4) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("memset element of {elem} bytes"),
            ));
        }
        if width == 0 || height == 0 {
            return Ok(ReplyBody::None);
        }
        // cuMemsetD16/D32 require an aligned destination, as the shim also checks.
        if !dst.is_multiple_of(u64::from(elem)) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{dst:#x} is not aligned to {elem} bytes"),
            ));
        }
        let row = width
            .checked_mul(u64::from(elem))
            .ok_or_else(|| CuError::new(CuStatus::INVALID_VALUE, "memset width overflows"))?;
        if height > 1 && pitch < row {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                "memset pitch smaller than its width",
            ));
        }
        // Rows start `pitch` apart; the last one ends `row` bytes after its start.
        let span = (height - 1)
            .checked_mul(pitch)
            .and_then(|v| v.checked_add(row))
            .ok_or_else(|| CuError::new(CuStatus::INVALID_VALUE, "memset extent overflows"))?;
        self.check_range(dst, span)?;
        self.backend
            .memset(dst, pitch, value, elem, width, height)?;
        Ok(ReplyBody::None)
    }
}
