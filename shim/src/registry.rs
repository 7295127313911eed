//! The shim's one registry of client-side objects.
//!
//! Every context owns what was made in it: its streams, events, modules (and through them its
//! function handles) and cudart's context-local storage. Tearing a context down, by
//! `cuCtxDestroy` or by resetting a primary context, is one method, [`Registry::teardown`].
//! Allocations are mirrored in one address map ([`Memory`]), as the device's unified address
//! space is one, each tagged with its context; teardown prunes it in the same call.
//!
//! Handles (contexts, streams, events, modules, functions) are minted here, so creating one
//! needs no round trip; the server learns of them in the order the application made them.
//!
//! The hot paths read without a lock: stream and function handles index append-only tables
//! ([`Slab`]) whose entries are immutable (but for a liveness flag and one attribute) and live
//! as long as the process, so a launch finds its kernel's parameter layout and its stream's
//! context with a few atomic loads, and borrows the layout instead of copying it. The rest of
//! the registry sits behind two mutexes, `tables` (contexts and what they own) and `memory`
//! (the address maps), taken in that order when both are needed. Never call the server while
//! holding either.
//!
//! The calling thread's context stack (`cuCtxPushCurrent`) is thread-local and lives here too.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};

use remora_protocol::messages::{kernel_order, GlobalDesc, KernelDesc};
use remora_protocol::{CuStatus, Ticket};

use crate::error::{invalid, invalid_context, invalid_handle, ShimError, ShimResult};

/// The first minted handle value: far from 0, 1 and 2 (`CU_STREAM_LEGACY`,
/// `CU_STREAM_PER_THREAD`).
const FIRST_HANDLE: u64 = 0x5e00_0000;
/// Stream and function handles name a slot of their table: `BASE + slot * STRIDE`. The ranges
/// are far above anything [`mint`] reaches, so every handle is unique across kinds.
const STREAM_BASE: u64 = 0x5d00_0000_0000;
const FUNCTION_BASE: u64 = 0x5f00_0000_0000;
const STRIDE: u64 = 0x10;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(FIRST_HANDLE);

/// A fresh handle value, unique across every kind of handle in this process.
pub fn mint() -> u64 {
    NEXT_HANDLE.fetch_add(STRIDE, Ordering::Relaxed)
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);
    &REGISTRY
}

// ---------------------------------------------------------------------------------------------
// Objects

pub struct Context {
    pub device: i32,
    pub flags: u32,
    pub primary: bool,
    /// Retains of a primary context; created contexts are destroyed explicitly.
    pub retained: u32,
    pub limits: HashMap<u32, usize>,
    streams: HashSet<u64>,
    events: HashMap<u64, Event>,
    modules: HashMap<u64, Module>,
    /// cudart's context-local storage (`cuGetExportTable`), by key.
    storage: HashMap<usize, Stored>,
}

impl Context {
    pub fn new(device: i32, flags: u32, primary: bool) -> Self {
        Self {
            device,
            flags,
            primary,
            retained: 0,
            limits: HashMap::new(),
            streams: HashSet::new(),
            events: HashMap::new(),
            modules: HashMap::new(),
            storage: HashMap::new(),
        }
    }
}

/// A created stream. Immutable but for `live`, which teardown and `cuStreamDestroy` clear.
pub struct Stream {
    pub ctx: u64,
    pub flags: u32,
    pub priority: i32,
    live: AtomicBool,
}

pub struct Event {
    pub flags: u32,
}

pub struct Module {
    pub kernels: Vec<Arc<KernelDesc>>,
    /// The globals' device addresses, known once the server's load reply is (see `posted`).
    pub globals: Vec<GlobalDesc>,
    /// Function handles by kernel index, minted on first lookup.
    functions: HashMap<u32, u64>,
    /// A posted load whose reply has not been taken yet: `kernels` are what the shim read of
    /// the image, and `globals` are empty.
    pub posted: Option<Arc<PostedLoad>>,
    /// The posted load failed: what calls that need the module report.
    pub failed: Option<ShimError>,
}

/// A module load posted without waiting for its reply (see `api::module`).
pub struct PostedLoad {
    pub ticket: Ticket,
    /// The kernels' names as the shim read them, in the order it numbers them.
    pub names: Vec<String>,
    /// Whether the kernels' attributes are already what the server will report (an emulated
    /// device computes them with the shim's own code); else only the parameter layouts are.
    pub exact: bool,
    /// Whether the image declares module globals (whose addresses only the reply gives).
    pub has_globals: bool,
    /// The outcome once one thread waited for it, so every other waiter gets the same.
    pub outcome: Mutex<Option<ShimResult<()>>>,
}

