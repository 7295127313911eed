//! CUDA graphs as the shim keeps them: nodes recorded in the process, never on the server.
//!
//! A graph is a set of nodes, each one operation the shim already knows how to queue (a kernel
//! with its parameter bytes, a memset, a copy, nothing) and the nodes it depends on. Graphs are
//! built by hand (`cuGraphAdd*Node`) or by stream capture (`api::capture`); they are
//! instantiated and launched by `api::graph_exec`, which sends the nodes in dependency order as
//! ordinary queued calls. Handles of graphs and nodes are minted here.
//!
//! Node parameters are checked when the node is added, as the driver checks them; host memory
//! a copy node names is read (or written) when the graph runs, as on a GPU.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_uint, c_void};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use remora_protocol::messages::{CtxId, EventId, ModuleId, Request, StreamId};
use remora_protocol::CuStatus;

use super::params::{self, Geometry};
use crate::client::{self, Client};
use crate::ffi::{invalid, FromCuda, ShimError, ShimResult};
use crate::generated::{
    CUDA_KERNEL_NODE_PARAMS_v1, CUDA_KERNEL_NODE_PARAMS, CUDA_MEMCPY3D, CUDA_MEMSET_NODE_PARAMS,
};
use crate::registry::{self, registry};

/// `CUgraphNodeType` values of the kinds of node the shim keeps.
const TYPE_KERNEL: c_uint = 0;
const TYPE_MEMCPY: c_uint = 1;
const TYPE_MEMSET: c_uint = 2;
const TYPE_EMPTY: c_uint = 5;
const TYPE_HOST: c_uint = 3;
const TYPE_GRAPH: c_uint = 4;
const TYPE_EVENT_RECORD: c_uint = 7;
const TYPE_WAIT_EVENT: c_uint = 6;
const TYPE_MEM_ALLOC: c_uint = 10;
const TYPE_MEM_FREE: c_uint = 11;

/// A host node's function (`CUhostFn` without its NULL).
pub type HostFn = unsafe extern "C" fn(*mut c_void);

/// Which way a copy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    HtoD,
    DtoH,
    DtoD,
}

/// One node's operation.
#[derive(Clone, Debug)]
pub enum Op {
    Kernel {
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        /// The packed parameter buffer, as a launch sends it.
        params: Vec<u8>,
    },
    Memset {
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
    },
    /// `rows` rows of `width` bytes, `src_pitch` and `dst_pitch` apart. Host sides are
    /// addresses in this process, read or written when the graph runs.
    Copy {
        dir: Dir,
        dst: u64,
        src: u64,
        width: u64,
        rows: u64,
        dst_pitch: u64,
        src_pitch: u64,
    },
    Empty,
    /// A host function, run once everything before it has completed.
    Host {
        func: HostFn,
        data: usize,
    },
    /// `cuEventRecord` of `event` at this point.
    EventRecord {
        event: u64,
    },
    /// `cuStreamWaitEvent` for `event` at this point.
    EventWait {
        event: u64,
    },
    /// A child graph (a graph handle the node owns), run as its nodes in their order. Expanded
    /// at instantiation; never posted itself.
    Child {
        graph: u64,
    },
    /// A graph allocation. Its address is fixed when the node is created, as CUDA fixes it; the
    /// shim allocates the memory then and keeps it while any graph node or executable graph
    /// holds the allocation (see [`hold`]), so running the node allocates nothing and a free
    /// node or `cuMemFreeAsync` of it frees nothing: the address stays valid, which covers
    /// every use CUDA allows (from the node's execution to the free).
    MemAlloc {
        ptr: u64,
        size: u64,
        device: i32,
    },
    /// The end of a graph allocation's lifetime (nothing to do: see [`Op::MemAlloc`]).
    MemFree {
        ptr: u64,
    },
}

impl Op {
    fn node_type(&self) -> c_uint {
        match self {
            Op::Kernel { .. } => TYPE_KERNEL,
            Op::Memset { .. } => TYPE_MEMSET,
            Op::Copy { .. } => TYPE_MEMCPY,
            Op::Empty => TYPE_EMPTY,
            Op::Host { .. } => TYPE_HOST,
            Op::EventRecord { .. } => TYPE_EVENT_RECORD,
            Op::EventWait { .. } => TYPE_WAIT_EVENT,
            Op::Child { .. } => TYPE_GRAPH,
            Op::MemAlloc { .. } => TYPE_MEM_ALLOC,
            Op::MemFree { .. } => TYPE_MEM_FREE,
        }
    }

