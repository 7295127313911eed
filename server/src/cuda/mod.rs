//! The real-GPU backend (cudarc), loaded at run time so the same server binary starts on
//! machines without a driver.
//!
//! [`probe`] loads `libcuda` through cudarc's dynamic loading, initialises the driver and
//! describes every device; it never panics and says why when there is no usable GPU.
//!
//! Each [`CudaSession`] creates its **own context** per device it uses (lazily, with
//! `cuCtxCreate`), not the device's primary context: a client's faulting kernel makes its
//! context unusable (a sticky error), and with a shared primary context that would break every
//! other client of the GPU (`docs/ARCHITECTURE.md`, invariant "Sessions are isolated, and
//! freed whole"); destroying the session's contexts also frees whatever the driver still holds
//! for it. The cost is one context's memory per client and device. Sessions may run on any
//! tokio thread, so every driver call is preceded by `cuCtxSetCurrent` on the calling thread.
//!
//! Allocations land inside the client's address window (`docs/ARCHITECTURE.md`, invariant
//! "Device addresses live in windows the client reserved") through the VMM API: each
//! allocation is `cuMemCreate`, then `cuMemAddressReserve` at a free address of the window,
//! `cuMemMap` there and `cuMemSetAccess`. Reservations are per allocation rather than one for
//! the whole window because the windows of different clients (addresses in their processes)
//! overlap in this one process; see [`DeviceState::reserve`]. Only when no address of the
//! window can be had does an allocation go elsewhere, with a warning that the client will
//! misclassify that pointer.
//!
//! CUDA IPC between the sessions of this server shares the physical allocation, not a copy:
//! the exporter's `cuMemCreate` handle is retained (`cuMemRetainAllocationHandle`) for as long
//! as the handle is exported, and an opening session maps it at an address of its own window
//! (`cuMemMap` of the same handle), as `cuIpcOpenMemHandle` maps another process's memory. The
//! sessions are contexts of one process, so the driver's own IPC handles (which are for other
//! processes) are not needed.
//!
//! Known limits: module globals are placed by `cuModuleLoadData` outside the window (the client
//! learns their addresses from the load reply and registers them); kernel `printf` output goes
//! to the server's stdout, not to the client; every allocation takes at least the driver's
//! granularity (2 MiB) of device memory.
#![deny(clippy::undocumented_unsafe_blocks)]

mod driver;
mod image;
mod space;

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;
use std::sync::Arc;

use cudarc::driver::sys::{
    CUcontext, CUdeviceptr, CUfunction, CUmemAccessDesc, CUmemAccess_flags,
    CUmemAllocationHandleType, CUmemAllocationProp, CUmemAllocationProp_st__bindgen_ty_1,
    CUmemAllocationType, CUmemLocation, CUmemLocationType, CUmodule,
};
use remora_protocol::messages::{DeviceInfo, GlobalDesc, IpcHandle, KernelDesc, ParamDesc, Window};
use remora_protocol::CuStatus;

use crate::backend::{Backend, CuError, CuResult, DeviceSession, Launch, ModuleImage};
use crate::ipc::IpcTable;
use driver::{api, Api};
use space::Space;

pub use driver::{map_driver_error, map_status};

/// Highest `CUdevice_attribute` asked for; the driver answers `INVALID_VALUE` for those it does
/// not know (CUDA 13.x stops around 160), which are skipped.
const MAX_ATTRIBUTE: c_int = 256;
/// `CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED`.
const ATTR_VMM_SUPPORTED: u32 = 102;
/// `CU_FUNC_ATTRIBUTE_*` used for [`KernelDesc`].
const FUNC_MAX_THREADS: c_int = 0;
const FUNC_SHARED_BYTES: c_int = 1;
const FUNC_LOCAL_BYTES: c_int = 3;
const FUNC_NUM_REGS: c_int = 4;
const FUNC_CONST_BYTES: c_int = 2;
const FUNC_MAX_DYNAMIC_SHARED: c_int = 8;
/// Dynamic shared memory a launch gets without opting in.
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;
/// `CU_LAUNCH_PARAM_*` markers of `cuLaunchKernel`'s `extra` array.
const LAUNCH_PARAM_END: *mut c_void = ptr::null_mut();
const LAUNCH_PARAM_BUFFER_POINTER: *mut c_void = ptr::without_provenance_mut(1);
const LAUNCH_PARAM_BUFFER_SIZE: *mut c_void = ptr::without_provenance_mut(2);
/// Bound on parameters asked of `cuFuncGetParamInfo` (the ABI allows 32 KiB of them).
const MAX_PARAMS: usize = 32 * 1024;
/// Tries at placing one reservation inside the window before placing it anywhere.
const MAX_RESERVE_ATTEMPTS: u32 = 48;

/// The real GPUs of this machine, or why there are none. Never panics.
pub fn probe() -> Result<Arc<dyn Backend>, String> {
    std::panic::catch_unwind(probe_inner)
        .unwrap_or_else(|_| Err("the CUDA driver panicked while being probed".into()))
        .map(|b| Arc::new(b) as Arc<dyn Backend>)
}