/// A function (or kernel) handle: what a launch needs, readable without a lock.
pub struct Function {
    pub ctx: u64,
    pub module: u64,
    pub index: u32,
    /// The parameter layout and attributes, shared with the module; see [`Function::desc`].
    kernel: Arc<KernelDesc>,
    /// The server's description, when it arrived (a posted load's reply) after the function
    /// was minted from what the shim read of the image.
    settled: OnceLock<Arc<KernelDesc>>,
    /// Whether [`Function::desc`] is what the server reports: always, but for a function of
    /// a posted load on a real GPU before its reply (the driver's own register and shared
    /// memory counts).
    exact: AtomicBool,
    /// The module's posted load failed: launches report this.
    failed: OnceLock<ShimError>,
    /// NUL-terminated for `cuFuncGetName`; lives as long as the process.
    pub name: CString,
    max_dynamic_shared: AtomicI32,
    live: AtomicBool,
}

impl Function {
    /// The parameter layout and attributes. The layout is final from the start; attributes
    /// are once [`Function::exact`] says so.
    pub fn desc(&self) -> &KernelDesc {
        self.settled.get().unwrap_or(&self.kernel)
    }

    /// Whether the attributes of [`Function::desc`] are the server's.
    pub fn exact(&self) -> bool {
        self.exact.load(Ordering::Acquire)
    }

    /// The error of the module's failed posted load, once known.
    pub fn failed(&self) -> Option<&ShimError> {
        self.failed.get()
    }

    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    pub fn max_dynamic_shared(&self) -> i32 {
        self.max_dynamic_shared.load(Ordering::Relaxed)
    }

    pub fn set_max_dynamic_shared(&self, v: i32) {
        self.max_dynamic_shared.store(v, Ordering::Relaxed)
    }
}

/// A destructor cudart registers with a context-local-storage entry. Stored, not called: its
/// argument order is not documented.
pub type StorageDestructor = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void);

struct Stored {
    value: usize,
    #[allow(dead_code)] // kept so a future teardown can call it once its ABI is known
    destructor: Option<StorageDestructor>,
}

pub struct Alloc {
    pub size: u64,
    pub ctx: u64,
    pub device: i32,
    /// The module whose global this is; `None` for memory the application allocated.
    pub module: Option<u64>,
    /// Placed by the shim inside the server's memory lease (no round trip).
    pub leased: bool,
}

/// The memory lease on one device: the upper half of its window, where the shim places
/// allocations itself, and the bytes the server reserved for them.
pub struct Lease {
    next: u64,
    end: u64,
    budget: u64,
    used: u64,
}

/// Placement granularity inside a lease (the server's allocation alignment).
const LEASE_ALIGN: u64 = 512;

/// Page-locked host memory: allocated by the shim (`cuMemHostAlloc`) or registered by the app.
pub struct HostRange {
    pub size: usize,
    pub flags: u32,
    pub owned: bool,
}

/// The address maps: device allocations (and module globals) and page-locked host ranges.
#[derive(Default)]
pub struct Memory {
    pub allocs: BTreeMap<u64, Alloc>,
    pub host: BTreeMap<usize, HostRange>,
    pub leases: HashMap<i32, Lease>,
}

impl Memory {
    /// Where to place `size` bytes aligned to `align` (a power of two, at least 256) inside the
    /// lease on `device`, if it has room; `setup` gives the lease (region start, end, bytes) the
    /// first time. Addresses are not reused (a bump pointer over half a window, 512 GiB): when
    /// they run out, allocations ask the server.
    pub fn lease_place(
        &mut self,
        device: i32,
        size: u64,
        align: u64,
        setup: impl FnOnce() -> Option<(u64, u64, u64)>,
    ) -> Option<u64> {
        let l = match self.leases.entry(device) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let (start, end, budget) = setup()?;
                v.insert(Lease {
                    next: start.next_multiple_of(LEASE_ALIGN),
                    end,
                    budget,
                    used: 0,
                })
            }
        };
        let span = size.checked_next_multiple_of(LEASE_ALIGN)?;
        let p = l.next.checked_next_multiple_of(align.max(LEASE_ALIGN))?;
        if l.used.checked_add(size)? > l.budget || p.checked_add(span)? > l.end {
            return None;
        }
        l.next = p + span;
        l.used += size;
        Some(p)
    }

    /// Forgets an allocation, giving leased bytes back to their lease.
    pub fn remove_alloc(&mut self, ptr: u64) -> Option<Alloc> {
        let a = self.allocs.remove(&ptr)?;
        if a.leased {
            if let Some(l) = self.leases.get_mut(&a.device) {
                l.used = l.used.saturating_sub(a.size);
            }
        }
        Some(a)
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
            _ => Err(invalid(format!(
                "{len} bytes at {ptr:#x} are not inside a device allocation"
            ))),
        }
    }

    /// The page-locked host range holding `p`, if any.
    pub fn host_range(&self, p: usize) -> Option<(usize, &HostRange)> {
        let (&base, r) = self.host.range(..=p).next_back()?;
        (p < base + r.size).then_some((base, r))
    }
}

