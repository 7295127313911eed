//! One client's session: its handles, its allocations, its deferred and sticky errors.
//!
//! Everything a client sends is checked here against what *this* client owns before it reaches
//! the backend: a client can name only its own contexts, streams, events and modules, and touch
//! only bytes inside its own allocations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use remora_protocol::messages::{ReplyBody, Request};
use remora_protocol::CuStatus;

use crate::backend::{CuError, CuResult, DeviceSession, Launch};

struct Ctx {
    device: u32,
    /// A fault after which every call in this context fails, as on hardware.
    sticky: Option<CuError>,
}

struct Event {
    ctx: u64,
    timing: bool,
    recorded: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AllocKind {
    User,
    /// A module global: addressable, but freed only with its module.
    ModuleGlobal,
}

struct Alloc {
    size: u64,
    ctx: u64,
    kind: AllocKind,
}

struct Module {
    ctx: u64,
    kernels: u32,
    globals: Vec<u64>,
}

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 2;

pub struct Session {
    backend: Box<dyn DeviceSession>,
    device_count: u32,
    contexts: HashMap<u64, Ctx>,
    streams: HashMap<u64, u64>,
    events: HashMap<u64, Event>,
    modules: HashMap<u64, Module>,
    allocs: BTreeMap<u64, Alloc>,
    /// The first error of an asynchronous call, reported by the next synchronising call.
    deferred: Option<CuError>,
    /// Kernel `printf` output not yet delivered.
    output: String,
    /// The client's quota of device memory, and what it holds.
    quota: Option<u64>,
    held: u64,
}

fn invalid_handle(what: &str, h: u64) -> CuError {
    CuError::new(
        CuStatus::INVALID_HANDLE,
        format!("unknown {what} handle {h:#x}"),
    )
}

impl Session {
    pub fn new(backend: Box<dyn DeviceSession>, device_count: u32, quota: Option<u64>) -> Self {
        Self {
            backend,
            device_count,
            contexts: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
            modules: HashMap::new(),
            allocs: BTreeMap::new(),
            deferred: None,
            output: String::new(),
            quota,
            held: 0,
        }
    }

    /// Records the failure of a call that wanted no reply; the next reply reports it.
    pub fn defer(&mut self, err: CuError) {
        tracing::debug!(%err, "deferred error");
        self.deferred.get_or_insert(err);
    }

