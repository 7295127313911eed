//! Device memory of the emulated GPU.
//!
//! A [`DeviceMemory`] is one device's budget (total bytes and bytes in use). An
//! [`AddressSpace`] is one client's view of that device: allocations placed inside the address
//! window the client reserved, so device addresses never collide with the client's host memory.
//! Data is kept in `AtomicU64` words: every access is a relaxed atomic of the word, so kernels
//! whose threads race (legal in CUDA) stay sound on the host.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// Alignment of every allocation: `cuMemAlloc` guarantees 256 bytes, and real GPUs place
/// small allocations 512 bytes apart. Kernels may touch all of an allocation's last 512-byte
/// block (its *extent*) without faulting, as they can on hardware, where a small overrun lands
/// in memory the driver mapped anyway; copies stay bound to the size asked for.
pub const ALLOC_ALIGN: u64 = 512;

/// What went wrong with a memory operation; each maps to one CUDA error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// The device budget cannot hold the request (`CUDA_ERROR_OUT_OF_MEMORY`).
    #[error("out of device memory: {requested} bytes requested, {free} free")]
    OutOfMemory { requested: u64, free: u64 },
    /// A size of zero or one that cannot be represented (`CUDA_ERROR_INVALID_VALUE`).
    #[error("invalid size {0}")]
    InvalidSize(u64),
    /// The pointer is not the start of a live allocation (`CUDA_ERROR_INVALID_VALUE`).
    #[error("{0:#x} is not an allocation of this client")]
    NotAllocated(u64),
    /// `[addr, addr + len)` is not inside one live allocation (`CUDA_ERROR_INVALID_VALUE` for
    /// copies, `CUDA_ERROR_ILLEGAL_ADDRESS` for kernels).
    #[error("{len} bytes at {addr:#x} are outside any allocation of this client")]
    OutOfBounds { addr: u64, len: u64 },
    /// An access of `size` bytes at an address not aligned to `size`
    /// (`CUDA_ERROR_MISALIGNED_ADDRESS`).
    #[error("misaligned {size}-byte access at {addr:#x}")]
    Misaligned { addr: u64, size: u64 },
}

/// One device's memory budget, shared by every address space on that device.
#[derive(Debug)]
pub struct DeviceMemory {
    total: u64,
    used: AtomicU64,
}

impl DeviceMemory {
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            total,
            used: AtomicU64::new(0),
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.used.load(Relaxed))
    }

    /// Takes `size` bytes of the budget, or fails with what is free.
    pub fn reserve(&self, size: u64) -> Result<(), MemError> {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(size).filter(|&u| u <= self.total)
            })
            .map(|_| ())
            .map_err(|used| MemError::OutOfMemory {
                requested: size,
                free: self.total.saturating_sub(used),
            })
    }

    /// Returns `size` bytes taken with [`DeviceMemory::reserve`].
    pub fn release(&self, size: u64) {
        self.used.fetch_sub(size, Relaxed);
    }
}

/// One live allocation: `size` bytes at `base`, stored as little-endian atomic words, with
/// storage for its whole extent (see [`ALLOC_ALIGN`]).
#[derive(Debug)]
pub struct Allocation {
    base: u64,
    size: u64,
    extent: u64,
    /// Shared with the mappings of this allocation in other address spaces (CUDA IPC).
    words: Arc<[AtomicU64]>,
}

impl Allocation {
    fn new(base: u64, size: u64) -> Self {
        let extent = size.max(1).next_multiple_of(ALLOC_ALIGN);
        let words = (0..extent / 8).map(|_| AtomicU64::new(0)).collect();
        Self {
            base,
            size,
            extent,
            words,
        }
    }

    /// The same bytes seen at another address (another client's mapping of it).
    pub fn mapped_at(&self, base: u64) -> Self {
        Self {
            base,
            size: self.size,
            extent: self.extent,
            words: self.words.clone(),
        }
    }

    /// Bytes a kernel may touch: the size rounded up to the allocation granularity.
    pub fn extent(&self) -> u64 {
        self.extent
    }