/// How a context is torn down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Teardown {
    /// `cuCtxDestroy`: the context goes. Refused for primary contexts.
    Destroy,
    /// `cuDevicePrimaryCtxReset` or the last release: everything it holds goes, the handle stays.
    Reset,
}

// ---------------------------------------------------------------------------------------------
// The registry

#[derive(Default)]
struct Tables {
    contexts: HashMap<u64, Context>,
    /// Primary context handle of each device, minted on first use.
    primary: HashMap<i32, u64>,
    primary_flags: HashMap<i32, u32>,
    /// Image hashes this connection has uploaded (the server keeps them).
    uploaded: HashSet<[u8; 32]>,
    /// `cuLink*` states: inputs, and the linked image once complete (kept until destroyed).
    links: HashMap<u64, Link>,
    /// Libraries (`cuLibraryLoad*`) by handle: context-independent in CUDA, so each keeps its
    /// image to load it again into any other context a kernel of it is launched in.
    libraries: HashMap<u64, Library>,
    /// Tickets of posted loads nobody will take the replies of ([`Registry::take_orphaned`]).
    orphaned: Vec<Ticket>,
}

struct Library {
    image: Arc<[u8]>,
    /// The library's module in each other context it was needed in.
    instances: HashMap<u64, u64>,
}

#[derive(Default)]
struct Link {
    inputs: Vec<Vec<u8>>,
    linked: Vec<u8>,
}

impl Tables {
    /// Remembers the tickets of posted loads of modules that are going, whose replies nobody
    /// will take ([`Registry::take_orphaned`]).
    fn orphan<'a>(&mut self, modules: impl IntoIterator<Item = &'a Module>) {
        self.orphaned.extend(
            modules
                .into_iter()
                .filter_map(|m| m.posted.as_ref().map(|p| p.ticket)),
        );
    }

    fn context(&mut self, h: u64) -> ShimResult<&mut Context> {
        self.contexts.get_mut(&h).ok_or_else(|| invalid_context(h))
    }

    /// The context owning module `h`, and the module.
    fn module(&mut self, h: u64) -> ShimResult<(u64, &mut Module)> {
        self.contexts
            .iter_mut()
            .find_map(|(&c, ctx)| ctx.modules.get_mut(&h).map(|m| (c, m)))
            .ok_or_else(|| invalid_handle("module", h))
    }
}

