//! The emulated backend: devices that live in the server's CPU and memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use remora_emulator::memory::Allocation;
use remora_emulator::{
    AddressSpace, DeviceMemory, EmuError, LaunchConfig, LaunchOptions, LoadedModule, MemError,
    Module,
};
use remora_protocol::messages::{DeviceInfo, GlobalDesc, IpcHandle, KernelDesc, ParamDesc, Window};
use remora_protocol::CuStatus;

use crate::backend::{
    Backend, CuError, CuResult, DeviceSession, Launch, LeaseReservation, ModuleImage,
};
use crate::busy::BusyMeter;
use crate::ipc::IpcTable;

/// Compute capability the emulator presents (and picks PTX for).
pub const COMPUTE_CAPABILITY: (i32, i32) = (8, 0);
/// Reported driver version: at least 13000, so both cudart 12 and 13 accept it.
pub const DRIVER_VERSION: i32 = 13050;

/// Parsed modules by image hash, shared by every session: an image is parsed once per server.
type ModuleCache = Arc<Mutex<HashMap<[u8; 32], Arc<Module>>>>;

/// Most parsed modules kept.
const MAX_CACHED_MODULES: usize = 256;

pub struct EmulatedBackend {
    devices: Vec<DeviceInfo>,
    memory: Vec<Arc<DeviceMemory>>,
    busy: Vec<Arc<BusyMeter>>,
    /// Allocations shared between sessions (CUDA IPC).
    ipc: Arc<IpcTable<Arc<Allocation>>>,
    next_session: std::sync::atomic::AtomicU64,
    modules: ModuleCache,
    options: LaunchOptions,
}

impl EmulatedBackend {
    /// `count` devices of `memory` bytes each; `seed` makes UUIDs unique per server.
    pub fn new(count: u32, memory: u64, seed: [u8; 16]) -> Self {
        let devices = (0..count)
            .map(|i| emulated_device(i, memory, seed))
            .collect();
        let memory = (0..count).map(|_| DeviceMemory::new(memory)).collect();
        Self {
            devices,
            memory,
            busy: (0..count).map(|_| Arc::default()).collect(),
            ipc: Arc::default(),
            next_session: std::sync::atomic::AtomicU64::new(1),
            modules: ModuleCache::default(),
            options: LaunchOptions::default(),
        }
    }

    /// Warp instructions a launch may run before it fails with `LAUNCH_TIMEOUT` (702).
    /// Worker threads each kernel runs on (0: one per CPU), so a one-core "low-end card" can be
    /// simulated.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.options.threads = threads;
        self
    }

    pub fn with_instruction_budget(mut self, budget: u64) -> Self {
        self.options.instruction_budget = budget;
        self
    }
}

impl Backend for EmulatedBackend {
    fn kind(&self) -> &'static str {
        "emulated"
    }

    fn driver_version(&self) -> i32 {
        DRIVER_VERSION
    }

    fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    fn memory_used(&self, device: u32) -> Option<u64> {
        let m = self.memory.get(device as usize)?;
        Some(m.total() - m.free())
    }

    fn lease(&self) -> u64 {
        // An eighth of a device, at most 256 MiB: enough for a program's working buffers, small
        // enough that a full server still admits many sessions.
        let smallest = self.devices.iter().map(|d| d.total_mem).min().unwrap_or(0);
        (smallest / 8).min(256 << 20)
    }

    fn reserve_lease(&self, devices: u32, bytes: u64) -> LeaseReservation {
        let memory = &self.memory[..(devices as usize).min(self.memory.len())];
        // The most every device can give, in halves down to 1 MiB; each device's budget is
        // taken atomically, so concurrent hellos never promise the same bytes twice.
        let mut want = bytes;
        while want >= 1 << 20 {
            let taken: Vec<_> = memory
                .iter()
                .take_while(|m| m.reserve(want).is_ok())
                .cloned()
                .collect();
            if taken.len() == memory.len() {
                return LeaseReservation::new(want, move || {
                    for m in taken {
                        m.release(want);
                    }
                });
            }
            for m in taken {
                m.release(want);
            }
            want /= 2;
        }
        LeaseReservation::none()
    }

    fn open(&self, windows: &[Window]) -> CuResult<Box<dyn DeviceSession>> {
        let mut spaces = Vec::new();
        for (i, mem) in self.memory.iter().enumerate() {
            let w = windows
                .iter()
                .find(|w| w.device == i as u32)
                .ok_or_else(|| {
                    CuError::new(
                        CuStatus::INVALID_VALUE,
                        format!("no address window for device {i}"),
                    )
                })?;
            spaces.push(AddressSpace::new(mem.clone(), w.base, w.size));
        }
        Ok(Box::new(EmulatedSession {
            spaces,
            loaded: HashMap::new(),
            busy: self.busy.clone(),
            ipc: self.ipc.clone(),
            id: self
                .next_session
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cache: self.modules.clone(),
            options: self.options,
        }))
    }
}

