//! Managed memory (`cuMemAllocManaged`) as on a GPU without concurrent managed access.
//!
//! The devices Remora presents report `MANAGED_MEMORY` 1 and `CONCURRENT_MANAGED_ACCESS` 0, the
//! model of pre-Pascal GPUs and of Windows: a managed pointer is valid on the host and on the
//! device at the same address, and the host may touch it while the GPU is idle, that is after a
//! synchronising call. Each managed allocation is device memory (placed in the memory lease
//! where it fits, page aligned) plus anonymous host memory mapped at the same address, inside
//! the device window this process reserved (so the address is always ours to map).
//!
//! Coherence follows the model's two moments:
//!
//! - before device work (a launch, memset or device-side copy), every allocation the host may
//!   have written since the last synchronisation is sent to the device, posted like any
//!   asynchronous copy. Only the pages that differ from what the device was last known to hold
//!   (a shadow copy) travel, so a host that changed nothing sends nothing.
//! - at a synchronising call made after device work (context, stream or event synchronise, a
//!   synchronous device-to-host copy), every allocation's device bytes are read back into the
//!   host mapping in the same round trip: the synchronising request is posted, the reads queued
//!   after it, and one flush waits for all of them.
//!
//! While no managed allocation exists none of this costs more than one atomic load.

use std::collections::BTreeMap;
use std::ffi::c_uint;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use remora_protocol::messages::{CtxId, Reply, Request, StreamId};
use remora_protocol::CuStatus;

use super::device_alloc;
use crate::client::{self, Client};
use crate::ffi::{invalid, ShimError, ShimResult};
use crate::registry::{self, registry, Alloc};

/// Host pages: managed allocations are placed and mapped in whole pages.
const PAGE: u64 = 4096;
/// Granularity of the dirty comparison, and of the pieces sent to the device.
const CHUNK: usize = 64 << 10;
/// `CU_MEM_ATTACH_GLOBAL` and `CU_MEM_ATTACH_HOST`, the flags `cuMemAllocManaged` accepts.
const ATTACH_GLOBAL: u32 = 1;
const ATTACH_HOST: u32 = 2;

/// One managed allocation.
struct Managed {
    /// What the application was given and the host mapping's start (page aligned).
    size: u64,
    /// Bytes mapped on the host (whole pages).
    mapped: u64,
    /// The device allocation holding it (differs from the pointer when the server placed it).
    device_base: u64,
    ctx: u64,
    /// What the device holds, as far as the host knows; `None` before the first upload.
    shadow: Option<Vec<u8>>,
    /// True from an upload until the next read-back: the device may hold newer bytes, and the
    /// host (which may not touch the memory meanwhile) has nothing new to send.
    on_device: bool,
}

#[derive(Default)]
struct Table {
    allocs: BTreeMap<u64, Managed>,
    /// Device work was queued since the last read-back.
    device_work: bool,
}

static ANY: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Table> = Mutex::new(Table {
    allocs: BTreeMap::new(),
    device_work: false,
});

fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Allocation

/// `cuMemAllocManaged`.
pub fn alloc(dptr: &mut u64, size: usize, flags: c_uint) -> ShimResult<()> {
    if size == 0 {
        return Err(invalid("managed allocation of 0 bytes"));
    }
    if flags != ATTACH_GLOBAL && flags != ATTACH_HOST {
        return Err(invalid(format!(
            "flags {flags:#x}: must be CU_MEM_ATTACH_GLOBAL or CU_MEM_ATTACH_HOST"
        )));
    }
    let ctx = registry::current_ctx()?;
    let device = registry().with_context(ctx, |c| c.device)?;
    let c = client::client()?;
    let mapped = (size as u64)
        .checked_next_multiple_of(PAGE)
        .ok_or_else(|| invalid("managed allocation too large"))?;
    let (ptr, device_base) = device_alloc::alloc_aligned(c, ctx, device, mapped, PAGE)?;
    forget_stale(device_base, mapped + (ptr - device_base));
    if let Err(e) = map_host(ptr, mapped, in_window(c, ptr, mapped)) {
        let _ = device_alloc::free(device_base);
        return Err(e);
    }
    // The registry's mirror covers what the application may address from `ptr`.
    registry().memory(|m| {
        if device_base != ptr {
            let a = m.allocs.remove(&device_base);
            m.allocs.insert(
                ptr,
                Alloc {
                    size: size as u64,
                    ctx,
                    device,
                    module: None,
                    leased: a.is_some_and(|a| a.leased),
                },
            );
        }
    });
    let mut t = table();
    t.allocs.insert(
        ptr,
        Managed {
            size: size as u64,
            mapped,
            device_base,
            ctx,
            shadow: None,
            on_device: false,
        },
    );
    ANY.store(true, Ordering::Release);
    *dptr = ptr;
    Ok(())
}