#[derive(Default)]
pub struct Registry {
    tables: Mutex<Tables>,
    memory: Mutex<Memory>,
    streams: Slab<Stream>,
    functions: Slab<Function>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the tables consistent, so a panic elsewhere does not poison them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        lock(&self.tables)
    }

    /// Runs `f` with the address maps locked.
    pub fn memory<R>(&self, f: impl FnOnce(&mut Memory) -> R) -> R {
        f(&mut lock(&self.memory))
    }

    // Contexts -----------------------------------------------------------------------------

    /// Adds a created context.
    pub fn add_context(&self, h: u64, ctx: Context) {
        self.tables().contexts.insert(h, ctx);
    }

    /// Runs `f` on context `h`; `CUDA_ERROR_INVALID_CONTEXT` if there is none.
    pub fn with_context<R>(&self, h: u64, f: impl FnOnce(&mut Context) -> R) -> ShimResult<R> {
        self.tables().context(h).map(f)
    }

    /// The primary context of `dev`, minted on first use: `(handle, newly minted)`.
    pub fn primary(&self, dev: i32) -> (u64, bool) {
        let mut t = self.tables();
        if let Some(&h) = t.primary.get(&dev) {
            return (h, false);
        }
        let h = mint();
        let flags = t.primary_flags.get(&dev).copied().unwrap_or(0);
        t.primary.insert(dev, h);
        t.contexts.insert(h, Context::new(dev, flags, true));
        (h, true)
    }

    /// The primary context of `dev` if it was ever used.
    pub fn existing_primary(&self, dev: i32) -> Option<u64> {
        self.tables().primary.get(&dev).copied()
    }

    /// `(flags, active)` of `dev`'s primary context.
    pub fn primary_state(&self, dev: i32) -> (u32, bool) {
        let t = self.tables();
        let flags = t.primary_flags.get(&dev).copied().unwrap_or(0);
        let active = t
            .primary
            .get(&dev)
            .and_then(|h| t.contexts.get(h))
            .is_some_and(|c| c.retained > 0);
        (flags, active)
    }

    pub fn set_primary_flags(&self, dev: i32, flags: u32) {
        let mut t = self.tables();
        t.primary_flags.insert(dev, flags);
        if let Some(h) = t.primary.get(&dev).copied() {
            if let Some(c) = t.contexts.get_mut(&h) {
                c.flags = flags;
            }
        }
    }

    /// Forgets everything context `h` holds: its streams, events, modules and their function
    /// handles, context-local storage and device allocations. [`Teardown::Destroy`] removes the
    /// context itself (and from the calling thread's stack); [`Teardown::Reset`] keeps the
    /// handle, its flags and retain count. The caller tells the server.
    pub fn teardown(&self, h: u64, how: Teardown) -> ShimResult<()> {
        let mut t = self.tables();
        let ctx = t.context(h)?;
        let (streams, modules) = match how {
            Teardown::Destroy if ctx.primary => {
                return Err(ShimError::new(
                    CuStatus::INVALID_CONTEXT,
                    "a primary context cannot be destroyed",
                ))
            }
            Teardown::Destroy => {
                let c = t.contexts.remove(&h).expect("found above");
                (c.streams, c.modules)
            }
            Teardown::Reset => {
                ctx.events.clear();
                ctx.storage.clear();
                (
                    std::mem::take(&mut ctx.streams),
                    std::mem::take(&mut ctx.modules),
                )
            }
        };
        t.orphan(modules.values());
        drop(t);
        for &s in &streams {
            self.kill_stream(s);
        }
        for m in modules.values() {
            self.kill_functions(m);
        }
        self.memory(|m| {
            let gone: Vec<u64> = m
                .allocs
                .iter()
                .filter(|(_, a)| a.ctx == h)
                .map(|(&p, _)| p)
                .collect();
            for p in gone {
                m.remove_alloc(p);
            }
        });
        if how == Teardown::Destroy {
            drop_from_stack(h);
        }
        Ok(())
    }

    // Streams and events -------------------------------------------------------------------

    /// Adds a stream to context `ctx`; returns its handle.
    pub fn add_stream(&self, ctx: u64, flags: u32, priority: i32) -> ShimResult<u64> {
        let mut t = self.tables();
        let c = t.context(ctx)?;
        let slot = self.streams.push(Stream {
            ctx,
            flags,
            priority,
            live: AtomicBool::new(true),
        })?;
        let h = STREAM_BASE + slot as u64 * STRIDE;
        c.streams.insert(h);
        Ok(h)
    }

    /// A created stream, without a lock. Not for the default streams (0, 1, 2).
    pub fn created_stream(&self, h: u64) -> ShimResult<&Stream> {
        slot(h, STREAM_BASE)
            .and_then(|i| self.streams.get(i))
            .filter(|s| s.live.load(Ordering::Acquire))
            .ok_or_else(|| invalid_handle("stream", h))
    }

    /// The context and server stream id a `CUstream` names (0, `CU_STREAM_LEGACY` and
    /// `CU_STREAM_PER_THREAD` are the current context's default stream). Takes no lock.
    pub fn stream(&self, h: u64) -> ShimResult<(u64, u64)> {
        if h <= 2 {
            return Ok((current_ctx()?, 0));
        }
        self.created_stream(h).map(|s| (s.ctx, h))
    }

    /// Removes a stream; returns its context.
    pub fn remove_stream(&self, h: u64) -> ShimResult<u64> {
        let ctx = self.created_stream(h)?.ctx;
        let mut t = self.tables();
        let owned = t
            .contexts
            .get_mut(&ctx)
            .is_some_and(|c| c.streams.remove(&h));
        if !owned {
            return Err(invalid_handle("stream", h));
        }
        self.kill_stream(h);
        Ok(ctx)
    }

    /// Adds an event to context `ctx`; returns its handle.
    pub fn add_event(&self, ctx: u64, flags: u32) -> ShimResult<u64> {
        let mut t = self.tables();
        let c = t.context(ctx)?;
        let h = mint();
        c.events.insert(h, Event { flags });
        Ok(h)
    }

    /// The context of event `h`.
    pub fn event_ctx(&self, h: u64) -> ShimResult<u64> {
        self.tables()
            .contexts
            .iter()
            .find_map(|(&c, ctx)| ctx.events.contains_key(&h).then_some(c))
            .ok_or_else(|| invalid_handle("event", h))
    }

    /// Removes an event; returns its context.
    pub fn remove_event(&self, h: u64) -> ShimResult<u64> {
        self.tables()
            .contexts
            .iter_mut()
            .find_map(|(&c, ctx)| ctx.events.remove(&h).map(|_| c))
            .ok_or_else(|| invalid_handle("event", h))
    }

    // Modules and functions ----------------------------------------------------------------

    /// Adds a loaded module to context `ctx`; its globals join the address map. With
    /// `posted`, the load's reply is still to come and `globals` is empty
    /// ([`Registry::settle_module`]).
    pub fn add_module(
        &self,
        ctx: u64,
        module: u64,
        kernels: Vec<KernelDesc>,
        globals: Vec<GlobalDesc>,
        posted: Option<Arc<PostedLoad>>,
    ) -> ShimResult<()> {
        let mut t = self.tables();
        let c = t.context(ctx)?;
        let device = c.device;
        self.map_globals(ctx, device, module, &globals);
        let kernels = kernels.into_iter().map(Arc::new).collect();
        c.modules.insert(
            module,
            Module {
                kernels,
                globals,
                functions: HashMap::new(),
                posted,
                failed: None,
            },
        );
        Ok(())
    }

    /// Globals are device memory the application may copy to (cudaMemcpyToSymbol): the
    /// address map checks copies against them as against allocations, until the module goes.
    fn map_globals(&self, ctx: u64, device: i32, module: u64, globals: &[GlobalDesc]) {
        self.memory(|m| {
            for g in globals {
                let alloc = Alloc {
                    size: g.size,
                    ctx,
                    device,
                    module: Some(module),
                    leased: false,
                };
                m.allocs.insert(g.addr, alloc);
            }
        });
    }

    /// The posted load of module `h` whose reply has not been taken yet, if any.
    pub fn posted_load(&self, h: u64) -> ShimResult<Option<Arc<PostedLoad>>> {
        self.tables().module(h).map(|(_, m)| m.posted.clone())
    }

    /// Posted loads not taken yet whose images declare globals, of every module.
    pub fn posted_with_globals(&self) -> Vec<(u64, Arc<PostedLoad>)> {
        self.tables()
            .contexts
            .values()
            .flat_map(|c| c.modules.iter())
            .filter_map(|(&h, m)| m.posted.clone().map(|p| (h, p)))
            .filter(|(_, p)| p.has_globals)
            .collect()
    }

    /// The reply of module `h`'s posted load `load` arrived: the server's kernels replace what
    /// the shim read (numbered as the shim numbered them: [`kernel_order`]), its globals join
    /// the module and the address map; or, with an error, the module is marked failed. Does
    /// nothing if the module is gone or was settled already.
    pub fn settle_module(
        &self,
        h: u64,
        load: &Arc<PostedLoad>,
        outcome: Result<(Vec<KernelDesc>, Vec<GlobalDesc>), ShimError>,
    ) {
        let mut t = self.tables();
        let Ok((ctx, m)) = t.module(h) else {
            return;
        };
        if !m.posted.as_ref().is_some_and(|p| Arc::ptr_eq(p, load)) {
            return;
        }
        m.posted = None;
        let (kernels, globals) = match outcome {
            Ok(k) => k,
            Err(e) => {
                for &f in m.functions.values() {
                    if let Some(f) = slot(f, FUNCTION_BASE).and_then(|i| self.functions.get(i)) {
                        let _ = f.failed.set(e.clone());
                        f.exact.store(true, Ordering::Release);
                    }
                }
                m.failed = Some(e);
                return;
            }
        };
        let ours = std::mem::take(&mut m.kernels);
        m.kernels = kernel_order(Some(&load.names), &kernels)
            .into_iter()
            .enumerate()
            .filter_map(|(i, at)| match at {
                Some(j) => kernels.get(j).cloned().map(Arc::new),
                // Read in the image but not in the module the server loaded: launches of it
                // fail there, saying so.
                None => ours.get(i).cloned(),
            })
            .collect();
        for (&i, &f) in &m.functions {
            let (Some(f), Some(k)) = (
                slot(f, FUNCTION_BASE).and_then(|s| self.functions.get(s)),
                m.kernels.get(i as usize),
            ) else {
                continue;
            };
            let _ = f.settled.set(k.clone());
            f.exact.store(true, Ordering::Release);
        }
        m.globals = globals;
        let device = t.contexts.get(&ctx).map_or(0, |c| c.device);
        let globals = t
            .contexts
            .get(&ctx)
            .and_then(|c| c.modules.get(&h))
            .map(|m| m.globals.clone())
            .unwrap_or_default();
        drop(t);
        self.map_globals(ctx, device, h, &globals);
    }

    /// Removes a module, its globals and its function handles; returns its context.
    pub fn remove_module(&self, h: u64) -> ShimResult<u64> {
        let mut t = self.tables();
        let (ctx, _) = t.module(h)?;
        let m = t
            .contexts
            .get_mut(&ctx)
            .and_then(|c| c.modules.remove(&h))
            .expect("found above");
        t.orphan([&m]);
        drop(t);
        self.kill_functions(&m);
        self.memory(|mem| mem.allocs.retain(|_, a| a.module != Some(h)));
        Ok(ctx)
    }

    /// The context module `h` was loaded in.
    pub fn module_context(&self, h: u64) -> ShimResult<u64> {
        self.tables().module(h).map(|(c, _)| c)
    }

    /// Runs `f` on module `h`; `CUDA_ERROR_INVALID_HANDLE` if there is none.
    pub fn with_module<R>(&self, h: u64, f: impl FnOnce(&Module) -> R) -> ShimResult<R> {
        self.tables().module(h).map(|(_, m)| f(m))
    }

    /// The function handle of kernel `index` of module `module`, minted on first use.
    pub fn function_handle(&self, module: u64, index: u32) -> ShimResult<u64> {
        let mut t = self.tables();
        let (ctx, m) = t.module(module)?;
        self.function_in(ctx, module, m, index)
    }

    /// The function handle of the kernel named `name` in module `module`.
    pub fn find_function(&self, module: u64, name: &str) -> ShimResult<u64> {
        let mut t = self.tables();
        let (ctx, m) = t.module(module)?;
        let index = m
            .kernels
            .iter()
            .position(|k| k.name == name)
            .ok_or_else(|| {
                ShimError::new(CuStatus::NOT_FOUND, format!("no kernel named {name}"))
            })?;
        self.function_in(ctx, module, m, index as u32)
    }

    /// Every function handle of module `module`, in kernel order.
    pub fn module_functions(&self, module: u64) -> ShimResult<Vec<u64>> {
        let mut t = self.tables();
        let (ctx, m) = t.module(module)?;
        (0..m.kernels.len() as u32)
            .map(|i| self.function_in(ctx, module, m, i))
            .collect()
    }

    fn function_in(&self, ctx: u64, module: u64, m: &mut Module, index: u32) -> ShimResult<u64> {
        if let Some(&f) = m.functions.get(&index) {
            return Ok(f);
        }
        let kernel = m
            .kernels
            .get(index as usize)
            .ok_or_else(|| invalid(format!("module {module:#x} has no kernel {index}")))?
            .clone();
        let failed = OnceLock::new();
        if let Some(e) = &m.failed {
            let _ = failed.set(e.clone());
        }
        let slot = self.functions.push(Function {
            ctx,
            module,
            index,
            name: CString::new(kernel.name.clone()).unwrap_or_default(),
            kernel,
            settled: OnceLock::new(),
            exact: AtomicBool::new(m.posted.as_ref().is_none_or(|p| p.exact)),
            failed,
            max_dynamic_shared: AtomicI32::new(48 << 10),
            live: AtomicBool::new(true),
        })?;
        let f = FUNCTION_BASE + slot as u64 * STRIDE;
        m.functions.insert(index, f);
        Ok(f)
    }

    /// A function handle's entry, without a lock: what a launch reads.
    pub fn function(&self, h: u64) -> ShimResult<&Function> {
        slot(h, FUNCTION_BASE)
            .and_then(|i| self.functions.get(i))
            .filter(|f| f.live.load(Ordering::Acquire))
            .ok_or_else(|| invalid_handle("function", h))
    }

    fn kill_stream(&self, h: u64) {
        if let Some(s) = slot(h, STREAM_BASE).and_then(|i| self.streams.get(i)) {
            s.live.store(false, Ordering::Release);
        }
    }

    fn kill_functions(&self, m: &Module) {
        for &f in m.functions.values() {
            if let Some(f) = slot(f, FUNCTION_BASE).and_then(|i| self.functions.get(i)) {
                f.live.store(false, Ordering::Release);
            }
        }
    }

    /// Tickets of posted loads whose modules went before their replies were taken: the
    /// connection may drop those replies.
    pub fn take_orphaned(&self) -> Vec<Ticket> {
        std::mem::take(&mut self.tables().orphaned)
    }

    /// Whether this connection has uploaded the image with this hash.
    pub fn uploaded(&self, hash: &[u8; 32]) -> bool {
        self.tables().uploaded.contains(hash)
    }

    /// Records an uploaded image; false if it was already recorded.
    pub fn mark_uploaded(&self, hash: [u8; 32]) -> bool {
        self.tables().uploaded.insert(hash)
    }

    // Libraries ----------------------------------------------------------------------------

    /// Marks module `h` as a library loaded from `image`.
    pub fn add_library(&self, h: u64, image: &[u8]) {
        let lib = Library {
            image: image.into(),
            instances: HashMap::new(),
        };
        self.tables().libraries.insert(h, lib);
    }

    /// For a launch in `ctx` of a kernel of module `module` that lives in another context:
    /// `Ok(None)` if `module` is not a library; else the library's live module in `ctx`, or
    /// its image to load there (`Err`).
    pub fn library_in(&self, module: u64, ctx: u64) -> Option<Result<u64, Arc<[u8]>>> {
        let mut t = self.tables();
        let inst = t.libraries.get(&module)?.instances.get(&ctx).copied();
        if let Some(i) = inst.filter(|&i| t.module(i).is_ok_and(|(c, _)| c == ctx)) {
            return Some(Ok(i));
        }
        t.libraries.get(&module).map(|l| Err(l.image.clone()))
    }

    /// Records `instance` as library `module`'s module in `ctx`.
    pub fn set_library_instance(&self, module: u64, ctx: u64, instance: u64) {
        if let Some(l) = self.tables().libraries.get_mut(&module) {
            l.instances.insert(ctx, instance);
        }
    }

    /// Forgets library `h`; returns its modules in other contexts, to unload.
    pub fn remove_library(&self, h: u64) -> Vec<u64> {
        self.tables()
            .libraries
            .remove(&h)
            .map(|l| l.instances.into_values().collect())
            .unwrap_or_default()
    }

    // The linker ---------------------------------------------------------------------------

    pub fn link_create(&self) -> u64 {
        let h = mint();
        self.tables().links.insert(h, Link::default());
        h
    }

    pub fn link_add(&self, h: u64, input: Vec<u8>) -> ShimResult<()> {
        let mut t = self.tables();
        let l = t
            .links
            .get_mut(&h)
            .ok_or_else(|| invalid_handle("link state", h))?;
        l.inputs.push(input);
        Ok(())
    }

    /// Links a state's inputs with `link`; the image stays until [`Registry::link_destroy`].
    pub fn link_complete(
        &self,
        h: u64,
        link: impl FnOnce(&[Vec<u8>]) -> ShimResult<Vec<u8>>,
    ) -> ShimResult<(*mut c_void, usize)> {
        let inputs = self
            .tables()
            .links
            .get(&h)
            .map(|l| l.inputs.clone())
            .ok_or_else(|| invalid_handle("link state", h))?;
        let linked = link(&inputs)?;
        let mut t = self.tables();
        let l = t
            .links
            .get_mut(&h)
            .ok_or_else(|| invalid_handle("link state", h))?;
        l.linked = linked;
        Ok((l.linked.as_mut_ptr().cast(), l.linked.len()))
    }

    pub fn link_destroy(&self, h: u64) -> ShimResult<()> {
        self.tables()
            .links
            .remove(&h)
            .map(|_| ())
            .ok_or_else(|| invalid_handle("link state", h))
    }

    // Context-local storage (cudart's export tables) ---------------------------------------

    /// Stores `value` under `key` in context `ctx` (NULL: the current context).
    pub fn storage_put(
        &self,
        ctx: u64,
        key: usize,
        value: usize,
        destructor: Option<StorageDestructor>,
    ) -> ShimResult<()> {
        let ctx = ctx_or_current(ctx)?;
        self.with_context(ctx, |c| {
            c.storage.insert(key, Stored { value, destructor });
        })
    }

    /// The value stored under `key` in context `ctx` (NULL: the current context);
    /// `CUDA_ERROR_INVALID_HANDLE` if none.
    pub fn storage_get(&self, ctx: u64, key: usize) -> ShimResult<usize> {
        let ctx = ctx_or_current(ctx)?;
        self.tables()
            .contexts
            .get(&ctx)
            .and_then(|c| c.storage.get(&key))
            .map(|s| s.value)
            .ok_or_else(|| invalid_handle("context-local storage key", key as u64))
    }

    /// Deletes `key` from context `ctx` (NULL: the current context); an absent key succeeds.
    pub fn storage_delete(&self, ctx: u64, key: usize) -> ShimResult<()> {
        let ctx = ctx_or_current(ctx)?;
        if let Some(c) = self.tables().contexts.get_mut(&ctx) {
            c.storage.remove(&key);
        }
        Ok(())
    }
}

