//! The isolation rules of [`Session`], one by one, over an in-memory fake backend.
//!
//! The fake faults with `ILLEGAL_ADDRESS` on any byte outside its blocks, and counts every call
//! that touches memory, so a test can tell the session's refusal (`INVALID_VALUE` before the
//! backend is reached) from a backend that was reached and had to defend itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use remora_protocol::messages::{
    CtxId, EventId, GlobalDesc, KernelDesc, ModuleId, ParamDesc, ReplyBody, Request, StreamId,
};
use remora_protocol::CuStatus;

use super::{Session, Step};
use crate::backend::{CuError, CuResult, DeviceSession, Launch, ModuleImage};

// Handles as a client with two contexts would mint them.
const A: CtxId = CtxId(0xa0);
const B: CtxId = CtxId(0xb0);
const SA: StreamId = StreamId(0xa1);
const SB: StreamId = StreamId(0xb1);
const EA: EventId = EventId(0xa2);
const EB: EventId = EventId(0xb2);
const MA: ModuleId = ModuleId(0xa3);
const MB: ModuleId = ModuleId(0xb3);
const UNKNOWN: u64 = 0xdead;

/// Kernels of every image the fake loads: 0 takes no parameters, 1 takes 12 bytes.
const KERNEL_NO_PARAMS: u32 = 0;
const KERNEL_12_BYTES: u32 = 1;
/// Size of the one global of every image the fake loads.
const GLOBAL_SIZE: u64 = 16;
/// An image the fake refuses to load.
const BAD_IMAGE: &[u8] = b"bad";

#[derive(Debug, Clone, PartialEq)]
struct LaunchRecord {
    module: u64,
    kernel: u32,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    params: Vec<u8>,
}

#[derive(Default)]
struct FakeState {
    /// Allocations and globals by base address. Each device's blocks are adjacent, so a range
    /// can straddle two of them without leaving the fake's memory.
    memory: BTreeMap<u64, Vec<u8>>,
    next: HashMap<u32, u64>,
    /// Module handle -> its globals.
    loaded: HashMap<u64, Vec<u64>>,
    frees: Vec<u64>,
    unloads: Vec<u64>,
    launches: Vec<LaunchRecord>,
    /// Calls that touched memory: write, read, copy, memset.
    touches: u32,
    syncs: u32,
    fail_next_launch: Option<CuError>,
    fail_frees: bool,
}

impl FakeState {
    fn place(&mut self, device: u32, size: u64) -> u64 {
        let next = self
            .next
            .entry(device)
            .or_insert(0x7f00_0000_0000 + u64::from(device) * 0x1_0000_0000);
        let ptr = *next;
        *next += size;
        self.memory.insert(ptr, vec![0; size as usize]);
        ptr
    }

    /// The bytes `[addr, addr + len)` of one block, or the fault a GPU would raise.
    fn bytes(&mut self, addr: u64, len: u64) -> CuResult<&mut [u8]> {
        let fault = || {
            CuError::new(
                CuStatus::ILLEGAL_ADDRESS,
                format!("fake: {len} bytes at {addr:#x}"),
            )
        };
        let (&base, block) = self
            .memory
            .range_mut(..=addr)
            .next_back()
            .ok_or_else(fault)?;
        let start = (addr - base) as usize;
        let end = start.checked_add(len as usize).ok_or_else(fault)?;
        block.get_mut(start..end).ok_or_else(fault)
    }
}

/// A [`DeviceSession`] in memory; clones share their state, so a test keeps one to look into
/// after the session has taken the other.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }
}

impl DeviceSession for Fake {
    fn alloc(&mut self, device: u32, size: u64) -> CuResult<u64> {
        Ok(self.state().place(device, size))
    }

    fn free(&mut self, ptr: u64) -> CuResult<()> {
        let mut st = self.state();
        if st.fail_frees {
            return Err(CuError::new(CuStatus::UNKNOWN, "fake: free fails"));
        }
        st.memory
            .remove(&ptr)
            .ok_or_else(|| CuError::new(CuStatus::ILLEGAL_ADDRESS, "fake: double free"))?;
        st.frees.push(ptr);
        Ok(())
    }

    fn mem_info(&self, _device: u32) -> CuResult<(u64, u64)> {
        Ok((1000, 2000))
    }

    fn write(&mut self, dst: u64, data: &[u8]) -> CuResult<()> {
        let mut st = self.state();
        st.touches += 1;
        st.bytes(dst, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, src: u64, out: &mut [u8]) -> CuResult<()> {
        let mut st = self.state();
        st.touches += 1;
        out.copy_from_slice(st.bytes(src, out.len() as u64)?);
        Ok(())
    }

    fn copy(&mut self, dst: u64, src: u64, size: u64) -> CuResult<()> {
        let mut st = self.state();
        st.touches += 1;
        let data = st.bytes(src, size)?.to_vec();
        st.bytes(dst, size)?.copy_from_slice(&data);
        Ok(())
    }

    fn memset(
        &mut self,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
    ) -> CuResult<()> {
        let mut st = self.state();
        st.touches += 1;
        let pattern = &value.to_le_bytes()[..elem as usize];
        for row in 0..height {
            let bytes = st.bytes(dst + row * pitch, width * u64::from(elem))?;
            for chunk in bytes.chunks_mut(elem as usize) {
                chunk.copy_from_slice(pattern);
            }
        }
        Ok(())
    }

    fn synchronize(&mut self) -> CuResult<()> {
        self.state().syncs += 1;
        Ok(())
    }

    fn load_module(
        &mut self,
        device: u32,
        module: u64,
        _hash: [u8; 32],
        image: Arc<[u8]>,
    ) -> CuResult<ModuleImage> {
        if &*image == BAD_IMAGE {
            return Err(CuError::new(CuStatus::INVALID_IMAGE, "fake: bad image"));
        }
        let mut st = self.state();
        let addr = st.place(device, GLOBAL_SIZE);
        st.loaded.insert(module, vec![addr]);
        let kernel = |name: &str, params: Vec<ParamDesc>| KernelDesc {
            name: name.into(),
            params,
            shared_bytes: 0,
            local_bytes: 0,
            num_regs: 8,
            max_threads: 1024,
            const_bytes: 0,
        };
        Ok(ModuleImage {
            kernels: vec![
                kernel("no_params", vec![]),
                kernel(
                    "twelve_bytes",
                    vec![
                        ParamDesc { offset: 0, size: 8 },
                        ParamDesc { offset: 8, size: 4 },
                    ],
                ),
            ],
            globals: vec![GlobalDesc {
                name: "counter".into(),
                addr,
                size: GLOBAL_SIZE,
            }],
        })
    }

    fn unload_module(&mut self, module: u64) -> CuResult<()> {
        let mut st = self.state();
        let globals = st
            .loaded
            .remove(&module)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_HANDLE, "fake: no such module"))?;
        for g in globals {
            st.memory.remove(&g);
        }
        st.unloads.push(module);
        Ok(())
    }

    fn launch(&mut self, l: &Launch<'_>) -> (String, CuResult<()>) {
        let mut st = self.state();
        let out = format!("kernel {} ran\n", l.kernel);
        if let Some(e) = st.fail_next_launch.take() {
            return (out, Err(e));
        }
        st.launches.push(LaunchRecord {
            module: l.module,
            kernel: l.kernel,
            grid: l.grid,
            block: l.block,
            shared: l.shared,
            params: l.params.to_vec(),
        });
        (out, Ok(()))
    }
}

