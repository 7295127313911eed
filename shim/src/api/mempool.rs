//! Memory pools and stream-ordered allocation (`cuMemAllocAsync`, `cuMemFreeAsync`).
//!
//! A pool keeps the blocks its allocations were freed into and hands them out again. A block
//! freed on a stream is reused by later allocations on that same stream at once (the stream
//! runs in order, so the free's earlier work is done before any new work touches it); after the
//! stream (or the context) is synchronised it may go to any stream, and the pool gives back
//! to the device whatever it holds above its release threshold, as the driver does at
//! synchronisation. New blocks come from `api::device_alloc`: placed in the shim's memory lease
//! without a round trip where it has room, else asked of the server, so running out of memory
//! is reported by the allocating call; before reporting it the pool releases its idle blocks
//! and tries once more.
//!
//! Each device has a default pool, minted on first use, and a current pool that
//! `cuMemAllocAsync` uses (`cuDeviceSetMemPool`).

use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use remora_protocol::CuStatus;

use super::graph::Op;
use super::pool_props::PoolProps;
use super::{capture, device, device_alloc};
use crate::client;
use crate::ffi::{invalid, put, ShimError, ShimResult};
use crate::registry::{self, registry};

/// Blocks are sized in multiples of this (the lease's placement granularity).
const GRANULE: u64 = 256;

/// `CUmemPool_attribute`.
const ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: c_uint = 1;
const ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: c_uint = 3;
const ATTR_RELEASE_THRESHOLD: c_uint = 4;
const ATTR_RESERVED_MEM_CURRENT: c_uint = 5;
const ATTR_RESERVED_MEM_HIGH: c_uint = 6;
const ATTR_USED_MEM_CURRENT: c_uint = 7;
const ATTR_USED_MEM_HIGH: c_uint = 8;

/// Device memory the pool holds and nobody uses now.
struct Block {
    ptr: u64,
    size: u64,
    ctx: u64,
    /// The stream it was freed on, until a synchronisation makes it free for any stream.
    stream: Option<u64>,
}

struct Pool {
    device: i32,
    default: bool,
    /// Destroyed while allocations were outstanding: blocks go back to the device as they come.
    destroyed: bool,
    threshold: u64,
    /// 0: no limit.
    max_size: u64,
    reuse: [i32; 3],
    reserved: u64,
    reserved_high: u64,
    used: u64,
    used_high: u64,
    free: Vec<Block>,
}

impl Pool {
    fn new(device: i32, default: bool, max_size: u64) -> Self {
        Self {
            device,
            default,
            destroyed: false,
            threshold: 0,
            max_size,
            reuse: [1, 1, 1],
            reserved: 0,
            reserved_high: 0,
            used: 0,
            used_high: 0,
            free: Vec::new(),
        }
    }

    fn take_block(&mut self, size: u64, ctx: u64, stream: u64) -> Option<u64> {
        // The smallest idle block that fits without wasting more than the request.
        let i = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.ctx == ctx
                    && b.stream.is_none_or(|s| s == stream)
                    && b.size >= size
                    && b.size <= size.saturating_mul(2)
            })
            .min_by_key(|(_, b)| b.size)
            .map(|(i, _)| i)?;
        let b = self.free.swap_remove(i);
        self.used += b.size;
        self.used_high = self.used_high.max(self.used);
        Some(b.ptr)
    }

    /// Takes idle blocks out while more than `keep` bytes are reserved (only blocks free for
    /// any stream when `any_stream` is false); the caller gives them back to the device.
    fn shed(&mut self, keep: u64, any_stream: bool) -> Vec<u64> {
        let mut out = Vec::new();
        // Largest first: the fewest frees.
        self.free.sort_by_key(|b| std::cmp::Reverse(b.size));
        let mut i = 0;
        while self.reserved > keep && i < self.free.len() {
            if any_stream || self.free[i].stream.is_none() {
                let b = self.free.remove(i);
                self.reserved = self.reserved.saturating_sub(b.size);
                out.push(b.ptr);
            } else {
                i += 1;
            }
        }
        out
    }
}

#[derive(Default)]
struct Pools {
    pools: HashMap<u64, Pool>,
    default: HashMap<i32, u64>,
    current: HashMap<i32, u64>,
    /// Allocations handed out: pool, block size, context.
    live: HashMap<u64, (u64, u64, u64)>,
}

impl Pools {
    fn pool(&mut self, h: u64) -> ShimResult<&mut Pool> {
        self.pools
            .get_mut(&h)
            .filter(|p| !p.destroyed)
            .ok_or_else(|| invalid(format!("unknown memory pool {h:#x}")))
    }

