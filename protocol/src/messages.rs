//! Requests the shim sends and replies the server returns, as plain rkyv structs.
//!
//! Handles (contexts, streams, events, modules, functions) are minted by the client and only
//! checked by the server; device pointers are minted by the server inside the client's address
//! windows. Bulk bytes never travel inside a message: a request or reply that carries data says
//! so in its frame's payload length, and the bytes follow the header raw (see [`crate::frame`]).

use rkyv::{Archive, Deserialize, Serialize};

/// Declares the handle newtypes: client-minted numbers the server only checks and maps.
macro_rules! handles {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[derive(
                Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash,
                PartialOrd, Ord, Default,
            )]
            pub struct $name(pub u64);

            impl std::fmt::LowerHex for $name {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    std::fmt::LowerHex::fmt(&self.0, f)
                }
            }
        )*
    };
}

handles! {
    /// A context.
    CtxId;
    /// A stream; 0 is a context's default stream.
    StreamId;
    /// An event.
    EventId;
    /// A loaded module.
    ModuleId;
}

impl StreamId {
    /// A context's default (legacy) stream.
    pub const DEFAULT: StreamId = StreamId(0);
}

/// An address window the client reserved in its own process for one device; the server places
/// that device's allocations inside it, so device pointers never collide with host memory.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub device: u32,
    pub base: u64,
    pub size: u64,
}

/// What a client asks of a server. Every variant names the context it acts in where the CUDA
/// call has one; `stream` is 0 for a context's default stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// First request of a session: the address windows the client reserved, one per device.
    SetWindows {
        windows: Vec<Window>,
    },
    /// Does nothing: a round trip that collects what earlier queued calls owe the client.
    Flush,
    /// Free and total memory of a device, as `cuMemGetInfo` reports, and how busy it is.
    MemGetInfo {
        device: u32,
    },
    CtxCreate {
        ctx: CtxId,
        device: u32,
        flags: u32,
    },
    CtxDestroy {
        ctx: CtxId,
    },
    CtxSynchronize {
        ctx: CtxId,
    },
    /// `cuDevicePrimaryCtxReset`: frees everything the context owns.
    CtxReset {
        ctx: CtxId,
    },
    MemAlloc {
        ctx: CtxId,
        size: u64,
    },
    MemFree {
        ctx: CtxId,
        ptr: u64,
    },
    /// An allocation the client placed itself, at `ptr` in the upper half of the device's
    /// window, inside the memory lease the server granted (`ServerInfo::lease`): never waited
    /// for, because the lease was reserved for the session when it began.
    MemAllocAt {
        ctx: CtxId,
        ptr: u64,
        size: u64,
    },
    /// An allocation at `ptr` in the lower half of the device's window, where another device
    /// already placed it: the pool's virtual GPU maps every allocation at one address on all of
    /// its members. Counted against the session's quota like `MemAlloc`.
    MemAllocFixed {
        ctx: CtxId,
        ptr: u64,
        size: u64,
    },
    /// Host to device; the bytes follow as the frame's payload.
    MemcpyHtoD {
        ctx: CtxId,
        stream: StreamId,
        dst: u64,
    },
    /// Device to host; the reply's payload carries `size` bytes.
    MemcpyDtoH {
        ctx: CtxId,
        stream: StreamId,
        src: u64,
        size: u64,
    },
    MemcpyDtoD {
        ctx: CtxId,
        stream: StreamId,
        dst: u64,
        src: u64,
        size: u64,
    },
    /// `height` rows of `width` elements of `elem` bytes (1, 2, 4), rows `pitch` bytes apart.
    Memset {
        ctx: CtxId,
        stream: StreamId,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
    },
    StreamCreate {
        ctx: CtxId,
        stream: StreamId,
        flags: u32,
        priority: i32,
    },
    StreamDestroy {
        ctx: CtxId,
        stream: StreamId,
    },
    StreamSynchronize {
        ctx: CtxId,
        stream: StreamId,
    },
    StreamQuery {
        ctx: CtxId,
        stream: StreamId,
    },
    StreamWaitEvent {
        ctx: CtxId,
        stream: StreamId,
        event: EventId,
    },
    EventCreate {
        ctx: CtxId,
        event: EventId,
        flags: u32,
    },
    EventRecord {
        ctx: CtxId,
        event: EventId,
        stream: StreamId,
    },
    EventSynchronize {
        ctx: CtxId,
        event: EventId,
    },
    EventQuery {
        ctx: CtxId,
        event: EventId,
    },
    EventElapsed {
        ctx: CtxId,
        start: EventId,
        end: EventId,
    },
    EventDestroy {
        ctx: CtxId,
        event: EventId,
    },
    /// Whether the server already holds the module image with this content hash.
    ModuleHave {
        hash: [u8; 32],
    },
    /// Loads a module image; the image bytes follow as the payload unless the server already
    /// has `hash` (then the payload is empty).
    ModuleLoad {
        ctx: CtxId,
        module: ModuleId,
        hash: [u8; 32],
        /// Set by a client that read the image's kernels itself and goes on without waiting for
        /// this reply (a *posted* load): the kernels' names in the order its launches number
        /// them ([`kernel_order`] maps them to the device's). The reply then carries this
        /// load's own outcome only (an earlier call's deferred error waits for the next
        /// reply), and if the load fails, every later launch of the module fails with its
        /// error. `None`: the client waits, and kernels are numbered as the reply lists them.
        kernels: Option<Vec<String>>,
    },
    ModuleUnload {
        ctx: CtxId,
        module: ModuleId,
    },
    /// What the server (or pool) is doing: its devices, sessions, members and queue, as JSON
    /// for `remora status`. Allowed before `SetWindows`.
    Status,
    /// A kernel launch. `params` is the packed parameter buffer laid out per the function's
    /// [`KernelDesc`].
    Launch {
        ctx: CtxId,
        stream: StreamId,
        module: ModuleId,
        kernel: u32,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        params: Vec<u8>,
        /// `cuLaunchCooperativeKernel` (or the cooperative launch attribute): the grid must
        /// fit on the device at once, and its blocks may synchronise with each other.
        cooperative: bool,
    },
    /// `cuIpcGetMemHandle`: a handle to the allocation starting at `ptr` that another client of
    /// this server, presenting the same token, may open.
    IpcExport {
        ctx: CtxId,
        ptr: u64,
    },
    /// `cuIpcOpenMemHandle`: maps the allocation a handle names into this client's memory, on
    /// `ctx`'s device; the reply's pointer is where it appears here.
    IpcOpen {
        ctx: CtxId,
        handle: IpcHandle,
    },
    /// `cuIpcCloseMemHandle`: removes a mapping made by `IpcOpen`.
    IpcClose {
        ctx: CtxId,
        ptr: u64,
    },
}

