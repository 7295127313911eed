//! Device and page-locked host memory, copies and memsets.
//!
//! Copies and memsets are checked against the local mirror of the client's allocations and
//! then queued: they return without waiting for the network (host-to-device bytes are
//! captured first). Only calls whose result the application needs now wait: allocation,
//! device-to-host copies, memory info.

use std::alloc::Layout;
use std::ffi::{c_uint, c_void};

use remora_protocol::messages::{CtxId, StreamId};
use remora_protocol::messages::{ReplyBody, Request};
use remora_protocol::CuStatus;

use crate::client;
use crate::ffi::{bytes, bytes_mut, invalid, put, FromCuda, ShimError, ShimResult};
use crate::generated::CUDA_MEMCPY2D;
use crate::registry::{self, registry, HostRange};

use super::graph::{Dir, Op};
use super::{capture, device_alloc, ipc, managed, module};

/// Row pitch alignment `cuMemAllocPitch` uses (TEXTURE_PITCH_ALIGNMENT of the device class).
const PITCH_ALIGN: usize = 512;
/// Page-locked host allocations are page aligned.
const HOST_ALIGN: usize = 4096;

pub fn alloc(size: usize) -> ShimResult<u64> {
    if size == 0 {
        return Err(invalid("allocation of 0 bytes"));
    }
    let ctx = registry::current_ctx()?;
    let device = registry().with_context(ctx, |c| c.device)?;
    let c = client::client()?;
    let (ptr, base) = device_alloc::alloc_aligned(c, ctx, device, size as u64, 0)?;
    managed::forget_stale(base, size as u64);
    Ok(ptr)
}

pub fn mem_alloc(dptr: &mut u64, size: usize) -> ShimResult<()> {
    *dptr = alloc(size)?;
    Ok(())
}

pub fn alloc_pitch(
    dptr: &mut u64,
    pitch: &mut usize,
    width: usize,
    height: usize,
    elem: c_uint,
) -> ShimResult<()> {
    if !matches!(elem, 4 | 8 | 16) {
        return Err(invalid(format!("element size {elem} must be 4, 8 or 16")));
    }
    let p = width
        .checked_next_multiple_of(PITCH_ALIGN)
        .ok_or_else(|| invalid("width overflows"))?;
    let size = p
        .checked_mul(height)
        .ok_or_else(|| invalid("pitch * height overflows"))?;
    *dptr = alloc(size)?;
    *pitch = p;
    Ok(())
}

pub fn free(ptr: u64) -> ShimResult<()> {
    // `cudaFree(0)`, cudart's classic start-up idiom, frees the null pointer: that succeeds.
    if ptr == 0 {
        return Ok(());
    }
    // A graph allocation stays while its graphs do (see `graph::Op::MemAlloc`): freeing it
    // ends its use, as CUDA allows, and the memory goes when the last graph holding it does.
    if super::graph::is_graph_alloc(ptr) {
        return Ok(());
    }
    if ipc::is_opened(ptr) {
        return Err(invalid(format!(
            "{ptr:#x} is another process's memory opened by IPC: close it with cuIpcCloseMemHandle"
        )));
    }
    device_alloc::free(managed::release(ptr).unwrap_or(ptr))
}

/// Either out-pointer may be NULL.
pub fn get_info(free: Option<&mut usize>, total: Option<&mut usize>) -> ShimResult<()> {
    let ctx = registry::current_ctx()?;
    let device = registry().with_context(ctx, |c| c.device)?;
    let reply = client::client()?.call(&Request::MemGetInfo {
        device: device as u32,
    })?;
    let ReplyBody::MemInfo {
        free: f, total: t, ..
    } = reply.body
    else {
        return Err(ShimError::new(
            CuStatus::UNKNOWN,
            "server answered memory info without numbers",
        ));
    };
    if let Some(free) = free {
        *free = f as usize;
    }
    if let Some(total) = total {
        *total = t as usize;
    }
    Ok(())
}

/// Either out-pointer may be NULL.
pub fn get_address_range(
    base: Option<&mut u64>,
    size: Option<&mut usize>,
    ptr: u64,
) -> ShimResult<()> {
    let (b, sz) = module::in_memory(|s| s.alloc_range(ptr, 0).map(|(b, a)| (b, a.size)))?;
    if let Some(base) = base {
        *base = b;
    }
    if let Some(size) = size {
        *size = sz as usize;
    }
    Ok(())
}