fn session(quota: Option<u64>) -> (Session, Fake) {
    let fake = Fake::default();
    (Session::new(Box::new(fake.clone()), 2, quota), fake)
}

/// A client with context A on device 0 and context B on device 1, each with a stream, an event
/// and a module.
fn two_contexts() -> (Session, Fake) {
    let (mut s, fake) = session(None);
    for (ctx, device, stream, event, module) in [(A, 0, SA, EA, MA), (B, 1, SB, EB, MB)] {
        ok(&mut s, ctx_create(ctx, device));
        ok(
            &mut s,
            Request::StreamCreate {
                ctx,
                stream,
                flags: 0,
                priority: 0,
            },
        );
        ok(
            &mut s,
            Request::EventCreate {
                ctx,
                event,
                flags: 0,
            },
        );
        load(&mut s, ctx, module).unwrap();
    }
    (s, fake)
}

fn ctx_create(ctx: CtxId, device: u32) -> Request {
    Request::CtxCreate {
        ctx,
        device,
        flags: 0,
    }
}

fn ok(s: &mut Session, req: Request) -> ReplyBody {
    let name = req.name();
    s.reply_to(req)
        .unwrap_or_else(|e| panic!("{name} failed: {e}"))
}

fn status<T>(r: CuResult<T>) -> CuStatus {
    r.map_or_else(|e| e.status, |_| CuStatus::SUCCESS)
}

fn fails(s: &mut Session, req: Request) -> CuStatus {
    status(s.reply_to(req))
}

fn alloc(s: &mut Session, ctx: CtxId, size: u64) -> u64 {
    match ok(s, Request::MemAlloc { ctx, size }) {
        ReplyBody::Ptr { ptr } => ptr,
        other => panic!("MemAlloc answered {other:?}"),
    }
}

fn load(s: &mut Session, ctx: CtxId, module: ModuleId) -> CuResult<ReplyBody> {
    s.load_module(ctx, module, [0; 32], Arc::from(&b"image"[..]), None)
}

/// The address of module `module`'s global, from the fake.
fn global_of(fake: &Fake, module: ModuleId) -> u64 {
    fake.state().loaded[&module.0][0]
}

fn launch(ctx: CtxId, stream: StreamId, module: ModuleId, kernel: u32, params: Vec<u8>) -> Request {
    Request::Launch {
        ctx,
        stream,
        module,
        kernel,
        grid: [2, 1, 1],
        block: [32, 1, 1],
        shared: 0,
        params,
        cooperative: false,
    }
}

fn memset(ctx: CtxId, dst: u64, pitch: u64, elem: u8, width: u64, height: u64) -> Request {
    Request::Memset {
        ctx,
        stream: StreamId(0),
        dst,
        pitch,
        value: 0x0102_0304,
        elem,
        width,
        height,
    }
}

fn dtod(ctx: CtxId, dst: u64, src: u64, size: u64) -> Request {
    Request::MemcpyDtoD {
        ctx,
        stream: StreamId(0),
        dst,
        src,
        size,
    }
}

/// Every request that runs on a stream, naming `ctx` and `stream`, with arguments that are
/// otherwise valid for context `ctx` of [`two_contexts`] (`ptr`: 64 bytes it may touch).
fn stream_requests(
    ctx: CtxId,
    stream: StreamId,
    ptr: u64,
    event: EventId,
    module: ModuleId,
) -> Vec<Request> {
    vec![
        Request::MemcpyDtoD {
            ctx,
            stream,
            dst: ptr,
            src: ptr + 32,
            size: 32,
        },
        Request::Memset {
            ctx,
            stream,
            dst: ptr,
            pitch: 0,
            value: 0,
            elem: 1,
            width: 64,
            height: 1,
        },
        Request::StreamSynchronize { ctx, stream },
        Request::StreamQuery { ctx, stream },
        Request::StreamWaitEvent { ctx, stream, event },
        Request::EventRecord { ctx, event, stream },
        launch(ctx, stream, module, KERNEL_NO_PARAMS, vec![]),
        Request::StreamDestroy { ctx, stream },
    ]
}

// ---- contexts ----

#[test]
fn unknown_context_is_invalid_context_everywhere() {
    let (mut s, fake) = two_contexts();
    let ptr = alloc(&mut s, A, 64);
    let calls = [
        Request::CtxSynchronize {
            ctx: CtxId(UNKNOWN),
        },
        Request::CtxDestroy {
            ctx: CtxId(UNKNOWN),
        },
        Request::CtxReset {
            ctx: CtxId(UNKNOWN),
        },
        Request::MemAlloc {
            ctx: CtxId(UNKNOWN),
            size: 8,
        },
        Request::MemFree {
            ctx: CtxId(UNKNOWN),
            ptr,
        },
        Request::StreamCreate {
            ctx: CtxId(UNKNOWN),
            stream: StreamId(0x99),
            flags: 0,
            priority: 0,
        },
        Request::EventCreate {
            ctx: CtxId(UNKNOWN),
            event: EventId(0x99),
            flags: 0,
        },
        Request::EventSynchronize {
            ctx: CtxId(UNKNOWN),
            event: EA,
        },
        Request::EventElapsed {
            ctx: CtxId(UNKNOWN),
            start: EA,
            end: EA,
        },
        Request::EventDestroy {
            ctx: CtxId(UNKNOWN),
            event: EA,
        },
        Request::ModuleUnload {
            ctx: CtxId(UNKNOWN),
            module: MA,
        },
    ]
    .into_iter()
    .chain(stream_requests(CtxId(UNKNOWN), StreamId(0), ptr, EA, MA));
    for req in calls {
        let name = req.name();
        assert_eq!(fails(&mut s, req), CuStatus::INVALID_CONTEXT, "{name}");
    }
    assert_eq!(
        status(s.begin_module_load(CtxId(UNKNOWN), ModuleId(0x99))),
        CuStatus::INVALID_CONTEXT
    );
    assert_eq!(
        status(load(&mut s, CtxId(UNKNOWN), ModuleId(0x99))),
        CuStatus::INVALID_CONTEXT
    );
    assert_eq!(
        status(s.begin_write(CtxId(UNKNOWN), StreamId(0), ptr, 8)),
        CuStatus::INVALID_CONTEXT
    );
    assert_eq!(
        status(s.begin_read(CtxId(UNKNOWN), StreamId(0), ptr, 8)),
        CuStatus::INVALID_CONTEXT
    );
    let st = fake.state();
    assert_eq!((st.touches, st.syncs, st.launches.len()), (0, 0, 0));
    assert!(st.frees.is_empty() && st.unloads.is_empty());
}