struct EmulatedSession {
    spaces: Vec<AddressSpace>,
    /// Client module handle -> (device, module instantiated in that device's address space).
    loaded: HashMap<u64, (u32, LoadedModule)>,
    /// Per device, shared with every session on it.
    busy: Vec<Arc<BusyMeter>>,
    ipc: Arc<IpcTable<Arc<Allocation>>>,
    /// Names this session in the IPC table.
    id: u64,
    cache: ModuleCache,
    options: LaunchOptions,
}

impl Drop for EmulatedSession {
    fn drop(&mut self) {
        self.ipc.withdraw_all(self.id);
    }
}

fn emu_error(e: EmuError) -> CuError {
    CuError::new(CuStatus(e.cuda_code()), e.to_string())
}

impl EmulatedSession {
    fn space(&self, device: u32) -> CuResult<&AddressSpace> {
        self.spaces
            .get(device as usize)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_DEVICE, format!("no device {device}")))
    }

    /// The address space holding `addr` (copies carry no device: the address says it).
    fn space_of(&self, addr: u64) -> CuResult<&AddressSpace> {
        self.spaces
            .iter()
            .find(|s| s.find(addr).is_some())
            .ok_or_else(|| {
                CuError::new(
                    CuStatus::INVALID_VALUE,
                    format!("{addr:#x} is not device memory"),
                )
            })
    }
}

pub(crate) fn mem_error(e: MemError) -> CuError {
    let status = match e {
        MemError::OutOfMemory { .. } => CuStatus::OUT_OF_MEMORY,
        MemError::Misaligned { .. } => CuStatus::MISALIGNED_ADDRESS,
        MemError::InvalidSize(_) | MemError::NotAllocated(_) | MemError::OutOfBounds { .. } => {
            CuStatus::INVALID_VALUE
        }
    };
    CuError::new(status, e.to_string())
}

impl DeviceSession for EmulatedSession {
    fn alloc(&mut self, device: u32, size: u64) -> CuResult<u64> {
        self.space(device)?.alloc(size).map_err(mem_error)
    }

    fn free(&mut self, ptr: u64) -> CuResult<()> {
        self.space_of(ptr)?.free(ptr).map_err(mem_error)?;
        self.ipc.withdraw(self.id, ptr);
        Ok(())
    }

    fn ipc_export(&mut self, device: u32, ptr: u64, owner: &str) -> CuResult<IpcHandle> {
        let a = self.space(device)?.allocation_at(ptr).ok_or_else(|| {
            CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{ptr:#x} is not the start of an allocation on device {device}"),
            )
        })?;
        Ok(self.ipc.export(self.id, owner, device, ptr, a))
    }

    fn ipc_open(&mut self, device: u32, handle: &IpcHandle, owner: &str) -> CuResult<(u64, u64)> {
        let a = self.ipc.open(self.id, owner, device, handle)?;
        let ptr = self.space(device)?.map_shared(&a).map_err(mem_error)?;
        Ok((ptr, a.size()))
    }

    fn ipc_close(&mut self, ptr: u64) -> CuResult<()> {
        self.space_of(ptr)?.unmap_shared(ptr).map_err(mem_error)
    }

    fn mem_info(&self, device: u32) -> CuResult<(u64, u64)> {
        let s = self.space(device)?;
        // The session's own unused lease is free memory to it.
        Ok((s.device().free() + s.lease_unused(), s.device().total()))
    }

    fn utilization(&self, device: u32) -> Option<u32> {
        Some(self.busy.get(device as usize)?.percent(Instant::now()))
    }

    fn write(&mut self, dst: u64, data: &[u8]) -> CuResult<()> {
        self.space_of(dst)?.write(dst, data).map_err(mem_error)
    }