fn ctx_or_current(ctx: u64) -> ShimResult<u64> {
    if ctx == 0 {
        current_ctx()
    } else {
        Ok(ctx)
    }
}

/// The slot a handle of the table at `base` names, if it is one.
fn slot(h: u64, base: u64) -> Option<usize> {
    let off = h.checked_sub(base)?;
    (off % STRIDE == 0).then(|| usize::try_from(off / STRIDE).ok())?
}

// ---------------------------------------------------------------------------------------------
// Slab: an append-only table read without a lock

/// Entries in the first chunk; chunk `c` holds `FIRST_CHUNK << c`.
const FIRST_CHUNK: usize = 64;
const CHUNKS: usize = 24;

/// An append-only table whose entries never move and live as long as the table, so readers
/// need no lock: a read is two acquire loads. Appends are serialised by a mutex.
struct Slab<T> {
    chunks: [OnceLock<Box<[OnceLock<T>]>>; CHUNKS],
    len: Mutex<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            chunks: [const { OnceLock::new() }; CHUNKS],
            len: Mutex::new(0),
        }
    }
}

/// (chunk, offset) of entry `i`, if a slab can hold it.
fn locate(i: usize) -> Option<(usize, usize)> {
    let q = i / FIRST_CHUNK + 1;
    let c = q.ilog2() as usize;
    (c < CHUNKS).then(|| (c, i - FIRST_CHUNK * ((1 << c) - 1)))
}