    /// The status to report with a reply: the call's own error, else a deferred one.
    pub fn settle<T>(&mut self, result: CuResult<T>) -> CuResult<T> {
        match (result, self.deferred.take()) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(e)) => Err(e),
            (Ok(v), None) => Ok(v),
        }
    }

    pub fn take_output(&mut self) -> String {
        std::mem::take(&mut self.output)
    }

    fn ctx(&self, ctx: u64) -> CuResult<&Ctx> {
        let c = self.contexts.get(&ctx).ok_or_else(|| {
            CuError::new(
                CuStatus::INVALID_CONTEXT,
                format!("unknown context {ctx:#x}"),
            )
        })?;
        match &c.sticky {
            Some(e) => Err(e.clone()),
            None => Ok(c),
        }
    }

    fn stream(&self, ctx: u64, stream: u64) -> CuResult<()> {
        self.ctx(ctx)?;
        if stream == 0 || self.streams.contains_key(&stream) {
            Ok(())
        } else {
            Err(invalid_handle("stream", stream))
        }
    }

    /// Checks that `[ptr, ptr + len)` lies inside one allocation of this client.
    pub fn check_range(&self, ptr: u64, len: u64) -> CuResult<()> {
        let ok = self
            .allocs
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&base, a)| ptr.checked_add(len).is_some_and(|end| end <= base + a.size));
        if ok {
            Ok(())
        } else {
            Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{len} bytes at {ptr:#x} are not inside an allocation of this client"),
            ))
        }
    }

    /// Validates a host-to-device copy before its bytes are read off the wire.
    pub fn begin_write(&self, ctx: u64, stream: u64, dst: u64, len: u64) -> CuResult<()> {
        self.stream(ctx, stream)?;
        self.check_range(dst, len)
    }

    pub fn write_chunk(&mut self, dst: u64, data: &[u8]) -> CuResult<()> {
        self.backend.write(dst, data)
    }

    pub fn begin_read(&self, ctx: u64, stream: u64, src: u64, len: u64) -> CuResult<()> {
        self.stream(ctx, stream)?;
        self.check_range(src, len)
    }

    pub fn read_chunk(&mut self, src: u64, out: &mut [u8]) -> CuResult<()> {
        self.backend.read(src, out)
    }

    pub fn begin_module_load(&self, ctx: u64, module: u64) -> CuResult<u32> {
        let device = self.ctx(ctx)?.device;
        if self.modules.contains_key(&module) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("module handle {module:#x} already in use"),
            ));
        }
        Ok(device)
    }

    pub fn load_module(
        &mut self,
        ctx: u64,
        module: u64,
        hash: [u8; 32],
        image: Arc<[u8]>,
    ) -> CuResult<ReplyBody> {
        let device = self.begin_module_load(ctx, module)?;
        let loaded = self.backend.load_module(device, module, hash, image)?;
        let mut globals = Vec::new();
        for g in &loaded.globals {
            self.allocs.insert(
                g.addr,
                Alloc {
                    size: g.size.max(1),
                    ctx,
                    kind: AllocKind::ModuleGlobal,
                },
            );
            globals.push(g.addr);
        }
        self.modules.insert(
            module,
            Module {
                ctx,
                kernels: loaded.kernels.len() as u32,
                globals,
            },
        );
        Ok(ReplyBody::Module {
            kernels: loaded.kernels,
            globals: loaded.globals,
        })
    }

    fn unload_module(&mut self, module: u64) -> CuResult<()> {
        let m = self
            .modules
            .remove(&module)
            .ok_or_else(|| invalid_handle("module", module))?;
        for g in m.globals {
            self.allocs.remove(&g);
        }
        self.backend.unload_module(module)
    }

    /// Executes a request that carries no payload.
    pub fn handle(&mut self, req: Request) -> CuResult<ReplyBody> {
        use Request as R;
        match req {
            R::SetWindows { .. } => Err(CuError::new(
                CuStatus::ILLEGAL_STATE,
                "address windows are already set",
            )),
            R::Flush => Ok(ReplyBody::None),
            R::MemGetInfo { device } => {
                let (free, total) = self.backend.mem_info(device)?;
                Ok(ReplyBody::MemInfo { free, total })
            }
            R::CtxCreate { ctx, device, .. } => {
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
            R::CtxDestroy { ctx } => {
                self.contexts
                    .get(&ctx)
                    .ok_or_else(|| invalid_handle("context", ctx))?;
                self.release_context(ctx);
                self.contexts.remove(&ctx);
                Ok(ReplyBody::None)
            }
            R::CtxReset { ctx } => {
                self.contexts
                    .get(&ctx)
                    .ok_or_else(|| invalid_handle("context", ctx))?;
                self.release_context(ctx);
                if let Some(c) = self.contexts.get_mut(&ctx) {
                    c.sticky = None;
                }
                Ok(ReplyBody::None)
            }
            R::CtxSynchronize { ctx } => {
                self.ctx(ctx)?;
                self.backend.synchronize()?;
                Ok(ReplyBody::None)
            }
            R::MemAlloc { ctx, size } => {
                let device = self.ctx(ctx)?.device;
                if size == 0 {
                    return Err(CuError::new(
                        CuStatus::INVALID_VALUE,
                        "allocation of 0 bytes",
                    ));
                }
                if let Some(q) = self.quota {
                    if self.held.saturating_add(size) > q {
                        return Err(CuError::new(
                            CuStatus::OUT_OF_MEMORY,
                            format!(
                                "{size} bytes would exceed this client's quota of {q} ({} held)",
                                self.held
                            ),
                        ));
                    }
                }
                let ptr = self.backend.alloc(device, size)?;
                self.held += size;
                self.allocs.insert(
                    ptr,
                    Alloc {
                        size,
                        ctx,
                        kind: AllocKind::User,
                    },
                );
                Ok(ReplyBody::Ptr { ptr })
            }
            R::MemFree { ctx, ptr } => {
                self.ctx(ctx)?;
                match self.allocs.get(&ptr) {
                    Some(a) if a.kind == AllocKind::User => {}
                    _ => {
                        return Err(CuError::new(
                            CuStatus::INVALID_VALUE,
                            format!("{ptr:#x} is not an allocation of this client"),
                        ))
                    }
                }
                self.backend.free(ptr)?;
                if let Some(a) = self.allocs.remove(&ptr) {
                    self.held -= a.size;
                }
                Ok(ReplyBody::None)
            }
            R::MemcpyDtoD {
                ctx,
                stream,
                dst,
                src,
                size,
            } => {
                self.stream(ctx, stream)?;
                self.check_range(src, size)?;
                self.check_range(dst, size)?;
                if size > 0 {
                    self.backend.copy(dst, src, size)?;
                }
                Ok(ReplyBody::None)
            }
            R::Memset {
                ctx,
                stream,
                dst,
                pitch,
                value,
                elem,
                width,
                height,
            } => {
                self.stream(ctx, stream)?;
                if !matches!(elem, 1 | 2 | 4) {
                    return Err(CuError::new(
                        CuStatus::INVALID_VALUE,
                        format!("memset element of {elem} bytes"),
                    ));
                }
                let row = width.checked_mul(elem as u64);
                let span = row.and_then(|r| {
                    height
                        .checked_sub(1)
                        .map_or(Some(0), |h| h.checked_mul(pitch)?.checked_add(r))
                });
                let span = span.ok_or_else(|| {
                    CuError::new(CuStatus::INVALID_VALUE, "memset extent overflows")
                })?;
                if height > 1 && pitch < row.unwrap_or(0) {
                    return Err(CuError::new(
                        CuStatus::INVALID_VALUE,
                        "memset pitch smaller than its width",
                    ));
                }
                if span > 0 {
                    self.check_range(dst, span)?;
                    self.backend
                        .memset(dst, pitch, value, elem, width, height)?;
                }
                Ok(ReplyBody::None)
            }
            R::StreamCreate { ctx, stream, .. } => {
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
            R::StreamDestroy { stream, .. } => {
                self.streams
                    .remove(&stream)
                    .ok_or_else(|| invalid_handle("stream", stream))?;
                Ok(ReplyBody::None)
            }
            R::StreamSynchronize { ctx, stream } | R::StreamQuery { ctx, stream } => {
                self.stream(ctx, stream)?;
                self.backend.synchronize()?;
                Ok(ReplyBody::None)
            }
            R::StreamWaitEvent { ctx, stream, event } => {
                self.stream(ctx, stream)?;
                self.events
                    .get(&event)
                    .ok_or_else(|| invalid_handle("event", event))?;
                // Work runs in arrival order, so the event has already completed.
                Ok(ReplyBody::None)
            }
            R::EventCreate { ctx, event, flags } => {
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
            R::EventRecord { ctx, event, stream } => {
                self.stream(ctx, stream)?;
                let e = self
                    .events
                    .get_mut(&event)
                    .ok_or_else(|| invalid_handle("event", event))?;
                e.recorded = Some(Instant::now());
                Ok(ReplyBody::None)
            }
            R::EventSynchronize { event, .. } | R::EventQuery { event, .. } => {
                let ctx = self
                    .events
                    .get(&event)
                    .ok_or_else(|| invalid_handle("event", event))?
                    .ctx;
                self.ctx(ctx)?;
                self.backend.synchronize()?;
                Ok(ReplyBody::None)
            }
            R::EventElapsed { start, end, .. } => {
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
            R::EventDestroy { event, .. } => {
                self.events
                    .remove(&event)
                    .ok_or_else(|| invalid_handle("event", event))?;
                Ok(ReplyBody::None)
            }
            R::ModuleUnload { ctx, module } => {
                self.ctx(ctx)?;
                self.unload_module(module)?;
                Ok(ReplyBody::None)
            }
            R::Launch {
                ctx,
                stream,
                module,
                kernel,
                grid,
                block,
                shared,
                params,
            } => {
                self.stream(ctx, stream)?;
                let m = self
                    .modules
                    .get(&module)
                    .ok_or_else(|| invalid_handle("module", module))?;
                if kernel >= m.kernels {
                    return Err(invalid_handle("function", kernel as u64));
                }
                let launch = Launch {
                    module,
                    kernel,
                    grid,
                    block,
                    shared,
                    params: &params,
                };
                let (out, result) = self.backend.launch(&launch);
                self.output.push_str(&out);
                match result {
                    Ok(()) => Ok(ReplyBody::None),
                    Err(e) => {
                        if e.status.is_sticky() {
                            if let Some(c) = self.contexts.get_mut(&ctx) {
                                c.sticky = Some(e.clone());
                            }
                        }
                        Err(e)
                    }
                }
            }
            R::MemcpyHtoD { .. }
            | R::MemcpyDtoH { .. }
            | R::ModuleHave { .. }
            | R::ModuleLoad { .. } => Err(CuError::new(
                CuStatus::INVALID_VALUE,
                "request needs its payload handled by the connection",
            )),
        }
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
