//! `libnvidia-ml.so.1` for Remora: NVML's view of the GPUs of the session.
//!
//! Programs that look for GPUs through NVML (pynvml, Ray's GPU detection, monitoring tools,
//! PyTorch with `PYTORCH_NVML_BASED_CUDA_CHECK=1`) find none on a machine without NVIDIA's
//! driver. `remora run` preloads this library beside the shim; it answers from the shim
//! ([`driver`]): device count, names, UUIDs, PCI bus ids and compute capability as CUDA reports
//! them, and memory and utilisation asked of the server at each call.
//!
//! What a GPU in another machine cannot tell (temperature, power, fans, clocks, the processes
//! of other clients) answers `NVML_ERROR_NOT_SUPPORTED`; functions not exported at all are
//! reported by clients as "function not found", as with an older NVML.

mod driver;

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};

use driver::{driver, Device, Driver, InitError};

type NvmlReturn = c_int;

const SUCCESS: NvmlReturn = 0;
const UNINITIALIZED: NvmlReturn = 1;
const INVALID_ARGUMENT: NvmlReturn = 2;
const NOT_SUPPORTED: NvmlReturn = 3;
const NOT_FOUND: NvmlReturn = 6;
const INSUFFICIENT_SIZE: NvmlReturn = 7;
const DRIVER_NOT_LOADED: NvmlReturn = 9;
const GPU_IS_LOST: NvmlReturn = 15;
const UNKNOWN: NvmlReturn = 999;

/// The NVML version this stand-in reports: that of the CUDA 12.9 driver branch.
const NVML_VERSION: &CStr = c"12.575.51";
const DRIVER_VERSION: &CStr = c"575.51.03";

/// `nvmlInit` minus `nvmlShutdown` calls: NVML refuses device calls at 0.
static INITS: AtomicU32 = AtomicU32::new(0);

/// An opaque `nvmlDevice_t`: the address of one of these, one per device index.
#[repr(C)]
pub struct DeviceHandle {
    index: u32,
}

const MAX_DEVICES: usize = 64;
static HANDLES: [DeviceHandle; MAX_DEVICES] = {
    let mut h = [const { DeviceHandle { index: 0 } }; MAX_DEVICES];
    let mut i = 0;
    while i < MAX_DEVICES {
        h[i].index = i as u32;
        i += 1;
    }
    h
};

type Handle = *const DeviceHandle;

/// Runs a call, stopping panics at the C boundary.
fn guard(f: impl FnOnce() -> Result<(), NvmlReturn>) -> NvmlReturn {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => UNKNOWN,
    }
}

fn ready() -> Result<&'static Driver, NvmlReturn> {
    if INITS.load(Ordering::Acquire) == 0 {
        return Err(UNINITIALIZED);
    }
    driver().as_ref().map_err(|_| UNINITIALIZED)
}

fn device(h: Handle) -> Result<(&'static Driver, usize, &'static Device), NvmlReturn> {
    let d = ready()?;
    let base = HANDLES.as_ptr() as usize;
    let at = (h as usize).wrapping_sub(base);
    let size = std::mem::size_of::<DeviceHandle>();
    if h.is_null() || !at.is_multiple_of(size) || at / size >= d.devices.len().min(MAX_DEVICES) {
        return Err(INVALID_ARGUMENT);
    }
    let i = at / size;
    Ok((d, i, &d.devices[i]))
}

fn out<'a, T>(p: *mut T) -> Result<&'a mut T, NvmlReturn> {
    // SAFETY: NVML's contract: a non-NULL out-pointer is writable.
    unsafe { p.as_mut() }.ok_or(INVALID_ARGUMENT)
}

/// Copies `s` and its NUL into the caller's buffer of `len` bytes.
fn write_str(buf: *mut c_char, len: c_uint, s: &str) -> Result<(), NvmlReturn> {
    if buf.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    if s.len() + 1 > len as usize {
        return Err(INSUFFICIENT_SIZE);
    }
    // SAFETY: the buffer holds `len` bytes, at least `s.len() + 1`.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast(), buf, s.len());
        *buf.add(s.len()) = 0;
    }
    Ok(())
}

fn read_str<'a>(p: *const c_char) -> Result<&'a str, NvmlReturn> {
    if p.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: a NUL-terminated string by NVML's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| INVALID_ARGUMENT)
}

fn init() -> NvmlReturn {
    guard(|| match driver() {
        Ok(_) => {
            INITS.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
        Err(InitError::NoShim(why)) => {
            eprintln!("remora: NVML: {why}");
            Err(DRIVER_NOT_LOADED)
        }
        Err(InitError::Cuda(code)) => {
            eprintln!(
                "remora: NVML: the Remora shim could not reach its server (CUDA error {code})"
            );
            Err(DRIVER_NOT_LOADED)
        }
    })
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    init()
}

#[no_mangle]
pub extern "C" fn nvmlInit() -> NvmlReturn {
    init()
}

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    init()
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    guard(|| {
        INITS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| UNINITIALIZED)
    })
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: NvmlReturn) -> *const c_char {
    let s: &CStr = match result {
        SUCCESS => c"Success",
        UNINITIALIZED => c"Uninitialized",
        INVALID_ARGUMENT => c"Invalid Argument",
        NOT_SUPPORTED => c"Not Supported",
        NOT_FOUND => c"Not Found",
        INSUFFICIENT_SIZE => c"Insufficient Size",
        DRIVER_NOT_LOADED => c"Driver Not Loaded",
        GPU_IS_LOST => c"GPU is lost",
        _ => c"Unknown Error",
    };
    s.as_ptr()
}