/// Maps `len` bytes of zeroed host memory at `ptr`. Inside one of this process's device windows
/// (`ours`) the address is its own reservation; elsewhere (a server that placed the allocation
/// outside the windows) it must be free, or the allocation fails with `OUT_OF_MEMORY`.
fn map_host(ptr: u64, len: u64, ours: bool) -> ShimResult<()> {
    let flags = libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | if ours {
            libc::MAP_FIXED
        } else {
            libc::MAP_FIXED_NOREPLACE
        };
    // SAFETY: inside a window, the range is this process's own PROT_NONE reservation, which no
    // other object uses; outside one, MAP_FIXED_NOREPLACE refuses to replace any mapping.
    let p = unsafe {
        libc::mmap(
            ptr as usize as *mut libc::c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED || p as u64 != ptr {
        if p != libc::MAP_FAILED {
            // SAFETY: an older kernel placed the mapping elsewhere; it is ours to remove.
            unsafe { libc::munmap(p, len as usize) };
        }
        return Err(ShimError::new(
            CuStatus::OUT_OF_MEMORY,
            format!(
                "cannot map managed memory on the host at {ptr:#x}: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}

/// Gives the host pages back: inside a window they become its reservation again.
fn unmap_host(ptr: u64, len: u64) {
    let ours = client::existing().is_some_and(|c| in_window(c, ptr, len));
    // SAFETY: the range is the host mapping of a managed allocation being freed; nothing else
    // lives there. Re-reserving it inside a window keeps the window whole.
    unsafe {
        if ours {
            libc::mmap(
                ptr as usize as *mut libc::c_void,
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            );
        } else {
            libc::munmap(ptr as usize as *mut libc::c_void, len as usize);
        }
    }
}

fn in_window(c: &Client, ptr: u64, len: u64) -> bool {
    c.windows
        .iter()
        .any(|w| ptr >= w.base && ptr.saturating_add(len) <= w.base + w.size)
}

/// `cuMemFree` of a managed pointer: `Some(device allocation to free)` if `ptr` is one.
pub fn release(ptr: u64) -> Option<u64> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    let m = table().allocs.remove(&ptr)?;
    unmap_host(ptr, m.mapped);
    if m.device_base != ptr {
        // The mirror knows it under the application's pointer; free looks it up by the base.
        registry().memory(|s| {
            if let Some(a) = s.allocs.remove(&ptr) {
                s.allocs.insert(m.device_base, a);
            }
        });
    }
    Some(m.device_base)
}

/// Forgets managed allocations overlapping a new allocation at `[ptr, ptr + len)`: they were
/// torn down with their context (whose teardown this module does not see) and the address has
/// been given out again.
pub fn forget_stale(ptr: u64, len: u64) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let mut t = table();
    let end = ptr.saturating_add(len);
    let stale: Vec<(u64, u64)> = t
        .allocs
        .range(..end)
        .filter(|(&b, m)| b + m.mapped > ptr)
        .map(|(&b, m)| (b, m.mapped))
        .collect();
    for (b, mapped) in stale {
        t.allocs.remove(&b);
        unmap_host(b, mapped);
    }
}

/// Whether `[p, p + len)` lies in a managed allocation whose newest bytes are the host's: then
/// copies and memsets touching it are done on the host, in order with everything else.
pub fn host_side(p: u64, len: u64) -> bool {
    if !ANY.load(Ordering::Acquire) {
        return false;
    }
    let t = table();
    t.allocs
        .range(..=p)
        .next_back()
        .is_some_and(|(&b, m)| !m.on_device && p.saturating_add(len) <= b + m.size)
}

/// Whether `p` is inside a managed allocation.
pub fn is_managed(p: u64) -> bool {
    if !ANY.load(Ordering::Acquire) {
        return false;
    }
    let t = table();
    t.allocs
        .range(..=p)
        .next_back()
        .is_some_and(|(&b, m)| p < b + m.size)
}

// ---------------------------------------------------------------------------------------------
// Coherence

/// Before device work: sends what the host wrote since the last synchronisation. Posted, never
/// waited for.
pub fn before_device_work() -> ShimResult<()> {
    if !ANY.load(Ordering::Acquire) {
        return Ok(());
    }
    let c = client::client()?;
    let mut t = table();
    prune(&mut t);
    t.device_work = true;
    for (&ptr, m) in t.allocs.iter_mut().filter(|(_, m)| !m.on_device) {
        // SAFETY: the host mapping of `m` spans `m.size` bytes from `ptr` until it is freed,
        // which takes this table's lock; the application does not write it while it launches.
        let host =
            unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, m.size as usize) };
        let shadow = m.shadow.get_or_insert_with(Vec::new);
        let fresh = shadow.is_empty();
        if fresh {
            shadow.resize(host.len(), 0);
        }
        for (off, len) in dirty_runs(host, shadow, fresh) {
            c.post(
                &Request::MemcpyHtoD {
                    ctx: CtxId(m.ctx),
                    stream: StreamId(0),
                    dst: ptr + off as u64,
                },
                &host[off..off + len],
            )?;
            shadow[off..off + len].copy_from_slice(&host[off..off + len]);
        }
        m.on_device = true;
    }
    Ok(())
}

/// Runs of `CHUNK`s where `host` differs from `shadow` (everything when `all`), adjacent ones
/// merged: `(offset, length)`.
fn dirty_runs(host: &[u8], shadow: &[u8], all: bool) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for off in (0..host.len()).step_by(CHUNK) {
        let end = (off + CHUNK).min(host.len());
        if !all && host[off..end] == shadow[off..end] {
            continue;
        }
        match runs.last_mut() {
            Some((o, l)) if *o + *l == off => *l += end - off,
            _ => runs.push((off, end - off)),
        }
    }
    runs
}

/// Forgets managed allocations whose context was torn down (the registry no longer has them).
fn prune(t: &mut Table) {
    let gone: Vec<(u64, u64)> = registry().memory(|s| {
        t.allocs
            .iter()
            .filter(|(&p, m)| s.allocs.get(&p).is_none_or(|a| a.ctx != m.ctx))
            .map(|(&p, m)| (p, m.mapped))
            .collect()
    });
    for (p, mapped) in gone {
        t.allocs.remove(&p);
        unmap_host(p, mapped);
    }
}

/// A synchronising call: if device work was queued since the last read-back, the device bytes
/// of every managed allocation come back in the same round trip.
pub fn sync_call(c: &Client, req: &Request) -> ShimResult<Reply> {
    if !ANY.load(Ordering::Acquire) {
        return c.call(req);
    }
    let mut t = table();
    if !t.device_work {
        drop(t);
        return c.call(req);
    }
    // The request is posted (its error comes back with the flush below), then the reads.
    c.post(req, &[])?;
    read_back(c, &mut t)
}

/// A synchronous device-to-host copy into `out`, bringing managed memory back with it.
pub fn sync_read(c: &Client, req: &Request, out: &mut [u8]) -> ShimResult<()> {
    if !ANY.load(Ordering::Acquire) {
        return c.call_read(req, out).map(|_| ());
    }
    let mut t = table();
    if !t.device_work {
        drop(t);
        return c.call_read(req, out).map(|_| ());
    }
    // SAFETY: `out` is borrowed until this function returns, after the flush below has
    // collected every read queued before it.
    unsafe { c.post_read(req, out.as_mut_ptr(), out.len()) }?;
    read_back(c, &mut t).map(|_| ())
}

fn read_back(c: &Client, t: &mut Table) -> ShimResult<Reply> {
    prune(t);
    for (&ptr, m) in t.allocs.iter().filter(|(_, m)| m.on_device) {
        let req = Request::MemcpyDtoH {
            ctx: CtxId(m.ctx),
            stream: StreamId(0),
            src: ptr,
            size: m.size,
        };
        // SAFETY: the host mapping stays until the allocation is freed, which waits for this
        // table's lock, held until the flush below has collected the data.
        unsafe { c.post_read(&req, ptr as usize as *mut u8, m.size as usize) }?;
    }
    let reply = c.call(&Request::Flush)?;
    for (&ptr, m) in t.allocs.iter_mut().filter(|(_, m)| m.on_device) {
        // SAFETY: as in `before_device_work`.
        let host =
            unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, m.size as usize) };
        match &mut m.shadow {
            Some(s) => s.copy_from_slice(host),
            None => m.shadow = Some(host.to_vec()),
        }
        m.on_device = false;
    }
    t.device_work = false;
    Ok(reply)
}