    /// Whether a kernel may access `[addr, addr + len)` in this allocation.
    pub fn reaches(&self, addr: u64, len: u64) -> bool {
        addr >= self.base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.base + self.extent)
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `[addr, addr + len)` lies inside this allocation.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.base + self.size)
    }

    /// Copies bytes out, starting `off` bytes into the allocation. The caller checked bounds.
    pub fn read_at(&self, off: u64, out: &mut [u8]) {
        // Unaligned head and tail byte by byte; the aligned middle a word at a time (the bulk
        // path of every device-to-host copy).
        let head = ((8 - off % 8) % 8).min(out.len() as u64) as usize;
        let (head_out, rest) = out.split_at_mut(head);
        self.read_bytes(off, head_out);
        let mid = rest.len() / 8 * 8;
        let (mid_out, tail_out) = rest.split_at_mut(mid);
        let first = ((off + head as u64) / 8) as usize;
        for (chunk, w) in mid_out.chunks_exact_mut(8).zip(&self.words[first..]) {
            chunk.copy_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        self.read_bytes(off + (head + mid) as u64, tail_out);
    }

    fn read_bytes(&self, off: u64, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let a = off + i as u64;
            *b = self.words[(a / 8) as usize].load(Relaxed).to_le_bytes()[(a % 8) as usize];
        }
    }

    /// Copies bytes in, starting `off` bytes into the allocation. The caller checked bounds.
    pub fn write_at(&self, off: u64, data: &[u8]) {
        let mut pos = 0usize;
        let mut addr = off;
        while pos < data.len() {
            let idx = (addr / 8) as usize;
            let start = (addr % 8) as usize;
            let n = (8 - start).min(data.len() - pos);
            if n == 8 {
                let v = u64::from_le_bytes(data[pos..pos + 8].try_into().unwrap_or([0; 8]));
                self.words[idx].store(v, Relaxed);
            } else {
                let mut bytes = [0u8; 8];
                bytes[start..start + n].copy_from_slice(&data[pos..pos + n]);
                self.merge(idx, u64::from_le_bytes(bytes), mask(start, n));
            }
            pos += n;
            addr += n as u64;
        }
    }

    /// Loads an aligned little-endian value of 1, 2, 4 or 8 bytes at offset `off`.
    pub fn load(&self, off: u64, size: u32) -> u64 {
        let word = self.words[(off / 8) as usize].load(Relaxed);
        if size == 8 {
            word
        } else {
            (word >> ((off % 8) * 8)) & ((1u64 << (size * 8)) - 1)
        }
    }

    /// Stores an aligned little-endian value of 1, 2, 4 or 8 bytes at offset `off`.
    pub fn store(&self, off: u64, size: u32, value: u64) {
        let idx = (off / 8) as usize;
        if size == 8 {
            self.words[idx].store(value, Relaxed);
        } else {
            let shift = (off % 8) * 8;
            let m = ((1u64 << (size * 8)) - 1) << shift;
            self.merge(idx, (value << shift) & m, m);
        }
    }

    /// The atomic word holding offset `off` (for atomics wider than a byte).
    pub fn word(&self, off: u64) -> &AtomicU64 {
        &self.words[(off / 8) as usize]
    }

    fn merge(&self, idx: usize, bits: u64, m: u64) {
        // Only the bytes under `m` change: neighbours written by other threads are kept.
        let _ = self.words[idx].fetch_update(Relaxed, Relaxed, |w| Some((w & !m) | bits));
    }
}

fn mask(start: usize, n: usize) -> u64 {
    let m = if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    };
    m << (start * 8)
}

/// One client's allocations on one device, placed inside the client's address window.
#[derive(Debug)]
pub struct AddressSpace {
    device: Arc<DeviceMemory>,
    window_base: u64,
    window_end: u64,
    lease_end: u64,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    allocs: BTreeMap<u64, Arc<Allocation>>,
    next: u64,
    /// Device memory reserved for the client to allocate itself (upper half of the window),
    /// and how much of it its live allocations use.
    lease: u64,
    leased: u64,
    /// Bases of the allocations made inside the lease.
    in_lease: std::collections::BTreeSet<u64>,
    /// Bases of the allocations kernels made with device `malloc`: only `free` in a kernel
    /// releases them (or the client going away).
    heap: std::collections::BTreeSet<u64>,
    /// Bases of other clients' allocations mapped here (CUDA IPC): their device memory is
    /// counted where they were allocated, and only unmapping removes them.
    imported: std::collections::BTreeSet<u64>,
}