/// # Safety
/// `version` is writable for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard(|| {
        ready()?;
        write_str(version, length, DRIVER_VERSION.to_str().unwrap_or_default())
    })
}

/// # Safety
/// `version` is writable for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard(|| write_str(version, length, NVML_VERSION.to_str().unwrap_or_default()))
}

/// # Safety
/// `version` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> NvmlReturn {
    guard(|| {
        *out(version)? = ready()?.cuda_version;
        Ok(())
    })
}

/// # Safety
/// `version` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> NvmlReturn {
    // SAFETY: forwarded unchanged.
    unsafe { nvmlSystemGetCudaDriverVersion(version) }
}

/// # Safety
/// `count` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    guard(|| {
        *out(count)? = ready()?.devices.len().min(MAX_DEVICES) as c_uint;
        Ok(())
    })
}

/// # Safety
/// `count` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> NvmlReturn {
    // SAFETY: forwarded unchanged.
    unsafe { nvmlDeviceGetCount_v2(count) }
}

/// # Safety
/// `device` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut Handle,
) -> NvmlReturn {
    guard(|| {
        let n = ready()?.devices.len().min(MAX_DEVICES);
        let slot = out(device)?;
        if index as usize >= n {
            return Err(INVALID_ARGUMENT);
        }
        *slot = &HANDLES[index as usize];
        Ok(())
    })
}

/// # Safety
/// `device` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut Handle,
) -> NvmlReturn {
    // SAFETY: forwarded unchanged.
    unsafe { nvmlDeviceGetHandleByIndex_v2(index, device) }
}

fn handle_where(device: *mut Handle, pick: impl Fn(&Device) -> bool) -> Result<(), NvmlReturn> {
    let slot = out(device)?;
    let d = ready()?;
    let i = d
        .devices
        .iter()
        .take(MAX_DEVICES)
        .position(pick)
        .ok_or(NOT_FOUND)?;
    *slot = &HANDLES[i];
    Ok(())
}

/// # Safety
/// `uuid` is a NUL-terminated string; `device` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut Handle,
) -> NvmlReturn {
    guard(|| {
        let want = read_str(uuid)?;
        handle_where(device, |d| d.uuid_string().eq_ignore_ascii_case(want))
    })
}

/// # Safety
/// `bus_id` is a NUL-terminated string; `device` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    bus_id: *const c_char,
    device: *mut Handle,
) -> NvmlReturn {
    guard(|| {
        let want = read_str(bus_id)?;
        handle_where(device, |d| {
            d.bus_id(8).eq_ignore_ascii_case(want) || d.bus_id(4).eq_ignore_ascii_case(want)
        })
    })
}

/// # Safety
/// As `nvmlDeviceGetHandleByPciBusId_v2`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(
    bus_id: *const c_char,
    device: *mut Handle,
) -> NvmlReturn {
    // SAFETY: forwarded unchanged.
    unsafe { nvmlDeviceGetHandleByPciBusId_v2(bus_id, device) }
}

/// # Safety
/// `index` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: Handle, index: *mut c_uint) -> NvmlReturn {
    guard(|| {
        let (_, i, _) = self::device(device)?;
        *out(index)? = i as c_uint;
        Ok(())
    })
}

/// # Safety
/// `minor` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(
    device: Handle,
    minor: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: forwarded unchanged: the minor number of /dev/nvidiaN is its index here.
    unsafe { nvmlDeviceGetIndex(device, minor) }
}

/// # Safety
/// `name` is writable for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: Handle,
    name: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard(|| write_str(name, length, &self::device(device)?.2.name))
}

/// # Safety
/// `uuid` is writable for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: Handle,
    uuid: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard(|| write_str(uuid, length, &self::device(device)?.2.uuid_string()))
}

/// # Safety
/// `major` and `minor` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: Handle,
    major: *mut c_int,
    minor: *mut c_int,
) -> NvmlReturn {
    guard(|| {
        let (_, _, d) = self::device(device)?;
        let (ma, mi) = (out(major)?, out(minor)?);
        (*ma, *mi) = d.cc;
        Ok(())
    })
}

fn usage(device: Handle) -> Result<driver::Usage, NvmlReturn> {
    let (drv, i, _) = self::device(device)?;
    // The session's link is gone: NVML's word for a GPU that stopped answering.
    drv.usage(i).map_err(|_| GPU_IS_LOST)
}

/// `nvmlMemory_t`.
#[repr(C)]
pub struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct MemoryV2 {
    version: c_uint,
    total: u64,
    reserved: u64,
    free: u64,
    used: u64,
}