#[test]
fn context_create_checks_device_and_handle() {
    let (mut s, _) = session(None);
    assert_eq!(fails(&mut s, ctx_create(A, 2)), CuStatus::INVALID_DEVICE);
    ok(&mut s, ctx_create(A, 1));
    assert_eq!(fails(&mut s, ctx_create(A, 0)), CuStatus::INVALID_VALUE);
    ok(&mut s, Request::CtxSynchronize { ctx: A });
}

#[test]
fn destroyed_context_is_invalid_context() {
    let (mut s, _) = two_contexts();
    ok(&mut s, Request::CtxDestroy { ctx: A });
    assert_eq!(
        fails(&mut s, Request::CtxSynchronize { ctx: A }),
        CuStatus::INVALID_CONTEXT
    );
    assert_eq!(
        fails(&mut s, Request::MemAlloc { ctx: A, size: 8 }),
        CuStatus::INVALID_CONTEXT
    );
    assert_eq!(
        fails(&mut s, Request::CtxDestroy { ctx: A }),
        CuStatus::INVALID_CONTEXT
    );
    // The other context is untouched.
    ok(&mut s, Request::CtxSynchronize { ctx: B });
    alloc(&mut s, B, 8);
}

#[test]
fn context_destroy_releases_everything_it_owns() {
    let (mut s, fake) = two_contexts();
    let a1 = alloc(&mut s, A, 100);
    let a2 = alloc(&mut s, A, 28);
    let b1 = alloc(&mut s, B, 50);
    let ga = global_of(&fake, MA);
    assert_eq!(s.held, 178);

    ok(&mut s, Request::CtxDestroy { ctx: A });

    {
        let st = fake.state();
        let mut frees = st.frees.clone();
        frees.sort();
        assert_eq!(frees, vec![a1, a2], "A's allocations freed, B's kept");
        assert_eq!(st.unloads, vec![MA.0], "A's module unloaded, B's kept");
    }
    assert_eq!(s.held, 50);
    assert!(!s.streams.contains_key(&SA) && s.streams.contains_key(&SB));
    assert!(!s.events.contains_key(&EA) && s.events.contains_key(&EB));
    assert!(!s.modules.contains_key(&MA) && s.modules.contains_key(&MB));
    for p in [a1, a2, ga] {
        assert_eq!(status(s.check_range(p, 1)), CuStatus::INVALID_VALUE);
    }
    s.check_range(b1, 50).unwrap();

    // Recreated under the same handle, A starts empty: its old handles are unknown.
    ok(&mut s, ctx_create(A, 0));
    assert_eq!(
        fails(&mut s, Request::StreamSynchronize { ctx: A, stream: SA }),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(
        fails(&mut s, Request::EventQuery { ctx: A, event: EA }),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), MA, KERNEL_NO_PARAMS, vec![])),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(
        fails(&mut s, Request::MemFree { ctx: A, ptr: a1 }),
        CuStatus::INVALID_VALUE
    );
}

#[test]
fn context_destroy_reports_a_failed_free_after_releasing() {
    let (mut s, fake) = two_contexts();
    let p = alloc(&mut s, A, 64);
    fake.state().fail_frees = true;
    assert_eq!(
        fails(&mut s, Request::CtxDestroy { ctx: A }),
        CuStatus::UNKNOWN
    );
    assert!(!s.contexts.contains_key(&A));
    assert_eq!(s.held, 0);
    assert_eq!(status(s.check_range(p, 1)), CuStatus::INVALID_VALUE);
}

// ---- streams ----