    fn read(&mut self, src: u64, out: &mut [u8]) -> CuResult<()> {
        self.space_of(src)?.read(src, out).map_err(mem_error)
    }

    fn copy(&mut self, dst: u64, src: u64, size: u64) -> CuResult<()> {
        let (ds, ss) = (self.space_of(dst)?, self.space_of(src)?);
        if std::ptr::eq(ds, ss) {
            return ds.copy(dst, src, size).map_err(mem_error);
        }
        self.copy_through_host(dst, src, size)
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
        self.space_of(dst)?
            .memset2d(dst, pitch, value, elem as u32, width, height)
            .map_err(mem_error)
    }

    fn lease(&mut self, device: u32, bytes: u64) -> CuResult<()> {
        self.space(device)?.adopt_lease(bytes);
        Ok(())
    }

    fn alloc_at(&mut self, device: u32, ptr: u64, size: u64) -> CuResult<()> {
        self.space(device)?.alloc_at(ptr, size).map_err(mem_error)
    }

    fn alloc_fixed(&mut self, device: u32, ptr: u64, size: u64) -> CuResult<()> {
        self.space(device)?
            .alloc_fixed(ptr, size)
            .map_err(mem_error)
    }

    fn is_idle(&mut self) -> bool {
        // Every call runs to completion before its reply.
        true
    }

    fn synchronize(&mut self) -> CuResult<()> {
        Ok(())
    }

    fn load_module(
        &mut self,
        device: u32,
        module: u64,
        hash: [u8; 32],
        image: Arc<[u8]>,
    ) -> CuResult<ModuleImage> {
        let cc = (COMPUTE_CAPABILITY.0 * 10 + COMPUTE_CAPABILITY.1) as u32;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        let parsed = match cached {
            Some(m) => m,
            None => {
                let m = Arc::new(Module::load(&image, cc).map_err(emu_error)?);
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= MAX_CACHED_MODULES {
                    cache.clear();
                }
                cache.insert(hash, m.clone());
                m
            }
        };
        let space = self.space(device)?;
        let loaded = LoadedModule::new(parsed.clone(), space).map_err(emu_error)?;
        let kernels = parsed
            .kernels()
            .iter()
            .map(|k| KernelDesc {
                name: k.name.clone(),
                params: k
                    .params
                    .iter()
                    .map(|p| ParamDesc {
                        offset: p.offset,
                        size: p.size,
                    })
                    .collect(),
                shared_bytes: k.static_shared_bytes,
                local_bytes: k.local_bytes,
                num_regs: k.num_regs,
                max_threads: k.max_threads_per_block,
                const_bytes: k.const_bytes,
            })
            .collect();
        let globals = parsed
            .globals()
            .iter()
            .filter_map(|g| {
                let (addr, size) = loaded.global(&g.name)?;
                Some(GlobalDesc {
                    name: g.name.clone(),
                    addr,
                    size,
                })
            })
            .collect();
        self.loaded.insert(module, (device, loaded));
        Ok(ModuleImage { kernels, globals })
    }

    fn unload_module(&mut self, module: u64) -> CuResult<()> {
        let (device, m) = self
            .loaded
            .remove(&module)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_HANDLE, "no such module"))?;
        m.free(self.space(device)?);
        Ok(())
    }

    fn launch(&mut self, l: &Launch<'_>) -> (String, CuResult<()>) {
        let Some((device, m)) = self.loaded.get(&l.module) else {
            return (
                String::new(),
                Err(CuError::new(CuStatus::INVALID_HANDLE, "no such module")),
            );
        };
        let Some(kernel) = m.module().kernels().get(l.kernel as usize) else {
            return (
                String::new(),
                Err(CuError::new(CuStatus::INVALID_HANDLE, "no such function")),
            );
        };
        let space = match self.space(*device) {
            Ok(s) => s,
            Err(e) => return (String::new(), Err(e)),
        };
        if l.cooperative {
            let threads = l.block.iter().map(|&d| d.max(1)).product::<u32>();
            let shared = u64::from(kernel.static_shared_bytes) + u64::from(l.shared);
            let blocks = l.grid.iter().map(|&d| u64::from(d)).product::<u64>();
            let limit = emulated_device(*device, 0, [0; 16]).cooperative_blocks(threads, shared);
            if blocks > limit {
                return (
                    String::new(),
                    Err(CuError::new(
                        CuStatus::COOPERATIVE_LAUNCH_TOO_LARGE,
                        format!(
                            "a cooperative launch of {blocks} blocks; at most {limit} blocks of \
                             {threads} threads and {shared} bytes of shared memory fit on the \
                             device at once"
                        ),
                    )),
                );
            }
        }
        let cfg = LaunchConfig {
            grid: l.grid,
            block: l.block,
            dynamic_shared_bytes: l.shared,
            cooperative: l.cooperative,
        };
        let start = Instant::now();
        let outcome = m.launch(space, &kernel.name, &cfg, l.params, &self.options);
        if let Some(b) = self.busy.get(*device as usize) {
            b.record(start, Instant::now());
        }
        (outcome.printf, outcome.result.map_err(emu_error))
    }
}

