//! Stream capture: work queued on a capturing stream becomes nodes of a graph instead of calls.
//!
//! `cuStreamBeginCapture` starts a capture on a created stream; while it lasts, launches,
//! memsets and copies on that stream are recorded by the shim (`api::graph`) and nothing is
//! sent. Each recorded node depends on the stream's previous one. An event recorded in a
//! capturing stream carries the capture's position, and another stream that waits for it joins
//! the capture from there (fork); the origin stream waiting for an event of a joined stream
//! takes that branch back (join). `cuStreamEndCapture` on the origin stream hands out the graph.
//!
//! What the documentation forbids during capture fails with
//! `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED` and invalidates the capture, whose end then answers
//! `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`: synchronising or querying a capturing stream, and
//! "potentially unsafe" calls (context synchronisation, synchronous copies) from a thread that
//! the capture modes prohibit (`cuThreadExchangeStreamCaptureMode`).
//!
//! The hot path pays one atomic load while nothing is capturing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use remora_protocol::CuStatus;

use super::graph;
pub use super::graph::Op;
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::registry::registry;

const UNSUPPORTED: CuStatus = CuStatus::STREAM_CAPTURE_UNSUPPORTED;
const INVALIDATED: CuStatus = CuStatus(901);
const MERGE: CuStatus = CuStatus(902);
const UNMATCHED: CuStatus = CuStatus(903);
const UNJOINED: CuStatus = CuStatus(904);
const WRONG_THREAD: CuStatus = CuStatus(908);

/// `CUstreamCaptureMode`.
const MODE_GLOBAL: c_uint = 0;
const MODE_THREAD_LOCAL: c_uint = 1;
const MODE_RELAXED: c_uint = 2;

/// `CUstreamCaptureStatus`.
const STATUS_NONE: c_uint = 0;
const STATUS_ACTIVE: c_uint = 1;
const STATUS_INVALIDATED: c_uint = 2;

/// Streams taking part in a capture now: while 0, nothing is looked up.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One capture sequence.
struct Capture {
    graph: u64,
    mode: c_uint,
    thread: ThreadId,
    origin: u64,
    invalid: bool,
}

/// A stream taking part in a capture: which one, and the nodes its next work depends on.
struct Member {
    capture: u64,
    deps: Vec<u64>,
}

#[derive(Default)]
struct Table {
    captures: HashMap<u64, Capture>,
    streams: HashMap<u64, Member>,
    /// Events recorded in a capturing stream: the capture and its position then.
    events: HashMap<u64, (u64, Vec<u64>)>,
}

fn table() -> MutexGuard<'static, Table> {
    static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);
    // Every update leaves the table consistent, so a panic elsewhere does not poison it.
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(status: CuStatus, message: impl Into<String>) -> ShimError {
    ShimError::new(status, message)
}