#[test]
fn unknown_stream_is_invalid_handle() {
    let (mut s, fake) = two_contexts();
    let ptr = alloc(&mut s, A, 64);
    for req in stream_requests(A, StreamId(UNKNOWN), ptr, EA, MA) {
        let name = req.name();
        assert_eq!(fails(&mut s, req), CuStatus::INVALID_HANDLE, "{name}");
    }
    assert_eq!(
        status(s.begin_write(A, StreamId(UNKNOWN), ptr, 8)),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(
        status(s.begin_read(A, StreamId(UNKNOWN), ptr, 8)),
        CuStatus::INVALID_HANDLE
    );
    let st = fake.state();
    assert_eq!((st.touches, st.syncs, st.launches.len()), (0, 0, 0));
}

#[test]
fn destroyed_stream_is_invalid_handle() {
    let (mut s, fake) = two_contexts();
    let ptr = alloc(&mut s, A, 64);
    ok(&mut s, Request::StreamDestroy { ctx: A, stream: SA });
    for req in stream_requests(A, SA, ptr, EA, MA) {
        let name = req.name();
        assert_eq!(fails(&mut s, req), CuStatus::INVALID_HANDLE, "{name}");
    }
    assert_eq!(
        status(s.begin_write(A, SA, ptr, 8)),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(fake.state().touches, 0);
}

/// The rule issue 8 names: a stream of context A in a call naming context B of the same client.
#[test]
fn stream_of_another_context_is_invalid_handle() {
    let (mut s, fake) = two_contexts();
    let pb = alloc(&mut s, B, 64);
    for req in stream_requests(B, SA, pb, EB, MB) {
        let name = req.name();
        let err = s.reply_to(req).expect_err(name);
        assert_eq!(err.status, CuStatus::INVALID_HANDLE, "{name}");
        assert!(err.message.contains("belongs to context"), "{name}: {err}");
    }
    assert_eq!(
        status(s.begin_write(B, SA, pb, 8)),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(status(s.begin_read(B, SA, pb, 8)), CuStatus::INVALID_HANDLE);
    {
        let st = fake.state();
        assert_eq!((st.touches, st.syncs, st.launches.len()), (0, 0, 0));
    }
    // Both streams are still there and usable in their own contexts.
    for req in stream_requests(B, SB, pb, EB, MB) {
        ok(&mut s, req);
    }
    ok(&mut s, Request::StreamSynchronize { ctx: A, stream: SA });
}

#[test]
fn stream_of_a_faulted_context_cannot_be_reached_through_another() {
    let (mut s, fake) = two_contexts();
    fake.state().fail_next_launch = Some(CuError::new(CuStatus::ILLEGAL_ADDRESS, "fault"));
    assert_eq!(
        fails(&mut s, launch(A, SA, MA, KERNEL_NO_PARAMS, vec![])),
        CuStatus::ILLEGAL_ADDRESS
    );
    assert_eq!(
        fails(&mut s, launch(B, SA, MB, KERNEL_NO_PARAMS, vec![])),
        CuStatus::INVALID_HANDLE
    );
    assert!(fake.state().launches.is_empty());
}

#[test]
fn default_stream_is_every_contexts_own() {
    let (mut s, _) = two_contexts();
    let pa = alloc(&mut s, A, 64);
    let pb = alloc(&mut s, B, 64);
    for req in stream_requests(A, StreamId(0), pa, EA, MA)
        .into_iter()
        .chain(stream_requests(B, StreamId(0), pb, EB, MB))
    {
        if matches!(req, Request::StreamDestroy { .. }) {
            assert_eq!(fails(&mut s, req), CuStatus::INVALID_HANDLE);
        } else {
            ok(&mut s, req);
        }
    }
}

#[test]
fn stream_create_refuses_the_default_handle_and_duplicates() {
    let (mut s, _) = two_contexts();
    let create = |ctx, stream| Request::StreamCreate {
        ctx,
        stream,
        flags: 0,
        priority: 0,
    };
    assert_eq!(
        fails(&mut s, create(A, StreamId(0))),
        CuStatus::INVALID_VALUE
    );
    assert_eq!(fails(&mut s, create(A, SA)), CuStatus::INVALID_VALUE);
    // A handle is unique across the client, not per context.
    assert_eq!(fails(&mut s, create(B, SA)), CuStatus::INVALID_VALUE);
    ok(&mut s, create(B, StreamId(0x77)));
}

// ---- events ----

fn event_requests(ctx: CtxId, event: EventId, other: EventId) -> Vec<Request> {
    vec![
        Request::EventRecord {
            ctx,
            event,
            stream: StreamId(0),
        },
        Request::EventSynchronize { ctx, event },
        Request::EventQuery { ctx, event },
        Request::EventElapsed {
            ctx,
            start: event,
            end: other,
        },
        Request::EventElapsed {
            ctx,
            start: other,
            end: event,
        },
        Request::EventDestroy { ctx, event },
    ]
}

#[test]
fn unknown_and_destroyed_events_are_invalid_handle() {
    let (mut s, fake) = two_contexts();
    ok(
        &mut s,
        Request::EventRecord {
            ctx: A,
            event: EA,
            stream: StreamId(0),
        },
    );
    for req in event_requests(A, EventId(UNKNOWN), EA) {
        let name = req.name();
        assert_eq!(fails(&mut s, req), CuStatus::INVALID_HANDLE, "{name}");
    }
    ok(
        &mut s,
        Request::EventCreate {
            ctx: A,
            event: EventId(0xe1),
            flags: 0,
        },
    );
    ok(
        &mut s,
        Request::EventDestroy {
            ctx: A,
            event: EventId(0xe1),
        },
    );
    for req in event_requests(A, EventId(0xe1), EA) {
        let name = req.name();
        assert_eq!(fails(&mut s, req), CuStatus::INVALID_HANDLE, "{name}");
    }
    assert_eq!(
        fails(
            &mut s,
            Request::StreamWaitEvent {
                ctx: A,
                stream: SA,
                event: EventId(0xe1)
            }
        ),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(fake.state().syncs, 0);
}

#[test]
fn event_of_another_context_is_invalid_handle() {
    let (mut s, fake) = two_contexts();
    ok(
        &mut s,
        Request::EventRecord {
            ctx: B,
            event: EB,
            stream: StreamId(0),
        },
    );
    // EA used in calls naming B (with B's own event as the other end where there are two).
    for req in event_requests(B, EA, EB) {
        let name = req.name();
        let err = s.reply_to(req).expect_err(name);
        assert_eq!(err.status, CuStatus::INVALID_HANDLE, "{name}");
        assert!(err.message.contains("belongs to context"), "{name}: {err}");
    }
    // Recording A's event on B's stream.
    assert_eq!(
        fails(
            &mut s,
            Request::EventRecord {
                ctx: B,
                event: EA,
                stream: SB
            }
        ),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(fake.state().syncs, 0);
    assert!(
        s.events[&EA].recorded.is_none(),
        "A's event was not recorded"
    );
    ok(&mut s, Request::EventQuery { ctx: A, event: EA });
}

/// cuStreamWaitEvent allows an event of another context; the event must still be the client's.
#[test]
fn stream_may_wait_on_an_event_of_another_context() {
    let (mut s, _) = two_contexts();
    ok(
        &mut s,
        Request::StreamWaitEvent {
            ctx: B,
            stream: SB,
            event: EA,
        },
    );
}

#[test]
fn event_elapsed_needs_timing_and_two_records() {
    let (mut s, _) = two_contexts();
    let elapsed = |start, end| Request::EventElapsed { ctx: A, start, end };
    ok(
        &mut s,
        Request::EventCreate {
            ctx: A,
            event: EventId(0xe2),
            flags: 0,
        },
    );
    ok(
        &mut s,
        Request::EventRecord {
            ctx: A,
            event: EA,
            stream: SA,
        },
    );
    assert_eq!(
        fails(&mut s, elapsed(EA, EventId(0xe2))),
        CuStatus::INVALID_HANDLE
    );
    ok(
        &mut s,
        Request::EventRecord {
            ctx: A,
            event: EventId(0xe2),
            stream: StreamId(0),
        },
    );
    match ok(&mut s, elapsed(EA, EventId(0xe2))) {
        ReplyBody::Elapsed { ms } => assert!(ms >= 0.0),
        other => panic!("EventElapsed answered {other:?}"),
    }
    // CU_EVENT_DISABLE_TIMING.
    ok(
        &mut s,
        Request::EventCreate {
            ctx: A,
            event: EventId(0xe3),
            flags: 2,
        },
    );
    ok(
        &mut s,
        Request::EventRecord {
            ctx: A,
            event: EventId(0xe3),
            stream: StreamId(0),
        },
    );
    assert_eq!(
        fails(&mut s, elapsed(EA, EventId(0xe3))),
        CuStatus::INVALID_HANDLE
    );
}

#[test]
fn event_create_refuses_duplicates() {
    let (mut s, _) = two_contexts();
    assert_eq!(
        fails(
            &mut s,
            Request::EventCreate {
                ctx: B,
                event: EA,
                flags: 0
            }
        ),
        CuStatus::INVALID_VALUE
    );
}

// ---- modules and launches ----

#[test]
fn unknown_and_unloaded_modules_are_invalid_handle() {
    let (mut s, fake) = two_contexts();
    assert_eq!(
        fails(
            &mut s,
            launch(A, StreamId(0), ModuleId(UNKNOWN), KERNEL_NO_PARAMS, vec![])
        ),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(
        fails(
            &mut s,
            Request::ModuleUnload {
                ctx: A,
                module: ModuleId(UNKNOWN)
            }
        ),
        CuStatus::INVALID_HANDLE
    );
    let g = global_of(&fake, MA);
    ok(&mut s, Request::ModuleUnload { ctx: A, module: MA });
    assert_eq!(fake.state().unloads, vec![MA.0]);
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), MA, KERNEL_NO_PARAMS, vec![])),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(
        fails(&mut s, Request::ModuleUnload { ctx: A, module: MA }),
        CuStatus::INVALID_HANDLE
    );
    // Its global went with it.
    assert_eq!(status(s.check_range(g, 1)), CuStatus::INVALID_VALUE);
    assert!(fake.state().launches.is_empty());
    // The handle may be used again once free.
    load(&mut s, A, MA).unwrap();
}

#[test]
fn module_of_another_context_is_invalid_handle() {
    let (mut s, fake) = two_contexts();
    for req in [
        launch(B, StreamId(0), MA, KERNEL_NO_PARAMS, vec![]),
        launch(B, SB, MA, KERNEL_NO_PARAMS, vec![]),
        Request::ModuleUnload { ctx: B, module: MA },
    ] {
        let name = req.name();
        let err = s.reply_to(req).expect_err(name);
        assert_eq!(err.status, CuStatus::INVALID_HANDLE, "{name}");
        assert!(err.message.contains("belongs to context"), "{name}: {err}");
    }
    assert!(fake.state().launches.is_empty());
    assert!(fake.state().unloads.is_empty());
    ok(&mut s, launch(A, SA, MA, KERNEL_NO_PARAMS, vec![]));
}

#[test]
fn module_handle_in_use_is_refused() {
    let (mut s, _) = two_contexts();
    assert_eq!(status(s.begin_module_load(A, MA)), CuStatus::INVALID_VALUE);
    assert_eq!(status(load(&mut s, B, MA)), CuStatus::INVALID_VALUE);
    assert_eq!(
        s.begin_module_load(B, ModuleId(0x33)),
        Ok(1),
        "B is on device 1"
    );
}

#[test]
fn failed_module_load_leaves_nothing_behind() {
    let (mut s, _) = two_contexts();
    let r = s.load_module(A, ModuleId(0x33), [0; 32], Arc::from(BAD_IMAGE), None);
    assert_eq!(status(r), CuStatus::INVALID_IMAGE);
    assert!(!s.modules.contains_key(&ModuleId(0x33)));
    load(&mut s, A, ModuleId(0x33)).unwrap();
}

#[test]
fn a_posted_load_numbers_kernels_as_the_client_named_them() {
    let (mut s, fake) = two_contexts();
    // The fake's kernels are no_params (0) and twelve_bytes (1); the client read them in the
    // other order, and one more the device's module lacks.
    let names = [
        "twelve_bytes".to_string(),
        "only_in_ptx".into(),
        "no_params".into(),
    ];
    let m = ModuleId(0x44);
    let r = s.load_module(A, m, [0; 32], Arc::from(&b"image"[..]), Some(&names));
    let Ok(ReplyBody::Module { kernels, .. }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        kernels[0].name, "no_params",
        "the reply keeps the backend's order"
    );
    ok(&mut s, launch(A, StreamId(0), m, 0, vec![0; 12]));
    ok(&mut s, launch(A, StreamId(0), m, 2, vec![]));
    let ran: Vec<u32> = fake.state().launches.iter().map(|l| l.kernel).collect();
    assert_eq!(ran, [1, 0], "the backend's numbers");
    // Its parameter buffer is checked as the backend's kernel needs.
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), m, 0, vec![0; 8])),
        CuStatus::INVALID_VALUE
    );
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), m, 1, vec![])),
        CuStatus::NOT_FOUND
    );
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), m, 3, vec![])),
        CuStatus::INVALID_HANDLE
    );
}