    /// Queues the operation on `stream` of `ctx` (no round trip).
    ///
    /// # Safety
    /// Host memory a copy names is valid for the copy, as CUDA requires of a graph's user.
    pub unsafe fn post(&self, c: &Client, ctx: u64, stream: u64) -> ShimResult<()> {
        let (ctx, stream) = (CtxId(ctx), StreamId(stream));
        match self {
            Op::Kernel {
                func,
                grid,
                block,
                shared,
                params,
            } => {
                let f = registry().function(*func)?;
                let req = Request::Launch {
                    ctx,
                    stream,
                    // A library's kernel runs in whichever context launches the graph.
                    module: ModuleId(super::module::library_module(f, ctx.0)?),
                    kernel: f.index,
                    grid: *grid,
                    block: *block,
                    shared: *shared,
                    params: params.clone(),
                    cooperative: false,
                };
                c.post(&req, &[])
            }
            &Op::Memset {
                dst,
                pitch,
                value,
                elem,
                width,
                height,
            } => c.post(
                &Request::Memset {
                    ctx,
                    stream,
                    dst,
                    pitch,
                    value,
                    elem,
                    width,
                    height,
                },
                &[],
            ),
            &Op::Copy {
                dir,
                dst,
                src,
                width,
                rows,
                dst_pitch,
                src_pitch,
            } => {
                // Contiguous rows go as one copy.
                let (width, rows) = if rows == 1 || (dst_pitch == width && src_pitch == width) {
                    (width * rows, 1)
                } else {
                    (width, rows)
                };
                for r in 0..rows {
                    let (d, s) = (dst + r * dst_pitch, src + r * src_pitch);
                    match dir {
                        Dir::HtoD => {
                            // SAFETY: the application's host memory, valid when the graph
                            // runs by the caller's contract.
                            let bytes = unsafe {
                                std::slice::from_raw_parts(s as usize as *const u8, width as usize)
                            };
                            c.post(
                                &Request::MemcpyHtoD {
                                    ctx,
                                    stream,
                                    dst: d,
                                },
                                bytes,
                            )?;
                        }
                        Dir::DtoH => {
                            let req = Request::MemcpyDtoH {
                                ctx,
                                stream,
                                src: s,
                                size: width,
                            };
                            // SAFETY: as above; the data lands by the next synchronisation, which
                            // CUDA requires before the host reads it.
                            unsafe { c.post_read(&req, d as usize as *mut u8, width as usize) }?;
                        }
                        Dir::DtoD => c.post(
                            &Request::MemcpyDtoD {
                                ctx,
                                stream,
                                dst: d,
                                src: s,
                                size: width,
                            },
                            &[],
                        )?,
                    }
                }
                Ok(())
            }
            Op::Empty | Op::MemAlloc { .. } | Op::MemFree { .. } => Ok(()),
            &Op::Host { func, data } => {
                // As `cuLaunchHostFunc`: the stream's earlier work completes first (one round
                // trip), and later work is queued only after the function returns.
                super::managed::sync_call(c, &Request::StreamSynchronize { ctx, stream })?;
                // SAFETY: the application's host function with its own user data, as
                // cuGraphAddHostNode specifies.
                unsafe { func(data as *mut c_void) };
                Ok(())
            }
            &Op::EventRecord { event } => c.post(
                &Request::EventRecord {
                    ctx,
                    event: EventId(event),
                    stream,
                },
                &[],
            ),
            &Op::EventWait { event } => c.post(
                &Request::StreamWaitEvent {
                    ctx,
                    stream,
                    event: EventId(event),
                },
                &[],
            ),
            Op::Child { .. } => Err(invalid(
                "a child graph node is expanded when its graph is instantiated",
            )),
        }
    }
}

/// Graph allocations: address -> (holders, context). A holder is a graph node or an executable
/// graph with an allocation node for it; the memory goes back when the last one goes.
fn allocs() -> MutexGuard<'static, HashMap<u64, (usize, u64)>> {
    static ALLOCS: LazyLock<Mutex<HashMap<u64, (usize, u64)>>> = LazyLock::new(Mutex::default);
    ALLOCS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `ptr` is the address of a graph allocation.
pub fn is_graph_alloc(ptr: u64) -> bool {
    allocs().contains_key(&ptr)
}

/// The context of the allocation at `ptr` now, if it is one.
fn alloc_ctx(ptr: u64) -> Option<u64> {
    registry().memory(|m| m.allocs.get(&ptr).map(|a| a.ctx))
}

/// One more holder of the allocation `op` makes, if it is an allocation node.
pub fn hold(op: &Op) {
    if let &Op::MemAlloc { ptr, .. } = op {
        let mut t = allocs();
        match t.get_mut(&ptr) {
            Some(e) => e.0 += 1,
            None => {
                t.insert(ptr, (1, alloc_ctx(ptr).unwrap_or(0)));
            }
        }
    }
}

/// One holder fewer of the allocation `op` makes; the memory goes back with the last one.
pub fn unhold(op: &Op) {
    if let &Op::MemAlloc { ptr, .. } = op {
        let last = {
            let mut t = allocs();
            match t.get_mut(&ptr) {
                Some(e) if e.0 > 1 => {
                    e.0 -= 1;
                    None
                }
                Some(_) => t.remove(&ptr).map(|(_, ctx)| ctx),
                None => None,
            }
        };
        // A context torn down meanwhile took the memory with it (and the address may be
        // another allocation's now): only the allocation made for the node goes.
        if last.is_some_and(|c| alloc_ctx(ptr) == Some(c)) {
            let _ = super::device_alloc::free(ptr);
        }
    }
}

/// One node: its operation and the nodes it waits for.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub deps: Vec<u64>,
    /// Pointers into `param_copies`, handed out by `cuGraphKernelNodeGetParams`.
    param_ptrs: Vec<usize>,
    param_copies: Vec<Vec<u8>>,
}

impl Node {
    pub fn new(op: Op, deps: Vec<u64>) -> Self {
        Self {
            op,
            deps,
            param_ptrs: Vec::new(),
            param_copies: Vec::new(),
        }
    }
}