// ---------------------------------------------------------------------------------------------
// Hints

/// `cuMemAdvise`: advice about placement, which this model (one copy on each side, moved at
/// fixed moments) does not need. The range must be managed memory, as the driver requires.
pub fn advise(ptr: u64, count: usize, advice: c_uint) -> ShimResult<()> {
    // CU_MEM_ADVISE_SET_READ_MOSTLY (1) .. UNSET_ACCESSED_BY (6).
    if !(1..=6).contains(&advice) {
        return Err(invalid(format!("unknown memory advice {advice}")));
    }
    check_range(ptr, count)
}

/// `cuMemPrefetchAsync`: to the device it uploads what the host wrote now (as a launch would);
/// to the host (`CU_DEVICE_CPU`, -1) the bytes come back at the next synchronisation anyway.
pub fn prefetch(ptr: u64, count: usize, device: i32, stream: u64) -> ShimResult<()> {
    check_range(ptr, count)?;
    registry().stream(stream)?;
    match device {
        -1 => Ok(()),
        d if d >= 0 => {
            super::device::device(d)?;
            before_device_work()
        }
        d => Err(ShimError::new(
            CuStatus::INVALID_DEVICE,
            format!("no device {d}"),
        )),
    }
}

/// `cuStreamAttachMemAsync`: which streams may touch an allocation. Every stream may, and the
/// host's turn begins at any synchronisation, so the association changes nothing here; it is
/// checked as the driver checks it.
pub fn attach(stream: u64, ptr: u64, length: usize, flags: c_uint) -> ShimResult<()> {
    registry().stream(stream)?;
    // CU_MEM_ATTACH_GLOBAL, _HOST, _SINGLE.
    if !matches!(flags, 1 | 2 | 4) {
        return Err(invalid(format!("attach flags {flags:#x}")));
    }
    let whole = table().allocs.get(&ptr).map(|m| m.size as usize);
    match (length, whole) {
        (0, Some(_)) => Ok(()),
        (0, None) => Err(invalid(format!(
            "{ptr:#x} is not the start of a managed allocation"
        ))),
        (n, _) => check_range(ptr, n),
    }
}