#[test]
fn launches_of_a_failed_posted_load_report_its_error_until_unloaded() {
    let (mut s, fake) = two_contexts();
    let m = ModuleId(0x55);
    let r = s.load_module(A, m, [0; 32], Arc::from(BAD_IMAGE), Some(&[]));
    let e = r.unwrap_err();
    s.posted_load_failed(A, m, e);
    let r = s.reply_to(launch(A, StreamId(0), m, 0, vec![]));
    let e = r.unwrap_err();
    assert_eq!(e.status, CuStatus::INVALID_IMAGE);
    assert!(e.message.contains("fake: bad image"), "{}", e.message);
    assert!(fake.state().launches.is_empty());
    assert_eq!(
        ok(&mut s, Request::ModuleUnload { ctx: A, module: m }),
        ReplyBody::None
    );
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), m, 0, vec![])),
        CuStatus::INVALID_HANDLE,
        "forgotten once unloaded"
    );
    // A module that did load is never shadowed by a failure recorded for its handle.
    s.posted_load_failed(A, MA, CuError::new(CuStatus::INVALID_IMAGE, "late"));
    ok(&mut s, launch(A, StreamId(0), MA, 0, vec![]));
}

#[test]
fn kernel_index_out_of_range_is_invalid_handle() {
    let (mut s, fake) = two_contexts();
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), MA, 2, vec![])),
        CuStatus::INVALID_HANDLE
    );
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), MA, u32::MAX, vec![])),
        CuStatus::INVALID_HANDLE
    );
    assert!(fake.state().launches.is_empty());
}