    fn default_of(&mut self, device: i32) -> u64 {
        *self.default.entry(device).or_insert_with(|| {
            let h = registry::mint();
            self.pools.insert(h, Pool::new(device, true, 0));
            h
        })
    }

    fn current_of(&mut self, device: i32) -> u64 {
        match self.current.get(&device) {
            Some(&h) => h,
            None => self.default_of(device),
        }
    }
}

fn pools() -> MutexGuard<'static, Pools> {
    static POOLS: LazyLock<Mutex<Pools>> = LazyLock::new(Mutex::default);
    // Every update leaves the tables consistent, so a panic elsewhere does not poison them.
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gives blocks back to the device. A block whose context was torn down meanwhile is already
/// gone with it, and is skipped.
fn release(blocks: Vec<u64>) -> ShimResult<()> {
    for ptr in blocks {
        if registry().memory(|m| m.allocs.contains_key(&ptr)) {
            device_alloc::free(ptr)?;
        }
    }
    Ok(())
}

fn check_device(dev: c_int) -> ShimResult<i32> {
    device::device(dev).map(|_| dev)
}

pub fn device_default(out: &mut u64, dev: c_int) -> ShimResult<()> {
    let dev = check_device(dev)?;
    *out = pools().default_of(dev);
    Ok(())
}

pub fn device_get(out: &mut u64, dev: c_int) -> ShimResult<()> {
    let dev = check_device(dev)?;
    *out = pools().current_of(dev);
    Ok(())
}

pub fn device_set(dev: c_int, pool: u64) -> ShimResult<()> {
    let dev = check_device(dev)?;
    let mut t = pools();
    if t.pool(pool)?.device != dev {
        return Err(invalid(format!(
            "memory pool {pool:#x} belongs to another device"
        )));
    }
    t.current.insert(dev, pool);
    Ok(())
}

pub fn create(out: &mut u64, p: &PoolProps) -> ShimResult<()> {
    // CU_MEM_ALLOCATION_TYPE_PINNED on CU_MEM_LOCATION_TYPE_DEVICE.
    if p.alloc_type != 1 {
        return Err(invalid(format!("allocation type {}", p.alloc_type)));
    }
    if p.location_type != 1 {
        return Err(ShimError::new(
            CuStatus::NOT_SUPPORTED,
            "memory pools live on a device",
        ));
    }
    if p.handle_types != 0 {
        return Err(ShimError::new(
            CuStatus::NOT_SUPPORTED,
            "pool memory cannot be exported from a remote GPU",
        ));
    }
    let dev = check_device(p.location_id).map_err(|_| invalid("no such device"))?;
    let h = registry::mint();
    pools()
        .pools
        .insert(h, Pool::new(dev, false, p.max_size as u64));
    *out = h;
    Ok(())
}

pub fn destroy(pool: u64) -> ShimResult<()> {
    let mut t = pools();
    let p = t.pool(pool)?;
    if p.default {
        return Err(invalid(
            "a device's default memory pool cannot be destroyed",
        ));
    }
    let device = p.device;
    let blocks = p.shed(0, true);
    p.destroyed = true;
    if p.used == 0 {
        t.pools.remove(&pool);
    }
    if t.current.get(&device) == Some(&pool) {
        t.current.remove(&device);
    }
    drop(t);
    release(blocks)
}

pub fn trim_to(pool: u64, keep: usize) -> ShimResult<()> {
    let blocks = pools().pool(pool)?.shed(keep as u64, true);
    release(blocks)
}

/// # Safety
/// `value` is NULL or points to the attribute's type (`int` or `cuuint64_t`).
pub unsafe fn get_attribute(pool: u64, attr: c_uint, value: *mut c_void) -> ShimResult<()> {
    let mut t = pools();
    let p = t.pool(pool)?;
    let v = match attr {
        ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES..=ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
            let i = (attr - 1) as usize;
            // SAFETY: an `int` attribute by the caller's contract.
            return unsafe { put(value.cast::<c_int>(), p.reuse[i]) };
        }
        ATTR_RELEASE_THRESHOLD => p.threshold,
        ATTR_RESERVED_MEM_CURRENT => p.reserved,
        ATTR_RESERVED_MEM_HIGH => p.reserved_high,
        ATTR_USED_MEM_CURRENT => p.used,
        ATTR_USED_MEM_HIGH => p.used_high,
        other => return Err(invalid(format!("memory pool attribute {other}"))),
    };
    // SAFETY: a `cuuint64_t` attribute by the caller's contract.
    unsafe { put(value.cast::<u64>(), v) }
}