/// Context and stream of a copy, after checking every device range it touches.
fn prepare(stream: u64, ranges: &[(u64, u64)]) -> ShimResult<(u64, u64)> {
    let cs = registry().stream(stream)?;
    if !ranges.is_empty() {
        module::in_memory(|m| {
            ranges
                .iter()
                .try_for_each(|&(p, n)| m.alloc_range(p, n).map(|_| ()))
        })?;
    }
    Ok(cs)
}

pub fn htod(dst: u64, src: &[u8], stream: u64) -> ShimResult<()> {
    if src.is_empty() {
        return prepare(stream, &[]).map(|_| ());
    }
    let (ctx, stream) = prepare(stream, &[(dst, src.len() as u64)])?;
    if stream == 0 {
        capture::forbid_unsafe_call("a copy on the default stream")?;
    } else if let Some(cap) = capture::of(stream)? {
        // The node reads the host bytes when the graph runs, as a GPU's copy node does.
        return cap.add(Op::Copy {
            dir: Dir::HtoD,
            dst,
            src: src.as_ptr() as u64,
            width: src.len() as u64,
            rows: 1,
            dst_pitch: 0,
            src_pitch: 0,
        });
    }
    if managed::host_side(dst, src.len() as u64) {
        // SAFETY: the range lies in a managed allocation's host mapping (checked above).
        unsafe { std::ptr::copy(src.as_ptr(), dst as usize as *mut u8, src.len()) };
        return Ok(());
    }
    client::client()?.post(
        &Request::MemcpyHtoD {
            ctx: CtxId(ctx),
            stream: StreamId(stream),
            dst,
        },
        src,
    )
}

pub fn dtoh(dst: &mut [u8], src: u64, stream: u64) -> ShimResult<()> {
    if dst.is_empty() {
        return prepare(stream, &[]).map(|_| ());
    }
    let (ctx, stream) = prepare(stream, &[(src, dst.len() as u64)])?;
    let size = dst.len() as u64;
    if stream == 0 {
        capture::forbid_unsafe_call("a synchronous copy")?;
    } else if let Some(cap) = capture::of(stream)? {
        return cap.add(device_to_host(dst.as_mut_ptr() as u64, src, size));
    }
    if managed::host_side(src, size) {
        // SAFETY: the range lies in a managed allocation's host mapping (checked above).
        unsafe { std::ptr::copy(src as usize as *const u8, dst.as_mut_ptr(), dst.len()) };
        return Ok(());
    }
    let req = Request::MemcpyDtoH {
        ctx: CtxId(ctx),
        stream: StreamId(stream),
        src,
        size,
    };
    // A synchronous copy is a synchronising call: managed memory comes back with it.
    managed::sync_read(client::client()?, &req, dst)
}

pub fn dtod(dst: u64, src: u64, size: usize, stream: u64) -> ShimResult<()> {
    let size = size as u64;
    if size == 0 {
        return prepare(stream, &[]).map(|_| ());
    }
    let (ctx, stream) = prepare(stream, &[(src, size), (dst, size)])?;
    if let Some(cap) = capture::of(stream)? {
        return cap.add(Op::Copy {
            dir: Dir::DtoD,
            dst,
            src,
            width: size,
            rows: 1,
            dst_pitch: 0,
            src_pitch: 0,
        });
    }
    if managed::is_managed(src) || managed::is_managed(dst) {
        managed::before_device_work()?;
    }
    client::client()?.post(
        &Request::MemcpyDtoD {
            ctx: CtxId(ctx),
            stream: StreamId(stream),
            dst,
            src,
            size,
        },
        &[],
    )
}

/// A captured device-to-host copy: the host buffer is written when the graph runs.
fn device_to_host(dst: u64, src: u64, size: u64) -> Op {
    Op::Copy {
        dir: Dir::DtoH,
        dst,
        src,
        width: size,
        rows: 1,
        dst_pitch: 0,
        src_pitch: 0,
    }
}