/// A graph: nodes by handle (minted in increasing order, so the map keeps creation order).
#[derive(Clone, Default, Debug)]
pub struct Graph {
    pub nodes: BTreeMap<u64, Node>,
}

impl Graph {
    /// The nodes in an order that respects every dependency (creation order among
    /// independent ones); `None` if the dependencies form a cycle.
    pub fn topological(&self) -> Option<Vec<u64>> {
        let mut waiting: HashMap<u64, usize> =
            self.nodes.iter().map(|(&h, n)| (h, n.deps.len())).collect();
        let mut users: HashMap<u64, Vec<u64>> = HashMap::new();
        for (&h, n) in &self.nodes {
            for &d in &n.deps {
                users.entry(d).or_default().push(h);
            }
        }
        let mut ready: std::collections::BTreeSet<u64> = waiting
            .iter()
            .filter(|(_, &n)| n == 0)
            .map(|(&h, _)| h)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(h) = ready.pop_first() {
            order.push(h);
            for u in users.get(&h).into_iter().flatten() {
                let w = waiting.get_mut(u)?;
                *w -= 1;
                if *w == 0 {
                    ready.insert(*u);
                }
            }
        }
        (order.len() == self.nodes.len()).then_some(order)
    }

    /// Every node `of` depends on, directly or not, and `of` itself.
    pub fn ancestors(&self, of: &[u64]) -> std::collections::HashSet<u64> {
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<u64> = of.to_vec();
        while let Some(h) = todo.pop() {
            if seen.insert(h) {
                if let Some(n) = self.nodes.get(&h) {
                    todo.extend(&n.deps);
                }
            }
        }
        seen
    }
}

#[derive(Default)]
struct Graphs {
    graphs: HashMap<u64, Graph>,
    /// The graph each node belongs to.
    owner: HashMap<u64, u64>,
}

fn graphs() -> MutexGuard<'static, Graphs> {
    static GRAPHS: LazyLock<Mutex<Graphs>> = LazyLock::new(Mutex::default);
    // Every update leaves the tables consistent, so a panic elsewhere does not poison them.
    GRAPHS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn no_graph(h: u64) -> ShimError {
    if h == 0 {
        // The driver documents CUDA_ERROR_INVALID_VALUE for a NULL graph.
        return invalid("null graph");
    }
    crate::error::invalid_handle("graph", h)
}

fn no_node(h: u64) -> ShimError {
    invalid(format!("unknown graph node {h:#x}"))
}

/// Runs `f` on graph `h`.
pub fn with_graph<R>(h: u64, f: impl FnOnce(&Graph) -> R) -> ShimResult<R> {
    graphs().graphs.get(&h).map(f).ok_or_else(|| no_graph(h))
}

/// A new empty graph.
pub fn new_graph() -> u64 {
    let h = registry::mint();
    graphs().graphs.insert(h, Graph::default());
    h
}

/// Adds a node depending on `deps` (nodes of the same graph, no repeats); returns its handle.
pub fn add_node(graph: u64, op: Op, deps: &[u64]) -> ShimResult<u64> {
    let mut t = graphs();
    let g = t.graphs.get_mut(&graph).ok_or_else(|| no_graph(graph))?;
    for (i, d) in deps.iter().enumerate() {
        if !g.nodes.contains_key(d) {
            return Err(invalid(format!(
                "dependency {d:#x} is not a node of graph {graph:#x}"
            )));
        }
        if deps[..i].contains(d) {
            return Err(invalid(format!("dependency {d:#x} is named twice")));
        }
    }
    let h = registry::mint();
    hold(&op);
    g.nodes.insert(h, Node::new(op, deps.to_vec()));
    t.owner.insert(h, graph);
    Ok(h)
}

/// Runs `f` on node `h` and its graph's handle.
pub fn with_node<R>(h: u64, f: impl FnOnce(u64, &mut Node) -> R) -> ShimResult<R> {
    let mut t = graphs();
    let g = *t.owner.get(&h).ok_or_else(|| no_node(h))?;
    let n = t
        .graphs
        .get_mut(&g)
        .and_then(|g| g.nodes.get_mut(&h))
        .ok_or_else(|| no_node(h))?;
    Ok(f(g, n))
}

/// Removes graph `h` and its nodes.
pub fn remove_graph(h: u64) -> ShimResult<()> {
    let mut dropped = Vec::new();
    let r = remove_in(&mut graphs(), h, &mut dropped);
    // Outside the lock: the last holder of an allocation frees it.
    dropped.iter().for_each(unhold);
    r
}

/// Removes graph `h`, its nodes and the child graphs they own; the operations that held
/// allocations go to `dropped`.
fn remove_in(t: &mut Graphs, h: u64, dropped: &mut Vec<Op>) -> ShimResult<()> {
    let g = t.graphs.remove(&h).ok_or_else(|| no_graph(h))?;
    for (n, node) in g.nodes {
        t.owner.remove(&n);
        drop_op(t, node.op, dropped);
    }
    Ok(())
}