impl AddressSpace {
    /// An empty address space whose allocations fall inside `[window_base, window_base + size)`:
    /// the lower half for allocations placed here, the upper half for the client's own, inside
    /// a lease ([`AddressSpace::lease`]).
    pub fn new(device: Arc<DeviceMemory>, window_base: u64, window_size: u64) -> Self {
        let base = window_base.next_multiple_of(ALLOC_ALIGN);
        Self {
            device,
            window_base: base,
            window_end: window_base.saturating_add(window_size / 2),
            lease_end: window_base.saturating_add(window_size),
            inner: RwLock::new(Inner {
                next: base,
                ..Inner::default()
            }),
        }
    }

    /// Reserves `bytes` of device memory for the client to allocate itself, at addresses it
    /// chooses in the upper half of the window ([`AddressSpace::alloc_at`]).
    pub fn lease(&self, bytes: u64) -> Result<(), MemError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        self.device.reserve(bytes)?;
        self.device.release(inner.lease);
        inner.lease = bytes;
        Ok(())
    }

    /// Makes `bytes`, already taken from the device's budget with [`DeviceMemory::reserve`]
    /// (the server reserves a lease when it promises it), this space's lease; released with
    /// the space as [`AddressSpace::lease`]'s are.
    pub fn adopt_lease(&self, bytes: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        self.device.release(inner.lease);
        inner.lease = bytes;
    }

    /// Leased bytes no allocation uses yet: free memory, as this client sees it.
    pub fn lease_unused(&self) -> u64 {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.lease - inner.leased
    }

    /// The upper half of the window, where the client places its own allocations.
    pub fn lease_region(&self) -> (u64, u64) {
        (
            self.window_end.next_multiple_of(ALLOC_ALIGN),
            self.lease_end,
        )
    }

    /// An allocation the client placed at `ptr`, inside its lease: in the upper half of the
    /// window, aligned, overlapping nothing, within the bytes leased.
    pub fn alloc_at(&self, ptr: u64, size: u64) -> Result<(), MemError> {
        let (lo, hi) = self.lease_region();
        let end = ptr.checked_add(size).ok_or(MemError::InvalidSize(size))?;
        if size == 0 || ptr < lo || end > hi {
            return Err(MemError::InvalidSize(size));
        }
        if ptr % ALLOC_ALIGN != 0 {
            return Err(MemError::Misaligned {
                addr: ptr,
                size: ALLOC_ALIGN,
            });
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.leased + size > inner.lease {
            return Err(MemError::OutOfMemory {
                requested: size,
                free: inner.lease - inner.leased,
            });
        }
        // Extents may not overlap either: each address belongs to one allocation.
        let reach = ptr.saturating_add(size.next_multiple_of(ALLOC_ALIGN));
        let before = inner.allocs.range(..reach).next_back();
        if before.is_some_and(|(_, a)| a.base + a.extent > ptr) {
            return Err(MemError::OutOfBounds {
                addr: ptr,
                len: size,
            });
        }
        inner.leased += size;
        inner.in_lease.insert(ptr);
        inner
            .allocs
            .insert(ptr, Arc::new(Allocation::new(ptr, size)));
        Ok(())
    }

    pub fn device(&self) -> &Arc<DeviceMemory> {
        &self.device
    }

    /// Allocates `size` bytes, zero-filled, and returns the device address.
    pub fn alloc(&self, size: u64) -> Result<u64, MemError> {
        if size == 0 || size > self.window_end - self.window_base {
            return Err(MemError::InvalidSize(size));
        }
        self.device.reserve(size)?;
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let span = size.next_multiple_of(ALLOC_ALIGN);
        // Bump allocation keeps freed addresses unused for as long as the window allows, which
        // turns a use-after-free into a clean error instead of silent corruption.
        let base = match inner
            .next
            .checked_add(span)
            .filter(|&e| e <= self.window_end)
        {
            Some(_) => inner.next,
            None => match self.first_gap(&inner, span) {
                Some(b) => b,
                None => {
                    drop(inner);
                    self.device.release(size);
                    return Err(MemError::OutOfMemory {
                        requested: size,
                        free: self.device.free(),
                    });
                }
            },
        };
        inner.next = inner.next.max(base + span);
        inner
            .allocs
            .insert(base, Arc::new(Allocation::new(base, size)));
        Ok(base)
    }

    /// Allocates `size` bytes, zero-filled, at `ptr` in the lower half of the window: where
    /// another device already placed the same allocation (the pool's virtual GPU maps every
    /// allocation at one address on all of its members). Refused when `ptr` is misaligned,
    /// outside the lower half, or overlaps an allocation.
    pub fn alloc_fixed(&self, ptr: u64, size: u64) -> Result<(), MemError> {
        let end = ptr.checked_add(size).ok_or(MemError::InvalidSize(size))?;
        if size == 0 || ptr < self.window_base || end > self.window_end {
            return Err(MemError::InvalidSize(size));
        }
        if ptr % ALLOC_ALIGN != 0 {
            return Err(MemError::Misaligned {
                addr: ptr,
                size: ALLOC_ALIGN,
            });
        }
        let span = size.next_multiple_of(ALLOC_ALIGN);
        self.device.reserve(size)?;
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let reach = ptr.saturating_add(span);
        let before = inner.allocs.range(..reach).next_back();
        if before.is_some_and(|(_, a)| a.base + a.extent > ptr) {
            drop(inner);
            self.device.release(size);
            return Err(MemError::OutOfBounds {
                addr: ptr,
                len: size,
            });
        }
        inner.next = inner.next.max(ptr + span);
        inner
            .allocs
            .insert(ptr, Arc::new(Allocation::new(ptr, size)));
        Ok(())
    }

    fn first_gap(&self, inner: &Inner, span: u64) -> Option<u64> {
        let mut cursor = self.window_base;
        // Only the lower half: the upper half holds the client's own allocations.
        for a in inner.allocs.range(..self.window_end).map(|(_, a)| a) {
            if a.base - cursor >= span {
                return Some(cursor);
            }
            cursor = a.base + a.extent;
        }
        (self.window_end.saturating_sub(cursor) >= span).then_some(cursor)
    }

    /// Device `malloc`: like [`AddressSpace::alloc`], but the host cannot free it. CUDA's
    /// heap has a limit (`CU_LIMIT_MALLOC_HEAP_SIZE`, 8 MiB by default) that the emulated GPU
    /// does not know (the shim keeps limits); the device's memory bounds it instead.
    pub fn heap_alloc(&self, size: u64) -> Result<u64, MemError> {
        let p = self.alloc(size.max(1))?;
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.heap.insert(p);
        Ok(p)
    }

    /// Device `free` of a pointer device `malloc` returned.
    pub fn heap_free(&self, ptr: u64) -> Result<u64, MemError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !inner.heap.remove(&ptr) {
            return Err(MemError::NotAllocated(ptr));
        }
        drop(inner);
        self.release(ptr)
    }

    /// Frees the allocation that starts at `ptr`; returns its size. Device-heap memory is not
    /// the host's to free.
    pub fn free(&self, ptr: u64) -> Result<u64, MemError> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if inner.heap.contains(&ptr) || inner.imported.contains(&ptr) {
            return Err(MemError::NotAllocated(ptr));
        }
        drop(inner);
        self.release(ptr)
    }

    /// The allocation that starts at `ptr`, to be mapped into another address space.
    pub fn allocation_at(&self, ptr: u64) -> Option<Arc<Allocation>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if inner.imported.contains(&ptr) || inner.heap.contains(&ptr) {
            return None;
        }
        inner.allocs.get(&ptr).cloned()
    }

    /// Maps another address space's allocation into this one's lower half, at an address of
    /// its own; the bytes are shared. Returns that address.
    pub fn map_shared(&self, a: &Allocation) -> Result<u64, MemError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let span = a.extent;
        let base = match inner
            .next
            .checked_add(span)
            .filter(|&e| e <= self.window_end)
        {
            Some(_) => inner.next,
            None => self.first_gap(&inner, span).ok_or(MemError::OutOfMemory {
                requested: a.size,
                free: 0,
            })?,
        };
        inner.next = inner.next.max(base + span);
        inner.allocs.insert(base, Arc::new(a.mapped_at(base)));
        inner.imported.insert(base);
        Ok(base)
    }

    /// Removes a mapping made by [`AddressSpace::map_shared`].
    pub fn unmap_shared(&self, ptr: u64) -> Result<(), MemError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !inner.imported.remove(&ptr) {
            return Err(MemError::NotAllocated(ptr));
        }
        inner.allocs.remove(&ptr);
        Ok(())
    }

    fn release(&self, ptr: u64) -> Result<u64, MemError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let a = inner
            .allocs
            .remove(&ptr)
            .ok_or(MemError::NotAllocated(ptr))?;
        if inner.in_lease.remove(&ptr) {
            // Back to the lease, which stays reserved.
            inner.leased -= a.size;
        } else {
            self.device.release(a.size);
        }
        Ok(a.size)
    }

    /// Frees everything (a client that went away).
    pub fn clear(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let in_lease = std::mem::take(&mut inner.in_lease);
        let imported = std::mem::take(&mut inner.imported);
        inner.heap.clear();
        for a in std::mem::take(&mut inner.allocs).into_values() {
            if !in_lease.contains(&a.base) && !imported.contains(&a.base) {
                self.device.release(a.size);
            }
        }
        self.device.release(inner.lease);
        inner.lease = 0;
        inner.leased = 0;
    }

    /// Bytes allocated in this address space.
    pub fn used(&self) -> u64 {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.allocs.values().map(|a| a.size).sum()
    }

    /// (base, size) of every allocation, in address order (to snapshot a device's memory).
    pub fn allocations(&self) -> Vec<(u64, u64)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.allocs.values().map(|a| (a.base, a.size)).collect()
    }

    /// The allocation containing `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<Arc<Allocation>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let (_, a) = inner.allocs.range(..=addr).next_back()?;
        (addr < a.base + a.size.max(1)).then(|| a.clone())
    }

    /// The allocation whose extent holds all of `[addr, addr + len)`: what a kernel may access.
    pub fn find_reach(&self, addr: u64, len: u64) -> Result<Arc<Allocation>, MemError> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .allocs
            .range(..=addr)
            .next_back()
            .map(|(_, a)| a)
            .filter(|a| a.reaches(addr, len))
            .cloned()
            .ok_or(MemError::OutOfBounds { addr, len })
    }

    /// The allocation holding all of `[addr, addr + len)`.
    pub fn find_range(&self, addr: u64, len: u64) -> Result<Arc<Allocation>, MemError> {
        self.find(addr)
            .filter(|a| a.contains(addr, len))
            .ok_or(MemError::OutOfBounds { addr, len })
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let a = self.find_range(addr, data.len() as u64)?;
        a.write_at(addr - a.base, data);
        Ok(())
    }

    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemError> {
        let a = self.find_range(addr, out.len() as u64)?;
        a.read_at(addr - a.base, out);
        Ok(())
    }

    /// Copies `len` bytes between (possibly overlapping) device ranges.
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), MemError> {
        let s = self.find_range(src, len)?;
        let d = self.find_range(dst, len)?;
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        // Copy in chunks, backwards when the ranges overlap with dst above src.
        let chunks: Vec<u64> = (0..len).step_by(buf.len().max(1)).collect();
        let order: Box<dyn Iterator<Item = &u64>> = if dst > src {
            Box::new(chunks.iter().rev())
        } else {
            Box::new(chunks.iter())
        };
        for &off in order {
            let n = (len - off).min(buf.len() as u64) as usize;
            s.read_at(src - s.base + off, &mut buf[..n]);
            d.write_at(dst - d.base + off, &buf[..n]);
        }
        Ok(())
    }

    /// Sets `width` elements of `elem` bytes (1, 2 or 4) to `value` in each of `height` rows
    /// `pitch` bytes apart (a plain memset is one row).
    pub fn memset2d(
        &self,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u32,
        width: u64,
        height: u64,
    ) -> Result<(), MemError> {
        if !matches!(elem, 1 | 2 | 4) {
            return Err(MemError::InvalidSize(elem as u64));
        }
        if dst % elem as u64 != 0 {
            return Err(MemError::Misaligned {
                addr: dst,
                size: elem as u64,
            });
        }
        let row_bytes = width * elem as u64;
        if height == 0 || row_bytes == 0 {
            return Ok(());
        }
        let last = (height - 1)
            .checked_mul(pitch)
            .and_then(|o| o.checked_add(row_bytes));
        let a = self.find_range(dst, last.ok_or(MemError::InvalidSize(row_bytes))?)?;
        let pattern: Vec<u8> = value.to_le_bytes()[..elem as usize].to_vec();
        let row: Vec<u8> = pattern
            .iter()
            .copied()
            .cycle()
            .take(row_bytes.min(1 << 20) as usize)
            .collect();
        for r in 0..height {
            let start = dst - a.base + r * pitch;
            let mut off = 0;
            while off < row_bytes {
                let n = (row_bytes - off).min(row.len() as u64) as usize;
                a.write_at(start + off, &row[..n]);
                off += n as u64;
            }
        }
        Ok(())
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> AddressSpace {
        AddressSpace::new(DeviceMemory::new(1 << 20), 0x7f00_0000_0000, 1 << 30)
    }

    #[test]
    fn alloc_write_read_round_trip_at_odd_offsets() {
        let s = space();
        let p = s.alloc(100).unwrap();
        assert_eq!(p % ALLOC_ALIGN, 0);
        let data: Vec<u8> = (0..37).collect();
        s.write(p + 3, &data).unwrap();
        let mut out = vec![0; 37];
        s.read(p + 3, &mut out).unwrap();
        assert_eq!(out, data);
        let mut edge = [0u8; 4];
        s.read(p, &mut edge).unwrap();
        assert_eq!(edge, [0, 0, 0, 0]);
    }

    #[test]
    fn fixed_allocations_land_where_told_and_refuse_overlap_and_the_lease_half() {
        let s = space();
        let p = s.alloc(100).unwrap();
        // Where another device placed it: the next allocation goes past it.
        let at = p + 4 * ALLOC_ALIGN;
        s.alloc_fixed(at, 1000).unwrap();
        assert!(s.alloc(16).unwrap() >= at + 1000);
        assert!(matches!(
            s.alloc_fixed(at + ALLOC_ALIGN, 8),
            Err(MemError::OutOfBounds { .. })
        ));
        assert!(matches!(
            s.alloc_fixed(p, 8),
            Err(MemError::OutOfBounds { .. })
        ));
        assert!(matches!(
            s.alloc_fixed(at + 8 * ALLOC_ALIGN + 8, 8),
            Err(MemError::Misaligned { .. })
        ));
        let (lease_lo, _) = s.lease_region();
        assert_eq!(s.alloc_fixed(lease_lo, 8), Err(MemError::InvalidSize(8)));
        assert_eq!(s.free(at), Ok(1000));
        s.alloc_fixed(at, 1000).unwrap();
    }

    #[test]
    fn out_of_bounds_and_double_free_are_errors() {
        let s = space();
        let p = s.alloc(16).unwrap();
        assert!(matches!(
            s.write(p + 8, &[0; 9]),
            Err(MemError::OutOfBounds { .. })
        ));
        assert_eq!(s.free(p), Ok(16));
        assert_eq!(s.free(p), Err(MemError::NotAllocated(p)));
        assert!(s.read(p, &mut [0; 1]).is_err());
    }

    #[test]
    fn kernels_reach_the_rounded_extent_copies_only_the_size() {
        let dev = DeviceMemory::new(1 << 20);
        let s = AddressSpace::new(dev.clone(), 0x7f00_0000_0000, 1 << 30);
        let p = s.alloc(80).unwrap();
        let q = s.alloc(80).unwrap();
        // Placed a granule apart; a kernel may touch the whole granule, not the next one.
        assert_eq!(q - p, ALLOC_ALIGN);
        assert!(s.find_reach(p + 120, 8).is_ok_and(|a| a.base() == p));
        assert!(s
            .find_reach(p + ALLOC_ALIGN - 8, 8)
            .is_ok_and(|a| a.base() == p));
        assert!(s.find_reach(p + ALLOC_ALIGN - 4, 8).is_err());
        assert!(s.find_reach(q + ALLOC_ALIGN, 1).is_err());
        // Copies are bound to the 80 bytes asked for, and so is the accounting.
        assert!(s.write(p + 72, &[0; 16]).is_err());
        assert_eq!(dev.free(), (1 << 20) - 160);
        assert_eq!(s.used(), 160);
        // A client-placed allocation may not start inside another's extent.
        s.lease(1 << 12).unwrap();
        let (lo, _) = s.lease_region();
        s.alloc_at(lo, 80).unwrap();
        assert!(s.alloc_at(lo + 512 - ALLOC_ALIGN / 2, 80).is_err());
        assert!(s.alloc_at(lo + ALLOC_ALIGN, 80).is_ok());
        s.free(p).unwrap();
        assert!(s.find_reach(p + 100, 4).is_err());
    }

    #[test]
    fn budget_is_enforced_and_returned_on_drop() {
        let dev = DeviceMemory::new(1000);
        let s = AddressSpace::new(dev.clone(), 0x1000_0000, 1 << 30);
        s.alloc(600).unwrap();
        assert!(matches!(s.alloc(600), Err(MemError::OutOfMemory { .. })));
        assert_eq!(dev.free(), 400);
        drop(s);
        assert_eq!(dev.free(), 1000);
    }

    #[test]
    fn memset_widths_and_pitch() {
        let s = space();
        let p = s.alloc(64).unwrap();
        s.memset2d(p, 16, 0xABCD, 2, 3, 2).unwrap();
        let mut out = [0u8; 24];
        s.read(p, &mut out).unwrap();
        assert_eq!(&out[..6], &[0xCD, 0xAB, 0xCD, 0xAB, 0xCD, 0xAB]);
        assert_eq!(&out[6..16], &[0; 10]);
        assert_eq!(&out[16..22], &[0xCD, 0xAB, 0xCD, 0xAB, 0xCD, 0xAB]);
        assert!(s.memset2d(p + 1, 16, 0, 4, 1, 1).is_err());
    }

    #[test]
    fn overlapping_copy_moves_like_memmove() {
        let s = space();
        let p = s.alloc(32).unwrap();
        s.write(p, &(0..32).collect::<Vec<u8>>()).unwrap();
        s.copy(p + 4, p, 16).unwrap();
        let mut out = [0u8; 20];
        s.read(p, &mut out).unwrap();
        assert_eq!(&out[4..20], &(0..16).collect::<Vec<u8>>()[..]);
    }

    #[test]
    fn typed_loads_and_stores() {
        let s = space();
        let p = s.alloc(16).unwrap();
        let a = s.find(p).unwrap();
        a.store(2, 2, 0xBEEF);
        a.store(8, 8, u64::MAX);
        assert_eq!(a.load(2, 2), 0xBEEF);
        assert_eq!(a.load(0, 4), 0xBEEF_0000);
        assert_eq!(a.load(8, 8), u64::MAX);
    }

    #[test]
    fn a_lease_reserves_memory_and_the_client_places_allocations_in_the_upper_half() {
        let dev = DeviceMemory::new(1 << 20);
        let s = AddressSpace::new(dev.clone(), 1 << 40, 1 << 40);
        s.lease(64 << 10).unwrap();
        assert_eq!(dev.free(), (1 << 20) - (64 << 10), "reserved at once");
        let (lo, hi) = s.lease_region();
        assert_eq!((lo, hi), ((1u64 << 40) + (1 << 39), 2 << 40));
        s.alloc_at(lo, 4096).unwrap();
        s.alloc_at(lo + 4096, 4096).unwrap();
        assert_eq!(
            dev.free(),
            (1 << 20) - (64 << 10),
            "inside the lease: no more reserved"
        );
        // Overlap, outside the half, misaligned, past the lease: refused.
        assert!(s.alloc_at(lo + 100, 16).is_err());
        assert!(matches!(
            s.alloc_at(lo - 4096, 16),
            Err(MemError::InvalidSize(_))
        ));
        assert!(matches!(
            s.alloc_at(lo + 8192 + 8, 16),
            Err(MemError::Misaligned { .. })
        ));
        assert!(matches!(
            s.alloc_at(lo + (1 << 20), 60 << 10),
            Err(MemError::OutOfMemory { .. })
        ));
        s.write(lo + 10, b"abc").unwrap();
        let mut out = [0u8; 3];
        s.read(lo + 10, &mut out).unwrap();
        assert_eq!(&out, b"abc");
        // Freed bytes go back to the lease, not to the device.
        s.free(lo).unwrap();
        s.alloc_at(lo + (1 << 20), 60 << 10).unwrap();
        // Allocations placed here stay in the lower half.
        let p = s.alloc(4096).unwrap();
        assert!(p < lo);
        drop(s);
        assert_eq!(dev.free(), 1 << 20, "everything back when the client goes");
    }
}