/// # Safety
/// `src` is valid for reads of `n` bytes.
unsafe fn copy_htod(dst: u64, src: *const c_void, n: usize, stream: u64) -> ShimResult<()> {
    // SAFETY: C buffer of n bytes.
    htod(dst, unsafe { bytes(src, n) }?, stream)
}

/// # Safety
/// `dst` is valid for writes of `n` bytes.
unsafe fn copy_dtoh(dst: *mut c_void, src: u64, n: usize, stream: u64) -> ShimResult<()> {
    // SAFETY: C buffer of n bytes.
    dtoh(unsafe { bytes_mut(dst, n) }?, src, stream)
}

/// `cuMemcpyDtoHAsync`: into page-locked memory the copy is queued and its data collected by
/// the next synchronising call, so it never waits for the network; into pageable memory it is
/// synchronous, as the CUDA driver documents for pageable destinations.
///
/// # Safety
/// `dst` is valid for writes of `n` bytes until the stream is synchronised.
pub unsafe fn copy_dtoh_async(dst: *mut c_void, src: u64, n: usize, stream: u64) -> ShimResult<()> {
    let pinned = n > 0
        && registry().memory(|s| {
            s.host_range(dst as usize)
                .is_some_and(|(b, r)| dst as usize + n <= b + r.size)
        });
    if !pinned {
        // SAFETY: forwarded contract.
        return unsafe { copy_dtoh(dst, src, n, stream) };
    }
    let (ctx, stream) = prepare(stream, &[(src, n as u64)])?;
    if let Some(cap) = capture::of(stream)? {
        return cap.add(device_to_host(dst as u64, src, n as u64));
    }
    if managed::host_side(src, n as u64) {
        // SAFETY: the source lies in a managed allocation's host mapping (checked above), the
        // destination is the caller's buffer of n bytes.
        unsafe { std::ptr::copy(src as usize as *const u8, dst.cast::<u8>(), n) };
        return Ok(());
    }
    let req = Request::MemcpyDtoH {
        ctx: CtxId(ctx),
        stream: StreamId(stream),
        src,
        size: n as u64,
    };
    // SAFETY: page-locked memory registered with the shim stays valid until freed, and CUDA
    // forbids freeing or reusing an asynchronous copy's destination before synchronising.
    unsafe { client::client()?.post_read(&req, dst.cast(), n) }
}

/// `CUDA_MEMCPY2D` as cuda.h lays it out (the `_v2` ABI, 64-bit `size_t`).
#[repr(C)]
pub struct Memcpy2D {
    src_x_in_bytes: usize,
    src_y: usize,
    src_memory_type: u32,
    src_host: *const c_void,
    src_device: u64,
    src_array: *mut c_void,
    src_pitch: usize,
    dst_x_in_bytes: usize,
    dst_y: usize,
    dst_memory_type: u32,
    dst_host: *mut c_void,
    dst_device: u64,
    dst_array: *mut c_void,
    dst_pitch: usize,
    width_in_bytes: usize,
    height: usize,
}
const _: () = assert!(std::mem::size_of::<Memcpy2D>() == 128);

impl<'a> FromCuda<'a, *const CUDA_MEMCPY2D> for &'a Memcpy2D {
    unsafe fn from_cuda(p: &'a *const CUDA_MEMCPY2D) -> ShimResult<&'a Memcpy2D> {
        // SAFETY: the caller passes a CUDA_MEMCPY2D, whose layout Memcpy2D mirrors.
        unsafe { p.cast::<Memcpy2D>().as_ref() }.ok_or_else(|| invalid("null CUDA_MEMCPY2D"))
    }
}

/// Where one side of a 2D copy lives: host or device, at its first byte.
fn side(
    kind: u32,
    host: u64,
    device: u64,
    x: usize,
    y: usize,
    pitch: usize,
) -> ShimResult<(bool, u64)> {
    let off = y
        .checked_mul(pitch)
        .and_then(|o| o.checked_add(x))
        .ok_or_else(|| invalid("2D copy offset overflows"))? as u64;
    match kind {
        1 => Ok((false, host.wrapping_add(off))),
        2 => Ok((true, device.wrapping_add(off))),
        // Unified: the address says which.
        4 => Ok((is_device(device), device.wrapping_add(off))),
        3 => Err(ShimError::new(
            CuStatus::NOT_SUPPORTED,
            "CUDA arrays are not supported",
        )),
        other => Err(invalid(format!("memory type {other}"))),
    }
}

