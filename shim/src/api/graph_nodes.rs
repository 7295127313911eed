//! The graph nodes beyond kernels, memsets and copies: host functions, event record and wait,
//! child graphs, and memory allocation and free (`api::graph` keeps them, `api::graph_exec`
//! runs them).
//!
//! A graph allocation is made when its node is created (its address is fixed then, as CUDA
//! fixes it) and kept while a graph or executable graph holds it: see [`Op::MemAlloc`].

use std::ffi::{c_int, c_uint, c_void};

use super::graph::{self, dependencies, Op};
use super::pool_props::PoolProps;
use crate::ffi::{invalid, FromCuda, ShimResult};
use crate::generated::{CUhostFn, CUDA_HOST_NODE_PARAMS, CUDA_MEM_ALLOC_NODE_PARAMS};
use crate::registry::{self, registry};

/// `CUDA_HOST_NODE_PARAMS` as cuda.h lays it out.
#[repr(C)]
pub struct HostParams {
    func: CUhostFn,
    data: *mut c_void,
}
const _: () = assert!(std::mem::size_of::<HostParams>() == 16);

impl<'a> FromCuda<'a, *const CUDA_HOST_NODE_PARAMS> for &'a HostParams {
    unsafe fn from_cuda(p: &'a *const CUDA_HOST_NODE_PARAMS) -> ShimResult<&'a HostParams> {
        // SAFETY: HostParams mirrors cuda.h's layout; a valid input.
        unsafe { p.cast::<HostParams>().as_ref() }
            .ok_or_else(|| invalid("null host node parameters"))
    }
}

impl<'a> FromCuda<'a, *mut CUDA_HOST_NODE_PARAMS> for &'a mut HostParams {
    unsafe fn from_cuda(p: &'a *mut CUDA_HOST_NODE_PARAMS) -> ShimResult<&'a mut HostParams> {
        // SAFETY: as above, for writing.
        unsafe { p.cast::<HostParams>().as_mut() }
            .ok_or_else(|| invalid("null host node parameters"))
    }
}

/// A host node's operation; a NULL function is refused.
pub fn host_op(p: &HostParams) -> ShimResult<Op> {
    let func = p.func.ok_or_else(|| invalid("null host function"))?;
    Ok(Op::Host {
        func,
        data: p.data as usize,
    })
}

/// # Safety
/// `deps` has `n` node handles (or is NULL with `n` 0).
pub unsafe fn add_host(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    p: &HostParams,
) -> ShimResult<()> {
    let op = host_op(p)?;
    // SAFETY: forwarded contract.
    *out = graph::add_node(graph, op, unsafe { dependencies(deps, n) }?)?;
    Ok(())
}

fn not_a(node: u64, what: &str) -> crate::ffi::ShimError {
    invalid(format!("node {node:#x} is not {what}"))
}

pub fn host_get_params(node: u64, out: &mut HostParams) -> ShimResult<()> {
    graph::with_node(node, |_, n| match n.op {
        Op::Host { func, data } => {
            *out = HostParams {
                func: Some(func),
                data: data as *mut c_void,
            };
            Ok(())
        }
        _ => Err(not_a(node, "a host node")),
    })?
}

pub fn host_set_params(node: u64, p: &HostParams) -> ShimResult<()> {
    let op = host_op(p)?;
    graph::with_node(node, |_, n| match n.op {
        Op::Host { .. } => {
            n.op = op;
            Ok(())
        }
        _ => Err(not_a(node, "a host node")),
    })?
}

/// # Safety
/// As for [`add_host`].
pub unsafe fn add_event_record(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    event: u64,
) -> ShimResult<()> {
    registry().event_ctx(event)?;
    // SAFETY: forwarded contract.
    *out = graph::add_node(graph, Op::EventRecord { event }, unsafe {
        dependencies(deps, n)
    }?)?;
    Ok(())
}

/// # Safety
/// As for [`add_host`].
pub unsafe fn add_event_wait(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    event: u64,
) -> ShimResult<()> {
    registry().event_ctx(event)?;
    // SAFETY: forwarded contract.
    *out = graph::add_node(graph, Op::EventWait { event }, unsafe {
        dependencies(deps, n)
    }?)?;
    Ok(())
}

pub fn event_record_get(node: u64, out: &mut u64) -> ShimResult<()> {
    *out = graph::with_node(node, |_, n| match n.op {
        Op::EventRecord { event } => Ok(event),
        _ => Err(not_a(node, "an event record node")),
    })??;
    Ok(())
}

pub fn event_wait_get(node: u64, out: &mut u64) -> ShimResult<()> {
    *out = graph::with_node(node, |_, n| match n.op {
        Op::EventWait { event } => Ok(event),
        _ => Err(not_a(node, "an event wait node")),
    })??;
    Ok(())
}

pub fn event_record_set(node: u64, event: u64) -> ShimResult<()> {
    registry().event_ctx(event)?;
    graph::with_node(node, |_, n| match n.op {
        Op::EventRecord { .. } => {
            n.op = Op::EventRecord { event };
            Ok(())
        }
        _ => Err(not_a(node, "an event record node")),
    })?
}