/// The 64 opaque bytes of a `CUipcMemHandle`: random, so not guessable.
pub type IpcHandle = [u8; 64];

impl Request {
    /// The body a successful reply to this request carries: the client refuses any other as a
    /// protocol error, so a request and its reply type cannot drift apart.
    pub fn reply_kind(&self) -> ReplyKind {
        match self {
            Request::MemAlloc { .. } => ReplyKind::Ptr,
            Request::IpcOpen { .. } => ReplyKind::Mapped,
            Request::IpcExport { .. } => ReplyKind::Ipc,
            Request::MemGetInfo { .. } => ReplyKind::MemInfo,
            Request::MemcpyDtoH { .. } => ReplyKind::Data,
            Request::EventElapsed { .. } => ReplyKind::Elapsed,
            Request::ModuleHave { .. } => ReplyKind::Have,
            Request::ModuleLoad { .. } => ReplyKind::Module,
            Request::Status => ReplyKind::Status,
            Request::SetWindows { .. }
            | Request::Flush
            | Request::CtxCreate { .. }
            | Request::CtxDestroy { .. }
            | Request::CtxSynchronize { .. }
            | Request::CtxReset { .. }
            | Request::MemFree { .. }
            | Request::MemAllocAt { .. }
            | Request::MemAllocFixed { .. }
            | Request::MemcpyHtoD { .. }
            | Request::MemcpyDtoD { .. }
            | Request::Memset { .. }
            | Request::StreamCreate { .. }
            | Request::StreamDestroy { .. }
            | Request::StreamSynchronize { .. }
            | Request::StreamQuery { .. }
            | Request::StreamWaitEvent { .. }
            | Request::EventCreate { .. }
            | Request::EventRecord { .. }
            | Request::EventSynchronize { .. }
            | Request::EventQuery { .. }
            | Request::EventDestroy { .. }
            | Request::ModuleUnload { .. }
            | Request::IpcClose { .. }
            | Request::Launch { .. } => ReplyKind::None,
        }
    }

    /// Whether the request only waits for (or asks about) work already queued, changing
    /// nothing: when no work is outstanding, its answer is success without asking.
    pub fn waits_only(&self) -> bool {
        matches!(
            self,
            Request::CtxSynchronize { .. }
                | Request::StreamSynchronize { .. }
                | Request::StreamQuery { .. }
                | Request::EventSynchronize { .. }
                | Request::EventQuery { .. }
                | Request::Flush
        )
    }