thread_local! {
    /// The calling thread's capture interaction mode.
    static THREAD_MODE: Cell<c_uint> = const { Cell::new(MODE_GLOBAL) };
    /// What `cuStreamGetCaptureInfo` last handed this thread: the dependency array and zeroed
    /// edge data, valid until the thread's next such call, as the documentation allows.
    static HANDED_OUT: RefCell<(Vec<u64>, Vec<u64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A stream that is capturing; work for it is added with [`Capturing::add`].
pub struct Capturing {
    stream: u64,
}

impl Capturing {
    /// Records `op` as the stream's next node.
    pub fn add(&self, op: Op) -> ShimResult<()> {
        let mut t = table();
        let t = &mut *t;
        let m = t
            .streams
            .get_mut(&self.stream)
            .ok_or_else(|| error(INVALIDATED, "the capture ended meanwhile"))?;
        let c = &t.captures[&m.capture];
        if c.invalid {
            return Err(error(INVALIDATED, "the stream's capture was invalidated"));
        }
        let node = graph::add_node(c.graph, op, &m.deps)?;
        m.deps = vec![node];
        Ok(())
    }
}

/// Whether work for server stream `stream` (0: a default stream, never captured) is to be
/// captured; an invalidated capture refuses it.
pub fn of(stream: u64) -> ShimResult<Option<Capturing>> {
    if ACTIVE.load(Ordering::Acquire) == 0 || stream == 0 {
        return Ok(None);
    }
    let t = table();
    match t.streams.get(&stream) {
        None => Ok(None),
        Some(m) if t.captures[&m.capture].invalid => {
            Err(error(INVALIDATED, "the stream's capture was invalidated"))
        }
        Some(_) => Ok(Some(Capturing { stream })),
    }
}

/// A created stream's handle, refusing the default streams, which cannot be captured.
fn capturable(stream: u64) -> ShimResult<u64> {
    let (_, s) = registry().stream(stream)?;
    if s == 0 {
        return Err(error(UNSUPPORTED, "the default stream cannot be captured"));
    }
    Ok(s)
}

pub fn begin(stream: u64, mode: c_uint) -> ShimResult<()> {
    if mode > MODE_RELAXED {
        return Err(invalid(format!("stream capture mode {mode}")));
    }
    let s = capturable(stream)?;
    let mut t = table();
    if t.streams.contains_key(&s) {
        return Err(error(
            CuStatus::ILLEGAL_STATE,
            "the stream is already capturing",
        ));
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    t.captures.insert(
        id,
        Capture {
            graph: graph::new_graph(),
            mode,
            thread: std::thread::current().id(),
            origin: s,
            invalid: false,
        },
    );
    t.streams.insert(
        s,
        Member {
            capture: id,
            deps: Vec::new(),
        },
    );
    ACTIVE.fetch_add(1, Ordering::Release);
    Ok(())
}

/// Ends capture `id`: its streams stop capturing and its events forget it. Returns it.
fn finish(t: &mut Table, id: u64) -> Option<(Capture, Vec<Member>)> {
    let c = t.captures.remove(&id)?;
    let streams: Vec<u64> = t
        .streams
        .iter()
        .filter(|(_, m)| m.capture == id)
        .map(|(&s, _)| s)
        .collect();
    let members = streams
        .iter()
        .filter_map(|s| t.streams.remove(s))
        .collect::<Vec<_>>();
    ACTIVE.fetch_sub(members.len(), Ordering::Release);
    t.events.retain(|_, (c, _)| *c != id);
    Some((c, members))
}

pub fn end(stream: u64, out: &mut u64) -> ShimResult<()> {
    let (_, s) = registry().stream(stream)?;
    let mut t = table();
    let id = match t.streams.get(&s) {
        Some(m) => m.capture,
        None => {
            return Err(error(
                CuStatus::ILLEGAL_STATE,
                "the stream is not capturing",
            ))
        }
    };
    let c = &t.captures[&id];
    if c.origin != s {
        return Err(error(
            UNMATCHED,
            "the capture began on another stream: end it there",
        ));
    }
    if c.mode != MODE_RELAXED && c.thread != std::thread::current().id() {
        return Err(error(WRONG_THREAD, "the capture began in another thread"));
    }
    let origin_deps = t.streams[&s].deps.clone();
    let Some((c, members)) = finish(&mut t, id) else {
        return Err(error(
            CuStatus::ILLEGAL_STATE,
            "the stream is not capturing",
        ));
    };
    drop(t);
    *out = 0;
    if c.invalid {
        graph::remove_graph(c.graph)?;
        return Err(error(INVALIDATED, "the capture was invalidated"));
    }
    let joined = graph::with_graph(c.graph, |g| {
        let done = g.ancestors(&origin_deps);
        members
            .iter()
            .all(|m| m.deps.iter().all(|d| done.contains(d)))
    })?;
    if !joined {
        graph::remove_graph(c.graph)?;
        return Err(error(
            UNJOINED,
            "a stream forked from the capture was not joined back to its origin",
        ));
    }
    *out = c.graph;
    Ok(())
}

/// `cuStreamDestroy` of a stream taking part in a capture: the capture is invalidated, and if
/// the stream began it, it ends there (nobody can end it any more) and its graph goes.
pub fn forget_stream(stream: u64) {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut t = table();
    let Some(id) = t.streams.get(&stream).map(|m| m.capture) else {
        return;
    };
    if t.captures.get(&id).is_some_and(|c| c.origin == stream) {
        if let Some((c, _)) = finish(&mut t, id) {
            drop(t);
            let _ = graph::remove_graph(c.graph);
        }
        return;
    }
    invalidate_stream(&mut t, stream);
    if t.streams.remove(&stream).is_some() {
        ACTIVE.fetch_sub(1, Ordering::Release);
    }
}

/// Invalidates the capture `stream` takes part in, if any; true if there was one.
fn invalidate_stream(t: &mut Table, stream: u64) -> bool {
    let Some(id) = t.streams.get(&stream).map(|m| m.capture) else {
        return false;
    };
    if let Some(c) = t.captures.get_mut(&id) {
        c.invalid = true;
    }
    true
}

/// `what`, on server stream `stream`, is not allowed if it is capturing (synchronising or
/// querying it, a stream-ordered allocation): refused, and the capture invalidated.
pub fn refuse_on(stream: u64, what: &str) -> ShimResult<()> {
    if ACTIVE.load(Ordering::Acquire) == 0 || stream == 0 {
        return Ok(());
    }
    if invalidate_stream(&mut table(), stream) {
        return Err(error(
            UNSUPPORTED,
            format!("{what} is not allowed on a capturing stream"),
        ));
    }
    Ok(())
}

/// A "potentially unsafe" call (context synchronisation, a synchronous copy): refused, and the
/// captures that forbid it invalidated, as the calling thread's capture mode says.
pub fn forbid_unsafe_call(what: &str) -> ShimResult<()> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let mode = THREAD_MODE.try_with(Cell::get).unwrap_or(MODE_GLOBAL);
    if mode == MODE_RELAXED {
        return Ok(());
    }
    let me = std::thread::current().id();
    let mut t = table();
    let mut refused = false;
    for c in t.captures.values_mut() {
        let mine = c.thread == me && c.mode != MODE_RELAXED;
        // Other threads' global captures bind only threads in global mode.
        let others = match mode {
            MODE_THREAD_LOCAL => false,
            _ => c.thread != me && c.mode == MODE_GLOBAL,
        };
        if mine || others {
            c.invalid = true;
            refused = true;
        }
    }
    if refused {
        return Err(error(
            UNSUPPORTED,
            format!("{what} is not allowed while a stream is capturing"),
        ));
    }
    Ok(())
}

/// `cuEventRecord` on a capturing stream: the event marks the capture's position, nothing is
/// sent. `Ok(false)` when the stream is not capturing.
pub fn record_event(event: u64, stream: u64) -> ShimResult<bool> {
    if ACTIVE.load(Ordering::Acquire) == 0 || stream == 0 {
        return Ok(false);
    }
    let mut t = table();
    let Some(m) = t.streams.get(&stream) else {
        return Ok(false);
    };
    let (id, deps) = (m.capture, m.deps.clone());
    if t.captures[&id].invalid {
        return Err(error(INVALIDATED, "the stream's capture was invalidated"));
    }
    t.events.insert(event, (id, deps));
    Ok(true)
}

/// Whether `event` was last recorded in a capture that is still going.
pub fn in_a_capture(event: u64) -> bool {
    ACTIVE.load(Ordering::Acquire) > 0 && table().events.contains_key(&event)
}

/// `cuStreamWaitEvent` for an event recorded during a capture: the stream joins the capture
/// (or, already in it, gains the event's position as a dependency). `Ok(false)` when neither
/// the event nor the stream is part of a capture. An event from outside the capture, waited
/// for by a capturing stream, adds nothing: that work is not the graph's.
pub fn wait_event(stream: u64, event: u64) -> ShimResult<bool> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return Ok(false);
    }
    let mut t = table();
    let t = &mut *t;
    let Some((id, deps)) = t.events.get(&event).cloned() else {
        return Ok(t.streams.contains_key(&stream));
    };
    if stream == 0 {
        return Err(error(
            UNSUPPORTED,
            "the default stream cannot join a capture",
        ));
    }
    match t.streams.get_mut(&stream) {
        Some(m) if m.capture != id => Err(error(MERGE, "the stream takes part in another capture")),
        Some(m) => {
            for d in deps {
                if !m.deps.contains(&d) {
                    m.deps.push(d);
                }
            }
            Ok(true)
        }
        None => {
            t.streams.insert(stream, Member { capture: id, deps });
            ACTIVE.fetch_add(1, Ordering::Release);
            Ok(true)
        }
    }
}