pub fn event_wait_set(node: u64, event: u64) -> ShimResult<()> {
    registry().event_ctx(event)?;
    graph::with_node(node, |_, n| match n.op {
        Op::EventWait { .. } => {
            n.op = Op::EventWait { event };
            Ok(())
        }
        _ => Err(not_a(node, "an event wait node")),
    })?
}

/// # Safety
/// As for [`add_host`].
pub unsafe fn add_child(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    child: u64,
) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    *out = graph::add_child(graph, child, unsafe { dependencies(deps, n) }?)?;
    Ok(())
}

/// The child graph the node owns (not a copy: changes to it reach the node).
pub fn child_get_graph(node: u64, out: &mut u64) -> ShimResult<()> {
    *out = graph::with_node(node, |_, n| match n.op {
        Op::Child { graph } => Ok(graph),
        _ => Err(not_a(node, "a child graph node")),
    })??;
    Ok(())
}

/// `CUDA_MEM_ALLOC_NODE_PARAMS` as cuda.h lays it out.
#[repr(C)]
pub struct MemAllocParams {
    props: PoolProps,
    access: *const c_void,
    access_count: usize,
    size: usize,
    dptr: u64,
}
const _: () = assert!(std::mem::size_of::<MemAllocParams>() == 120);

impl<'a> FromCuda<'a, *mut CUDA_MEM_ALLOC_NODE_PARAMS> for &'a mut MemAllocParams {
    unsafe fn from_cuda(
        p: &'a *mut CUDA_MEM_ALLOC_NODE_PARAMS,
    ) -> ShimResult<&'a mut MemAllocParams> {
        // SAFETY: MemAllocParams mirrors cuda.h's layout; a valid in-out struct.
        unsafe { p.cast::<MemAllocParams>().as_mut() }
            .ok_or_else(|| invalid("null memory allocation node parameters"))
    }
}

/// `CU_MEM_ALLOCATION_TYPE_PINNED`, `CU_MEM_LOCATION_TYPE_DEVICE`.
const PINNED: c_uint = 1;
const ON_DEVICE: c_uint = 1;

/// Device memory for a graph allocation of `size` bytes in context `ctx` (which must be on
/// `device`), made now: see [`Op::MemAlloc`].
pub fn alloc_op(ctx: u64, device: c_int, size: u64) -> ShimResult<Op> {
    if size == 0 {
        return Err(invalid("graph allocation of 0 bytes"));
    }
    let ctx_device = registry().with_context(ctx, |c| c.device)?;
    if ctx_device != device {
        return Err(invalid(format!(
            "graph allocation on device {device} from a context of device {ctx_device}"
        )));
    }
    let c = crate::client::client()?;
    let (ptr, base) = super::device_alloc::alloc_aligned(c, ctx, device, size, 0)?;
    super::managed::forget_stale(base, size);
    Ok(Op::MemAlloc { ptr, size, device })
}

/// # Safety
/// As for [`add_host`].
pub unsafe fn add_mem_alloc(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    p: &mut MemAllocParams,
) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    let deps = unsafe { dependencies(deps, n) }?;
    if p.props.alloc_type != PINNED || p.props.location_type != ON_DEVICE {
        return Err(invalid("a graph allocation must be pinned device memory"));
    }
    if p.access_count > 0 && p.access.is_null() {
        return Err(invalid("null access descriptors"));
    }
    super::device::device(p.props.location_id)?;
    graph::with_graph(graph, |_| ())?;
    let op = alloc_op(registry::current_ctx()?, p.props.location_id, p.size as u64)?;
    let Op::MemAlloc { ptr, .. } = op else {
        return Err(invalid("not an allocation"));
    };
    match graph::add_node(graph, op.clone(), deps) {
        Ok(h) => {
            p.dptr = ptr;
            *out = h;
            Ok(())
        }
        Err(e) => {
            // Nobody holds it: back it goes.
            graph::hold(&op);
            graph::unhold(&op);
            Err(e)
        }
    }
}

pub fn mem_alloc_get_params(node: u64, out: &mut MemAllocParams) -> ShimResult<()> {
    let (ptr, size, device) = graph::with_node(node, |_, n| match n.op {
        Op::MemAlloc { ptr, size, device } => Ok((ptr, size, device)),
        _ => Err(not_a(node, "a memory allocation node")),
    })??;
    out.props = PoolProps::device_pinned(device);
    out.access = std::ptr::null();
    out.access_count = 0;
    out.size = size as usize;
    out.dptr = ptr;
    Ok(())
}

/// # Safety
/// As for [`add_host`].
pub unsafe fn add_mem_free(
    out: &mut u64,
    graph: u64,
    deps: *const *mut c_void,
    n: usize,
    ptr: u64,
) -> ShimResult<()> {
    if !graph::is_graph_alloc(ptr) {
        return Err(invalid(format!(
            "{ptr:#x} is not the address of a graph allocation"
        )));
    }
    // SAFETY: forwarded contract.
    *out = graph::add_node(graph, Op::MemFree { ptr }, unsafe {
        dependencies(deps, n)
    }?)?;
    Ok(())
}

pub fn mem_free_get_params(node: u64, out: &mut u64) -> ShimResult<()> {
    *out = graph::with_node(node, |_, n| match n.op {
        Op::MemFree { ptr } => Ok(ptr),
        _ => Err(not_a(node, "a memory free node")),
    })??;
    Ok(())
}