    /// Whether the request's frame carries bytes after it (host-to-device data, a module
    /// image). Every other request's payload is ignored.
    pub fn carries_payload(&self) -> bool {
        matches!(
            self,
            Request::MemcpyHtoD { .. } | Request::ModuleLoad { .. }
        )
    }

    /// The name used in logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::SetWindows { .. } => "SetWindows",
            Request::Flush => "Flush",
            Request::MemGetInfo { .. } => "MemGetInfo",
            Request::CtxCreate { .. } => "CtxCreate",
            Request::CtxDestroy { .. } => "CtxDestroy",
            Request::CtxSynchronize { .. } => "CtxSynchronize",
            Request::CtxReset { .. } => "CtxReset",
            Request::MemAlloc { .. } => "MemAlloc",
            Request::MemFree { .. } => "MemFree",
            Request::MemAllocAt { .. } => "MemAllocAt",
            Request::MemAllocFixed { .. } => "MemAllocFixed",
            Request::MemcpyHtoD { .. } => "MemcpyHtoD",
            Request::MemcpyDtoH { .. } => "MemcpyDtoH",
            Request::MemcpyDtoD { .. } => "MemcpyDtoD",
            Request::Memset { .. } => "Memset",
            Request::StreamCreate { .. } => "StreamCreate",
            Request::StreamDestroy { .. } => "StreamDestroy",
            Request::StreamSynchronize { .. } => "StreamSynchronize",
            Request::StreamQuery { .. } => "StreamQuery",
            Request::StreamWaitEvent { .. } => "StreamWaitEvent",
            Request::EventCreate { .. } => "EventCreate",
            Request::EventRecord { .. } => "EventRecord",
            Request::EventSynchronize { .. } => "EventSynchronize",
            Request::EventQuery { .. } => "EventQuery",
            Request::EventElapsed { .. } => "EventElapsed",
            Request::EventDestroy { .. } => "EventDestroy",
            Request::ModuleHave { .. } => "ModuleHave",
            Request::ModuleLoad { .. } => "ModuleLoad",
            Request::ModuleUnload { .. } => "ModuleUnload",
            Request::Launch { .. } => "Launch",
            Request::Status => "Status",
            Request::IpcExport { .. } => "IpcExport",
            Request::IpcOpen { .. } => "IpcOpen",
            Request::IpcClose { .. } => "IpcClose",
        }
    }
}

/// One parameter of a kernel: where it sits in the packed parameter buffer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamDesc {
    pub offset: u32,
    pub size: u32,
}

/// A kernel of a loaded module, as the client needs it to launch without a round trip.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KernelDesc {
    pub name: String,
    pub params: Vec<ParamDesc>,
    pub shared_bytes: u32,
    pub local_bytes: u32,
    pub num_regs: u32,
    pub max_threads: u32,
    /// Bytes of `.const` variables the kernel may use (`CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES`).
    pub const_bytes: u32,
}

/// How a module's kernels are numbered when a client named them itself
/// ([`Request::ModuleLoad::kernels`]): for each of the client's numbers, the position in
/// `loaded` (the kernels the device's module holds, as its load reply lists them) of the kernel
/// of that name, or `None` if the device's module lacks it. The client's names come first, in
/// its order; after them, the loaded kernels it did not name, in their order. Without names, the
/// numbering is the loaded order itself. Both ends of a posted load use this one rule.
pub fn kernel_order(client: Option<&[String]>, loaded: &[KernelDesc]) -> Vec<Option<usize>> {
    let Some(names) = client else {
        return (0..loaded.len()).map(Some).collect();
    };
    let mut order: Vec<Option<usize>> = names
        .iter()
        .map(|n| loaded.iter().position(|k| &k.name == n))
        .collect();
    let named: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    order.extend(
        loaded
            .iter()
            .enumerate()
            .filter(|(_, k)| !named.contains(k.name.as_str()))
            .map(|(i, _)| Some(i)),
    );
    order
}

/// A module-scope variable, placed in device memory at load.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GlobalDesc {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

/// Which [`ReplyBody`] a request's successful reply carries ([`Request::reply_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    None,
    Ptr,
    MemInfo,
    Data,
    Elapsed,
    Have,
    Module,
    Status,
    Ipc,
    Mapped,
}