/// What removing a node's operation entails: its child graph goes, its allocation is held
/// once less.
fn drop_op(t: &mut Graphs, op: Op, dropped: &mut Vec<Op>) {
    match op {
        Op::Child { graph } => {
            let _ = remove_in(t, graph, dropped);
        }
        op @ Op::MemAlloc { .. } => dropped.push(op),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The driver functions that build and inspect graphs

pub fn create(out: &mut u64, flags: c_uint) -> ShimResult<()> {
    if flags != 0 {
        return Err(invalid("cuGraphCreate flags must be 0"));
    }
    *out = new_graph();
    Ok(())
}

pub fn destroy(h: u64) -> ShimResult<()> {
    remove_graph(h)
}

/// # Safety
/// `deps` has `n` node handles (or is NULL with `n` 0).
pub unsafe fn dependencies<'a>(deps: *const *mut c_void, n: usize) -> ShimResult<&'a [u64]> {
    if n == 0 {
        return Ok(&[]);
    }
    if deps.is_null() {
        return Err(invalid("null dependency array"));
    }
    // SAFETY: an array of `n` handles by the caller's contract; a handle is a u64 here.
    Ok(unsafe { std::slice::from_raw_parts(deps.cast::<u64>(), n) })
}

/// # Safety
/// As for [`dependencies`].
pub unsafe fn add_empty(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    *out = add_node(graph, Op::Empty, unsafe { dependencies(deps, n) }?)?;
    Ok(())
}

/// `CUDA_KERNEL_NODE_PARAMS` (v1 is the first 56 bytes of v2, which adds `kern` and `ctx`).
#[repr(C)]
pub struct KernelParams {
    func: u64,
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared: c_uint,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
}
const _: () = assert!(std::mem::size_of::<KernelParams>() == 56);

impl<'a> FromCuda<'a, *const CUDA_KERNEL_NODE_PARAMS> for &'a KernelParams {
    unsafe fn from_cuda(p: &'a *const CUDA_KERNEL_NODE_PARAMS) -> ShimResult<&'a KernelParams> {
        // SAFETY: the struct starts with KernelParams's fields (cuda.h); a valid input.
        unsafe { p.cast::<KernelParams>().as_ref() }
            .ok_or_else(|| invalid("null kernel node parameters"))
    }
}

impl<'a> FromCuda<'a, *const CUDA_KERNEL_NODE_PARAMS_v1> for &'a KernelParams {
    unsafe fn from_cuda(p: &'a *const CUDA_KERNEL_NODE_PARAMS_v1) -> ShimResult<&'a KernelParams> {
        // SAFETY: as above.
        unsafe { p.cast::<KernelParams>().as_ref() }
            .ok_or_else(|| invalid("null kernel node parameters"))
    }
}

impl<'a> FromCuda<'a, *mut CUDA_KERNEL_NODE_PARAMS> for &'a mut KernelParams {
    unsafe fn from_cuda(p: &'a *mut CUDA_KERNEL_NODE_PARAMS) -> ShimResult<&'a mut KernelParams> {
        // SAFETY: as above, for writing.
        unsafe { p.cast::<KernelParams>().as_mut() }
            .ok_or_else(|| invalid("null kernel node parameters"))
    }
}

impl<'a> FromCuda<'a, *mut CUDA_KERNEL_NODE_PARAMS_v1> for &'a mut KernelParams {
    unsafe fn from_cuda(
        p: &'a *mut CUDA_KERNEL_NODE_PARAMS_v1,
    ) -> ShimResult<&'a mut KernelParams> {
        // SAFETY: as above, for writing.
        unsafe { p.cast::<KernelParams>().as_mut() }
            .ok_or_else(|| invalid("null kernel node parameters"))
    }
}

/// A kernel node's operation from its parameters, checked as a launch checks them.
///
/// # Safety
/// `p.params` or `p.extra` is valid as for `cuLaunchKernel`.
pub unsafe fn kernel_op(p: &KernelParams) -> ShimResult<Op> {
    let func = registry().function(p.func)?;
    let g = Geometry {
        grid: p.grid,
        block: p.block,
        shared: p.shared,
    };
    params::check_geometry(func, &g)?;
    // SAFETY: forwarded contract.
    let params = unsafe { params::pack(func, p.params, p.extra) }?;
    Ok(Op::Kernel {
        func: p.func,
        grid: g.grid,
        block: g.block,
        shared: g.shared,
        params,
    })
}

/// # Safety
/// As for [`dependencies`] and [`kernel_op`].
pub unsafe fn add_kernel(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    p: &KernelParams,
) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    let (deps, op) = unsafe { (dependencies(deps, n)?, kernel_op(p)?) };
    *out = add_node(graph, op, deps)?;
    Ok(())
}

/// The kernel node's parameters; `kernelParams` points at copies kept with the node until its
/// parameters change or the graph goes.
pub fn kernel_get_params(node: u64, out: &mut KernelParams) -> ShimResult<()> {
    with_node(node, |_, n| {
        let Op::Kernel {
            func,
            grid,
            block,
            shared,
            params,
        } = &n.op
        else {
            return Err(invalid(format!("node {node:#x} is not a kernel node")));
        };
        let f = registry().function(*func)?;
        n.param_copies = f
            .desc()
            .params
            .iter()
            .map(|p| params[p.offset as usize..(p.offset + p.size) as usize].to_vec())
            .collect();
        n.param_ptrs = n
            .param_copies
            .iter_mut()
            .map(|c| c.as_mut_ptr() as usize)
            .collect();
        *out = KernelParams {
            func: *func,
            grid: *grid,
            block: *block,
            shared: *shared,
            params: n.param_ptrs.as_mut_ptr().cast(),
            extra: std::ptr::null_mut(),
        };
        Ok(())
    })?
}