fn probe_inner() -> Result<CudaBackend, String> {
    let api = api()?;
    let why = |e: CuError| format!("CUDA driver: {}", e.message);
    // SAFETY: plain driver calls with valid out-pointers to locals.
    api.check(unsafe { (api.cuInit)(0) }, "cuInit")
        .map_err(why)?;
    let mut version = 0;
    api.check(
        // SAFETY: as above.
        unsafe { (api.cuDriverGetVersion)(&mut version) },
        "cuDriverGetVersion",
    )
    .map_err(why)?;
    let mut count = 0;
    api.check(
        // SAFETY: as above.
        unsafe { (api.cuDeviceGetCount)(&mut count) },
        "cuDeviceGetCount",
    )
    .map_err(why)?;
    if count <= 0 {
        return Err(format!(
            "the CUDA driver (version {version}) sees no GPU on this machine"
        ));
    }
    let mut devices = Vec::new();
    let mut ordinals = Vec::new();
    for i in 0..count {
        let mut dev = 0;
        // SAFETY: as above; `i` is below the device count.
        api.check(unsafe { (api.cuDeviceGet)(&mut dev, i) }, "cuDeviceGet")
            .map_err(why)?;
        let info = describe(api, dev).map_err(why)?;
        if info.attribute(ATTR_VMM_SUPPORTED) != Some(1) {
            tracing::warn!(device = i, name = %info.name, "no virtual memory management: allocations will fail");
        }
        tracing::info!(device = i, name = %info.name, total = info.total_mem, "CUDA device");
        devices.push(info);
        ordinals.push(dev);
    }
    Ok(CudaBackend {
        driver_version: version,
        devices,
        ordinals,
        ipc: Arc::default(),
        next_session: std::sync::atomic::AtomicU64::new(1),
    })
}

/// Name, UUID, memory and every attribute the driver knows of one device.
fn describe(api: &Api, dev: c_int) -> CuResult<DeviceInfo> {
    let mut name = [0 as c_char; 256];
    api.check(
        // SAFETY: the buffer holds `len` bytes; the driver NUL-terminates within them.
        unsafe { (api.cuDeviceGetName)(name.as_mut_ptr(), name.len() as c_int, dev) },
        "cuDeviceGetName",
    )?;
    let bytes: Vec<u8> = name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let mut uuid = [0u8; 16];
    api.check(
        // SAFETY: `CUuuid` is 16 bytes; the out-pointer is a valid local of that size.
        unsafe { (api.cuDeviceGetUuid)(&mut uuid, dev) },
        "cuDeviceGetUuid",
    )?;
    let mut total = 0usize;
    api.check(
        // SAFETY: valid out-pointer.
        unsafe { (api.cuDeviceTotalMem_v2)(&mut total, dev) },
        "cuDeviceTotalMem",
    )?;
    let mut attributes = Vec::new();
    for attr in 1..=MAX_ATTRIBUTE {
        let mut v = 0;
        // SAFETY: valid out-pointer; attributes are plain integers here, so one the driver
        // does not know is an error return, not undefined behaviour.
        if unsafe { (api.cuDeviceGetAttribute)(&mut v, attr, dev) } == 0 {
            attributes.push((attr as u32, v));
        }
    }
    Ok(DeviceInfo {
        name: String::from_utf8_lossy(&bytes).into_owned(),
        uuid,
        total_mem: total as u64,
        attributes,
        emulated: false,
    })
}

/// The GPUs of this machine as the driver reports them.
pub struct CudaBackend {
    driver_version: i32,
    devices: Vec<DeviceInfo>,
    /// `CUdevice` of each device index.
    ordinals: Vec<c_int>,
    ipc: Arc<IpcTable<Arc<Retained>>>,
    next_session: std::sync::atomic::AtomicU64,
}

/// One reference to a physical allocation (`cuMemCreate`'s handle), released when dropped:
/// what an IPC export shares.
struct Retained {
    api: &'static Api,
    handle: u64,
    size: u64,
}

impl Drop for Retained {
    fn drop(&mut self) {
        // SAFETY: the handle was retained once for this value and is released once here; the
        // memory lives on while any mapping of it does.
        unsafe { (self.api.cuMemRelease)(self.handle) };
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> &'static str {
        "cuda"
    }

    fn driver_version(&self) -> i32 {
        self.driver_version
    }

    fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    fn open(&self, windows: &[Window]) -> CuResult<Box<dyn DeviceSession>> {
        let api = api().map_err(|e| CuError::new(CuStatus::NOT_INITIALIZED, e))?;
        let mut slots = Vec::new();
        for (i, &ordinal) in self.ordinals.iter().enumerate() {
            let window = *windows
                .iter()
                .find(|w| w.device == i as u32)
                .ok_or_else(|| {
                    CuError::new(
                        CuStatus::INVALID_VALUE,
                        format!("no address window for device {i}"),
                    )
                })?;
            slots.push(Slot {
                ordinal,
                window,
                state: OnceCell::new(),
            });
        }
        Ok(Box::new(CudaSession {
            api,
            id: self
                .next_session
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ipc: self.ipc.clone(),
            slots,
            allocs: BTreeMap::new(),
            modules: HashMap::new(),
        }))
    }
}

/// One device as a session sees it; the context is made on first use.
struct Slot {
    ordinal: c_int,
    window: Window,
    state: OnceCell<DeviceState>,
}

/// A session's context on one device and the window its allocations go to.
struct DeviceState {
    ctx: CUcontext,
    /// The window's base rounded up to the granularity; offsets in `space` count from here.
    base: u64,
    /// This session's use of the window: its allocations, and ranges found taken by others.
    space: Space,
    granularity: u64,
    /// Whether an allocation has already had to go outside the window (warned once).
    strayed: bool,
}

struct Mapping {
    device: usize,
    /// Bytes reserved and mapped at the pointer (the request rounded up to the granularity).
    size: u64,
    /// Where the allocation sits in the window's `space`; `None` when it had to go outside.
    offset: Option<u64>,
    handle: u64,
    /// Another session's allocation, mapped here by `ipc_open`.
    opened: bool,
}

