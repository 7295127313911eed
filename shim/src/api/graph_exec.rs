//! Executable graphs: instantiated from a graph, launched as one batch.
//!
//! Instantiation fixes the nodes in dependency order (a snapshot: later changes to the graph do
//! not reach it). A launch queues every node as the ordinary call it stands for, in that order,
//! on the launch stream: a graph of a hundred kernels is a hundred frames in one batch and no
//! round trip. A stream runs its work in order, so dependencies hold; independent branches are
//! serialised, which a GPU may also do.

use std::collections::HashMap;
use std::ffi::{c_char, c_ulonglong};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use super::capture;
use super::graph::{self, KernelParams, Op};
use crate::client;
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::registry::{self, registry};

/// An instantiated graph: node handles (of the graph it came from) and their operations, in an
/// order that respects every dependency.
struct Exec {
    order: Vec<(u64, Op)>,
    /// Where each child graph node's nodes lie in `order` (nested ones included).
    children: HashMap<u64, std::ops::Range<usize>>,
}

fn execs() -> MutexGuard<'static, HashMap<u64, Exec>> {
    static EXECS: LazyLock<Mutex<HashMap<u64, Exec>>> = LazyLock::new(Mutex::default);
    // Every update leaves the table consistent, so a panic elsewhere does not poison it.
    EXECS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn no_exec(h: u64) -> ShimError {
    crate::error::invalid_handle("executable graph", h)
}

/// Instantiates `graph`; a cycle is `CUDA_ERROR_INVALID_VALUE`, and a kernel whose module is
/// gone `CUDA_ERROR_INVALID_HANDLE`.
fn instantiate(graph: u64) -> ShimResult<u64> {
    let mut order = Vec::new();
    let mut children = HashMap::new();
    flatten(graph, 0, &mut order, &mut children)?;
    // The executable graph holds its allocations too: they outlive the graph if it goes first.
    order.iter().for_each(|(_, op)| graph::hold(op));
    let h = registry::mint();
    execs().insert(h, Exec { order, children });
    Ok(h)
}

/// Appends the nodes of `graph` to `out` in dependency order, each child graph node replaced
/// by its graph's nodes in theirs (between the node's dependencies and its dependents), and
/// notes in `children` where each child graph node's nodes went.
fn flatten(
    graph: u64,
    depth: u32,
    out: &mut Vec<(u64, Op)>,
    children: &mut HashMap<u64, std::ops::Range<usize>>,
) -> ShimResult<()> {
    if depth > graph::MAX_DEPTH {
        return Err(invalid("child graphs nested too deep"));
    }
    let order = graph::with_graph(graph, |g| {
        let order = g
            .topological()
            .ok_or_else(|| invalid(format!("graph {graph:#x} has a cycle")))?;
        Ok::<_, ShimError>(
            order
                .into_iter()
                .map(|h| (h, g.nodes[&h].op.clone()))
                .collect::<Vec<_>>(),
        )
    })??;
    for (h, op) in order {
        match op {
            Op::Child { graph } => {
                let start = out.len();
                flatten(graph, depth + 1, out, children)?;
                children.insert(h, start..out.len());
            }
            Op::Kernel { func, .. } => {
                registry().function(func)?;
                out.push((h, op));
            }
            op => out.push((h, op)),
        }
    }
    Ok(())
}

/// `CUDA_GRAPH_INSTANTIATE_FLAG_*` the shim accepts: auto-free on launch, upload, device launch
/// and priority mean nothing for graphs without allocation nodes run from the host.
const KNOWN_FLAGS: u64 = 1 | 2 | 4 | 8;

pub fn instantiate_with_flags(out: &mut u64, graph: u64, flags: c_ulonglong) -> ShimResult<()> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(invalid(format!("graph instantiation flags {flags:#x}")));
    }
    *out = instantiate(graph)?;
    Ok(())
}