/// # Safety
/// As for [`kernel_op`].
pub unsafe fn kernel_set_params(node: u64, p: &KernelParams) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    let op = unsafe { kernel_op(p) }?;
    with_node(node, |_, n| match n.op {
        Op::Kernel { .. } => {
            n.op = op;
            Ok(())
        }
        _ => Err(invalid(format!("node {node:#x} is not a kernel node"))),
    })?
}

/// `CUDA_MEMSET_NODE_PARAMS` as cuda.h lays it out.
#[repr(C)]
pub struct MemsetParams {
    dst: u64,
    pitch: usize,
    value: c_uint,
    elem: c_uint,
    width: usize,
    height: usize,
}
const _: () = assert!(std::mem::size_of::<MemsetParams>() == 40);

impl<'a> FromCuda<'a, *const CUDA_MEMSET_NODE_PARAMS> for &'a MemsetParams {
    unsafe fn from_cuda(p: &'a *const CUDA_MEMSET_NODE_PARAMS) -> ShimResult<&'a MemsetParams> {
        // SAFETY: MemsetParams mirrors cuda.h's layout; a valid input.
        unsafe { p.cast::<MemsetParams>().as_ref() }
            .ok_or_else(|| invalid("null memset node parameters"))
    }
}

/// Checks that `[p, p + n)` lies inside one device allocation.
fn check_device(p: u64, n: u64) -> ShimResult<()> {
    super::module::in_memory(|m| m.alloc_range(p, n).map(|_| ()))
}

/// # Safety
/// As for [`dependencies`].
pub unsafe fn add_memset(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    p: &MemsetParams,
    _ctx: u64,
) -> ShimResult<()> {
    let elem = match p.elem {
        1 | 2 | 4 => p.elem as u8,
        e => {
            return Err(invalid(format!(
                "memset element size {e} must be 1, 2 or 4"
            )))
        }
    };
    if p.width == 0 || p.height == 0 {
        return Err(invalid("memset node of no elements"));
    }
    let row = (p.width as u64)
        .checked_mul(elem.into())
        .ok_or_else(|| invalid("memset width overflows"))?;
    if p.height > 1 && (p.pitch as u64) < row {
        return Err(invalid("memset pitch smaller than the row"));
    }
    if !p.dst.is_multiple_of(elem.into()) {
        return Err(invalid(format!(
            "{:#x} is not aligned to {elem} bytes",
            p.dst
        )));
    }
    let span = (p.height as u64 - 1)
        .checked_mul(p.pitch as u64)
        .and_then(|v| v.checked_add(row))
        .ok_or_else(|| invalid("memset extent overflows"))?;
    check_device(p.dst, span)?;
    let op = Op::Memset {
        dst: p.dst,
        pitch: if p.height > 1 { p.pitch as u64 } else { row },
        value: p.value,
        elem,
        width: p.width as u64,
        height: p.height as u64,
    };
    // SAFETY: a dependency array of `n` handles, as cuGraphAddMemsetNode documents.
    *out = add_node(graph, op, unsafe { dependencies(deps, n) }?)?;
    Ok(())
}

/// `CUDA_MEMCPY3D` as cuda.h lays it out.
#[repr(C)]
pub struct Memcpy3D {
    src_x: usize,
    src_y: usize,
    src_z: usize,
    src_lod: usize,
    src_type: c_uint,
    src_host: *const c_void,
    src_device: u64,
    _src_array: *mut c_void,
    _reserved0: *mut c_void,
    src_pitch: usize,
    src_height: usize,
    dst_x: usize,
    dst_y: usize,
    dst_z: usize,
    dst_lod: usize,
    dst_type: c_uint,
    dst_host: *mut c_void,
    dst_device: u64,
    _dst_array: *mut c_void,
    _reserved1: *mut c_void,
    dst_pitch: usize,
    dst_height: usize,
    width: usize,
    height: usize,
    depth: usize,
}
const _: () = assert!(std::mem::size_of::<Memcpy3D>() == 200);

impl<'a> FromCuda<'a, *const CUDA_MEMCPY3D> for &'a Memcpy3D {
    unsafe fn from_cuda(p: &'a *const CUDA_MEMCPY3D) -> ShimResult<&'a Memcpy3D> {
        // SAFETY: Memcpy3D mirrors cuda.h's layout; a valid input.
        unsafe { p.cast::<Memcpy3D>().as_ref() }.ok_or_else(|| invalid("null CUDA_MEMCPY3D"))
    }
}

/// Whether an address lies in this client's device windows (unified addressing).
fn is_device(p: u64) -> bool {
    client::existing().is_some_and(|c| c.windows.iter().any(|w| p >= w.base && p - w.base < w.size))
}

