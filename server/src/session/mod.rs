//! One client's session: its handles, its allocations, its deferred and sticky errors.
//!
//! Everything a client sends is checked here against what *this* client owns before it reaches
//! the backend: a client can name only its own contexts, streams, events and modules, and touch
//! only bytes inside its own allocations.
//!
//! Streams, events and modules belong to the context that created them, and a call naming
//! context B may not use those of context A (`INVALID_HANDLE`); the one exception is the event
//! of `cuStreamWaitEvent`, which CUDA lets come from any context. Device pointers belong to the
//! client, not to one context: with unified addressing a copy on one context's stream may read
//! or write another context's memory (peer copies); only a free must name the owner.
//!
//! [`Session::handle`] is one `match` from a decoded [`Request`] into the module of its API group
//! (as mini-redis's `Command::apply`): [`context`] (contexts, device memory info), [`memory`]
//! (allocations, copies, memsets), [`stream`] (streams and events) and [`module`] (modules and
//! launches). The lookups that enforce ownership ([`Session::ctx`], [`Session::stream`], ...)
//! live here, so every group checks handles the same way.

mod context;
mod ipc;
mod memory;
mod module;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use remora_protocol::access::Account;
use remora_protocol::messages::{CtxId, EventId, ModuleId, ReplyBody, Request, StreamId};
use remora_protocol::CuStatus;

use crate::backend::{CuError, CuResult, DeviceSession};

struct Ctx {
    device: u32,
    /// A fault after which every call in this context fails, as on hardware.
    sticky: Option<CuError>,
}

struct Event {
    ctx: CtxId,
    timing: bool,
    recorded: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AllocKind {
    User,
    /// Placed by the client inside its memory lease: counted in the lease, not again in `held`.
    Leased,
    /// A module global: addressable, but freed only with its module.
    ModuleGlobal,
    /// Another client's allocation mapped here (CUDA IPC): counted where it was allocated,
    /// removed only by `IpcClose` (or with its context).
    Imported,
}

struct Alloc {
    size: u64,
    ctx: CtxId,
    kind: AllocKind,
}

struct Module {
    ctx: CtxId,
    /// Per kernel, by the client's numbering: the backend's number for it (`None`: the module
    /// the backend loaded lacks a kernel the client read in the image) and the bytes its
    /// parameter buffer must hold (the end of its last parameter).
    kernels: Vec<Option<(u32, u64)>>,
    globals: Vec<u64>,
    /// Bytes of its image, counted against the token's module cache limit.
    image_bytes: u64,
}

/// What the connection does for a request once the session has looked at it.
#[derive(Debug)]
pub enum Step {
    /// Reply with this (or, for a call that wants no reply, defer its error).
    Reply(CuResult<ReplyBody>),
    /// The request's payload is bytes for device memory at `dst`, in `ctx`'s `stream`
    /// (checked with [`Session::begin_write`] once the length is known). Bytes of a failed
    /// copy are consumed and dropped.
    Receive {
        ctx: CtxId,
        stream: StreamId,
        dst: u64,
    },
    /// The request's payload is a module image (or, when empty, one the server has by `hash`).
    ReceiveImage {
        ctx: CtxId,
        module: ModuleId,
        hash: [u8; 32],
        /// A posted load's kernel names ([`Request::ModuleLoad`]).
        kernels: Option<Vec<String>>,
    },
    /// Reply with `size` bytes of device memory from `src`, if `check` allows.
    Send {
        src: u64,
        size: u64,
        check: CuResult<()>,
    },
    /// Say whether the server holds the module image `hash`.
    HaveImage { hash: [u8; 32] },
    /// Report the server's state (`remora status`).
    Status,
}

pub struct Session {
    backend: Box<dyn DeviceSession>,
    device_count: u32,
    contexts: HashMap<CtxId, Ctx>,
    /// Stream handle -> the context that created it.
    streams: HashMap<StreamId, CtxId>,
    events: HashMap<EventId, Event>,
    modules: HashMap<ModuleId, Module>,
    /// Posted module loads that failed, with their error: every launch of the module reports
    /// it (bounded by [`MAX_FAILED_LOADS`]).
    failed_loads: HashMap<ModuleId, (CtxId, CuError)>,
    allocs: BTreeMap<u64, Alloc>,
    /// The first error of an asynchronous call, reported by the next synchronising call.
    deferred: Option<CuError>,
    /// Kernel `printf` output not yet delivered.
    output: String,
    /// The client's quota of device memory, and what it holds.
    quota: Option<u64>,
    /// A context synchronisation completed and no work came since.
    synced: bool,
    /// Bytes leased on each device (0: none).
    lease: u64,
    held: u64,
    /// The person this session belongs to (tokens file), whose limits span all their sessions.
    account: Option<Arc<Account>>,
    /// IPC handles this session opened: where each is mapped, and how many opens it counts.
    opened: HashMap<remora_protocol::messages::IpcHandle, (u64, u32)>,
}

/// What the session held stops counting against its token when the session ends (the
/// backend frees the memory itself as its `DeviceSession` drops).
impl Drop for Session {
    fn drop(&mut self) {
        if let Some(a) = &self.account {
            a.release_memory(self.held);
            a.release_module(self.modules.values().map(|m| m.image_bytes).sum());
        }
    }
}

/// Failed posted loads a session remembers; past this many it forgets those it holds (their
/// launches then fail as launches of an unknown module: still an error, never a wrong result).
const MAX_FAILED_LOADS: usize = 4096;

fn invalid_handle(what: &str, h: impl std::fmt::LowerHex) -> CuError {
    CuError::new(
        CuStatus::INVALID_HANDLE,
        format!("unknown {what} handle {h:#x}"),
    )
}

/// A handle of this client used in a call that names another of its contexts. Refused as the
/// driver refuses it, and because otherwise a call naming a healthy context could reach the
/// work of a faulted (sticky) one.
fn not_owned(what: &str, h: impl std::fmt::LowerHex, owner: CtxId, ctx: CtxId) -> CuError {
    CuError::new(
        CuStatus::INVALID_HANDLE,
        format!("{what} {h:#x} belongs to context {owner:#x}, not to context {ctx:#x} named in the call"),
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
            failed_loads: HashMap::new(),
            allocs: BTreeMap::new(),
            deferred: None,
            output: String::new(),
            quota,
            synced: false,
            lease: 0,
            held: 0,
            account: None,
            opened: HashMap::new(),
        }
    }