/// `cuGraphInstantiate(_v2)`: the error node and log are optional.
///
/// # Safety
/// `log` is NULL or has `log_size` bytes.
pub unsafe fn instantiate_with_log(
    out: &mut u64,
    graph: u64,
    err_node: Option<&mut u64>,
    log: *mut c_char,
    log_size: usize,
) -> ShimResult<()> {
    if let Some(e) = err_node {
        *e = 0;
    }
    let r = instantiate(graph);
    if !log.is_null() && log_size > 0 {
        let text = match &r {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        let n = text.len().min(log_size - 1);
        // SAFETY: `log` has `log_size` bytes; n + 1 of them are written.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), log.cast::<u8>(), n);
            *log.add(n) = 0;
        }
    }
    *out = r?;
    Ok(())
}

/// `CUDA_GRAPH_INSTANTIATE_PARAMS` as cuda.h lays it out.
#[repr(C)]
pub struct InstantiateParams {
    flags: u64,
    upload_stream: u64,
    err_node: u64,
    result: u32,
}
const _: () = assert!(std::mem::size_of::<InstantiateParams>() == 32);

/// `cuGraphInstantiateWithParams`: the result code says why instantiation failed.
///
/// # Safety
/// `p` is NULL or a valid `CUDA_GRAPH_INSTANTIATE_PARAMS`.
pub unsafe fn instantiate_with_params(
    out: &mut u64,
    graph: u64,
    p: *mut crate::generated::CUDA_GRAPH_INSTANTIATE_PARAMS,
) -> ShimResult<()> {
    // SAFETY: the caller's contract; the layout is InstantiateParams's.
    let p = unsafe { p.cast::<InstantiateParams>().as_mut() }
        .ok_or_else(|| invalid("null instantiation parameters"))?;
    p.err_node = 0;
    let r = instantiate_with_flags(out, graph, p.flags);
    // CUDA_GRAPH_INSTANTIATE_SUCCESS, or CUDA_GRAPH_INSTANTIATE_ERROR.
    p.result = u32::from(r.is_err());
    r?;
    if p.flags & 2 != 0 {
        upload(*out, p.upload_stream)?;
    }
    Ok(())
}

pub fn destroy(exec: u64) -> ShimResult<()> {
    let e = execs().remove(&exec).ok_or_else(|| no_exec(exec))?;
    e.order.iter().for_each(|(_, op)| graph::unhold(op));
    Ok(())
}

/// `cuGraphUpload`: nothing is resident to upload; the handles are checked.
pub fn upload(exec: u64, stream: u64) -> ShimResult<()> {
    registry().stream(stream)?;
    execs().get(&exec).map(|_| ()).ok_or_else(|| no_exec(exec))
}

/// `cuGraphLaunch`: every node, in order, queued on `stream`; on a capturing stream the nodes
/// join the capture instead.
pub fn launch(exec: u64, stream: u64) -> ShimResult<()> {
    let (ctx, stream) = registry().stream(stream)?;
    let ops: Vec<Op> = execs()
        .get(&exec)
        .map(|e| e.order.iter().map(|(_, op)| op.clone()).collect())
        .ok_or_else(|| no_exec(exec))?;
    if let Some(cap) = capture::of(stream)? {
        return ops.into_iter().try_for_each(|op| cap.add(op));
    }
    let c = client::client()?;
    // Kernels may read managed memory: the host's writes go first.
    super::managed::before_device_work()?;
    for op in &ops {
        // SAFETY: host memory named by copy nodes is valid while the graph runs, as CUDA
        // requires of the application.
        unsafe { op.post(c, ctx, stream) }?;
    }
    Ok(())
}

/// `cuGraphExecKernelNodeSetParams`: new parameters for one kernel node of an executable
/// graph; the graph it came from is unchanged.
///
/// # Safety
/// As for [`graph::kernel_op`].
pub unsafe fn kernel_node_set_params(exec: u64, node: u64, p: &KernelParams) -> ShimResult<()> {
    // SAFETY: forwarded contract.
    let op = unsafe { graph::kernel_op(p) }?;
    let Op::Kernel { func: new_func, .. } = op else {
        return Err(invalid("not a kernel"));
    };
    let mut t = execs();
    let slot = slot(&mut t, exec, node)?;
    match slot.1 {
        Op::Kernel { func, .. } => {
            // The owning context of the function cannot change.
            let (old, new) = (registry().function(func)?, registry().function(new_func)?);
            if old.ctx != new.ctx {
                return Err(invalid("a kernel node cannot move to another context"));
            }
            slot.1 = op;
            Ok(())
        }
        _ => Err(invalid(format!("node {node:#x} is not a kernel node"))),
    }
}