/// `cuMemcpy2D` and `cuMemcpy2DAsync`: row by row, each row a 1D copy in the right direction.
///
/// # Safety
/// The host sides of `c` are valid for the rows described.
pub unsafe fn copy_2d(c: &Memcpy2D, stream: u64, asynchronous: bool) -> ShimResult<()> {
    let w = c.width_in_bytes;
    if c.height > 1 && (c.src_pitch < w || c.dst_pitch < w) {
        return Err(invalid("2D copy pitch smaller than its width"));
    }
    let (src_dev, src) = side(
        c.src_memory_type,
        c.src_host as u64,
        c.src_device,
        c.src_x_in_bytes,
        c.src_y,
        c.src_pitch,
    )?;
    let (dst_dev, dst) = side(
        c.dst_memory_type,
        c.dst_host as u64,
        c.dst_device,
        c.dst_x_in_bytes,
        c.dst_y,
        c.dst_pitch,
    )?;
    if c.height == 0 || w == 0 {
        return Ok(());
    }
    // Check every device row before moving any, so a bad copy changes nothing.
    let span = |pitch: usize| ((c.height - 1) * pitch + w) as u64;
    let mut ranges = Vec::new();
    if src_dev {
        ranges.push((src, span(c.src_pitch)));
    }
    if dst_dev {
        ranges.push((dst, span(c.dst_pitch)));
    }
    prepare(stream, &ranges)?;
    for row in 0..c.height {
        let (s, d) = (
            src + (row * c.src_pitch) as u64,
            dst + (row * c.dst_pitch) as u64,
        );
        // SAFETY: host rows lie inside the buffers the caller described.
        unsafe {
            match (src_dev, dst_dev) {
                (true, true) => dtod(d, s, w, stream)?,
                (false, true) => copy_htod(d, s as *const c_void, w, stream)?,
                (true, false) if asynchronous => copy_dtoh_async(d as *mut c_void, s, w, stream)?,
                (true, false) => copy_dtoh(d as *mut c_void, s, w, stream)?,
                (false, false) => std::ptr::copy(s as *const u8, d as *mut u8, w),
            }
        }
    }
    Ok(())
}

/// Whether an address is device memory of this client (unified addressing: the value says).
fn is_device(p: u64) -> bool {
    client::existing().is_some_and(|c| c.windows.iter().any(|w| p >= w.base && p - w.base < w.size))
}

/// `cuMemcpy`/`cuMemcpyAsync`: direction decided from the addresses.
///
/// # Safety
/// Host addresses among `dst` and `src` are valid for `n` bytes.
pub unsafe fn copy_unified(
    dst: u64,
    src: u64,
    n: usize,
    stream: u64,
    asynchronous: bool,
) -> ShimResult<()> {
    match (is_device(dst), is_device(src)) {
        (true, true) => dtod(dst, src, n, stream),
        // SAFETY: a host address from C, valid for n bytes by the caller's contract.
        (true, false) => unsafe { copy_htod(dst, src as *const c_void, n, stream) },
        // SAFETY: as above.
        (false, true) if asynchronous => unsafe {
            copy_dtoh_async(dst as *mut c_void, src, n, stream)
        },
        // SAFETY: as above.
        (false, true) => unsafe { copy_dtoh(dst as *mut c_void, src, n, stream) },
        (false, false) => {
            // SAFETY: both host buffers of n bytes by the caller's contract; may overlap.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) };
            Ok(())
        }
    }
}

/// `cuMemsetD8`, `cuMemsetD8Async` and their per-thread variants.
pub fn memset_d8(dst: u64, value: u8, n: usize, stream: u64) -> ShimResult<()> {
    memset(dst, n, value.into(), 1, n, 1, stream)
}

/// `cuMemsetD16` and its variants.
pub fn memset_d16(dst: u64, value: u16, n: usize, stream: u64) -> ShimResult<()> {
    memset(dst, n.saturating_mul(2), value.into(), 2, n, 1, stream)
}

/// `cuMemsetD32` and its variants.
pub fn memset_d32(dst: u64, value: u32, n: usize, stream: u64) -> ShimResult<()> {
    memset(dst, n.saturating_mul(4), value, 4, n, 1, stream)
}