/// One side of a copy: (device?, address of its first byte, pitch).
#[allow(clippy::too_many_arguments)]
fn side(
    kind: c_uint,
    host: u64,
    device: u64,
    (x, y, z): (usize, usize, usize),
    pitch: usize,
    height: usize,
    width: usize,
) -> ShimResult<(bool, u64, u64)> {
    let pitch = if pitch == 0 { width } else { pitch };
    let off = z
        .checked_mul(height)
        .and_then(|r| r.checked_add(y))
        .and_then(|r| r.checked_mul(pitch))
        .and_then(|o| o.checked_add(x))
        .ok_or_else(|| invalid("copy offset overflows"))? as u64;
    let dev = match kind {
        1 => false,
        2 => true,
        4 => is_device(device),
        3 => {
            return Err(ShimError::new(
                CuStatus::NOT_SUPPORTED,
                "CUDA arrays are not supported",
            ))
        }
        other => return Err(invalid(format!("memory type {other}"))),
    };
    let base = if dev || kind == 4 { device } else { host };
    Ok((dev, base.wrapping_add(off), pitch as u64))
}

/// The copy operation `CUDA_MEMCPY3D` describes: 1D, 2D, or 3D with slices of exactly
/// `Height` rows on both sides (so every row is one pitch after the last).
pub fn copy_op(c: &Memcpy3D) -> ShimResult<Op> {
    if c.width == 0 || c.height == 0 || c.depth == 0 {
        return Err(invalid("copy of no bytes"));
    }
    if c.src_lod != 0 || c.dst_lod != 0 {
        return Err(invalid("mipmap levels are for arrays"));
    }
    if c.depth > 1 && (c.src_height != c.height || c.dst_height != c.height) {
        return Err(ShimError::new(
            CuStatus::NOT_SUPPORTED,
            "3D copies whose slices are taller than the copy",
        ));
    }
    let (src_dev, src, src_pitch) = side(
        c.src_type,
        c.src_host as u64,
        c.src_device,
        (c.src_x, c.src_y, c.src_z),
        c.src_pitch,
        c.src_height,
        c.width,
    )?;
    let (dst_dev, dst, dst_pitch) = side(
        c.dst_type,
        c.dst_host as u64,
        c.dst_device,
        (c.dst_x, c.dst_y, c.dst_z),
        c.dst_pitch,
        c.dst_height,
        c.width,
    )?;
    let (width, rows) = (c.width as u64, (c.height * c.depth) as u64);
    if rows > 1 && (src_pitch < width || dst_pitch < width) {
        return Err(invalid("copy pitch smaller than its width"));
    }
    let span = |pitch: u64| (rows - 1) * pitch + width;
    let dir = match (src_dev, dst_dev) {
        (false, true) => Dir::HtoD,
        (true, false) => Dir::DtoH,
        (true, true) => Dir::DtoD,
        (false, false) => return Err(invalid("a graph copy node must touch device memory")),
    };
    if src_dev {
        check_device(src, span(src_pitch))?;
    }
    if dst_dev {
        check_device(dst, span(dst_pitch))?;
    }
    Ok(Op::Copy {
        dir,
        dst,
        src,
        width,
        rows,
        dst_pitch,
        src_pitch,
    })
}

/// # Safety
/// As for [`dependencies`]; host memory the copy names is valid whenever the graph runs.
pub unsafe fn add_memcpy(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    c: &Memcpy3D,
    _ctx: u64,
) -> ShimResult<()> {
    let op = copy_op(c)?;
    // SAFETY: forwarded contract.
    *out = add_node(graph, op, unsafe { dependencies(deps, n) }?)?;
    Ok(())
}

/// # Safety
/// `from` and `to` have `n` node handles each.
pub unsafe fn add_dependencies(
    graph: u64,
    from: *const *mut c_void,
    to: *const *mut c_void,
    n: usize,
) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    let (from, to) = unsafe { (dependencies(from, n)?, dependencies(to, n)?) };
    let mut t = graphs();
    let g = t.graphs.get_mut(&graph).ok_or_else(|| no_graph(graph))?;
    for (&a, &b) in from.iter().zip(to) {
        if !g.nodes.contains_key(&a) || !g.nodes.contains_key(&b) {
            return Err(invalid(format!(
                "edge {a:#x} -> {b:#x} names a node outside graph {graph:#x}"
            )));
        }
        if a == b || g.nodes[&b].deps.contains(&a) {
            return Err(invalid(format!(
                "edge {a:#x} -> {b:#x} exists or is a loop"
            )));
        }
    }
    for (&a, &b) in from.iter().zip(to) {
        if let Some(n) = g.nodes.get_mut(&b) {
            n.deps.push(a);
        }
    }
    Ok(())
}

/// Writes `list` the driver's way: a NULL array asks for the count; otherwise up to `*count`
/// entries, NULL after the last, and the count actually written.
///
/// # Safety
/// `out` is NULL or has `*count` entries.
pub unsafe fn hand_out(list: &[u64], out: *mut *mut c_void, count: &mut usize) {
    if out.is_null() {
        *count = list.len();
        return;
    }
    for i in 0..*count {
        // SAFETY: `*count` entries by the caller's contract.
        unsafe {
            *out.add(i) = list
                .get(i)
                .map_or(std::ptr::null_mut(), |&h| h as *mut c_void)
        };
    }
    *count = (*count).min(list.len());
}