fn check_range(ptr: u64, count: usize) -> ShimResult<()> {
    let t = table();
    let ok = t.allocs.range(..=ptr).next_back().is_some_and(|(&b, m)| {
        ptr.checked_add(count as u64)
            .is_some_and(|e| e <= b + m.size)
    });
    if count == 0 || !ok {
        return Err(invalid(format!(
            "{count} bytes at {ptr:#x} are not inside a managed allocation"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pages_map_only_where_the_address_is_free() {
        let len = 2 * PAGE;
        // SAFETY: an anonymous mapping at an address of the kernel's choosing.
        let taken = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(taken, libc::MAP_FAILED);
        let e = map_host(taken as u64, len, false).unwrap_err();
        assert_eq!(e.status(), CuStatus::OUT_OF_MEMORY);
        // SAFETY: the mapping made above; nothing else uses it.
        unsafe { libc::munmap(taken, len as usize) };
        map_host(taken as u64, len, false).unwrap();
        // SAFETY: now this test's own read-write mapping of `len` bytes.
        unsafe { *(taken as *mut u8) = 7 };
        unmap_host(taken as u64, len);
    }

    #[test]
    fn only_changed_chunks_are_sent_and_neighbours_merge() {
        let shadow = vec![0u8; CHUNK * 4 + 10];
        let mut host = shadow.clone();
        assert!(dirty_runs(&host, &shadow, false).is_empty());
        assert_eq!(dirty_runs(&host, &shadow, true), vec![(0, host.len())]);
        host[CHUNK + 5] = 1;
        host[CHUNK * 2] = 1;
        host[CHUNK * 4 + 9] = 1;
        assert_eq!(
            dirty_runs(&host, &shadow, false),
            vec![(CHUNK, 2 * CHUNK), (CHUNK * 4, 10)]
        );
    }
}