impl ReplyBody {
    pub fn kind(&self) -> ReplyKind {
        match self {
            ReplyBody::None => ReplyKind::None,
            ReplyBody::Ptr { .. } => ReplyKind::Ptr,
            ReplyBody::MemInfo { .. } => ReplyKind::MemInfo,
            ReplyBody::Data => ReplyKind::Data,
            ReplyBody::Elapsed { .. } => ReplyKind::Elapsed,
            ReplyBody::Have { .. } => ReplyKind::Have,
            ReplyBody::Module { .. } => ReplyKind::Module,
            ReplyBody::Status { .. } => ReplyKind::Status,
            ReplyBody::Ipc { .. } => ReplyKind::Ipc,
            ReplyBody::Mapped { .. } => ReplyKind::Mapped,
        }
    }
}

/// What a reply carries besides its status.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ReplyBody {
    None,
    Ptr {
        ptr: u64,
    },
    MemInfo {
        free: u64,
        total: u64,
        /// Percent of the last second the device ran kernels (NVML's `utilization.gpu`);
        /// `None` where the backend cannot tell.
        utilization: Option<u32>,
    },
    /// The frame's payload holds the bytes asked for.
    Data,
    Elapsed {
        ms: f32,
    },
    Have {
        present: bool,
    },
    Module {
        kernels: Vec<KernelDesc>,
        globals: Vec<GlobalDesc>,
    },
    /// `remora status`'s report, JSON.
    Status {
        json: String,
    },
    /// A `CUipcMemHandle`.
    Ipc {
        handle: IpcHandle,
    },
    /// Where another client's memory was mapped, and its size.
    Mapped {
        ptr: u64,
        size: u64,
    },
}

/// The answer to a request that wanted one. `status` may be the deferred error of an earlier
/// asynchronous request, reported here as CUDA reports asynchronous errors at the next
/// synchronising call; `output` is kernel `printf` text produced since the last reply.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u32,
    pub message: String,
    pub output: String,
    pub body: ReplyBody,
    /// All the session's work was complete when this reply left: a synchronising call made
    /// before any new work can be answered by the client itself.
    pub idle: bool,
}

impl Reply {
    pub fn ok(body: ReplyBody) -> Self {
        Self {
            status: 0,
            message: String::new(),
            output: String::new(),
            body,
            idle: false,
        }
    }

    pub fn error(status: crate::CuStatus, message: impl Into<String>) -> Self {
        Self {
            status: status.0,
            message: message.into(),
            output: String::new(),
            body: ReplyBody::None,
            idle: false,
        }
    }
}

/// What a client asks of the server it connects to, in its hello. A plain server gives every
/// session all its devices (and takes `memory` as the session's quota when it is smaller than
/// its own); a pool places the session on `gpus` free GPUs of one member.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRequest {
    /// GPUs wanted (0: as many as a plain server has; a pool gives 1).
    pub gpus: u32,
    /// Device memory the session may hold, all devices together (0: no quota asked for).
    pub memory: u64,
    /// How long the client waits in a pool's queue before giving up (0: the server's default).
    pub queue_timeout_ms: u64,
    /// Looks without taking a GPU (`remora status`, `remora devices`).
    pub observer: bool,
    /// A pool: one virtual GPU backed by this many members (0 or 1: an ordinary placement).
    pub virtual_gpu: u32,
}

/// Server facts the client caches for the life of the connection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub driver_version: i32,
    pub server_name: String,
    pub devices: Vec<DeviceInfo>,
    /// Device memory the server reserves for this session on each device, which the client
    /// allocates itself in the upper half of that device's window ([`Request::MemAllocAt`]),
    /// with no round trip; 0 when the backend cannot place allocations where the client says.
    pub lease: u64,
}

/// Everything the driver API reports about a device, fetched once at connect.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub name: String,
    pub uuid: [u8; 16],
    pub total_mem: u64,
    /// `CUdevice_attribute` value -> answer; absent attributes answer 0.
    pub attributes: Vec<(u32, i32)>,
    /// True for the emulated backend (the shim tells clients to prefer PTX).
    pub emulated: bool,
}

impl DeviceInfo {
    pub fn attribute(&self, attr: u32) -> Option<i32> {
        self.attributes.iter().find(|a| a.0 == attr).map(|a| a.1)
    }

    /// Blocks of `threads` threads using `shared` bytes of shared memory (static plus
    /// dynamic) that one multiprocessor holds at once, by the device's threads, blocks and
    /// shared memory per multiprocessor (registers are not counted): what occupancy queries
    /// answer, and what a cooperative launch may place on each multiprocessor.
    pub fn blocks_per_sm(&self, threads: u32, shared: u64) -> u32 {
        let attr = |a, default: i32| self.attribute(a).filter(|&v| v > 0).unwrap_or(default) as u64;
        if threads == 0 {
            return 0;
        }
        let warps = u64::from(threads).div_ceil(32) * 32;
        let by_threads = attr(39, 2048) / warps; // MAX_THREADS_PER_MULTIPROCESSOR
        let by_blocks = attr(106, 32); // MAX_BLOCKS_PER_MULTIPROCESSOR
        let by_shared = attr(81, 167_936).checked_div(shared).unwrap_or(u64::MAX); // ..._SHARED_MEMORY_PER_MULTIPROCESSOR
        by_threads.min(by_blocks).min(by_shared) as u32
    }