/// Node `node` of executable graph `exec` and its operation.
fn slot(t: &mut HashMap<u64, Exec>, exec: u64, node: u64) -> ShimResult<&mut (u64, Op)> {
    t.get_mut(&exec)
        .ok_or_else(|| no_exec(exec))?
        .order
        .iter_mut()
        .find(|(h, _)| *h == node)
        .ok_or_else(|| invalid(format!("node {node:#x} is not in graph exec {exec:#x}")))
}

/// Replaces the operation of node `node` in executable graph `exec` with `op`, if the node is
/// of the same kind (`what` names it for the error).
fn set_op(exec: u64, node: u64, op: Op, what: &str) -> ShimResult<()> {
    let mut t = execs();
    let slot = slot(&mut t, exec, node)?;
    if std::mem::discriminant(&slot.1) != std::mem::discriminant(&op) {
        return Err(invalid(format!("node {node:#x} is not {what}")));
    }
    slot.1 = op;
    Ok(())
}

/// `cuGraphExecChildGraphNodeSetParams`: the nodes of child graph node `node` take the
/// parameters of `child`'s, which must have the same topology and node insertion order (so
/// the same dependency order), node for node of the same kind, as CUDA requires; kernels stay
/// in their context, and memory nodes cannot change.
pub fn child_node_set_params(exec: u64, node: u64, child: u64) -> ShimResult<()> {
    let mut new = Vec::new();
    flatten(child, 1, &mut new, &mut HashMap::new())?;
    let mut t = execs();
    let e = t.get_mut(&exec).ok_or_else(|| no_exec(exec))?;
    let range = e.children.get(&node).cloned().ok_or_else(|| {
        invalid(format!(
            "node {node:#x} is not a child graph node of graph exec {exec:#x}"
        ))
    })?;
    let old = &e.order[range.clone()];
    if old.len() != new.len() {
        return Err(invalid(format!(
            "child graph {child:#x} has {} nodes where the instantiated one has {}",
            new.len(),
            old.len()
        )));
    }
    for ((_, was), (_, now)) in old.iter().zip(&new) {
        if std::mem::discriminant(was) != std::mem::discriminant(now) {
            return Err(invalid(format!(
                "child graph {child:#x} differs in topology or node kinds from the instantiated one"
            )));
        }
        match (was, now) {
            (Op::MemAlloc { .. } | Op::MemFree { .. }, _) => {
                return Err(invalid(
                    "memory nodes of an executable graph cannot be updated",
                ))
            }
            (Op::Kernel { func: a, .. }, Op::Kernel { func: b, .. })
                if registry().function(*a)?.ctx != registry().function(*b)?.ctx =>
            {
                return Err(invalid("a kernel node cannot move to another context"))
            }
            _ => {}
        }
    }
    for (slot, (_, op)) in e.order[range].iter_mut().zip(new) {
        slot.1 = op;
    }
    Ok(())
}

/// `cuGraphExecHostNodeSetParams`.
pub fn host_node_set_params(
    exec: u64,
    node: u64,
    p: &super::graph_nodes::HostParams,
) -> ShimResult<()> {
    let op = super::graph_nodes::host_op(p)?;
    set_op(exec, node, op, "a host node")
}

/// `cuGraphExecEventRecordNodeSetEvent`.
pub fn event_record_node_set_event(exec: u64, node: u64, event: u64) -> ShimResult<()> {
    registry().event_ctx(event)?;
    set_op(
        exec,
        node,
        Op::EventRecord { event },
        "an event record node",
    )
}

/// `cuGraphExecEventWaitNodeSetEvent`.
pub fn event_wait_node_set_event(exec: u64, node: u64, event: u64) -> ShimResult<()> {
    registry().event_ctx(event)?;
    set_op(exec, node, Op::EventWait { event }, "an event wait node")
}