/// # Safety
/// As for [`hand_out`].
pub unsafe fn get_nodes(graph: u64, out: *mut *mut c_void, count: &mut usize) -> ShimResult<()> {
    let list: Vec<u64> = with_graph(graph, |g| g.nodes.keys().copied().collect())?;
    // SAFETY: forwarded contract.
    unsafe { hand_out(&list, out, count) };
    Ok(())
}

/// # Safety
/// As for [`hand_out`].
pub unsafe fn get_root_nodes(
    graph: u64,
    out: *mut *mut c_void,
    count: &mut usize,
) -> ShimResult<()> {
    let list: Vec<u64> = with_graph(graph, |g| {
        g.nodes
            .iter()
            .filter(|(_, n)| n.deps.is_empty())
            .map(|(&h, _)| h)
            .collect()
    })?;
    // SAFETY: forwarded contract.
    unsafe { hand_out(&list, out, count) };
    Ok(())
}

/// # Safety
/// As for [`hand_out`].
pub unsafe fn node_get_dependencies(
    node: u64,
    out: *mut *mut c_void,
    count: &mut usize,
) -> ShimResult<()> {
    let list = with_node(node, |_, n| n.deps.clone())?;
    // SAFETY: forwarded contract.
    unsafe { hand_out(&list, out, count) };
    Ok(())
}

/// # Safety
/// `from` and `to` are NULL together, or have `*count` entries each.
pub unsafe fn get_edges(
    graph: u64,
    from: *mut *mut c_void,
    to: *mut *mut c_void,
    count: &mut usize,
) -> ShimResult<()> {
    if from.is_null() != to.is_null() {
        return Err(invalid("edge arrays must both be given or both be NULL"));
    }
    let edges: Vec<(u64, u64)> = with_graph(graph, |g| {
        g.nodes
            .iter()
            .flat_map(|(&h, n)| n.deps.iter().map(move |&d| (d, h)))
            .collect()
    })?;
    let (a, b): (Vec<u64>, Vec<u64>) = edges.into_iter().unzip();
    let mut n = *count;
    // SAFETY: forwarded contract.
    unsafe {
        hand_out(&a, from, &mut n);
        hand_out(&b, to, count);
    }
    Ok(())
}

pub fn node_get_type(node: u64, out: &mut c_uint) -> ShimResult<()> {
    *out = with_node(node, |_, n| n.op.node_type())?;
    Ok(())
}

/// `cuGraphDestroyNode`: the node and every edge to or from it.
pub fn destroy_node(node: u64) -> ShimResult<()> {
    let mut dropped = Vec::new();
    {
        let mut t = graphs();
        let g = t.owner.remove(&node).ok_or_else(|| no_node(node))?;
        let op = t.graphs.get_mut(&g).and_then(|g| {
            let n = g.nodes.remove(&node);
            for n in g.nodes.values_mut() {
                n.deps.retain(|&d| d != node);
            }
            n
        });
        if let Some(n) = op {
            drop_op(&mut t, n.op, &mut dropped);
        }
    }
    dropped.iter().for_each(unhold);
    Ok(())
}

/// `cuGraphClone`: the same nodes and edges under new handles.
pub fn clone(out: &mut u64, graph: u64) -> ShimResult<()> {
    *out = clone_in(&mut graphs(), graph, 0)?;
    Ok(())
}

/// Child graphs nested deeper than this are refused (and cycles of them cannot form).
pub const MAX_DEPTH: u32 = 64;

/// A copy of graph `graph` (child graphs copied too) in `t`; its handle.
fn clone_in(t: &mut Graphs, graph: u64, depth: u32) -> ShimResult<u64> {
    if depth > MAX_DEPTH {
        return Err(invalid("child graphs nested too deep"));
    }
    let g = t.graphs.get(&graph).ok_or_else(|| no_graph(graph))?.clone();
    let renamed: HashMap<u64, u64> = g.nodes.keys().map(|&h| (h, registry::mint())).collect();
    let mut copy = Graph::default();
    for (h, n) in &g.nodes {
        let deps = n.deps.iter().map(|d| renamed[d]).collect();
        let op = match n.op {
            Op::Child { graph } => Op::Child {
                graph: clone_in(t, graph, depth + 1)?,
            },
            ref op => op.clone(),
        };
        hold(&op);
        copy.nodes.insert(renamed[h], Node::new(op, deps));
    }
    let h = registry::mint();
    for &n in copy.nodes.keys() {
        t.owner.insert(n, h);
    }
    t.graphs.insert(h, copy);
    Ok(h)
}

/// Adds a child graph node holding a copy of `child` (cloned under the lock, so the graph
/// cannot change meanwhile).
pub fn add_child(graph: u64, child: u64, deps: &[u64]) -> ShimResult<u64> {
    let copy = {
        let mut t = graphs();
        let c = t.graphs.get(&child).ok_or_else(|| no_graph(child))?;
        if c.nodes
            .values()
            .any(|n| matches!(n.op, Op::MemAlloc { .. } | Op::MemFree { .. }))
        {
            return Err(invalid(
                "a child graph may not contain memory allocation or free nodes",
            ));
        }
        if !t.graphs.contains_key(&graph) {
            return Err(no_graph(graph));
        }
        clone_in(&mut t, child, 1)?
    };
    add_node(graph, Op::Child { graph: copy }, deps).inspect_err(|_| {
        let _ = remove_graph(copy);
    })
}