struct Loaded {
    device: usize,
    module: CUmodule,
    functions: Vec<CUfunction>,
    /// Address and size of each global, for finding a copy's device.
    globals: Vec<(u64, u64)>,
}

/// One client's contexts, allocations and modules on the real GPUs.
pub struct CudaSession {
    api: &'static Api,
    /// This session among the backend's, for IPC.
    id: u64,
    ipc: Arc<IpcTable<Arc<Retained>>>,
    slots: Vec<Slot>,
    allocs: BTreeMap<u64, Mapping>,
    modules: HashMap<u64, Loaded>,
}

// SAFETY: the raw handles (contexts, modules, functions) are driver objects usable from any
// thread once the context is made current there, which every operation does first; the session
// is used by one thread at a time (`&mut self`, or `&self` for `mem_info` only, and the
// `OnceCell`s are not shared because `CudaSession` is not `Sync`).
unsafe impl Send for CudaSession {}

fn alloc_prop(ordinal: c_int) -> CUmemAllocationProp {
    CUmemAllocationProp {
        type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE,
        location: CUmemLocation {
            type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: ordinal,
        },
        win32HandleMetaData: ptr::null_mut(),
        allocFlags: CUmemAllocationProp_st__bindgen_ty_1 {
            compressionType: 0,
            gpuDirectRDMACapable: 0,
            usage: 0,
            reserved: [0; 4],
        },
    }
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl Slot {
    /// Makes the context current, creating it on first use.
    fn state(&self, api: &Api) -> CuResult<&DeviceState> {
        if let Some(s) = self.state.get() {
            // SAFETY: the context is alive until the session drops.
            api.check(unsafe { (api.cuCtxSetCurrent)(s.ctx) }, "cuCtxSetCurrent")?;
            return Ok(s);
        }
        let state = DeviceState::create(api, self.ordinal, self.window)?;
        Ok(self.state.get_or_init(|| state))
    }
}

impl DeviceState {
    fn create(api: &Api, ordinal: c_int, window: Window) -> CuResult<Self> {
        let prop = alloc_prop(ordinal);
        let mut granularity = 0usize;
        // SAFETY: `prop` describes device memory on `ordinal`; valid out-pointer.
        let r = unsafe { (api.cuMemGetAllocationGranularity)(&mut granularity, &prop, 0) };
        api.check(r, "cuMemGetAllocationGranularity")?;
        let g = (granularity as u64).max(1).next_power_of_two();
        let base = round_up(window.base, g)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_VALUE, "window overflows"))?;
        let usable = window.base.saturating_add(window.size).saturating_sub(base) / g * g;
        let mut ctx: CUcontext = ptr::null_mut();
        api.check(
            // SAFETY: valid out-pointer; `ordinal` came from `cuDeviceGet`. The new context is
            // current on this thread.
            unsafe { (api.cuCtxCreate_v2)(&mut ctx, 0, ordinal) },
            "cuCtxCreate",
        )?;
        Ok(Self {
            ctx,
            base,
            space: Space::new(usable),
            granularity: g,
            strayed: false,
        })
    }

    /// Reserves `size` bytes of virtual addresses inside the window, at the first offset no
    /// other session (or host mapping of the server) holds, and returns the address and offset.
    ///
    /// Reservations are per allocation, not one for the whole window, because windows of
    /// different clients are addresses in *different* processes that often overlap (ASLR
    /// spreads mmap over about 1 TiB, the size of one window) while they all live in this one
    /// process. A range the driver will not give at its address is marked taken, skipping
    /// further each time, so a large foreign reservation is crossed in few attempts. If the
    /// window is exhausted that way, the reservation goes anywhere, with a warning.
    fn reserve(&mut self, api: &Api, size: u64) -> CuResult<(u64, Option<u64>)> {
        let g = self.granularity;
        // Once the window has failed us, try it only briefly: a driver that ignores address
        // hints altogether would otherwise cost every allocation all the attempts.
        let attempts = if self.strayed {
            4
        } else {
            MAX_RESERVE_ATTEMPTS
        };
        for attempt in 0..attempts {
            let Some(offset) = self.space.alloc(size, g) else {
                break;
            };
            let want = self.base + offset;
            let mut got: CUdeviceptr = 0;
            // SAFETY: reserves virtual addresses only; `want` is a hint the driver may ignore.
            let r =
                unsafe { (api.cuMemAddressReserve)(&mut got, size as usize, g as usize, want, 0) };
            if r == 0 && got == want {
                return Ok((got, Some(offset)));
            }
            if r == 0 {
                // SAFETY: releases the reservation just made, which nothing uses.
                unsafe { (api.cuMemAddressFree)(got, size as usize) };
            }
            // Keep `[offset, offset + size)` marked as used, and skip a growing stretch after
            // it: whatever holds it may be large.
            let skip = g
                .saturating_mul(1 << attempt.min(40))
                .min(self.space.size());
            self.space.take(offset + size, skip);
        }
        let mut got: CUdeviceptr = 0;
        // SAFETY: as above, at an address of the driver's choosing.
        let r = unsafe { (api.cuMemAddressReserve)(&mut got, size as usize, g as usize, 0, 0) };
        api.check(r, "cuMemAddressReserve")?;
        if !std::mem::replace(&mut self.strayed, true) {
            tracing::warn!(
                window = format_args!("{:#x}+{:#x}", self.base, self.space.size()),
                placed = format_args!("{got:#x}"),
                "no room left at the client's window addresses in this process; this device \
                 pointer lies outside the window and the client will misclassify it as host memory"
            );
        }
        Ok((got, None))
    }
}