/// `cuStreamIsCapturing` and `cuStreamGetCaptureInfo`: the status and, if capturing, the
/// capture's id.
pub fn status(stream: u64, status: &mut c_uint, id: Option<&mut u64>) -> ShimResult<()> {
    info(stream, status, id, None, None, None, None)
}

/// `cuStreamGetCaptureInfo_v2/_v3`: also the graph and the nodes the next work will depend on.
#[allow(clippy::too_many_arguments)]
pub fn info(
    stream: u64,
    status: &mut c_uint,
    id: Option<&mut u64>,
    graph_out: Option<&mut u64>,
    deps_out: Option<&mut *const *mut c_void>,
    edges_out: Option<&mut *const crate::generated::CUgraphEdgeData>,
    count: Option<&mut usize>,
) -> ShimResult<()> {
    let (_, s) = registry().stream(stream)?;
    let found = (ACTIVE.load(Ordering::Acquire) > 0 && s != 0)
        .then(|| {
            let t = table();
            let m = t.streams.get(&s)?;
            let c = &t.captures[&m.capture];
            Some((m.capture, c.graph, c.invalid, m.deps.clone()))
        })
        .flatten();
    let Some((cid, graph, broken, deps)) = found else {
        *status = STATUS_NONE;
        return Ok(());
    };
    *status = if broken {
        STATUS_INVALIDATED
    } else {
        STATUS_ACTIVE
    };
    if let Some(id) = id {
        *id = cid;
    }
    if let Some(g) = graph_out {
        *g = graph;
    }
    let n = deps.len();
    let (d, e) = HANDED_OUT
        .try_with(|h| {
            let mut h = h.borrow_mut();
            h.0 = deps;
            h.1 = vec![0; n];
            (h.0.as_ptr(), h.1.as_ptr())
        })
        .map_err(|_| invalid("the thread is exiting"))?;
    if let Some(out) = deps_out {
        *out = if n == 0 { std::ptr::null() } else { d.cast() };
    }
    if let Some(out) = edges_out {
        *out = if n == 0 { std::ptr::null() } else { e.cast() };
    }
    if let Some(count) = count {
        *count = n;
    }
    Ok(())
}

