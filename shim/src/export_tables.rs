//! cudart's private export tables, answered by `cuGetExportTable`.
//!
//! NVIDIA's runtime (cudart, static and shared, 12.x and 13.x) refuses to initialise unless the
//! driver hands out a handful of undocumented function tables, one of which computes an
//! HMAC-MD2 "integrity check" over the process id, the calling thread, the table addresses and
//! the devices' identities. `docs/CUDA-COMPAT.md` ("cudart's private export tables" and "The
//! integrity check") records which tables and slots cudart actually calls; this module answers
//! exactly those and nothing more.
//!
//! Layout follows the real driver as ZLUDA documents it: a table is an array of pointer-sized
//! slots, slot 0 holds the table's size in bytes, and the slot numbers in docs/CUDA-COMPAT.md index
//! that array directly (so "slot 2" is the third word). The context-local-storage table is the
//! exception: it has no size word, its slot 0 is already a function. Every slot the module does
//! not implement holds its own small function that logs `(table, slot)` once and returns
//! `CUDA_ERROR_NOT_SUPPORTED`, so an unexpected call is visible instead of a jump through NULL.
//!
//! What it deliberately does not do: talk to a server, or know about devices. That comes from
//! the rest of the shim through [`Host`], installed once with [`install`]. Context-local
//! storage is kept by the context that owns it, in the shim's [registry](crate::registry).
//! The shim must report the same driver version, UUIDs and PCI ids from `cuDriverGetVersion`,
//! `cuDeviceGetUuid` and `cuDeviceGetAttribute` as [`Host`] reports here (fetch once, cache),
//! or cudart's integrity check fails with 103.
//!
//! Main items: [`get_export_table`] (the body of `cuGetExportTable`), [`integrity_hash`] (a pure
//! function, tested against ZLUDA's published vector), [`Host`] and [`DeviceIdentity`].
//! Tables are `static`s, so their addresses are stable for the life of the process, as cudart
//! needs (CuPy links two copies of cudart into one process and both hash the same addresses).

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use hmac::digest::KeyInit;
use hmac::{Mac, SimpleHmac};
use md2::Md2;

use crate::registry::{registry, StorageDestructor};

// CUresult values used here (cuda.h).
const CUDA_SUCCESS: u32 = 0;
const CUDA_ERROR_INVALID_VALUE: u32 = 1;
const CUDA_ERROR_NOT_INITIALIZED: u32 = 3;
#[cfg(test)]
const CUDA_ERROR_INVALID_HANDLE: u32 = 400;
const CUDA_ERROR_NOT_SUPPORTED: u32 = 801;
const CUDA_ERROR_UNKNOWN: u32 = 999;

// Slots hold raw words; the size word and function addresses must both fit one.
const _: () = assert!(size_of::<*const c_void>() == size_of::<usize>());
const _: () = assert!(size_of::<c_int>() == 4);
// DeviceIdentity is hashed field by field, matching the driver's packed 28-byte record.
const _: () = assert!(size_of::<DeviceIdentity>() == 28);

/// What the export tables need from the rest of the shim. Installed once at load time.
#[derive(Clone, Copy)]
pub struct Host {
    /// Exactly what cuDriverGetVersion reports.
    pub driver_version: fn() -> i32,
    /// For each device in order: (uuid bytes as cuDeviceGetUuid reports, PCI domain, bus,
    /// device) — or a CUresult error.
    pub devices: fn() -> Result<Vec<DeviceIdentity>, u32>,
    /// Retains/returns the primary context of a device (slot 2 of the cudart interface table):
    /// handle or CUresult.
    pub primary_context: fn(i32) -> Result<*mut c_void, u32>,
}

/// One device's identity as it enters the integrity hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// As `cuDeviceGetUuid` reports it.
    pub uuid: [u8; 16],
    /// `CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID`.
    pub pci_domain: i32,
    /// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`.
    pub pci_bus: i32,
    /// `CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID`.
    pub pci_device: i32,
}

static HOST: OnceLock<Host> = OnceLock::new();

/// Installs the shim's callbacks. The first call wins; later calls are ignored, because
/// cudart may already have hashed values obtained through the first.
pub fn install(host: Host) {
    let _ = HOST.set(host);
}

fn host() -> Result<&'static Host, u32> {
    HOST.get().ok_or(CUDA_ERROR_NOT_INITIALIZED)
}