impl DeviceState {
    /// Reserves `size` bytes of virtual addresses exactly at `ptr`, inside the window, where
    /// another device placed the same allocation (the pool's virtual GPU).
    fn reserve_at(&mut self, api: &Api, ptr: u64, size: u64) -> CuResult<(u64, Option<u64>)> {
        let refuse = |why: String| Err(CuError::new(CuStatus::INVALID_VALUE, why));
        let g = self.granularity;
        let Some(offset) = ptr.checked_sub(self.base).filter(|o| o % g == 0) else {
            return refuse(format!(
                "{ptr:#x} is not a granule-aligned address of this device's window"
            ));
        };
        if !self.space.alloc_at(offset, size) {
            return refuse(format!("{ptr:#x} (+{size:#x}) is not free in this window"));
        }
        let mut got: CUdeviceptr = 0;
        // SAFETY: reserves virtual addresses only; `ptr` is a hint the driver may ignore.
        let r = unsafe { (api.cuMemAddressReserve)(&mut got, size as usize, g as usize, ptr, 0) };
        if r == 0 && got == ptr {
            return Ok((got, Some(offset)));
        }
        if r == 0 {
            // SAFETY: releases the reservation just made, which nothing uses.
            unsafe { (api.cuMemAddressFree)(got, size as usize) };
        }
        self.space.free(offset, size);
        refuse(format!(
            "the driver would not reserve {ptr:#x} (+{size:#x}) in this process"
        ))
    }
}

