//! Client-side handle tables and caches.
//!
//! Handles (contexts, streams, events, modules, functions) are minted here, so creating one
//! needs no round trip; the server learns of them in the order the application made them.
//! Allocations are mirrored here too, so that copies and frees are checked locally and their
//! errors returned at once, as a real driver does, even for calls that never wait for the wire.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use remora_protocol::CuStatus;

use crate::ffi::{ShimError, ShimResult};

/// The first handle value: far from 0, 1 and 2 (`CU_STREAM_LEGACY`, `CU_STREAM_PER_THREAD`).
const FIRST_HANDLE: u64 = 0x5e00_0000;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(FIRST_HANDLE);

/// A fresh handle value, unique across every kind of handle in this process.
pub fn mint() -> u64 {
    NEXT_HANDLE.fetch_add(0x10, Ordering::Relaxed)
}

pub struct Context {
    pub device: i32,
    pub flags: u32,
    pub primary: bool,
    /// Retains of a primary context; created contexts are destroyed explicitly.
    pub retained: u32,
    pub limits: HashMap<u32, usize>,
}

pub struct Stream {
    pub ctx: u64,
    pub flags: u32,
    pub priority: i32,
}

pub struct Event {
    pub ctx: u64,
    pub flags: u32,
}

pub struct Alloc {
    pub size: u64,
    pub ctx: u64,
    pub device: i32,
    /// The module whose global this is; `None` for memory the application allocated.
    pub module: Option<u64>,
}

/// Page-locked host memory: allocated by the shim (`cuMemHostAlloc`) or registered by the app.
pub struct HostRange {
    pub size: usize,
    pub flags: u32,
    pub owned: bool,
}

#[derive(Default)]
pub struct State {
    pub contexts: HashMap<u64, Context>,
    /// Primary context handle of each device, minted on first retain.
    pub primary: HashMap<i32, u64>,
    pub primary_flags: HashMap<i32, u32>,
    pub streams: HashMap<u64, Stream>,
    pub events: HashMap<u64, Event>,
    pub allocs: BTreeMap<u64, Alloc>,
    pub host: BTreeMap<usize, HostRange>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Runs `f` with the state locked. Never call the server while holding it.
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g: MutexGuard<'_, Option<State>> = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(State::default))
}

thread_local! {
    /// The calling thread's context stack; the top is the current context.
    static CTX_STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

// The stack is reached with `try_with` throughout: cudart releases its contexts from exit
// handlers, after this thread's thread-locals are gone, and that must not panic.

/// False while the calling thread is being torn down (its thread-locals are gone).
pub fn thread_alive() -> bool {
    CTX_STACK.try_with(|_| ()).is_ok()
}

pub fn current() -> Option<u64> {
    CTX_STACK
        .try_with(|s| s.borrow().last().copied())
        .ok()
        .flatten()
}

/// The current context, or `CUDA_ERROR_INVALID_CONTEXT`.
pub fn current_ctx() -> ShimResult<u64> {
    current().ok_or_else(|| ShimError::new(CuStatus::INVALID_CONTEXT, "no current context"))
}

pub fn set_current(ctx: Option<u64>) {
    let _ = CTX_STACK.try_with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        if let Some(c) = ctx {
            s.push(c);
        }
    });
}

pub fn push_current(ctx: u64) {
    let _ = CTX_STACK.try_with(|s| s.borrow_mut().push(ctx));
}

pub fn pop_current() -> Option<u64> {
    CTX_STACK.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

/// Forgets a destroyed context in this thread's stack.
pub fn drop_from_stack(ctx: u64) {
    let _ = CTX_STACK.try_with(|s| s.borrow_mut().retain(|&c| c != ctx));
}

impl State {
    /// The context and server stream id a `CUstream` names (0, `CU_STREAM_LEGACY` and
    /// `CU_STREAM_PER_THREAD` are the current context's default stream).
    pub fn stream(&self, stream: u64) -> ShimResult<(u64, u64)> {
        if stream <= 2 {
            let ctx = current_ctx()?;
            return Ok((ctx, 0));
        }
        match self.streams.get(&stream) {
            Some(s) => Ok((s.ctx, stream)),
            None => Err(ShimError::new(
                CuStatus::INVALID_HANDLE,
                format!("unknown stream {stream:#x}"),
            )),
        }
    }

    pub fn context(&self, ctx: u64) -> ShimResult<&Context> {
        self.contexts.get(&ctx).ok_or_else(|| {
            ShimError::new(
                CuStatus::INVALID_CONTEXT,
                format!("unknown context {ctx:#x}"),
            )
        })
    }

    /// The allocation holding `[ptr, ptr + len)`.
    pub fn alloc_range(&self, ptr: u64, len: u64) -> ShimResult<(u64, &Alloc)> {
        match self.allocs.range(..=ptr).next_back() {
            Some((&base, a))
                if ptr.checked_add(len).is_some_and(|end| end <= base + a.size)
                    && ptr < base + a.size.max(1) =>
            {
                Ok((base, a))
            }
            _ => Err(ShimError::new(
                CuStatus::INVALID_VALUE,
                format!("{len} bytes at {ptr:#x} are not inside a device allocation"),
            )),
        }
    }

    /// The page-locked host range holding `p`, if any.
    pub fn host_range(&self, p: usize) -> Option<(usize, &HostRange)> {
        let (&base, r) = self.host.range(..=p).next_back()?;
        (p < base + r.size).then_some((base, r))
    }
}