    /// Counts what this session holds against `account`'s limits too.
    pub fn with_account(mut self, account: Option<Arc<Account>>) -> Self {
        self.account = account;
        self
    }

    /// Counts `bytes` of device memory as held, if the quota and the token's limit allow.
    fn hold(&mut self, bytes: u64) -> CuResult<()> {
        if let Some(q) = self.quota {
            if self.held.saturating_add(bytes) > q {
                return Err(CuError::new(
                    CuStatus::OUT_OF_MEMORY,
                    format!(
                        "{bytes} bytes would exceed this client's quota of {q} ({} held)",
                        self.held
                    ),
                ));
            }
        }
        if let Some(a) = &self.account {
            a.reserve_memory(bytes)
                .map_err(|why| CuError::new(CuStatus::OUT_OF_MEMORY, why))?;
        }
        self.held = self.held.saturating_add(bytes);
        Ok(())
    }

    /// Counts `bytes` of device memory as no longer held.
    fn unhold(&mut self, bytes: u64) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        if let Some(a) = &self.account {
            a.release_memory(bytes);
        }
    }

    /// Executes a request that carries no payload.
    /// The one dispatch: every request a client can send, into its API group's module. Calls
    /// that move bulk bytes are checked here and their bytes moved by the connection.
    pub fn handle(&mut self, req: Request) -> Step {
        use Request as R;
        if !req.waits_only()
            && !matches!(req, R::Status | R::ModuleHave { .. } | R::MemGetInfo { .. })
        {
            self.synced = false;
        }
        let done = match req {
            R::MemcpyHtoD { ctx, stream, dst } => return Step::Receive { ctx, stream, dst },
            R::MemcpyDtoH {
                ctx,
                stream,
                src,
                size,
            } => {
                return Step::Send {
                    src,
                    size,
                    check: self.begin_read(ctx, stream, src, size),
                }
            }
            R::ModuleHave { hash } => return Step::HaveImage { hash },
            R::Status => return Step::Status,
            R::ModuleLoad {
                ctx,
                module,
                hash,
                kernels,
            } => {
                return Step::ReceiveImage {
                    ctx,
                    module,
                    hash,
                    kernels,
                }
            }
            R::SetWindows { .. } => Err(CuError::new(
                CuStatus::ILLEGAL_STATE,
                "address windows are already set",
            )),
            R::Flush => Ok(ReplyBody::None),
            R::MemGetInfo { device } => self.mem_info(device),
            R::CtxCreate { ctx, device, .. } => self.ctx_create(ctx, device),
            R::CtxDestroy { ctx } => self.ctx_destroy(ctx),
            R::CtxReset { ctx } => self.ctx_reset(ctx),
            R::CtxSynchronize { ctx } => self.ctx_synchronize(ctx),
            R::MemAlloc { ctx, size } => self.mem_alloc(ctx, size),
            R::MemAllocAt { ctx, ptr, size } => self.mem_alloc_at(ctx, ptr, size),
            R::MemAllocFixed { ctx, ptr, size } => self.mem_alloc_fixed(ctx, ptr, size),
            R::MemFree { ctx, ptr } => self.mem_free(ctx, ptr),
            R::IpcExport { ctx, ptr } => self.ipc_export(ctx, ptr),
            R::IpcOpen { ctx, handle } => self.ipc_open(ctx, handle),
            R::IpcClose { ctx, ptr } => self.ipc_close(ctx, ptr),
            R::MemcpyDtoD {
                ctx,
                stream,
                dst,
                src,
                size,
            } => self.memcpy_dtod(ctx, stream, dst, src, size),
            R::Memset {
                ctx,
                stream,
                dst,
                pitch,
                value,
                elem,
                width,
                height,
            } => self.memset(ctx, stream, dst, pitch, value, elem, width, height),
            R::StreamCreate { ctx, stream, .. } => self.stream_create(ctx, stream),
            R::StreamDestroy { ctx, stream } => self.stream_destroy(ctx, stream),
            R::StreamSynchronize { ctx, stream } | R::StreamQuery { ctx, stream } => {
                self.stream_synchronize(ctx, stream)
            }
            R::StreamWaitEvent { ctx, stream, event } => self.stream_wait_event(ctx, stream, event),
            R::EventCreate { ctx, event, flags } => self.event_create(ctx, event, flags),
            R::EventRecord { ctx, event, stream } => self.event_record(ctx, event, stream),
            R::EventSynchronize { ctx, event } | R::EventQuery { ctx, event } => {
                self.event_synchronize(ctx, event)
            }
            R::EventElapsed { ctx, start, end } => self.event_elapsed(ctx, start, end),
            R::EventDestroy { ctx, event } => self.event_destroy(ctx, event),
            R::ModuleUnload { ctx, module } => self.module_unload(ctx, module),
            R::Launch {
                ctx,
                stream,
                module,
                kernel,
                grid,
                block,
                shared,
                params,
                cooperative,
            } => self.launch(
                ctx,
                stream,
                module,
                kernel,
                grid,
                block,
                shared,
                cooperative,
                &params,
            ),
        };
        Step::Reply(done)
    }

    /// A request that moves no bulk bytes, answered at once (the tests' way in).
    #[cfg(test)]
    pub(crate) fn reply_to(&mut self, req: Request) -> CuResult<ReplyBody> {
        match self.handle(req) {
            Step::Reply(r) => r,
            _ => panic!("a bulk request needs a connection"),
        }
    }

    /// Whether all the client's work is complete, so a reply may tell it to answer its next
    /// synchronising calls itself until it queues more work.
    pub fn idle(&mut self) -> bool {
        self.synced || self.backend.is_idle()
    }

    /// Grants the memory lease: `bytes` on every device, reserved now and counted against the
    /// quota as a whole, so the client's own allocations inside it never fail later.
    pub fn grant_lease(&mut self, bytes: u64) -> CuResult<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.hold(bytes.saturating_mul(u64::from(self.device_count)))?;
        for d in 0..self.device_count {
            if let Err(e) = self.backend.lease(d, bytes) {
                self.unhold(bytes.saturating_mul(u64::from(self.device_count)));
                return Err(e);
            }
        }
        self.lease = bytes;
        Ok(())
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

    /// Checks that `[ptr, ptr + len)` lies inside one allocation of this client.
    pub fn check_range(&self, ptr: u64, len: u64) -> CuResult<()> {
        let ok = self
            .allocs
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&base, a)| {
                let end = ptr.checked_add(len);
                end.is_some_and(|end| base.checked_add(a.size).is_some_and(|limit| end <= limit))
            });
        if ok {
            Ok(())
        } else {
            Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{len} bytes at {ptr:#x} are not inside an allocation of this client"),
            ))
        }
    }

    /// A context of this client that has not faulted.
    fn ctx(&self, ctx: CtxId) -> CuResult<&Ctx> {
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

    /// A stream `ctx` may use: its default stream (0) or one it created.
    fn stream(&self, ctx: CtxId, stream: StreamId) -> CuResult<()> {
        self.ctx(ctx)?;
        if stream == StreamId::DEFAULT {
            return Ok(());
        }
        match self.streams.get(&stream) {
            Some(&owner) if owner == ctx => Ok(()),
            Some(&owner) => Err(not_owned("stream", stream, owner, ctx)),
            None => Err(invalid_handle("stream", stream)),
        }
    }

    /// An event created in `ctx`.
    fn event(&self, ctx: CtxId, event: EventId) -> CuResult<&Event> {
        self.ctx(ctx)?;
        match self.events.get(&event) {
            Some(e) if e.ctx == ctx => Ok(e),
            Some(e) => Err(not_owned("event", event, e.ctx, ctx)),
            None => Err(invalid_handle("event", event)),
        }
    }

    /// A module loaded in `ctx`.
    fn module(&self, ctx: CtxId, module: ModuleId) -> CuResult<&Module> {
        self.ctx(ctx)?;
        match self.modules.get(&module) {
            Some(m) if m.ctx == ctx => Ok(m),
            Some(m) => Err(not_owned("module", module, m.ctx, ctx)),
            None => Err(invalid_handle("module", module)),
        }
    }
}

#[cfg(test)]
mod tests;