impl CudaSession {
    fn slot(&self, device: u32) -> CuResult<&Slot> {
        self.slots
            .get(device as usize)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_DEVICE, format!("no device {device}")))
    }

    /// Makes the device's context current (creating it on first use).
    fn enter(&self, device: usize) -> CuResult<&DeviceState> {
        self.slot(device as u32)?.state(self.api)
    }

    /// The device holding `addr`: an allocation's, else a module global's.
    fn device_of(&self, addr: u64) -> CuResult<usize> {
        let alloc = self
            .allocs
            .range(..=addr)
            .next_back()
            .filter(|(&p, m)| addr - p < m.size)
            .map(|(_, m)| m.device);
        alloc
            .or_else(|| {
                self.modules
                    .values()
                    .find(|m| {
                        m.globals
                            .iter()
                            .any(|&(a, n)| addr >= a && addr - a < n.max(1))
                    })
                    .map(|m| m.device)
            })
            .ok_or_else(|| {
                CuError::new(
                    CuStatus::INVALID_VALUE,
                    format!("{addr:#x} is not device memory"),
                )
            })
    }

    fn unmap(&mut self, ptr: u64) -> CuResult<()> {
        let m = self.allocs.get(&ptr).ok_or_else(|| {
            CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{ptr:#x} is not an allocation of this session"),
            )
        })?;
        let (device, size, handle, offset) = (m.device, m.size, m.handle, m.offset);
        let api = self.api;
        self.enter(device)?;
        // Like cuMemFree, wait for work that may still use the memory. A fault reported here is
        // sticky, so the client sees it again at its next synchronising call.
        // SAFETY: the context is current.
        let _ = unsafe { (api.cuCtxSynchronize)() };
        api.check(
            // SAFETY: `[ptr, ptr + size)` was mapped by `alloc` and is unmapped exactly once.
            unsafe { (api.cuMemUnmap)(ptr, size as usize) },
            "cuMemUnmap",
        )?;
        // SAFETY: the handle came from `cuMemCreate` and is no longer mapped; the reservation
        // was made for this allocation alone and nothing is mapped in it any more.
        let released = api
            .check(unsafe { (api.cuMemRelease)(handle) }, "cuMemRelease")
            .and(api.check(
                unsafe { (api.cuMemAddressFree)(ptr, size as usize) },
                "cuMemAddressFree",
            ));
        self.allocs.remove(&ptr);
        if let (Some(st), Some(offset)) = (self.slots[device].state.get_mut(), offset) {
            st.space.free(offset, size);
        }
        released
    }

    fn memset_on(
        &self,
        dst: u64,
        pitch: u64,
        value: u32,
        elem: u8,
        width: u64,
        height: u64,
    ) -> CuResult<()> {
        let api = self.api;
        self.enter(self.device_of(dst)?)?;
        let (p, w, h) = (pitch as usize, width as usize, height as usize);
        // SAFETY: the session checked that the rows lie inside one of the client's allocations,
        // which are mapped read-write for this device; the context is current.
        let r = unsafe {
            match (elem, height) {
                (1, 1) => (api.cuMemsetD8_v2)(dst, value as u8, w),
                (2, 1) => (api.cuMemsetD16_v2)(dst, value as u16, w),
                (4, 1) => (api.cuMemsetD32_v2)(dst, value, w),
                (1, _) => (api.cuMemsetD2D8_v2)(dst, p, value as u8, w, h),
                (2, _) => (api.cuMemsetD2D16_v2)(dst, p, value as u16, w, h),
                (4, _) => (api.cuMemsetD2D32_v2)(dst, p, value, w, h),
                _ => {
                    return Err(CuError::new(
                        CuStatus::INVALID_VALUE,
                        format!("memset element of {elem} bytes"),
                    ))
                }
            }
        };
        api.check(r, "cuMemsetD2D")
    }

    /// Kernels of a loaded module: from the driver where it can enumerate them (12.4+), else
    /// from the image, confirmed by `cuModuleGetFunction`.
    fn kernels(
        &self,
        module: CUmodule,
        syms: &image::ImageSymbols,
    ) -> CuResult<Vec<(String, CUfunction)>> {
        let api = self.api;
        if let (Some(count_fn), Some(enum_fn), Some(name_fn)) = (
            api.cuModuleGetFunctionCount,
            api.cuModuleEnumerateFunctions,
            api.cuFuncGetName,
        ) {
            let mut count = 0;
            api.check(
                // SAFETY: valid module and out-pointer.
                unsafe { count_fn(&mut count, module) },
                "cuModuleGetFunctionCount",
            )?;
            let mut funcs: Vec<CUfunction> = vec![ptr::null_mut(); count as usize];
            api.check(
                // SAFETY: the array holds `count` handles.
                unsafe { enum_fn(funcs.as_mut_ptr(), count, module) },
                "cuModuleEnumerateFunctions",
            )?;
            let mut out = Vec::with_capacity(funcs.len());
            for f in funcs {
                let mut p: *const c_char = ptr::null();
                // SAFETY: `f` is a function of the module; valid out-pointer.
                api.check(unsafe { name_fn(&mut p, f) }, "cuFuncGetName")?;
                if p.is_null() {
                    continue;
                }
                // SAFETY: the driver returns a NUL-terminated name owned by the function.
                let name = unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned();
                out.push((name, f));
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        for name in syms.kernels.keys() {
            let Ok(c) = CString::new(name.as_str()) else {
                continue;
            };
            let mut f: CUfunction = ptr::null_mut();
            // SAFETY: valid module, NUL-terminated name, valid out-pointer.
            if unsafe { (api.cuModuleGetFunction)(&mut f, module, c.as_ptr()) } == 0 {
                out.push((name.clone(), f));
            }
        }
        Ok(out)
    }

    fn describe_kernel(
        &self,
        name: String,
        f: CUfunction,
        syms: &image::ImageSymbols,
    ) -> CuResult<KernelDesc> {
        let api = self.api;
        let attr = |a: c_int| -> CuResult<u32> {
            let mut v = 0;
            api.check(
                // SAFETY: `f` is a live function of a loaded module; valid out-pointer.
                unsafe { (api.cuFuncGetAttribute)(&mut v, a, f) },
                "cuFuncGetAttribute",
            )?;
            Ok(v.max(0) as u32)
        };
        let params = match self.driver_params(f) {
            Some(p) => p,
            None => syms.kernels.get(&name).cloned().flatten().ok_or_else(|| {
                CuError::new(
                    CuStatus::NOT_SUPPORTED,
                    format!("the parameter layout of {name} is unknown: the driver predates cuFuncGetParamInfo and the image does not say"),
                )
            })?,
        };
        Ok(KernelDesc {
            name,
            params,
            shared_bytes: attr(FUNC_SHARED_BYTES)?,
            local_bytes: attr(FUNC_LOCAL_BYTES)?,
            num_regs: attr(FUNC_NUM_REGS)?,
            max_threads: attr(FUNC_MAX_THREADS)?,
            const_bytes: attr(FUNC_CONST_BYTES)?,
        })
    }

    /// `cuFuncGetParamInfo` for each index until the driver says there is no such parameter.
    fn driver_params(&self, f: CUfunction) -> Option<Vec<ParamDesc>> {
        let get = self.api.cuFuncGetParamInfo?;
        let mut params = Vec::new();
        for i in 0..MAX_PARAMS {
            let (mut offset, mut size) = (0usize, 0usize);
            // SAFETY: `f` is live; valid out-pointers.
            match unsafe { get(f, i, &mut offset, &mut size) } {
                0 => params.push(ParamDesc {
                    offset: u32::try_from(offset).ok()?,
                    size: u32::try_from(size).ok()?,
                }),
                1 => return Some(params), // CUDA_ERROR_INVALID_VALUE: past the last parameter
                _ => return None,
            }
        }
        None
    }

    fn load(&mut self, device: usize, image: &[u8]) -> CuResult<(Loaded, ModuleImage)> {
        let api = self.api;
        self.enter(device)?;
        image::check_extents(image).map_err(|e| CuError::new(CuStatus::INVALID_IMAGE, e))?;
        // PTX must reach the driver NUL-terminated; the client may have sent it without.
        let owned;
        let bytes = if image::is_text(image) && image.last() != Some(&0) {
            owned = [image, &[0]].concat();
            &owned[..]
        } else {
            image
        };
        let mut module: CUmodule = ptr::null_mut();
        api.check(
            // SAFETY: `bytes` is a complete image (NUL-terminated if text) that outlives the call;
            // the driver copies what it keeps. The context is current.
            unsafe { (api.cuModuleLoadData)(&mut module, bytes.as_ptr().cast()) },
            "cuModuleLoadData",
        )?;
        let described = self.describe_module(module, image);
        match described {
            Ok((functions, desc, globals)) => Ok((
                Loaded {
                    device,
                    module,
                    functions,
                    globals,
                },
                desc,
            )),
            Err(e) => {
                // SAFETY: the module was loaded above and is referenced nowhere else.
                unsafe { (api.cuModuleUnload)(module) };
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn describe_module(
        &self,
        module: CUmodule,
        image: &[u8],
    ) -> CuResult<(Vec<CUfunction>, ModuleImage, Vec<(u64, u64)>)> {
        let api = self.api;
        let syms = image::symbols(image);
        let mut functions = Vec::new();
        let mut kernels = Vec::new();
        for (name, f) in self.kernels(module, &syms)? {
            kernels.push(self.describe_kernel(name, f, &syms)?);
            functions.push(f);
        }
        let mut globals = Vec::new();
        let mut ranges = Vec::new();
        for name in &syms.globals {
            let Ok(c) = CString::new(name.as_str()) else {
                continue;
            };
            let (mut addr, mut size): (CUdeviceptr, usize) = (0, 0);
            // SAFETY: valid module, NUL-terminated name, valid out-pointers. Names the driver
            // does not know (shared variables, extern declarations) fail and are skipped.
            if unsafe { (api.cuModuleGetGlobal_v2)(&mut addr, &mut size, module, c.as_ptr()) } == 0
            {
                globals.push(GlobalDesc {
                    name: name.clone(),
                    addr,
                    size: size as u64,
                });
                ranges.push((addr, size as u64));
            }
        }
        Ok((functions, ModuleImage { kernels, globals }, ranges))
    }
}

impl CudaSession {
    /// Device memory of `size` bytes on `device`, mapped where `place` reserves addresses.
    fn alloc_placed(
        &mut self,
        device: u32,
        size: u64,
        place: impl FnOnce(&mut DeviceState, &Api, u64) -> CuResult<(u64, Option<u64>)>,
    ) -> CuResult<u64> {
        let api = self.api;
        let ordinal = self.slot(device)?.ordinal;
        let g = self.enter(device as usize)?.granularity;
        let rounded = round_up(size, g)
            .filter(|&r| usize::try_from(r).is_ok())
            .ok_or_else(|| CuError::new(CuStatus::OUT_OF_MEMORY, "allocation too large"))?;
        let prop = alloc_prop(ordinal);
        let mut handle = 0u64;
        api.check(
            // SAFETY: `prop` describes device memory on this device; valid out-pointer. Memory
            // comes first so that running out of it touches no address range.
            unsafe { (api.cuMemCreate)(&mut handle, rounded as usize, &prop, 0) },
            "cuMemCreate",
        )?;
        let mapped = self.map_placed(device, handle, rounded, false, place);
        if mapped.is_err() {
            // SAFETY: the handle was created above and is not mapped.
            unsafe { (api.cuMemRelease)(handle) };
        }
        mapped
    }

    /// Maps the physical allocation `handle` (`rounded` bytes) where `place` reserves
    /// addresses on `device`, readable and writable there. The mapping then owns one reference
    /// to the handle, released when it is unmapped. On failure nothing is left reserved or
    /// mapped and the caller still owns its reference.
    fn map_placed(
        &mut self,
        device: u32,
        handle: u64,
        rounded: u64,
        opened: bool,
        place: impl FnOnce(&mut DeviceState, &Api, u64) -> CuResult<(u64, Option<u64>)>,
    ) -> CuResult<u64> {
        let api = self.api;
        let ordinal = self.slot(device)?.ordinal;
        self.enter(device as usize)?;
        let st = self.slots[device as usize]
            .state
            .get_mut()
            .ok_or_else(|| CuError::new(CuStatus::NOT_INITIALIZED, "no context"))?;
        let (ptr, offset) = place(st, api, rounded)?;
        let desc = CUmemAccessDesc {
            location: CUmemLocation {
                type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
                id: ordinal,
            },
            flags: CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        // SAFETY: `[ptr, ptr + rounded)` was reserved above for this allocation alone; the
        // handle holds `rounded` bytes.
        let mapped = api.check(
            unsafe { (api.cuMemMap)(ptr, rounded as usize, 0, handle, 0) },
            "cuMemMap",
        );
        let accessible = mapped.and_then(|()| {
            // SAFETY: the range was just mapped; one access descriptor.
            let r = api.check(
                unsafe { (api.cuMemSetAccess)(ptr, rounded as usize, &desc, 1) },
                "cuMemSetAccess",
            );
            if r.is_err() {
                // SAFETY: undoes the mapping above.
                unsafe { (api.cuMemUnmap)(ptr, rounded as usize) };
            }
            r
        });
        // Another session's memory: this mapping takes a reference of its own, so that it
        // outlives the export (the caller's reference is the export's).
        let handle = accessible.and_then(|()| {
            if !opened {
                return Ok(handle);
            }
            let mut own = 0u64;
            // SAFETY: `ptr` was mapped above; valid out-pointer.
            let r = api.check(
                unsafe { (api.cuMemRetainAllocationHandle)(&mut own, ptr as *mut c_void) },
                "cuMemRetainAllocationHandle",
            );
            if r.is_err() {
                // SAFETY: undoes the mapping above.
                unsafe { (api.cuMemUnmap)(ptr, rounded as usize) };
            }
            r.map(|()| own)
        });
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: nothing is mapped in the reservation any more.
                unsafe { (api.cuMemAddressFree)(ptr, rounded as usize) };
                if let Some(offset) = offset {
                    st.space.free(offset, rounded);
                }
                return Err(e);
            }
        };
        self.allocs.insert(
            ptr,
            Mapping {
                device: device as usize,
                size: rounded,
                offset,
                handle,
                opened,
            },
        );
        Ok(ptr)
    }
}

impl DeviceSession for CudaSession {
    fn alloc(&mut self, device: u32, size: u64) -> CuResult<u64> {
        self.alloc_placed(device, size, |st, api, rounded| st.reserve(api, rounded))
    }

    fn alloc_fixed(&mut self, device: u32, ptr: u64, size: u64) -> CuResult<()> {
        self.alloc_placed(device, size, |st, api, rounded| {
            st.reserve_at(api, ptr, rounded)
        })
        .map(|_| ())
    }

    fn free(&mut self, ptr: u64) -> CuResult<()> {
        if self.allocs.get(&ptr).is_some_and(|m| m.opened) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{ptr:#x} is another client's memory, opened by IPC: close it with cuIpcCloseMemHandle"),
            ));
        }
        // Withdrawn first: no session may open it while it goes.
        self.ipc.withdraw(self.id, ptr);
        self.unmap(ptr)
    }

    fn ipc_export(&mut self, device: u32, ptr: u64, owner: &str) -> CuResult<IpcHandle> {
        let m = self
            .allocs
            .get(&ptr)
            .filter(|m| m.device == device as usize && !m.opened)
            .ok_or_else(|| {
                CuError::new(
                    CuStatus::INVALID_VALUE,
                    format!("{ptr:#x} is not the start of an allocation on device {device}"),
                )
            })?;
        let size = m.size;
        let api = self.api;
        let mut handle = 0u64;
        api.check(
            // SAFETY: `ptr` is the start of a live mapping of this session; valid out-pointer.
            unsafe { (api.cuMemRetainAllocationHandle)(&mut handle, ptr as *mut c_void) },
            "cuMemRetainAllocationHandle",
        )?;
        let shared = Arc::new(Retained { api, handle, size });
        // Exported before: the table keeps its reference and this one is released.
        Ok(self.ipc.export(self.id, owner, device, ptr, shared))
    }

    fn ipc_open(&mut self, device: u32, handle: &IpcHandle, owner: &str) -> CuResult<(u64, u64)> {
        let shared = self.ipc.open(self.id, owner, device, handle)?;
        let ptr = self.map_placed(device, shared.handle, shared.size, true, |st, api, size| {
            st.reserve(api, size)
        })?;
        Ok((ptr, shared.size))
    }

    fn ipc_close(&mut self, ptr: u64) -> CuResult<()> {
        if !self.allocs.get(&ptr).is_some_and(|m| m.opened) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("{ptr:#x} is not memory opened by cuIpcOpenMemHandle"),
            ));
        }
        self.unmap(ptr)
    }

    fn mem_info(&self, device: u32) -> CuResult<(u64, u64)> {
        let api = self.api;
        self.enter(device as usize)?;
        let (mut free, mut total) = (0usize, 0usize);
        api.check(
            // SAFETY: the context is current; valid out-pointers.
            unsafe { (api.cuMemGetInfo_v2)(&mut free, &mut total) },
            "cuMemGetInfo",
        )?;
        Ok((free as u64, total as u64))
    }

    fn write(&mut self, dst: u64, data: &[u8]) -> CuResult<()> {
        let api = self.api;
        self.enter(self.device_of(dst)?)?;
        // SAFETY: the session checked `[dst, dst + len)` lies in one of the client's
        // allocations; `data` is valid for `len` bytes; the context is current.
        api.check(
            unsafe { (api.cuMemcpyHtoD_v2)(dst, data.as_ptr().cast(), data.len()) },
            "cuMemcpyHtoD",
        )
    }

    fn read(&mut self, src: u64, out: &mut [u8]) -> CuResult<()> {
        let api = self.api;
        self.enter(self.device_of(src)?)?;
        // SAFETY: as for `write`, with `out` writable for `len` bytes.
        api.check(
            unsafe { (api.cuMemcpyDtoH_v2)(out.as_mut_ptr().cast(), src, out.len()) },
            "cuMemcpyDtoH",
        )
    }

    fn copy(&mut self, dst: u64, src: u64, size: u64) -> CuResult<()> {
        let api = self.api;
        let (dd, sd) = (self.device_of(dst)?, self.device_of(src)?);
        if dd == sd {
            self.enter(dd)?;
            // SAFETY: both ranges were checked by the session and lie on this device.
            return api.check(
                unsafe { (api.cuMemcpyDtoD_v2)(dst, src, size as usize) },
                "cuMemcpyDtoD",
            );
        }
        // Between devices: VMM mappings are accessible only to their own device.
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
        self.memset_on(dst, pitch, value, elem, width, height)
    }

    fn synchronize(&mut self) -> CuResult<()> {
        let api = self.api;
        let mut first = Ok(());
        for slot in &self.slots {
            if let Some(st) = slot.state.get() {
                // SAFETY: the context is alive until the session drops.
                let r = api
                    .check(unsafe { (api.cuCtxSetCurrent)(st.ctx) }, "cuCtxSetCurrent")
                    .and_then(|()| {
                        // SAFETY: the context is current.
                        api.check(unsafe { (api.cuCtxSynchronize)() }, "cuCtxSynchronize")
                    });
                if first.is_ok() {
                    first = r;
                }
            }
        }
        first
    }

    fn load_module(
        &mut self,
        device: u32,
        module: u64,
        _hash: [u8; 32],
        image: Arc<[u8]>,
    ) -> CuResult<ModuleImage> {
        if self.modules.contains_key(&module) {
            return Err(CuError::new(
                CuStatus::INVALID_VALUE,
                format!("module handle {module:#x} already in use"),
            ));
        }
        self.slot(device)?;
        let (loaded, desc) = self.load(device as usize, &image)?;
        self.modules.insert(module, loaded);
        Ok(desc)
    }

    fn unload_module(&mut self, module: u64) -> CuResult<()> {
        let m = self
            .modules
            .remove(&module)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_HANDLE, "no such module"))?;
        let api = self.api;
        self.enter(m.device)?;
        // SAFETY: the module was loaded in this context and is dropped from the table above.
        api.check(unsafe { (api.cuModuleUnload)(m.module) }, "cuModuleUnload")
    }

    fn launch(&mut self, l: &Launch<'_>) -> (String, CuResult<()>) {
        (String::new(), self.launch_inner(l))
    }
}