/// `cuThreadExchangeStreamCaptureMode`: swaps the calling thread's capture mode.
pub fn exchange_mode(mode: &mut c_uint) -> ShimResult<()> {
    if *mode > MODE_RELAXED {
        return Err(invalid(format!("stream capture mode {}", *mode)));
    }
    *mode = THREAD_MODE
        .try_with(|c| c.replace(*mode))
        .unwrap_or(MODE_GLOBAL);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{mint, Context};

    /// A context and `n` streams in the process's registry (no server is needed: capture only
    /// records).
    fn streams(n: usize) -> Vec<u64> {
        let ctx = mint();
        registry().add_context(ctx, Context::new(0, 0, false));
        (0..n)
            .map(|_| registry().add_stream(ctx, 1, 0).unwrap())
            .collect()
    }

    fn nodes(g: u64) -> usize {
        graph::with_graph(g, |g| g.nodes.len()).unwrap()
    }

    // One test, so no other capture runs in this process meanwhile (the tables are global).
    #[test]
    fn capture_records_forks_joins_and_obeys_the_modes() {
        // Without a capture every call is allowed, in every mode.
        assert!(forbid_unsafe_call("x").is_ok());
        let mut bad = 7;
        assert!(exchange_mode(&mut bad).is_err());

        let s = streams(3);
        let (a, b, c) = (s[0], s[1], s[2]);
        let (e1, e2) = (mint(), mint());
        assert!(of(a).unwrap().is_none());
        begin(a, MODE_GLOBAL).unwrap();
        assert_eq!(
            begin(a, MODE_GLOBAL).unwrap_err().status(),
            CuStatus::ILLEGAL_STATE
        );
        of(a).unwrap().unwrap().add(Op::Empty).unwrap();
        assert!(record_event(e1, a).unwrap());
        assert!(wait_event(b, e1).unwrap()); // b forks off a
        of(b).unwrap().unwrap().add(Op::Empty).unwrap();
        of(a).unwrap().unwrap().add(Op::Empty).unwrap();
        let mut g = 0;
        // Ending on the forked stream is not ending the capture.
        assert_eq!(end(b, &mut g).unwrap_err().status(), UNMATCHED);
        assert!(record_event(e2, b).unwrap());
        assert!(wait_event(a, e2).unwrap()); // and joins back
        of(a).unwrap().unwrap().add(Op::Empty).unwrap();
        end(a, &mut g).unwrap();
        assert_eq!(nodes(g), 4);
        let order = graph::with_graph(g, |g| g.topological()).unwrap().unwrap();
        let last = graph::with_graph(g, |g| g.nodes[&order[3]].deps.len()).unwrap();
        assert_eq!(last, 2, "the join node waits for both branches");
        assert!(of(b).unwrap().is_none());
        assert_eq!(ACTIVE.load(Ordering::Acquire), 0);

        // A global capture in another thread forbids this thread's unsafe calls, unless this
        // thread is in thread-local (or relaxed) mode; the capture is invalidated by the refusal.
        std::thread::scope(|sc| {
            sc.spawn(|| begin(c, MODE_GLOBAL).unwrap()).join().unwrap();
        });
        let mut m = MODE_THREAD_LOCAL;
        exchange_mode(&mut m).unwrap();
        assert!(forbid_unsafe_call("x").is_ok());
        exchange_mode(&mut m).unwrap();
        assert_eq!(m, MODE_THREAD_LOCAL);
        assert_eq!(forbid_unsafe_call("x").unwrap_err().status(), UNSUPPORTED);
        assert_eq!(of(c).err().map(|e| e.status()), Some(INVALIDATED));
        // Ended by another thread than the one that began it (global mode): refused.
        assert_eq!(end(c, &mut g).unwrap_err().status(), WRONG_THREAD);
        // Destroying the origin stream ends the capture.
        forget_stream(c);
        assert_eq!(ACTIVE.load(Ordering::Acquire), 0);
        assert_eq!(
            end(c, &mut g).unwrap_err().status(),
            CuStatus::ILLEGAL_STATE
        );
    }
}