/// The body of cuGetExportTable: writes the table pointer for a known UUID; returns a CUresult
/// (0 success).
///
/// Unknown UUIDs (cuBLAS and cuDNN ask for their own, cudart asks `f8cff951...` before
/// `cuInit`) are logged once and refused with `CUDA_ERROR_INVALID_VALUE`, as ZLUDA does; `*out`
/// is left untouched. SUCCESS is never returned with a NULL table, which crashes cudart.
///
/// # Safety
///
/// `out` must be NULL or valid for writing one pointer; `uuid` must be NULL or point to 16
/// readable bytes. Null out-pointers/uuids return CUDA_ERROR_INVALID_VALUE (1).
pub unsafe fn get_export_table(out: *mut *const c_void, uuid: *const [u8; 16]) -> u32 {
    if out.is_null() || uuid.is_null() {
        return CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: non-null, and the caller promises 16 readable bytes; CUuuid has alignment 1, so
    // read without assuming more.
    let uuid = unsafe { ptr::read_unaligned(uuid) };
    let Some(table) = table_for(&uuid) else {
        log_unknown_uuid(&uuid);
        return CUDA_ERROR_INVALID_VALUE;
    };
    // SAFETY: non-null, and the caller promises it is writable.
    unsafe { ptr::write_unaligned(out, table) };
    CUDA_SUCCESS
}

/// Pure function: the HMAC-MD2 integrity hash over the message described in docs/CUDA-COMPAT.md.
///
/// HMAC with MD2 (RFC 1319, block size 16) and a fixed 16-byte key over, little-endian: driver
/// version, `version`, pid, thread (all u32), the cudart-interface table, the integrity table
/// and the slot-1 function addresses, `unix_seconds` (all u64), then per device its UUID bytes
/// and PCI domain, bus and device (i32). The 16-byte digest is returned as two words in memory
/// order, which is how cudart reads its `u64 out[2]`.
#[allow(clippy::too_many_arguments)] // the message has exactly these fields
pub fn integrity_hash(
    driver_version: u32,
    version: u32,
    pid: u32,
    thread: u32,
    iface_table: u64,
    integrity_table: u64,
    slot_fn: u64,
    unix_seconds: u64,
    devices: &[DeviceIdentity],
) -> [u64; 2] {
    // ZLUDA's reverse engineering of the driver: the first pass derives this key from nothing
    // but constants.
    const KEY: [u8; 16] = [
        0x14, 0x6a, 0xdd, 0xae, 0x53, 0xa9, 0xa7, 0x52, 0xaa, 0x08, 0x41, 0x36, 0x0b, 0xf5, 0x5a,
        0x9f,
    ];
    let mut mac = <SimpleHmac<Md2> as KeyInit>::new(&KEY.into());
    mac.update(&driver_version.to_le_bytes());
    mac.update(&version.to_le_bytes());
    mac.update(&pid.to_le_bytes());
    mac.update(&thread.to_le_bytes());
    mac.update(&iface_table.to_le_bytes());
    mac.update(&integrity_table.to_le_bytes());
    mac.update(&slot_fn.to_le_bytes());
    mac.update(&unix_seconds.to_le_bytes());
    for device in devices {
        mac.update(&device.uuid);
        mac.update(&device.pci_domain.to_le_bytes());
        mac.update(&device.pci_bus.to_le_bytes());
        mac.update(&device.pci_device.to_le_bytes());
    }
    let digest = mac.finalize().into_bytes();
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&digest[..8]);
    hi.copy_from_slice(&digest[8..]);
    [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
}

/// `version % 10 == 0` and `== 1` answers: constants, no hashing (ZLUDA; docs/CUDA-COMPAT.md).
const INTEGRITY_V0: [u64; 2] = [0x3341181c03cb675c, 0x8ed383aa1f4cd1e8];
const INTEGRITY_V1: [u64; 2] = [0x1841181c03cb675c, 0x8ed383aa1f4cd1e8];

// ---------------------------------------------------------------------------------------------
// The tables

const UUID_CUDART_INTERFACE: [u8; 16] = uuid(0x6bd5fb6c5bf4e74a8987d93912fd9df9);
const UUID_TOOLS_HOOKS: [u8; 16] = uuid(0xa094798c2e742e7493f20800200c0a66);
const UUID_TOOLS_TLS: [u8; 16] = uuid(0x42d85a8123f6cb478298f6e78a3aecdc);
const UUID_21318C60: [u8; 16] = uuid(0x21318c60971432488ca641ff7324c8f2);
const UUID_CLS: [u8; 16] = uuid(0xc693336e1121df11a8c368f355d89593);
const UUID_CONTEXT_CHECKS: [u8; 16] = uuid(0x263e88607cd2614392f6bbd5006dfa7e);
const UUID_INTEGRITY: [u8; 16] = uuid(0xd4082055bde6704b8d34ba123c66e1f2);

/// The UUID bytes in the order cudart passes them, written as one hex literal.
const fn uuid(hex: u128) -> [u8; 16] {
    hex.to_be_bytes()
}

// Table ids, for the unsupported-slot functions' log lines.
const T_CUDART_INTERFACE: usize = 0;
const T_TOOLS_HOOKS: usize = 1;
const T_TOOLS_TLS: usize = 2;
const T_21318C60: usize = 3;
const T_CLS: usize = 4;
const T_CONTEXT_CHECKS: usize = 5;
const T_INTEGRITY: usize = 6;
const TABLE_NAMES: [&str; 7] = [
    "6bd5fb6c (cudart interface)",
    "a094798c (tool callback hooks)",
    "42d85a81 (tools TLS)",
    "21318c60",
    "c693336e (context-local storage)",
    "263e8860 (context checks)",
    "d4082055 (integrity check)",
];

// Lengths in slots. ZLUDA's where it has one (hooks 7, TLS 4, CLS 4, checks 4, integrity 3).
// The interface table must reach slot 12 for shared cudart 13.x; ZLUDA's 10 predates that.
// 21318c60 is never called into, so its length only has to be plausible.
const LEN_CUDART_INTERFACE: usize = 16;
const LEN_TOOLS_HOOKS: usize = 7;
const LEN_TOOLS_TLS: usize = 4;
const LEN_21318C60: usize = 4;
const LEN_CLS: usize = 4;
const LEN_CONTEXT_CHECKS: usize = 4;
const LEN_INTEGRITY: usize = 3;
const MAX_SLOTS: usize = 16;

#[repr(transparent)]
#[derive(Clone, Copy)]
struct Slot(*const c_void);

#[repr(transparent)]
struct Table<const N: usize>([Slot; N]);

// SAFETY: a table is built in a const initialiser and never written afterwards; its words are
// integers and addresses of functions, which any thread may read.
unsafe impl<const N: usize> Sync for Table<N> {}

impl<const N: usize> Table<N> {
    fn start(&'static self) -> *const c_void {
        self.0.as_ptr().cast()
    }
}

/// A table of `N` slots, each holding its own logging [`unsupported`] function, with slot 0
/// replaced by the size in bytes when `sized`.
const fn unsupported_slots<const T: usize, const N: usize>(sized: bool) -> [Slot; N] {
    let all: [Slot; MAX_SLOTS] = [
        Slot(unsupported::<T, 0> as *const c_void),
        Slot(unsupported::<T, 1> as *const c_void),
        Slot(unsupported::<T, 2> as *const c_void),
        Slot(unsupported::<T, 3> as *const c_void),
        Slot(unsupported::<T, 4> as *const c_void),
        Slot(unsupported::<T, 5> as *const c_void),
        Slot(unsupported::<T, 6> as *const c_void),
        Slot(unsupported::<T, 7> as *const c_void),
        Slot(unsupported::<T, 8> as *const c_void),
        Slot(unsupported::<T, 9> as *const c_void),
        Slot(unsupported::<T, 10> as *const c_void),
        Slot(unsupported::<T, 11> as *const c_void),
        Slot(unsupported::<T, 12> as *const c_void),
        Slot(unsupported::<T, 13> as *const c_void),
        Slot(unsupported::<T, 14> as *const c_void),
        Slot(unsupported::<T, 15> as *const c_void),
    ];
    assert!(N <= MAX_SLOTS);
    let mut out = [Slot(ptr::null()); N];
    let mut i = 0;
    while i < N {
        out[i] = all[i];
        i += 1;
    }
    if sized {
        out[0] = Slot((N * size_of::<usize>()) as *const c_void);
    }
    out
}

static CUDART_INTERFACE: Table<LEN_CUDART_INTERFACE> = Table({
    let mut s = unsupported_slots::<T_CUDART_INTERFACE, LEN_CUDART_INTERFACE>(true);
    s[2] = Slot(iface_primary_context as *const c_void);
    s[12] = Slot(iface_slot12 as *const c_void);
    s
});

static TOOLS_HOOKS: Table<LEN_TOOLS_HOOKS> = Table({
    let mut s = unsupported_slots::<T_TOOLS_HOOKS, LEN_TOOLS_HOOKS>(true);
    s[2] = Slot(hooks_buffer2 as *const c_void);
    s[6] = Slot(hooks_buffer6 as *const c_void);
    s
});

static TOOLS_TLS: Table<LEN_TOOLS_TLS> = Table({
    let mut s = unsupported_slots::<T_TOOLS_TLS, LEN_TOOLS_TLS>(true);
    s[2] = Slot(tools_tls_context as *const c_void);
    s
});

static TABLE_21318C60: Table<LEN_21318C60> =
    Table(unsupported_slots::<T_21318C60, LEN_21318C60>(true));

static CLS_TABLE: Table<LEN_CLS> = Table({
    let mut s = unsupported_slots::<T_CLS, LEN_CLS>(false);
    s[0] = Slot(cls_put as *const c_void);
    s[1] = Slot(cls_delete as *const c_void);
    s[2] = Slot(cls_get as *const c_void);
    s
});

static CONTEXT_CHECKS: Table<LEN_CONTEXT_CHECKS> = Table({
    let mut s = unsupported_slots::<T_CONTEXT_CHECKS, LEN_CONTEXT_CHECKS>(true);
    s[2] = Slot(context_check as *const c_void);
    s[3] = Slot(check_fn3 as *const c_void);
    s
});

static INTEGRITY: Table<LEN_INTEGRITY> = Table({
    let mut s = unsupported_slots::<T_INTEGRITY, LEN_INTEGRITY>(true);
    s[1] = Slot(integrity_check as *const c_void);
    s
});

fn table_for(uuid: &[u8; 16]) -> Option<*const c_void> {
    Some(match *uuid {
        UUID_CUDART_INTERFACE => CUDART_INTERFACE.start(),
        UUID_TOOLS_HOOKS => TOOLS_HOOKS.start(),
        UUID_TOOLS_TLS => TOOLS_TLS.start(),
        UUID_21318C60 => TABLE_21318C60.start(),
        UUID_CLS => CLS_TABLE.start(),
        UUID_CONTEXT_CHECKS => CONTEXT_CHECKS.start(),
        UUID_INTEGRITY => INTEGRITY.start(),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Slot functions. Every body runs under `guard`, so nothing unwinds into C.

/// Runs `f`, turning a panic into `CUDA_ERROR_UNKNOWN`.
fn guard(f: impl FnOnce() -> u32) -> u32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(CUDA_ERROR_UNKNOWN)
}

/// Writes `value` through `out` when it is not NULL.
///
/// # Safety
///
/// `out` must be NULL or valid for writing a `T`.
unsafe fn write_opt<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { ptr::write_unaligned(out, value) };
    }
}

fn log_line(args: std::fmt::Arguments<'_>) {
    // One write per line, so concurrent lines do not interleave; not eprintln!, which panics
    // when stderr is closed.
    let line = format!("remora: {args}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Every slot this module does not implement. Slots hand out distinct instances, so the log
/// names the exact slot; each logs once. Declared without parameters: the C calling convention
/// lets a callee ignore arguments it was passed.
extern "C" fn unsupported<const TABLE: usize, const SLOT: usize>() -> u32 {
    static LOGGED: [AtomicU64; TABLE_NAMES.len()] =
        [const { AtomicU64::new(0) }; TABLE_NAMES.len()];
    guard(|| {
        let bit = 1u64 << SLOT;
        if LOGGED[TABLE].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            log_line(format_args!(
                "export table {} slot {SLOT} is not implemented; returning \
                 CUDA_ERROR_NOT_SUPPORTED",
                TABLE_NAMES[TABLE]
            ));
        }
        CUDA_ERROR_NOT_SUPPORTED
    })
}

/// Tables clients ask for and work fine without (docs/CUDA-COMPAT.md): refused without a word.
const HARMLESS: [[u8; 16]; 2] = [
    // Asked by cudart before cuInit.
    [
        0xf8, 0xcf, 0xf9, 0x51, 0x21, 0x46, 0x8b, 0x4e, 0xb9, 0xe2, 0xfb, 0x46, 0x9e, 0x7c, 0x0d,
        0xd9,
    ],
    // Asked by NVRTC and nvJitLink while compiling.
    [
        0xda, 0x91, 0x51, 0xd3, 0x3a, 0xe6, 0xcc, 0x41, 0xa5, 0xc0, 0x4f, 0x26, 0xd5, 0x33, 0xe3,
        0x28,
    ],
];

fn log_unknown_uuid(uuid: &[u8; 16]) {
    static SEEN: Mutex<Vec<[u8; 16]>> = Mutex::new(Vec::new());
    if HARMLESS.contains(uuid) {
        return;
    }
    let _ = catch_unwind(|| {
        let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.contains(uuid) {
            seen.push(*uuid);
            log_line(format_args!(
                "cuGetExportTable: unknown table {:032x}; refusing",
                u128::from_be_bytes(*uuid)
            ));
        }
    });
}

/// Interface slot 2 `(CUcontext *out, CUdevice)`: the device's primary context.
unsafe extern "C" fn iface_primary_context(out: *mut *mut c_void, device: c_int) -> u32 {
    guard(|| {
        if out.is_null() {
            return CUDA_ERROR_INVALID_VALUE;
        }
        let ctx = match host().and_then(|h| (h.primary_context)(device)) {
            Ok(ctx) => ctx,
            Err(code) => return code,
        };
        // SAFETY: non-null; cudart passes the address of its CUcontext.
        unsafe { ptr::write_unaligned(out, ctx) };
        CUDA_SUCCESS
    })
}

/// Interface slot 12 `(u8 *out, const char *id, ...)`, called once by shared cudart 13.x: must
/// succeed. Its meaning is unknown; answer "0" (no) rather than leave `*out` as it was.
unsafe extern "C" fn iface_slot12(out: *mut u8, _id: *const c_char) -> u32 {
    // SAFETY: `out` is NULL or cudart's writable byte.
    guard(|| unsafe {
        write_opt(out, 0);
        CUDA_SUCCESS
    })
}

/// A zeroed, writable buffer that lives as long as the process. cudart (and tools) write into
/// it without synchronisation through us, so it is only ever handed out as a raw pointer.
#[repr(C, align(16))]
struct ToolBuffer(std::cell::UnsafeCell<[u8; ToolBuffer::LEN]>);

impl ToolBuffer {
    const LEN: usize = 4096;
    const fn new() -> Self {
        Self(std::cell::UnsafeCell::new([0; Self::LEN]))
    }
}

// SAFETY: Rust code never reads or writes the contents; only the address is shared.
unsafe impl Sync for ToolBuffer {}

static HOOKS_BUFFER2: ToolBuffer = ToolBuffer::new();
static HOOKS_BUFFER6: ToolBuffer = ToolBuffer::new();

/// Hooks slots 2 and 6 `(void **buf, size_t *size)`: real buffers (a NULL from slot 6 crashes
/// cudart; slot 2 needs at least 1 KiB).
unsafe fn hand_out(buffer: &'static ToolBuffer, buf: *mut *mut c_void, size: *mut usize) -> u32 {
    // SAFETY: both are NULL or cudart's writable out-parameters.
    unsafe {
        write_opt(buf, buffer.0.get().cast::<c_void>());
        write_opt(size, ToolBuffer::LEN);
    }
    CUDA_SUCCESS
}

unsafe extern "C" fn hooks_buffer2(buf: *mut *mut c_void, size: *mut usize) -> u32 {
    // SAFETY: forwarded from cudart unchanged; see `hand_out`.
    guard(|| unsafe { hand_out(&HOOKS_BUFFER2, buf, size) })
}

unsafe extern "C" fn hooks_buffer6(buf: *mut *mut c_void, size: *mut usize) -> u32 {
    // SAFETY: forwarded from cudart unchanged; see `hand_out`.
    guard(|| unsafe { hand_out(&HOOKS_BUFFER6, buf, size) })
}

/// Tools TLS slot 2 `(CUcontext *)`, called by cudart 12.9: no tool has attached a context to
/// this thread, so NULL.
unsafe extern "C" fn tools_tls_context(out: *mut *mut c_void) -> u32 {
    // SAFETY: `out` is NULL or cudart's writable CUcontext.
    guard(|| unsafe {
        write_opt(out, ptr::null_mut());
        CUDA_SUCCESS
    })
}

/// Destructor cudart registers with a CLS entry. Stored with the context, not called.
type ClsDestructor = StorageDestructor;

// Context-local storage belongs to its context, in the shim's registry: destroying or resetting
// the context drops it. A NULL context means the calling thread's current one ("ctx or NULL"
// in docs/CUDA-COMPAT.md), which the driver resolves the same way; ZLUDA does too.

/// CLS slot 0 `(ctx or NULL, key, value, dtor)`.
unsafe extern "C" fn cls_put(
    ctx: *mut c_void,
    key: *mut c_void,
    value: *mut c_void,
    destructor: Option<ClsDestructor>,
) -> u32 {
    guard(
        || match registry().storage_put(ctx as u64, key as usize, value as usize, destructor) {
            Ok(()) => CUDA_SUCCESS,
            Err(e) => e.status().0,
        },
    )
}

/// CLS slot 1 `(ctx, key)`, at teardown. Deleting an absent key succeeds.
unsafe extern "C" fn cls_delete(ctx: *mut c_void, key: *mut c_void) -> u32 {
    guard(
        || match registry().storage_delete(ctx as u64, key as usize) {
            Ok(()) => CUDA_SUCCESS,
            Err(e) => e.status().0,
        },
    )
}

/// CLS slot 2 `(void **val, ctx, key)`. Every runtime call starts with one; an absent key is
/// the normal answer for a fresh context and is `CUDA_ERROR_INVALID_HANDLE`, as ZLUDA answers.
unsafe extern "C" fn cls_get(out: *mut *mut c_void, ctx: *mut c_void, key: *mut c_void) -> u32 {
    guard(|| {
        if out.is_null() {
            return CUDA_ERROR_INVALID_VALUE;
        }
        let value = match registry().storage_get(ctx as u64, key as usize) {
            Ok(v) => v,
            Err(e) => return e.status().0,
        };
        // SAFETY: non-null; cudart passes the address of its void*.
        unsafe { ptr::write_unaligned(out, value as *mut c_void) };
        CUDA_SUCCESS
    })
}

/// Checks slot 2 `(ctx, u32 *flags, void **detail)`: the context is never a wrapped one.
unsafe extern "C" fn context_check(
    _ctx: *mut c_void,
    flags: *mut c_uint,
    detail: *mut *mut c_void,
) -> u32 {
    // SAFETY: both are NULL or cudart's writable out-parameters.
    guard(|| unsafe {
        write_opt(flags, 0);
        write_opt(detail, ptr::null_mut());
        CUDA_SUCCESS
    })
}

/// Checks slot 3 `()`, called once at start.
extern "C" fn check_fn3() -> u32 {
    guard(|| CUDA_SUCCESS)
}

/// Integrity slot 1 `(u32 version, u64 unix_seconds, u64 out[2])`.
unsafe extern "C" fn integrity_check(version: u32, unix_seconds: u64, out: *mut [u64; 2]) -> u32 {
    guard(|| {
        if out.is_null() {
            return CUDA_ERROR_INVALID_VALUE;
        }
        let hash = match version % 10 {
            0 => INTEGRITY_V0,
            1 => INTEGRITY_V1,
            _ => match integrity_for_this_thread(version, unix_seconds) {
                Ok(hash) => hash,
                Err(code) => return code,
            },
        };
        // SAFETY: non-null; cudart passes its u64[2].
        unsafe { ptr::write_unaligned(out, hash) };
        CUDA_SUCCESS
    })
}

/// The hash as the driver computes it for the calling thread, with this module's addresses.
fn integrity_for_this_thread(version: u32, unix_seconds: u64) -> Result<[u64; 2], u32> {
    let host = host()?;
    let devices = (host.devices)()?;
    // SAFETY: pthread_self has no preconditions and always succeeds.
    let thread = unsafe { libc::pthread_self() };
    Ok(integrity_hash(
        (host.driver_version)() as u32,
        version,
        std::process::id(),
        // The driver hashes the low 32 bits of pthread_t.
        thread as u32,
        CUDART_INTERFACE.start() as u64,
        INTEGRITY.start() as u64,
        // The address cudart called through, read back from the table it was handed.
        INTEGRITY.0[1].0 as u64,
        unix_seconds,
        &devices,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_DEVICE: DeviceIdentity = DeviceIdentity {
        uuid: [
            0x67, 0x22, 0xcb, 0xcf, 0xc6, 0x61, 0xf2, 0x92, 0x74, 0xd6, 0xed, 0x23, 0x2a, 0x32,
            0x13, 0x1c,
        ],
        pci_domain: 0,
        pci_bus: 4,
        pci_device: 0,
    };

    fn fake_driver_version() -> i32 {
        12020
    }
    fn fake_devices() -> Result<Vec<DeviceIdentity>, u32> {
        Ok(vec![VECTOR_DEVICE])
    }
    fn fake_primary_context(device: i32) -> Result<*mut c_void, u32> {
        match device {
            0 => Ok(0x1000 as *mut c_void),
            _ => Err(101), // CUDA_ERROR_INVALID_DEVICE
        }
    }
    /// Every test installs the same host; the first wins.
    fn install_fake() {
        install(Host {
            driver_version: fake_driver_version,
            devices: fake_devices,
            primary_context: fake_primary_context,
        });
    }

    fn table(uuid: [u8; 16]) -> *const usize {
        let mut out: *const c_void = ptr::null();
        // SAFETY: both pointers are to locals.
        assert_eq!(unsafe { get_export_table(&mut out, &uuid) }, CUDA_SUCCESS);
        assert!(!out.is_null());
        out.cast()
    }

    /// # Safety: `T` must be the slot's real signature.
    unsafe fn slot<T: Copy>(table: *const usize, index: usize) -> T {
        assert_eq!(size_of::<T>(), size_of::<usize>());
        // SAFETY: tests only index inside the table, and the caller names the right type.
        unsafe { std::mem::transmute_copy(&*table.add(index)) }
    }

    #[test]
    fn integrity_hash_matches_zludas_vector() {
        let hash = integrity_hash(
            12020,
            0x2B4A,
            0x4D08,
            0x2B78,
            0x0000_7FF8_C807_17F0,
            0x0000_7FF8_C825_E4B0,
            0x0000_7FF8_C7DD_0AD0,
            0x64A3_65EE,
            &[VECTOR_DEVICE],
        );
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hash[0].to_ne_bytes());
        bytes[8..].copy_from_slice(&hash[1].to_ne_bytes());
        assert_eq!(
            u128::from_le_bytes(bytes),
            0xEAF1313342BFCD84A7C34628F214707A
        );
    }

    #[test]
    fn integrity_hash_depends_on_every_field() {
        let base = |pid, dev: &[DeviceIdentity]| {
            integrity_hash(12020, 0x2B4A, pid, 0x2B78, 1, 2, 3, 4, dev)
        };
        let reference = base(0x4D08, &[VECTOR_DEVICE]);
        assert_ne!(reference, base(0x4D09, &[VECTOR_DEVICE]));
        assert_ne!(reference, base(0x4D08, &[]));
        let other_bus = DeviceIdentity {
            pci_bus: 5,
            ..VECTOR_DEVICE
        };
        assert_ne!(reference, base(0x4D08, &[other_bus]));
    }

    #[test]
    fn integrity_slot_constants_for_version_0_and_1() {
        let f: unsafe extern "C" fn(u32, u64, *mut [u64; 2]) -> u32 =
            // SAFETY: slot 1 of the integrity table has this signature.
            unsafe { slot(table(UUID_INTEGRITY), 1) };
        let mut out = [0u64; 2];
        // SAFETY: `out` is a local u64[2].
        assert_eq!(unsafe { f(12090, 0x64A3_65EE, &mut out) }, CUDA_SUCCESS);
        assert_eq!(out, [0x3341181c03cb675c, 0x8ed383aa1f4cd1e8]);
        // SAFETY: as above.
        assert_eq!(unsafe { f(13051, 0, &mut out) }, CUDA_SUCCESS);
        assert_eq!(out, [0x1841181c03cb675c, 0x8ed383aa1f4cd1e8]);
        // SAFETY: a NULL out-pointer is refused before any write.
        let code = unsafe { f(12092, 0, ptr::null_mut()) };
        assert_eq!(code, CUDA_ERROR_INVALID_VALUE);
    }

    #[test]
    fn integrity_slot_hashes_this_thread_and_these_addresses() {
        install_fake();
        let integrity = table(UUID_INTEGRITY);
        let f: unsafe extern "C" fn(u32, u64, *mut [u64; 2]) -> u32 =
            // SAFETY: slot 1 of the integrity table has this signature.
            unsafe { slot(integrity, 1) };
        let mut out = [0u64; 2];
        // SAFETY: `out` is a local u64[2].
        assert_eq!(unsafe { f(12092, 0x64A3_65EE, &mut out) }, CUDA_SUCCESS);
        // SAFETY: no preconditions.
        let thread = unsafe { libc::pthread_self() } as u32;
        let expected = integrity_hash(
            12020,
            12092,
            std::process::id(),
            thread,
            table(UUID_CUDART_INTERFACE) as u64,
            integrity as u64,
            f as usize as u64,
            0x64A3_65EE,
            &[VECTOR_DEVICE],
        );
        assert_eq!(out, expected);
        // Another thread gets another answer (its pthread_self differs).
        let other = std::thread::spawn(move || {
            let mut out = [0u64; 2];
            // SAFETY: as above.
            assert_eq!(unsafe { f(12092, 0x64A3_65EE, &mut out) }, CUDA_SUCCESS);
            out
        })
        .join()
        .unwrap();
        assert_ne!(other, expected);
    }

    #[test]
    fn unknown_uuid_is_refused_and_out_untouched() {
        let sentinel = 0x1234 as *const c_void;
        for uuid in [uuid(0xf8cff95121468b4eb9e2fb469e7c0dd9), [0u8; 16]] {
            let mut out = sentinel;
            // SAFETY: both pointers are to locals.
            let code = unsafe { get_export_table(&mut out, &uuid) };
            assert_eq!(code, CUDA_ERROR_INVALID_VALUE);
            assert_eq!(out, sentinel);
        }
    }

    #[test]
    fn null_pointers_are_refused() {
        let id = UUID_CUDART_INTERFACE;
        // SAFETY: NULL is checked before any access.
        let code = unsafe { get_export_table(ptr::null_mut(), &id) };
        assert_eq!(code, CUDA_ERROR_INVALID_VALUE);
        let mut out: *const c_void = ptr::null();
        // SAFETY: as above.
        let code = unsafe { get_export_table(&mut out, ptr::null()) };
        assert_eq!(code, CUDA_ERROR_INVALID_VALUE);
        assert!(out.is_null());
    }

    #[test]
    fn tables_have_stable_addresses_and_size_words() {
        let all = [
            (UUID_CUDART_INTERFACE, Some(LEN_CUDART_INTERFACE)),
            (UUID_TOOLS_HOOKS, Some(LEN_TOOLS_HOOKS)),
            (UUID_TOOLS_TLS, Some(LEN_TOOLS_TLS)),
            (UUID_21318C60, Some(LEN_21318C60)),
            (UUID_CLS, None),
            (UUID_CONTEXT_CHECKS, Some(LEN_CONTEXT_CHECKS)),
            (UUID_INTEGRITY, Some(LEN_INTEGRITY)),
        ];
        let first: Vec<_> = all.iter().map(|(u, _)| table(*u)).collect();
        let again = std::thread::spawn(move || {
            all.iter()
                .map(|(u, _)| table(*u) as usize)
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        assert_eq!(first.iter().map(|p| *p as usize).collect::<Vec<_>>(), again);
        for ((_, len), t) in all.iter().zip(&first) {
            if let Some(len) = len {
                // SAFETY: every sized table has at least one word.
                assert_eq!(unsafe { **t }, len * size_of::<usize>());
            }
        }
        let mut distinct = again.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn unimplemented_slots_return_not_supported() {
        let iface = table(UUID_CUDART_INTERFACE);
        for index in [1, 3, 11, 15] {
            // SAFETY: unimplemented slots take no arguments they read.
            let f: extern "C" fn() -> u32 = unsafe { slot(iface, index) };
            assert_eq!(f(), CUDA_ERROR_NOT_SUPPORTED);
        }
        // SAFETY: as above; 21318c60 has no implemented slot at all.
        let f: extern "C" fn() -> u32 = unsafe { slot(table(UUID_21318C60), 1) };
        assert_eq!(f(), CUDA_ERROR_NOT_SUPPORTED);
        // Distinct functions per slot, so the log can name the slot.
        // SAFETY: reading words inside the table.
        let (a, b) = unsafe { (*iface.add(1), *iface.add(3)) };
        assert_ne!(a, b);
    }

    #[test]
    fn interface_slot2_returns_primary_context() {
        install_fake();
        let iface = table(UUID_CUDART_INTERFACE);
        let f: unsafe extern "C" fn(*mut *mut c_void, c_int) -> u32 =
            // SAFETY: slot 2 has this signature.
            unsafe { slot(iface, 2) };
        let mut ctx = ptr::null_mut();
        // SAFETY: `ctx` is a local.
        assert_eq!(unsafe { f(&mut ctx, 0) }, CUDA_SUCCESS);
        assert_eq!(ctx as usize, 0x1000);
        // SAFETY: as above.
        assert_eq!(unsafe { f(&mut ctx, 7) }, 101);
        // SAFETY: NULL is checked first.
        assert_eq!(unsafe { f(ptr::null_mut(), 0) }, CUDA_ERROR_INVALID_VALUE);

        let g: unsafe extern "C" fn(*mut u8, *const c_char) -> u32 =
            // SAFETY: slot 12 has this signature (plus ignored varargs).
            unsafe { slot(iface, 12) };
        let mut flag = 0xffu8;
        // SAFETY: `flag` is a local; the id is a C string literal.
        assert_eq!(unsafe { g(&mut flag, c"id".as_ptr()) }, CUDA_SUCCESS);
        assert_eq!(flag, 0);
    }

    #[test]
    fn hooks_hand_out_distinct_writable_buffers() {
        let hooks = table(UUID_TOOLS_HOOKS);
        let mut seen = Vec::new();
        for index in [2, 6] {
            let f: unsafe extern "C" fn(*mut *mut c_void, *mut usize) -> u32 =
                // SAFETY: slots 2 and 6 have this signature.
                unsafe { slot(hooks, index) };
            let (mut buf, mut size) = (ptr::null_mut(), 0usize);
            // SAFETY: both are locals.
            assert_eq!(unsafe { f(&mut buf, &mut size) }, CUDA_SUCCESS);
            assert!(!buf.is_null());
            assert!(size >= 1024);
            // SAFETY: the buffer is `size` writable bytes for the life of the process.
            unsafe { buf.cast::<u8>().add(size - 1).write(0) };
            let (mut again, mut size2) = (ptr::null_mut(), 0usize);
            // SAFETY: as above.
            unsafe { f(&mut again, &mut size2) };
            assert_eq!((again, size2), (buf, size));
            seen.push(buf);
        }
        assert_ne!(seen[0], seen[1]);
    }

    #[test]
    fn tools_tls_and_context_checks() {
        let tls: unsafe extern "C" fn(*mut *mut c_void) -> u32 =
            // SAFETY: slot 2 of tools TLS has this signature.
            unsafe { slot(table(UUID_TOOLS_TLS), 2) };
        let mut ctx = 0x55 as *mut c_void;
        // SAFETY: `ctx` is a local.
        assert_eq!(unsafe { tls(&mut ctx) }, CUDA_SUCCESS);
        assert!(ctx.is_null());

        let checks = table(UUID_CONTEXT_CHECKS);
        let check: unsafe extern "C" fn(*mut c_void, *mut c_uint, *mut *mut c_void) -> u32 =
            // SAFETY: slot 2 of the checks table has this signature.
            unsafe { slot(checks, 2) };
        let (mut flags, mut detail) = (7u32, 0x9 as *mut c_void);
        // SAFETY: locals.
        let code = unsafe { check(ptr::null_mut(), &mut flags, &mut detail) };
        assert_eq!(code, CUDA_SUCCESS);
        assert_eq!((flags, detail), (0, ptr::null_mut()));
        // SAFETY: slot 3 takes nothing.
        let fn3: extern "C" fn() -> u32 = unsafe { slot(checks, 3) };
        assert_eq!(fn3(), CUDA_SUCCESS);
    }

    #[test]
    fn cls_put_get_delete_round_trip() {
        install_fake();
        let cls_table = table(UUID_CLS);
        type Put = unsafe extern "C" fn(
            *mut c_void,
            *mut c_void,
            *mut c_void,
            Option<ClsDestructor>,
        ) -> u32;
        type Del = unsafe extern "C" fn(*mut c_void, *mut c_void) -> u32;
        type Get = unsafe extern "C" fn(*mut *mut c_void, *mut c_void, *mut c_void) -> u32;
        // SAFETY: slots 0, 1, 2 have these signatures.
        let (put, del, get): (Put, Del, Get) =
            unsafe { (slot(cls_table, 0), slot(cls_table, 1), slot(cls_table, 2)) };
        use crate::registry::{self, Context, Teardown};
        let (h, other) = (registry::mint(), registry::mint());
        registry().add_context(h, Context::new(0, 0, false));
        registry().add_context(other, Context::new(0, 0, false));
        let (ctx, key, value) = (h as *mut c_void, 0x10 as *mut c_void, 0xbeef as *mut c_void);
        let mut out = ptr::null_mut();

        // SAFETY: the slots have these signatures, handles are opaque integers, `out` is a
        // local.
        unsafe {
            assert_eq!(get(&mut out, ctx, key), CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(put(ctx, key, value, None), CUDA_SUCCESS);
            assert_eq!(get(&mut out, ctx, key), CUDA_SUCCESS);
            assert_eq!(out, value);
            // Another context does not see it.
            assert_eq!(
                get(&mut out, other as *mut c_void, key),
                CUDA_ERROR_INVALID_HANDLE
            );
            assert_eq!(get(ptr::null_mut(), ctx, key), CUDA_ERROR_INVALID_VALUE);
            assert_eq!(del(ctx, key), CUDA_SUCCESS);
            assert_eq!(get(&mut out, ctx, key), CUDA_ERROR_INVALID_HANDLE);
            // Without a current context, NULL names none.
            assert_eq!(put(ptr::null_mut(), key, value, None), 201);

            // NULL is the current context, for put, get and delete alike.
            registry::push_current(h);
            assert_eq!(put(ptr::null_mut(), key, value, None), CUDA_SUCCESS);
            out = ptr::null_mut();
            assert_eq!(get(&mut out, ctx, key), CUDA_SUCCESS);
            assert_eq!(out, value);
            assert_eq!(del(ptr::null_mut(), key), CUDA_SUCCESS);
            assert_eq!(get(&mut out, ctx, key), CUDA_ERROR_INVALID_HANDLE);

            // Storage belongs to its context: destroying the context drops it.
            assert_eq!(put(ptr::null_mut(), key, value, None), CUDA_SUCCESS);
            registry().teardown(h, Teardown::Destroy).unwrap();
            assert_eq!(get(&mut out, ctx, key), CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(put(ctx, key, value, None), 201);
        }
    }
}