impl CudaSession {
    fn launch_inner(&mut self, l: &Launch<'_>) -> CuResult<()> {
        let api = self.api;
        let m = self
            .modules
            .get(&l.module)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_HANDLE, "no such module"))?;
        let f = *m
            .functions
            .get(l.kernel as usize)
            .ok_or_else(|| CuError::new(CuStatus::INVALID_HANDLE, "no such function"))?;
        self.enter(m.device)?;
        if l.shared > DEFAULT_DYNAMIC_SHARED {
            // The client has no round trip for cuFuncSetAttribute; opt in as it would have. If
            // the device cannot, the launch below reports it.
            // SAFETY: `f` is live; plain integer attribute.
            let _ =
                unsafe { (api.cuFuncSetAttribute)(f, FUNC_MAX_DYNAMIC_SHARED, l.shared as c_int) };
        }
        let mut size = l.params.len();
        let mut extra = [
            LAUNCH_PARAM_BUFFER_POINTER,
            l.params.as_ptr() as *mut c_void,
            LAUNCH_PARAM_BUFFER_SIZE,
            (&mut size as *mut usize).cast(),
            LAUNCH_PARAM_END,
        ];
        let extra_ptr = if l.params.is_empty() {
            ptr::null_mut()
        } else {
            extra.as_mut_ptr()
        };
        if l.cooperative {
            let launch_ex = api.cuLaunchKernelEx.ok_or_else(|| {
                CuError::new(
                    CuStatus::NOT_SUPPORTED,
                    "cooperative launch: the driver lacks cuLaunchKernelEx (CUDA 12.0)",
                )
            })?;
            let mut attr = driver::LaunchAttribute {
                id: driver::LAUNCH_ATTRIBUTE_COOPERATIVE,
                pad: [0; 4],
                value: [1, 0, 0, 0, 0, 0, 0, 0],
            };
            let config = driver::LaunchConfig {
                grid: l.grid,
                block: l.block,
                shared: l.shared,
                stream: ptr::null_mut(),
                attrs: &mut attr,
                num_attrs: 1,
            };
            // SAFETY: as for cuLaunchKernel below; `config` and its one attribute live across
            // the call, laid out as cuda.h's CUlaunchConfig and CUlaunchAttribute.
            let r = unsafe { launch_ex(&config, f, ptr::null_mut(), extra_ptr) };
            return api.check(r, "cuLaunchKernelEx (cooperative)");
        }
        let [gx, gy, gz] = l.grid;
        let [bx, by, bz] = l.block;
        // SAFETY: `f` belongs to a module loaded in the current context; `extra` is the
        // END-terminated array the driver reads during the call (it copies the parameter
        // buffer, laid out as the load reply told the client); the null stream runs after
        // everything issued before, as the session's in-order execution needs.
        let r = unsafe {
            (api.cuLaunchKernel)(
                f,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                l.shared,
                ptr::null_mut(),
                ptr::null_mut(),
                extra_ptr,
            )
        };
        api.check(r, "cuLaunchKernel")
    }
}