impl<T> Slab<T> {
    fn push(&self, value: T) -> ShimResult<usize> {
        let mut len = lock(&self.len);
        let i = *len;
        let (c, off) =
            locate(i).ok_or_else(|| ShimError::new(CuStatus::OUT_OF_MEMORY, "too many handles"))?;
        let chunk =
            self.chunks[c].get_or_init(|| (0..FIRST_CHUNK << c).map(|_| OnceLock::new()).collect());
        if chunk[off].set(value).is_err() {
            unreachable!("slab slot {i} filled twice");
        }
        *len += 1;
        Ok(i)
    }

    fn get(&self, i: usize) -> Option<&T> {
        let (c, off) = locate(i)?;
        self.chunks[c].get()?.get(off)?.get()
    }
}

// ---------------------------------------------------------------------------------------------
// The calling thread's context stack

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
fn drop_from_stack(ctx: u64) {
    let _ = CTX_STACK.try_with(|s| s.borrow_mut().retain(|&c| c != ctx));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_chunks_tile_the_indices() {
        let mut expected = (0, 0);
        for i in 0..10_000 {
            assert_eq!(locate(i), Some(expected), "{i}");
            expected.1 += 1;
            if expected.1 == FIRST_CHUNK << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
        let s = Slab::default();
        for i in 0..1000 {
            assert_eq!(s.push(i).unwrap(), i);
        }
        assert!((0..1000).all(|i| s.get(i) == Some(&i)));
        assert_eq!(s.get(1000), None);
        assert_eq!(locate(usize::MAX), None);
        assert_eq!(s.get(usize::MAX), None);
    }

    fn kernel(name: &str) -> KernelDesc {
        KernelDesc {
            name: name.into(),
            params: Vec::new(),
            shared_bytes: 0,
            local_bytes: 0,
            num_regs: 0,
            max_threads: 1024,
            const_bytes: 0,
        }
    }

    #[test]
    fn teardown_forgets_everything_a_context_owns() {
        let r = Registry::default();
        let ctx = mint();
        r.add_context(ctx, Context::new(0, 0, false));
        let s = r.add_stream(ctx, 0, 0).unwrap();
        let e = r.add_event(ctx, 0).unwrap();
        let m = mint();
        let g = GlobalDesc {
            name: "g".into(),
            addr: 0x1000,
            size: 8,
        };
        r.add_module(ctx, m, vec![kernel("k")], vec![g], None)
            .unwrap();
        let f = r.find_function(m, "k").unwrap();
        assert_eq!(r.function_handle(m, 0).unwrap(), f);
        assert_eq!(r.function(f).unwrap().desc().name, "k");
        r.storage_put(ctx, 7, 9, None).unwrap();
        r.memory(|mem| {
            mem.allocs.insert(
                0x2000,
                Alloc {
                    size: 16,
                    ctx,
                    device: 0,
                    module: None,
                    leased: false,
                },
            )
        });
        assert_eq!(r.stream(s).unwrap(), (ctx, s));
        assert_eq!(r.event_ctx(e).unwrap(), ctx);

        r.teardown(ctx, Teardown::Destroy).unwrap();
        assert!(r.stream(s).is_err());
        assert!(r.event_ctx(e).is_err());
        assert!(r.function(f).is_err());
        assert!(r.with_module(m, |_| ()).is_err());
        assert!(r.storage_get(ctx, 7).is_err());
        assert!(r.memory(|mem| mem.allocs.is_empty()));
        assert!(r.teardown(ctx, Teardown::Destroy).is_err());
    }

    #[test]
    fn reset_keeps_the_primary_handle() {
        let r = Registry::default();
        let (p, new) = r.primary(0);
        assert!(new);
        assert_eq!(r.primary(0), (p, false));
        assert!(r.teardown(p, Teardown::Destroy).is_err());
        let s = r.add_stream(p, 0, 0).unwrap();
        r.teardown(p, Teardown::Reset).unwrap();
        assert!(r.stream(s).is_err());
        assert!(r.with_context(p, |c| c.primary).unwrap());
    }

    #[test]
    fn streams_added_from_many_threads_resolve_without_a_lock() {
        let r = Registry::default();
        let ctx = mint();
        r.add_context(ctx, Context::new(0, 0, false));
        let handles: Vec<u64> = std::thread::scope(|sc| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let r = &r;
                    sc.spawn(move || {
                        (0..500)
                            .map(|i| {
                                let h = r.add_stream(ctx, 0, -t).unwrap();
                                // Earlier entries stay readable while others are appended.
                                assert_eq!(r.stream(h).unwrap(), (ctx, h), "{i}");
                                h
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let mut unique = handles.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 2000);
        assert!(handles.iter().all(|&h| r.created_stream(h).is_ok()));
        r.teardown(ctx, Teardown::Destroy).unwrap();
        assert!(handles.iter().all(|&h| r.created_stream(h).is_err()));
    }

    #[test]
    fn handles_of_other_kinds_are_not_streams_or_functions() {
        let r = Registry::default();
        let ctx = mint();
        r.add_context(ctx, Context::new(0, 0, false));
        let s = r.add_stream(ctx, 0, 0).unwrap();
        assert!(r.function(s).is_err());
        for bogus in [ctx, 0x1234567, s + 1, s + STRIDE, u64::MAX] {
            assert!(r.created_stream(bogus).is_err(), "{bogus:#x}");
        }
        r.remove_stream(s).unwrap();
        assert!(r.remove_stream(s).is_err());
    }
}