/// `cuMemsetD2D8` and its variants.
pub fn memset_2d8(
    dst: u64,
    pitch: usize,
    value: u8,
    w: usize,
    h: usize,
    stream: u64,
) -> ShimResult<()> {
    memset(dst, pitch, value.into(), 1, w, h, stream)
}

/// `cuMemsetD2D16` and its variants.
pub fn memset_2d16(
    dst: u64,
    pitch: usize,
    value: u16,
    w: usize,
    h: usize,
    stream: u64,
) -> ShimResult<()> {
    memset(dst, pitch, value.into(), 2, w, h, stream)
}

/// `cuMemsetD2D32` and its variants.
pub fn memset_2d32(
    dst: u64,
    pitch: usize,
    value: u32,
    w: usize,
    h: usize,
    stream: u64,
) -> ShimResult<()> {
    memset(dst, pitch, value, 4, w, h, stream)
}

/// Sets `height` rows of `width` elements of `elem` bytes, `pitch` bytes apart.
fn memset(
    dst: u64,
    pitch: usize,
    value: u32,
    elem: u8,
    width: usize,
    height: usize,
    stream: u64,
) -> ShimResult<()> {
    let row = width
        .checked_mul(elem as usize)
        .ok_or_else(|| invalid("memset width overflows"))?;
    if width == 0 || height == 0 {
        return prepare(stream, &[]).map(|_| ());
    }
    if !dst.is_multiple_of(elem as u64) {
        return Err(invalid(format!("{dst:#x} is not aligned to {elem} bytes")));
    }
    if height > 1 && pitch < row {
        return Err(invalid("pitch smaller than the row"));
    }
    let span = (height - 1)
        .checked_mul(pitch)
        .and_then(|v| v.checked_add(row))
        .ok_or_else(|| invalid("memset extent overflows"))?;
    let (ctx, stream) = prepare(stream, &[(dst, span as u64)])?;
    if let Some(cap) = capture::of(stream)? {
        return cap.add(Op::Memset {
            dst,
            pitch: if height > 1 { pitch as u64 } else { row as u64 },
            value,
            elem,
            width: width as u64,
            height: height as u64,
        });
    }
    if managed::host_side(dst, span as u64) {
        // SAFETY: the whole extent lies in a managed allocation's host mapping (checked above).
        unsafe { host_memset(dst, pitch, value, elem, width, height) };
        return Ok(());
    }
    if managed::is_managed(dst) {
        managed::before_device_work()?;
    }
    let req = Request::Memset {
        ctx: CtxId(ctx),
        stream: StreamId(stream),
        dst,
        pitch: pitch as u64,
        value,
        elem,
        width: width as u64,
        height: height as u64,
    };
    client::client()?.post(&req, &[])
}

/// A memset done on the host, element by element, as the device would do it.
///
/// # Safety
/// The extent `(height - 1) * pitch + width * elem` from `dst` is writable host memory.
unsafe fn host_memset(dst: u64, pitch: usize, value: u32, elem: u8, width: usize, height: usize) {
    let bytes = value.to_le_bytes();
    let e = elem as usize;
    for row in 0..height {
        let start = dst as usize + row * pitch;
        for i in 0..width {
            // SAFETY: inside the extent, by the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (start + i * e) as *mut u8, e) };
        }
    }
}

fn host_layout(size: usize) -> ShimResult<Layout> {
    Layout::from_size_align(size.max(1), HOST_ALIGN)
        .map_err(|_| invalid("host allocation too large"))
}

pub fn host_alloc(out: &mut *mut c_void, size: usize, flags: c_uint) -> ShimResult<()> {
    if size == 0 {
        return Err(invalid("host allocation of 0 bytes"));
    }
    let layout = host_layout(size)?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(ShimError::new(
            CuStatus::OUT_OF_MEMORY,
            format!("cannot allocate {size} bytes of host memory"),
        ));
    }
    registry().memory(|s| {
        s.host.insert(
            p as usize,
            HostRange {
                size,
                flags,
                owned: true,
            },
        )
    });
    *out = p.cast();
    Ok(())
}