impl Drop for CudaSession {
    fn drop(&mut self) {
        let api = self.api;
        self.ipc.withdraw_all(self.id);
        for slot in &self.slots {
            if let Some(st) = slot.state.get() {
                // SAFETY: the context is alive; waiting lets in-flight work finish before its
                // memory goes.
                unsafe {
                    (api.cuCtxSetCurrent)(st.ctx);
                    (api.cuCtxSynchronize)();
                }
            }
        }
        for (_, m) in self.modules.drain() {
            if let Some(st) = self.slots[m.device].state.get() {
                // SAFETY: the module was loaded in this context, which is alive.
                unsafe {
                    (api.cuCtxSetCurrent)(st.ctx);
                    (api.cuModuleUnload)(m.module);
                }
            }
        }
        for (ptr, m) in std::mem::take(&mut self.allocs) {
            // SAFETY: each allocation was mapped in its own reservation by `alloc`; both are
            // released exactly once here.
            let r = unsafe {
                let a = (api.cuMemUnmap)(ptr, m.size as usize);
                let b = (api.cuMemRelease)(m.handle);
                let c = (api.cuMemAddressFree)(ptr, m.size as usize);
                a.max(b).max(c)
            };
            if r != 0 {
                tracing::warn!(
                    ptr = format_args!("{ptr:#x}"),
                    code = r,
                    "freeing a session's allocation failed"
                );
            }
        }
        for slot in &mut self.slots {
            if let Some(st) = slot.state.take() {
                // SAFETY: the context holds no module or allocation of ours any more and is
                // destroyed once.
                let r = unsafe { (api.cuCtxDestroy_v2)(st.ctx) };
                if r != 0 {
                    tracing::warn!(code = r, "destroying a session's context failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_without_a_driver_is_an_error_not_a_panic() {
        match probe() {
            Ok(b) => {
                // A machine with a GPU: the backend must describe real devices.
                assert_eq!(b.kind(), "cuda");
                assert!(!b.devices().is_empty());
                assert!(b.devices().iter().all(|d| !d.emulated && d.total_mem > 0));
            }
            Err(why) => {
                eprintln!("probe: {why}");
                assert!(
                    why.contains("libcuda") || why.contains("driver"),
                    "unhelpful: {why}"
                );
                // Twice: the failed load must not be cached as a panic or succeed by accident.
                assert_eq!(probe().err(), Some(why));
            }
        }
    }

    #[test]
    fn round_up_to_granularity() {
        assert_eq!(round_up(1, 2 << 20), Some(2 << 20));
        assert_eq!(round_up(2 << 20, 2 << 20), Some(2 << 20));
        assert_eq!(round_up(u64::MAX, 2 << 20), None);
    }
}