    /// The most blocks of that shape a cooperative launch may have: all of them resident at
    /// once on every multiprocessor (`MULTIPROCESSOR_COUNT`).
    pub fn cooperative_blocks(&self, threads: u32, shared: u64) -> u64 {
        let sms = self.attribute(16).filter(|&v| v > 0).unwrap_or(1) as u64;
        u64::from(self.blocks_per_sm(threads, shared)) * sms
    }
}

/// Serialise any message to rkyv bytes.
///
/// Uses a fresh arena rather than rkyv's thread-local one: the shim encodes from exit handlers,
/// when thread-locals are already gone.
pub fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let mut arena = rkyv::ser::allocator::Arena::new();
    // Serialising plain structs into a growable buffer cannot fail.
    rkyv::api::high::to_bytes_with_alloc::<_, rkyv::rancor::Error>(value, arena.acquire())
        .map(|v| v.to_vec())
        .unwrap_or_default()
}

/// Validate and decode a message from bytes a peer sent.
pub fn decode<T>(bytes: &[u8]) -> Result<T, crate::FrameError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    // rkyv requires aligned input; frames arrive at arbitrary offsets, so copy when needed.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned)
        .map_err(|e| crate::FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernels_a_client_named_keep_its_numbers_and_the_rest_follow() {
        let k = |name: &str| KernelDesc {
            name: name.into(),
            params: Vec::new(),
            shared_bytes: 0,
            local_bytes: 0,
            num_regs: 1,
            max_threads: 1024,
            const_bytes: 0,
        };
        let loaded = [k("b"), k("extra"), k("a")];
        assert_eq!(kernel_order(None, &loaded), vec![Some(0), Some(1), Some(2)]);
        let names = ["a".to_string(), "b".into(), "missing".into()];
        assert_eq!(
            kernel_order(Some(&names), &loaded),
            vec![Some(2), Some(0), None, Some(1)]
        );
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<(u64, u64)>().prop_map(|(ctx, size)| Request::MemAlloc {
                ctx: CtxId(ctx),
                size
            }),
            any::<(u64, u64, u64)>().prop_map(|(ctx, stream, dst)| Request::MemcpyHtoD {
                ctx: CtxId(ctx),
                stream: StreamId(stream),
                dst
            }),
            any::<(u64, u64, u32, u8, u64)>().prop_map(|(ctx, dst, value, elem, width)| {
                Request::Memset {
                    ctx: CtxId(ctx),
                    stream: StreamId::DEFAULT,
                    dst,
                    pitch: width,
                    value,
                    elem,
                    width,
                    height: 1,
                }
            }),
            proptest::collection::vec(any::<(u32, u64, u64)>(), 0..4).prop_map(|w| {
                Request::SetWindows {
                    windows: w
                        .into_iter()
                        .map(|(device, base, size)| Window { device, base, size })
                        .collect(),
                }
            }),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
                any::<[u32; 3]>()
            )
                .prop_map(|(module, params, grid)| Request::Launch {
                    ctx: CtxId(1),
                    stream: StreamId::DEFAULT,
                    module: ModuleId(module),
                    kernel: 3,
                    grid,
                    block: [32, 1, 1],
                    shared: 0,
                    params,
                    cooperative: grid[0] % 2 == 0,
                }),
            (
                any::<[u8; 32]>(),
                proptest::option::of(proptest::collection::vec("[a-z_]{1,12}", 0..4))
            )
                .prop_map(|(hash, kernels)| Request::ModuleLoad {
                    ctx: CtxId(1),
                    module: ModuleId(2),
                    hash,
                    kernels,
                }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in arb_request()) {
            let bytes = encode(&req);
            prop_assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        }

        #[test]
        fn replies_round_trip(status in any::<u32>(), message in ".{0,40}", ptr in any::<u64>()) {
            let reply = Reply { status, message, output: String::new(), body: ReplyBody::Ptr { ptr }, idle: status % 2 == 0 };
            let bytes = encode(&reply);
            prop_assert_eq!(decode::<Reply>(&bytes).unwrap(), reply);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Reply>(&bytes);
        }
    }
}