/// Copies still owed to page-locked memory land before it is released.
fn settle(p: usize, len: usize) -> ShimResult<()> {
    match client::existing() {
        Some(c) => c.settle_reads(p, len),
        None => Ok(()),
    }
}

pub fn free_host(p: *mut c_void) -> ShimResult<()> {
    if let Some(len) = registry().memory(|s| s.host.get(&(p as usize)).map(|r| r.size)) {
        settle(p as usize, len)?;
    }
    let size = registry().memory(|s| match s.host.get(&(p as usize)) {
        Some(r) if r.owned => {
            let size = r.size;
            s.host.remove(&(p as usize));
            Ok(size)
        }
        _ => Err(invalid(format!(
            "{p:p} was not allocated by cuMemHostAlloc"
        ))),
    })?;
    // SAFETY: allocated by host_alloc with this layout, and removed from the table so it cannot
    // be freed twice.
    unsafe { std::alloc::dealloc(p.cast(), host_layout(size)?) };
    Ok(())
}

pub fn host_register(p: *mut c_void, size: usize, flags: c_uint) -> ShimResult<()> {
    if p.is_null() || size == 0 {
        return Err(invalid("null or empty range to register"));
    }
    let base = p as usize;
    registry().memory(|s| {
        let end = base
            .checked_add(size)
            .ok_or_else(|| invalid("range overflows"))?;
        let overlaps = s
            .host
            .range(..end)
            .next_back()
            .is_some_and(|(&b, r)| b + r.size > base);
        if overlaps {
            return Err(ShimError::new(
                CuStatus::HOST_MEMORY_ALREADY_REGISTERED,
                format!("{p:p} is already registered"),
            ));
        }
        s.host.insert(
            base,
            HostRange {
                size,
                flags,
                owned: false,
            },
        );
        Ok(())
    })
}

pub fn host_unregister(p: *mut c_void) -> ShimResult<()> {
    if let Some(len) = registry().memory(|s| s.host.get(&(p as usize)).map(|r| r.size)) {
        settle(p as usize, len)?;
    }
    registry().memory(|s| match s.host.get(&(p as usize)) {
        Some(r) if !r.owned => {
            s.host.remove(&(p as usize));
            Ok(())
        }
        _ => Err(ShimError::new(
            CuStatus::HOST_MEMORY_NOT_REGISTERED,
            format!("{p:p} is not registered"),
        )),
    })
}

pub fn host_get_flags(flags: &mut c_uint, p: *mut c_void) -> ShimResult<()> {
    *flags = registry()
        .memory(|s| s.host_range(p as usize).map(|(_, r)| r.flags))
        .ok_or_else(|| invalid(format!("{p:p} is not page-locked host memory")))?;
    Ok(())
}

/// Mapped (zero-copy) host memory cannot be reached by a GPU in another machine.
pub fn host_get_device_pointer() -> ShimResult<()> {
    Err(ShimError::new(
        CuStatus::NOT_SUPPORTED,
        "mapped host memory is not available on a remote GPU (CAN_MAP_HOST_MEMORY is 0)",
    ))
}

/// What a pointer is, for `cuPointerGetAttribute(s)`.
enum Kind {
    Device {
        base: u64,
        size: u64,
        ctx: u64,
        device: i32,
        managed: bool,
    },
    Host {
        base: usize,
        size: usize,
    },
    Unknown,
}

fn classify(p: u64) -> Kind {
    let managed = managed::is_managed(p);
    let kind = module::in_memory(|s| {
        if let Ok((base, a)) = s.alloc_range(p, 0) {
            return Ok(Kind::Device {
                base,
                size: a.size,
                ctx: a.ctx,
                device: a.device,
                managed: false,
            });
        }
        match s.host_range(p as usize) {
            Some((base, r)) => Ok(Kind::Host { base, size: r.size }),
            None => Err(invalid("unknown")),
        }
    })
    .unwrap_or(Kind::Unknown);
    match kind {
        Kind::Device {
            base,
            size,
            ctx,
            device,
            ..
        } => Kind::Device {
            base,
            size,
            ctx,
            device,
            managed,
        },
        other => other,
    }
}