#[test]
fn launch_needs_the_kernels_whole_parameter_buffer() {
    let (mut s, fake) = two_contexts();
    assert_eq!(
        fails(
            &mut s,
            launch(A, StreamId(0), MA, KERNEL_12_BYTES, vec![0; 11])
        ),
        CuStatus::INVALID_VALUE
    );
    assert!(fake.state().launches.is_empty());
    let params: Vec<u8> = (0..12).collect();
    ok(&mut s, launch(A, SA, MA, KERNEL_12_BYTES, params.clone()));
    assert_eq!(
        fake.state().launches,
        vec![LaunchRecord {
            module: MA.0,
            kernel: KERNEL_12_BYTES,
            grid: [2, 1, 1],
            block: [32, 1, 1],
            shared: 0,
            params,
        }]
    );
    assert_eq!(s.take_output(), "kernel 1 ran\n");
    assert_eq!(s.take_output(), "");
}

// ---- pointers ----

#[test]
fn ranges_must_lie_inside_one_allocation() {
    let (mut s, fake) = two_contexts();
    let p = alloc(&mut s, A, 64);
    let q = alloc(&mut s, A, 64);
    assert_eq!(q, p + 64, "the fake places allocations back to back");

    s.check_range(p, 64).unwrap();
    s.check_range(p + 10, 54).unwrap();
    s.check_range(q, 64).unwrap();
    s.check_range(p + 64, 0).unwrap();
    let refused = [
        (p + 60, 8),   // straddles p and q
        (p, 128),      // both whole
        (q + 1, 64),   // one byte past the end
        (q + 64, 1),   // starts past the end
        (p - 1, 2),    // straddles the module global placed before p, and p
        (0, 1),        // null
        (p, u64::MAX), // length overflows
        (u64::MAX, 2), // address overflows
        (u64::MAX, 0), // past every allocation
    ];
    for (ptr, len) in refused {
        assert_eq!(
            status(s.check_range(ptr, len)),
            CuStatus::INVALID_VALUE,
            "{len} bytes at {ptr:#x}"
        );
        assert_eq!(
            status(s.begin_write(A, StreamId(0), ptr, len)),
            CuStatus::INVALID_VALUE
        );
        assert_eq!(
            status(s.begin_read(A, SA, ptr, len)),
            CuStatus::INVALID_VALUE
        );
        assert_eq!(fails(&mut s, dtod(A, p, ptr, len)), CuStatus::INVALID_VALUE);
        assert_eq!(fails(&mut s, dtod(A, ptr, q, len)), CuStatus::INVALID_VALUE);
    }
    assert_eq!(fake.state().touches, 0);
}

#[test]
fn freed_pointers_are_refused() {
    let (mut s, fake) = two_contexts();
    let p = alloc(&mut s, A, 64);
    let q = alloc(&mut s, A, 64);
    ok(&mut s, Request::MemFree { ctx: A, ptr: p });
    assert_eq!(status(s.check_range(p, 1)), CuStatus::INVALID_VALUE);
    assert_eq!(
        status(s.begin_write(A, StreamId(0), p, 8)),
        CuStatus::INVALID_VALUE
    );
    assert_eq!(fails(&mut s, dtod(A, q, p, 8)), CuStatus::INVALID_VALUE);
    assert_eq!(
        fails(&mut s, memset(A, p, 0, 1, 8, 1)),
        CuStatus::INVALID_VALUE
    );
    assert_eq!(fake.state().touches, 0);
}

#[test]
fn copies_move_bytes_within_and_between_the_clients_memory() {
    let (mut s, fake) = two_contexts();
    let pa = alloc(&mut s, A, 64);
    let pb = alloc(&mut s, B, 64);
    s.begin_write(A, SA, pa, 4).unwrap();
    s.write_chunk(pa, &[1, 2, 3, 4]).unwrap();
    // Pointers are the client's, whichever of its contexts made them (peer copies).
    ok(&mut s, dtod(B, pb + 60, pa, 4));
    let mut out = [0; 4];
    s.begin_read(B, SB, pb + 60, 4).unwrap();
    s.read_chunk(pb + 60, &mut out).unwrap();
    assert_eq!(out, [1, 2, 3, 4]);
    // A copy of nothing reaches no backend.
    ok(&mut s, dtod(A, pa, pa, 0));
    assert_eq!(fake.state().touches, 3);
}

#[test]
fn memset_extent_is_checked() {
    let (mut s, fake) = two_contexts();
    let p = alloc(&mut s, A, 64);
    let refused = [
        memset(A, p, 0, 3, 1, 1),            // element of 3 bytes
        memset(A, p + 1, 0, 2, 1, 1),        // misaligned for 16 bits
        memset(A, p + 2, 0, 4, 1, 1),        // misaligned for 32 bits
        memset(A, p, 0, 1, 65, 1),           // one byte past the end
        memset(A, p, 0, 4, 17, 1),           // 68 bytes
        memset(A, p, 8, 4, 4, 2),            // pitch smaller than a row
        memset(A, p, 16, 4, 4, 5),           // 4 * 16 + 16 = 80 bytes
        memset(A, p, 0, 4, u64::MAX / 2, 1), // width * elem overflows
        memset(A, p, u64::MAX / 2, 1, 1, 4), // (height - 1) * pitch overflows
        memset(A, p, u64::MAX, 1, 1, 2),     // ... + row overflows
    ];
    for req in refused {
        let desc = format!("{req:?}");
        assert_eq!(fails(&mut s, req), CuStatus::INVALID_VALUE, "{desc}");
    }
    assert_eq!(fake.state().touches, 0);

    // Nothing to set: no pointer check, no backend call (as the shim does).
    ok(&mut s, memset(A, UNKNOWN, 16, 4, 0, 4));
    ok(&mut s, memset(A, UNKNOWN, 16, 4, 4, 0));
    assert_eq!(fake.state().touches, 0);

    // Exactly the allocation: 4 rows of 4 words 16 bytes apart.
    ok(&mut s, memset(A, p, 16, 4, 4, 4));
    // The last row needs only its own width, not a whole pitch.
    ok(&mut s, memset(A, p, 24, 1, 16, 3));
    ok(&mut s, memset(A, p + 62, 0, 2, 1, 1));
    assert_eq!(fake.state().touches, 3);
    let mut out = [0; 4];
    s.read_chunk(p + 16, &mut out).unwrap();
    assert_eq!(out, [4, 3, 2, 1]);
}