/// `cuGraphDebugDotPrint`: the graph in Graphviz's language.
pub fn debug_dot_print(graph: u64, path: &str, _flags: c_uint) -> ShimResult<()> {
    let text = with_graph(graph, |g| {
        let mut s = format!("digraph graph_{graph:x} {{\n");
        for (h, n) in &g.nodes {
            let label = match &n.op {
                Op::Kernel {
                    func, grid, block, ..
                } => {
                    let name = registry()
                        .function(*func)
                        .map(|f| f.desc().name.clone())
                        .unwrap_or_default();
                    format!("kernel {name} {grid:?} x {block:?}")
                }
                Op::Memset {
                    dst, width, elem, ..
                } => format!("memset {dst:#x} {width} x {elem} B"),
                Op::Copy {
                    dir, width, rows, ..
                } => format!("memcpy {dir:?} {width} B x {rows}"),
                Op::Empty => "empty".into(),
                Op::Host { .. } => "host function".into(),
                Op::EventRecord { event } => format!("event record {event:#x}"),
                Op::EventWait { event } => format!("event wait {event:#x}"),
                Op::Child { graph } => format!("child graph {graph:#x}"),
                Op::MemAlloc { ptr, size, .. } => format!("mem alloc {ptr:#x} {size} B"),
                Op::MemFree { ptr } => format!("mem free {ptr:#x}"),
            };
            s += &format!("  n{h:x} [label=\"{label}\"];\n");
            for d in &n.deps {
                s += &format!("  n{d:x} -> n{h:x};\n");
            }
        }
        s + "}\n"
    })?;
    std::fs::write(path, text).map_err(|e| {
        ShimError::new(
            CuStatus(304), // CUDA_ERROR_OPERATING_SYSTEM
            format!("cannot write {path}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topological_order_follows_dependencies_and_finds_cycles() {
        let g = new_graph();
        let a = add_node(g, Op::Empty, &[]).unwrap();
        let b = add_node(g, Op::Empty, &[]).unwrap();
        let c = add_node(g, Op::Empty, &[a, b]).unwrap();
        let d = add_node(g, Op::Empty, &[c]).unwrap();
        assert!(add_node(g, Op::Empty, &[a, a]).is_err());
        assert!(add_node(g, Op::Empty, &[0x1234]).is_err());
        let order = with_graph(g, |g| g.topological()).unwrap().unwrap();
        let pos = |h| order.iter().position(|&x| x == h).unwrap();
        assert!(pos(a) < pos(c) && pos(b) < pos(c) && pos(c) < pos(d));
        assert!(with_graph(g, |g| g.ancestors(&[c])).unwrap().contains(&a));
        // d -> a closes a cycle: no order exists.
        // SAFETY: arrays of one handle each.
        unsafe {
            add_dependencies(
                g,
                [d as *mut c_void].as_ptr(),
                [a as *mut c_void].as_ptr(),
                1,
            )
            .unwrap();
        }
        assert!(with_graph(g, |g| g.topological()).unwrap().is_none());
        let mut copy = 0;
        clone(&mut copy, g).unwrap();
        assert_eq!(with_graph(copy, |g| g.nodes.len()).unwrap(), 4);
        destroy_node(a).unwrap();
        assert!(with_graph(g, |g| g.topological()).unwrap().is_some());
        remove_graph(g).unwrap();
        assert!(remove_graph(g).is_err());
        assert!(with_node(b, |_, _| ()).is_err());
    }

    #[test]
    fn child_graphs_are_copied_owned_and_removed_with_their_node() {
        let inner_of = |node: u64| {
            with_node(node, |_, n| match n.op {
                Op::Child { graph } => graph,
                _ => 0,
            })
            .unwrap()
        };
        let child = new_graph();
        add_node(child, Op::Empty, &[]).unwrap();
        let parent = new_graph();
        let c = add_child(parent, child, &[]).unwrap();
        let inner = inner_of(c);
        assert!(inner != 0 && inner != child);
        let mut t = 0;
        node_get_type(c, &mut t).unwrap();
        assert_eq!(t, TYPE_GRAPH);
        // The node holds a copy: later changes to the child graph do not reach it.
        add_node(child, Op::Empty, &[]).unwrap();
        assert_eq!(with_graph(inner, |g| g.nodes.len()).unwrap(), 1);
        // A clone of the parent copies the child graph too.
        let mut copy = 0;
        clone(&mut copy, parent).unwrap();
        let copied = with_graph(copy, |g| g.nodes.keys().copied().collect::<Vec<_>>()).unwrap();
        let inner2 = inner_of(copied[0]);
        assert!(inner2 != 0 && inner2 != inner);
        destroy_node(c).unwrap();
        assert!(with_graph(inner, |_| ()).is_err());
        remove_graph(copy).unwrap();
        assert!(with_graph(inner2, |_| ()).is_err());
        // Memory nodes may not be in a child graph; a NULL graph is an invalid value.
        add_node(child, Op::MemFree { ptr: 0x1000 }, &[]).unwrap();
        assert!(add_child(parent, child, &[]).is_err());
        assert_eq!(
            add_node(0, Op::Empty, &[]).unwrap_err().status(),
            CuStatus::INVALID_VALUE
        );
        remove_graph(child).unwrap();
        remove_graph(parent).unwrap();
    }
}