/// # Safety
/// `memory` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: Handle,
    memory: *mut Memory,
) -> NvmlReturn {
    guard(|| {
        let slot = out(memory)?;
        let u = usage(device)?;
        *slot = Memory {
            total: u.total,
            free: u.free,
            used: u.total.saturating_sub(u.free),
        };
        Ok(())
    })
}

/// # Safety
/// `memory` is NULL or writable, its `version` set by the caller.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: Handle,
    memory: *mut MemoryV2,
) -> NvmlReturn {
    guard(|| {
        let slot = out(memory)?;
        let u = usage(device)?;
        *slot = MemoryV2 {
            version: slot.version,
            total: u.total,
            reserved: 0,
            free: u.free,
            used: u.total.saturating_sub(u.free),
        };
        Ok(())
    })
}

/// `nvmlUtilization_t`.
#[repr(C)]
pub struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

/// # Safety
/// `utilization` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: Handle,
    utilization: *mut Utilization,
) -> NvmlReturn {
    guard(|| {
        let slot = out(utilization)?;
        let u = usage(device)?;
        // The memory figure (share of time the memory bus was busy) has no counterpart on an
        // emulated or remote GPU: it is reported as the kernels' share, its usual bound.
        let gpu = c_uint::try_from(u.utilization).map_err(|_| NOT_SUPPORTED)?;
        *slot = Utilization { gpu, memory: gpu };
        Ok(())
    })
}

/// `nvmlPciInfo_t` of NVML 11 and later (`_v2` and `_v3` calls).
#[repr(C)]
pub struct PciInfo {
    bus_id_legacy: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_sub_system_id: c_uint,
    bus_id: [c_char; 32],
}

/// `nvmlPciInfo_t` of the first NVML (`nvmlDeviceGetPciInfo`).
#[repr(C)]
pub struct PciInfoV1 {
    bus_id: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_sub_system_id: c_uint,
    reserved: [c_uint; 4],
}

fn c_chars<const N: usize>(s: &str) -> [c_char; N] {
    let mut a = [0 as c_char; N];
    for (d, b) in a.iter_mut().zip(s.bytes().take(N - 1)) {
        *d = b as c_char;
    }
    a
}

/// # Safety
/// `pci` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: Handle, pci: *mut PciInfo) -> NvmlReturn {
    guard(|| {
        let slot = out(pci)?;
        let (_, _, d) = self::device(device)?;
        // The PCI device id is not part of what CUDA reports; NVIDIA's vendor id alone.
        *slot = PciInfo {
            bus_id_legacy: c_chars(&d.bus_id(4)),
            domain: d.pci_domain,
            bus: d.pci_bus,
            device: d.pci_device,
            pci_device_id: 0x10de,
            pci_sub_system_id: 0,
            bus_id: c_chars(&d.bus_id(8)),
        };
        Ok(())
    })
}

/// # Safety
/// `pci` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(device: Handle, pci: *mut PciInfo) -> NvmlReturn {
    // SAFETY: forwarded unchanged; the struct is the same.
    unsafe { nvmlDeviceGetPciInfo_v3(device, pci) }
}

/// # Safety
/// `pci` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(device: Handle, pci: *mut PciInfoV1) -> NvmlReturn {
    guard(|| {
        let slot = out(pci)?;
        let (_, _, d) = self::device(device)?;
        *slot = PciInfoV1 {
            bus_id: c_chars(&d.bus_id(4)),
            domain: d.pci_domain,
            bus: d.pci_bus,
            device: d.pci_device,
            pci_device_id: 0x10de,
            pci_sub_system_id: 0,
            reserved: [0; 4],
        };
        Ok(())
    })
}

/// Sensors and processes a remote GPU does not report to its clients: each checks the handle
/// (a bad one is still INVALID_ARGUMENT) and answers NOT_SUPPORTED.
macro_rules! not_reported {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        /// # Safety
        /// Any arguments; only the handle is looked at.
        #[no_mangle]
        pub unsafe extern "C" fn $name(device: Handle, $(_: $ty),*) -> NvmlReturn {
            guard(|| {
                self::device(device)?;
                Err(NOT_SUPPORTED)
            })
        }
    )*};
}

not_reported! {
    nvmlDeviceGetTemperature(sensor: c_uint, temp: *mut c_uint);
    nvmlDeviceGetPowerUsage(power: *mut c_uint);
    nvmlDeviceGetFanSpeed(speed: *mut c_uint);
    nvmlDeviceGetClockInfo(kind: c_uint, clock: *mut c_uint);
    nvmlDeviceGetMaxClockInfo(kind: c_uint, clock: *mut c_uint);
    nvmlDeviceGetSerial(serial: *mut c_char, length: c_uint);
    nvmlDeviceGetComputeRunningProcesses(count: *mut c_uint, infos: *mut u8);
    nvmlDeviceGetComputeRunningProcesses_v2(count: *mut c_uint, infos: *mut u8);
    nvmlDeviceGetComputeRunningProcesses_v3(count: *mut c_uint, infos: *mut u8);
    nvmlDeviceGetGraphicsRunningProcesses_v3(count: *mut c_uint, infos: *mut u8);
}