/// A device as an A100-class GPU of compute capability 8.0 would report itself.
fn emulated_device(index: u32, memory: u64, seed: [u8; 16]) -> DeviceInfo {
    let mut uuid = seed;
    uuid[15] ^= index as u8;
    uuid[14] ^= (index >> 8) as u8;
    let mut attributes = ATTRIBUTES_SM80.to_vec();
    attributes.extend([(33, 0x10 + index as i32), (34, 0), (50, 0)]);
    DeviceInfo {
        name: format!(
            "Remora Emulated GPU (sm_{}{})",
            COMPUTE_CAPABILITY.0, COMPUTE_CAPABILITY.1
        ),
        uuid,
        total_mem: memory,
        attributes,
        emulated: true,
    }
}

/// `CUdevice_attribute` -> value. Attributes not listed answer 0 (the feature is absent).
const ATTRIBUTES_SM80: &[(u32, i32)] = &[
    (1, 1024),        // MAX_THREADS_PER_BLOCK
    (2, 1024),        // MAX_BLOCK_DIM_X
    (3, 1024),        // MAX_BLOCK_DIM_Y
    (4, 64),          // MAX_BLOCK_DIM_Z
    (5, 2147483647),  // MAX_GRID_DIM_X
    (6, 65535),       // MAX_GRID_DIM_Y
    (7, 65535),       // MAX_GRID_DIM_Z
    (8, 49152),       // MAX_SHARED_MEMORY_PER_BLOCK
    (9, 65536),       // TOTAL_CONSTANT_MEMORY
    (10, 32),         // WARP_SIZE
    (11, 2147483647), // MAX_PITCH
    (12, 65536),      // MAX_REGISTERS_PER_BLOCK
    (13, 1410000),    // CLOCK_RATE (kHz)
    (14, 512),        // TEXTURE_ALIGNMENT
    (15, 1),          // GPU_OVERLAP
    (16, 16),         // MULTIPROCESSOR_COUNT
    (21, 131072),     // MAXIMUM_TEXTURE1D_WIDTH
    (22, 131072),
    (23, 65536),
    (24, 16384),
    (25, 16384),
    (26, 16384),
    (27, 32768),
    (28, 32768),
    (29, 2048),
    (30, 512),      // SURFACE_ALIGNMENT
    (31, 1),        // CONCURRENT_KERNELS
    (36, 1215000),  // MEMORY_CLOCK_RATE
    (37, 5120),     // GLOBAL_MEMORY_BUS_WIDTH
    (38, 41943040), // L2_CACHE_SIZE
    (39, 2048),     // MAX_THREADS_PER_MULTIPROCESSOR
    (40, 2),        // ASYNC_ENGINE_COUNT
    (41, 1),        // UNIFIED_ADDRESSING
    (42, 32768),
    (43, 2048),
    (44, 1),
    (45, 32768),
    (46, 32768),
    (47, 8192),
    (48, 8192),
    (49, 32768),
    (51, 32), // TEXTURE_PITCH_ALIGNMENT
    (52, 32768),
    (53, 32768),
    (54, 2046),
    (55, 32768),
    (56, 131072),
    (57, 65536),
    (58, 16384),
    (59, 16384),
    (60, 16384),
    (61, 32768),
    (62, 2048),
    (63, 32768),
    (64, 32768),
    (65, 2048),
    (66, 32768),
    (67, 32768),
    (68, 2046),
    (69, 268435456),
    (70, 131072),
    (71, 65000),
    (72, 2097120),
    (73, 32768),
    (74, 32768),
    (75, COMPUTE_CAPABILITY.0), // COMPUTE_CAPABILITY_MAJOR
    (76, COMPUTE_CAPABILITY.1), // COMPUTE_CAPABILITY_MINOR
    (77, 32768),
    (78, 1),          // STREAM_PRIORITIES_SUPPORTED
    (79, 1),          // GLOBAL_L1_CACHE_SUPPORTED
    (80, 1),          // LOCAL_L1_CACHE_SUPPORTED
    (81, 167936),     // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    (82, 65536),      // MAX_REGISTERS_PER_MULTIPROCESSOR
    (87, 2),          // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
    (90, 1),          // COMPUTE_PREEMPTION_SUPPORTED
    (95, 1),          // COOPERATIVE_LAUNCH
    (97, 166912),     // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    (99, 1),          // HOST_REGISTER_SUPPORTED
    (106, 32),        // MAX_BLOCKS_PER_MULTIPROCESSOR
    (108, 31457280),  // MAX_PERSISTING_L2_CACHE_SIZE
    (109, 134213632), // MAX_ACCESS_POLICY_WINDOW_SIZE
    (111, 1024),      // RESERVED_SHARED_MEMORY_PER_BLOCK
    (126, 1),         // MEM_SYNC_DOMAIN_COUNT
    (131, -1),        // NUMA_ID
    (134, -1),        // HOST_NUMA_ID
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_promised_at_once_never_exceed_the_devices_and_are_given_back_when_dropped() {
        let b = EmulatedBackend::new(2, 64 << 20, [0; 16]);
        let first = b.reserve_lease(2, 48 << 20);
        assert_eq!(first.bytes, 48 << 20);
        // 16 MiB left: 48 and 24 do not fit, 12 does.
        let second = b.reserve_lease(2, 48 << 20);
        assert_eq!(second.bytes, 12 << 20);
        assert_eq!(b.memory_used(0), Some(60 << 20));
        assert_eq!(b.memory_used(1), Some(60 << 20));
        drop(first);
        assert_eq!(b.memory_used(1), Some(12 << 20));
        drop(second);
        assert_eq!(b.memory_used(0), Some(0));
        // Nothing left to lease: nothing promised.
        let all = b.reserve_lease(2, 64 << 20);
        assert_eq!(b.reserve_lease(2, 1 << 20).bytes, 0);
        drop(all);
    }

    #[test]
    fn a_cooperative_grid_must_fit_on_the_device_at_once() {
        let b = EmulatedBackend::new(1, 64 << 20, [0; 16]);
        let windows = [Window {
            device: 0,
            base: 0x7f00_0000_0000,
            size: 1 << 36,
        }];
        let mut s = b.open(&windows).unwrap();
        let ptx = b".version 7.0\n.target sm_80\n.address_size 64\n\
            .shared .align 4 .b8 sh[40000];\n\
            .visible .entry k() { .reg .b32 %r<2>; st.shared.u32 [sh], %r1; ret; }\n\0";
        s.load_module(0, 1, [7; 32], Arc::from(&ptx[..])).unwrap();
        let mut launch = |blocks: u32, block: u32, shared: u32| {
            s.launch(&Launch {
                module: 1,
                kernel: 0,
                grid: [blocks, 1, 1],
                block: [block, 1, 1],
                shared,
                params: &[],
                cooperative: true,
            })
            .1
        };
        // 40000 bytes of static shared memory: 4 blocks per multiprocessor, 64 in all.
        launch(64, 32, 0).unwrap();
        let e = launch(65, 32, 0).unwrap_err();
        assert_eq!(e.status, CuStatus::COOPERATIVE_LAUNCH_TOO_LARGE, "{e:?}");
        assert!(e.message.contains("at most 64 blocks"), "{}", e.message);
        // Dynamic shared memory counts too: 3 blocks per multiprocessor.
        assert!(launch(64, 32, 8000).is_err());
        launch(48, 32, 8000).unwrap();
        // Threads: 2 blocks of 1024 per multiprocessor.
        assert_eq!(
            launch(33, 1024, 0).unwrap_err().status,
            CuStatus::COOPERATIVE_LAUNCH_TOO_LARGE
        );
    }
}