/// Writes one attribute; `Ok(false)` when the pointer has no such attribute.
unsafe fn write_attribute(
    data: *mut c_void,
    attr: c_uint,
    kind: &Kind,
    p: u64,
) -> ShimResult<bool> {
    // SAFETY: `data` is a C out-pointer sized for the attribute's type as the driver API
    // documents it, for every write below.
    unsafe {
        match (attr, kind) {
            (1, Kind::Device { ctx, .. }) => put(data.cast::<u64>(), *ctx)?,
            (2, Kind::Device { .. }) => put(data.cast::<u32>(), 2)?, // CU_MEMORYTYPE_DEVICE
            (2, Kind::Host { .. }) => put(data.cast::<u32>(), 1)?,   // CU_MEMORYTYPE_HOST
            (3, Kind::Device { .. }) => put(data.cast::<u64>(), p)?,
            (4, Kind::Host { .. }) => put(data.cast::<u64>(), p)?,
            // Managed memory is valid on the host at the same address.
            (4, Kind::Device { managed: true, .. }) => put(data.cast::<u64>(), p)?,
            (8, Kind::Device { managed, .. }) => put(data.cast::<u32>(), u32::from(*managed))?,
            // Booleans are written as 32-bit values, as the driver does (callers read ints).
            (6 | 8 | 10 | 15, Kind::Device { .. } | Kind::Host { .. }) => {
                put(data.cast::<u32>(), 0)?
            }
            (13, Kind::Device { .. }) => put(data.cast::<u32>(), 1)?,
            (7, Kind::Device { base, .. }) => put(data.cast::<u64>(), *base)?,
            (9, Kind::Device { device, .. }) => put(data.cast::<i32>(), *device)?,
            (11, Kind::Device { base, .. }) => put(data.cast::<u64>(), *base)?,
            (11, Kind::Host { base, .. }) => put(data.cast::<u64>(), *base as u64)?,
            (12, Kind::Device { size, .. }) => put(data.cast::<usize>(), *size as usize)?,
            (12, Kind::Host { size, .. }) => put(data.cast::<usize>(), *size)?,
            (14, Kind::Device { .. }) => put(data.cast::<u64>(), 0)?,
            (16, Kind::Device { .. }) => put(data.cast::<u32>(), 3)?, // PROT_READWRITE
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// # Safety
/// `data` is NULL or points to storage of the attribute's type.
pub unsafe fn pointer_get_attribute(data: *mut c_void, attr: c_uint, p: u64) -> ShimResult<()> {
    if data.is_null() {
        return Err(invalid("null data pointer"));
    }
    let kind = classify(p);
    if matches!(kind, Kind::Unknown) {
        return Err(invalid(format!(
            "{p:#x} is neither device memory nor page-locked host memory"
        )));
    }
    // SAFETY: forwarded out-pointer.
    if unsafe { write_attribute(data, attr, &kind, p) }? {
        Ok(())
    } else {
        Err(invalid(format!(
            "pointer attribute {attr} does not apply to {p:#x}"
        )))
    }
}

/// # Safety
/// `attrs` and `data` have `n` entries; each `data` entry is NULL or points to storage of its
/// attribute's type.
pub unsafe fn pointer_get_attributes(
    n: c_uint,
    attrs: *mut c_uint,
    data: *mut *mut c_void,
    p: u64,
) -> ShimResult<()> {
    if n > 0 && (attrs.is_null() || data.is_null()) {
        return Err(invalid("null attribute arrays"));
    }
    let kind = classify(p);
    for i in 0..n as usize {
        // SAFETY: both arrays have n entries by the caller's contract.
        let (a, d) = unsafe { (*attrs.add(i), *data.add(i)) };
        if d.is_null() {
            continue;
        }
        // SAFETY: forwarded out-pointer. Unknown memory reports zeros (memory type 0), as the
        // driver does for pageable host memory.
        if !unsafe { write_attribute(d, a, &kind, p) }? {
            let zero_len = match a {
                2 | 6 | 8 | 9 | 10 | 13 | 15 | 16 => 4,
                _ => 8,
            };
            // SAFETY: `d` points to storage of the attribute's size.
            unsafe { std::ptr::write_bytes(d.cast::<u8>(), 0, zero_len) };
            if a == 9 {
                // SAFETY: as above, an int.
                unsafe { *d.cast::<i32>() = -2 };
            }
        }
    }
    Ok(())
}