/// # Safety
/// `value` points to the attribute's type (`int` or `cuuint64_t`).
pub unsafe fn set_attribute(pool: u64, attr: c_uint, value: *mut c_void) -> ShimResult<()> {
    if value.is_null() {
        return Err(invalid("null attribute value"));
    }
    let mut t = pools();
    let p = t.pool(pool)?;
    // SAFETY: for each attribute, the type the driver API documents, by the caller's contract.
    unsafe {
        match attr {
            ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES..=ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
                p.reuse[(attr - 1) as usize] = *value.cast::<c_int>();
            }
            ATTR_RELEASE_THRESHOLD => p.threshold = *value.cast::<u64>(),
            // The high-water marks may only be reset, to the current amount.
            ATTR_RESERVED_MEM_HIGH | ATTR_USED_MEM_HIGH if *value.cast::<u64>() != 0 => {
                return Err(invalid("a high-water mark can only be reset to 0"))
            }
            ATTR_RESERVED_MEM_HIGH => p.reserved_high = p.reserved,
            ATTR_USED_MEM_HIGH => p.used_high = p.used,
            other => {
                return Err(invalid(format!(
                    "memory pool attribute {other} cannot be set"
                )))
            }
        }
    }
    Ok(())
}

pub fn alloc_async(dptr: &mut u64, size: usize, stream: u64) -> ShimResult<()> {
    let (ctx, _) = registry().stream(stream)?;
    let device = registry().with_context(ctx, |c| c.device)?;
    let pool = pools().current_of(device);
    *dptr = alloc(pool, size, stream)?;
    Ok(())
}

pub fn alloc_from_pool(dptr: &mut u64, size: usize, pool: u64, stream: u64) -> ShimResult<()> {
    *dptr = alloc(pool, size, stream)?;
    Ok(())
}

fn alloc(pool: u64, size: usize, stream: u64) -> ShimResult<u64> {
    if size == 0 {
        return Err(invalid("allocation of 0 bytes"));
    }
    let (ctx, sid) = registry().stream(stream)?;
    let device = registry().with_context(ctx, |c| c.device)?;
    if let Some(cap) = capture::of(sid)? {
        // Captured: an allocation node, whose memory is the graph's (not the pool's).
        let op = super::graph_nodes::alloc_op(ctx, device, size as u64)?;
        let Op::MemAlloc { ptr, .. } = op else {
            return Err(invalid("not an allocation"));
        };
        return match cap.add(op.clone()) {
            Ok(()) => Ok(ptr),
            Err(e) => {
                super::graph::hold(&op);
                super::graph::unhold(&op);
                Err(e)
            }
        };
    }
    capture::refuse_on(sid, "a stream-ordered allocation")?;
    let need = (size as u64)
        .checked_next_multiple_of(GRANULE)
        .ok_or_else(|| invalid("allocation too large"))?;
    {
        let mut t = pools();
        let p = t.pool(pool)?;
        if p.device != device {
            return Err(invalid(format!(
                "memory pool {pool:#x} is not on the stream's device"
            )));
        }
        // A block whose context was torn down went with it.
        let alive =
            |b: &Block| registry().memory(|m| m.allocs.get(&b.ptr).is_some_and(|a| a.ctx == b.ctx));
        let gone: u64 = p.free.iter().filter(|b| !alive(b)).map(|b| b.size).sum();
        if gone > 0 {
            p.free.retain(alive);
            p.reserved = p.reserved.saturating_sub(gone);
        }
        if let Some(ptr) = p.take_block(need, ctx, sid) {
            t.live.insert(ptr, (pool, need, ctx));
            return Ok(ptr);
        }
        if p.max_size > 0 && p.reserved + need > p.max_size {
            let blocks = p.shed(p.max_size - need.min(p.max_size), false);
            let still = p.reserved + need > p.max_size;
            drop(t);
            release(blocks)?;
            if still {
                return Err(ShimError::new(
                    CuStatus::OUT_OF_MEMORY,
                    format!("memory pool {pool:#x} is at its maximum size"),
                ));
            }
        }
    }
    let c = client::client()?;
    let ptr = match device_alloc::alloc_aligned(c, ctx, device, need, 0) {
        Ok((ptr, _)) => ptr,
        Err(e) if e.status() == CuStatus::OUT_OF_MEMORY => {
            // Idle blocks of every pool on the device go back, then one more try.
            let blocks: Vec<u64> = pools()
                .pools
                .values_mut()
                .filter(|p| p.device == device)
                .flat_map(|p| p.shed(0, true))
                .collect();
            if blocks.is_empty() {
                return Err(e);
            }
            release(blocks)?;
            device_alloc::alloc_aligned(c, ctx, device, need, 0)?.0
        }
        Err(e) => return Err(e),
    };
    let mut t = pools();
    match t.pool(pool) {
        Ok(p) => {
            p.reserved += need;
            p.reserved_high = p.reserved_high.max(p.reserved);
            p.used += need;
            p.used_high = p.used_high.max(p.used);
            t.live.insert(ptr, (pool, need, ctx));
            Ok(ptr)
        }
        // Destroyed meanwhile by another thread.
        Err(e) => {
            drop(t);
            release(vec![ptr])?;
            Err(e)
        }
    }
}