#[test]
fn free_rules() {
    let (mut s, fake) = two_contexts();
    let p = alloc(&mut s, A, 64);
    let g = global_of(&fake, MA);
    let free = |ctx, ptr| Request::MemFree { ctx, ptr };
    s.check_range(g, GLOBAL_SIZE).unwrap();
    let refused = [
        free(A, g),       // a module global
        free(A, p + 1),   // inside an allocation
        free(A, UNKNOWN), // never allocated
        free(B, p),       // another context's
    ];
    for req in refused {
        let desc = format!("{req:?}");
        assert_eq!(fails(&mut s, req), CuStatus::INVALID_VALUE, "{desc}");
    }
    assert!(fake.state().frees.is_empty());
    ok(&mut s, free(A, p));
    assert_eq!(
        fails(&mut s, free(A, p)),
        CuStatus::INVALID_VALUE,
        "double free"
    );
    assert_eq!(fake.state().frees, vec![p]);
}

// ---- quota ----

#[test]
fn quota_edges() {
    let (mut s, _) = session(Some(1000));
    ok(&mut s, ctx_create(A, 0));
    ok(&mut s, ctx_create(B, 1));
    let p = alloc(&mut s, A, 600);
    alloc(&mut s, B, 400);
    assert_eq!(s.held, 1000, "exactly at the quota");
    assert_eq!(
        fails(&mut s, Request::MemAlloc { ctx: A, size: 1 }),
        CuStatus::OUT_OF_MEMORY
    );
    ok(&mut s, Request::MemFree { ctx: A, ptr: p });
    assert_eq!(
        fails(&mut s, Request::MemAlloc { ctx: A, size: 601 }),
        CuStatus::OUT_OF_MEMORY
    );
    let p = alloc(&mut s, A, 600);
    ok(&mut s, Request::MemFree { ctx: A, ptr: p });
    // Sizes near u64::MAX do not wrap past the quota.
    for size in [u64::MAX, u64::MAX - 399, u64::MAX - 1000] {
        assert_eq!(
            fails(&mut s, Request::MemAlloc { ctx: A, size }),
            CuStatus::OUT_OF_MEMORY,
            "{size}"
        );
    }
    assert_eq!(
        fails(&mut s, Request::MemAlloc { ctx: A, size: 0 }),
        CuStatus::INVALID_VALUE
    );
}

#[test]
fn quota_is_per_client_and_released_with_contexts() {
    let (mut s1, _) = session(Some(100));
    let (mut s2, _) = session(Some(100));
    for s in [&mut s1, &mut s2] {
        ok(s, ctx_create(A, 0));
        alloc(s, A, 100);
        assert_eq!(
            fails(s, Request::MemAlloc { ctx: A, size: 1 }),
            CuStatus::OUT_OF_MEMORY
        );
    }
    ok(&mut s1, Request::CtxDestroy { ctx: A });
    ok(&mut s1, ctx_create(A, 0));
    alloc(&mut s1, A, 100);
    ok(&mut s2, Request::CtxReset { ctx: A });
    alloc(&mut s2, A, 100);
}

#[test]
fn module_globals_do_not_count_against_the_quota() {
    let (mut s, _) = session(Some(64));
    ok(&mut s, ctx_create(A, 0));
    load(&mut s, A, MA).unwrap();
    alloc(&mut s, A, 64);
}

// ---- sticky and deferred errors ----

#[test]
fn a_fault_makes_its_context_fail_until_reset() {
    let (mut s, fake) = two_contexts();
    let p = alloc(&mut s, A, 64);
    fake.state().fail_next_launch = Some(CuError::new(CuStatus::ILLEGAL_ADDRESS, "fault"));
    assert_eq!(
        fails(&mut s, launch(A, SA, MA, KERNEL_NO_PARAMS, vec![])),
        CuStatus::ILLEGAL_ADDRESS
    );
    assert_eq!(
        s.take_output(),
        "kernel 0 ran\n",
        "output of a failed kernel is kept"
    );
    for req in stream_requests(A, SA, p, EA, MA).into_iter().chain([
        Request::CtxSynchronize { ctx: A },
        Request::MemAlloc { ctx: A, size: 8 },
        Request::MemFree { ctx: A, ptr: p },
        Request::EventQuery { ctx: A, event: EA },
        Request::ModuleUnload { ctx: A, module: MA },
    ]) {
        let name = req.name();
        assert_eq!(fails(&mut s, req), CuStatus::ILLEGAL_ADDRESS, "{name}");
    }
    assert_eq!(
        status(s.begin_write(A, StreamId(0), p, 8)),
        CuStatus::ILLEGAL_ADDRESS
    );
    assert_eq!(
        status(load(&mut s, A, ModuleId(0x33))),
        CuStatus::ILLEGAL_ADDRESS
    );
    // The other context is not affected.
    ok(&mut s, launch(B, SB, MB, KERNEL_NO_PARAMS, vec![]));

    ok(&mut s, Request::CtxReset { ctx: A });
    assert_eq!(
        fake.state().frees,
        vec![p],
        "reset frees the context's memory"
    );
    assert_eq!(fake.state().unloads, vec![MA.0]);
    ok(&mut s, Request::CtxSynchronize { ctx: A });
    assert_eq!(
        fails(&mut s, Request::StreamSynchronize { ctx: A, stream: SA }),
        CuStatus::INVALID_HANDLE,
        "reset released the stream"
    );
    alloc(&mut s, A, 8);
}

#[test]
fn faulted_context_can_still_be_destroyed() {
    let (mut s, fake) = two_contexts();
    fake.state().fail_next_launch = Some(CuError::new(CuStatus::LAUNCH_FAILED, "fault"));
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), MA, KERNEL_NO_PARAMS, vec![])),
        CuStatus::LAUNCH_FAILED
    );
    ok(&mut s, Request::CtxDestroy { ctx: A });
    ok(&mut s, ctx_create(A, 0));
    ok(&mut s, Request::CtxSynchronize { ctx: A });
}

#[test]
fn a_non_sticky_launch_failure_does_not_poison_the_context() {
    let (mut s, fake) = two_contexts();
    fake.state().fail_next_launch =
        Some(CuError::new(CuStatus::LAUNCH_OUT_OF_RESOURCES, "too many"));
    assert_eq!(
        fails(&mut s, launch(A, StreamId(0), MA, KERNEL_NO_PARAMS, vec![])),
        CuStatus::LAUNCH_OUT_OF_RESOURCES
    );
    ok(&mut s, launch(A, StreamId(0), MA, KERNEL_NO_PARAMS, vec![]));
}