/// `cuMemFreeAsync`: the block goes back to its pool, reusable by later work on `stream`.
/// Memory from `cuMemAlloc` may be freed this way too; the free is queued after the stream's
/// earlier work.
pub fn free_async(ptr: u64, stream: u64) -> ShimResult<()> {
    let (_, sid) = registry().stream(stream)?;
    if let Some(cap) = capture::of(sid)? {
        // Captured: a free node, which only a graph allocation may have.
        if !super::graph::is_graph_alloc(ptr) {
            return Err(invalid(format!(
                "{ptr:#x} is not a graph allocation: a captured free cannot free it"
            )));
        }
        return cap.add(Op::MemFree { ptr });
    }
    // A graph allocation stays while its graphs do (see `graph::Op::MemAlloc`).
    if super::graph::is_graph_alloc(ptr) {
        return Ok(());
    }
    capture::refuse_on(sid, "a stream-ordered free")?;
    let mut t = pools();
    // An entry whose context was torn down is stale: the address may be another's now.
    let held = |ctx: u64, size: u64| {
        registry().memory(|m| {
            m.allocs
                .get(&ptr)
                .is_some_and(|a| a.ctx == ctx && a.size == size)
        })
    };
    let entry = t.live.remove(&ptr);
    if let Some((pool, size, _)) = entry.filter(|&(_, size, ctx)| !held(ctx, size)) {
        if let Some(p) = t.pools.get_mut(&pool) {
            p.used = p.used.saturating_sub(size);
            p.reserved = p.reserved.saturating_sub(size);
        }
    }
    let Some((pool, size, ctx)) = entry.filter(|&(_, size, ctx)| held(ctx, size)) else {
        drop(t);
        return super::memory::free(ptr).map_err(|_| {
            invalid(format!(
                "{ptr:#x} is not an allocation of a memory pool or cuMemAlloc"
            ))
        });
    };
    let Some(p) = t.pools.get_mut(&pool) else {
        drop(t);
        return release(vec![ptr]);
    };
    p.used = p.used.saturating_sub(size);
    if p.destroyed {
        p.reserved = p.reserved.saturating_sub(size);
        if p.used == 0 {
            t.pools.remove(&pool);
        }
        drop(t);
        return release(vec![ptr]);
    }
    p.free.push(Block {
        ptr,
        size,
        ctx,
        stream: Some(sid),
    });
    Ok(())
}

/// After a synchronisation of server stream `stream` (`None`: the whole context): blocks freed
/// there may go to any stream, and each pool gives back what it holds above its threshold.
pub fn synchronized(stream: Option<u64>) -> ShimResult<()> {
    let blocks: Vec<u64> = {
        let mut t = pools();
        if t.pools.is_empty() {
            return Ok(());
        }
        t.pools
            .values_mut()
            .flat_map(|p| {
                for b in &mut p.free {
                    if stream.is_none() || b.stream == stream {
                        b.stream = None;
                    }
                }
                let keep = p.threshold;
                p.shed(keep, false)
            })
            .collect()
    };
    release(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_on_their_stream_and_shed_above_the_threshold() {
        let mut p = Pool::new(0, false, 0);
        p.reserved = 3 * 1024;
        p.free = vec![
            Block {
                ptr: 0x1000,
                size: 1024,
                ctx: 7,
                stream: Some(1),
            },
            Block {
                ptr: 0x2000,
                size: 2048,
                ctx: 7,
                stream: None,
            },
        ];
        // Another stream cannot take a block freed on stream 1 before a synchronisation.
        assert_eq!(p.take_block(1024, 7, 2), Some(0x2000));
        assert_eq!(p.take_block(1024, 7, 2), None);
        assert_eq!(p.take_block(1024, 8, 1), None);
        // A block more than twice the request is not handed out for it.
        assert_eq!(p.take_block(256, 7, 1), None);
        assert_eq!(p.take_block(1024, 7, 1), Some(0x1000));
        assert_eq!((p.used, p.used_high), (3072, 3072));
        p.free.push(Block {
            ptr: 0x3000,
            size: 1024,
            ctx: 7,
            stream: Some(3),
        });
        // Not free for any stream yet: kept.
        assert!(p.shed(0, false).is_empty());
        assert_eq!(p.shed(0, true), vec![0x3000]);
        assert_eq!(p.reserved, 2048);
    }
}