#[test]
fn deferred_error_is_reported_once_by_the_next_reply() {
    let (mut s, _) = two_contexts();
    assert_eq!(s.settle(Ok(5)), Ok(5));
    s.defer(CuError::new(CuStatus::INVALID_HANDLE, "first"));
    s.defer(CuError::new(CuStatus::INVALID_VALUE, "second"));
    let err = s.settle(Ok(())).unwrap_err();
    assert_eq!(
        (err.status, err.message.as_str()),
        (CuStatus::INVALID_HANDLE, "first")
    );
    assert_eq!(s.settle(Ok(7)), Ok(7), "reported only once");
}

#[test]
fn a_calls_own_error_wins_over_a_deferred_one() {
    let (mut s, _) = two_contexts();
    s.defer(CuError::new(CuStatus::INVALID_HANDLE, "deferred"));
    let own = s.settle::<()>(Err(CuError::new(CuStatus::OUT_OF_MEMORY, "own")));
    assert_eq!(status(own), CuStatus::OUT_OF_MEMORY);
    // The deferred error was consumed with that reply.
    assert_eq!(s.settle(Ok(())), Ok(()));
}

#[test]
fn posted_failure_flows_into_the_next_reply() {
    let (mut s, _) = two_contexts();
    // As the connection does for a call that wants no reply.
    let r = s.reply_to(launch(B, SA, MB, KERNEL_NO_PARAMS, vec![]));
    s.defer(r.unwrap_err());
    let next = s.reply_to(Request::CtxSynchronize { ctx: A });
    assert_eq!(status(s.settle(next)), CuStatus::INVALID_HANDLE);
    let next = s.reply_to(Request::CtxSynchronize { ctx: A });
    assert_eq!(status(s.settle(next)), CuStatus::SUCCESS);
}

// ---- the rest of the dispatch ----

#[test]
fn bulk_requests_become_steps_for_the_connection() {
    let (mut s, _) = two_contexts();
    assert_eq!(
        fails(&mut s, Request::SetWindows { windows: vec![] }),
        CuStatus::ILLEGAL_STATE
    );
    assert!(matches!(
        s.handle(Request::MemcpyHtoD {
            ctx: A,
            stream: StreamId(0),
            dst: 0x10,
        }),
        Step::Receive {
            ctx: A,
            stream: StreamId(0),
            dst: 0x10
        }
    ));
    // A read is checked before any byte moves.
    let Step::Send { check, .. } = s.handle(Request::MemcpyDtoH {
        ctx: A,
        stream: StreamId(0),
        src: 0,
        size: 4,
    }) else {
        panic!("a device-to-host copy sends data");
    };
    assert_eq!(check.unwrap_err().status, CuStatus::INVALID_VALUE);
    assert!(matches!(
        s.handle(Request::ModuleHave { hash: [7; 32] }),
        Step::HaveImage { hash: [7, ..] }
    ));
    assert!(matches!(
        s.handle(Request::ModuleLoad {
            ctx: A,
            module: ModuleId(0x33),
            hash: [0; 32],
            kernels: None,
        }),
        Step::ReceiveImage {
            module: ModuleId(0x33),
            ..
        }
    ));
    assert_eq!(ok(&mut s, Request::Flush), ReplyBody::None);
}

#[test]
fn memory_info_checks_the_device() {
    let (mut s, _) = session(None);
    assert_eq!(
        ok(&mut s, Request::MemGetInfo { device: 1 }),
        ReplyBody::MemInfo {
            free: 1000,
            total: 2000,
            utilization: None,
        }
    );
    assert_eq!(
        fails(&mut s, Request::MemGetInfo { device: 2 }),
        CuStatus::INVALID_DEVICE
    );
}

#[test]
fn an_allocation_placed_by_the_client_needs_a_lease() {
    let (mut s, _) = two_contexts();
    assert_eq!(
        fails(
            &mut s,
            Request::MemAllocAt {
                ctx: A,
                ptr: 0x7000_0000,
                size: 64,
            }
        ),
        CuStatus::INVALID_VALUE
    );
    // The fake backend cannot place allocations where told: no lease is granted.
    assert_eq!(
        s.grant_lease(1 << 20).unwrap_err().status,
        CuStatus::NOT_SUPPORTED
    );
    assert_eq!(s.grant_lease(0), Ok(()));
}

#[test]
fn ipc_names_only_the_clients_own_allocations_and_its_own_openings() {
    let (mut s, _) = session(None);
    ok(&mut s, ctx_create(CtxId(1), 0));
    let ptr = match ok(
        &mut s,
        Request::MemAlloc {
            ctx: CtxId(1),
            size: 64,
        },
    ) {
        ReplyBody::Ptr { ptr } => ptr,
        other => panic!("{other:?}"),
    };
    // Not an allocation start, or no allocation at all: refused before the backend is asked.
    for p in [ptr + 8, 0x1234] {
        assert_eq!(
            fails(
                &mut s,
                Request::IpcExport {
                    ctx: CtxId(1),
                    ptr: p
                }
            ),
            CuStatus::INVALID_VALUE
        );
    }
    // The fake backend shares nothing: its own allocation gets the backend's answer.
    assert_eq!(
        fails(&mut s, Request::IpcExport { ctx: CtxId(1), ptr }),
        CuStatus::NOT_SUPPORTED
    );
    // Closing what was never opened, or the client's own allocation.
    for p in [ptr, 0x1234] {
        assert_eq!(
            fails(
                &mut s,
                Request::IpcClose {
                    ctx: CtxId(1),
                    ptr: p
                }
            ),
            CuStatus::INVALID_VALUE
        );
    }
    assert_eq!(
        fails(
            &mut s,
            Request::IpcOpen {
                ctx: CtxId(99),
                handle: [0; 64]
            }
        ),
        CuStatus::INVALID_CONTEXT
    );
}

#[test]
fn a_fixed_allocation_the_backend_cannot_place_holds_nothing_of_the_quota() {
    let (mut s, _) = session(Some(4096));
    ok(&mut s, ctx_create(A, 0));
    let fixed = Request::MemAllocFixed {
        ctx: A,
        ptr: 0x7000_0000,
        size: 4096,
    };
    // The fake backend cannot place allocations where told.
    assert_eq!(fails(&mut s, fixed), CuStatus::NOT_SUPPORTED);
    let zero = Request::MemAllocFixed {
        ctx: A,
        ptr: 0x7000_0000,
        size: 0,
    };
    assert_eq!(fails(&mut s, zero), CuStatus::INVALID_VALUE);
    // The whole quota is still there.
    alloc(&mut s, A, 4096);
}
